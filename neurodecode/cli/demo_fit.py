"""One resumable ``neurodecode fit`` stage of the demo (the encoder, the prior, the generator), and its export.

The stage is done when its marker holds the hash of its configuration; started with the same hash and
interrupted, it resumes from ``<run>/checkpoints/last.ckpt`` (``--ckpt_path last``); started with another
hash, its run folder is cleared and it trains from scratch.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["export_stage", "fit_stage"]


def _print(msg: str) -> None:
    print(msg, flush=True)


def fit_stage(book: Any, name: str, h: str, conf: dict[str, Any], config_path: Path, run_dir: Path,
              extra: Sequence[str]) -> Any:
    """Train (or resume) ``neurodecode fit -c config_path *extra`` in ``run_dir``; returns its Stage.

    The Stage's numbers hold ``epochs``, ``early_stop``, ``best`` (the checkpoint chosen on ``val/loss``)
    and ``best_checkpoint``.
    """
    import time

    from neurodecode.cli.lightning import run_cli
    from neurodecode.cli.stages import Stage

    last = run_dir / "checkpoints" / "last.ckpt"
    args = [*extra, "--trainer.default_root_dir", str(run_dir)]
    recorded = {k: v for k, v in conf.items() if k != "config"}
    if book.started(name, h) and last.is_file():
        import torch

        done_epochs = int(torch.load(last, map_location="cpu", weights_only=True, mmap=True)["epoch"]) + 1
        _print(f"[{name}] resuming the interrupted training from {last} ({done_epochs} epoch(s) complete)")
        args += ["--ckpt_path", "last"]
    else:
        if run_dir.exists():
            _print(f"[{name}] the training configuration changed (or never finished): retraining from scratch in "
                   f"{run_dir}")
            shutil.rmtree(run_dir)
        _print(f"[{name}] {config_path} -> {run_dir}")
        book.start(name, h, recorded)
    ts = time.perf_counter()
    try:
        cli = run_cli("fit", ["-c", str(config_path), *args])
    except SystemExit as err:  # Lightning turns Ctrl-C into sys.exit(1) after saving interrupted.ckpt
        print(f"[{name}] interrupted: run the same demo command again to resume from {last}", file=sys.stderr)
        raise SystemExit(130 if err.code == 1 else err.code) from None
    trainer = cli.trainer
    if trainer.interrupted or trainer.state.status.value != "finished":
        raise RuntimeError(f"the {name} training stopped before the end ({trainer.state.status.value}); run the demo "
                           f"again to resume from {last}")
    cb = trainer.checkpoint_callback
    es = trainer.early_stopping_callback
    best = Path(cb.best_model_path) if cb is not None and cb.best_model_path else last
    numbers = {"epochs": trainer.current_epoch, "max_epochs": trainer.max_epochs,
               "early_stop": bool(es is not None and trainer.current_epoch < trainer.max_epochs), "best": best.name,
               "best_val_loss": None if cb is None or cb.best_model_score is None else round(float(cb.best_model_score), 4),
               "best_checkpoint": str(best)}
    st = Stage(name, h, time.perf_counter() - ts, numbers)
    book.finish(st, recorded)
    _print(f"[{name}] finished in {st.seconds:.0f} s: {numbers['epochs']} epochs"
           f"{' (early stop)' if numbers['early_stop'] else ''}, chose {best.name}")
    return st


def export_stage(book: Any, name: str, h: str, conf: dict[str, Any], config_path: Path, run_dir: Path,
                 extra: Sequence[str], export_dir: Path, kind: str) -> Path:
    """:func:`fit_stage`, then export its chosen checkpoint into ``export_dir`` (a prior or a generator).

    Done before (same hash, exported folder complete): nothing is redone. Trained but not exported (an
    interruption between the two): only the export runs.

    Parameters
    ----------
    kind : {"prior", "generator"}
        What the checkpoint holds.

    Returns
    -------
    export_dir : Path
    """
    import time

    from neurodecode.reconstruction.lit_generator import export_generator
    from neurodecode.reconstruction.prior import export_prior

    marker = book.done(name, h)
    if marker and (export_dir / "config.json").is_file() and (export_dir / "model.safetensors").is_file():
        book.reuse(name, marker)
        _print(f"[{name}] done before ({export_dir}), skipped")
        return export_dir
    if marker and Path(marker["numbers"].get("best_checkpoint", "")).is_file():
        st = book.reuse(name, marker)
        _print(f"[{name}] trained before; exporting")
    else:
        st = fit_stage(book, name, h, conf, config_path, run_dir, extra)
    ts = time.perf_counter()
    for f in ("config.json", "model.safetensors"):  # the config is written last: a half export is redone
        (export_dir / f).unlink(missing_ok=True)
    (export_prior if kind == "prior" else export_generator)(st.numbers["best_checkpoint"], export_dir)
    _print(f"[{name}] exported {Path(st.numbers['best_checkpoint']).name} -> {export_dir} in "
           f"{time.perf_counter() - ts:.1f} s")
    return export_dir
