"""Evaluation of decoders from embeddings: retrieval, classification, statistics, ceilings.

Every function takes embeddings (numpy arrays or torch tensors), never a model. Modules:

- :mod:`~neurodecode.evaluation.retrieval`: k-way and full-set zero-shot retrieval, ranks, both
  directions, CSLS (transductive, reported apart), :class:`ZeroShotRetrieval` (torchmetrics);
- :mod:`~neurodecode.evaluation.classification`: zero-shot classification against class prompt
  embeddings and supervised classification metrics, with torchmetrics twins;
- :mod:`~neurodecode.evaluation.stats`: bootstrap CIs, permutation tests, paired comparisons,
  mean +- sd summaries;
- :mod:`~neurodecode.evaluation.search`: chunked top-k search and ranks against galleries of
  millions of embeddings, in bounded memory, from memory or disk;
- :mod:`~neurodecode.evaluation.ceiling`: split-half reliability, NCSNR noise ceiling, split-half
  identification.

Names are imported lazily (torch and torchmetrics load on first use), so ``import
neurodecode.evaluation`` is cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "retrieval": ("ZeroShotRetrieval", "as_embeddings", "csls_scores", "flatten_metrics", "hit_probability_curve",
                  "kway_accuracy", "kway_hits", "rank_counts", "retrieval_ranks", "similarity_matrix",
                  "zero_shot_retrieval", "DEFAULT_KS", "DEFAULT_TOPS", "DIRECTIONS", "SIMILARITIES", "TIES"),
    "classification": ("ClassificationMetrics", "ZeroShotClassification", "class_embeddings",
                       "classification_metrics", "zero_shot_classification", "zero_shot_logits"),
    "stats": ("bootstrap_ci", "bootstrap_metrics", "classification_permutation_test", "format_mean_sd",
              "markdown_table", "mean_sd", "paired_comparison", "retrieval_permutation_test", "summarize"),
    "search": ("GallerySource", "auto_chunk_size", "gallery_ranks", "gallery_retrieval", "open_gallery",
                "search_gallery"),
    "ceiling": ("group_repetitions", "ncsnr_noise_ceiling", "spearman_brown", "split_half_identification",
                "split_half_reliability"),
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        value = getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
        globals()[name] = value
        return value
    if name in _EXPORTS:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_WHERE) | set(_EXPORTS))
