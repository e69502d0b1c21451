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

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from neurodecode._docs import fill_doc
from neurodecode.io.store import StimulusTable, StoreWriter
from neurodecode.readers.common import (
    finish_prepared,
    is_done,
    mne_verbose,
    parse_mapping,
    provenance_step,
    record_prepare_options,
    select_subjects,
    store_path,
)
from neurodecode.readers.csv_files import (
    CSV_EXPECTED,
    CSVFormatError,
    Recording,
    estimate_sfreq,
    find_recordings,
    pick_columns,
    read_csv_recording,
)
from neurodecode.readers.epochs_writer import occurrence_index
from neurodecode.readers.images import category_images
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
from neurodecode.utils import PathLike, UserError, logger, use_log_level
from neurodecode.utils import progress as progress_bar

UNITS = {"V": 1.0, "mV": 1e-3, "uV": 1e-6, "µV": 1e-6, "nV": 1e-9}
LOSS_WARNING = 0.5  # warn when a file or subject loses more than this fraction of its epochs


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
                                 help="images of the categories: a folder per category (NAME/, NAMEs/ or NAMEes/) or "
                                      "files named after their category (NAME-001.jpg, NAME_2.png)")
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
    codes, counts = np.unique(events[:, 2], return_counts=True)
    found = {int(c): int(n) for c, n in zip(codes, counts, strict=True)}
    events = events[np.isin(events[:, 2], list(code_names))]
    present = {code_names[c]: c for c in sorted(set(events[:, 2].tolist()))}
    if len(events) == 0:
        return None, {"n_markers": n_markers, "marker_codes": found, "n_events": 0, "n_epochs": 0, "n_rejected": 0,
                      "n_outside": 0}
    # a file whose every epoch is rejected is reported by _file_report and in the summary instead
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="All epochs were dropped")
        epochs = mne.Epochs(raw, events, present, tmin=tmin, tmax=tmax, baseline=baseline, picks="eeg",
                            reject=None if reject is None else {"eeg": reject * unit_scale}, preload=True,
                            reject_by_annotation=False, verbose="ERROR" if v == "WARNING" else v)
    n_ok = len(epochs)
    outside = sum(1 for log in epochs.drop_log if set(log) & {"NO_DATA", "TOO_SHORT"})
    return epochs, {"n_markers": n_markers, "marker_codes": found, "n_events": int(len(events)), "n_epochs": n_ok,
                    "n_rejected": int(len(events) - n_ok), "n_outside": int(outside)}


def format_codes(counts: dict[int, int]) -> str:
    """``{1: 120, 2: 118}`` -> ``"1 (x120), 2 (x118)"``: marker codes with how often each occurs."""
    return ", ".join(f"{c} (x{n})" for c, n in sorted(counts.items())) or "none"


def _file_report(fi: dict[str, Any], code_names: dict[int, str], reject: float | None, unit: str) -> None:
    """Warn about a file that gave no epoch, or lost most of them."""
    if fi["n_events"] == 0:
        if fi["n_markers"]:
            logger.warning(f"{fi['file']}: none of its marker codes {format_codes(fi['marker_codes'])} is in the "
                           f"event map {_map_text(code_names)}: the file gives no epoch (fix --event-map)")
        else:
            logger.warning(f"{fi['file']}: no marker (every value of the marker column is 0): the file gives no epoch")
        return
    lost = fi["n_rejected"]
    if lost / fi["n_events"] > LOSS_WARNING:
        why = []
        if lost - fi["n_outside"]:
            why.append(f"{lost - fi['n_outside']} over the peak-to-peak threshold of {reject:g} {unit}")
        if fi["n_outside"]:
            why.append(f"{fi['n_outside']} too close to the start or end of the recording")
        advice = []
        if lost - fi["n_outside"]:
            advice.append("check the recording (a loose electrode?) or raise --reject (0 keeps every epoch)")
        if fi["n_outside"]:
            advice.append("markers that close to the ends of a recording cannot hold the epoch window "
                          "(--tmin/--tmax)")
        logger.warning(f"{fi['file']}: {lost} of {fi['n_events']} epochs rejected ({'; '.join(why)}); only "
                       f"{fi['n_epochs']} kept: {'; '.join(advice)}")


def _map_text(code_names: dict[int, str]) -> str:
    return ",".join(f"{c}={n}" for c, n in sorted(code_names.items()))


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
    unit_scale = UNITS[opt.unit]
    root, out = Path(root), Path(out)
    with use_log_level(verbose):
        recs, dups = find_recordings(root)
        wanted = select_subjects([r.subject for r in recs], opt.subjects, root=root)
        recs = [r for r in recs if r.subject in wanted]
        mapping = parse_mapping(opt.event_map, what="event_map")
        try:
            code_names = {int(k): v for k, v in mapping.items()}
        except ValueError:
            raise UserError(f"--event-map: keys must be integer marker values (e.g. '1=face,2=house'), got "
                            f"{list(mapping)}.") from None
        images, required = opt.images, opt.images is not None
        if images is None and (root / "stimuli").is_dir():
            images = root / "stimuli"
        explicit = parse_mapping(opt.image_folders, what="image_folders") if opt.image_folders is not None else {}
        required = required or bool(explicit)
        record_prepare_options(out, "csv", opt.as_dict(), overwrite=overwrite)

        by_subject: dict[str, list[Recording]] = {}
        for r in recs:
            by_subject.setdefault(r.subject, []).append(r)
        tables, infos = [], {}
        for subject, srecs in sorted(by_subject.items()):
            if is_done(out, subject, overwrite=overwrite):
                continue
            table, info = _prepare_subject(root, out, subject, srecs, opt, code_names, images, required, explicit,
                                           dups, unit_scale, progress, verbose)
            tables.append(table)
            infos[subject] = info
        if tables:
            merged = tables[0]
            for t in tables[1:]:
                keep = ~np.isin(t.stimulus_id, merged.stimulus_id)
                merged = StimulusTable(np.r_[merged.stimulus_id, t.stimulus_id[keep]],
                                       np.r_[merged.concept, t.concept[keep]],
                                       np.r_[merged.image_path, t.image_path[keep]], np.r_[merged.split, t.split[keep]])
            no_images = not any(merged.image_path)
            if no_images:
                logger.warning(f"no images: the stimulus table lists the categories {merged.stimulus_id.tolist()} "
                               f"without image paths ({'no --images given' if images is None else f'none in {images}'}"
                               "), so decoding targets must be made from the category names (text embeddings or "
                               "one-hot vectors) rather than from image embeddings")
            finish_prepared(out, merged, {
                "source": "csv", "modality": "eeg", "root": str(root), "duplicates_dropped": dups,
                "stimulus_level": "category: image_path is the category's image folder; its teacher embedding is "
                                  "the mean of the embeddings of the folder's images",
                "images": "none" if no_images else "one folder per category",
                "options": {"channels": None if opt.channels is None else list(opt.channels), "sfreq": opt.sfreq,
                            "event_map": {str(k): v for k, v in code_names.items()}, "tmin": opt.tmin, "tmax": opt.tmax,
                            "l_freq": opt.l_freq, "h_freq": opt.h_freq, "reject": opt.reject, "unit": opt.unit}}, infos)
        elif dups:
            logger.warning(f"{len(dups)} duplicate file(s) dropped")
    return out


def _prepare_subject(root: Path, out: Path, subject: str, srecs: list[Recording], opt: CSVOptions,
                     code_names: dict[int, str], images: Path | None, required: bool, explicit: dict[str, str],
                     dups: list[dict[str, str]], unit_scale: float, progress: bool,
                     verbose: bool | str | None) -> tuple[StimulusTable, dict[str, Any]]:
    """Read, epoch and write one subject's recordings; returns its stimulus table and summary."""
    chunks, stim, sess, runs, onsets, file_info = [], [], [], [], [], []
    info = None
    chans_ref: list[str] | None = None
    sfreq_used: set[float] = set()
    for rec in progress_bar(srecs, enabled=progress, desc=f"sub-{subject}", unit="file"):
        header, data = read_csv_recording(rec.path)
        tcol, mcol, chans, skipped = pick_columns(rec.path, header, time_column=opt.time_column,
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
        sfreq_used.add(fs)
        cn = code_names or {int(c): _num(c) for c in np.unique(data[:, header.index(mcol)]) if c != 0}
        epochs, stats = _epoch_file(rec, data, header, tcol=tcol, mcol=mcol, chans=chans, sfreq=fs,
                                    unit_scale=unit_scale, code_names=cn, l_freq=opt.l_freq, h_freq=opt.h_freq,
                                    tmin=opt.tmin, tmax=opt.tmax, baseline=opt.baseline, reject=opt.reject,
                                    montage=opt.montage, verbose=verbose)
        del data
        fi = {"file": str(rec.path.relative_to(root)), "session": rec.session, "run": rec.run, "sfreq": fs, **stats}
        file_info.append(fi)
        _file_report(fi, cn, opt.reject, opt.unit)
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
    codes_found: dict[int, int] = {}
    for fi in file_info:
        for c, n in fi["marker_codes"].items():
            codes_found[c] = codes_found.get(c, 0) + n
    n_events = sum(fi["n_events"] for fi in file_info)
    n_lost = sum(fi["n_rejected"] for fi in file_info)
    if info is None:
        if n_events == 0:
            raise UserError(f"Subject {subject}: no epoch in {len(srecs)} file(s): the event map "
                            f"{_map_text(code_names) or '(none)'} matches none of the marker codes found, "
                            f"{format_codes(codes_found)} (code (xcount)). Fix --event-map, e.g. --event-map "
                            + ",".join(f"{c}=NAME{i + 1}" for i, c in enumerate(sorted(codes_found)[:4])) + ".")
        raise UserError(f"Subject {subject}: all {n_events} epochs of {len(srecs)} file(s) were rejected (peak-to-peak "
                        f"over {opt.reject:g} {opt.unit}, or too close to a recording's ends). Raise --reject (0 keeps "
                        "every epoch) or check --unit.")
    unused = sorted(set(code_names) - set(codes_found))
    if unused:
        logger.warning(f"sub-{subject}: event map code(s) {unused} never occur; marker codes found: "
                       f"{format_codes(codes_found)} (code (xcount))")
    if n_lost / max(n_events, 1) > LOSS_WARNING:
        logger.warning(f"sub-{subject}: {n_lost} of {n_events} epochs rejected, {n_events - n_lost} kept")
    order = list(dict.fromkeys(code_names[c] for c in sorted(code_names))) if code_names else sorted(set(stim))
    shown = set(stim)
    cats = [c for c in order if c in shown]
    paths = category_images(cats, images, out=out, explicit=explicit, required=required)
    table = StimulusTable(cats, cats, paths, ["train"] * len(cats), root=None)
    signals = np.concatenate(chunks)
    n = len(signals)
    prov = [provenance_step("read_csv", root=str(root), files=[fi["file"] for fi in file_info],
                            channels=chans_ref, sfreq=opt.sfreq, sfreq_used=sorted(sfreq_used),
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
    logger.info(f"sub-{subject}: {n} epochs {counts} from {len(srecs)} file(s), {n_lost} rejected")
    return table, {"n_trials": n, "n_chans": int(signals.shape[1]), "n_times": int(signals.shape[2]),
                   "sfreq": float(info["sfreq"]), "ch_names": list(info["ch_names"]),
                   "trials_per_category": counts, "n_events": n_events, "n_rejected": n_lost,
                   "marker_codes": {str(c): k for c, k in sorted(codes_found.items())}, "files": file_info}


def _num(c: float) -> str:
    return str(int(c)) if float(c).is_integer() else str(c)


__all__ = ["CSVOptions", "prepare_csv", "find_recordings", "read_csv_recording", "estimate_sfreq",
           "CSVFormatError", "CSV_EXPECTED", "Recording", "format_codes"]
