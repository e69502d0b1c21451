"""CSV recordings on disk: finding them (subjects, sessions, duplicates, several experiments under
one root) and reading one file into numbers with messages naming the file, line and column.

Used by :mod:`neurodecode.readers.csv` (``neurodecode prepare csv``), which re-exports the public
names.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from neurodecode.readers.common import check_root_folder, number_in, subject_label
from neurodecode.utils import PathLike, UserError, logger

__all__ = ["CSVFormatError", "CSV_EXPECTED", "MARKER_NAMES", "Recording", "estimate_sfreq", "find_recordings",
           "pick_columns", "read_csv_recording"]

MARKER_NAMES = ("marker", "markers", "marker0", "stim", "trigger", "event", "events")


CSV_EXPECTED = "a CSV recording (a header line such as 'timestamps,TP9,AF7,AF8,TP10,Marker0', then numeric rows)"


class CSVFormatError(UserError):
    """A CSV recording that cannot be read; the message names the file, line and column."""



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

    Raises
    ------
    UserError
        When ``root`` is not a folder, holds no CSV file, or holds several experiments: subject
        folders under different parent folders (``N170/subject1`` and ``P300/subject1``), which
        would merge different experiments into one subject's sessions.
    """
    root = check_root_folder(root, "the CSV recordings (subjectN/sessionM/*.csv)")
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
    check_one_experiment(root, base, [r.path for r in recs])
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
        raise CSVFormatError(f"{path}: the file is empty; expected {CSV_EXPECTED}.") from None
    except pd.errors.ParserError as err:
        raise CSVFormatError(f"{path}: not a well-formed CSV ({str(err).strip()}); expected {CSV_EXPECTED}.") from None
    except UnicodeDecodeError as err:
        raise CSVFormatError(f"{path}: not a text file ({err.reason} at byte {err.start}); expected "
                             f"{CSV_EXPECTED}. Is it a binary file (an .xdf, .edf or .fif recording) named .csv?") from None
    if not parts or offset == 0:
        raise CSVFormatError(f"{path}: no data rows after the header.")
    return header, np.concatenate(parts)


def pick_columns(path: Path, header: list[str], *, time_column: str | None, marker_column: str | None,
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


def check_one_experiment(root: Path, base: Path, files: Sequence[Path]) -> None:
    """Refuse a root whose subject folders sit under several parent folders (several experiments).

    The part of each file's path before its subject folder (``visual-N170`` in
    ``visual-N170/subject1/session1/a.csv``) names its experiment; one root must hold one.
    """
    groups: dict[str, list[Path]] = {}
    with_subject = False
    for f in files:
        parts = f.relative_to(base).parts[:-1]
        cut = next((i for i, p in enumerate(parts) if subject_label(p, "")), None)
        with_subject |= cut is not None
        prefix = "/".join(parts[:cut] if cut is not None else parts)
        groups.setdefault(prefix, []).append(f)
    if len(groups) < 2 or not with_subject:
        return
    found = []
    for prefix, fs in sorted(groups.items()):
        subs = sorted({next((subject_label(p, "") for p in f.relative_to(base).parts[:-1] if subject_label(p, "")),
                            "01") for f in fs})
        found.append(f"{prefix or '.'} ({len(fs)} file(s), subject(s) {', '.join(subs)})")
    first = next(p for p in sorted(groups) if p)
    raise UserError(f"--root {root} holds recordings of {len(groups)} experiments: {'; '.join(found)}. Their "
                    f"subject folders would be merged into the same subjects' sessions. Prepare one experiment at a "
                    f"time: pass its folder as --root (e.g. --root {base / first}) and a separate --out for each.")
