"""Block-design fMRI in NIfTI with BIDS-style events: ``neurodecode prepare nifti``.

Each run is a 4-D NIfTI (``X x Y x Z x volumes``) with an events table (tab-separated, columns
``onset``, ``duration``, ``trial_type``, in seconds from the first volume), as in BIDS or the
Haxby et al. (2001) data distributed with PyMVPA::

    ROOT/sub001/BOLD/task001_run001/bold_1slice.nii.gz + bold_events.tsv
    ROOT/sub-01/func/sub-01_task-x_run-01_bold.nii.gz + sub-01_task-x_run-01_events.tsv

One sample per block: each voxel's time series is z-scored within its run (``standardize``), then
averaged over the volumes acquired from ``onset + delay`` (the hemodynamic delay, default 4 s) to
the end of the block (``onset + duration``); volume ``v`` is taken at ``v * TR``. The label is the
block's ``trial_type``; the stimulus table has one row per category (``image_path`` is the
category's image folder when ``images`` is given, else empty). Every block is ``train``; the run
is kept as the per-trial field ``run`` (and the session, when the path names one) so that
decoders can be cross-validated leaving one run out. Without a mask, voxels that are constant in
every run (outside the head) are dropped.

nibabel is an optional dependency (``pip install 'neurodecode[fmri]'``).
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from neurodecode._docs import fill_doc
from neurodecode.io.store import StimulusTable, StoreWriter
from neurodecode.readers.common import (
    BadFileError,
    check_root_folder,
    finish_prepared,
    is_done,
    number_in,
    parse_mapping,
    provenance_step,
    reading,
    record_prepare_options,
    select_subjects,
    store_path,
    subject_label,
)
from neurodecode.readers.epochs_writer import occurrence_index
from neurodecode.readers.images import category_images
from neurodecode.readers.options import ReaderOptions, comma_list, option, resolve_options
from neurodecode.utils import PathLike, logger, use_log_level
from neurodecode.utils import progress as progress_bar

NIFTI_EXPECTED = "a 4-D NIfTI run (.nii or .nii.gz)"


def require_nibabel():
    """Import nibabel, or fail with how to install it."""
    try:
        import nibabel
    except ImportError:  # pragma: no cover - nibabel is installed in the dev environment
        raise ImportError("Reading NIfTI files needs nibabel, an optional dependency: "
                          "pip install 'neurodecode[fmri]' (or pip install nibabel).") from None
    return nibabel


@dataclass
class NiftiOptions(ReaderOptions):
    """Options of :func:`prepare_nifti`."""

    GROUP: ClassVar[str] = "block-design NIfTI"

    bold: str = option("*bold.nii*", help="file name pattern of the 4-D runs, searched recursively (Haxby: "
                                          "'bold_1slice.nii.gz' or 'bold_25mm.nii.gz')")
    events: str | None = option(None, help="events file name pattern next to each run (default: '<run>_events.tsv', "
                                           "else the one '*events.tsv' in the run's folder)")
    mask: str | None = option(None, help="3-D NIfTI mask (voxels > 0), relative to --root or absolute; '{subject}' is "
                                         "replaced by the subject label (default: every voxel that varies)")
    tr: float | None = option(None, help="repetition time in s", none="from the NIfTI header")
    delay: float = option(4.0, help="hemodynamic delay in s: average volumes from onset + DELAY to the block's end")
    standardize: bool = option(True, help="do not z-score voxels within each run")
    images: Path | None = option(None, parse=Path,
                                 help="folder with one image folder per category (NAME, NAMEs or NAMEes)",
                                 none="no image paths")
    image_folders: str | None = option(None, help="explicit 'category=folder' pairs, comma-separated")
    trial_types: list[str] | None = option(None, parse=comma_list,
                                           help="comma-separated trial types to keep (default all)")
    subjects: list[str] | None = option(None, parse=comma_list,
                                        help="comma-separated subject labels (default all found)")


@dataclass
class Run:
    """One NIfTI run and its events file."""

    bold: Path
    events: Path
    subject: str
    session: int
    run: int
    blocks: list[dict[str, Any]] = field(default_factory=list)


# --------------------------------------------------------------------------------------------------
# discovery
# --------------------------------------------------------------------------------------------------
def _events_for(bold: Path, events: str | None) -> Path:
    folder = bold.parent
    if events is not None:
        hits = sorted(folder.glob(events))
        if len(hits) != 1:
            raise FileNotFoundError(f"{bold}: {'no' if not hits else 'several'} events file(s) match {events!r} in "
                                    f"{folder}{': ' + str([h.name for h in hits]) if hits else ''}.")
        return hits[0]
    name = bold.name
    for suf in ("_bold.nii.gz", "_bold.nii", ".nii.gz", ".nii"):
        if name.endswith(suf):
            cand = folder / (name[: -len(suf)] + "_events.tsv")
            if cand.is_file():
                return cand
    hits = sorted(folder.glob("*events.tsv"))
    if len(hits) == 1:
        return hits[0]
    raise FileNotFoundError(f"{bold}: cannot find its events table ({'no' if not hits else 'several'} '*events.tsv' "
                            f"in {folder}{': ' + str([h.name for h in hits]) if hits else ''}). Pass --events NAME.")


def find_runs(root: PathLike, *, bold: str = "*bold.nii*", events: str | None = None) -> list[Run]:
    """The runs under ``root``: NIfTI files matching ``bold`` (a name pattern searched recursively,
    or a path pattern relative to ``root`` when it holds a ``/``) and their events files."""
    root = check_root_folder(root, "the NIfTI runs and their events.tsv files")
    files = sorted(root.glob(bold) if "/" in bold else root.rglob(bold))
    files = [f for f in files if f.is_file() and f.name.endswith((".nii", ".nii.gz"))]
    if not files:
        some = sorted(str(p.relative_to(root)) for p in root.rglob("*.nii*"))[:8]
        raise FileNotFoundError(f"No NIfTI file under {root} matches --bold {bold!r}. NIfTI files found: "
                                f"{some or 'none'}. Pass --bold with the run file name, e.g. 'bold_1slice.nii.gz'.")
    runs, seen_folder = [], {}
    count: dict[tuple[str, int], int] = {}
    for f in files:
        if f.parent in seen_folder:
            raise ValueError(f"Several files match --bold {bold!r} in {f.parent}: {seen_folder[f.parent].name} and "
                             f"{f.name}. Pass a more specific --bold.")
        seen_folder[f.parent] = f
        parts = f.relative_to(root).parts
        subject = next((subject_label(p, "") for p in parts[:-1] if subject_label(p, "")), "01")
        session = next((n for p in parts[:-1] if (n := number_in(p, "ses(?:sion)?")) is not None), 0)
        run = next((n for p in reversed(parts) if (n := number_in(p, "run")) is not None), None)
        key = (subject, session)
        count[key] = count.get(key, 0) + 1
        runs.append(Run(f, _events_for(f, events), subject, session, run if run is not None else count[key]))
    return runs


def read_events(path: PathLike) -> list[dict[str, Any]]:
    """Read a BIDS-style events table: tab-separated, columns onset, duration, trial_type."""
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            return _read_event_rows(path, csv.DictReader(f, delimiter="\t"))
    except UnicodeDecodeError as err:
        raise BadFileError(path, "a tab-separated events table (onset, duration, trial_type)",
                           f"not UTF-8 text: {err}") from None


def _read_event_rows(path: Path, reader: csv.DictReader) -> list[dict[str, Any]]:
    """The rows of an events table being read by ``reader`` (checked, one message per problem)."""
    header = [h.strip() for h in (reader.fieldnames or [])]
    missing = [c for c in ("onset", "duration", "trial_type") if c not in header]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing}; found {header}. An events table is "
                         "tab-separated with the columns onset, duration, trial_type.")
    rows = []
    for i, r in enumerate(reader):
        r = {(k or "").strip(): (v or "").strip() for k, v in r.items()}
        try:
            onset, duration = float(r["onset"]), float(r["duration"])
        except ValueError:
            raise ValueError(f"{path}: line {i + 2}: onset {r['onset']!r} / duration {r['duration']!r} must be "
                             "numbers in seconds.") from None
        if not (math.isfinite(onset) and math.isfinite(duration)) or duration <= 0:
            raise ValueError(f"{path}: line {i + 2}: onset {onset} and duration {duration} must be finite with "
                             "a positive duration (block design).")
        if not r["trial_type"] or r["trial_type"].lower() == "n/a":
            raise ValueError(f"{path}: line {i + 2}: trial_type is empty.")
        rows.append({"onset": onset, "duration": duration, "trial_type": r["trial_type"]})
    return rows


def block_volumes(onset: float, duration: float, tr: float, n_volumes: int, delay: float) -> np.ndarray:
    """Indices of the volumes acquired in ``[onset + delay, onset + duration)`` (volume ``v`` at ``v * tr``)."""
    eps = 1e-6 * tr
    first = max(0, math.ceil((onset + delay - eps) / tr))
    stop = min(n_volumes, math.ceil((onset + duration - eps) / tr))
    return np.arange(first, max(first, stop))


def _tr_of(img, path: Path, tr: float | None) -> float:
    if tr is not None:
        return float(tr)
    zooms = img.header.get_zooms()
    t = float(zooms[3]) if len(zooms) > 3 else 0.0
    unit = img.header.get_xyzt_units()[1]
    if unit == "msec":
        t /= 1000.0
    elif unit == "usec":
        t /= 1e6
    if not t > 0:
        raise ValueError(f"{path}: the header gives no repetition time (pixdim[4] = {t}). Pass --tr SECONDS.")
    return t


# --------------------------------------------------------------------------------------------------
# reader
# --------------------------------------------------------------------------------------------------
@fill_doc
def prepare_nifti(
    root: PathLike,
    out: PathLike,
    options: NiftiOptions | None = None,
    *,
    overwrite: bool = False,
    progress: bool = True,
    verbose: bool | str | None = None,
    **fields: Any,
) -> Path:
    """Prepare block-design NIfTI runs into fMRI trial stores, one sample per block.

    Parameters
    ----------
    root : path-like
        Folder searched for runs.
    out : path-like
        Output folder.
    options : NiftiOptions | None
        The options (defaults: :class:`NiftiOptions`). ``bold``: file name pattern of the runs
        (``root.rglob``), or a path pattern relative to ``root``. ``events``: file name pattern of
        the events table in the run's folder (default: BIDS sibling, else the one
        ``*events.tsv`` there). ``mask``: 3-D NIfTI mask (voxels > 0), relative to ``root`` or
        absolute; ``{subject}`` is replaced by the subject label (default: every voxel that varies
        in at least one run). ``tr``: repetition time in s (default: from the NIfTI header).
        ``delay``: hemodynamic delay in s; a block's sample averages volumes from
        ``onset + delay`` to its end. ``standardize``: z-score each voxel within each run before
        averaging. ``images``, ``image_folders``: per-category image folders (see below).
        ``trial_types``: keep only these trial types (default all). ``subjects``: subject labels
        to prepare (default all found).
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
    opt = resolve_options(NiftiOptions, options, fields)
    nib = require_nibabel()
    root, out = Path(root), Path(out)
    with use_log_level(verbose):
        runs = find_runs(root, bold=opt.bold, events=opt.events)
        want = select_subjects([r.subject for r in runs], opt.subjects, root=root)
        runs = [r for r in runs if r.subject in want]
        explicit = parse_mapping(opt.image_folders, what="image_folders") if opt.image_folders is not None else {}
        record_prepare_options(out, "nifti", opt.as_dict(), overwrite=overwrite)
        keep_types = None if opt.trial_types is None else set(opt.trial_types)
        by_subject: dict[str, list[Run]] = {}
        for r in runs:
            by_subject.setdefault(r.subject, []).append(r)
        out.mkdir(parents=True, exist_ok=True)
        tables, infos = [], {}
        for subject, sruns in sorted(by_subject.items()):
            if is_done(out, subject, overwrite=overwrite):
                continue
            # header pass: shapes, TR, blocks (no voxel data read yet)
            shape3, affine, trs, skipped = None, None, {}, []
            for r in sruns:
                with reading(r.bold, NIFTI_EXPECTED):
                    img = nib.load(str(r.bold))
                if len(img.shape) != 4:
                    raise ValueError(f"{r.bold}: a run must be a 4-D NIfTI (X, Y, Z, volumes), got shape {img.shape}.")
                if shape3 is None:
                    shape3, affine = tuple(img.shape[:3]), img.affine
                elif tuple(img.shape[:3]) != shape3:
                    raise ValueError(f"{r.bold}: volume shape {img.shape[:3]} differs from {shape3} of "
                                     f"{sruns[0].bold}; all runs of a subject must share one grid.")
                t = trs[r.bold] = _tr_of(img, r.bold, opt.tr)
                for ev in read_events(r.events):
                    if keep_types is not None and ev["trial_type"] not in keep_types:
                        continue
                    vols = block_volumes(ev["onset"], ev["duration"], t, img.shape[3], opt.delay)
                    if len(vols) == 0:
                        skipped.append(f"{r.events.name} onset {ev['onset']}")
                        continue
                    r.blocks.append({**ev, "volumes": vols})
            if skipped:
                logger.warning(f"sub-{subject}: {len(skipped)} block(s) have no volume after the {opt.delay} s delay "
                               f"and are skipped: {skipped[:5]}")
            n = sum(len(r.blocks) for r in sruns)
            if n == 0:
                raise ValueError(f"sub-{subject}: no block to write (trial_types={opt.trial_types}).")
            vox_mask = None
            mask_file = None
            if opt.mask is not None:
                mask_file = Path(str(opt.mask).replace("{subject}", subject))
                if not mask_file.is_absolute():
                    mask_file = root / mask_file
                if not mask_file.is_file():
                    raise FileNotFoundError(f"Mask {mask_file} not found (--mask; '{{subject}}' is replaced by the "
                                            "subject label, relative paths are relative to --root).")
                with reading(mask_file, "a NIfTI mask (.nii or .nii.gz)"):
                    m = np.asarray(nib.load(str(mask_file)).dataobj)
                m = m.reshape(m.shape[:3]) if m.ndim == 4 and m.shape[3] == 1 else m
                if m.shape != shape3:
                    raise ValueError(f"{mask_file}: mask shape {m.shape} differs from the runs' volume shape {shape3}.")
                vox_mask = m > 0
                if not vox_mask.any():
                    raise ValueError(f"{mask_file}: no voxel is > 0.")
            flat_idx = None if vox_mask is None else np.flatnonzero(vox_mask.ravel())
            samples, varying = [], None
            labels, run_ids, sessions, onsets, nvols = [], [], [], [], []
            for r in progress_bar(sruns, enabled=progress, desc=f"sub-{subject}", unit="run"):
                with reading(r.bold, NIFTI_EXPECTED):
                    data = np.asarray(nib.load(str(r.bold)).dataobj, dtype=np.float32)
                ts = data.reshape(-1, data.shape[3])  # (voxels in C order over X, Y, Z, volumes)
                del data
                if flat_idx is not None:
                    ts = ts[flat_idx]
                sd = ts.std(axis=1)
                varying = sd > 0 if varying is None else (varying | (sd > 0))
                if opt.standardize:
                    mu = ts.mean(axis=1, keepdims=True)
                    ts = np.where(sd[:, None] > 0, (ts - mu) / np.where(sd > 0, sd, 1.0)[:, None], 0.0)
                for b in r.blocks:
                    samples.append(ts[:, b["volumes"]].mean(axis=1).astype(np.float32))
                    labels.append(b["trial_type"])
                    run_ids.append(r.run)
                    sessions.append(r.session)
                    onsets.append(b["onset"])
                    nvols.append(len(b["volumes"]))
                del ts
            signals = np.stack(samples)
            if flat_idx is None:
                keep = np.flatnonzero(varying)
                logger.info(f"sub-{subject}: no mask; {int((~varying).sum())} voxel(s) constant in every run dropped")
                signals, flat_idx = signals[:, keep], keep
            ijk = np.column_stack(np.unravel_index(flat_idx, shape3))
            cats = list(dict.fromkeys(labels))
            paths = category_images(cats, opt.images, out=out, explicit=explicit)
            table = StimulusTable(cats, cats, paths, ["train"] * len(cats), root=None)
            prov = [provenance_step("nifti_blocks", root=str(root), bold=opt.bold, events=opt.events,
                                    runs=[str(r.bold.relative_to(root)) for r in sruns],
                                    mask=None if mask_file is None else str(mask_file), tr=sorted(set(trs.values())),
                                    delay=opt.delay, window="[onset + delay, onset + duration)", standardize=opt.standardize,
                                    trial_types=None if opt.trial_types is None else list(opt.trial_types),
                                    n_voxels=int(signals.shape[1]))]
            with StoreWriter(store_path(out, subject), len(signals), (signals.shape[1],), modality="fmri",
                             stimuli=table, subject=subject, provenance=prov,
                             attrs={"tr": float(next(iter(trs.values()))), "delay": opt.delay}) as w:
                w.write(0, signals)
                w.finish(stimulus_id=labels, split=["train"] * len(labels), repetition=occurrence_index(labels),
                         session=np.asarray(sessions, np.int32),
                         extra={"run": np.asarray(run_ids, np.int32), "onset": np.asarray(onsets, np.float64),
                                "n_volumes": np.asarray(nvols, np.int32)},
                         voxel_ijk=ijk, volume_shape=shape3, affine=affine)
            counts = {c: labels.count(c) for c in cats}
            infos[subject] = {"n_trials": len(labels), "n_voxels": int(signals.shape[1]), "n_runs": len(sruns),
                              "volume_shape": list(shape3), "tr": sorted(set(trs.values())), "blocks_per_type": counts}
            logger.info(f"sub-{subject}: {len(labels)} blocks from {len(sruns)} runs, {signals.shape[1]} voxels")
            tables.append(table)
        if tables:
            merged = tables[0]
            for t in tables[1:]:
                k = ~np.isin(t.stimulus_id, merged.stimulus_id)
                merged = StimulusTable(np.r_[merged.stimulus_id, t.stimulus_id[k]], np.r_[merged.concept, t.concept[k]],
                                       np.r_[merged.image_path, t.image_path[k]], np.r_[merged.split, t.split[k]])
            finish_prepared(out, merged, {
                "source": "nifti", "modality": "fmri", "root": str(root),
                "stimulus_level": "category: one sample per block; image_path (when given) is the category's image "
                                  "folder, embedded as the mean of its images",
                "cross_validation": "leave one run out with the per-trial field 'run'",
                "options": {"bold": opt.bold, "events": opt.events, "mask": None if opt.mask is None else str(opt.mask), "tr": opt.tr,
                            "delay": opt.delay, "standardize": opt.standardize}}, infos)
    return out


__all__ = ["NiftiOptions", "prepare_nifti", "find_runs", "read_events", "block_volumes", "require_nibabel"]
