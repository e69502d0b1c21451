"""The trials of a prepared folder as the arrays :func:`~neurodecode.training.crossval.crossval_alignment` reads.

:func:`load_trials` opens a prepared folder (``neurodecode prepare ...``), embeds its stimuli with a
teacher into the folder's embedding cache when they are not there yet (image teachers, or targets
from category names such as ``onehot`` and ``minilm`` when there are no images), resamples the
epochs to the rate the encoder expects, and returns ``x``, ``rows`` and ``targets``::

    x, rows, targets = load_trials("prepared/n170", "efficientnet-lite0", subject="01", sfreq=128)
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from neurodecode.utils import PathLike


@dataclass
class Trials:
    """Trials of one or more subjects and their targets; unpacks as ``x, rows, targets``.

    Attributes
    ----------
    x : ndarray, shape (n_trials, n_chans, n_times), float32
        Epochs (at :attr:`sfreq`).
    rows : ndarray of int, shape (n_trials,)
        Row of :attr:`targets` (the stimulus-table row) each trial saw.
    targets : ndarray, shape (n_stimuli, dim), float32
        Teacher embedding of every stimulus of the table.
    stimulus_ids : list of str
        The table's stimulus ids (row order of :attr:`targets`); with categories as stimuli, the names.
    sfreq : float
        Sampling rate of :attr:`x`.
    subject, session : ndarray, shape (n_trials,)
        Subject label and session of every trial (e.g. ``groups=trials.session`` for folds by session).
    teacher : str
        The teacher spec of the targets.
    """

    x: np.ndarray
    rows: np.ndarray
    targets: np.ndarray
    stimulus_ids: list[str]
    sfreq: float
    subject: np.ndarray
    session: np.ndarray
    teacher: str
    info: dict[str, Any] = field(default_factory=dict)

    def __iter__(self) -> Iterator[Any]:
        return iter((self.x, self.rows, self.targets))

    def row_of(self, stimulus_id: str) -> int:
        """Row of a stimulus (e.g. ``positive=trials.row_of("face")``)."""
        try:
            return self.stimulus_ids.index(str(stimulus_id))
        except ValueError:
            raise ValueError(f"no stimulus {stimulus_id!r}; the stimuli are {self.stimulus_ids[:10]}.") from None


def decimation_factor(sfreq_in: float, sfreq: float | None) -> int:
    """The integer factor from ``sfreq_in`` down to ``sfreq`` (1 for None), or a ValueError saying what fits."""
    if sfreq is None or float(sfreq) == float(sfreq_in):
        return 1
    factor = float(sfreq_in) / float(sfreq)
    if float(sfreq) <= 0 or factor < 1 or abs(factor - round(factor)) > 1e-6:
        fits = ", ".join(f"{sfreq_in / k:g}" for k in range(1, 9) if (sfreq_in / k) >= 16)
        raise ValueError(f"sfreq={sfreq:g} Hz cannot be reached from the recording's {sfreq_in:g} Hz by keeping every "
                         f"k-th sample; use one of {fits} (or None to keep {sfreq_in:g} Hz).")
    return int(round(factor))


def load_trials(prepared: PathLike, teacher: str, subject: str | Sequence[str] | None = None, *,
                sfreq: float | None = 128.0, cache: PathLike | None = None, layer: str = "final",
                embed: bool = True, progress: bool = True) -> Trials:
    """The trials of a prepared folder and the teacher targets of its stimuli.

    Parameters
    ----------
    prepared : path-like
        A folder written by ``neurodecode prepare`` (``stimuli.tsv``, ``dataset.json``, ``sub-*.h5``).
    teacher : str
        Teacher spec of the targets: an image teacher (``"efficientnet-lite0"``...) when the stimuli
        have images, or targets from category names (``"onehot"``, ``"minilm"``, ``"text:SPEC"``,
        ``"vectors:FILE"``, see :mod:`neurodecode.teachers.names`).
    subject : str | list of str | None
        Subject label(s) without ``sub-``; ``None``: every subject of the folder (trials pooled).
    sfreq : float | None
        Rate of the returned epochs (default 128 Hz, what the EEG encoders' kernel sizes assume with
        ``sfreq=128.0``): every k-th sample is kept, which is safe when the data were low-passed
        below the new Nyquist frequency (``prepare`` filters at 30 Hz by default; a warning says
        when the recorded low-pass is higher). ``None`` keeps the recorded rate.
    cache : path-like | None
        Embedding cache file or folder (default ``PREPARED/embeddings.h5``).
    layer : str
        Teacher layer.
    embed : bool
        Embed what the cache lacks (default); ``False`` raises instead.
    progress : bool
        Show the embedding progress bar.

    Returns
    -------
    trials : Trials
        ``x, rows, targets = trials`` (also subject, session, sfreq, stimulus ids).
    """
    from neurodecode.io.prepared import open_prepared
    from neurodecode.teachers.cache import EmbeddingCache, resolve_cache_path
    from neurodecode.teachers.extract import ensure_embeddings
    from neurodecode.utils import logger

    prepared = Path(prepared)
    subjects = [subject] if isinstance(subject, str) else (None if subject is None else [str(s) for s in subject])
    ds = open_prepared(prepared, subjects=subjects)
    cache_path = resolve_cache_path(cache, prepared)
    ids = ds.stimuli.stimulus_id.astype(str).tolist()
    if embed:
        ensure_embeddings(ds.stimuli, teacher, cache_path, layers=(layer,), progress=progress)
    targets = EmbeddingCache(cache_path).get(teacher, layer, ids=ids)
    xs, rows, subj, sess, rates = [], [], [], [], set()
    for label, st in ds.stores.items():
        xs.append(st.get_signals())
        rows.append(ds.stimuli.rows(st.stimulus_id))
        subj.append(np.full(len(st), label, dtype=object))
        sess.append(np.asarray(st.session))
        rates.add(float(st.sfreq))
    if len(rates) != 1:
        raise ValueError(f"{prepared}: the subjects have different sampling rates {sorted(rates)}; load them one "
                         f"at a time (subject=...).")
    rate = rates.pop()
    k = decimation_factor(rate, sfreq)
    if k > 1:
        h_freq = (ds.meta.get("options") or {}).get("h_freq")
        if h_freq is None or float(h_freq) >= rate / k / 2:
            logger.warning(f"{prepared}: keeping every {k}th sample ({rate:g} -> {rate / k:g} Hz) but the data were "
                           f"low-passed at {h_freq} Hz, not below the new Nyquist frequency {rate / k / 2:g} Hz: "
                           f"prepare with --h-freq {rate / k / 2 * 0.8:g} or pass sfreq=None.")
    x = np.ascontiguousarray(np.concatenate(xs)[..., ::k], dtype=np.float32)
    return Trials(x=x, rows=np.concatenate(rows).astype(np.int64), targets=np.asarray(targets, dtype=np.float32),
                  stimulus_ids=ids, sfreq=rate / k, subject=np.concatenate(subj), session=np.concatenate(sess),
                  teacher=str(teacher), info={"prepared": str(prepared), "decimation": k, "layer": layer,
                                              "subjects": list(ds.stores)})


__all__ = ["Trials", "decimation_factor", "load_trials"]
