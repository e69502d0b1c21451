"""Time-resolved decoding: how well each moment of the response tells what was seen.

The epoch is cut into sliding windows (``width`` and ``step`` in seconds). In each window a linear
decoder is fitted on training responses restricted to that window (all channels x the window's
samples) and scored on held-out responses:

* :func:`time_resolved_retrieval` (and :func:`time_resolved_retrieval_sets` for several test sets
  sharing one training set): ridge regression from the window to the teacher embeddings, then
  zero-shot k-way retrieval of held-out images (as in the time-resolved analyses of THINGS-EEG/MEG
  papers). Training repetitions of a stimulus are averaged first when ``train_groups`` says which
  responses belong together (the field's protocol). The ridge is :func:`ridge_loo`: features
  standardised, one eigendecomposition of the window's Gram matrix (``X X^T`` or ``X^T X``,
  whichever is smaller) serves every regularisation value of the grid and every embedding
  dimension, and the value is chosen by efficient leave-one-out error, exactly as scikit-learn's
  ``StandardScaler`` + ``RidgeCV(alpha_per_target=False)`` (tested to 1e-6) at a fraction of the cost.
  It lives in :mod:`neurodecode.evaluation.window_ridge`, which fits the windows side by side with
  one BLAS thread each (multi-threaded LAPACK on problems of this size stalls on a busy machine);
* :func:`time_resolved_classification`: logistic regression on labels (e.g. faces vs houses),
  cross-validated (stratified k-fold, or grouped by run/session), scored with ROC AUC (two classes)
  or accuracy.

Every window gets a confidence interval over test items (bootstrap; DeLong's for ROC AUC). These
intervals are per window and **uncorrected** across the 50-75 windows of an epoch: they are drawn as a
band, not used to call windows significant. ``significant`` comes from :func:`window_significance`,
which controls the error across windows: by default a cluster-based permutation test over adjacent
windows (Maris & Oostenveld 2007; MNE's ``permutation_cluster_1samp_test``, sign flips of per-item
scores), with ``correction="fdr"`` the Benjamini-Hochberg false discovery rate over per-window
one-sample t-tests (MNE's ``fdr_correction``). The per-item score is one whose null distribution is
symmetric about its chance level: the share of distractors ranked below the true image (retrieval,
chance 0.5) or DeLong's placement value (two classes) / the true class's normalised rank (more
classes). Pre-stimulus windows serve as a sanity check: with the error controlled, none should be
flagged. A linear decoder per window is what the field calls time-resolved decoding (MNE's
``SlidingEstimator`` does the same per sample); it needs no retraining of deep models.

The error control lives in :mod:`neurodecode.evaluation.significance`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from neurodecode.evaluation.significance import (
    CORRECTIONS,
    label_permutation_significance,
    window_significance,
)
from neurodecode.evaluation.window_ridge import fit_windows, ridge_loo, ridge_predict, window_features
from neurodecode.utils import check_option, progress

__all__ = ["CORRECTIONS", "SCORINGS", "average_groups", "ridge_loo", "ridge_predict", "sliding_windows",
           "label_permutation_significance", "time_resolved_classification", "time_resolved_retrieval",
           "time_resolved_retrieval_sets", "window_significance"]

SCORINGS: tuple[str, ...] = ("auto", "roc_auc", "accuracy", "balanced_accuracy")  # time_resolved_classification

def sliding_windows(times: np.ndarray, width: float, step: float) -> list[tuple[int, int, float]]:
    """Windows ``(start, stop, centre_time)`` over ``times`` (sample indices, stop exclusive).

    Parameters
    ----------
    times : ndarray
        Sample times in seconds (increasing, regular).
    width, step : float
        Window width and step in seconds (at least one sample each).
    """
    times = np.asarray(times, dtype=float)
    if times.ndim != 1 or len(times) < 2:
        raise ValueError(f"times must be a 1-D array of at least 2 samples, got shape {times.shape}.")
    dt = float(np.median(np.diff(times)))
    w = max(1, int(round(width / dt)))
    s = max(1, int(round(step / dt)))
    if w > len(times):
        raise ValueError(f"window width {width} s ({w} samples) is longer than the epoch ({len(times)} samples).")
    out = []
    for start in range(0, len(times) - w + 1, s):
        stop = start + w
        out.append((start, stop, float(times[start:stop].mean())))
    return out


def _boot(values: np.ndarray, n_boot: int, rng: np.random.Generator, confidence: float) -> tuple[float, float]:
    if n_boot <= 0 or len(values) < 2:
        return float("nan"), float("nan")
    idx = rng.integers(0, len(values), size=(n_boot, len(values)))
    stats = values[idx].mean(1)
    a = (1 - confidence) / 2
    return float(np.quantile(stats, a)), float(np.quantile(stats, 1 - a))


def average_groups(x: np.ndarray, y: np.ndarray, groups: Sequence[Any]) -> tuple[np.ndarray, np.ndarray]:
    """Mean of ``x`` and ``y`` over the rows that share a group label (e.g. repetitions of a stimulus).

    Rows come out in the order of the sorted unique labels. Labels may be tuples (subject, stimulus).
    """
    keys = [tuple(g) if isinstance(g, list | tuple | np.ndarray) else (g,) for g in groups]
    if len(keys) != len(x):
        raise ValueError(f"train_groups has {len(keys)} labels for {len(x)} training responses.")
    _, inverse = np.unique(np.array([repr(k) for k in keys]), return_inverse=True)
    n_groups = int(inverse.max()) + 1
    counts = np.bincount(inverse, minlength=n_groups).astype(np.float64)
    order = np.argsort(inverse, kind="stable")
    starts = np.r_[0, np.cumsum(counts)[:-1]].astype(int)
    xm = np.add.reduceat(np.asarray(x, np.float64)[order], starts, axis=0) / counts.reshape(-1, *[1] * (x.ndim - 1))
    ym = np.add.reduceat(np.asarray(y, np.float64)[order], starts, axis=0) / counts[:, None]
    return xm.astype(np.float32), ym


def _rank_scores(scores: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Per row: share of the other candidates scored below the true one (ties count against it)."""
    true = scores[np.arange(len(scores)), targets][:, None]
    below = (scores < true).sum(1)
    return below / max(scores.shape[1] - 1, 1)


# --------------------------------------------------------------------------------------------------
# time-resolved retrieval
# --------------------------------------------------------------------------------------------------
def time_resolved_retrieval(
    train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, candidates: np.ndarray, test_targets: np.ndarray,
    times: np.ndarray, **kwargs: Any,
) -> dict[str, Any]:
    """Zero-shot retrieval accuracy of a per-window ridge decoder.

    Parameters
    ----------
    train_x : ndarray, (n_train, n_chans, n_times)
        Training responses (normalised as you wish; each window is standardised by the decoder).
    train_y : ndarray, (n_train, dim)
        Teacher embeddings of the training stimuli.
    test_x : ndarray, (n_test, n_chans, n_times)
        Held-out responses (e.g. averaged test repetitions).
    candidates : ndarray, (n_candidates, dim)
        Embeddings of the candidate images.
    test_targets : ndarray of int, (n_test,)
        Candidate row each test response saw.
    times : ndarray, (n_times,)
        Sample times (s).
    **kwargs
        As :func:`time_resolved_retrieval_sets`.

    Returns
    -------
    result : dict
        As one entry of :func:`time_resolved_retrieval_sets`.
    """
    return time_resolved_retrieval_sets(train_x, train_y, {"test": (test_x, candidates, test_targets)}, times,
                                        **kwargs)["test"]


def time_resolved_retrieval_sets(
    train_x: np.ndarray, train_y: np.ndarray, tests: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]],
    times: np.ndarray, *, train_groups: Sequence[Any] | None = None, width: float = 0.05, step: float = 0.02,
    k: int | None = None, tops: Sequence[int] = (1, 5), alphas: Sequence[float] = tuple(np.logspace(-1, 6, 15)),
    n_boot: int = 1000, confidence: float = 0.95, correction: str = "cluster", n_permutations: int = 1000,
    alpha: float = 0.05, seed: int = 0, progress_bar: bool = True, n_jobs: int | None = None,
    blas_threads: int | None = 1,
) -> dict[str, dict[str, Any]]:
    """Time-resolved zero-shot retrieval of several test sets by one per-window ridge decoder.

    The decoder of each window is fitted once (:func:`ridge_loo`) and scores every test set; windows
    are fitted side by side, each single-threaded (:func:`~neurodecode.evaluation.window_ridge.fit_windows`).

    Parameters
    ----------
    train_x : ndarray, (n_train, n_chans, n_times)
        Training responses (normalised as you wish; each window is standardised by the decoder).
    train_y : ndarray, (n_train, dim)
        Teacher embeddings of the training stimuli.
    tests : dict
        Name -> ``(test_x, candidates, test_targets)``: held-out responses (n_test, n_chans,
        n_times), candidate embeddings (n_candidates, dim) and the candidate row each response saw.
    times : ndarray, (n_times,)
        Sample times (s).
    train_groups : sequence | None
        One label per training response (e.g. ``(subject, stimulus)``): responses sharing a label
        are averaged before fitting (the field's protocol, and fewer samples). ``None``: as given.
    width, step : float
        Sliding window (s).
    k : int | None
        k-way (closed form over all distractor draws); ``None`` uses all candidates.
    tops : sequence of int
        top-n values.
    alphas : sequence of float
        Ridge regularisation grid (chosen per window by efficient leave-one-out).
    n_boot, confidence : int, float
        Bootstrap resamples over test items and level of the per-window (uncorrected) band.
    correction, n_permutations, alpha
        Error control across windows (:func:`window_significance`) on the per-image rank score.
    seed : int
        Seed of the bootstrap and the permutations.
    progress_bar : bool
        Show progress over windows.
    n_jobs, blas_threads : int | None
        Windows fitted at the same time (threads; ``None``: the cores this process may use) and the
        BLAS threads of each fit (``None``: as they are); see
        :func:`~neurodecode.evaluation.window_ridge.fit_windows`. The results do not depend on them.

    Returns
    -------
    results : dict
        Per test set: ``times`` (window centres), per top-n ``top{n}`` with ``top{n}_ci_low`` /
        ``top{n}_ci_high`` (per-window bootstrap band, uncorrected), ``rank_score`` (mean share of
        distractors below the true image), ``chance`` per top-n, ``significant`` and
        ``significance`` (:func:`window_significance`), ``alpha`` (ridge value per window) and the
        protocol.
    """
    from neurodecode.evaluation.ranking import similarity_matrix
    from neurodecode.evaluation.retrieval import kway_hits

    train_x = np.asarray(train_x, np.float32)
    if len(train_y) != len(train_x):
        raise ValueError(f"train_y has {len(train_y)} rows for {len(train_x)} training responses.")
    n_given = len(train_x)
    if train_groups is not None:
        train_x, train_y = average_groups(train_x, train_y, train_groups)
    check_option("correction", correction, CORRECTIONS)
    sets = {}
    for name, (tx, cand, tgt) in tests.items():
        tx = np.asarray(tx, np.float32)
        if train_x.ndim != 3 or tx.ndim != 3 or train_x.shape[1:] != tx.shape[1:]:
            raise ValueError(f"train_x and test_x must be (n, n_chans, n_times) with the same channels and times, "
                             f"got {train_x.shape} and {tx.shape}.")
        n_c = len(cand)
        kk = n_c if k is None else min(int(k), n_c)
        sets[name] = {"x": tx, "cand": np.asarray(cand), "targets": np.asarray(tgt, np.int64), "k": kk,
                      "tops": [t for t in tops if t <= kk], "hits": [], "ranks": []}
    wins = sliding_windows(times, width, step)
    alpha_used = []
    fits = fit_windows(train_x, train_y, wins, alphas, [d["x"] for d in sets.values()], n_jobs=n_jobs,
                       blas_threads=blas_threads)
    for best, preds in progress(fits, enabled=progress_bar, desc="time-resolved", unit="window", total=len(wins)):
        alpha_used.append(best)
        for d, pred in zip(sets.values(), preds, strict=True):
            scores = np.asarray(similarity_matrix(pred, d["cand"]))
            d["hits"].append(np.asarray(kway_hits(scores, d["k"], tops=d["tops"], targets=d["targets"]), float))
            d["ranks"].append(_rank_scores(scores, d["targets"]))
    centres = [c for _, _, c in wins]
    results = {}
    for name, d in sets.items():
        rng = np.random.default_rng(seed)
        out: dict[str, Any] = {"times": centres, "alpha": alpha_used}
        for j, t in enumerate(d["tops"]):
            h = [hw[j] for hw in d["hits"]]
            band = [_boot(v, n_boot, rng, confidence) for v in h]
            out.update({f"top{t}": [float(v.mean()) for v in h], f"top{t}_ci_low": [b[0] for b in band],
                        f"top{t}_ci_high": [b[1] for b in band]})
        ranks = np.stack(d["ranks"], axis=1)  # (n_test, n_windows)
        out["rank_score"] = ranks.mean(0).tolist()
        out["chance"] = {f"top{t}": t / d["k"] for t in d["tops"]}
        sig = window_significance(ranks, 0.5, correction=correction, n_permutations=n_permutations, alpha=alpha,
                                  seed=seed, times=centres)
        sig["statistic"] = "per test image: share of the distractors ranked below the true image (chance 0.5)"
        out["significant"] = sig.pop("significant")
        out["significance"] = sig
        out["protocol"] = {"decoder": "standardise + ridge per window (leave-one-out choice of the regularisation)",
                           "width": width, "step": step, "k": d["k"], "n_candidates": len(d["cand"]),
                           "n_train": len(train_x), "n_train_responses": n_given,
                           "train_averaging": "responses sharing a stimulus (and subject) averaged"
                           if train_groups is not None else "as given",
                           "n_test": len(d["x"]), "n_boot": n_boot, "confidence": confidence,
                           "band": f"{confidence:.0%} bootstrap interval per window, uncorrected across windows",
                           "correction": correction, "seed": seed}
        results[name] = out
    return results


def time_resolved_classification(
    x: np.ndarray, labels: Sequence[Any], times: np.ndarray, *, groups: Sequence[Any] | None = None,
    width: float = 0.05, step: float = 0.01, n_splits: int = 5, scoring: str = "auto", C: float = 1.0,
    n_boot: int = 1000, confidence: float = 0.95, correction: str = "cluster", n_permutations: int = 1000,
    alpha: float = 0.05, seed: int = 0, progress_bar: bool = True,
) -> dict[str, Any]:
    """Cross-validated per-window classification (e.g. faces vs houses).

    Parameters
    ----------
    x : ndarray, (n_trials, n_chans, n_times)
        Responses.
    labels : sequence
        Class of each trial.
    times : ndarray
        Sample times (s).
    groups : sequence | None
        Group of each trial (run, session) for grouped cross-validation; ``None`` uses stratified
        k-fold.
    width, step : float
        Sliding window (s).
    n_splits : int
        Folds.
    scoring : str
        ``"auto"`` (ROC AUC for two classes, else accuracy), ``"roc_auc"``, ``"accuracy"`` or
        ``"balanced_accuracy"``.
    C : float
        Inverse regularisation of the logistic regression.
    n_boot, confidence, seed, progress_bar
        Confidence band over trials of the out-of-fold predictions (DeLong's interval for ROC AUC, a
        bootstrap with ``n_boot`` resamples for accuracy; per window, uncorrected) and display.
    correction, n_permutations, alpha
        Error control across windows (:func:`label_permutation_significance`): the labels of the
        out-of-fold decision values are permuted (one permutation for all windows), the statistic is
        the ROC AUC (two classes) or the accuracy (more classes) of each window.

    Returns
    -------
    result : dict
        ``times``, ``score``, ``ci_low``, ``ci_high`` (per-window band, uncorrected), ``chance``,
        ``significant`` and ``significance`` (error controlled across windows), ``scoring`` and the
        protocol.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import GroupKFold, StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x = np.asarray(x, np.float32)
    y = np.asarray(labels)
    classes = np.unique(y)
    if len(classes) < 2:
        raise ValueError(f"time-resolved classification needs at least two classes, got {classes.tolist()}.")
    if x.ndim != 3 or len(x) != len(y):
        raise ValueError(f"x must be (n_trials, n_chans, n_times) with one label per trial; got {x.shape} and "
                         f"{len(y)} labels.")
    check_option("scoring", scoring, SCORINGS)
    if scoring == "auto":
        scoring = "roc_auc" if len(classes) == 2 else "accuracy"
    if scoring == "roc_auc" and len(classes) != 2:
        raise ValueError("scoring='roc_auc' needs exactly two classes.")
    if groups is None:
        cv = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed)
        cv_groups = None
    else:
        cv = GroupKFold(n_splits=min(n_splits, len(np.unique(groups))))
        cv_groups = np.asarray(groups)
    yb = (y == classes[1]).astype(int) if len(classes) == 2 else None
    rng = np.random.default_rng(seed)
    wins = sliding_windows(times, width, step)
    check_option("correction", correction, CORRECTIONS)
    res: dict[str, Any] = {"times": [], "score": [], "ci_low": [], "ci_high": []}
    per_trial = []
    for start, stop, centre in progress(wins, enabled=progress_bar, desc="time-resolved", unit="window"):
        clf = make_pipeline(StandardScaler(), LogisticRegression(C=C, solver="liblinear" if len(classes) == 2 else "lbfgs",
                                                                 max_iter=1000))
        xw = window_features(x, start, stop)
        dec = cross_val_predict(clf, xw, y, cv=cv, groups=cv_groups, method="decision_function")
        per_trial.append(dec if yb is not None else np.argmax(dec, axis=1))
        if scoring == "roc_auc":
            score = roc_auc_score(yb, dec)
            lo, hi = _auc_ci(yb, dec, confidence)
        else:
            pred = classes[(dec > 0).astype(int)] if yb is not None else classes[np.argmax(dec, axis=1)]
            if scoring == "accuracy":
                per = (pred == y).astype(float)
                score = float(per.mean())
                lo, hi = _boot(per, n_boot, rng, confidence)
            else:
                from sklearn.metrics import balanced_accuracy_score

                score = balanced_accuracy_score(y, pred)
                lo, hi = float("nan"), float("nan")
        res["times"].append(centre)
        res["score"].append(float(score))
        res["ci_low"].append(lo)
        res["ci_high"].append(hi)
    chance = 0.5 if scoring in ("roc_auc", "balanced_accuracy") else float(max(np.mean(y == c) for c in classes))
    res["chance"] = chance
    res["scoring"] = scoring
    sig = label_permutation_significance(np.stack(per_trial, axis=1), np.searchsorted(classes, y),
                                         correction=correction, n_permutations=n_permutations, alpha=alpha,
                                         seed=seed, times=res["times"])
    res["significant"] = sig.pop("significant")
    res["significance"] = sig
    res["protocol"] = {"decoder": "standardise + logistic regression per window", "C": C, "width": width,
                       "step": step, "cv": type(cv).__name__, "n_splits": n_splits, "n_trials": len(x),
                       "n_boot": n_boot, "confidence": confidence, "correction": correction, "seed": seed}
    return res


def _auc_ci(y: np.ndarray, score: np.ndarray, confidence: float) -> tuple[float, float]:
    """Confidence interval of ROC AUC from DeLong's variance (DeLong et al. 1988), in O(n log n)."""
    from scipy.stats import norm, rankdata

    pos, neg = score[y == 1], score[y == 0]
    m, n = len(pos), len(neg)
    if m < 2 or n < 2:
        return float("nan"), float("nan")
    r_all = rankdata(np.concatenate([pos, neg]))
    v10 = (r_all[:m] - rankdata(pos)) / n  # per positive: share of negatives ranked below
    v01 = 1.0 - (r_all[m:] - rankdata(neg)) / m  # per negative: share of positives ranked above
    auc = v10.mean()
    se = np.sqrt(v10.var(ddof=1) / m + v01.var(ddof=1) / n)
    z = norm.ppf(0.5 + confidence / 2)
    return float(max(0.0, auc - z * se)), float(min(1.0, auc + z * se))
