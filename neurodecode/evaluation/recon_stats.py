"""Is a two-way identification above chance? A permutation test over the pairing of reconstructions and truths.

Under the null hypothesis the reconstructions carry no information about *which* image was seen, so
any assignment of ground truths to reconstructions is as likely as the true one. The test keeps the
correlation matrices of every sample round (``corr[i, j]`` = correlation of ground truth ``i`` with
reconstruction ``j``), draws random assignments ``pi`` (the same for every round) and recomputes the
round-averaged two-way identification with ground truth ``pi(j)`` as reconstruction ``j``'s own. The
p-value is ``(1 + #{null >= observed}) / (1 + n_permutations)`` (one-sided; Phipson & Smyth 2010).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["identification_from_corr", "identification_permutation_test"]


def identification_from_corr(corr: np.ndarray, own: np.ndarray | None = None) -> np.ndarray:
    """Per-reconstruction two-way identification from ``corr[i, j] = r(truth i, recon j)``.

    Parameters
    ----------
    corr : numpy.ndarray, (n, n)
    own : numpy.ndarray of int | None
        Index of each reconstruction's own ground truth (default: the diagonal).

    Returns
    -------
    score : numpy.ndarray, (n,)
        For reconstruction j, the share of the other n - 1 truths less correlated with it than its own.
    """
    n = corr.shape[0]
    own = np.arange(n) if own is None else np.asarray(own)
    ref = corr[own, np.arange(n)]
    return (corr < ref[None, :]).sum(0) / (n - 1)


def identification_permutation_test(corrs: Sequence[np.ndarray], *, n_permutations: int = 1000,
                                    seed: int = 0) -> dict[str, float]:
    """One-sided permutation test of the round-averaged two-way identification against chance.

    Parameters
    ----------
    corrs : sequence of numpy.ndarray, each (n, n)
        One truth-by-reconstruction correlation matrix per sample round.
    n_permutations : int
        Random assignments drawn.
    seed : int
        Seed of the draws.

    Returns
    -------
    result : dict
        ``observed`` (mean over rounds and reconstructions), ``p`` (one-sided), ``null_mean``,
        ``null_sd`` and ``n_permutations``.
    """
    stack = np.stack([np.asarray(c, dtype=np.float64) for c in corrs])
    k, n, _ = stack.shape
    cols = np.arange(n)

    def score(perm: np.ndarray) -> float:
        ref = stack[:, perm, cols]  # (k, n): each reconstruction's assigned truth
        return float(((stack < ref[:, None, :]).sum(1) / (n - 1)).mean())

    observed = score(cols)
    rng = np.random.default_rng(seed)
    null = np.array([score(rng.permutation(n)) for _ in range(int(n_permutations))])
    return {"observed": observed, "p": float((1 + np.sum(null >= observed)) / (1 + len(null))),
            "null_mean": float(null.mean()), "null_sd": float(null.std(ddof=1)), "n_permutations": int(len(null))}
