"""The offline counterpart of a stream's decisions: the same top-k from a prepared trial store.

``neurodecode prepare`` turns a recording into a trial store and ``neurodecode evaluate`` embeds its
trials with :func:`neurodecode.training.loading.embed_set` and scores them against the teacher's
embeddings by cosine similarity. :func:`offline_decisions` does exactly that for every trial of a
store and ranks the same :class:`~neurodecode.streaming.gallery.Gallery` a stream is decoded against,
so the two can be compared decision by decision (the equivalence test, and the offline column of
``benchmarks/stream_latency.py``).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from neurodecode.streaming.gallery import Gallery
from neurodecode.streaming.records import stimulus_of
from neurodecode.utils import PathLike, UserError

__all__ = ["offline_decisions"]


def offline_decisions(model: Any, store: PathLike, gallery: Gallery, *, k: int = 5, by: str = "stimulus",
                      subject: int | None = None, batch_size: int = 256) -> dict[str, Any]:
    """Top-k of every trial of a trial store, as the offline evaluation embeds and scores it.

    Parameters
    ----------
    model : torch.nn.Module
        The exported model.
    store : path-like
        A trial store (``sub-XX.h5``) prepared from the recording.
    gallery : Gallery
        The candidates.
    k : int
        Candidates kept.
    by : str
        ``"stimulus"`` or ``"concept"``.
    subject : int | None
        Training-subject index given to the model (``None``: unseen subject).
    batch_size : int
        Trials per forward pass.

    Returns
    -------
    result : dict
        ``stimulus_id`` (per trial), ``topk`` (list of lists), ``scores`` (``(n, k)``), ``embeddings``,
        ``rank`` (of the trial's stimulus, or -1) and ``seconds`` (reading, embedding and scoring).
    """
    from neurodecode.io.store import TrialStore
    from neurodecode.training.loading import embed_set

    t0 = time.perf_counter()
    channels = list(getattr(model, "data", {}).get("channels") or [])
    with TrialStore(store) as ts:
        names = ts.ch_names
        missing = [c for c in channels if c not in names]
        if missing:
            raise UserError(f"{store}: lacks the model's channels {missing[:10]}.")
        x = ts.get_signals(picks=channels or None)
        ids = np.asarray([stimulus_of(str(s)) for s in ts.stimulus_id])
    subjects = np.full(len(x), -1 if subject is None else int(subject), dtype=np.int64)
    emb = embed_set(model, x, subjects, batch_size=batch_size)
    topk, scores, all_scores = gallery.topk(emb, k, by)
    rank = np.full(len(ids), -1)
    for i, s in enumerate(ids.tolist()):
        j = gallery.position(s, by)
        if j is not None:
            rank[i] = 1 + int((all_scores[i] > all_scores[i, j]).sum())
    return {"stimulus_id": ids, "topk": topk, "scores": scores, "embeddings": emb, "rank": rank,
            "seconds": time.perf_counter() - t0}
