"""Every EEG encoder on the default simulated EEG (or the brain module on simulated MEG): test top-1
against the simulator's ceiling.

Trains each encoder with ``configs/sim/eeg_atm.yaml`` (only the encoder swapped; same data, protocol,
selection on validation concepts, seed) and writes one JSON with, per encoder: test top-1/top-5
(50-way zero-shot), the fraction of the ideal decoder's ceiling, epochs and wall time. A second
teacher (default ``efficientnet-lite0``, a real ImageNet model) can be added to show what a vision
model that does not share the simulated brain's feature space recovers.

``--modality meg`` reads a folder of ``neurodecode simulate --modality meg`` and trains with
``configs/sim/meg_brainmodule.yaml`` (default encoders: the brain module only; no extra teacher).

    python benchmarks/sim_encoders.py --data sim_eeg --out benchmarks/results/sim_encoders.json
    python benchmarks/sim_encoders.py --modality meg --data sim_meg --out benchmarks/results/sim_encoders_meg.json
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


CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "sim"
# per modality: the config, the encoders trained by default and the default extra teacher
MODALITIES = {
    "eeg": (CONFIGS / "eeg_atm.yaml", ",".join(ENCODERS), "efficientnet-lite0"),
    "meg": (CONFIGS / "meg_brainmodule.yaml", "BrainModule", ""),
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, required=True,
                   help="a folder made by 'neurodecode simulate --modality eeg' (or meg, with --modality meg)")
    p.add_argument("--modality", choices=tuple(MODALITIES), default="eeg",
                   help="eeg: every EEG encoder with configs/sim/eeg_atm.yaml; meg: the brain module with "
                        "configs/sim/meg_brainmodule.yaml")
    p.add_argument("--out", type=Path, default=None,
                   help="default benchmarks/results/sim_encoders.json (sim_encoders_meg.json for meg)")
    p.add_argument("--runs", type=Path, default=None, help="default runs/bench_sim_encoders[_meg]")
    p.add_argument("--encoders", default=None, help="comma-separated names (default: the modality's)")
    p.add_argument("--extra-teacher", default=None,
                   help="also train ATM with this teacher ('' to skip; default efficientnet-lite0 for eeg, none for meg)")
    p.add_argument("--max-epochs", type=int, default=None,
                   help="cap the epochs of the trained encoders (default: the config's); e.g. for the slow brain module")
    p.add_argument("--config", type=Path, default=None, help="default: the modality's config")
    args = p.parse_args()
    config, encoders, extra = MODALITIES[args.modality]
    suffix = "" if args.modality == "eeg" else f"_{args.modality}"
    args.config = args.config or config
    args.encoders = encoders if args.encoders is None else args.encoders
    args.extra_teacher = extra if args.extra_teacher is None else args.extra_teacher
    args.out = args.out or Path(f"benchmarks/results/sim_encoders{suffix}.json")
    args.runs = args.runs or Path(f"runs/bench_sim_encoders{suffix}")
    unknown = [n for n in args.encoders.split(",") if n and n not in ENCODERS]
    if unknown:
        p.error(f"--encoders: unknown {unknown}; choose from {', '.join(ENCODERS)}")

    from neurodecode.cli.lightning import run_lightning_cli
    from neurodecode.utils import atomic_write_json

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
            # wall time of the whole run (data, each epoch's validation, the test) over the epochs trained
            "seconds_per_epoch": round(seconds / max(1, res["epochs_trained"]), 1),
        })
        print(json.dumps(results[-1]))
    out = {"data": str(args.data), "modality": args.modality, "n_way": ceiling["n_way"],
           "ceiling_top1": ceiling["mean"]["top1"], "chance_top1": ceiling["chance_top1"], "config": str(args.config), "results": results}
    atomic_write_json(args.out, out)
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
