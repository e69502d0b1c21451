"""``neurodecode crossval``: trial-level cross-validation of an alignment model against the linear baseline."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

HELP = "Cross-validate an alignment model over trials (few-category data) against a logistic baseline."

DESCRIPTION = """\
Cross-validate an alignment model on the trials of a prepared folder, for data sets with few
categories and many trials (e.g. faces vs houses): the trials of each subject are split into
stratified folds; in each fold an encoder is trained to map the epochs to the teacher targets of
their category (early stopping on an inner split of the training part) and the test trials are
scored by their cosine similarity to each category's target (ROC AUC, accuracy). The plain linear
baseline (standardisation + L2 logistic regression on the flattened epoch) runs on the same folds.

The targets come from the teacher: an image teacher (efficientnet-lite0, ...) when the categories
have pictures, or targets from the category names when they do not (onehot, minilm,
text:CLIP_SPEC, vectors:FILE; see 'neurodecode embed --help'). They are embedded into the folder's
embeddings.h5 on first use. The epochs are resampled to --sfreq (default 128 Hz, by keeping every
k-th sample of data low-passed below the new Nyquist frequency).

Writes one JSON (per subject: per-fold and mean +- sd ROC AUC and accuracy of both models, their
difference, the settings) and prints a summary line per subject.

examples:
  neurodecode crossval --data prepared/n170 --teacher efficientnet-lite0 --encoder eegnet --folds 5
  neurodecode crossval --data prepared/n170_noimages --teacher minilm --subjects 01 --models 3
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", type=Path, required=True, help="prepared folder (neurodecode prepare ... --out DIR)")
    parser.add_argument("--teacher", required=True, metavar="SPEC",
                        help="teacher of the targets: efficientnet-lite0, ..., or onehot, minilm, vectors:FILE")
    parser.add_argument("--encoder", default="eegnet", help="encoder name (default: eegnet; 'ridge' is closed form)")
    parser.add_argument("--subjects", default=None,
                        help="comma-separated subject labels, each cross-validated on its own (default: all)")
    parser.add_argument("--pool", action="store_true", help="pool the subjects' trials into one cross-validation")
    parser.add_argument("--folds", type=int, default=5, help="number of folds (default: 5)")
    parser.add_argument("--group-by", choices=("none", "session"), default="none",
                        help="keep each session in one fold (default: none, stratified folds of trials)")
    parser.add_argument("--models", type=int, default=1, help="models trained per fold, averaged (default: 1)")
    parser.add_argument("--epochs", type=int, default=60, help="training epochs at most (default: 60)")
    parser.add_argument("--patience", type=int, default=20, help="early-stopping patience in epochs (default: 20)")
    parser.add_argument("--batch-size", type=int, default=64, help="training batch size (default: 64)")
    parser.add_argument("--lr", type=float, default=1e-3, help="AdamW learning rate (default: 1e-3)")
    parser.add_argument("--sfreq", type=float, default=128.0,
                        help="sampling rate the encoder reads, Hz (default: 128; 0 keeps the recorded rate)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the folds and the models (default: 0)")
    parser.add_argument("--baseline-c", default="cv",
                        help="C of the logistic baseline, or 'cv' to choose it among 1e-5..1e-2 by an inner "
                             "cross-validation of each training part (default: cv)")
    parser.add_argument("--positive", default=None,
                        help="category whose score is the decision score (default: the first stimulus)")
    parser.add_argument("--jobs", type=int, default=1, help="fits run in parallel worker processes (default: 1)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads per fit (default: torch's)")
    parser.add_argument("--out", type=Path, default=None, help="result file (default: DATA/crossval.json)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.add_argument("--verbose", action="store_true", help="print what is being done")


def _baseline_c(text: str) -> float | None:
    if text.strip().lower() in ("cv", "inner-cv", "none"):
        return None
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"--baseline-c {text!r} is not a number or 'cv'; e.g. --baseline-c 1e-3.") from None
    if value <= 0:
        raise ValueError(f"--baseline-c must be positive, got {value:g}.")
    return value


def run_crossval(args: argparse.Namespace) -> dict[str, Any]:
    """Run the cross-validation described by ``args``; return the JSON-able result."""
    from neurodecode.training.crossval import crossval_alignment, crossval_logistic, load_trials, make_folds

    c = _baseline_c(args.baseline_c)
    subjects = None if not args.subjects else [s.strip() for s in str(args.subjects).split(",") if s.strip()]
    sfreq = None if not args.sfreq else float(args.sfreq)
    progress = not args.no_progress
    everyone = load_trials(args.data, args.teacher, subjects, sfreq=sfreq, progress=progress)
    labels = sorted(set(everyone.subject.tolist()))
    runs = [("pooled" if len(labels) > 1 else labels[0], None)] if args.pool else [(s, s) for s in labels]
    positive = 0 if args.positive is None else everyone.row_of(args.positive)
    out: dict[str, Any] = {"data": str(args.data), "teacher": args.teacher, "encoder": args.encoder,
                           "categories": everyone.stimulus_ids, "positive": everyone.stimulus_ids[positive],
                           "sfreq": everyone.sfreq, "n_splits": int(args.folds), "group_by": args.group_by,
                           "seed": int(args.seed), "subjects": {}}
    for label, subject in runs:
        keep = slice(None) if subject is None else everyone.subject == subject
        x, rows = everyone.x[keep], everyone.rows[keep]
        groups = everyone.session[keep] if args.group_by == "session" else None
        folds = make_folds(rows, int(args.folds), groups=groups, seed=int(args.seed))
        res = crossval_alignment(
            x, rows, everyone.targets, encoder=args.encoder, sfreq=everyone.sfreq, folds=folds, groups=groups,
            seed=int(args.seed), n_models=int(args.models), max_epochs=int(args.epochs), patience=int(args.patience),
            batch_size=int(args.batch_size), lr=float(args.lr), positive=positive, n_jobs=int(args.jobs),
            n_threads=args.threads, progress_bar=progress)
        base = crossval_logistic(x, rows, folds=folds, C=c, positive=positive, seed=int(args.seed))
        diff = [a["roc_auc"] - b["roc_auc"] for a, b in zip(res.folds, base.folds, strict=True)]
        out["subjects"][label] = {
            "n_trials": int(len(rows)), "alignment": res.summary(), "baseline": base.summary(),
            "roc_auc_difference": {"mean": float(sum(diff) / len(diff)), "per_fold": [round(d, 5) for d in diff]}}
        print(f"sub-{label}: alignment {args.encoder} ({args.teacher}) ROC AUC {res.roc_auc['mean']:.3f} +- "
              f"{res.roc_auc['sd']:.3f} | {base.method} {base.roc_auc['mean']:.3f} +- {base.roc_auc['sd']:.3f} | "
              f"{len(rows)} trials, {len(folds)} folds ({res.seconds:.0f} s + {base.seconds:.0f} s)", flush=True)
    return out


def run(args: argparse.Namespace) -> int:
    from neurodecode.utils import atomic_write_json, set_log_level

    set_log_level("INFO" if args.verbose else "WARNING")
    for what, value in (("--folds", args.folds), ("--models", args.models), ("--epochs", args.epochs),
                        ("--jobs", args.jobs)):
        if value < 1 or (what == "--folds" and value < 2):
            print(f"neurodecode crossval: {what} must be at least {2 if what == '--folds' else 1}, got {value}.",
                  file=sys.stderr)
            return 2
    if not args.data.is_dir():
        print(f"neurodecode crossval: --data {args.data} is not a folder; pass the --out folder of "
              f"'neurodecode prepare'.", file=sys.stderr)
        return 2
    out_path = args.out if args.out is not None else args.data / "crossval.json"
    result = run_crossval(args)
    atomic_write_json(out_path, result)
    print(f"-> {out_path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the command without the ``neurodecode`` dispatcher (``python -m neurodecode.cli.crossval``)."""
    parser = argparse.ArgumentParser(prog="neurodecode crossval", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())


__all__ = ["HELP", "DESCRIPTION", "add_arguments", "run", "run_crossval", "main"]
