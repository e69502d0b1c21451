"""Retrieval figures: the strip of seen images and top-k guesses, and accuracy against k."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from neurodecode.reporting.figures.common import (
    CHANCE_COLOR,
    HIT_COLOR,
    MISS_COLOR,
    SEEN_COLOR,
    check_array,
    check_names,
    finish_figure,
    format_number,
    format_percent,
    new_figure,
    set_title,
    shorten,
    title_text,
    wrap_text,
)

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["plot_accuracy_vs_k", "plot_retrieval_strip"]


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
                         n_total: int | None = None, thumbnail_size: int = 96, title: str | None = None, show: bool = False) -> Figure:
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
    n_total : int | None
        How many test images (queries) there are in all, when the queries given are a selection:
        the caption says "Rows shown: 8 of 50 test images".
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
        seen_labels = check_names(seen_labels, "seen_labels")
        if len(seen_labels) != n_q:
            raise ValueError(f"seen_labels has {len(seen_labels)} names but seen_images has {n_q}.")
    if guess_labels is not None:
        guess_labels = [check_names(r, "guess_labels[i]") for r in guess_labels]
        if len(guess_labels) != n_q or any(len(r) != k for r in guess_labels):
            raise ValueError(f"guess_labels must have shape (n_queries, k) = ({n_q}, {k}) like guess_images.")
    sc = None
    if scores is not None:
        sc = check_array(scores, "scores", ndim=2, allow_nan=True)
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
            f"candidates, best first; green frame = correct, red = wrong. Rows shown: {n} of "
            f"{f'{int(n_total)} test images' if n_total is not None else n_q}; "
            f"correct at top-1: {int(hit[:n, 0].sum())}/{n}, within top-{k}: {int(hit[:n].any(1).sum())}/{n}")
    if n_candidates is not None:
        desc += (f" (chance {format_percent(1 / n_candidates)} top-1, {format_percent(min(k, n_candidates) / n_candidates)} "
                 f"top-{k} among {int(n_candidates)} candidates)")
    desc += "."
    width = (1 + k) * thumb_in + 0.5
    text = wrap_text(title_text(title, desc), width * 0.95, 9)
    title_in = 0.17 * (text.count("\n") + 1) + 0.45
    fig = new_figure((width, n * (thumb_in + label_in) + title_in), show)
    outer = fig.add_gridspec(1, 2, width_ratios=(1, k), wspace=0.06)
    left = outer[0].subgridspec(n, 1)
    right = outer[1].subgridspec(n, k)
    for i in range(n):
        ax = fig.add_subplot(left[i, 0])
        ax.imshow(_thumbnail(seen[i], thumbnail_size, f"seen_images[{i}]"), interpolation="antialiased")
        _frame(ax, SEEN_COLOR, 1.5)
        lines = []
        if seen_labels is not None:
            lines.append(shorten(seen_labels[i], 18))
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
                lines.append(f"{mark} {shorten(guess_labels[i][j], 14)}")
            elif seen_labels is not None:
                lines.append(mark)
            if sc is not None:
                lines.append(f"{mark} {format_number(sc[i, j])}" if not lines else format_number(sc[i, j]))
            if lines:
                ax.set_xlabel("\n".join(lines), fontsize=7.5, labelpad=2,
                              color=HIT_COLOR if ok else "black")
            if i == 0:
                ax.set_title(f"guess {j + 1}", fontsize=9)
    fig.suptitle(text, fontsize=9)
    return finish_figure(fig, show)



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

    k = check_array(ks, "ks", ndim=1)
    if k.size == 0:
        raise ValueError("ks is empty; give at least one k.")
    if (k < 1).any() or (k != np.round(k)).any():
        raise ValueError(f"ks must be positive integers (numbers of candidates), got {k.tolist()}.")
    if not isinstance(accuracies, Mapping) or not accuracies:
        raise ValueError("accuracies must be a non-empty dict name -> one accuracy per k, e.g. "
                         "{'top-1': [...], 'top-5': [...]}.")
    curves = {str(n): check_array(v, f"accuracies[{n!r}]", ndim=1, length=k.size, allow_nan=True, length_of="ks")
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
        lo = check_array(pair[0], f"ci[{n!r}] low", ndim=1, length=k.size, allow_nan=True, length_of="ks")
        hi = check_array(pair[1], f"ci[{n!r}] high", ndim=1, length=k.size, allow_nan=True, length_of="ks")
        bands[str(n)] = (lo, hi)

    order = np.argsort(k)
    k = k[order]
    fig = new_figure((6.4, 4.6), show)
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
    set_title(ax, title, desc)
    return finish_figure(fig, show)
