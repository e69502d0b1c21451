"""The trial store: one HDF5 file per subject holding preprocessed single-trial responses.

This module reads stores (:class:`TrialStore`) and re-exports the rest of the store's API, which
lives in one module per concern:

* :mod:`neurodecode.io.schema`: the schema, its constants and :class:`StoreError`;
* :mod:`neurodecode.io.stimuli`: :class:`StimulusTable` and its ``stimuli.tsv`` file;
* :mod:`neurodecode.io.writer`: :class:`StoreWriter` and :func:`write_store`;
* :mod:`neurodecode.io.validation`: :func:`validate_store`;
* :mod:`neurodecode.io.prepared`: prepared folders, :func:`open_prepared`.

Files are written atomically (a temporary file in the same folder, renamed on success), read lazily
(the HDF5 handle is opened on first access in each process, so a :class:`TrialStore` can be sent to
``DataLoader`` workers under both ``fork`` and ``spawn``), and validated on open with errors that
name the file, the field and what was expected.

A *prepared folder* (the output of ``neurodecode simulate`` or ``neurodecode prepare``) holds one
store per subject (``sub-XX.h5``), the stimulus table ``stimuli.tsv`` (the one table of the
folder, image paths relative to it) and ``dataset.json``; :func:`open_prepared` reads it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from neurodecode.io.schema import (
    DATASET_FILENAME,
    MODALITIES,
    READABLE_SCHEMA_VERSIONS,
    REQUIRED_TRIAL_FIELDS,
    SCHEMA_VERSION,
    SPLITS,
    STIMULI_FILENAME,
    STIMULUS_COLUMNS,
    StoreError,
)
from neurodecode.io.stimuli import StimulusTable, find_stimulus_table
from neurodecode.io.validation import open_store_file, validate_store
from neurodecode.io.writer import StoreWriter, write_store
from neurodecode.utils import PathLike

if TYPE_CHECKING:  # pragma: no cover
    import h5py
    import mne

__all__ = [
    "DATASET_FILENAME",
    "MODALITIES",
    "READABLE_SCHEMA_VERSIONS",
    "REQUIRED_TRIAL_FIELDS",
    "SCHEMA_VERSION",
    "SPLITS",
    "STIMULI_FILENAME",
    "STIMULUS_COLUMNS",
    "StimulusTable",
    "StoreError",
    "StoreWriter",
    "TrialStore",
    "validate_store",
    "write_store",
]


class TrialStore:
    """Lazy reader of one trial store.

    Parameters
    ----------
    path : path-like
        The ``.h5`` file.
    stimuli : StimulusTable | None
        The stimulus table of the store's prepared folder (:func:`open_prepared` passes it);
        ``None`` reads the ``stimuli.tsv`` beside the store when first needed.
    validate : bool | "values"
        ``True`` (default) checks the schema on open (fast: attributes, fields, shapes, ids);
        ``"values"`` also scans every signal for NaN/Inf; ``False`` skips validation.

    Notes
    -----
    The HDF5 handle is opened on first access in each process and dropped when the object is
    pickled, so a store can be shared with ``DataLoader(num_workers>0)`` workers whatever the
    multiprocessing start method.
    """

    def __init__(self, path: PathLike, *, stimuli: StimulusTable | None = None,
                 validate: bool | str = True) -> None:
        self.path = Path(path)
        self._h5: h5py.File | None = None
        self._pid: int | None = None
        self._cache: dict[str, Any] = {}
        self._stimuli = stimuli
        if validate:
            validate_store(self.path, check_values=(validate == "values"), stimuli=stimuli)

    # -- handle management --------------------------------------------------------------------
    @property
    def h5(self) -> h5py.File:
        """The open HDF5 file of this process."""
        if self._h5 is None or self._pid != os.getpid():
            self._h5 = open_store_file(self.path)
            self._pid = os.getpid()
        return self._h5

    def close(self) -> None:
        """Close the HDF5 handle (reopened on next access)."""
        if self._h5 is not None and self._pid == os.getpid():
            try:
                self._h5.close()
            except Exception:  # pragma: no cover - already closed
                pass
        self._h5 = None

    def __enter__(self) -> TrialStore:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_h5"] = None
        state["_pid"] = None
        return state

    def __del__(self) -> None:  # pragma: no cover - interpreter shutdown order varies
        try:
            self.close()
        except Exception:
            pass

    def __repr__(self) -> str:
        try:
            shape = self.shape
        except Exception:
            shape = "?"
        return f"<TrialStore {self.path.name} | {self.modality} | subject {self.subject} | signals {shape}>"

    # -- metadata -----------------------------------------------------------------------------
    def _attr(self, name: str) -> Any:
        if name not in self._cache:
            v = self.h5.attrs[name]
            self._cache[name] = v.item() if isinstance(v, np.generic) else v
        return self._cache[name]

    @property
    def modality(self) -> str:
        """``"eeg"``, ``"meg"`` or ``"fmri"``."""
        return str(self._attr("modality"))

    @property
    def subject(self) -> str:
        """Subject label."""
        return str(self._attr("subject"))

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of the signals array."""
        return tuple(self.h5["signals"].shape)

    @property
    def n_trials(self) -> int:
        """Number of trials."""
        return self.shape[0]

    def __len__(self) -> int:
        return self.n_trials

    @property
    def n_chans(self) -> int:
        """Number of channels (EEG/MEG)."""
        self._require_timeseries("n_chans")
        return self.shape[1]

    @property
    def n_times(self) -> int:
        """Number of time samples (EEG/MEG)."""
        self._require_timeseries("n_times")
        return self.shape[2]

    @property
    def n_voxels(self) -> int:
        """Number of voxels (fMRI)."""
        if self.modality != "fmri":
            raise AttributeError(f"{self.path}: a {self.modality} store has channels, not voxels.")
        return self.shape[1]

    def _require_timeseries(self, what: str) -> None:
        if self.modality == "fmri":
            raise AttributeError(f"{self.path}: an fMRI store has no '{what}' (use n_voxels).")

    @property
    def sfreq(self) -> float | None:
        """Sampling rate in Hz (``None`` for fMRI)."""
        return None if self.modality == "fmri" else float(self._attr("sfreq"))

    @property
    def tmin(self) -> float | None:
        """Time of the first sample in seconds (``None`` for fMRI)."""
        return None if self.modality == "fmri" else float(self._attr("tmin"))

    @property
    def times(self) -> np.ndarray | None:
        """Sample times in seconds."""
        if self.modality == "fmri":
            return None
        return self.tmin + np.arange(self.n_times) / self.sfreq

    @property
    def info(self) -> mne.Info | None:
        """Channel information as an ``mne.Info`` (``None`` for fMRI)."""
        if self.modality == "fmri":
            return None
        if "info_obj" not in self._cache:
            import mne

            self._cache["info_obj"] = mne.Info.from_json_dict(json.loads(self._attr("info")))
        return self._cache["info_obj"].copy()

    @property
    def ch_names(self) -> list[str]:
        """Channel names (EEG/MEG)."""
        self._require_timeseries("ch_names")
        if "ch_names" not in self._cache:
            self._cache["ch_names"] = [c["ch_name"] for c in json.loads(self._attr("info"))["chs"]]
        return list(self._cache["ch_names"])

    @property
    def provenance(self) -> list[dict[str, Any]]:
        """Processing steps that produced the data."""
        return json.loads(self._attr("provenance"))

    @property
    def attrs(self) -> dict[str, Any]:
        """All root attributes (JSON strings left as they are)."""
        return {k: (v.item() if isinstance(v, np.generic) else v) for k, v in self.h5.attrs.items()}

    def trial_field(self, name: str) -> np.ndarray:
        """One per-trial field (``stimulus_id``, ``split``, ``repetition``, ``session`` or an extra)."""
        key = f"trials/{name}"
        if key not in self._cache:
            if key not in self.h5:
                raise KeyError(f"{self.path}: no per-trial field '{name}'; available: {self.trial_fields}.")
            ds = self.h5[key]
            self._cache[key] = ds.asstr()[()].astype(object) if ds.dtype.kind == "O" else ds[()]
        return self._cache[key]

    @property
    def trial_fields(self) -> list[str]:
        """Names of the per-trial fields."""
        return sorted(self.h5["trials"].keys())

    @property
    def stimulus_id(self) -> np.ndarray:
        """Per-trial stimulus id."""
        return self.trial_field("stimulus_id")

    @property
    def split(self) -> np.ndarray:
        """Per-trial split."""
        return self.trial_field("split")

    @property
    def repetition(self) -> np.ndarray:
        """Per-trial repetition number."""
        return self.trial_field("repetition")

    @property
    def session(self) -> np.ndarray:
        """Per-trial session number."""
        return self.trial_field("session")

    @property
    def stimuli(self) -> StimulusTable:
        """The stimulus table of the trials: the prepared folder's ``stimuli.tsv``.

        The table given to the constructor, else the ``stimuli.tsv`` beside the store (or, for a
        version 1 store outside its folder, the copy it embeds); a :class:`StoreError` names the
        missing file otherwise.
        """
        if self._stimuli is None:
            self._stimuli = find_stimulus_table(self.path, self.h5 if self.schema_version == 1 else None)
        return self._stimuli

    @property
    def schema_version(self) -> int:
        """The ``schema_version`` the store was written with."""
        return int(self._attr("schema_version"))

    @property
    def voxel_ijk(self) -> np.ndarray | None:
        """Voxel indices (fMRI), if stored."""
        return self.h5["voxels/ijk"][()] if "voxels/ijk" in self.h5 else None

    # -- signals ------------------------------------------------------------------------------
    def get_signals(self, index: int | slice | Sequence[int] | np.ndarray | None = None,
                    picks: Sequence[int] | Sequence[str] | None = None) -> np.ndarray:
        """Read signals for some trials (and channels), in the order asked.

        Parameters
        ----------
        index : int | slice | array of int | boolean mask | None
            Trials to read; ``None`` reads all.
        picks : sequence of int or str | None
            Channels (EEG/MEG) by index or name; ``None`` keeps all.

        Returns
        -------
        signals : ndarray, float32
        """
        ds = self.h5["signals"]
        try:
            if index is None:
                out = ds[()]
            elif isinstance(index, int | np.integer):
                out = ds[int(index)]
            elif isinstance(index, slice):
                out = ds[index]
            else:
                idx = np.asarray(index)
                if idx.dtype == bool:
                    idx = np.flatnonzero(idx)
                idx = idx.astype(np.int64)
                if len(idx) == 0:
                    out = np.empty((0, *ds.shape[1:]), np.float32)
                else:
                    # h5py wants increasing, unique indices: read sorted unique, then reorder
                    uniq, inverse = np.unique(idx, return_inverse=True)
                    if len(uniq) > 1 and (uniq[-1] - uniq[0] + 1) <= 4 * len(uniq):
                        block = ds[int(uniq[0]):int(uniq[-1]) + 1]
                        out = block[uniq - uniq[0]][inverse]
                    else:
                        out = ds[uniq][inverse]
        except OSError as err:
            raise StoreError(self.path, "signals", f"could not be read (truncated or corrupt file?): {err}.",
                             "Delete the file and prepare it again.") from None
        if picks is not None:
            p = self.pick_indices(picks)
            out = out[..., p, :]
        return out

    def pick_indices(self, picks: Sequence[int] | Sequence[str]) -> np.ndarray:
        """Channel indices of ``picks`` (names or indices), with a clear error for unknown names."""
        self._require_timeseries("channels")
        names = self.ch_names
        if len(picks) and isinstance(picks[0], str):
            lookup = {n: i for i, n in enumerate(names)}
            missing = [p for p in picks if p not in lookup]
            if missing:
                raise StoreError(self.path, "info", f"channel(s) {missing} not found; the store has {names}.",
                                 "Choose channel names that exist in every subject's store.")
            return np.array([lookup[p] for p in picks], dtype=np.int64)
        p = np.asarray(picks, dtype=np.int64)
        if p.size and (p.min() < 0 or p.max() >= len(names)):
            raise StoreError(self.path, "info", f"channel indices {p.tolist()} out of range 0..{len(names) - 1}.")
        return p

    def __getitem__(self, index: int) -> np.ndarray:
        return self.get_signals(index)

    def iter_blocks(self, block_size: int = 1024) -> Iterator[tuple[int, np.ndarray]]:
        """Yield ``(start, signals[start:start+block_size])`` over all trials."""
        for start in range(0, self.n_trials, block_size):
            yield start, self.get_signals(slice(start, start + block_size))

    def to_epochs(self, index: Sequence[int] | np.ndarray | None = None, *, verbose: bool | None = None):
        """The trials as ``mne.EpochsArray`` with per-trial metadata (stimulus, concept, split...).

        Each concept (category) of the stimulus table has its own event id: ``event_id`` maps the
        concepts of the included trials, sorted, to the codes ``1, 2, ...`` and each trial's event
        code is its concept's, so ``epochs["face"]`` selects the face trials. The metadata holds
        every per-trial field plus ``concept``. A store without its stimulus table (moved away from
        its folder's ``stimuli.tsv``) uses each stimulus id as its category.

        Parameters
        ----------
        index : array of int | None
            Trials to include; ``None`` includes all.
        verbose : bool | None
            MNE verbosity.

        Returns
        -------
        epochs : mne.EpochsArray
        """
        import mne

        self._require_timeseries("epochs")
        idx = np.arange(self.n_trials) if index is None else np.asarray(index)
        data = self.get_signals(idx).astype(np.float64)
        meta = self.metadata(idx)
        ids = meta["stimulus_id"].to_numpy().astype(str)
        try:
            table = self.stimuli
        except StoreError:  # a store away from its folder's stimuli.tsv: each stimulus is its own category
            concept = ids
        else:
            concept = np.asarray(table.concept, dtype=str)[table.rows(ids, where=f"stimulus table of {self.path}")]
            concept = np.where(concept == "", ids, concept)
        meta["concept"] = concept
        names = sorted(set(concept.tolist()))
        event_id = {name: code for code, name in enumerate(names, start=1)}
        codes = np.array([event_id[c] for c in concept], dtype=int)
        events = np.column_stack([np.arange(len(idx)), np.zeros(len(idx), int), codes])
        return mne.EpochsArray(data, self.info, events=events, event_id=event_id, tmin=self.tmin, metadata=meta,
                               verbose=verbose)

    def metadata(self, index: np.ndarray | None = None):
        """Per-trial fields as a ``pandas.DataFrame`` (pandas is imported only here)."""
        import pandas as pd

        idx = np.arange(self.n_trials) if index is None else np.asarray(index)
        return pd.DataFrame({k: self.trial_field(k)[idx] for k in self.trial_fields})

    def validate(self, *, check_values: bool = True) -> None:
        """Run :func:`validate_store` on this file (against this store's stimulus table, if given).

        Parameters
        ----------
        check_values : bool
            Also scan every signal for NaN/Inf.
        """
        validate_store(self.path, check_values=check_values, stimuli=self._stimuli)


_PREPARED = ("PreparedDataset", "open_prepared", "store_filename", "write_dataset_meta")


def __getattr__(name: str) -> Any:
    # prepared folders have their own module (which imports this one); keep the old names working
    if name in _PREPARED:
        from neurodecode.io import prepared

        return getattr(prepared, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
