"""Stream MNE epochs into a trial store, chunk by chunk (shared by the epochs, THINGS-MEG, CSV and
NIfTI readers).

:func:`write_epochs_store` loads ``chunk_size`` epochs at a time (``epochs[idx].load_data()``), so a
file far larger than memory is read piece by piece: channel selection, optional band-pass filter,
optional resampling, optional baseline correction and cropping are done with MNE on each chunk
(:class:`EpochsSpec`); an optional per-channel scaling (:class:`ChannelScaler`, z-score or
robust) is fitted on training trials only.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from neurodecode.io.store import StimulusTable, StoreWriter
from neurodecode.readers.common import mne_verbose, provenance_step, reading
from neurodecode.readers.options import SCALINGS, EpochOptions
from neurodecode.utils import check_option
from neurodecode.utils import progress as progress_bar

if TYPE_CHECKING:  # pragma: no cover
    import mne as _mne

__all__ = ["ChannelScaler", "EpochsSpec", "default_picks", "process_chunk", "write_epochs_store",
           "occurrence_index"]


# ==================================================================================================
# per-channel scaling, fitted on training trials
# ==================================================================================================
@dataclass
class ChannelScaler:
    """Per-channel affine scaling ``(x - center) / scale``, optionally clamped to ``[-clamp, clamp]``.

    ``method`` is ``"zscore"`` (mean and standard deviation) or ``"robust"`` (median and
    inter-quartile range, as scikit-learn's ``RobustScaler``), computed over trials and time.
    """

    method: str
    center: np.ndarray
    scale: np.ndarray
    clamp: float | None = None
    n_fit_trials: int = 0

    @classmethod
    def fit(cls, data: np.ndarray, method: str, clamp: float | None = None) -> ChannelScaler:
        """Fit on ``data`` of shape ``(n_trials, n_chans, n_times)``."""
        check_option("scaling", method, ("zscore", "robust"))
        n_ch = data.shape[1]
        center, scale = np.zeros(n_ch), np.ones(n_ch)
        for c in range(n_ch):  # one channel at a time: no full-size float64 copy of the data
            x = np.asarray(data[:, c, :], dtype=np.float64).ravel()
            if method == "zscore":
                center[c], scale[c] = x.mean(), x.std()
            else:
                q25, q50, q75 = np.percentile(x, [25, 50, 75])
                center[c], scale[c] = q50, q75 - q25
        scale[~(scale > 0)] = 1.0  # flat channels are left unscaled rather than divided by zero
        return cls(method, center, scale, clamp, int(data.shape[0]))

    def transform(self, x: np.ndarray) -> np.ndarray:
        """Scale ``x`` of shape ``(n, n_chans, n_times)``."""
        y = (x - self.center[None, :, None]) / self.scale[None, :, None]
        if self.clamp is not None:
            np.clip(y, -self.clamp, self.clamp, out=y)
        return y.astype(np.float32, copy=False)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly description (stored as a root attribute of the store)."""
        return {"method": self.method, "center": self.center.tolist(), "scale": self.scale.tolist(),
                "clamp": self.clamp, "n_fit_trials": self.n_fit_trials}


# ==================================================================================================
# chunked MNE processing
# ==================================================================================================
@dataclass
class EpochsSpec:
    """What to do to each chunk of epochs, in this order: pick, filter, resample, baseline, crop.

    ``tmax`` is exclusive (``[tmin, tmax)``): 0 to 1 s at 200 Hz gives exactly 200 samples.
    ``filter_method`` and ``resample_method`` are passed to ``mne.Epochs.filter`` (``"fir"``, MNE's
    default, or ``"iir"``) and ``mne.Epochs.resample`` (``"fft"``, MNE's default, or
    ``"polyphase"``); MNE runs FIR filters and FFT resampling one channel at a time, which is slow
    on many-channel data (271 MEG channels), whereas ``"iir"`` and ``"polyphase"`` are much faster.
    """

    picks: list[str]
    l_freq: float | None = None
    h_freq: float | None = None
    sfreq: float | None = None
    baseline: tuple[float | None, float | None] | None = None
    tmin: float | None = None
    tmax: float | None = None
    filter_method: str = "fir"
    resample_method: str = "fft"

    @classmethod
    def from_options(cls, picks: Sequence[str], options: EpochOptions) -> EpochsSpec:
        """The spec of ``options`` (:class:`~neurodecode.readers.options.EpochOptions`) on ``picks``."""
        return cls(list(picks), l_freq=options.l_freq, h_freq=options.h_freq, sfreq=options.sfreq,
                   baseline=options.baseline, tmin=options.tmin, tmax=options.tmax,
                   filter_method=options.filter_method, resample_method=options.resample_method)

    def to_dict(self) -> dict[str, Any]:
        """Provenance parameters."""
        return {"n_picks": len(self.picks), "l_freq": self.l_freq, "h_freq": self.h_freq, "sfreq": self.sfreq,
                "baseline": None if self.baseline is None else list(self.baseline),
                "tmin": self.tmin, "tmax": self.tmax, "tmax_inclusive": False,
                "filter_method": self.filter_method, "resample_method": self.resample_method}


def default_picks(epochs: _mne.BaseEpochs, modality: str | None) -> tuple[list[str], str]:
    """Channel names of the brain signals to keep, and the modality (``"meg"`` or ``"eeg"``).

    MEG channels when there are any (or when ``modality="meg"``), else EEG channels. Channels
    marked bad are kept so that every subject's store has the same channels.
    """
    import mne

    types = set(epochs.get_channel_types())
    has_meg = bool(types & {"mag", "grad"})
    if modality is None:
        modality = "meg" if has_meg else "eeg"
    check_option("modality", modality, ("eeg", "meg"))
    kw = {"meg": True, "eeg": False} if modality == "meg" else {"meg": False, "eeg": True}
    idx = mne.pick_types(epochs.info, **kw, ref_meg=False, exclude=[])
    if len(idx) == 0:
        raise ValueError(f"The epochs have no {modality.upper()} channels (channel types: {sorted(types)}). "
                         "Pass modality= or picks= to choose the channels.")
    return [epochs.ch_names[i] for i in idx], modality


EPOCHS_EXPECTED = "an MNE epochs file (-epo.fif, written by mne.Epochs.save)"


def process_chunk(epochs: _mne.BaseEpochs, idx: np.ndarray, spec: EpochsSpec, *,
                  verbose: bool | str | None = None) -> tuple[np.ndarray, _mne.Info, float]:
    """Load epochs ``idx`` and apply ``spec`` with MNE; returns ``(data float32, info, tmin)``."""
    v = mne_verbose(verbose)
    ep = epochs[np.asarray(idx, dtype=np.int64)]
    if not ep.preload:
        with reading(epochs.filename or "the epochs file", EPOCHS_EXPECTED):
            ep.load_data()
    ep.pick(spec.picks, verbose=v)
    if spec.l_freq is not None or spec.h_freq is not None:
        ep.filter(spec.l_freq, spec.h_freq, method=spec.filter_method, verbose=v)
    if spec.sfreq is not None and abs(spec.sfreq - ep.info["sfreq"]) > 1e-9:
        ep.resample(spec.sfreq, method=spec.resample_method, verbose=v)
    if spec.baseline is not None:
        ep.apply_baseline(spec.baseline, verbose=v)
    if spec.tmin is not None or spec.tmax is not None:
        ep.crop(spec.tmin, spec.tmax, include_tmax=spec.tmax is None, verbose=v)
    data = ep.get_data(copy=False).astype(np.float32)
    return data, ep.info, float(ep.times[0])


def _chunks(n: int, size: int) -> Iterator[tuple[int, int]]:
    for start in range(0, n, size):
        yield start, min(n, start + size)


def write_epochs_store(
    path: Path,
    epochs: _mne.BaseEpochs,
    keep: np.ndarray,
    *,
    stimulus_id: Sequence[str],
    split: Sequence[str],
    repetition: Sequence[int],
    session: Sequence[int],
    stimuli: StimulusTable,
    subject: str,
    modality: str,
    spec: EpochsSpec,
    scaling: str = "none",
    clamp: float | None = None,
    fit_trials: int | None = 1000,
    seed: int = 0,
    chunk_size: int = 256,
    extra: Mapping[str, Sequence[Any]] | None = None,
    provenance: Sequence[Mapping[str, Any]] = (),
    show_progress: bool = True,
    verbose: bool | str | None = None,
) -> dict[str, Any]:
    """Stream epochs ``keep`` (indices into ``epochs``, in store order) through ``spec`` into a store.

    Memory holds one chunk of ``chunk_size`` epochs (plus, for scaling, the at most ``fit_trials``
    training trials used to fit it). Returns a summary (shape, sfreq, scaler).
    """
    check_option("scaling", scaling, SCALINGS)
    keep = np.asarray(keep, dtype=np.int64)
    n = len(keep)
    if n == 0:
        raise ValueError(f"{path}: no trial is left to write (check the stimulus/split options).")
    split_arr = np.asarray(split, dtype=object)
    probe, info, tmin = process_chunk(epochs, keep[:1], spec, verbose=verbose)
    trial_shape = probe.shape[1:]

    scaler: ChannelScaler | None = None
    if scaling != "none":
        train_pos = np.flatnonzero(split_arr == "train")
        if len(train_pos) == 0:
            raise ValueError(f"{path}: scaling={scaling!r} is fitted on training trials, but there are none.")
        if fit_trials is not None and len(train_pos) > fit_trials:
            rng = np.random.default_rng(seed)
            train_pos = np.sort(rng.choice(train_pos, size=int(fit_trials), replace=False))
        fit = np.empty((len(train_pos), *trial_shape), dtype=np.float32)
        for a, b in _chunks(len(train_pos), chunk_size):
            fit[a:b] = process_chunk(epochs, keep[train_pos[a:b]], spec, verbose=verbose)[0]
        scaler = ChannelScaler.fit(fit, scaling, clamp)
        del fit
    steps = [*provenance, provenance_step("mne_epochs", **spec.to_dict(), chunk_size=chunk_size)]
    if scaler is not None:
        steps.append(provenance_step("scale_per_channel", method=scaling, clamp=clamp, fit_on="train",
                                     fit_trials=scaler.n_fit_trials, seed=seed))
    attrs = {"scaler": scaler.to_dict()} if scaler is not None else None
    with StoreWriter(path, n, trial_shape, modality=modality, stimuli=stimuli, subject=subject,
                     sfreq=float(info["sfreq"]), tmin=tmin, info=info, provenance=steps, attrs=attrs) as w:
        bar = progress_bar(total=n, enabled=show_progress, desc=f"sub-{subject}", unit="trial")
        for a, b in _chunks(n, chunk_size):
            data, _, _ = process_chunk(epochs, keep[a:b], spec, verbose=verbose)
            if scaler is not None:
                data = scaler.transform(data)
            w.write(a, data)
            bar.update(b - a)
        bar.close()
        w.finish(stimulus_id=stimulus_id, split=split, repetition=np.asarray(repetition, dtype=np.int32),
                 session=np.asarray(session, dtype=np.int32), extra=extra)
    return {"n_trials": n, "n_chans": int(trial_shape[0]), "n_times": int(trial_shape[1]),
            "sfreq": float(info["sfreq"]), "tmin": tmin,
            "n_test_trials": int((split_arr == "test").sum()),
            "scaler": None if scaler is None else {"method": scaling, "n_fit_trials": scaler.n_fit_trials}}


def occurrence_index(ids: Sequence[str]) -> np.ndarray:
    """0-based count of earlier trials with the same id (the repetition number of each trial)."""
    seen: dict[str, int] = {}
    out = np.empty(len(ids), dtype=np.int32)
    for i, s in enumerate(ids):
        out[i] = seen.get(s, 0)
        seen[s] = out[i] + 1
    return out
