"""Evaluation time: the fast path of ``neurodecode evaluate`` against the plain one, in the same run.

What it measures (each variant ``--repeats`` times, the variants alternating so that the machine's
load hits them alike; medians and min-max spread):

1. **Time-resolved decoding** (:func:`neurodecode.evaluation.time_resolved.time_resolved_retrieval_sets`)
   on random data of the demo's shape: 2700 training responses (4 subjects x 675 images, repetitions
   already averaged), 63 channels x 125 samples at 125 Hz, 30-d targets, four test sets of 50
   images, 50 ms windows every 20 ms (60 windows), the evaluation's defaults otherwise. The cost
   depends on the shapes only. Variants:

   - ``fast``: what ``neurodecode evaluate`` runs: one torch and one BLAS thread
     (:mod:`neurodecode.evaluation.threads`), windows fitted side by side
     (:func:`neurodecode.evaluation.window_ridge.fit_windows`);
   - ``plain`` (**baseline**): the same computation window after window with the libraries' default
     threads (the code before the fast path);
   - ``sklearn``: a ``StandardScaler`` + ``RidgeCV(alpha_per_target=False)`` per window, default
     threads (the textbook way; scoring as in the others); slow, so run ``--sklearn-repeats`` times
     (default once).

   The results are checked to agree (the chosen ridge value of every window, the top-1 curves).
2. With ``--ckpt`` (e.g. the demo's ``demo_out/run/checkpoints/best-*.ckpt``): the whole evaluation
   of that checkpoint, each run in a fresh process as a user runs it: ``fast`` is ``neurodecode
   evaluate --ckpt ... --no-progress``; ``plain`` calls
   ``neurodecode.reporting.evaluate.evaluate(..., threads=None, n_jobs=1)`` (the libraries' threads,
   windows one after the other). Their ``metrics.json`` are compared number by number.

Usage::

    python benchmarks/eval_speed.py --out eval_speed.json
    python benchmarks/eval_speed.py --ckpt demo_out/run/checkpoints/best-epoch007.ckpt --out eval_speed.json
    python benchmarks/eval_speed.py --quick            # a smoke run on tiny data (seconds)

The machine's load average is recorded at the start and the end: on a shared machine the plain
path's time varies most (its threads wait for cores that other processes hold).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

DEMO_SHAPE = {"n_train": 2700, "n_chans": 63, "n_times": 125, "sfreq": 125.0, "dim": 30, "n_sets": 4, "n_test": 50}
QUICK_SHAPE = {"n_train": 200, "n_chans": 16, "n_times": 40, "sfreq": 125.0, "dim": 8, "n_sets": 2, "n_test": 20}
VARIANTS = ("fast", "plain", "sklearn")


def _problem(shape: dict[str, Any], seed: int = 0):
    """Random training/test responses with some signal in the middle of the epoch."""
    rng = np.random.default_rng(seed)
    n, c, t, d = shape["n_train"], shape["n_chans"], shape["n_times"], shape["dim"]
    times = np.arange(t) / shape["sfreq"]
    mix = rng.standard_normal((d, c)) / np.sqrt(d)
    bump = np.exp(-0.5 * ((times - times.mean()) / (0.1 * times[-1] + 1e-9)) ** 2)

    def responses(y):
        x = rng.standard_normal((len(y), c, t)).astype(np.float32)
        x += (y @ mix)[:, :, None].astype(np.float32) * bump.astype(np.float32)
        return x

    ty = rng.standard_normal((n, d))
    tests = {}
    for s in range(shape["n_sets"]):
        cand = rng.standard_normal((shape["n_test"], d)).astype(np.float32)
        tests[f"{s + 1:02d}"] = (responses(cand), cand, np.arange(shape["n_test"]))
    return responses(ty), ty.astype(np.float32), tests, times


def _sklearn_sets(train_x, train_y, tests, times, **kw):
    """The per-window scikit-learn ridge, scored like time_resolved_retrieval_sets (top-1 per window)."""
    from sklearn.linear_model import RidgeCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from neurodecode.evaluation.ranking import similarity_matrix
    from neurodecode.evaluation.retrieval import kway_hits
    from neurodecode.evaluation.time_resolved import sliding_windows

    alphas = np.logspace(-1, 6, 15)
    out = {name: {"top1": [], "alpha": []} for name in tests}
    for a, b, _ in sliding_windows(times, kw["width"], kw["step"]):
        flat = train_x[:, :, a:b].reshape(len(train_x), -1)
        model = make_pipeline(StandardScaler(), RidgeCV(alphas=alphas, alpha_per_target=False)).fit(flat, train_y)
        for name, (tx, cand, tgt) in tests.items():
            pred = model.predict(tx[:, :, a:b].reshape(len(tx), -1))
            hits = kway_hits(similarity_matrix(pred, cand), len(cand), tops=[1], targets=tgt)[0]
            out[name]["top1"].append(float(np.mean(hits)))
            out[name]["alpha"].append(float(model[-1].alpha_))
    return out


def _time_resolved(variant: str, problem, kw: dict[str, Any]) -> tuple[float, dict]:
    from neurodecode.evaluation.threads import thread_limits
    from neurodecode.evaluation.time_resolved import time_resolved_retrieval_sets

    train_x, train_y, tests, times = problem
    t0 = time.perf_counter()
    if variant == "sklearn":
        res = _sklearn_sets(train_x, train_y, tests, times, **kw)
    elif variant == "fast":
        with thread_limits(1):
            res = time_resolved_retrieval_sets(train_x, train_y, tests, times, n_jobs=None, blas_threads=1, **kw)
    else:
        res = time_resolved_retrieval_sets(train_x, train_y, tests, times, n_jobs=1, blas_threads=None, **kw)
    return time.perf_counter() - t0, res


def _stats(seconds: list[float]) -> dict[str, Any]:
    return {"seconds": [round(s, 3) for s in seconds], "median": round(statistics.median(seconds), 3),
            "min": round(min(seconds), 3), "max": round(max(seconds), 3)}


def bench_time_resolved(shape: dict[str, Any], repeats: int, variants: list[str],
                        sklearn_repeats: int = 1) -> dict[str, Any]:
    """Time every variant ``repeats`` times (alternating; scikit-learn's ``sklearn_repeats``) and compare them."""
    problem = _problem(shape)
    kw = {"width": 0.05, "step": 0.02, "n_boot": 1000, "n_permutations": 1000, "progress_bar": False}
    if shape is QUICK_SHAPE:
        kw.update(n_boot=100, n_permutations=100)
    warm = _problem(QUICK_SHAPE)  # first calls import and initialise libraries: not timed
    for v in variants:
        _time_resolved(v, warm, {**kw, "n_boot": 10, "n_permutations": 10})
    sklearn_repeats = max(1, min(int(sklearn_repeats), repeats))
    times: dict[str, list[float]] = {v: [] for v in variants}
    results: dict[str, dict] = {}
    for r in range(repeats):
        for v in variants:
            if v == "sklearn" and r >= sklearn_repeats:
                continue
            dt, res = _time_resolved(v, problem, kw)
            times[v].append(dt)
            results[v] = res
            print(f"[eval_speed] time-resolved {v:8s} {dt:7.2f} s", file=sys.stderr, flush=True)
    agree: dict[str, Any] = {}
    ref = results.get("plain") or next(iter(results.values()))
    for v, res in results.items():
        agree[v] = {
            "same_alpha_every_window": all(res[n]["alpha"] == ref[n]["alpha"] for n in ref),
            "max_abs_diff_top1": max(float(np.max(np.abs(np.subtract(res[n]["top1"], ref[n]["top1"])))) for n in ref),
        }
    n_windows = len(next(iter(ref.values()))["alpha"])
    return {"shape": shape, "settings": kw, "n_windows": n_windows,
            "variants": {v: _stats(s) for v, s in times.items()}, "agreement_with_plain": agree}


def _flatten_numbers(x: Any, path: str = "") -> dict[str, float]:
    skip = {"created", "figures", "root", "ckpt", "checkpoint"}
    out: dict[str, float] = {}
    if isinstance(x, dict):
        for k, v in x.items():
            if k not in skip:
                out.update(_flatten_numbers(v, f"{path}/{k}"))
    elif isinstance(x, list):
        for i, v in enumerate(x):
            out.update(_flatten_numbers(v, f"{path}[{i}]"))
    elif isinstance(x, bool):
        out[path] = float(x)
    elif isinstance(x, int | float):
        out[path] = float(x)
    return out


def bench_evaluate(ckpt: Path, repeats: int, workdir: Path) -> dict[str, Any]:
    """Time the whole evaluation of ``ckpt``, each run in a fresh process, fast and plain alternating."""
    plain_code = ("import sys; from neurodecode.reporting.evaluate import evaluate; "
                  "evaluate(sys.argv[1], sys.argv[2], progress_bar=False, threads=None, n_jobs=1)")
    exe = Path(sys.executable).with_name("neurodecode")
    fast_cmd = [str(exe) if exe.is_file() else sys.executable, *([] if exe.is_file() else ["-m", "neurodecode"]),
                "evaluate", "--ckpt", str(ckpt), "--out", "{out}", "--no-progress"]
    commands = {"fast": fast_cmd, "plain": [sys.executable, "-c", plain_code, str(ckpt), "{out}"]}
    times: dict[str, list[float]] = {"fast": [], "plain": []}
    for r in range(repeats):
        for v, cmd in commands.items():
            out = workdir / f"{v}{r}"
            run = [a.replace("{out}", str(out)) for a in cmd]
            t0 = time.perf_counter()
            proc = subprocess.run(run, capture_output=True, text=True)
            dt = time.perf_counter() - t0
            if proc.returncode != 0:
                raise RuntimeError(f"{' '.join(run)} failed:\n{proc.stderr[-3000:]}")
            times[v].append(dt)
            print(f"[eval_speed] evaluate {v:8s} {dt:7.2f} s", file=sys.stderr, flush=True)
    a = _flatten_numbers(json.loads((workdir / "fast0" / "metrics.json").read_text()))
    b = _flatten_numbers(json.loads((workdir / "plain0" / "metrics.json").read_text()))
    common = sorted(set(a) & set(b))
    diffs = [k for k in common if not (a[k] == b[k] or (math.isnan(a[k]) and math.isnan(b[k])))]
    return {"ckpt": str(ckpt), "commands": {v: " ".join(c) for v, c in commands.items()},
            "variants": {v: _stats(s) for v, s in times.items()},
            "metrics_compared": len(common), "metrics_only_in_one": len(set(a) ^ set(b)),
            "metrics_differing": len(diffs), "first_differences": {k: [a[k], b[k]] for k in diffs[:10]}}


def _rows(report: dict[str, Any], command: str) -> list[dict[str, Any]]:
    rows = []
    tr = report["time_resolved"]
    v = tr["variants"]
    shape = tr["shape"]
    what = (f"time-resolved decoding, {tr['n_windows']} windows, {shape['n_train']} x {shape['n_chans']} x "
            f"{shape['n_times']} training responses, {shape['n_sets']} test sets")
    for base, label in (("plain", "plain: windows one by one, default threads"),
                        ("sklearn", "scikit-learn StandardScaler + RidgeCV per window")):
        if base in v and "fast" in v:
            agree = tr["agreement_with_plain"].get(base, {})
            rows.append({"measure": what, "value": v["fast"]["median"], "unit": "s", "baseline": label,
                         "baseline_value": v[base]["median"],
                         "speedup": round(v[base]["median"] / v["fast"]["median"], 2),
                         "spread": [v["fast"]["min"], v["fast"]["max"]],
                         "baseline_spread": [v[base]["min"], v[base]["max"]], "repeats": len(v["fast"]["seconds"]),
                         "note": "same ridge value in every window: "
                                 f"{tr['agreement_with_plain']['fast']['same_alpha_every_window']}"
                                 + (f"; scikit-learn's too: {agree.get('same_alpha_every_window')}"
                                    if base == "sklearn" else ""),
                         "command": command})
    ev = report.get("evaluate")
    if ev:
        f, p = ev["variants"]["fast"], ev["variants"]["plain"]
        rows.append({"measure": "neurodecode evaluate of the checkpoint (fresh process, wall)", "value": f["median"],
                     "unit": "s", "baseline": "plain: evaluate(threads=None, n_jobs=1)", "baseline_value": p["median"],
                     "speedup": round(p["median"] / f["median"], 2), "spread": [f["min"], f["max"]],
                     "baseline_spread": [p["min"], p["max"]], "repeats": len(f["seconds"]),
                     "note": f"{ev['metrics_differing']} of {ev['metrics_compared']} numbers of metrics.json differ",
                     "command": command})
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=None, help="JSON output path (default: print only)")
    p.add_argument("--ckpt", type=Path, default=None, help="also time the whole evaluation of this checkpoint")
    p.add_argument("--repeats", type=int, default=5, help="timed runs of each variant (default %(default)s)")
    p.add_argument("--sklearn-repeats", type=int, default=1, help="runs of the scikit-learn variant (slow)")
    p.add_argument("--evaluate-repeats", type=int, default=3, help="runs of each whole evaluation (--ckpt)")
    p.add_argument("--variants", default=",".join(VARIANTS), help="time-resolved variants (default %(default)s)")
    p.add_argument("--quick", action="store_true", help="tiny data, one run of fast and plain, no --ckpt")
    args = p.parse_args(argv)
    variants = [v for v in args.variants.split(",") if v]
    bad = sorted(set(variants) - set(VARIANTS))
    if bad or "fast" not in variants:
        p.error(f"--variants must include 'fast' and come from {VARIANTS}, got {variants}")
    if args.quick:
        variants = [v for v in variants if v != "sklearn"]
    import torch

    report: dict[str, Any] = {
        "benchmark": "eval_speed",
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(), "torch": torch.__version__,
                    "numpy": np.__version__, "torch_threads_default": torch.get_num_threads(),
                    "load_average_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None},
        "quick": args.quick,
    }
    shape = QUICK_SHAPE if args.quick else DEMO_SHAPE
    report["time_resolved"] = bench_time_resolved(shape, 1 if args.quick else args.repeats, variants,
                                                  sklearn_repeats=args.sklearn_repeats)
    if args.ckpt is not None and not args.quick:
        with tempfile.TemporaryDirectory(prefix="eval_speed_") as tmp:
            report["evaluate"] = bench_evaluate(args.ckpt, args.evaluate_repeats, Path(tmp))
    report["machine"]["load_average_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    command = " ".join(["python", "benchmarks/eval_speed.py", *(argv if argv is not None else sys.argv[1:])])
    report["rows"] = _rows(report, command)
    text = json.dumps(report, indent=2)
    if args.out is not None:
        from neurodecode.utils import atomic_write_text

        args.out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(args.out, text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
