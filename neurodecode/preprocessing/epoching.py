"""Preprocessing of continuous EEG/MEG: filter, epoch, baseline, resample, crop, and MVNN.

Two families of functions live here.

*The MNE pipeline, step by step*: :func:`band_pass`, :func:`find_stim_events`,
:func:`epoch_with_mne` (``mne.Epochs`` with baseline, then ``Epochs.resample`` and
``Epochs.crop``), and :func:`select_repetitions`. They are the reference: small, documented, and
what the community scripts do.

*The same computation, streamed*: epoching, baseline correction, resampling and cropping are all
linear maps of one epoch's samples, applied identically to every epoch. :func:`epoch_operator`
obtains that map by running the MNE pipeline above on the unit impulses (so it is MNE's
computation, padding and windowing included, not a re-implementation), and
:func:`iter_epochs` applies it to blocks of epochs cut straight from the continuous array with one
matrix product per block. Memory is one block at a time; the output equals
:func:`epoch_with_mne` to floating-point precision (``float32`` by default; the tests and
``benchmarks/prepare_throughput.py`` check it).

*Multivariate noise normalisation* (MVNN; Guggenmos et al. 2018, as used by THINGS-EEG2 and NICE):
the noise covariance of the sensors is estimated per image condition, either at each time point
across the repetitions (``mode="time"``) or over time within each repetition (``mode="epochs"``),
each estimate shrunk with the Ledoit-Wolf formula on standardised data (what
``sklearn.discriminant_analysis._cov(X, shrinkage="auto")`` computes, which the THINGS-EEG2 and NICE
scripts call), averaged over time or repetitions and then over conditions; the data are multiplied
by its inverse square root. :class:`MVNN` computes every condition's estimate in batched array
operations (no Python loop over the 16540 conditions) and accumulates their sum block by block, so
it can be fitted on data larger than memory. Fit it on the *training* data of a session only, then
transform that session's training and test data.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from neurodecode.utils import check_option, logger, progress

if TYPE_CHECKING:  # pragma: no cover
    import mne

__all__ = [
    "MVNN",
    "EpochOperator",
    "band_pass",
    "epoch_operator",
    "epoch_with_mne",
    "epochs_from_array",
    "find_stim_events",
    "inverse_sqrt",
    "iter_epochs",
    "mvnn",
    "mvnn_covariance",
    "select_repetitions",
    "shrunk_covariance_sum",
]

MVNN_MODES = ("epochs", "time")


# --------------------------------------------------------------------------------------------------
# the MNE pipeline, step by step
# --------------------------------------------------------------------------------------------------
def band_pass(data: np.ndarray, sfreq: float, l_freq: float | None, h_freq: float | None, *,
              copy: bool = True, verbose: bool | str | None = None, **kwargs: Any) -> np.ndarray:
    """Band-pass (or high-/low-pass) filter continuous data along the last axis with MNE.

    Parameters
    ----------
    data : ndarray, shape (n_channels, n_samples)
        Continuous data (float64 is filtered in place when ``copy=False``).
    sfreq : float
        Sampling rate (Hz).
    l_freq, h_freq : float | None
        Pass-band edges (Hz); ``None`` leaves that side open (see :func:`mne.filter.filter_data`).
    copy : bool
        Filter a copy (default) or, for float64 input, in place.
    verbose : bool | str | None
        MNE verbosity.
    **kwargs
        Further arguments of :func:`mne.filter.filter_data` (``method``, ``phase``, ...).

    Returns
    -------
    filtered : ndarray
    """
    import mne

    if l_freq is None and h_freq is None:
        return data.copy() if copy else data
    return mne.filter.filter_data(np.asarray(data, dtype=np.float64), sfreq, l_freq, h_freq, copy=copy,
                                  verbose=verbose, **kwargs)


def find_stim_events(stim: np.ndarray, sfreq: float, *, verbose: bool | str | None = None,
                     **kwargs: Any) -> np.ndarray:
    """Events of a stimulus channel, found by :func:`mne.find_events`.

    Parameters
    ----------
    stim : ndarray, shape (n_samples,)
        The stimulus channel (event codes at event onsets, 0 elsewhere).
    sfreq : float
        Sampling rate (Hz).
    verbose : bool | str | None
        MNE verbosity.
    **kwargs
        Further arguments of :func:`mne.find_events`.

    Returns
    -------
    events : ndarray of int, shape (n_events, 3)
        MNE events: onset sample, previous value, event code.
    """
    import mne

    info = mne.create_info(["stim"], float(sfreq), "stim")
    raw = mne.io.RawArray(np.asarray(stim, dtype=np.float64)[None, :], info, verbose=False)
    return mne.find_events(raw, stim_channel="stim", verbose=verbose, **kwargs)


def epoch_with_mne(raw: mne.io.BaseRaw, events: np.ndarray, *, tmin: float, tmax: float,
                   baseline: tuple[float | None, float | None] | None = (None, 0),
                   sfreq: float | None = None, crop: tuple[float | None, float | None] = (None, None),
                   verbose: bool | str | None = None) -> mne.Epochs:
    """Cut epochs with ``mne.Epochs`` (baseline on load), then resample and crop them.

    This is the straightforward whole-recording pipeline; :func:`iter_epochs` streams the same
    computation.

    Parameters
    ----------
    raw : mne.io.Raw
        Continuous data.
    events : ndarray, shape (n_events, 3)
        MNE events.
    tmin, tmax : float
        Epoch window around each event (s), both included.
    baseline : tuple | None
        Baseline interval (s) subtracted from each epoch, as in ``mne.Epochs``.
    sfreq : float | None
        New sampling rate (Hz); ``None`` keeps the raw rate.
    crop : tuple of (float | None, float | None)
        Window kept after resampling (s); ``None`` keeps that end.
    verbose : bool | str | None
        MNE verbosity.

    Returns
    -------
    epochs : mne.Epochs
        Preloaded epochs of every data channel of ``raw`` (pick channels on ``raw`` first).
    """
    import mne

    epochs = mne.Epochs(raw, events, tmin=tmin, tmax=tmax, baseline=baseline, preload=True, verbose=verbose)
    if sfreq is not None and sfreq != epochs.info["sfreq"]:
        epochs.resample(sfreq, verbose=verbose)
    if crop != (None, None):
        epochs.crop(tmin=crop[0], tmax=crop[1], verbose=verbose)
    return epochs


def select_repetitions(codes: np.ndarray, n_repetitions: int, seed: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Choose ``n_repetitions`` trials of each condition, reproducibly.

    The choice is the one the THINGS-EEG2 and NICE scripts make: for each condition, its trial
    indices (in presentation order) are shuffled by ``sklearn.utils.shuffle(idx,
    random_state=seed, n_samples=n_repetitions)``, i.e. a fresh ``numpy.random.RandomState(seed)``
    permutation per condition. As that permutation only depends on how many trials a condition
    has, it is drawn once per distinct count and applied to all conditions with that count.

    Parameters
    ----------
    codes : ndarray of int, shape (n_trials,)
        Condition (event code) of each trial, in presentation order.
    n_repetitions : int
        Trials kept per condition.
    seed : int | None
        Random seed; ``None`` keeps the first ``n_repetitions`` trials in presentation order.

    Returns
    -------
    conditions : ndarray, shape (n_conditions,)
        The sorted unique condition codes.
    index : ndarray of int, shape (n_conditions, n_repetitions)
        Trial indices into ``codes``: ``index[i, r]`` is repetition ``r`` of ``conditions[i]``.
    """
    codes = np.asarray(codes)
    if n_repetitions < 1:
        raise ValueError(f"n_repetitions must be at least 1, got {n_repetitions}.")
    conditions, inverse, counts = np.unique(codes, return_inverse=True, return_counts=True)
    short = counts < n_repetitions
    if short.any():
        bad = conditions[short][:10].tolist()
        raise ValueError(f"{int(short.sum())} condition(s) have fewer than {n_repetitions} trials "
                         f"(e.g. {bad} with {counts[short][:10].tolist()}); cannot keep {n_repetitions} "
                         f"repetitions of each. Lower the number of repetitions kept.")
    grouped = np.argsort(inverse, kind="stable")  # trials grouped by condition, presentation order inside
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    index = np.empty((len(conditions), n_repetitions), dtype=np.int64)
    for n in np.unique(counts):
        if seed is None:
            pos = np.arange(n_repetitions)
        else:
            pos = np.random.RandomState(seed).permutation(int(n))[:n_repetitions]
        rows = np.flatnonzero(counts == n)
        index[rows] = grouped[starts[rows][:, None] + pos[None, :]]
    return conditions, index


# --------------------------------------------------------------------------------------------------
# the same computation, streamed
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class EpochOperator:
    """The linear map from an epoch's raw samples to its preprocessed samples.

    Attributes
    ----------
    matrix : ndarray, shape (n_out, n_in)
        ``epoch_out = matrix @ raw[onset + start : onset + start + n_in]`` (per channel).
    start : int
        First raw sample of the window relative to the event onset (e.g. -200).
    n_in : int
        Raw samples per epoch.
    times : ndarray, shape (n_out,)
        Times of the output samples (s).
    sfreq : float
        Output sampling rate (Hz).
    params : dict
        The parameters it was built from.
    """

    matrix: np.ndarray
    start: int
    n_in: int
    times: np.ndarray
    sfreq: float
    params: dict

    @property
    def n_out(self) -> int:
        """Output samples per epoch."""
        return self.matrix.shape[0]

    @property
    def tmin(self) -> float:
        """Time of the first output sample (s)."""
        return float(np.round(self.times[0], 9))


def epoch_operator(sfreq: float, tmin: float, tmax: float, *,
                   baseline: tuple[float | None, float | None] | None = (None, 0),
                   resample_sfreq: float | None = None, crop: tuple[float | None, float | None] = (None, None),
                   verbose: bool | str | None = None) -> EpochOperator:
    """Build the linear map of :func:`epoch_with_mne` by running MNE on unit impulses.

    Epoching, baseline subtraction, FFT resampling (with its padding) and cropping are linear and
    the same for every epoch, so applying them to the ``n_in`` unit impulses gives the columns
    of a matrix that performs all of them at once. The matrix is MNE's own computation: a change
    in MNE's resampling changes the matrix accordingly.

    Parameters
    ----------
    sfreq : float
        Raw sampling rate (Hz).
    tmin, tmax : float
        Epoch window (s), both included.
    baseline : tuple | None
        Baseline interval (s), as in ``mne.Epochs``.
    resample_sfreq : float | None
        New sampling rate (Hz); ``None`` keeps ``sfreq``.
    crop : tuple of (float | None, float | None)
        Window kept after resampling (s).
    verbose : bool | str | None
        MNE verbosity.

    Returns
    -------
    operator : EpochOperator
    """
    import mne

    start = int(round(tmin * sfreq))
    stop = int(round(tmax * sfreq))
    n_in = stop - start + 1
    if n_in < 2:
        raise ValueError(f"The epoch window tmin={tmin}, tmax={tmax} holds {n_in} sample(s) at {sfreq} Hz.")
    info = mne.create_info(["impulse"], float(sfreq), "eeg")
    impulses = np.eye(n_in)[:, None, :]
    epochs = mne.EpochsArray(impulses, info, tmin=start / sfreq, baseline=baseline, proj=False, verbose=False)
    if resample_sfreq is not None and resample_sfreq != sfreq:
        epochs.resample(resample_sfreq, verbose=verbose)
    if crop != (None, None):
        epochs.crop(tmin=crop[0], tmax=crop[1], verbose=verbose)
    matrix = np.ascontiguousarray(epochs.get_data(copy=False)[:, 0, :].T)
    params = {"sfreq": float(sfreq), "tmin": float(tmin), "tmax": float(tmax),
              "baseline": None if baseline is None else list(baseline),
              "resample_sfreq": None if resample_sfreq is None else float(resample_sfreq),
              "crop": list(crop), "mne": mne.__version__}
    return EpochOperator(matrix=matrix, start=start, n_in=n_in, times=epochs.times.copy(),
                         sfreq=float(epochs.info["sfreq"]), params=params)


def _blocks(onsets_sorted: np.ndarray, block_size: int, max_gap: int) -> Iterator[slice]:
    """Split sorted onsets into blocks of at most ``block_size`` with no gap above ``max_gap``."""
    n = len(onsets_sorted)
    i = 0
    gaps = np.flatnonzero(np.diff(onsets_sorted) > max_gap) + 1
    cuts = set(gaps.tolist())
    while i < n:
        j = min(i + block_size, n)
        for k in range(i + 1, j):
            if k in cuts:
                j = k
                break
        yield slice(i, j)
        i = j


def iter_epochs(data: np.ndarray, onsets: np.ndarray, operator: EpochOperator, *,
                picks: Sequence[int] | np.ndarray | None = None, block_size: int = 64,
                dtype: np.dtype | type = np.float32) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Cut, baseline, resample and crop epochs from a continuous array, block by block.

    Parameters
    ----------
    data : ndarray, shape (n_channels, n_samples)
        Continuous data; a read-only ``numpy.memmap`` works and is only read where epochs are.
    onsets : ndarray of int, shape (n_epochs,)
        Event onset samples (any order).
    operator : EpochOperator
        From :func:`epoch_operator`.
    picks : array of int | None
        Channel indices, in output order; ``None`` takes all rows.
    block_size : int
        Epochs per matrix product.
    dtype : numpy dtype
        Computation and output dtype. ``float32`` (default) is twice as fast; each block is
        centred per channel in float64 first, so the rounding is relative to the signal, not to
        the recording's offset (which is added back when no baseline removes it).

    Yields
    ------
    positions : ndarray of int
        Positions in ``onsets`` of the epochs of this block.
    block : ndarray, shape (len(positions), n_picks, n_out)
        Their preprocessed samples.
    """
    onsets = np.asarray(onsets, dtype=np.int64)
    picks = np.arange(data.shape[0]) if picks is None else np.asarray(picks, dtype=np.int64)
    n_samples = data.shape[1]
    first = onsets + operator.start
    last = first + operator.n_in
    bad = (first < 0) | (last > n_samples)
    if bad.any():
        raise ValueError(f"{int(bad.sum())} epoch(s) extend beyond the data (first at onset sample "
                         f"{int(onsets[bad][0])}, data have {n_samples} samples); drop them first.")
    order = np.argsort(onsets, kind="stable")
    sorted_onsets = onsets[order]
    mt = np.ascontiguousarray(operator.matrix.T.astype(dtype))
    dc = operator.matrix.sum(axis=1)  # the image of a constant signal
    keeps_dc = bool(np.abs(dc).max() > 1e-9)
    for blk in _blocks(sorted_onsets, block_size, max_gap=4 * operator.n_in):
        pos = order[blk]
        o = sorted_onsets[blk]
        a = int(o[0]) + operator.start
        b = int(o[-1]) + operator.start + operator.n_in
        seg = np.asarray(data[picks, a:b], dtype=np.float64)
        # Work on the signal minus a constant per channel, so that float32 rounding is relative to
        # the signal rather than to the electrode offset; the constant's image (zero when a
        # baseline is subtracted) is added back below.
        offset = seg.mean(axis=1)
        seg -= offset[:, None]
        seg = seg.astype(dtype, copy=False)
        # (epochs, channels, samples): each epoch's window, gathered from overlapping views
        windows = np.lib.stride_tricks.sliding_window_view(seg, operator.n_in, axis=1).transpose(1, 0, 2)[o - o[0]]
        k = len(o)
        out = (windows.reshape(k * len(picks), operator.n_in) @ mt).reshape(k, len(picks), operator.n_out)
        if keeps_dc:
            out += (offset[:, None] * dc[None, :]).astype(dtype)[None, :, :]
        yield pos, out


def epochs_from_array(data: np.ndarray, onsets: np.ndarray, operator: EpochOperator, *,
                      picks: Sequence[int] | np.ndarray | None = None, block_size: int = 64,
                      dtype: np.dtype | type = np.float32, out: np.ndarray | None = None,
                      progress_bar: bool = False) -> np.ndarray:
    """All epochs of :func:`iter_epochs` in one array, in the order of ``onsets``.

    Parameters
    ----------
    data, onsets, operator, picks, block_size, dtype
        See :func:`iter_epochs`.
    out : ndarray, shape (n_epochs, n_picks, n_out) | None
        Where to write (e.g. a view into a larger array); allocated when ``None``.
    progress_bar : bool
        Show a progress bar.

    Returns
    -------
    epochs : ndarray, shape (n_epochs, n_picks, n_out)
    """
    n_picks = data.shape[0] if picks is None else len(picks)
    if out is None:
        out = np.empty((len(onsets), n_picks, operator.n_out), dtype=dtype)
    bar = progress(total=len(onsets), enabled=progress_bar, desc="epoching", unit="epoch")
    with bar:
        for pos, block in iter_epochs(data, onsets, operator, picks=picks, block_size=block_size, dtype=dtype):
            out[pos] = block
            bar.update(len(pos))
    return out


# --------------------------------------------------------------------------------------------------
# MVNN
# --------------------------------------------------------------------------------------------------
def shrunk_covariance_sum(X: np.ndarray, shrinkage: str | float | None = "auto") -> np.ndarray:
    """Sum of the shrunk covariance estimates of a batch of small data sets.

    Each ``X[b]`` (``n_samples x n_features``) gets the estimate
    ``sklearn.discriminant_analysis._cov(X[b], shrinkage)`` computes, without a Python loop:

    * ``"auto"``: the features are standardised, the Ledoit-Wolf shrinkage intensity
      ``s = min(b2, d2) / d2`` is computed on the standardised data (Ledoit & Wolf 2004:
      ``d2 = ||S - mu I||^2 / p`` and ``b2 = (sum_k ||z_k||^4 / n - ||S||^2) / (n p)``, with ``S``
      the biased sample covariance of the standardised data ``z`` and ``mu = tr(S) / p``), the
      standardised estimate ``(1 - s) S + s mu I`` is formed and scaled back to the original units;
    * a float ``s`` in [0, 1]: ``(1 - s) C + s tr(C)/p I`` on the raw covariance ``C``;
    * ``None``: the biased sample covariance.

    Parameters
    ----------
    X : ndarray, shape (n_batch, n_samples, n_features)
        The data sets (any strides; a transposed view costs nothing).
    shrinkage : "auto" | float | None
        The estimator.

    Returns
    -------
    total : ndarray, shape (n_features, n_features), float64
        The sum over the batch of the estimates. Float32 input is computed in float32 (each
        estimate) and summed in float64; other input in float64.
    """
    X = np.asarray(X)
    if X.ndim != 3:
        raise ValueError(f"X must be (n_batch, n_samples, n_features), got shape {X.shape}.")
    return _shrunk_sum(np.swapaxes(X, 1, 2), shrinkage)


def _shrunk_sum(X: np.ndarray, shrinkage: str | float | None) -> np.ndarray:
    """:func:`shrunk_covariance_sum` on data laid out ``(n_batch, n_features, n_samples)``.

    This is the layout of EEG epochs (channels x times), so ``mode="epochs"`` needs no copy.
    When ``n >= p`` the covariances come from one batched product and everything else
    (variances, standardised covariances, their norms) is derived from them; when ``n < p``
    (e.g. 2 repetitions x 63 channels) the ``n x n`` Gram matrices give the norms instead.
    """
    work = np.float32 if X.dtype == np.float32 else np.float64
    B, p, n = X.shape
    if B == 0:
        return np.zeros((p, p))
    Xc = X.astype(work, copy=True)
    Xc -= Xc.mean(axis=2, keepdims=True)
    big = n >= p
    if big:
        C = np.matmul(Xc, Xc.transpose(0, 2, 1))
        C /= n
        var = np.diagonal(C, axis1=1, axis2=2).astype(np.float64)
    else:
        C = None
        var = (Xc.astype(np.float64) ** 2).mean(axis=2) if work == np.float64 else (Xc**2).mean(axis=2)

    def weighted_sum(weights: np.ndarray) -> np.ndarray:
        """sum_b w_b C_b in float64."""
        if big:
            return np.tensordot(weights, C.astype(np.float64, copy=False), axes=(0, 0))
        Y = Xc * np.sqrt(weights).astype(work)[:, None, None]
        flat = Y.transpose(1, 0, 2).reshape(p, B * n)
        return (flat @ flat.T).astype(np.float64) / n

    if shrinkage is None:
        return weighted_sum(np.ones(B))
    if not isinstance(shrinkage, str):
        s = float(shrinkage)
        if not 0.0 <= s <= 1.0:
            raise ValueError(f"shrinkage must be 'auto', None or a number in [0, 1], got {shrinkage!r}.")
        mu = np.asarray(var, dtype=np.float64).sum(axis=1) / p
        return (1 - s) * weighted_sum(np.ones(B)) + s * mu.sum() * np.eye(p)
    check_option("shrinkage", shrinkage, ("auto",))
    var = np.asarray(var, dtype=np.float64)
    scale = np.sqrt(var)
    scale[scale < 10 * np.finfo(work).eps] = 1.0  # as sklearn's StandardScaler: constant features keep 1
    inv = (1.0 / scale).astype(work)
    if big:
        Sz = C * inv[:, :, None] * inv[:, None, :]
        fro2 = (Sz.astype(np.float64) ** 2).sum(axis=(1, 2))
        row_sq = np.matmul((inv**2)[:, None, :], Xc**2)[:, 0, :]  # ||z_k||^2 for each sample k
    else:
        Z = Xc * inv[:, :, None]
        G = np.matmul(Z.transpose(0, 2, 1), Z)
        fro2 = (G.astype(np.float64) ** 2).sum(axis=(1, 2)) / n**2
        row_sq = (Z**2).sum(axis=1)
    row_sq = row_sq.astype(np.float64)
    mu = row_sq.sum(axis=1) / (n * p)  # tr(S) / p
    b2 = ((row_sq**2).sum(axis=1) / n - fro2) / (p * n)
    d2 = (fro2 - p * mu**2) / p
    b2 = np.minimum(b2, d2)
    with np.errstate(divide="ignore", invalid="ignore"):
        shrink = np.where(b2 > 0, b2 / np.where(d2 > 0, d2, 1.0), 0.0)
    if p == 1:
        shrink[:] = 0.0
    # back in original units: D ((1 - s) S_z + s mu I) D = (1 - s) C + s mu D^2
    total = weighted_sum(1.0 - shrink)
    total[np.diag_indices(p)] += ((shrink * mu)[:, None] * scale**2).sum(axis=0)
    return total


def _items(X: np.ndarray, mode: str) -> np.ndarray:
    """Rearrange (n_cond, n_rep, n_chans, n_times) into the data sets of ``mode``, (batch, chans, samples)."""
    C, R, P, T = X.shape
    if mode == "time":  # one data set per (condition, time point): channels x repetitions
        return X.transpose(0, 3, 2, 1).reshape(C * T, P, R)
    return X.reshape(C * R, P, T)  # per (condition, repetition): channels x times (a view)


def _check_4d(X: np.ndarray, name: str = "X") -> None:
    if X.ndim != 4:
        raise ValueError(f"{name} must have shape (n_conditions, n_repetitions, n_channels, n_times), "
                         f"got {X.shape}.")


def inverse_sqrt(cov: np.ndarray) -> np.ndarray:
    """Inverse square root of a symmetric positive-definite matrix (by ``scipy.linalg.eigh``).

    Same result as ``scipy.linalg.fractional_matrix_power(cov, -0.5)`` for such matrices, but
    exactly symmetric and real.
    """
    from scipy import linalg

    cov = np.asarray(cov, dtype=np.float64)
    w, V = linalg.eigh((cov + cov.T) / 2)
    if w.min() <= 0:
        raise ValueError(f"The covariance is not positive definite (smallest eigenvalue {w.min():.3g}); "
                         f"its inverse square root does not exist. Use shrinkage='auto' or a shrinkage > 0, "
                         f"or remove linearly dependent channels (e.g. after an average reference).")
    return (V / np.sqrt(w)) @ V.T


class MVNN:
    """Multivariate noise normalisation (whitening), fitted on training data only.

    Parameters
    ----------
    mode : "epochs" | "time"
        ``"epochs"`` (the THINGS-EEG2 default): a covariance per repetition of each condition,
        estimated over its time points; ``"time"``: a covariance per time point of each
        condition, estimated over its repetitions (needs at least 2 repetitions). Either way the
        estimates are averaged over all repetitions/time points and conditions.
    shrinkage : "auto" | float | None
        Covariance estimator (see :func:`shrunk_covariance_sum`); ``"auto"`` is Ledoit-Wolf, as the
        reference scripts.
    block_size : int
        Conditions per batched computation (bounds the memory of :meth:`fit`/:meth:`transform`).

    Attributes
    ----------
    covariance_ : ndarray, shape (n_channels, n_channels)
        The averaged noise covariance.
    whitener_ : ndarray, shape (n_channels, n_channels)
        Its inverse square root.
    n_estimates_ : int
        How many covariance estimates were averaged.

    Notes
    -----
    Data are ``(n_conditions, n_repetitions, n_channels, n_times)``, as THINGS-EEG2 stores them.
    With the same number of repetitions in every condition, the average over repetitions (or
    time points) and then over conditions equals the plain average over all estimates, which is
    what :meth:`partial_fit` accumulates.
    """

    def __init__(self, mode: str = "epochs", shrinkage: str | float | None = "auto", block_size: int = 64) -> None:
        check_option("mode", mode, MVNN_MODES)
        self.mode = mode
        self.shrinkage = shrinkage
        self.block_size = int(block_size)
        self._reset()

    def _reset(self) -> None:
        self._sum: np.ndarray | None = None
        self.n_estimates_ = 0
        self.covariance_: np.ndarray | None = None
        self.whitener_: np.ndarray | None = None

    def partial_fit(self, X: np.ndarray) -> MVNN:
        """Add the estimates of some conditions (all repetitions of each) to the running average."""
        X = np.asarray(X)
        _check_4d(X)
        if self.mode == "time" and X.shape[1] < 2:
            raise ValueError(f"mode='time' estimates a covariance over repetitions and needs at least 2; "
                             f"the data have {X.shape[1]}. Use mode='epochs'.")
        if self._sum is not None and self._sum.shape[0] != X.shape[2]:
            raise ValueError(f"X has {X.shape[2]} channels but the previous blocks had {self._sum.shape[0]}.")
        for start in range(0, X.shape[0], self.block_size):
            items = _items(X[start:start + self.block_size], self.mode)
            total = _shrunk_sum(items, self.shrinkage)
            self._sum = total if self._sum is None else self._sum + total
            self.n_estimates_ += len(items)
        self.covariance_ = self._sum / self.n_estimates_
        self.whitener_ = None
        return self

    def fit(self, X: np.ndarray, *, progress_bar: bool = False) -> MVNN:
        """Estimate the noise covariance from training data ``(n_cond, n_rep, n_chans, n_times)``.

        Parameters
        ----------
        X : ndarray
            Training data of one session.
        progress_bar : bool
            Show a progress bar over blocks of conditions.
        """
        self._reset()
        X = np.asarray(X) if not isinstance(X, np.ndarray) else X
        _check_4d(X)
        starts = range(0, X.shape[0], self.block_size)
        for start in progress(starts, enabled=progress_bar, desc="MVNN fit", unit="block"):
            self.partial_fit(X[start:start + self.block_size])
        self._finish()
        return self

    def _finish(self) -> None:
        if self.covariance_ is None:
            raise ValueError("MVNN has not seen any data; call fit() first.")
        self.whitener_ = inverse_sqrt(self.covariance_)

    @classmethod
    def from_covariance(cls, covariance: np.ndarray, **kwargs: Any) -> MVNN:
        """An MVNN whose whitener is the inverse square root of ``covariance``."""
        obj = cls(**kwargs)
        obj.covariance_ = np.asarray(covariance, dtype=np.float64)
        obj.n_estimates_ = 0
        obj._finish()
        return obj

    def transform(self, X: np.ndarray, *, out: np.ndarray | None = None) -> np.ndarray:
        """Whiten data: every time sample's channel vector is multiplied by the whitener.

        Parameters
        ----------
        X : ndarray, shape (..., n_channels, n_times)
            Data of the session the MVNN was fitted on (training or test).
        out : ndarray | None
            Where to write; pass ``X`` itself to whiten in place. A new array by default.

        Returns
        -------
        whitened : ndarray, same shape and dtype as ``X``
        """
        if self.whitener_ is None:
            self._finish()
        W = self.whitener_
        if X.shape[-2] != W.shape[0]:
            raise ValueError(f"X has {X.shape[-2]} channels on axis -2 but the MVNN was fitted on {W.shape[0]}.")
        dtype = X.dtype if np.issubdtype(X.dtype, np.floating) else np.float64
        if out is None:
            out = np.empty(X.shape, dtype=dtype)
        Wd = W.astype(dtype)
        flat_in = X.reshape(-1, *X.shape[-2:])
        flat_out = out.reshape(-1, *X.shape[-2:])
        step = max(1, self.block_size * 4)
        for start in range(0, len(flat_in), step):
            flat_out[start:start + step] = Wd @ flat_in[start:start + step]
        return out

    def fit_transform(self, X: np.ndarray) -> np.ndarray:
        """Fit on ``X`` and return it whitened."""
        return self.fit(X).transform(X)

    def __repr__(self) -> str:
        state = "fitted" if self.covariance_ is not None else "not fitted"
        return f"<MVNN mode={self.mode!r} shrinkage={self.shrinkage!r} | {state}>"


def mvnn_covariance(X: np.ndarray, mode: str = "epochs", shrinkage: str | float | None = "auto",
                    block_size: int = 64) -> np.ndarray:
    """The MVNN noise covariance of ``X`` ``(n_cond, n_rep, n_chans, n_times)`` (see :class:`MVNN`)."""
    return MVNN(mode, shrinkage, block_size).fit(X).covariance_


def mvnn(train: np.ndarray, *others: np.ndarray, mode: str = "epochs", shrinkage: str | float | None = "auto",
         fit_on: str = "train", block_size: int = 64) -> tuple[np.ndarray, ...]:
    """Whiten one session: fit MVNN on its training data, apply it to training and other data.

    Parameters
    ----------
    train : ndarray, shape (n_conditions, n_repetitions, n_channels, n_times)
        Training data of the session.
    *others : ndarray
        Further data of the same session (e.g. test data), any leading shape.
    mode, shrinkage, block_size
        See :class:`MVNN`.
    fit_on : "train" | "train+test"
        ``"train"`` (default) estimates the covariance from training data only.
        ``"train+test"`` averages it with the covariance of ``others[0]`` (4-D), as the THINGS-EEG2
        and NICE scripts do; this lets test-set noise statistics into the training data and is
        only meant to reproduce the published files.

    Returns
    -------
    whitened : tuple of ndarray
        ``train`` and then each of ``others``, whitened.
    """
    check_option("fit_on", fit_on, ("train", "train+test"))
    model = MVNN(mode, shrinkage, block_size).fit(train)
    if fit_on == "train+test":
        if not others:
            raise ValueError("fit_on='train+test' needs the test data as the second argument.")
        cov = (model.covariance_ + mvnn_covariance(others[0], mode, shrinkage, block_size)) / 2
        model = MVNN.from_covariance(cov, mode=mode, shrinkage=shrinkage, block_size=block_size)
    logger.info(f"MVNN ({mode}, shrinkage={shrinkage}) fitted on {fit_on} data of shape {train.shape}")
    return tuple(model.transform(x) for x in (train, *others))
