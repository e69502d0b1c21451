"""THINGS-EEG2 raw sessions (``ROOT/Raw_data/sub-XX/ses-0Y/raw_eeg_{training,test}.npy``) prepared as
the community does (NICE's preprocessing).

Events from the stimulus channel, target trials (99999) dropped, the 63 EEG channels picked in
:data:`~neurodecode.readers.things_eeg2.CHANNELS_63` order, epochs -0.2 to 1.0 s with baseline
(None, 0), resampled to 250 Hz, cropped to 0 to 0.996 s, 2 (training) / 20 (test) repetitions per
condition and session chosen with a seed, then MVNN per session, fitted on that session's
training data (optionally band-passed first). The epoching is streamed
(:func:`neurodecode.preprocessing.epoching.epochs_from_array`) from a memory map of the raw file.
The layouts, images and the driver are in :mod:`neurodecode.readers.things_eeg2`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from neurodecode.io.channels import THINGS_EEG2_63 as CHANNELS_63
from neurodecode.io.safeio import load_pickled_dict
from neurodecode.io.store import StimulusTable, StoreWriter
from neurodecode.readers.common import provenance_step, store_path
from neurodecode.readers.options import ReaderOptions, float_or_none, option, parse_baseline
from neurodecode.utils import logger, progress, to_jsonable

if TYPE_CHECKING:  # pragma: no cover
    import mne

    from neurodecode.preprocessing.epoching import EpochOperator
    from neurodecode.preprocessing.mvnn import MVNN

__all__ = ["DEFAULT_SEED", "TARGET_CODE", "RawOptions", "RawSession", "eeg_info", "parse_shrinkage",
           "preprocess_raw_session", "prepare_raw_subject"]

DEFAULT_SEED = 20200220  # the seed of the THINGS-EEG2 and NICE preprocessing scripts
TARGET_CODE = 99999


def parse_shrinkage(text: str | float | None) -> str | float | None:
    """``"auto"`` -> ``"auto"``, ``"none"`` -> ``None``, else a float (the MVNN covariance shrinkage)."""
    if text is None or isinstance(text, float | int):
        return text
    t = str(text).strip().lower()
    return None if t in ("none", "") else "auto" if t == "auto" else float(t)


@dataclass
class RawOptions(ReaderOptions):
    """How raw THINGS-EEG2 sessions are preprocessed (defaults: the community's NICE pipeline).

    Parameters
    ----------
    l_freq, h_freq : float | None
        Band-pass edges (Hz) applied to the continuous data before epoching; ``None`` = no filter.
    tmin, tmax : float
        Epoch window around image onset (s).
    baseline : tuple of (float | None, float | None) | None
        Baseline interval (s) subtracted from each epoch.
    sfreq : float | None
        Resampling rate (Hz); ``None`` keeps the raw rate.
    crop_tmin, crop_tmax : float | None
        Window kept after resampling (s).
    train_reps, test_reps : int
        Repetitions kept per condition and session.
    seed : int | None
        Seed of the repetition choice (``None``: the first ones in presentation order).
    mvnn_mode : "epochs" | "time" | "none"
        MVNN covariance per repetition over time, per time point over repetitions, or no MVNN.
    mvnn_fit : "train" | "train+test"
        Fit MVNN on the session's training data (default) or, as the publishers did, on the mean
        of training and test covariances.
    shrinkage : "auto" | float | None
        MVNN covariance estimator.
    target_code : int
        Event code of target (catch) trials, which are dropped.
    stim_channel : str
        Name of the stimulus channel.
    block_size : int
        Epochs per matrix product when epoching.
    dtype : str
        Computation dtype of epoching and MVNN application (``"float32"`` or ``"float64"``).
    """

    GROUP: ClassVar[str] = "raw layout (--layout raw)"

    l_freq: float | None = option(None, parse=float_or_none, help="band-pass low edge in Hz")
    h_freq: float | None = option(None, parse=float_or_none, help="band-pass high edge in Hz")
    tmin: float = option(-0.2, help="epoch start in s")
    tmax: float = option(1.0, help="epoch end in s")
    baseline: tuple[float | None, float | None] | None = option((None, 0.0), parse=parse_baseline,
                                                                help="baseline window 'a,b' in s ('none': no "
                                                                     "baseline correction)")
    sfreq: float | None = option(250.0, parse=float_or_none, help="resample to this rate in Hz",
                                 none="keep the raw rate")
    crop_tmin: float | None = option(0.0, parse=float_or_none, help="keep from this time in s", none="start")
    crop_tmax: float | None = option(None, parse=float_or_none, help="keep up to this time in s", none="end")
    train_reps: int = option(2, help="repetitions kept per training image and session")
    test_reps: int = option(20, help="repetitions kept per test image and session")
    seed: int | None = option(DEFAULT_SEED, help="seed of the repetition choice (as the community scripts; 'none': "
                                                 "the first ones in presentation order)")
    mvnn_mode: str = option("epochs", choices=("epochs", "time", "none"),
                            help="MVNN covariance per repetition over time (epochs), per time point (time), or none")
    mvnn_fit: str = option("train", choices=("train", "train+test"),
                           help="fit MVNN on training data or, as the publishers did, training and test")
    shrinkage: str | float | None = option("auto", parse=parse_shrinkage,
                                           help="MVNN covariance shrinkage: 'auto' (Ledoit-Wolf), a number, or none")
    target_code: int = option(TARGET_CODE, help="event code of target (catch) trials, which are dropped")
    stim_channel: str = option("stim", help="name of the stimulus channel")
    block_size: int = option(64, help="epochs per block when epoching")
    dtype: str = option("float32", choices=("float32", "float64"),
                        help="computation dtype of epoching and MVNN application")

    def __post_init__(self) -> None:
        super().__post_init__()  # checks mvnn_mode, mvnn_fit and dtype
        if self.baseline is not None:
            self.baseline = parse_baseline(self.baseline)
        if self.tmax <= self.tmin:
            raise ValueError(f"tmax ({self.tmax}) must be after tmin ({self.tmin}).")
        if self.train_reps < 1 or self.test_reps < 1:
            raise ValueError(f"train_reps and test_reps must be at least 1, got {self.train_reps}, {self.test_reps}.")
        if self.mvnn_mode == "time" and self.train_reps < 2:
            raise ValueError("mvnn_mode='time' estimates covariances over repetitions: train_reps must be >= 2.")

    def operator(self, sfreq: float, verbose: bool | str | None = None) -> EpochOperator:
        """The epoching operator for raw data at ``sfreq``."""
        from neurodecode.preprocessing.epoching import epoch_operator

        return epoch_operator(sfreq, self.tmin, self.tmax, baseline=self.baseline, resample_sfreq=self.sfreq,
                              crop=(self.crop_tmin, self.crop_tmax), verbose=verbose)


def eeg_info(ch_names: Sequence[str], sfreq: float) -> mne.Info:
    """``mne.Info`` for EEG channels with positions from MNE's ``colin27_1005`` montage."""
    import mne

    info = mne.create_info(list(ch_names), float(sfreq), "eeg")
    montage = mne.channels.make_standard_montage("colin27_1005")
    info.set_montage(montage, match_case=False, on_missing="warn", verbose=False)
    return info


# --------------------------------------------------------------------------------------------------
# raw sessions
# --------------------------------------------------------------------------------------------------
@dataclass
class _PartPlan:
    """What will be epoched from one raw file."""

    path: str
    data: np.ndarray  # (n_channels, n_samples), usually a memory map
    sfreq: float
    picks: np.ndarray
    conditions: np.ndarray  # (n_cond,) 1-based codes
    onsets: np.ndarray  # (n_cond, n_reps) samples
    n_events: int
    n_targets: int
    n_outside: int

    @property
    def n_trials(self) -> int:
        return int(self.onsets.size)


def _plan_part(d: Mapping[str, Any], source: str, *, n_reps: int, n_images: int | None, split: str,
               options: RawOptions, verbose: bool | str | None = None) -> _PartPlan:
    from neurodecode.preprocessing.epoching import find_stim_events, select_repetitions

    for key in ("raw_eeg_data", "ch_names", "sfreq"):
        if key not in d:
            raise ValueError(f"{source}: raw file lacks key '{key}'; it has {sorted(map(str, d))}.")
    data = d["raw_eeg_data"]
    ch_names = [str(c) for c in np.asarray(d["ch_names"]).ravel().tolist()]
    if not isinstance(data, np.ndarray) or data.ndim != 2 or data.dtype.kind not in "fiu":
        raise ValueError(f"{source}: 'raw_eeg_data' must be a 2-D numeric array (channels x samples); found "
                         f"{type(data).__name__} {getattr(data, 'shape', '')}.")
    if data.shape[0] != len(ch_names):
        raise ValueError(f"{source}: 'raw_eeg_data' has {data.shape[0]} rows but 'ch_names' lists {len(ch_names)} "
                         f"channels (expected channels x samples, e.g. 64 x n).")
    sfreq = float(np.asarray(d["sfreq"]).item())
    if options.stim_channel not in ch_names:
        raise ValueError(f"{source}: no stimulus channel '{options.stim_channel}' in ch_names {ch_names[-5:]}...")
    missing = [c for c in CHANNELS_63 if c not in ch_names]
    if missing:
        raise ValueError(f"{source}: EEG channel(s) {missing} not in 'ch_names'; the raw layout has the 63 "
                         f"THINGS-EEG2 channels and '{options.stim_channel}'.")
    picks = np.array([ch_names.index(c) for c in CHANNELS_63])
    stim = np.asarray(data[ch_names.index(options.stim_channel)])
    events = find_stim_events(stim, sfreq, verbose=verbose)
    is_target = events[:, 2] == options.target_code
    events = events[~is_target]
    start = int(round(options.tmin * sfreq))
    stop = int(round(options.tmax * sfreq))
    inside = (events[:, 0] + start >= 0) & (events[:, 0] + stop < data.shape[1])
    if (~inside).any():
        logger.warning(f"{source}: {int((~inside).sum())} epoch(s) extend beyond the recording and are dropped "
                       f"(as mne.Epochs does).")
    events = events[inside]
    codes = events[:, 2]
    if len(codes) == 0:
        raise ValueError(f"{source}: no image events on the stimulus channel '{options.stim_channel}'.")
    if n_images is not None:
        bad = codes[(codes < 1) | (codes > n_images)]
        if len(bad):
            raise ValueError(f"{source}: event code(s) {np.unique(bad)[:5].tolist()} outside 1..{n_images}, the "
                             f"number of {split} images found; the images and the EEG do not match (each code "
                             f"is the 1-based position of an image in sorted-folder order).")
    try:
        conditions, index = select_repetitions(codes, n_reps, options.seed)
    except ValueError as err:
        raise ValueError(f"{source}: {err}") from None
    return _PartPlan(path=source, data=data, sfreq=sfreq, picks=picks, conditions=conditions,
                     onsets=events[index, 0], n_events=int(len(is_target)), n_targets=int(is_target.sum()),
                     n_outside=int((~inside).sum()))


@dataclass
class RawSession:
    """One preprocessed raw session.

    Attributes
    ----------
    train, test : ndarray, shape (n_conditions, n_repetitions, 63, n_times)
        Epoched (and whitened) data; ``test`` is ``None`` when no test file was given.
    train_conditions, test_conditions : ndarray
        1-based event codes of the rows.
    train_onsets, test_onsets : ndarray, shape (n_conditions, n_repetitions)
        Onset sample of each epoch in its raw file.
    times : ndarray
        Times of the samples (s).
    sfreq : float
        Sampling rate (Hz).
    mvnn : MVNN | None
        The fitted whitening.
    info : dict
        Counts (events, targets dropped...) and timings.
    """

    train: np.ndarray
    train_conditions: np.ndarray
    train_onsets: np.ndarray
    test: np.ndarray | None
    test_conditions: np.ndarray | None
    test_onsets: np.ndarray | None
    times: np.ndarray
    sfreq: float
    mvnn: MVNN | None
    info: dict = field(default_factory=dict)
    ch_names: tuple[str, ...] = CHANNELS_63


def _epoch_part(plan: _PartPlan, op: EpochOperator, options: RawOptions, *, progress_bar: bool,
                verbose: bool | str | None) -> np.ndarray:
    from neurodecode.preprocessing.epoching import band_pass, epochs_from_array

    data, picks = plan.data, plan.picks
    if options.l_freq is not None or options.h_freq is not None:
        data = band_pass(np.asarray(data[picks], dtype=np.float64), plan.sfreq, options.l_freq, options.h_freq,
                         copy=False, verbose=verbose)
        picks = None
    n_cond, n_reps = plan.onsets.shape
    out = np.empty((n_cond * n_reps, len(CHANNELS_63), op.n_out), dtype=options.dtype)
    epochs_from_array(data, plan.onsets.reshape(-1), op, picks=picks, block_size=options.block_size,
                      dtype=np.dtype(options.dtype), out=out, progress_bar=progress_bar)
    return out.reshape(n_cond, n_reps, len(CHANNELS_63), op.n_out)


def _whiten_session(epoched: dict[str, np.ndarray], options: RawOptions, *,
                    progress_bar: bool = False) -> MVNN | None:
    """Fit MVNN on the session's training epochs (and test, if asked); whiten every part in place."""
    from neurodecode.preprocessing.mvnn import MVNN, mvnn_covariance

    if options.mvnn_mode == "none":
        return None
    model = MVNN(options.mvnn_mode, options.shrinkage).fit(epoched["train"], progress_bar=progress_bar)
    if options.mvnn_fit == "train+test":
        if "test" not in epoched:
            raise ValueError("mvnn_fit='train+test' needs the test file of the session.")
        cov = (model.covariance_ + mvnn_covariance(epoched["test"], options.mvnn_mode, options.shrinkage)) / 2
        model = MVNN.from_covariance(cov, mode=options.mvnn_mode, shrinkage=options.shrinkage)
    for x in epoched.values():
        model.transform(x, out=x)
    return model


def preprocess_raw_session(train: Mapping[str, Any], test: Mapping[str, Any] | None = None, *,
                           options: RawOptions | None = None, n_train_images: int | None = None,
                           n_test_images: int | None = None, sources: tuple[str, str] = ("training", "test"),
                           progress_bar: bool = False, verbose: bool | str | None = None) -> RawSession:
    """Preprocess one raw THINGS-EEG2 session (training and test files) as the community does.

    Parameters
    ----------
    train, test : dict
        Raw dicts (``raw_eeg_data``, ``ch_names``, ``sfreq``), e.g. from
        :func:`neurodecode.io.safeio.load_pickled_dict` (memory-mapped arrays are fine).
    options : RawOptions | None
        Processing options (defaults: NICE's pipeline).
    n_train_images, n_test_images : int | None
        Number of images per split; event codes outside ``1..n`` are an error.
    sources : tuple of str
        Names of the two files for messages.
    progress_bar : bool
        Show progress bars.
    verbose : bool | str | None
        MNE verbosity.

    Returns
    -------
    session : RawSession
    """
    import time

    options = options or RawOptions()
    t0 = time.perf_counter()
    plans = {"train": _plan_part(train, sources[0], n_reps=options.train_reps, n_images=n_train_images,
                                 split="train", options=options, verbose=verbose)}
    if test is not None:
        plans["test"] = _plan_part(test, sources[1], n_reps=options.test_reps, n_images=n_test_images,
                                   split="test", options=options, verbose=verbose)
    if len({p.sfreq for p in plans.values()}) != 1:
        raise ValueError(f"{sources}: training and test files have different sampling rates "
                         f"{[p.sfreq for p in plans.values()]}.")
    op = options.operator(plans["train"].sfreq, verbose=verbose)
    epoched = {k: _epoch_part(p, op, options, progress_bar=progress_bar, verbose=verbose) for k, p in plans.items()}
    t1 = time.perf_counter()
    model = _whiten_session(epoched, options, progress_bar=progress_bar)
    t2 = time.perf_counter()
    info = {"epoching_s": t1 - t0, "mvnn_s": t2 - t1}
    for k, p in plans.items():
        info[k] = {"file": p.path, "n_events": p.n_events, "n_targets_dropped": p.n_targets,
                   "n_outside_dropped": p.n_outside, "n_conditions": int(len(p.conditions)),
                   "n_repetitions": int(p.onsets.shape[1])}
    tp = plans.get("test")
    return RawSession(train=epoched["train"], train_conditions=plans["train"].conditions,
                      train_onsets=plans["train"].onsets, test=epoched.get("test"),
                      test_conditions=None if tp is None else tp.conditions,
                      test_onsets=None if tp is None else tp.onsets, times=op.times, sfreq=op.sfreq,
                      mvnn=model, info=info)


def prepare_raw_subject(paths: Mapping[str, Mapping[str, Path]], out: Path, subject: str, stimuli: StimulusTable,
                        n_images: Mapping[str, int], options: RawOptions, *, progress_bar: bool = True,
                        verbose: bool | str | None = None) -> dict[str, Any]:
    """Preprocess every raw session of one subject and write its trial store.

    Parameters
    ----------
    paths : dict
        ``{session: {"train": path, "test": path}}`` of the raw files, sessions in order.
    out : Path
        The prepared folder (the store is ``out/sub-<subject>.h5``).
    subject : str
        Subject label.
    stimuli : StimulusTable
        The image table (training then test images in condition order).
    n_images : dict
        Number of images per split; event codes outside ``1..n`` are an error.
    options : RawOptions
        Processing options.
    progress_bar : bool
        Show progress bars.
    verbose : bool | str | None
        MNE verbosity.

    Returns
    -------
    summary : dict
        ``sfreq``, ``tmin``, ``n_times`` and ``ch_names`` of the store.
    """
    sessions = list(paths)
    # pass 1: events of every file (memory-mapped: only the stimulus rows are read)
    plans: dict[str, dict[str, _PartPlan]] = {}
    for ses in sessions:
        plans[ses] = {}
        for split, path in paths[ses].items():
            d = load_pickled_dict(path, mmap=True, what="THINGS-EEG2 raw file")
            plans[ses][split] = _plan_part(d, str(path), n_reps=options.train_reps if split == "train"
                                           else options.test_reps, n_images=n_images[split], split=split,
                                           options=options, verbose=verbose)
    sfreqs = {p.sfreq for ps in plans.values() for p in ps.values()}
    if len(sfreqs) != 1:
        raise ValueError(f"sub-{subject}: raw files have different sampling rates {sorted(sfreqs)}.")
    op = options.operator(sfreqs.pop(), verbose=verbose)
    # trial layout: all training trials (session by session), then all test trials
    ids = {s: stimuli.stimulus_id[stimuli.split == s] for s in ("train", "test")}
    offsets: dict[tuple[str, str], int] = {}
    fields: dict[str, list[np.ndarray]] = {k: [] for k in ("stimulus_id", "split", "repetition", "session",
                                                             "condition", "event_sample")}
    seen: dict[str, dict[int, int]] = {"train": {}, "test": {}}
    n_trials = 0
    for split in ("train", "test"):
        for ses in sessions:
            p = plans[ses][split]
            offsets[(ses, split)] = n_trials
            n_cond, n_rep = p.onsets.shape
            rep = np.empty((n_cond, n_rep), np.int32)
            for i, c in enumerate(p.conditions.tolist()):
                k = seen[split].get(c, 0)
                rep[i] = np.arange(k, k + n_rep)
                seen[split][c] = k + n_rep
            fields["stimulus_id"].append(np.repeat(ids[split][p.conditions - 1], n_rep))
            fields["split"].append(np.full(n_cond * n_rep, split, dtype=object))
            fields["repetition"].append(rep.reshape(-1))
            fields["session"].append(np.full(n_cond * n_rep, int(ses), np.int32))
            fields["condition"].append(np.repeat(p.conditions, n_rep).astype(np.int32))
            fields["event_sample"].append(p.onsets.reshape(-1).astype(np.int64))
            n_trials += n_cond * n_rep
    steps = [provenance_step(
        "things_eeg2.read_raw", files={ses: {s: str(p) for s, p in v.items()} for ses, v in paths.items()},
        events={ses: {s: {"n_events": p.n_events, "n_targets_dropped": p.n_targets,
                          "n_outside_dropped": p.n_outside, "n_conditions": int(len(p.conditions))}
                      for s, p in v.items()} for ses, v in plans.items()},
        target_code=options.target_code, stim_channel=options.stim_channel, channels=list(CHANNELS_63))]
    if options.l_freq is not None or options.h_freq is not None:
        steps.append(provenance_step("band_pass", l_freq=options.l_freq, h_freq=options.h_freq,
                                     function="mne.filter.filter_data (defaults)", applied_to="continuous data"))
    steps.append(provenance_step("epoch", tmin=options.tmin, tmax=options.tmax, baseline=options.baseline,
                                 resample_sfreq=options.sfreq, crop=[options.crop_tmin, options.crop_tmax],
                                 dtype=options.dtype, method="neurodecode.preprocessing.epoching.epoch_operator "
                                 "(the mne.Epochs + resample + crop pipeline as one linear map)",
                                 operator=op.params))
    steps.append(provenance_step("select_repetitions", train_reps=options.train_reps,
                                 test_reps=options.test_reps, seed=options.seed,
                                 rule="per condition and session: sklearn.utils.shuffle(trials, random_state=seed)"))
    if options.mvnn_mode != "none":
        steps.append(provenance_step("mvnn", mode=options.mvnn_mode, shrinkage=options.shrinkage,
                                     fit_on=options.mvnn_fit, per="session"))
    covariances: list[np.ndarray] = []
    with StoreWriter(store_path(out, subject), n_trials, (len(CHANNELS_63), op.n_out), modality="eeg",
                     stimuli=stimuli, subject=subject, sfreq=op.sfreq, tmin=op.tmin,
                     info=eeg_info(CHANNELS_63, op.sfreq), provenance=steps,
                     attrs={"dataset": "things-eeg2", "layout": "raw", "options": to_jsonable(asdict(options))}) as w:
        for ses in progress(sessions, enabled=progress_bar, desc=f"sub-{subject} sessions", unit="session"):
            epoched = {split: _epoch_part(p, op, options, progress_bar=progress_bar, verbose=verbose)
                       for split, p in plans[ses].items()}
            model = _whiten_session(epoched, options)
            if model is not None:
                covariances.append(model.covariance_)
            for split, x in epoched.items():
                flat = x.reshape(-1, *x.shape[2:])
                for s in range(0, len(flat), 1024):
                    w.write(offsets[(ses, split)] + s, flat[s:s + 1024])
            del epoched
        w.finish(stimulus_id=np.concatenate(fields["stimulus_id"]), split=np.concatenate(fields["split"]),
                 repetition=np.concatenate(fields["repetition"]), session=np.concatenate(fields["session"]),
                 extra={"condition": np.concatenate(fields["condition"]),
                        "event_sample": np.concatenate(fields["event_sample"])})
    if covariances:
        save_whitener(store_path(out, subject), covariances, [str(x) for x in sessions], options.mvnn_mode)
    return {"sfreq": op.sfreq, "tmin": op.tmin, "n_times": op.n_out, "ch_names": list(CHANNELS_63)}


def whitener_path(store: Path) -> Path:
    """``sub-XX.mvnn.npz`` beside the store ``sub-XX.h5``: the MVNN of its training sessions."""
    return Path(store).with_suffix(".mvnn.npz")


def save_whitener(store: Path, covariances: Sequence[np.ndarray], sessions: Sequence[str], mode: str) -> Path:
    """Keep each session's noise covariance and the whitener of their mean (what a new session gets online).

    Written atomically beside the store (:func:`whitener_path`); read with ``np.load(allow_pickle=False)``.
    """
    from neurodecode.preprocessing.mvnn import inverse_sqrt
    from neurodecode.utils import atomic_path

    covs = np.stack([np.asarray(c, dtype=np.float64) for c in covariances])
    path = whitener_path(store)
    with atomic_path(path, suffix=".npz") as tmp, open(tmp, "wb") as fh:
        np.savez(fh, whitener=inverse_sqrt(covs.mean(0)), covariances=covs, sessions=np.asarray(sessions, dtype=str),
                 channels=np.asarray(CHANNELS_63, dtype=str), mode=np.asarray(mode))
    return path
