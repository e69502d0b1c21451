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
    tables to paste into a paper, with confidence intervals (:mod:`neurodecode.reporting.report`);
``*.png``
    retrieval strips, the brain-by-image similarity matrix, accuracy vs k, the time-resolved curve,
    per-subject bars and the ablation bars (:mod:`neurodecode.reporting.report_figures`).

Several checkpoints (e.g. intra-subject and leave-one-subject-out) are evaluated side by side, with
paired comparisons where they share a test set, by :func:`neurodecode.reporting.compare.evaluate_many`.

Speed: the evaluation runs with one torch and one BLAS thread (``threads=1``; its operations are
small, and two thread pools on a few shared cores stall each other, see
:mod:`neurodecode.evaluation.threads`) and decodes the time windows side by side (``n_jobs``,
:func:`neurodecode.evaluation.window_ridge.fit_windows`); the numbers are those of the plain path
(``threads=None, n_jobs=1``). ``benchmarks/eval_speed.py`` times both.
"""

from __future__ import annotations

import datetime as _dt
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from neurodecode._version import __version__
from neurodecode.evaluation.threads import with_thread_limits
from neurodecode.reporting.report import render_report
from neurodecode.reporting.report_figures import write_figures
from neurodecode.training.loading import data_sizes, embed_set, evaluation_targets, load_for_evaluation
from neurodecode.utils import atomic_write_json, atomic_write_text, logger, to_jsonable

__all__ = ["HEADLINE_KS", "NOISE_CEILING_NOTE", "data_sizes", "embed_set", "evaluate", "load_for_evaluation"]  # the loaders re-exported from training.loading

#: The k of the k-way retrieval numbers reported by default (the full test set is always added).
HEADLINE_KS = (2, 4, 10, 50, 100, 200)

#: What the split-half noise ceiling is (and is not), written next to it in metrics.json and report.md.
NOISE_CEILING_NOTE = ("a ceiling of a different quantity: identification of the test responses from one half of "
                      "their repetitions by the other half (single split-halves, pattern correlation, no model), not "
                      "the model's retrieval from responses averaged over all repetitions; a decoder averaging all "
                      "repetitions and using the teacher's embedding space can exceed it")


# --------------------------------------------------------------------------------------------------
# the evaluation of one model
# --------------------------------------------------------------------------------------------------
@with_thread_limits  # runs inside thread_limits(threads)
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
    tr_correction: str = "cluster",
    ablation: bool = True,
    figures: bool = True,
    device: str = "cpu",
    progress_bar: bool = True,
    label: str | None = None,
    threads: int | None = 1,
    n_jobs: int | None = None,
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
    tr_correction : str
        How its windows are called significant with the error controlled across windows:
        ``"cluster"`` (cluster-based permutation test, MNE) or ``"fdr"`` (Benjamini-Hochberg); see
        :func:`neurodecode.evaluation.significance.window_significance`.
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
    threads : int | None
        Threads of torch and of BLAS while evaluating (default 1: the operations are small and one
        thread is fastest, see :mod:`neurodecode.evaluation.threads`); ``None`` leaves them as they are.
    n_jobs : int | None
        Time windows decoded side by side (threads; ``None``: the cores this process may use); see
        :func:`neurodecode.evaluation.window_ridge.fit_windows`. The numbers do not depend on it.

    Returns
    -------
    metrics : dict
        What ``metrics.json`` holds.
    """
    from neurodecode.evaluation.retrieval import zero_shot_retrieval
    from neurodecode.evaluation.stats import bootstrap_ci, retrieval_permutation_test

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model, dm, info = load_for_evaluation(ckpt, root=root, teacher=teacher)
    dm.setup("fit")
    dm.setup("test")
    test = dm.sets["test"]
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
        "data_sizes": data_sizes(dm),
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
        # the targets the encoder predicts: the image embeddings, or a learned layer mix of this subject
        images = evaluation_targets(dm, cand, int(s))
        exact = zero_shot_retrieval(e, images, targets=targets, ks=ks, tops=tops, full=True,
                                    directions=directions, csls_k=csls_k, per_item=True)
        mc = zero_shot_retrieval(e, images, targets=targets, ks=[k for k in ks if k <= len(cand)],
                                 tops=tops, full=False, directions=("brain_to_image",), method="monte_carlo",
                                 n_draws=n_draws, seed=seed)
        items = exact.pop("per_item")["inductive"]["brain_to_image"]
        ci = {}
        for key, v in items.items():
            if key.startswith("top") and (key.endswith("_full") or key.endswith("2way") or key.endswith("200way")):
                ci[key] = bootstrap_ci(np.asarray(v, float), n_resamples=n_boot, seed=seed)
        perm = retrieval_permutation_test(e, images, targets=targets, k=None, top=1,
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
        figs_data[name] = {"emb": e, "cand": cand, "targets": targets, "subject": int(s)}
    # noise ceiling from the single test trials
    metrics["noise_ceiling"] = _noise_ceiling(dm, ks, tops, seed)
    metrics["noise_ceiling_note"] = NOISE_CEILING_NOTE
    # per-subject summary and mean +- sd
    metrics["summary"] = _summary(metrics["subjects"])
    if dm.modality != "fmri" and time_resolved and dm.n_times >= 4:
        metrics["time_resolved"] = _time_resolved(dm, tr_width, tr_step, seed, n_boot, progress_bar,
                                                  correction=tr_correction, n_permutations=n_permutations,
                                                  n_jobs=n_jobs, blas_threads=threads)
    if dm.modality != "fmri" and ablation:
        from neurodecode.io.channels import regions

        regs = regions(dm.ch_names)
        if len(regs) >= 2:
            metrics["ablation"] = _ablation(model, dm, x_test, test, regs, device, n_boot, seed)
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
    if figures:  # every stimulus's targets, as the first test subject's model predicts them (its figures)
        first = next(iter(figs_data.values()))["subject"]
        all_rows = np.arange(len(dm.dataset.stimuli))
        metrics["figures"] = write_figures(out, metrics, dm, figs_data, evaluation_targets(dm, all_rows, first))
    atomic_write_json(out / "metrics.json", to_jsonable(metrics))
    atomic_write_text(out / "report.md", render_report([metrics]))
    logger.info(f"evaluation of {ckpt} -> {out}")
    return metrics


def _text_embeddings(dm):
    """A function concept names -> text embeddings of the teacher, or None when the cache has none."""
    from neurodecode.teachers.cache import EmbeddingCache

    cache = EmbeddingCache(dm.hparams.cache or Path(dm.root) / "embeddings.h5")
    if not cache.has(dm.hparams.teacher, "text"):
        return None
    return lambda classes: cache.get(dm.hparams.teacher, "text", ids=[str(c) for c in classes])


def _noise_ceiling(dm, ks: Sequence[int], tops: Sequence[int], seed: int) -> dict[str, Any]:
    """Split-half reliability and identification of each test subject's single test trials."""
    from neurodecode.evaluation.ceiling import (
        group_repetitions,
        split_half_identification,
        split_half_reliability,
    )

    time_slice = dm.sets["test"].time_slice
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
            x = x[:, st.pick_indices(dm.ch_names)][..., time_slice]
        resp, _ = group_repetitions(x, ids)
        rel = split_half_reliability(resp, n_splits=20, seed=seed)
        ident = split_half_identification(resp, ks=ks, tops=tops, n_splits=10, seed=seed)
        out[s] = {"split_half_reliability": {k: v for k, v in rel.items() if k not in ("per_feature", "split_half_r")},
                  "split_half_identification": ident}
    return out


def _summary(subjects: dict[str, Any]) -> dict[str, Any]:
    """Mean and sd across subjects of every brain-to-image number they all have."""
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


def _time_resolved(dm, width: float, step: float, seed: int, n_boot: int, progress_bar: bool,
                   correction: str = "cluster", n_permutations: int = 1000, n_jobs: int | None = None,
                   blas_threads: int | None = 1) -> dict[str, Any]:
    """Time-resolved retrieval of each test subject: a ridge per window, trained once on the training set.

    Training repetitions are averaged per (subject, stimulus) first when the data module does not
    already average them (the field's protocol); one decoder per window then scores every test subject.
    """
    from neurodecode.evaluation.time_resolved import time_resolved_retrieval_sets

    dm.setup("fit")
    train, test = dm.sets["train"], dm.sets["test"]
    xs = lambda ts: ts.data if ts.data is not None else np.stack([ts.signals(i) for i in range(len(ts))])  # noqa: E731
    x_test = xs(test)
    names = {i: n for n, i in dm.subject_index.items()}
    tests = {}
    for s in np.unique(test.subjects):
        mask = test.subjects == s
        cand, targets = np.unique(test.stim_rows[mask], return_inverse=True)
        tests[names.get(int(s), dm.subject)] = (x_test[mask], evaluation_targets(dm, cand, int(s)), targets)
    groups = None if dm.hparams.average_train_reps else list(zip(train.subjects.tolist(), train.stim_rows.tolist(),
                                                                 strict=True))
    y_train = evaluation_targets(dm, train.stim_rows, train.subjects)
    res = time_resolved_retrieval_sets(xs(train), y_train, tests, dm.times, train_groups=groups,
                                       width=width, step=step, n_boot=n_boot, seed=seed, correction=correction,
                                       n_permutations=n_permutations, progress_bar=progress_bar, n_jobs=n_jobs,
                                       blas_threads=blas_threads)
    for r in res.values() if groups is None else ():  # the data module averaged them already
        r["protocol"]["train_averaging"] = "repetitions averaged per (subject, stimulus) by the data module"
    return res


def _ablation(model, dm, x_test, test, regs, device, n_boot: int = 2000, seed: int = 0):
    """Retrieval with each region's channels replaced by their training mean (zero after normalisation).

    Each number comes with a bootstrap interval over test items, and each change from the baseline with
    a paired bootstrap interval (the same items resampled with and without the region).
    """
    from neurodecode.evaluation.retrieval import zero_shot_retrieval
    from neurodecode.evaluation.stats import bootstrap_ci

    stats = dm.input_stats()
    mean = stats["mean"][None, :, None]

    def score(x):
        e = embed_set(model, x, test.subjects, device=device)
        res, items = {}, {"top1_full": [], "top5_full": []}
        for s in np.unique(test.subjects):
            m = test.subjects == s
            cand, targets = np.unique(test.stim_rows[m], return_inverse=True)
            r = zero_shot_retrieval(e[m], evaluation_targets(dm, cand, int(s)), targets=targets, ks=[], tops=[1, 5],
                                    full=True, directions=("brain_to_image",), per_item=True)
            per = r.pop("per_item")["inductive"]["brain_to_image"]
            res[s] = r["inductive"]["brain_to_image"]
            for key in items:
                items[key].append(np.asarray(per[key], float))
        return ({k: float(np.mean([v[k] for v in res.values()])) for k in ("top1_full", "top5_full")},
                {k: np.concatenate(v) for k, v in items.items()})

    def ci(v):
        c = bootstrap_ci(v, n_resamples=n_boot, seed=seed)
        return {"low": c["low"], "high": c["high"]}

    base, base_items = score(x_test)
    out = {"method": "occlusion: the region's channels set to their training mean at test time (no retraining); "
                     "retrain with --data.channels to measure a model trained without them",
           "interval": f"95% bootstrap interval over test items ({n_boot} resamples); the change's interval is "
                       "paired (the same items with and without the region)",
           "baseline": {**base, "top1_full_ci": ci(base_items["top1_full"])}, "regions": {}}
    names = dm.ch_names
    for reg, chans in regs.items():
        idx = [names.index(c) for c in chans]
        x = x_test.copy()
        x[:, idx, :] = np.broadcast_to(mean[:, idx, :], x[:, idx, :].shape)
        vals, items = score(x)
        out["regions"][reg] = {"channels": chans, **vals, "top1_full_ci": ci(items["top1_full"]),
                               "top1_change_ci": ci(items["top1_full"] - base_items["top1_full"])}
    return out
