"""Per-subject bars (one or several conditions) with the mean and sd across subjects."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from neurodecode.reporting.figures.common import (
    CHANCE_COLOR,
    check_array,
    check_errors,
    check_names,
    finish_figure,
    format_number,
    new_figure,
    set_title,
)

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure

__all__ = ["plot_subject_bars"]


# --------------------------------------------------------------------------------------------------
# 5. per-subject bars
# --------------------------------------------------------------------------------------------------
def _grouped(values: Any, n: int, groups: Sequence[str] | None, name: str, length_of: str,
             *, allow_2row: bool = False) -> dict[str, np.ndarray]:
    """Normalise bar values to dict group -> array of length n (errors may be (2, n) asymmetric)."""
    def one(v: Any, label: str) -> np.ndarray:
        a = check_array(v, label, allow_nan=True)
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
    a = check_array(values, name, allow_nan=True)
    if a.ndim == 1 or (allow_2row and a.shape == (2, n) and groups is None):
        return {"": one(a, name)}
    if a.ndim == 2 and a.shape[1] == n:
        if groups is None or len(groups) != a.shape[0]:
            raise ValueError(f"{name} has shape {a.shape} (groups x {length_of}s); give groups= with "
                             f"{a.shape[0]} names, or pass a dict group -> values.")
        return {str(g): a[i] for i, g in enumerate(groups)}
    raise ValueError(f"{name} must have one value per {length_of} ({n}), shape (n_groups, {n}) or be a dict "
                     f"group -> values; got shape {a.shape}.")


def plot_subject_bars(subjects: Sequence[str], values: Any, *, errors: Any = None, chance: float | None = None,
                      ylabel: str = "top-1 accuracy", groups: Sequence[str] | None = None,
                      title: str | None = None, error_label: str | None = None, show: bool = False) -> Figure:
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
    error_label : str | None
        What the subjects' error bars are (e.g. "95% bootstrap interval over test images"), for the
        caption; say it whenever ``errors`` is given.
    show : bool
        Call ``plt.show()``.

    Returns
    -------
    fig : matplotlib.figure.Figure
        One axes holding ``n_groups * (n_subjects + 1)`` bars: the subjects, then one hatched bar per
        group at the right for the mean across subjects, with the standard deviation (ddof=1) as its
        error bar.
    """
    subj = check_names(subjects, "subjects")
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
    fig = new_figure((float(np.clip(0.45 * (n + 1.5) * (0.6 + 0.4 * g) + 1.6, 5.0, 12.0)), 4.6), show)
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
        label += f"mean {format_number(mean)} \N{PLUS-MINUS SIGN} {format_number(sd)} sd (n={finite.size})"
        summary.append(label)
        err = check_errors(errs.get(name))
        ax.bar(x + off, np.nan_to_num(v, nan=0.0), width * 0.95, yerr=err, color=color, capsize=2,
               error_kw={"elinewidth": 1}, label=label)
        bars = ax.bar([x_mean + off], [mean], width * 0.95, yerr=[sd], color=color, hatch="//",
                      edgecolor="white", capsize=3, error_kw={"elinewidth": 1.2})
        for b in bars:
            b.set_gid("mean")
        if g == 1:  # with several groups the legend carries the numbers (the bars are too narrow)
            ax.annotate(f"{format_number(mean)}\n\N{PLUS-MINUS SIGN}{format_number(sd)}", (x_mean + off, mean + sd), xytext=(0, 2),
                        textcoords="offset points", ha="center", va="bottom", fontsize=7)
        hi = v + (err if err is not None and err.ndim == 1 else (err[1] if err is not None else 0))
        tops.extend([np.nanmax(hi) if np.isfinite(hi).any() else 0.0, mean + sd])
    if chance is not None:
        ax.axhline(chance, color=CHANCE_COLOR, ls="--", lw=1.2, label=f"chance ({format_number(chance)})")
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
    if errs and error_label:
        desc += f"; error bars: {error_label}"
    desc += f"; right: mean \N{PLUS-MINUS SIGN} sd across {n} subjects"
    if chance is not None:
        desc += f"; dashed: chance {format_number(chance)}"
    desc += "."
    set_title(ax, title, desc)
    return finish_figure(fig, show)
