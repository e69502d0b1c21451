"""A whole sample set kept on the training device, batches sliced there (no workers, no host copies).

A THINGS-EEG2 subject (66,160 training trials of 63 x 250 samples, 4.2 GB as float32) fits in the
memory of one GPU. :class:`DeviceBatches` copies a preloaded :class:`~neurodecode.training.sets.TrialSet`
to the device once and yields the batches the house :class:`~torch.utils.data.DataLoader`
(:func:`~neurodecode.training.sets.make_loader`) would yield, with the same keys, dtypes, order and
sizes, by indexing device tensors: no DataLoader workers, no collation, no host-to-device copy per
step, so the device is never left waiting for data. ``BrainImageDataModule(device_store=True)`` uses it.

The training order comes from the same :class:`~neurodecode.training.sets.EpochSeededSampler`
(exposed as ``.sampler``, so Lightning calls its ``set_epoch`` each epoch as it does for a
DataLoader's): each epoch's batches depend only on the seed and the epoch, as on the usual path.
With several processes (DDP) every process keeps the whole set and takes every ``world_size``-th
sample of the epoch's order, starting at its rank (in training the remainder is dropped, so that all
ranks run the same number of steps); Lightning substitutes no distributed sampler for an object
that is not a DataLoader, so the store does the sharding itself.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch

from neurodecode.training.sets import EpochSeededSampler

__all__ = ["DeviceBatches", "device_loader", "trainer_device"]


class DeviceBatches:
    """Batches of a preloaded :class:`~neurodecode.training.sets.TrialSet`, sliced on ``device``.

    Parameters
    ----------
    ds : TrialSet
        A set loaded into memory (``preload=True``: its ``data`` is an array).
    batch_size : int
        Samples per batch.
    shuffle : bool
        Training order (:class:`~neurodecode.training.sets.EpochSeededSampler`, the last incomplete
        batch dropped when there is more than one batch) or the set's order (all samples).
    seed : int
        Seed of the training order.
    device : str | torch.device
        Where the set is kept.
    rank, world_size : int
        This process's share of each epoch's order (DDP); ``0, 1`` for one process.
    """

    def __init__(self, ds: Any, *, batch_size: int, shuffle: bool, seed: int = 0,
                 device: str | torch.device = "cpu", rank: int = 0, world_size: int = 1) -> None:
        if getattr(ds, "data", None) is None:
            raise ValueError("the device store needs the set in memory: use BrainImageDataModule(preload=True) "
                             "with device_store=True (a lazily read set cannot be kept on the device).")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in [0, world_size={world_size}).")
        self.device = torch.device(device)
        self.batch_size = int(batch_size)
        self.shuffle = bool(shuffle)
        self.rank, self.world_size = int(rank), int(world_size)
        n = len(ds)
        self.n = n
        self.sampler = EpochSeededSampler(n, seed) if shuffle else None
        self.batch_sampler = None  # read by Lightning next to ``sampler``, as on a DataLoader
        # samples of this rank: training drops the remainder (equal steps on every rank), evaluation keeps all
        self.n_local = n // self.world_size if shuffle else len(range(self.rank, n, self.world_size))
        self.drop_last = shuffle and self.n_local > self.batch_size  # as make_loader
        put = lambda a: torch.as_tensor(a).to(self.device)  # noqa: E731 - one copy of each array, now
        self.x = put(ds.data)
        self.targets = put(ds.targets)
        self.stim = put(ds.stim_rows)
        self.subject = put(ds.subjects)
        self.texts = None if getattr(ds, "texts", None) is None else put(ds.texts)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch's order (Lightning calls ``sampler.set_epoch``; this is the same)."""
        if self.sampler is not None:
            self.sampler.set_epoch(epoch)

    def _order(self) -> torch.Tensor:
        if self.sampler is None:
            order = torch.arange(self.n)
        else:
            order = torch.tensor(list(iter(self.sampler)), dtype=torch.int64)
        if self.world_size > 1:
            stop = self.n_local * self.world_size if self.shuffle else self.n
            order = order[self.rank:stop:self.world_size]
        return order

    def __len__(self) -> int:
        return self.n_local // self.batch_size if self.drop_last else -(-self.n_local // self.batch_size)

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        order = self._order().to(self.device)
        for b in range(len(self)):
            idx = order[b * self.batch_size:(b + 1) * self.batch_size]
            stim = self.stim[idx]
            batch = {"x": self.x[idx], "target": self.targets[stim], "subject": self.subject[idx], "stim": stim,
                     "index": idx}
            if self.texts is not None:
                batch["text"] = self.texts[stim]
            yield batch


def trainer_device(trainer: Any | None) -> tuple[torch.device, int, int]:
    """The device, rank and world size of a Lightning trainer (CPU, 0, 1 without one)."""
    if trainer is None:
        return torch.device("cpu"), 0, 1
    return trainer.strategy.root_device, int(trainer.global_rank), int(trainer.world_size)


def device_loader(ds: Any, *, shuffle: bool, batch_size: int, eval_batch_size: int | None = None, seed: int = 0,
                  trainer: Any | None = None, device: str | torch.device | None = None) -> DeviceBatches:
    """:class:`DeviceBatches` with the batch sizes of :func:`~neurodecode.training.sets.make_loader`.

    Parameters
    ----------
    ds : TrialSet
        A preloaded set.
    shuffle, batch_size, eval_batch_size, seed
        As :func:`~neurodecode.training.sets.make_loader` (evaluation in order, ``eval_batch_size``).
    trainer : lightning.Trainer | None
        Gives the device, rank and world size (each rank takes every ``world_size``-th sample; the
        evaluation metrics gather the ranks' samples by ``index``).
    device : str | torch.device | None
        Overrides the trainer's device.
    """
    dev, rank, world = trainer_device(trainer)
    return DeviceBatches(ds, batch_size=batch_size if shuffle else (eval_batch_size or batch_size), shuffle=shuffle,
                         seed=seed, device=device if device is not None else dev, rank=rank, world_size=world)
