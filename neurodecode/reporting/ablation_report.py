"""The ablation report: ``ablation.json``, ``ablation.md`` and ``ablation.png`` from a summary.

The summary is :func:`neurodecode.training.ablation.summarize`'s; the runs (with the exact resolved
config of each) go into ``ablation.json`` next to it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from neurodecode.training.ablation import BASE
from neurodecode.utils import atomic_write_json, atomic_write_text, to_jsonable

__all__ = ["render_ablation_markdown", "plot_ablation", "write_ablation_report"]


def _pct(cell: Mapping[str, Any]) -> str:
    if not cell.get("n") or math.isnan(cell["mean"]):
        return "n/a"
    return f"{100 * cell['mean']:.1f} ± {100 * cell['sd']:.1f}"


def _diff(cell: Mapping[str, Any]) -> str:
    d = cell.get("diff")
    if not d or not d.get("n_pairs") or math.isnan(d["difference"]):
        return "" if d is None else "n/a"
    p = d["p_value"]
    ptxt = "n/a" if math.isnan(p) else f"{p:.3g}"
    return f"{_points(d['difference'])} (p={ptxt}, n={d['n_pairs']})"


def _points(x: float) -> str:
    """A fraction as signed percentage points, without a negative zero."""
    return f"{round(100 * x, 1) + 0.0:+.1f}"


def render_ablation_markdown(summary: Mapping[str, Any], *, title: str = "Ablation") -> str:
    """The ablation table as Markdown (percentages; differences in percentage points)."""
    lines = [f"# {title}", "",
             "Top-1 / top-5 in % (mean ± sd over seeds × subjects) at the validation-selected checkpoint and "
             "at the last epoch; Δ: paired difference from the base in points, p: " + summary["paired_test"] + ".",
             "", summary["selection"], "",
             "| variant | kind | runs | top-1 (selected) | Δ top-1 | top-5 (selected) | Δ top-5 | top-1 (last) "
             "| Δ top-1 (last) | top-5 (last) | wall s |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for v in summary["order"]:
        e = summary["variants"][v]
        m = e["metrics"]
        lines.append(
            f"| {v} | {e['kind']} | {e['n_runs']} | {_pct(m['selected/top1'])} | {_diff(m['selected/top1'])} | "
            f"{_pct(m['selected/top5'])} | {_diff(m['selected/top5'])} | {_pct(m['last/top1'])} | "
            f"{_diff(m['last/top1'])} | {_pct(m['last/top5'])} | {e['wall_s']:.0f} |")
    lines += ["", "## Overrides", ""]
    for v in summary["order"]:
        ov = summary["variants"][v]["overrides"]
        text = ", ".join(f"`{k}={val}`" for k, val in ov.items()) or "(the base config)"
        lines.append(f"- **{v}**: {text}")
    if summary.get("missing"):
        lines += ["", f"{summary['missing']} run(s) not finished yet: rerun the same command to complete them."]
    return "\n".join(lines) + "\n"


def plot_ablation(summary: Mapping[str, Any], *, metric: str = "selected/top1",
                  runs: Sequence[Mapping[str, Any]] = (), show: bool = False):
    """Horizontal bars: each variant's mean (± sd) ``metric``, its runs as dots, the base as a dashed line.

    Returns
    -------
    fig : matplotlib.figure.Figure
    """
    from neurodecode.reporting.figures.common import finish_figure, new_figure, set_title

    order = list(summary["order"])
    fig = new_figure((6.5, 0.5 * len(order) + 1.6), show)
    ax = fig.add_subplot(1, 1, 1)
    ck, m = metric.split("/")
    labels = []
    for i, v in enumerate(order):
        cell = summary["variants"][v]["metrics"][metric]
        color = "0.55" if v == BASE else "tab:blue"
        if cell.get("n"):
            ax.barh(i, 100 * cell["mean"], xerr=100 * cell["sd"], color=color, alpha=0.8, capsize=3)
        pts = [100 * float(r[ck][m]) for r in runs if r["variant"] == v and (r.get(ck) or {}).get(m) is not None]
        ax.plot(pts, [i] * len(pts), "k.", ms=4)
        d = cell.get("diff")
        if d and d.get("n_pairs") and not math.isnan(d["p_value"]):
            labels.append(f"{v}\nΔ {_points(d['difference'])}, p={d['p_value']:.2g}")
        else:
            labels.append(v)
    base = summary["variants"].get(BASE, {}).get("metrics", {}).get(metric)
    if base and base.get("n"):
        ax.axvline(100 * base["mean"], color="0.3", ls="--", lw=1)
    ax.set_yticks(range(len(order)), labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel(f"test {m} (%), {'validation-selected checkpoint' if ck == 'selected' else 'last epoch'}")
    set_title(ax, None, "ablation: mean ± sd over seeds × subjects; Δ from the base with its paired p-value")
    return finish_figure(fig, show)


def write_ablation_report(summary: Mapping[str, Any], runs: Sequence[Mapping[str, Any]], out: str | Path,
                          *, title: str = "Ablation") -> dict[str, Path]:
    """Write ``ablation.json`` (summary + every run with its resolved config), ``ablation.md`` and
    ``ablation.png`` into ``out`` (atomically); returns their paths."""
    from neurodecode.reporting.figures.common import save_figure

    out = Path(out)
    paths = {"json": out / "ablation.json", "md": out / "ablation.md", "png": out / "ablation.png"}
    atomic_write_json(paths["json"], to_jsonable({**summary, "runs": list(runs)}))
    atomic_write_text(paths["md"], render_ablation_markdown(summary, title=title))
    save_figure(plot_ablation(summary, runs=runs), paths["png"])
    return paths
