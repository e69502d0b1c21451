"""Noise ceilings: how reliable are the test responses themselves?

A decoder can only recover the part of a brain response that repeats when the same image is shown
again. Three views of that, all from repeated test trials arranged as ``responses`` of shape
``(n_stimuli, n_repetitions, *features)`` (features: ``(n_chans, n_times)`` for EEG/MEG,
``(n_voxels,)`` for fMRI; :func:`group_repetitions` builds it from a trial store's signals and
stimulus ids):

:func:`split_half_reliability`
    Repetitions are split at random into two halves (independently per stimulus); the halves are
    averaged and correlated across stimuli, per feature. The split-half correlation ``r`` is
    averaged over ``n_splits`` seeded splits and Spearman-Brown corrected to the reliability of
    the average of all ``R`` repetitions: ``rho = f r / (1 + (f - 1) r)`` with ``f = R / h`` and
    ``h = R // 2`` repetitions per half. Per feature (so per channel and time, or per voxel), and
    overall (the mean over features).
:func:`ncsnr_noise_ceiling`
    The noise-ceiling signal-to-noise ratio of Allen et al. (2022, *A massive 7T fMRI dataset...*,
    Nature Neuroscience): ``ncsnr = sd_signal / sd_noise`` with the noise variance the mean
    across stimuli of the variance across repetitions and the signal variance what remains of the
    variance of the stimulus means; the noise ceiling for responses averaged over ``n`` trials is
    ``100 * ncsnr**2 / (ncsnr**2 + 1 / n)`` percent of variance. (Allen et al. z-score betas per
    session first; do that upstream if you want their exact numbers.)
:func:`split_half_identification`
    How identifiable are the stimuli from the responses alone? Half of the repetitions (averaged)
    are the queries, the other half the candidates, and k-way retrieval is scored as for a decoder
    (correlation of the feature-centred patterns). This is a *reference*, not a strict upper bound:
    it uses only half of the repetitions on each side (which makes it conservative), while a
    decoder must also map responses to image embeddings (which loses information). Report it next
    to the decoder's numbers, labelled as such.

For simulated data, the simulator knows the noise-free responses and can report its own ceiling;
these functions estimate it from the data, as for real recordings.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from neurodecode.utils import progress

__all__ = [
    "group_repetitions",
    "ncsnr_noise_ceiling",
    "spearman_brown",
    "split_half_identification",
    "split_half_reliability",
]


def spearman_brown(r: Any, factor: float) -> Any:
    """Spearman-Brown prophecy: reliability of a test ``factor`` times as long, ``f r / (1 + (f-1) r)``."""
    r = np.asarray(r, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return factor * r / (1.0 + (factor - 1.0) * r)


def _check_responses(responses: Any, *, min_reps: int = 2) -> np.ndarray:
    try:
        import torch

        if isinstance(responses, torch.Tensor):
            responses = responses.detach().cpu().numpy()
    except ImportError:  # pragma: no cover
        pass
    x = np.asarray(responses)
    if x.ndim < 3:
        raise ValueError("responses must have shape (n_stimuli, n_repetitions, *features), e.g. (n_stimuli, "
                         f"n_repetitions, n_chans, n_times) or (n_stimuli, n_repetitions, n_voxels); got shape "
                         f"{x.shape}. Use group_repetitions() to build it from trials.")
    if x.shape[0] < 3:
        raise ValueError(f"responses needs at least 3 stimuli to correlate across stimuli, got {x.shape[0]}.")
    if x.shape[1] < min_reps:
        raise ValueError(f"responses needs at least {min_reps} repetitions per stimulus, got {x.shape[1]}.")
    if not np.issubdtype(x.dtype, np.floating):
        x = x.astype(np.float32)
    if not np.all(np.isfinite(x)):
        raise ValueError("responses contains NaN or Inf; drop bad trials (group_repetitions keeps only "
                         "complete stimuli).")
    return x


def group_repetitions(signals: Any, stimulus_ids: Sequence[Any], *, n_repetitions: int | None = None
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Arrange single trials as ``(n_stimuli, n_repetitions, *features)``.

    Parameters
    ----------
    signals : array-like, shape (n_trials, *features)
        E.g. a trial store's ``signals`` for the test split.
    stimulus_ids : sequence, shape (n_trials,)
        Stimulus of each trial.
    n_repetitions : int | None
        Repetitions kept per stimulus (the first ones, in trial order). ``None``: the smallest count
        over stimuli. Stimuli with fewer repetitions are dropped.

    Returns
    -------
    responses : np.ndarray, shape (n_stimuli, n_repetitions, *features)
    stimuli : np.ndarray, shape (n_stimuli,)
        The stimulus ids, sorted.
    """
    x = np.asarray(signals)
    ids = np.asarray(stimulus_ids)
    if ids.shape != (x.shape[0],):
        raise ValueError(f"stimulus_ids must have one entry per trial ({x.shape[0]}), got shape {ids.shape}.")
    stimuli, inv, counts = np.unique(ids, return_inverse=True, return_counts=True)
    n_rep = int(counts.min()) if n_repetitions is None else int(n_repetitions)
    if n_rep < 1:
        raise ValueError(f"n_repetitions must be >= 1, got {n_rep}.")
    keep = np.flatnonzero(counts >= n_rep)
    if keep.size == 0:
        raise ValueError(f"no stimulus has {n_rep} repetitions (max {counts.max()}).")
    order = np.argsort(inv, kind="stable")  # trials grouped by stimulus, in trial order
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    idx = np.stack([order[starts[s]: starts[s] + n_rep] for s in keep])
    return x[idx], stimuli[keep]


def _split_indices(rng: np.random.Generator, n_stim: int, n_rep: int) -> tuple[np.ndarray, np.ndarray]:
    perm = np.argsort(rng.random((n_stim, n_rep)), axis=1)  # an independent split per stimulus
    h = n_rep // 2
    return perm[:, :h], perm[:, h: 2 * h]


def _half_mean(x: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Mean over the repetitions ``idx`` (n_stimuli, h) of every stimulus, without copying trials."""
    n_stim, n_rep = x.shape[:2]
    w = np.zeros((n_stim, 1, n_rep), dtype=x.dtype)
    np.put_along_axis(w[:, 0], idx, 1.0 / idx.shape[1], axis=1)
    mean = np.matmul(w, x.reshape(n_stim, n_rep, -1))  # batched (1 x R) @ (R x F) per stimulus
    return mean.reshape((n_stim,) + x.shape[2:]).astype(np.float64)


def _corr_across_stimuli(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a - a.mean(axis=0)
    b = b - b.mean(axis=0)
    num = (a * b).sum(axis=0)
    den = np.sqrt((a * a).sum(axis=0) * (b * b).sum(axis=0))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def split_half_reliability(responses: Any, *, n_splits: int = 100, seed: int = 0, correct: bool = True,
                           verbose: bool = False) -> dict[str, Any]:
    """Split-half reliability of repeated responses, per feature and overall.

    Parameters
    ----------
    responses : array-like, shape (n_stimuli, n_repetitions, *features)
        At least 3 stimuli and 2 repetitions.
    n_splits : int
        Random split-halves averaged.
    seed : int
        Seed of the splits.
    correct : bool
        Apply the Spearman-Brown correction to the reliability of the mean of all repetitions.
    verbose : bool
        Show a progress bar over splits.

    Returns
    -------
    result : dict
        ``per_feature`` (np.ndarray of the feature shape: reliability of each channel x time or
        voxel; NaN where a feature does not vary), ``overall`` (mean of ``per_feature``, NaNs
        ignored), ``median``, ``split_half_r`` (the uncorrected mean split-half correlation per
        feature), ``n_stimuli``, ``n_repetitions``, ``repetitions_per_half``, ``n_splits``, ``seed``,
        ``spearman_brown_factor`` (1 when ``correct`` is False).
    """
    x = _check_responses(responses)
    n_stim, n_rep = x.shape[:2]
    if int(n_splits) < 1:
        raise ValueError(f"n_splits must be >= 1, got {n_splits}.")
    rng = np.random.default_rng(seed)
    total = np.zeros(x.shape[2:])
    valid = np.zeros(x.shape[2:])
    for _ in progress(range(int(n_splits)), enabled=verbose, desc="split halves"):
        ia, ib = _split_indices(rng, n_stim, n_rep)
        r = _corr_across_stimuli(_half_mean(x, ia), _half_mean(x, ib))
        ok = np.isfinite(r)
        total += np.where(ok, r, 0.0)
        valid += ok
    with np.errstate(invalid="ignore", divide="ignore"):
        r_mean = np.where(valid > 0, total / np.maximum(valid, 1), np.nan)
    h = n_rep // 2
    factor = n_rep / h if correct else 1.0
    rel = spearman_brown(r_mean, factor)
    finite = rel[np.isfinite(rel)]
    return {"per_feature": rel, "overall": float(finite.mean()) if finite.size else float("nan"),
            "median": float(np.median(finite)) if finite.size else float("nan"), "split_half_r": r_mean,
            "n_stimuli": int(n_stim), "n_repetitions": int(n_rep), "repetitions_per_half": int(h),
            "n_splits": int(n_splits), "seed": int(seed), "spearman_brown_factor": float(factor),
            "method": "random split-half, correlation across stimuli per feature, averaged over splits"
                      + (", Spearman-Brown corrected" if correct else "")}


def ncsnr_noise_ceiling(responses: Any, *, n_average: int | None = None) -> dict[str, Any]:
    """Noise-ceiling SNR and noise ceiling (percent of explainable variance), per feature.

    Parameters
    ----------
    responses : array-like, shape (n_stimuli, n_repetitions, *features)
    n_average : int | None
        Trials averaged per stimulus in the evaluation data; default: all ``n_repetitions``.

    Returns
    -------
    result : dict
        ``ncsnr`` and ``noise_ceiling`` (percent) per feature, ``overall`` (mean noise ceiling),
        ``n_average``.
    """
    x = _check_responses(responses).astype(np.float64)
    n_rep = x.shape[1]
    n = n_rep if n_average is None else int(n_average)
    if n < 1:
        raise ValueError(f"n_average must be >= 1, got {n}.")
    noise_var = x.var(axis=1, ddof=1).mean(axis=0)
    signal_var = np.maximum(x.mean(axis=1).var(axis=0, ddof=1) - noise_var / n_rep, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        ncsnr = np.sqrt(signal_var / noise_var)
        nc = 100.0 * ncsnr**2 / (ncsnr**2 + 1.0 / n)
    finite = nc[np.isfinite(nc)]
    return {"ncsnr": ncsnr, "noise_ceiling": nc, "overall": float(finite.mean()) if finite.size else float("nan"),
            "n_average": n, "unit": "percent of variance",
            "reference": "Allen et al. (2022), Nature Neuroscience 25:116-126"}


def split_half_identification(responses: Any, *, ks: Sequence[int] = (2, 10, 50, 200), tops: Sequence[int] = (1, 5),
                              n_splits: int = 20, seed: int = 0, ties: str = "pessimistic") -> dict[str, Any]:
    """k-way identification of stimuli from one half of the repetitions by the other half.

    The patterns (all features flattened) of each half are centred per feature across stimuli and
    compared by cosine similarity (i.e. pattern correlation); retrieval is scored with the exact
    k-way formula of :mod:`neurodecode.evaluation.retrieval`, averaged over ``n_splits`` random
    split-halves. See the module documentation for how to read it (a reference, not a bound).

    Parameters
    ----------
    responses : array-like, shape (n_stimuli, n_repetitions, *features)
    ks, tops
        k-way sizes (those above ``n_stimuli`` are skipped) and top-n values.
    n_splits, seed
        Random split-halves and their seed.
    ties
        See :func:`~neurodecode.evaluation.retrieval.zero_shot_retrieval`.

    Returns
    -------
    result : dict
        ``{"top{n}_{k}way": accuracy, "top{n}_full": ..., "n_splits", "seed", "repetitions_per_half",
        "note"}``.
    """
    from neurodecode.evaluation.ranking import (
        hit_probability_curve,
        hits_from_counts,
        rank_counts,
        similarity_matrix,
    )

    x = _check_responses(responses)
    n_stim, n_rep = x.shape[:2]
    rng = np.random.default_rng(seed)
    ks_used = sorted({int(k) for k in ks if 2 <= int(k) < n_stim} | {n_stim})
    sums: dict[str, float] = {}
    for _ in range(int(n_splits)):
        ia, ib = _split_indices(rng, n_stim, n_rep)
        a = _half_mean(x, ia).reshape(n_stim, -1)
        b = _half_mean(x, ib).reshape(n_stim, -1)
        a -= a.mean(axis=0)
        b -= b.mean(axis=0)
        better, tied = rank_counts(similarity_matrix(a, b))
        for k in ks_used:
            for n in tops:
                if n > k:
                    continue
                key = f"top{n}_full" if k == n_stim else f"top{n}_{k}way"
                hits = hits_from_counts(better, tied, hit_probability_curve(n_stim, k, n), ties)
                sums[key] = sums.get(key, 0.0) + float(hits.mean())
    out: dict[str, Any] = {key: v / int(n_splits) for key, v in sums.items()}
    out.update(n_splits=int(n_splits), seed=int(seed), repetitions_per_half=n_rep // 2, n_stimuli=int(n_stim),
               ties=ties, note="split-half identification of the responses themselves: a reference for "
                               "decoders, not a strict upper bound")
    return out
