"""Writing trial stores: :class:`StoreWriter` (block by block, atomic) and :func:`write_store`.

The layout written is the one :mod:`neurodecode.io.schema` describes (``schema_version`` 2: no
embedded stimulus table).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from neurodecode._version import __version__
from neurodecode.io.schema import MODALITIES, SCHEMA_VERSION, SPLITS, StoreError
from neurodecode.io.stimuli import StimulusTable
from neurodecode.utils import PathLike, atomic_path

if TYPE_CHECKING:  # pragma: no cover
    import h5py
    import mne

__all__ = ["StoreWriter", "write_store"]


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
        The stimulus table of the data set (every trial's stimulus id must be one of its rows; the
        table is written to the prepared folder's ``stimuli.tsv``, not into the store).
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
    attrs : dict | None
        Further root attributes (dicts and lists are stored as JSON).
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
        """Write the per-trial fields and the attributes (call it before leaving the ``with`` block).

        Every trial's ``stimulus_id`` is checked against the stimulus table given to the writer;
        the table itself is not stored in the file (it is the prepared folder's ``stimuli.tsv``).

        Parameters
        ----------
        stimulus_id, split : sequence of str
            Per-trial stimulus id and split (``"train"`` or ``"test"``).
        repetition, session : sequence of int | None
            Per-trial repetition and session numbers (``None``: zeros).
        extra : dict of str to sequence | None
            Further per-trial fields (strings or numbers).
        voxel_ijk : ndarray, shape (n_voxels, 3) | None
            Voxel indices (fMRI).
        volume_shape : sequence of int | None
            Shape of the volume the voxels index (fMRI).
        affine : ndarray, shape (4, 4) | None
            Voxel-to-world affine (fMRI).
        """
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
    """Write a whole trial store atomically.

    Parameters
    ----------
    path : path-like
        Destination ``.h5`` file.
    signals : ndarray, shape (n_trials, n_chans, n_times) or (n_trials, n_voxels)
        The trials.
    stimulus_id, split, repetition, session, extra, voxel_ijk, volume_shape, affine
        Per-trial fields and fMRI voxels, as in :meth:`StoreWriter.finish`.
    stimuli, modality, subject, sfreq, tmin, info, ch_names, provenance, attrs
        As in :class:`StoreWriter`.
    block_size : int
        Trials written at a time.

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
