"""Channel figures: the channel-region ablation bars and the sensor-importance topography."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from neurodecode.reporting.figures.common import (
    CHANCE_COLOR,
    check_array,
    check_errors,
    check_names,
    finish_figure,
    format_number,
    format_signed,
    new_figure,
    set_title,
)

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure

__all__ = ["plot_ablation", "plot_sensor_importance"]


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
    labels = check_names(names, "names")
    n = len(labels)
    if n == 0:
        raise ValueError("names is empty; give at least one region.")
    v = check_array(values, "values", ndim=1, length=n, length_of="names")
    base = float(baseline) if np.isscalar(baseline) else float("nan")
    if not np.isfinite(base):
        raise ValueError(f"baseline must be one finite number (the all-channel score), got {baseline!r}.")
    err = None
    if errors is not None:
        err = check_errors(check_array(errors, "errors", ndim=1, length=n, length_of="names"))
    if chance is not None and not np.isfinite(chance):
        raise ValueError(f"chance must be a finite number, got {chance}.")
    order = np.argsort(v - base, kind="stable")  # most negative change (largest drop) first
    v = v[order]
    labels = [labels[i] for i in order]
    if err is not None:
        err = err[order]

    fig = new_figure((max(5.0, 0.8 * n + 2.2), 4.4), show)
    ax = fig.add_subplot()
    x = np.arange(n)
    ax.bar(x, v, 0.65, yerr=err, color="C0", capsize=3, label="region removed")
    ax.axhline(base, color="black", lw=1.5, label=f"all channels ({format_number(base)})")
    if chance is not None:
        ax.axhline(chance, color=CHANCE_COLOR, ls="--", lw=1.2, label=f"chance ({format_number(chance)})")
    ref = [base, chance or 0.0, *(v + (err if err is not None else 0))]
    top = max(ref)
    low = min(0.0, float(v.min()))
    ax.set_ylim(low, top * 1.08 if top > 0 else 1)
    y_range = ax.get_ylim()[1] - low
    # the change from the baseline is written inside each bar (under its error bar) so that it never
    # collides with the baseline line; bars too short for it get it above instead
    for xi, vi, ei in zip(x, v, err if err is not None else np.zeros(n), strict=True):
        if (vi - ei) - low > 0.1 * y_range:
            ax.annotate(format_signed(vi - base), (xi, vi - ei), xytext=(0, -3), textcoords="offset points",
                        ha="center", va="top", fontsize=8, color="white", fontweight="bold")
        else:
            ax.annotate(format_signed(vi - base), (xi, max(vi + ei, 0)), xytext=(0, 2), textcoords="offset points",
                        ha="center", va="bottom", fontsize=8)
    tilt = max(len(s) for s in labels) > 9
    ax.set_xticks(x, labels, rotation=30 if tilt else 0, ha="right" if tilt else "center")
    ax.set_xlabel("channel region removed (largest drop first)")
    ax.set_ylabel(ylabel)
    ax.grid(True, axis="y", alpha=0.3)
    handles, leg_labels = ax.get_legend_handles_labels()
    fig.legend(handles, leg_labels, loc="outside lower center", ncol=len(handles), fontsize=8, frameon=False)
    desc = (f"Channel-region ablation: {ylabel} with each region removed, sorted by drop; solid line: all "
            f"channels ({format_number(base)}); numbers: change from it")
    if chance is not None:
        desc += f"; dashed: chance {format_number(chance)}"
    set_title(ax, title, desc + ".")
    return finish_figure(fig, show)


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

    v = check_array(values, "values", ndim=1)
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
        pos = check_array(info_or_positions, "info_or_positions", ndim=2)
        if pos.shape != (v.size, 2):
            raise ValueError(f"positions must have shape (n_channels, 2) = ({v.size}, 2), got {pos.shape}; "
                             f"project 3-D positions to 2-D (e.g. mne.channels.layout) or pass an mne.Info.")
        if ch_names is not None:
            names = check_names(ch_names, "ch_names")
            if len(names) != v.size:
                raise ValueError(f"ch_names has {len(names)} names but values has {v.size} entries.")

    fig = new_figure((5.2, 5.0), show)
    ax = fig.add_subplot()
    im, _ = mne.viz.plot_topomap(v, pos, ch_type=ch_type, axes=ax, show=False, cmap=cmap, contours=4,
                                 sensors=True)
    cbar = fig.colorbar(im, ax=ax, shrink=0.75)
    cbar.set_label(cbar_label)
    desc = f"Sensor importance ({cbar_label}) over {v.size} channels"
    if names is not None and n_names > 0:
        best = np.argsort(-v, kind="stable")[: min(n_names, v.size)]
        desc += "; highest: " + ", ".join(f"{names[i]} ({format_number(v[i])})" for i in best)
    set_title(ax, title, desc + ".")
    return finish_figure(fig, show)
