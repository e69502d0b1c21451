"""Reader for any MNE epochs: ``neurodecode prepare epochs``.

Any ``mne.Epochs`` (in memory, or a ``-epo.fif`` file) becomes a trial store, as long as each
trial's stimulus can be named: by a column of ``epochs.metadata`` or, by default, by the name of
its event in ``epochs.event_id``. Images come from a folder (an image whose file stem is the
stimulus id, or a folder named after it for category-level stimuli) or from a CSV/TSV table with
the columns ``stimulus_id`` and ``image_path`` (optionally ``concept`` and ``split``).

Processing streams the epochs in chunks (``epochs[idx].load_data()``), so a file far larger than
memory is read piece by piece: channel selection, optional band-pass filter, optional resampling,
optional baseline correction and cropping are done with MNE on each chunk; an optional
per-channel scaling (z-score or robust) is fitted on training trials only.

The module name shadows nothing because imports are absolute.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from neurodecode.io.store import StimulusTable, StoreError, StoreWriter
from neurodecode.utils import PathLike, check_option, logger, use_log_level
from neurodecode.utils import progress as progress_bar
from neurodecode.readers.common import (
    finish_prepared,
    is_done,
    merge_stimulus_tables,
    mne_verbose,
    num_key,
    provenance_step,
    read_stimulus_table,
    resolve_images,
    store_path,
)

if TYPE_CHECKING:  # pragma: no cover
    import mne as _mne

PREPARE_HELP = "Any mne.Epochs (.fif) whose metadata column or event ids name the stimulus of each trial."
PREPARE_DESCRIPTION = """\
Turn MNE epochs into trial stores.

--root is one '-epo.fif' file (one subject) or a folder of them (one subject per file; the
subject label is taken from 'sub-XX' in the file name, else from the file's position).

The stimulus of each trial is the value of a metadata column (--stimulus-column) or, by default,
the name of its event in epochs.event_id. Images: --images DIR (a file whose stem is the stimulus
id, or a sub-folder named after it for category-level stimuli) or --stimulus-table FILE (CSV/TSV
with columns stimulus_id, image_path and optionally concept, split; paths relative to the table).
The split is 'train' unless --split-column, --test-stimuli or the table's split column says
otherwise. Repetitions are numbered in trial order per stimulus.

Example:
  neurodecode prepare epochs --root sub-01-epo.fif --out prepared --stimulus-column image \\
      --images stimuli/ --tmin 0 --tmax 1 --sfreq 200 --scaling zscore
"""

SCALINGS = ("none", "zscore", "robust")


# ==================================================================================================
# per-channel scaling, fitted on training trials
# ==================================================================================================
@dataclass
class ChannelScaler:
    """Per-channel affine scaling ``(x - center) / scale``, optionally clamped to ``[-clamp, clamp]``.

    ``method`` is ``"zscore"`` (mean and standard deviation) or ``"robust"`` (median and
    inter-quartile range, as scikit-learn's ``RobustScaler``), computed over trials and time.
    """

    method: str
    center: np.ndarray
    scale: np.ndarray
    clamp: float | None = None
    n_fit_trials: int = 0

    @classmethod
    def fit(cls, data: np.ndarray, method: str, clamp: float | None = None) -> ChannelScaler:
        """Fit on ``data`` of shape ``(n_trials, n_chans, n_times)``."""
        check_option("scaling", method, ("zscore", "robust"))
        n_ch = data.shape[1]
        center, scale = np.zeros(n_ch), np.ones(n_ch)
        for c in range(n_ch):  # one channel at a time: no full-size float64 copy of the data
            x = np.asarray(data[:, c, :], dtype=np.float64).ravel()
            if method == "zscore":
                center[c], scale[c] = x.mean(), x.std()
            else:
                q25, q50, q75 = np.percentile(x, [25, 50, 75])
                center[c], scale[c] = q50, q75 - q25
        scale[~(scale > 0)] = 1.0  # flat channels are left unscaled rather than divided by zero
        return cls(method, center, scale, clamp, int(data.shape[0]))

    def transform(self, x: np.ndarray) -> np.ndarray:
        """Scale ``x`` of shape ``(n, n_chans, n_times)``."""
        y = (x - self.center[None, :, None]) / self.scale[None, :, None]
        if self.clamp is not None:
            np.clip(y, -self.clamp, self.clamp, out=y)
        return y.astype(np.float32, copy=False)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly description (stored as a root attribute of the store)."""
        return {"method": self.method, "center": self.center.tolist(), "scale": self.scale.tolist(),
                "clamp": self.clamp, "n_fit_trials": self.n_fit_trials}


# ==================================================================================================
# chunked MNE processing
# ==================================================================================================
@dataclass
class EpochsSpec:
    """What to do to each chunk of epochs, in this order: pick, filter, resample, baseline, crop.

    ``tmax`` is exclusive (``[tmin, tmax)``): 0 to 1 s at 200 Hz gives exactly 200 samples.
    ``filter_method`` and ``resample_method`` are passed to ``mne.Epochs.filter`` (``"fir"``, MNE's
    default, or ``"iir"``) and ``mne.Epochs.resample`` (``"fft"``, MNE's default, or
    ``"polyphase"``); MNE runs FIR filters and FFT resampling one channel at a time, which is slow
    on many-channel data (271 MEG channels), whereas ``"iir"`` and ``"polyphase"`` are much faster.
    """

    picks: list[str]
    l_freq: float | None = None
    h_freq: float | None = None
    sfreq: float | None = None
    baseline: tuple[float | None, float | None] | None = None
    tmin: float | None = None
    tmax: float | None = None
    filter_method: str = "fir"
    resample_method: str = "fft"

    def to_dict(self) -> dict[str, Any]:
        """Provenance parameters."""
        return {"n_picks": len(self.picks), "l_freq": self.l_freq, "h_freq": self.h_freq, "sfreq": self.sfreq,
                "baseline": None if self.baseline is None else list(self.baseline),
                "tmin": self.tmin, "tmax": self.tmax, "tmax_inclusive": False,
                "filter_method": self.filter_method, "resample_method": self.resample_method}


def default_picks(epochs: _mne.BaseEpochs, modality: str | None) -> tuple[list[str], str]:
    """Channel names of the brain signals to keep, and the modality (``"meg"`` or ``"eeg"``).

    MEG channels when there are any (or when ``modality="meg"``), else EEG channels. Channels
    marked bad are kept so that every subject's store has the same channels.
    """
    import mne

    types = set(epochs.get_channel_types())
    has_meg = bool(types & {"mag", "grad"})
    if modality is None:
        modality = "meg" if has_meg else "eeg"
    check_option("modality", modality, ("eeg", "meg"))
    kw = {"meg": True, "eeg": False} if modality == "meg" else {"meg": False, "eeg": True}
    idx = mne.pick_types(epochs.info, **kw, ref_meg=False, exclude=[])
    if len(idx) == 0:
        raise ValueError(f"The epochs have no {modality.upper()} channels (channel types: {sorted(types)}). "
                         "Pass modality= or picks= to choose the channels.")
    return [epochs.ch_names[i] for i in idx], modality


def process_chunk(epochs: _mne.BaseEpochs, idx: np.ndarray, spec: EpochsSpec, *,
                  verbose: bool | str | None = None) -> tuple[np.ndarray, _mne.Info, float]:
    """Load epochs ``idx`` and apply ``spec`` with MNE; returns ``(data float32, info, tmin)``."""
    v = mne_verbose(verbose)
    ep = epochs[np.asarray(idx, dtype=np.int64)]
    if not ep.preload:
        ep.load_data()
    ep.pick(spec.picks, verbose=v)
    if spec.l_freq is not None or spec.h_freq is not None:
        ep.filter(spec.l_freq, spec.h_freq, method=spec.filter_method, verbose=v)
    if spec.sfreq is not None and abs(spec.sfreq - ep.info["sfreq"]) > 1e-9:
        ep.resample(spec.sfreq, method=spec.resample_method, verbose=v)
    if spec.baseline is not None:
        ep.apply_baseline(spec.baseline, verbose=v)
    if spec.tmin is not None or spec.tmax is not None:
        ep.crop(spec.tmin, spec.tmax, include_tmax=spec.tmax is None, verbose=v)
    data = ep.get_data(copy=False).astype(np.float32)
    return data, ep.info, float(ep.times[0])


def _chunks(n: int, size: int) -> Iterator[tuple[int, int]]:
    for start in range(0, n, size):
        yield start, min(n, start + size)


def write_epochs_store(
    path: Path,
    epochs: _mne.BaseEpochs,
    keep: np.ndarray,
    *,
    stimulus_id: Sequence[str],
    split: Sequence[str],
    repetition: Sequence[int],
    session: Sequence[int],
    stimuli: StimulusTable,
    subject: str,
    modality: str,
    spec: EpochsSpec,
    scaling: str = "none",
    clamp: float | None = None,
    fit_trials: int | None = 1000,
    seed: int = 0,
    chunk_size: int = 256,
    extra: Mapping[str, Sequence[Any]] | None = None,
    provenance: Sequence[Mapping[str, Any]] = (),
    show_progress: bool = True,
    verbose: bool | str | None = None,
) -> dict[str, Any]:
    """Stream epochs ``keep`` (indices into ``epochs``, in store order) through ``spec`` into a store.

    Memory holds one chunk of ``chunk_size`` epochs (plus, for scaling, the at most ``fit_trials``
    training trials used to fit it). Returns a summary (shape, sfreq, scaler).
    """
    check_option("scaling", scaling, SCALINGS)
    keep = np.asarray(keep, dtype=np.int64)
    n = len(keep)
    if n == 0:
        raise ValueError(f"{path}: no trial is left to write (check the stimulus/split options).")
    split_arr = np.asarray(split, dtype=object)
    probe, info, tmin = process_chunk(epochs, keep[:1], spec, verbose=verbose)
    trial_shape = probe.shape[1:]

    scaler: ChannelScaler | None = None
    if scaling != "none":
        train_pos = np.flatnonzero(split_arr == "train")
        if len(train_pos) == 0:
            raise ValueError(f"{path}: scaling={scaling!r} is fitted on training trials, but there are none.")
        if fit_trials is not None and len(train_pos) > fit_trials:
            rng = np.random.default_rng(seed)
            train_pos = np.sort(rng.choice(train_pos, size=int(fit_trials), replace=False))
        fit = np.empty((len(train_pos), *trial_shape), dtype=np.float32)
        for a, b in _chunks(len(train_pos), chunk_size):
            fit[a:b] = process_chunk(epochs, keep[train_pos[a:b]], spec, verbose=verbose)[0]
        scaler = ChannelScaler.fit(fit, scaling, clamp)
        del fit
    steps = [*provenance, provenance_step("mne_epochs", **spec.to_dict(), chunk_size=chunk_size)]
    if scaler is not None:
        steps.append(provenance_step("scale_per_channel", method=scaling, clamp=clamp, fit_on="train",
                                     fit_trials=scaler.n_fit_trials, seed=seed))
    attrs = {"scaler": scaler.to_dict()} if scaler is not None else None
    with StoreWriter(path, n, trial_shape, modality=modality, stimuli=stimuli, subject=subject,
                     sfreq=float(info["sfreq"]), tmin=tmin, info=info, provenance=steps, attrs=attrs) as w:
        bar = progress_bar(total=n, enabled=show_progress, desc=f"sub-{subject}", unit="trial")
        for a, b in _chunks(n, chunk_size):
            data, _, _ = process_chunk(epochs, keep[a:b], spec, verbose=verbose)
            if scaler is not None:
                data = scaler.transform(data)
            w.write(a, data)
            bar.update(b - a)
        bar.close()
        w.finish(stimulus_id=stimulus_id, split=split, repetition=np.asarray(repetition, dtype=np.int32),
                 session=np.asarray(session, dtype=np.int32), extra=extra)
    return {"n_trials": n, "n_chans": int(trial_shape[0]), "n_times": int(trial_shape[1]),
            "sfreq": float(info["sfreq"]), "tmin": tmin,
            "n_test_trials": int((split_arr == "test").sum()),
            "scaler": None if scaler is None else {"method": scaling, "n_fit_trials": scaler.n_fit_trials}}


def occurrence_index(ids: Sequence[str]) -> np.ndarray:
    """0-based count of earlier trials with the same id (the repetition number of each trial)."""
    seen: dict[str, int] = {}
    out = np.empty(len(ids), dtype=np.int32)
    for i, s in enumerate(ids):
        out[i] = seen.get(s, 0)
        seen[s] = out[i] + 1
    return out


# ==================================================================================================
# the generic epochs reader
# ==================================================================================================
def _load_epochs(epochs: _mne.BaseEpochs | PathLike, verbose: bool | str | None) -> tuple[_mne.BaseEpochs, str]:
    import mne

    if isinstance(epochs, mne.BaseEpochs):
        return epochs, "<mne.Epochs in memory>"
    path = Path(epochs)
    if not path.is_file():
        raise FileNotFoundError(f"Epochs file {path} not found.")
    return mne.read_epochs(path, preload=False, verbose=mne_verbose(verbose)), str(path)


def _trial_stimuli(epochs: _mne.BaseEpochs, stimulus: str | None, source: str) -> list[str]:
    if stimulus is not None:
        md = epochs.metadata
        if md is None or stimulus not in md.columns:
            cols = [] if md is None else list(md.columns)
            raise KeyError(f"{source}: metadata has no column {stimulus!r} (columns: {cols}). "
                           "Pass the column that names each trial's stimulus, or leave it out to use event names.")
        vals = md[stimulus].tolist()
        bad = [i for i, v in enumerate(vals) if v is None or (isinstance(v, float) and np.isnan(v)) or str(v) == ""]
        if bad:
            raise ValueError(f"{source}: metadata column {stimulus!r} is empty for {len(bad)} trial(s), "
                             f"first at trial {bad[0]}. Drop those epochs first.")
        return [num_key(v) if isinstance(v, int | float | np.number) else str(v) for v in vals]
    names = {code: name for name, code in epochs.event_id.items()}
    codes = epochs.events[:, 2]
    unknown = sorted({int(c) for c in codes if c not in names})
    if unknown:
        raise ValueError(f"{source}: event code(s) {unknown[:5]} are not in epochs.event_id.")
    return [names[c] for c in codes]


def prepare_epochs(
    epochs: _mne.BaseEpochs | PathLike,
    out: PathLike,
    *,
    subject: str = "01",
    stimulus: str | None = None,
    images: PathLike | None = None,
    stimulus_table: PathLike | None = None,
    split: str | None = None,
    test_stimuli: Sequence[str] | None = None,
    concept: str | None = None,
    session: str | None = None,
    modality: str | None = None,
    picks: Sequence[str] | None = None,
    tmin: float | None = None,
    tmax: float | None = None,
    l_freq: float | None = None,
    h_freq: float | None = None,
    sfreq: float | None = None,
    baseline: tuple[float | None, float | None] | None = None,
    filter_method: str = "fir",
    resample_method: str = "fft",
    scaling: str = "none",
    clamp: float | None = None,
    fit_trials: int | None = 1000,
    seed: int = 0,
    chunk_size: int = 256,
    overwrite: bool = False,
    progress: bool = True,
    verbose: bool | str | None = None,
) -> Path:
    """Write one subject's MNE epochs as a trial store in the prepared folder ``out``.

    Parameters
    ----------
    epochs : mne.Epochs | path-like
        Epochs in memory, or a ``-epo.fif`` file (read lazily, chunk by chunk).
    out : path-like
        Prepared folder; ``sub-<subject>.h5`` is written there and ``stimuli.tsv`` /
        ``dataset.json`` are created or extended (call once per subject).
    subject : str
        Subject label.
    stimulus : str | None
        Metadata column naming each trial's stimulus; ``None`` uses the event names of
        ``epochs.event_id``.
    images : path-like | None
        Folder of images: the image of stimulus ``s`` is ``images/s`` (a file or a folder of
        images for category-level stimuli) or the one file whose stem is ``s``.
    stimulus_table : path-like | None
        CSV/TSV with columns ``stimulus_id``, ``image_path`` and optionally ``concept``, ``split``
        (image paths relative to the table). Every trial's stimulus must be a row.
    split : str | None
        Metadata column with ``"train"``/``"test"`` per trial.
    test_stimuli : list of str | None
        Stimulus ids of the test split (the rest is training).
    concept : str | None
        Metadata column with each trial's concept; default: the table's ``concept`` column, else
        the stimulus id itself.
    session : str | None
        Metadata column with an integer session number per trial (default 0).
    modality : "eeg" | "meg" | None
        Which channels to keep when ``picks`` is not given (default: MEG if present, else EEG).
    picks : list of str | None
        Channel names to keep.
    tmin, tmax : float | None
        Crop window ``[tmin, tmax)`` in seconds, applied after filtering and resampling.
    l_freq, h_freq : float | None
        Band-pass edges in Hz (``mne.Epochs.filter``); ``None`` skips that edge.
    sfreq : float | None
        Resample to this rate (``mne.Epochs.resample``).
    baseline : tuple | None
        Baseline window for ``mne.Epochs.apply_baseline``.
    filter_method, resample_method : str
        ``"fir"``/``"iir"`` and ``"fft"``/``"polyphase"`` (see :class:`EpochsSpec`).
    scaling : "none" | "zscore" | "robust"
        Per-channel scaling fitted on training trials only (mean/sd or median/IQR over trials and
        time), on a seeded subset of at most ``fit_trials`` trials (``None``: all).
    clamp : float | None
        Clip scaled values to ``[-clamp, clamp]``.
    fit_trials, seed : int
        Size and seed of the subset the scaler is fitted on.
    chunk_size : int
        Epochs processed at a time (bounds memory).
    overwrite : bool
        Rebuild the store when it already exists (otherwise a valid store is kept).
    progress : bool
        Show a progress bar.
    verbose : bool | str | None
        Log level.

    Returns
    -------
    out : Path
        The prepared folder.
    """
    out = Path(out)
    with use_log_level(verbose):
        if is_done(out, subject, overwrite=overwrite):
            return out
        ep, source = _load_epochs(epochs, verbose)
        n_all = len(ep.events)
        ids = _trial_stimuli(ep, stimulus, source)
        md = ep.metadata

        # images, concepts, splits ------------------------------------------------------------
        uniq = list(dict.fromkeys(ids))
        table_rows: dict[str, dict[str, str]] = {}
        if stimulus_table is not None:
            rows = {r["stimulus_id"]: r for r in read_stimulus_table(stimulus_table)}
            missing = [s for s in uniq if s not in rows]
            if missing:
                raise StoreError(stimulus_table, "stimulus_id",
                                 f"has no row for {len(missing)} stimulus id(s) of the epochs: {missing[:10]}.",
                                 f"Every stimulus named by {'column ' + repr(stimulus) if stimulus else 'the event names'} "
                                 "must be a row of the table.")
            table_rows = {s: rows[s] for s in uniq}
            unused = len(rows) - len(uniq)
            if unused:
                logger.info(f"{stimulus_table}: {unused} row(s) name stimuli that no trial shows; they are left out")
        if images is not None and stimulus_table is not None:
            raise ValueError("Give either images= (a folder) or stimulus_table= (a table), not both.")
        if images is not None:
            paths = dict(zip(uniq, resolve_images(uniq, images), strict=True))
        else:
            paths = {s: table_rows.get(s, {}).get("image_path", "") for s in uniq}
            if stimulus_table is None:
                logger.warning(f"{source}: no images given (images= or stimulus_table=): the stimulus table has "
                               "no image paths, so teacher embeddings cannot be computed from it")

        trial_split = _trial_split(ep, ids, split, test_stimuli, table_rows, source)
        stim_split: dict[str, str] = {}
        for s, sp in zip(ids, trial_split, strict=True):
            if stim_split.setdefault(s, sp) != sp:
                raise ValueError(f"{source}: stimulus {s!r} appears in both splits; a stimulus belongs to one split.")
        if concept is not None:
            if md is None or concept not in md.columns:
                raise KeyError(f"{source}: metadata has no column {concept!r} (for concept=).")
            concepts: dict[str, str] = {}
            for s, c in zip(ids, md[concept].astype(str).tolist(), strict=True):
                concepts.setdefault(s, c)
        else:
            concepts = {s: (table_rows.get(s, {}).get("concept") or s) for s in uniq}
        if session is not None:
            if md is None or session not in md.columns:
                raise KeyError(f"{source}: metadata has no column {session!r} (for session=).")
            sess = md[session].to_numpy()
            if not np.issubdtype(sess.dtype, np.integer):
                try:
                    sess = sess.astype(np.float64)
                    assert np.all(sess == np.round(sess))
                except (ValueError, AssertionError):
                    raise ValueError(f"{source}: metadata column {session!r} must hold integer session numbers.") \
                        from None
            sess = sess.astype(np.int32)
        else:
            sess = np.zeros(n_all, np.int32)

        table = StimulusTable(uniq, [concepts[s] for s in uniq], [paths[s] for s in uniq],
                              [stim_split[s] for s in uniq], root=None)
        if picks is None:
            pick_names, modality = default_picks(ep, modality)
        else:
            missing_ch = [c for c in picks if c not in ep.ch_names]
            if missing_ch:
                raise ValueError(f"{source}: channel(s) {missing_ch} not found; channels are {ep.ch_names[:10]}...")
            pick_names = list(picks)
            if modality is None:
                modality = "meg" if set(ep.get_channel_types(picks=pick_names)) & {"mag", "grad"} else "eeg"
        spec = EpochsSpec(pick_names, l_freq, h_freq, sfreq, baseline, tmin, tmax, filter_method, resample_method)
        prov = [provenance_step("read_epochs", source=source, stimulus=stimulus or "event names", images=
                                None if images is None else str(images),
                                stimulus_table=None if stimulus_table is None else str(stimulus_table),
                                split=split, test_stimuli=None if test_stimuli is None else list(test_stimuli),
                                concept=concept, session=session, modality=modality, n_epochs=n_all)]
        out.mkdir(parents=True, exist_ok=True)
        summary = write_epochs_store(
            store_path(out, subject), ep, np.arange(n_all), stimulus_id=ids, split=trial_split,
            repetition=occurrence_index(ids), session=sess, stimuli=table, subject=subject, modality=modality,
            spec=spec, scaling=scaling, clamp=clamp, fit_trials=fit_trials, seed=seed, chunk_size=chunk_size,
            provenance=prov, show_progress=progress, verbose=verbose)
        finish_prepared(out, table, {"source": "epochs", "modality": modality,
                                     "options": {"stimulus": stimulus, "scaling": scaling, "clamp": clamp,
                                                 **spec.to_dict()}},
                        {subject: {"file": source, **summary}})
    return out


def _trial_split(ep, ids, split, test_stimuli, table_rows, source) -> list[str]:
    n = len(ids)
    if split is not None:
        md = ep.metadata
        if md is None or split not in md.columns:
            raise KeyError(f"{source}: metadata has no column {split!r} (for split=).")
        vals = md[split].astype(str).tolist()
    elif test_stimuli is not None:
        test = {str(s) for s in test_stimuli}
        unknown = sorted(test - set(ids))
        if unknown:
            raise ValueError(f"{source}: test stimulus id(s) {unknown[:10]} are shown by no trial.")
        vals = ["test" if s in test else "train" for s in ids]
    elif table_rows and any(r.get("split") for r in table_rows.values()):
        vals = [table_rows[s].get("split") or "train" for s in ids]
    else:
        vals = ["train"] * n
    bad = sorted(set(vals) - {"train", "test"})
    if bad:
        raise ValueError(f"{source}: split values must be 'train' or 'test'; found {bad[:5]}.")
    return vals


# ==================================================================================================
# command line
# ==================================================================================================
def add_prepare_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``neurodecode prepare epochs``."""
    add_epoch_processing_arguments(parser, sfreq_default=None, scaling_default="none")
    g = parser.add_argument_group("stimuli")
    g.add_argument("--subject", default=None,
                   help="subject label when --root is one file (default: from 'sub-XX' in the name, else 01)")
    g.add_argument("--stimulus-column", default=None,
                   help="metadata column naming each trial's stimulus (default: the event names of event_id)")
    g.add_argument("--images", type=Path, default=None,
                   help="folder of images: a file whose stem is the stimulus id, or a sub-folder named after it")
    g.add_argument("--stimulus-table", type=Path, default=None,
                   help="CSV/TSV with columns stimulus_id,image_path[,concept,split] (paths relative to it)")
    g.add_argument("--split-column", default=None, help="metadata column with 'train'/'test' per trial")
    g.add_argument("--test-stimuli", default=None,
                   help="comma-separated stimulus ids of the test split, or a text file with one id per line")
    g.add_argument("--concept-column", default=None,
                   help="metadata column with each trial's concept (default: table's concept, else the stimulus)")
    g.add_argument("--session-column", default=None, help="metadata column with integer session numbers")
    g.add_argument("--modality", choices=("eeg", "meg"), default=None,
                   help="channels to keep (default: MEG if the data have MEG channels, else EEG)")
    g.add_argument("--picks", default=None, help="comma-separated channel names to keep (overrides --modality)")


def add_epoch_processing_arguments(parser: argparse.ArgumentParser, *, sfreq_default: float | None,
                                   scaling_default: str, tmin_default: float | None = None,
                                   tmax_default: float | None = None) -> None:
    """Processing options shared by the epochs and THINGS-MEG readers."""
    g = parser.add_argument_group("processing (MNE, chunk by chunk)")
    g.add_argument("--tmin", type=float, default=tmin_default,
                   help=f"start of the crop window in s (default: {tmin_default if tmin_default is not None else 'keep'})")
    g.add_argument("--tmax", type=float, default=tmax_default,
                   help=f"end of the crop window in s, exclusive (default: {tmax_default if tmax_default is not None else 'keep'})")
    g.add_argument("--l-freq", type=float, default=None, help="high-pass edge of a band-pass filter in Hz (default: none)")
    g.add_argument("--h-freq", type=float, default=None, help="low-pass edge of a band-pass filter in Hz (default: none)")
    g.add_argument("--sfreq", type=float, default=sfreq_default,
                   help=f"resample to this rate in Hz (default: {sfreq_default or 'keep the data rate'})")
    g.add_argument("--filter-method", choices=("fir", "iir"), default="fir",
                   help="mne filter method: 'fir' (MNE's default, zero-phase FIR) or 'iir' (faster on many "
                        "channels; default fir)")
    g.add_argument("--resample-method", choices=("fft", "polyphase"), default="fft",
                   help="mne resample method: 'fft' (MNE's default) or 'polyphase' (faster on many channels; "
                        "default fft)")
    g.add_argument("--baseline", default=None,
                   help="baseline window 'a,b' in s for baseline correction (use 'None,0' for start..0; default: none)")
    g.add_argument("--scaling", choices=SCALINGS, default=scaling_default,
                   help=f"per-channel scaling fitted on training trials only (default: {scaling_default})")
    g.add_argument("--clamp", type=float, default=None, help="clip scaled values to [-CLAMP, CLAMP] (default: no clip)")
    g.add_argument("--fit-trials", type=int, default=1000,
                   help="fit the scaling on a seeded subset of at most this many training trials (0: all; default 1000)")
    g.add_argument("--seed", type=int, default=0, help="seed of the subset used to fit the scaling (default 0)")
    g.add_argument("--chunk-size", type=int, default=256, help="epochs processed at a time; bounds memory (default 256)")


def parse_baseline(text: str | None) -> tuple[float | None, float | None] | None:
    """``"None,0"`` -> ``(None, 0.0)``."""
    if text is None:
        return None
    parts = [p.strip() for p in str(text).split(",")]
    if len(parts) != 2:
        raise ValueError(f"--baseline must be two values 'a,b' (e.g. 'None,0'), got {text!r}.")
    return tuple(None if p.lower() == "none" else float(p) for p in parts)  # type: ignore[return-value]


def _test_ids(text: str | None) -> list[str] | None:
    if text is None:
        return None
    p = Path(text)
    if p.is_file():
        return [line.strip() for line in p.read_text().splitlines() if line.strip()]
    return [t.strip() for t in text.split(",") if t.strip()]


def prepare_from_args(args: argparse.Namespace) -> Path:
    """Run ``neurodecode prepare epochs`` from parsed arguments."""
    root = Path(args.root)
    if root.is_dir():
        files = sorted(p for p in root.glob("*-epo.fif") if not re.search(r"-epo-\d+\.fif$", p.name))
        if not files:
            raise FileNotFoundError(f"No '*-epo.fif' file in {root}. Pass one file or a folder of them as --root.")
        jobs = []
        for i, f in enumerate(files):
            m = re.search(r"sub-([A-Za-z0-9]+)", f.name)
            jobs.append((f, m.group(1) if m else f"{i + 1:02d}"))
        if args.subject and len(jobs) == 1:
            jobs = [(jobs[0][0], args.subject)]
    else:
        m = re.search(r"sub-([A-Za-z0-9]+)", root.name)
        jobs = [(root, args.subject or (m.group(1) if m else "01"))]
    for f, sub in jobs:
        prepare_epochs(
            f, args.out, subject=sub, stimulus=args.stimulus_column, images=args.images,
            stimulus_table=args.stimulus_table, split=args.split_column, test_stimuli=_test_ids(args.test_stimuli),
            concept=args.concept_column, session=args.session_column, modality=args.modality,
            picks=None if args.picks is None else [c.strip() for c in args.picks.split(",") if c.strip()],
            tmin=args.tmin, tmax=args.tmax, l_freq=args.l_freq, h_freq=args.h_freq, sfreq=args.sfreq,
            baseline=parse_baseline(args.baseline), filter_method=args.filter_method,
            resample_method=args.resample_method, scaling=args.scaling, clamp=args.clamp,
            fit_trials=args.fit_trials or None, seed=args.seed, chunk_size=args.chunk_size,
            overwrite=args.overwrite, progress=not args.no_progress, verbose=args.verbose or None)
    return Path(args.out)


__all__ = ["prepare_epochs", "ChannelScaler", "EpochsSpec", "write_epochs_store", "resolve_images",
           "read_stimulus_table", "merge_stimulus_tables", "PREPARE_HELP", "PREPARE_DESCRIPTION",
           "add_prepare_arguments", "prepare_from_args"]
