"""``neurodecode prepare <source>``: turn a public data layout into trial stores + a stimulus table."""

from __future__ import annotations

import argparse
import importlib
from pathlib import Path

HELP = "Read a data set (things-eeg2, things-meg, nsd, epochs, csv, nifti) into trial stores and a stimulus table."

# source name -> reader module. A reader module exposes PREPARE_HELP (one line),
# add_prepare_arguments(parser) and prepare_from_args(args) -> Path (the output folder).
SOURCES = {
    "things-eeg2": "neurodecode.readers.things_eeg2",
    "things-meg": "neurodecode.readers.things_meg",
    "nsd": "neurodecode.readers.nsd",
    "epochs": "neurodecode.readers.epochs",
    "csv": "neurodecode.readers.csv",
    "nifti": "neurodecode.readers.nifti",
}


def _reader(name: str):
    try:
        return importlib.import_module(SOURCES[name])
    except ModuleNotFoundError as err:
        if err.name == SOURCES[name]:
            return None
        raise


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="source", metavar="SOURCE", required=True)
    for name in SOURCES:
        mod = _reader(name)
        if mod is None:
            continue
        p = sub.add_parser(name, help=mod.PREPARE_HELP, description=getattr(mod, "PREPARE_DESCRIPTION", None)
                           or mod.PREPARE_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
        p.add_argument("--root", type=Path, required=True, help="folder holding the data set in its public layout")
        p.add_argument("--out", type=Path, required=True,
                       help="output folder: sub-XX.h5 trial stores, stimuli.tsv and dataset.json")
        p.add_argument("--overwrite", action="store_true",
                       help="rebuild stores that already exist (by default finished subjects are kept: "
                            "an interrupted run resumes where it stopped)")
        p.add_argument("--no-progress", action="store_true", help="hide progress bars")
        p.add_argument("--verbose", action="store_true", help="print what is being done")
        mod.add_prepare_arguments(p)


def run(args: argparse.Namespace) -> int:
    from neurodecode.utils import set_log_level

    set_log_level("INFO" if args.verbose else "WARNING")
    mod = _reader(args.source)
    out = mod.prepare_from_args(args)
    print(f"prepared {args.source} -> {out}")
    return 0
