"""``neurodecode evaluate``: every number of a trained decoder, with its protocol, a report and figures.

:func:`evaluate` takes a checkpoint of ``neurodecode fit`` (or an exported folder), rebuilds its data
(the checkpoint knows its prepared folder, teacher and protocol; ``root``/``teacher`` override them)
and writes into ``out``:

``metrics.json``
    zero-shot k-way retrieval (k = 2, 4, 10, 50, 100, 200 and the full set; top-1/top-5; exact
    expectation over distractor draws and the field's seeded Monte-Carlo draws), median/mean rank,
    both directions, bootstrap confidence intervals, a permutation test against chance, CSLS
    (transductive, labelled and kept apart), zero-shot classification against concept prompts
    (when the cache has text embeddings), the noise ceiling (split-half reliability and
    identification of the test responses; the simulator's own ceiling for simulated data),
    time-resolved decoding, channel-region ablation and per-subject tables, each with the protocol
    that produced it (k, draws, seed, averaging, channels, checkpoint, data provenance);
``report.md``
    tables to paste into a paper, with confidence intervals;
``*.png``
    retrieval strips, the brain-by-image similarity matrix, accuracy vs k, the time-resolved curve,
    per-subject bars and the ablation bars.

Several checkpoints (e.g. intra-subject and leave-one-subject-out) are evaluated side by side, with
paired comparisons where they share a test set.
"""

from __future__ import annotations

import datetime as _dt
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from neurodecode._version import __version__
from neurodecode.utils import atomic_write_json, atomic_write_text, logger, progress, to_jsonable

HEADLINE_KS = (2, 4, 10, 50, 100, 200)


# --------------------------------------------------------------------------------------------------
# loading
# --------------------------------------------------------------------------------------------------
def load_for_evaluation(ckpt: str | Path, *, root: str | None = None, teacher: str | None = None,
                        extra_data: dict[str, Any] | None = None):
    """A trained model (eval mode) and its data module (rebuilt from the checkpoint's settings).

    Parameters
    ----------
    ckpt : path-like
        A ``.ckpt`` written by ``neurodecode fit``, or a folder written by ``neurodecode export``.
    root, teacher : str | None
        Override the prepared folder and the teacher recorded in the checkpoint.
    extra_data : dict | None
        Further data-module arguments to override.

    Returns
    -------
    model : torch.nn.Module
        Maps raw responses (and subject indices) to embeddings.
    dm : BrainImageDataModule
    info : dict
        Where the model came from (``checkpoint``, ``epoch``, ``kind``).
    """
    from neurodecode.training.data import BrainImageDataModule

    path = Path(ckpt)
    if path.is_dir():
        from neurodecode.training.export import from_pretrained

        model = from_pretrained(path)
        dm_args = dict(model.config.get("datamodule", {}))
        info = {"checkpoint": str(path), "kind": "exported", "epoch": model.config.get("epoch")}
    else:
        from neurodecode.training.lit import load_alignment_checkpoint

        model, raw = load_alignment_checkpoint(path)
        dm_args = dict(raw.get("datamodule_hyper_parameters", {}))
        info = {"checkpoint": str(path), "kind": "lightning", "epoch": raw.get("epoch")}
    import inspect

    allowed = set(inspect.signature(BrainImageDataModule.__init__).parameters) - {"self"}
    dm_args = {k: v for k, v in dm_args.items() if k in allowed}  # drop Lightning's bookkeeping keys
    if not dm_args:
        raise ValueError(f"{path}: holds no data settings; pass root= (--data.root) and teacher= (--data.teacher).")
    if root is not None:
        dm_args["root"] = str(root)
        dm_args["cache"] = None
    if teacher is not None:
        dm_args["teacher"] = teacher
    dm_args.update(extra_data or {})
    dm = BrainImageDataModule(**dm_args)
    return model.eval(), dm, info


@torch.no_grad()
def embed_set(model: torch.nn.Module, x: np.ndarray, subjects: np.ndarray, *, batch_size: int = 256,
              device: str = "cpu") -> np.ndarray:
    """Brain embeddings of samples ``x`` (raw responses) with their subject indices (-1: unseen)."""
    model = model.to(device)
    out = []
    for start in range(0, len(x), batch_size):
        xb = torch.as_tensor(x[start:start + batch_size], device=device)
        sb = torch.as_tensor(subjects[start:start + batch_size], device=device)
        out.append(model(xb, None if bool((sb < 0).all()) else sb).float().cpu())
    return torch.cat(out).numpy() if out else np.zeros((0, 0), np.float32)


# --------------------------------------------------------------------------------------------------
# the evaluation of one model
# --------------------------------------------------------------------------------------------------
def evaluate(
    ckpt: str | Path,
    out: str | Path,
    *,
    root: str | None = None,
    teacher: str | None = None,
    ks: Sequence[int] = HEADLINE_KS,
    tops: Sequence[int] = (1, 5),
    n_draws: int = 100,
    seed: int = 0,
    n_boot: int = 2000,
    n_permutations: int = 1000,
    csls_k: int | None = 10,
    time_resolved: bool = True,
    tr_width: float = 0.05,
    tr_step: float = 0.02,
    ablation: bool = True,
    figures: bool = True,
    device: str = "cpu",
    progress_bar: bool = True,
    label: str | None = None,
) -> dict[str, Any]:
    """Evaluate a checkpoint and write ``metrics.json``, ``report.md`` and figures into ``out``.

    Parameters
    ----------
    ckpt : path-like
        Checkpoint or exported folder.
    out : path-like
        Output folder.
    root, teacher : str | None
        Override the data recorded in the checkpoint.
    ks, tops : sequences of int
        k-way sizes and top-n values (k larger than the test set is skipped; the full set is
        always reported).
    n_draws, seed : int
        Monte-Carlo distractor draws and their seed (the field's protocol, reported next to the
        exact expectation).
    n_boot : int
        Bootstrap resamples for confidence intervals.
    n_permutations : int
        Permutations of the test against chance.
    csls_k : int | None
        Neighbourhood of the transductive CSLS numbers (``None``: skip).
    time_resolved : bool
        Run time-resolved decoding (EEG/MEG).
    tr_width, tr_step : float
        Its sliding window (s).
    ablation : bool
        Evaluate with each channel region removed (EEG/MEG with 10-10 names).
    figures : bool
        Write PNG figures.
    device : str
        Where to run the model.
    progress_bar : bool
        Show progress.
    label : str | None
        Name of this model in reports (default: protocol and subject).

    Returns
    -------
    metrics : dict
        What ``metrics.json`` holds.
    """
    from neurodecode.io.channels import regions
    from neurodecode.evaluation.ceiling import group_repetitions, split_half_identification, split_half_reliability
    from neurodecode.evaluation.retrieval import zero_shot_retrieval
    from neurodecode.evaluation.stats import bootstrap_ci, retrieval_permutation_test

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model, dm, info = load_for_evaluation(ckpt, root=root, teacher=teacher)
    dm.setup("test")
    test = dm.sets["test"]
    images = np.asarray(dm.image_embeddings)
    if label is None:
        label = "joint" if dm.hparams.protocol == "joint" else f"{dm.hparams.protocol}-sub{dm.subject}"
    x_test = test.data if test.data is not None else np.stack([test.signals(i) for i in range(len(test))])
    emb = embed_set(model, x_test, test.subjects, device=device)
    subj_label = {i: s for s, i in dm.subject_index.items()}
    subj_label[-1] = dm.subject
    metrics: dict[str, Any] = {
        "label": label,
        "model": {**info, "encoder": getattr(getattr(model, "encoder", None), "encoder_name", None)},
        "data": dm.describe(),
        "protocol": {
            "retrieval": "zero-shot: test images and concepts never seen in training; candidates are the test "
                         "images of the subject",
            "test_averaging": "responses to each test image averaged over its repetitions"
            if dm.hparams.average_test_reps else "single trials",
            "ks": list(ks), "tops": list(tops), "n_draws": n_draws, "seed": seed, "n_boot": n_boot,
            "n_permutations": n_permutations, "similarity": "cosine", "ties": "pessimistic",
        },
        "subjects": {},
        "neurodecode_version": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    figs_data: dict[str, Any] = {}
    for s in np.unique(test.subjects):
        name = subj_label.get(int(s), str(s))
        mask = test.subjects == s
        rows = test.stim_rows[mask]
        cand, targets = np.unique(rows, return_inverse=True)
        one_to_one = len(cand) == mask.sum()
        directions = ("brain_to_image", "image_to_brain") if one_to_one else ("brain_to_image",)
        e = emb[mask]
        exact = zero_shot_retrieval(e, images[cand], targets=targets, ks=ks, tops=tops, full=True,
                                    directions=directions, csls_k=csls_k, per_item=True)
        mc = zero_shot_retrieval(e, images[cand], targets=targets, ks=[k for k in ks if k <= len(cand)],
                                 tops=tops, full=False, directions=("brain_to_image",), method="monte_carlo",
                                 n_draws=n_draws, seed=seed)
        items = exact.pop("per_item")["inductive"]["brain_to_image"]
        ci = {}
        for key, v in items.items():
            if key.startswith("top") and (key.endswith("_full") or key.endswith("2way") or key.endswith("200way")):
                ci[key] = bootstrap_ci(np.asarray(v, float), n_resamples=n_boot, seed=seed)
        perm = retrieval_permutation_test(e, images[cand], targets=targets, k=None, top=1,
                                          n_permutations=n_permutations, seed=seed)
        subj = {"n_test": int(mask.sum()), "n_candidates": int(len(cand)), "retrieval": exact,
                "retrieval_monte_carlo": mc, "confidence_intervals": ci, "permutation_test": perm,
                # per test item, in the order of the stimulus ids listed (for paired comparisons)
                "per_item": {"stimulus_id": dm.dataset.stimuli.stimulus_id[rows].tolist(),
                             "top1_full": np.asarray(items["top1_full"]).tolist(),
                             "rank": np.asarray(items["rank"]).tolist()}}
        # zero-shot classification against concept prompts, when the cache has text embeddings
        text = _text_embeddings(dm)
        if text is not None:
            from neurodecode.evaluation.classification import zero_shot_classification

            concepts = dm.dataset.stimuli.concept
            classes, lab = np.unique(concepts[rows], return_inverse=True)
            tex = text(classes)
            subj["zero_shot_classification"] = zero_shot_classification(e, tex, lab, tops=[t for t in tops
                                                                                           if t <= len(classes)])
        metrics["subjects"][name] = subj
        figs_data[name] = {"emb": e, "cand": cand, "targets": targets}
    # noise ceiling from the single test trials
    metrics["noise_ceiling"] = _noise_ceiling(dm, group_repetitions, split_half_reliability,
                                              split_half_identification, ks, tops, seed)
    # per-subject summary and mean +- sd
    metrics["summary"] = _summary(metrics["subjects"])
    if dm.modality != "fmri" and time_resolved and dm.n_times >= 4:
        metrics["time_resolved"] = _time_resolved(dm, tr_width, tr_step, seed, n_boot, progress_bar)
    if dm.modality != "fmri" and ablation:
        regs = regions(dm.ch_names)
        if len(regs) >= 2:
            metrics["ablation"] = _ablation(model, dm, x_test, test, images, regs, device)
    ceiling_file = Path(dm.root) / "ceiling.json"
    if ceiling_file.is_file():
        sim = json.loads(ceiling_file.read_text())
        metrics["simulator_ceiling"] = {s: sim["per_subject"][s] for s in metrics["subjects"] if s in sim["per_subject"]}
        metrics["simulator_ceiling_note"] = sim.get("what")
        fr = {}
        for s, v in metrics["subjects"].items():
            c = sim["per_subject"].get(s)
            key = "top1_full"
            if c and sim.get("n_way") == v["n_candidates"]:
                fr[s] = v["retrieval"]["inductive"]["brain_to_image"][key] / c["top1"]
        if fr:
            metrics["fraction_of_simulator_ceiling_top1"] = fr
    if figures:
        metrics["figures"] = _figures(out, metrics, dm, figs_data, images)
    atomic_write_json(out / "metrics.json", to_jsonable(metrics))
    atomic_write_text(out / "report.md", render_report([metrics]))
    logger.info(f"evaluation of {ckpt} -> {out}")
    return metrics


def _text_embeddings(dm):
    from neurodecode.teachers.cache import EmbeddingCache

    cache = EmbeddingCache(dm.hparams.cache or Path(dm.root) / "embeddings.h5")
    if not cache.has(dm.hparams.teacher, "text"):
        return None
    return lambda classes: cache.get(dm.hparams.teacher, "text", ids=[str(c) for c in classes])


def _noise_ceiling(dm, group_repetitions, split_half_reliability, split_half_identification, ks, tops, seed):
    out = {}
    for s in dm.test_subjects:
        st = dm.dataset.stores[s]
        idx = np.flatnonzero(st.split == "test")
        if len(idx) == 0:
            continue
        ids = st.stimulus_id[idx]
        _, counts = np.unique(ids, return_counts=True)
        if counts.min() < 2 or len(counts) < 3:
            out[s] = {"note": "fewer than 2 repetitions per test image: no split-half ceiling"}
            continue
        x = st.get_signals(idx)
        if dm.modality != "fmri":
            x = x[:, st.pick_indices(dm.ch_names)][..., dm._time_slice]
        resp, _ = group_repetitions(x, ids)
        rel = split_half_reliability(resp, n_splits=20, seed=seed)
        ident = split_half_identification(resp, ks=ks, tops=tops, n_splits=10, seed=seed)
        out[s] = {"split_half_reliability": {k: v for k, v in rel.items() if k not in ("per_feature", "split_half_r")},
                  "split_half_identification": ident}
    return out


def _summary(subjects: dict[str, Any]) -> dict[str, Any]:
    from neurodecode.evaluation.stats import mean_sd

    keys = None
    for v in subjects.values():
        k = set(v["retrieval"]["inductive"]["brain_to_image"])
        keys = k if keys is None else keys & k
    rows = {}
    for key in sorted(keys or []):
        vals = [v["retrieval"]["inductive"]["brain_to_image"][key] for v in subjects.values()]
        if all(isinstance(x, int | float) for x in vals):
            rows[key] = mean_sd(vals)
    return {"brain_to_image": rows, "n_subjects": len(subjects)}


def _time_resolved(dm, width, step, seed, n_boot, progress_bar):
    from neurodecode.evaluation.time_resolved import time_resolved_retrieval

    dm.setup("fit")
    train, test = dm.sets["train"], dm.sets["test"]
    xs = lambda ts: ts.data if ts.data is not None else np.stack([ts.signals(i) for i in range(len(ts))])  # noqa: E731
    results = {}
    for s in np.unique(test.subjects):
        mask = test.subjects == s
        rows = test.stim_rows[mask]
        cand, targets = np.unique(rows, return_inverse=True)
        images = np.asarray(dm.image_embeddings)
        res = time_resolved_retrieval(xs(train), images[train.stim_rows], xs(test)[mask], images[cand], targets,
                                      dm.times, width=width, step=step, n_boot=n_boot, seed=seed,
                                      progress_bar=progress_bar)
        name = {i: n for n, i in dm.subject_index.items()}.get(int(s), dm.subject)
        results[name] = res
    return results


def _ablation(model, dm, x_test, test, images, regs, device):
    """Retrieval with each region's channels replaced by their training mean (zero after normalisation)."""
    from neurodecode.evaluation.retrieval import zero_shot_retrieval

    stats = dm.input_stats()
    mean = stats["mean"][None, :, None]

    def score(x):
        e = embed_set(model, x, test.subjects, device=device)
        res = {}
        for s in np.unique(test.subjects):
            m = test.subjects == s
            cand, targets = np.unique(test.stim_rows[m], return_inverse=True)
            r = zero_shot_retrieval(e[m], images[cand], targets=targets, ks=[], tops=[1, 5], full=True,
                                    directions=("brain_to_image",))
            res[s] = r["inductive"]["brain_to_image"]
        return {k: float(np.mean([v[k] for v in res.values()])) for k in ("top1_full", "top5_full")}

    out = {"method": "occlusion: the region's channels set to their training mean at test time (no retraining); "
                     "retrain with --data.channels to measure a model trained without them",
           "baseline": score(x_test), "regions": {}}
    names = dm.ch_names
    for reg, chans in regs.items():
        idx = [names.index(c) for c in chans]
        x = x_test.copy()
        x[:, idx, :] = np.broadcast_to(mean[:, idx, :], x[:, idx, :].shape)
        out["regions"][reg] = {"channels": chans, **score(x)}
    return out


def _figures(out: Path, metrics: dict[str, Any], dm, figs_data: dict[str, Any], images: np.ndarray) -> dict[str, str]:
    from neurodecode.reporting import figures as viz
    from neurodecode.evaluation.retrieval import similarity_matrix

    written = {}
    table = dm.dataset.stimuli
    first = next(iter(figs_data))
    d = figs_data[first]
    sim = similarity_matrix(d["emb"], images[d["cand"]]).numpy()
    order = np.argsort(d["targets"], kind="stable")
    sim_sorted = sim[order]
    names = table.concept[d["cand"]]
    title_data = Path(dm.root).name
    fig = viz.plot_similarity_matrix(sim_sorted, labels=list(names) if len(names) <= 40 else None,
                                     title=f"brain x image cosine similarity, sub-{first} ({title_data}, "
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
                                       title=f"seen image and top-{k} guesses, sub-{first} "
                                             f"({len(d['cand'])}-way zero-shot retrieval)")
        written["retrieval_strip"] = str(viz.save_figure(fig, out / "retrieval_strip.png").name)
    # accuracy vs k
    r = metrics["subjects"][first]["retrieval"]["inductive"]["brain_to_image"]
    n = metrics["subjects"][first]["n_candidates"]
    ks = sorted({int(k.split("_")[1].removesuffix("way")) for k in r if k.endswith("way")} | {n})
    acc = {}
    for t in (1, 5):  # top-n is undefined where n > k: a gap (NaN) in the curve
        vals = [r.get(f"top{t}_full" if k == n else f"top{t}_{k}way", float("nan")) for k in ks]
        if np.isfinite(vals).any():
            acc[f"top-{t}"] = vals
    fig = viz.plot_accuracy_vs_k(ks, acc, title=f"zero-shot retrieval accuracy vs k, sub-{first} ({title_data})")
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
                                title=f"zero-shot top-1 per subject ({title_data}, {dm.hparams.protocol})")
    written["per_subject"] = str(viz.save_figure(fig, out / "per_subject.png").name)
    if "time_resolved" in metrics:
        tr = metrics["time_resolved"]
        name = next(iter(tr))
        res = tr[name]
        fig = viz.plot_time_resolved(np.asarray(res["times"]), np.asarray(res["top1"]),
                                     ci_low=np.asarray(res["top1_ci_low"]), ci_high=np.asarray(res["top1_ci_high"]),
                                     chance=res["chance"]["top1"], significant=np.asarray(res["significant"]),
                                     ylabel=f"top-1 accuracy ({res['protocol']['k']}-way)",
                                     title=f"time-resolved zero-shot retrieval, sub-{name} (ridge per "
                                           f"{int(res['protocol']['width'] * 1000)} ms window)")
        written["time_resolved"] = str(viz.save_figure(fig, out / "time_resolved.png").name)
    if "ablation" in metrics:
        ab = metrics["ablation"]
        regs = list(ab["regions"])
        fig = viz.plot_ablation(regs, ab["baseline"]["top1_full"], [ab["regions"][g]["top1_full"] for g in regs],
                                chance=chance, ylabel="top-1 accuracy (full test set)",
                                title=f"region ablation (occlusion at test time), {title_data}")
        written["ablation"] = str(viz.save_figure(fig, out / "ablation.png").name)
    return written


def _image_of(table, row: int):
    p = table.image_file(int(row))
    if p is None or not p.exists():
        return None
    if p.is_dir():
        files = sorted(f for f in p.iterdir() if f.suffix.lower() in (".png", ".jpg", ".jpeg", ".bmp", ".webp"))
        return files[0] if files else None
    return p


# --------------------------------------------------------------------------------------------------
# several models side by side
# --------------------------------------------------------------------------------------------------
def compare(results: Sequence[dict[str, Any]], per_items: Sequence[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Per-subject table of several evaluated models (e.g. intra-subject vs leave-one-subject-out)."""
    table = {}
    for r in results:
        for s, v in r["subjects"].items():
            m = v["retrieval"]["inductive"]["brain_to_image"]
            table.setdefault(s, {})[r["label"]] = {k: m[k] for k in ("top1_full", "top5_full") if k in m}
    return {"per_subject": table, "models": [r["label"] for r in results]}


def _fmt(x: float | None, scale: float = 100.0) -> str:
    return "–" if x is None else f"{x * scale:.1f}"


def render_report(results: Sequence[dict[str, Any]], comparison: dict[str, Any] | None = None) -> str:
    """Markdown report of one or several :func:`evaluate` results."""
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


def evaluate_many(ckpts: Sequence[str | Path], out: str | Path, **kwargs: Any) -> dict[str, Any]:
    """Evaluate several checkpoints into ``out/<label>/`` and write a side-by-side ``out/report.md``."""
    from neurodecode.evaluation.stats import paired_comparison

    out = Path(out)
    results = []
    for i, c in enumerate(progress(ckpts, enabled=False)):
        res = evaluate(c, out / f"model{i + 1}", **kwargs)
        results.append(res)
    comp = compare(results)
    paired = []
    for s in comp["per_subject"]:
        have = [r for r in results if s in r["subjects"]]
        for i in range(len(have)):
            for j in range(i + 1, len(have)):
                a = _per_item_hits(have[i], s)
                b = _per_item_hits(have[j], s)
                if a is not None and b is not None and np.array_equal(a[0], b[0]):  # same test items
                    pc = paired_comparison(a[1], b[1])
                    paired.append({"subject": s, "a": have[i]["label"], "b": have[j]["label"], **pc})
    comp["paired"] = paired
    atomic_write_json(out / "comparison.json", to_jsonable(comp))
    atomic_write_text(out / "report.md", render_report(results, comp))
    return comp


def _per_item_hits(result: dict[str, Any], subject: str) -> tuple[np.ndarray, np.ndarray] | None:
    """Stimulus ids and per-item top-1 hits, ordered by id (so two models' items line up)."""
    v = result["subjects"][subject].get("per_item")
    if v is None:
        return None
    ids = np.asarray(v["stimulus_id"])
    order = np.argsort(ids)
    return ids[order], np.asarray(v["top1_full"])[order]
