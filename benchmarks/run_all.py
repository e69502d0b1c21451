"""Run every benchmark of this folder; collect their results in one JSON and one Markdown table.

Usage::

    python benchmarks/run_all.py                                  # everything -> benchmarks/results/ (hours)
    python benchmarks/run_all.py --quick                          # the smoke version of each (minutes)
    python benchmarks/run_all.py --only eval_speed,gallery_search
    python benchmarks/run_all.py --list

``make bench`` runs the first (``make bench BENCH_ARGS=--quick`` the second).

**What a benchmark is.** A script ``benchmarks/<name>.py`` (not this runner, not a name starting with
``_``). The runner calls it in a fresh process with the arguments that ``BENCHMARKS`` lists for it
(for a script it does not list: ``--out <out>/<name>.json``, plus ``--quick`` in quick mode), so a
new benchmark joins by accepting ``--out PATH`` and ``--quick``. One failing does not stop the others;
the runner exits 1 if any failed.

**Rows.** A benchmark's JSON says what it found in a list ``"rows"``, one dict per measurement::

    {"measure": "what was measured", "value": 1.9, "unit": "s",
     "baseline": "what it is compared with", "baseline_value": 7.4,    # measured in the same run
     "speedup": 3.9,              # how many times faster than the baseline (speed rows)
     "comparison": "free text",   # instead of speedup, e.g. for accuracies
     "spread": [1.8, 2.1], "baseline_spread": [6.9, 8.0], "repeats": 5, "note": "..."}

For the benchmarks written before this convention, ``ADAPTERS`` reads the rows out of their own
JSON layout. The runner adds the benchmark's name and command to every row.

**Outputs** (in ``--out``): ``<name>.json`` per benchmark, ``logs/<name>.log`` (its standard
output), ``bench.json`` (the machine as ``neurodecode sys-info`` reports it, the load average at the
start and the end, and per benchmark its command, exit code, seconds and rows) and ``bench.md``
(the same as a table). These machines are shared and noisy: read the spreads, not only the medians.

Data some benchmarks need are made first, in ``--work`` (default: a temporary folder, removed after):
a simulated EEG set (``sim_encoders``), the demo's checkpoint (``eval_speed``; ``--demo DIR`` reuses
a finished ``neurodecode demo --out DIR``). ``n170_alignment`` needs the real recordings
(``../shared/data`` or ``$NEURODECODE_SHARED_DATA``) and fails without them.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROW_KEYS = ("measure", "value", "unit", "baseline", "baseline_value", "speedup", "comparison", "spread",
            "baseline_spread", "repeats", "note")


@dataclass(frozen=True)
class Bench:
    """How the runner calls one benchmark.

    ``args`` and ``quick`` are its arguments in a full and a quick run; ``{out}`` is replaced by its
    JSON path, ``{work}`` by the work folder, ``{sim_eeg}`` and ``{demo_ckpt}`` by the data it needs
    (``needs``), made by the runner first. ``quick=None``: skipped in quick runs.
    """

    args: tuple[str, ...] = ("--out", "{out}")
    quick: tuple[str, ...] | None = ("--out", "{out}", "--quick")
    needs: tuple[str, ...] = ()
    quick_needs: tuple[str, ...] = ()


BENCHMARKS: dict[str, Bench] = {
    "eval_speed": Bench(args=("--out", "{out}", "--ckpt", "{demo_ckpt}"), needs=("demo_ckpt",)),
    "gpu_train": Bench(),
    "gallery_search": Bench(quick=("--out", "{out}", "--quick", "--n-gallery", "100000", "--queries", "200",
                                   "--baseline-sizes", "25000", "50000")),
    "prepare_throughput": Bench(args=("--json", "{out}"), quick=("--json", "{out}", "--n-conditions", "100")),
    "train_throughput": Bench(quick=("--out", "{out}", "--batch-sizes", "64", "--min-steps", "1",
                                     "--min-time", "0.5")),
    "recon_speed": Bench(),
    "sim_encoders": Bench(args=("--out", "{out}", "--data", "{sim_eeg}", "--runs", "{work}/sim_encoders_runs"),
                          quick=("--out", "{out}", "--data", "{sim_eeg}", "--runs", "{work}/sim_encoders_runs",
                                 "--encoders", "Ridge", "--extra-teacher", ""),
                          needs=("sim_eeg",), quick_needs=("sim_eeg",)),
    "n170_alignment": Bench(quick=None),  # needs the real recordings
    "stream_latency": Bench(quick=("--out", "{out}", "--images", "20", "--reps", "2", "--repeats", "1",
                                   "--speeds", "5,20,80")),
}
QUICK_SIMULATION = ["--subjects", "2", "--train-concepts", "60", "--test-concepts", "20", "--exemplars", "3",
                    "--reps-test", "10"]


# --------------------------------------------------------------------------------------------------
# rows of the benchmarks that write their own layout
# --------------------------------------------------------------------------------------------------
def _rows_gallery_search(r: dict) -> list[dict]:
    rows = []
    s = r["settings"]
    for key, entry in r["baseline"].items():
        full = entry.get("chunked_full") or {}
        chunked = full.get("npy/float32/prefetch=True") or next(iter(full.values()), None)
        measured = entry.get("naive_full_measured")
        naive_t = measured["time_s"] if measured else entry.get("naive_full_extrapolated_time_s")
        if chunked is None or naive_t is None:
            continue
        how = "measured" if measured else "extrapolated linearly from smaller galleries of the same run"
        what = f"top-{s['k']} search, {s['n_gallery']:,} x {s['dim']} gallery on disk, {key}"
        rows.append({"measure": what + ", time", "value": chunked["time_s"], "unit": "s",
                     "baseline": f"naive (all in RAM, one similarity matrix), {how}", "baseline_value": naive_t,
                     "speedup": naive_t / chunked["time_s"]})
        naive_m = measured["peak_rss_increase_mb"] if measured else entry.get(
            "naive_full_extrapolated_peak_rss_increase_mb")
        if naive_m is not None:
            rows.append({"measure": what + ", peak memory", "value": chunked["peak_rss_increase_mb"], "unit": "MB",
                         "baseline": f"naive, {how}", "baseline_value": naive_m,
                         "comparison": f"{naive_m / max(chunked['peak_rss_increase_mb'], 1e-9):.1f}x less memory"})
    return rows


def _rows_prepare_throughput(r: dict) -> list[dict]:
    nf, nb = r["neurodecode"], r.get("baseline")
    n = r["session"].get("n_image_trials", r["session"].get("n_trials", "?"))
    rows = []
    for stage in ("total", "epoching", "mvnn"):
        row = {"measure": f"prepare from raw ({n} trials), {stage}", "value": nf[f"{stage}_trials_per_s"],
               "unit": "trials/s", "baseline": "the THINGS-EEG2/NICE scripts' computation"}
        if nb:
            row.update(baseline_value=nb[f"{stage}_trials_per_s"],
                       speedup=nf[f"{stage}_trials_per_s"] / nb[f"{stage}_trials_per_s"])
        rows.append(row)
    return rows


def _rows_train_throughput(r: dict) -> list[dict]:
    rows = []
    ref = {(x["device"], x["batch"]): x for x in r["summary"] if x["variant"] == "reference"}
    for x in r["summary"]:
        base = ref.get((x["device"], x["batch"]))
        if x["variant"] == "reference" or base is None:
            continue
        rows.append({"measure": f"ATM training step, {x['variant']}, batch {x['batch']}, {x['device']}",
                     "value": x["samples_per_s"], "unit": "samples/s", "baseline": "reference layers",
                     "baseline_value": base["samples_per_s"], "speedup": x["samples_per_s"] / base["samples_per_s"],
                     "note": f"peak RSS {x.get('peak_rss_gb')} GB vs {base.get('peak_rss_gb')} GB"})
    return rows


def _rows_recon_speed(r: dict) -> list[dict]:
    rows = []
    gen = r["demo_generator"]
    samp, train = gen["sampling"], gen["training"]
    if "default" in samp:
        row = {"measure": "demo generator sampling (DDIM 25 steps, guidance 2)",
               "value": samp["default"]["images_per_s"], "unit": "images/s", "baseline": "DDPM, 1000 steps"}
        if "ddpm_1000" in samp:
            b = samp["ddpm_1000"]["images_per_s"]
            row.update(baseline_value=b, speedup=samp["default"]["images_per_s"] / b)
        rows.append(row)
    if "bf16-mixed" in train and "32-true" in train:
        a, b = train["bf16-mixed"]["images_per_s"], train["32-true"]["images_per_s"]
        rows.append({"measure": "demo generator training step, bf16-mixed", "value": a, "unit": "images/s",
                     "baseline": "32-true", "baseline_value": b, "speedup": a / b})
    return rows


def _rows_sim_encoders(r: dict) -> list[dict]:
    rows = []
    for x in r["results"]:
        rows.append({"measure": f"{x['encoder']} ({x['teacher']}), simulated EEG, {r['n_way']}-way test top-1",
                     "value": x["test_top1"], "unit": "", "baseline": "the simulator's ideal decoder (its ceiling)",
                     "baseline_value": r["ceiling_top1"],
                     "comparison": f"{x['test_top1'] / r['ceiling_top1']:.0%} of the ceiling (chance "
                                   f"{r['chance_top1']:.3f})" if r.get("ceiling_top1") else None,
                     "note": f"{x['epochs']} epochs, {x['seconds']} s"})
    return rows


def _rows_n170_alignment(r: dict) -> list[dict]:
    rows = []
    for subject, res in r["results"].items():
        v = res.get("verdict")
        if not v:
            continue
        rows.append({"measure": f"N170 faces vs houses, sub-{subject}, best alignment model ({v['best_alignment_model']}), "
                                "ROC AUC", "value": v["roc_auc_mean"], "unit": "",
                     "baseline": "logistic regression, C by inner CV, same folds",
                     "baseline_value": v["baseline_tuned_same_folds"],
                     "comparison": f"{v['difference_to_tuned']:+.3f}", "note": v.get("note")})
    return rows


def _rows_stream_latency(r: dict) -> list[dict]:
    off = r["offline_same_windows"]
    fast = r["as_fast_as_possible"]
    return [
        {"measure": f"stream: CPU per window ({r['recording']['windows']} windows, {r['what']})",
         "value": r["cpu_ms_per_window"], "unit": "ms", "baseline": "offline path, embed + score per window",
         "baseline_value": off["embed_and_score_per_window_ms"],
         "comparison": f"{off['embed_and_score_per_window_ms'] / r['cpu_ms_per_window']:.2f}x the offline cost"},
        {"measure": "stream: latency per window, p99 (median of the repeats)",
         "value": r["latency_ms_median_of_repeats"]["p99"], "unit": "ms", "baseline": "the aim",
         "baseline_value": 20.0, "comparison": "met" if r.get("aim_p99_under_20ms") else "not met",
         "note": f"p50 {r['latency_ms_median_of_repeats']['p50']:.1f} ms; top-5 agreement with the offline path "
                 f"{r['online_offline_top5_agreement']:.0%}"},
        {"measure": "stream: windows per second, as fast as possible", "value": fast["windows_per_s"],
         "unit": "windows/s", "baseline": "offline path on the same windows",
         "baseline_value": 1e3 / off["per_window_ms"], "speedup": fast["windows_per_s"] * off["per_window_ms"] / 1e3},
    ]


ADAPTERS: dict[str, Callable[[dict], list[dict]]] = {
    "stream_latency": _rows_stream_latency,
    "gallery_search": _rows_gallery_search, "prepare_throughput": _rows_prepare_throughput,
    "train_throughput": _rows_train_throughput, "recon_speed": _rows_recon_speed,
    "sim_encoders": _rows_sim_encoders, "n170_alignment": _rows_n170_alignment,
}


def rows_of(name: str, path: Path) -> list[dict]:
    """The rows of a benchmark's JSON: its ``"rows"``, else those its adapter reads, else a pointer to it."""
    try:
        report = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        return [{"measure": "(no result)", "note": f"{path.name} unreadable: {e}"}]
    try:
        if isinstance(report.get("rows"), list):
            rows = report["rows"]
        elif name in ADAPTERS:
            rows = ADAPTERS[name](report)
        else:
            rows = []
    except (KeyError, TypeError, ValueError, ZeroDivisionError) as e:
        return [{"measure": "(rows not read)", "note": f"{type(e).__name__}: {e}; see {path.name}"}]
    rows = [{k: row.get(k) for k in ROW_KEYS if row.get(k) is not None} for row in rows if isinstance(row, dict)]
    return rows or [{"measure": "(no rows)", "note": f"see {path.name}"}]


# --------------------------------------------------------------------------------------------------
# the run
# --------------------------------------------------------------------------------------------------
def discover(folder: Path = HERE) -> dict[str, Bench]:
    """Every benchmark script of ``folder`` (those in ``BENCHMARKS`` first, in its order)."""
    found = sorted(p.stem for p in folder.glob("*.py") if not p.stem.startswith("_") and p.stem != "run_all")
    return {**{n: BENCHMARKS[n] for n in BENCHMARKS if n in found}, **{n: Bench() for n in found if n not in BENCHMARKS}}


def _machine() -> dict[str, Any]:
    info: dict[str, Any] = {}
    try:
        import neurodecode

        info = neurodecode.sys_info(show=False)
    except Exception as e:  # noqa: BLE001 - the run goes on without it
        info = {"error": f"sys_info failed: {type(e).__name__}: {e}"}
    try:
        info["git_commit"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=HERE, capture_output=True,
                                            text=True, timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        info["git_commit"] = None
    return info


def _load() -> list[float] | None:
    return [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None


def _make_data(need: str, work: Path, quick: bool, demo: Path | None) -> str:
    """Make (or find) what a benchmark needs; return the path that replaces ``{need}``."""
    if need == "sim_eeg":
        path = work / ("sim_eeg_quick" if quick else "sim_eeg")
        if not (path / "dataset.json").is_file():
            cmd = [sys.executable, "-m", "neurodecode", "simulate", "--modality", "eeg", "--out", str(path),
                   "--no-progress", *(QUICK_SIMULATION if quick else [])]
            print(f"== making {need}: {shlex.join(cmd)}", flush=True)
            subprocess.check_call(cmd)
        return str(path)
    if need == "demo_ckpt":
        folder = demo or work / "demo"
        ckpts = sorted((folder / "run" / "checkpoints").glob("best-*.ckpt"))
        if not ckpts:
            cmd = [sys.executable, "-m", "neurodecode", "demo", "--out", str(folder)]
            helptext = subprocess.run([*cmd[:4], "--help"], capture_output=True, text=True).stdout
            cmd += ["--no-reconstruction"] if "--no-reconstruction" in helptext else []  # the checkpoint is enough
            print(f"== making {need}: {shlex.join(cmd)}", flush=True)
            subprocess.check_call(cmd)
            ckpts = sorted((folder / "run" / "checkpoints").glob("best-*.ckpt"))
        if not ckpts:
            raise RuntimeError(f"no best-*.ckpt in {folder / 'run' / 'checkpoints'}")
        return str(ckpts[-1])
    raise ValueError(f"unknown data {need!r}")


def run(names: list[str], benches: dict[str, Bench], out: Path, work: Path, *, quick: bool, demo: Path | None,
        folder: Path = HERE, command: str | None = None) -> dict[str, Any]:
    """Run the benchmarks ``names``; return what ``bench.json`` holds."""
    (out / "logs").mkdir(parents=True, exist_ok=True)
    summary: dict[str, Any] = {
        "started": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "command": command,
        "quick": quick, "machine": _machine(), "load_average_start": _load(), "benchmarks": {},
    }
    data: dict[str, str] = {}
    for name in names:
        spec = benches[name]
        args = spec.quick if quick else spec.args
        target = out / f"{name}.json"
        entry: dict[str, Any] = {"json": target.name}
        summary["benchmarks"][name] = entry
        if args is None:
            entry.update(skipped="no quick version", rows=[])
            print(f"== {name}: skipped (no quick version)", flush=True)
            continue
        try:
            for need in spec.quick_needs if quick else spec.needs:
                if need not in data:
                    data[need] = _make_data(need, work, quick, demo)
        except (subprocess.CalledProcessError, RuntimeError) as e:
            entry.update(returncode=None, error=f"could not make its data: {e}",
                         rows=[{"measure": "(not run)", "note": f"could not make its data: {e}"}])
            print(f"== {name}: not run ({e})", flush=True)
            continue
        subs = {"{out}": str(target), "{work}": str(work), **{f"{{{k}}}": v for k, v in data.items()}}
        argv = []
        for a in args:
            for k, v in subs.items():
                a = a.replace(k, v)
            argv.append(a)
        cmd = [sys.executable, str(folder / f"{name}.py"), *argv]
        entry["command"] = shlex.join(["python", str(Path("benchmarks") / f"{name}.py"), *argv])
        print(f"== {name}: {entry['command']}", flush=True)
        target.unlink(missing_ok=True)
        t0 = time.perf_counter()
        with open(out / "logs" / f"{name}.log", "w") as log:
            rc = subprocess.call(cmd, stdout=log)
        entry.update(returncode=rc, seconds=round(time.perf_counter() - t0, 1), log=f"logs/{name}.log")
        if rc == 0 and target.is_file():
            entry["rows"] = rows_of(name, target)
        else:
            entry["rows"] = [{"measure": f"(failed: exit {rc})", "note": f"see logs/{name}.log and the console"}]
        for row in entry["rows"]:
            row["command"] = entry["command"]
        print(f"== {name}: exit {rc} in {entry['seconds']} s", flush=True)
    summary["load_average_end"] = _load()
    summary["finished"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    return summary


def _fmt(x: Any, unit: str | None = None) -> str:
    if x is None:
        return ""
    if isinstance(x, float):
        x = f"{x:.3g}" if abs(x) < 1000 else f"{x:,.0f}"
    if isinstance(x, list):
        return "-".join(_fmt(v) for v in x)
    return f"{x} {unit}".strip() if unit else str(x)


def markdown(summary: dict[str, Any]) -> str:
    """``bench.md``: the machine, then one table row per measurement."""
    m = summary["machine"]
    pk = m.get("packages", {})
    lines = [
        "# Benchmarks", "",
        f"Run {summary['started']} to {summary['finished']}" + (" (quick: smoke versions)" if summary["quick"] else "")
        + (f", `{summary['command']}`" if summary.get("command") else "") + ".", "",
        f"Machine: {m.get('platform')}, {m.get('cpu_count')} CPU cores (torch threads {m.get('torch_threads')}), "
        f"devices {', '.join(m.get('devices', []))}; Python {m.get('python')}, torch {pk.get('torch')}, numpy "
        f"{pk.get('numpy')}, neurodecode {pk.get('neurodecode')} (git {m.get('git_commit')}). Load average "
        f"{summary['load_average_start']} at the start, {summary['load_average_end']} at the end: on a shared "
        "machine timings vary, so each baseline is measured in the same run and spreads are given.", "",
        "| benchmark | measure | value | baseline (same run) | vs baseline | spread (value; baseline) | n | command |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, entry in summary["benchmarks"].items():
        for row in entry.get("rows") or [{"measure": f"({entry.get('skipped', 'no rows')})"}]:
            unit = row.get("unit")
            base = row.get("baseline", "")
            if row.get("baseline_value") is not None:
                base = f"{base}: {_fmt(row['baseline_value'], unit)}"
            sp = row.get("speedup")
            vs = row.get("comparison", "") if sp is None else f"{sp:.2f}x faster" if sp >= 1 else f"{1 / sp:.2f}x slower"
            spread = "; ".join(s for s in (_fmt(row.get("spread")), _fmt(row.get("baseline_spread"))) if s)
            note = f" ({row['note']})" if row.get("note") else ""
            cells = [name, f"{row.get('measure', '')}{note}", _fmt(row.get("value"), unit), base, vs, spread,
                     _fmt(row.get("repeats")), f"`{row['command']}`" if row.get("command") else ""]
            lines.append("| " + " | ".join(str(c).replace("|", "/") for c in cells) + " |")
    return "\n".join(lines) + "\n"


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=HERE / "results", help="results folder (default: benchmarks/results)")
    parser.add_argument("--only", default="", help="comma-separated benchmark names (default: all)")
    parser.add_argument("--quick", action="store_true", help="the smoke version of every benchmark")
    parser.add_argument("--work", type=Path, default=None, help="folder for the data benchmarks need (kept; "
                        "default: a temporary folder, removed after)")
    parser.add_argument("--demo", type=Path, default=None, help="a finished 'neurodecode demo --out DIR' to reuse")
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    parser.add_argument("--benchmarks-dir", type=Path, default=HERE, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    benches = discover(args.benchmarks_dir)
    if args.list:
        print("\n".join(benches))
        return 0
    names = [n.strip() for n in args.only.split(",") if n.strip()] or list(benches)
    unknown = [n for n in names if n not in benches]
    if unknown:
        parser.error(f"unknown benchmark(s) {unknown}; choose from {list(benches)}")
    args.out.mkdir(parents=True, exist_ok=True)
    work = args.work or Path(tempfile.mkdtemp(prefix="neurodecode_bench_"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        command = shlex.join(["python", "benchmarks/run_all.py", *(sys.argv[1:] if argv is None else argv)])
        summary = run(names, benches, args.out, work, quick=args.quick, demo=args.demo, folder=args.benchmarks_dir,
                      command=command)
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    _write(args.out / "bench.json", json.dumps(summary, indent=2, default=str) + "\n")
    _write(args.out / "bench.md", markdown(summary))
    print(f"-> {args.out / 'bench.md'} and bench.json")
    failed = [n for n, e in summary["benchmarks"].items() if e.get("returncode") not in (0, None) or "error" in e]
    return int(bool(failed))


if __name__ == "__main__":
    sys.exit(main())
