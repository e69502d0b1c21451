"""Time-resolved decoding curves: score per time window with confidence band, chance and significance."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from neurodecode.reporting.figures.common import (
    CHANCE_COLOR,
    HIGHLIGHT_COLOR,
    ONSET_COLOR,
    check_array,
    finish_figure,
    format_number,
    new_figure,
    set_title,
)

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure

__all__ = ["plot_time_resolved"]


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
            out[k] = check_array(v, f"{name}[{k!r}]", ndim=1, length=n, allow_nan=allow_nan, length_of="times")
    return out


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
                       band_label: str = "confidence band", significance_label: str = "significant time points",
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
        Stimulus onset in seconds, drawn as a vertical line (``None``, or outside the window centres:
        no line and no legend entry).
    highlight : tuple | list of tuples | None
        Window(s) to shade, ``(start, end)`` or ``(start, end, label)`` in seconds, e.g.
        ``(0.13, 0.2, "N170")``.
    significant : array of bool, shape (n_times,) | dict of str to array | None
        Time points where the score differs significantly from chance, drawn as a bar under the curves
        (one bar per curve, in its colour).
    title : str | None
        Headline put above the automatic description (data set, subject, model).
    band_label, significance_label : str
        What the shaded band and the bars below are, for the caption (e.g. "95% bootstrap interval
        per window, uncorrected" and "cluster-based permutation test, p < 0.05").
    show : bool
        Call ``plt.show()``.

    Returns
    -------
    fig : matplotlib.figure.Figure
        One axes (seconds on the bottom axis) plus a secondary top axis in milliseconds.
    """
    t = check_array(times, "times", ndim=1)
    n = t.size
    if n < 2:
        raise ValueError(f"times needs at least 2 time points, got {n}.")
    if (np.diff(t) <= 0).any():
        raise ValueError("times must be strictly increasing (seconds relative to stimulus onset).")
    if isinstance(scores, Mapping):
        if not scores:
            raise ValueError("scores is an empty dict; give at least one curve.")
        curves = {str(k): check_array(v, f"scores[{k!r}]", ndim=1, length=n, allow_nan=True, length_of="times")
                  for k, v in scores.items()}
    else:
        curves = {ylabel: check_array(scores, "scores", ndim=1, length=n, allow_nan=True, length_of="times")}
    names = list(curves)
    lows = _per_curve(ci_low, names, "ci_low", n)
    highs = _per_curve(ci_high, names, "ci_high", n)
    if set(lows) != set(highs):
        raise ValueError("ci_low and ci_high must be given together, for the same curves.")
    sig = _per_curve(significant, names, "significant", n, dtype=bool)
    spans = _highlights(highlight)
    if chance is not None and not np.isfinite(chance):
        raise ValueError(f"chance must be a finite number, got {chance}.")

    fig = new_figure((7.2, 4.4), show)
    ax = fig.add_subplot()
    many = len(curves) > 6
    for i, (name, y) in enumerate(curves.items()):
        color = f"C{i % 10}"
        if name in lows:
            ax.fill_between(t, lows[name], highs[name], color=color, alpha=0.2, lw=0)
        label = name
        if np.isfinite(y).any():
            p = int(np.nanargmax(y))
            label = f"{name} (peak {format_number(y[p])} at {t[p] * 1000:.0f} ms)"
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
        ax.axhline(chance, color=CHANCE_COLOR, ls="--", lw=1.2, label=f"chance ({format_number(chance)})", zorder=2)
    if onset is not None and t[0] <= onset <= t[-1]:
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
        parts.append(f"shaded: {band_label}")
    if chance is not None:
        parts.append(f"dashed: chance {format_number(chance)}")
    if sig:
        parts.append(f"bars below: {significance_label}")
    for t0, t1, lab in spans:
        parts.append(f"{lab + ' ' if lab else ''}window {t0 * 1000:.0f}-{t1 * 1000:.0f} ms shaded")
    desc += (" (" + "; ".join(parts) + ")." if parts else ".")
    set_title(ax, title, desc)
    return finish_figure(fig, show)
