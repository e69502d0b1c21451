"""``neurodecode evaluate``: retrieval, classification, statistics, figures and a report."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "Evaluate trained checkpoints: zero-shot retrieval, statistics, time-resolved decoding, report and figures."
DESCRIPTION = """\
Evaluate one or more checkpoints of 'neurodecode fit' (or folders of 'neurodecode export') on their
test data and write metrics.json, report.md and PNG figures. The checkpoint knows its prepared folder
and teacher; --data.root and --data.teacher override them. Several --ckpt are evaluated side by side
(e.g. intra-subject vs leave-one-subject-out) with paired comparisons on shared test sets.

example:
  neurodecode evaluate --ckpt runs/sim_eeg_atm/checkpoints/last.ckpt --out eval_sim
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ckpt", type=Path, action="append", required=True,
                        help="checkpoint (.ckpt) or exported folder; repeat to compare models")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--data.root", dest="root", default=None, help="override the prepared folder")
    parser.add_argument("--data.teacher", dest="teacher", default=None, help="override the teacher spec")
    parser.add_argument("--ks", default="2,4,10,50,100,200", help="k-way sizes (default 2,4,10,50,100,200)")
    parser.add_argument("--n-draws", type=int, default=100, help="Monte-Carlo distractor draws (default 100)")
    parser.add_argument("--seed", type=int, default=0, help="seed of draws, bootstrap and permutations")
    parser.add_argument("--n-boot", type=int, default=2000, help="bootstrap resamples (default 2000)")
    parser.add_argument("--n-permutations", type=int, default=1000, help="permutations (default 1000)")
    parser.add_argument("--csls-k", type=int, default=10, help="CSLS neighbourhood; 0 to skip (default 10)")
    parser.add_argument("--no-time-resolved", action="store_true", help="skip time-resolved decoding")
    parser.add_argument("--window", type=float, default=0.05, help="time-resolved window width in s (default 0.05)")
    parser.add_argument("--step", type=float, default=0.02, help="time-resolved window step in s (default 0.02)")
    parser.add_argument("--tr-correction", choices=("cluster", "fdr"), default="cluster",
                        help="error control across time windows: cluster-based permutation test (MNE, default) "
                             "or Benjamini-Hochberg FDR")
    parser.add_argument("--no-ablation", action="store_true", help="skip the channel-region ablation")
    parser.add_argument("--no-figures", action="store_true", help="skip the PNG figures")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")


def run(args: argparse.Namespace) -> int:
    from neurodecode.cli.checks import check_checkpoint, parse_int_list
    from neurodecode.utils import UserError

    for ckpt in args.ckpt:  # before the heavy imports: a wrong path fails at once
        check_checkpoint(ckpt, "--ckpt")
    ks = parse_int_list(args.ks, "--ks", example="2,4,10,50")
    if args.root is not None and not Path(args.root).is_dir():
        raise UserError(f"--data.root {args.root}: no such folder; give the prepared folder of the checkpoint's "
                        f"data (or leave --data.root out: the checkpoint knows it).")
    if args.out.is_file():
        raise UserError(f"--out {args.out} is a file; give a folder for metrics.json, report.md and the figures.")

    from neurodecode.reporting.compare import evaluate_many
    from neurodecode.reporting.evaluate import evaluate

    kw = dict(root=args.root, teacher=args.teacher, ks=ks,
              n_draws=args.n_draws, seed=args.seed, n_boot=args.n_boot, n_permutations=args.n_permutations,
              csls_k=args.csls_k or None, time_resolved=not args.no_time_resolved, tr_width=args.window,
              tr_step=args.step, tr_correction=args.tr_correction, ablation=not args.no_ablation,
              figures=not args.no_figures, device=args.device,
              progress_bar=not args.no_progress)
    if len(args.ckpt) == 1:
        m = evaluate(args.ckpt[0], args.out, **kw)
        for s, v in m["subjects"].items():
            r = v["retrieval"]["inductive"]["brain_to_image"]
            print(f"sub-{s}: top-1 {r['top1_full']:.1%}, top-5 {r.get('top5_full', float('nan')):.1%} "
                  f"({v['n_candidates']}-way)")
    else:
        evaluate_many(args.ckpt, args.out, **kw)
    print(f"metrics.json, report.md and figures -> {args.out}")
    return 0
