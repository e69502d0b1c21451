"""Folds, fold metrics and the linear baseline of trial-level cross-validation.

:func:`make_folds` makes stratified (or grouped) folds of trials; :func:`crossval_logistic` is the
plain linear baseline on those folds (standardisation and an L2 logistic regression on the flattened
epoch); :class:`CrossvalResult` holds per-fold numbers, their mean +- sd and the out-of-fold scores.
:mod:`neurodecode.training.crossval` trains alignment models on the same folds.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from neurodecode.evaluation.stats import mean_sd
from neurodecode.utils import logger, use_log_level


# --------------------------------------------------------------------------------------------------
# results
# --------------------------------------------------------------------------------------------------
@dataclass
class CrossvalResult:
    """Cross-validated scores of one model.

    Attributes
    ----------
    method : str
        Short description of the model (``"alignment:eegnet"``, ``"logistic(C=0.01)"``...).
    folds : list of dict
        One dict per fold: ``fold``, ``n_train``, ``n_val``, ``n_test``, ``roc_auc``, ``accuracy``
        and method-specific entries (best epoch, chosen ``C``...).
    scores : ndarray, shape (n_trials, n_classes)
        Out-of-fold class scores of every trial (cosine similarities for alignment models,
        decision values for the logistic baseline).
    decision : ndarray, shape (n_trials,)
        Two classes: the out-of-fold decision score of the positive class (``scores[:, pos] -
        scores[:, neg]``); NaN otherwise.
    labels : ndarray, shape (n_trials,)
        Class (target row) of every trial.
    fold_of : ndarray, shape (n_trials,)
        Fold in which each trial was tested.
    config : dict
        The settings that produced the result.
    seconds : float
        Wall time.
    """

    method: str
    folds: list[dict[str, Any]]
    scores: np.ndarray
    decision: np.ndarray
    labels: np.ndarray
    fold_of: np.ndarray
    config: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def _per_fold(self, key: str) -> list[float]:
        return [float(f[key]) for f in self.folds if key in f and np.isfinite(f[key])]

    @property
    def roc_auc(self) -> dict[str, float | int]:
        """Mean, sd (ddof=1), sem and count of the per-fold ROC AUC."""
        return mean_sd(self._per_fold("roc_auc"))

    @property
    def accuracy(self) -> dict[str, float | int]:
        """Mean, sd (ddof=1), sem and count of the per-fold accuracy."""
        return mean_sd(self._per_fold("accuracy"))

    @property
    def pooled_roc_auc(self) -> float:
        """ROC AUC of the out-of-fold scores of all trials taken together."""
        return fold_metrics(self.labels, self.scores)["roc_auc"]

    def summary(self) -> dict[str, Any]:
        """A JSON-able summary (no per-trial arrays)."""
        return {"method": self.method, "roc_auc": self.roc_auc, "accuracy": self.accuracy,
                "pooled_roc_auc": self.pooled_roc_auc, "folds": self.folds, "config": self.config,
                "seconds": round(float(self.seconds), 2)}

    def __repr__(self) -> str:
        auc, acc = self.roc_auc, self.accuracy
        return (f"<CrossvalResult {self.method} | {auc['n']} folds | ROC AUC {auc['mean']:.3f} +- {auc['sd']:.3f} "
                f"| accuracy {acc['mean']:.3f} +- {acc['sd']:.3f}>")


# --------------------------------------------------------------------------------------------------
# folds and metrics
# --------------------------------------------------------------------------------------------------
def as_labels(labels: Any, n: int | None = None, name: str = "stimulus_rows") -> np.ndarray:
    """``labels`` as a 1-d integer array (of length ``n`` when given), with errors naming ``name``."""
    y = np.asarray(labels)
    if y.ndim != 1:
        raise ValueError(f"{name} must be 1-D (one class/target row per trial), got shape {y.shape}.")
    if n is not None and y.shape[0] != n:
        raise ValueError(f"{name} has {y.shape[0]} entries but there are {n} trials.")
    if not np.issubdtype(y.dtype, np.integer):
        raise TypeError(f"{name} must hold integer target rows (index of each trial's category in targets), "
                        f"got dtype {y.dtype}; map names to rows first (e.g. StimulusTable.rows(ids)).")
    if y.size and y.min() < 0:
        raise ValueError(f"{name} must be >= 0, got {int(y.min())}.")
    return y.astype(np.int64)


def make_folds(labels: Any, n_splits: int = 5, *, groups: Any = None, seed: int = 0
               ) -> list[tuple[np.ndarray, np.ndarray]]:
    """Cross-validation folds over trials, stratified by class (and grouped when ``groups`` is given).

    Parameters
    ----------
    labels : array-like of int, shape (n_trials,)
        Class of every trial.
    n_splits : int
        Number of folds.
    groups : array-like, shape (n_trials,) | None
        Group of every trial (session, run...). Given: :class:`sklearn.model_selection.StratifiedGroupKFold`,
        so that every group is tested in exactly one fold and never trained on there. ``None``:
        :class:`sklearn.model_selection.StratifiedKFold` with shuffling.
    seed : int
        Shuffling seed.

    Returns
    -------
    folds : list of (train_indices, test_indices)
    """
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

    y = as_labels(labels, name="labels")
    if isinstance(n_splits, bool) or not isinstance(n_splits, (int, np.integer)) or n_splits < 2:
        raise ValueError(f"n_splits must be an integer >= 2, got {n_splits!r}.")
    classes, counts = np.unique(y, return_counts=True)
    if classes.size < 2:
        raise ValueError(f"cross-validation needs at least 2 classes, got only class {classes.tolist()}.")
    if groups is None:
        if counts.min() < n_splits:
            raise ValueError(f"class {int(classes[counts.argmin()])} has {int(counts.min())} trials, fewer than "
                             f"n_splits={n_splits}; lower n_splits.")
        cv = StratifiedKFold(int(n_splits), shuffle=True, random_state=seed)
        splits = cv.split(np.zeros(len(y)), y)
    else:
        g = np.asarray(groups)
        if g.shape != y.shape:
            raise ValueError(f"groups must have one entry per trial ({len(y)}), got shape {g.shape}.")
        n_groups = np.unique(g).size
        if n_groups < n_splits:
            raise ValueError(f"groups has {n_groups} distinct value(s), fewer than n_splits={n_splits}: lower "
                             f"n_splits or group by a finer unit (e.g. run instead of session).")
        cv = StratifiedGroupKFold(int(n_splits), shuffle=True, random_state=seed)
        splits = cv.split(np.zeros(len(y)), y, g)
    return [(np.sort(tr), np.sort(te)) for tr, te in splits]


def inner_split(labels: Any, val_fraction: float, *, groups: Any = None, seed: int = 0
                ) -> tuple[np.ndarray, np.ndarray]:
    """Split training trials into a fitting part and a validation part (positions into ``labels``).

    Stratified by class (:class:`~sklearn.model_selection.StratifiedShuffleSplit`), or by whole
    groups (:class:`~sklearn.model_selection.GroupShuffleSplit`) when ``groups`` is given.
    """
    from sklearn.model_selection import GroupShuffleSplit, StratifiedShuffleSplit

    y = as_labels(labels, name="labels")
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}.")
    if groups is not None and np.unique(groups).size >= 2:
        cv: Any = GroupShuffleSplit(1, test_size=val_fraction, random_state=seed)
        fit, val = next(cv.split(np.zeros(len(y)), y, np.asarray(groups)))
    else:
        cv = StratifiedShuffleSplit(1, test_size=val_fraction, random_state=seed)
        fit, val = next(cv.split(np.zeros(len(y)), y))
    return np.sort(fit), np.sort(val)


def cosine_similarities(embeddings: Any, targets: Any) -> np.ndarray:
    """Cosine similarity of every embedding ``(n, d)`` to every target ``(k, d)``: ``(n, k)``."""
    e = np.asarray(embeddings, dtype=np.float64)
    t = np.asarray(targets, dtype=np.float64)
    if e.ndim != 2 or t.ndim != 2 or e.shape[1] != t.shape[1]:
        raise ValueError(f"embeddings (n, d) and targets (k, d) must share d, got {e.shape} and {t.shape}.")
    e = e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)
    t = t / np.maximum(np.linalg.norm(t, axis=1, keepdims=True), 1e-12)
    return e @ t.T


def fold_metrics(labels: Any, scores: Any) -> dict[str, float]:
    """ROC AUC and accuracy of class scores ``(n, n_classes)``.

    Accuracy counts the highest-scoring class (ties count as errors). ROC AUC: with two classes, of
    the decision ``scores[:, 1] - scores[:, 0]`` (the value is the same whichever class is called
    positive); with more, the mean one-vs-rest AUC of each class's own score column.
    """
    from sklearn.metrics import roc_auc_score

    from neurodecode.evaluation.classification import classification_metrics

    s = np.asarray(scores, dtype=np.float64)
    y = as_labels(labels, s.shape[0], "labels")
    m = classification_metrics(y, s, tops=(1,))
    out = {"accuracy": float(m["accuracy"]), "balanced_accuracy": float(m["balanced_accuracy"])}
    if s.shape[1] == 2:
        out["roc_auc"] = float(m["roc_auc"])
    else:
        aucs = [roc_auc_score(y == c, s[:, c]) for c in range(s.shape[1]) if 0 < np.sum(y == c) < len(y)]
        out["roc_auc"] = float(np.mean(aucs)) if aucs else float("nan")
    return out


def decision_scores(scores: np.ndarray, positive: int) -> np.ndarray:
    """Two-category decision score ``scores[:, positive] - scores[:, other]`` (NaN with more categories)."""
    if scores.shape[1] != 2:
        return np.full(scores.shape[0], np.nan)
    return scores[:, positive] - scores[:, 1 - positive]


def summarise_folds(method: str, fold_rows: list[dict[str, Any]], scores: np.ndarray, y: np.ndarray,
                     fold_of: np.ndarray, positive: int, config: dict[str, Any], t0: float) -> CrossvalResult:
    """Gather per-fold rows and out-of-fold scores into a :class:`CrossvalResult` (``t0``: start time)."""
    return CrossvalResult(method=method, folds=fold_rows, scores=scores, decision=decision_scores(scores, positive),
                          labels=y, fold_of=fold_of, config=config, seconds=time.perf_counter() - t0)


# --------------------------------------------------------------------------------------------------
# linear baseline
# --------------------------------------------------------------------------------------------------
def crossval_logistic(x: Any, labels: Any, *, folds: Sequence[tuple[np.ndarray, np.ndarray]] | None = None,
                      n_splits: int = 5, groups: Any = None, seed: int = 0, C: float | None = None,
                      Cs: Sequence[float] = (1e-5, 1e-4, 1e-3, 1e-2), inner_splits: int = 5,
                      positive: int = 0, verbose: bool | str | int | None = None) -> CrossvalResult:
    """Standardise + L2 logistic regression (liblinear) on the flattened trial, cross-validated.

    The plain linear decoder of the N170 literature and of ``shared/data/README.md``: every
    feature (channel x time sample) is standardised on the training trials of the fold, then a
    logistic regression is fitted.

    Parameters
    ----------
    x : array-like, shape (n_trials, ...)
        Trials; flattened to ``(n_trials, n_features)``.
    labels : array-like of int, shape (n_trials,)
        Class of every trial (the same target rows as for :func:`crossval_alignment`).
    folds : list of (train, test) | None
        Folds to use (e.g. those of an alignment run, for a like-for-like comparison); ``None``
        makes them with :func:`make_folds` (``n_splits``, ``groups``, ``seed``).
    n_splits, groups, seed
        See :func:`make_folds`.
    C : float | None
        Inverse L2 strength. ``None``: chosen in each fold among ``Cs`` by an inner stratified
        ``inner_splits``-fold cross-validation of the training trials (ROC AUC; two classes) or
        accuracy (more classes), so the test fold is never used to choose it.
    Cs : sequence of float
        Grid for ``C=None``: by default the decades ``1e-5 ... 1e-2``. Larger values are left
        out because liblinear is slow there and they are never chosen on standardised EEG epochs
        (hundreds of features per trial): on the N170 subject 01 (1133 trials x 928 features, 5
        folds) the inner cross-validation picks 1e-4 to 3e-4 in every fold with the old 11-value grid
        up to 1 as with this one (ROC AUC 0.705 both), in 5 s of CPU instead of 29 s (a fixed
        ``C=1e-3``: 0.3 s, ROC AUC 0.702; the README's ``C=0.01``: 0.5 s, 0.684). Pass
        ``Cs=np.logspace(-5, 0, 11)`` for the wider search, or a fixed ``C`` for speed.
    inner_splits : int
        Folds of the inner cross-validation.
    positive : int
        The class whose score is :attr:`CrossvalResult.decision` (two classes).
    verbose : bool | str | int | None
        Log level for this call.

    Returns
    -------
    result : CrossvalResult
        ``scores`` holds per-class decision values (two classes: ``[-d / 2, d / 2]`` with ``d`` the
        decision value of class 1), so :func:`fold_metrics` applies unchanged.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    def pipeline(c: float) -> Any:
        return make_pipeline(StandardScaler(), LogisticRegression(C=float(c), solver="liblinear", max_iter=1000))

    t0 = time.perf_counter()
    with use_log_level(verbose):
        X = np.asarray(x, dtype=np.float64)
        X = X.reshape(X.shape[0], -1)
        y = as_labels(labels, X.shape[0], "labels")
        if not np.all(np.isfinite(X)):
            raise ValueError("x holds NaN or Inf values; clean the trials first.")
        if folds is None:
            folds = make_folds(y, n_splits, groups=groups, seed=seed)
        n_classes = int(y.max()) + 1
        scoring = "roc_auc" if n_classes == 2 else "accuracy"
        scores = np.full((len(y), n_classes), np.nan)
        fold_of = np.full(len(y), -1, dtype=np.int64)
        rows = []
        for k, (tr, te) in enumerate(folds):
            inner_scores = None
            if C is None:  # inner cross-validation on the training trials only
                inner = StratifiedKFold(int(inner_splits), shuffle=True, random_state=seed)
                inner_scores = [float(cross_val_score(pipeline(c), X[tr], y[tr], cv=inner, scoring=scoring).mean())
                                for c in Cs]
                chosen = float(Cs[int(np.argmax(inner_scores))])
            else:
                chosen = float(C)
            model = pipeline(chosen).fit(X[tr], y[tr])
            d = model.decision_function(X[te])
            s = np.stack([-d / 2, d / 2], 1) if d.ndim == 1 else d
            full = np.full((len(te), n_classes), -np.inf)
            full[:, model.classes_] = s
            scores[te], fold_of[te] = full, k
            row = {"fold": k, "n_train": int(len(tr)), "n_val": 0, "n_test": int(len(te)),
                   **fold_metrics(y[te], full)}
            row["C"] = chosen
            if inner_scores is not None:
                row["inner_" + scoring] = [round(v, 5) for v in inner_scores]
            rows.append(row)
            logger.info(f"logistic fold {k}: ROC AUC {row['roc_auc']:.3f}, C={row['C']:.3g}")
        if (fold_of < 0).any():
            raise ValueError("the folds do not test every trial once; pass folds from make_folds.")
    method = "logistic(C=inner-cv)" if C is None else f"logistic(C={C:g})"
    config = {"C": C, "Cs": None if C is not None else [float(c) for c in Cs], "inner_splits": int(inner_splits),
              "solver": "liblinear", "standardise": True, "n_splits": len(folds), "seed": int(seed)}
    return summarise_folds(method, rows, scores, y, fold_of, positive, config, t0)
