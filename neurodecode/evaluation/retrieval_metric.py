"""Zero-shot retrieval as a :class:`torchmetrics.Metric` whose state reduces across processes.

The states are the embeddings (``dist_reduce_fx="cat"``), so under DDP every process computes the
metric on the embeddings of all processes; :func:`~neurodecode.evaluation.retrieval.zero_shot_retrieval`
is its functional twin. The training loop (:class:`~neurodecode.training.lit.AlignmentModule`) logs its
validation and test numbers through it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from neurodecode.evaluation.ranking import SIMILARITIES, TIES, as_embeddings
from neurodecode.evaluation.retrieval import (
    DEFAULT_KS,
    DEFAULT_TOPS,
    DIRECTIONS,
    METHODS,
    PROTOCOLS,
    flatten_metrics,
    zero_shot_retrieval,
)
from neurodecode.utils import check_option

__all__ = ["ZeroShotRetrieval"]


class ZeroShotRetrieval(Metric):
    """Zero-shot retrieval as a :class:`torchmetrics.Metric` that reduces across processes.

    ``update(brain, image, ids=None, targets=None)`` stores the embeddings of paired rows (brain row
    ``i`` saw image row ``i``); ``compute()`` gathers them from every process (``dist_reduce_fx="cat"``)
    and calls :func:`zero_shot_retrieval`. The candidates are the images of all the rows, so each row
    should be a distinct image, unless ``targets`` (one integer image id per row, e.g. the stimulus's
    row in the stimulus table) says which rows show the same image: then each image is one candidate.

    ``ids`` (optional, one integer per row, e.g. the dataset index) makes the result independent of
    how rows were split over processes: rows are sorted by id and duplicate ids (the padding that
    ``DistributedSampler`` adds) are dropped. The exact method does not depend on row order, so
    ids only matter for ``method="monte_carlo"`` or with padded samplers.

    Parameters
    ----------
    ks, tops, full, directions, similarity, ties, method, n_draws, seed, protocol, csls_k
        As in :func:`zero_shot_retrieval`.
    **kwargs
        Passed to :class:`torchmetrics.Metric` (e.g. ``sync_on_compute``, ``process_group``).

    Notes
    -----
    ``compute()`` returns a flat dict of scalar tensors (see :func:`flatten_metrics`), ready for
    ``LightningModule.log_dict``; the full nested result with its protocol is kept in
    :attr:`last_result`. Every process must call ``update`` at least once before ``compute``.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, *, ks: Sequence[int] = DEFAULT_KS, tops: Sequence[int] = DEFAULT_TOPS, full: bool = True,
                 directions: Sequence[str] = DIRECTIONS, similarity: str = "cosine", ties: str = "pessimistic",
                 method: str = "exact", n_draws: int = 100, seed: int = 0, protocol: str = "per_query",
                 csls_k: int | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        check_option("similarity", similarity, SIMILARITIES)
        check_option("ties", ties, TIES)
        check_option("method", method, METHODS)
        check_option("protocol", protocol, PROTOCOLS)
        self.options = dict(ks=tuple(ks), tops=tuple(tops), full=full, directions=tuple(directions),
                            similarity=similarity, ties=ties, method=method, n_draws=n_draws, seed=seed,
                            protocol=protocol, csls_k=csls_k)
        self.last_result: dict[str, Any] | None = None
        self.add_state("brain", default=[], dist_reduce_fx="cat")
        self.add_state("image", default=[], dist_reduce_fx="cat")
        self.add_state("ids", default=[], dist_reduce_fx="cat")
        self.add_state("targets", default=[], dist_reduce_fx="cat")

    def update(self, brain: torch.Tensor, image: torch.Tensor, ids: torch.Tensor | None = None,
               targets: torch.Tensor | None = None) -> None:
        """Add a batch of paired brain and image embeddings (optional integer row ids and image ids)."""
        b = as_embeddings(brain, "brain", allow_empty=True).to(self.device, torch.float32)
        i = as_embeddings(image, "image", allow_empty=True).to(self.device, torch.float32)
        if b.shape != i.shape:
            raise ValueError(f"brain and image must be paired row by row with the same shape, got "
                             f"{tuple(b.shape)} and {tuple(i.shape)}.")
        if ids is not None:
            ids_t = torch.as_tensor(ids, device=self.device)
            if ids_t.shape != (b.shape[0],) or ids_t.is_floating_point():
                raise ValueError(f"ids must be integers of shape ({b.shape[0]},), got {tuple(ids_t.shape)} "
                                 f"{ids_t.dtype}.")
            if len(self.brain) and not len(self.ids):
                raise ValueError("pass ids in every update or in none.")
            self.ids.append(ids_t.to(torch.int64))
        elif len(self.ids):
            raise ValueError("pass ids in every update or in none.")
        if (targets is None) != (not len(self.targets)) and len(self.brain):
            raise ValueError("pass targets in every update or in none.")
        if targets is not None:
            self.targets.append(torch.as_tensor(targets, device=self.device).to(torch.int64).reshape(-1))
        self.brain.append(b)
        self.image.append(i)

    def compute(self) -> dict[str, torch.Tensor]:
        """Gathered retrieval numbers as a flat dict of scalar tensors."""
        brain = dim_zero_cat(self.brain)
        image = dim_zero_cat(self.image)
        if isinstance(self.ids, list) and not self.ids or (isinstance(self.ids, torch.Tensor)
                                                           and self.ids.numel() == 0):
            ids = None
        else:
            ids = dim_zero_cat(self.ids)
        if ids is not None:
            ids_np = ids.cpu().numpy().astype(np.int64)
            _, first = np.unique(ids_np, return_index=True)  # sorted unique ids, first occurrence
            order = torch.from_numpy(first).to(brain.device)
            brain, image = brain[order], image[order]
        targets = None
        if len(self.targets):
            targets = dim_zero_cat(self.targets)
            targets = targets[order] if ids is not None else targets
            _, first, targets = np.unique(targets.cpu().numpy(), return_index=True, return_inverse=True)
            image = image[torch.from_numpy(first).to(image.device)]  # one candidate per image
        self.last_result = zero_shot_retrieval(brain, image, targets=targets, **self.options)
        flat = flatten_metrics(self.last_result)
        return {key: torch.tensor(value, device=self.device) for key, value in flat.items()}
