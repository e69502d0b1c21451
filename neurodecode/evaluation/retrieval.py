"""Zero-shot retrieval (identification) metrics: k-way accuracy, full-set accuracy, ranks.

A decoder maps brain responses into the embedding space of a frozen vision model. Retrieval asks,
for every brain embedding (the *query*), where the embedding of the image that was really seen (the
*true candidate*) ranks among a set of candidate image embeddings. ``image_to_brain`` asks the
reverse question with images as queries and brain embeddings as candidates.

Protocol
--------
**k-way top-n accuracy.** For query ``i`` draw ``k - 1`` distractors uniformly, without replacement,
among the other ``N - 1`` candidates; the query is a hit when the true candidate is among the ``n``
best-scoring of the ``k``. The number reported is the hit rate averaged over queries (and draws).
Two ways to compute it are offered and agree in expectation (the tests check it):

``method="exact"`` (default)
    The expectation over *all* possible draws, in closed form. If ``m`` other candidates score
    better than the true one, the number of them among the ``k - 1`` drawn distractors is
    hypergeometric, so ``P(hit@n) = P(X <= n - 1)`` with ``X ~ Hypergeom(N - 1, m, k - 1)``. No
    randomness, no seed, no Monte-Carlo error.
``method="monte_carlo"``
    The field's protocol: ``n_draws`` seeded random draws, averaged. ``protocol="per_query"`` draws
    distractors for every query separately; ``protocol="subset"`` draws ``k`` items at random and
    retrieves within them in both directions (MindEye's "300-way x 30" for NSD). Both have the
    closed form above as their expectation. The random stream of each ``k`` is derived from
    ``(seed, k)``, so adding or removing a ``k`` leaves the others unchanged.

**Full-set accuracy** (``k = N``) and the **rank** of the true candidate among all ``N`` (1 is best;
median and mean over queries) complete the picture. All accuracies are fractions in ``[0, 1]``.

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

**Similarity** is cosine by default (embeddings are L2-normalised); ``similarity="dot"`` uses raw
inner products.

**Transductive numbers.** CSLS (cross-domain similarity local scaling, Lample et al., 2018, *Word
translation without parallel data*, ICLR) corrects hubness using the neighbourhoods of the *test*
queries and candidates, i.e. it looks at the whole test set at once. It is available through
``csls_k=...`` and reported under the separate key ``"transductive"``, never mixed with the
inductive numbers under ``"inductive"``.

Distributed evaluation
----------------------
:class:`ZeroShotRetrieval` is a :class:`torchmetrics.Metric` whose states are the embeddings
(``dist_reduce_fx="cat"``), so under DDP every process computes the metric on the embeddings of all
processes. :func:`zero_shot_retrieval` is its functional twin.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from neurodecode.utils import check_option

__all__ = [
    "DEFAULT_KS",
    "DEFAULT_TOPS",
    "DIRECTIONS",
    "SIMILARITIES",
    "TIES",
    "ZeroShotRetrieval",
    "as_embeddings",
    "csls_scores",
    "flatten_metrics",
    "hit_probability_curve",
    "kway_accuracy",
    "kway_hits",
    "rank_counts",
    "retrieval_ranks",
    "similarity_matrix",
    "zero_shot_retrieval",
]

DEFAULT_KS: tuple[int, ...] = (2, 4, 10, 50, 100, 200)
DEFAULT_TOPS: tuple[int, ...] = (1, 5)
DIRECTIONS: tuple[str, ...] = ("brain_to_image", "image_to_brain")
SIMILARITIES: tuple[str, ...] = ("cosine", "dot")
TIES: tuple[str, ...] = ("pessimistic", "optimistic", "average")
METHODS: tuple[str, ...] = ("exact", "monte_carlo")
PROTOCOLS: tuple[str, ...] = ("per_query", "subset")

ArrayLike = Any  # numpy array, torch tensor or nested sequence


# --------------------------------------------------------------------------------------------------
# inputs and similarities
# --------------------------------------------------------------------------------------------------
def as_embeddings(x: ArrayLike, name: str, *, ndim: int = 2) -> torch.Tensor:
    """Return ``x`` as a floating-point torch tensor, checking its shape and finiteness.

    Parameters
    ----------
    x : array-like | torch.Tensor
        Embeddings, ``(n_items, dim)`` by default. Tensors keep their device.
    name : str
        The argument's name, used in error messages.
    ndim : int
        Required number of dimensions.

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
    if t.shape[0] == 0:
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
# ranks and k-way hits
# --------------------------------------------------------------------------------------------------
def _targets(targets: ArrayLike | None, n_queries: int, n_candidates: int) -> np.ndarray:
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


def _scores(scores: ArrayLike) -> torch.Tensor:
    return as_embeddings(scores, "scores")


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
    s = _scores(scores)
    t = torch.from_numpy(_targets(targets, s.shape[0], s.shape[1])).to(s.device)
    true = s.gather(1, t[:, None])
    better = (s > true).sum(dim=1)
    tied = (s == true).sum(dim=1) - 1
    return better.cpu().numpy().astype(np.int64), tied.cpu().numpy().astype(np.int64)


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
    return _ranks_from_counts(better, tied, ties)


def _ranks_from_counts(better: np.ndarray, tied: np.ndarray, ties: str) -> np.ndarray:
    extra = {"pessimistic": tied, "optimistic": 0 * tied, "average": tied / 2.0}[ties]
    return 1.0 + better + extra


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
    _check_k_top(k, top, n_candidates)
    m = np.arange(n_candidates)
    if k == n_candidates:  # full set: every other candidate is drawn
        return (m <= top - 1).astype(np.float64)
    curve = hypergeom.cdf(top - 1, n_candidates - 1, m, k - 1)
    return np.clip(curve, 0.0, 1.0)


def _check_k_top(k: int, top: int, n_candidates: int) -> None:
    if k < 2:
        raise ValueError(f"k-way retrieval needs k >= 2 (the true candidate and at least one distractor), "
                         f"got k={k}.")
    if k > n_candidates:
        raise ValueError(f"k={k} is larger than the number of candidates ({n_candidates}); use k <= "
                         f"{n_candidates} or more candidates.")
    if not 1 <= top <= k:
        raise ValueError(f"top must be between 1 and k={k}, got top={top}.")


def _hits_from_counts(better: np.ndarray, tied: np.ndarray, curve: np.ndarray, ties: str) -> np.ndarray:
    if ties == "optimistic":
        return curve[better]
    if ties == "pessimistic":
        return curve[better + tied]
    # expectation under random tie-breaking: the true item has better + u candidates above it,
    # u uniform on 0..tied, so average the curve over that range (cumulative sums, O(1) per query)
    cum = np.concatenate([[0.0], np.cumsum(curve)])
    return (cum[better + tied + 1] - cum[better]) / (tied + 1)


def _mc_hit(x: np.ndarray, y: np.ndarray, top: int, ties: str) -> np.ndarray:
    """Hits of one draw given drawn better (``x``) and tied (``y``) distractor counts."""
    if ties == "optimistic":
        return (x < top).astype(np.float64)
    if ties == "pessimistic":
        return (x + y < top).astype(np.float64)
    return np.clip(top - x, 0, y + 1) / (y + 1.0)


def _rng(seed: int | np.random.Generator | None, k: int) -> np.random.Generator:
    if isinstance(seed, np.random.Generator):
        return seed
    if seed is None:
        raise ValueError("method='monte_carlo' needs an integer seed (seed=None would not be reproducible).")
    return np.random.default_rng([int(seed), int(k)])


def kway_hits(scores: ArrayLike, k: int, *, tops: int | Sequence[int] = (1,), targets: ArrayLike | None = None,
              ties: str = "pessimistic", method: str = "exact", n_draws: int = 100,
              seed: int | np.random.Generator | None = 0, protocol: str = "per_query") -> np.ndarray:
    """Per-query hit rates of ``k``-way top-``n`` retrieval.

    Parameters
    ----------
    scores : array-like | torch.Tensor, shape (n_queries, n_candidates)
        Higher is more similar.
    k : int
        Candidates per trial (true one included), ``2 <= k <= n_candidates``; ``k = n_candidates``
        is full-set retrieval.
    tops : int | sequence of int
        The ``n`` of top-``n``, each ``<= k``.
    targets : array-like of int | None
        Index of each query's true candidate; ``None`` pairs query ``i`` with candidate ``i``.
    ties : ``"pessimistic"`` | ``"optimistic"`` | ``"average"``
        See the module documentation.
    method : ``"exact"`` | ``"monte_carlo"``
        Closed-form expectation over all draws, or the average of ``n_draws`` seeded draws.
    n_draws : int
        Monte-Carlo draws.
    seed : int | numpy.random.Generator
        Monte-Carlo seed; the stream used is ``default_rng([seed, k])``.
    protocol : ``"per_query"`` | ``"subset"``
        Monte-Carlo protocol: distractors drawn per query, or ``k``-item random subsets within
        which every item is a query (needs one-to-one pairing). Ignored by ``method="exact"``.

    Returns
    -------
    hits : np.ndarray of float64, shape (len(tops), n_queries)
        Hit probability (exact) or hit rate over draws (Monte Carlo) of every query. With
        ``protocol="subset"`` a query never drawn gets NaN.
    """
    return _kway(scores, k, tops=tops, targets=targets, ties=ties, method=method, n_draws=n_draws, seed=seed,
                 protocol=protocol)[0]


def kway_accuracy(scores: ArrayLike, k: int, *, top: int = 1, targets: ArrayLike | None = None,
                  ties: str = "pessimistic", method: str = "exact", n_draws: int = 100,
                  seed: int | np.random.Generator | None = 0, protocol: str = "per_query") -> float:
    """Mean ``k``-way top-``n`` retrieval accuracy (a fraction). See :func:`kway_hits`.

    With ``protocol="subset"`` this is the mean over all (draw, query) trials, i.e. the mean over
    draws of the per-draw accuracy, as MindEye reports it.
    """
    return float(_kway(scores, k, tops=(top,), targets=targets, ties=ties, method=method, n_draws=n_draws,
                       seed=seed, protocol=protocol)[1][0])


def _kway(scores: ArrayLike, k: int, *, tops: int | Sequence[int], targets: ArrayLike | None, ties: str,
          method: str, n_draws: int, seed: int | np.random.Generator | None,
          protocol: str) -> tuple[np.ndarray, np.ndarray]:
    """Per-query hit rates ``(len(tops), n_queries)`` and the accuracies ``(len(tops),)``."""
    check_option("ties", ties, TIES)
    check_option("method", method, METHODS)
    check_option("protocol", protocol, PROTOCOLS)
    tops_t = (int(tops),) if np.isscalar(tops) else tuple(int(n) for n in tops)
    s = _scores(scores)
    n_q, n_c = s.shape
    k = int(k)
    for top in tops_t:
        _check_k_top(k, top, n_c)
    tgt = _targets(targets, n_q, n_c)
    if method == "exact":
        better, tied = rank_counts(s, tgt)
        rates = np.stack([_hits_from_counts(better, tied, hit_probability_curve(n_c, k, top), ties)
                          for top in tops_t])
        return rates, rates.mean(axis=1)
    if int(n_draws) < 1:
        raise ValueError(f"n_draws must be >= 1, got {n_draws}.")
    rng = _rng(seed, k)
    true = s.gather(1, torch.from_numpy(tgt).to(s.device)[:, None])
    better_m = (s > true).cpu().numpy()
    tied_m = (s == true).cpu().numpy()
    tied_m[np.arange(n_q), tgt] = False
    if protocol == "per_query":
        acc = _mc_per_query(better_m, tied_m, tgt, k, tops_t, ties, int(n_draws), rng)
        rates = acc / int(n_draws)
        return rates, rates.mean(axis=1)
    acc, count = _mc_subset(better_m, tied_m, tgt, n_c, k, tops_t, ties, int(n_draws), rng)
    with np.errstate(invalid="ignore", divide="ignore"):
        rates = np.where(count > 0, acc / np.maximum(count, 1), np.nan)
    # every draw has exactly k queries: the mean over all (draw, query) trials is the mean over
    # draws of the per-draw accuracy
    return rates, acc.sum(axis=1) / count.sum()


def _mc_per_query(better_m: np.ndarray, tied_m: np.ndarray, tgt: np.ndarray, k: int, tops: tuple[int, ...],
                  ties: str, n_draws: int, rng: np.random.Generator) -> np.ndarray:
    n_q, n_c = better_m.shape
    rows = np.arange(n_q)
    acc = np.zeros((len(tops), n_q))
    for _ in range(n_draws):
        # k - 1 distinct distractors per query: the k - 1 smallest of uniform keys, the true
        # candidate excluded by giving it a key above every other
        keys = rng.random((n_q, n_c))
        keys[rows, tgt] = 2.0
        idx = np.argpartition(keys, k - 2, axis=1)[:, : k - 1]
        x = np.take_along_axis(better_m, idx, axis=1).sum(axis=1)
        y = np.take_along_axis(tied_m, idx, axis=1).sum(axis=1)
        for j, top in enumerate(tops):
            acc[j] += _mc_hit(x, y, top, ties)
    return acc


def _mc_subset(better_m: np.ndarray, tied_m: np.ndarray, tgt: np.ndarray, n_c: int, k: int,
               tops: tuple[int, ...], ties: str, n_draws: int,
               rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    n_q = better_m.shape[0]
    if n_q != n_c or np.unique(tgt).size != n_q:
        raise ValueError("protocol='subset' needs one true candidate per query and one query per candidate "
                         "(one-to-one pairing); average repetitions first or use protocol='per_query'.")
    acc = np.zeros((len(tops), n_q))
    count = np.zeros(n_q)
    for _ in range(n_draws):
        sub = rng.choice(n_q, size=k, replace=False)  # the k queries of this draw
        cand = tgt[sub]  # their true candidates form the k-way candidate set
        x = better_m[np.ix_(sub, cand)].sum(axis=1)
        y = tied_m[np.ix_(sub, cand)].sum(axis=1)
        count[sub] += 1
        for j, top in enumerate(tops):
            acc[j, sub] += _mc_hit(x, y, top, ties)
    return acc, count


# --------------------------------------------------------------------------------------------------
# all retrieval numbers at once
# --------------------------------------------------------------------------------------------------
def _direction_metrics(scores: torch.Tensor, targets: np.ndarray, *, ks: Sequence[int], tops: Sequence[int],
                       full: bool, ties: str, method: str, n_draws: int, seed: int | None, protocol: str,
                       per_item: dict | None) -> dict[str, float]:
    n_q, n_c = scores.shape
    out: dict[str, float] = {}
    better, tied = rank_counts(scores, targets)
    for k in ks:
        tops_k = [n for n in tops if n <= k]
        if method == "exact":  # reuse the rank counts: only the hypergeometric curve depends on k
            rates = np.stack([_hits_from_counts(better, tied, hit_probability_curve(n_c, k, n), ties)
                              for n in tops_k])
            means = rates.mean(axis=1)
        else:
            rates, means = _kway(scores, k, tops=tops_k, targets=targets, ties=ties, method=method,
                                 n_draws=n_draws, seed=seed, protocol=protocol)
        for n, h, mean in zip(tops_k, rates, means, strict=True):
            out[f"top{n}_{k}way"] = float(mean)
            if per_item is not None:
                per_item[f"top{n}_{k}way"] = h
    if full:
        for n in tops:
            if n <= n_c:
                h = _hits_from_counts(better, tied, hit_probability_curve(n_c, n_c, n), ties) if n_c >= 2 \
                    else np.ones(n_q)
                out[f"top{n}_full"] = float(np.mean(h))
                if per_item is not None:
                    per_item[f"top{n}_full"] = h
    ranks = _ranks_from_counts(better, tied, ties)
    out["median_rank"] = float(np.median(ranks))
    out["mean_rank"] = float(np.mean(ranks))
    out["n_queries"] = int(n_q)
    out["n_candidates"] = int(n_c)
    if per_item is not None:
        per_item["rank"] = ranks
    return out


def _inverse_targets(targets: np.ndarray, n_candidates: int) -> np.ndarray:
    if targets.shape[0] != n_candidates or np.unique(targets).size != n_candidates:
        raise ValueError("direction 'image_to_brain' needs one brain embedding per image (one-to-one "
                         "pairing); average the repetitions of each image first, or use "
                         "directions=('brain_to_image',).")
    inv = np.empty_like(targets)
    inv[targets] = np.arange(targets.shape[0])
    return inv


def zero_shot_retrieval(brain: ArrayLike, image: ArrayLike, *, targets: ArrayLike | None = None,
                        ks: Sequence[int] = DEFAULT_KS, tops: Sequence[int] = DEFAULT_TOPS, full: bool = True,
                        directions: Sequence[str] = DIRECTIONS, similarity: str = "cosine",
                        ties: str = "pessimistic", method: str = "exact", n_draws: int = 100,
                        seed: int = 0, protocol: str = "per_query", csls_k: int | None = None,
                        per_item: bool = False) -> dict[str, Any]:
    """Every zero-shot retrieval number for a set of brain and image embeddings.

    Parameters
    ----------
    brain : array-like | torch.Tensor, shape (n_brain, dim)
        Brain embeddings (decoder outputs).
    image : array-like | torch.Tensor, shape (n_images, dim)
        Image embeddings (teacher outputs) of the candidate images.
    targets : array-like of int, shape (n_brain,) | None
        Row of ``image`` that each brain embedding saw; ``None`` pairs row ``i`` with row ``i``.
        ``image_to_brain`` needs one-to-one pairing.
    ks : sequence of int
        k-way sizes; those larger than the number of candidates are skipped (listed in
        ``protocol["skipped"]``).
    tops : sequence of int
        top-n values; a top-n is reported for a k only when ``n <= k``.
    full : bool
        Also report full-set top-n (``k`` = all candidates).
    directions : sequence of ``"brain_to_image"``, ``"image_to_brain"``
    similarity : ``"cosine"`` | ``"dot"``
    ties : ``"pessimistic"`` | ``"optimistic"`` | ``"average"``
        See the module documentation.
    method : ``"exact"`` | ``"monte_carlo"``
        Closed form (default) or seeded random draws.
    n_draws, seed, protocol
        Monte-Carlo settings (see :func:`kway_hits`); recorded in the protocol either way.
    csls_k : int | None
        If given, also report CSLS-corrected numbers with this neighbourhood size under
        ``"transductive"``.
    per_item : bool
        Also return per-query hits and ranks (numpy arrays, for bootstrap and paired tests) under
        ``"per_item"``; not JSON-ready, pop it before writing.

    Returns
    -------
    result : dict
        ``{"protocol": {...}, "inductive": {direction: {metric: value}}}``, plus
        ``"transductive"`` when ``csls_k`` is given and ``"per_item"`` when asked. Metric names are
        ``top{n}_{k}way``, ``top{n}_full``, ``median_rank``, ``mean_rank``; accuracies are
        fractions.
    """
    check_option("ties", ties, TIES)
    check_option("method", method, METHODS)
    check_option("protocol", protocol, PROTOCOLS)
    directions = (directions,) if isinstance(directions, str) else tuple(directions)
    for d in directions:
        check_option("directions", d, DIRECTIONS)
    if len(set(directions)) != len(tuple(directions)) or not directions:
        raise ValueError(f"directions must list each of {DIRECTIONS} at most once, got {directions!r}.")
    s = similarity_matrix(brain, image, similarity=similarity, query_name="brain", candidate_name="image")
    n_b, n_i = s.shape
    tgt = _targets(targets, n_b, n_i)
    tops = sorted({int(n) for n in tops})
    if not tops or tops[0] < 1:
        raise ValueError(f"tops must be positive integers, got {tops!r}.")
    ks_all = sorted({int(k) for k in ks})
    if ks_all and ks_all[0] < 2:
        raise ValueError(f"every k must be >= 2, got ks={ks!r}.")
    mats = {}
    for d in directions:
        if d == "brain_to_image":
            mats[d] = (s, tgt)
        else:
            mats[d] = (s.T, _inverse_targets(tgt, n_i))
    skipped = []
    used_ks: dict[str, list[int]] = {}
    for d, (m, _) in mats.items():
        used_ks[d] = [k for k in ks_all if k <= m.shape[1]]
        skipped += [f"{d}: k={k} > {m.shape[1]} candidates" for k in ks_all if k > m.shape[1]]
    mc = method == "monte_carlo"
    protocol_info: dict[str, Any] = {
        "task": "zero-shot retrieval",
        "similarity": similarity,
        "ties": ties,
        "method": method,
        "n_draws": int(n_draws) if mc else None,
        "seed": int(seed) if mc else None,
        "draw_protocol": protocol if mc else None,
        "ks": ks_all,
        "tops": tops,
        "full": bool(full),
        "directions": list(directions),
        "n_brain": int(n_b),
        "n_images": int(n_i),
        "skipped": skipped,
        "chance": {f"top{n}_{k}way": n / k for k in ks_all for n in tops if n <= k},
        "accuracy_unit": "fraction",
    }
    result: dict[str, Any] = {"protocol": protocol_info, "inductive": {}}
    items: dict[str, Any] = {"inductive": {}}
    common = dict(tops=tops, full=full, ties=ties, method=method, n_draws=n_draws, seed=seed,
                  protocol=protocol)
    for d, (m, t) in mats.items():
        pi = {} if per_item else None
        result["inductive"][d] = _direction_metrics(m, t, ks=used_ks[d], per_item=pi, **common)
        items["inductive"][d] = pi
    if csls_k is not None:
        c = csls_scores(s, k=int(csls_k))
        result["transductive"] = {
            "method": "csls",
            "csls_k": int(csls_k),
            "note": "transductive: uses the neighbourhoods of all test queries and candidates at once; "
                    "not comparable with inductive numbers",
        }
        items["transductive"] = {}
        for d, (_, t) in mats.items():
            cm = c if d == "brain_to_image" else c.T
            pi = {} if per_item else None
            result["transductive"][d] = _direction_metrics(cm, t, ks=used_ks[d], per_item=pi, **common)
            items["transductive"][d] = pi
    if per_item:
        result["per_item"] = items
    return result


def flatten_metrics(result: dict[str, Any], *, sep: str = "/") -> dict[str, float]:
    """Flatten a :func:`zero_shot_retrieval` result to ``{"brain_to_image/top1_2way": value, ...}``.

    Inductive numbers keep plain keys; transductive ones are prefixed ``"transductive/"``. The
    protocol and per-item arrays are left out. Handy for ``LightningModule.log_dict``.
    """
    flat: dict[str, float] = {}
    for section, prefix in (("inductive", ""), ("transductive", f"transductive{sep}")):
        for d, metrics in result.get(section, {}).items():
            if not isinstance(metrics, dict):
                continue
            for name, value in metrics.items():
                if name in ("n_queries", "n_candidates"):
                    continue
                flat[f"{prefix}{d}{sep}{name}"] = float(value)
    return flat


# --------------------------------------------------------------------------------------------------
# torchmetrics class
# --------------------------------------------------------------------------------------------------
class ZeroShotRetrieval(Metric):
    """Zero-shot retrieval as a :class:`torchmetrics.Metric` that reduces across processes.

    ``update(brain, image, ids=None)`` stores the embeddings of paired rows (brain row ``i`` saw
    image row ``i``); ``compute()`` gathers them from every process (``dist_reduce_fx="cat"``) and
    calls :func:`zero_shot_retrieval`. The candidates are the images of all the rows, so each row
    should be a distinct image (average repetitions first).

    ``ids`` (optional, one integer per row, e.g. the dataset index) makes the result independent of
    how rows were split over processes: rows are sorted by id and duplicate ids (the padding that
    ``DistributedSampler`` adds) are dropped. The exact method does not depend on row order, so
    ids only matter for ``method="monte_carlo"`` or with padded samplers.

    Parameters
    ----------
    ks, tops, full, directions, similarity, ties, method, n_draws, seed, protocol, csls_k
        As in :func:`zero_shot_retrieval`.
    **kwargs
        Passed to :class:`torchmetrics.Metric` (e.g. ``sync_on_compute``, ``process_group``).

    Notes
    -----
    ``compute()`` returns a flat dict of scalar tensors (see :func:`flatten_metrics`), ready for
    ``LightningModule.log_dict``; the full nested result with its protocol is kept in
    :attr:`last_result`. Every process must call ``update`` at least once before ``compute``.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, *, ks: Sequence[int] = DEFAULT_KS, tops: Sequence[int] = DEFAULT_TOPS, full: bool = True,
                 directions: Sequence[str] = DIRECTIONS, similarity: str = "cosine", ties: str = "pessimistic",
                 method: str = "exact", n_draws: int = 100, seed: int = 0, protocol: str = "per_query",
                 csls_k: int | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        check_option("similarity", similarity, SIMILARITIES)
        check_option("ties", ties, TIES)
        check_option("method", method, METHODS)
        check_option("protocol", protocol, PROTOCOLS)
        self.options = dict(ks=tuple(ks), tops=tuple(tops), full=full, directions=tuple(directions),
                            similarity=similarity, ties=ties, method=method, n_draws=n_draws, seed=seed,
                            protocol=protocol, csls_k=csls_k)
        self.last_result: dict[str, Any] | None = None
        self.add_state("brain", default=[], dist_reduce_fx="cat")
        self.add_state("image", default=[], dist_reduce_fx="cat")
        self.add_state("ids", default=[], dist_reduce_fx="cat")

    def update(self, brain: torch.Tensor, image: torch.Tensor, ids: torch.Tensor | None = None) -> None:
        """Add a batch of paired brain and image embeddings (and optional integer row ids)."""
        b = as_embeddings(brain, "brain").to(self.device, torch.float32)
        i = as_embeddings(image, "image").to(self.device, torch.float32)
        if b.shape != i.shape:
            raise ValueError(f"brain and image must be paired row by row with the same shape, got "
                             f"{tuple(b.shape)} and {tuple(i.shape)}.")
        if ids is not None:
            ids_t = torch.as_tensor(ids, device=self.device)
            if ids_t.shape != (b.shape[0],) or ids_t.is_floating_point():
                raise ValueError(f"ids must be integers of shape ({b.shape[0]},), got {tuple(ids_t.shape)} "
                                 f"{ids_t.dtype}.")
            if len(self.brain) and not len(self.ids):
                raise ValueError("pass ids in every update or in none.")
            self.ids.append(ids_t.to(torch.int64))
        elif len(self.ids):
            raise ValueError("pass ids in every update or in none.")
        self.brain.append(b)
        self.image.append(i)

    def compute(self) -> dict[str, torch.Tensor]:
        """Gathered retrieval numbers as a flat dict of scalar tensors."""
        brain = dim_zero_cat(self.brain)
        image = dim_zero_cat(self.image)
        if isinstance(self.ids, list) and not self.ids or (isinstance(self.ids, torch.Tensor)
                                                           and self.ids.numel() == 0):
            ids = None
        else:
            ids = dim_zero_cat(self.ids)
        if ids is not None:
            ids_np = ids.cpu().numpy().astype(np.int64)
            _, first = np.unique(ids_np, return_index=True)  # sorted unique ids, first occurrence
            order = torch.from_numpy(first).to(brain.device)
            brain, image = brain[order], image[order]
        self.last_result = zero_shot_retrieval(brain, image, **self.options)
        flat = flatten_metrics(self.last_result)
        return {key: torch.tensor(value, device=self.device) for key, value in flat.items()}
