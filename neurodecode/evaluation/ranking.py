"""Ranking primitives shared by every evaluation: embeddings, similarity matrices, rank counts, hits.

Retrieval (:mod:`~neurodecode.evaluation.retrieval`), classification, large-gallery search, the
permutation tests of :mod:`~neurodecode.evaluation.stats`, the split-half ceilings and the
time-resolved analyses all reduce to the same steps, defined here once:

1. check the inputs (:func:`as_embeddings`, :func:`as_targets`) and score every query against every
   candidate (:func:`similarity_matrix`; :func:`csls_scores` for the transductive hubness
   correction);
2. count, per query, the candidates scoring better than and equal to the true one
   (:func:`rank_counts`);
3. turn the counts into ranks (:func:`ranks_from_counts`, :func:`retrieval_ranks`) or into k-way
   top-n hit probabilities (:func:`hit_probability_curve` + :func:`hits_from_counts`).

**Similarity** is cosine by default (embeddings are L2-normalised); ``similarity="dot"`` uses raw
inner products.

**Ties.** A candidate whose score equals the true candidate's score is a *tie*. ``ties`` chooses:

``"pessimistic"`` (default)
    Every tie counts as scoring better than the true candidate (a tie is a miss). A constant
    decoder then scores 0, never better than chance by accident.
``"optimistic"``
    Ties count as scoring worse (upper bound; only for diagnosis).
``"average"``
    The expectation under uniformly random tie-breaking (fractional hits, rank ``1 + better +
    ties / 2``); a constant decoder scores exactly chance.

All three are deterministic. Scores are compared exactly as computed in float32.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from neurodecode.utils import check_option

__all__ = [
    "SIMILARITIES",
    "TIES",
    "ArrayLike",
    "as_embeddings",
    "as_targets",
    "check_k_top",
    "csls_scores",
    "hit_probability_curve",
    "hits_from_counts",
    "hits_from_draw_counts",
    "inverse_targets",
    "rank_counts",
    "rank_counts_all",
    "ranks_from_counts",
    "retrieval_ranks",
    "similarity_matrix",
]

SIMILARITIES: tuple[str, ...] = ("cosine", "dot")
TIES: tuple[str, ...] = ("pessimistic", "optimistic", "average")

ArrayLike = Any  # numpy array, torch tensor or nested sequence


# --------------------------------------------------------------------------------------------------
# inputs and similarities
# --------------------------------------------------------------------------------------------------
def as_embeddings(x: ArrayLike, name: str, *, ndim: int = 2, allow_empty: bool = False) -> torch.Tensor:
    """Return ``x`` as a floating-point torch tensor, checking its shape and finiteness.

    Parameters
    ----------
    x : array-like | torch.Tensor
        Embeddings, ``(n_items, dim)`` by default. Tensors keep their device.
    name : str
        The argument's name, used in error messages.
    ndim : int
        Required number of dimensions.
    allow_empty : bool
        Accept zero items (a process's share of a metric's rows may be empty).

    Returns
    -------
    tensor : torch.Tensor
        float32 (float64 inputs stay float64).
    """
    if isinstance(x, torch.Tensor):
        t = x.detach()
    else:
        arr = np.asarray(x)
        if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
            raise TypeError(f"{name} must be a numeric array or tensor, got dtype {arr.dtype}.")
        t = torch.from_numpy(np.ascontiguousarray(arr))
    if t.ndim != ndim:
        want = "(n_items, dim)" if ndim == 2 else f"{ndim} dimensions"
        raise ValueError(f"{name} must have shape {want}, got shape {tuple(t.shape)}.")
    if t.shape[0] == 0 and not allow_empty:
        raise ValueError(f"{name} is empty (shape {tuple(t.shape)}); evaluation needs at least one item.")
    if t.dtype != torch.float64:
        t = t.float()
    bad = ~torch.isfinite(t)
    if bool(bad.any()):
        first = tuple(int(i) for i in torch.nonzero(bad)[0].tolist())
        raise ValueError(f"{name} contains {int(bad.sum())} non-finite value(s) (first at index {first}); "
                         "check the encoder's outputs or the embedding cache.")
    return t


def similarity_matrix(queries: ArrayLike, candidates: ArrayLike, *, similarity: str = "cosine",
                      query_name: str = "queries", candidate_name: str = "candidates") -> torch.Tensor:
    """Similarity of every query to every candidate.

    Parameters
    ----------
    queries : array-like | torch.Tensor, shape (n_queries, dim)
    candidates : array-like | torch.Tensor, shape (n_candidates, dim)
    similarity : ``"cosine"`` | ``"dot"``
        Cosine similarity (rows L2-normalised; a zero row has similarity 0 to everything) or inner
        product.
    query_name, candidate_name : str
        Names used in error messages.

    Returns
    -------
    scores : torch.Tensor, shape (n_queries, n_candidates)
        float32 (float64 if an input is float64), on the queries' device.
    """
    check_option("similarity", similarity, SIMILARITIES)
    q = as_embeddings(queries, query_name)
    c = as_embeddings(candidates, candidate_name).to(q.device)
    if q.shape[1] != c.shape[1]:
        raise ValueError(f"{query_name} and {candidate_name} must have the same embedding size, got "
                         f"{q.shape[1]} and {c.shape[1]}; were they made by the same teacher/encoder?")
    dtype = torch.promote_types(q.dtype, c.dtype)
    q, c = q.to(dtype), c.to(dtype)
    if similarity == "cosine":
        q = torch.nn.functional.normalize(q, dim=1)
        c = torch.nn.functional.normalize(c, dim=1)
    return q @ c.T


def csls_scores(scores: ArrayLike, *, k: int = 10) -> torch.Tensor:
    """Cross-domain similarity local scaling (CSLS) of a query-by-candidate similarity matrix.

    ``CSLS(x, y) = 2 s(x, y) - r_C(x) - r_Q(y)`` where ``r_C(x)`` is the mean similarity of query
    ``x`` to its ``k`` nearest candidates and ``r_Q(y)`` the mean similarity of candidate ``y`` to
    its ``k`` nearest queries (Lample et al., 2018). It penalises *hubs* (candidates close to many
    queries). It is **transductive**: ``r_Q`` uses every test query, so report it separately.
    The formula is symmetric, so the transpose of the result is CSLS for the reverse direction.

    Parameters
    ----------
    scores : array-like | torch.Tensor, shape (n_queries, n_candidates)
        Similarities (e.g. cosine).
    k : int
        Neighbourhood size, clipped to the number of queries / candidates.

    Returns
    -------
    csls : torch.Tensor, shape (n_queries, n_candidates)
    """
    s = as_embeddings(scores, "scores")
    if int(k) < 1:
        raise ValueError(f"csls k must be >= 1, got {k}.")
    kc = min(int(k), s.shape[1])
    kq = min(int(k), s.shape[0])
    r_c = s.topk(kc, dim=1).values.mean(dim=1, keepdim=True)  # (n_q, 1)
    r_q = s.topk(kq, dim=0).values.mean(dim=0, keepdim=True)  # (1, n_c)
    return 2 * s - r_c - r_q


# --------------------------------------------------------------------------------------------------
# targets, rank counts and ranks
# --------------------------------------------------------------------------------------------------
def as_targets(targets: ArrayLike | None, n_queries: int, n_candidates: int) -> np.ndarray:
    """Check the index of each query's true candidate.

    Parameters
    ----------
    targets : array-like of int, shape (n_queries,) | None
        Index of each query's true candidate; ``None`` pairs query ``i`` with candidate ``i`` (then
        ``n_queries`` must equal ``n_candidates``).
    n_queries, n_candidates : int
        Shape of the score matrix.

    Returns
    -------
    targets : np.ndarray of int64, shape (n_queries,)
    """
    if targets is None:
        if n_queries != n_candidates:
            raise ValueError(f"scores has {n_queries} queries and {n_candidates} candidates: pass targets= "
                             "(the index of each query's true candidate) when they are not paired by row.")
        return np.arange(n_queries)
    t = np.asarray(targets.detach().cpu() if isinstance(targets, torch.Tensor) else targets)
    if t.ndim != 1 or t.shape[0] != n_queries:
        raise ValueError(f"targets must have shape ({n_queries},) (one true candidate per query), "
                         f"got shape {t.shape}.")
    if not np.issubdtype(t.dtype, np.integer):
        raise TypeError(f"targets must hold integer candidate indices, got dtype {t.dtype}.")
    if t.size and (t.min() < 0 or t.max() >= n_candidates):
        raise ValueError(f"targets must be in [0, {n_candidates - 1}] (candidate indices), got values in "
                         f"[{t.min()}, {t.max()}].")
    return t.astype(np.int64)


def inverse_targets(targets: np.ndarray, n_candidates: int) -> np.ndarray:
    """The targets of the reverse direction (``image_to_brain``) of a one-to-one pairing.

    Parameters
    ----------
    targets : np.ndarray of int, shape (n_queries,)
        True candidate of each query (from :func:`as_targets`).
    n_candidates : int
        Number of candidates; must equal ``n_queries``, every candidate the target of one query.

    Returns
    -------
    inverse : np.ndarray of int, shape (n_candidates,)
        The query whose true candidate is each candidate.
    """
    if targets.shape[0] != n_candidates or np.unique(targets).size != n_candidates:
        raise ValueError("direction 'image_to_brain' needs one brain embedding per image (one-to-one "
                         "pairing); average the repetitions of each image first, or use "
                         "directions=('brain_to_image',).")
    inv = np.empty_like(targets)
    inv[targets] = np.arange(targets.shape[0])
    return inv


def rank_counts(scores: ArrayLike, targets: ArrayLike | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Count, for every query, the candidates scoring better than and equal to the true one.

    Parameters
    ----------
    scores : array-like | torch.Tensor, shape (n_queries, n_candidates)
        Higher is more similar.
    targets : array-like of int, shape (n_queries,) | None
        Index of each query's true candidate; ``None`` pairs query ``i`` with candidate ``i``.

    Returns
    -------
    better : np.ndarray of int64, shape (n_queries,)
        Other candidates with a strictly higher score.
    tied : np.ndarray of int64, shape (n_queries,)
        Other candidates with exactly the same score (the true candidate itself excluded).
    """
    s = as_embeddings(scores, "scores")
    t = torch.from_numpy(as_targets(targets, s.shape[0], s.shape[1])).to(s.device)
    true = s.gather(1, t[:, None])
    better = (s > true).sum(dim=1)
    tied = (s == true).sum(dim=1) - 1
    return better.cpu().numpy().astype(np.int64), tied.cpu().numpy().astype(np.int64)


def rank_counts_all(scores: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """:func:`rank_counts` for every possible target at once.

    Entry ``(i, j)`` counts the entries of row ``i`` strictly above ``scores[i, j]`` and equal to it
    (``(i, j)`` itself excluded), i.e. the counts query ``i`` would have if candidate ``j`` were its
    true one. Used by the permutation tests, which re-pair queries and candidates many times.

    Parameters
    ----------
    scores : array-like | torch.Tensor, shape (n_queries, n_candidates)
        Higher is more similar; compared in float64 on the CPU.

    Returns
    -------
    better, tied : np.ndarray of int64, shape (n_queries, n_candidates)
    """
    s = scores if isinstance(scores, torch.Tensor) else torch.as_tensor(np.asarray(scores))
    s = s.detach().to("cpu", torch.float64).contiguous()
    srt = torch.sort(s, dim=1).values
    right = torch.searchsorted(srt, s, right=True)
    left = torch.searchsorted(srt, s, right=False)
    better = s.shape[1] - right
    tied = right - left - 1
    return better.numpy().astype(np.int64), tied.numpy().astype(np.int64)


def retrieval_ranks(scores: ArrayLike, targets: ArrayLike | None = None, *,
                    ties: str = "pessimistic") -> np.ndarray:
    """Rank (1 = best) of each query's true candidate among all candidates.

    Parameters
    ----------
    scores : array-like | torch.Tensor, shape (n_queries, n_candidates)
    targets : array-like of int | None
        See :func:`rank_counts`.
    ties : ``"pessimistic"`` | ``"optimistic"`` | ``"average"``
        Rank ``1 + better + tied``, ``1 + better`` or ``1 + better + tied / 2``.

    Returns
    -------
    ranks : np.ndarray of float64, shape (n_queries,)
    """
    check_option("ties", ties, TIES)
    better, tied = rank_counts(scores, targets)
    return ranks_from_counts(better, tied, ties)


def ranks_from_counts(better: np.ndarray, tied: np.ndarray, ties: str) -> np.ndarray:
    """Ranks (1 = best) from the counts of :func:`rank_counts`.

    Parameters
    ----------
    better, tied : np.ndarray of int
        Candidates scoring strictly better than and equal to the true one, per query.
    ties : ``"pessimistic"`` | ``"optimistic"`` | ``"average"``
        Rank ``1 + better + tied``, ``1 + better`` or ``1 + better + tied / 2``. Not checked here
        (callers check it once with :func:`~neurodecode.utils.check_option`).

    Returns
    -------
    ranks : np.ndarray of float64, shape (n_queries,)
    """
    extra = {"pessimistic": tied, "optimistic": 0 * tied, "average": tied / 2.0}[ties]
    return 1.0 + better + extra


# --------------------------------------------------------------------------------------------------
# k-way hit probabilities
# --------------------------------------------------------------------------------------------------
def hit_probability_curve(n_candidates: int, k: int, top: int = 1) -> np.ndarray:
    """Probability of a top-``n`` hit in ``k``-way retrieval given the number of better candidates.

    Entry ``m`` is ``P(X <= top - 1)`` for ``X ~ Hypergeom(n_candidates - 1, m, k - 1)``: the chance
    that fewer than ``top`` of the ``m`` better-scoring candidates are among ``k - 1`` distractors
    drawn without replacement from the ``n_candidates - 1`` others.

    Parameters
    ----------
    n_candidates : int
        Number of candidates ``N`` (the true one included).
    k : int
        Candidates per trial, ``2 <= k <= N``.
    top : int
        ``1 <= top <= k``.

    Returns
    -------
    curve : np.ndarray of float64, shape (n_candidates,)
    """
    from scipy.stats import hypergeom

    n_candidates, k, top = int(n_candidates), int(k), int(top)
    check_k_top(k, top, n_candidates)
    m = np.arange(n_candidates)
    if k == n_candidates:  # full set: every other candidate is drawn
        return (m <= top - 1).astype(np.float64)
    curve = hypergeom.cdf(top - 1, n_candidates - 1, m, k - 1)
    return np.clip(curve, 0.0, 1.0)


def check_k_top(k: int, top: int, n_candidates: int) -> None:
    """Raise a ``ValueError`` unless ``2 <= k <= n_candidates`` and ``1 <= top <= k``.

    Parameters
    ----------
    k : int
        Candidates per k-way trial (the true one included).
    top : int
        The ``n`` of top-``n``.
    n_candidates : int
        Number of candidates available.
    """
    if k < 2:
        raise ValueError(f"k-way retrieval needs k >= 2 (the true candidate and at least one distractor), "
                         f"got k={k}.")
    if k > n_candidates:
        raise ValueError(f"k={k} is larger than the number of candidates ({n_candidates}); use k <= "
                         f"{n_candidates} or more candidates.")
    if not 1 <= top <= k:
        raise ValueError(f"top must be between 1 and k={k}, got top={top}.")


def hits_from_counts(better: np.ndarray, tied: np.ndarray, curve: np.ndarray, ties: str) -> np.ndarray:
    """Per-query hit probabilities from rank counts and a hit-probability curve.

    Parameters
    ----------
    better, tied : np.ndarray of int
        Candidates scoring strictly better than and equal to the true one, per query
        (:func:`rank_counts`).
    curve : np.ndarray of float64
        Hit probability as a function of the number of better candidates
        (:func:`hit_probability_curve`, or any curve indexed the same way).
    ties : ``"pessimistic"`` | ``"optimistic"`` | ``"average"``
        Ties count as better, as worse, or are broken uniformly at random (the expectation is
        returned). Not checked here.

    Returns
    -------
    hits : np.ndarray of float64, shape (n_queries,)
    """
    if ties == "optimistic":
        return curve[better]
    if ties == "pessimistic":
        return curve[better + tied]
    # expectation under random tie-breaking: the true item has better + u candidates above it,
    # u uniform on 0..tied, so average the curve over that range (cumulative sums, O(1) per query)
    cum = np.concatenate([[0.0], np.cumsum(curve)])
    return (cum[better + tied + 1] - cum[better]) / (tied + 1)


def hits_from_draw_counts(better: np.ndarray, tied: np.ndarray, top: int, ties: str) -> np.ndarray:
    """Top-``top`` hits of one random k-way draw, from the drawn distractors' counts.

    Parameters
    ----------
    better, tied : np.ndarray of int
        Per query, how many of the drawn distractors score better than and equal to the true one.
    top : int
        The ``n`` of top-``n``.
    ties : ``"pessimistic"`` | ``"optimistic"`` | ``"average"``
        As in :func:`hits_from_counts` (``"average"`` gives the expected hit under random tie-breaking).

    Returns
    -------
    hits : np.ndarray of float64, shape (n_queries,)
    """
    if ties == "optimistic":
        return (better < top).astype(np.float64)
    if ties == "pessimistic":
        return (better + tied < top).astype(np.float64)
    return np.clip(top - better, 0, tied + 1) / (tied + 1.0)
