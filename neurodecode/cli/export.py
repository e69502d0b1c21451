"""``neurodecode export``: checkpoint -> config.json + model.safetensors."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "Export a trained checkpoint as config.json + model.safetensors (load with neurodecode.from_pretrained)."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ckpt", type=Path, required=True, help="a .ckpt written by 'neurodecode fit'")
    parser.add_argument("--out", type=Path, required=True, help="output folder")


def run(args: argparse.Namespace) -> int:
    from neurodecode.cli.checks import check_checkpoint
    from neurodecode.utils import UserError

    check_checkpoint(args.ckpt, "--ckpt", exported=False)  # before the heavy imports
    if args.out.is_file():
        raise UserError(f"--out {args.out} is a file; give a folder for config.json and model.safetensors.")
    from neurodecode.training.export import export_checkpoint

    out = export_checkpoint(args.ckpt, args.out)
    print(f"exported {args.ckpt} -> {out} (config.json, model.safetensors)")
    return 0
