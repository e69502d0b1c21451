"""Natural Scenes Dataset reader (Allen et al. 2022): ``neurodecode prepare nsd``.

Layout read (the NSD data manual's, ``neurodecode/io/data_manifests/nsd.yaml``)::

    ROOT/nsddata/experiments/nsd/nsd_expdesign.mat
    ROOT/nsddata/ppdata/subjXX/func1pt8mm/roi/nsdgeneral.nii.gz
    ROOT/nsddata_betas/ppdata/subjXX/func1pt8mm/betas_fithrf_GLMdenoise_RR/betas_sessionNN.hdf5
    ROOT/nsddata_stimuli/stimuli/nsd/nsd_stimuli.hdf5

Facts the reader relies on
--------------------------
* ``betas_sessionNN.hdf5`` holds one dataset ``betas``: int16, percent signal change x 300, 750
  trials in chronological order. The files are written by MATLAB (column-major), where the array
  is ``X x Y x Z x 750`` (the NIfTI order, e.g. 81 x 104 x 83 x 750 for subj01 at 1.8 mm); h5py,
  being row-major, shows the reversed axes ``(750, Z, Y, X)``. The ROI mask read with nibabel is
  ``(X, Y, Z)``, so voxel ``(i, j, k)`` of the mask is ``betas[:, k, j, i]``. The reader checks that
  ``betas.shape[1:] == mask.shape[::-1]`` and stores ``voxel_ijk`` in the nibabel ``(i, j, k)`` order
  with the mask's affine, so voxels map back onto the NIfTI volume.
* ``nsd_expdesign.mat`` (MATLAB v5, ``scipy.io.loadmat``): ``masterordering`` (1 x 30000: trial ->
  column of ``subjectim``, 1-based), ``subjectim`` (8 x 10000: subject's images as 1-based indices
  into the 73k images), ``sharedix`` (1 x 1000: the shared images, 1-based 73k indices). Session
  ``s`` (1-based) is trials ``(s-1)*750 .. s*750-1`` of ``masterordering``.
* ``nsd_stimuli.hdf5``: ``imgBrick`` uint8 ``(73000, 425, 425, 3)`` as h5py shows it.

What is stored
--------------
One fMRI store per subject, trials in chronological order over the chosen sessions, signals
``(n_trials, n_voxels)`` over the ROI voxels (mask > 0): betas / 300, z-scored per voxel within each
session (voxels constant in a session, which NSD marks invalid with zeros, become 0). Per trial:
``stimulus_id`` = ``nsd-NNNNN`` (0-based index into the 73k images, as ``nsdId`` in
``nsd_stim_info_merged.csv``), ``split`` = ``test`` for the 1000 shared images else ``train``,
``repetition`` = 0, 1, 2 for the first, second, third presentation of the image in NSD's design,
``session`` (1-based), and the extra fields ``trial`` (index into ``masterordering``) and ``nsd_id``.
Test repetitions are kept one by one, like every other reader of this package: the usual NSD test
set is their average, which the data module computes at load time (one schema for all sources).

Images: by default each image a chosen subject saw is extracted once from ``imgBrick`` to
``OUT/images/nsd-NNNNN.png`` (lossless, so teachers see the exact pixels; resumable); with
``extract_images=False`` the table has no image paths. A stimulus's concept is its id (NSD comes
without category labels in this layout).
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from neurodecode._docs import fill_doc
from neurodecode.io.manifests import check_root, load_manifest
from neurodecode.io.store import StimulusTable, StoreWriter
from neurodecode.readers.common import (
    finish_prepared,
    is_done,
    provenance_step,
    reading,
    record_prepare_options,
    store_path,
)
from neurodecode.readers.options import ReaderOptions, comma_list, option, resolve_options
from neurodecode.utils import PathLike, UserError, atomic_path, logger, use_log_level
from neurodecode.utils import progress as progress_bar

EXPDESIGN = "nsddata/experiments/nsd/nsd_expdesign.mat"
STIMULI = "nsddata_stimuli/stimuli/nsd/nsd_stimuli.hdf5"
ROI = "nsddata/ppdata/subj{subject}/{space}/roi/{roi}.nii.gz"
BETAS_DIR = "nsddata_betas/ppdata/subj{subject}/{space}/{betas}"
BETAS_FILE = "betas_session{session:02d}.hdf5"
SUBJECTS = tuple(f"{i:02d}" for i in range(1, 9))
BETA_SCALE = 300.0


# --------------------------------------------------------------------------------------------------
# options
# --------------------------------------------------------------------------------------------------
def parse_sessions(text: str | None) -> list[int] | None:
    """``"1-3,5"`` -> ``[1, 2, 3, 5]``."""
    if text is None:
        return None
    out: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        if "-" in part:
            a, b = part.split("-", 1)
            out += list(range(int(a), int(b) + 1))
        else:
            out.append(int(part))
    return sorted(set(out))



@dataclass
class NSDOptions(ReaderOptions):
    """Options of :func:`prepare_nsd`."""

    GROUP: ClassVar[str] = "NSD"

    subjects: list[str] | None = option(None, parse=comma_list,
                                        help="comma-separated subjects 01-08 (default: every subject with a betas "
                                             "folder)")
    sessions: list[int] | None = option(None, parse=parse_sessions,
                                        help="sessions to read, e.g. '1-37' or '1,2,5' (default: every "
                                             "betas_sessionNN.hdf5 present)")
    roi: str = option("nsdgeneral", help="ROI file in ppdata/subjXX/<space>/roi/ (voxels > 0 are kept)")
    space: str = option("func1pt8mm", choices=("func1pt8mm", "func1mm"), help="volume preparation")
    betas: str = option("betas_fithrf_GLMdenoise_RR", help="beta version folder")
    trials_per_session: int = option(750, help="trials per session file")
    zscore: bool = option(True, help="keep percent signal change (no per-session z-score)")
    extract_images: bool = option(True, flag="--no-images",
                                  help="do not extract images to OUT/images (the stimulus table then has no image "
                                       "paths)")
    chunk_trials: int = option(50, help="trials (whole volumes) read from HDF5 at a time; bounds memory")


# --------------------------------------------------------------------------------------------------
# design
# --------------------------------------------------------------------------------------------------
def read_expdesign(path: PathLike) -> dict[str, np.ndarray]:
    """Read ``nsd_expdesign.mat``; returns 1-D int arrays ``masterordering`` and ``sharedix`` and the
    2-D ``subjectim`` (all 1-based, as stored)."""
    import scipy.io

    path = Path(path)
    with reading(path, "a MATLAB v5 .mat file (NSD's nsd_expdesign.mat)"):
        mat = scipy.io.loadmat(path)
    missing = [k for k in ("masterordering", "subjectim", "sharedix") if k not in mat]
    if missing:
        raise UserError(f"{path}: variable(s) {missing} missing; NSD's nsd_expdesign.mat holds masterordering, "
                       "subjectim and sharedix.")
    out = {"masterordering": np.asarray(mat["masterordering"]).ravel().astype(np.int64),
           "subjectim": np.atleast_2d(np.asarray(mat["subjectim"])).astype(np.int64),
           "sharedix": np.asarray(mat["sharedix"]).ravel().astype(np.int64)}
    if out["masterordering"].min() < 1 or out["masterordering"].max() > out["subjectim"].shape[1]:
        raise ValueError(f"{path}: masterordering must hold 1-based columns of subjectim "
                         f"(1..{out['subjectim'].shape[1]}), found {out['masterordering'].min()}.."
                         f"{out['masterordering'].max()}.")
    return out


def trial_images(design: dict[str, np.ndarray], subject: str) -> np.ndarray:
    """0-based 73k image index of every trial of ``masterordering`` for ``subject`` ("01".."08")."""
    s = int(subject)
    sim = design["subjectim"]
    if not 1 <= s <= sim.shape[0]:
        raise ValueError(f"subject {subject} is not a row of subjectim (1..{sim.shape[0]}).")
    return sim[s - 1, design["masterordering"] - 1] - 1


def presentation_index(images: np.ndarray) -> np.ndarray:
    """0-based count of earlier trials showing the same image (repetition number of each trial)."""
    order = np.argsort(images, kind="stable")
    sorted_imgs = images[order]
    start = np.r_[0, np.flatnonzero(np.diff(sorted_imgs)) + 1]
    run_start = np.repeat(start, np.diff(np.r_[start, len(images)]))
    rep = np.empty(len(images), dtype=np.int32)
    rep[order] = np.arange(len(images)) - run_start
    return rep


def stimulus_name(nsd_id: int) -> str:
    """Stimulus id of a 0-based 73k index."""
    return f"nsd-{int(nsd_id):05d}"


# --------------------------------------------------------------------------------------------------
# reader
# --------------------------------------------------------------------------------------------------
def _sessions_found(root: Path, subject: str, space: str, betas: str) -> list[int]:
    d = root / BETAS_DIR.format(subject=subject, space=space, betas=betas)
    out = []
    for p in d.glob("betas_session*.hdf5"):
        m = re.fullmatch(r"betas_session(\d+)\.hdf5", p.name)
        if m:
            out.append(int(m.group(1)))
    return sorted(out)


def _check_layout(root: Path, subjects: list[str], sessions: list[int] | None, *, space: str, betas: str, roi: str,
                  need_stimuli: bool) -> None:
    man = copy.deepcopy(load_manifest("nsd"))
    layout = man["layouts"]["func1pt8mm"]
    files = []
    for e in layout["files"]:
        e = dict(e)
        for key in ("path", "glob"):
            if key in e:
                e[key] = e[key].replace("func1pt8mm", space).replace("betas_fithrf_GLMdenoise_RR", betas) \
                    .replace("nsdgeneral", roi)
        if e.get("path") == STIMULI and not need_stimuli:
            e["optional"] = True
        files.append(e)
    for s in sessions or []:
        files.append({"path": BETAS_DIR.format(subject="{subject}", space=space, betas=betas) + "/" +
                      BETAS_FILE.format(session=s), "per_subject": True})
    layout["files"] = files
    check_root(root, man, "func1pt8mm", subjects=subjects)


@fill_doc
def prepare_nsd(
    root: PathLike,
    out: PathLike,
    options: NSDOptions | None = None,
    *,
    overwrite: bool = False,
    progress: bool = True,
    verbose: bool | str | None = None,
    **fields: Any,
) -> Path:
    """Prepare NSD single-trial betas into fMRI trial stores (see the module docstring).

    Parameters
    ----------
    root : path-like
        NSD root (holding ``nsddata``, ``nsddata_betas``, ``nsddata_stimuli``).
    out : path-like
        Output folder.
    options : NSDOptions | None
        The options (defaults: :class:`NSDOptions`). ``subjects``: ``"01"``..``"08"`` (default:
        subjects with a betas folder, else ``01``, so the manifest check says what to download).
        ``sessions``: 1-based sessions (default: every ``betas_sessionNN.hdf5`` present for the
        subject). ``roi``: ROI file name in ``roi/`` (voxels > 0 are kept). ``space``:
        ``func1pt8mm`` or ``func1mm``. ``betas``: beta version folder. ``trials_per_session``:
        trials per session file (750 in NSD). ``zscore``: z-score each voxel within each session.
        ``extract_images``: write the subject's images as PNG under ``out/images``.
        ``chunk_trials``: trials read from HDF5 at a time (a chunk holds whole volumes).
    %(overwrite)s
    %(progress)s
    %(verbose)s
    %(fields)s

    Returns
    -------
    %(returns_out)s
    """
    opt = resolve_options(NSDOptions, options, fields)
    subjects, sessions = opt.subjects, opt.sessions
    import h5py

    from neurodecode.readers.nifti import require_nibabel

    require_nibabel()  # checked early: a clear error when the optional extra is missing

    root, out = Path(root), Path(out)
    with use_log_level(verbose):
        if subjects is None:
            subjects = [s for s in SUBJECTS if (root / BETAS_DIR.format(subject=s, space=opt.space, betas=opt.betas)).is_dir()]
            subjects = subjects or ["01"]
        subjects = [f"{int(str(s).removeprefix('subj').removeprefix('sub-')):02d}" for s in subjects]
        _check_layout(root, subjects, sessions, space=opt.space, betas=opt.betas, roi=opt.roi, need_stimuli=opt.extract_images)
        record_prepare_options(out, "nsd", opt.as_dict(), overwrite=overwrite)
        design = read_expdesign(root / EXPDESIGN)
        shared = set((design["sharedix"] - 1).tolist())
        reps_all = None
        out.mkdir(parents=True, exist_ok=True)
        tables, infos = [], {}
        for subject in subjects:
            if is_done(out, subject, overwrite=overwrite):
                continue
            subj_sessions = sorted(sessions) if sessions else _sessions_found(root, subject, opt.space, opt.betas)
            imgs_all = trial_images(design, subject)
            if reps_all is None:
                reps_all = presentation_index(design["masterordering"])  # same design for every subject
            n_design_sessions = len(imgs_all) // opt.trials_per_session
            beyond = [s for s in subj_sessions if s < 1 or s > n_design_sessions]
            if beyond:
                raise ValueError(f"session(s) {beyond} are outside the design's {n_design_sessions} sessions of "
                                 f"{opt.trials_per_session} trials ({root / EXPDESIGN}).")
            trial_idx = np.concatenate([np.arange((s - 1) * opt.trials_per_session, s * opt.trials_per_session)
                                        for s in subj_sessions])
            nsd_ids = imgs_all[trial_idx]
            summary = _write_subject(root, out, subject, subj_sessions, trial_idx, nsd_ids, reps_all[trial_idx],
                                     shared, space=opt.space, betas=opt.betas, roi=opt.roi,
                                     trials_per_session=opt.trials_per_session, zscore=opt.zscore, chunk_trials=opt.chunk_trials,
                                     extract_images=opt.extract_images, show_progress=progress, h5py=h5py)
            tables.append(summary.pop("table"))
            infos[subject] = summary
        if tables:
            merged = tables[0]
            for t in tables[1:]:
                keep = ~np.isin(t.stimulus_id, merged.stimulus_id)
                merged = StimulusTable(np.r_[merged.stimulus_id, t.stimulus_id[keep]],
                                       np.r_[merged.concept, t.concept[keep]],
                                       np.r_[merged.image_path, t.image_path[keep]],
                                       np.r_[merged.split, t.split[keep]])
            finish_prepared(out, merged, {
                "source": "nsd", "modality": "fmri", "dataset": "Natural Scenes Dataset (Allen et al. 2022)",
                "test_averaging": "shared-image repetitions are stored one by one (repetition 0-2); average at "
                                  "load time",
                "options": {"space": opt.space, "betas": opt.betas, "roi": opt.roi, "zscore": opt.zscore,
                            "trials_per_session": opt.trials_per_session, "extract_images": opt.extract_images}}, infos)
    return out


def _write_subject(root: Path, out: Path, subject: str, sessions: list[int], trial_idx: np.ndarray,
                   nsd_ids: np.ndarray, reps: np.ndarray, shared: set[int], *, space: str, betas: str, roi: str,
                   trials_per_session: int, zscore: bool, chunk_trials: int, extract_images: bool,
                   show_progress: bool, h5py: Any) -> dict[str, Any]:
    from neurodecode.readers.nifti import require_nibabel

    nib = require_nibabel()
    roi_path = root / ROI.format(subject=subject, space=space, roi=roi)
    with reading(roi_path, "a NIfTI ROI mask (.nii.gz)"):
        mask_img = nib.load(str(roi_path))
        mask = np.asarray(mask_img.dataobj)
    if mask.ndim != 3:
        raise ValueError(f"{roi_path}: an ROI mask must be a 3-D volume, got shape {mask.shape}.")
    ijk = np.argwhere(mask > 0)  # (i, j, k) = nibabel (X, Y, Z) order, C order over the volume
    if len(ijk) == 0:
        raise ValueError(f"{roi_path}: no voxel is > 0.")
    i, j, k = ijk.T
    n_vox = len(ijk)

    uniq = np.unique(nsd_ids)
    split_of = {int(u): ("test" if int(u) in shared else "train") for u in uniq}
    img_paths = _extract_images(root / STIMULI, out, uniq, show_progress) if extract_images else [""] * len(uniq)
    table = StimulusTable([stimulus_name(u) for u in uniq], [stimulus_name(u) for u in uniq], img_paths,
                          [split_of[int(u)] for u in uniq], root=None)

    n = len(trial_idx)
    prov = [provenance_step("nsd_betas", root=str(root), space=space, betas=betas, roi=roi, roi_file=str(roi_path),
                            sessions=sessions, trials_per_session=trials_per_session, beta_scale=BETA_SCALE,
                            zscore_within_session=zscore, n_voxels=n_vox,
                            axis_order="h5py betas (trial, Z, Y, X); mask and voxel_ijk (X, Y, Z)")]
    path = store_path(out, subject)
    bar = progress_bar(total=n, enabled=show_progress, desc=f"subj{subject}", unit="trial")
    with StoreWriter(path, n, (n_vox,), modality="fmri", stimuli=table, subject=subject, provenance=prov,
                     attrs={"roi": roi, "space": space, "betas": betas}) as w:
        for si, s in enumerate(sessions):
            f = root / BETAS_DIR.format(subject=subject, space=space, betas=betas) / BETAS_FILE.format(session=s)
            block = _read_session(f, (i, j, k), mask.shape, trials_per_session, chunk_trials, h5py)
            if zscore:
                mu = block.mean(0, dtype=np.float64)
                sd = block.std(0, dtype=np.float64)
                ok = sd > 0
                block = np.where(ok, (block - mu) / np.where(ok, sd, 1.0), 0.0).astype(np.float32)
            w.write(si * trials_per_session, block)
            bar.update(trials_per_session)
        bar.close()
        w.finish(stimulus_id=[stimulus_name(u) for u in nsd_ids], split=[split_of[int(u)] for u in nsd_ids],
                 repetition=reps.astype(np.int32),
                 session=np.repeat(np.asarray(sessions, dtype=np.int32), trials_per_session),
                 extra={"trial": trial_idx.astype(np.int32), "nsd_id": nsd_ids.astype(np.int32)},
                 voxel_ijk=ijk, volume_shape=mask.shape, affine=mask_img.affine)
    is_test = np.array([split_of[int(u)] == "test" for u in nsd_ids])
    logger.info(f"subj{subject}: {n} trials over {len(sessions)} session(s), {n_vox} voxels, "
                f"{int(is_test.sum())} test trials of {len({int(u) for u in nsd_ids[is_test]})} shared images")
    return {"table": table, "n_trials": n, "n_voxels": n_vox, "sessions": list(sessions),
            "n_test_trials": int(is_test.sum()), "n_test_images": len({int(u) for u in nsd_ids[is_test]}),
            "n_images": len(uniq)}


def _read_session(f: Path, ijk: tuple[np.ndarray, np.ndarray, np.ndarray], mask_shape: tuple[int, ...],
                  n_trials: int, chunk: int, h5py: Any) -> np.ndarray:
    """ROI betas of one session, ``(n_trials, n_voxels)`` float32 in percent signal change."""
    i, j, k = ijk
    expected = "an HDF5 file of NSD betas (betas_sessionNN.hdf5)"
    with reading(f, expected):
        h5 = h5py.File(f, "r")
    with h5:
        if "betas" not in h5:
            raise UserError(f"{f}: no dataset 'betas' (found {list(h5.keys())}); expected {expected}.")
        ds = h5["betas"]
        want = (n_trials, *mask_shape[::-1])
        if ds.shape != want:
            raise ValueError(
                f"{f}: 'betas' has shape {ds.shape} as h5py reads it; expected {want} = (trials, Z, Y, X) for an "
                f"ROI mask of nibabel shape (X, Y, Z) = {tuple(mask_shape)} and {n_trials} trials per session. "
                "(NSD's MATLAB-written files appear to h5py with reversed axes.)")
        scale = BETA_SCALE if ds.dtype.kind in "iu" else 1.0
        out = np.empty((n_trials, len(i)), dtype=np.float32)
        for a in range(0, n_trials, chunk):
            b = min(n_trials, a + chunk)
            with reading(f, expected):
                vol = ds[a:b]  # (n, Z, Y, X)
            out[a:b] = vol[:, k, j, i] / scale
    return out


def _extract_images(stim_file: Path, out: Path, ids: np.ndarray, show_progress: bool) -> list[str]:
    """Write ``imgBrick[id]`` as ``out/images/nsd-NNNNN.png`` (skipping existing files); return the paths."""
    import h5py
    from PIL import Image

    folder = out / "images"
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"{stimulus_name(u)}.png" for u in ids]
    todo = [(int(u), p) for u, p in zip(ids, paths, strict=True) if not p.is_file()]
    if todo:
        expected = "an HDF5 file of NSD images (nsd_stimuli.hdf5)"
        with reading(stim_file, expected):
            h5 = h5py.File(stim_file, "r")
        with h5:
            if "imgBrick" not in h5:
                raise UserError(f"{stim_file}: no dataset 'imgBrick' (found {list(h5.keys())}); expected {expected}.")
            brick = h5["imgBrick"]
            if brick.ndim != 4 or brick.shape[-1] != 3:
                raise ValueError(f"{stim_file}: imgBrick has shape {brick.shape}; expected (73000, 425, 425, 3).")
            over = [u for u, _ in todo if u >= brick.shape[0]]
            if over:
                raise ValueError(f"{stim_file}: image index(es) {over[:5]} beyond imgBrick's {brick.shape[0]} images.")
            for u, p in progress_bar(todo, enabled=show_progress, desc="images", unit="img"):
                with reading(stim_file, expected):
                    pixels = np.asarray(brick[u], dtype=np.uint8)
                with atomic_path(p, suffix=".png.tmp") as tmp:
                    Image.fromarray(pixels).save(tmp, format="PNG")
    return [str(p.resolve()) for p in paths]


__all__ = ["NSDOptions", "prepare_nsd", "read_expdesign", "trial_images", "presentation_index",
           "stimulus_name", "parse_sessions"]
