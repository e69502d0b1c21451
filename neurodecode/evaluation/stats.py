"""Statistics for decoding results: confidence intervals, tests against chance, model comparisons.

Everything is seeded and vectorised; scipy does the heavy lifting where it fits.

- :func:`bootstrap_ci` (:func:`bootstrap_metrics` for a dict of per-item arrays): bootstrap
  confidence interval of a statistic over test items (:func:`scipy.stats.bootstrap`, BCa by
  default, percentile or basic on request). Resampling the per-item values (e.g. the per-query hit
  rates of :func:`~neurodecode.evaluation.retrieval.kway_hits`) treats the candidates as fixed and
  the queries as the sample, the usual choice for test sets.
- :func:`retrieval_permutation_test`: is retrieval better than chance? The null distribution comes
  from permuting the pairing of brain and image embeddings; the p-value is
  ``(1 + #{null >= observed}) / (1 + n_permutations)`` (never 0; Phipson & Smyth, 2010).
- :func:`classification_permutation_test`: the same for classification, permuting labels.
- :func:`paired_comparison`: two models on the same test items; paired bootstrap CI of the
  difference and a p-value from a paired (sign-flip) permutation test, McNemar's exact test for
  binary hits, or the Wilcoxon signed-rank test.
- :func:`mean_sd`, :func:`summarize`, :func:`format_mean_sd`, :func:`markdown_table`: mean +- sd
  over seeds and subjects, as dicts and as a Markdown table.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from neurodecode.utils import check_option

__all__ = [
    "bootstrap_ci",
    "bootstrap_metrics",
    "classification_permutation_test",
    "format_mean_sd",
    "markdown_table",
    "mean_sd",
    "paired_comparison",
    "retrieval_permutation_test",
    "summarize",
]

CI_METHODS = ("BCa", "percentile", "basic")


def _as_1d(values: Any, name: str) -> np.ndarray:
    try:
        import torch

        if isinstance(values, torch.Tensor):
            values = values.detach().cpu().numpy()
    except ImportError:  # pragma: no cover
        pass
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D (one value per test item), got shape {arr.shape}.")
    if arr.size == 0:
        raise ValueError(f"{name} is empty.")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or Inf (first at index {int(np.argmin(np.isfinite(arr)))}).")
    return arr


# --------------------------------------------------------------------------------------------------
# bootstrap
# --------------------------------------------------------------------------------------------------
def bootstrap_ci(values: Any, *, statistic: str | Callable[..., Any] = "mean", confidence: float = 0.95,
                 method: str = "BCa", n_resamples: int = 9999, seed: int = 0) -> dict[str, Any]:
    """Bootstrap confidence interval of a statistic of per-item values.

    Parameters
    ----------
    values : array-like, shape (n_items,)
        One value per test item (e.g. per-query hit rates, 0/1 hits, ranks).
    statistic : ``"mean"`` | ``"median"`` | callable
        A callable must accept ``(sample, axis=...)`` and reduce along ``axis`` (vectorised), like
        ``np.mean``.
    confidence : float
        Confidence level in (0, 1).
    method : ``"BCa"`` | ``"percentile"`` | ``"basic"``
        Interval type of :func:`scipy.stats.bootstrap`. BCa (bias-corrected and accelerated) is the
        default: second-order accurate, and it respects the ``[0, 1]`` range of accuracies.
    n_resamples : int
        Bootstrap resamples.
    seed : int
        Seed of the resampling.

    Returns
    -------
    ci : dict
        ``estimate`` (the statistic on the data), ``low``, ``high``, ``confidence``, ``method``,
        ``n_resamples``, ``seed``, ``n_items``, ``standard_error`` (sd of the bootstrap
        distribution). When every value is equal (e.g. a perfect decoder) the interval collapses to
        the estimate and ``degenerate`` is True.
    """
    from scipy.stats import bootstrap

    check_option("method", method, CI_METHODS)
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}.")
    x = _as_1d(values, "values")
    fn = {"mean": np.mean, "median": np.median}.get(statistic, statistic) if isinstance(statistic, str) \
        else statistic
    if isinstance(statistic, str) and statistic not in ("mean", "median"):
        raise ValueError(f"statistic must be 'mean', 'median' or a callable, got {statistic!r}.")
    estimate = float(fn(x, axis=-1))
    out: dict[str, Any] = {"estimate": estimate, "low": estimate, "high": estimate,
                           "confidence": float(confidence), "method": method, "n_resamples": int(n_resamples),
                           "seed": int(seed), "n_items": int(x.size), "standard_error": 0.0,
                           "degenerate": True}
    if x.size < 2 or np.all(x == x[0]):
        return out  # no variability to resample; scipy would return NaN for BCa
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=RuntimeWarning)
        res = bootstrap((x,), fn, n_resamples=int(n_resamples), confidence_level=confidence, method=method,
                        vectorized=True, axis=-1, rng=np.random.default_rng(seed))
    out.update(low=float(res.confidence_interval.low), high=float(res.confidence_interval.high),
               standard_error=float(res.standard_error), degenerate=False)
    return out


def bootstrap_metrics(per_item: Mapping[str, Any], **kwargs: Any) -> dict[str, dict[str, Any]]:
    """:func:`bootstrap_ci` of every per-item array of a mapping.

    Parameters
    ----------
    per_item : mapping of str to array-like
        E.g. ``zero_shot_retrieval(..., per_item=True)["per_item"]["inductive"]["brain_to_image"]``
        (per-query hit rates keyed by metric name, and ``"rank"``).
    **kwargs
        Passed to :func:`bootstrap_ci` (``method``, ``confidence``, ``n_resamples``, ``seed``).

    Returns
    -------
    cis : dict
        ``{metric: bootstrap_ci(...)}``; every metric uses the same seed, so the intervals are
        reproducible one by one.
    """
    return {name: bootstrap_ci(values, **kwargs) for name, values in per_item.items()}


# --------------------------------------------------------------------------------------------------
# permutation tests against chance
# --------------------------------------------------------------------------------------------------
def _null_stats(better: np.ndarray, tied: np.ndarray, targets: np.ndarray, value: Callable, *,
                n_permutations: int, rng: np.random.Generator, block: int = 512) -> np.ndarray:
    n = targets.shape[0]
    rows = np.arange(n)
    out = np.empty(n_permutations)
    for start in range(0, n_permutations, block):
        stop = min(start + block, n_permutations)
        perms = np.argsort(rng.random((stop - start, n)), axis=1)  # uniform random permutations
        t = targets[perms]  # query i is paired with the target of item perm[i]
        out[start:stop] = value(better[rows, t], tied[rows, t]).mean(axis=1)
    return out


def _perm_result(observed: float, null: np.ndarray, alternative: str, **extra: Any) -> dict[str, Any]:
    if alternative == "greater":
        exceed = np.sum(null >= observed - 1e-12)
    else:
        exceed = np.sum(null <= observed + 1e-12)
    return {"statistic": float(observed), "p_value": float((1 + exceed) / (1 + null.size)),
            "null_mean": float(null.mean()), "null_sd": float(null.std(ddof=1)) if null.size > 1 else 0.0,
            "alternative": alternative, "n_permutations": int(null.size), **extra}


def retrieval_permutation_test(brain: Any, image: Any, *, targets: Any = None, k: int | None = None, top: int = 1,
                               statistic: str = "accuracy", direction: str = "brain_to_image",
                               similarity: str = "cosine", ties: str = "pessimistic",
                               n_permutations: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Permutation test of retrieval against chance, permuting the brain-image pairing.

    The score matrix is computed once; for every permutation ``pi`` query ``i`` is scored as if
    its true candidate were that of item ``pi(i)``. The rank of every entry in its row is computed
    once, so each permutation costs one gather (vectorised over blocks of permutations).

    Parameters
    ----------
    brain, image : array-like | torch.Tensor, shape (n, dim)
        Embeddings; see :func:`~neurodecode.evaluation.retrieval.zero_shot_retrieval`.
    targets : array-like of int | None
        Row of ``image`` each brain row saw (``None``: row ``i`` with row ``i``).
    k : int | None
        ``k``-way accuracy (closed form); ``None`` is full-set retrieval.
    top : int
        top-n.
    statistic : ``"accuracy"`` | ``"mean_rank"``
        Accuracy (one-sided, greater) or mean rank (one-sided, less).
    direction : ``"brain_to_image"`` | ``"image_to_brain"``
    similarity, ties
        See :func:`~neurodecode.evaluation.retrieval.zero_shot_retrieval`.
    n_permutations : int
    seed : int

    Returns
    -------
    result : dict
        ``statistic`` (observed), ``p_value``, ``null_mean``, ``null_sd``, ``chance`` (expected
        accuracy or rank under the null), ``alternative``, ``n_permutations``, ``seed`` and the
        settings.
    """
    from neurodecode.evaluation.ranking import (
        TIES,
        as_targets,
        hit_probability_curve,
        hits_from_counts,
        inverse_targets,
        rank_counts_all,
        ranks_from_counts,
        similarity_matrix,
    )
    from neurodecode.evaluation.retrieval import DIRECTIONS

    check_option("statistic", statistic, ("accuracy", "mean_rank"))
    check_option("direction", direction, DIRECTIONS)
    check_option("ties", ties, TIES)
    if int(n_permutations) < 1:
        raise ValueError(f"n_permutations must be >= 1, got {n_permutations}.")
    s = similarity_matrix(brain, image, similarity=similarity, query_name="brain", candidate_name="image")
    tgt = as_targets(targets, s.shape[0], s.shape[1])
    if direction == "image_to_brain":
        tgt = inverse_targets(tgt, s.shape[1])
        s = s.T
    n_c = s.shape[1]
    better, tied = rank_counts_all(s)
    if statistic == "accuracy":
        kk = n_c if k is None else int(k)
        curve = hit_probability_curve(n_c, kk, top)

        def value(b: np.ndarray, t: np.ndarray) -> np.ndarray:
            return hits_from_counts(b, t, curve, ties)

        chance, alternative = top / kk, "greater"
    else:
        def value(b: np.ndarray, t: np.ndarray) -> np.ndarray:
            return ranks_from_counts(b, t, ties)

        chance, alternative = (n_c + 1) / 2, "less"
    rows = np.arange(tgt.shape[0])
    observed = float(value(better[rows, tgt], tied[rows, tgt]).mean())
    null = _null_stats(better, tied, tgt, value, n_permutations=int(n_permutations),
                       rng=np.random.default_rng(seed))
    return _perm_result(observed, null, alternative, seed=int(seed), chance=float(chance), k=k, top=int(top),
                        statistic_name=statistic, direction=direction, similarity=similarity, ties=ties)


def classification_permutation_test(labels: Any, scores: Any, *, statistic: str = "accuracy", top: int = 1,
                                    ties: str = "pessimistic", n_permutations: int = 1000,
                                    seed: int = 0) -> dict[str, Any]:
    """Permutation test of classification against chance, permuting the labels over items.

    Parameters
    ----------
    labels : array-like of int, shape (n_items,)
    scores : array-like | torch.Tensor, shape (n_items, n_classes)
        Class scores (e.g. :func:`~neurodecode.evaluation.classification.zero_shot_logits`).
    statistic : ``"accuracy"`` | ``"balanced_accuracy"``
        top-``top`` accuracy, or balanced (top-1) accuracy.
    top, ties, n_permutations, seed
        As in :func:`retrieval_permutation_test`.

    Returns
    -------
    result : dict
        As :func:`retrieval_permutation_test`; ``chance`` is ``top / n_classes``, while ``null_mean``
        is the mean of the permutation null, which also reflects the label frequencies.
    """
    from neurodecode.evaluation.ranking import TIES, hits_from_counts, rank_counts_all

    check_option("statistic", statistic, ("accuracy", "balanced_accuracy"))
    check_option("ties", ties, TIES)
    better, tied = rank_counts_all(scores)
    n, n_classes = better.shape
    y = np.asarray(labels)
    if y.shape != (n,) or not np.issubdtype(y.dtype, np.integer) or y.min() < 0 or y.max() >= n_classes:
        raise ValueError(f"labels must be {n} integer class indices in [0, {n_classes - 1}], got shape {y.shape}, "
                         f"dtype {y.dtype}.")
    top = int(top) if statistic == "accuracy" else 1
    if not 1 <= top < n_classes:
        raise ValueError(f"top must be in [1, {n_classes - 1}], got {top}.")
    curve = (np.arange(n_classes) < top).astype(float)
    rows = np.arange(n)

    if statistic == "accuracy":
        def value(b: np.ndarray, t: np.ndarray) -> np.ndarray:
            return hits_from_counts(b, t, curve, ties)

        observed = float(value(better[rows, y], tied[rows, y]).mean())
        null = _null_stats(better, tied, y, value, n_permutations=int(n_permutations),
                           rng=np.random.default_rng(seed))
    else:
        # balanced accuracy under a permutation: item i carries label y[pi(i)]; average the hits per
        # carried label (the label frequencies are unchanged by permuting)
        classes, inv = np.unique(y, return_inverse=True)
        counts = np.bincount(inv, minlength=classes.size).astype(float)

        def bal(h: np.ndarray, lab_idx: np.ndarray) -> np.ndarray:
            sums = np.zeros((h.shape[0], classes.size))
            np.add.at(sums, (np.arange(h.shape[0])[:, None], lab_idx), h)
            return (sums / counts).mean(axis=1)

        observed = float(bal(hits_from_counts(better[rows, y], tied[rows, y], curve, ties)[None], inv[None])[0])
        rng = np.random.default_rng(seed)
        null = np.empty(int(n_permutations))
        for start in range(0, int(n_permutations), 512):
            stop = min(start + 512, int(n_permutations))
            perms = np.argsort(rng.random((stop - start, n)), axis=1)
            h = hits_from_counts(better[rows, y[perms]], tied[rows, y[perms]], curve, ties)
            null[start:stop] = bal(h, inv[perms])
    return _perm_result(observed, null, "greater", seed=int(seed), chance=float(top / n_classes),
                        statistic_name=statistic, top=top, ties=ties)


# --------------------------------------------------------------------------------------------------
# paired comparison of two models
# --------------------------------------------------------------------------------------------------
def paired_comparison(a: Any, b: Any, *, method: str = "auto", n_resamples: int = 9999, confidence: float = 0.95,
                      seed: int = 0) -> dict[str, Any]:
    """Compare two models on the same test items.

    Parameters
    ----------
    a, b : array-like, shape (n_items,)
        Per-item values of model A and model B on the same items in the same order (0/1 hits,
        per-query hit rates, ranks...).
    method : ``"auto"`` | ``"permutation"`` | ``"mcnemar"`` | ``"wilcoxon"``
        Test for the p-value (two-sided). ``"permutation"`` flips the sign of the per-item
        differences at random (:func:`scipy.stats.permutation_test`, exact when ``2**n`` is at
        most ``n_resamples``); ``"mcnemar"`` is McNemar's exact test (a binomial test on the
        discordant pairs), binary values only; ``"wilcoxon"`` is :func:`scipy.stats.wilcoxon`.
        ``"auto"`` picks McNemar for binary values, else the permutation test.
    n_resamples : int
        Resamples of the bootstrap CI and of the permutation test.
    confidence : float
        Level of the paired bootstrap (percentile) CI of the mean difference.
    seed : int

    Returns
    -------
    result : dict
        ``mean_a``, ``mean_b``, ``difference`` (mean of a - b), ``ci_low``, ``ci_high``,
        ``p_value``, ``test``, ``n_items``; for McNemar also ``a_only`` and ``b_only`` (discordant
        counts).
    """
    from scipy import stats

    check_option("method", method, ("auto", "permutation", "mcnemar", "wilcoxon"))
    x = _as_1d(a, "a")
    y = _as_1d(b, "b")
    if x.shape != y.shape:
        raise ValueError(f"a and b must hold one value per item for the same items, got {x.size} and {y.size}.")
    d = x - y
    binary = bool(np.all(np.isin(x, (0, 1))) and np.all(np.isin(y, (0, 1))))
    if method == "auto":
        method = "mcnemar" if binary else "permutation"
    ci = bootstrap_ci(d, method="percentile", n_resamples=n_resamples, confidence=confidence, seed=seed)
    out: dict[str, Any] = {"mean_a": float(x.mean()), "mean_b": float(y.mean()), "difference": float(d.mean()),
                           "ci_low": ci["low"], "ci_high": ci["high"], "confidence": float(confidence),
                           "ci_method": "paired bootstrap (percentile)", "n_items": int(x.size), "seed": int(seed)}
    if method == "mcnemar":
        if not binary:
            raise ValueError("method='mcnemar' needs binary (0/1) per-item hits; use 'permutation' or "
                             "'wilcoxon' for continuous values.")
        a_only = int(np.sum((x == 1) & (y == 0)))
        b_only = int(np.sum((x == 0) & (y == 1)))
        p = 1.0 if a_only + b_only == 0 else float(stats.binomtest(a_only, a_only + b_only, 0.5).pvalue)
        out.update(test="McNemar exact (binomial on discordant pairs)", p_value=p, a_only=a_only, b_only=b_only)
    elif method == "wilcoxon":
        if np.all(d == 0):
            p = 1.0
        else:
            p = float(stats.wilcoxon(x, y).pvalue)
        out.update(test="Wilcoxon signed-rank", p_value=p)
    else:
        if np.all(d == 0):
            p = 1.0
        else:
            res = stats.permutation_test((x, y), lambda u, v, axis=-1: np.mean(u - v, axis=axis),
                                         permutation_type="samples", vectorized=True, n_resamples=n_resamples,
                                         alternative="two-sided", rng=np.random.default_rng(seed))
            p = float(res.pvalue)
        out.update(test="paired permutation (sign flip)", p_value=p)
    return out


# --------------------------------------------------------------------------------------------------
# mean +- sd over seeds and subjects
# --------------------------------------------------------------------------------------------------
def mean_sd(values: Iterable[float]) -> dict[str, float | int]:
    """Mean, sample standard deviation (ddof=1; NaN for one value), standard error and count."""
    x = np.asarray(list(values), dtype=np.float64)
    if x.size == 0:
        raise ValueError("mean_sd needs at least one value.")
    sd = float(x.std(ddof=1)) if x.size > 1 else float("nan")
    return {"mean": float(x.mean()), "sd": sd, "sem": sd / np.sqrt(x.size) if x.size > 1 else float("nan"),
            "n": int(x.size)}


def _records(records: Any) -> list[dict[str, Any]]:
    if hasattr(records, "to_dict") and hasattr(records, "columns"):  # pandas DataFrame
        return records.to_dict(orient="records")
    out = [dict(r) for r in records]
    if not out:
        raise ValueError("summarize needs at least one record.")
    return out


def summarize(records: Any, metrics: Sequence[str] | None = None, *, by: str | Sequence[str] | None = None,
              average_over: str | Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Mean +- sd of metrics over runs, per group.

    Parameters
    ----------
    records : sequence of mapping | pandas.DataFrame
        One record per run, e.g. ``{"subject": "01", "seed": 0, "top1_200way": 0.31}``.
    metrics : sequence of str | None
        Keys to summarise; default: every numeric key that is not in ``by`` or ``average_over``
        and is not called ``seed``.
    by : str | sequence of str | None
        Keys that define the groups (one output row per group); ``None`` gives a single row.
    average_over : str | sequence of str | None
        Keys averaged away *first*: records that agree on every other non-float key (subject,
        fold, model name...) are replaced by the mean of their metrics. ``summarize(r, by=None, average_over="seed")`` gives mean +- sd
        across subjects of the seed-averaged numbers; ``summarize(r, by="subject")`` gives mean +-
        sd across seeds for each subject.

    Returns
    -------
    rows : list of dict
        ``{**group_keys, "n": count, "<metric>_mean": ..., "<metric>_sd": ...}`` (sd with ddof=1,
        NaN for a single run).
    """
    recs = _records(records)
    by_t = () if by is None else ((by,) if isinstance(by, str) else tuple(by))
    avg_t = () if average_over is None else ((average_over,) if isinstance(average_over, str) else tuple(average_over))
    if metrics is None:
        metrics = [k for k, v in recs[0].items() if k not in by_t + avg_t + ("seed",)
                   and isinstance(v, int | float | np.number) and not isinstance(v, bool)]
    metrics = list(metrics)
    for i, r in enumerate(recs):
        for key in list(metrics) + list(by_t):
            if key not in r:
                raise KeyError(f"record {i} has no key {key!r} (keys: {sorted(r)}).")
    if avg_t:
        # identifying keys: everything but the metrics, the averaged keys and other float measurements
        ident = [k for k in recs[0] if k not in metrics and k not in avg_t
                 and not isinstance(recs[0][k], float | np.floating)]
        groups: dict[tuple, list[dict[str, Any]]] = {}
        for r in recs:
            groups.setdefault(tuple(r.get(k) for k in ident), []).append(r)
        recs = [{**dict(zip(ident, key, strict=True)),
                 **{m: float(np.mean([g[m] for g in grp])) for m in metrics}} for key, grp in groups.items()]
    grouped: dict[tuple, list[dict[str, Any]]] = {}
    for r in recs:
        grouped.setdefault(tuple(r[k] for k in by_t), []).append(r)
    rows = []
    for key, grp in grouped.items():
        row: dict[str, Any] = dict(zip(by_t, key, strict=True))
        row["n"] = len(grp)
        for m in metrics:
            ms = mean_sd(g[m] for g in grp)
            row[f"{m}_mean"] = ms["mean"]
            row[f"{m}_sd"] = ms["sd"]
        rows.append(row)
    return rows


def format_mean_sd(mean: float, sd: float | None = None, *, scale: float = 100.0, digits: int = 1) -> str:
    """Format ``mean +- sd`` for a table, e.g. ``format_mean_sd(0.3123, 0.021)`` gives ``"31.2 ± 2.1"``."""
    m = f"{mean * scale:.{digits}f}"
    if sd is None or not np.isfinite(sd):
        return m
    return f"{m} ± {sd * scale:.{digits}f}"


def markdown_table(rows: Sequence[Mapping[str, Any]], metrics: Sequence[str], *,
                   keys: Sequence[str] = (), scale: float = 100.0, digits: int = 1) -> str:
    """A Markdown table of :func:`summarize` rows: group keys, then ``mean ± sd`` per metric.

    Parameters
    ----------
    rows : sequence of mapping
        Output of :func:`summarize`.
    metrics : sequence of str
        Metric names (without the ``_mean`` / ``_sd`` suffix).
    keys : sequence of str
        Group-key columns to show first.
    scale, digits
        See :func:`format_mean_sd` (``scale=100`` shows accuracies in percent).
    """
    header = list(keys) + ["n"] + list(metrics)
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for r in rows:
        cells = [str(r[k]) for k in keys] + [str(r.get("n", ""))]
        cells += [format_mean_sd(r[f"{m}_mean"], r.get(f"{m}_sd"), scale=scale, digits=digits) for m in metrics]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
