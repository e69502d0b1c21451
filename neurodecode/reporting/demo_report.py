"""``<out>/report.md`` of ``neurodecode demo``: the stages, the decoding numbers, the reconstruction and its gallery.

The detailed reports stay where their stages wrote them (``evaluation/report.md``,
``reconstruction/report.md``); this one is the page a new user opens first.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

from neurodecode.reporting.recon_report import format_metric
from neurodecode.utils import atomic_write_text

__all__ = ["write_demo_report"]


def _rel(path: Path, base: Path) -> str:
    try:
        return path.resolve().relative_to(base.resolve()).as_posix()
    except ValueError:
        return path.as_posix()


def _recon_lines(recon_dir: Path, out: Path) -> list[str]:
    metrics_file = recon_dir / "metrics.json"
    if not metrics_file.is_file():
        return ["## Reconstruction", "", f"Not run ({metrics_file} is missing).", ""]
    m = json.loads(metrics_file.read_text())
    p = m.get("protocol", {})
    gen = p.get("generator", {})
    lines = ["## Reconstruction", "",
             f"sub-{p.get('subject')}'s {m['n_stimuli']} test images (never seen in training), drawn back from the "
             f"brain signal: encoder -> {p.get('prior_kind')} prior ({p.get('prior_steps')} steps, guidance "
             f"{p.get('prior_guidance')}) -> {gen.get('spec', '?')} ({gen.get('sampler', '')} {gen.get('steps')} steps, "
             f"guidance {gen.get('guidance')}), {m['n_samples']} sample(s) per image. *Ceiling*: the generator fed the "
             "teacher's own embeddings of the seen images; *chance*: the system's embeddings shuffled over images.", ""]
    pv = recon_dir / "prior_validation.json"
    if pv.is_file():
        v = json.loads(pv.read_text())
        lines += ["Stage 1, on the encoder's validation concepts (never the test set): the diffusion prior and the "
                  f"MLP aligner; the reconstruction uses the {v['chosen']} ({v['rule']}).", "",
                  "| prior | val cosine | val top-1 | val top-5 | candidates |", "|---|---|---|---|---|"]
        lines += [f"| {name}{' (chosen)' if name == v['chosen'] else ''} | {r['cosine']:.3f} | {r['top1']:.1%} | "
                  f"{r['top5']:.1%} | {r['n_candidates']} |" for name, r in v["priors"].items()]
        lines.append("")
    ret = m.get("retrieval", {})
    if ret:
        lines += ["Retrieval of the seen image among the test images, from each stage's output:", "",
                  "| stage | top-1 | top-5 | candidates |", "|---|---|---|---|"]
        lines += [f"| {stage} | {r['top1']:.1%} | {r['top5']:.1%} | {r['n_candidates']} |" for stage, r in ret.items()]
        lines.append("")
    refs = [r for r in ("ceiling", "chance") if m.get(r)]
    lines += ["| metric | this system | " + " | ".join(refs) + " |", "|---" * (2 + len(refs)) + "|"]
    for name, e in m.get("metrics", {}).items():
        kind = e.get("kind", "")
        cells = [format_metric(e.get("mean"), kind, sd=e.get("sd"))]
        if (e.get("vs_chance") or {}).get("p") is not None:
            cells[0] += f" (p = {e['vs_chance']['p']:.3g})"
        cells += [format_metric(m[r]["metrics"].get(name, {}).get("mean"), kind) for r in refs]
        lines.append(f"| {e.get('label', name)} {'↑' if e.get('higher_is_better', True) else '↓'} | "
                     + " | ".join(cells) + " |")
    lines.append("")
    skipped = m.get("skipped") or {}
    if skipped:
        lines += [f"Skipped (no local weights; never faked): {', '.join(skipped)}.", ""]
    gallery = recon_dir / "gallery.png"
    if gallery.is_file():
        lines += [f"![reconstruction gallery]({_rel(gallery, out)})", ""]
    lines += [f"Full reconstruction report: [{_rel(recon_dir / 'report.md', out)}]({_rel(recon_dir / 'report.md', out)})",
              ""]
    return lines


def write_demo_report(out: str | os.PathLike, stage_table: str, subject_lines: Sequence[str],
                      evaluation_report: str | os.PathLike, recon_dir: str | os.PathLike | None, *,
                      quick: bool = False) -> Path:
    """Write ``<out>/report.md`` (atomically).

    Parameters
    ----------
    out : path-like
        The demo's output folder.
    stage_table : str
        The closing table of the stages (seconds, key numbers).
    subject_lines : sequence of str
        One line of zero-shot retrieval numbers per subject.
    evaluation_report : path-like
        The evaluation's report (linked).
    recon_dir : path-like | None
        The reconstruction's folder (``metrics.json``, ``gallery.png``), ``None`` when not run.
    quick : bool
        A smoke run (said at the top: its numbers are near chance by design).

    Returns
    -------
    path : Path
    """
    out = Path(out)
    lines = ["# neurodecode demo", ""]
    if quick:
        lines += ["**A smoke run (--quick)**: every stage ran, on a tiny simulation with a few epochs; its numbers "
                  "are expected near chance. Run `neurodecode demo` without --quick for the real demo.", ""]
    lines += ["Simulated 63-channel EEG of people looking at procedurally drawn objects; nothing "
              "was downloaded.", "", "## Stages", "", "```", stage_table, "```", "",
              "## Which image was seen (zero-shot retrieval of held-out concepts)", ""]
    lines += [f"- {line.strip()}" for line in subject_lines]
    ev = Path(evaluation_report)
    lines += ["", f"Full evaluation report (confidence intervals, time-resolved decoding, ablations): "
              f"[{_rel(ev, out)}]({_rel(ev, out)})", ""]
    if recon_dir is not None:
        lines += _recon_lines(Path(recon_dir), out)
    return atomic_write_text(out / "report.md", "\n".join(lines))
