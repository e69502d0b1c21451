"""THINGS-MEG and NSD readers on miniature copies of the public layouts (same names, keys, dtypes,
axis order; fewer images, channels kept at 271 for THINGS-MEG so that MNE splits the file into the
same four parts as the real one)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from neurodecode.io.manifests import ManifestError
from neurodecode.io.prepared import open_prepared

mne = pytest.importorskip("mne")
h5py = pytest.importorskip("h5py")
nib = pytest.importorskip("nibabel")

# --------------------------------------------------------------------------------------------------
# THINGS-MEG miniature
# --------------------------------------------------------------------------------------------------
# THINGS metadata rows (1-based row = event id): concept folder, file stem, concept index
THINGS_ROWS = [
    ("aardvark", "aardvark_01b", 1), ("aardvark", "aardvark_02s", 1), ("aardvark", "aardvark_03n", 1),
    ("bat1", "bat1_01b", 2), ("bat1", "bat1_02s", 2), ("bat1", "bat1_03n", 2),
    ("cake", "cake_01b", 3), ("cake", "cake_02s", 3), ("cake", "cake_03n", 3),
    ("dog", "dog_01b", 4), ("dog", "dog_02s", 4), ("dog", "dog_03n", 4),
]
TEST_ROWS = (2, 8)  # aardvark_02s, cake_02s: shown 12 times
TRAIN_ROWS = (1, 3, 4, 5, 6, 9, 10, 12)  # shown once; 1, 3 (aardvark) and 9 (cake) are of test concepts
N_CATCH = 3
N_CH, SFREQ, TMIN, N_TIMES = 271, 200.0, -0.1, 281


def _write_things_meta(folder):
    img = folder / "Metadata" / "Image-specific"
    con = folder / "Metadata" / "Concept-specific"
    img.mkdir(parents=True)
    con.mkdir(parents=True)
    (img / "image_paths.csv").write_text("".join(f"images/{c}/{s}.jpg\n" for c, s, _ in THINGS_ROWS))
    (con / "image_concept_index.csv").write_text("".join(f"{k}\n" for _, _, k in THINGS_ROWS))
    from PIL import Image

    for c, s, _ in THINGS_ROWS:
        p = folder / "Images" / c / f"{s}.jpg"
        p.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((4, 4, 3), len(s), np.uint8)).save(p)


def _things_events(rng):
    ev = list(TRAIN_ROWS) + [r for r in TEST_ROWS for _ in range(12)] + [999999] * N_CATCH
    ev = np.array(ev)
    rng.shuffle(ev)
    return ev


def _write_things_epochs(path, ev, rng):
    ch = [f"M{'LR'[i % 2]}{'CFOPT'[i % 5]}{i:03d}-1609" for i in range(N_CH)]
    info = mne.create_info(ch, SFREQ, "mag")
    data = rng.standard_normal((len(ev), N_CH, N_TIMES)).astype(np.float32).astype(np.float64)
    data += np.arange(N_CH)[None, :, None] * 0.01  # channel offsets, so scaling has something to remove
    import pandas as pd

    md = pd.DataFrame({"trial_type": np.where(ev == 999999, "catch", np.where(np.isin(ev, TEST_ROWS), "test", "exp")),
                       "session_nr": 1 + (np.arange(len(ev)) >= len(ev) // 2), "run_nr": 1 + np.arange(len(ev)) % 3,
                       "things_image_nr": ev})
    events = np.column_stack([np.arange(len(ev)) * 300, np.zeros(len(ev), int), ev])
    event_id = {str(v): int(v) for v in np.unique(ev)}
    epochs = mne.EpochsArray(data, info, events=events, event_id=event_id, tmin=TMIN, metadata=md, verbose=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    epochs.save(path, split_size="4MB", fmt="single", overwrite=True, verbose=False)
    return data


@pytest.fixture(scope="module")
def things_meg(tmp_path_factory):
    """ds004212 layout with participant 1 only, plus a THINGS metadata/image folder."""
    base = tmp_path_factory.mktemp("things_meg")
    root, things = base / "ds004212", base / "THINGS"
    _write_things_meta(things)
    rng = np.random.default_rng(0)
    ev = _things_events(rng)
    data = _write_things_epochs(root / "derivatives" / "preprocessed" / "preprocessed_P1-epo.fif", ev, rng)
    return {"root": root, "things": things, "events": ev, "data": data}


def test_things_meg_layout_has_the_four_parts(things_meg):
    names = sorted(p.name for p in (things_meg["root"] / "derivatives" / "preprocessed").iterdir())
    assert names == ["preprocessed_P1-epo-1.fif", "preprocessed_P1-epo-2.fif", "preprocessed_P1-epo-3.fif",
                     "preprocessed_P1-epo.fif"]


def test_things_meg_trials_value_by_value(things_meg, tmp_path):
    from neurodecode.readers.things_meg import prepare_things_meg

    out = prepare_things_meg(things_meg["root"], tmp_path / "out", things_meta=things_meg["things"] / "Metadata",
                             images=things_meg["things"] / "Images", scaling="none", chunk_size=7, progress=False)
    ds = open_prepared(out)
    assert ds.subjects == ["01"]
    st = ds.stores["01"]
    ev = things_meg["events"]
    # kept: the two test images (12 each) and training images not of a test concept, in recording order
    keep = np.flatnonzero(np.isin(ev, TEST_ROWS) | np.isin(ev, (4, 5, 6, 10, 12)))
    assert st.n_trials == len(keep) == 24 + 5
    assert st.shape == (29, N_CH, 200)  # [0, 1) s at 200 Hz
    assert st.sfreq == 200.0 and st.tmin == pytest.approx(0.0)
    stems = {i + 1: s for i, (_, s, _) in enumerate(THINGS_ROWS)}
    np.testing.assert_array_equal(st.stimulus_id, [stems[e] for e in ev[keep]])
    np.testing.assert_array_equal(st.trial_field("image_nr"), ev[keep])
    np.testing.assert_array_equal(st.split, np.where(np.isin(ev[keep], TEST_ROWS), "test", "train"))
    # repetition: presentation number of each test image, in order
    for row in TEST_ROWS:
        np.testing.assert_array_equal(st.repetition[ev[keep] == row], np.arange(12))
    assert set(st.repetition[st.split == "train"].tolist()) == {0}
    np.testing.assert_array_equal(st.session, 1 + (keep >= len(ev) // 2))
    np.testing.assert_array_equal(st.trial_field("run"), 1 + keep % 3)
    # signals: the stored samples are the epochs' samples from t = 0 (index 20) for 200 samples
    np.testing.assert_array_equal(st.get_signals(), things_meg["data"][keep][:, :, 20:220].astype(np.float32))
    assert st.ch_names[0] == "MLC000-1609" and len(st.ch_names) == N_CH
    # stimulus table: concept folder names, split, resolved image files
    t = ds.stimuli
    assert sorted(t.stimulus_id.tolist()) == sorted(stems[r] for r in (2, 8, 4, 5, 6, 10, 12))
    row = t.index["cake_02s"]
    assert (t.concept[row], t.split[row]) == ("cake", "test")
    assert t.image_file(row).name == "cake_02s.jpg" and t.image_file(row).is_file()
    assert set(t.concept[t.split == "train"].tolist()) == {"bat1", "dog"}
    meta = json.loads((out / "dataset.json").read_text())["subjects_info"]["01"]
    assert meta["n_catch_dropped"] == N_CATCH and meta["n_train_trials_of_test_concepts_dropped"] == 3
    assert meta["n_test_images"] == 2 and meta["n_train_concepts"] == 2


def test_things_meg_zscore_is_fitted_on_training_trials_only(things_meg, tmp_path):
    from neurodecode.readers.things_meg import prepare_things_meg

    out = prepare_things_meg(things_meg["root"], tmp_path / "z", things_meta=things_meg["things"],
                             scaling="zscore", progress=False)
    st = open_prepared(out).stores["01"]
    ev = things_meg["events"]
    keep = np.flatnonzero(np.isin(ev, TEST_ROWS) | np.isin(ev, (4, 5, 6, 10, 12)))
    raw = things_meg["data"][keep][:, :, 20:220].astype(np.float32).astype(np.float64)
    train = np.isin(ev[keep], (4, 5, 6, 10, 12))
    mu = raw[train].mean(axis=(0, 2))
    sd = raw[train].std(axis=(0, 2))
    expected = (raw - mu[None, :, None]) / sd[None, :, None]
    np.testing.assert_allclose(st.get_signals(), expected, rtol=1e-5, atol=1e-5)
    scaler = json.loads(st.attrs["scaler"])
    assert scaler["method"] == "zscore" and scaler["n_fit_trials"] == int(train.sum())
    assert any(p["step"] == "scale_per_channel" and p["params"]["fit_on"] == "train" for p in st.provenance)


def test_things_meg_resample_matches_mne_on_whole_epochs(things_meg, tmp_path):
    # (band-pass filtering through the same chunked path is checked on small epochs in
    # test_readers_mne_csv_nifti.py: MNE filters channel by channel, slow for 271 channels)
    from neurodecode.readers.things_meg import prepare_things_meg

    out = prepare_things_meg(things_meg["root"], tmp_path / "r", things_meta=things_meg["things"], sfreq=100.0,
                             resample_method="polyphase", scaling="none", chunk_size=5, progress=False)
    st = open_prepared(out).stores["01"]
    assert st.sfreq == 100.0 and st.n_times == 100
    ep = mne.read_epochs(things_meg["root"] / "derivatives/preprocessed/preprocessed_P1-epo.fif", verbose=False)
    ev = things_meg["events"]
    keep = np.flatnonzero(np.isin(ev, TEST_ROWS) | np.isin(ev, (4, 5, 6, 10, 12)))
    ref = ep[keep].resample(100.0, method="polyphase", verbose=False)
    ref.crop(0.0, 1.0, include_tmax=False)
    np.testing.assert_allclose(st.get_signals(), ref.get_data(), rtol=1e-4, atol=1e-5)


def test_things_meg_missing_files_listed_in_one_message(things_meg, tmp_path):
    from neurodecode.readers.things_meg import prepare_things_meg

    root = tmp_path / "ds"
    shutil.copytree(things_meg["root"], root)
    (root / "derivatives/preprocessed/preprocessed_P1-epo-2.fif").unlink()
    with pytest.raises(ManifestError) as exc:
        prepare_things_meg(root, tmp_path / "o", things_meta=things_meg["things"], subjects=["1", "2"],
                           progress=False)
    msg = str(exc.value)
    assert "missing derivatives/preprocessed/preprocessed_P1-epo-2.fif" in msg
    for part in ("-epo.fif", "-epo-1.fif", "-epo-2.fif", "-epo-3.fif"):
        assert f"missing derivatives/preprocessed/preprocessed_P2{part}" in msg
    assert "5 problem(s)" in msg and "things_meg" in msg


def test_things_meg_bad_metadata(things_meg, tmp_path):
    from neurodecode.readers.things_meg import prepare_things_meg, read_things_meta, select_trials

    # event ids that are not rows of image_paths.csv
    with pytest.raises(ValueError, match=r"event id\(s\) \[13\].*not rows of image_paths.csv \(1..12\)"):
        select_trials(np.array([1, 13, 999999]), np.ones(12, int))
    # a header line added to the header-less files
    meta = tmp_path / "meta"
    meta.mkdir()
    (meta / "image_paths.csv").write_text("image_path\nimages/a/a_01b.jpg\n")
    (meta / "image_concept_index.csv").write_text("1\n")
    with pytest.raises(ValueError, match="line 1 is 'image_path', not an image path"):
        read_things_meta(meta / "image_paths.csv", meta / "image_concept_index.csv")
    (meta / "image_paths.csv").write_text("images/a/a_01b.jpg\nimages/a/a_02s.jpg\n")
    with pytest.raises(ValueError, match="has 2 rows but .* has 1"):
        read_things_meta(meta / "image_paths.csv", meta / "image_concept_index.csv")
    # metadata not found: every searched place is named
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="image_concept_index.csv.*Metadata/Concept-specific"):
        prepare_things_meg(things_meg["root"], tmp_path / "o", things_meta=empty, progress=False)
    # no image shown 12 times
    with pytest.raises(ValueError, match="no image is shown 5 times"):
        select_trials(np.array([1, 2, 2]), np.ones(12, int), test_repetitions=5)


def test_things_meg_resumes(things_meg, tmp_path):
    from neurodecode.readers.things_meg import prepare_things_meg

    out = tmp_path / "res"
    prepare_things_meg(things_meg["root"], out, things_meta=things_meg["things"], scaling="none", progress=False)
    stamp = (out / "sub-01.h5").stat().st_mtime_ns
    prepare_things_meg(things_meg["root"], out, things_meta=things_meg["things"], scaling="none", progress=False)
    assert (out / "sub-01.h5").stat().st_mtime_ns == stamp


# --------------------------------------------------------------------------------------------------
# NSD miniature
# --------------------------------------------------------------------------------------------------
T = 6  # trials per session (750 in NSD)
N_SESS = 3
X, Y, Z = 5, 4, 3  # nibabel (X, Y, Z); h5py betas are (trials, Z, Y, X)
N_IMG = 20  # images in imgBrick (73000 in NSD)


def _nsd_design():
    # 2 subjects x 8 images (1-based 73k indices); the first 3 columns are the shared images
    subjectim = np.array([[5, 9, 14, 1, 2, 3, 4, 6], [5, 9, 14, 7, 8, 10, 11, 12]])
    sharedix = np.array([[5, 9, 14]])
    # 18 trials over 3 sessions: columns of subjectim, 1-based; shared images seen 3 times
    masterordering = np.array([[1, 4, 2, 5, 3, 6,
                                2, 7, 1, 4, 8, 3,
                                3, 5, 1, 2, 6, 7]])
    return {"masterordering": masterordering, "subjectim": subjectim, "sharedix": sharedix,
            "basiccnt": np.zeros((3, 40))}


def _betas(subject: int, session: int) -> np.ndarray:
    """int16 betas as h5py shows them: (trials, Z, Y, X)."""
    rng = np.random.default_rng(100 * subject + session)
    b = rng.integers(-900, 900, size=(T, Z, Y, X)).astype(np.int16)
    b[:, 2, 3, 4] = 0  # an invalid voxel (NSD zero-fills them): constant in the session
    return b


def _roi() -> np.ndarray:
    m = np.full((X, Y, Z), -1, np.int16)  # nibabel order
    m[1:4, 1:3, 0:2] = 0
    m[1, 1, 0] = m[2, 1, 1] = m[3, 2, 0] = m[0, 3, 2] = m[4, 3, 2] = 1
    return m


@pytest.fixture(scope="module")
def nsd_root(tmp_path_factory):
    import scipy.io

    root = tmp_path_factory.mktemp("nsd")
    exp = root / "nsddata/experiments/nsd"
    exp.mkdir(parents=True)
    scipy.io.savemat(exp / "nsd_expdesign.mat", _nsd_design())  # MATLAB v5, like NSD's file
    stim = root / "nsddata_stimuli/stimuli/nsd"
    stim.mkdir(parents=True)
    brick = np.random.default_rng(7).integers(0, 256, size=(N_IMG, 6, 6, 3), dtype=np.uint8)
    with h5py.File(stim / "nsd_stimuli.hdf5", "w") as f:
        f.create_dataset("imgBrick", data=brick)
    affine = np.diag([1.8, 1.8, 1.8, 1.0])
    affine[:3, 3] = [-10, -20, -30]
    for s in (1, 2):
        roi = root / f"nsddata/ppdata/subj{s:02d}/func1pt8mm/roi"
        roi.mkdir(parents=True)
        nib.save(nib.Nifti1Image(_roi(), affine), str(roi / "nsdgeneral.nii.gz"))
        bdir = root / f"nsddata_betas/ppdata/subj{s:02d}/func1pt8mm/betas_fithrf_GLMdenoise_RR"
        bdir.mkdir(parents=True)
        for sess in range(1, N_SESS + 1):
            with h5py.File(bdir / f"betas_session{sess:02d}.hdf5", "w") as f:
                f.create_dataset("betas", data=_betas(s, sess))
    return {"root": root, "brick": brick, "affine": affine}


# the ROI voxels of _roi() (value 1; -1 and 0 are outside), in C order over the nibabel (X, Y, Z) volume
ROI_VOXELS = [(0, 3, 2), (1, 1, 0), (2, 1, 1), (3, 2, 0), (4, 3, 2)]


def _roi_betas_pct(subject: int, session: int) -> np.ndarray:
    """(trials, voxels) percent signal change of ROI_VOXELS, read through the NIfTI axis order."""
    vol = _betas(subject, session).transpose(0, 3, 2, 1)  # h5py (trials, Z, Y, X) -> (trials, X, Y, Z)
    return np.stack([vol[:, i, j, k].astype(np.float64) for i, j, k in ROI_VOXELS], axis=1) / 300.0


def test_nsd_value_by_value(nsd_root, tmp_path):
    from neurodecode.readers.nsd import prepare_nsd

    out = prepare_nsd(nsd_root["root"], tmp_path / "nsd", trials_per_session=T, zscore=False, chunk_trials=4,
                      progress=False)
    ds = open_prepared(out)
    assert ds.subjects == ["01", "02"]
    design = _nsd_design()
    mo = design["masterordering"].ravel()
    shared = design["sharedix"].ravel() - 1  # 0-based 73k indices of the shared (test) images
    for s, st in ds.stores.items():
        sub = int(s)
        assert st.modality == "fmri" and st.shape == (N_SESS * T, len(ROI_VOXELS))
        np.testing.assert_array_equal(st.voxel_ijk, ROI_VOXELS)  # only mask > 0, nibabel (i, j, k) order
        assert tuple(st.h5["voxels"].attrs["volume_shape"]) == (X, Y, Z)
        np.testing.assert_allclose(st.h5["voxels"].attrs["affine"], nsd_root["affine"])
        nsd_ids = design["subjectim"][sub - 1, mo - 1] - 1  # 0-based 73k index of each trial
        np.testing.assert_array_equal(st.stimulus_id, [f"nsd-{i:05d}" for i in nsd_ids])
        np.testing.assert_array_equal(st.trial_field("nsd_id"), nsd_ids)
        np.testing.assert_array_equal(st.trial_field("trial"), np.arange(N_SESS * T))
        np.testing.assert_array_equal(st.session, np.repeat([1, 2, 3], T))
        np.testing.assert_array_equal(st.split, np.where(np.isin(nsd_ids, shared), "test", "train"))
        # repetition: presentation number of the column in masterordering
        np.testing.assert_array_equal(st.repetition, [np.sum(mo[:t] == mo[t]) for t in range(len(mo))])
        # signals: int16 betas / 300 (percent signal change) at the ROI voxels
        sig = st.get_signals()
        raw = np.concatenate([_roi_betas_pct(sub, sess) for sess in range(1, N_SESS + 1)])
        np.testing.assert_allclose(sig, raw, rtol=1e-6)
        # each shared image: its three presentations are stored as test trials whose average (what the
        # data module computes at load time) is the mean of the image's raw betas
        for img in shared:
            shown = np.flatnonzero(nsd_ids == img)
            assert len(shown) == 3
            rows = np.flatnonzero(st.stimulus_id == f"nsd-{img:05d}")
            np.testing.assert_array_equal(rows, shown)
            assert set(st.split[rows]) == {"test"} and sorted(st.repetition[rows]) == [0, 1, 2]
            np.testing.assert_allclose(sig[rows].astype(np.float64).mean(0), raw[shown].mean(0), rtol=1e-6, atol=1e-6)
    # the shared images are the test set; images extracted losslessly, once
    t = ds.stimuli
    assert sorted(t.stimulus_id[t.split == "test"].tolist()) == ["nsd-00004", "nsd-00008", "nsd-00013"]
    assert len(t) == 3 + 5 + 5
    img = t.image_file(t.index["nsd-00013"])
    from PIL import Image

    np.testing.assert_array_equal(np.asarray(Image.open(img)), nsd_root["brick"][13])
    assert len(list((out / "images").glob("*.png"))) == len(t)


def test_nsd_zscore_within_session(nsd_root, tmp_path):
    from neurodecode.readers.nsd import prepare_nsd

    out = prepare_nsd(nsd_root["root"], tmp_path / "z", subjects=["01"], sessions=[2, 3], trials_per_session=T,
                      extract_images=False, progress=False)
    st = open_prepared(out).stores["01"]
    assert st.n_trials == 2 * T
    np.testing.assert_array_equal(st.session, np.repeat([2, 3], T))
    np.testing.assert_array_equal(st.trial_field("trial"), np.arange(T, 3 * T))
    sig = st.get_signals()
    for n, sess in enumerate((2, 3)):
        b = _roi_betas_pct(1, sess)
        for v in range(len(ROI_VOXELS)):  # z-score of each voxel over the session's trials, written out
            x = b[:, v]
            sd = np.sqrt(np.mean((x - x.mean()) ** 2))
            expected = np.zeros(T) if sd == 0 else (x - x.mean()) / sd
            np.testing.assert_allclose(sig[n * T:(n + 1) * T, v], expected, rtol=1e-5, atol=1e-6)
            assert abs(sig[n * T:(n + 1) * T, v].mean()) < 1e-5
    # the zero-filled (invalid) voxel (4, 3, 2) is 0, not NaN
    col = ROI_VOXELS.index((4, 3, 2))
    assert np.all(sig[:, col] == 0)
    assert (open_prepared(out).stimuli.image_path == "").all()


def test_nsd_missing_files_listed_in_one_message(nsd_root, tmp_path):
    from neurodecode.readers.nsd import prepare_nsd

    root = tmp_path / "nsd"
    shutil.copytree(nsd_root["root"], root)
    (root / "nsddata/ppdata/subj02/func1pt8mm/roi/nsdgeneral.nii.gz").unlink()
    with pytest.raises(ManifestError) as exc:
        prepare_nsd(root, tmp_path / "o", subjects=["01", "02"], sessions=[1, 4], trials_per_session=T,
                    progress=False)
    msg = str(exc.value)
    assert "missing nsddata/ppdata/subj02/func1pt8mm/roi/nsdgeneral.nii.gz" in msg
    for s in ("01", "02"):
        assert f"missing nsddata_betas/ppdata/subj{s}/func1pt8mm/betas_fithrf_GLMdenoise_RR/betas_session04.hdf5" in msg
    assert "3 problem(s)" in msg


def test_nsd_wrong_axis_order_is_refused(nsd_root, tmp_path):
    from neurodecode.readers.nsd import prepare_nsd

    root = tmp_path / "nsd"
    shutil.copytree(nsd_root["root"], root)
    f = root / "nsddata_betas/ppdata/subj01/func1pt8mm/betas_fithrf_GLMdenoise_RR/betas_session01.hdf5"
    with h5py.File(f, "w") as h:  # (trials, X, Y, Z): the NIfTI order, not what NSD's HDF5 holds
        h.create_dataset("betas", data=np.zeros((T, X, Y, Z), np.int16))
    with pytest.raises(ValueError, match=r"has shape \(6, 5, 4, 3\) as h5py reads it; expected \(6, 3, 4, 5\)"):
        prepare_nsd(root, tmp_path / "o", subjects=["01"], trials_per_session=T, extract_images=False,
                    progress=False)


def test_nsd_damaged_files_are_named_with_the_format_expected(nsd_root, tmp_path):
    import os

    from neurodecode.readers.common import BadFileError
    from neurodecode.readers.nsd import prepare_nsd

    root = tmp_path / "nsd"
    shutil.copytree(nsd_root["root"], root)
    betas = root / "nsddata_betas/ppdata/subj01/func1pt8mm/betas_fithrf_GLMdenoise_RR/betas_session02.hdf5"
    betas.write_bytes(os.urandom(2048))  # not HDF5: h5py says only "file signature not found"
    with pytest.raises(BadFileError) as exc:
        prepare_nsd(root, tmp_path / "o", subjects=["01"], trials_per_session=T, extract_images=False, progress=False)
    assert str(exc.value).startswith(f"{betas}: cannot be read as an HDF5 file of NSD betas (betas_sessionNN.hdf5) "
                                     "(OSError: Unable to synchronously open file (file signature not found))")
    shutil.copy(nsd_root["root"] / betas.relative_to(root), betas)
    roi = root / "nsddata/ppdata/subj01/func1pt8mm/roi/nsdgeneral.nii.gz"
    roi.write_bytes(roi.read_bytes()[:-40])  # truncated download: gzip stream ends early
    with pytest.raises(BadFileError, match=r"nsdgeneral\.nii\.gz: cannot be read as a NIfTI ROI mask \(\.nii\.gz\) "
                                           r"\((EOFError|ImageFileError)"):
        prepare_nsd(root, tmp_path / "o", subjects=["01"], trials_per_session=T, extract_images=False, progress=False)
    design = root / "nsddata/experiments/nsd/nsd_expdesign.mat"
    design.write_bytes(os.urandom(1000))
    with pytest.raises(BadFileError, match=r"nsd_expdesign\.mat: cannot be read as a MATLAB v5 \.mat file"):
        prepare_nsd(root, tmp_path / "o", subjects=["01"], trials_per_session=T, extract_images=False, progress=False)


def test_nsd_design_helpers():
    from neurodecode.readers.nsd import parse_sessions, presentation_index

    np.testing.assert_array_equal(presentation_index(np.array([3, 1, 3, 3, 1, 2])), [0, 0, 1, 2, 1, 0])
    assert parse_sessions("1-3,5") == [1, 2, 3, 5]


def test_prepare_cli_help_lists_reader_options(capsys):
    from neurodecode.cli import main

    for source, options in {"things-meg": ("--things-meta", "--images", "--scaling", "--sfreq"),
                            "nsd": ("--sessions", "--roi", "--no-images", "--trials-per-session")}.items():
        with pytest.raises(SystemExit) as exc:
            main(["prepare", source, "--help"])
        assert exc.value.code == 0
        text = capsys.readouterr().out
        for opt in options:
            assert opt in text
