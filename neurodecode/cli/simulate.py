"""``neurodecode simulate``: make a complete simulated data set (no download needed)."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "Simulate object images and the EEG, MEG or fMRI responses of several subjects (stores + ceiling)."
DESCRIPTION = """\
Simulate a stimulus set of procedurally drawn objects (training concepts and disjoint test concepts)
and the responses of several subjects, written as a prepared folder: sub-XX.h5 trial stores,
stimuli.tsv, images/, features.npz, dataset.json and ceiling.json (the retrieval accuracy of an ideal
decoder that knows the forward model). See neurodecode.simulate.forward for the model.

With --continuous (EEG/MEG), each subject is written instead as one continuous recording, an MNE Raw
FIF with a stimulus channel (STI 014) and one annotation per image (stim/<stimulus_id>): the test
images, each --reps-test times, in rapid sequences at THINGS-EEG2's 5 images per second, seen by the
same simulated subjects that the same options and --seed give to the epoched simulation (so a model
trained on one decodes the other). --like SIM_DIR re-simulates the subjects and stimuli an earlier
simulation recorded in SIM_DIR/dataset.json (e.g. the demo's sim_eeg/) as continuous recordings; the
other simulation options are then taken from SIM_DIR (--reps-test still sets the repetitions).
See neurodecode.simulate.continuous.

example:
  neurodecode simulate --modality eeg --out sim_eeg
  neurodecode simulate --modality fmri --out sim_fmri --subjects 2 --snr 0.2
  neurodecode simulate --modality eeg --continuous --out sim_live
  neurodecode simulate --continuous --like demo_out/sim_eeg --out live_rec
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from neurodecode.simulate.config import MODALITY_DEFAULTS, SimulationConfig

    d = SimulationConfig()
    parser.add_argument("--modality", choices=sorted(MODALITY_DEFAULTS), default="eeg", help="default: eeg")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--subjects", type=int, default=d.n_subjects, help=f"number of subjects (default {d.n_subjects})")
    parser.add_argument("--train-concepts", type=int, default=d.n_train_concepts,
                        help=f"training concepts (default {d.n_train_concepts})")
    parser.add_argument("--test-concepts", type=int, default=d.n_test_concepts,
                        help=f"test concepts, disjoint from training (default {d.n_test_concepts})")
    parser.add_argument("--exemplars", type=int, default=d.n_exemplars,
                        help=f"images per training concept (default {d.n_exemplars})")
    parser.add_argument("--test-exemplars", type=int, default=d.n_test_exemplars,
                        help=f"images per test concept (default {d.n_test_exemplars})")
    parser.add_argument("--reps-train", type=int, default=None,
                        help="repetitions of each training image (default: eeg 4, meg 1, fmri 1)")
    parser.add_argument("--reps-test", type=int, default=None,
                        help="repetitions of each test image (default: eeg 20, meg 12, fmri 3)")
    parser.add_argument("--snr", type=float, default=None,
                        help="single-trial stimulus-signal to background-noise variance ratio "
                             "(default: eeg 0.3, meg 0.3, fmri 0.1)")
    parser.add_argument("--neural-noise", type=float, default=None,
                        help="trial-to-trial source amplitude sd relative to its sd over stimuli "
                             "(default: eeg 4, meg 3, fmri 3.5)")
    parser.add_argument("--sfreq", type=float, default=None, help="sampling rate in Hz (default: eeg 250, meg 200)")
    parser.add_argument("--voxels", type=int, default=d.n_voxels, help=f"fMRI voxels (default {d.n_voxels})")
    parser.add_argument("--image-size", type=int, default=d.image_size, help=f"pixels (default {d.image_size})")
    parser.add_argument("--subject-variability", type=float, default=d.subject_variability,
                        help=f"how much subjects differ, 0 = identical forward models (default {d.subject_variability})")
    parser.add_argument("--seed", type=int, default=d.seed, help=f"random seed (default {d.seed})")
    parser.add_argument("--continuous", action="store_true",
                        help="write one continuous recording per subject (Raw FIF with a stimulus channel and "
                             "annotations; test images at 5 per second) instead of epoched trial stores")
    parser.add_argument("--like", type=Path, default=None, metavar="SIM_DIR",
                        help="with --continuous: re-simulate the subjects and stimuli of the simulation in SIM_DIR "
                             "(from its dataset.json) as continuous recordings")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def run(args: argparse.Namespace) -> int:
    from neurodecode.utils import UserError

    if args.out.exists() and not args.out.is_dir():
        raise UserError(f"--out {args.out} is a file, not a folder; give a new or empty folder for the simulated "
                        f"data set, e.g. --out sim_{args.modality}.")
    if args.continuous or args.like is not None:
        return _run_continuous(args)
    from neurodecode.simulate.dataset import SimulationConfig, simulate

    cfg = SimulationConfig(
        modality=args.modality, n_subjects=args.subjects, n_train_concepts=args.train_concepts,
        n_test_concepts=args.test_concepts, n_exemplars=args.exemplars, n_test_exemplars=args.test_exemplars,
        n_reps_train=args.reps_train, n_reps_test=args.reps_test, snr=args.snr, neural_noise=args.neural_noise,
        sfreq=args.sfreq, n_voxels=args.voxels, image_size=args.image_size,
        subject_variability=args.subject_variability, seed=args.seed,
    )
    res = simulate(args.out, cfg, progress_bar=not args.no_progress)
    print(res.summary())
    print(f"wrote {len(res.stores)} trial store(s), stimuli.tsv, images/, features.npz and ceiling.json")
    return 0


def _run_continuous(args: argparse.Namespace) -> int:
    from neurodecode.simulate.continuous import simulate_continuous
    from neurodecode.simulate.dataset import SimulationConfig
    from neurodecode.utils import UserError

    if args.like is not None:
        if not args.like.is_dir():
            raise UserError(f"--like {args.like}: no such folder; give the folder of an earlier 'neurodecode simulate' "
                            "(e.g. demo_out/sim_eeg).")
        if not args.continuous:
            print("--like implies --continuous: writing continuous recordings")
        res = simulate_continuous(args.out, like=args.like, n_reps=args.reps_test, progress_bar=not args.no_progress)
    else:
        if args.modality == "fmri":
            raise UserError("--continuous: continuous recordings are simulated for EEG and MEG only; give --modality "
                            "eeg or meg.")
        cfg = SimulationConfig(
            modality=args.modality, n_subjects=args.subjects, n_train_concepts=args.train_concepts,
            n_test_concepts=args.test_concepts, n_exemplars=args.exemplars, n_test_exemplars=args.test_exemplars,
            n_reps_train=args.reps_train, n_reps_test=args.reps_test, snr=args.snr, neural_noise=args.neural_noise,
            sfreq=args.sfreq, image_size=args.image_size, subject_variability=args.subject_variability,
            seed=args.seed,
        )
        res = simulate_continuous(args.out, cfg, progress_bar=not args.no_progress)
    print(res.summary())
    print(f"wrote {len(res.recordings)} recording(s) ({res.recordings[0].name}, ...), event_map.tsv and continuous.json; "
          f"decode one with: neurodecode stream --model EXPORTED_DIR --source file:{res.recordings[0]} --out live")
    return 0
