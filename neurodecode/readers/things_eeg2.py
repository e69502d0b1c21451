"""THINGS-EEG2 (Gifford et al. 2022) in its three public layouts, into trial stores.

Layouts (see ``neurodecode/io/data_manifests/things_eeg2.yaml`` for every file, key, shape and dtype):

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

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from neurodecode.io.channels import POSTERIOR_17 as _POSTERIOR_17
from neurodecode.io.channels import THINGS_EEG2_63
from neurodecode.io.manifests import ManifestError, check_root, load_manifest
from neurodecode.io.safeio import load_pickled_dict
from neurodecode.io.store import StimulusTable, StoreWriter
from neurodecode.readers.common import (
    check_root_folder,
    is_done,
    provenance_step,
    record_prepare_options,
    store_path,
    write_prepared_metadata,
)
from neurodecode.readers.images import (
    ImageFolderError,
    find_image_folders,
    image_stimulus_table,
    list_concept_images,
)
from neurodecode.readers.options import ReaderOptions, comma_list, option
from neurodecode.readers.things_eeg2_raw import (
    DEFAULT_SEED,
    TARGET_CODE,
    RawOptions,
    RawSession,
    eeg_info,
    prepare_raw_subject,
    preprocess_raw_session,
)
from neurodecode.utils import PathLike, check_option, logger, progress, to_jsonable, use_log_level

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
    "DEFAULT_SEED",
    "TARGET_CODE",
    "ThingsEEG2Options",
    "normalise_subject",
    "prepare_raw_subject",
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


@dataclass
class ThingsEEG2Options(ReaderOptions):
    """Options of ``neurodecode prepare things-eeg2``: :func:`prepare_things_eeg2`'s layout, subjects
    and images, and the preprocessing of the raw layout (``raw``)."""

    GROUP: ClassVar[str] = "THINGS-EEG2"

    layout: str = option("auto", choices=LAYOUTS, help="data layout under --root (default: detected)")
    subjects: list[str] | None = option(None, parse=comma_list, nargs="+", metavar="SUB",
                                        help="subjects, e.g. 01 02 or 1,2 (default: every sub-XX folder found)")
    images: Path | None = option(None, parse=Path, help="folder holding training_images/ and test_images/ "
                                                        "(default: found under --root)")
    raw: RawOptions = option(help="preprocessing of the raw layout", factory=RawOptions)


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


def _summary_from_store(path: Path) -> dict[str, Any]:
    from neurodecode.io.store import TrialStore

    st = TrialStore(path, validate=False)
    try:
        return {"sfreq": st.sfreq, "tmin": st.tmin, "n_times": st.n_times, "ch_names": st.ch_names}
    finally:
        st.close()


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
        if root.exists() and not root.is_dir():
            check_root_folder(root, "the THINGS-EEG2 data set (see the layouts in 'neurodecode prepare things-eeg2 "
                                    "--help')")
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
        record_prepare_options(out, "things-eeg2", {"layout": layout, "images": None if images is None else str(images),
                                                    **({"raw": asdict(raw_options)} if layout == "raw" else {})},
                               overwrite=overwrite)
        mne_verbose = verbose if verbose is not None else False
        summary: dict[str, Any] = {}
        for subject in progress(subjects, enabled=progress_bar, desc="things-eeg2", unit="subject"):
            if is_done(out, subject, overwrite=overwrite):
                continue
            if layout == "raw":
                sessions = load_manifest(MANIFEST)["layouts"]["raw"]["sessions"]
                summary = prepare_raw_subject(_raw_paths(root, subject, sessions), out, subject, stimuli, n_images,
                                              raw_options, progress_bar=progress_bar, verbose=mne_verbose)
            else:
                summary = _prepare_preprocessed_subject(root, out, layout, subject, stimuli, n_images,
                                                        progress_bar=progress_bar)
        if not summary:  # every subject was already prepared: describe them from a store
            summary = _summary_from_store(store_path(out, subjects[0]))
        meta = {"dataset": "things-eeg2", "layout": layout, "subjects": subjects, "source": DATA_URL,
                "n_train_stimuli": n_images["train"], "n_test_stimuli": n_images["test"],
                "channel_subsets": {"posterior_17": list(POSTERIOR_17)}, **summary}
        if layout == "raw":
            meta["raw_options"] = to_jsonable(asdict(raw_options))
        write_prepared_metadata(out, stimuli, meta)
    return out
