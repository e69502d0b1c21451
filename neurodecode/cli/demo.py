"""``neurodecode demo``: the whole pipeline on simulated EEG, on a laptop CPU, with no download."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

HELP = "Run the end-to-end demo: simulate EEG, train ATM, evaluate (report + figures) and export, offline."
DESCRIPTION = """\
The whole pipeline on data that need no download:
  1. neurodecode simulate   (4 subjects of 63-channel EEG + procedurally drawn object images)
  2. neurodecode fit        (configs/sim/eeg_atm.yaml: ATM aligned with the simulator's feature space)
  3. neurodecode evaluate   (zero-shot retrieval with CIs, time-resolved decoding, ablation, figures)
  4. neurodecode export     (config.json + model.safetensors)
Everything goes under --out. Finished steps are skipped when the demo is run again.
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=Path("demo_out"), help="output folder (default demo_out)")
    parser.add_argument("--config", type=Path, default=None,
                        help="training config (default: configs/sim/eeg_atm.yaml of this checkout)")
    parser.add_argument("--teacher", default="sim:features",
                        help="teacher spec (default sim:features; efficientnet-lite0 uses real ImageNet weights)")
    parser.add_argument("--epochs", type=int, default=None, help="override the config's max_epochs")
    parser.add_argument("--quick", action="store_true", help="a smaller simulation and 3 epochs (a smoke run)")


def _config_path(given: Path | None) -> Path:
    if given is not None:
        return given
    for base in (Path.cwd(), Path(__file__).resolve().parents[2]):
        p = base / "configs" / "sim" / "eeg_atm.yaml"
        if p.is_file():
            return p
    raise FileNotFoundError("configs/sim/eeg_atm.yaml not found: run the demo from a neurodecode checkout or pass "
                            "--config FILE.")


def run(args: argparse.Namespace) -> int:
    from neurodecode.cli.lightning import run_lightning_cli
    from neurodecode.reporting.evaluate import evaluate
    from neurodecode.simulate.dataset import SimulationConfig, simulate
    from neurodecode.training.export import export_checkpoint

    t0 = time.perf_counter()
    out = args.out
    data = out / "sim_eeg"
    run_dir = out / "run"
    steps = []
    if not (data / "ceiling.json").is_file():
        cfg = SimulationConfig(n_subjects=2, n_train_concepts=60, n_test_concepts=20, n_exemplars=3) if args.quick \
            else SimulationConfig()
        res = simulate(data, cfg)
        print(res.summary())
    steps.append(f"simulate  -> {data}")
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    if not ckpt.is_file():
        extra = ["--data.root", str(data), "--data.teacher", args.teacher, "--trainer.default_root_dir", str(run_dir)]
        epochs = 3 if args.quick and args.epochs is None else args.epochs
        if epochs is not None:
            extra += ["--trainer.max_epochs", str(epochs)]
        run_lightning_cli("fit", ["-c", str(_config_path(args.config)), *extra])
    steps.append(f"fit       -> {run_dir}")
    best = sorted((run_dir / "checkpoints").glob("best-*.ckpt"))
    chosen = best[-1] if best else ckpt
    ev = out / "evaluation"
    metrics = evaluate(chosen, ev)
    steps.append(f"evaluate  -> {ev}/report.md, metrics.json, {len(metrics.get('figures', {}))} figures")
    exported = export_checkpoint(chosen, out / "exported")
    steps.append(f"export    -> {exported}")
    print(f"\nneurodecode demo finished in {time.perf_counter() - t0:.0f} s")
    for s in steps:
        print("  " + s)
    for s, v in metrics["subjects"].items():
        r = v["retrieval"]["inductive"]["brain_to_image"]
        ci = v["confidence_intervals"].get("top1_full", {})
        line = (f"  sub-{s}: zero-shot top-1 {r['top1_full']:.1%} [{ci.get('low', float('nan')):.1%}, "
                f"{ci.get('high', float('nan')):.1%}], top-5 {r['top5_full']:.1%}, {v['n_candidates']}-way "
                f"(chance {1 / v['n_candidates']:.1%})")
        frac = metrics.get("fraction_of_simulator_ceiling_top1", {}).get(s)
        if frac is not None:
            line += f"; {frac:.0%} of the simulator's ceiling"
        print(line)
    (out / "demo_summary.json").write_text(json.dumps({"steps": steps, "seconds": time.perf_counter() - t0}, indent=2))
    return 0
