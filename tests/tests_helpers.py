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
            for k in ("x", "target", "subject", "stim"):
                self.record[k] = batch[k].detach().cpu().clone()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if batch_idx == 0:
            loss = outputs["loss"] if isinstance(outputs, dict) else outputs
            self.record["loss"] = loss.detach().cpu().clone()
            self.record["world_size"] = trainer.world_size
            self.out.mkdir(parents=True, exist_ok=True)
            torch.save(self.record, self.out / f"rank{trainer.global_rank}.pt")

