"""``neurodecode reconstruct``: draw the seen images back from brain signals and score them."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "Reconstruct the test images from brain signals (encoder -> prior -> generator): images, metrics, gallery."
DESCRIPTION = """\
Two stages, as in ATM and MindEye2: the encoder's embedding of each test stimulus (a subject's
repetitions averaged) goes through the diffusion prior (or aligner) into the teacher's image-embedding
space, and a generator draws images from that embedding.

Writes under --out:
  images/<stimulus_id>/<k>.png   --samples images per stimulus, each with its own recorded seed
  references/ceiling, /chance    the generator fed the teacher's own embeddings (its ceiling) and the
                                 system's embeddings shuffled over stimuli (chance); --no-references skips
  metrics.json, per_stimulus.json  PixCorr, SSIM, two-way identification per network (MindEye2 protocol;
                                 networks without local weights are skipped, with the reason), each
                                 sample round and mean +- sd, best-of-k apart, retrieval by stage, protocol
  report.md, gallery.png         the report, and per stimulus: seen image, reconstructions, top-5 retrieved
A rerun draws only missing images. Several GPUs: --devices 4 --strategy ddp shards the images.

Generators (--generator):
  demo:DIR                        the demo generator exported by `neurodecode fit -c configs/sim/generator.yaml`
  sdxl-turbo-ip-adapter[:SDXL[+IP]]  ATM's SDXL-Turbo + IP-Adapter (hub ids or local folders; 4 steps, guidance 0)
  unclip[:SOURCE]                 Stable unCLIP

example (after `neurodecode demo --out demo_out`, which trains all three stages):
  neurodecode reconstruct --encoder demo_out/exported --prior demo_out/prior_exported \\
      --generator demo:demo_out/generator_exported --samples 2 --out demo_out/recon
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--encoder", type=Path, required=True, help="encoder checkpoint (.ckpt) or exported folder")
    parser.add_argument("--prior", type=Path, required=True, help="prior checkpoint (.ckpt) or exported folder")
    parser.add_argument("--generator", required=True, help="generator spec (see above)")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--data", type=Path, default=None,
                        help="prepared data folder (default: the one the encoder was trained on)")
    parser.add_argument("--subject", default=None,
                        help="whose test trials (default: the first test subject; 'mean': averaged over subjects)")
    parser.add_argument("--samples", type=int, default=10, help="images per stimulus (default 10, as ATM)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the run (prior and every image; default 0)")
    parser.add_argument("--prior-steps", type=int, default=None, help="prior sampling steps (default: recorded, ATM 50)")
    parser.add_argument("--prior-guidance", type=float, default=None,
                        help="prior classifier-free guidance (default: recorded, ATM 5)")
    parser.add_argument("--steps", type=int, default=None, help="generator steps (default: the generator's protocol)")
    parser.add_argument("--guidance", type=float, default=None, help="generator guidance (default: its protocol)")
    parser.add_argument("--lowlevel", type=Path, default=None, help="exported low-level head (optional)")
    parser.add_argument("--strength", type=float, default=1.0,
                        help="img2img strength from the low-level image (default 1: no img2img)")
    parser.add_argument("--blend", type=float, default=None, metavar="ALPHA",
                        help="blend the low-level image into each reconstruction with weight ALPHA (ATM)")
    parser.add_argument("--networks", default="all",
                        help="metric networks, comma-separated, 'all' (default) or 'none' (see recon-metrics)")
    parser.add_argument("--weights", action="append", default=[], metavar="FAMILY=PATH",
                        help="weights of a metric network family (repeatable; see recon-metrics)")
    parser.add_argument("--no-references", action="store_true", help="skip the ceiling and chance references")
    parser.add_argument("--reference-samples", type=int, default=1, help="samples per stimulus of each reference")
    parser.add_argument("--batch-size", type=int, default=8, help="images per generator call (default 8)")
    parser.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:1 ...")
    parser.add_argument("--attention-slicing", action="store_true", help="diffusers attention slicing (less memory)")
    parser.add_argument("--cpu-offload", action="store_true", help="diffusers model CPU offload (needs accelerate)")
    parser.add_argument("--accelerator", default="auto", help="Lightning accelerator for sharding (auto, gpu, cpu)")
    parser.add_argument("--devices", default="1", help="devices to shard the images over (Lightning; default 1)")
    parser.add_argument("--strategy", default="auto", help="Lightning strategy for several devices (e.g. ddp)")
    parser.add_argument("--num-nodes", type=int, default=1, help="nodes (Lightning)")
    parser.add_argument("--gallery-rows", type=int, default=8, help="rows of gallery.png (default 8)")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")


def run(args: argparse.Namespace) -> int:
    from neurodecode.utils import UserError

    for opt, path in (("--encoder", args.encoder), ("--prior", args.prior)):
        if not path.exists():
            raise UserError(f"{opt} {path}: no such file or folder; give a checkpoint (.ckpt) or an exported folder.")
    if args.data is not None and not args.data.is_dir():
        raise UserError(f"--data {args.data}: no such folder; give the prepared data folder or leave --data out.")
    if args.out.is_file():
        raise UserError(f"--out {args.out} is a file; give a folder for the images, metrics.json and report.md.")
    for opt, v in (("--samples", args.samples), ("--reference-samples", args.reference_samples),
                   ("--batch-size", args.batch_size), ("--gallery-rows", args.gallery_rows)):
        if v < 1:
            raise UserError(f"{opt} must be >= 1, got {v}.")
    from neurodecode.cli.recon_metrics import parse_networks, parse_weights, print_metrics
    from neurodecode.reconstruction.generators import parse_generator_spec

    parse_generator_spec(args.generator)  # an unknown generator fails before anything is loaded
    networks = parse_networks(args.networks)
    weights = parse_weights(args.weights)
    from neurodecode.reporting.reconstruct import reconstruct

    devices = int(args.devices) if str(args.devices).isdigit() else args.devices
    result = reconstruct(args.encoder, args.prior, args.generator, args.out, root=args.data, subject=args.subject,
                         n_samples=args.samples, seed=args.seed, prior_steps=args.prior_steps,
                         prior_guidance=args.prior_guidance, steps=args.steps, guidance=args.guidance,
                         batch_size=args.batch_size, device=args.device, attention_slicing=args.attention_slicing,
                         cpu_offload=args.cpu_offload, lowlevel=args.lowlevel, strength=args.strength,
                         blend_alpha=args.blend, networks=networks, weights=weights,
                         references=not args.no_references, reference_samples=args.reference_samples,
                         gallery_rows_max=args.gallery_rows, accelerator=args.accelerator, devices=devices,
                         strategy=args.strategy, num_nodes=args.num_nodes, progress=not args.no_progress)
    if result.get("rank", 0) != 0:
        return 0
    print(summary_lines(result))
    print_metrics(result)
    print(f"images, metrics.json, report.md and gallery.png -> {args.out}")
    return 0


def summary_lines(result: dict) -> str:
    """The headline of a reconstruction: retrieval by stage and two-way identification beside its references."""
    p = result["protocol"]
    lines = [f"sub-{p['subject']}: {result['n_stimuli']} test stimuli x {result['n_samples']} sample(s)"]
    for stage, r in result.get("retrieval", {}).items():
        lines.append(f"  retrieval from the {stage}'s output: top-1 {r['top1']:.1%}, top-5 {r['top5']:.1%} "
                     f"({r['n_candidates']}-way, chance {1 / r['n_candidates']:.1%})")
    for name, e in result["metrics"].items():
        if e.get("kind") != "two_way":
            continue
        refs = ", ".join(f"{ref} {result[ref]['metrics'][name]['mean']:.1%}" for ref in ("ceiling", "chance")
                         if name in (result.get(ref) or {}).get("metrics", {}))
        test = e.get("vs_chance") or {}
        p_text = f"p = {test['p']:.3g} vs chance" if "p" in test else ""
        extra = ", ".join(x for x in (p_text, refs) if x)
        lines.append(f"  two-way identification ({e['label']}): {e['mean']:.1%}" + (f" ({extra})" if extra else ""))
    return "\n".join(lines)
