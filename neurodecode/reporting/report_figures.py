"""The PNG figures of one evaluation, drawn from its metrics and the test subjects' embeddings.

:func:`write_figures` is called by :func:`neurodecode.reporting.evaluate.evaluate`; it draws with the
plain-array functions of :mod:`neurodecode.reporting.figures` and writes ``similarity_matrix.png``,
``retrieval_strip.png`` (when the stimulus images are on disk), ``accuracy_vs_k.png``,
``per_subject.png`` and, when the metrics hold them, ``time_resolved.png`` and ``ablation.png``.
Accuracy vs k, the per-subject bars, the time-resolved curves and the ablation show every test
subject; the similarity matrix and the retrieval strip show one (the first, named in the title and in
``metrics["figure_subjects"]``), since they are drawn per subject.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from neurodecode.evaluation.retrieval import similarity_matrix
from neurodecode.reporting import figures as viz

__all__ = ["write_figures"]

def write_figures(out: Path, metrics: dict[str, Any], dm: Any, figs_data: dict[str, Any],
                  images: np.ndarray) -> dict[str, str]:
    """Draw the figures of one evaluation into ``out``.

    Parameters
    ----------
    out : pathlib.Path
        Output folder (exists).
    metrics : dict
        The metrics of the evaluation (``subjects``, ``summary`` and, when computed, ``time_resolved``
        and ``ablation``).
    dm : BrainImageDataModule
        The data module evaluated (its stimulus table, folder and protocol name the figures).
    figs_data : dict
        Per test subject: ``emb`` (brain embeddings of the test set), ``cand`` (stimulus-table rows of
        the candidate images) and ``targets`` (index of each response's true candidate). The first
        subject is drawn.
    images : numpy.ndarray, shape (n_stimuli, dim)
        Teacher embeddings of every stimulus of the table.

    Returns
    -------
    written : dict of str to str
        Figure name -> file name (relative to ``out``). ``metrics["figure_subjects"]`` is set to which
        subjects each figure shows.
    """
    written = {}
    table = dm.dataset.stimuli
    first = next(iter(figs_data))
    d = figs_data[first]
    n_subj = len(figs_data)
    one = (f"sub-{first} only (the first of {n_subj} test subjects; the others' numbers are in the tables)"
           if n_subj > 1 else f"sub-{first}")
    every = f"all {n_subj} test subjects" if n_subj > 1 else f"sub-{first}"
    shown = {"similarity_matrix": one, "retrieval_strip": one, "accuracy_vs_k": every, "per_subject": every}
    which = f"sub-{first}" + (f", first of {n_subj} test subjects" if n_subj > 1 else "")
    sim = similarity_matrix(d["emb"], images[d["cand"]]).numpy()
    order = np.argsort(d["targets"], kind="stable")
    sim_sorted = sim[order]
    names = table.concept[d["cand"]]
    title_data = Path(dm.root).name
    fig = viz.plot_similarity_matrix(sim_sorted, labels=list(names) if len(names) <= 40 else None,
                                     title=f"brain x image cosine similarity, {which} ({title_data}, "
                                           f"{len(d['cand'])} test images)")
    written["similarity_matrix"] = str(viz.save_figure(fig, out / "similarity_matrix.png").name)
    # retrieval strip: the seen image and the top-5 guesses
    n_rows = min(8, len(sim))
    rows = np.linspace(0, len(sim) - 1, n_rows).round().astype(int)
    k = min(5, sim.shape[1])
    seen, guesses, hits, glabels, slabels, scores = [], [], [], [], [], []
    for r in rows:
        top = np.argsort(-sim[r])[:k]
        seen.append(_image_of(table, d["cand"][d["targets"][r]]))
        guesses.append([_image_of(table, d["cand"][j]) for j in top])
        hits.append([bool(j == d["targets"][r]) for j in top])
        slabels.append(str(table.concept[d["cand"][d["targets"][r]]]))
        glabels.append([str(table.concept[d["cand"][j]]) for j in top])
        scores.append([float(sim[r, j]) for j in top])
    if all(im is not None for im in seen):
        fig = viz.plot_retrieval_strip(seen, guesses, hits, seen_labels=slabels, guess_labels=glabels, scores=scores,
                                       n_total=len(sim), n_candidates=sim.shape[1],
                                       title=f"seen image and top-{k} guesses, {which} "
                                             f"({len(d['cand'])}-way zero-shot retrieval)")
        written["retrieval_strip"] = str(viz.save_figure(fig, out / "retrieval_strip.png").name)
    # accuracy vs k: top-1 of every subject, top-5 of the first (or the mean across subjects)
    ks: set[int] = set()
    for v in metrics["subjects"].values():
        r = v["retrieval"]["inductive"]["brain_to_image"]
        ks |= {int(k.split("_")[1].removesuffix("way")) for k in r if k.endswith("way")} | {v["n_candidates"]}
    ks = sorted(ks)

    def curve(v: dict, t: int) -> list[float]:  # top-n is undefined where n > k: a gap (NaN) in the curve
        r, n = v["retrieval"]["inductive"]["brain_to_image"], v["n_candidates"]
        return [r.get(f"top{t}_full" if k == n else f"top{t}_{k}way", float("nan")) if k <= n else float("nan")
                for k in ks]

    acc = {}
    for s, v in metrics["subjects"].items():
        acc[f"sub-{s} top-1"] = curve(v, 1)
    c5 = np.array([curve(v, 5) for v in metrics["subjects"].values()])
    n5 = np.isfinite(c5).sum(0)
    top5 = np.where(n5 > 0, np.nansum(c5, 0) / np.maximum(n5, 1), np.nan)  # mean over the subjects that have it
    if np.isfinite(top5).any():
        acc["mean top-5" if n_subj > 1 else f"sub-{first} top-5"] = list(top5)
    fig = viz.plot_accuracy_vs_k(ks, acc, title=f"zero-shot retrieval accuracy vs k, {every} ({title_data})")
    written["accuracy_vs_k"] = str(viz.save_figure(fig, out / "accuracy_vs_k.png").name)
    # per-subject bars
    subs = list(metrics["subjects"])
    vals = [metrics["subjects"][s]["retrieval"]["inductive"]["brain_to_image"]["top1_full"] for s in subs]
    errs = []
    for s in subs:
        c = metrics["subjects"][s]["confidence_intervals"].get("top1_full")
        errs.append((c["estimate"] - c["low"], c["high"] - c["estimate"]) if c else (0.0, 0.0))
    chance = 1 / metrics["subjects"][subs[0]]["n_candidates"]
    fig = viz.plot_subject_bars([f"sub-{s}" for s in subs], vals, errors=np.array(errs).T, chance=chance,
                                ylabel=f"top-1 accuracy ({metrics['subjects'][subs[0]]['n_candidates']}-way)",
                                error_label="95% bootstrap interval over the subject's test images "
                                            f"({metrics['protocol'].get('n_boot')} resamples, BCa)",
                                title=f"zero-shot top-1 per subject ({title_data}, {dm.hparams.protocol})")
    written["per_subject"] = str(viz.save_figure(fig, out / "per_subject.png").name)
    if "time_resolved" in metrics:
        tr = metrics["time_resolved"]
        res = next(iter(tr.values()))
        key = (lambda s: f"sub-{s}") if len(tr) > 1 else (lambda s: "top-1")
        sig_info = res.get("significance", {})
        fig = viz.plot_time_resolved(np.asarray(res["times"]), {key(s): np.asarray(v["top1"]) for s, v in tr.items()},
                                     ci_low={key(s): np.asarray(v["top1_ci_low"]) for s, v in tr.items()},
                                     ci_high={key(s): np.asarray(v["top1_ci_high"]) for s, v in tr.items()},
                                     chance=res["chance"]["top1"],
                                     significant={key(s): np.asarray(v["significant"]) for s, v in tr.items()},
                                     ylabel=f"top-1 accuracy ({res['protocol']['k']}-way)",
                                     band_label=res["protocol"].get("band", "confidence band"),
                                     significance_label="windows significant with the error controlled across "
                                                        f"windows ({sig_info.get('correction', 'uncorrected')}"
                                                        f"{', p < ' + str(sig_info['alpha']) if 'alpha' in sig_info else ''})",
                                     title=f"time-resolved zero-shot retrieval, {every} (ridge per "
                                           f"{int(res['protocol']['width'] * 1000)} ms window)")
        written["time_resolved"] = str(viz.save_figure(fig, out / "time_resolved.png").name)
        shown["time_resolved"] = every
    if "ablation" in metrics:
        ab = metrics["ablation"]
        regs = list(ab["regions"])
        cis = [ab["regions"][g].get("top1_full_ci") for g in regs]
        errs = None if None in cis else [(c["high"] - c["low"]) / 2 for c in cis]
        fig = viz.plot_ablation(regs, ab["baseline"]["top1_full"], [ab["regions"][g]["top1_full"] for g in regs],
                                errors=errs, chance=chance,
                                ylabel="top-1 accuracy (full test set)",
                                title=f"region ablation (occlusion at test time), {title_data}"
                                      + ("; error bars: 95% bootstrap interval over test items" if errs else ""))
        written["ablation"] = str(viz.save_figure(fig, out / "ablation.png").name)
        shown["ablation"] = f"mean over {every}" if n_subj > 1 else every
    metrics["figure_subjects"] = {k: v for k, v in shown.items() if k in written}
    return written


def _image_of(table: Any, row: int) -> Path | None:
    """The image file of stimulus-table row ``row`` (the first image of a folder), or None when absent."""
    p = table.image_file(int(row))
    if p is None or not p.exists():
        return None
    if p.is_dir():
        files = sorted(f for f in p.iterdir() if f.suffix.lower() in (".png", ".jpg", ".jpeg", ".bmp", ".webp"))
        return files[0] if files else None
    return p

