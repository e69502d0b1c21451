"""Prepared folders: the trial stores of a data set with its one stimulus table.

A *prepared folder* (the output of ``neurodecode simulate`` or ``neurodecode prepare``) holds one
store per subject (``sub-XX.h5``), the stimulus table ``stimuli.tsv`` (the one table of the folder,
image paths relative to it) and ``dataset.json``; :func:`open_prepared` reads it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from neurodecode.io.schema import DATASET_FILENAME, STIMULI_FILENAME, StoreError
from neurodecode.io.stimuli import StimulusTable
from neurodecode.io.store import TrialStore
from neurodecode.utils import PathLike, atomic_write_json

__all__ = ["PreparedDataset", "open_prepared", "store_filename", "write_dataset_meta"]


@dataclass
class PreparedDataset:
    """A folder made by ``neurodecode prepare`` or ``simulate``: trial stores + stimulus table.

    Parameters
    ----------
    root : Path
        The folder.
    stimuli : StimulusTable
        Its ``stimuli.tsv``, shared by every store.
    stores : dict of str to TrialStore
        One store per subject label.
    meta : dict
        Its ``dataset.json`` (empty when absent).
    """

    root: Path
    stimuli: StimulusTable
    stores: dict[str, TrialStore]
    meta: dict[str, Any]

    @property
    def subjects(self) -> list[str]:
        """Subject labels, sorted."""
        return sorted(self.stores)

    @property
    def modality(self) -> str:
        """The data's modality."""
        return next(iter(self.stores.values())).modality

    def __repr__(self) -> str:
        return (f"<PreparedDataset {self.root.name} | {self.modality} | {len(self.stores)} subject(s) | "
                f"{len(self.stimuli)} stimuli>")


def store_filename(subject: str) -> str:
    """File name of a subject's store in a prepared folder.

    Parameters
    ----------
    subject : str
        Subject label (without ``sub-``).

    Returns
    -------
    name : str
        ``sub-<subject>.h5``.
    """
    return f"sub-{subject}.h5"


def open_prepared(root: PathLike, *, subjects: Sequence[str] | None = None,
                  validate: bool | str = True) -> PreparedDataset:
    """Open a prepared folder.

    Parameters
    ----------
    root : path-like
        Folder with ``stimuli.tsv``, ``dataset.json`` and ``sub-*.h5``.
    subjects : list of str | None
        Subjects to open (labels without ``sub-``); ``None`` opens all.
    validate : bool | "values"
        Passed to :class:`TrialStore`.

    Returns
    -------
    dataset : PreparedDataset
        The folder's stimulus table and one :class:`TrialStore` per subject, all sharing that
        table (the folder's ``stimuli.tsv``, the only copy).
    """
    root = Path(root)
    if not root.is_dir():
        raise StoreError(root, None, "prepared folder not found.",
                         "Run 'neurodecode prepare ... --out DIR' or 'neurodecode simulate --out DIR' first.")
    stimuli = StimulusTable.read_tsv(root / STIMULI_FILENAME)
    meta_path = root / DATASET_FILENAME
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    files = sorted(root.glob("sub-*.h5"))
    available = {f.stem[4:]: f for f in files}
    if not available:
        raise StoreError(root, None, "holds no trial stores (sub-*.h5).",
                         "Run 'neurodecode prepare' or 'neurodecode simulate' with --out pointing here.")
    if subjects is None:
        chosen = sorted(available)
    else:
        chosen = [str(s).removeprefix("sub-") for s in subjects]
        missing = [s for s in chosen if s not in available]
        if missing:
            raise StoreError(root, "subjects", f"no store for subject(s) {missing}; available: {sorted(available)}.")
    stores = {s: TrialStore(available[s], stimuli=stimuli, validate=validate) for s in chosen}
    return PreparedDataset(root=root, stimuli=stimuli, stores=stores, meta=meta)


def write_dataset_meta(root: PathLike, meta: Mapping[str, Any]) -> Path:
    """Write ``dataset.json`` of a prepared folder atomically.

    Parameters
    ----------
    root : path-like
        The prepared folder.
    meta : dict
        JSON-serialisable description of the data set.

    Returns
    -------
    path : Path
        The written file.
    """
    return atomic_write_json(Path(root) / DATASET_FILENAME, dict(meta))
