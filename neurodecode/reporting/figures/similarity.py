"""The brain-by-image similarity matrix, with the best match of each row marked."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from neurodecode.reporting.figures.common import (
    MISS_COLOR,
    check_array,
    check_names,
    finish_figure,
    format_percent,
    new_figure,
    set_title,
    shorten,
)

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure

__all__ = ["plot_similarity_matrix"]


# --------------------------------------------------------------------------------------------------
# 2. similarity matrix
# --------------------------------------------------------------------------------------------------
def plot_similarity_matrix(similarity: Any, *, labels: Sequence[str] | None = None, title: str | None = None,
                           cbar_label: str = "similarity", max_tick_labels: int = 40,
                           show: bool = False) -> Figure:
    """Draw the brain-by-image similarity matrix and mark each row's best match.

    Rows are brain responses and columns candidate images, ordered so that the true image of row ``i``
    is column ``i`` (the diagonal). A dot marks the best-matching column of every row: white on the
    diagonal (a top-1 hit), red elsewhere, so a good decoder shows a white diagonal of dots.

    Parameters
    ----------
    similarity : array, shape (n_brain, n_images)
        Similarity (e.g. cosine) of each brain embedding with each candidate image, ``n_brain <= n_images``.
    labels : sequence of str, length n_images | None
        Names of the candidate images (e.g. concepts); row ``i`` takes the name of column ``i``. Drawn as
        tick labels when there are at most ``max_tick_labels`` items.
    title : str | None
        Headline put above the automatic description (data set, subject, model).
    cbar_label : str
        Label of the colour bar (e.g. ``"cosine similarity"``).
    max_tick_labels : int
        Draw tick labels only up to this many columns.
    show : bool
        Call ``plt.show()``.

    Returns
    -------
    fig : matplotlib.figure.Figure
        One matrix axes and one colour bar axes.
    """
    from matplotlib.lines import Line2D

    sim = check_array(similarity, "similarity", ndim=2)
    n_r, n_c = sim.shape
    if n_r == 0 or n_c == 0:
        raise ValueError(f"similarity is empty (shape {sim.shape}).")
    if n_r > n_c:
        raise ValueError(f"similarity has {n_r} rows (brain responses) but only {n_c} columns (images); the "
                         f"true image of row i must be column i, so give at least as many columns as rows "
                         f"(transpose it if the axes are swapped).")
    if labels is not None:
        labels = check_names(labels, "labels")
        if len(labels) != n_c:
            raise ValueError(f"labels has {len(labels)} names but similarity has {n_c} columns (images).")
    best = np.argmax(sim, axis=1)
    rows = np.arange(n_r)
    is_hit = best == rows
    n_hit = int(is_hit.sum())

    side = float(np.clip(4.0 + n_c / 40, 5.0, 8.0))
    fig = new_figure((side + 1.3, side * max(n_r / n_c, 0.35) + 1.6), show)
    ax = fig.add_subplot()
    im = ax.imshow(sim, cmap="viridis", interpolation="nearest", aspect="auto")
    cbar = fig.colorbar(im, ax=ax, shrink=0.85)
    cbar.set_label(cbar_label)
    cell_pt = side * 72 * 0.8 / n_c
    size = float(np.clip((0.45 * cell_pt) ** 2, 7.0, 36.0))  # stay visible on large matrices
    ax.scatter(best[is_hit], rows[is_hit], s=size, c="white", edgecolors="black",
               linewidths=0.4 if size < 10 else 0.6, zorder=3)
    ax.scatter(best[~is_hit], rows[~is_hit], s=size, c=MISS_COLOR, edgecolors="white",
               linewidths=0.4 if size < 10 else 0.6, zorder=3)
    ax.set_xlabel("candidate image (column i = image seen for row i)")
    ax.set_ylabel("brain response (row)")
    if labels is not None and n_c <= max_tick_labels:
        fs = 8 if n_c <= 20 else 6
        ax.set_xticks(np.arange(n_c), [shorten(s, 18) for s in labels], rotation=90, fontsize=fs)
        ax.set_yticks(rows, [shorten(s, 18) for s in labels[:n_r]], fontsize=fs)
    handles = [Line2D([], [], ls="", marker="o", mfc="white", mec="black", label="best match is the true image"),
               Line2D([], [], ls="", marker="o", mfc=MISS_COLOR, mec="white", label="best match is another image")]
    fig.legend(handles=handles, loc="outside lower center", ncol=2, fontsize=8, frameon=False)
    desc = (f"Brain-by-image similarity ({n_r} brain responses x {n_c} candidate images; diagonal = true "
            f"match). Dots: best match per row. Top-1 hits: {n_hit}/{n_r} ({format_percent(n_hit / n_r)}; chance "
            f"{format_percent(1 / n_c)}).")
    set_title(ax, title, desc, fontsize=10)
    return finish_figure(fig, show)
