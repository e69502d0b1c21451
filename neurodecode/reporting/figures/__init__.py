"""Figures for decoding results: retrieval strips, similarity matrices, accuracy curves and bars.

Every plotting function follows MNE's convention: it takes ``show=False`` (``plt.show()`` is called only
when ``show=True``) and returns a :class:`matplotlib.figure.Figure`. With ``show=False`` the figure is
built without pyplot (a bare ``Figure`` on an Agg canvas), so nothing is left in pyplot's figure manager
and no display is needed: write it with :func:`save_figure`, or let a notebook display the returned
object. With ``show=True`` the figure is made by pyplot and shown by the active backend.

Inputs are plain NumPy arrays, lists and dictionaries (never models), so the same functions serve
``neurodecode evaluate`` (PNG files next to ``metrics.json``) and notebooks.

Titles say what the figure shows, so a reader who sees only the PNG understands it: the automatic
description (metric, k, chance level, counts) is always drawn; the ``title`` argument, when given,
is put above it, which is the place for the data set, subject and model.

One module per figure family:

- :mod:`~neurodecode.reporting.figures.retrieval`: :func:`plot_retrieval_strip`, :func:`plot_accuracy_vs_k`;
- :mod:`~neurodecode.reporting.figures.similarity`: :func:`plot_similarity_matrix`;
- :mod:`~neurodecode.reporting.figures.time_resolved`: :func:`plot_time_resolved`;
- :mod:`~neurodecode.reporting.figures.subjects`: :func:`plot_subject_bars`;
- :mod:`~neurodecode.reporting.figures.channels`: :func:`plot_ablation`, :func:`plot_sensor_importance`;
- :mod:`~neurodecode.reporting.figures.common`: colours, figure plumbing, input checks, :func:`save_figure`.

matplotlib (and PIL, MNE) are imported inside the functions: ``import neurodecode.reporting.figures`` is cheap.
"""

from neurodecode.reporting.figures.channels import plot_ablation, plot_sensor_importance
from neurodecode.reporting.figures.common import (
    CHANCE_COLOR,
    HIGHLIGHT_COLOR,
    HIT_COLOR,
    MISS_COLOR,
    ONSET_COLOR,
    SEEN_COLOR,
    save_figure,
)
from neurodecode.reporting.figures.retrieval import plot_accuracy_vs_k, plot_retrieval_strip
from neurodecode.reporting.figures.similarity import plot_similarity_matrix
from neurodecode.reporting.figures.subjects import plot_subject_bars
from neurodecode.reporting.figures.time_resolved import plot_time_resolved

__all__ = [
    "CHANCE_COLOR",
    "HIGHLIGHT_COLOR",
    "HIT_COLOR",
    "MISS_COLOR",
    "ONSET_COLOR",
    "SEEN_COLOR",
    "plot_ablation",
    "plot_accuracy_vs_k",
    "plot_retrieval_strip",
    "plot_sensor_importance",
    "plot_similarity_matrix",
    "plot_subject_bars",
    "plot_time_resolved",
    "save_figure",
]
