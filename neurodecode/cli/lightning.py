"""``neurodecode fit | validate | test | predict``: LightningCLI with data-to-model links.

Configs compose (``-c base.yaml -c more.yaml``) and accept dotted overrides
(``--data.root DIR --trainer.max_epochs 5``). The data module's shape (``n_chans``, ``n_times``,
``n_voxels``, ``sfreq``, ``chs_info``, ``n_subjects``, ``embed_dim``) is linked into the encoder at
instantiation, so no YAML repeats it. Extra options:

``--seeds 0,1,2``
    run the whole command once per seed (``seed_everything``), each in ``<root_dir>/seed<N>``, and
    write ``seeds_summary.json`` with mean +- sd of the test metrics over seeds;
``--test_after_fit true|false``
    after ``fit``, evaluate the checkpoint selected on validation (never on test) on the test set and
    write ``results.json`` next to the logs (default true).

Checkpoints go to ``<trainer.default_root_dir>/checkpoints``: ``best-epochNNN.ckpt`` (the best on
``val/loss``, what ``test_after_fit`` and the demo evaluate), ``last.ckpt`` rewritten at the end of
every epoch (after its validation), so ``--ckpt_path last`` resumes an interrupted run from its last
complete epoch exactly, and ``interrupted.ckpt``, the state at the moment of a crash or Ctrl-C
(mid-epoch, kept for inspection; resuming from it would not reproduce an uninterrupted run).

The logger is the one the config states (``trainer.logger``); a ``CSVLogger`` or ``TensorBoardLogger``
without ``save_dir`` writes into ``trainer.default_root_dir``.

Parse errors (a typo in a YAML key or class name, an unknown option; abbreviations are refused) are
raised as one-line :class:`~neurodecode.utils.UserError` naming the file, the key and a did-you-mean.

The optimizer is the model's ``optimizer`` argument (any ``torch.optim`` class by ``class_path``; AdamW by
default) and the schedule its ``scheduler`` (torch's ``LinearLR`` warm-up then ``CosineAnnealingLR``).

Precision: a run whose config and command line state no ``trainer.precision`` and whose accelerator
resolves to the CPU uses :func:`neurodecode.sys_info`'s CPU default: ``bf16-mixed`` on a CPU that
computes bfloat16 natively (AVX512-BF16, AMX), else ``32-true`` (``$NEURODECODE_CPU_PRECISION``
overrides it; ``--trainer.precision 32-true`` keeps float32). GPU runs keep Lightning's default. One
log line says which precision the run uses and why; ``results.json`` records it.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lightning.pytorch import LightningDataModule, LightningModule
from lightning.pytorch.callbacks import Callback, EarlyStopping, ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from neurodecode._sys_info import cpu_bf16_native, default_cpu_precision
from neurodecode.cli.checks import check_checkpoint, parse_int_list, precheck_lightning
from neurodecode.cli.parse_errors import explain_parse_error
from neurodecode.training.data import BrainImageDataModule
from neurodecode.utils import UserError, atomic_write_json

LINKS = BrainImageDataModule.CLI_LINKS  # the encoders' data-to-model links (declared by the data module)


class SaveOnException(Callback):
    """Save ``path`` when training stops on an exception or Ctrl-C (the state mid-epoch, for inspection).

    Not Lightning's ``OnExceptionCheckpoint``: with that callback present, ``fit`` without ``ckpt_path``
    silently resumes from the newest of its file and ``last.ckpt``, so a plain rerun would continue
    from a mid-epoch state; here only ``--ckpt_path last`` resumes, from the last complete epoch.
    """

    def __init__(self, path: str) -> None:
        self.path = path

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        if trainer.state.fn == "fit":
            trainer.save_checkpoint(self.path)


class NeuroDecodeCLI(LightningCLI):
    """LightningCLI of neurodecode (see the module docstring)."""

    def init_parser(self, **kwargs: Any) -> LightningArgumentParser:
        # no abbreviations (--trainer.max_epoch is a typo, not --trainer.max_epochs) and parse errors
        # raised, not printed with the whole usage: run_lightning_cli turns them into one line
        kwargs.setdefault("allow_abbrev", False)
        kwargs.setdefault("exit_on_error", False)
        return super().init_parser(**kwargs)

    def __init__(self, *args: Any, links: Sequence[tuple[str, str]] = LINKS, **kwargs: Any) -> None:
        self._links = tuple(links)
        super().__init__(*args, **kwargs)

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        for source, target in self._links:
            parser.link_arguments(source, target, apply_on="instantiate")
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.set_defaults({
            "checkpoint.monitor": "val/loss", "checkpoint.mode": "min", "checkpoint.save_last": False,
            "checkpoint.save_top_k": 1, "checkpoint.filename": "best-epoch{epoch:03d}",
            "checkpoint.auto_insert_metric_name": False,
        })
        parser.add_lightning_class_args(EarlyStopping, "early_stopping")
        parser.set_defaults({"early_stopping.monitor": "val/loss", "early_stopping.mode": "min",
                             "early_stopping.patience": 20})
        parser.add_argument("--test_after_fit", type=bool, default=True,
                            help="after fit, test the checkpoint selected on validation and write results.json")

    def _parse_ckpt_path(self) -> None:
        # LightningCLI (2.5+) merges a checkpoint's hyper-parameters into the config given with -c. Ours
        # leave out the encoder and the loss (modules, not data), so that merge would drop them; the -c
        # config defines the model and the checkpoint supplies its weights, as trainer.<cmd>(ckpt_path=)
        # loads them.
        return

    def before_instantiate_classes(self) -> None:
        cfg = self.config[self.subcommand] if self.subcommand else self.config
        root = Path(cfg.trainer.default_root_dir or "runs")
        if not cfg.checkpoint.dirpath:
            cfg.checkpoint.dirpath = str(root / "checkpoints")
        model_args = cfg.model.get("init_args", None)
        if model_args is not None and "seed" in model_args and cfg.get("seed_everything") not in (None, True, False):
            model_args.seed = int(cfg.seed_everything)
        data_args = cfg.get("data")
        if data_args is not None and "seed" in data_args and cfg.get("seed_everything") not in (None, True, False):
            # one seed for both: a logger merges the model's and the data's hparams and refuses two seeds
            data_args.seed = int(cfg.seed_everything)
        loggers = cfg.trainer.get("logger")
        for lg in loggers if isinstance(loggers, list) else [loggers]:
            init = lg.get("init_args") if hasattr(lg, "get") else None
            if init is not None and "save_dir" in init and not init.save_dir:
                init.save_dir = str(root)
        ckpt = cfg.get("ckpt_path")
        if ckpt and Path(str(ckpt)).is_file():
            check_lightning_checkpoint(str(ckpt))
        precision, why = choose_precision(cfg.trainer.get("precision"), cfg.trainer.get("accelerator"))
        cfg.trainer.precision = precision
        from lightning.pytorch.utilities import rank_zero_info

        rank_zero_info(f"neurodecode: precision {precision or '32-true'} ({why})")
        slow = emulated_bf16_warning(precision, cfg.trainer.get("accelerator"))
        if slow:
            from lightning.pytorch.utilities import rank_zero_warn

            rank_zero_warn(slow)

    def instantiate_trainer(self, **kwargs: Any):
        trainer = super().instantiate_trainer(**kwargs)
        best = trainer.checkpoint_callback
        if best is not None and best.dirpath:
            # ModelCheckpoint(monitor=..., save_last=True) of Lightning 2.6 rewrites last.ckpt only when the
            # monitored checkpoint is saved (the val loss improved); this one saves it every epoch
            trainer.callbacks.append(ModelCheckpoint(
                dirpath=best.dirpath, filename=ModelCheckpoint.CHECKPOINT_NAME_LAST, monitor=None,
                save_top_k=1, enable_version_counter=False, save_last=False))
            trainer.callbacks.append(SaveOnException(str(Path(best.dirpath) / "interrupted.ckpt")))
        return trainer

    def after_fit(self) -> None:
        cfg = self.config["fit"]
        if not cfg.get("test_after_fit", True) or self.trainer.fast_dev_run:
            return
        if type(self.datamodule).test_dataloader is LightningDataModule.test_dataloader:
            return  # a module without a test set (the prior, the generator: tested by 'reconstruct')
        ckpt = "best" if self.trainer.checkpoint_callback and self.trainer.checkpoint_callback.best_model_path else None
        metrics = self.trainer.test(self.model, datamodule=self.datamodule, ckpt_path=ckpt, verbose=False)
        if self.trainer.is_global_zero:
            write_results(self, metrics[0] if metrics else {}, cfg)


    def after_predict(self) -> None:
        if self.trainer.is_global_zero:
            write_predictions(self)


def resolves_to_cpu(accelerator: Any) -> bool:
    """Whether a ``trainer.accelerator`` value runs on the CPU (``"auto"``: when no GPU/TPU is available)."""
    if accelerator is None or accelerator == "auto":
        from lightning.pytorch.accelerators import CUDAAccelerator, MPSAccelerator, XLAAccelerator

        return not any(a.is_available() for a in (CUDAAccelerator, MPSAccelerator, XLAAccelerator))
    if isinstance(accelerator, str):
        return accelerator.lower() == "cpu"
    name = accelerator.get("class_path") if hasattr(accelerator, "get") else type(accelerator).__name__
    return str(name).rsplit(".", 1)[-1] == "CPUAccelerator"


def choose_precision(stated: Any, accelerator: Any) -> tuple[Any, str]:
    """The ``trainer.precision`` of a run and why: the stated one, else the CPU default on a CPU.

    Parameters
    ----------
    stated : str | int | None
        ``trainer.precision`` as the config and command line give it (``None``: not stated).
    accelerator : Any
        ``trainer.accelerator`` (a name, ``"auto"`` or an accelerator).

    Returns
    -------
    precision, reason : the value to give the trainer (``None`` keeps Lightning's default) and why.
    """
    if stated is not None:
        return stated, "stated by the config or the command line"
    if not resolves_to_cpu(accelerator):
        return None, "Lightning's default off the CPU; state trainer.precision to change it"
    try:
        precision, why = default_cpu_precision()
    except ValueError as err:
        raise UserError(str(err)) from None
    return precision, f"CPU default: {why}"


def emulated_bf16_warning(precision: Any, accelerator: Any) -> str | None:
    """A warning when a CPU run is to use bfloat16 that this CPU does not compute natively, else ``None``.

    Without AVX512-BF16 or AMX, oneDNN emulates bfloat16 and autocast slows training down instead of
    speeding it up (the demo generator's training step: 18 times slower than float32 on such a CPU).
    """
    if "bf16" not in str(precision or "") or not resolves_to_cpu(accelerator):
        return None
    if cpu_bf16_native():
        return None
    return (f"trainer.precision {precision} on a CPU without native bfloat16 (no AVX512-BF16 or AMX-BF16): "
            "bfloat16 is emulated here and can make training many times slower than float32; give "
            "--trainer.precision 32-true (or leave precision unstated: the CPU default picks float32 here).")


def write_predictions(cli: LightningCLI) -> Path | None:
    """Write ``predictions.npz`` (brain embeddings with their stimulus ids, rows and subjects).

    ``neurodecode predict`` embeds the test responses of the data module (repetitions averaged as the
    data module says); the file lands in ``trainer.default_root_dir`` and is written atomically.
    """
    import numpy as np

    from neurodecode.utils import atomic_path

    batches = cli.trainer.predict_loop.predictions or []
    if batches and isinstance(batches[0], list):  # several predict data loaders: take them all
        batches = [b for loader in batches for b in loader]
    if not batches:
        return None
    emb = np.concatenate([b["embedding"].float().cpu().numpy() for b in batches])
    stim = np.concatenate([b["stim"].cpu().numpy() for b in batches])
    subject = np.concatenate([b["subject"].cpu().numpy() for b in batches])
    out = {"embedding": emb, "stim": stim, "subject": subject}
    dm = cli.datamodule
    if hasattr(dm, "dataset"):
        out["stimulus_id"] = np.asarray(dm.dataset.stimuli.stimulus_id)[stim].astype(str)
    path = Path(cli.trainer.default_root_dir) / "predictions.npz"
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path, suffix=".npz") as tmp:
        np.savez(tmp, **out)
    print(f"{len(emb)} embeddings -> {path}")
    return path


def write_results(cli: LightningCLI, metrics: dict[str, Any], cfg: Any) -> Path:
    """Write ``results.json`` (test metrics, selection, data, seed) into the run's log folder."""
    trainer = cli.trainer
    folder = Path(trainer.log_dir or trainer.default_root_dir)
    cb = trainer.checkpoint_callback
    best_score = getattr(cb, "best_model_score", None) if cb else None
    dm = cli.datamodule
    model = cli.model
    res = {
        "test": {k: float(v) for k, v in metrics.items()},
        "test_detail": getattr(model, "test_results", {}),
        "selected_checkpoint": getattr(cb, "best_model_path", None) if cb else None,
        "selection": {"monitor": getattr(cb, "monitor", None),
                      "best_score": None if best_score is None else float(best_score),
                      "note": "checkpoint chosen on validation concepts held out from training; the test set "
                              "was used once, after training"},
        "seed": cfg.get("seed_everything"),
        "precision": str(trainer.precision),
        "epochs_trained": trainer.current_epoch,
        "data": dm.describe() if hasattr(dm, "describe") else {},
    }
    ceiling_file = Path(dm.root) / "ceiling.json" if hasattr(dm, "root") else None
    if ceiling_file is not None and ceiling_file.is_file():
        ceiling = json.loads(ceiling_file.read_text())
        res["simulator_ceiling"] = ceiling
        subj = getattr(dm, "test_subjects", [])
        cs = [ceiling["per_subject"][s]["top1"] for s in subj if s in ceiling.get("per_subject", {})]
        top1 = res["test"].get("test/top1")
        if cs and top1 is not None and ceiling.get("n_way") == res["test_detail"].get("k"):
            res["fraction_of_ceiling_top1"] = top1 / (sum(cs) / len(cs))
    path = folder / "results.json"
    atomic_write_json(path, res)
    print(f"test results -> {path}")
    return path


def _split_seeds(argv: Sequence[str]) -> tuple[list[int] | None, list[str]]:
    out, seeds = [], None
    it = iter(range(len(argv)))
    skip = False
    for i in it:
        if skip:
            skip = False
            continue
        a = argv[i]
        if a == "--seeds" and i + 1 < len(argv):
            seeds = argv[i + 1]
            skip = True
        elif a.startswith("--seeds="):
            seeds = a.split("=", 1)[1]
        else:
            out.append(a)
    if seeds is None:
        return None, out
    return parse_int_list(seeds, "--seeds"), out


def check_lightning_checkpoint(path: str) -> None:
    """A one-line :class:`UserError` when ``path`` is not a checkpoint of ``neurodecode fit``."""
    import torch

    check_checkpoint(path, "--ckpt_path", exported=False)
    fix = "give a .ckpt written by 'neurodecode fit', or 'last' to resume the run in trainer.default_root_dir"
    try:
        ck = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as err:  # noqa: BLE001 - any failure to read means "not our checkpoint"
        reason = str(err).strip().splitlines()[0][:120] if str(err).strip() else type(err).__name__
        raise UserError(f"--ckpt_path {path} is not a neurodecode checkpoint ({reason}); {fix}.") from None
    if not isinstance(ck, dict) or "state_dict" not in ck or "pytorch-lightning_version" not in ck:
        raise UserError(f"--ckpt_path {path} is a PyTorch file but not a Lightning checkpoint of neurodecode "
                        f"(no state_dict/pytorch-lightning_version); {fix}.")


def _yaml_root_dir(path: str) -> str | None:
    import yaml

    if not Path(path).is_file():
        return None  # LightningCLI reports the missing file itself
    cfg = yaml.safe_load(Path(path).read_text()) or {}
    trainer = cfg.get("trainer") if isinstance(cfg, dict) else None
    return trainer.get("default_root_dir") if isinstance(trainer, dict) else None


def _root_dir(argv: Sequence[str]) -> str:
    """``trainer.default_root_dir`` as the run will see it: the last ``-c`` file that sets it,
    overridden by a later ``--trainer.default_root_dir`` on the command line ("" when none does)."""
    root = ""
    for i, a in enumerate(argv):
        nxt = argv[i + 1] if i + 1 < len(argv) else None
        value = None
        if a in ("-c", "--config") and nxt is not None:
            value = _yaml_root_dir(nxt)
        elif a.startswith(("-c=", "--config=")):
            value = _yaml_root_dir(a.split("=", 1)[1])
        elif a == "--trainer.default_root_dir" and nxt is not None:
            value = nxt
        elif a.startswith("--trainer.default_root_dir="):
            value = a.split("=", 1)[1]
        if value:
            root = str(value)
    return root


def run_lightning_cli(command: str, argv: Sequence[str]) -> int:
    """Run ``neurodecode <command> ...`` (``fit``, ``validate``, ``test``, ``predict``)."""
    run_cli(command, argv)
    return 0


def run_cli(command: str, argv: Sequence[str]) -> NeuroDecodeCLI | None:
    """As :func:`run_lightning_cli`, returning the :class:`NeuroDecodeCLI` (the last one with ``--seeds``)."""
    argv = precheck_lightning(command, argv)
    seeds, rest = _split_seeds(list(argv))
    if seeds is None:
        return _cli([command, *rest])
    base = _root_dir(rest)
    results = {}
    cli = None
    for seed in seeds:
        root = str(Path(base or "runs") / f"seed{seed}")
        args = [command, *rest, "--seed_everything", str(seed), "--trainer.default_root_dir", root]
        cli = _cli(args)
        res_file = Path(cli.trainer.log_dir or root) / "results.json"
        if res_file.is_file():
            results[seed] = json.loads(res_file.read_text())["test"]
    if results:
        summarize_seeds(results, Path(base or "runs") / "seeds_summary.json")
    return cli


def summarize_seeds(results: dict[int, dict[str, float]], path: Path) -> dict[str, Any]:
    """Mean +- sd over seeds of every test metric; written to ``path``."""
    import numpy as np

    keys = sorted(set.intersection(*(set(r) for r in results.values())))
    summary = {"seeds": sorted(results), "per_seed": results, "mean": {}, "sd": {}}
    for k in keys:
        vals = np.array([results[s][k] for s in results], dtype=float)
        summary["mean"][k] = float(vals.mean())
        summary["sd"][k] = float(vals.std(ddof=1)) if len(vals) > 1 else 0.0
    atomic_write_json(path, summary)
    lines = [f"{k}: {summary['mean'][k]:.4f} +- {summary['sd'][k]:.4f} (n={len(results)} seeds)" for k in keys]
    print("\n".join(["summary over seeds -> " + str(path), *lines]))
    return summary


def _cli(args: list[str]) -> NeuroDecodeCLI:
    import warnings
    from argparse import ArgumentError

    from neurodecode.training.lit import AlignmentModule

    data_class = _data_class_path(args)
    if data_class is None:  # the encoders' configs: data is a BrainImageDataModule, its shapes linked
        classes: tuple[Any, Any] = (AlignmentModule, BrainImageDataModule)
        kw: dict[str, Any] = {"subclass_mode_model": True, "links": LINKS}
    else:  # any data module by class_path (the prior, the generator...), with the links it declares
        classes = (LightningModule, LightningDataModule)
        kw = {"subclass_mode_model": True, "subclass_mode_data": True, "links": _declared_links(data_class)}
    # args come from our own console script (LightningCLI warns when sys.argv is also set); sys.argv
    # itself stays untouched because DDP's launcher re-runs it in the worker processes
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended")
        try:
            return NeuroDecodeCLI(
                *classes, **kw, args=args,
                save_config_kwargs={"overwrite": True},
                trainer_defaults={"default_root_dir": "runs"},
                parser_kwargs={"prog": "neurodecode"},
            )
        except ArgumentError as err:
            raise UserError(explain_parse_error(str(err), args)) from err


def _data_class_path(args: Sequence[str]) -> str | None:
    """The ``data: class_path`` of the last ``-c`` config (or ``--data.class_path``), if any."""
    import yaml

    found = None
    for i, a in enumerate(args):
        if a in ("-c", "--config") and i + 1 < len(args):
            try:
                data = (yaml.safe_load(Path(args[i + 1]).read_text()) or {}).get("data")
            except (OSError, yaml.YAMLError, AttributeError):
                continue  # reported by the parser itself, with the file's name
            if isinstance(data, dict) and data.get("class_path"):
                found = str(data["class_path"])
        elif a.startswith("--data.class_path"):
            found = a.split("=", 1)[1] if "=" in a else (args[i + 1] if i + 1 < len(args) else None)
        elif a == "--data" and i + 1 < len(args) and "." in args[i + 1] and not args[i + 1].endswith((".yaml", ".yml")):
            found = args[i + 1]
    return found


def _declared_links(class_path: str) -> tuple[tuple[str, str], ...]:
    """``CLI_LINKS`` of a data module class: ``(data attribute, model argument)`` pairs to link."""
    import importlib

    module, _, name = class_path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError):
        return ()  # the parser reports the unknown class with a did-you-mean
    return tuple(tuple(link) for link in getattr(cls, "CLI_LINKS", ()))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(run_lightning_cli(sys.argv[1], sys.argv[2:]))
