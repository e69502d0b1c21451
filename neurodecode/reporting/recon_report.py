"""``report.md`` of a reconstruction run: protocol, metrics per round, best-of-k, references, retrieval.

:func:`write_recon_report` reads the dictionary of
:func:`neurodecode.evaluation.recon_metrics.score_reconstructions` (the content of ``metrics.json``),
optionally extended by the reconstruction pipeline, and writes a short Markdown report:

1. **Protocol**: every key of ``metrics["protocol"]`` that is not a metric convention (``generator``,
   ``steps``, ``guidance``, ``seeds``, ``strength``, ...), then the metric conventions and a table
   of the networks (layer, input size, metric, where the weights came from).
2. **Metrics**: one row per metric: mean ± sd over the sample rounds, each round (up to 10
   columns), chance level. Two-way identification is shown in percent, the other metrics with 3
   decimals; an arrow says whether higher or lower is better.
3. **Best of k**, in its own table and labelled as an upper bound (the best sample per stimulus is
   chosen with the ground truth).
4. **References** (when ``metrics`` has ``"ceiling"`` and/or ``"chance"``, each in the format of
   ``metrics["metrics"]``, or a whole result dictionary holding such a ``"metrics"``): a table of this
   system beside the generator's ceiling (e.g. the teacher's own embeddings fed to the generator)
   and chance (e.g. shuffled embeddings).
5. **Retrieval by stage** (when ``metrics`` has ``"retrieval"``): ``{stage: {metric: value}}``, e.g.
   ``{"encoder": {"top1": 0.42, "top5": 0.81, "n_candidates": 200}, "prior": {...}}``; ``top*``
   values are fractions, shown in percent.
6. **Skipped metrics** with their reasons (``metrics["skipped"]``), and the gallery image when given.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from neurodecode.utils import atomic_write_text

__all__ = ["format_metric", "metric_rows", "write_recon_report"]

# protocol keys written by score_reconstructions (the metric conventions), shown in their own list
_METRIC_PROTOCOL = ("conventions", "matching", "image_size", "resize", "pixcorr", "ssim", "two_way",
                    "corr_distance", "networks_requested", "networks", "rounds", "best_of_k", "vs_chance")
_GENERATION_FIRST = ("generator", "steps", "guidance", "seeds", "strength")
_MAX_ROUND_COLUMNS = 10


def _is_num(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and x == x  # NaN is not shown as a number


def format_metric(value: Any, kind: str, *, sd: Any = None) -> str:
    """One metric value as text: identification in percent, others with 3 decimals; ``± sd`` if given.

    Parameters
    ----------
    value : float | None
        The value.
    kind : str
        ``"two_way"`` (shown in percent) or anything else (3 decimals).
    sd : float | None
        Standard deviation, shown after ``±``.

    Returns
    -------
    text : str
        E.g. ``"93.1% ± 0.4%"``, ``"0.254 ± 0.003"``, ``"n/a"``.
    """
    if not _is_num(value):
        return "n/a"

    def one(v: float) -> str:
        return f"{100 * v:.1f}%" if kind == "two_way" else f"{v:.3f}"

    return one(value) + (f" ± {one(sd)}" if _is_num(sd) else "")


def _entries(block: Any) -> Mapping[str, Any]:
    """Metric entries of a main / ceiling / chance block (a metrics dict or a whole result)."""
    if isinstance(block, Mapping) and isinstance(block.get("metrics"), Mapping):
        return block["metrics"]
    return block if isinstance(block, Mapping) else {}


def metric_rows(metrics: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """``(label, mean ± sd, best-of-k)`` text rows of a result, for printed tables.

    Parameters
    ----------
    metrics : dict
        The result of :func:`~neurodecode.evaluation.recon_metrics.score_reconstructions`.

    Returns
    -------
    rows : list of tuple of str
        One row per metric, in the result's order.
    """
    rows = []
    for name, e in _entries(metrics).items():
        kind = e.get("kind", "")
        arrow = "↑" if e.get("higher_is_better", True) else "↓"
        rows.append((f"{e.get('label', name)} {arrow}", format_metric(e.get("mean"), kind, sd=e.get("sd")),
                     format_metric(e.get("best_of_k"), kind)))
    return rows


def _value(v: Any) -> str:
    if isinstance(v, Mapping):
        return ", ".join(f"{k}={_value(x)}" for k, x in v.items())
    if isinstance(v, list | tuple):
        items = [_value(x) for x in v]
        return ", ".join(items[:20]) + (f", ... ({len(items)} in all)" if len(items) > 20 else "")
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(_cell(h) for h in header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return lines


def _protocol_lines(protocol: Mapping[str, Any]) -> list[str]:
    lines = ["## Protocol", ""]
    generation = [k for k in _GENERATION_FIRST if k in protocol]
    generation += [k for k in protocol if k not in _METRIC_PROTOCOL and k not in generation]
    for k in generation:
        lines.append(f"- **{k}**: {_value(protocol[k])}")
    if generation:
        lines.append("")
    conv = [k for k in _METRIC_PROTOCOL if k in protocol and k not in ("networks", "networks_requested")]
    if conv:
        lines.append("Metric conventions:")
        lines.append("")
        lines += [f"- {k}: {_value(protocol[k])}" for k in conv]
        lines.append("")
    nets = protocol.get("networks") or {}
    if nets:
        lines.append("Networks used:")
        lines.append("")
        lines += _table(["metric", "network", "layer", "input px", "score", "weights"],
                        [[v.get("label", n), v.get("network", ""), v.get("layer", ""), v.get("input_size", ""),
                          "two-way identification" if v.get("metric") == "two_way" else "correlation distance",
                          v.get("weights", "")] for n, v in nets.items()])
        lines.append("")
    return lines


def _metric_table(entries: Mapping[str, Any]) -> list[str]:
    k = max((int(e.get("k") or len(e.get("rounds") or [])) for e in entries.values()), default=0)
    show_rounds = 1 < k <= _MAX_ROUND_COLUMNS
    header = ["metric", f"mean ± sd over {k} round{'s' if k != 1 else ''}"]
    header += [f"round {i}" for i in range(k)] if show_rounds else []
    header += ["chance"]
    rows = []
    for name, e in entries.items():
        kind = e.get("kind", "")
        arrow = "↑" if e.get("higher_is_better", True) else "↓"
        row = [f"{e.get('label', name)} {arrow}", format_metric(e.get("mean"), kind, sd=e.get("sd"))]
        if show_rounds:
            r = list(e.get("rounds") or [])
            row += [format_metric(r[i], kind) if i < len(r) else "" for i in range(k)]
        chance = format_metric(e.get("chance"), kind) if e.get("chance") is not None else ""
        test = e.get("vs_chance")
        if isinstance(test, Mapping) and _is_num(test.get("p")):
            chance += f" (p = {test['p']:.3g}, permutations)"
        row.append(chance)
        rows.append(row)
    return _table(header, rows)


def _reference_lines(metrics: Mapping[str, Any], entries: Mapping[str, Any]) -> list[str]:
    refs = {name: _entries(metrics[name]) for name in ("ceiling", "chance") if metrics.get(name)}
    if not refs:
        return []
    lines = ["## References", "",
             "The same metrics for the generator's ceiling (e.g. the teacher's own embeddings fed to the "
             "generator) and for chance (e.g. shuffled embeddings), mean ± sd over rounds.", ""]
    names = list(dict.fromkeys([*entries, *(n for r in refs.values() for n in r)]))
    rows = []
    for n in names:
        e = entries.get(n) or next((r[n] for r in refs.values() if n in r), {})
        kind = e.get("kind", "")
        row = [e.get("label", n), format_metric(entries.get(n, {}).get("mean"), kind, sd=entries.get(n, {}).get("sd"))]
        for r in refs.values():
            x = r.get(n, {})
            row.append(format_metric(x.get("mean"), kind, sd=x.get("sd")))
        rows.append(row)
    return [*lines, *_table(["metric", "this system", *refs], rows), ""]


def _retrieval_lines(retrieval: Mapping[str, Any]) -> list[str]:
    stages = {s: v for s, v in retrieval.items() if isinstance(v, Mapping)}
    if not stages:
        return []
    cols = list(dict.fromkeys(k for v in stages.values() for k, x in v.items() if _is_num(x)))
    rows = []
    for s, v in stages.items():
        rows.append([s, *[(f"{100 * v[c]:.1f}%" if c.startswith("top") else _value(v[c])) if _is_num(v.get(c)) else ""
                          for c in cols]])
    return ["## Retrieval by stage", "",
            "Retrieval of the seen stimulus among the test images from each stage's output (the encoder's "
            "brain embedding, the prior's predicted image embedding), so what each stage adds or loses shows.",
            "", *_table(["stage", *cols], rows), ""]


def write_recon_report(metrics: Mapping[str, Any], out_dir: str | os.PathLike,
                       gallery_png: str | os.PathLike | None = None, *, title: str = "Reconstruction metrics") -> Path:
    """Write ``<out_dir>/report.md`` (atomically) from a reconstruction metrics dictionary.

    Parameters
    ----------
    metrics : dict
        The result of :func:`~neurodecode.evaluation.recon_metrics.score_reconstructions`, optionally
        with ``protocol`` entries of the generation and ``"ceiling"``, ``"chance"`` and ``"retrieval"``
        (see the module docstring for their format).
    out_dir : path-like
        Output folder (created).
    gallery_png : path-like | None
        A gallery image to show (linked relative to ``out_dir`` when it lies inside it).
    title : str
        The report's headline.

    Returns
    -------
    path : pathlib.Path
        The report written.
    """
    out_dir = Path(out_dir)
    entries = _entries(metrics)
    n, k = metrics.get("n_stimuli"), metrics.get("n_samples")
    lines = [f"# {title}", ""]
    if n is not None:
        lines += [f"{n} stimuli, {k} sample{'s' if k != 1 else ''} each; reconstructions are matched to their "
                  f"ground truth by stimulus id. Round k compares sample k of every stimulus with its ground "
                  f"truth; mean ± sd are over rounds.", ""]
    lines += _protocol_lines(metrics.get("protocol") or {})
    lines += ["## Metrics", ""]
    if entries:
        lines += _metric_table(entries)
        lines += ["", "↑ higher is better, ↓ lower is better. Two-way identification: for each reconstruction, "
                  "the share of the other ground truths less correlated with it than its own (chance 50%). "
                  "EffNet-B and SwAV: correlation distance to the own ground truth.", ""]
    else:
        lines += ["No metric could be computed.", ""]
    best = {nm: e for nm, e in entries.items() if _is_num(e.get("best_of_k"))}
    if best:
        lines += ["## Best of k (upper bound)", "",
                  f"For each stimulus the best of its {k} samples, chosen separately for each metric *with the "
                  f"ground truth*: an optimistic upper bound, not comparable with single-sample results.", ""]
        lines += _table(["metric", f"best of {k}"], [[f"{e.get('label', nm)} {'↑' if e.get('higher_is_better', True) else '↓'}",
                                                      format_metric(e["best_of_k"], e.get("kind", ""))]
                                                     for nm, e in best.items()])
        lines.append("")
    lines += _reference_lines(metrics, entries)
    if isinstance(metrics.get("retrieval"), Mapping):
        lines += _retrieval_lines(metrics["retrieval"])
    skipped = metrics.get("skipped") or {}
    if skipped:
        lines += ["## Skipped metrics", "", "Not computed (never replaced by a stand-in):", ""]
        lines += [f"- **{name}**: {reason}" for name, reason in skipped.items()]
        lines.append("")
    if gallery_png is not None:
        g = Path(gallery_png)
        try:
            rel = g.resolve().relative_to(out_dir.resolve()).as_posix()
        except ValueError:
            rel = g.as_posix()
        lines += ["## Gallery", "", f"![reconstruction gallery]({rel})", ""]
    return atomic_write_text(out_dir / "report.md", "\n".join(lines))
