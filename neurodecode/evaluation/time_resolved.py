"""Time-resolved decoding: how well each moment of the response tells what was seen.

The epoch is cut into sliding windows (``width`` and ``step`` in seconds). In each window a linear
decoder is fitted on training responses restricted to that window (all channels x the window's
samples) and scored on held-out responses:

* :func:`time_resolved_retrieval`: ridge regression (scikit-learn, closed form, regularisation by
  efficient leave-one-out over a log grid) from the window to the teacher embeddings, then zero-shot
  k-way retrieval of held-out images (as in the time-resolved analyses of THINGS-EEG/MEG papers);
* :func:`time_resolved_classification`: logistic regression on labels (e.g. faces vs houses),
  cross-validated (stratified k-fold, or grouped by run/session), scored with ROC AUC (two classes)
  or accuracy.

Every window gets a confidence interval over test items (bootstrap; DeLong's for ROC AUC), and
windows whose interval lies above chance are flagged. A linear decoder per window is what the field calls time-resolved decoding
(MNE's ``SlidingEstimator`` does the same per sample); it needs no retraining of deep models.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from neurodecode.utils import check_option, progress

__all__ = ["SCORINGS", "sliding_windows", "time_resolved_classification", "time_resolved_retrieval"]

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


def _window(x: np.ndarray, start: int, stop: int) -> np.ndarray:
    return np.ascontiguousarray(x[:, :, start:stop].reshape(len(x), -1))


def _boot(values: np.ndarray, n_boot: int, rng: np.random.Generator, confidence: float) -> tuple[float, float]:
    if n_boot <= 0 or len(values) < 2:
        return float("nan"), float("nan")
    idx = rng.integers(0, len(values), size=(n_boot, len(values)))
    stats = values[idx].mean(1)
    a = (1 - confidence) / 2
    return float(np.quantile(stats, a)), float(np.quantile(stats, 1 - a))


def time_resolved_retrieval(
    train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, candidates: np.ndarray, test_targets: np.ndarray,
    times: np.ndarray, *, width: float = 0.05, step: float = 0.02, k: int | None = None,
    tops: Sequence[int] = (1, 5), alphas: Sequence[float] = tuple(np.logspace(-1, 6, 15)),
    n_boot: int = 1000, confidence: float = 0.95, seed: int = 0, progress_bar: bool = True,
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
    width, step : float
        Sliding window (s).
    k : int | None
        k-way (closed form over all distractor draws); ``None`` uses all candidates.
    tops : sequence of int
        top-n values.
    alphas : sequence of float
        Ridge regularisation grid (chosen per window by efficient leave-one-out, ``RidgeCV``).
    n_boot : int
        Bootstrap resamples over test items for the confidence band.
    confidence : float
        Level of the band.
    seed : int
        Seed of the bootstrap.
    progress_bar : bool
        Show progress over windows.

    Returns
    -------
    result : dict
        ``times`` (window centres), per top-n ``top{n}`` with ``top{n}_ci_low``/``top{n}_ci_high``,
        ``chance`` per top-n, ``significant`` (top-1 band above chance), ``alpha`` per window and the
        protocol (``width``, ``step``, ``k``, ``n_boot``, ``seed``).
    """
    from sklearn.linear_model import RidgeCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from neurodecode.evaluation.ranking import similarity_matrix
    from neurodecode.evaluation.retrieval import kway_hits

    train_x, test_x = np.asarray(train_x, np.float32), np.asarray(test_x, np.float32)
    if train_x.ndim != 3 or test_x.ndim != 3 or train_x.shape[1:] != test_x.shape[1:]:
        raise ValueError(f"train_x and test_x must be (n, n_chans, n_times) with the same channels and times, got "
                         f"{train_x.shape} and {test_x.shape}.")
    if len(train_y) != len(train_x):
        raise ValueError(f"train_y has {len(train_y)} rows for {len(train_x)} training responses.")
    n_c = len(candidates)
    k = n_c if k is None else min(int(k), n_c)
    tops = [t for t in tops if t <= k]
    wins = sliding_windows(times, width, step)
    rng = np.random.default_rng(seed)
    out: dict[str, Any] = {"times": [], "alpha": []}
    for t in tops:
        out.update({f"top{t}": [], f"top{t}_ci_low": [], f"top{t}_ci_high": []})
    targets = np.asarray(test_targets, dtype=np.int64)
    for start, stop, centre in progress(wins, enabled=progress_bar, desc="time-resolved", unit="window"):
        model = make_pipeline(StandardScaler(), RidgeCV(alphas=alphas, alpha_per_target=False))
        model.fit(_window(train_x, start, stop), train_y)
        pred = model.predict(_window(test_x, start, stop))
        scores = similarity_matrix(pred, candidates)
        hits = kway_hits(scores, k, tops=tops, targets=targets)  # (len(tops), n_test)
        out["times"].append(centre)
        out["alpha"].append(float(model[-1].alpha_))
        for j, t in enumerate(tops):
            h = np.asarray(hits[j], dtype=float)
            lo, hi = _boot(h, n_boot, rng, confidence)
            out[f"top{t}"].append(float(h.mean()))
            out[f"top{t}_ci_low"].append(lo)
            out[f"top{t}_ci_high"].append(hi)
    out["chance"] = {f"top{t}": t / k for t in tops}
    out["significant"] = [bool(lo > out["chance"][f"top{tops[0]}"]) for lo in out[f"top{tops[0]}_ci_low"]]
    out["protocol"] = {"decoder": "standardise + RidgeCV per window", "width": width, "step": step, "k": k,
                       "n_candidates": n_c, "n_train": len(train_x), "n_test": len(test_x), "n_boot": n_boot,
                       "confidence": confidence, "seed": seed}
    return out


def time_resolved_classification(
    x: np.ndarray, labels: Sequence[Any], times: np.ndarray, *, groups: Sequence[Any] | None = None,
    width: float = 0.05, step: float = 0.01, n_splits: int = 5, scoring: str = "auto", C: float = 1.0,
    n_boot: int = 1000, confidence: float = 0.95, seed: int = 0, progress_bar: bool = True,
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
        bootstrap with ``n_boot`` resamples for accuracy) and display.

    Returns
    -------
    result : dict
        ``times``, ``score``, ``ci_low``, ``ci_high``, ``chance``, ``significant``, ``scoring`` and
        the protocol.
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
    res: dict[str, Any] = {"times": [], "score": [], "ci_low": [], "ci_high": []}
    for start, stop, centre in progress(wins, enabled=progress_bar, desc="time-resolved", unit="window"):
        clf = make_pipeline(StandardScaler(), LogisticRegression(C=C, solver="liblinear", max_iter=1000))
        xw = _window(x, start, stop)
        if scoring == "roc_auc":
            dec = cross_val_predict(clf, xw, y, cv=cv, groups=cv_groups, method="decision_function")
            score = roc_auc_score(yb, dec)
            lo, hi = _auc_ci(yb, dec, confidence)
        else:
            pred = cross_val_predict(clf, xw, y, cv=cv, groups=cv_groups)
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
    res["significant"] = [bool(lo > chance) for lo in res["ci_low"]]
    res["protocol"] = {"decoder": "standardise + logistic regression per window", "C": C, "width": width,
                       "step": step, "cv": type(cv).__name__, "n_splits": n_splits, "n_trials": len(x),
                       "n_boot": n_boot, "confidence": confidence, "seed": seed}
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
