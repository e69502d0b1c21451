"""Samples for the data module: trials (or averages of repetitions) with their targets, and a sampler.

:class:`TrialSet` yields ``{"x", "target", "subject", "stim", "index"[, "text"]}`` (see
:mod:`neurodecode.training.data`); :class:`EpochSeededSampler` gives each epoch an order that depends
only on the seed and the epoch, so that a resumed run sees the batches an uninterrupted one would.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from neurodecode.io.store import TrialStore


class TrialSet(Dataset):
    """Samples made of one trial or the average of several trials of one stimulus and subject.

    Parameters
    ----------
    stores : list of TrialStore
        The stores the trials come from.
    groups : list of (int, ndarray)
        Per sample: the store's position in ``stores`` and the trial indices to average.
    stim_rows : ndarray of int
        Per sample: the stimulus's row in the stimulus table.
    subjects : ndarray of int
        Per sample: the subject index given to the model (``-1``: unseen subject).
    targets : ndarray, (n_stimuli, dim)
        Teacher embeddings by stimulus row.
    picks : list of (ndarray | None)
        Per store: channel indices to keep (``None`` keeps all).
    time_slice : slice
        Samples to keep (EEG/MEG).
    texts : ndarray, (n_stimuli, dim) | None
        Text embeddings (of each stimulus's concept) by stimulus row.
    preload : bool
        Read and average everything into memory now (fast training); otherwise read lazily from the
        stores in each ``__getitem__`` (bounded memory, works in ``DataLoader`` workers).
    """

    def __init__(self, stores: Sequence[TrialStore], groups: Sequence[tuple[int, np.ndarray]],
                 stim_rows: np.ndarray, subjects: np.ndarray, targets: np.ndarray,
                 picks: Sequence[np.ndarray | None], time_slice: slice, texts: np.ndarray | None = None,
                 preload: bool = True, progress: bool = False) -> None:
        self.stores = list(stores)
        self.groups = list(groups)
        self.stim_rows = np.asarray(stim_rows, dtype=np.int64)
        self.subjects = np.asarray(subjects, dtype=np.int64)
        self.targets = np.asarray(targets, dtype=np.float32)
        self.texts = None if texts is None else np.asarray(texts, dtype=np.float32)
        self.picks = list(picks)
        self.time_slice = time_slice
        self.data: np.ndarray | None = None
        if preload:
            self.data = self._load_all(progress)

    def __len__(self) -> int:
        return len(self.groups)

    def _select(self, x: np.ndarray, store_i: int) -> np.ndarray:
        if self.stores[store_i].modality == "fmri":
            return x
        p = self.picks[store_i]
        if p is not None:
            x = x[..., p, :]
        return x[..., self.time_slice]

    def _read(self, i: int) -> np.ndarray:
        store_i, idx = self.groups[i]
        x = self._select(self.stores[store_i].get_signals(np.sort(idx)), store_i)
        return x.mean(0, dtype=np.float64).astype(np.float32) if len(idx) > 1 else x[0].astype(np.float32)

    def _load_all(self, progress: bool) -> np.ndarray:
        """Read every sample, averaging groups, in large sorted blocks per store (memory: the output)."""
        from neurodecode.utils import progress as bar

        first = self._read(0) if len(self) else np.zeros(0, np.float32)
        out = np.zeros((len(self), *first.shape), np.float32)
        by_store: dict[int, list[int]] = {}
        for i, (s, _) in enumerate(self.groups):
            by_store.setdefault(s, []).append(i)
        for s, samples in by_store.items():
            store = self.stores[s]
            trial_sample = np.full(store.n_trials, -1, np.int64)
            for i in samples:
                trial_sample[self.groups[i][1]] = i  # a trial belongs to at most one sample
            all_idx = np.flatnonzero(trial_sample >= 0)
            block = 4096
            for start in bar(range(0, len(all_idx), block), enabled=progress,
                             desc=f"loading sub-{store.subject}", unit="block"):
                chunk = all_idx[start:start + block]
                x = self._select(store.get_signals(chunk), s)
                target = trial_sample[chunk]
                if len(np.unique(target)) == len(target):
                    out[target] += x
                else:
                    np.add.at(out, target, x)
            counts = np.array([len(self.groups[i][1]) for i in samples], dtype=np.float32)
            out[samples] /= counts.reshape(-1, *([1] * first.ndim))
        return out

    def signals(self, i: int) -> np.ndarray:
        """The (averaged) response of sample ``i``."""
        return self.data[i] if self.data is not None else self._read(i)

    def __getitem__(self, i: int) -> dict[str, Any]:
        row = int(self.stim_rows[i])
        item = {
            "x": torch.from_numpy(np.ascontiguousarray(self.signals(i))),
            "target": torch.from_numpy(self.targets[row]),
            "subject": int(self.subjects[i]),
            "stim": row,
            "index": i,
        }
        if self.texts is not None:
            item["text"] = torch.from_numpy(self.texts[row])
        return item


class EpochSeededSampler(Sampler[int]):
    """Random order that depends only on ``(seed, epoch)``, so a resumed run sees the same batches.

    Lightning calls :meth:`set_epoch` at the start of every epoch (it does so for any sampler that has
    the method). Under DDP Lightning substitutes its ``DistributedSampler``, which is seeded the same way.
    """

    def __init__(self, n: int, seed: int = 0) -> None:
        self.n = int(n)
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __iter__(self):
        g = torch.Generator()
        g.manual_seed(self.seed * 100003 + self.epoch)
        return iter(torch.randperm(self.n, generator=g).tolist())

    def __len__(self) -> int:
        return self.n


def make_loader(ds: Dataset, *, shuffle: bool, batch_size: int, eval_batch_size: int | None = None, seed: int = 0,
                num_workers: int = 0) -> DataLoader:
    """The house DataLoader: training order from :class:`EpochSeededSampler` (each epoch's order depends
    only on the seed and the epoch; the last incomplete batch dropped when there is more than one), and
    evaluation in order with ``eval_batch_size`` (default ``batch_size``)."""
    kw: dict[str, Any] = {"num_workers": num_workers, "pin_memory": torch.cuda.is_available(),
                          "persistent_workers": num_workers > 0}
    if shuffle:
        return DataLoader(ds, batch_size=batch_size, sampler=EpochSeededSampler(len(ds), seed),
                          drop_last=len(ds) > batch_size, **kw)
    return DataLoader(ds, batch_size=eval_batch_size or batch_size, shuffle=False, **kw)
