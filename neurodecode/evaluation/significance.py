"""Which windows of a time-resolved curve are above chance, with the error controlled across windows.

By default a cluster-based permutation test over adjacent windows (Maris & Oostenveld 2007; MNE's
``permutation_cluster_1samp_test`` on sign flips of per-item scores, or ``permutation_cluster_test`` on
permuted labels for classification); with ``correction="fdr"`` the Benjamini-Hochberg false discovery
rate over per-window tests (MNE's ``fdr_correction``). Used by :mod:`neurodecode.evaluation.time_resolved`.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from neurodecode.utils import check_option

__all__ = ["CORRECTIONS", "label_permutation_significance", "window_significance"]

CORRECTIONS: tuple[str, ...] = ("cluster", "fdr")


def window_significance(scores: np.ndarray, chance: float, *, correction: str = "cluster",
                        n_permutations: int = 1000, alpha: float = 0.05, seed: int = 0,
                        times: Sequence[float] | None = None) -> dict[str, Any]:
    """Which windows decode above chance, with the error controlled across windows.

    Parameters
    ----------
    scores : ndarray, (n_items, n_windows)
        A per-item score in each window whose null distribution is symmetric about ``chance`` (e.g.
        the share of distractors ranked below the true image, chance 0.5).
    chance : float
        Its value under the null.
    correction : str
        ``"cluster"``: cluster-based permutation test over adjacent windows (MNE's
        ``permutation_cluster_1samp_test``, one-tailed, cluster-forming threshold at one-tailed
        p < 0.05 of the t statistic, sign flips of items, cluster mass); a window is significant when
        it belongs to a cluster with p < ``alpha``. ``"fdr"``: one-sample t-test per window
        (one-tailed), Benjamini-Hochberg false discovery rate at ``alpha`` (MNE's ``fdr_correction``).
    n_permutations : int
        Sign-flip permutations of the cluster test.
    alpha : float
        Level of the family of windows.
    seed : int
        Seed of the permutations.
    times : sequence of float | None
        Window centres, to report the clusters' time spans.

    Returns
    -------
    result : dict
        ``significant`` (per window), ``p_values`` (cluster p of each window's cluster, 1 outside
        clusters; or FDR-adjusted p), ``clusters`` (cluster method: each cluster's windows, time span
        and p), ``method`` (words), ``correction``, ``alpha``, ``n_permutations``, ``seed`` and
        ``p_floor`` (the smallest p a permutation test can give, ``1 / (n_permutations + 1)``).
    """
    from mne.stats import fdr_correction, permutation_cluster_1samp_test
    from scipy.stats import t as student_t
    from scipy.stats import ttest_1samp

    check_option("correction", correction, CORRECTIONS)
    d = np.asarray(scores, np.float64) - chance
    if d.ndim != 2 or d.shape[0] < 3:
        raise ValueError(f"window_significance needs scores of shape (n_items >= 3, n_windows), got {d.shape}.")
    n_items, n_win = d.shape
    d = d + np.random.default_rng(seed).normal(0.0, 1e-12, d.shape)  # no window of zero variance
    out: dict[str, Any] = {"correction": correction, "alpha": alpha, "chance": chance, "n_items": n_items}
    if correction == "cluster":
        threshold = float(student_t.ppf(1 - 0.05, n_items - 1))
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="No clusters found")
            _, clusters, cluster_p, _ = permutation_cluster_1samp_test(
                d, threshold=threshold, n_permutations=int(n_permutations), tail=1, rng=np.random.default_rng(seed),
                out_type="indices", verbose=False)
        sig, p_win, found = _cluster_windows(clusters, cluster_p, n_win, alpha, times)
        n_perm_done = min(int(n_permutations), 2 ** n_items)
        out.update(method=f"cluster-based permutation test over adjacent windows (MNE "
                          f"permutation_cluster_1samp_test: {n_perm_done} sign-flip permutations of the test items, "
                          f"cluster-forming threshold t > {threshold:.2f} (one-tailed p < 0.05), cluster mass, "
                          f"cluster p < {alpha})",
                   clusters=found, threshold=threshold, n_permutations=n_perm_done, seed=seed,
                   p_floor=1.0 / (n_perm_done + 1))
    else:
        p_raw = ttest_1samp(d, 0.0, axis=0, alternative="greater").pvalue
        p_raw = np.where(np.isfinite(p_raw), p_raw, 1.0)
        sig, p_win = fdr_correction(p_raw, alpha=alpha)
        out.update(method=f"one-sample t-test per window (one-tailed), Benjamini-Hochberg FDR at {alpha} "
                          "(MNE fdr_correction)", p_uncorrected=p_raw.tolist())
    out["significant"] = [bool(v) for v in sig]
    out["p_values"] = [float(v) for v in p_win]
    return out


def _cluster_windows(clusters, cluster_p, n_win: int, alpha: float, times) -> tuple[np.ndarray, np.ndarray, list]:
    """Per-window flags and p-values, and a description of each cluster, from MNE's cluster output."""
    p_win = np.ones(n_win)
    sig = np.zeros(n_win, bool)
    found = []
    for c, pc in zip(clusters, cluster_p, strict=True):
        idx = np.asarray(c[0] if isinstance(c, tuple) else c).ravel()
        p_win[idx] = pc
        sig[idx] |= pc < alpha
        entry = {"windows": idx.tolist(), "p_value": float(pc)}
        if times is not None:
            entry.update(start=float(np.asarray(times)[idx].min()), stop=float(np.asarray(times)[idx].max()))
        found.append(entry)
    return sig, p_win, found


def label_permutation_significance(values: np.ndarray, labels: np.ndarray, *, correction: str = "cluster",
                                   n_permutations: int = 1000, alpha: float = 0.05, seed: int = 0,
                                   times: Sequence[float] | None = None) -> dict[str, Any]:
    """Which windows classify above chance, from out-of-fold predictions, error controlled across windows.

    Parameters
    ----------
    values : ndarray, (n_trials, n_windows)
        Two classes: the out-of-fold decision value of each trial (higher: class 1); more classes:
        the out-of-fold predicted class index.
    labels : ndarray of int, (n_trials,)
        True class index of each trial.
    correction : str
        ``"cluster"``: cluster-based permutation test over adjacent windows with MNE's
        ``permutation_cluster_test``: the trials' labels are permuted (the same permutation for every
        window, so the dependence across windows is kept); the statistic of a window is its ROC AUC
        (two classes; cluster-forming threshold: one-tailed p < 0.05 of the Mann-Whitney null) or its
        accuracy (more classes; threshold: one-tailed p < 0.05 of the binomial null at the majority
        rate); cluster mass; a window is significant in a cluster with p < ``alpha``. ``"fdr"``:
        per-window one-tailed Mann-Whitney U test (two classes) or binomial test (more classes),
        Benjamini-Hochberg at ``alpha`` (MNE's ``fdr_correction``).
    n_permutations, alpha, seed, times
        As :func:`window_significance`.

    Returns
    -------
    result : dict
        As :func:`window_significance`.
    """
    from mne.stats import fdr_correction, permutation_cluster_test
    from scipy.stats import binomtest, mannwhitneyu, norm, rankdata

    check_option("correction", correction, CORRECTIONS)
    values = np.asarray(values, np.float64)
    labels = np.asarray(labels)
    n_classes = int(labels.max()) + 1
    n_trials, n_win = values.shape
    groups = [values[labels == c] for c in range(n_classes)]
    out: dict[str, Any] = {"correction": correction, "alpha": alpha, "n_items": n_trials}
    if n_classes == 2:
        m, n = len(groups[1]), len(groups[0])
        chance = 0.5

        def stat_fun(neg: np.ndarray, pos: np.ndarray) -> np.ndarray:  # ROC AUC of each window
            r = rankdata(np.concatenate([pos, neg]), axis=0)[: len(pos)]
            return (r.sum(0) - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg))

        threshold = chance + norm.ppf(0.95) * np.sqrt((m + n + 1) / (12.0 * m * n))
        statistic = "ROC AUC of the window's out-of-fold decision values (chance 0.5)"
    else:
        chance = float(np.bincount(labels).max() / n_trials)

        def stat_fun(*gs: np.ndarray) -> np.ndarray:  # accuracy of each window
            return sum((g == c).sum(0) for c, g in enumerate(gs)) / sum(len(g) for g in gs)

        threshold = chance + norm.ppf(0.95) * np.sqrt(chance * (1 - chance) / n_trials)
        statistic = f"accuracy of the window's out-of-fold predictions (chance {chance:.3f}, the majority rate)"
    out.update(chance=chance, statistic=statistic)
    if correction == "cluster":
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="No clusters found")
            _, clusters, cluster_p, _ = permutation_cluster_test(
                [groups[0], groups[1]] if n_classes == 2 else groups, threshold=float(threshold),
                n_permutations=int(n_permutations), tail=1, stat_fun=stat_fun, rng=np.random.default_rng(seed),
                out_type="indices", buffer_size=None, verbose=False)
        sig, p_win, found = _cluster_windows(clusters, cluster_p, n_win, alpha, times)
        out.update(method=f"cluster-based permutation test over adjacent windows (MNE permutation_cluster_test: "
                          f"{int(n_permutations)} permutations of the trials' labels, cluster-forming threshold "
                          f"{threshold:.3f} (one-tailed p < 0.05), cluster mass, cluster p < {alpha})",
                   clusters=found, threshold=float(threshold), n_permutations=int(n_permutations), seed=seed,
                   p_floor=1.0 / (int(n_permutations) + 1))
    else:
        if n_classes == 2:
            p_raw = mannwhitneyu(groups[1], groups[0], alternative="greater", axis=0).pvalue
        else:
            hits = stat_fun(*groups) * n_trials
            p_raw = np.array([binomtest(int(round(h)), n_trials, chance, alternative="greater").pvalue for h in hits])
        sig, p_win = fdr_correction(np.where(np.isfinite(p_raw), p_raw, 1.0), alpha=alpha)
        out.update(method=f"{'Mann-Whitney U' if n_classes == 2 else 'binomial'} test per window (one-tailed), "
                          f"Benjamini-Hochberg FDR at {alpha} (MNE fdr_correction)", p_uncorrected=list(map(float, p_raw)))
    out["significant"] = [bool(v) for v in sig]
    out["p_values"] = [float(v) for v in p_win]
    return out
