"""Helpers shared by the readers: output folders, resuming, provenance, image look-up, stimulus
tables merged across subjects, subject/session labels from paths."""

from __future__ import annotations

import csv
import datetime as _dt
import json
import platform
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from neurodecode._version import __version__
from neurodecode.io.manifests import ManifestError
from neurodecode.io.prepared import store_filename, write_dataset_meta
from neurodecode.io.store import DATASET_FILENAME, STIMULI_FILENAME, StimulusTable, StoreError, validate_store
from neurodecode.utils import PathLike, UserError, logger, to_jsonable

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")


class BadFileError(UserError):
    """A data file that a library could not read: the message names the file, the format expected
    and the library's reason (e.g. a truncated download)."""

    def __init__(self, path: PathLike, expected: str, reason: str):
        self.path, self.expected, self.reason = Path(path), expected, reason
        super().__init__(f"{path}: cannot be read as {expected} ({reason}). The file is damaged, truncated (an "
                         f"interrupted download or copy?) or not {expected}: replace it with a complete copy.")


_OWN_ERRORS = (UserError, StoreError, ManifestError, MemoryError)


@contextmanager
def reading(path: PathLike, expected: str) -> Iterator[None]:
    """Re-raise a library's error while reading ``path`` as a :class:`BadFileError` naming the file.

    Wrap only the library calls that read the file (``h5py.File``, ``nib.load`` and ``dataobj``,
    ``mne.read_epochs`` and loading epochs, ``scipy.io.loadmat``, ``pandas.read_csv``): our own
    checks raise their own messages and pass through unchanged, as do ``MemoryError`` and
    interrupts.

    Parameters
    ----------
    path : path-like
        The file being read.
    expected : str
        What it should be, e.g. ``"an HDF5 file (NSD betas)"``.
    """
    try:
        yield
    except _OWN_ERRORS:
        raise
    except Exception as err:  # noqa: BLE001 - every library error becomes one message naming the file
        if isinstance(err, FileNotFoundError) and not Path(path).exists():
            raise UserError(f"{path} does not exist; expected {expected} there.") from err
        text = str(err).strip()
        raise BadFileError(path, expected, f"{type(err).__name__}: {text}" if text else type(err).__name__) from err


def check_root_folder(root: PathLike, what: str) -> Path:
    """``root`` as a Path when it is a folder; else a :class:`~neurodecode.utils.UserError` saying
    whether it is a file or does not exist, and what the folder should hold (``what``)."""
    root = Path(root)
    if root.is_dir():
        return root
    if root.exists():
        raise UserError(f"--root {root} is a file, not a folder: give the folder that holds {what} "
                        f"(perhaps {root.parent}).")
    raise UserError(f"--root {root} does not exist: give the folder that holds {what}.")


def select_subjects(available: Sequence[str], wanted: Sequence[Any] | None, *, root: PathLike) -> list[str]:
    """The subjects of ``wanted`` (``None``: all of ``available``), labels normalised as the readers
    name them (``7`` -> ``07``); a one-line :class:`~neurodecode.utils.UserError` lists the
    available subjects when one is absent."""
    available = sorted(dict.fromkeys(available))
    if wanted is None:
        return available
    want, missing = [], []
    for w in (str(w).strip().removeprefix("sub-") for w in wanted):
        hit = next((a for a in available if a == w or (w.isdigit() and a.isdigit() and int(a) == int(w))), None)
        if hit is None:
            missing.append(subject_label(f"sub-{w}", w))
        else:
            want.append(hit)
    if missing:
        raise UserError(f"--subjects: no subject {', '.join(missing)} under {root}; available subjects: "
                        f"{', '.join(available) or 'none'} (e.g. --subjects {','.join(available[:2])}).")
    return list(dict.fromkeys(want))


def store_path(out: Path | str, subject: str) -> Path:
    """Path of ``subject``'s store in the prepared folder ``out``."""
    return Path(out) / store_filename(subject)


def is_done(out: Path | str, subject: str, *, overwrite: bool = False) -> bool:
    """True when ``subject``'s store exists and validates, so a resumed ``prepare`` can skip it.

    A store that exists but does not validate is reported and rebuilt.
    """
    path = store_path(out, subject)
    if overwrite or not path.exists():
        return False
    try:
        validate_store(path, check_values=False)
    except StoreError as err:
        logger.warning(f"{path} is unusable and will be rebuilt ({err.problem})")
        return False
    logger.info(f"{path} exists and is valid: skipping subject {subject} (use --overwrite to rebuild)")
    return True


def provenance_step(step: str, **params: Any) -> dict[str, Any]:
    """One provenance record: the step, its parameters, the time, and the software versions."""
    return {
        "step": step,
        "params": params,
        "time": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "neurodecode": __version__,
        "python": platform.python_version(),
    }


def write_prepared_metadata(out: Path | str, stimuli: StimulusTable, meta: Mapping[str, Any]) -> None:
    """Write ``stimuli.tsv`` and ``dataset.json`` of a prepared folder (both atomically).

    The options record written by :func:`record_prepare_options` is kept unless ``meta`` has one.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    stimuli.write_tsv(out / STIMULI_FILENAME)
    recorded = _read_meta(out).get(PREPARE_OPTIONS_KEY)
    head = {"neurodecode_version": __version__, **({PREPARE_OPTIONS_KEY: recorded} if recorded is not None else {})}
    write_dataset_meta(out, {**head, **dict(meta)})


# --------------------------------------------------------------------------------------------------
# the options a prepared folder was made with
# --------------------------------------------------------------------------------------------------
PREPARE_OPTIONS_KEY = "prepare_options"
# options that select what to prepare rather than how: preparing subjects one run at a time is fine
SELECTION_OPTIONS = ("subjects",)


def _read_meta(out: Path) -> dict[str, Any]:
    path = out / DATASET_FILENAME
    if not path.is_file():
        return {}
    try:
        meta = json.loads(path.read_text())
    except ValueError:
        return {}
    return meta if isinstance(meta, dict) else {}


def _short(value: Any) -> str:
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= 60 else text[:57] + "..."


def record_prepare_options(out: PathLike, source: str, options: Mapping[str, Any], *,
                           overwrite: bool = False) -> dict[str, Any]:
    """Record in ``out/dataset.json`` the options of this ``prepare`` run, refusing to mix options.

    When ``out`` already holds stores made with other options (anything but the subject
    selection), a :class:`~neurodecode.utils.UserError` lists the differences and says how to
    go on (``--overwrite`` rebuilds every store with the new options, or another ``--out``). The
    same options go on as before: finished subjects are skipped.

    Parameters
    ----------
    out : path-like
        The prepared folder.
    source : str
        The reader (``"csv"``, ``"nifti"``...).
    options : mapping
        Every option of the run (e.g. ``ReaderOptions.as_dict()``).
    overwrite : bool
        Stores will be rebuilt: the record is replaced without a check.

    Returns
    -------
    record : dict
        What was recorded: ``{"source": source, **options}`` as JSON values.
    """
    out = Path(out)
    record = json.loads(json.dumps(to_jsonable({"source": source, **dict(options)}), default=str))
    old = _read_meta(out)
    stores = sorted(out.glob("sub-*.h5")) if out.is_dir() else []
    before = old.get(PREPARE_OPTIONS_KEY)
    if stores and not overwrite:
        if before is None:
            logger.warning(f"{out} holds {len(stores)} store(s) without a record of the options that made them: "
                           "they are kept as they are (use --overwrite to rebuild them with this run's options)")
        else:
            keys = sorted((set(before) | set(record)) - set(SELECTION_OPTIONS))
            diff = [f"{k} {_short(before.get(k))} (now {_short(record.get(k))})" for k in keys
                    if before.get(k) != record.get(k)]
            if diff:
                raise UserError(f"{out} holds {len(stores)} store(s) prepared with other options: {'; '.join(diff)}. "
                                "Pass --overwrite to rebuild them with the new options, or choose another --out.")
    out.mkdir(parents=True, exist_ok=True)
    write_dataset_meta(out, {**old, PREPARE_OPTIONS_KEY: record})
    return record


def mne_verbose(verbose: bool | str | None) -> str | bool:
    """MNE verbosity for our ``verbose`` (``None``/``False`` keep MNE quiet)."""
    if verbose is None or verbose is False:
        return "WARNING"
    return verbose


def subject_label(text: str, default: str) -> str:
    """Subject label from a path component such as ``sub-01``, ``sub001`` or ``subject3`` (-> ``03``).

    Labels made only of digits are zero-padded to two characters; ``default`` is returned when
    ``text`` holds no recognisable label.
    """
    m = re.match(r"^sub(?:ject)?[-_]?([A-Za-z0-9]+)$", text, flags=re.IGNORECASE)
    if not m:
        return default
    lab = m.group(1)
    return f"{int(lab):02d}" if lab.isdigit() and len(lab) < 2 else lab


def number_in(text: str, key: str) -> int | None:
    """The number after ``key`` in ``text`` (``session2`` / ``ses-02`` / ``run_003``), or ``None``."""
    m = re.search(rf"{key}[-_]?(\d+)", text, flags=re.IGNORECASE)
    return int(m.group(1)) if m else None


def parse_mapping(text: str | Mapping[Any, Any] | None, *, what: str) -> dict[str, str]:
    """Parse ``"1=face,2=house"`` (or a dict) into ``{"1": "face", "2": "house"}``."""
    if text is None:
        return {}
    if isinstance(text, Mapping):
        return {num_key(k): str(v) for k, v in text.items()}
    out: dict[str, str] = {}
    for part in str(text).split(","):
        part = part.strip()
        if not part:
            continue
        if "=" not in part:
            raise ValueError(f"{what}: {part!r} is not of the form KEY=VALUE (e.g. '1=face,2=house').")
        k, v = part.split("=", 1)
        out[num_key(k.strip())] = v.strip()
    return out


def num_key(k: Any) -> str:
    """Canonical text of a marker value: ``1``, ``1.0`` and ``"1"`` all give ``"1"``."""
    try:
        f = float(k)
    except (TypeError, ValueError):
        return str(k)
    return str(int(f)) if f.is_integer() else str(f)


def read_stimulus_table(path: PathLike) -> list[dict[str, str]]:
    """Read a user's CSV/TSV stimulus table: columns ``stimulus_id`` (or ``stimulus``) and
    ``image_path`` (or ``image``), optionally ``concept`` and ``split``.

    Relative image paths are resolved against the table's folder. Returns one dict per row.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Stimulus table {path} not found.")
    delim = "\t" if path.suffix.lower() in (".tsv", ".tab") else ","
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f, delimiter=delim)
        header = [h.strip() for h in (reader.fieldnames or [])]
        rows = [{(k or "").strip(): (v or "").strip() for k, v in r.items()} for r in reader]

    def col(*names: str) -> str | None:
        return next((n for n in names if n in header), None)

    sid, img = col("stimulus_id", "stimulus"), col("image_path", "image", "path")
    if sid is None or img is None:
        raise StoreError(path, "header", f"needs the columns 'stimulus_id' and 'image_path'; found {header}.",
                         "Write a header line such as: stimulus_id,image_path,concept,split")
    out = []
    for i, r in enumerate(rows):
        s = r.get(sid, "")
        if not s:
            raise StoreError(path, sid, f"is empty on line {i + 2}.")
        p = r.get(img, "")
        if p and not Path(p).is_absolute():
            p = str((path.parent / p).resolve())
        out.append({"stimulus_id": s, "image_path": p, "concept": r.get("concept", "") if "concept" in header else "",
                    "split": r.get("split", "") if "split" in header else ""})
    ids = [r["stimulus_id"] for r in out]
    dup = sorted({s for s in ids if ids.count(s) > 1}) if len(set(ids)) != len(ids) else []
    if dup:
        raise StoreError(path, sid, f"lists stimulus id(s) more than once: {dup[:5]}.")
    return out


def image_index(folder: Path) -> dict[str, list[Path]]:
    """Every image file under ``folder`` (recursively) by file stem."""
    index: dict[str, list[Path]] = {}
    for p in sorted(folder.rglob("*")):
        if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file():
            index.setdefault(p.stem, []).append(p)
    return index


def resolve_images(ids: Sequence[str], folder: PathLike) -> list[str]:
    """The image of each stimulus id in ``folder``: the path ``folder/id`` when it exists (a file,
    or a folder of images for a category), else the one image whose stem is the id.

    Raises a ``FileNotFoundError`` listing the ids without an image, and a ``ValueError`` for
    ids whose stem matches several files.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"Image folder {folder} does not exist.")
    index: dict[str, list[Path]] | None = None
    out, missing, ambiguous = [], [], []
    for s in ids:
        direct = folder / s
        if direct.exists():
            out.append(str(direct.resolve()))
            continue
        if index is None:
            index = image_index(folder)
        hits = index.get(Path(s).stem if Path(s).suffix.lower() in IMAGE_SUFFIXES else s, [])
        if len(hits) == 1:
            out.append(str(hits[0].resolve()))
        elif not hits:
            missing.append(s)
            out.append("")
        else:
            ambiguous.append(f"{s}: {[str(h) for h in hits[:3]]}")
            out.append("")
    if ambiguous:
        raise ValueError(f"Several images in {folder} match stimulus id(s): {ambiguous[:5]}. "
                         "Rename them or pass a stimulus table mapping each id to one file.")
    if missing:
        raise FileNotFoundError(f"No image found in {folder} for {len(missing)} stimulus id(s): {missing[:10]}. "
                                "An image is matched when its file stem equals the stimulus id (or "
                                "folder/ID exists); pass --stimulus-table to map ids to files explicitly.")
    return out


def merge_stimulus_tables(out: Path, table: StimulusTable) -> StimulusTable:
    """Union of ``table`` and the stimulus table already in the prepared folder ``out`` (if any).

    Used so that subjects prepared one by one (or a resumed run) end with one ``stimuli.tsv`` that
    covers every subject. A stimulus listed twice with a different concept or split is an error.
    """
    rows: dict[str, tuple[str, str, str]] = {}
    order: list[str] = []

    def add(t: StimulusTable, origin: str) -> None:
        for i, s in enumerate(t.stimulus_id.tolist()):
            img = t.image_file(i)
            row = (str(t.concept[i]), str(img.resolve()) if img is not None else "", str(t.split[i]))
            if s in rows:
                old = rows[s]
                if (old[0], old[2]) != (row[0], row[2]):
                    raise StoreError(out / STIMULI_FILENAME, "stimuli",
                                     f"stimulus {s!r} is (concept={old[0]!r}, split={old[2]!r}) in the existing "
                                     f"table but (concept={row[0]!r}, split={row[2]!r}) in {origin}.",
                                     "Prepare into a new --out folder, or use --overwrite with the same options.")
                if not old[1] and row[1]:
                    rows[s] = (old[0], row[1], old[2])
            else:
                rows[s] = row
                order.append(s)

    existing = out / STIMULI_FILENAME
    if existing.is_file():
        add(StimulusTable.read_tsv(existing), "the existing stimuli.tsv")
    add(table, "this run")
    return StimulusTable(order, [rows[s][0] for s in order], [rows[s][1] for s in order],
                         [rows[s][2] for s in order], root=None)


def finish_prepared(out: Path, table: StimulusTable, meta: dict[str, Any], subjects_info: dict[str, Any]) -> None:
    """Write the merged ``stimuli.tsv`` and ``dataset.json`` of a prepared folder.

    ``subjects_info`` (one summary per subject prepared in this run) is merged with the summaries
    of the existing ``dataset.json``, so a resumed run keeps what earlier runs reported.
    """
    merged = merge_stimulus_tables(out, table)
    old = _read_meta(out)
    info = dict(old.get("subjects_info", {}))
    info.update(subjects_info)
    subjects = sorted(p.stem[4:] for p in out.glob("sub-*.h5"))
    meta = {**meta, "subjects": subjects, "subjects_info": to_jsonable(info),
            "n_stimuli": len(merged), "n_test_stimuli": int((merged.split == "test").sum())}
    write_prepared_metadata(out, merged, meta)



__all__ = ["BadFileError", "reading", "check_root_folder", "record_prepare_options", "select_subjects", "PREPARE_OPTIONS_KEY", "store_path", "is_done", "provenance_step", "write_prepared_metadata", "DATASET_FILENAME",
           "STIMULI_FILENAME"]
