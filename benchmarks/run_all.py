"""Run every benchmark of this folder, one after the other, each writing its JSON to ``--out``.

Usage::

    python benchmarks/run_all.py --out bench_results            # everything (long: hours on 2 cores)
    python benchmarks/run_all.py --out bench_results --only gallery_search,train_throughput
    python benchmarks/run_all.py --list

Each benchmark is its own script with its own ``--help``; this runner passes the output path (and the
arguments listed in ``BENCHMARKS``) and records the exit code and wall time of each in
``<out>/run_all.json``. A failing benchmark does not stop the others; the runner exits 1 if any failed.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

# name -> arguments; "{out}" is replaced by the benchmark's JSON path
BENCHMARKS: dict[str, list[str]] = {
    "gallery_search": ["--out", "{out}"],
    "prepare_throughput": ["--json", "{out}"],
    "train_throughput": ["--out", "{out}"],
    "sim_encoders": ["--out", "{out}", "--data", "{sim_eeg}"],  # the runner simulates {sim_eeg} first
    # needs the real recordings (../shared/data or $NEURODECODE_SHARED_DATA)
    "n170_alignment": ["--out", "{out}"],
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="bench_results", help="folder of the JSON results (default: %(default)s)")
    parser.add_argument("--only", default="", help="comma-separated benchmark names (default: all)")
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    args = parser.parse_args(argv)
    if args.list:
        print("\n".join(BENCHMARKS))
        return 0
    names = [n.strip() for n in args.only.split(",") if n.strip()] or list(BENCHMARKS)
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark(s) {unknown}; choose from {list(BENCHMARKS)}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    summary = {}
    sim_eeg = out / "sim_eeg"
    if "sim_encoders" in names and not (sim_eeg / "dataset.json").is_file():
        print(f"== simulating the EEG data of sim_encoders -> {sim_eeg}", flush=True)
        subprocess.check_call([sys.executable, "-m", "neurodecode", "simulate", "--modality", "eeg", "--out",
                               str(sim_eeg)])
    for name in names:
        target = out / f"{name}.json"
        cmd = [sys.executable, str(HERE / f"{name}.py"), *(a.replace("{out}", str(target)).replace("{sim_eeg}", str(sim_eeg)) for a in BENCHMARKS[name])]
        print(f"== {name}: {' '.join(cmd[1:])}", flush=True)
        t0 = time.perf_counter()
        rc = subprocess.call(cmd)
        summary[name] = {"returncode": rc, "seconds": round(time.perf_counter() - t0, 1), "json": str(target)}
        print(f"== {name}: exit {rc} in {summary[name]['seconds']} s", flush=True)
    (out / "run_all.json").write_text(json.dumps(summary, indent=2) + "\n")
    return int(any(v["returncode"] for v in summary.values()))


if __name__ == "__main__":
    sys.exit(main())
