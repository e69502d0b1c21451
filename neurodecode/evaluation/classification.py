"""Classification metrics: zero-shot against text embeddings of class prompts, and supervised.

**Zero-shot.** Each class (concept) has a text embedding, e.g. a CLIP text embedding of ``"a photo
of a {concept}"``; several prompts per class are L2-normalised, averaged and renormalised (prompt
ensembling, as in CLIP). The logits of a brain embedding are its similarities to the class
embeddings; the predicted class is the most similar one. No training on the classes is involved.

**Supervised.** Where a classifier was trained on labels (a linear probe, a classification head),
:func:`classification_metrics` scores its outputs: top-n accuracy, balanced accuracy and, for two
classes, ROC AUC.

Ties follow the retrieval convention (``ties="pessimistic"`` by default: a class scoring the same
as the true class counts as scoring better, so a constant classifier gets 0 accuracy; ``"average"``
gives the expectation under random tie-breaking). Balanced accuracy is the mean over the classes
present in ``labels`` of the per-class top-1 hit rate (recall), which equals
:func:`sklearn.metrics.balanced_accuracy_score` of the arg-max prediction when there are no ties.
ROC AUC (two classes) uses the score difference ``scores[:, 1] - scores[:, 0]`` (or a 1-D decision
score) with :func:`sklearn.metrics.roc_auc_score`, where ties count one half.

:class:`ZeroShotClassification` and :class:`ClassificationMetrics` are :class:`torchmetrics.Metric`
classes whose states (embeddings or scores, and labels) are concatenated across processes; the
functions :func:`zero_shot_classification` and :func:`classification_metrics` are their twins.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from neurodecode.evaluation.ranking import (
    SIMILARITIES,
    TIES,
    ArrayLike,
    as_embeddings,
    hits_from_counts,
    similarity_matrix,
)
from neurodecode.utils import check_option

__all__ = [
    "ClassificationMetrics",
    "ZeroShotClassification",
    "class_embeddings",
    "classification_metrics",
    "zero_shot_classification",
    "zero_shot_logits",
]


def class_embeddings(text_embeddings: ArrayLike) -> torch.Tensor:
    """One unit-norm embedding per class from text embeddings of its prompts.

    Parameters
    ----------
    text_embeddings : array-like | torch.Tensor, shape (n_classes, dim) or (n_classes, n_prompts, dim)
        Text embeddings of the class prompts. With several prompts per class, each prompt embedding
        is L2-normalised, the prompts are averaged and the mean is normalised again.

    Returns
    -------
    classes : torch.Tensor, shape (n_classes, dim)
    """
    if isinstance(text_embeddings, torch.Tensor):
        ndim = text_embeddings.ndim
    else:
        ndim = np.ndim(text_embeddings)
    if ndim not in (2, 3):
        raise ValueError("text_embeddings must have shape (n_classes, dim) or (n_classes, n_prompts, dim), "
                         f"got {ndim} dimensions.")
    t = as_embeddings(text_embeddings, "text_embeddings", ndim=ndim)
    t = torch.nn.functional.normalize(t, dim=-1)
    if ndim == 3:
        t = torch.nn.functional.normalize(t.mean(dim=1), dim=-1)
    return t


def zero_shot_logits(brain: ArrayLike, text_embeddings: ArrayLike, *, similarity: str = "cosine") -> torch.Tensor:
    """Similarity of every brain embedding to every class embedding.

    Parameters
    ----------
    brain : array-like | torch.Tensor, shape (n_items, dim)
    text_embeddings : array-like | torch.Tensor, shape (n_classes, dim) or (n_classes, n_prompts, dim)
        See :func:`class_embeddings`.
    similarity : ``"cosine"`` | ``"dot"``
        With ``"dot"`` the class embeddings are still the normalised prompt means; only the brain
        embeddings keep their norm (which does not change the ranking of classes).

    Returns
    -------
    logits : torch.Tensor, shape (n_items, n_classes)
    """
    check_option("similarity", similarity, SIMILARITIES)
    classes = class_embeddings(text_embeddings)
    return similarity_matrix(brain, classes, similarity=similarity, query_name="brain",
                             candidate_name="text_embeddings")


def _labels(labels: ArrayLike, n_items: int, n_classes: int | None) -> np.ndarray:
    y = np.asarray(labels.detach().cpu() if isinstance(labels, torch.Tensor) else labels)
    if y.ndim != 1 or y.shape[0] != n_items:
        raise ValueError(f"labels must have shape ({n_items},) (one class index per item), got {y.shape}.")
    if not np.issubdtype(y.dtype, np.integer):
        raise TypeError(f"labels must be integer class indices, got dtype {y.dtype}; map class names to "
                        "indices in the order of the class embeddings / score columns.")
    if y.size and y.min() < 0:
        raise ValueError(f"labels must be >= 0, got {y.min()}.")
    if n_classes is not None and y.size and y.max() >= n_classes:
        raise ValueError(f"labels must be < n_classes={n_classes} (the number of score columns or class "
                         f"embeddings), got {y.max()}.")
    return y.astype(np.int64)


def classification_metrics(labels: ArrayLike, scores: ArrayLike, *, tops: Sequence[int] = (1, 5),
                           ties: str = "pessimistic") -> dict[str, Any]:
    """Accuracy, top-n accuracy, balanced accuracy and (two classes) ROC AUC.

    Parameters
    ----------
    labels : array-like of int, shape (n_items,)
        True class indices.
    scores : array-like | torch.Tensor, shape (n_items, n_classes) or (n_items,)
        Class scores (logits, probabilities or similarities; higher means more likely). A 1-D array
        is a binary decision score (higher means class 1).
    tops : sequence of int
        top-n accuracies to report; those with ``n >= n_classes`` are skipped.
    ties : ``"pessimistic"`` | ``"optimistic"`` | ``"average"``
        See the module documentation.

    Returns
    -------
    metrics : dict
        ``accuracy`` (top-1), ``top{n}_accuracy``, ``balanced_accuracy``, ``roc_auc`` (two classes
        only), ``chance`` (1 / n_classes), ``n_items``, ``n_classes``, ``ties``; fractions.
    """
    check_option("ties", ties, TIES)
    if isinstance(scores, torch.Tensor):
        s_ndim = scores.ndim
    else:
        s_ndim = np.ndim(scores)
    if s_ndim == 1:
        d = as_embeddings(scores, "scores", ndim=1)
        s = torch.stack([torch.zeros_like(d), d], dim=1)
    else:
        s = as_embeddings(scores, "scores")
    n, n_classes = s.shape
    if n_classes < 2:
        raise ValueError(f"scores must have at least 2 classes (columns), got {n_classes}.")
    y = _labels(labels, n, n_classes)
    true = s.gather(1, torch.from_numpy(y).to(s.device)[:, None])
    better = (s > true).sum(dim=1).cpu().numpy()
    tied = ((s == true).sum(dim=1) - 1).cpu().numpy()
    # a top-n hit needs fewer than n classes above the true one: the full-set retrieval curve
    out: dict[str, Any] = {}
    top1 = hits_from_counts(better, tied, (np.arange(n_classes) < 1).astype(float), ties)
    out["accuracy"] = float(top1.mean())
    for top in sorted({int(t) for t in tops}):
        if top < 1:
            raise ValueError(f"tops must be positive, got {top}.")
        if top == 1 or top >= n_classes:
            continue
        hits = hits_from_counts(better, tied, (np.arange(n_classes) < top).astype(float), ties)
        out[f"top{top}_accuracy"] = float(hits.mean())
    present = np.unique(y)
    out["balanced_accuracy"] = float(np.mean([top1[y == c].mean() for c in present]))
    if n_classes == 2:
        if present.size == 2:
            from sklearn.metrics import roc_auc_score

            diff = (s[:, 1] - s[:, 0]).cpu().double().numpy()
            out["roc_auc"] = float(roc_auc_score(y, diff))
        else:
            out["roc_auc"] = float("nan")  # undefined with a single class present
    out["chance"] = 1.0 / n_classes
    out["n_items"] = int(n)
    out["n_classes"] = int(n_classes)
    out["ties"] = ties
    return out


def zero_shot_classification(brain: ArrayLike, text_embeddings: ArrayLike, labels: ArrayLike, *,
                             tops: Sequence[int] = (1, 5), similarity: str = "cosine",
                             ties: str = "pessimistic") -> dict[str, Any]:
    """Zero-shot classification of brain embeddings against class (prompt) text embeddings.

    Parameters
    ----------
    brain : array-like | torch.Tensor, shape (n_items, dim)
    text_embeddings : array-like | torch.Tensor, shape (n_classes, dim) or (n_classes, n_prompts, dim)
        See :func:`class_embeddings`.
    labels : array-like of int, shape (n_items,)
        Class index of each item, in the order of ``text_embeddings``.
    tops, ties
        See :func:`classification_metrics`.
    similarity : ``"cosine"`` | ``"dot"``

    Returns
    -------
    result : dict
        The metrics of :func:`classification_metrics` plus ``protocol``.
    """
    logits = zero_shot_logits(brain, text_embeddings, similarity=similarity)
    out = classification_metrics(labels, logits, tops=tops, ties=ties)
    out["protocol"] = {"task": "zero-shot classification", "similarity": similarity, "ties": ties,
                       "class_embeddings": "normalised mean of prompt text embeddings",
                       "inference": "inductive"}
    return out


def _flat_tensors(metrics: dict[str, Any], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: torch.tensor(float(v), device=device) for k, v in metrics.items()
            if isinstance(v, int | float) and not isinstance(v, bool) and k not in ("n_items", "n_classes")}


class ZeroShotClassification(Metric):
    """Zero-shot classification as a :class:`torchmetrics.Metric` that reduces across processes.

    Parameters
    ----------
    text_embeddings : array-like | torch.Tensor, shape (n_classes, dim) or (n_classes, n_prompts, dim)
        Class prompt embeddings (see :func:`class_embeddings`), fixed for the metric's life.
    tops, similarity, ties
        See :func:`zero_shot_classification`.
    **kwargs
        Passed to :class:`torchmetrics.Metric`.

    Notes
    -----
    ``update(brain, labels)`` stores the batch; ``compute()`` gathers every process's rows and
    returns a flat dict of scalar tensors (accuracy, top-n, balanced accuracy, ROC AUC for two
    classes, chance). The full result is kept in :attr:`last_result`.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, text_embeddings: ArrayLike, *, tops: Sequence[int] = (1, 5), similarity: str = "cosine",
                 ties: str = "pessimistic", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        check_option("similarity", similarity, SIMILARITIES)
        check_option("ties", ties, TIES)
        self.options = dict(tops=tuple(tops), similarity=similarity, ties=ties)
        self.register_buffer("class_embeddings", class_embeddings(text_embeddings).float())
        self.last_result: dict[str, Any] | None = None
        self.add_state("brain", default=[], dist_reduce_fx="cat")
        self.add_state("labels", default=[], dist_reduce_fx="cat")

    def update(self, brain: torch.Tensor, labels: torch.Tensor) -> None:
        """Add a batch of brain embeddings and their integer class labels."""
        b = as_embeddings(brain, "brain").to(self.device, torch.float32)
        if b.shape[1] != self.class_embeddings.shape[1]:
            raise ValueError(f"brain embeddings have size {b.shape[1]} but the class embeddings have size "
                             f"{self.class_embeddings.shape[1]}.")
        y = _labels(labels, b.shape[0], self.class_embeddings.shape[0])
        self.brain.append(b)
        self.labels.append(torch.from_numpy(y).to(self.device))

    def compute(self) -> dict[str, torch.Tensor]:
        """Gathered classification numbers as a flat dict of scalar tensors."""
        brain = dim_zero_cat(self.brain)
        labels = dim_zero_cat(self.labels).long()
        self.last_result = zero_shot_classification(brain, self.class_embeddings, labels, **self.options)
        return _flat_tensors(self.last_result, self.device)


class ClassificationMetrics(Metric):
    """Supervised classification metrics as a :class:`torchmetrics.Metric` (scores and labels).

    ``update(scores, labels)`` with ``scores`` of shape ``(batch, n_classes)`` (or ``(batch,)``
    binary decision scores); ``compute()`` gathers every process's rows and returns
    :func:`classification_metrics` as a flat dict of scalar tensors. The full result is kept in
    :attr:`last_result`.

    Parameters
    ----------
    tops, ties
        See :func:`classification_metrics`.
    **kwargs
        Passed to :class:`torchmetrics.Metric`.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, *, tops: Sequence[int] = (1, 5), ties: str = "pessimistic", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        check_option("ties", ties, TIES)
        self.options = dict(tops=tuple(tops), ties=ties)
        self.last_result: dict[str, Any] | None = None
        self.add_state("scores", default=[], dist_reduce_fx="cat")
        self.add_state("labels", default=[], dist_reduce_fx="cat")

    def update(self, scores: torch.Tensor, labels: torch.Tensor) -> None:
        """Add a batch of class scores and integer labels."""
        ndim = scores.ndim if isinstance(scores, torch.Tensor) else np.ndim(scores)
        s = as_embeddings(scores, "scores", ndim=ndim if ndim in (1, 2) else 2).to(self.device, torch.float32)
        y = _labels(labels, s.shape[0], s.shape[1] if s.ndim == 2 else 2)
        self.scores.append(s)
        self.labels.append(torch.from_numpy(y).to(self.device))

    def compute(self) -> dict[str, torch.Tensor]:
        """Gathered classification numbers as a flat dict of scalar tensors."""
        self.last_result = classification_metrics(dim_zero_cat(self.labels).long(), dim_zero_cat(self.scores),
                                                  **self.options)
        return _flat_tensors(self.last_result, self.device)
