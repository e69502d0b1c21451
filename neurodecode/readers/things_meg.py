"""THINGS-MEG reader (Hebart et al. 2023, OpenNeuro ds004212): ``neurodecode prepare things-meg``.

Layout read (``neurodecode/io/data_manifests/things_meg.yaml``)::

    ROOT/derivatives/preprocessed/preprocessed_P{1..4}-epo.fif   (+ the split parts -epo-1/2/3.fif)

Each file holds one participant's MNE epochs: 271 MEG channels, -0.1 to 1.3 s at 200 Hz, already
band-passed 0.1-40 Hz and baseline z-scored by the authors. The event id of an epoch
(``epochs.events[:, 2]``) is the 1-based row of its image in the THINGS database's
``Metadata/Image-specific/image_paths.csv``; the same row of
``Metadata/Concept-specific/image_concept_index.csv`` is the image's 1-based concept index. Both are
header-less one-column CSVs (rows such as ``images/aardvark/aardvark_01b.jpg`` and ``1``); they
ship with the THINGS database (https://osf.io/jum2f/), not with ds004212, and are found with
``--things-meta``. Event id 999999 marks catch trials, which are dropped.

Splits, as the zero-shot decoding literature defines them: the 200 test images are the images
presented 12 times (``test_repetitions``); training images whose concept is the concept of a test
image are removed, leaving 1654 concepts x 12 images, one presentation each. Test trials are kept
one by one with their repetition number (0-11, in presentation order); averaging happens at load
time.

Processing, per chunk of epochs with MNE: optional band-pass, resampling (default 200 Hz, the
native rate), crop to ``[0, 1)`` s, then a per-channel z-score (or robust) scaling fitted on
training trials only. Stimulus ids are the image file stems (``aardvark_01b``), concepts the THINGS
concept folder names.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from neurodecode._docs import fill_doc
from neurodecode.io.manifests import check_root
from neurodecode.io.store import StimulusTable
from neurodecode.readers.common import (
    finish_prepared,
    is_done,
    mne_verbose,
    provenance_step,
    reading,
    record_prepare_options,
    store_path,
)
from neurodecode.readers.epochs_writer import (
    EPOCHS_EXPECTED,
    EpochsSpec,
    default_picks,
    occurrence_index,
    write_epochs_store,
)
from neurodecode.readers.options import EpochOptions, ReaderOptions, comma_list, option, resolve_options
from neurodecode.utils import PathLike, logger, use_log_level

SUBJECTS = ("1", "2", "3", "4")
EPOCHS_PATTERN = "derivatives/preprocessed/preprocessed_P{subject}-epo.fif"
CATCH_EVENT = 999999
IMAGE_PATHS_CSV = "image_paths.csv"
CONCEPT_INDEX_CSV = "image_concept_index.csv"
_META_SUBDIRS = {IMAGE_PATHS_CSV: ("", "Image-specific", "Metadata/Image-specific", "THINGS/Metadata/Image-specific"),
                 CONCEPT_INDEX_CSV: ("", "Concept-specific", "Metadata/Concept-specific",
                                     "THINGS/Metadata/Concept-specific")}


def _things_meg_processing() -> EpochOptions:
    return EpochOptions(tmin=0.0, tmax=1.0, sfreq=200.0, scaling="zscore")


@dataclass
class ThingsMEGOptions(ReaderOptions):
    """Options of :func:`prepare_things_meg`; ``processing`` defaults to a crop to ``[0, 1)`` s at the
    native 200 Hz and a per-channel z-score fitted on training trials."""

    GROUP: ClassVar[str] = "THINGS-MEG"

    things_meta: Path | None = option(None, parse=Path,
                                      help="folder with THINGS image_paths.csv and image_concept_index.csv (directly "
                                           "or under Metadata/Image-specific, Metadata/Concept-specific); default: "
                                           "searched under --root")
    images: Path | None = option(None, parse=Path,
                                 help="THINGS image folder (concept sub-folders); without it the stimulus table has "
                                      "no image paths")
    subjects: list[str] | None = option(None, parse=comma_list,
                                        help="comma-separated participants 1-4 (default: all present)")
    test_repetitions: int = option(12, help="presentation count that marks a test image")
    catch_event: int = option(CATCH_EVENT, help="event id of catch trials")
    processing: EpochOptions = option(help="chunked MNE processing", factory=_things_meg_processing)


# --------------------------------------------------------------------------------------------------
# THINGS metadata and images
# --------------------------------------------------------------------------------------------------
def find_things_meta(folder: PathLike) -> tuple[Path, Path]:
    """Paths of ``image_paths.csv`` and ``image_concept_index.csv`` under ``folder``.

    Looked for directly in ``folder`` and in ``Image-specific``/``Concept-specific``, with or
    without a leading ``Metadata/`` or ``THINGS/Metadata/``. Raises one ``FileNotFoundError``
    listing every place searched.
    """
    folder = Path(folder)
    found, tried = {}, []
    for name, subdirs in _META_SUBDIRS.items():
        for sub in subdirs:
            p = folder / sub / name
            tried.append(str(p))
            if p.is_file():
                found[name] = p
                break
    missing = [n for n in _META_SUBDIRS if n not in found]
    if missing:
        raise FileNotFoundError(
            f"THINGS metadata {missing} not found under {folder} (looked in: {', '.join(tried)}). "
            "They come with the THINGS database (https://osf.io/jum2f/, folder Metadata); pass that folder "
            "with --things-meta.")
    return found[IMAGE_PATHS_CSV], found[CONCEPT_INDEX_CSV]


def read_things_meta(image_paths_csv: PathLike, concept_index_csv: PathLike) -> tuple[list[str], np.ndarray]:
    """Read the two header-less one-column THINGS metadata CSVs.

    Returns
    -------
    image_paths : list of str
        Row ``i`` is the path (e.g. ``images/aardvark/aardvark_01b.jpg``) of event id ``i + 1``.
    concept_index : ndarray of int
        Row ``i`` is the 1-based concept index of that image.
    """
    p1, p2 = Path(image_paths_csv), Path(concept_index_csv)
    paths = [line.strip().strip('"') for line in p1.read_text(encoding="utf-8-sig").splitlines()]
    while paths and not paths[-1]:
        paths.pop()
    empty = [i + 1 for i, p in enumerate(paths) if not p]
    if empty:
        raise ValueError(f"{p1}: line {empty[0]} is empty; every line must be an image path.")
    if paths and not paths[0].lower().endswith((".jpg", ".jpeg", ".png")):
        raise ValueError(f"{p1}: line 1 is {paths[0]!r}, not an image path. The THINGS file has no header "
                         "line; remove it if you added one.")
    lines = [line.strip() for line in p2.read_text(encoding="utf-8-sig").splitlines()]
    while lines and not lines[-1]:
        lines.pop()
    try:
        concept = np.array([int(float(v)) for v in lines], dtype=np.int64)
    except ValueError:
        bad = next(i for i, v in enumerate(lines) if not _is_number(v))
        raise ValueError(f"{p2}: line {bad + 1} is {lines[bad]!r}, not a concept number. The THINGS file "
                         "has no header and one integer per line.") from None
    if len(concept) != len(paths):
        raise ValueError(f"{p1} has {len(paths)} rows but {p2} has {len(concept)}; both list the same images "
                         "in the same order (26107 rows in the THINGS database).")
    return paths, concept


def _is_number(v: str) -> bool:
    try:
        float(v)
    except ValueError:
        return False
    return True


def concept_of(image_path: str) -> str:
    """THINGS concept name of an ``image_paths.csv`` entry: the image's folder name."""
    parts = image_path.replace("\\", "/").split("/")
    return parts[-2] if len(parts) >= 2 else Path(image_path).stem.rsplit("_", 1)[0]


def locate_things_images(entries: list[str], images: PathLike) -> list[str]:
    """Absolute image files of ``image_paths.csv`` entries under the folder ``images``.

    Tries ``images/<entry>``, then ``images/<entry without its first folder>`` (the entries start
    with ``images/``), then the file name anywhere under ``images`` (so the THINGS-EEG2
    ``training_images/00001_aardvark/aardvark_01b.jpg`` layout works too). Raises one
    ``FileNotFoundError`` naming the missing images.
    """
    folder = Path(images)
    if not folder.is_dir():
        raise FileNotFoundError(f"Image folder {folder} does not exist (--images).")
    by_name: dict[str, str] | None = None
    out, missing = [], []
    for e in entries:
        e_posix = e.replace("\\", "/")
        cands = [folder / e_posix]
        if "/" in e_posix:
            cands.append(folder / e_posix.split("/", 1)[1])
        hit = next((c for c in cands if c.is_file()), None)
        if hit is None:
            if by_name is None:
                by_name = {}
                for dirpath, _, files in os.walk(folder):
                    for f in files:
                        by_name.setdefault(f, os.path.join(dirpath, f))
            name = e_posix.rsplit("/", 1)[-1]
            hit = Path(by_name[name]) if name in by_name else None
        if hit is None:
            missing.append(e)
            out.append("")
        else:
            out.append(str(hit.resolve()))
    if missing:
        raise FileNotFoundError(f"{len(missing)} THINGS image(s) not found under {folder}, e.g. {missing[:5]}. "
                                "Pass the THINGS image folder (concept sub-folders) with --images.")
    return out


# --------------------------------------------------------------------------------------------------
# reader
# --------------------------------------------------------------------------------------------------
def select_trials(events: np.ndarray, concept_index: np.ndarray, *, test_repetitions: int = 12,
                  catch_event: int = CATCH_EVENT, source: str = "epochs") -> dict[str, Any]:
    """The THINGS-MEG trial selection, from the event ids of one subject.

    Returns a dict with ``keep`` (indices of the kept epochs, in recording order), ``split``
    (per kept epoch), ``test_ids`` and ``n_catch``, ``n_removed_train`` (training trials of test
    concepts). Event ids must be rows of the metadata (1..N) or ``catch_event``.
    """
    ev = np.asarray(events, dtype=np.int64)
    catch = ev == catch_event
    n_rows = len(concept_index)
    bad = np.flatnonzero(~catch & ((ev < 1) | (ev > n_rows)))
    if len(bad):
        raise ValueError(f"{source}: event id(s) {sorted(set(ev[bad].tolist()))[:5]} (first at epoch {bad[0]}) are "
                         f"not rows of image_paths.csv (1..{n_rows}) nor the catch id {catch_event}. Are the "
                         "THINGS metadata files (--things-meta) the ones of the THINGS database?")
    ids, counts = np.unique(ev[~catch], return_counts=True)
    test_ids = ids[counts == test_repetitions]
    if len(test_ids) == 0:
        raise ValueError(f"{source}: no image is shown {test_repetitions} times, so no test set can be formed "
                         f"(presentation counts found: {sorted(set(counts.tolist()))}). Check test_repetitions.")
    test_concepts = set(concept_index[test_ids - 1].tolist())
    is_test = np.isin(ev, test_ids) & ~catch
    train_cand = ~catch & ~is_test
    of_test_concept = train_cand & np.isin(concept_index[np.clip(ev, 1, n_rows) - 1], list(test_concepts))
    keep_mask = is_test | (train_cand & ~of_test_concept)
    keep = np.flatnonzero(keep_mask)
    return {"keep": keep, "split": np.where(is_test[keep], "test", "train"), "test_ids": test_ids,
            "n_catch": int(catch.sum()), "n_removed_train": int(of_test_concept.sum()),
            "n_test_concepts": len(test_concepts)}


@fill_doc
def prepare_things_meg(
    root: PathLike,
    out: PathLike,
    options: ThingsMEGOptions | None = None,
    *,
    overwrite: bool = False,
    progress: bool = True,
    verbose: bool | str | None = None,
    **fields: Any,
) -> Path:
    """Prepare THINGS-MEG into trial stores (see the module docstring for what is done).

    Parameters
    ----------
    root : path-like
        The ds004212 folder (holding ``derivatives/preprocessed``).
    out : path-like
        Output folder.
    options : ThingsMEGOptions | None
        The options (defaults: :class:`ThingsMEGOptions`). ``things_meta``: folder with the THINGS
        ``image_paths.csv`` and ``image_concept_index.csv`` (see :func:`find_things_meta`; default:
        looked for under ``root``). ``images``: THINGS image folder; without it the stimulus table
        has no image paths. ``subjects``: participants ``"1"``..``"4"`` (default: those whose file
        is present, else all four, so that the manifest check lists what is missing); stores are
        named ``sub-01`` ... ``sub-04``. ``test_repetitions``: presentation count that marks a test
        image. ``catch_event``: event id of catch trials. ``processing``: crop ``[tmin, tmax)``,
        optional band-pass (the published epochs are already 0.1-40 Hz), resampling and scaling
        (:class:`~neurodecode.readers.options.EpochOptions`); MNE's FIR and FFT paths run one
        channel at a time, slow with 271 channels, ``"iir"`` and ``"polyphase"`` are faster.
    %(overwrite)s
    %(progress)s
    %(verbose)s
    %(fields)s

    Returns
    -------
    %(returns_out)s
    """
    opt = resolve_options(ThingsMEGOptions, options, fields)
    proc = opt.processing
    subjects, images = opt.subjects, opt.images
    import mne

    root, out = Path(root), Path(out)
    with use_log_level(verbose):
        if subjects is None:
            present = [s for s in SUBJECTS if (root / EPOCHS_PATTERN.format(subject=s)).is_file()]
            subjects = present or list(SUBJECTS)
        subjects = [str(s).removeprefix("P").removeprefix("sub-").lstrip("0") or "0" for s in subjects]
        check_root(root, "things_meg", "preprocessed", subjects=subjects)
        img_csv, con_csv = find_things_meta(opt.things_meta if opt.things_meta is not None else root)
        entries, concept_index = read_things_meta(img_csv, con_csv)
        if images is None:
            logger.warning("things-meg: no --images folder: the stimulus table will have no image paths, so "
                           "teacher embeddings cannot be computed from it")
        record_prepare_options(out, "things-meg", opt.as_dict(), overwrite=overwrite)
        tables, infos = [], {}
        for s in subjects:
            label = f"{int(s):02d}"
            if is_done(out, label, overwrite=overwrite):
                continue
            fif = root / EPOCHS_PATTERN.format(subject=s)
            with reading(fif, EPOCHS_EXPECTED):
                epochs = mne.read_epochs(fif, preload=False, verbose=mne_verbose(verbose))
            sel = select_trials(epochs.events[:, 2], concept_index, test_repetitions=opt.test_repetitions,
                                catch_event=opt.catch_event, source=str(fif))
            keep = sel["keep"]
            ev = epochs.events[keep, 2].astype(np.int64)
            stems = [Path(entries[e - 1].replace("\\", "/")).stem for e in ev]
            uniq_ev = np.array(sorted(set(ev.tolist())), dtype=np.int64)
            uniq_entries = [entries[e - 1] for e in uniq_ev]
            paths = locate_things_images(uniq_entries, images) if images is not None else [""] * len(uniq_ev)
            test_set = set(sel["test_ids"].tolist())
            table = StimulusTable([Path(e.replace("\\", "/")).stem for e in uniq_entries],
                                  [concept_of(e) for e in uniq_entries], paths,
                                  ["test" if e in test_set else "train" for e in uniq_ev], root=None)
            md = epochs.metadata
            session = (md["session_nr"].to_numpy()[keep].astype(np.int32)
                       if md is not None and "session_nr" in md.columns else np.zeros(len(keep), np.int32))
            extra: dict[str, Any] = {"image_nr": ev.astype(np.int32)}
            if md is not None and "run_nr" in md.columns:
                extra["run"] = md["run_nr"].to_numpy()[keep].astype(np.int32)
            picks, modality = default_picks(epochs, "meg")
            spec = EpochsSpec.from_options(picks, proc)
            prov = [provenance_step("things_meg_select", file=str(fif), things_meta=[str(img_csv), str(con_csv)],
                                    images=None if images is None else str(images), catch_event=opt.catch_event,
                                    test_repetitions=opt.test_repetitions, n_epochs=len(epochs.events),
                                    n_catch=sel["n_catch"], n_removed_train_of_test_concepts=sel["n_removed_train"],
                                    n_test_images=len(sel["test_ids"]))]
            summary = write_epochs_store(
                store_path(out, label), epochs, keep, stimulus_id=stems, split=sel["split"],
                repetition=occurrence_index(stems), session=session, stimuli=table, subject=label,
                modality=modality, spec=spec, scaling=proc.scaling, clamp=proc.clamp, fit_trials=proc.fit_trials,
                seed=proc.seed, chunk_size=proc.chunk_size, extra=extra, provenance=prov, show_progress=progress, verbose=verbose)
            n_train_concepts = len({c for c, sp in zip(table.concept, table.split, strict=True) if sp == "train"})
            infos[label] = {"file": str(fif), **summary, "n_catch_dropped": sel["n_catch"],
                            "n_train_trials_of_test_concepts_dropped": sel["n_removed_train"],
                            "n_test_images": len(sel["test_ids"]), "n_train_concepts": n_train_concepts}
            logger.info(f"sub-{label}: {summary['n_trials']} trials ({summary['n_test_trials']} test), "
                        f"{sel['n_catch']} catch dropped, {sel['n_removed_train']} training trials of test "
                        f"concepts dropped, {n_train_concepts} training concepts")
            tables.append(table)
            del epochs
        if tables:
            merged = tables[0]
            for t in tables[1:]:
                merged = _union(merged, t)
            finish_prepared(out, merged, {
                "source": "things-meg", "modality": "meg", "dataset": "THINGS-MEG (OpenNeuro ds004212)",
                "test_averaging": "test repetitions are stored one by one (repetition 0..11); average at load time",
                "options": {**{k: v for k, v in proc.as_dict().items()
                               if k in ("scaling", "clamp", "fit_trials", "tmin", "tmax", "l_freq", "h_freq", "sfreq",
                                        "filter_method", "resample_method")},
                            "test_repetitions": opt.test_repetitions, "catch_event": opt.catch_event}}, infos)
    return out


def _union(a: StimulusTable, b: StimulusTable) -> StimulusTable:
    seen = set(a.stimulus_id.tolist())
    m = np.array([s not in seen for s in b.stimulus_id.tolist()], dtype=bool)
    return StimulusTable(np.concatenate([a.stimulus_id, b.stimulus_id[m]]), np.concatenate([a.concept, b.concept[m]]),
                         np.concatenate([a.image_path, b.image_path[m]]), np.concatenate([a.split, b.split[m]]))


__all__ = ["ThingsMEGOptions", "prepare_things_meg", "select_trials", "read_things_meta", "find_things_meta",
           "locate_things_images", "concept_of"]
