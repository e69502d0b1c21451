"""Readers for any MNE epochs, CSV recordings (Muse layout) and block-design NIfTI (Haxby layout),
on miniatures written by the tests."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from neurodecode.io.prepared import open_prepared
from neurodecode.io.store import StoreError

mne = pytest.importorskip("mne")
nib = pytest.importorskip("nibabel")


# --------------------------------------------------------------------------------------------------
# any MNE epochs
# --------------------------------------------------------------------------------------------------
def _epochs(n=14, sfreq=100.0, seed=0):
    import pandas as pd

    rng = np.random.default_rng(seed)
    info = mne.create_info(["Oz", "O1", "O2", "EOG"], sfreq, ["eeg", "eeg", "eeg", "eog"])
    data = rng.standard_normal((n, 4, 120)) * 1e-6
    images = [f"img{i % 5}" for i in range(n)]
    md = pd.DataFrame({"image": images, "part": ["test" if i % 5 == 4 else "train" for i in range(n)],
                       "block": [1 + i // 7 for i in range(n)], "category": [f"cat{(i % 5) // 2}" for i in range(n)]})
    codes = np.array([1 + i % 5 for i in range(n)])
    events = np.column_stack([np.arange(n) * 200, np.zeros(n, int), codes])
    event_id = {f"stim/img{c - 1}": int(c) for c in np.unique(codes)}
    return mne.EpochsArray(data, info, events=events, event_id=event_id, tmin=-0.2, metadata=md, verbose=False)


def _image_folder(tmp_path, names):
    from PIL import Image

    folder = tmp_path / "imgs"
    (folder / "sub").mkdir(parents=True)
    for i, s in enumerate(names):
        Image.fromarray(np.full((3, 3, 3), i, np.uint8)).save(folder / ("sub" if i % 2 else ".") / f"{s}.png")
    return folder


def test_epochs_from_metadata_value_by_value(tmp_path):
    from neurodecode.readers.epochs import prepare_epochs

    ep = _epochs()
    folder = _image_folder(tmp_path, [f"img{i}" for i in range(5)])
    out = prepare_epochs(ep, tmp_path / "out", subject="07", stimulus="image", images=folder, split="part",
                         concept="category", session="block", chunk_size=4, progress=False)
    ds = open_prepared(out)
    st = ds.stores["07"]
    assert st.modality == "eeg" and st.ch_names == ["Oz", "O1", "O2"]  # EEG only, EOG left out
    np.testing.assert_array_equal(st.get_signals(), ep.get_data(picks="eeg").astype(np.float32))
    assert st.sfreq == 100.0 and st.tmin == pytest.approx(-0.2)
    np.testing.assert_array_equal(st.stimulus_id, ep.metadata["image"])
    np.testing.assert_array_equal(st.split, ep.metadata["part"])
    np.testing.assert_array_equal(st.session, ep.metadata["block"])
    np.testing.assert_array_equal(st.repetition, [i // 5 for i in range(14)])  # img0..4 cycle: 3, 3, 3, 3, 2
    t = ds.stimuli
    assert t.split[t.index["img4"]] == "test" and t.concept[t.index["img3"]] == "cat1"
    assert t.image_file(t.index["img3"]).name == "img3.png" and t.image_file(t.index["img3"]).parent.name == "sub"


def test_epochs_file_with_event_names_and_table(tmp_path):
    from neurodecode.readers.epochs import prepare_epochs

    ep = _epochs()
    f = tmp_path / "sub-03_task-x-epo.fif"
    ep.save(f, fmt="double", verbose=False)
    table = tmp_path / "table.tsv"
    table.write_text("stimulus_id\timage_path\tconcept\tsplit\n" +
                     "".join(f"stim/img{i}\tpics/p{i}.jpg\tc{i}\t{'test' if i == 0 else 'train'}\n" for i in range(5)) +
                     "stim/unused\tpics/u.jpg\tu\ttrain\n")
    out = prepare_epochs(f, tmp_path / "out", subject="03", stimulus_table=table, progress=False)
    st = open_prepared(out).stores["03"]
    np.testing.assert_array_equal(st.stimulus_id, [f"stim/img{i % 5}" for i in range(14)])
    np.testing.assert_array_equal(st.split, ["test" if i % 5 == 0 else "train" for i in range(14)])
    t = open_prepared(out).stimuli
    assert "stim/unused" not in t.index  # rows no trial shows are left out
    assert t.image_file(t.index["stim/img2"]) == (tmp_path / "pics" / "p2.jpg").resolve()


@pytest.mark.parametrize("methods", [("fir", "fft"), ("iir", "polyphase")])
def test_epochs_chunked_processing_equals_mne_on_all_epochs(tmp_path, methods):
    from neurodecode.readers.epochs import prepare_epochs

    ep = _epochs(n=23)
    out = prepare_epochs(ep, tmp_path / "out", stimulus="image", l_freq=None, h_freq=20.0, sfreq=50.0, tmin=0.0,
                         tmax=0.8, baseline=None, filter_method=methods[0], resample_method=methods[1], chunk_size=5,
                         progress=False)
    st = open_prepared(out).stores["01"]
    ref = ep.copy().pick("eeg").filter(None, 20.0, method=methods[0], verbose=False)
    ref.resample(50.0, method=methods[1], verbose=False)
    ref.crop(0.0, 0.8, include_tmax=False)
    assert st.n_times == 40 and st.sfreq == 50.0
    np.testing.assert_allclose(st.get_signals(), ref.get_data(), rtol=1e-5, atol=1e-12)


def test_epochs_robust_scaling_and_clamp(tmp_path):
    from neurodecode.readers.epochs import prepare_epochs

    ep = _epochs(n=30)
    out = prepare_epochs(ep, tmp_path / "out", stimulus="image", split="part", scaling="robust", clamp=1.5,
                         progress=False)
    st = open_prepared(out).stores["01"]
    raw = ep.get_data(picks="eeg")
    train = (ep.metadata["part"] == "train").to_numpy()
    q25, q50, q75 = np.percentile(raw[train].transpose(1, 0, 2).reshape(3, -1), [25, 50, 75], axis=1)
    expected = np.clip((raw - q50[None, :, None]) / (q75 - q25)[None, :, None], -1.5, 1.5)
    np.testing.assert_allclose(st.get_signals(), expected, rtol=1e-5, atol=1e-6)
    assert st.get_signals().max() == pytest.approx(1.5)


def test_epochs_bad_inputs(tmp_path):
    from neurodecode.readers.epochs import prepare_epochs

    ep = _epochs()
    table = tmp_path / "t.csv"
    table.write_text("stimulus_id,image_path\nimg0,a.png\nimg1,b.png\n")
    with pytest.raises(StoreError, match=r"has no row for 3 stimulus id\(s\) of the epochs: \['img2', 'img3', 'img4'\]"):
        prepare_epochs(ep, tmp_path / "o", stimulus="image", stimulus_table=table, progress=False)
    with pytest.raises(KeyError, match="metadata has no column 'picture'"):
        prepare_epochs(ep, tmp_path / "o", stimulus="picture", progress=False)
    with pytest.raises(FileNotFoundError, match=r"No image found .* for 2 stimulus id\(s\): \['img3', 'img4'\]"):
        prepare_epochs(ep, tmp_path / "o", stimulus="image", images=_image_folder(tmp_path, ["img0", "img1", "img2"]),
                       progress=False)
    with pytest.raises(ValueError, match=r"test stimulus id\(s\) \['nope'\] are shown by no trial"):
        prepare_epochs(ep, tmp_path / "o", stimulus="image", test_stimuli=["nope"], progress=False)
    (tmp_path / "bad.csv").write_text("name,file\nimg0,a.png\n")
    with pytest.raises(StoreError, match="needs the columns 'stimulus_id' and 'image_path'"):
        prepare_epochs(ep, tmp_path / "o", stimulus="image", stimulus_table=tmp_path / "bad.csv", progress=False)
    assert not (tmp_path / "o" / "sub-01.h5").exists()


def test_epochs_cli_folder_of_files(tmp_path):
    from neurodecode.cli import main

    root = tmp_path / "fifs"
    root.mkdir()
    for s in ("01", "02"):
        _epochs(seed=int(s)).save(root / f"sub-{s}-epo.fif", verbose=False)
    rc = main(["prepare", "epochs", "--root", str(root), "--out", str(tmp_path / "out"), "--stimulus-column", "image",
               "--split-column", "part", "--sfreq", "50", "--no-progress"])
    assert rc == 0
    ds = open_prepared(tmp_path / "out")
    assert ds.subjects == ["01", "02"] and ds.stores["02"].sfreq == 50.0
    assert sorted(ds.stimuli.stimulus_id.tolist()) == [f"img{i}" for i in range(5)]
    meta = json.loads((tmp_path / "out" / "dataset.json").read_text())
    assert meta["subjects"] == ["01", "02"] and set(meta["subjects_info"]) == {"01", "02"}


# --------------------------------------------------------------------------------------------------
# CSV recordings (Muse layout)
# --------------------------------------------------------------------------------------------------
FS = 256
HEADER = "timestamps,TP9,AF7,AF8,TP10,Right AUX,Marker0"


def _muse_csv(path, seed, onsets, codes, n=2560, artifact_at=None):
    """A Muse-like recording: timestamps with jitter, 4 EEG channels + aux in uV, one marker column."""
    rng = np.random.default_rng(seed)
    t = 1000.0 + np.arange(n) / FS + rng.normal(0, 0.002, n)
    eeg = rng.normal(0, 5, (n, 5))
    if artifact_at is not None:
        eeg[artifact_at: artifact_at + 20, 1] += 400.0  # a 400 uV, 80 ms artifact on AF7
    marker = np.zeros(n, int)
    marker[onsets] = codes
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [HEADER] + [f"{t[i]:.3f}," + ",".join(f"{v:.3f}" for v in eeg[i]) + f",{marker[i]}" for i in range(n)]
    path.write_text("\n".join(rows) + "\n")
    return np.round(eeg, 3)


@pytest.fixture()
def muse_root(tmp_path):
    root = tmp_path / "n170"
    rec = root / "recordings"
    on1 = np.arange(100, 2300, 150)
    eeg1 = _muse_csv(rec / "subject1/session1/data_2017-09-13-15.30.01.csv", 1, on1, 1 + (np.arange(len(on1)) % 2),
                     artifact_at=on1[3] + 100)
    on2 = np.arange(300, 2300, 400)
    eeg2 = _muse_csv(rec / "subject1/session2/recording_2018-06-06-14.34.14.csv.csv", 2, on2, 2 - (np.arange(len(on2)) % 2))
    # the same recording copied under another session (as in the real subject3)
    (rec / "subject1/session3").mkdir(parents=True)
    shutil.copy(rec / "subject1/session1/data_2017-09-13-15.30.01.csv", rec / "subject1/session3/copy.csv")
    _muse_csv(rec / "subject2/session1/data.csv", 3, np.array([500, 900]), np.array([2, 1]))
    for cat in ("faces", "houses"):
        (root / "stimuli" / cat).mkdir(parents=True)
    return {"root": root, "on1": on1, "eeg1": eeg1, "on2": on2, "eeg2": eeg2}


def test_csv_value_by_value(muse_root, tmp_path):
    from neurodecode.readers.csv import prepare_csv

    out = prepare_csv(muse_root["root"], tmp_path / "out", event_map="1=face,2=house", l_freq=None, h_freq=None,
                      reject=None, progress=False)
    ds = open_prepared(out)
    assert ds.subjects == ["01", "02"]
    st = ds.stores["01"]
    on1, on2 = muse_root["on1"], muse_root["on2"]
    assert st.n_trials == len(on1) + len(on2)  # the duplicate file is not counted twice
    assert st.ch_names == ["TP9", "AF7", "AF8", "TP10"] and st.sfreq == 256.0
    a, b = int(round(-0.1 * FS)), int(round(0.8 * FS))
    assert st.n_times == b - a + 1 and st.tmin == pytest.approx(a / FS)
    sig = st.get_signals()
    for k, o in enumerate(on1):
        np.testing.assert_allclose(sig[k], muse_root["eeg1"][o + a: o + b + 1, :4].T * 1e-6, rtol=1e-5, atol=1e-11)
    for k, o in enumerate(on2):
        np.testing.assert_allclose(sig[len(on1) + k], muse_root["eeg2"][o + a: o + b + 1, :4].T * 1e-6, rtol=1e-5,
                                   atol=1e-11)
    codes1 = 1 + (np.arange(len(on1)) % 2)
    codes2 = 2 - (np.arange(len(on2)) % 2)
    names = {1: "face", 2: "house"}
    np.testing.assert_array_equal(st.stimulus_id, [names[c] for c in np.r_[codes1, codes2]])
    np.testing.assert_array_equal(st.session, [1] * len(on1) + [2] * len(on2))
    np.testing.assert_array_equal(st.trial_field("run"), [1] * (len(on1) + len(on2)))
    assert set(st.split.tolist()) == {"train"}
    np.testing.assert_allclose(st.trial_field("onset")[: len(on1)], on1 / FS)
    faces = st.stimulus_id == "face"
    np.testing.assert_array_equal(st.repetition[faces], np.arange(faces.sum()))
    # category-level stimuli: one row per category, image path = the category's folder
    t = ds.stimuli
    assert t.stimulus_id.tolist() == ["face", "house"]
    assert t.image_file(0) == (muse_root["root"] / "stimuli" / "faces").resolve() and t.image_file(0).is_dir()
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["duplicates_dropped"] == [{"dropped": "recordings/subject1/session3/copy.csv",
                                           "same_as": "recordings/subject1/session1/data_2017-09-13-15.30.01.csv",
                                           "sha256": meta["duplicates_dropped"][0]["sha256"]}]


def test_csv_filter_and_rejection(muse_root, tmp_path):
    from neurodecode.readers.csv import prepare_csv

    out = prepare_csv(muse_root["root"], tmp_path / "out", event_map="1=face,2=house", subjects=["1"],
                      progress=False)
    st = open_prepared(out).stores["01"]
    on1 = muse_root["on1"]
    # the 400 uV artifact in trial 3 of the first file exceeds the 100 uV peak-to-peak threshold
    assert st.n_trials == len(on1) + len(muse_root["on2"]) - 1
    np.testing.assert_allclose(st.trial_field("onset")[:3], on1[:3] / FS)
    assert st.trial_field("onset")[3] == pytest.approx(on1[4] / FS)
    # filtering is MNE's band-pass on the continuous recording
    raw = mne.io.RawArray(muse_root["eeg1"][:, :4].T * 1e-6, mne.create_info(4, FS, "eeg"), verbose=False)
    raw.filter(1.0, 30.0, verbose=False)
    a = int(round(-0.1 * FS))
    np.testing.assert_allclose(st.get_signals()[0], raw.get_data()[:, on1[0] + a: on1[0] + a + st.n_times],
                               rtol=1e-4, atol=1e-10)
    info = json.loads((out / "dataset.json").read_text())["subjects_info"]["01"]
    assert info["files"][0]["n_rejected"] == 1 and info["files"][0]["sfreq"] == 256.0


def test_csv_non_numeric_cell(muse_root, tmp_path):
    from neurodecode.readers.csv import CSVFormatError, prepare_csv, read_csv_recording

    f = muse_root["root"] / "recordings/subject2/session1/data.csv"
    lines = f.read_text().splitlines()
    cells = lines[4].split(",")
    cells[2] = "1.2.3"
    lines[4] = ",".join(cells)
    f.write_text("\n".join(lines) + "\n")
    with pytest.raises(CSVFormatError, match=r"data\.csv: line 5, column 'AF7': '1\.2\.3' is not a number"):
        read_csv_recording(f)
    with pytest.raises(CSVFormatError, match="line 5, column 'AF7'"):
        prepare_csv(muse_root["root"], tmp_path / "o", event_map="1=face,2=house", progress=False)
    cells[2] = ""
    lines[4] = ",".join(cells)
    f.write_text("\n".join(lines) + "\n")
    with pytest.raises(CSVFormatError, match="line 5, column 'AF7' is empty"):
        read_csv_recording(f)


def test_csv_options_and_errors(muse_root, tmp_path):
    from neurodecode.readers.csv import CSVFormatError, estimate_sfreq, prepare_csv

    rng = np.random.default_rng(0)
    t = 1e9 + np.arange(30000) / 256 + rng.normal(0, 0.003, 30000)
    assert estimate_sfreq(np.round(t, 3)) == 256.0  # median step would say 250 (ms-quantised stamps)
    with pytest.raises(CSVFormatError, match=r"channel column\(s\) \['Cz'\] not found"):
        prepare_csv(muse_root["root"], tmp_path / "o", channels=["TP9", "Cz"], progress=False)
    with pytest.raises(CSVFormatError, match="no marker column 'Trigger'"):
        prepare_csv(muse_root["root"], tmp_path / "o", marker_column="Trigger", progress=False)
    # without an event map every marker value is its own category; explicit channels keep the aux input
    out = prepare_csv(muse_root["root"], tmp_path / "o2", channels=["TP9", "Right AUX"], sfreq=256, reject=None,
                      subjects=["2"], montage=None, progress=False)
    st = open_prepared(out).stores["02"]
    assert st.ch_names == ["TP9", "Right AUX"] and st.stimulus_id.tolist() == ["2", "1"]


# --------------------------------------------------------------------------------------------------
# block-design NIfTI (Haxby layout)
# --------------------------------------------------------------------------------------------------
TR = 2.0
NV = 40
EVENTS = [(4.0, 12.0, "face"), (22.0, 12.0, "house"), (44.0, 10.0, "cat")]


def _bold(run: int) -> np.ndarray:
    rng = np.random.default_rng(run)
    d = rng.normal(100, 5, (4, 3, 2, NV)).astype(np.float32)
    d[0, 0, 0] = 0.0  # outside the head: constant in every run
    return np.round(d)


@pytest.fixture()
def haxby_root(tmp_path):
    root = tmp_path / "haxby2001"
    affine = np.diag([3.0, 3.0, 3.0, 1.0])
    for run in (1, 2, 3):
        d = root / "sub001" / "BOLD" / f"task001_run{run:03d}"
        d.mkdir(parents=True)
        img = nib.Nifti1Image(_bold(run).astype(np.int16), affine)
        img.header.set_zooms((3.0, 3.0, 3.0, TR))
        img.header.set_xyzt_units("mm", "sec")
        nib.save(img, str(d / "bold_1slice.nii.gz"))
        nib.save(nib.Nifti1Image(np.zeros((2, 2, 2, NV), np.int16), affine), str(d / "bold_25mm.nii.gz"))
        ev = EVENTS if run != 2 else EVENTS[::-1]
        (d / "bold_events.tsv").write_text("onset\tduration\ttrial_type\n" +
                                           "".join(f"{o}\t{du}\t{tt}\n" for o, du, tt in ev))
    (root / "sub001" / "masks").mkdir()
    m = np.zeros((4, 3, 2), np.int16)
    m[1:3, :, 1] = 1
    nib.save(nib.Nifti1Image(m, affine), str(root / "sub001" / "masks" / "vt.nii.gz"))
    (root / "subphantom").mkdir()
    return root


def _expected_blocks(voxels: np.ndarray, delay: float) -> tuple[np.ndarray, list[str], list[int]]:
    out, labels, runs = [], [], []
    for run in (1, 2, 3):
        ts = _bold(run).reshape(-1, NV)[voxels].astype(np.float64)
        sd = ts.std(1)
        z = np.where(sd[:, None] > 0, (ts - ts.mean(1, keepdims=True)) / np.where(sd > 0, sd, 1)[:, None], 0)
        for onset, dur, tt in (EVENTS if run != 2 else EVENTS[::-1]):
            vols = [v for v in range(NV) if onset + delay <= v * TR < onset + dur]
            out.append(z[:, vols].mean(1))
            labels.append(tt)
            runs.append(run)
    return np.array(out), labels, runs


def test_nifti_blocks_value_by_value(haxby_root, tmp_path):
    from neurodecode.readers.nifti import prepare_nifti

    out = prepare_nifti(haxby_root, tmp_path / "out", bold="bold_1slice.nii.gz", progress=False)
    ds = open_prepared(out)
    assert ds.subjects == ["001"]
    st = ds.stores["001"]
    voxels = np.arange(1, 24)  # every voxel but the constant one (0, 0, 0), C order over (X, Y, Z)
    expected, labels, runs = _expected_blocks(voxels, 4.0)
    np.testing.assert_allclose(st.get_signals(), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(st.stimulus_id, labels)
    np.testing.assert_array_equal(st.trial_field("run"), runs)
    np.testing.assert_array_equal(st.repetition, [0, 0, 0, 1, 1, 1, 2, 2, 2])
    np.testing.assert_array_equal(st.voxel_ijk, np.column_stack(np.unravel_index(voxels, (4, 3, 2))))
    np.testing.assert_array_equal(st.trial_field("n_volumes"), [4, 4, 3, 3, 4, 4, 4, 4, 3])
    assert set(st.split.tolist()) == {"train"}
    assert ds.stimuli.stimulus_id.tolist() == ["face", "house", "cat"]
    assert (ds.stimuli.image_path == "").all()


def test_nifti_mask_delay_and_images(haxby_root, tmp_path):
    from neurodecode.readers.nifti import prepare_nifti

    imgs = tmp_path / "stimuli"
    for c in ("faces", "houses", "cat"):
        (imgs / c).mkdir(parents=True)
    out = prepare_nifti(haxby_root, tmp_path / "out", bold="bold_1slice.nii.gz", mask="sub{subject}/masks/vt.nii.gz",
                        delay=2.0, standardize=True, images=imgs, progress=False)
    ds = open_prepared(out)
    st = ds.stores["001"]
    m = np.zeros((4, 3, 2), bool)
    m[1:3, :, 1] = True
    voxels = np.flatnonzero(m.ravel())
    expected, _, _ = _expected_blocks(voxels, 2.0)
    np.testing.assert_allclose(st.get_signals(), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(st.voxel_ijk, np.argwhere(m))
    t = ds.stimuli
    assert t.image_file(t.index["face"]).name == "faces" and t.image_file(t.index["cat"]).name == "cat"


def test_nifti_bad_inputs(haxby_root, tmp_path):
    from neurodecode.readers.nifti import prepare_nifti

    with pytest.raises(ValueError, match="Several files match --bold"):
        prepare_nifti(haxby_root, tmp_path / "o", bold="bold_*.nii.gz", progress=False)
    with pytest.raises(FileNotFoundError, match="No NIfTI file under .* matches --bold 'nothing.nii'"):
        prepare_nifti(haxby_root, tmp_path / "o", bold="nothing.nii", progress=False)
    with pytest.raises(ValueError, match=r"mask shape \(4, 3, 2\) differs from the runs' volume shape \(2, 2, 2\)"):
        prepare_nifti(haxby_root, tmp_path / "o", bold="bold_25mm.nii.gz", mask="sub001/masks/vt.nii.gz",
                      tr=2.0, progress=False)
    ev = haxby_root / "sub001/BOLD/task001_run002/bold_events.tsv"
    ev.write_text("onset\tduration\tcondition\n4.0\t12.0\tface\n")
    with pytest.raises(ValueError, match=r"bold_events.tsv: missing column\(s\) \['trial_type'\]"):
        prepare_nifti(haxby_root, tmp_path / "o", bold="bold_1slice.nii.gz", progress=False)
    assert not (tmp_path / "o" / "sub-001.h5").exists()


def test_prepare_cli_csv_and_nifti(haxby_root, muse_root, tmp_path, capsys):
    from neurodecode.cli import main

    assert main(["prepare", "nifti", "--root", str(haxby_root), "--out", str(tmp_path / "h"), "--bold",
                 "bold_1slice.nii.gz", "--delay", "2", "--no-progress"]) == 0
    assert open_prepared(tmp_path / "h").stores["001"].n_trials == 9
    assert main(["prepare", "csv", "--root", str(muse_root["root"]), "--out", str(tmp_path / "c"), "--event-map",
                 "1=face,2=house", "--reject", "0", "--no-filter", "--no-progress"]) == 0
    assert open_prepared(tmp_path / "c").stores["01"].n_trials == len(muse_root["on1"]) + len(muse_root["on2"])
    for source, opt in (("csv", "--event-map"), ("nifti", "--delay"), ("epochs", "--stimulus-column")):
        with pytest.raises(SystemExit):
            main(["prepare", source, "--help"])
        assert opt in capsys.readouterr().out


def test_prepare_cli_defaults_come_from_the_options_dataclasses():
    import argparse
    import dataclasses

    from neurodecode.cli import prepare as cli_prepare
    from neurodecode.readers.csv import CSVOptions
    from neurodecode.readers.things_meg import ThingsMEGOptions

    parser = argparse.ArgumentParser()
    cli_prepare.add_arguments(parser)
    for name, src in cli_prepare.SOURCES.items():
        args = parser.parse_args([name, "--root", "r", "--out", "o"])
        opts = getattr(cli_prepare._reader(name), src.options)()
        assert cli_prepare.options_from_args(opts, args) == opts, name  # no flag given: the dataclass defaults
    args = parser.parse_args(["csv", "--root", "r", "--out", "o", "--reject", "0", "--montage", "none",
                              "--baseline", "None,0", "--channels", "TP9, AF7"])
    got = cli_prepare.options_from_args(CSVOptions(), args)
    assert (got.reject, got.montage, got.baseline, got.channels) == (None, None, (None, 0.0), ["TP9", "AF7"])
    # keyword overrides reach nested options; unknown names and values are refused with a hint
    meg = ThingsMEGOptions().updated(sfreq=100.0, test_repetitions=6)
    assert (meg.processing.sfreq, meg.processing.tmin, meg.test_repetitions) == (100.0, 0.0, 6)
    assert dataclasses.fields(meg)[-1].metadata["help"]
    with pytest.raises(TypeError, match="'sfrq' \\(did you mean 'sfreq'\\?\\)"):
        ThingsMEGOptions().updated(sfrq=100.0)
    with pytest.raises(ValueError, match="Invalid value for the 'unit' parameter"):
        CSVOptions(unit="kV")
