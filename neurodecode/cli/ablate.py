"""``neurodecode ablate``: a base config and its variants (one lever each), over seeds and subjects."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

HELP = "Measure accuracy levers: train a base config and its variants over seeds and subjects, side by side."

DESCRIPTION = """\
Train the base config (-c, as 'neurodecode fit' reads it) and each variant of the grid (--grid: named
sets of dotted config overrides, one lever each, plus named combinations; see configs/ablations/)
over the given seeds and subjects. Every run goes through the same LightningCLI path as
'neurodecode fit', in <out>/<variant>/sub-<S>/seed<N>/, and writes result.json there (atomically):
the test top-1/top-5 of the checkpoint selected on validation (concepts held out from training) and
of the last epoch (never the best test epoch), its wall time and its exact resolved config. A rerun
skips the runs whose result.json exists, so an interrupted ablation continues where it stopped.

At the end it writes <out>/ablation.json, ablation.md and ablation.png: per variant the mean +- sd
over seeds x subjects, and the paired difference from the base (pairs: same subject and seed) with
the p-value of an exact sign-flip permutation test (a paired t-test's p is in the JSON too).

Runs are sequential in this process by default. --task-index N runs run N only (a SLURM array task,
or one GPU each: CUDA_VISIBLE_DEVICES=k ... --task-index N); --shard K/N runs every N-th run from K;
--slurm FILE writes an array script. Once all results exist, whichever process finishes last writes
the report; '--report-only' rebuilds it at any time. Each run uses one device: keep trainer.devices
at 1 (a multi-process strategy would re-run the whole ablation in every process) and spread runs
over devices with --task-index or --shard instead.

examples:
  neurodecode ablate -c configs/sim/eeg_atm.yaml --grid configs/ablations/sim.yaml --seeds 0,1,2 \\
      --out runs/ablation_sim --set data.root=sim_eeg
  neurodecode ablate -c base.yaml --grid levers.yaml --out DIR --list
  neurodecode ablate -c base.yaml --grid levers.yaml --out DIR --slurm ablate.sbatch
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-c", "--config", action="append", required=True, metavar="YAML",
                        help="base config of 'neurodecode fit' (repeat to compose, as fit does)")
    parser.add_argument("--grid", required=True, metavar="YAML", help="the variants (see configs/ablations/)")
    parser.add_argument("--out", required=True, type=Path, help="output folder (one subfolder per run)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                        help="a dotted override of the base for every run, e.g. --set data.root=sim_abl "
                             "(repeatable; the variants' own overrides come after it)")
    parser.add_argument("--seeds", default=None, help="comma-separated seeds (default: the grid's, else 0)")
    parser.add_argument("--subjects", default=None,
                        help="comma-separated subjects, each setting data.subject (default: the grid's, else "
                             "the base config's)")
    parser.add_argument("--variants", default=None, help="comma-separated subset of the variants (the base always runs)")
    parser.add_argument("--task-index", type=int, default=None, metavar="N", help="run only run N (0-based)")
    parser.add_argument("--shard", default=None, metavar="K/N", help="run only the runs whose index is K modulo N")
    parser.add_argument("--slurm", type=Path, default=None, metavar="FILE",
                        help="write a SLURM array script (one task per run) to FILE and exit")
    parser.add_argument("--list", action="store_true", help="print the runs (index, variant, subject, seed) and exit")
    parser.add_argument("--report-only", action="store_true", help="train nothing; rebuild the report from the results")
    parser.add_argument("--title", default="Ablation", help="title of ablation.md")


def _resolve(path: str, option: str) -> str:
    """A file as given, else the packaged ``neurodecode/configs/...`` of the same relative name."""
    from importlib.resources import files

    from neurodecode.utils import UserError

    if Path(path).is_file():
        return path
    rel = path.removeprefix("neurodecode/").removeprefix("configs/")
    packaged = files("neurodecode") / "configs" / rel
    if packaged.is_file():
        return str(packaged)
    raise UserError(f"{option} {path}: no such file (nor a packaged configs/{rel}).")


def _shard(value: str | None) -> tuple[int, int] | None:
    from neurodecode.utils import UserError

    if value is None:
        return None
    try:
        k, n = (int(s) for s in value.split("/"))
    except ValueError:
        raise UserError(f"--shard {value!r}: write K/N, e.g. --shard 0/4 (runs 0, 4, 8, ...).") from None
    if not 0 <= k < n:
        raise UserError(f"--shard {value!r}: need 0 <= K < N.")
    return k, n


def _split(value: str | None) -> list[str] | None:
    return None if value is None else [s.strip() for s in value.split(",") if s.strip()]


def parse_sets(items: list[str]) -> dict[str, Any]:
    """``["data.root=x", "trainer.max_epochs=5"]`` -> ``{"data.root": "x", "trainer.max_epochs": 5}`` (YAML values)."""
    import yaml

    from neurodecode.utils import UserError

    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or key.startswith("-"):
            raise UserError(f"--set {item!r}: write KEY=VALUE with a dotted key, e.g. --set data.root=sim_abl.")
        out[key.strip()] = yaml.safe_load(value) if value.strip() else ""
    return out


def fit_args(configs: list[str], run: Any, folder: Path, base: dict[str, Any] | None = None) -> list[str]:
    """The ``neurodecode fit`` arguments of one run (base configs and overrides, the variant's, seed, folder)."""
    from neurodecode.training.ablation import override_args

    args: list[str] = []
    for c in configs:
        args += ["-c", c]
    args += override_args(base or {}) + override_args(run.overrides)
    if run.subject is not None:
        args += ["--data.subject", run.subject]
    args += ["--seed_everything", str(run.seed), "--trainer.default_root_dir", str(folder / "train"),
             "--test_after_fit", "true"]
    return args


def _metrics(test: dict[str, Any]) -> dict[str, float]:
    return {k.removeprefix("test/"): float(v) for k, v in test.items() if k in ("test/top1", "test/top5")}


def _tops(d: dict[str, Any]) -> dict[str, float]:
    return {k: float(d[k]) for k in ("top1", "top5") if k in d}


def train_one(configs: list[str], run: Any, out: Path, base: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train one run through :func:`neurodecode.cli.lightning.run_cli` and write its ``result.json``."""
    import yaml

    from neurodecode.cli.lightning import run_cli
    from neurodecode.utils import atomic_write_json, to_jsonable

    folder = run.folder(out)
    if (folder / "train").exists():
        shutil.rmtree(folder / "train")  # an interrupted attempt: start the run afresh
    args = fit_args(configs, run, folder, base)
    t0 = time.perf_counter()
    cli = run_cli("fit", args)
    trainer = cli.trainer
    log_dir = Path(trainer.log_dir or folder / "train")
    res_file = log_dir / "results.json"
    selected = json.loads(res_file.read_text()) if res_file.is_file() else {}
    last_ckpt = Path(trainer.checkpoint_callback.dirpath) / "last.ckpt" if trainer.checkpoint_callback else None
    last: dict[str, float] = {}
    if last_ckpt is not None and last_ckpt.is_file():
        metrics = trainer.test(cli.model, datamodule=cli.datamodule, ckpt_path=str(last_ckpt), verbose=False)
        last = _metrics(metrics[0] if metrics else {})
    wall = time.perf_counter() - t0
    # per tested subject (a joint protocol tests several): the statistics pair subjects x seeds
    sel_detail = (selected.get("test_detail") or {}).get("per_subject") or {}
    last_detail = ((getattr(cli.model, "test_results", None) or {}).get("per_subject") or {}) if last else {}
    per_subject = {str(s): {"selected": _tops(v), "last": _tops(last_detail.get(s, {}))} for s, v in sel_detail.items()}
    cfg_file = log_dir / "config.yaml"
    config = yaml.safe_load(cfg_file.read_text()) if cfg_file.is_file() else None
    result = {
        "index": run.index, "variant": run.variant, "seed": run.seed, "subject": run.subject,
        "overrides": run.overrides, "base_overrides": base or {}, "fit_args": args,
        "selected": _metrics(selected.get("test", {})), "last": last, "per_subject": per_subject,
        "selected_checkpoint": selected.get("selected_checkpoint"), "selection": selected.get("selection"),
        "epochs_trained": selected.get("epochs_trained"),
        "test_detail": selected.get("test_detail"), "data": selected.get("data"),
        "wall_s": wall, "config": config,
    }
    atomic_write_json(run.result_path(out), to_jsonable(result))
    return result


def check_same_run(run: Any, out: Path, base: dict[str, Any]) -> None:
    """A finished run is reused only if it was made with the same overrides (else a :class:`UserError`)."""
    from neurodecode.utils import UserError, to_jsonable

    done = json.loads(run.result_path(out).read_text())
    now = to_jsonable({"overrides": run.overrides, "base_overrides": base})
    then = {"overrides": done.get("overrides"), "base_overrides": done.get("base_overrides", {})}
    if now != then:
        raise UserError(f"{run.folder(out)} holds a result made with other overrides ({then}, now {now}); the grid "
                        "or --set changed since: use another --out, or delete that folder to rerun it.")


def report(out: Path, runs: list[Any], kinds: dict[str, str], title: str) -> dict[str, Path] | None:
    """Write the report over the finished runs (``None`` when none has finished)."""
    from neurodecode.reporting.ablation_report import write_ablation_report
    from neurodecode.training.ablation import load_results, summarize

    results = load_results(out, runs)
    if not results:
        return None
    summary = summarize(results, kinds)
    summary["missing"] = len(runs) - len(results)
    return write_ablation_report(summary, results, out, title=title)


def run(args: argparse.Namespace) -> int:
    from neurodecode.cli.checks import parse_int_list
    from neurodecode.training.ablation import load_grid, plan_runs, slurm_script
    from neurodecode.utils import UserError, atomic_write_text

    configs = [_resolve(c, "-c") for c in args.config]
    grid = load_grid(_resolve(args.grid, "--grid"))
    base = parse_sets(args.overrides)
    seeds = parse_int_list(args.seeds, "--seeds") if args.seeds is not None else None
    subjects = _split(args.subjects)
    subjects = None if subjects is None else [s.removeprefix("sub-") for s in subjects]
    runs = plan_runs(grid, seeds, subjects, _split(args.variants))
    out: Path = args.out
    if args.list:
        for r in runs:
            done = "done" if r.result_path(out).is_file() else "todo"
            print(f"{r.index:4d}  {r.variant:24s} sub-{r.subject or 'default':8s} seed{r.seed}  {done}")
        return 0
    if args.slurm is not None:
        cmd = [sys.executable, "-m", "neurodecode", "ablate"]
        for c in configs:
            cmd += ["-c", str(Path(c).resolve())]
        cmd += ["--grid", str(Path(_resolve(args.grid, "--grid")).resolve()), "--out", str(out.resolve()),
                "--seeds", ",".join(str(s) for s in sorted({r.seed for r in runs}))]
        if subjects is not None:
            cmd += ["--subjects", ",".join(subjects)]
        if args.variants is not None:
            cmd += ["--variants", args.variants]
        for item in args.overrides:
            cmd += ["--set", item]
        atomic_write_text(args.slurm, slurm_script(len(runs), cmd))
        print(f"SLURM array script for {len(runs)} runs -> {args.slurm} (submit with: sbatch {args.slurm})")
        return 0
    todo = runs
    if args.task_index is not None:
        if not 0 <= args.task_index < len(runs):
            raise UserError(f"--task-index {args.task_index}: the ablation has runs 0..{len(runs) - 1}.")
        todo = [runs[args.task_index]]
    shard = _shard(args.shard)
    if shard is not None:
        todo = [r for r in todo if r.index % shard[1] == shard[0]]
    if not args.report_only:
        out.mkdir(parents=True, exist_ok=True)
        for i, r in enumerate(todo):
            if r.result_path(out).is_file():
                check_same_run(r, out, base)
                print(f"[{i + 1}/{len(todo)}] {r.variant} sub-{r.subject or 'default'} seed{r.seed}: done, skipped")
                continue
            print(f"[{i + 1}/{len(todo)}] {r.variant} sub-{r.subject or 'default'} seed{r.seed}: training")
            res = train_one(configs, r, out, base)
            print(f"    selected top-1 {res['selected'].get('top1', float('nan')):.3f}, last top-1 "
                  f"{res['last'].get('top1', float('nan')):.3f} ({res['wall_s']:.0f} s)")
    complete = all(r.result_path(out).is_file() for r in runs)
    if args.report_only or complete or (args.task_index is None and shard is None):
        paths = report(out, runs, grid.kinds, args.title)
        if paths is None:
            print(f"no finished run in {out} yet.")
        else:
            print(f"ablation report -> {paths['md']} ({paths['json'].name}, {paths['png'].name})")
    return 0
