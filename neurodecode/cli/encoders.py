"""``neurodecode encoders``: the registered brain encoders, one line each, without importing torch.

The table is static so that ``neurodecode encoders`` and ``neurodecode fit --help`` answer at once;
``tests/test_cli_errors.py`` keeps it equal to the registry (:func:`neurodecode.encoders.list_encoders`).
"""

from __future__ import annotations

import argparse

HELP = "List the brain encoders (registry name, class_path for YAML, input, one line each)."

# registry name -> (class_path, input modality, one line)
ENCODERS: dict[str, tuple[str, str, str]] = {
    "atm": ("neurodecode.encoders.ATM", "timeseries",
            "ATM EEG encoder: channel-token transformer, temporal-spatial convolution, projector."),
    "brain_module": ("neurodecode.encoders.BrainModule", "timeseries",
                     "Spatial attention, subject layer, dilated residual convolutions (MEG, Defossez et al.)."),
    "eegnet": ("neurodecode.encoders.EEGNet", "timeseries", "EEGNet-v4 with a linear head."),
    "fmri_mlp": ("neurodecode.encoders.FMRIMLP", "voxels", "MindEye-style residual MLP from voxels."),
    "mlp": ("neurodecode.encoders.MLP", "timeseries", "MLP on the flattened trial (a baseline)."),
    "nice": ("neurodecode.encoders.NICE", "timeseries", "NICE's TSConv EEG encoder and projector (ICLR 2024)."),
    "ridge": ("neurodecode.encoders.Ridge", "voxels", "Closed-form ridge regression (voxels or flattened trials)."),
    "shallow": ("neurodecode.encoders.ShallowConvNet", "timeseries",
                "Shallow ConvNet with a square-log nonlinearity and a linear head."),
}


def encoder_lines(indent: str = "  ") -> list[str]:
    """One line per encoder: name, class_path, input, description."""
    w = max(len(n) for n in ENCODERS) + 2
    wc = max(len(c) for c, _, _ in ENCODERS.values()) + 2
    return [f"{indent}{n.ljust(w)}{c.ljust(wc)}{m.ljust(11)}{d}" for n, (c, m, d) in ENCODERS.items()]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--modality", choices=["timeseries", "voxels"], default=None,
                        help="only encoders of EEG/MEG time series or of fMRI voxels")


def run(args: argparse.Namespace) -> int:
    names = [n for n, (_, m, _) in ENCODERS.items() if args.modality in (None, m)]
    lines = [ln for n, ln in zip(ENCODERS, encoder_lines(), strict=True) if n in names]
    print("\n".join(lines))
    print("\nuse one in a config as  model.init_args.encoder.class_path: <class_path>  "
          "(or --model.init_args.encoder <class_path>)")
    return 0
