"""Epoching of continuous EEG/MEG with MNE: filter, find events, epoch, baseline, resample, crop.

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

Multivariate noise normalisation of the epochs is in :mod:`neurodecode.preprocessing.mvnn`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from neurodecode.utils import progress

if TYPE_CHECKING:  # pragma: no cover
    import mne

__all__ = [
    "EpochOperator",
    "band_pass",
    "epoch_operator",
    "epoch_with_mne",
    "epochs_from_array",
    "find_stim_events",
    "iter_epochs",
    "select_repetitions",
]


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
