"""``neurodecode export``: checkpoint -> config.json + model.safetensors (encoder, prior, generator, low-level head)."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "Export a trained checkpoint (encoder, prior, generator or low-level head) as config.json + model.safetensors."
DESCRIPTION = """\
Export a checkpoint written by 'neurodecode fit' as a folder of config.json + model.safetensors (no
pickle; what the model was trained on is recorded in config.json). What the checkpoint holds is read
from it:
  encoder (AlignmentModule)       load with neurodecode.from_pretrained(DIR)
  prior (PriorModule)             neurodecode reconstruct --prior DIR, or reconstruction.prior.load_prior
  generator (GeneratorModule)     neurodecode reconstruct --generator demo:DIR
  low-level head (LowLevelModule) neurodecode reconstruct --lowlevel DIR

example: neurodecode export --ckpt runs/sim_prior/checkpoints/last.ckpt --out prior_exported
"""

# hyper-parameter that tells each kind of checkpoint -> what it is
KINDS = {"prior_config": "prior", "denoiser_config": "generator", "head_config": "low-level head",
         "encoder_config": "encoder"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ckpt", type=Path, required=True, help="a .ckpt written by 'neurodecode fit'")
    parser.add_argument("--out", type=Path, required=True, help="output folder")


def checkpoint_kind(path: Path) -> str:
    """``"encoder"``, ``"prior"``, ``"generator"`` or ``"low-level head"``: what a fit checkpoint holds."""
    from neurodecode.training.lit import load_checkpoint_dict
    from neurodecode.utils import UserError

    hp = load_checkpoint_dict(path).get("hyper_parameters", {})
    for key, kind in KINDS.items():  # a low-level head also records its encoder: heads first
        if key in hp:
            return kind
    raise UserError(f"--ckpt {path}: a checkpoint of {hp.get('_class_path', 'an unknown module')}, not one of "
                    "neurodecode's encoder, prior, generator or low-level modules; nothing to export.")


def run(args: argparse.Namespace) -> int:
    from neurodecode.cli.checks import check_checkpoint
    from neurodecode.utils import UserError

    check_checkpoint(args.ckpt, "--ckpt", exported=False)  # before the heavy imports
    if args.out.is_file():
        raise UserError(f"--out {args.out} is a file; give a folder for config.json and model.safetensors.")
    kind = checkpoint_kind(args.ckpt)
    if kind == "prior":
        from neurodecode.reconstruction.prior import export_prior as export
    elif kind == "generator":
        from neurodecode.reconstruction.lit_generator import export_generator as export
    elif kind == "low-level head":
        from neurodecode.reconstruction.lowlevel import export_lowlevel as export
    else:
        from neurodecode.training.export import export_checkpoint as export
    out = export(args.ckpt, args.out)
    print(f"exported the {kind} {args.ckpt} -> {out} (config.json, model.safetensors)")
    return 0
