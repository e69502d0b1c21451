"""Evaluation of decoders from embeddings: retrieval, classification, statistics, ceilings.

Every function takes embeddings (numpy arrays or torch tensors), never a model. Modules:

- :mod:`~neurodecode.evaluation.ranking`: the shared ranking primitives: input checks, similarity
  matrices (cosine, dot, CSLS), rank counts, ranks and k-way hit probabilities, with the tie
  conventions used everywhere;
- :mod:`~neurodecode.evaluation.retrieval`: k-way and full-set zero-shot retrieval, ranks, both
  directions, CSLS (transductive, reported apart);
- :mod:`~neurodecode.evaluation.retrieval_metric`: :class:`ZeroShotRetrieval`, its torchmetrics twin
  (gathered across processes; what training logs);
- :mod:`~neurodecode.evaluation.classification`: zero-shot classification against class prompt
  embeddings and supervised classification metrics, with torchmetrics twins;
- :mod:`~neurodecode.evaluation.stats`: bootstrap CIs, permutation tests, paired comparisons,
  mean +- sd summaries;
- :mod:`~neurodecode.evaluation.search`: large-gallery search: chunked top-k search and ranks
  against galleries of millions of embeddings, in bounded memory, from memory or disk;
- :mod:`~neurodecode.evaluation.ceiling`: split-half reliability, NCSNR noise ceiling, split-half
  identification;
- :mod:`~neurodecode.evaluation.time_resolved`: sliding-window decoding (ridge retrieval and
  logistic classification per time window, with confidence intervals);
- :mod:`~neurodecode.evaluation.significance`: which windows are above chance, with the error
  controlled across windows (cluster permutation or FDR).

Names are imported lazily (torch and torchmetrics load on first use), so ``import
neurodecode.evaluation`` is cheap.
"""

from __future__ import annotations

from neurodecode.utils import lazy_exports

_EXPORTS = {
    "ranking": ("as_embeddings", "as_targets", "check_k_top", "csls_scores", "hit_probability_curve",
                "hits_from_counts", "hits_from_draw_counts", "inverse_targets", "rank_counts", "rank_counts_all",
                "ranks_from_counts", "retrieval_ranks", "similarity_matrix", "SIMILARITIES", "TIES"),
    "retrieval_metric": ("ZeroShotRetrieval",),
    "retrieval": ("flatten_metrics", "kway_accuracy", "kway_hits", "zero_shot_retrieval",
                  "DEFAULT_KS", "DEFAULT_TOPS", "DIRECTIONS", "METHODS", "PROTOCOLS"),
    "classification": ("ClassificationMetrics", "ZeroShotClassification", "class_embeddings",
                       "classification_metrics", "zero_shot_classification", "zero_shot_logits"),
    "stats": ("bootstrap_ci", "bootstrap_metrics", "classification_permutation_test", "format_mean_sd",
              "markdown_table", "mean_sd", "paired_comparison", "retrieval_permutation_test", "summarize"),
    "search": ("GallerySource", "auto_chunk_size", "gallery_ranks", "gallery_retrieval", "open_gallery",
               "search_gallery"),
    "ceiling": ("group_repetitions", "ncsnr_noise_ceiling", "spearman_brown", "split_half_identification",
                "split_half_reliability"),
    "significance": ("CORRECTIONS", "label_permutation_significance", "window_significance"),
    "time_resolved": ("SCORINGS", "sliding_windows", "time_resolved_classification", "time_resolved_retrieval"),
}
__all__, __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
