"""Every EEG encoder on the default simulated EEG: test top-1 against the simulator's ceiling.

Trains each encoder with ``configs/sim/eeg_atm.yaml`` (only the encoder swapped; same data, protocol,
selection on validation concepts, seed) and writes one JSON with, per encoder: test top-1/top-5
(50-way zero-shot), the fraction of the ideal decoder's ceiling, epochs and wall time. A second
teacher (default ``efficientnet-lite0``, a real ImageNet model) can be added to show what a vision
model that does not share the simulated brain's feature space recovers.

    python benchmarks/sim_encoders.py --data sim_eeg --out benchmarks/results/sim_encoders.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

ENCODERS = {
    "ATM": "neurodecode.encoders.ATM",
    "NICE": "neurodecode.encoders.NICE",
    "EEGNet": "neurodecode.encoders.EEGNet",
    "ShallowConvNet": "neurodecode.encoders.ShallowConvNet",
    "MLP": "neurodecode.encoders.MLP",
    "BrainModule": "neurodecode.encoders.BrainModule",
    "Ridge": "neurodecode.encoders.Ridge",
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, required=True, help="a folder made by 'neurodecode simulate --modality eeg'")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/sim_encoders.json"))
    p.add_argument("--runs", type=Path, default=Path("runs/bench_sim_encoders"))
    p.add_argument("--encoders", default=",".join(ENCODERS))
    p.add_argument("--extra-teacher", default="efficientnet-lite0", help="also train ATM with this teacher ('' to skip)")
    p.add_argument("--max-epochs", type=int, default=None,
                   help="cap the epochs of the trained encoders (default: the config's); e.g. for the slow brain module")
    p.add_argument("--config", type=Path, default=Path(__file__).resolve().parents[1] / "configs/sim/eeg_atm.yaml")
    args = p.parse_args()

    from neurodecode.cli.lightning import run_lightning_cli

    jobs = [(name, ENCODERS[name], "sim:features") for name in args.encoders.split(",") if name]
    if args.extra_teacher:
        jobs.append(("ATM", ENCODERS["ATM"], args.extra_teacher))
    ceiling = json.loads((args.data / "ceiling.json").read_text())
    results = []
    for name, cls, teacher in jobs:
        root = args.runs / f"{name}_{teacher.replace(':', '_')}"
        t0 = time.perf_counter()
        extra = ["--trainer.max_epochs", "1"] if name == "Ridge" else []
        if args.max_epochs is not None and name != "Ridge":
            extra = ["--trainer.max_epochs", str(args.max_epochs)]
        run_lightning_cli("fit", ["-c", str(args.config), "--data.root", str(args.data), "--data.teacher", teacher,
                                  "--model.init_args.encoder", cls, "--trainer.default_root_dir", str(root),
                                  "--trainer.enable_progress_bar", "false", *extra])
        seconds = time.perf_counter() - t0
        res = json.loads(sorted(root.rglob("results.json"))[-1].read_text())
        results.append({
            "encoder": name, "teacher": teacher, "test_top1": res["test"]["test/top1"],
            "test_top5": res["test"]["test/top5"], "per_subject_top1": {s: v["top1"] for s, v in
                                                                      res["test_detail"]["per_subject"].items()},
            "fraction_of_ceiling_top1": res.get("fraction_of_ceiling_top1"), "epochs": res["epochs_trained"],
            "max_epochs": 1 if name == "Ridge" else args.max_epochs, "seconds": round(seconds, 1),
        })
        print(json.dumps(results[-1]))
    out = {"data": str(args.data), "n_way": ceiling["n_way"], "ceiling_top1": ceiling["mean"]["top1"],
           "chance_top1": ceiling["chance_top1"], "config": str(args.config), "results": results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2))
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
