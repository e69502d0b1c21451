"""The trial store: one HDF5 file per subject holding preprocessed single-trial responses.

Schema (``schema_version`` 1)
-----------------------------
Root attributes
    ``schema_version`` (int), ``modality`` (``"eeg"``, ``"meg"`` or ``"fmri"``), ``subject`` (str),
    ``provenance`` (JSON list of processing steps), ``neurodecode_version`` (str); for EEG/MEG also
    ``sfreq`` (Hz, float), ``tmin`` (s, float) and ``info`` (``mne.Info.to_json_dict()`` as JSON).
``/signals``
    float32, ``(n_trials, n_chans, n_times)`` for EEG/MEG or ``(n_trials, n_voxels)`` for fMRI,
    chunked per trial so random access in a ``DataLoader`` is cheap.
``/trials/*``
    one entry per trial: ``stimulus_id`` (str), ``repetition`` (int32), ``split`` (``"train"`` or
    ``"test"``), ``session`` (int32) and any further 1-D fields a reader adds (e.g. ``run``,
    ``label``, ``onset``).
``/stimuli/*``
    the stimulus table: ``stimulus_id``, ``concept``, ``image_path``, ``split`` (all str). Every
    trial's ``stimulus_id`` must be in it.
``/voxels/ijk`` (fMRI, optional)
    voxel indices into the volume, with attributes ``volume_shape`` and ``affine``.

Files are written atomically (a temporary file in the same folder, renamed on success), read lazily
(the HDF5 handle is opened on first access in each process, so a :class:`TrialStore` can be sent to
``DataLoader`` workers under both ``fork`` and ``spawn``), and validated on open with errors that
name the file, the field and what was expected.

A *prepared folder* (the output of ``neurodecode simulate`` or ``neurodecode prepare``) holds one
store per subject (``sub-XX.h5``), the stimulus table ``stimuli.tsv`` (image paths relative to the
folder) and ``dataset.json``; :func:`open_prepared` reads it.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from neurodecode._version import __version__
from neurodecode.utils import PathLike, atomic_path, atomic_write_json, atomic_write_text

if TYPE_CHECKING:  # pragma: no cover
    import h5py
    import mne

SCHEMA_VERSION = 1
MODALITIES = ("eeg", "meg", "fmri")
SPLITS = ("train", "test")
STIMULUS_COLUMNS = ("stimulus_id", "concept", "image_path", "split")
REQUIRED_TRIAL_FIELDS = ("stimulus_id", "repetition", "split", "session")
STIMULI_FILENAME = "stimuli.tsv"
DATASET_FILENAME = "dataset.json"


class StoreError(ValueError):
    """A trial store or stimulus table that cannot be used, with the file and field at fault."""

    def __init__(self, file: PathLike | None, field: str | None, problem: str, fix: str | None = None):
        self.file = None if file is None else str(file)
        self.field = field
        self.problem = problem
        self.fix = fix
        where = f"{self.file}" if self.file else "trial store"
        if field:
            where += f", field '{field}'"
        msg = f"{where}: {problem}"
        if fix:
            msg += f" {fix}"
        super().__init__(msg)


# --------------------------------------------------------------------------------------------------
# stimulus table
# --------------------------------------------------------------------------------------------------
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
        """Row numbers of ``ids``; raises a :class:`StoreError` listing the ids that are absent."""
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
        """Absolute path of row ``i``'s image (``None`` when the table has none)."""
        p = str(self.image_path[i])
        if not p:
            return None
        path = Path(p)
        if not path.is_absolute() and self.root is not None:
            path = self.root / path
        return path

    def select(self, mask: np.ndarray | Sequence[bool]) -> StimulusTable:
        """A new table with the rows where ``mask`` is true."""
        m = np.asarray(mask, dtype=bool)
        return StimulusTable(self.stimulus_id[m], self.concept[m], self.image_path[m], self.split[m],
                             root=self.root)

    def concepts(self, split: str | None = None) -> list[str]:
        """Sorted unique concepts (of one split, or all)."""
        c = self.concept if split is None else self.concept[self.split == split]
        return sorted(set(c.tolist()))

    def to_dict(self) -> dict[str, list[str]]:
        """Columns as lists."""
        return {k: getattr(self, k).tolist() for k in STIMULUS_COLUMNS}

    # -- TSV -----------------------------------------------------------------------------------
    def write_tsv(self, path: PathLike) -> Path:
        """Write the table as TSV atomically. Image paths under the TSV's folder become relative."""
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
        """Read a table written by :meth:`write_tsv` (or by hand, with the same four columns)."""
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


# --------------------------------------------------------------------------------------------------
# writing
# --------------------------------------------------------------------------------------------------
def _str_dtype():
    import h5py

    return h5py.string_dtype("utf-8")


class StoreWriter:
    """Write a trial store block by block, atomically.

    Use as a context manager: the file appears under its final name only when the block exits
    without error, so an interrupted job never leaves a half-written store behind. Memory use is
    bounded by the blocks passed to :meth:`write`.

    Parameters
    ----------
    path : path-like
        Destination ``.h5`` file.
    n_trials : int
        Number of trials.
    trial_shape : tuple of int
        ``(n_chans, n_times)`` for EEG/MEG, ``(n_voxels,)`` for fMRI.
    modality : str
        ``"eeg"``, ``"meg"`` or ``"fmri"``.
    stimuli : StimulusTable
        The stimulus table of the data set.
    subject : str
        Subject label.
    sfreq, tmin : float | None
        Sampling rate (Hz) and time of the first sample (s); required for EEG/MEG.
    info : mne.Info | None
        Channel information (EEG/MEG); ``None`` builds a minimal one from ``ch_names``.
    ch_names : list of str | None
        Channel names when ``info`` is not given.
    provenance : list of dict | None
        Processing steps that produced the data.
    """

    def __init__(
        self,
        path: PathLike,
        n_trials: int,
        trial_shape: tuple[int, ...],
        *,
        modality: str,
        stimuli: StimulusTable,
        subject: str = "01",
        sfreq: float | None = None,
        tmin: float | None = None,
        info: mne.Info | None = None,
        ch_names: Sequence[str] | None = None,
        provenance: Sequence[Mapping[str, Any]] | None = None,
        attrs: Mapping[str, Any] | None = None,
    ) -> None:
        from neurodecode.utils import check_option

        check_option("modality", modality, MODALITIES)
        self.path = Path(path)
        self.n_trials = int(n_trials)
        self.trial_shape = tuple(int(s) for s in trial_shape)
        self.modality = modality
        self.stimuli = stimuli
        self.subject = str(subject)
        self.provenance = [dict(p) for p in (provenance or [])]
        self.attrs = dict(attrs or {})
        expected_ndim = 1 if modality == "fmri" else 2
        if len(self.trial_shape) != expected_ndim:
            raise StoreError(self.path, "signals",
                             f"a {modality} trial must have {expected_ndim} dimension(s) "
                             f"({'n_voxels' if modality == 'fmri' else 'n_chans, n_times'}), "
                             f"got shape {self.trial_shape}.")
        if modality != "fmri":
            if sfreq is None or not np.isfinite(sfreq) or sfreq <= 0:
                raise StoreError(self.path, "sfreq", f"must be a positive number for {modality}, got {sfreq!r}.")
            if tmin is None or not np.isfinite(tmin):
                raise StoreError(self.path, "tmin", f"must be a finite number for {modality}, got {tmin!r}.")
            info = _make_info(info, ch_names, sfreq, modality, self.trial_shape[0], self.path)
        self.sfreq = None if sfreq is None else float(sfreq)
        self.tmin = None if tmin is None else float(tmin)
        self.info = info
        self._ctx = None
        self._h5: h5py.File | None = None
        self._written = np.zeros(self.n_trials, dtype=bool)

    def __enter__(self) -> StoreWriter:
        import h5py

        self._ctx = atomic_path(self.path, suffix=".h5.tmp")
        tmp = self._ctx.__enter__()
        self._h5 = h5py.File(tmp, "w")
        chunk = (1, *self.trial_shape) if self.n_trials else None
        self._h5.create_dataset("signals", shape=(self.n_trials, *self.trial_shape), dtype="f4",
                                chunks=chunk)
        return self

    def write(self, start: int, block: np.ndarray) -> None:
        """Write trials ``start : start + len(block)``; the block is checked for shape and NaN/Inf."""
        from neurodecode.utils import check_finite

        block = np.asarray(block)
        if block.shape[1:] != self.trial_shape:
            raise StoreError(self.path, "signals",
                             f"block of shape {block.shape} does not match trials of shape {self.trial_shape}.")
        stop = start + len(block)
        if start < 0 or stop > self.n_trials:
            raise StoreError(self.path, "signals", f"trials {start}:{stop} outside 0:{self.n_trials}.")
        try:
            check_finite(block, what="signals", fix="Reject or interpolate bad samples before writing.")
        except ValueError as err:
            raise StoreError(self.path, "signals", f"trials {start}:{stop}: {err}") from None
        assert self._h5 is not None, "use StoreWriter as a context manager"
        self._h5["signals"][start:stop] = block.astype(np.float32, copy=False)
        self._written[start:stop] = True

    def finish(
        self,
        *,
        stimulus_id: Sequence[str],
        split: Sequence[str],
        repetition: Sequence[int] | None = None,
        session: Sequence[int] | None = None,
        extra: Mapping[str, Sequence[Any]] | None = None,
        voxel_ijk: np.ndarray | None = None,
        volume_shape: Sequence[int] | None = None,
        affine: np.ndarray | None = None,
    ) -> None:
        """Write the per-trial table, the stimulus table and the attributes (before leaving ``with``)."""
        h5 = self._h5
        assert h5 is not None, "use StoreWriter as a context manager"
        if not self._written.all():
            first = int(np.argmin(self._written))
            raise StoreError(self.path, "signals", f"trial {first} (and maybe others) was never written.")
        n = self.n_trials
        fields: dict[str, np.ndarray] = {
            "stimulus_id": np.asarray([str(s) for s in stimulus_id], dtype=object),
            "split": np.asarray([str(s) for s in split], dtype=object),
            "repetition": np.zeros(n, np.int32) if repetition is None else np.asarray(repetition),
            "session": np.zeros(n, np.int32) if session is None else np.asarray(session),
        }
        for k, v in (extra or {}).items():
            if k in fields:
                raise StoreError(self.path, f"trials/{k}", "is a reserved field name.")
            arr = np.asarray(v)
            fields[k] = np.asarray([str(s) for s in v], dtype=object) if arr.dtype.kind in "OUS" else arr
        for k, v in fields.items():
            if v.shape != (n,):
                raise StoreError(self.path, f"trials/{k}", f"must have shape ({n},) (one value per trial), got {v.shape}.")
        for k in ("repetition", "session"):
            if not np.issubdtype(fields[k].dtype, np.integer):
                raise StoreError(self.path, f"trials/{k}", f"must be integers, got dtype {fields[k].dtype}.")
        bad = sorted(set(fields["split"].tolist()) - set(SPLITS))
        if bad:
            raise StoreError(self.path, "trials/split", f"unknown value(s) {bad}; allowed: {list(SPLITS)}.")
        try:
            self.stimuli.rows(fields["stimulus_id"], where="stimulus table")
        except StoreError as err:
            raise StoreError(self.path, "trials/stimulus_id", err.problem, err.fix) from None

        grp = h5.create_group("trials")
        for k, v in fields.items():
            if v.dtype == object:
                grp.create_dataset(k, data=v.astype(str).tolist(), dtype=_str_dtype())
            else:
                grp.create_dataset(k, data=v.astype(np.int32) if k in ("repetition", "session") else v)
        sg = h5.create_group("stimuli")
        table = self.stimuli.to_dict()
        # Store image paths as given (relative to the prepared folder where possible).
        if self.stimuli.root is not None:
            rel = []
            for i, p in enumerate(table["image_path"]):
                f = self.stimuli.image_file(i)
                try:
                    rel.append(f.resolve().relative_to(self.path.parent.resolve()).as_posix() if f else "")
                except ValueError:
                    rel.append(p if Path(p).is_absolute() else str(f))
            table["image_path"] = rel
        for k in STIMULUS_COLUMNS:
            sg.create_dataset(k, data=table[k], dtype=_str_dtype())
        if voxel_ijk is not None:
            vg = h5.create_group("voxels")
            ijk = np.asarray(voxel_ijk, dtype=np.int32)
            if ijk.shape != (self.trial_shape[0], 3):
                raise StoreError(self.path, "voxels/ijk", f"must have shape ({self.trial_shape[0]}, 3), got {ijk.shape}.")
            vg.create_dataset("ijk", data=ijk)
            if volume_shape is not None:
                vg.attrs["volume_shape"] = np.asarray(volume_shape, dtype=np.int64)
            if affine is not None:
                vg.attrs["affine"] = np.asarray(affine, dtype=np.float64)
        a = h5.attrs
        a["schema_version"] = SCHEMA_VERSION
        a["modality"] = self.modality
        a["subject"] = self.subject
        a["provenance"] = json.dumps(self.provenance)
        a["neurodecode_version"] = __version__
        if self.modality != "fmri":
            a["sfreq"] = self.sfreq
            a["tmin"] = self.tmin
            a["info"] = json.dumps(self.info.to_json_dict())
        for k, v in self.attrs.items():
            a[k] = json.dumps(v) if isinstance(v, dict | list) else v
        self._finished = True

    def __exit__(self, exc_type, exc, tb) -> None:
        assert self._h5 is not None and self._ctx is not None
        self._h5.close()
        if exc_type is None and not getattr(self, "_finished", False):
            exc_type = StoreError
            exc = StoreError(self.path, None, "StoreWriter.finish() was not called; nothing was written.")
            self._ctx.__exit__(exc_type, exc, tb)
            raise exc
        self._ctx.__exit__(exc_type, exc, tb)


def _make_info(info, ch_names, sfreq, modality, n_chans, path) -> mne.Info:
    import mne

    if info is None:
        if ch_names is None:
            ch_names = [f"{modality.upper()}{i + 1:03d}" for i in range(n_chans)]
        ch_type = "mag" if modality == "meg" else "eeg"
        info = mne.create_info(list(ch_names), float(sfreq), ch_type)
    if len(info["ch_names"]) != n_chans:
        raise StoreError(path, "info", f"has {len(info['ch_names'])} channels but the signals have {n_chans}.",
                         "Pick the same channels in both.")
    if abs(float(info["sfreq"]) - float(sfreq)) > 1e-6:
        raise StoreError(path, "info", f"sfreq {info['sfreq']} differs from sfreq {sfreq}.")
    return info


def write_store(
    path: PathLike,
    signals: np.ndarray,
    *,
    stimulus_id: Sequence[str],
    split: Sequence[str],
    stimuli: StimulusTable,
    modality: str,
    repetition: Sequence[int] | None = None,
    session: Sequence[int] | None = None,
    subject: str = "01",
    sfreq: float | None = None,
    tmin: float | None = None,
    info: mne.Info | None = None,
    ch_names: Sequence[str] | None = None,
    provenance: Sequence[Mapping[str, Any]] | None = None,
    extra: Mapping[str, Sequence[Any]] | None = None,
    attrs: Mapping[str, Any] | None = None,
    voxel_ijk: np.ndarray | None = None,
    volume_shape: Sequence[int] | None = None,
    affine: np.ndarray | None = None,
    block_size: int = 1024,
) -> Path:
    """Write a whole trial store atomically (see :class:`StoreWriter` for the parameters).

    Returns
    -------
    path : Path
        The written file.
    """
    signals = np.asarray(signals)
    if signals.ndim not in (2, 3):
        raise StoreError(path, "signals", f"must be (n_trials, n_chans, n_times) or (n_trials, n_voxels), "
                                          f"got shape {signals.shape}.")
    with StoreWriter(path, len(signals), signals.shape[1:], modality=modality, stimuli=stimuli,
                     subject=subject, sfreq=sfreq, tmin=tmin, info=info, ch_names=ch_names,
                     provenance=provenance, attrs=attrs) as w:
        for start in range(0, len(signals), block_size):
            w.write(start, signals[start:start + block_size])
        w.finish(stimulus_id=stimulus_id, split=split, repetition=repetition, session=session, extra=extra,
                 voxel_ijk=voxel_ijk, volume_shape=volume_shape, affine=affine)
    return Path(path)


# --------------------------------------------------------------------------------------------------
# reading
# --------------------------------------------------------------------------------------------------
def _open_h5(path: Path):
    import h5py

    if not path.exists():
        raise StoreError(path, None, "file not found.",
                         "Create it with 'neurodecode prepare' or 'neurodecode simulate'.")
    try:
        return h5py.File(path, "r")
    except OSError as err:
        raise StoreError(path, None, f"is not a readable HDF5 file (truncated or corrupt?): {err}.",
                         "Delete it and run 'neurodecode prepare' (or 'simulate') again.") from None


class TrialStore:
    """Lazy reader of one trial store.

    Parameters
    ----------
    path : path-like
        The ``.h5`` file.
    validate : bool | "values"
        ``True`` (default) checks the schema on open (fast: attributes, fields, shapes, ids);
        ``"values"`` also scans every signal for NaN/Inf; ``False`` skips validation.

    Notes
    -----
    The HDF5 handle is opened on first access in each process and dropped when the object is
    pickled, so a store can be shared with ``DataLoader(num_workers>0)`` workers whatever the
    multiprocessing start method.
    """

    def __init__(self, path: PathLike, *, validate: bool | str = True) -> None:
        self.path = Path(path)
        self._h5: h5py.File | None = None
        self._pid: int | None = None
        self._cache: dict[str, Any] = {}
        if validate:
            validate_store(self.path, check_values=(validate == "values"))

    # -- handle management --------------------------------------------------------------------
    @property
    def h5(self) -> h5py.File:
        """The open HDF5 file of this process."""
        if self._h5 is None or self._pid != os.getpid():
            self._h5 = _open_h5(self.path)
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
        """The stimulus table stored with the trials."""
        if "stimuli" not in self._cache:
            g = self.h5["stimuli"]
            cols = {k: g[k].asstr()[()].tolist() for k in STIMULUS_COLUMNS}
            self._cache["stimuli"] = StimulusTable(**cols, root=self.path.parent)
        return self._cache["stimuli"]

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
        """The trials as ``mne.EpochsArray`` with per-trial metadata (stimulus, split, repetition...).

        Parameters
        ----------
        index : array of int | None
            Trials to include; ``None`` includes all.
        verbose : bool | None
            MNE verbosity.
        """
        import mne

        self._require_timeseries("epochs")
        idx = np.arange(self.n_trials) if index is None else np.asarray(index)
        data = self.get_signals(idx).astype(np.float64)
        meta = self.metadata(idx)
        events = np.column_stack([np.arange(len(idx)), np.zeros(len(idx), int), np.ones(len(idx), int)])
        return mne.EpochsArray(data, self.info, events=events, tmin=self.tmin, metadata=meta,
                               verbose=verbose)

    def metadata(self, index: np.ndarray | None = None):
        """Per-trial fields as a ``pandas.DataFrame`` (pandas is imported only here)."""
        import pandas as pd

        idx = np.arange(self.n_trials) if index is None else np.asarray(index)
        return pd.DataFrame({k: self.trial_field(k)[idx] for k in self.trial_fields})

    def validate(self, *, check_values: bool = True) -> None:
        """Run :func:`validate_store` on this file."""
        validate_store(self.path, check_values=check_values)


def read_store(path: PathLike, *, validate: bool | str = True) -> TrialStore:
    """Open a trial store lazily (see :class:`TrialStore`)."""
    return TrialStore(path, validate=validate)


def validate_store(path: PathLike, *, check_values: bool = True, block_size: int = 512) -> None:
    """Check a trial store against the schema; raise :class:`StoreError` on the first problem.

    Checks, in order: the file opens as HDF5; ``schema_version`` is known; the modality and, for
    EEG/MEG, ``sfreq``, ``tmin`` and ``info`` attributes are present and consistent; ``signals``
    exists with a float dtype and the right number of dimensions; every per-trial field has one
    value per trial; split values are known; every trial's stimulus id is in the stimulus table; and,
    with ``check_values``, that the signals hold no NaN/Inf (scanned block by block).
    """
    path = Path(path)
    h5 = _open_h5(path)
    try:
        a = h5.attrs
        if "schema_version" not in a:
            raise StoreError(path, "schema_version", "attribute is missing: this is not a neurodecode trial store.",
                             "Create stores with 'neurodecode prepare' or neurodecode.io.store.write_store().")
        version = int(a["schema_version"])
        if version != SCHEMA_VERSION:
            raise StoreError(path, "schema_version",
                             f"is {version}, but this neurodecode ({__version__}) reads version {SCHEMA_VERSION}.",
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
        if not isinstance(ds, _h5py().Dataset):
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
        if "stimuli" not in h5:
            raise StoreError(path, "stimuli", "group (the stimulus table) is missing.")
        for name in STIMULUS_COLUMNS:
            if name not in h5["stimuli"]:
                raise StoreError(path, f"stimuli/{name}", "dataset is missing.")
        table_ids = set(h5["stimuli/stimulus_id"].asstr()[()].tolist())
        trial_ids = h5["trials/stimulus_id"].asstr()[()]
        unknown = sorted(set(trial_ids.tolist()) - table_ids)
        if unknown:
            first = int(np.flatnonzero(trial_ids == unknown[0])[0])
            raise StoreError(path, "trials/stimulus_id",
                             f"{len(unknown)} stimulus id(s) are not in the stimulus table, e.g. {unknown[:3]} "
                             f"(first at trial {first}).",
                             "Add them to the stimulus table or drop those trials.")
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


def _h5py():
    import h5py

    return h5py


# --------------------------------------------------------------------------------------------------
# prepared folders
# --------------------------------------------------------------------------------------------------
@dataclass
class PreparedDataset:
    """A folder made by ``neurodecode prepare`` or ``simulate``: trial stores + stimulus table."""

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
    """File name of a subject's store in a prepared folder."""
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
    stores = {s: TrialStore(available[s], validate=validate) for s in chosen}
    return PreparedDataset(root=root, stimuli=stimuli, stores=stores, meta=meta)


def write_dataset_meta(root: PathLike, meta: Mapping[str, Any]) -> Path:
    """Write ``dataset.json`` of a prepared folder atomically."""
    return atomic_write_json(Path(root) / DATASET_FILENAME, dict(meta))
