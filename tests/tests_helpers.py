"""Callbacks used by the training tests (importable by class path from YAML, also in DDP workers)."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch


class StopAt(L.Callback):
    """Raise (as a crash would) at a given epoch and batch."""

    def __init__(self, epoch: int, batch: int = 0) -> None:
        self.epoch, self.batch = epoch, batch

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.current_epoch == self.epoch and batch_idx == self.batch:
            raise RuntimeError(f"interrupted at epoch {self.epoch}")


class RecordFirstBatch(L.Callback):
    """Save each rank's first training batch, its loss and the initial weights."""

    def __init__(self, out: str) -> None:
        self.out = Path(out)
        self.record: dict = {}

    def on_train_start(self, trainer, pl_module) -> None:
        self.record["initial_state"] = {k: v.detach().cpu().clone() for k, v in pl_module.state_dict().items()}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if batch_idx == 0:
            for k in ("x", "target", "subject", "stim", "text"):
                if k not in batch:
                    continue
                self.record[k] = batch[k].detach().cpu().clone()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if batch_idx == 0:
            loss = outputs["loss"] if isinstance(outputs, dict) else outputs
            self.record["loss"] = loss.detach().cpu().clone()
            self.record["world_size"] = trainer.world_size
            self.out.mkdir(parents=True, exist_ok=True)
            torch.save(self.record, self.out / f"rank{trainer.global_rank}.pt")



class RecordSteps(L.Callback):
    """Record, at every training step, the learning rate, the optimizer's class and the output dtypes of
    the encoder's linear and convolution layers (to check autocast really ran); saved to ``out``."""

    def __init__(self, out: str) -> None:
        self.out = Path(out)
        self.lrs: list[float] = []
        self.dtypes: set[str] = set()
        self.optimizer = ""
        self._hooks: list = []

    def on_train_start(self, trainer, pl_module) -> None:
        self.optimizer = type(trainer.optimizers[0]).__name__

        def hook(module, args, output):
            if module.training and isinstance(output, torch.Tensor):
                self.dtypes.add(str(output.dtype))

        for m in pl_module.encoder.modules():
            if isinstance(m, torch.nn.Linear | torch.nn.Conv1d | torch.nn.Conv2d):
                self._hooks.append(m.register_forward_hook(hook))

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.lrs.append(float(trainer.optimizers[0].param_groups[0]["lr"]))

    def on_train_end(self, trainer, pl_module) -> None:
        for h in self._hooks:
            h.remove()
        torch.save({"lrs": self.lrs, "dtypes": sorted(self.dtypes), "optimizer": self.optimizer,
                    "total": int(trainer.estimated_stepping_batches)}, self.out)


def tiny_fit_config(root: Path | str, run_dir: Path | str | None, *, max_epochs: int = 1, seed: int = 0,
                    model: dict | None = None, data: dict | None = None, **top) -> dict:
    """A ``neurodecode fit`` config of a small MLP on a simulated folder (CPU, no logger, no progress bar).

    ``model`` updates the AlignmentModule's ``init_args`` (an ``encoder`` entry replaces the MLP), ``data`` the
    data section (teacher ``test:features``, batch 32, joint protocol), and further keywords the top level.
    """
    trainer = {"max_epochs": max_epochs, "accelerator": "cpu", "devices": 1, "logger": False,
               "enable_progress_bar": False, "enable_model_summary": False}
    if run_dir is not None:
        trainer["default_root_dir"] = str(run_dir)
    init = {"encoder": {"class_path": "neurodecode.encoders.MLP", "init_args": {"hidden_sizes": [32]}}, "lr": 3e-3}
    return {"seed_everything": seed, **top, "trainer": trainer,
            "model": {"class_path": "neurodecode.training.lit.AlignmentModule", "init_args": {**init, **(model or {})}},
            "data": {"root": str(root), "teacher": "test:features", "batch_size": 32, "protocol": "joint",
                     **(data or {})}}
