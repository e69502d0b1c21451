"""``neurodecode demo``: the whole pipeline on simulated EEG, on a laptop CPU, with no download.

Each stage (simulate, fit, evaluate, export) counts as done only when it completed: its marker
(``<out>/stages/<stage>.done.json``, :mod:`neurodecode.cli.stages`) is written last and holds the hash
of the stage's configuration and of the stages before it. Run again, the demo skips what is done,
resumes an interrupted fit from its last complete epoch (``--ckpt_path last``) and redoes a stage whose
configuration changed (``--epochs``, ``--teacher``, ``--config``, ``--quick``) and what depends on it.
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

HELP = "Run the end-to-end demo: simulate EEG, train ATM, evaluate (report + figures) and export, offline."
DESCRIPTION = """\
The whole pipeline on data that need no download:
  1. simulate   4 subjects of 63-channel EEG at 125 Hz + procedurally drawn object images
  2. fit        configs/sim/eeg_atm.yaml (shipped in the package): ATM aligned with the simulator's
                feature space, the checkpoint chosen on validation concepts
  3. evaluate   zero-shot retrieval with CIs, time-resolved decoding, ablation, report.md, figures
  4. export     config.json + model.safetensors
Everything goes under --out (about 0.5 GB). A stage counts as done only when it finished: run the demo
again after an interruption and it resumes training from the last complete epoch; change --epochs or
--teacher and it redoes the stages that depend on them. Each stage prints its time, and a closing
table sums them up (about 2 minutes on an idle 2-core machine; --quick: a smoke run of well under a minute).
"""

# the default simulation at 125 Hz (not 250): the simulated responses (1/f and ~10 Hz alpha background,
# smooth evoked sources) lie well below its 62.5 Hz Nyquist frequency; the four stores take ~120 MB each
# instead of ~250 MB and training is twice as fast, with the accuracy of the 250 Hz demo (measured:
# mean top-1 61.5% of 50-way vs 63% at 250 Hz; the ceiling with 20 test repetitions is 96.5%)
DEMO_SIMULATION = {"sfreq": 125.0}
QUICK_SIMULATION = {"n_subjects": 2, "n_train_concepts": 60, "n_test_concepts": 20, "n_exemplars": 3,
                    "n_reps_test": 10, "sfreq": 125.0}
QUICK_EPOCHS = 3
QUICK_EVALUATION = {"n_boot": 200, "n_permutations": 100}
CONFIG = "sim/eeg_atm.yaml"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=Path("demo_out"), help="output folder (default demo_out)")
    parser.add_argument("--config", type=Path, default=None,
                        help=f"training config (default: the packaged configs/{CONFIG})")
    parser.add_argument("--teacher", default="sim:features",
                        help="teacher spec (default sim:features; efficientnet-lite0 uses real ImageNet weights)")
    parser.add_argument("--epochs", type=int, default=None, help="override the config's max_epochs")
    parser.add_argument("--quick", action="store_true",
                        help=f"a smoke run: 2 small subjects, {QUICK_EPOCHS} epochs; checks that every stage runs, "
                             "its accuracy is expected near chance")


def demo_config_path(given: Path | None = None) -> Path:
    """The training config of the demo: ``given``, else the one shipped inside the package."""
    from neurodecode.cli.checks import packaged_config
    from neurodecode.utils import UserError

    if given is not None:
        if not Path(given).is_file():
            raise UserError(f"--config {given}: no such file; give a YAML training config or leave --config out "
                            f"(the packaged configs/{CONFIG}).")
        return Path(given)
    return packaged_config(CONFIG)


def _print(msg: str) -> None:
    print(msg, flush=True)


def run(args: argparse.Namespace) -> int:
    from neurodecode.cli.demo_fit import fit_stage
    from neurodecode.cli.stages import Stage, StageBook, config_hash
    from neurodecode.utils import UserError

    out: Path = args.out
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file; give a folder for the demo's outputs.")
    config_path = demo_config_path(args.config)
    if args.epochs is not None and args.epochs < 1:
        raise UserError(f"--epochs {args.epochs}: give at least 1 epoch.")
    t0 = time.perf_counter()
    book = StageBook(out)
    data, run_dir, ev, exported = out / "sim_eeg", out / "run", out / "evaluation", out / "exported"
    if args.quick:
        _print(f"neurodecode demo --quick: a SMOKE RUN ({QUICK_EPOCHS} epochs on 2 small subjects). It checks that "
               "every stage runs; expect top-1 near chance (20-way: chance 5%, a smoke run gets about 0-20%), "
               "not a working decoder. "
               "Run without --quick for the real demo.")

    # 1. simulate ---------------------------------------------------------------------------------
    from dataclasses import asdict

    from neurodecode.simulate.config import SimulationConfig

    sim_cfg = SimulationConfig(**(QUICK_SIMULATION if args.quick else DEMO_SIMULATION))
    sim_conf = asdict(sim_cfg)
    h_sim = config_hash(sim_conf)
    marker = book.done("simulate", h_sim)
    if marker and (data / "ceiling.json").is_file():
        st = book.reuse("simulate", marker)
        _print(f"[simulate] done before ({data}), skipped")
    else:
        _print(f"[simulate] {sim_cfg.n_subjects} subjects -> {data}")
        ts = time.perf_counter()
        book.start("simulate", h_sim, sim_conf)
        if data.exists():
            shutil.rmtree(data)
        from neurodecode.simulate.dataset import simulate

        res = simulate(data, sim_cfg)
        _print(res.summary())
        size = sum(f.stat().st_size for f in data.rglob("*") if f.is_file())
        st = Stage("simulate", h_sim, time.perf_counter() - ts,
                   {"subjects": sim_cfg.n_subjects, "MB": round(size / 2**20)})
        book.finish(st, sim_conf)
        _print(f"[simulate] finished in {st.seconds:.0f} s ({size / 2**20:.0f} MB)")

    # 2. fit --------------------------------------------------------------------------------------
    epochs = QUICK_EPOCHS if args.quick and args.epochs is None else args.epochs
    fit_conf = {"config": config_path.read_text(), "teacher": args.teacher, "epochs": epochs}
    h_fit = config_hash(fit_conf, (h_sim,))
    marker = book.done("fit", h_fit)
    if marker and Path(marker["numbers"].get("best_checkpoint", "")).is_file():
        fit = book.reuse("fit", marker)
        _print(f"[fit] done before ({marker['numbers'].get('epochs')} epochs), skipped")
    else:
        extra = ["--data.root", str(data), "--data.teacher", args.teacher]
        if epochs is not None:
            extra += ["--trainer.max_epochs", str(epochs)]
        fit = fit_stage(book, "fit", h_fit, fit_conf, config_path, run_dir, extra)
    chosen = Path(fit.numbers["best_checkpoint"])

    # 3. evaluate ---------------------------------------------------------------------------------
    ev_conf = {"checkpoint": chosen.name, **(QUICK_EVALUATION if args.quick else {})}
    h_ev = config_hash(ev_conf, (h_fit,))
    marker = book.done("evaluate", h_ev)
    if marker and (ev / "metrics.json").is_file():
        ev_stage = book.reuse("evaluate", marker)
        _print(f"[evaluate] done before ({ev}), skipped")
    else:
        _print(f"[evaluate] {chosen.name} -> {ev}")
        ts = time.perf_counter()
        book.start("evaluate", h_ev, ev_conf)
        from neurodecode.reporting.evaluate import evaluate

        metrics = evaluate(chosen, ev, **(QUICK_EVALUATION if args.quick else {}))
        ev_stage = Stage("evaluate", h_ev, time.perf_counter() - ts, _key_numbers(metrics))
        ev_stage.numbers["subject_lines"] = _subject_lines(metrics)
        book.finish(ev_stage, ev_conf)
        _print(f"[evaluate] finished in {ev_stage.seconds:.0f} s")

    # 4. export -----------------------------------------------------------------------------------
    h_ex = config_hash({"checkpoint": chosen.name}, (h_fit,))
    marker = book.done("export", h_ex)
    if marker and (exported / "model.safetensors").is_file():
        book.reuse("export", marker)
        _print(f"[export] done before ({exported}), skipped")
    else:
        ts = time.perf_counter()
        book.start("export", h_ex)
        from neurodecode.training.export import export_checkpoint

        path = export_checkpoint(chosen, exported)
        size = sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())
        st = Stage("export", h_ex, time.perf_counter() - ts, {"MB": round(size / 2**20, 1)})
        book.finish(st)
        _print(f"[export] {path} in {st.seconds:.1f} s")

    total = time.perf_counter() - t0
    disk = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    _print(f"\nneurodecode demo finished in {total:.0f} s (this run); {disk / 2**20:.0f} MB under {out}")
    _print(book.table())
    for line in ev_stage.numbers.get("subject_lines", []):
        _print(line)
    _print(f"report: {ev / 'report.md'}; exported model: {exported}")
    if args.quick:
        _print("(a smoke run: these numbers are expected near chance; run without --quick for the real demo)")
    from neurodecode.utils import atomic_write_json

    atomic_write_json(out / "demo_summary.json", {
        "seconds_this_run": total, "disk_MB": disk / 2**20, "quick": bool(args.quick),
        "stages": [{"stage": s.name, "seconds": s.seconds, "done_before": s.reused, "numbers": s.numbers}
                   for s in book.stages]})
    return 0


def _key_numbers(metrics: dict) -> dict:
    top1 = [v["retrieval"]["inductive"]["brain_to_image"]["top1_full"] for v in metrics["subjects"].values()]
    n = [v["n_candidates"] for v in metrics["subjects"].values()]
    return {"mean_top1": f"{sum(top1) / len(top1):.1%}", "n_way": n[0] if len(set(n)) == 1 else n,
            "chance": f"{1 / n[0]:.1%}"}


def _subject_lines(metrics: dict) -> list[str]:
    lines = []
    for s, v in metrics["subjects"].items():
        r = v["retrieval"]["inductive"]["brain_to_image"]
        ci = v["confidence_intervals"].get("top1_full", {})
        line = (f"  sub-{s}: zero-shot top-1 {r['top1_full']:.1%} [{ci.get('low', float('nan')):.1%}, "
                f"{ci.get('high', float('nan')):.1%}], top-5 {r['top5_full']:.1%}, {v['n_candidates']}-way "
                f"(chance {1 / v['n_candidates']:.1%})")
        frac = metrics.get("fraction_of_simulator_ceiling_top1", {}).get(s)
        if frac is not None:
            line += f"; {frac:.0%} of the simulator's ceiling"
        lines.append(line)
    return lines
