"""Reader for any MNE epochs: ``neurodecode prepare epochs``.

Any ``mne.Epochs`` (in memory, or a ``-epo.fif`` file) becomes a trial store, as long as each
trial's stimulus can be named: by a column of ``epochs.metadata`` or, by default, by the name of
its event in ``epochs.event_id``. Images come from a folder (an image whose file stem is the
stimulus id, or a folder named after it for category-level stimuli) or from a CSV/TSV table with
the columns ``stimulus_id`` and ``image_path`` (optionally ``concept`` and ``split``).

Processing streams the epochs in chunks (:func:`neurodecode.readers.epochs_writer.write_epochs_store`),
so a file far larger than memory is read piece by piece; the options of that processing are
:class:`~neurodecode.readers.options.EpochOptions`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from neurodecode._docs import fill_doc
from neurodecode.io.store import StimulusTable, StoreError
from neurodecode.readers.common import (
    finish_prepared,
    is_done,
    mne_verbose,
    num_key,
    provenance_step,
    read_stimulus_table,
    reading,
    record_prepare_options,
    resolve_images,
    store_path,
)
from neurodecode.readers.epochs_writer import (
    EPOCHS_EXPECTED,
    EpochsSpec,
    default_picks,
    occurrence_index,
    write_epochs_store,
)
from neurodecode.readers.options import (
    EpochOptions,
    ReaderOptions,
    comma_list,
    ids_or_file,
    option,
    resolve_options,
)
from neurodecode.utils import PathLike, logger, use_log_level

if TYPE_CHECKING:  # pragma: no cover
    import mne as _mne

__all__ = ["EpochsOptions", "prepare_epochs", "find_epochs_files"]


@dataclass
class EpochsOptions(ReaderOptions):
    """Options of :func:`prepare_epochs`: how trials name their stimuli, images and splits, which
    channels are kept, and the chunked processing (``processing``, an :class:`EpochOptions`)."""

    GROUP: ClassVar[str] = "stimuli"

    stimulus: str | None = option(None, flag="--stimulus-column",
                                  help="metadata column naming each trial's stimulus (default: the event names of "
                                       "event_id)")
    images: Path | None = option(None, parse=Path,
                                 help="folder of images: a file whose stem is the stimulus id, or a sub-folder named "
                                      "after it")
    stimulus_table: Path | None = option(None, parse=Path,
                                         help="CSV/TSV with columns stimulus_id,image_path[,concept,split] (paths "
                                              "relative to it)")
    split: str | None = option(None, flag="--split-column", help="metadata column with 'train'/'test' per trial")
    test_stimuli: list[str] | None = option(None, parse=ids_or_file,
                                            help="comma-separated stimulus ids of the test split, or a text file "
                                                 "with one id per line")
    concept: str | None = option(None, flag="--concept-column",
                                 help="metadata column with each trial's concept (default: table's concept, else "
                                      "the stimulus)")
    session: str | None = option(None, flag="--session-column", help="metadata column with integer session numbers")
    modality: str | None = option(None, choices=(None, "eeg", "meg"),
                                  help="channels to keep (default: MEG if the data have MEG channels, else EEG)")
    picks: list[str] | None = option(None, parse=comma_list,
                                     help="comma-separated channel names to keep (overrides --modality)")
    processing: EpochOptions = option(help="chunked MNE processing", factory=EpochOptions)


def find_epochs_files(root: PathLike, subject: str | None = None) -> list[tuple[Path, str]]:
    """The ``-epo.fif`` files of ``root`` (one file, or a folder of them) and their subject labels.

    Parameters
    ----------
    root : path-like
        One ``-epo.fif`` file, or a folder of them (the split parts ``-epo-1.fif``... are left to
        MNE, which reads them with their first part).
    subject : str | None
        Label of the subject when ``root`` is one file (or a folder holding one file); default: the
        ``XX`` of ``sub-XX`` in the file name, else ``01`` (a folder: the file's position).

    Returns
    -------
    jobs : list of (Path, str)
        Each file with its subject label.
    """
    root = Path(root)
    if root.is_dir():
        files = sorted(p for p in root.glob("*-epo.fif") if not re.search(r"-epo-\d+\.fif$", p.name))
        if not files:
            raise FileNotFoundError(f"No '*-epo.fif' file in {root}. Pass one file or a folder of them as --root.")
        jobs = []
        for i, f in enumerate(files):
            m = re.search(r"sub-([A-Za-z0-9]+)", f.name)
            jobs.append((f, m.group(1) if m else f"{i + 1:02d}"))
        if subject and len(jobs) == 1:
            jobs = [(jobs[0][0], subject)]
        return jobs
    m = re.search(r"sub-([A-Za-z0-9]+)", root.name)
    return [(root, subject or (m.group(1) if m else "01"))]


def _load_epochs(epochs: _mne.BaseEpochs | PathLike, verbose: bool | str | None) -> tuple[_mne.BaseEpochs, str]:
    import mne

    if isinstance(epochs, mne.BaseEpochs):
        return epochs, "<mne.Epochs in memory>"
    path = Path(epochs)
    if not path.is_file():
        raise FileNotFoundError(f"Epochs file {path} not found.")
    with reading(path, EPOCHS_EXPECTED):
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


@fill_doc
def prepare_epochs(
    epochs: _mne.BaseEpochs | PathLike,
    out: PathLike,
    options: EpochsOptions | None = None,
    *,
    subject: str = "01",
    overwrite: bool = False,
    progress: bool = True,
    verbose: bool | str | None = None,
    **fields: Any,
) -> Path:
    """Write one subject's MNE epochs as a trial store in the prepared folder ``out``.

    Parameters
    ----------
    epochs : mne.Epochs | path-like
        Epochs in memory, or a ``-epo.fif`` file (read lazily, chunk by chunk).
    out : path-like
        Prepared folder; ``sub-<subject>.h5`` is written there and ``stimuli.tsv`` /
        ``dataset.json`` are created or extended (call once per subject).
    options : EpochsOptions | None
        The options (defaults: :class:`EpochsOptions`). Their meaning:

        ``stimulus``: metadata column naming each trial's stimulus; ``None`` uses the event names
        of ``epochs.event_id``. ``images``: folder of images; the image of stimulus ``s`` is
        ``images/s`` (a file or a folder of images for category-level stimuli) or the one file
        whose stem is ``s``. ``stimulus_table``: CSV/TSV with columns ``stimulus_id``,
        ``image_path`` and optionally ``concept``, ``split`` (image paths relative to the table);
        every trial's stimulus must be a row. ``split``: metadata column with ``"train"``/``"test"``
        per trial. ``test_stimuli``: stimulus ids of the test split (the rest is training).
        ``concept``: metadata column with each trial's concept (default: the table's ``concept``
        column, else the stimulus id). ``session``: metadata column with an integer session number
        per trial (default 0). ``modality``: which channels to keep when ``picks`` is not given
        (default: MEG if present, else EEG). ``picks``: channel names to keep. ``processing``:
        filter, resampling, baseline, crop ``[tmin, tmax)`` and scaling, see
        :class:`~neurodecode.readers.options.EpochOptions`.
    subject : str
        Subject label.
    %(overwrite)s
    %(progress)s
    %(verbose)s
    %(fields)s

    Returns
    -------
    %(returns_out)s
    """
    opt = resolve_options(EpochsOptions, options, fields)
    proc = opt.processing
    modality = opt.modality
    out = Path(out)
    with use_log_level(verbose):
        record_prepare_options(out, "epochs", opt.as_dict(), overwrite=overwrite)
        if is_done(out, subject, overwrite=overwrite):
            return out
        ep, source = _load_epochs(epochs, verbose)
        n_all = len(ep.events)
        ids = _trial_stimuli(ep, opt.stimulus, source)
        md = ep.metadata

        # images, concepts, splits ------------------------------------------------------------
        uniq = list(dict.fromkeys(ids))
        table_rows: dict[str, dict[str, str]] = {}
        if opt.stimulus_table is not None:
            rows = {r["stimulus_id"]: r for r in read_stimulus_table(opt.stimulus_table)}
            missing = [s for s in uniq if s not in rows]
            if missing:
                raise StoreError(opt.stimulus_table, "stimulus_id",
                                 f"has no row for {len(missing)} stimulus id(s) of the epochs: {missing[:10]}.",
                                 f"Every stimulus named by {'column ' + repr(opt.stimulus) if opt.stimulus else 'the event names'} "
                                 "must be a row of the table.")
            table_rows = {s: rows[s] for s in uniq}
            unused = len(rows) - len(uniq)
            if unused:
                logger.info(f"{opt.stimulus_table}: {unused} row(s) name stimuli that no trial shows; they are left out")
        if opt.images is not None and opt.stimulus_table is not None:
            raise ValueError("Give either images= (a folder) or stimulus_table= (a table), not both.")
        if opt.images is not None:
            paths = dict(zip(uniq, resolve_images(uniq, opt.images), strict=True))
        else:
            paths = {s: table_rows.get(s, {}).get("image_path", "") for s in uniq}
            if opt.stimulus_table is None:
                logger.warning(f"{source}: no images given (images= or stimulus_table=): the stimulus table has "
                               "no image paths, so teacher embeddings cannot be computed from it")

        trial_split = _trial_split(ep, ids, opt.split, opt.test_stimuli, table_rows, source)
        stim_split: dict[str, str] = {}
        for s, sp in zip(ids, trial_split, strict=True):
            if stim_split.setdefault(s, sp) != sp:
                raise ValueError(f"{source}: stimulus {s!r} appears in both splits; a stimulus belongs to one split.")
        if opt.concept is not None:
            if md is None or opt.concept not in md.columns:
                raise KeyError(f"{source}: metadata has no column {opt.concept!r} (for concept=).")
            concepts: dict[str, str] = {}
            for s, c in zip(ids, md[opt.concept].astype(str).tolist(), strict=True):
                concepts.setdefault(s, c)
        else:
            concepts = {s: (table_rows.get(s, {}).get("concept") or s) for s in uniq}
        if opt.session is not None:
            if md is None or opt.session not in md.columns:
                raise KeyError(f"{source}: metadata has no column {opt.session!r} (for session=).")
            sess = md[opt.session].to_numpy()
            if not np.issubdtype(sess.dtype, np.integer):
                try:
                    sess = sess.astype(np.float64)
                    assert np.all(sess == np.round(sess))
                except (ValueError, AssertionError):
                    raise ValueError(f"{source}: metadata column {opt.session!r} must hold integer session numbers.") \
                        from None
            sess = sess.astype(np.int32)
        else:
            sess = np.zeros(n_all, np.int32)

        table = StimulusTable(uniq, [concepts[s] for s in uniq], [paths[s] for s in uniq],
                              [stim_split[s] for s in uniq], root=None)
        if opt.picks is None:
            pick_names, modality = default_picks(ep, modality)
        else:
            missing_ch = [c for c in opt.picks if c not in ep.ch_names]
            if missing_ch:
                raise ValueError(f"{source}: channel(s) {missing_ch} not found; channels are {ep.ch_names[:10]}...")
            pick_names = list(opt.picks)
            if modality is None:
                modality = "meg" if set(ep.get_channel_types(picks=pick_names)) & {"mag", "grad"} else "eeg"
        spec = EpochsSpec.from_options(pick_names, proc)
        prov = [provenance_step("read_epochs", source=source, stimulus=opt.stimulus or "event names", images=
                                None if opt.images is None else str(opt.images),
                                stimulus_table=None if opt.stimulus_table is None else str(opt.stimulus_table),
                                split=opt.split,
                                test_stimuli=None if opt.test_stimuli is None else list(opt.test_stimuli),
                                concept=opt.concept, session=opt.session, modality=modality, n_epochs=n_all)]
        out.mkdir(parents=True, exist_ok=True)
        summary = write_epochs_store(
            store_path(out, subject), ep, np.arange(n_all), stimulus_id=ids, split=trial_split,
            repetition=occurrence_index(ids), session=sess, stimuli=table, subject=subject, modality=modality,
            spec=spec, scaling=proc.scaling, clamp=proc.clamp, fit_trials=proc.fit_trials, seed=proc.seed,
            chunk_size=proc.chunk_size, provenance=prov, show_progress=progress, verbose=verbose)
        finish_prepared(out, table, {"source": "epochs", "modality": modality,
                                     "options": {"stimulus": opt.stimulus, "scaling": proc.scaling, "clamp": proc.clamp,
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
