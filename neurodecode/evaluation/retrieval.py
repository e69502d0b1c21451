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

**Ties and similarities** follow :mod:`~neurodecode.evaluation.ranking` (``ties="pessimistic"`` by
default: a tie with the true candidate is a miss; cosine similarity by default), where the shared
ranking primitives (similarity matrices, rank counts, hit-probability curves) live.

**Transductive numbers.** CSLS (cross-domain similarity local scaling, Lample et al., 2018, *Word
translation without parallel data*, ICLR) corrects hubness using the neighbourhoods of the *test*
queries and candidates, i.e. it looks at the whole test set at once. It is available through
``csls_k=...`` and reported under the separate key ``"transductive"``, never mixed with the
inductive numbers under ``"inductive"``.

Distributed evaluation
----------------------
:class:`~neurodecode.evaluation.retrieval_metric.ZeroShotRetrieval` is the
:class:`torchmetrics.Metric` twin of :func:`zero_shot_retrieval`, reduced across processes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from neurodecode.evaluation.ranking import (
    TIES,
    ArrayLike,
    as_embeddings,
    as_targets,
    check_k_top,
    csls_scores,
    hit_probability_curve,
    hits_from_counts,
    hits_from_draw_counts,
    inverse_targets,
    rank_counts,
    ranks_from_counts,
    similarity_matrix,
)
from neurodecode.utils import check_option

__all__ = [
    "DEFAULT_KS",
    "DEFAULT_TOPS",
    "DIRECTIONS",
    "METHODS",
    "PROTOCOLS",
    "flatten_metrics",
    "kway_accuracy",
    "kway_hits",
    "zero_shot_retrieval",
]

DEFAULT_KS: tuple[int, ...] = (2, 4, 10, 50, 100, 200)
DEFAULT_TOPS: tuple[int, ...] = (1, 5)
DIRECTIONS: tuple[str, ...] = ("brain_to_image", "image_to_brain")
METHODS: tuple[str, ...] = ("exact", "monte_carlo")
PROTOCOLS: tuple[str, ...] = ("per_query", "subset")


# --------------------------------------------------------------------------------------------------
# k-way hits (exact and Monte Carlo)
# --------------------------------------------------------------------------------------------------
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
    s = as_embeddings(scores, "scores")
    n_q, n_c = s.shape
    k = int(k)
    for top in tops_t:
        check_k_top(k, top, n_c)
    tgt = as_targets(targets, n_q, n_c)
    if method == "exact":
        better, tied = rank_counts(s, tgt)
        rates = np.stack([hits_from_counts(better, tied, hit_probability_curve(n_c, k, top), ties)
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
            acc[j] += hits_from_draw_counts(x, y, top, ties)
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
            acc[j, sub] += hits_from_draw_counts(x, y, top, ties)
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
            rates = np.stack([hits_from_counts(better, tied, hit_probability_curve(n_c, k, n), ties)
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
                h = hits_from_counts(better, tied, hit_probability_curve(n_c, n_c, n), ties) if n_c >= 2 \
                    else np.ones(n_q)
                out[f"top{n}_full"] = float(np.mean(h))
                if per_item is not None:
                    per_item[f"top{n}_full"] = h
    ranks = ranks_from_counts(better, tied, ties)
    out["median_rank"] = float(np.median(ranks))
    out["mean_rank"] = float(np.mean(ranks))
    out["n_queries"] = int(n_q)
    out["n_candidates"] = int(n_c)
    if per_item is not None:
        per_item["rank"] = ranks
    return out



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
    tgt = as_targets(targets, n_b, n_i)
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
            mats[d] = (s.T, inverse_targets(tgt, n_i))
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


def __getattr__(name: str) -> Any:
    # ZeroShotRetrieval lived here before it got its own module; keep the old import working
    if name == "ZeroShotRetrieval":
        from neurodecode.evaluation.retrieval_metric import ZeroShotRetrieval

        return ZeroShotRetrieval
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
