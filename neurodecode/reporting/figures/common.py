"""Shared style and plumbing of the figures: colours, figure creation, titles, number formats, checks.

Every ``plot_*`` function of :mod:`neurodecode.reporting.figures` builds its figure with
:func:`new_figure`, titles it with :func:`set_title` and returns it through :func:`finish_figure`
(MNE's convention: ``show=False`` builds a bare Agg ``Figure`` without pyplot; ``show=True`` makes it
with pyplot and shows it). Inputs are checked with :func:`check_array` and :func:`check_names`, whose
errors name the argument, what was expected and what was given. :func:`save_figure` writes a figure
atomically.

matplotlib is imported inside the functions, so importing this module is cheap.
"""

from __future__ import annotations

import math
import os
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from neurodecode.utils import atomic_path

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = [
    "CHANCE_COLOR",
    "HIGHLIGHT_COLOR",
    "HIT_COLOR",
    "MISS_COLOR",
    "ONSET_COLOR",
    "SEEN_COLOR",
    "check_array",
    "check_errors",
    "check_names",
    "finish_figure",
    "format_number",
    "format_percent",
    "format_signed",
    "new_figure",
    "save_figure",
    "set_title",
    "shorten",
    "title_text",
    "wrap_text",
]

#: Frame colour of a correct guess in :func:`~neurodecode.reporting.figures.plot_retrieval_strip` (green).
HIT_COLOR = "#1a9850"
#: Frame colour of a wrong guess in :func:`~neurodecode.reporting.figures.plot_retrieval_strip` (red).
MISS_COLOR = "#d73027"
#: Frame colour of the image actually seen (neutral grey).
SEEN_COLOR = "#4d4d4d"
#: Colour of chance-level lines.
CHANCE_COLOR = "#7f7f7f"
#: Colour of the stimulus-onset line of time-resolved curves.
ONSET_COLOR = "#303030"
#: Colour of highlighted time windows.
HIGHLIGHT_COLOR = "#fdb863"

_MINUS = "\N{MINUS SIGN}"


# --------------------------------------------------------------------------------------------------
# figure plumbing
# --------------------------------------------------------------------------------------------------
def new_figure(figsize: tuple[float, float], show: bool) -> Figure:
    """A constrained-layout figure, pyplot-managed only when it is going to be shown.

    Parameters
    ----------
    figsize : tuple of float
        Width and height in inches.
    show : bool
        ``True``: made by pyplot (so the active backend can show it); ``False``: a bare ``Figure`` on
        an Agg canvas, which leaves nothing in pyplot's figure manager and needs no display.

    Returns
    -------
    fig : matplotlib.figure.Figure
        The empty figure.
    """
    if show:
        import matplotlib.pyplot as plt

        return plt.figure(figsize=figsize, layout="constrained")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, layout="constrained")
    FigureCanvasAgg(fig)  # attaches itself to the figure; no pyplot state, no display needed
    return fig


def finish_figure(fig: Figure, show: bool) -> Figure:
    """Show ``fig`` when asked (``plt.show()``) and return it.

    Parameters
    ----------
    fig : matplotlib.figure.Figure
        The finished figure.
    show : bool
        Call ``plt.show()``.

    Returns
    -------
    fig : matplotlib.figure.Figure
        The same figure.
    """
    if show:
        import matplotlib.pyplot as plt

        plt.show()
    return fig


def wrap_text(text: str, width_in: float, fontsize: float) -> str:
    """Wrap each line of ``text`` so that it fits ``width_in`` inches at ``fontsize`` points.

    Parameters
    ----------
    text : str
        The text; its own line breaks are kept.
    width_in : float
        Available width in inches.
    fontsize : float
        Font size in points.

    Returns
    -------
    text : str
        The wrapped text.
    """
    n_chars = max(20, int(width_in * 72 / (0.6 * fontsize)))
    return "\n".join(textwrap.fill(line, n_chars) if line else line for line in text.split("\n"))


def title_text(title: str | None, description: str) -> str:
    """The user's headline (when given) above the automatic description.

    Parameters
    ----------
    title : str | None
        Headline (data set, subject, model).
    description : str
        What the figure shows (metric, k, chance level, counts).

    Returns
    -------
    text : str
        ``"title\\ndescription"``, or the description alone.
    """
    return f"{title}\n{description}" if title else description


def set_title(ax: Axes, title: str | None, description: str, *, fontsize: float = 10) -> None:
    """Put :func:`title_text`, wrapped to the figure's width, above ``ax``.

    Parameters
    ----------
    ax : matplotlib.axes.Axes
        The axes to title.
    title : str | None
        Headline (data set, subject, model).
    description : str
        What the figure shows.
    fontsize : float
        Font size in points.
    """
    width = ax.figure.get_figwidth()
    ax.set_title(wrap_text(title_text(title, description), width * 0.95, fontsize), fontsize=fontsize)


def format_percent(x: float) -> str:
    """A fraction as a percentage with sensible precision (0.1234 -> '12.3%', 0.002 -> '0.2%').

    Parameters
    ----------
    x : float
        The fraction.

    Returns
    -------
    text : str
        The percentage, ``"n/a"`` for NaN or Inf.
    """
    if not np.isfinite(x):
        return "n/a"
    v = 100 * x
    if v == 0 or abs(v) >= 10:
        return f"{v:.1f}%"
    return f"{v:.2g}%" if abs(v) < 1 else f"{v:.1f}%"


def format_number(x: float) -> str:
    """A number with 3 significant digits and a typographic minus sign.

    Parameters
    ----------
    x : float
        The number.

    Returns
    -------
    text : str
        E.g. ``"0.123"``, ``"−0.05"``.
    """
    return f"{x:.3g}".replace("-", _MINUS)


def format_signed(x: float) -> str:
    """A change with its sign always written (``"+0.1"``, ``"−0.05"``).

    Parameters
    ----------
    x : float
        The change.

    Returns
    -------
    text : str
        The signed number, 3 significant digits.
    """
    return ("+" if x >= 0 else _MINUS) + f"{abs(x):.3g}"


def shorten(label: str, n: int = 16) -> str:
    """``label`` cut to ``n`` characters, an ellipsis marking the cut.

    Parameters
    ----------
    label : str
        The label.
    n : int
        Longest length kept.

    Returns
    -------
    label : str
        The label, at most ``n`` characters.
    """
    label = str(label)
    return label if len(label) <= n else label[: n - 1] + "\N{HORIZONTAL ELLIPSIS}"


# --------------------------------------------------------------------------------------------------
# input validation (name the argument, what was expected and what was given)
# --------------------------------------------------------------------------------------------------
def check_array(x: Any, name: str, *, ndim: int | None = None, length: int | None = None,
                allow_nan: bool = False, length_of: str = "") -> np.ndarray:
    """``x`` as a float array, or an error that names the argument and what is wrong with it.

    Parameters
    ----------
    x : array-like
        The value given.
    name : str
        The argument's name, used in the error messages.
    ndim : int | None
        Required number of dimensions.
    length : int | None
        Required length of the first axis.
    allow_nan : bool
        Accept NaN (gaps); Inf is always refused.
    length_of : str
        What ``length`` is the length of (for the error message).

    Returns
    -------
    arr : numpy.ndarray
        The float array.
    """
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


def check_names(x: Any, name: str) -> list[str]:
    """``x`` as a list of str, or an error when it is not a sequence of names.

    Parameters
    ----------
    x : sequence
        The names given (a bare string is refused).
    name : str
        The argument's name, used in the error message.

    Returns
    -------
    names : list of str
        The names.
    """
    if isinstance(x, str) or not isinstance(x, Sequence | np.ndarray):
        raise ValueError(f"{name} must be a list of names, got {type(x).__name__}.")
    return [str(v) for v in x]


def check_errors(err: np.ndarray | None) -> np.ndarray | None:
    """Error bar sizes, refused when negative.

    Parameters
    ----------
    err : numpy.ndarray | None
        Half-widths, or ``(2, n)`` (lower, upper) distances; NaN is accepted.

    Returns
    -------
    err : numpy.ndarray | None
        The same array.
    """
    if err is None:
        return None
    if (err[np.isfinite(err)] < 0).any():
        raise ValueError("errors must be non-negative (half-widths, or (lower, upper) distances).")
    return err


# --------------------------------------------------------------------------------------------------
# saving
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
