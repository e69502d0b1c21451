"""``neurodecode demo``: the whole pipeline on simulated EEG, on a laptop CPU, with no download.

Each stage (simulate, fit, evaluate, export, prior, generator, reconstruct) counts as done only when it completed: its marker
(``<out>/stages/<stage>.done.json``, :mod:`neurodecode.cli.stages`) is written last and holds the hash
of the stage's configuration and of the stages before it. Run again, the demo skips what is done,
resumes an interrupted fit from its last complete epoch (``--ckpt_path last``) and redoes a stage whose
configuration changed (``--epochs``, ``--teacher``, ``--config``, ``--quick``) and what depends on it.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

HELP = ("Run the end-to-end demo offline: simulate EEG, train ATM, evaluate, export, then reconstruct the images "
        "(prior + generator).")
DESCRIPTION = """\
The whole pipeline on data that need no download:
  1. simulate   4 subjects of 63-channel EEG at 125 Hz + procedurally drawn object images
  2. fit        configs/sim/eeg_atm.yaml (shipped in the package): ATM aligned with the simulator's
                feature space, the checkpoint chosen on validation concepts
  3. evaluate   zero-shot retrieval with CIs, time-resolved decoding, ablation, report.md, figures
  4. export     config.json + model.safetensors
  5. prior      configs/sim/prior.yaml: a diffusion prior from the encoder's embeddings of the training
                trials to the teacher's image embeddings (validated on the encoder's validation concepts)
  6. generator  configs/sim/generator.yaml (at 16 px): the demo generator, a small embedding-conditioned
                diffusion model trained on the training images (the test images stay novel)
  7. reconstruct  sub-01's test images drawn back from the brain signal: images, metrics (PixCorr, SSIM,
                two-way identification with efficientnet-lite0) beside the generator's ceiling and chance,
                gallery.png and report.md
Everything goes under --out (about 0.5 GB); --out/report.md shows the key numbers and the gallery. A stage
counts as done only when it finished: run the demo again after an interruption and it resumes training from
the last complete epoch; change --epochs or --teacher and it redoes the stages that depend on them. Each
stage prints its time, and a closing table sums them up (8.5 minutes measured on a busy 2-core machine;
--quick / --small: a smoke run of about a minute).
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
PRIOR_CONFIG = "sim/prior.yaml"
GENERATOR_CONFIG = "sim/generator.yaml"
# The demo generator: configs/sim/generator.yaml at 16 px with two UNet levels, 48 epochs on the demo's 675
# training images. Measured on the demo's data (sub-01, 50 test images, 2 samples, efficientnet-lite0 two-way,
# the same encoder and prior): 62.1% (ceiling 82.4%) in 3.5 min of training, against 58.1% (ceiling 72.3%)
# for the packaged 32 px model after 16 epochs in the same time (both on a busy 2-core machine).
DEMO_GENERATOR_EPOCHS = 48
DEMO_GENERATOR = ["--data.image_size", "16", "--model.init_args.block_out_channels", "[32, 64]",
                  "--model.init_args.attention_levels", "[false, false]"]
DEMO_RECONSTRUCTION = {"n_samples": 2, "reference_samples": 1}
QUICK_PRIOR_EPOCHS = 3
ALIGNER_NET = {"width": 512, "n_blocks": 2}  # the MLP aligner, trained beside the diffusion prior
QUICK_GENERATOR_EPOCHS = 1
QUICK_RECONSTRUCTION = {"n_samples": 1, "reference_samples": 1}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=Path("demo_out"), help="output folder (default demo_out)")
    parser.add_argument("--config", type=Path, default=None,
                        help=f"training config (default: the packaged configs/{CONFIG})")
    parser.add_argument("--teacher", default="sim:features",
                        help="teacher spec (default sim:features; efficientnet-lite0 uses real ImageNet weights)")
    parser.add_argument("--epochs", type=int, default=None, help="override the config's max_epochs")
    parser.add_argument("--quick", "--small", dest="quick", action="store_true",
                        help=f"a smoke run: 2 small subjects, {QUICK_EPOCHS} epochs; checks that every stage runs, "
                             "its accuracy is expected near chance")
    parser.add_argument("--no-reconstruction", action="store_true",
                        help="stop after the export (no prior, generator or reconstruction)")


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

    recon = None
    if not args.no_reconstruction:
        recon = _reconstruction_stages(args, book, out, data, exported, h_sim, h_ex)

    total = time.perf_counter() - t0
    disk = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    _print(f"\nneurodecode demo finished in {total:.0f} s (this run); {disk / 2**20:.0f} MB under {out}")
    _print(book.table())
    for line in ev_stage.numbers.get("subject_lines", []):
        _print(line)
    if recon is not None:
        for line in recon.numbers.get("summary", []):
            _print(line)
    from neurodecode.reporting.demo_report import write_demo_report

    report = write_demo_report(out, book.table(), ev_stage.numbers.get("subject_lines", []), ev / "report.md",
                               out / "reconstruction" if recon is not None else None, quick=bool(args.quick))
    _print(f"report: {report} (evaluation: {ev / 'report.md'}); exported model: {exported}")
    if args.quick:
        _print("(a smoke run: these numbers are expected near chance; run without --quick for the real demo)")
    from neurodecode.utils import atomic_write_json

    atomic_write_json(out / "demo_summary.json", {
        "seconds_this_run": total, "disk_MB": disk / 2**20, "quick": bool(args.quick),
        "stages": [{"stage": s.name, "seconds": s.seconds, "done_before": s.reused, "numbers": s.numbers}
                   for s in book.stages]})
    return 0


def _reconstruction_stages(args: argparse.Namespace, book, out: Path, data: Path, exported: Path, h_sim: str,
                           h_ex: str):
    """Stages 5-7: the prior, the demo generator (each trained and exported), and the reconstruction."""
    from neurodecode.cli.checks import packaged_config
    from neurodecode.cli.demo_fit import export_stage
    from neurodecode.cli.stages import Stage, config_hash

    quick = bool(args.quick)
    prior_cfg, gen_cfg = packaged_config(PRIOR_CONFIG), packaged_config(GENERATOR_CONFIG)
    prior_epochs = QUICK_PRIOR_EPOCHS if quick else None
    conf = {"config": prior_cfg.read_text(), "epochs": prior_epochs}
    h_prior = config_hash(conf, (h_ex,))
    extra = ["--data.encoder", str(exported), "--data.progress", "false"]
    if prior_epochs is not None:
        extra += ["--trainer.max_epochs", str(prior_epochs)]
    prior_dir = export_stage(book, "prior", h_prior, conf, prior_cfg, out / "prior_run", extra,
                             out / "prior_exported", "prior")
    extra += ["--model.init_args.kind", "aligner", "--model.init_args.net", json.dumps(ALIGNER_NET)]
    h_aligner = config_hash({**conf, "kind": "aligner", "net": ALIGNER_NET}, (h_ex,))
    aligner_dir = export_stage(book, "aligner", h_aligner, conf, prior_cfg, out / "aligner_run", extra,
                               out / "aligner_exported", "prior")
    gen_epochs = QUICK_GENERATOR_EPOCHS if quick else DEMO_GENERATOR_EPOCHS
    conf = {"config": gen_cfg.read_text(), "teacher": args.teacher, "epochs": gen_epochs, "overrides": DEMO_GENERATOR}
    h_gen = config_hash(conf, (h_sim,))
    extra = ["--data.root", str(data), "--data.teacher", args.teacher, "--trainer.max_epochs", str(gen_epochs),
             *DEMO_GENERATOR]
    gen_dir = export_stage(book, "generator", h_gen, conf, gen_cfg, out / "generator_run", extra,
                           out / "generator_exported", "generator")

    settings = QUICK_RECONSTRUCTION if quick else DEMO_RECONSTRUCTION
    rec_out = out / "reconstruction"
    h_rec = config_hash(settings, (h_prior, h_aligner, h_gen))
    marker = book.done("reconstruct", h_rec)
    if marker and (rec_out / "metrics.json").is_file():
        _print(f"[reconstruct] done before ({rec_out}), skipped")
        return book.reuse("reconstruct", marker)
    import shutil
    import time

    from neurodecode.cli.reconstruct import summary_lines
    from neurodecode.reporting.reconstruct import reconstruct

    if not book.started("reconstruct", h_rec) and rec_out.exists():
        shutil.rmtree(rec_out)  # images of another prior or generator; an interrupted run keeps its images
    book.start("reconstruct", h_rec, settings)
    ts = time.perf_counter()
    # the prior whose predictions lie closest to the image embeddings on the VALIDATION concepts (cosine):
    # the generator draws from the embedding itself, so closeness, not ranking, is what it needs
    from neurodecode.reconstruction.pipeline import validate_priors

    val = validate_priors(exported, {"diffusion": prior_dir, "aligner": aligner_dir}, device="cpu")
    chosen = max(val, key=lambda k: val[k]["cosine"])
    for name, v in val.items():
        _print(f"[reconstruct] validation, {name} prior: cosine {v['cosine']:.3f}, top-1 {v['top1']:.1%} "
               f"({v['n_candidates']}-way){' <- chosen (higher cosine)' if name == chosen else ''}")
    _print(f"[reconstruct] encoder -> {chosen} prior -> generator, sub-01's test images -> {rec_out}")
    result = reconstruct(exported, prior_dir if chosen == "diffusion" else aligner_dir, f"demo:{gen_dir}", rec_out,
                         networks=["efficientnet-lite0"], device="cpu", **settings)
    summary = summary_lines(result).splitlines()
    st = Stage("reconstruct", h_rec, time.perf_counter() - ts, {
        "two_way": f"{result['metrics']['efficientnet-lite0']['mean']:.1%}" if "efficientnet-lite0" in
        result["metrics"] else "skipped", "prior": chosen, "summary": summary, "prior_validation": val})
    from neurodecode.utils import atomic_write_json

    atomic_write_json(rec_out / "prior_validation.json", {"chosen": chosen, "rule": "higher validation cosine",
                                                          "priors": val})
    book.finish(st, settings)
    _print(f"[reconstruct] finished in {st.seconds:.0f} s")
    return st


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
