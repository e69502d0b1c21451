"""Alignment models vs the plain linear baseline on the real N170 recordings (faces vs houses).

The N170 Muse recordings of ``shared/data/n170`` (4 channels, 256 Hz, 1133 epochs for subject 01
after 100 uV rejection) are prepared with ``neurodecode prepare csv`` (1-30 Hz band-pass, epochs
-0.1..0.8 s), the two categories are embedded with ``efficientnet-lite0`` (mean embedding of each
category's images) and, on the *same* stratified 5-fold splits, this script runs

- the baseline of ``shared/data/README.md``: standardisation + L2 logistic regression (liblinear) on
  the flattened 256 Hz epoch, with ``C = 0.01`` (the README's configuration, ROC AUC 0.68 there)
  and with ``C`` chosen by an inner 5-fold cross-validation of each training part (a stronger,
  tuned version of the same model); also the tuned one on the 128 Hz input the networks see;
- alignment models (:func:`neurodecode.training.crossval.crossval_alignment`): EEGNet,
  ShallowConvNet, an MLP and closed-form ridge, trained to map each epoch to its category's
  teacher embedding and scored by ``cos(b, face) - cos(b, house)``.

The networks read the epochs decimated by 2 (128 Hz): the data are already low-passed at 30 Hz, so
nothing is lost below the new 64 Hz Nyquist frequency, and training is 2-4 times faster on CPU. The
hyperparameters in ``ENCODERS`` were chosen on subject 01 with fold seed 0 (a handful of trials,
listed in the comments); fold seed 1 (and other subjects, ``--subjects``) are the check that they
were not tuned to one split.

Writes one JSON (per-fold and mean +- sd ROC AUC and accuracy of every model and split, the paired
differences to the baselines over the same folds, wall times) and prints a table::

    python benchmarks/n170_alignment.py --out benchmarks/results/n170_alignment.json
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

README_AUC = 0.68  # shared/data/README.md: subject1, 5-fold ROC AUC of the plain logistic regression
TEACHER = "efficientnet-lite0"
DECIM = 2  # 256 Hz -> 128 Hz for the networks (the data are low-passed at 30 Hz)

# Training settings shared by the networks: AdamW, cosine schedule, batch 64, inner validation split
# of 15% of the training trials for early stopping (patience 20) and the choice of the epoch kept.
TRAIN = {"max_epochs": 60, "patience": 20, "batch_size": 64, "lr": 1e-3, "weight_decay": 0.01, "val_fraction": 0.15}

# What was tried on subject 01, fold seed 0 (ROC AUC, mean over 5 folds), to pick these:
#   EEGNet, default loss, lr 1e-3, one model: 40 epochs 0.705, 80 epochs 0.718, 60 epochs 0.716,
#     60 epochs + select by val loss 0.716, dropout 0.5 0.703, lr 3e-3 0.703, batch 32 0.705;
#     3-model ensemble (60 epochs) 0.714. Fold seed 1 showed why the ensemble is kept: one model
#     0.669 (60 epochs) / 0.695 (80 epochs) / 0.696 (batch 32), the 3-model ensemble 0.709;
#     loss: softclip + 0.25 cosine 0.718, softclip alone 0.706 (clip: identical), cosine alone 0.698
#   MLP: 1024 hidden, lr 1e-3 0.677; 256 hidden, input dropout 0.2, lr 3e-4 0.689; lr 1e-4, wd 0.1 0.674
#   ShallowConvNet (paper defaults scaled to 128 Hz): 0.523
ENCODERS: dict[str, dict[str, Any]] = {
    "eegnet": {"encoder": "eegnet", **TRAIN, "n_models": 3},
    # band power features: blind to the phase-locked N170 (see the note); kept short, it stops early anyway
    "shallow": {"encoder": "shallow", **TRAIN, "max_epochs": 40, "patience": 10},
    "mlp": {"encoder": "mlp", **TRAIN, "lr": 3e-4, "patience": 15,
            "encoder_kwargs": {"hidden_sizes": [256], "dropout": 0.5, "input_dropout": 0.2}},
    "ridge": {"encoder": "ridge"},  # closed form; penalty by leave-one-out inside each training part
}


def _strip(summary: dict[str, Any]) -> dict[str, Any]:
    """Drop the per-epoch histories (kept small) from a CrossvalResult summary."""
    out = dict(summary)
    out["folds"] = [{k: v for k, v in f.items() if k not in ("history", "models")} for f in summary["folds"]]
    return out


def _prepare(root: Path, work: Path, subjects: list[str] | None) -> Any:
    from neurodecode.io.prepared import open_prepared
    from neurodecode.readers.csv import prepare_csv
    from neurodecode.teachers.extract import ensure_embeddings

    out = prepare_csv(root, work / "prepared", event_map="1=face,2=house", images=root / "stimuli",
                      subjects=subjects, progress=False)
    ds = open_prepared(out, subjects=subjects)
    cache = ensure_embeddings(ds.stimuli, TEACHER, work / "embeddings.h5", progress=False)
    ids, emb = cache.get(TEACHER)
    order = [list(ids).index(s) for s in ds.stimuli.stimulus_id]
    return ds, np.asarray(emb)[order]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=None,
                   help="the n170 folder (default: n170 under $NEURODECODE_SHARED_DATA or ../shared/data)")
    p.add_argument("--work", type=Path, default=None,
                   help="folder for the prepared stores and the embedding cache (default: a temporary one)")
    p.add_argument("--subjects", default="01", help="comma-separated subject labels, or 'all'")
    p.add_argument("--fold-seeds", default="0,1", help="seeds of the stratified 5-fold partitions")
    p.add_argument("--encoders", default=",".join(ENCODERS))
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads for the networks (default: torch's; 1 is faster on a busy machine)")
    p.add_argument("--jobs", type=int, default=1,
                   help="worker processes for the networks' fits (2 on an idle 2-core machine halves the time)")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/n170_alignment.json"))
    args = p.parse_args()

    import torch

    from neurodecode.evaluation.stats import mean_sd, paired_comparison
    from neurodecode.training.crossval import crossval_alignment, crossval_logistic, make_folds
    from neurodecode.utils import atomic_write_json, shared_data_dir

    root = args.data
    if root is None:
        shared = shared_data_dir()
        if shared is None:
            raise SystemExit("real recordings not found: pass --data or set NEURODECODE_SHARED_DATA")
        root = shared / "n170"
    if not (root / "stimuli").is_dir():
        raise SystemExit(f"{root} does not look like the n170 folder (no stimuli/ inside)")
    subjects = None if args.subjects == "all" else [s.strip() for s in args.subjects.split(",") if s.strip()]
    seeds = [int(s) for s in args.fold_seeds.split(",") if s.strip()]
    encoders = [e for e in args.encoders.split(",") if e]
    unknown = sorted(set(encoders) - set(ENCODERS))
    if unknown:
        raise SystemExit(f"unknown encoder(s) {unknown}; choose among {sorted(ENCODERS)}")

    t_all = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        t0 = time.perf_counter()
        ds, targets = _prepare(root, work, subjects)
        prep_seconds = time.perf_counter() - t0
        face = ds.stimuli.stimulus_id.tolist().index("face")
        results: dict[str, Any] = {}
        for subject, st in ds.stores.items():
            x = st.get_signals().astype(np.float32)
            rows = ds.stimuli.rows(st.stimulus_id)
            xd = x[..., ::DECIM]
            runs: dict[str, list[Any]] = {}
            for seed in seeds:
                folds = make_folds(rows, 5, seed=seed)
                common = {"folds": folds, "positive": face, "seed": seed}
                jobs: list[tuple[str, Any, dict[str, Any]]] = [
                    ("logistic C=0.01 (README)", crossval_logistic, {"x": x, "labels": rows, "C": 0.01}),
                    ("logistic C=inner-cv", crossval_logistic, {"x": x, "labels": rows, "C": None}),
                    (f"logistic C=inner-cv, {st.sfreq / DECIM:g} Hz", crossval_logistic,
                     {"x": xd, "labels": rows, "C": None}),
                ]
                for name in encoders:
                    jobs.append((f"alignment {name}", crossval_alignment,
                                 {"x": xd, "stimulus_rows": rows, "targets": targets, "sfreq": st.sfreq / DECIM,
                                  "n_threads": args.threads, "n_jobs": args.jobs, **ENCODERS[name]}))
                for label, fn, kwargs in jobs:
                    res = fn(**kwargs, **common)
                    runs.setdefault(label, []).append(res)
                    print(f"sub-{subject} seed {seed} {label:34s} ROC AUC {res.roc_auc['mean']:.3f} +- "
                          f"{res.roc_auc['sd']:.3f}  accuracy {res.accuracy['mean']:.3f}  ({res.seconds:.0f} s)",
                          flush=True)
            # over all folds of all partitions (the folds of different seeds overlap: the sd mixes both)
            models = {}
            for label, rs in runs.items():
                aucs = [f["roc_auc"] for r in rs for f in r.folds]
                models[label] = {
                    "roc_auc": mean_sd(aucs),
                    "accuracy": mean_sd([f["accuracy"] for r in rs for f in r.folds]),
                    "per_seed": {str(seed): _strip(r.summary()) for seed, r in zip(seeds, rs, strict=True)},
                    "seconds": round(sum(r.seconds for r in rs), 1),
                }
            baselines = [k for k in runs if k.startswith("logistic")]
            for label in runs:
                if label in baselines:
                    continue
                a = [f["roc_auc"] for r in runs[label] for f in r.folds]
                models[label]["vs_baselines"] = {}
                for b in baselines:
                    bb = [f["roc_auc"] for r in runs[b] for f in r.folds]
                    cmp = paired_comparison(a, bb, method="permutation", n_resamples=9999)
                    models[label]["vs_baselines"][b] = {
                        "difference": cmp["difference"], "ci_low": cmp["ci_low"], "ci_high": cmp["ci_high"],
                        "p_value": cmp["p_value"], "n_folds": cmp["n_items"],
                        "note": "paired over the same folds; folds of different seeds overlap, so the p-value "
                                "is optimistic (not independent items)"}
            aligned = [k for k in runs if k not in baselines]
            best = max(aligned, key=lambda k: models[k]["roc_auc"]["mean"]) if aligned else None
            readme_cfg = models["logistic C=0.01 (README)"]["roc_auc"]["mean"]
            tuned = models["logistic C=inner-cv"]["roc_auc"]["mean"]
            verdict = None
            if best is not None:
                auc = models[best]["roc_auc"]
                verdict = {
                    "best_alignment_model": best, "roc_auc_mean": auc["mean"], "roc_auc_sd": auc["sd"],
                    "readme_auc": README_AUC, "beats_readme_auc": bool(auc["mean"] > README_AUC),
                    "baseline_readme_config_same_folds": readme_cfg, "difference_to_readme_config": auc["mean"] - readme_cfg,
                    "baseline_tuned_same_folds": tuned, "difference_to_tuned": auc["mean"] - tuned,
                    "note": "the best model is picked after the fact among the encoders (and its settings were "
                            "chosen on fold seed 0): an optimistic choice; judge it against the spread over folds",
                }
            results[subject] = {"n_trials": int(len(rows)), "n_chans": int(x.shape[1]), "n_times": int(x.shape[2]),
                                "sfreq": float(st.sfreq), "models": models, "verdict": verdict}

    out = {
        "benchmark": "n170_alignment", "teacher": TEACHER, "data": str(root.name), "subjects": list(results),
        "fold_seeds": seeds, "n_splits": 5, "decim_for_networks": DECIM, "encoders": {k: ENCODERS[k] for k in encoders},
        "prepare_and_embed_seconds": round(prep_seconds, 1), "total_seconds": round(time.perf_counter() - t_all, 1),
        "machine": {"python": platform.python_version(), "torch": torch.__version__,
                    "torch_threads": args.threads or torch.get_num_threads(), "cpu": platform.processor() or
                    platform.machine()},
        "results": results,
    }
    atomic_write_json(args.out, out)
    print()
    for subject, r in results.items():
        print(f"sub-{subject} ({r['n_trials']} trials), ROC AUC mean +- sd over {5 * len(seeds)} folds:")
        for label, m in r["models"].items():
            extra = ""
            if "vs_baselines" in m:
                d = m["vs_baselines"]["logistic C=inner-cv"]
                extra = f"  vs tuned logistic {d['difference']:+.3f} [{d['ci_low']:+.3f}, {d['ci_high']:+.3f}]"
            print(f"  {label:34s} {m['roc_auc']['mean']:.3f} +- {m['roc_auc']['sd']:.3f}{extra}")
    print(f"-> {args.out} ({out['total_seconds']:.0f} s)")


if __name__ == "__main__":
    main()
