"""Time and peak memory of top-k search against a large on-disk gallery, with a naive baseline.

What it does
------------
1. Writes a float32 gallery of ``--n-gallery`` x ``--dim`` random embeddings to a ``.npy`` file
   through ``numpy.lib.format.open_memmap``, a block of rows at a time (never held in RAM whole).
   Some rows are planted near the queries, so that the search has known answers to find.
2. For every number of queries in ``--queries`` and every ``--dtypes`` entry, runs
   :func:`neurodecode.evaluation.search.search_gallery` streaming the file in chunks.
3. Baseline in the same run: the naive way (load the gallery into RAM, one full query-by-gallery
   similarity matrix, ``torch.topk``) on ``--baseline-sizes`` rows that fit, together with the
   chunked search on the same rows (same answers, checked), and a linear extrapolation of the
   naive time and memory to the full gallery (``--naive-full`` measures it instead, if RAM allows).

Every measurement runs in a fresh subprocess so that its peak resident memory (``VmHWM``) is its
own; a thread also samples the anonymous resident memory (``RssAnon``, i.e. excluding file pages
that the kernel can drop) every few milliseconds. Reported memory is the increase over the
process's resident memory after imports. The gallery file is usually in the page cache after it
is written, so "from disk" here means from the page cache; a cold read adds the disk's time.

Usage::

    python benchmarks/gallery_search.py --out gallery_search.json
    python benchmarks/gallery_search.py --n-gallery 100000 --queries 200 --quick   # a smoke run

Prints a summary table and the JSON (also written to ``--out`` when given).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

SEED = 0
N_PLANTED = 50  # queries 0..49 have a planted near-duplicate in the gallery


# --------------------------------------------------------------------------------------------------
# memory measurement (Linux /proc; falls back to getrusage elsewhere)
# --------------------------------------------------------------------------------------------------
def _status_mb(field: str) -> float | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


class MemorySampler:
    """Peak of RssAnon sampled in a background thread, plus VmHWM at the end."""

    def __init__(self, interval: float = 0.005) -> None:
        self.interval = interval
        self.peak_anon = _status_mb("RssAnon") or 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            v = _status_mb("RssAnon")
            if v is not None and v > self.peak_anon:
                self.peak_anon = v
            time.sleep(self.interval)

    def __enter__(self) -> MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _peak_rss_mb() -> float:
    hwm = _status_mb("VmHWM")
    if hwm is not None:
        return hwm
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


# --------------------------------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------------------------------
def make_queries(n_queries: int, dim: int) -> np.ndarray:
    rng = np.random.default_rng([SEED, 1])
    return rng.standard_normal((n_queries, dim), dtype=np.float32)


def planted_rows(n_gallery: int) -> np.ndarray:
    rng = np.random.default_rng([SEED, 2])
    return np.sort(rng.choice(n_gallery, size=N_PLANTED, replace=False))


def write_gallery(path: Path, n: int, dim: int, block: int = 65536) -> float:
    """Write the gallery block by block; return the seconds it took."""
    t0 = time.perf_counter()
    rng = np.random.default_rng([SEED, 0])
    queries = make_queries(N_PLANTED, dim)
    rows = planted_rows(n)
    tmp = path.with_suffix(".tmp.npy")
    mm = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(n, dim))
    for start in range(0, n, block):
        stop = min(start + block, n)
        chunk = rng.standard_normal((stop - start, dim), dtype=np.float32)
        inside = (rows >= start) & (rows < stop)
        # planted rows: a noisy copy of query i, so query i's best match is row planted[i]
        chunk[rows[inside] - start] = queries[np.flatnonzero(inside)] + 0.3 * chunk[rows[inside] - start]
        mm[start:stop] = chunk
    mm.flush()
    del mm
    os.replace(tmp, path)
    return time.perf_counter() - t0


# --------------------------------------------------------------------------------------------------
# one measurement (runs in its own process)
# --------------------------------------------------------------------------------------------------
def worker(spec: dict) -> dict:
    import torch

    from neurodecode.evaluation.search import search_gallery

    if spec.get("threads"):
        torch.set_num_threads(int(spec["threads"]))
    path, n_rows, n_q, k = spec["path"], int(spec["n_rows"]), int(spec["n_queries"]), int(spec["k"])
    dim = int(np.load(path, mmap_mode="r").shape[1])
    queries = make_queries(n_q, dim)
    rss_before = _status_mb("VmRSS") or 0.0
    anon_before = _status_mb("RssAnon") or 0.0
    out: dict = {**spec}
    with MemorySampler() as mem:
        t0 = time.perf_counter()
        if spec["mode"] == "chunked":
            gallery = path if (spec["source"] == "npy" and n_rows == spec["n_gallery"]) \
                else np.load(path, mmap_mode="r")[:n_rows]
            scores, idx = search_gallery(queries, gallery, k=k, chunk_size=spec.get("chunk_size"),
                                         dtype=spec["dtype"], max_memory_mb=spec["max_memory_mb"],
                                         prefetch=spec.get("prefetch"))
            out["time_s"] = time.perf_counter() - t0
        else:  # naive: the whole gallery in RAM, one full similarity matrix, one topk
            g = torch.from_numpy(np.array(np.load(path, mmap_mode="r")[:n_rows]))
            t1 = time.perf_counter()
            q = torch.nn.functional.normalize(torch.from_numpy(queries), dim=1)
            g = torch.nn.functional.normalize(g, dim=1)
            sims = q @ g.T
            scores, idx = sims.topk(k, dim=1)
            del sims, g
            out["load_s"] = t1 - t0
            out["compute_s"] = time.perf_counter() - t1
            out["time_s"] = time.perf_counter() - t0
    out["rss_before_mb"] = rss_before
    out["peak_rss_increase_mb"] = _peak_rss_mb() - rss_before
    out["peak_anon_increase_mb"] = mem.peak_anon - anon_before
    out["gallery_rows_per_s"] = n_rows / out["time_s"]
    rows = planted_rows(int(spec["n_gallery"]))
    found = [int(rows[i]) in set(idx[i].tolist()) for i in range(min(n_q, N_PLANTED)) if rows[i] < n_rows]
    out["planted_found"] = f"{sum(found)}/{len(found)}"
    out["top1_indices_head"] = idx[:N_PLANTED, 0].tolist()
    out["torch_threads"] = torch.get_num_threads()
    return out


def run_worker(spec: dict) -> dict:
    env = dict(os.environ, NEURODECODE_NO_PROGRESS="1")
    proc = subprocess.run([sys.executable, __file__, "--worker", json.dumps(spec)], capture_output=True, text=True,
                          env=env, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"worker failed for {spec}:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------------------------------
# driver
# --------------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n-gallery", type=int, default=1_000_000)
    p.add_argument("--dim", type=int, default=1024)
    p.add_argument("--queries", type=int, nargs="+", default=[200, 1000])
    p.add_argument("--k", type=int, default=5)
    p.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"])
    p.add_argument("--chunk-size", type=int, default=None, help="rows per chunk (default: from --max-memory-mb)")
    p.add_argument("--max-memory-mb", type=float, default=256.0)
    p.add_argument("--baseline-sizes", type=int, nargs="+", default=[62_500, 250_000])
    p.add_argument("--naive-full", action="store_true", help="also run the naive baseline on the full gallery")
    p.add_argument("--memmap", action="store_true", help="also stream the full gallery through np.memmap")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.add_argument("--workdir", type=Path, default=None, help="where the gallery file goes (default: a temp dir)")
    p.add_argument("--keep", action="store_true", help="keep the gallery file")
    p.add_argument("--out", type=Path, default=None, help="JSON output path")
    p.add_argument("--quick", action="store_true", help="float32 only, no extra runs")
    p.add_argument("--worker", type=str, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker is not None:
        print(json.dumps(worker(json.loads(args.worker))))
        return 0
    if args.quick:
        args.dtypes = ["float32"]

    import torch

    own_dir = args.workdir is None
    workdir = Path(tempfile.mkdtemp(prefix="gallery_bench_")) if own_dir else args.workdir
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / f"gallery_{args.n_gallery}x{args.dim}_float32.npy"
    report: dict = {
        "benchmark": "gallery_search",
        "machine": {"platform": platform.platform(), "processor": platform.processor(), "cpu_count": os.cpu_count(),
                    "torch": torch.__version__, "numpy": np.__version__, "torch_threads": torch.get_num_threads(),
                    "load_average_at_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
                    "cuda": torch.cuda.is_available()},
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "worker"},
        "gallery_bytes": args.n_gallery * args.dim * 4,
        "results": [],
    }
    try:
        reuse = path.is_file() and np.load(path, mmap_mode="r").shape == (args.n_gallery, args.dim)
        report["gallery_write_s"] = None if reuse else write_gallery(path, args.n_gallery, args.dim)
        base = dict(path=str(path), n_gallery=args.n_gallery, k=args.k, chunk_size=args.chunk_size,
                    max_memory_mb=args.max_memory_mb, threads=args.threads)
        specs = []
        for n_q in args.queries:
            for dtype in args.dtypes:
                specs.append(dict(base, mode="chunked", source="npy", dtype=dtype, n_rows=args.n_gallery,
                                  n_queries=n_q, prefetch=True))
            if not args.quick:  # the background reader competes for cores: measure without it too
                specs.append(dict(base, mode="chunked", source="npy", dtype="float32", n_rows=args.n_gallery,
                                  n_queries=n_q, prefetch=False))
            if args.memmap and not args.quick:
                specs.append(dict(base, mode="chunked", source="memmap", dtype="float32", n_rows=args.n_gallery,
                                  n_queries=n_q))
            for size in sorted(s for s in args.baseline_sizes if s < args.n_gallery):
                specs.append(dict(base, mode="naive", source="ram", dtype="float32", n_rows=size, n_queries=n_q))
                specs.append(dict(base, mode="chunked", source="memmap", dtype="float32", n_rows=size,
                                  n_queries=n_q))
            if args.naive_full:
                specs.append(dict(base, mode="naive", source="ram", dtype="float32", n_rows=args.n_gallery,
                                  n_queries=n_q))
        for spec in specs:
            res = run_worker(spec)
            report["results"].append(res)
            pf = {True: "prefetch", False: "no-prefetch", None: "auto"}[res.get("prefetch")]
            print(f"{res['mode']:8s} {res['source']:6s} {res['dtype']:9s} {pf:11s} rows={res['n_rows']:>9d} "
                  f"queries={res['n_queries']:>5d}  time={res['time_s']:8.2f} s  "
                  f"peak RSS +{res['peak_rss_increase_mb']:8.1f} MB  anon +{res['peak_anon_increase_mb']:8.1f} MB  "
                  f"planted found {res['planted_found']}", file=sys.stderr, flush=True)
        report["baseline"] = _baseline_summary(report["results"], args)
    finally:
        if not args.keep:
            if own_dir:
                shutil.rmtree(workdir, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
    text = json.dumps(report, indent=2)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.out.with_suffix(args.out.suffix + ".tmp")
        tmp.write_text(text + "\n")
        os.replace(tmp, args.out)
    print(text)
    return 0


def _baseline_summary(results: list[dict], args: argparse.Namespace) -> dict:
    """Compare chunked and naive on equal sizes; extrapolate the naive one to the full gallery."""
    out: dict = {}
    for n_q in args.queries:
        naive = sorted((r for r in results if r["mode"] == "naive" and r["n_queries"] == n_q),
                       key=lambda r: r["n_rows"])
        same = {}
        for r in naive:
            ch = next((c for c in results if c["mode"] == "chunked" and c["source"] == "memmap"
                       and c["n_rows"] == r["n_rows"] and c["n_queries"] == n_q), None)
            if ch is not None:
                same[str(r["n_rows"])] = {
                    "naive_time_s": r["time_s"], "naive_compute_s": r["compute_s"],
                    "naive_peak_rss_increase_mb": r["peak_rss_increase_mb"],
                    "naive_peak_anon_increase_mb": r["peak_anon_increase_mb"],
                    "chunked_time_s": ch["time_s"], "chunked_peak_rss_increase_mb": ch["peak_rss_increase_mb"],
                    "chunked_peak_anon_increase_mb": ch["peak_anon_increase_mb"],
                    "same_top1": r["top1_indices_head"] == ch["top1_indices_head"],
                }
        entry: dict = {"same_size_comparison": same}
        measured_full = [r for r in naive if r["n_rows"] == args.n_gallery]
        fit = [r for r in naive if r["n_rows"] < args.n_gallery]
        if measured_full:
            entry["naive_full_measured"] = {"time_s": measured_full[0]["time_s"],
                                            "peak_rss_increase_mb": measured_full[0]["peak_rss_increase_mb"]}
        if len(fit) >= 2:
            x = np.array([r["n_rows"] for r in fit], dtype=float)
            for key in ("time_s", "peak_rss_increase_mb", "peak_anon_increase_mb"):
                slope, icpt = np.polyfit(x, [r[key] for r in fit], 1)
                entry[f"naive_full_extrapolated_{key}"] = float(slope * args.n_gallery + icpt)
        elif len(fit) == 1:
            scale = args.n_gallery / fit[0]["n_rows"]
            entry["naive_full_extrapolated_time_s"] = fit[0]["time_s"] * scale
            entry["naive_full_extrapolated_peak_rss_increase_mb"] = fit[0]["peak_rss_increase_mb"] * scale
        # what the naive method must hold at once: gallery + its normalised copy + the full matrix
        entry["naive_full_analytic_mb"] = (2 * args.n_gallery * args.dim * 4 + n_q * args.n_gallery * 4) / 2**20
        chunked = [r for r in results if r["mode"] == "chunked" and r["n_rows"] == args.n_gallery
                   and r["n_queries"] == n_q]
        entry["chunked_full"] = {f"{r['source']}/{r['dtype']}/prefetch={r.get('prefetch')}": {"time_s": r["time_s"],
                                                                  "peak_rss_increase_mb": r["peak_rss_increase_mb"],
                                                                  "peak_anon_increase_mb": r["peak_anon_increase_mb"],
                                                                  "planted_found": r["planted_found"]}
                                 for r in chunked}
        out[f"queries={n_q}"] = entry
    return out


if __name__ == "__main__":
    raise SystemExit(main())
