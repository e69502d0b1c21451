"""Validation of trial stores against the schema, with errors that name the file, field and fix."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from neurodecode._version import __version__
from neurodecode.io.schema import (
    MODALITIES,
    READABLE_SCHEMA_VERSIONS,
    REQUIRED_TRIAL_FIELDS,
    SPLITS,
    STIMULI_FILENAME,
    StoreError,
)
from neurodecode.io.stimuli import StimulusTable, find_stimulus_table
from neurodecode.utils import PathLike

if TYPE_CHECKING:  # pragma: no cover
    import h5py

__all__ = ["open_store_file", "validate_store"]


def open_store_file(path: PathLike) -> h5py.File:
    """Open a trial store's HDF5 file read-only, with errors that say what to do.

    Parameters
    ----------
    path : path-like
        The ``.h5`` file.

    Returns
    -------
    h5 : h5py.File
        The open file (the caller closes it).

    Raises
    ------
    StoreError
        When the file is missing or is not readable HDF5 (truncated or corrupt).
    """
    import h5py

    path = Path(path)
    if not path.exists():
        raise StoreError(path, None, "file not found.",
                         "Create it with 'neurodecode prepare' or 'neurodecode simulate'.")
    try:
        return h5py.File(path, "r")
    except OSError as err:
        raise StoreError(path, None, f"is not a readable HDF5 file (truncated or corrupt?): {err}.",
                         "Delete it and run 'neurodecode prepare' (or 'simulate') again.") from None


def validate_store(path: PathLike, *, check_values: bool = True, block_size: int = 512,
                   stimuli: StimulusTable | None = None) -> None:
    """Check a trial store against the schema; raise :class:`StoreError` on the first problem.

    Checks, in order: the file opens as HDF5; ``schema_version`` is one this version reads; the
    modality and, for EEG/MEG, ``sfreq``, ``tmin`` and ``info`` attributes are present and
    consistent; ``signals`` exists with a float dtype and the right number of dimensions; every
    per-trial field has one value per trial; split values are known; every trial's stimulus id is a
    row of the stimulus table; and, with ``check_values``, that the signals hold no NaN/Inf
    (scanned block by block).

    Parameters
    ----------
    path : path-like
        The ``.h5`` trial store.
    check_values : bool
        Also scan every signal for NaN/Inf.
    block_size : int
        Trials read at a time by that scan.
    stimuli : StimulusTable | None
        The stimulus table of the store's prepared folder; ``None`` reads the ``stimuli.tsv``
        beside the store (see :func:`~neurodecode.io.stimuli.find_stimulus_table`).

    Raises
    ------
    StoreError
        Naming the file, the field and the fix.
    """
    import h5py

    path = Path(path)
    h5 = open_store_file(path)
    try:
        a = h5.attrs
        if "schema_version" not in a:
            raise StoreError(path, "schema_version", "attribute is missing: this is not a neurodecode trial store.",
                             "Create stores with 'neurodecode prepare' or neurodecode.io.store.write_store().")
        version = int(a["schema_version"])
        if version not in READABLE_SCHEMA_VERSIONS:
            readable = ", ".join(str(v) for v in READABLE_SCHEMA_VERSIONS)
            raise StoreError(path, "schema_version",
                             f"is {version}, but this neurodecode ({__version__}) reads version(s) {readable}.",
                             "Prepare the data again with this version, or install the version that wrote it.")
        for name in ("modality", "subject", "provenance"):
            if name not in a:
                raise StoreError(path, name, "attribute is missing.")
        modality = str(a["modality"])
        if modality not in MODALITIES:
            raise StoreError(path, "modality", f"is {modality!r}; expected one of {list(MODALITIES)}.")
        try:
            json.loads(a["provenance"])
        except (TypeError, ValueError):
            raise StoreError(path, "provenance", "is not valid JSON.") from None
        if "signals" not in h5:
            raise StoreError(path, "signals", "dataset is missing.")
        ds = h5["signals"]
        if not isinstance(ds, h5py.Dataset):
            raise StoreError(path, "signals", "must be a dataset, found a group.")
        if ds.dtype.kind != "f":
            raise StoreError(path, "signals", f"has dtype {ds.dtype}; expected float32.")
        ndim = 2 if modality == "fmri" else 3
        axes = "(n_trials, n_voxels)" if modality == "fmri" else "(n_trials, n_chans, n_times)"
        if ds.ndim != ndim:
            raise StoreError(path, "signals", f"has shape {ds.shape}; a {modality} store needs {axes}.")
        n = ds.shape[0]
        if modality != "fmri":
            for name in ("sfreq", "tmin", "info"):
                if name not in a:
                    raise StoreError(path, name, f"attribute is missing (required for {modality}).")
            sfreq = float(a["sfreq"])
            if not np.isfinite(sfreq) or sfreq <= 0:
                raise StoreError(path, "sfreq", f"is {sfreq}; expected a positive number of Hz.")
            if not np.isfinite(float(a["tmin"])):
                raise StoreError(path, "tmin", f"is {a['tmin']}; expected a finite time in seconds.")
            try:
                chs = json.loads(a["info"])["chs"]
            except (TypeError, ValueError, KeyError):
                raise StoreError(path, "info", "is not an mne.Info JSON dictionary.") from None
            if len(chs) != ds.shape[1]:
                raise StoreError(path, "info", f"lists {len(chs)} channels but signals have {ds.shape[1]}.")
        if "trials" not in h5:
            raise StoreError(path, "trials", "group is missing.")
        for name in REQUIRED_TRIAL_FIELDS:
            if name not in h5["trials"]:
                raise StoreError(path, f"trials/{name}", "dataset is missing.")
        for name, tds in h5["trials"].items():
            if tds.shape != (n,):
                raise StoreError(path, f"trials/{name}", f"has shape {tds.shape}; expected ({n},), one value per trial.")
        for name in ("repetition", "session"):
            if h5[f"trials/{name}"].dtype.kind not in "iu":
                raise StoreError(path, f"trials/{name}", f"has dtype {h5[f'trials/{name}'].dtype}; expected integers.")
        split = h5["trials/split"].asstr()[()]
        bad = sorted(set(split.tolist()) - set(SPLITS))
        if bad:
            raise StoreError(path, "trials/split", f"has unknown value(s) {bad}; allowed: {list(SPLITS)}.")
        table = stimuli if stimuli is not None else find_stimulus_table(path, h5 if version == 1 else None)
        table_ids = set(table.stimulus_id.tolist())
        trial_ids = h5["trials/stimulus_id"].asstr()[()]
        unknown = sorted(set(trial_ids.tolist()) - table_ids)
        if unknown:
            first = int(np.flatnonzero(trial_ids == unknown[0])[0])
            raise StoreError(path, "trials/stimulus_id",
                             f"{len(unknown)} stimulus id(s) are not in the stimulus table, e.g. {unknown[:3]} "
                             f"(first at trial {first}).",
                             f"Add them to the stimulus table ({STIMULI_FILENAME}) or drop those trials.")
        if check_values:
            for start in range(0, n, block_size):
                try:
                    block = ds[start:start + block_size]
                except OSError as err:
                    raise StoreError(path, "signals", f"trials {start}:{start + block_size} could not be read "
                                                      f"(truncated or corrupt file?): {err}.") from None
                bad_mask = ~np.isfinite(block)
                if bad_mask.any():
                    loc = np.argwhere(bad_mask)[0]
                    kind = "NaN" if np.isnan(block[tuple(loc)]) else "Inf"
                    raise StoreError(path, "signals",
                                     f"contains {int(bad_mask.sum())} non-finite value(s) in trials "
                                     f"{start}:{start + len(block)} (first {kind} in trial {start + int(loc[0])}).",
                                     "Reject or interpolate bad trials before writing the store.")
    finally:
        h5.close()
