"""``report.md``: the tables of one or several evaluations, ready to paste into a paper.

:func:`render_report` turns what :func:`neurodecode.reporting.evaluate.evaluate` returns (the content of
``metrics.json``) into Markdown: per-subject retrieval with confidence intervals and the permutation
p-value, transductive CSLS numbers kept apart, zero-shot classification, noise ceilings, the simulator's
ceiling, time-resolved peaks, region ablation and the figures; with a comparison from
:func:`neurodecode.reporting.compare.compare`, a side-by-side table and the paired tests.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["render_report"]


def _fmt(x: float | None, scale: float = 100.0) -> str:
    """A fraction as percentage points with one decimal (``0.1234 -> "12.3"``), ``"–"`` when missing."""
    return "–" if x is None else f"{x * scale:.1f}"


def render_report(results: Sequence[dict[str, Any]], comparison: dict[str, Any] | None = None) -> str:
    """Markdown report of one or several evaluations.

    Parameters
    ----------
    results : sequence of dict
        What :func:`neurodecode.reporting.evaluate.evaluate` returned (the content of ``metrics.json``),
        one per model.
    comparison : dict | None
        What :func:`neurodecode.reporting.compare.compare` returned, with ``"paired"`` tests when the
        models share a test set; adds the side-by-side table.

    Returns
    -------
    markdown : str
        The content of ``report.md``.
    """
    lines = ["# neurodecode evaluation", ""]
    for r in results:
        d = r["data"]
        lines += [f"## {r['label']}", "",
                  f"- checkpoint: `{Path(r['model']['checkpoint']).name}` (epoch {r['model'].get('epoch')})",
                  f"- data: `{Path(d['root']).name}` ({d['modality']}), teacher `{d['teacher']}` ({d['layer']}), "
                  f"protocol **{d['protocol']}**, test subject(s) {', '.join(d['test_subjects'])}",
                  f"- test responses: {r['protocol']['test_averaging']}; channels: "
                  f"{'all' if not d.get('channels') else len(d['channels'])}; similarity: cosine; ties count "
                  "against the model",
                  f"- k-way numbers are exact expectations over all distractor draws; Monte-Carlo numbers "
                  f"({r['protocol']['n_draws']} seeded draws, seed {r['protocol']['seed']}) are in metrics.json",
                  ""]
        lines += ["| subject | n | top-1 (95% CI) | top-5 | " + " | ".join(f"{k}-way top-1" for k in (2, 4, 10, 50, 200))
                  + " | median rank | p (perm.) |",
                  "|---|---|---|---|" + "---|" * 5 + "---|---|"]
        for s, v in r["subjects"].items():
            m = v["retrieval"]["inductive"]["brain_to_image"]
            ci = v["confidence_intervals"].get("top1_full", {})
            cis = f" [{_fmt(ci.get('low'))}, {_fmt(ci.get('high'))}]" if ci else ""
            kway = " | ".join(_fmt(m.get(f"top1_{k}way")) for k in (2, 4, 10, 50, 200))
            lines.append(f"| sub-{s} | {v['n_candidates']} | {_fmt(m.get('top1_full'))}{cis} | "
                         f"{_fmt(m.get('top5_full'))} | {kway} | {m.get('median_rank', float('nan')):.1f} | "
                         f"{v['permutation_test'].get('p_value', float('nan')):.3g} |")
        summ = r["summary"]["brain_to_image"]
        if r["summary"]["n_subjects"] > 1 and "top1_full" in summ:
            a, b = summ["top1_full"], summ.get("top5_full", {})
            lines.append(f"| mean ± sd | | {_fmt(a['mean'])} ± {_fmt(a['sd'])} | "
                         f"{_fmt(b.get('mean'))} ± {_fmt(b.get('sd'))} | | | | | | | |")
        lines.append("")
        lines.append("Accuracies in %. Chance top-1 = 100/n %.")
        trans = [(s, v["retrieval"]["transductive"]["brain_to_image"]) for s, v in r["subjects"].items()
                 if "transductive" in v["retrieval"]]
        if trans:
            lines += ["", "Transductive (CSLS hubness correction; uses all test items at once, not comparable with "
                          "the inductive numbers above):", ""]
            lines += [f"- sub-{s}: top-1 {_fmt(m.get('top1_full'))}, top-5 {_fmt(m.get('top5_full'))}" for s, m in trans]
        zs = [(s, v["zero_shot_classification"]) for s, v in r["subjects"].items() if "zero_shot_classification" in v]
        if zs:
            lines += ["", "Zero-shot classification against concept prompts:", ""]
            lines += [f"- sub-{s}: top-1 {_fmt(m.get('top1'))}, top-5 {_fmt(m.get('top5'))} ({m.get('n_classes')} classes)"
                      for s, m in zs]
        nc = r.get("noise_ceiling", {})
        if nc:
            lines += ["", "Noise ceiling of the test responses (split halves of the repetitions):", ""]
            for s, v in nc.items():
                if "split_half_reliability" in v:
                    rel = v["split_half_reliability"]
                    ident = v["split_half_identification"]
                    lines.append(f"- sub-{s}: reliability {rel['overall']:.3f} (Spearman-Brown corrected), "
                                 f"half-vs-half identification top-1 {_fmt(ident.get('top1_full'))}%")
                else:
                    lines.append(f"- sub-{s}: {v.get('note')}")
        if "simulator_ceiling" in r:
            lines += ["", "Simulator ceiling (ideal decoder that knows the forward model):", ""]
            for s, c in r["simulator_ceiling"].items():
                frac = r.get("fraction_of_simulator_ceiling_top1", {}).get(s)
                lines.append(f"- sub-{s}: top-1 {_fmt(c['top1'])}, top-5 {_fmt(c['top5'])}"
                             + (f"; the model reaches {frac:.0%} of it" if frac is not None else ""))
        if "time_resolved" in r:
            lines += ["", "Time-resolved decoding (ridge per window; top-1, chance "
                          f"{_fmt(next(iter(r['time_resolved'].values()))['chance']['top1'])}%):", ""]
            for s, tr in r["time_resolved"].items():
                t = np.asarray(tr["times"])
                a = np.asarray(tr["top1"])
                i = int(np.argmax(a))
                sig = np.asarray(tr["significant"])
                first_sig = f"{t[sig][0] * 1000:.0f} ms" if sig.any() else "none"
                lines.append(f"- sub-{s}: peak {_fmt(a[i])}% at {t[i] * 1000:.0f} ms; first window above chance "
                             f"(95% CI): {first_sig}")
        if "ablation" in r:
            ab = r["ablation"]
            lines += ["", f"Region ablation ({ab['method']}):", "", "| removed | top-1 | change |", "|---|---|---|",
                      f"| none | {_fmt(ab['baseline']['top1_full'])} | |"]
            for g, v in sorted(ab["regions"].items(), key=lambda kv: kv[1]["top1_full"]):
                lines.append(f"| {g} ({len(v['channels'])} ch) | {_fmt(v['top1_full'])} | "
                             f"{_fmt(v['top1_full'] - ab['baseline']['top1_full'])} |")
        if r.get("figures"):
            lines += ["", "Figures: " + ", ".join(f"![{k}]({v})" for k, v in r["figures"].items())]
        lines.append("")
    if comparison:
        models = comparison["models"]
        lines += ["## Side by side (top-1 %, full test set)", "", "| subject | " + " | ".join(models) + " |",
                  "|---|" + "---|" * len(models)]
        for s, row in comparison["per_subject"].items():
            lines.append(f"| sub-{s} | " + " | ".join(_fmt(row.get(m, {}).get("top1_full")) for m in models) + " |")
        for p in comparison.get("paired", []):
            lines.append(f"\nPaired comparison on sub-{p['subject']} ({p['a']} vs {p['b']}): difference "
                         f"{_fmt(p['difference'])} points, 95% CI [{_fmt(p['ci_low'])}, {_fmt(p['ci_high'])}], "
                         f"p = {p['p_value']:.3g} ({p['test']})")
        lines.append("")
    return "\n".join(lines)

