"""CSV recordings (consumer headsets such as Muse): ``neurodecode prepare csv``.

A recording is a CSV file with a header line: a time column (``timestamps``), one column per
channel and a marker column whose non-zero values mark stimulus onsets (the layout of the
NeuroTechX eeg-notebooks recordings: ``timestamps,TP9,AF7,AF8,TP10,Right AUX,Marker0``). Files are
found recursively under ROOT (or ROOT/recordings); names may end in ``.csv`` or ``.csv.csv``; the
subject is read from a folder such as ``subject3`` or ``sub-03`` and the session from ``session2``
or ``ses-02``.

Signal processing is MNE's: each file becomes an ``mne.io.RawArray`` (samples taken as evenly
spaced at ``sfreq``, as the headset delivers them; the logged timestamps jitter), band-pass
filtered (default 1-30 Hz), events are found on the marker channel (``mne.find_events``) and
epoched (default -0.1 to 0.8 s) with peak-to-peak rejection (default 100 uV). Files with identical
content (the same recording copied under two sessions) are detected by SHA-256, the later copy
is dropped and the drop is reported (log and ``dataset.json``).

Stimuli are category-level: the exact image of each trial was not logged, only its category
(marker value -> name via ``event_map``, e.g. ``1=face,2=house``). The stimulus table has one row per
category whose ``image_path`` is the category's image FOLDER (``stimuli/faces``); the teacher
embedding of a folder is the average of the embeddings of its images. Every trial is ``train``;
``session`` and the per-trial field ``run`` (file number within the session) are kept so that users
can cross-validate by session or run.
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from neurodecode._docs import fill_doc
from neurodecode.io.store import StimulusTable, StoreWriter
from neurodecode.readers.common import (
    category_folder,
    finish_prepared,
    is_done,
    mne_verbose,
    number_in,
    parse_mapping,
    provenance_step,
    store_path,
    subject_label,
)
from neurodecode.readers.epochs_writer import occurrence_index
from neurodecode.readers.options import (
    ReaderOptions,
    comma_list,
    float_or_none,
    nonzero_or_none,
    option,
    parse_baseline,
    resolve_options,
    str_or_none,
)
from neurodecode.utils import PathLike, logger, use_log_level
from neurodecode.utils import progress as progress_bar

UNITS = {"V": 1.0, "mV": 1e-3, "uV": 1e-6, "µV": 1e-6, "nV": 1e-9}
MARKER_NAMES = ("marker", "markers", "marker0", "stim", "trigger", "event", "events")


class CSVFormatError(ValueError):
    """A CSV recording that cannot be read; the message names the file, line and column."""


@dataclass
class CSVOptions(ReaderOptions):
    """Options of :func:`prepare_csv`."""

    GROUP: ClassVar[str] = "CSV recordings"

    channels: list[str] | None = option(None, parse=comma_list,
                                        help="comma-separated channel columns (default: all but time, marker and "
                                             "*aux* columns)")
    sfreq: float | None = option(None, parse=float_or_none,
                                 help="sampling rate in Hz (default: estimated from the time column, e.g. 256 for "
                                      "Muse)")
    time_column: str = option("timestamps", help="time column, used to estimate --sfreq")
    marker_column: str | None = option(None, help="marker column (default: the one column named "
                                                  "marker/Marker0/stim/trigger/event)")
    event_map: str | dict | None = option(None, help="marker value to category, e.g. '1=face,2=house' (default: "
                                                     "each non-zero value is a category)")
    images: Path | None = option(None, parse=Path, none="ROOT/stimuli",
                                 help="folder with one image folder per category, as NAME, NAMEs or NAMEes")
    image_folders: str | dict | None = option(None, help="explicit 'category=folder' pairs, comma-separated")
    tmin: float = option(-0.1, help="epoch start in s")
    tmax: float = option(0.8, help="epoch end in s, included")
    l_freq: float | None = option(1.0, parse=float_or_none, help="high-pass edge in Hz ('none' or --no-filter: no "
                                                                 "filter)")
    h_freq: float | None = option(30.0, parse=float_or_none, help="low-pass edge in Hz")
    baseline: tuple[float | None, float | None] | None = option(
        None, parse=parse_baseline, help="baseline window 'a,b' in s, e.g. 'None,0'")
    reject: float | None = option(100.0, parse=nonzero_or_none(float),
                                  help="peak-to-peak rejection threshold in --unit (default 100 uV); 0 keeps every "
                                       "epoch")
    unit: str = option("uV", choices=tuple(UNITS), help="unit of the CSV values; stores hold volts")
    montage: str | None = option("colin27_1005", parse=str_or_none,
                                 help="MNE standard montage for channel positions ('none' to skip)")
    subjects: list[str] | None = option(None, parse=comma_list,
                                        help="comma-separated subject labels to prepare (default all)")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.baseline is not None:
            self.baseline = parse_baseline(self.baseline)


@dataclass
class Recording:
    """One CSV file and where it sits in the study."""

    path: Path
    subject: str
    session: int
    run: int
    sha256: str


# --------------------------------------------------------------------------------------------------
# files
# --------------------------------------------------------------------------------------------------
def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def find_recordings(root: PathLike) -> tuple[list[Recording], list[dict[str, str]]]:
    """The CSV recordings under ``root`` (or ``root/recordings``), and the duplicates dropped.

    Returns
    -------
    recordings : list of Recording
        Sorted by path; subject, session (0 when no ``session``/``ses`` folder) and run (1-based
        file number within the subject's session).
    duplicates : list of dict
        ``{"dropped": path, "same_as": path, "sha256": hash}`` for every file whose content equals
        an earlier file's.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"CSV root folder {root} does not exist.")
    base = root / "recordings" if (root / "recordings").is_dir() else root
    files = sorted(p for p in base.rglob("*") if p.is_file() and p.name.lower().endswith(".csv"))
    if not files:
        raise FileNotFoundError(f"No .csv file under {base}.")
    seen: dict[str, Path] = {}
    recs: list[Recording] = []
    dups: list[dict[str, str]] = []
    runs: dict[tuple[str, int], int] = {}
    for f in files:
        digest = _sha256(f)
        if digest in seen:
            dups.append({"dropped": str(f.relative_to(root)), "same_as": str(seen[digest].relative_to(root)),
                         "sha256": digest})
            logger.warning(f"{f.relative_to(root)} has the same content as {seen[digest].relative_to(root)} "
                           "(SHA-256 identical): dropped as a duplicate")
            continue
        seen[digest] = f
        parts = f.relative_to(base).parts[:-1]
        subject = next((subject_label(p, "") for p in parts if subject_label(p, "")), "01")
        session = next((n for p in parts if (n := number_in(p, "(?:session|ses)")) is not None), 0)
        key = (subject, session)
        runs[key] = runs.get(key, 0) + 1
        recs.append(Recording(f, subject, session, runs[key], digest))
    return recs, dups


def read_csv_recording(path: PathLike, *, chunk_rows: int = 200_000) -> tuple[list[str], np.ndarray]:
    """Read a numeric CSV with a header line.

    Returns the column names and a float64 array ``(n_rows, n_columns)``. A non-numeric, empty or
    non-finite cell raises :class:`CSVFormatError` naming the file, the line (the header is line
    1) and the column.
    """
    import pandas as pd

    path = Path(path)
    parts = []
    header: list[str] = []
    offset = 0
    try:
        reader = pd.read_csv(path, chunksize=chunk_rows, skipinitialspace=True)
        for df in reader:
            header = [str(c).strip() for c in df.columns]
            block = np.empty(df.shape, dtype=np.float64)
            for ci, col in enumerate(df.columns):
                s = df[col]
                if s.dtype.kind not in "iufb":
                    num = pd.to_numeric(s, errors="coerce")
                    bad = (num.isna() & s.notna()).to_numpy()
                    if bad.any():
                        r = int(np.flatnonzero(bad)[0])
                        raise CSVFormatError(f"{path}: line {offset + r + 2}, column {header[ci]!r}: "
                                             f"{str(s.iloc[r])!r} is not a number. Fix or delete that row.")
                    s = num
                vals = s.to_numpy(dtype=np.float64)
                nonfinite = ~np.isfinite(vals)
                if nonfinite.any():
                    r = int(np.flatnonzero(nonfinite)[0])
                    what = "is empty" if np.isnan(vals[r]) else f"is {vals[r]} (not a finite number)"
                    raise CSVFormatError(f"{path}: line {offset + r + 2}, column {header[ci]!r} {what}. "
                                         "Fix or delete that row.")
                block[:, ci] = vals
            parts.append(block)
            offset += len(df)
    except pd.errors.EmptyDataError:
        raise CSVFormatError(f"{path}: the file is empty; expected a header line and data rows.") from None
    except pd.errors.ParserError as err:
        raise CSVFormatError(f"{path}: not a well-formed CSV ({err}).") from None
    if not parts or offset == 0:
        raise CSVFormatError(f"{path}: no data rows after the header.")
    return header, np.concatenate(parts)


def _pick_columns(path: Path, header: list[str], *, time_column: str | None, marker_column: str | None,
                  channels: Sequence[str] | None) -> tuple[str | None, str, list[str], list[str]]:
    """Resolve the time, marker and channel columns of a file (clear errors naming the file)."""
    if marker_column is None:
        cands = [h for h in header if h.lower() in MARKER_NAMES]
        if len(cands) != 1:
            raise CSVFormatError(f"{path}: cannot tell the marker column ({'several candidates ' + str(cands) if cands else 'none named marker/stim/trigger'}); "
                                 f"columns are {header}. Pass --marker-column.")
        marker_column = cands[0]
    elif marker_column not in header:
        raise CSVFormatError(f"{path}: no marker column {marker_column!r}; columns are {header}.")
    tcol = time_column if time_column in header else None
    skipped: list[str] = []
    if channels is None:
        chans = []
        for h in header:
            if h in (tcol, marker_column):
                continue
            if "aux" in h.lower():
                skipped.append(h)  # auxiliary inputs are not brain signals
                continue
            chans.append(h)
    else:
        missing = [c for c in channels if c not in header]
        if missing:
            raise CSVFormatError(f"{path}: channel column(s) {missing} not found; columns are {header}.")
        chans = list(channels)
    if not chans:
        raise CSVFormatError(f"{path}: no channel columns left; columns are {header}. Pass --channels.")
    return tcol, marker_column, chans, skipped


def estimate_sfreq(times: np.ndarray) -> float:
    """Sampling rate from a time column: (n - 1) / (last - first), rounded to the nearest Hz.

    The span of the whole file is used rather than the median step, because headset time stamps
    are jittered and quantised (Muse logs 256 Hz samples with millisecond stamps).
    """
    span = float(times[-1] - times[0])
    if not np.isfinite(span) or span <= 0:
        raise ValueError("cannot estimate the sampling rate: the time column does not increase. Pass --sfreq.")
    return float(round((len(times) - 1) / span))


# --------------------------------------------------------------------------------------------------
# reader
# --------------------------------------------------------------------------------------------------
def _epoch_file(rec: Recording, data: np.ndarray, header: list[str], *, tcol, mcol, chans, sfreq, unit_scale,
                code_names: dict[int, str], l_freq, h_freq, tmin, tmax, baseline, reject, montage, verbose):
    import mne

    v = mne_verbose(verbose)
    col = {h: i for i, h in enumerate(header)}
    markers = data[:, col[mcol]]
    if not np.all(markers == np.round(markers)):
        r = int(np.flatnonzero(markers != np.round(markers))[0])
        raise CSVFormatError(f"{rec.path}: line {r + 2}, column {mcol!r}: marker {markers[r]} is not an integer.")
    signals = data[:, [col[c] for c in chans]].T * unit_scale
    info = mne.create_info([*chans, "STI"], sfreq, [*(["eeg"] * len(chans)), "stim"])
    raw = mne.io.RawArray(np.vstack([signals, markers[None, :]]), info, verbose=v)
    if montage:
        mont = mne.channels.make_standard_montage(montage)
        if all(c in mont.ch_names for c in chans):
            raw.set_montage(mont, verbose=v)
    if l_freq is not None or h_freq is not None:
        raw.filter(l_freq, h_freq, picks="eeg", verbose=v)
    events = mne.find_events(raw, stim_channel="STI", shortest_event=1, consecutive=True, initial_event=True,
                             verbose=v)
    n_markers = len(events)
    events = events[np.isin(events[:, 2], list(code_names))]
    present = {code_names[c]: c for c in sorted(set(events[:, 2].tolist()))}
    if len(events) == 0:
        return None, {"n_markers": n_markers, "n_events": 0, "n_epochs": 0, "n_rejected": 0}
    with warnings.catch_warnings():  # a file whose every epoch is rejected is reported in the summary instead
        warnings.filterwarnings("ignore", message="All epochs were dropped")
        epochs = mne.Epochs(raw, events, present, tmin=tmin, tmax=tmax, baseline=baseline, picks="eeg",
                            reject=None if reject is None else {"eeg": reject * unit_scale}, preload=True,
                            reject_by_annotation=False, verbose=v)
    n_ok = len(epochs)
    return epochs, {"n_markers": n_markers, "n_events": int(len(events)), "n_epochs": n_ok,
                    "n_rejected": int(len(events) - n_ok)}


@fill_doc
def prepare_csv(
    root: PathLike,
    out: PathLike,
    options: CSVOptions | None = None,
    *,
    overwrite: bool = False,
    progress: bool = True,
    verbose: bool | str | None = None,
    **fields: Any,
) -> Path:
    """Prepare CSV recordings into EEG trial stores (see the module docstring).

    Parameters
    ----------
    root : path-like
        Folder of recordings (``subjectN/sessionM/*.csv``), or its parent holding ``recordings/``
        (and, optionally, ``stimuli/``).
    out : path-like
        Output folder.
    options : CSVOptions | None
        The options (defaults: :class:`CSVOptions`). ``channels``: channel columns (default: every
        column but the time and marker columns and auxiliary inputs, names containing "aux").
        ``sfreq``: sampling rate in Hz (default: estimated from the time column, and reported).
        ``time_column``: name of the time column (only used to estimate ``sfreq``).
        ``marker_column``: default: the one column named marker/Marker0/stim/trigger/event.
        ``event_map``: marker value -> category, e.g. ``"1=face,2=house"``; values not listed are
        ignored (default: every non-zero value is its own category named after the value).
        ``images``, ``image_folders``: see below (``images`` defaults to ``root/stimuli`` when it
        exists). ``tmin``, ``tmax``: epoch window in s (both ends included, as ``mne.Epochs``).
        ``l_freq``, ``h_freq``: band-pass edges in Hz (``mne.io.Raw.filter``). ``baseline``:
        baseline window (default none). ``reject``: peak-to-peak rejection threshold, in ``unit``
        (default 100 uV); ``None`` keeps every epoch. ``unit``: unit of the CSV values, ``V``,
        ``mV``, ``uV`` or ``nV``; stores hold volts. ``montage``: MNE standard montage for channel
        positions (used when it knows every channel). ``subjects``: subject labels to prepare
        (default all).
    %(overwrite)s
    %(progress)s
    %(verbose)s
    %(fields)s

    Returns
    -------
    %(returns_out)s

    Notes
    -----
    Image folders of the categories:

    %(images_categories)s
    """
    opt = resolve_options(CSVOptions, options, fields)
    images = opt.images
    unit_scale = UNITS[opt.unit]
    root, out = Path(root), Path(out)
    with use_log_level(verbose):
        recs, dups = find_recordings(root)
        if opt.subjects is not None:
            want = {subject_label(f"sub-{s}", str(s)) if str(s).isdigit() else str(s) for s in opt.subjects}
            recs = [r for r in recs if r.subject in want]
            if not recs:
                raise ValueError(f"No recording of subject(s) {sorted(want)} under {root}.")
        mapping = parse_mapping(opt.event_map, what="event_map")
        try:
            code_names = {int(k): v for k, v in mapping.items()}
        except ValueError:
            raise ValueError(f"event_map keys must be integer marker values, got {list(mapping)}.") from None
        if images is None and (root / "stimuli").is_dir():
            images = root / "stimuli"
        explicit = parse_mapping(opt.image_folders, what="image_folders") if opt.image_folders is not None else {}

        out.mkdir(parents=True, exist_ok=True)
        by_subject: dict[str, list[Recording]] = {}
        for r in recs:
            by_subject.setdefault(r.subject, []).append(r)
        tables, infos = [], {}
        sfreq_used: dict[str, float] = {}
        for subject, srecs in sorted(by_subject.items()):
            if is_done(out, subject, overwrite=overwrite):
                continue
            chunks, stim, sess, runs, onsets, file_info = [], [], [], [], [], []
            info = None
            chans_ref: list[str] | None = None
            for rec in progress_bar(srecs, enabled=progress, desc=f"sub-{subject}", unit="file"):
                header, data = read_csv_recording(rec.path)
                tcol, mcol, chans, skipped = _pick_columns(rec.path, header, time_column=opt.time_column,
                                                           marker_column=opt.marker_column, channels=opt.channels)
                if chans_ref is None:
                    chans_ref = chans
                    if skipped:
                        logger.info(f"{rec.path}: auxiliary column(s) {skipped} are not used (list them in "
                                    "channels= to keep them)")
                elif chans != chans_ref:
                    raise CSVFormatError(f"{rec.path}: channels {chans} differ from {chans_ref} in the subject's "
                                         "other files. Pass channels= explicitly.")
                fs = opt.sfreq
                if fs is None:
                    if tcol is None:
                        raise CSVFormatError(f"{rec.path}: no time column {opt.time_column!r} to estimate the sampling "
                                             "rate from. Pass --sfreq.")
                    fs = estimate_sfreq(data[:, header.index(tcol)])
                sfreq_used[str(rec.path.relative_to(root))] = fs
                cn = code_names or {int(c): _num(c) for c in np.unique(data[:, header.index(mcol)]) if c != 0}
                epochs, stats = _epoch_file(rec, data, header, tcol=tcol, mcol=mcol, chans=chans, sfreq=fs,
                                            unit_scale=unit_scale, code_names=cn, l_freq=opt.l_freq, h_freq=opt.h_freq,
                                            tmin=opt.tmin, tmax=opt.tmax, baseline=opt.baseline, reject=opt.reject,
                                            montage=opt.montage, verbose=verbose)
                del data
                file_info.append({"file": str(rec.path.relative_to(root)), "session": rec.session, "run": rec.run,
                                  "sfreq": fs, **stats})
                if epochs is None or len(epochs) == 0:
                    continue
                if info is None:
                    info = epochs.info
                elif abs(epochs.info["sfreq"] - info["sfreq"]) > 1e-9:
                    raise CSVFormatError(f"{rec.path}: sampling rate {epochs.info['sfreq']} Hz differs from "
                                         f"{info['sfreq']} Hz in the subject's other files. Pass --sfreq.")
                names = {c: n for n, c in epochs.event_id.items()}
                chunks.append(epochs.get_data(copy=False).astype(np.float32))
                stim += [names[c] for c in epochs.events[:, 2]]
                sess += [rec.session] * len(epochs)
                runs += [rec.run] * len(epochs)
                onsets += (epochs.events[:, 0] / epochs.info["sfreq"]).tolist()
                tmin_used = float(epochs.times[0])
            if info is None:
                raise ValueError(f"Subject {subject}: no epoch left in {len(srecs)} file(s) (markers found: "
                                 f"{[fi['n_markers'] for fi in file_info]}; check event_map and reject).")
            order = list(dict.fromkeys(code_names[c] for c in sorted(code_names))) if code_names else sorted(set(stim))
            shown = set(stim)
            cats = [c for c in order if c in shown]
            paths = []
            for c in cats:
                folder = category_folder(Path(images), c, explicit) if images is not None or explicit else None
                if folder is None:
                    logger.warning(f"no image folder for category {c!r}" + (f" under {images}" if images else "")
                                   + ": its stimulus row has no image path")
                paths.append("" if folder is None else str(folder.resolve()))
            table = StimulusTable(cats, cats, paths, ["train"] * len(cats), root=None)
            signals = np.concatenate(chunks)
            n = len(signals)
            prov = [provenance_step("read_csv", root=str(root), files=[fi["file"] for fi in file_info],
                                    channels=chans_ref, sfreq=opt.sfreq, sfreq_used=sorted(set(sfreq_used.values())),
                                    time_column=opt.time_column, marker_column=opt.marker_column,
                                    event_map={str(k): v for k, v in code_names.items()} or "marker values",
                                    unit=opt.unit, duplicates_dropped=dups),
                    provenance_step("mne_epochs", l_freq=opt.l_freq, h_freq=opt.h_freq, tmin=opt.tmin, tmax=opt.tmax,
                                    baseline=None if opt.baseline is None else list(opt.baseline),
                                    reject_peak_to_peak=opt.reject, reject_unit=opt.unit, montage=opt.montage)]
            with StoreWriter(store_path(out, subject), n, signals.shape[1:], modality="eeg", stimuli=table,
                             subject=subject, sfreq=float(info["sfreq"]), tmin=tmin_used, info=info,
                             provenance=prov) as w:
                w.write(0, signals)
                w.finish(stimulus_id=stim, split=["train"] * n, repetition=occurrence_index(stim),
                         session=np.asarray(sess, np.int32),
                         extra={"run": np.asarray(runs, np.int32), "onset": np.asarray(onsets, np.float64)})
            counts = {c: stim.count(c) for c in cats}
            logger.info(f"sub-{subject}: {n} epochs {counts} from {len(srecs)} file(s), "
                        f"{sum(fi['n_rejected'] for fi in file_info)} rejected")
            infos[subject] = {"n_trials": n, "n_chans": int(signals.shape[1]), "n_times": int(signals.shape[2]),
                              "sfreq": float(info["sfreq"]), "ch_names": list(info["ch_names"]),
                              "trials_per_category": counts, "files": file_info}
            tables.append(table)
            del signals, chunks
        if tables:
            merged = tables[0]
            for t in tables[1:]:
                keep = ~np.isin(t.stimulus_id, merged.stimulus_id)
                merged = StimulusTable(np.r_[merged.stimulus_id, t.stimulus_id[keep]],
                                       np.r_[merged.concept, t.concept[keep]],
                                       np.r_[merged.image_path, t.image_path[keep]], np.r_[merged.split, t.split[keep]])
            finish_prepared(out, merged, {
                "source": "csv", "modality": "eeg", "root": str(root), "duplicates_dropped": dups,
                "stimulus_level": "category: image_path is the category's image folder; its teacher embedding is "
                                  "the mean of the embeddings of the folder's images",
                "options": {"channels": None if opt.channels is None else list(opt.channels), "sfreq": opt.sfreq,
                            "event_map": {str(k): v for k, v in code_names.items()}, "tmin": opt.tmin, "tmax": opt.tmax,
                            "l_freq": opt.l_freq, "h_freq": opt.h_freq, "reject": opt.reject, "unit": opt.unit}}, infos)
        elif dups:
            logger.warning(f"{len(dups)} duplicate file(s) dropped")
    return out


def _num(c: float) -> str:
    return str(int(c)) if float(c).is_integer() else str(c)


__all__ = ["CSVOptions", "prepare_csv", "find_recordings", "read_csv_recording", "estimate_sfreq",
           "CSVFormatError"]
