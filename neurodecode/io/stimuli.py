"""The stimulus table: the images a data set showed, one row per stimulus, and its TSV file.

A prepared folder holds ONE table, ``stimuli.tsv``, shared by every subject's trial store;
:func:`find_stimulus_table` finds it for a store (or, for a version 1 store opened outside its
folder, reads the copy that version 1 embedded in the HDF5 file).
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from neurodecode.io.schema import SPLITS, STIMULI_FILENAME, STIMULUS_COLUMNS, StoreError
from neurodecode.utils import PathLike, atomic_write_text

if TYPE_CHECKING:  # pragma: no cover
    import h5py

__all__ = ["StimulusTable", "find_stimulus_table"]


@dataclass
class StimulusTable:
    """The images a data set showed: one row per stimulus.

    Parameters
    ----------
    stimulus_id : sequence of str
        Unique identifier of each stimulus (the key that joins trials, images and embeddings).
    concept : sequence of str
        The object concept (category) the image shows.
    image_path : sequence of str
        Path of the image file (or of a folder of images, for category-level stimuli), relative to
        :attr:`root` when it is not absolute; empty when unknown.
    split : sequence of str
        ``"train"`` or ``"test"``.
    root : path-like | None
        Folder that relative image paths are relative to.
    """

    stimulus_id: np.ndarray
    concept: np.ndarray
    image_path: np.ndarray
    split: np.ndarray
    root: Path | None = None
    _index: dict[str, int] | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        cols = {}
        for name in STIMULUS_COLUMNS:
            cols[name] = np.asarray([str(v) for v in getattr(self, name)], dtype=object)
        n = {k: len(v) for k, v in cols.items()}
        if len(set(n.values())) != 1:
            raise StoreError(None, "stimuli", f"columns have different lengths {n}.")
        for k, v in cols.items():
            object.__setattr__(self, k, v)
        if self.root is not None:
            self.root = Path(self.root)
        ids = cols["stimulus_id"]
        if len(set(ids.tolist())) != len(ids):
            uniq, counts = np.unique(ids.astype(str), return_counts=True)
            dup = uniq[counts > 1][:5].tolist()
            raise StoreError(None, "stimuli/stimulus_id", f"stimulus ids must be unique; duplicated: {dup}.")
        bad = sorted(set(cols["split"].tolist()) - set(SPLITS))
        if bad:
            raise StoreError(None, "stimuli/split", f"unknown split value(s) {bad}; allowed: {list(SPLITS)}.")

    def __len__(self) -> int:
        return len(self.stimulus_id)

    @property
    def index(self) -> dict[str, int]:
        """Mapping from stimulus id to row."""
        if self._index is None:
            self._index = {s: i for i, s in enumerate(self.stimulus_id.tolist())}
        return self._index

    def rows(self, ids: Sequence[str] | np.ndarray, *, where: str = "stimulus table") -> np.ndarray:
        """Row numbers of ``ids``.

        Parameters
        ----------
        ids : sequence of str
            Stimulus ids.
        where : str
            Name of the table in the error message.

        Returns
        -------
        rows : ndarray of int64
            The row of each id.

        Raises
        ------
        StoreError
            Listing the ids that are not rows of the table.
        """
        idx = self.index
        out = np.empty(len(ids), dtype=np.int64)
        missing = []
        for i, s in enumerate(ids):
            j = idx.get(str(s))
            if j is None:
                missing.append(str(s))
                out[i] = -1
            else:
                out[i] = j
        if missing:
            raise StoreError(
                None, "stimulus_id",
                f"{len(missing)} id(s) are not in the {where}: {sorted(set(missing))[:5]}.",
                "Every trial's stimulus_id must be a row of the stimulus table.",
            )
        return out

    def image_file(self, i: int) -> Path | None:
        """Path of row ``i``'s image.

        Parameters
        ----------
        i : int
            Row number.

        Returns
        -------
        path : Path | None
            The image (relative paths joined to :attr:`root`), ``None`` when the row has none.
        """
        p = str(self.image_path[i])
        if not p:
            return None
        path = Path(p)
        if not path.is_absolute() and self.root is not None:
            path = self.root / path
        return path

    def select(self, mask: np.ndarray | Sequence[bool]) -> StimulusTable:
        """A new table with the rows where ``mask`` is true.

        Parameters
        ----------
        mask : array of bool, shape (n_stimuli,)
            Rows to keep.

        Returns
        -------
        table : StimulusTable
        """
        m = np.asarray(mask, dtype=bool)
        return StimulusTable(self.stimulus_id[m], self.concept[m], self.image_path[m], self.split[m],
                             root=self.root)

    def concepts(self, split: str | None = None) -> list[str]:
        """Sorted unique concepts.

        Parameters
        ----------
        split : "train" | "test" | None
            Only this split's concepts; ``None`` for all.

        Returns
        -------
        concepts : list of str
        """
        c = self.concept if split is None else self.concept[self.split == split]
        return sorted(set(c.tolist()))

    def to_dict(self) -> dict[str, list[str]]:
        """The columns as lists.

        Returns
        -------
        columns : dict of str to list of str
            ``stimulus_id``, ``concept``, ``image_path`` and ``split``.
        """
        return {k: getattr(self, k).tolist() for k in STIMULUS_COLUMNS}

    # -- TSV -----------------------------------------------------------------------------------
    def write_tsv(self, path: PathLike) -> Path:
        """Write the table as TSV atomically; image paths under the TSV's folder become relative.

        Parameters
        ----------
        path : path-like
            Destination, usually a prepared folder's ``stimuli.tsv``.

        Returns
        -------
        path : Path
            The written file.
        """
        path = Path(path)
        folder = path.parent.resolve()
        lines = ["\t".join(STIMULUS_COLUMNS)]
        for i in range(len(self)):
            img = self.image_file(i)
            if img is None:
                rel = ""
            else:
                try:
                    rel = img.resolve().relative_to(folder).as_posix()
                except ValueError:
                    rel = str(img)
            row = [self.stimulus_id[i], self.concept[i], rel, self.split[i]]
            for cell in row:
                if "\t" in cell or "\n" in cell:
                    raise StoreError(path, "stimuli", f"value {cell!r} contains a tab or newline.")
            lines.append("\t".join(row))
        return atomic_write_text(path, "\n".join(lines) + "\n")

    @classmethod
    def read_tsv(cls, path: PathLike) -> StimulusTable:
        """Read a table written by :meth:`write_tsv` (or by hand, with the same four columns).

        Parameters
        ----------
        path : path-like
            The TSV file; relative image paths are relative to its folder.

        Returns
        -------
        table : StimulusTable
        """
        path = Path(path)
        if not path.is_file():
            raise StoreError(path, None, "stimulus table not found.",
                             "Pass a folder made by 'neurodecode prepare' or 'neurodecode simulate'.")
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f, delimiter="\t")
            header = reader.fieldnames or []
            missing = [c for c in STIMULUS_COLUMNS if c not in header]
            if missing:
                raise StoreError(path, "header", f"missing column(s) {missing}; found {header}.",
                                 f"The header must be: {' '.join(STIMULUS_COLUMNS)} (tab-separated).")
            rows = list(reader)
        cols = {c: [r[c] or "" for r in rows] for c in STIMULUS_COLUMNS}
        try:
            return cls(**cols, root=path.parent)
        except StoreError as err:
            raise StoreError(path, err.field, err.problem, err.fix) from None


    @classmethod
    def read_h5(cls, group: h5py.Group, *, file: PathLike, root: PathLike | None = None) -> StimulusTable:
        """Read the copy of the table that version 1 trial stores embed under ``/stimuli``.

        Parameters
        ----------
        group : h5py.Group
            The ``/stimuli`` group of an open store.
        file : path-like
            The store's path (named in errors).
        root : path-like | None
            Folder that relative image paths are relative to (the store's folder).

        Returns
        -------
        table : StimulusTable
        """
        missing = [c for c in STIMULUS_COLUMNS if c not in group]
        if missing:
            raise StoreError(file, f"stimuli/{missing[0]}", "dataset is missing.",
                             f"Put the folder's {STIMULI_FILENAME} beside the store instead.")
        cols = {k: group[k].asstr()[()].tolist() for k in STIMULUS_COLUMNS}
        try:
            return cls(**cols, root=root)
        except StoreError as err:
            raise StoreError(file, err.field, err.problem, err.fix) from None


def find_stimulus_table(store_path: PathLike, h5: h5py.File | None = None) -> StimulusTable:
    """The stimulus table of a trial store opened on its own.

    Parameters
    ----------
    store_path : path-like
        The ``.h5`` trial store.
    h5 : h5py.File | None
        The store, open; lets a version 1 store (which embeds a copy of the table under
        ``/stimuli``) open when its folder has no ``stimuli.tsv``.

    Returns
    -------
    table : StimulusTable
        ``stimuli.tsv`` of the store's folder, else the embedded copy of a version 1 store.

    Raises
    ------
    StoreError
        Naming the missing ``stimuli.tsv`` when neither exists.
    """
    store_path = Path(store_path)
    tsv = store_path.parent / STIMULI_FILENAME
    if tsv.is_file():
        return StimulusTable.read_tsv(tsv)
    if h5 is not None and "stimuli" in h5:
        return StimulusTable.read_h5(h5["stimuli"], file=store_path, root=store_path.parent)
    raise StoreError(tsv, None,
                     f"stimulus table not found; the trial store {store_path.name} takes its stimuli from the "
                     f"{STIMULI_FILENAME} of its folder.",
                     "Keep the store in its prepared folder and open that folder with open_prepared(), or "
                     "pass the table: TrialStore(path, stimuli=StimulusTable.read_tsv('.../stimuli.tsv')).")
