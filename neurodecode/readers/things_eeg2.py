"""THINGS-EEG2 (Gifford et al. 2022) in its three public layouts, into trial stores.

Layouts (see ``data_manifests/things_eeg2.yaml`` for every file, key, shape and dtype):

``community-250hz``
    ``ROOT/Preprocessed_data_250Hz/sub-XX/preprocessed_eeg_{training,test}.npy``: bare pickles of
    dicts (``preprocessed_eeg_data``, ``ch_names``, ``times``), 63 channels, 250 Hz, training
    ``(16540, 4, 63, 250)``, test ``(200, 80, 63, 250)``; ``times`` has 300 values from -0.2 s of
    which the data hold the last 250 (0 to 0.996 s). The release of NICE and ATM.
``official-100hz``
    The same names and keys in real ``.npy`` files holding a 0-d object array; 17 posterior
    channels, 100 Hz, ``(16540, 4, 17, 100)`` and ``(200, 80, 17, 100)``; ``times`` matches the
    data (-0.2 to 0.79 s).
``raw``
    ``ROOT/Raw_data/sub-XX/ses-0Y/raw_eeg_{training,test}.npy`` (``raw_eeg_data`` 64 x samples at
    1000 Hz, the last row the stimulus channel, ``ch_names``, ``ch_types``, ``sfreq``). Prepared
    as the community does (NICE's preprocessing): events from the stimulus channel, target trials
    (99999) dropped, the 63 EEG channels picked in :data:`CHANNELS_63` order, epochs -0.2 to 1.0 s
    with baseline (None, 0), resampled to 250 Hz, cropped to 0 to 0.996 s, 2 (training) / 20
    (test) repetitions per condition and session chosen with a seed, then MVNN per session,
    fitted on that session's training data (optionally band-passed first). The epoching is
    streamed (:func:`neurodecode.preprocessing.epoching.iter_epochs`) from a memory map of the raw file.

Every file is read with :mod:`neurodecode.io.safeio` (never ``np.load(allow_pickle=True)``), large
arrays memory-mapped. Images: ``training_images/00001_aardvark/aardvark_01b.jpg`` (1654 folders x
10) and ``test_images/00001_aircraft_carrier/aircraft_carrier_06s.jpg`` (200 x 1), found in ROOT,
ROOT/images_set, ROOT/image_set or ``--images``. Condition k (1-based raw event code; row k-1 of a
preprocessed array) is the k-th image in sorted-folder, sorted-file order; its stimulus id is the
file stem, its concept the folder name after the first ``_``.

The trial store holds one trial per (condition, repetition): signals ``(n_trials, n_chans,
n_times)`` float32 with all channels (subsets such as :data:`POSTERIOR_17` are chosen at load time),
``split``, ``repetition`` (0-based per stimulus), ``session`` (1-4 for raw data; 0 where the
publisher's files do not say), ``condition`` (1-based event code) and, for raw data,
``event_sample``. Channel positions come from MNE's ``colin27_1005`` montage.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from neurodecode.io.channels import POSTERIOR_17 as _POSTERIOR_17
from neurodecode.io.channels import THINGS_EEG2_63
from neurodecode.io.safeio import load_pickled_dict
from neurodecode.io.store import StimulusTable, StoreWriter
from neurodecode.utils import PathLike, check_option, logger, progress, use_log_level
from neurodecode.readers.common import is_done, provenance_step, store_path, write_prepared_metadata
from neurodecode.readers.images import ImageFolderError, find_image_folders, image_stimulus_table, list_concept_images
from neurodecode.io.manifests import ManifestError, check_root, load_manifest

if TYPE_CHECKING:  # pragma: no cover
    import mne

    from neurodecode.preprocessing.epoching import MVNN, EpochOperator

__all__ = [
    "CHANNELS_63",
    "POSTERIOR_17",
    "LAYOUTS",
    "RawOptions",
    "RawSession",
    "detect_layout",
    "eeg_info",
    "find_things_eeg2_images",
    "preprocess_raw_session",
    "prepare_things_eeg2",
    "read_preprocessed_file",
    "PREPARE_HELP",
    "PREPARE_DESCRIPTION",
    "add_prepare_arguments",
    "prepare_from_args",
]

#: The 63 EEG channels of THINGS-EEG2 in the order of the community 250 Hz release.
CHANNELS_63: tuple[str, ...] = THINGS_EEG2_63
#: The 17 occipital and parietal channels (the official 100 Hz release; used by UBP and others).
POSTERIOR_17: tuple[str, ...] = _POSTERIOR_17

MANIFEST = "things_eeg2"
LAYOUTS = ("auto", "community-250hz", "official-100hz", "raw")
_MANIFEST_LAYOUT = {"community-250hz": "community_250hz", "official-100hz": "official_100hz", "raw": "raw"}
# what a preprocessed layout must hold (checked against every file)
_EXPECT = {
    "community-250hz": {"n_chans": 63, "n_times": 250, "channels": CHANNELS_63},
    "official-100hz": {"n_chans": 17, "n_times": 100, "channels": POSTERIOR_17},
}
SPLIT_FILES = {"train": "training", "test": "test"}
DATA_URL = "https://osf.io/3jk45/"
IMAGES_URL = "https://osf.io/y63gw/"
IMAGE_HINT = (f"Download image_set.zip from {IMAGES_URL} and unzip it in the root (training_images/ and "
              f"test_images/ in ROOT, ROOT/image_set or ROOT/images_set).")
DEFAULT_SEED = 20200220  # the seed of the THINGS-EEG2 and NICE preprocessing scripts
TARGET_CODE = 99999

PREPARE_HELP = "THINGS-EEG2 (community 250 Hz, official 100 Hz or raw layout) with its image set."
PREPARE_DESCRIPTION = """\
Read THINGS-EEG2 (10 subjects, 16540 training and 200 test images) into trial stores.

Layouts (--layout, detected by default):
  community-250hz  ROOT/Preprocessed_data_250Hz/sub-XX/preprocessed_eeg_{training,test}.npy
                   (NICE/ATM release: 63 channels, 250 Hz, 0-0.996 s; pickled dicts)
  official-100hz   ROOT/preprocessed_data/sub-XX/... (official release: 17 channels, 100 Hz)
  raw              ROOT/Raw_data/sub-XX/ses-0Y/raw_eeg_{training,test}.npy (1000 Hz, 64 rows);
                   epoched, resampled and whitened (MVNN per session, fitted on training data)
Images: training_images/ and test_images/ in ROOT, ROOT/image_set, ROOT/images_set or --images.
Files are read without unpickling code (restricted unpickler). Subjects already prepared are
skipped (use --overwrite to rebuild them). Data: https://osf.io/3jk45/ (see
data_manifests/things_eeg2.yaml).

example:
  neurodecode prepare things-eeg2 --root THINGS-EEG2 --out prepared/things_eeg2 --subjects 01 02
  neurodecode prepare things-eeg2 --root THINGS-EEG2 --out prepared/raw250 --layout raw --l-freq 0.1
"""


# --------------------------------------------------------------------------------------------------
# options
# --------------------------------------------------------------------------------------------------
@dataclass
class RawOptions:
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

    l_freq: float | None = None
    h_freq: float | None = None
    tmin: float = -0.2
    tmax: float = 1.0
    baseline: tuple[float | None, float | None] | None = (None, 0.0)
    sfreq: float | None = 250.0
    crop_tmin: float | None = 0.0
    crop_tmax: float | None = None
    train_reps: int = 2
    test_reps: int = 20
    seed: int | None = DEFAULT_SEED
    mvnn_mode: str = "epochs"
    mvnn_fit: str = "train"
    shrinkage: str | float | None = "auto"
    target_code: int = TARGET_CODE
    stim_channel: str = "stim"
    block_size: int = 64
    dtype: str = "float32"

    def __post_init__(self) -> None:
        check_option("mvnn_mode", self.mvnn_mode, ("epochs", "time", "none"))
        check_option("mvnn_fit", self.mvnn_fit, ("train", "train+test"))
        check_option("dtype", self.dtype, ("float32", "float64"))
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


# --------------------------------------------------------------------------------------------------
# images
# --------------------------------------------------------------------------------------------------
def find_things_eeg2_images(root: PathLike | None, images: PathLike | None = None) -> dict[str, list[tuple[str, Path]]]:
    """The training and test images in condition order.

    Parameters
    ----------
    root : path-like | None
        THINGS-EEG2 root (images in ROOT, ROOT/images_set or ROOT/image_set).
    images : path-like | None
        Explicit folder holding ``training_images`` and ``test_images`` (or one level above them).

    Returns
    -------
    images : dict
        ``{"train": [(concept, path), ...], "test": [...]}``.
    """
    folders = find_image_folders(root, ("training_images", "test_images"), images=images, hint=IMAGE_HINT)
    return {"train": list_concept_images(folders["training_images"]),
            "test": list_concept_images(folders["test_images"])}


# --------------------------------------------------------------------------------------------------
# layouts and files
# --------------------------------------------------------------------------------------------------
def _folder_candidates(layout: str) -> list[str]:
    man = load_manifest(MANIFEST)["layouts"][_MANIFEST_LAYOUT[layout]]
    return [man["folder"], *man.get("folder_alternatives", [])]


def _layout_folder(root: Path, layout: str) -> Path | None:
    for name in _folder_candidates(layout):
        if (root / name).is_dir():
            return root / name
    return None


def normalise_subject(label: str | int) -> str:
    """``1``, ``"1"``, ``"01"`` or ``"sub-01"`` -> ``"01"``."""
    s = str(label).strip().removeprefix("sub-")
    return f"{int(s):02d}" if s.isdigit() else s


def _subjects_in(folder: Path | None) -> list[str]:
    if folder is None:
        return []
    return sorted(p.name.removeprefix("sub-") for p in folder.glob("sub-*") if p.is_dir())


def detect_layout(root: PathLike) -> str:
    """Which THINGS-EEG2 layout ``root`` holds.

    Preprocessed folders win over raw ones; between the two preprocessed layouts, the channel
    count of the first test file decides (63: community 250 Hz, 17: official 100 Hz). The file is
    memory-mapped, so this is quick.
    """
    root = Path(root)
    seen: set[Path] = set()
    for layout in ("community-250hz", "official-100hz"):
        folder = _layout_folder(root, layout)
        if folder is None or folder in seen:
            continue
        seen.add(folder)
        files = sorted(folder.glob("sub-*/preprocessed_eeg_test.npy")) or sorted(
            folder.glob("sub-*/preprocessed_eeg_training.npy"))
        if not files:
            continue
        d = load_pickled_dict(files[0], mmap=True, required_keys=("preprocessed_eeg_data",),
                              what="THINGS-EEG2 preprocessed file")
        shape = np.shape(d["preprocessed_eeg_data"])
        n_chans = shape[2] if len(shape) == 4 else None
        for name, exp in _EXPECT.items():
            if n_chans == exp["n_chans"]:
                logger.info(f"things-eeg2: {files[0]} has {n_chans} channels: layout {name}")
                return name
        raise ValueError(f"{files[0]}: preprocessed data of shape {shape}; neither the community layout "
                         f"(63 channels) nor the official one (17 channels). Pass --layout explicitly.")
    if _layout_folder(root, "raw") is not None:
        return "raw"
    wanted = sorted({c for lay in ("community-250hz", "official-100hz", "raw") for c in _folder_candidates(lay)})
    raise ManifestError(root, MANIFEST, "auto",
                        [f"no THINGS-EEG2 data folder found; looked for {', '.join(wanted)} under {root} "
                         f"(download from {DATA_URL})"])


@dataclass
class PreprocessedFile:
    """One preprocessed THINGS-EEG2 file: data (memory-mapped) and its description."""

    path: Path
    data: np.ndarray  # (n_conditions, n_repetitions, n_channels, n_times)
    ch_names: list[str]
    sfreq: float
    tmin: float
    container: str

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of the data."""
        return tuple(self.data.shape)


def _sfreq_from_times(times: np.ndarray, path: Path) -> float:
    steps = np.diff(times)
    if len(steps) == 0 or np.any(steps <= 0) or np.ptp(steps) > 1e-6 * max(1.0, abs(steps.mean())) + 1e-9:
        raise ValueError(f"{path}: 'times' is not an evenly spaced increasing time axis "
                         f"({len(times)} values from {times[:3].tolist()}...).")
    sfreq = 1.0 / float(np.mean(steps))
    return float(np.round(sfreq)) if abs(sfreq - np.round(sfreq)) < 1e-3 else sfreq


def read_preprocessed_file(path: PathLike, *, layout: str | None = None, split: str = "train") -> PreprocessedFile:
    """Read a ``preprocessed_eeg_{training,test}.npy`` file of either container, memory-mapped.

    Parameters
    ----------
    path : path-like
        The file.
    layout : "community-250hz" | "official-100hz" | None
        Layout whose channel count, channel names and number of time points are enforced.
    split : "train" | "test"
        For messages.

    Returns
    -------
    file : PreprocessedFile
        ``tmin`` is ``times[0]`` when ``times`` matches the data, and ``times[-n_times]`` when it is
        longer (the community files keep the 300-sample epoch's times for 250 samples of data).
    """
    from neurodecode.io.safeio import detect_container

    path = Path(path)
    d = load_pickled_dict(path, mmap=True, required_keys=("preprocessed_eeg_data", "ch_names", "times"),
                          what="THINGS-EEG2 preprocessed file")
    data = d["preprocessed_eeg_data"]
    if not isinstance(data, np.ndarray) or data.ndim != 4 or data.dtype.kind != "f":
        desc = f"{type(data).__name__} {getattr(data, 'shape', '')} {getattr(data, 'dtype', '')}".strip()
        raise ValueError(f"{path}: 'preprocessed_eeg_data' must be a float array (conditions, repetitions, "
                         f"channels, times); found {desc}.")
    ch_names = [str(c) for c in np.asarray(d["ch_names"]).ravel().tolist()]
    n_cond, n_rep, n_chans, n_times = data.shape
    if len(ch_names) != n_chans:
        raise ValueError(f"{path}: 'ch_names' lists {len(ch_names)} channels but 'preprocessed_eeg_data' "
                         f"{data.shape} has {n_chans} on axis 2 (conditions, repetitions, channels, times).")
    if len(set(ch_names)) != len(ch_names):
        raise ValueError(f"{path}: 'ch_names' has duplicates.")
    times = np.asarray(d["times"], dtype=np.float64).ravel()
    if len(times) < n_times:
        raise ValueError(f"{path}: 'times' has {len(times)} values but the data have {n_times} time points "
                         f"(axis 3); expected at least as many.")
    sfreq = _sfreq_from_times(times, path)
    tmin = float(np.round(times[len(times) - n_times], 9))
    if layout is not None:
        exp = _EXPECT[layout]
        problems = []
        if n_chans != exp["n_chans"]:
            problems.append(f"{n_chans} channels (axis 2), expected {exp['n_chans']}")
        if n_times != exp["n_times"]:
            problems.append(f"{n_times} time points (axis 3), expected {exp['n_times']}")
        if not problems and set(ch_names) != set(exp["channels"]):
            odd = sorted(set(ch_names) ^ set(exp["channels"]))
            problems.append(f"channel names differ from the {layout} set: {odd[:8]}")
        if problems:
            raise ValueError(f"{path}: shape {data.shape} does not match the {layout} layout: "
                             f"{'; '.join(problems)}. Is this the right layout? Try --layout auto.")
    return PreprocessedFile(path=path, data=data, ch_names=ch_names, sfreq=sfreq, tmin=tmin,
                            container=detect_container(path))


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
    from neurodecode.preprocessing.epoching import MVNN, mvnn_covariance

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


# --------------------------------------------------------------------------------------------------
# preparing subjects
# --------------------------------------------------------------------------------------------------
def _resolve(root: Path, rel_candidates: Sequence[str]) -> Path:
    for rel in rel_candidates:
        if (root / rel).is_file():
            return root / rel
    return root / rel_candidates[0]


def _preprocessed_paths(root: Path, layout: str, subject: str) -> dict[str, Path]:
    return {split: _resolve(root, [f"{folder}/sub-{subject}/preprocessed_eeg_{name}.npy"
                                   for folder in _folder_candidates(layout)])
            for split, name in SPLIT_FILES.items()}


def _raw_paths(root: Path, subject: str, sessions: Sequence[str]) -> dict[str, dict[str, Path]]:
    return {ses: {split: _resolve(root, [f"{folder}/sub-{subject}/ses-{ses}/raw_eeg_{name}.npy"
                                         for folder in _folder_candidates("raw")])
                  for split, name in SPLIT_FILES.items()}
            for ses in sessions}


def _prepare_preprocessed_subject(root: Path, out: Path, layout: str, subject: str, stimuli: StimulusTable,
                                  n_images: dict[str, int], *, progress_bar: bool) -> dict[str, Any]:
    paths = _preprocessed_paths(root, layout, subject)
    files = {split: read_preprocessed_file(p, layout=layout, split=split) for split, p in paths.items()}
    ref = files["train"]
    for split, f in files.items():
        n_cond = f.shape[0]
        if n_cond != n_images[split]:
            raise ValueError(f"{f.path}: {n_cond} image conditions (axis 0 of {f.shape}) but {n_images[split]} "
                             f"{split} images were found; the EEG and the image set must describe the same "
                             f"conditions (full data set: 16540 training, 200 test).")
        if f.ch_names != ref.ch_names or abs(f.sfreq - ref.sfreq) > 1e-6 or abs(f.tmin - ref.tmin) > 1e-9:
            raise ValueError(f"{f.path} and {ref.path} disagree on channels, sampling rate or tmin "
                             f"({f.ch_names[:3]}.../{f.sfreq} Hz/{f.tmin} s vs {ref.ch_names[:3]}.../{ref.sfreq} Hz/"
                             f"{ref.tmin} s).")
    ids = {s: stimuli.stimulus_id[stimuli.split == s] for s in ("train", "test")}
    n_trials = sum(int(np.prod(f.shape[:2])) for f in files.values())
    _, _, n_chans, n_times = ref.shape
    prov = [provenance_step(
        "things_eeg2.read_preprocessed", layout=layout,
        files={s: str(f.path) for s, f in files.items()}, container=ref.container,
        shapes={s: list(f.shape) for s, f in files.items()}, source_dtype=str(ref.data.dtype),
        sfreq=ref.sfreq, tmin=ref.tmin,
        publisher_processing=("epoched, resampled and whitened by the publisher; MVNN fitted on training and test "
                              "data together; repetitions shuffled across sessions (session unknown: 0)"))]
    stim_ids, splits, reps, conds = [], [], [], []
    with StoreWriter(store_path(out, subject), n_trials, (n_chans, n_times), modality="eeg", stimuli=stimuli,
                     subject=subject, sfreq=ref.sfreq, tmin=ref.tmin, info=eeg_info(ref.ch_names, ref.sfreq),
                     provenance=prov, attrs={"dataset": "things-eeg2", "layout": layout}) as w:
        start = 0
        for split, f in files.items():
            n_cond, n_rep = f.shape[:2]
            per_block = max(1, 256 // n_rep)
            blocks = range(0, n_cond, per_block)
            for c0 in progress(blocks, enabled=progress_bar, desc=f"sub-{subject} {split}", unit="block"):
                block = np.asarray(f.data[c0:c0 + per_block], dtype=np.float32)
                w.write(start + c0 * n_rep, block.reshape(-1, n_chans, n_times))
            stim_ids.append(np.repeat(ids[split], n_rep))
            splits.append(np.full(n_cond * n_rep, split, dtype=object))
            reps.append(np.tile(np.arange(n_rep), n_cond))
            conds.append(np.repeat(np.arange(1, n_cond + 1), n_rep))
            start += n_cond * n_rep
        w.finish(stimulus_id=np.concatenate(stim_ids), split=np.concatenate(splits),
                 repetition=np.concatenate(reps).astype(np.int32),
                 session=np.zeros(n_trials, np.int32),
                 extra={"condition": np.concatenate(conds).astype(np.int32)})
    return {"sfreq": ref.sfreq, "tmin": ref.tmin, "n_times": n_times, "ch_names": ref.ch_names}


def _prepare_raw_subject(root: Path, out: Path, subject: str, sessions: Sequence[str], stimuli: StimulusTable,
                         n_images: dict[str, int], options: RawOptions, *, progress_bar: bool,
                         verbose: bool | str | None) -> dict[str, Any]:
    paths = _raw_paths(root, subject, sessions)
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
    with StoreWriter(store_path(out, subject), n_trials, (len(CHANNELS_63), op.n_out), modality="eeg",
                     stimuli=stimuli, subject=subject, sfreq=op.sfreq, tmin=op.tmin,
                     info=eeg_info(CHANNELS_63, op.sfreq), provenance=steps,
                     attrs={"dataset": "things-eeg2", "layout": "raw", "options": _jsonable(asdict(options))}) as w:
        for ses in progress(sessions, enabled=progress_bar, desc=f"sub-{subject} sessions", unit="session"):
            epoched = {split: _epoch_part(p, op, options, progress_bar=progress_bar, verbose=verbose)
                       for split, p in plans[ses].items()}
            _whiten_session(epoched, options)
            for split, x in epoched.items():
                flat = x.reshape(-1, *x.shape[2:])
                for s in range(0, len(flat), 1024):
                    w.write(offsets[(ses, split)] + s, flat[s:s + 1024])
            del epoched
        w.finish(stimulus_id=np.concatenate(fields["stimulus_id"]), split=np.concatenate(fields["split"]),
                 repetition=np.concatenate(fields["repetition"]), session=np.concatenate(fields["session"]),
                 extra={"condition": np.concatenate(fields["condition"]),
                        "event_sample": np.concatenate(fields["event_sample"])})
    return {"sfreq": op.sfreq, "tmin": op.tmin, "n_times": op.n_out, "ch_names": list(CHANNELS_63)}


def _summary_from_store(path: Path) -> dict[str, Any]:
    from neurodecode.io.store import read_store

    st = read_store(path, validate=False)
    try:
        return {"sfreq": st.sfreq, "tmin": st.tmin, "n_times": st.n_times, "ch_names": st.ch_names}
    finally:
        st.close()


def _jsonable(obj: Any) -> Any:
    from neurodecode.utils import to_jsonable

    return to_jsonable(obj)


def prepare_things_eeg2(root: PathLike, out: PathLike, *, layout: str = "auto",
                        subjects: Sequence[str | int] | None = None, images: PathLike | None = None,
                        raw_options: RawOptions | None = None, overwrite: bool = False,
                        progress_bar: bool = True, verbose: bool | str | None = None) -> Path:
    """Prepare THINGS-EEG2 into trial stores (one per subject) and a stimulus table.

    Parameters
    ----------
    root : path-like
        The data root (see the module docstring for the layouts).
    out : path-like
        Output folder (``sub-XX.h5``, ``stimuli.tsv``, ``dataset.json``).
    layout : "auto" | "community-250hz" | "official-100hz" | "raw"
        Which layout to read; ``"auto"`` detects it.
    subjects : list of str | int | None
        Subjects (``1``, ``"01"`` or ``"sub-01"``); ``None`` takes every ``sub-XX`` folder found.
    images : path-like | None
        Folder holding ``training_images`` and ``test_images`` when they are not under ``root``.
    raw_options : RawOptions | None
        Preprocessing of the raw layout (ignored otherwise).
    overwrite : bool
        Rebuild stores that exist and validate (by default they are skipped).
    progress_bar : bool
        Show progress bars.
    verbose : bool | str | None
        Log level of neurodecode and MNE.

    Returns
    -------
    out : Path
        The output folder.
    """
    root, out = Path(root), Path(out)
    check_option("layout", layout, LAYOUTS)
    raw_options = raw_options or RawOptions()
    with use_log_level(verbose):
        if not root.is_dir():
            raise ManifestError(root, MANIFEST, layout, [f"the root folder {root} does not exist"])
        if layout == "auto":
            layout = detect_layout(root)
        man_layout = _MANIFEST_LAYOUT[layout]
        if subjects is None:
            subjects = _subjects_in(_layout_folder(root, layout))
            if not subjects:
                raise ManifestError(root, MANIFEST, man_layout,
                                    [f"no sub-XX folders in any of {_folder_candidates(layout)} under {root}"])
        subjects = [normalise_subject(s) for s in subjects]
        # one message listing every missing file, images included, before any long work
        problems: list[str] = []
        try:
            check_root(root, MANIFEST, man_layout, subjects=subjects)
        except ManifestError as err:
            problems += err.problems
        try:
            found = find_things_eeg2_images(root, images)
        except ImageFolderError as err:
            problems.append(str(err))
            found = None
        if problems:
            raise ManifestError(root, MANIFEST, man_layout, problems)
        assert found is not None
        stimuli = image_stimulus_table(found, root=out)
        n_images = {s: len(v) for s, v in found.items()}
        logger.info(f"things-eeg2: layout {layout}, subjects {subjects}, {n_images['train']} training and "
                    f"{n_images['test']} test images")
        mne_verbose = verbose if verbose is not None else False
        summary: dict[str, Any] = {}
        for subject in progress(subjects, enabled=progress_bar, desc="things-eeg2", unit="subject"):
            if is_done(out, subject, overwrite=overwrite):
                continue
            if layout == "raw":
                sessions = load_manifest(MANIFEST)["layouts"]["raw"]["sessions"]
                summary = _prepare_raw_subject(root, out, subject, sessions, stimuli, n_images, raw_options,
                                               progress_bar=progress_bar, verbose=mne_verbose)
            else:
                summary = _prepare_preprocessed_subject(root, out, layout, subject, stimuli, n_images,
                                                        progress_bar=progress_bar)
        if not summary:  # every subject was already prepared: describe them from a store
            summary = _summary_from_store(store_path(out, subjects[0]))
        meta = {"dataset": "things-eeg2", "layout": layout, "subjects": subjects, "source": DATA_URL,
                "n_train_stimuli": n_images["train"], "n_test_stimuli": n_images["test"],
                "channel_subsets": {"posterior_17": list(POSTERIOR_17)}, **summary}
        if layout == "raw":
            meta["raw_options"] = _jsonable(asdict(raw_options))
        write_prepared_metadata(out, stimuli, meta)
    return out


# --------------------------------------------------------------------------------------------------
# command line
# --------------------------------------------------------------------------------------------------
def _float_or_none(text: str) -> float | None:
    return None if text.lower() in ("none", "") else float(text)


def add_prepare_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``neurodecode prepare things-eeg2``."""
    g = parser.add_argument_group("THINGS-EEG2")
    g.add_argument("--layout", choices=LAYOUTS, default="auto",
                   help="data layout under --root (default: detected)")
    g.add_argument("--subjects", nargs="+", default=None, metavar="SUB",
                   help="subjects, e.g. 01 02 or 1,2 (default: every sub-XX folder found)")
    g.add_argument("--images", type=Path, default=None,
                   help="folder holding training_images/ and test_images/ (default: found under --root)")
    r = parser.add_argument_group("raw layout (--layout raw)")
    r.add_argument("--l-freq", type=_float_or_none, default=None, help="band-pass low edge in Hz (default: none)")
    r.add_argument("--h-freq", type=_float_or_none, default=None, help="band-pass high edge in Hz (default: none)")
    r.add_argument("--tmin", type=float, default=-0.2, help="epoch start in s (default -0.2)")
    r.add_argument("--tmax", type=float, default=1.0, help="epoch end in s (default 1.0)")
    r.add_argument("--sfreq", type=_float_or_none, default=250.0, help="resample to this rate in Hz (default 250)")
    r.add_argument("--crop-tmin", type=_float_or_none, default=0.0, help="keep from this time in s (default 0)")
    r.add_argument("--crop-tmax", type=_float_or_none, default=None, help="keep up to this time in s (default: end)")
    r.add_argument("--train-reps", type=int, default=2, help="repetitions kept per training image and session (2)")
    r.add_argument("--test-reps", type=int, default=20, help="repetitions kept per test image and session (20)")
    r.add_argument("--seed", type=int, default=DEFAULT_SEED,
                   help=f"seed of the repetition choice (default {DEFAULT_SEED}, as the community scripts)")
    r.add_argument("--mvnn-mode", choices=("epochs", "time", "none"), default="epochs",
                   help="MVNN covariance per repetition over time (epochs), per time point (time), or none")
    r.add_argument("--mvnn-fit", choices=("train", "train+test"), default="train",
                   help="fit MVNN on training data (default) or, as the publishers did, training and test")
    r.add_argument("--block-size", type=int, default=64, help="epochs per block when epoching (64)")


def prepare_from_args(args: argparse.Namespace) -> Path:
    """Run :func:`prepare_things_eeg2` from parsed command-line arguments."""
    subjects = None
    if args.subjects:
        subjects = [s for item in args.subjects for s in str(item).split(",") if s.strip()]
    options = RawOptions(l_freq=args.l_freq, h_freq=args.h_freq, tmin=args.tmin, tmax=args.tmax, sfreq=args.sfreq,
                         crop_tmin=args.crop_tmin, crop_tmax=args.crop_tmax, train_reps=args.train_reps,
                         test_reps=args.test_reps, seed=args.seed, mvnn_mode=args.mvnn_mode,
                         mvnn_fit=args.mvnn_fit, block_size=args.block_size)
    return prepare_things_eeg2(args.root, args.out, layout=args.layout, subjects=subjects, images=args.images,
                               raw_options=options, overwrite=args.overwrite,
                               progress_bar=not args.no_progress, verbose="INFO" if args.verbose else None)
