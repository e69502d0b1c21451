"""``neurodecode prepare <source>``: turn a public data layout into trial stores + a stimulus table.

Each source's sub-parser is generated from the reader's options dataclass
(:class:`neurodecode.readers.options.ReaderOptions` subclasses): one ``--flag`` per field, named
after it (``l_freq`` -> ``--l-freq``) unless its metadata gives a ``flag``, with the field's
default, help text, ``choices`` and ``parse`` function; booleans become ``--name`` /
``--no-name`` switches. The readers know nothing of ``argparse``.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HELP = "Read a data set (things-eeg2, things-meg, nsd, epochs, csv, nifti) into trial stores and a stimulus table."


# --------------------------------------------------------------------------------------------------
# dataclass -> argparse
# --------------------------------------------------------------------------------------------------
def _base_type(hint: Any) -> tuple[Any, bool]:
    """``float | None`` -> ``(float, True)``; ``int`` -> ``(int, False)``."""
    args = typing.get_args(hint)
    if args and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return (rest[0] if len(rest) == 1 else hint), True
    return hint, False


def _format_default(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, tuple | list):
        return ",".join("None" if v is None else _format_default(v) for v in value)
    return str(value)


def _parser_for(f: dataclasses.Field, hint: Any) -> Callable[[str], Any] | None:
    from neurodecode.readers.options import float_or_none, int_or_none

    if "parse" in f.metadata:
        return f.metadata["parse"]
    kind, optional = _base_type(hint)
    if kind is float:
        return float_or_none if optional else float
    if kind is int:
        return int_or_none if optional else int
    if kind is Path:
        return Path
    return None  # str: argparse's default


def add_option_arguments(parser: argparse.ArgumentParser, options: Any, *, title: str | None = None) -> list[str]:
    """Add one argument per field of the options object ``options`` (nested ones in their groups).

    Parameters
    ----------
    parser : argparse.ArgumentParser
        The sub-parser.
    options : ReaderOptions
        An options object whose values are the defaults shown and used.
    title : str | None
        Title of the argument group (default: the class's ``GROUP``).

    Returns
    -------
    dests : list of str
        The argument destinations added (the field names), nested ones included.
    """
    from neurodecode.readers.options import ReaderOptions

    hints = typing.get_type_hints(type(options))
    group = parser.add_argument_group(title or options.GROUP)
    dests, nested = [], []
    for f in dataclasses.fields(options):
        value = getattr(options, f.name)
        if isinstance(value, ReaderOptions):
            nested.append(value)
            continue
        meta = f.metadata
        help_text = meta.get("help", "")
        kind, _ = _base_type(hints[f.name])
        if kind is bool:
            flag = meta.get("flag") or (f"--no-{f.name}" if value else f"--{f.name}").replace("_", "-")
            group.add_argument(flag, dest=f.name, action="store_false" if value else "store_true", help=help_text)
            dests.append(f.name)
            continue
        if "(default" not in help_text.lower():
            shown = meta.get("none", "none") if value is None else _format_default(value)
            help_text = f"{help_text} (default: {shown})"
        kwargs: dict[str, Any] = {"dest": f.name, "default": value, "help": help_text.replace("%", "%%")}
        parse = _parser_for(f, hints[f.name])
        if parse is not None:
            kwargs["type"] = parse
        if "choices" in meta:
            kwargs["choices"] = [c for c in meta["choices"] if c is not None]
        for key in ("nargs", "metavar"):
            if key in meta:
                kwargs[key] = meta[key]
        group.add_argument(meta.get("flag") or "--" + f.name.replace("_", "-"), **kwargs)
        dests.append(f.name)
    for sub in nested:
        dests += add_option_arguments(parser, sub)
    return dests


def options_from_args(options: Any, args: argparse.Namespace) -> Any:
    """A copy of the options object ``options`` with every value read from ``args``."""
    from neurodecode.readers.options import ReaderOptions

    changes = {}
    for f in dataclasses.fields(options):
        value = getattr(options, f.name)
        if isinstance(value, ReaderOptions):
            changes[f.name] = options_from_args(value, args)
            continue
        got = getattr(args, f.name)
        if f.metadata.get("nargs") and isinstance(got, list) and any(isinstance(g, list) for g in got):
            got = [x for g in got for x in (g if isinstance(g, list) else [g])]  # '--subjects 1,2 3'
        changes[f.name] = got
    return dataclasses.replace(options, **changes)


# --------------------------------------------------------------------------------------------------
# sources
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Source:
    """One ``prepare`` source: its reader module, options class, texts and runner."""

    module: str
    options: str
    help: str
    description: str
    run: Callable[[Any, Any, argparse.Namespace], Path]
    extra: Callable[[argparse.ArgumentParser], None] | None = None


def _verbose(args: argparse.Namespace) -> bool | None:
    return args.verbose or None


def _run_things_eeg2(mod: Any, opt: Any, args: argparse.Namespace) -> Path:
    return mod.prepare_things_eeg2(args.root, args.out, layout=opt.layout, subjects=opt.subjects, images=opt.images,
                                   raw_options=opt.raw, overwrite=args.overwrite, progress_bar=not args.no_progress,
                                   verbose="INFO" if args.verbose else None)


def _run_options(func: str) -> Callable[[Any, Any, argparse.Namespace], Path]:
    def run(mod: Any, opt: Any, args: argparse.Namespace) -> Path:
        return getattr(mod, func)(args.root, args.out, opt, overwrite=args.overwrite, progress=not args.no_progress,
                                  verbose=_verbose(args))

    return run


def _run_epochs(mod: Any, opt: Any, args: argparse.Namespace) -> Path:
    for f, sub in mod.find_epochs_files(args.root, args.subject):
        mod.prepare_epochs(f, args.out, opt, subject=sub, overwrite=args.overwrite, progress=not args.no_progress,
                           verbose=_verbose(args))
    return Path(args.out)


def _epochs_extra(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--subject", default=None,
                        help="subject label when --root is one file (default: from 'sub-XX' in the name, else 01)")


def _run_csv(mod: Any, opt: Any, args: argparse.Namespace) -> Path:
    if args.no_filter:
        opt = opt.updated(l_freq=None, h_freq=None)
    return _run_options("prepare_csv")(mod, opt, args)


def _csv_extra(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--no-filter", action="store_true", help="do not band-pass filter (--l-freq/--h-freq: none)")


# --------------------------------------------------------------------------------------------------
# help texts
# --------------------------------------------------------------------------------------------------
THINGS_EEG2_HELP = "THINGS-EEG2 (community 250 Hz, official 100 Hz or raw layout) with its image set."
THINGS_EEG2_DESCRIPTION = """\
Read THINGS-EEG2 (10 subjects, 16540 training and 200 test images) into trial stores.

Layouts (--layout, detected by default):
  community-250hz  ROOT/Preprocessed_data_250Hz/sub-XX/preprocessed_eeg_{training,test}.npy
                   (NICE/ATM release: 63 channels, 250 Hz, 0-0.996 s; pickled dicts)
  official-100hz   ROOT/preprocessed_data/sub-XX/... (official release: 17 channels, 100 Hz)
  raw              ROOT/Raw_data/sub-XX/ses-0Y/raw_eeg_{training,test}.npy (1000 Hz, 64 rows);
                   epoched, resampled and whitened (MVNN per session, fitted on training data)
Images: training_images/ and test_images/ in ROOT, ROOT/image_set, ROOT/images_set or --images.
Files are read without unpickling code (restricted unpickler). Subjects already prepared are
skipped (use --overwrite to rebuild them). Data: https://osf.io/3jk45/ (see
neurodecode/io/data_manifests/things_eeg2.yaml).

example:
  neurodecode prepare things-eeg2 --root THINGS-EEG2 --out prepared/things_eeg2 --subjects 01 02
  neurodecode prepare things-eeg2 --root THINGS-EEG2 --out prepared/raw250 --layout raw --l-freq 0.1
"""

THINGS_MEG_HELP = "THINGS-MEG (OpenNeuro ds004212) preprocessed epochs: 4 subjects, 271 MEG channels."
THINGS_MEG_DESCRIPTION = """\
THINGS-MEG (Hebart et al. 2023) from its preprocessed epochs:

  ROOT/derivatives/preprocessed/preprocessed_P{1..4}-epo.fif (+ -epo-1/-2/-3.fif parts)

plus the THINGS database metadata (--things-meta: the folder holding image_paths.csv and
image_concept_index.csv, directly or under Metadata/Image-specific and Metadata/Concept-specific)
and, for the stimulus table's image paths, the THINGS images (--images: the folder of concept
sub-folders, or any folder in which each image file name occurs once).

Catch trials (event 999999) are dropped; the 200 images shown 12 times are the test set; training
images of test concepts are removed (1654 concepts x 12 images remain). Epochs are cropped to
[0, 1) s, optionally band-passed and resampled, and z-scored per channel with statistics from
training trials only.

Example:
  neurodecode prepare things-meg --root ds004212 --out prepared/things_meg \\
      --things-meta THINGS/Metadata --images THINGS/Images
"""

NSD_HELP = "Natural Scenes Dataset: single-trial betas (HDF5) in an ROI such as nsdgeneral, 1000 shared test images."
NSD_DESCRIPTION = """\
NSD (Allen et al. 2022) from its public layout:

  ROOT/nsddata/experiments/nsd/nsd_expdesign.mat
  ROOT/nsddata/ppdata/subjXX/func1pt8mm/roi/nsdgeneral.nii.gz
  ROOT/nsddata_betas/ppdata/subjXX/func1pt8mm/betas_fithrf_GLMdenoise_RR/betas_sessionNN.hdf5
  ROOT/nsddata_stimuli/stimuli/nsd/nsd_stimuli.hdf5

Betas (int16, percent signal change x 300; h5py order trials x Z x Y x X) are read session by
session and chunk by chunk, masked with the ROI (nibabel order X x Y x Z, voxels > 0), divided by
300 and z-scored per voxel within each session. The 1000 shared images (sharedix) are the test set;
their up-to-3 repetitions are stored one by one (repetition 0-2) and averaged at load time. The
subject's images are written once to OUT/images/nsd-NNNNN.png unless --no-images.

Example:
  neurodecode prepare nsd --root NSD --out prepared/nsd --subjects 01,02 --sessions 1-37
"""

EPOCHS_HELP = "Any mne.Epochs (.fif) whose metadata column or event ids name the stimulus of each trial."
EPOCHS_DESCRIPTION = """\
Turn MNE epochs into trial stores.

--root is one '-epo.fif' file (one subject) or a folder of them (one subject per file; the
subject label is taken from 'sub-XX' in the file name, else from the file's position).

The stimulus of each trial is the value of a metadata column (--stimulus-column) or, by default,
the name of its event in epochs.event_id. Images: --images DIR (a file whose stem is the stimulus
id, or a sub-folder named after it for category-level stimuli) or --stimulus-table FILE (CSV/TSV
with columns stimulus_id, image_path and optionally concept, split; paths relative to the table).
The split is 'train' unless --split-column, --test-stimuli or the table's split column says
otherwise. Repetitions are numbered in trial order per stimulus.

Example:
  neurodecode prepare epochs --root sub-01-epo.fif --out prepared --stimulus-column image \\
      --images stimuli/ --tmin 0 --tmax 1 --sfreq 200 --scaling zscore
"""

CSV_HELP = "CSV recordings (e.g. Muse headsets): timestamps, one column per channel, a marker column."
CSV_DESCRIPTION = """\
CSV recordings such as the Muse files of the NeuroTechX eeg-notebooks:

  ROOT/[recordings/]subjectN/sessionM/*.csv   (also *.csv.csv)
  header: timestamps,TP9,AF7,AF8,TP10,Right AUX,Marker0

Each file is filtered (MNE), epoched around the non-zero markers and cleaned by peak-to-peak
rejection; epochs kept and rejected are printed per subject, and a file that loses more than half
of its epochs is warned about. Markers map to category names (--event-map 1=face,2=house); a
wrong map is reported with the marker codes found. The stimulus table has one row per category
whose image path is the category's image folder: under --images, a folder per category (NAME/,
NAMEs/ or NAMEes/) or files named after their category (NAME-001.jpg, NAME_2.png, NAME 3.jpg:
the file name starts with the category followed by '-', '_', a space or a digit; such files are
copied to OUT/images/NAME/), or --image-folders. Without images the table has no image paths and
decoding targets come from the category names. Duplicate files (same content) are dropped and
reported. Every trial is 'train'; sessions and runs are kept for cross-validation. One --root
holds one experiment (subject folders under several experiment folders are refused).

Example (the N170 data):
  neurodecode prepare csv --root n170 --out prepared/n170 --event-map 1=face,2=house \\
      --images n170/stimuli
"""

NIFTI_HELP = "Block-design fMRI: NIfTI runs with BIDS-style events.tsv (onset, duration, trial_type), optional mask."
NIFTI_DESCRIPTION = """\
Block-design fMRI (e.g. Haxby et al. 2001): 4-D NIfTI runs found under ROOT by --bold (a file name
pattern, default '*bold.nii*'), each with an events table (--events, default: the BIDS sibling
'<name>_events.tsv', else the one '*events.tsv' next to it) holding onset, duration, trial_type.

One sample per block: voxels are z-scored within each run, then averaged from onset + --delay
(default 4 s) to the block's end. Labels are trial types, runs are kept for leave-one-run-out
cross-validation. --mask (a NIfTI with voxels > 0; '{subject}' is replaced by the subject label)
restricts the voxels.

Example (the Haxby data):
  neurodecode prepare nifti --root haxby2001 --out prepared/haxby --bold bold_1slice.nii.gz
"""


SOURCES: dict[str, Source] = {
    "things-eeg2": Source("neurodecode.readers.things_eeg2", "ThingsEEG2Options", THINGS_EEG2_HELP, THINGS_EEG2_DESCRIPTION,
                         _run_things_eeg2),
    "things-meg": Source("neurodecode.readers.things_meg", "ThingsMEGOptions", THINGS_MEG_HELP, THINGS_MEG_DESCRIPTION,
                        _run_options("prepare_things_meg")),
    "nsd": Source("neurodecode.readers.nsd", "NSDOptions", NSD_HELP, NSD_DESCRIPTION,
                 _run_options("prepare_nsd")),
    "epochs": Source("neurodecode.readers.epochs", "EpochsOptions", EPOCHS_HELP, EPOCHS_DESCRIPTION,
                    _run_epochs, _epochs_extra),
    "csv": Source("neurodecode.readers.csv", "CSVOptions", CSV_HELP, CSV_DESCRIPTION,
                 _run_csv, _csv_extra),
    "nifti": Source("neurodecode.readers.nifti", "NiftiOptions", NIFTI_HELP, NIFTI_DESCRIPTION,
                   _run_options("prepare_nifti")),
}


def _reader(name: str) -> Any:
    src = SOURCES[name]
    try:
        return importlib.import_module(src.module)
    except ModuleNotFoundError as err:
        if err.name == src.module:
            return None
        raise


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add one sub-parser per source, generated from the reader's options dataclass."""
    sub = parser.add_subparsers(dest="source", metavar="SOURCE", required=True)
    for name, src in SOURCES.items():
        mod = _reader(name)
        if mod is None:
            continue
        p = sub.add_parser(name, help=src.help, description=src.description,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        p.add_argument("--root", type=Path, required=True, help="folder holding the data set in its public layout")
        p.add_argument("--out", type=Path, required=True,
                       help="output folder: sub-XX.h5 trial stores, stimuli.tsv and dataset.json")
        p.add_argument("--overwrite", action="store_true",
                       help="rebuild stores that already exist (by default finished subjects are kept: "
                            "an interrupted run resumes where it stopped; a rerun with other options is "
                            "refused unless --overwrite)")
        p.add_argument("--no-progress", action="store_true", help="hide progress bars")
        p.add_argument("--verbose", action="store_true", help="print what is being done")
        if src.extra is not None:
            src.extra(p)
        add_option_arguments(p, getattr(mod, src.options)())


def check_paths(args: argparse.Namespace) -> None:
    """Check ``--root`` and ``--out`` before any reading: a clear line when either is the wrong kind."""
    from neurodecode.utils import UserError

    root, out = Path(args.root), Path(args.out)
    if not root.exists():
        raise UserError(f"--root {root} does not exist: give the folder that holds the {args.source} data set.")
    if root.is_file() and args.source != "epochs":
        raise UserError(f"--root {root} is a file, not a folder: give the folder that holds the {args.source} data "
                        f"set (perhaps {root.parent}).")
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file: give a folder (new or prepared before) for the trial stores.")


def summary_lines(out: Path, subjects: list[str] | None = None) -> list[str]:
    """One line per subject of a prepared folder: trials kept (and epochs rejected, where counted)."""
    import json

    meta_path = Path(out) / "dataset.json"
    if not meta_path.is_file():
        return []
    try:
        info = json.loads(meta_path.read_text()).get("subjects_info", {}) or {}
    except ValueError:
        return []
    lines = []
    for subject, si in sorted(info.items()):
        if subjects is not None and subject not in subjects or not isinstance(si, dict) or "n_trials" not in si:
            continue
        line = f"  sub-{subject}: {si['n_trials']} trials kept"
        if "n_rejected" in si and "n_events" in si:
            pct = 100 * si["n_rejected"] / max(si["n_events"], 1)
            line += f", {si['n_rejected']} of {si['n_events']} epochs rejected ({pct:.0f}%)"
        if "files" in si:
            line += f", {len(si['files'])} file(s)"
            bad = [f for f in si["files"] if f.get("n_events", 0) == 0 or f.get("n_rejected", 0) > f["n_events"] / 2]
            for f in bad:
                line += (f"\n    {f['file']}: {f['n_epochs']} kept, {f['n_rejected']} of {f['n_events']} rejected"
                         if f.get("n_events") else f"\n    {f['file']}: no epoch (no marker of the event map)")
        lines.append(line)
    return lines


def run(args: argparse.Namespace) -> int:
    """Run ``neurodecode prepare <source>`` from parsed arguments."""
    from neurodecode.utils import set_log_level

    set_log_level("INFO" if args.verbose else "WARNING")
    check_paths(args)
    src = SOURCES[args.source]
    mod = _reader(args.source)
    opt = options_from_args(getattr(mod, src.options)(), args)
    out = src.run(mod, opt, args)
    print(f"prepared {args.source} -> {out}")
    for line in summary_lines(Path(out)):
        print(line)
    return 0
