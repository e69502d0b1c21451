"""The reconstruction gallery: per test stimulus, the image seen, its reconstructions, the retrieval top-5.

Each row is one test stimulus: the image the person saw (grey frame), the ``k`` images drawn back
from the brain signal (one per sample, with its seed when given), and, after a gap, the five
stimuli the decoder retrieved first, best first, the seen stimulus outlined in green where it
appears (the others framed in light grey). A row may leave out the retrieval strip.

:func:`plot_gallery` returns the figure (MNE's ``show`` convention, as every figure of
:mod:`neurodecode.reporting.figures`); :func:`gallery_figure` writes it as a PNG.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from neurodecode.reporting.figures.common import (
    HIT_COLOR,
    SEEN_COLOR,
    finish_figure,
    new_figure,
    save_figure,
    shorten,
    title_text,
    wrap_text,
)

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["gallery_figure", "plot_gallery"]

_OTHER_COLOR = "#bdbdbd"


def _rgb(image: Any, what: str) -> np.ndarray:
    """An image (PIL, file, uint8 or [0, 1] array, (3, H, W) tensor) as an (H, W, 3) uint8 array."""
    from PIL import Image

    if isinstance(image, str | os.PathLike):
        try:
            with Image.open(image) as im:
                return np.asarray(im.convert("RGB"))
        except OSError as err:
            raise ValueError(f"{what}: cannot read image {image} ({err}).") from None
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"))
    if hasattr(image, "detach"):  # a torch tensor, channel first
        image = image.detach().cpu().numpy()
        if image.ndim == 3 and image.shape[0] in (1, 3):
            image = np.moveaxis(image, 0, -1)
    arr = np.asarray(image)
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=-1)
    if arr.ndim != 3 or arr.shape[-1] not in (3, 4):
        raise ValueError(f"{what}: expected an (H, W, 3) image, got shape {arr.shape}.")
    arr = arr[..., :3]
    if arr.dtype == np.uint8:
        return arr
    arr = arr.astype(float)
    if not np.isfinite(arr).all() or arr.min() < -1e-3 or arr.max() > 1 + 1e-3:
        raise ValueError(f"{what}: float images must hold values in [0, 1]; give uint8 for 0-255 images.")
    return np.round(np.clip(arr, 0, 1) * 255).astype(np.uint8)


def _thumb(image: Any, size: int, what: str) -> np.ndarray:
    from PIL import Image, ImageOps

    im = Image.fromarray(np.ascontiguousarray(_rgb(image, what)))
    return np.asarray(ImageOps.pad(im, (size, size), method=Image.Resampling.LANCZOS, color=(255, 255, 255)))


def _frame(ax: Axes, color: str, width: float) -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(True)
        spine.set_edgecolor(color)
        spine.set_linewidth(width)


def _check_rows(rows: Sequence[Mapping[str, Any]]) -> tuple[int, int]:
    if not isinstance(rows, Sequence) or not rows:
        raise ValueError("rows is empty; give one dict per test stimulus with 'stimulus_id', 'seen' and 'recons'.")
    for i, r in enumerate(rows):
        if not isinstance(r, Mapping):
            raise ValueError(f"rows[{i}] must be a dict, got {type(r).__name__}.")
        for key in ("seen", "recons"):
            if key not in r:
                raise ValueError(f"rows[{i}] has no {key!r}; each row needs 'stimulus_id', 'seen' and 'recons'.")
        if isinstance(r["recons"], str | os.PathLike) or not isinstance(r["recons"], Sequence):
            raise ValueError(f"rows[{i}]['recons'] must be a list of images (one per sample).")
        top = r.get("top5")
        if top is not None and (len(top) == 0 or len(top) > 5):
            raise ValueError(f"rows[{i}]['top5'] must hold 1 to 5 images, got {len(top)}.")
        for key in ("top5_ids", "top5_hits"):
            if r.get(key) is not None and (top is None or len(r[key]) != len(top)):
                raise ValueError(f"rows[{i}][{key!r}] needs one entry per image of 'top5'.")
    k = max(len(r["recons"]) for r in rows)
    n_top = max((len(r["top5"]) for r in rows if r.get("top5") is not None), default=0)
    return k, n_top


def _hits(row: Mapping[str, Any]) -> list[bool]:
    top = row.get("top5") or []
    if row.get("top5_hits") is not None:
        return [bool(h) for h in row["top5_hits"]]
    if row.get("top5_ids") is not None:
        return [str(t) == str(row.get("stimulus_id")) for t in row["top5_ids"]]
    return [False] * len(top)


def plot_gallery(rows: Sequence[Mapping[str, Any]], *, max_rows: int = 8, thumbnail_size: int = 96,
                 title: str | None = None, show: bool = False) -> Figure:
    """Draw the reconstruction gallery.

    Parameters
    ----------
    rows : sequence of dict
        One dict per test stimulus, with ``"stimulus_id"`` (str), ``"seen"`` (the image seen: PIL
        image, file, ``(H, W, 3)`` uint8 or [0, 1] array), ``"recons"`` (its k reconstructions), and
        optionally ``"label"`` (e.g. the concept), ``"seeds"`` (one per reconstruction), ``"top5"``
        (thumbnails of the top-5 retrieved stimuli, best first) with ``"top5_ids"`` (their stimulus
        ids: the seen one is outlined) or ``"top5_hits"`` (booleans).
    max_rows : int
        Show the first ``max_rows`` stimuli; the caption says "rows shown: n of N".
    thumbnail_size : int
        Side of the square thumbnails in pixels.
    title : str | None
        Headline above the automatic description (data set, subject, generator).
    show : bool
        Call ``plt.show()``.

    Returns
    -------
    fig : matplotlib.figure.Figure
        The figure.
    """
    k, n_top = _check_rows(rows)
    if int(max_rows) < 1:
        raise ValueError(f"max_rows must be >= 1, got {max_rows}.")
    if int(thumbnail_size) < 8:
        raise ValueError(f"thumbnail_size must be >= 8 pixels, got {thumbnail_size}.")
    n_all = len(rows)
    n = min(int(max_rows), n_all)
    shown = rows[:n]
    cell = 1.05
    gap = 0.35 if n_top else 0.0
    n_cols = 1 + k + n_top
    width = n_cols * cell + gap + 0.4
    desc = (f"Reconstructions: each row shows the image seen (grey frame, left), its {k} reconstruction"
            f"{'s' if k != 1 else ''} from the brain signal")
    if n_top:
        desc += (f", and the top-{n_top} stimuli retrieved from the brain signal, best first (green frame = "
                 f"the seen stimulus)")
    desc += f". Rows shown: {n} of {n_all}."
    text = wrap_text(title_text(title, desc), width * 0.95, 9)
    title_in = 0.17 * (text.count("\n") + 1) + 0.35
    label_in = 0.32
    fig = new_figure((width, n * (cell + label_in) + title_in), show)
    ratios = [1.0] * (1 + k) + ([gap / cell] if n_top else []) + [1.0] * n_top
    grid = fig.add_gridspec(n, len(ratios), width_ratios=ratios, wspace=0.05)
    for i, row in enumerate(shown):
        sid = str(row.get("stimulus_id", i))
        ax = fig.add_subplot(grid[i, 0])
        ax.imshow(_thumb(row["seen"], thumbnail_size, f"rows[{i}]['seen']"))
        _frame(ax, SEEN_COLOR, 2.0)
        ax.set_xlabel(shorten(str(row.get("label", sid)), 18), fontsize=7.5, labelpad=2)
        if i == 0:
            ax.set_title("seen", fontsize=9)
        seeds = row.get("seeds")
        for j in range(k):
            ax = fig.add_subplot(grid[i, 1 + j])
            if j < len(row["recons"]):
                ax.imshow(_thumb(row["recons"][j], thumbnail_size, f"rows[{i}]['recons'][{j}]"))
                if seeds is not None and j < len(seeds):
                    ax.set_xlabel(f"seed {seeds[j]}", fontsize=7, labelpad=2)
                _frame(ax, "black", 0.6)
            else:
                ax.axis("off")
            if i == 0:
                ax.set_title(f"sample {j}", fontsize=9)
        top = row.get("top5") or []
        hits = _hits(row)
        ids = row.get("top5_ids")
        for j in range(n_top):
            ax = fig.add_subplot(grid[i, 1 + k + 1 + j])
            if j < len(top):
                ax.imshow(_thumb(top[j], thumbnail_size, f"rows[{i}]['top5'][{j}]"))
                ok = hits[j]
                _frame(ax, HIT_COLOR if ok else _OTHER_COLOR, 4.0 if ok else 1.0)
                name = shorten(str(ids[j]), 14) if ids is not None else ""
                mark = "\N{CHECK MARK} " if ok else ""
                if name or mark:
                    ax.set_xlabel(mark + name, fontsize=7, labelpad=2, color=HIT_COLOR if ok else "black")
            else:
                ax.axis("off")
            if i == 0:
                ax.set_title(f"retrieved {j + 1}", fontsize=9)
    fig.suptitle(text, fontsize=9)
    return finish_figure(fig, show)


def gallery_figure(rows: Sequence[Mapping[str, Any]], out_png: str | os.PathLike, *, max_rows: int = 8,
                   thumbnail_size: int = 96, title: str | None = None, dpi: int = 100) -> Path:
    """Write the reconstruction gallery (:func:`plot_gallery`) as a PNG, atomically.

    Parameters
    ----------
    rows : sequence of dict
        One dict per test stimulus (see :func:`plot_gallery`).
    out_png : path-like
        The PNG file to write.
    max_rows : int
        Rows shown at most ("rows shown: n of N" in the caption).
    thumbnail_size : int
        Side of the thumbnails in pixels.
    title : str | None
        Headline above the description.
    dpi : int
        Resolution of the PNG.

    Returns
    -------
    path : pathlib.Path
        The file written.
    """
    fig = plot_gallery(rows, max_rows=max_rows, thumbnail_size=thumbnail_size, title=title, show=False)
    return save_figure(fig, out_png, dpi=dpi)
