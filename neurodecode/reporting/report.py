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

__all__ = ["format_p", "render_report"]


def _fmt(x: float | None, scale: float = 100.0) -> str:
    """A fraction as percentage points with one decimal (``0.1234 -> "12.3"``), ``"–"`` when missing."""
    return "–" if x is None else f"{x * scale:.1f}"


def format_p(p: float | None, n_permutations: int | None = None) -> str:
    """A permutation p-value; at the floor ``1 / (n_permutations + 1)`` (no permutation reached the
    observed value) shown as ``"< 1/n_permutations"`` (``"< 0.001"`` for 1000), not as a value."""
    if p is None or not np.isfinite(p):
        return "–"
    if n_permutations and p <= 1.0 / (int(n_permutations) + 1) + 1e-12:
        return f"< {1.0 / int(n_permutations):.2g}"
    return f"{p:.3g}"


def _training_lines(r: dict[str, Any]) -> list[str]:
    """How the model was trained and selected, and the sizes of the data (from metrics.json)."""
    tr = r["model"].get("training") or {}
    lines = []
    if tr:
        lines.append(f"- training: {tr.get('epochs_run', '?')} epoch(s) run; evaluated epoch {tr.get('selected_epoch')} "
                     f"(counting from 0), chosen as {tr.get('selection', 'the checkpoint given')}; "
                     f"{tr.get('n_seeds', 1)} seed (seed {tr.get('seed')}): no spread over training runs is "
                     "reported here (train several seeds for it)")
    sz = r.get("data_sizes") or {}
    if sz:
        def part(which: str, what: str) -> str:
            if f"{which}_samples" not in sz:
                return f"{what}: not loaded"
            unit = "stimulus-averaged samples" if sz.get(f"{which}_averaged") else "single trials"
            return f"{what} {sz[f'{which}_samples']} {unit} of {sz[f'{which}_stimuli']} stimuli"
        lines.append(f"- data sizes: {part('train', 'train')}; {part('val', 'validation')}; {part('test', 'test')}; "
                     f"{len(sz['train_subjects'])} training subject(s) ({', '.join(sz['train_subjects'])}), "
                     f"{len(sz['test_subjects'])} test subject(s)")
    return lines


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
                  *_training_lines(r), ""]
        n_cands = [v["n_candidates"] for v in r["subjects"].values()]
        kcols = [k for k in r["protocol"].get("ks", (2, 4, 10, 50, 200)) if any(k < n for n in n_cands)]
        dropped = [k for k in r["protocol"].get("ks", (2, 4, 10, 50, 200)) if k not in kcols]
        n_perm = r["protocol"].get("n_permutations")
        lines += ["| subject | n | top-1 (95% CI) | top-5 | " + "".join(f"{k}-way top-1 | " for k in kcols)
                  + "median rank | p (perm.) |",
                  "|---|---|---|---|" + "---|" * len(kcols) + "---|---|"]
        for s, v in r["subjects"].items():
            m = v["retrieval"]["inductive"]["brain_to_image"]
            ci = v["confidence_intervals"].get("top1_full", {})
            cis = f" [{_fmt(ci.get('low'))}, {_fmt(ci.get('high'))}]" if ci else ""
            kway = "".join(f"{_fmt(m.get(f'top1_{k}way'))} | " for k in kcols)
            lines.append(f"| sub-{s} | {v['n_candidates']} | {_fmt(m.get('top1_full'))}{cis} | "
                         f"{_fmt(m.get('top5_full'))} | {kway}{m.get('median_rank', float('nan')):.1f} | "
                         f"{format_p(v['permutation_test'].get('p_value'), n_perm)} |")
        summ = r["summary"]["brain_to_image"]
        if r["summary"]["n_subjects"] > 1 and "top1_full" in summ:
            a, b = summ["top1_full"], summ.get("top5_full", {})
            lines.append(f"| mean ± sd | | {_fmt(a['mean'])} ± {_fmt(a['sd'])} | "
                         f"{_fmt(b.get('mean'))} ± {_fmt(b.get('sd'))} | " + "| " * len(kcols) + "| |")
        lines.append("")
        note = ("Accuracies in %. Chance top-1 = 100/n %. p: permutation test against chance "
                f"({n_perm} permutations; \"< {1 / n_perm:.2g}\": no permutation reached the observed accuracy)."
                if n_perm else "Accuracies in %. Chance top-1 = 100/n %.")
        if dropped:
            note += (f" Not shown: {', '.join(f'{k}-way' for k in dropped)} (n/a: {max(n_cands)} candidates at most; "
                     "the full set is the n-way).")
        lines.append(note)
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
            lines += ["", "Noise ceiling of the test responses (split halves of the repetitions). Caveat: "
                          + (r.get("noise_ceiling_note") or "a reference, not an upper bound of the model's numbers")
                          + ".", ""]
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
            lines += _time_resolved_lines(r["time_resolved"])
        if "ablation" in r:
            ab = r["ablation"]
            def rng(c: dict | None) -> str:
                return f" [{_fmt(c['low'])}, {_fmt(c['high'])}]" if c else ""

            base = ab["baseline"]
            lines += ["", f"Region ablation ({ab['method']}); intervals: {ab.get('interval', 'none')}:", "",
                      "| channels removed | top-1 (95% CI) | change (95% CI) |", "|---|---|---|",
                      f"| all channels (no ablation) | {_fmt(base['top1_full'])}{rng(base.get('top1_full_ci'))} | |"]
            for g, v in sorted(ab["regions"].items(), key=lambda kv: kv[1]["top1_full"]):
                lines.append(f"| {g} ({len(v['channels'])} ch) | {_fmt(v['top1_full'])}{rng(v.get('top1_full_ci'))} | "
                             f"{_fmt(v['top1_full'] - base['top1_full'])}{rng(v.get('top1_change_ci'))} |")
        if r.get("figures"):
            shown = r.get("figure_subjects") or {}
            lines += ["", "Figures: " + ", ".join(f"![{k}]({v})" for k, v in r["figures"].items())]
            if shown:
                lines += ["", "Subjects in the figures: " + "; ".join(f"{k}: {v}" for k, v in shown.items()) + "."]
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



def _time_resolved_lines(trs: dict[str, Any]) -> list[str]:
    """The time-resolved section: peaks, the windows called significant and how (error controlled)."""
    first = next(iter(trs.values()))
    sig_info = first.get("significance", {})
    lines = ["", f"Time-resolved decoding (ridge per {first['protocol']['width'] * 1000:.0f} ms window, trained on "
                 f"{first['protocol'].get('n_train', '?')} training samples "
                 f"({first['protocol'].get('train_averaging', 'as given')}); top-1, chance "
                 f"{_fmt(first['chance']['top1'])}%). Significant windows: "
                 f"{sig_info.get('method', 'per-window interval above chance (uncorrected)')}, on "
                 f"{sig_info.get('statistic', 'top-1')}. The shaded band of the figure is the "
                 f"{first['protocol'].get('band', 'per-window interval')}, not a test. Pre-stimulus windows are a "
                 "sanity check: none should be significant (one that is points to a leak or an artefact). A significant cluster "
                 "says there is an effect somewhere in it; its first and last windows are not themselves tested "
                 "(Sassenhagen & Draschkow 2019), so read onsets with care.", ""]
    for s, tr in trs.items():
        t = np.asarray(tr["times"])
        a = np.asarray(tr["top1"])
        i = int(np.argmax(a))
        sig = np.asarray(tr["significant"], bool)
        info = tr.get("significance", {})
        clusters = [c for c in info.get("clusters", []) if c["p_value"] < info.get("alpha", 0.05)]
        if clusters:
            floor = info.get("p_floor")
            what = ", ".join(f"{c['start'] * 1000:.0f}-{c['stop'] * 1000:.0f} ms (p "
                             + (f"< {1 / info['n_permutations']:.2g}" if floor and c["p_value"] <= floor + 1e-12
                                else f"= {c['p_value']:.3g}") + ")" for c in clusters)
        else:
            what = ", ".join(f"{x * 1000:.0f} ms" for x in t[sig]) or "none"
        n_pre = int((t < 0).sum())
        pre = (f"pre-stimulus windows significant: {int((sig & (t < 0)).sum())} of {n_pre}" if n_pre else
               f"no pre-stimulus window to check (the first window is centred at {t[0] * 1000:.0f} ms)")
        lines.append(f"- sub-{s}: peak {_fmt(a[i])}% at {t[i] * 1000:.0f} ms; significant: {what}; {pre}")
    return lines
