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

matplotlib (and PIL, MNE) are imported inside the functions: ``import neurodecode.reporting.figures`` is cheap.
"""

from __future__ import annotations

import math
import os
import re
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from neurodecode.utils import atomic_path

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = [
    "HIT_COLOR",
    "MISS_COLOR",
    "plot_ablation",
    "plot_accuracy_vs_k",
    "plot_retrieval_strip",
    "plot_sensor_importance",
    "plot_similarity_matrix",
    "plot_subject_bars",
    "plot_time_resolved",
    "save_figure",
]

#: Frame colour of a correct guess in :func:`plot_retrieval_strip` (green).
HIT_COLOR = "#1a9850"
#: Frame colour of a wrong guess in :func:`plot_retrieval_strip` (red).
MISS_COLOR = "#d73027"
#: Frame colour of the image actually seen (neutral grey).
SEEN_COLOR = "#4d4d4d"
CHANCE_COLOR = "#7f7f7f"
ONSET_COLOR = "#303030"
HIGHLIGHT_COLOR = "#fdb863"

_MINUS = "\N{MINUS SIGN}"


# --------------------------------------------------------------------------------------------------
# figure plumbing
# --------------------------------------------------------------------------------------------------
def _figure(figsize: tuple[float, float], show: bool) -> Figure:
    """A constrained-layout figure: pyplot-managed only when it is going to be shown."""
    if show:
        import matplotlib.pyplot as plt

        return plt.figure(figsize=figsize, layout="constrained")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, layout="constrained")
    FigureCanvasAgg(fig)  # attaches itself to the figure; no pyplot state, no display needed
    return fig


def _finish(fig: Figure, show: bool) -> Figure:
    if show:
        import matplotlib.pyplot as plt

        plt.show()
    return fig


def _wrap(text: str, width_in: float, fontsize: float) -> str:
    """Wrap each line of ``text`` so that it fits ``width_in`` inches at ``fontsize`` points."""
    n_chars = max(20, int(width_in * 72 / (0.6 * fontsize)))
    return "\n".join(textwrap.fill(line, n_chars) if line else line for line in text.split("\n"))


def _title_text(title: str | None, description: str) -> str:
    return f"{title}\n{description}" if title else description


def _set_title(ax: Axes, title: str | None, description: str, *, fontsize: float = 10) -> None:
    width = ax.figure.get_figwidth()
    ax.set_title(_wrap(_title_text(title, description), width * 0.95, fontsize), fontsize=fontsize)


def _pct(x: float) -> str:
    """A fraction as a percentage with sensible precision (0.1234 -> '12.3%', 0.002 -> '0.2%')."""
    if not np.isfinite(x):
        return "n/a"
    v = 100 * x
    if v == 0 or abs(v) >= 10:
        return f"{v:.1f}%"
    return f"{v:.2g}%" if abs(v) < 1 else f"{v:.1f}%"


def _num(x: float) -> str:
    return f"{x:.3g}".replace("-", _MINUS)


def _signed(x: float) -> str:
    return ("+" if x >= 0 else _MINUS) + f"{abs(x):.3g}"


# --------------------------------------------------------------------------------------------------
# input validation (name the argument, what was expected and what was given)
# --------------------------------------------------------------------------------------------------
def _array(x: Any, name: str, *, ndim: int | None = None, length: int | None = None,
           allow_nan: bool = False, length_of: str = "") -> np.ndarray:
    try:
        arr = np.asarray(x, dtype=float)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} must be numeric (an array or a list of numbers); could not convert it: "
                         f"{err}") from None
    if ndim is not None and arr.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got an array of shape {arr.shape}.")
    if length is not None and arr.shape[0] != length:
        raise ValueError(f"{name} has {arr.shape[0]} values but {length_of or 'the other inputs'} "
                         f"has {length}; give one value per entry.")
    bad = ~np.isfinite(arr) if not allow_nan else np.isinf(arr)
    if bad.any():
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        what = "Inf" if allow_nan else "NaN or Inf"
        raise ValueError(f"{name} contains {int(bad.sum())} {what} value(s) (first at index {first}).")
    return arr


def _names(x: Any, name: str) -> list[str]:
    if isinstance(x, str) or not isinstance(x, Sequence | np.ndarray):
        raise ValueError(f"{name} must be a list of names, got {type(x).__name__}.")
    return [str(v) for v in x]


def _per_curve(arg: Any, curves: Sequence[str], name: str, n: int, *, dtype: type = float,
               allow_nan: bool = True) -> dict[str, np.ndarray]:
    """Normalise an optional per-curve argument (array for a single curve, dict name -> array)."""
    if arg is None:
        return {}
    if isinstance(arg, Mapping):
        unknown = [k for k in arg if k not in curves]
        if unknown:
            raise ValueError(f"{name} has curve name(s) {unknown} that are not in scores ({list(curves)}).")
        items = dict(arg)
    else:
        if len(curves) != 1:
            raise ValueError(f"scores holds {len(curves)} curves ({list(curves)}), so {name} must be a dict "
                             f"name -> array with the same names, not a single array.")
        items = {curves[0]: arg}
    out = {}
    for k, v in items.items():
        if dtype is bool:
            a = np.asarray(v)
            if a.ndim != 1 or a.shape[0] != n:
                raise ValueError(f"{name}[{k!r}] must be a 1-D boolean mask with one value per time point "
                                 f"({n}), got shape {a.shape}.")
            out[k] = a.astype(bool)
        else:
            out[k] = _array(v, f"{name}[{k!r}]", ndim=1, length=n, allow_nan=allow_nan, length_of="times")
    return out


# --------------------------------------------------------------------------------------------------
# images
# --------------------------------------------------------------------------------------------------
def _to_rgb(image: Any, what: str) -> np.ndarray:
    """Any supported image (array, PIL image, file path) as an ``(H, W, 3)`` uint8 array."""
    from PIL import Image

    if isinstance(image, str | os.PathLike):
        path = Path(image)
        if not path.is_file():
            raise ValueError(f"{what}: image file {str(path)!r} does not exist; give an existing file, a PIL "
                             f"image or an (H, W, 3) array.")
        try:
            with Image.open(path) as im:
                return np.asarray(im.convert("RGB"))
        except OSError as err:
            raise ValueError(f"{what}: {str(path)!r} is not an image PIL can read ({err}).") from None
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"))
    arr = np.asarray(image)
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise ValueError(f"{what}: expected an image (array, PIL image or file path), got {type(image).__name__}.")
    if arr.ndim == 3 and arr.shape[-1] not in (1, 3, 4) and arr.shape[0] in (1, 3, 4):
        raise ValueError(f"{what}: image of shape {arr.shape} looks channel-first; give (H, W, 3) arrays "
                         f"(e.g. np.moveaxis(image, 0, -1)).")
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[-1] in (3, 4))) or min(arr.shape[:2]) < 1:
        raise ValueError(f"{what}: expected an image of shape (H, W), (H, W, 3) or (H, W, 4), "
                         f"got shape {arr.shape}.")
    if arr.dtype == np.uint8:
        out = arr
    elif np.issubdtype(arr.dtype, np.floating) or arr.dtype == bool:
        arr = arr.astype(float)
        if not np.isfinite(arr).all():
            raise ValueError(f"{what}: float image contains NaN or Inf.")
        lo, hi = float(arr.min()), float(arr.max())
        if lo < -1e-3 or hi > 1 + 1e-3:
            raise ValueError(f"{what}: float images must hold values in [0, 1], got [{lo:.3g}, {hi:.3g}]; "
                             f"divide 0-255 images by 255 or give uint8 arrays.")
        out = np.round(np.clip(arr, 0, 1) * 255).astype(np.uint8)
    else:  # other integer types: must already be 0..255
        lo, hi = int(arr.min()), int(arr.max())
        if lo < 0 or hi > 255:
            raise ValueError(f"{what}: integer images must hold values in 0..255, got {lo}..{hi}.")
        out = arr.astype(np.uint8)
    if out.ndim == 2:
        out = np.repeat(out[..., None], 3, axis=-1)
    elif out.shape[-1] == 4:  # composite on white
        a = out[..., 3:4].astype(float) / 255
        out = np.round(out[..., :3] * a + 255 * (1 - a)).astype(np.uint8)
    return out


def _thumbnail(image: Any, size: int, what: str) -> np.ndarray:
    """A ``size x size`` RGB thumbnail; the aspect ratio is kept and the rest padded with white."""
    from PIL import Image, ImageOps

    rgb = _to_rgb(image, what)
    im = Image.fromarray(np.ascontiguousarray(rgb), mode="RGB")
    return np.asarray(ImageOps.pad(im, (size, size), method=Image.Resampling.LANCZOS, color=(255, 255, 255)))


def _short(label: str, n: int = 16) -> str:
    label = str(label)
    return label if len(label) <= n else label[: n - 1] + "\N{HORIZONTAL ELLIPSIS}"


def _frame(ax: Axes, color: str, width: float) -> None:
    """Hide the ticks and draw the axes' spines as a coloured frame around the image."""
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(True)
        spine.set_edgecolor(color)
        spine.set_linewidth(width)


# --------------------------------------------------------------------------------------------------
# 1. retrieval strip
# --------------------------------------------------------------------------------------------------
def plot_retrieval_strip(seen_images: Sequence[Any], guess_images: Sequence[Sequence[Any]], hits: Any, *,
                         seen_labels: Sequence[str] | None = None,
                         guess_labels: Sequence[Sequence[str]] | None = None,
                         scores: Any = None, n_rows: int = 8, n_candidates: int | None = None,
                         thumbnail_size: int = 96, title: str | None = None, show: bool = False) -> Figure:
    """Show, for each query, the image actually seen followed by the model's top-k guesses.

    Each row is one query (one brain response): first the image the person saw (grey frame), then the
    ``k`` candidate images the decoder ranked highest, best first, framed in green when the guess is
    correct and in red otherwise (a check mark or cross is added to the label for readers who do not
    tell green from red).

    Parameters
    ----------
    seen_images : sequence of images, length n_queries
        The image seen for each query. An image is an ``(H, W, 3)`` uint8 array, an ``(H, W, 3)`` float
        array in [0, 1] (``(H, W)`` grey and ``(H, W, 4)`` RGBA are accepted too), a PIL image or a path to
        an image file. Images are resized to ``thumbnail_size`` pixels, keeping their aspect ratio.
    guess_images : sequence of sequences of images, shape (n_queries, k)
        The top-k guesses of each query, in rank order (best first). Every row has the same ``k``.
    hits : array of bool, shape (n_queries, k)
        ``hits[i, j]`` is True when guess ``j`` of query ``i`` is correct (the seen image, or an image of
        the seen concept, as the protocol says).
    seen_labels : sequence of str, length n_queries | None
        Names shown under the seen images (e.g. the concept).
    guess_labels : sequence of sequences of str, shape (n_queries, k) | None
        Names shown under the guesses.
    scores : array of float, shape (n_queries, k) | None
        Similarity of each guess, shown under its thumbnail.
    n_rows : int
        Show the first ``n_rows`` queries (fewer when there are fewer queries).
    n_candidates : int | None
        Size of the candidate set the guesses were drawn from; when given, the title states the chance
        levels ``1 / n_candidates`` (top-1) and ``k / n_candidates`` (top-k).
    thumbnail_size : int
        Side of the square thumbnails in pixels.
    title : str | None
        Headline put above the automatic description (e.g. data set, subject and model).
    show : bool
        Call ``plt.show()``.

    Returns
    -------
    fig : matplotlib.figure.Figure
        The figure: ``n_shown * (1 + k)`` image axes, row-major, the seen image first in each row.
    """
    seen = list(seen_images)
    n_q = len(seen)
    if n_q == 0:
        raise ValueError("seen_images is empty; give at least one query.")
    guesses = [list(row) for row in guess_images]
    if len(guesses) != n_q:
        raise ValueError(f"guess_images has {len(guesses)} rows but seen_images has {n_q}; give one row of "
                         f"guesses per seen image.")
    k = len(guesses[0])
    if k == 0 or any(len(r) != k for r in guesses):
        raise ValueError(f"every row of guess_images must hold the same number k >= 1 of images; got row "
                         f"lengths {sorted({len(r) for r in guesses})}.")
    hit = np.asarray(hits)
    if hit.shape != (n_q, k):
        raise ValueError(f"hits must have shape (n_queries, k) = ({n_q}, {k}) like guess_images, got {hit.shape}.")
    if hit.dtype != bool:
        if not np.isin(hit, (0, 1)).all():
            raise ValueError("hits must be boolean (True where the guess is correct).")
        hit = hit.astype(bool)
    if seen_labels is not None:
        seen_labels = _names(seen_labels, "seen_labels")
        if len(seen_labels) != n_q:
            raise ValueError(f"seen_labels has {len(seen_labels)} names but seen_images has {n_q}.")
    if guess_labels is not None:
        guess_labels = [_names(r, "guess_labels[i]") for r in guess_labels]
        if len(guess_labels) != n_q or any(len(r) != k for r in guess_labels):
            raise ValueError(f"guess_labels must have shape (n_queries, k) = ({n_q}, {k}) like guess_images.")
    sc = None
    if scores is not None:
        sc = _array(scores, "scores", ndim=2, allow_nan=True)
        if sc.shape != (n_q, k):
            raise ValueError(f"scores must have shape (n_queries, k) = ({n_q}, {k}), got {sc.shape}.")
    if int(n_rows) < 1:
        raise ValueError(f"n_rows must be >= 1, got {n_rows}.")
    if int(thumbnail_size) < 8:
        raise ValueError(f"thumbnail_size must be >= 8 pixels, got {thumbnail_size}.")
    if n_candidates is not None and int(n_candidates) < k:
        raise ValueError(f"n_candidates ({n_candidates}) cannot be smaller than the number of guesses k ({k}).")
    n = min(int(n_rows), n_q)

    n_label_lines = int(seen_labels is not None or guess_labels is not None) + int(sc is not None)
    thumb_in = 1.1
    label_in = 0.17 * n_label_lines + 0.06
    desc = (f"Top-{k} retrieval: each row shows the image seen (left) and the decoder's {k} best-ranked "
            f"candidates, best first; green frame = correct, red = wrong. Rows shown: {n} of {n_q}; "
            f"correct at top-1: {int(hit[:n, 0].sum())}/{n}, within top-{k}: {int(hit[:n].any(1).sum())}/{n}")
    if n_candidates is not None:
        desc += (f" (chance {_pct(1 / n_candidates)} top-1, {_pct(min(k, n_candidates) / n_candidates)} "
                 f"top-{k} among {int(n_candidates)} candidates)")
    desc += "."
    width = (1 + k) * thumb_in + 0.5
    text = _wrap(_title_text(title, desc), width * 0.95, 9)
    title_in = 0.17 * (text.count("\n") + 1) + 0.45
    fig = _figure((width, n * (thumb_in + label_in) + title_in), show)
    outer = fig.add_gridspec(1, 2, width_ratios=(1, k), wspace=0.06)
    left = outer[0].subgridspec(n, 1)
    right = outer[1].subgridspec(n, k)
    for i in range(n):
        ax = fig.add_subplot(left[i, 0])
        ax.imshow(_thumbnail(seen[i], thumbnail_size, f"seen_images[{i}]"), interpolation="antialiased")
        _frame(ax, SEEN_COLOR, 1.5)
        lines = []
        if seen_labels is not None:
            lines.append(_short(seen_labels[i], 18))
        elif guess_labels is not None:
            lines.append("")
        if sc is not None:
            lines.append("")
        if lines:
            ax.set_xlabel("\n".join(lines), fontsize=7.5, labelpad=2)
        if i == 0:
            ax.set_title("seen", fontsize=9)
        for j in range(k):
            ax = fig.add_subplot(right[i, j])
            ax.imshow(_thumbnail(guesses[i][j], thumbnail_size, f"guess_images[{i}][{j}]"),
                      interpolation="antialiased")
            ok = bool(hit[i, j])
            _frame(ax, HIT_COLOR if ok else MISS_COLOR, 4.0)
            mark = "\N{CHECK MARK}" if ok else "\N{BALLOT X}"
            lines = []
            if guess_labels is not None:
                lines.append(f"{mark} {_short(guess_labels[i][j], 14)}")
            elif seen_labels is not None:
                lines.append(mark)
            if sc is not None:
                lines.append(f"{mark} {_num(sc[i, j])}" if not lines else _num(sc[i, j]))
            if lines:
                ax.set_xlabel("\n".join(lines), fontsize=7.5, labelpad=2,
                              color=HIT_COLOR if ok else "black")
            if i == 0:
                ax.set_title(f"guess {j + 1}", fontsize=9)
    fig.suptitle(text, fontsize=9)
    return _finish(fig, show)


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

    sim = _array(similarity, "similarity", ndim=2)
    n_r, n_c = sim.shape
    if n_r == 0 or n_c == 0:
        raise ValueError(f"similarity is empty (shape {sim.shape}).")
    if n_r > n_c:
        raise ValueError(f"similarity has {n_r} rows (brain responses) but only {n_c} columns (images); the "
                         f"true image of row i must be column i, so give at least as many columns as rows "
                         f"(transpose it if the axes are swapped).")
    if labels is not None:
        labels = _names(labels, "labels")
        if len(labels) != n_c:
            raise ValueError(f"labels has {len(labels)} names but similarity has {n_c} columns (images).")
    best = np.argmax(sim, axis=1)
    rows = np.arange(n_r)
    is_hit = best == rows
    n_hit = int(is_hit.sum())

    side = float(np.clip(4.0 + n_c / 40, 5.0, 8.0))
    fig = _figure((side + 1.3, side * max(n_r / n_c, 0.35) + 1.6), show)
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
        ax.set_xticks(np.arange(n_c), [_short(s, 18) for s in labels], rotation=90, fontsize=fs)
        ax.set_yticks(rows, [_short(s, 18) for s in labels[:n_r]], fontsize=fs)
    handles = [Line2D([], [], ls="", marker="o", mfc="white", mec="black", label="best match is the true image"),
               Line2D([], [], ls="", marker="o", mfc=MISS_COLOR, mec="white", label="best match is another image")]
    fig.legend(handles=handles, loc="outside lower center", ncol=2, fontsize=8, frameon=False)
    desc = (f"Brain-by-image similarity ({n_r} brain responses x {n_c} candidate images; diagonal = true "
            f"match). Dots: best match per row. Top-1 hits: {n_hit}/{n_r} ({_pct(n_hit / n_r)}; chance "
            f"{_pct(1 / n_c)}).")
    _set_title(ax, title, desc, fontsize=10)
    return _finish(fig, show)


# --------------------------------------------------------------------------------------------------
# 3. accuracy vs k
# --------------------------------------------------------------------------------------------------
def _top_of(name: str) -> int | None:
    m = re.search(r"top[-_ ]?(\d+)", name, flags=re.IGNORECASE)
    return int(m.group(1)) if m else None


def plot_accuracy_vs_k(ks: Sequence[int], accuracies: Mapping[str, Sequence[float]], *,
                       chance: bool = True, ci: Mapping[str, tuple[Any, Any]] | None = None,
                       title: str | None = None, show: bool = False) -> Figure:
    """Plot k-way retrieval accuracy against the number of candidates k, with chance curves.

    Parameters
    ----------
    ks : sequence of int
        The numbers of candidates (the k of k-way retrieval), e.g. ``(2, 4, 10, 50, 100, 200)``.
    accuracies : dict of str to sequence of float
        One curve per name, one fraction in [0, 1] per k (NaN leaves a gap, e.g. where k was too large
        for the test set). A name containing ``top-n`` (e.g. ``"top-5"``, ``"ATM top-1"``) is compared
        with the chance level of top-n accuracy.
    chance : bool
        Draw the chance curves ``min(n, k) / k`` (dashed) for every ``top-n`` in the curve names
        (``1 / k`` when no name says).
    ci : dict of str to (array, array) | None
        Confidence interval ``(low, high)`` per curve name, one value per k, drawn as error bars.
    title : str | None
        Headline put above the automatic description (data set, subject, model).
    show : bool
        Call ``plt.show()``.

    Returns
    -------
    fig : matplotlib.figure.Figure
        One axes with a log-scaled x axis whose ticks are ``ks``.
    """
    from matplotlib.ticker import FixedLocator, NullLocator, PercentFormatter

    k = _array(ks, "ks", ndim=1)
    if k.size == 0:
        raise ValueError("ks is empty; give at least one k.")
    if (k < 1).any() or (k != np.round(k)).any():
        raise ValueError(f"ks must be positive integers (numbers of candidates), got {k.tolist()}.")
    if not isinstance(accuracies, Mapping) or not accuracies:
        raise ValueError("accuracies must be a non-empty dict name -> one accuracy per k, e.g. "
                         "{'top-1': [...], 'top-5': [...]}.")
    curves = {str(n): _array(v, f"accuracies[{n!r}]", ndim=1, length=k.size, allow_nan=True, length_of="ks")
              for n, v in accuracies.items()}
    for n, v in curves.items():
        finite = v[np.isfinite(v)]
        if finite.size and (finite.min() < 0 or finite.max() > 1):
            raise ValueError(f"accuracies[{n!r}] must be fractions in [0, 1], got values in "
                             f"[{finite.min():.3g}, {finite.max():.3g}]; divide percentages by 100.")
    bands = {}
    for n, pair in (ci or {}).items():
        if str(n) not in curves:
            raise ValueError(f"ci has curve name {n!r} that is not in accuracies ({list(curves)}).")
        if len(pair) != 2:
            raise ValueError(f"ci[{n!r}] must be a pair (low, high) of arrays with one value per k.")
        lo = _array(pair[0], f"ci[{n!r}] low", ndim=1, length=k.size, allow_nan=True, length_of="ks")
        hi = _array(pair[1], f"ci[{n!r}] high", ndim=1, length=k.size, allow_nan=True, length_of="ks")
        bands[str(n)] = (lo, hi)

    order = np.argsort(k)
    k = k[order]
    fig = _figure((6.4, 4.6), show)
    ax = fig.add_subplot()
    markers = "osD^v<>ph*"
    for idx, (n, v) in enumerate(curves.items()):
        v = v[order]
        color = f"C{idx % 10}"
        ax.plot(k, v, marker=markers[idx % len(markers)], color=color, lw=1.8, ms=5, label=n, zorder=3)
        if n in bands:
            lo, hi = bands[n][0][order], bands[n][1][order]
            err = np.vstack([np.clip(v - lo, 0, None), np.clip(hi - v, 0, None)])
            ax.errorbar(k, v, yerr=err, fmt="none", ecolor=color, elinewidth=1.2, capsize=3, zorder=2)
    n_chance = 0
    if chance:
        tops = sorted({t for t in (_top_of(n) for n in curves) if t is not None}) or [1]
        kk = np.unique(np.concatenate([k, np.geomspace(k.min(), k.max(), 200)])) if k.size > 1 else k
        styles = ["--", ":", "-.", (0, (5, 1, 1, 1))]
        for i, t in enumerate(tops):
            expr = "1/k" if t == 1 else f"min({t}, k)/k"
            ax.plot(kk, np.minimum(t, kk) / kk, ls=styles[i % len(styles)], color=CHANCE_COLOR, lw=1.2,
                    label=f"chance top-{t} ({expr})", zorder=1)
            n_chance += 1
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(FixedLocator(k))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xticks(k, [str(int(x)) for x in k])
    if k.size > 1:
        ax.set_xlim(k.min() / 1.15, k.max() * 1.15)
    ax.set_ylim(0, 1.02)
    ax.yaxis.set_major_formatter(PercentFormatter(xmax=1))
    ax.set_xlabel("k (number of candidates, log scale)")
    ax.set_ylabel("retrieval accuracy")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    desc = "Zero-shot k-way retrieval accuracy vs number of candidates k"
    desc += " (dashed/dotted: chance)." if n_chance else "."
    if bands:
        desc += " Error bars: confidence interval."
    _set_title(ax, title, desc)
    return _finish(fig, show)


# --------------------------------------------------------------------------------------------------
# 4. time-resolved decoding
# --------------------------------------------------------------------------------------------------
def _highlights(highlight: Any) -> list[tuple[float, float, str]]:
    if highlight is None:
        return []
    items = [highlight] if (len(highlight) in (2, 3) and np.isscalar(highlight[0])) else list(highlight)
    out = []
    for h in items:
        if len(h) not in (2, 3) or not all(np.isscalar(x) for x in h[:2]):
            raise ValueError(f"highlight must be (start, end) or (start, end, label) in seconds, or a list of "
                             f"them, e.g. (0.13, 0.2, 'N170'); got {h!r}.")
        t0, t1 = float(h[0]), float(h[1])
        if not t1 > t0:
            raise ValueError(f"highlight window {h!r} must have end > start (in seconds).")
        out.append((t0, t1, str(h[2]) if len(h) == 3 else ""))
    return out


def _runs(t: np.ndarray, mask: np.ndarray) -> list[tuple[float, float]]:
    """``(start, width)`` of each run of True in ``mask``; a time point covers half a step either side."""
    edges = np.r_[t[0] - (t[1] - t[0]) / 2, (t[1:] + t[:-1]) / 2, t[-1] + (t[-1] - t[-2]) / 2]
    padded = np.r_[False, mask, False].astype(int)
    starts = np.flatnonzero(np.diff(padded) == 1)
    stops = np.flatnonzero(np.diff(padded) == -1)  # one past the last True
    return [(float(edges[a]), float(edges[b] - edges[a])) for a, b in zip(starts, stops, strict=True)]


def plot_time_resolved(times: Any, scores: Any, *, ci_low: Any = None, ci_high: Any = None,
                       chance: float | None = None, ylabel: str = "accuracy", onset: float | None = 0.0,
                       highlight: Any = None, significant: Any = None, title: str | None = None,
                       show: bool = False) -> Figure:
    """Plot a decoding score against time, with confidence band, chance, onset and significant windows.

    Parameters
    ----------
    times : array, shape (n_times,)
        Centre of each time window in seconds relative to stimulus onset, increasing.
    scores : array, shape (n_times,) | dict of str to array
        The score per window, or several curves (e.g. per subject or per model) as a dict. NaN leaves
        a gap.
    ci_low, ci_high : array | dict of str to array | None
        Lower and upper confidence bounds, drawn as a shaded band (a dict when ``scores`` is one).
    chance : float | None
        Chance level, drawn as a dashed horizontal line.
    ylabel : str
        What the score is (e.g. ``"top-1 accuracy (200-way)"``).
    onset : float | None
        Stimulus onset in seconds, drawn as a vertical line (``None``: no line).
    highlight : tuple | list of tuples | None
        Window(s) to shade, ``(start, end)`` or ``(start, end, label)`` in seconds, e.g.
        ``(0.13, 0.2, "N170")``.
    significant : array of bool, shape (n_times,) | dict of str to array | None
        Time points where the score differs significantly from chance, drawn as a bar under the curves
        (one bar per curve, in its colour).
    title : str | None
        Headline put above the automatic description (data set, subject, model).
    show : bool
        Call ``plt.show()``.

    Returns
    -------
    fig : matplotlib.figure.Figure
        One axes (seconds on the bottom axis) plus a secondary top axis in milliseconds.
    """
    t = _array(times, "times", ndim=1)
    n = t.size
    if n < 2:
        raise ValueError(f"times needs at least 2 time points, got {n}.")
    if (np.diff(t) <= 0).any():
        raise ValueError("times must be strictly increasing (seconds relative to stimulus onset).")
    if isinstance(scores, Mapping):
        if not scores:
            raise ValueError("scores is an empty dict; give at least one curve.")
        curves = {str(k): _array(v, f"scores[{k!r}]", ndim=1, length=n, allow_nan=True, length_of="times")
                  for k, v in scores.items()}
    else:
        curves = {ylabel: _array(scores, "scores", ndim=1, length=n, allow_nan=True, length_of="times")}
    names = list(curves)
    lows = _per_curve(ci_low, names, "ci_low", n)
    highs = _per_curve(ci_high, names, "ci_high", n)
    if set(lows) != set(highs):
        raise ValueError("ci_low and ci_high must be given together, for the same curves.")
    sig = _per_curve(significant, names, "significant", n, dtype=bool)
    spans = _highlights(highlight)
    if chance is not None and not np.isfinite(chance):
        raise ValueError(f"chance must be a finite number, got {chance}.")

    fig = _figure((7.2, 4.4), show)
    ax = fig.add_subplot()
    many = len(curves) > 6
    for i, (name, y) in enumerate(curves.items()):
        color = f"C{i % 10}"
        if name in lows:
            ax.fill_between(t, lows[name], highs[name], color=color, alpha=0.2, lw=0)
        label = name
        if np.isfinite(y).any():
            p = int(np.nanargmax(y))
            label = f"{name} (peak {_num(y[p])} at {t[p] * 1000:.0f} ms)"
        ax.plot(t, y, color=color, lw=1.2 if many else 1.8, label=label, zorder=3)
    values = [v for d in (curves, lows, highs) for v in d.values()]
    finite = np.concatenate([v[np.isfinite(v)] for v in values] + [np.array([chance] if chance is not None else [])])
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    span = hi - lo if hi > lo else max(abs(hi), 1.0) * 0.1
    bottom, top = lo - 0.05 * span, hi + 0.12 * span
    if sig:
        row_h = 0.045 * span
        bottom = lo - 0.06 * span - row_h * 1.5 * len(sig)
        for r, (name, mask) in enumerate(sig.items()):
            y0 = lo - 0.06 * span - row_h * 1.5 * (r + 1) + 0.25 * row_h
            color = f"C{names.index(name) % 10}"
            ax.broken_barh(_runs(t, mask), (y0, row_h), color=color, lw=0,
                           label="significant" if len(sig) == 1 else None)
    ax.set_ylim(bottom, top)
    if sig:  # no value ticks beside the significance bars (that space holds no data)
        ax.set_yticks([y for y in ax.get_yticks() if lo - 0.02 * span <= y <= top])
    ax.set_xlim(t[0], t[-1])
    if chance is not None:
        ax.axhline(chance, color=CHANCE_COLOR, ls="--", lw=1.2, label=f"chance ({_num(chance)})", zorder=2)
    if onset is not None:
        ax.axvline(onset, color=ONSET_COLOR, lw=1.0, label="stimulus onset", zorder=2)
    for t0, t1, lab in spans:
        ax.axvspan(t0, t1, color=HIGHLIGHT_COLOR, alpha=0.3, lw=0, zorder=0)
        if lab:
            ax.text((t0 + t1) / 2, 0.98, lab, transform=ax.get_xaxis_transform(), ha="center", va="top",
                    fontsize=8, color="#8c510a")
    ax.set_xlabel("time after stimulus onset (s)")
    ax.set_ylabel(ylabel)
    sec = ax.secondary_xaxis("top", functions=(lambda s: np.asarray(s) * 1000, lambda ms: np.asarray(ms) / 1000))
    sec.set_xlabel("time (ms)", fontsize=9)
    sec.tick_params(labelsize=8)
    ax.grid(True, alpha=0.25)
    handles, labels = ax.get_legend_handles_labels()
    if len(sig) > 1:
        from matplotlib.patches import Patch

        handles.append(Patch(color=CHANCE_COLOR))
        labels.append("significant (bar in the curve's colour)")
    fig.legend(handles, labels, loc="outside lower center", ncol=min(3 if many else 2, len(handles)),
               fontsize=7 if many else 8, frameon=False)
    desc = f"Time-resolved decoding: {ylabel} per time window"
    parts = []
    if lows:
        parts.append("shaded: confidence band")
    if chance is not None:
        parts.append(f"dashed: chance {_num(chance)}")
    if sig:
        parts.append("bars below: significant time points")
    for t0, t1, lab in spans:
        parts.append(f"{lab + ' ' if lab else ''}window {t0 * 1000:.0f}-{t1 * 1000:.0f} ms shaded")
    desc += (" (" + "; ".join(parts) + ")." if parts else ".")
    _set_title(ax, title, desc)
    return _finish(fig, show)


# --------------------------------------------------------------------------------------------------
# 5. per-subject bars
# --------------------------------------------------------------------------------------------------
def _grouped(values: Any, n: int, groups: Sequence[str] | None, name: str, length_of: str,
             *, allow_2row: bool = False) -> dict[str, np.ndarray]:
    """Normalise bar values to dict group -> array of length n (errors may be (2, n) asymmetric)."""
    def one(v: Any, label: str) -> np.ndarray:
        a = _array(v, label, allow_nan=True)
        if a.ndim == 1 and a.shape[0] == n:
            return a
        if allow_2row and a.shape == (2, n):
            return a
        raise ValueError(f"{label} must have one value per {length_of} ({n})"
                         f"{' or shape (2, ' + str(n) + ') for (lower, upper) errors' if allow_2row else ''}, "
                         f"got shape {a.shape}.")

    if isinstance(values, Mapping):
        if not values:
            raise ValueError(f"{name} is an empty dict.")
        out = {str(g): one(v, f"{name}[{g!r}]") for g, v in values.items()}
        if groups is not None:
            missing = [g for g in groups if g not in out]
            if missing:
                raise ValueError(f"groups {missing} are not keys of {name} ({list(out)}).")
            out = {g: out[g] for g in groups}
        return out
    a = _array(values, name, allow_nan=True)
    if a.ndim == 1 or (allow_2row and a.shape == (2, n) and groups is None):
        return {"": one(a, name)}
    if a.ndim == 2 and a.shape[1] == n:
        if groups is None or len(groups) != a.shape[0]:
            raise ValueError(f"{name} has shape {a.shape} (groups x {length_of}s); give groups= with "
                             f"{a.shape[0]} names, or pass a dict group -> values.")
        return {str(g): a[i] for i, g in enumerate(groups)}
    raise ValueError(f"{name} must have one value per {length_of} ({n}), shape (n_groups, {n}) or be a dict "
                     f"group -> values; got shape {a.shape}.")


def _yerr(err: np.ndarray | None) -> np.ndarray | None:
    if err is None:
        return None
    if (err[np.isfinite(err)] < 0).any():
        raise ValueError("errors must be non-negative (half-widths, or (lower, upper) distances).")
    return err


def plot_subject_bars(subjects: Sequence[str], values: Any, *, errors: Any = None, chance: float | None = None,
                      ylabel: str = "top-1 accuracy", groups: Sequence[str] | None = None,
                      title: str | None = None, show: bool = False) -> Figure:
    """Draw one bar per subject (grouped bars for several conditions) with the mean +- sd across subjects.

    Parameters
    ----------
    subjects : sequence of str
        Subject names, one per bar (group).
    values : array, shape (n_subjects,) | array, shape (n_groups, n_subjects) | dict of str to array
        The score of each subject; several conditions side by side (e.g. ``{"intra-subject": [...],
        "leave-one-subject-out": [...]}``) as a dict or a 2-D array with ``groups``. NaN leaves a bar out.
    errors : same structure as ``values`` | None
        Error bar half-widths (e.g. sd over seeds or half the confidence interval). With one group an
        array of shape ``(2, n_subjects)`` gives (lower, upper) distances; with several groups an array
        is ``(n_groups, n_subjects)`` and a dict may give errors for some groups only.
    chance : float | None
        Chance level, drawn as a dashed line.
    ylabel : str
        What the bars show.
    groups : sequence of str | None
        Names of the rows of a 2-D ``values``; with a dict, selects and orders its keys.
    title : str | None
        Headline put above the automatic description (data set, model).
    show : bool
        Call ``plt.show()``.

    Returns
    -------
    fig : matplotlib.figure.Figure
        One axes holding ``n_groups * (n_subjects + 1)`` bars: the subjects, then one hatched bar per
        group at the right for the mean across subjects, with the standard deviation (ddof=1) as its
        error bar.
    """
    subj = _names(subjects, "subjects")
    n = len(subj)
    if n == 0:
        raise ValueError("subjects is empty.")
    vals = _grouped(values, n, groups, "values", "subject")
    errs: dict[str, np.ndarray] = {}
    if errors is not None:
        if isinstance(errors, Mapping):
            errs = _grouped(errors, n, None, "errors", "subject", allow_2row=True)
        elif len(vals) == 1:  # one group: (n,) or (2, n)
            errs = {next(iter(vals)): _grouped(errors, n, None, "errors", "subject", allow_2row=True)[""]}
        else:  # several groups: (n_groups, n_subjects), rows in the order of the groups
            errs = _grouped(errors, n, list(vals), "errors", "subject")
        unknown = [g for g in errs if g not in vals]
        if unknown:
            raise ValueError(f"errors has group(s) {unknown} that are not in values ({list(vals)}).")
    if chance is not None and not np.isfinite(chance):
        raise ValueError(f"chance must be a finite number, got {chance}.")

    g = len(vals)
    width = 0.8 / g
    fig = _figure((float(np.clip(0.45 * (n + 1.5) * (0.6 + 0.4 * g) + 1.6, 5.0, 12.0)), 4.6), show)
    ax = fig.add_subplot()
    x = np.arange(n, dtype=float)
    x_mean = n + 0.5
    summary = []
    tops = []
    for i, (name, v) in enumerate(vals.items()):
        off = (i - (g - 1) / 2) * width
        color = f"C{i % 10}"
        finite = v[np.isfinite(v)]
        mean = float(finite.mean()) if finite.size else float("nan")
        sd = float(finite.std(ddof=1)) if finite.size > 1 else 0.0
        label = f"{name}: " if name else ""
        label += f"mean {_num(mean)} \N{PLUS-MINUS SIGN} {_num(sd)} sd (n={finite.size})"
        summary.append(label)
        err = _yerr(errs.get(name))
        ax.bar(x + off, np.nan_to_num(v, nan=0.0), width * 0.95, yerr=err, color=color, capsize=2,
               error_kw={"elinewidth": 1}, label=label)
        bars = ax.bar([x_mean + off], [mean], width * 0.95, yerr=[sd], color=color, hatch="//",
                      edgecolor="white", capsize=3, error_kw={"elinewidth": 1.2})
        for b in bars:
            b.set_gid("mean")
        if g == 1:  # with several groups the legend carries the numbers (the bars are too narrow)
            ax.annotate(f"{_num(mean)}\n\N{PLUS-MINUS SIGN}{_num(sd)}", (x_mean + off, mean + sd), xytext=(0, 2),
                        textcoords="offset points", ha="center", va="bottom", fontsize=7)
        hi = v + (err if err is not None and err.ndim == 1 else (err[1] if err is not None else 0))
        tops.extend([np.nanmax(hi) if np.isfinite(hi).any() else 0.0, mean + sd])
    if chance is not None:
        ax.axhline(chance, color=CHANCE_COLOR, ls="--", lw=1.2, label=f"chance ({_num(chance)})")
    tilt = n > 8 or max(len(s) for s in subj) > 8
    ax.set_xticks(np.r_[x, x_mean], [*subj, "mean\n\N{PLUS-MINUS SIGN} sd"],
                  rotation=45 if tilt else 0, ha="right" if tilt else "center", fontsize=8)
    mean_tick = ax.get_xticklabels()[-1]
    mean_tick.set_rotation(0)
    mean_tick.set_horizontalalignment("center")
    ax.set_xlim(-0.6, x_mean + 0.6)
    top = max([*tops, chance or 0.0])
    ax.set_ylim(0, top * 1.28 if top > 0 else 1)
    ax.set_xlabel("subject")
    ax.set_ylabel(ylabel)
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", framealpha=0.9)
    desc = f"{ylabel[0].upper() + ylabel[1:]} per subject"
    if g > 1:
        desc += " (" + " vs ".join(vals) + ")"
    desc += f"; right: mean \N{PLUS-MINUS SIGN} sd across {n} subjects"
    if chance is not None:
        desc += f"; dashed: chance {_num(chance)}"
    desc += "."
    _set_title(ax, title, desc)
    return _finish(fig, show)


# --------------------------------------------------------------------------------------------------
# 6. region ablation
# --------------------------------------------------------------------------------------------------
def plot_ablation(names: Sequence[str], baseline: float, values: Any, *, errors: Any = None,
                  chance: float | None = None, ylabel: str = "top-1 accuracy", title: str | None = None,
                  show: bool = False) -> Figure:
    """Show the score after removing each channel region, against the full model, sorted by drop.

    Parameters
    ----------
    names : sequence of str
        The regions (or channel sets) removed, e.g. ``("frontal", "central", "temporal", "parietal",
        "occipital")``.
    baseline : float
        The score of the model with all channels, drawn as a solid horizontal line.
    values : array, shape (n_regions,)
        The score with each region removed.
    errors : array, shape (n_regions,) | None
        Error bar half-widths.
    chance : float | None
        Chance level, drawn as a dashed line.
    ylabel : str
        What the score is.
    title : str | None
        Headline put above the automatic description (data set, subject, model).
    show : bool
        Call ``plt.show()``.

    Returns
    -------
    fig : matplotlib.figure.Figure
        One axes with one bar per region, the largest drop first; each bar is annotated with its
        change from the baseline.
    """
    labels = _names(names, "names")
    n = len(labels)
    if n == 0:
        raise ValueError("names is empty; give at least one region.")
    v = _array(values, "values", ndim=1, length=n, length_of="names")
    base = float(baseline) if np.isscalar(baseline) else float("nan")
    if not np.isfinite(base):
        raise ValueError(f"baseline must be one finite number (the all-channel score), got {baseline!r}.")
    err = None
    if errors is not None:
        err = _yerr(_array(errors, "errors", ndim=1, length=n, length_of="names"))
    if chance is not None and not np.isfinite(chance):
        raise ValueError(f"chance must be a finite number, got {chance}.")
    order = np.argsort(v - base, kind="stable")  # most negative change (largest drop) first
    v = v[order]
    labels = [labels[i] for i in order]
    if err is not None:
        err = err[order]

    fig = _figure((max(5.0, 0.8 * n + 2.2), 4.4), show)
    ax = fig.add_subplot()
    x = np.arange(n)
    ax.bar(x, v, 0.65, yerr=err, color="C0", capsize=3, label="region removed")
    ax.axhline(base, color="black", lw=1.5, label=f"all channels ({_num(base)})")
    if chance is not None:
        ax.axhline(chance, color=CHANCE_COLOR, ls="--", lw=1.2, label=f"chance ({_num(chance)})")
    ref = [base, chance or 0.0, *(v + (err if err is not None else 0))]
    top = max(ref)
    low = min(0.0, float(v.min()))
    ax.set_ylim(low, top * 1.08 if top > 0 else 1)
    y_range = ax.get_ylim()[1] - low
    # the change from the baseline is written inside each bar (under its error bar) so that it never
    # collides with the baseline line; bars too short for it get it above instead
    for xi, vi, ei in zip(x, v, err if err is not None else np.zeros(n), strict=True):
        if (vi - ei) - low > 0.1 * y_range:
            ax.annotate(_signed(vi - base), (xi, vi - ei), xytext=(0, -3), textcoords="offset points",
                        ha="center", va="top", fontsize=8, color="white", fontweight="bold")
        else:
            ax.annotate(_signed(vi - base), (xi, max(vi + ei, 0)), xytext=(0, 2), textcoords="offset points",
                        ha="center", va="bottom", fontsize=8)
    tilt = max(len(s) for s in labels) > 9
    ax.set_xticks(x, labels, rotation=30 if tilt else 0, ha="right" if tilt else "center")
    ax.set_xlabel("channel region removed (largest drop first)")
    ax.set_ylabel(ylabel)
    ax.grid(True, axis="y", alpha=0.3)
    handles, leg_labels = ax.get_legend_handles_labels()
    fig.legend(handles, leg_labels, loc="outside lower center", ncol=len(handles), fontsize=8, frameon=False)
    desc = (f"Channel-region ablation: {ylabel} with each region removed, sorted by drop; solid line: all "
            f"channels ({_num(base)}); numbers: change from it")
    if chance is not None:
        desc += f"; dashed: chance {_num(chance)}"
    _set_title(ax, title, desc + ".")
    return _finish(fig, show)


# --------------------------------------------------------------------------------------------------
# 7. sensor importance topomap
# --------------------------------------------------------------------------------------------------
def plot_sensor_importance(info_or_positions: Any, values: Any, *, ch_names: Sequence[str] | None = None,
                           ch_type: str = "eeg", cmap: str = "Reds", cbar_label: str = "importance",
                           n_names: int = 5, title: str | None = None, show: bool = False) -> Figure:
    """Draw per-channel importance as a scalp topography (``mne.viz.plot_topomap``).

    Parameters
    ----------
    info_or_positions : mne.Info | array, shape (n_channels, 2) | sequence of str
        Where the sensors are: an ``mne.Info`` with positions (one value per channel of it), 2-D sensor
        positions, or 10-05 channel names (placed with MNE's ``colin27_1005`` montage).
    values : array, shape (n_channels,)
        Importance of each channel (e.g. the drop in accuracy when it is removed).
    ch_names : sequence of str | None
        Channel names when positions are an array (used to name the most important channels).
    ch_type : str
        Channel type of the ``Info`` to plot (``"eeg"``, ``"mag"``, ``"grad"``).
    cmap : str
        Colour map.
    cbar_label : str
        Label of the colour bar.
    n_names : int
        Name the ``n_names`` most important channels in the title (when names are known).
    title : str | None
        Headline put above the automatic description (data set, subject, model).
    show : bool
        Call ``plt.show()``.

    Returns
    -------
    fig : matplotlib.figure.Figure
        The topography axes and a colour bar axes.
    """
    import mne

    v = _array(values, "values", ndim=1)
    names: list[str] | None = None
    if isinstance(info_or_positions, mne.Info):
        info = info_or_positions
        if len(info.ch_names) != v.size:
            raise ValueError(f"values has {v.size} entries but the Info has {len(info.ch_names)} channels; give "
                             f"one value per channel of the Info (pick the channels first).")
        if not any(ch.get("loc") is not None and np.isfinite(ch["loc"][:3]).all() and np.any(ch["loc"][:3])
                   for ch in info["chs"]):
            raise ValueError("the Info has no sensor positions; set a montage first, e.g. "
                             "info.set_montage('colin27_1005').")
        pos: Any = info
        names = list(info.ch_names)
    elif isinstance(info_or_positions, Sequence) and info_or_positions and \
            all(isinstance(s, str) for s in info_or_positions):
        names = list(info_or_positions)
        if len(names) != v.size:
            raise ValueError(f"values has {v.size} entries but {len(names)} channel names were given.")
        montage = mne.channels.make_standard_montage("colin27_1005")
        missing = [s for s in names if s not in montage.ch_names]
        if missing:
            raise ValueError(f"channel name(s) {missing} have no position in the colin27_1005 montage; give an "
                             f"mne.Info with a montage, or an (n_channels, 2) array of positions.")
        pos = mne.create_info(names, 100.0, "eeg")
        pos.set_montage(montage)
        ch_type = "eeg"
    else:
        pos = _array(info_or_positions, "info_or_positions", ndim=2)
        if pos.shape != (v.size, 2):
            raise ValueError(f"positions must have shape (n_channels, 2) = ({v.size}, 2), got {pos.shape}; "
                             f"project 3-D positions to 2-D (e.g. mne.channels.layout) or pass an mne.Info.")
        if ch_names is not None:
            names = _names(ch_names, "ch_names")
            if len(names) != v.size:
                raise ValueError(f"ch_names has {len(names)} names but values has {v.size} entries.")

    fig = _figure((5.2, 5.0), show)
    ax = fig.add_subplot()
    im, _ = mne.viz.plot_topomap(v, pos, ch_type=ch_type, axes=ax, show=False, cmap=cmap, contours=4,
                                 sensors=True)
    cbar = fig.colorbar(im, ax=ax, shrink=0.75)
    cbar.set_label(cbar_label)
    desc = f"Sensor importance ({cbar_label}) over {v.size} channels"
    if names is not None and n_names > 0:
        best = np.argsort(-v, kind="stable")[: min(n_names, v.size)]
        desc += "; highest: " + ", ".join(f"{names[i]} ({_num(v[i])})" for i in best)
    _set_title(ax, title, desc + ".")
    return _finish(fig, show)


# --------------------------------------------------------------------------------------------------
# 8. saving
# --------------------------------------------------------------------------------------------------
def save_figure(fig: Figure, path: str | os.PathLike, *, dpi: int = 120) -> Path:
    """Write ``fig`` to ``path`` atomically (a complete file or none at all).

    Parameters
    ----------
    fig : matplotlib.figure.Figure
        The figure, e.g. from one of the ``plot_*`` functions.
    path : path-like
        Destination file; its suffix picks the format (``.png``; ``.pdf`` and ``.svg`` work too). Missing
        folders are created.
    dpi : int
        Resolution in dots per inch: a PNG is ``figwidth * dpi`` by ``figheight * dpi`` pixels.

    Returns
    -------
    path : pathlib.Path
        The path written.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if not isinstance(fig, Figure):
        raise ValueError(f"fig must be a matplotlib Figure, got {type(fig).__name__}.")
    path = Path(path)
    fmt = path.suffix.lower().lstrip(".")
    if fig.canvas is None:  # pragma: no cover - every Figure has a canvas since matplotlib 3.1
        FigureCanvasAgg(fig)
    supported = fig.canvas.get_supported_filetypes()
    if fmt not in supported:
        raise ValueError(f"cannot save a figure as {path.name!r}: give a file name ending in one of "
                         f"{', '.join('.' + s for s in sorted(supported))} (e.g. '.png').")
    if not (isinstance(dpi, int | float) and math.isfinite(dpi) and dpi > 0):
        raise ValueError(f"dpi must be a positive number, got {dpi!r}.")
    with atomic_path(path, suffix=path.suffix) as tmp:
        fig.savefig(tmp, dpi=dpi, format=fmt)
    return path
