"""THINGS-EEG2 reader: miniature copies of the three public layouts, checked value by value."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from neurodecode.io.manifests import ManifestError
from neurodecode.io.prepared import open_prepared
from neurodecode.io.safeio import UnsafePickleError, load_pickled_dict
from neurodecode.io.store import TrialStore as read_store
from neurodecode.readers.things_eeg2 import (
    CHANNELS_63,
    POSTERIOR_17,
    RawOptions,
    detect_layout,
    prepare_things_eeg2,
    preprocess_raw_session,
    read_preprocessed_file,
)

TRAIN_CONCEPTS = ["aardvark", "abacus", "air_conditioner", "airplane", "alligator", "alpaca"]
TEST_CONCEPTS = ["aircraft_carrier", "bean", "cat"]
PER_CONCEPT = 2
# the official release keeps the recording order of its 17 channels (not POSTERIOR_17's order)
OFFICIAL_ORDER = ["Pz", "P3", "P7", "O1", "Oz", "O2", "P4", "P8", "P1", "P5", "PO7", "PO3", "POz", "PO4",
                  "PO8", "P6", "P2"]
# the raw files list channels in recording order, which differs from CHANNELS_63
RAW_ORDER = list(CHANNELS_63[::2]) + list(CHANNELS_63[1::2])


# --------------------------------------------------------------------------------------------------
# miniature layouts
# --------------------------------------------------------------------------------------------------
def make_images(root: Path, *, sub: str = "image_set", n_train: int | None = None) -> dict[str, list[str]]:
    """THINGS-EEG2 image folders; returns the expected stimulus ids per split in condition order."""
    base = root / sub if sub else root
    ids: dict[str, list[str]] = {"train": [], "test": []}
    concepts = TRAIN_CONCEPTS[:n_train] if n_train else TRAIN_CONCEPTS
    for i, c in enumerate(concepts):
        d = base / "training_images" / f"{i + 1:05d}_{c}"
        d.mkdir(parents=True)
        for k in range(PER_CONCEPT):
            name = f"{c}_{k + 1:02d}{'b' if k == 0 else 's'}"
            (d / f"{name}.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
            ids["train"].append(name)
        (d / ".DS_Store").write_bytes(b"junk")  # hidden files are ignored
    for i, c in enumerate(TEST_CONCEPTS):
        d = base / "test_images" / f"{i + 1:05d}_{c}"
        d.mkdir(parents=True)
        name = f"{c}_{i + 5:02d}s"
        (d / f"{name}.jpg").write_bytes(b"\xff\xd8")
        ids["test"].append(name)
    return ids


def make_preprocessed(root: Path, layout: str, subjects=("01",), *, n_train: int | None = None,
                      reps=(4, 80), seed: int = 0) -> dict[str, dict[str, np.ndarray]]:
    """Preprocessed files with the public names, keys, container, dtype and axis order."""
    rng = np.random.default_rng(seed)
    n_train = n_train or len(TRAIN_CONCEPTS) * PER_CONCEPT
    if layout == "community-250hz":
        folder, ch, times = "Preprocessed_data_250Hz", list(CHANNELS_63), np.arange(-50, 250) / 250.0
    else:
        folder, ch, times = "preprocessed_data", OFFICIAL_ORDER, -0.2 + np.arange(100) / 100.0
    n_t = 250 if layout == "community-250hz" else 100
    out = {}
    for sub in subjects:
        d = root / folder / f"sub-{sub}"
        d.mkdir(parents=True)
        out[sub] = {}
        for split, n_cond, n_rep in (("training", n_train, reps[0]), ("test", len(TEST_CONCEPTS), reps[1])):
            data = rng.standard_normal((n_cond, n_rep, len(ch), n_t))
            obj = {"preprocessed_eeg_data": data, "ch_names": ch, "times": times}
            path = d / f"preprocessed_eeg_{split}.npy"
            if layout == "community-250hz":
                with open(path, "wb") as f:
                    pickle.dump(obj, f, protocol=4)  # a bare pickle with a .npy name
            else:
                np.save(path, obj, allow_pickle=True)  # a real .npy holding a 0-d object array
            out[sub][split] = data
    return out


def simulate_raw(n_samples_pad: int, events: list[tuple[int, int]], rng: np.random.Generator,
                 sfreq: float = 1000.0) -> dict:
    """A raw THINGS-EEG2 dict: 63 EEG rows in recording order, then 'stim'; events at 200 ms SOA."""
    onsets = n_samples_pad + 200 * np.arange(len(events))
    n = int(onsets[-1]) + 1200 + 400
    data = np.empty((64, n))
    data[:63] = rng.standard_normal((63, n)).cumsum(axis=1) * 2e-7 + rng.standard_normal((63, n)) * 5e-6
    data[:63] += rng.uniform(-1e-2, 1e-2, (63, 1))  # electrode offsets
    stim = np.zeros(n)
    for (code, _), on in zip(events, onsets, strict=True):
        stim[on] = code
        if code != 99999:  # a small evoked response that depends on the image
            data[:63, on + 100:on + 300] += 2e-6 * np.sin(code + np.arange(63))[:, None]
    data[63] = stim
    return {"raw_eeg_data": data, "ch_names": RAW_ORDER + ["stim"], "ch_types": ["eeg"] * 63 + ["stim"],
            "sfreq": 1000, "highpass": 0.01, "lowpass": 100}


def make_raw(root: Path, subject: str = "01", *, n_train: int = 12, n_test: int = 3, seed: int = 0,
             extra_rep: bool = True) -> dict[str, dict[str, dict]]:
    """Four sessions; training conditions 1-6 in sessions 1 and 3, 7-12 in 2 and 4, 2 reps each."""
    rng = np.random.default_rng(seed)
    out: dict[str, dict[str, dict]] = {}
    for s in range(1, 5):
        half = np.arange(1, n_train // 2 + 1) + (0 if s % 2 else n_train // 2)
        train_codes = list(np.repeat(half, 2)) + [99999, 99999]  # two target trials
        test_codes = list(np.tile(np.arange(1, n_test + 1), 20)) + [99999]
        rng.shuffle(train_codes)
        rng.shuffle(test_codes)
        pad = 400
        if extra_rep and s == 1:
            # two more showings of one image: the first too close to the start of the recording for
            # a -0.2 s epoch (dropped, as mne.Epochs does), the second kept; the seeded choice keeps 2
            train_codes = [int(half[0])] + train_codes + [int(half[0])]
            pad = 100
        d = root / "Raw_data" / f"sub-{subject}" / f"ses-{s:02d}"
        d.mkdir(parents=True)
        out[f"{s:02d}"] = {}
        for split, codes in (("training", train_codes), ("test", test_codes)):
            raw = simulate_raw(pad if split == "training" else 400, [(int(c), 0) for c in codes], rng)
            np.save(d / f"raw_eeg_{split}.npy", raw, allow_pickle=True)
            out[f"{s:02d}"][split] = raw
    return out


# --------------------------------------------------------------------------------------------------
# preprocessed layouts
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("layout", ["community-250hz", "official-100hz"])
def test_preprocessed_layout_value_by_value(tmp_path, layout):
    root, out = tmp_path / "root", tmp_path / "out"
    ids = make_images(root, sub="images_set" if layout == "community-250hz" else "")
    data = make_preprocessed(root, layout)
    assert detect_layout(root) == layout
    prepare_things_eeg2(root, out, progress_bar=False)

    ds = open_prepared(out)
    st = ds.stores["01"]
    n_train, n_test = len(ids["train"]), len(ids["test"])
    reps_train, reps_test = 4, 80
    assert st.n_trials == n_train * reps_train + n_test * reps_test
    if layout == "community-250hz":
        assert st.ch_names == list(CHANNELS_63)
        assert st.sfreq == 250.0 and st.tmin == 0.0 and st.n_times == 250  # times has 300 values from -0.2
    else:
        assert st.ch_names == OFFICIAL_ORDER  # the file's order is kept
        assert st.sfreq == 100.0 and st.tmin == pytest.approx(-0.2) and st.n_times == 100
    signals = st.get_signals()
    cond = st.trial_field("condition")
    for i in range(st.n_trials):
        split = st.split[i]
        c, r = int(cond[i]) - 1, int(st.repetition[i])
        assert st.stimulus_id[i] == ids[split][c]
        src = data["01"]["training" if split == "train" else "test"]
        np.testing.assert_array_equal(signals[i], src[c, r].astype(np.float32))
    # every (condition, repetition) exactly once
    pairs = {(st.split[i], int(cond[i]), int(st.repetition[i])) for i in range(st.n_trials)}
    assert len(pairs) == st.n_trials
    assert set(st.session.tolist()) == {0}
    # stimulus table: concepts from folder names, train then test, image files exist
    tab = ds.stimuli
    assert tab.stimulus_id.tolist() == ids["train"] + ids["test"]
    assert tab.concept.tolist()[:4] == ["aardvark", "aardvark", "abacus", "abacus"]
    assert "air_conditioner" in tab.concept.tolist() and "aircraft_carrier" in tab.concept.tolist()
    assert all(tab.image_file(i).is_file() for i in range(len(tab)))
    assert ds.meta["layout"] == layout


def test_channels_have_positions_and_subsets_are_not_baked(tmp_path):
    root, out = tmp_path / "root", tmp_path / "out"
    make_images(root)
    make_preprocessed(root, "community-250hz")
    prepare_things_eeg2(root, out, layout="community-250hz", progress_bar=False)
    st = read_store(out / "sub-01.h5")
    locs = np.array([ch["loc"][:3] for ch in st.info["chs"]])
    assert np.isfinite(locs).all() and (np.abs(locs).sum(axis=1) > 0).all()  # colin27_1005 positions
    assert st.n_chans == 63
    post = st.get_signals([0, 1], picks=list(POSTERIOR_17))
    full = st.get_signals([0, 1])
    np.testing.assert_array_equal(post, full[:, [CHANNELS_63.index(c) for c in POSTERIOR_17]])


def test_resume_skips_finished_subjects(tmp_path):
    root, out = tmp_path / "root", tmp_path / "out"
    make_images(root)
    make_preprocessed(root, "community-250hz", subjects=("01", "02"))
    prepare_things_eeg2(root, out, subjects=["1"], progress_bar=False)
    first = (out / "sub-01.h5").stat().st_mtime_ns
    assert not (out / "sub-02.h5").exists()
    prepare_things_eeg2(root, out, progress_bar=False)  # both subjects: 01 is skipped
    assert (out / "sub-01.h5").stat().st_mtime_ns == first
    assert (out / "sub-02.h5").exists()
    prepare_things_eeg2(root, out, subjects=["sub-01"], overwrite=True, progress_bar=False)
    assert (out / "sub-01.h5").stat().st_mtime_ns != first


def test_cli_prepare(tmp_path, capsys):
    from neurodecode.cli import main

    root, out = tmp_path / "root", tmp_path / "out"
    make_images(root)
    make_preprocessed(root, "official-100hz")
    rc = main(["prepare", "things-eeg2", "--root", str(root), "--out", str(out), "--no-progress",
               "--subjects", "01"])
    assert rc == 0
    assert read_store(out / "sub-01.h5").n_chans == 17
    with pytest.raises(SystemExit):
        main(["prepare", "things-eeg2", "--help"])
    helptext = capsys.readouterr().out
    assert "--layout" in helptext and "community-250hz" in helptext and "--mvnn-mode" in helptext


# --------------------------------------------------------------------------------------------------
# raw layout
# --------------------------------------------------------------------------------------------------
def _reference_session(train: dict, test: dict, seed: int) -> tuple[dict, dict]:
    """The straightforward community computation (mne.Epochs, per-condition loops), written out."""
    import mne
    import scipy.linalg
    from sklearn.covariance import LedoitWolf
    from sklearn.preprocessing import StandardScaler
    from sklearn.utils import shuffle

    def cov_lw(x):  # what sklearn.discriminant_analysis._cov(x, shrinkage="auto") does
        sc = StandardScaler().fit(x)
        s = LedoitWolf().fit(sc.transform(x)).covariance_
        return sc.scale_[:, None] * s * sc.scale_[None, :]

    parts = {}
    for name, d, max_rep in (("train", train, 2), ("test", test, 20)):
        info = mne.create_info(d["ch_names"], d["sfreq"], d["ch_types"])
        raw = mne.io.RawArray(d["raw_eeg_data"], info, verbose=False)
        events = mne.find_events(raw, stim_channel="stim", verbose=False)
        raw.pick(list(CHANNELS_63))
        raw.reorder_channels(list(CHANNELS_63))
        events = events[events[:, 2] != 99999]
        epochs = mne.Epochs(raw, events, tmin=-0.2, tmax=1.0, baseline=(None, 0), preload=True, verbose=False)
        epochs.resample(250, verbose=False)
        x = epochs.get_data()
        ev = epochs.events[:, 2]
        conds = np.unique(ev)
        sorted_x = np.zeros((len(conds), max_rep, x.shape[1], x.shape[2]))
        onsets = np.zeros((len(conds), max_rep), int)
        for i, c in enumerate(conds):
            idx = shuffle(np.where(ev == c)[0], random_state=seed, n_samples=max_rep)
            sorted_x[i] = x[idx]
            onsets[i] = epochs.events[idx, 0]
        parts[name] = (sorted_x[..., 50:], conds, onsets)
    x = parts["train"][0]
    sigma = np.mean([np.mean([cov_lw(x[i, r].T) for r in range(x.shape[1])], axis=0) for i in range(len(x))],
                    axis=0)
    w = scipy.linalg.fractional_matrix_power(sigma, -0.5)
    white = {k: (v[0].swapaxes(-1, -2) @ w).swapaxes(-1, -2) for k, v in parts.items()}
    return white, {k: (v[1], v[2]) for k, v in parts.items()}


def test_raw_session_matches_reference(tmp_path):
    raw = make_raw(tmp_path)
    ses = raw["01"]
    opts = RawOptions(dtype="float64")
    got = preprocess_raw_session(ses["training"], ses["test"], options=opts, n_train_images=12, n_test_images=3)
    want, meta = _reference_session(ses["training"], ses["test"], opts.seed)
    assert got.train.shape == (6, 2, 63, 250) and got.test.shape == (3, 20, 63, 250)
    np.testing.assert_array_equal(got.train_conditions, meta["train"][0])
    np.testing.assert_array_equal(got.train_onsets, meta["train"][1])  # same seeded repetition choice
    np.testing.assert_array_equal(got.test_onsets, meta["test"][1])
    scale = np.abs(want["train"]).max()
    np.testing.assert_allclose(got.train, want["train"], rtol=0, atol=1e-9 * scale)
    np.testing.assert_allclose(got.test, want["test"], rtol=0, atol=1e-9 * scale)
    assert got.info["train"]["n_targets_dropped"] == 2
    assert got.info["train"]["n_outside_dropped"] == 1
    assert (got.train_onsets >= 200).all()
    # float32 (the default) agrees to single precision
    got32 = preprocess_raw_session(ses["training"], ses["test"], n_train_images=12, n_test_images=3)
    assert got32.train.dtype == np.float32
    np.testing.assert_allclose(got32.train, want["train"], rtol=0, atol=1e-4 * scale)


def test_raw_layout_store(tmp_path):
    root, out = tmp_path / "root", tmp_path / "out"
    ids = make_images(root)
    raw = make_raw(root)
    assert detect_layout(root) == "raw"
    prepare_things_eeg2(root, out, progress_bar=False, raw_options=RawOptions(dtype="float64"))
    st = read_store(out / "sub-01.h5")
    assert st.sfreq == 250.0 and st.tmin == 0.0 and st.n_times == 250 and st.ch_names == list(CHANNELS_63)
    # 4 sessions x 6 conditions x 2 reps (train) + 4 x 3 x 20 (test)
    assert st.n_trials == 4 * 12 + 4 * 60
    split, sess, rep = st.split, st.session, st.repetition
    cond, sample = st.trial_field("condition"), st.trial_field("event_sample")
    assert set(sess.tolist()) == {1, 2, 3, 4}
    train = split == "train"
    # each training image: 4 repetitions (2 sessions x 2), numbered 0-3; each test image 80
    for c in range(1, 13):
        m = train & (cond == c)
        assert sorted(rep[m].tolist()) == [0, 1, 2, 3]
        assert set(st.stimulus_id[m].tolist()) == {ids["train"][c - 1]}
        assert len(set(sess[m].tolist())) == 2
    for c in range(1, 4):
        assert sorted(rep[~train & (cond == c)].tolist()) == list(range(80))
    # session 2 value by value against the reference computation
    want, meta = _reference_session(raw["02"]["training"], raw["02"]["test"], RawOptions().seed)
    signals = st.get_signals()
    scale = np.abs(want["train"]).max()
    for name, key in (("train", "train"), ("test", "test")):
        conds, onsets = meta[key]
        for i, c in enumerate(conds):
            for r in range(onsets.shape[1]):
                hit = np.flatnonzero((split == name) & (sess == 2) & (cond == c) & (sample == onsets[i, r]))
                assert len(hit) == 1
                np.testing.assert_allclose(signals[hit[0]], want[name][i, r], rtol=0, atol=1e-6 * scale)
    prov = [p["step"] for p in st.provenance]
    assert prov == ["things_eeg2.read_raw", "epoch", "select_repetitions", "mvnn"]
    assert st.provenance[-1]["params"]["fit_on"] == "train"
    # the whitener is kept beside the store (each session's covariance, the whitener of their mean), and a stream
    # of a model trained on these data whitens with it
    from neurodecode.preprocessing.mvnn import inverse_sqrt
    from neurodecode.streaming.recipe import recipe_from_model

    with np.load(out / "sub-01.mvnn.npz", allow_pickle=False) as f:
        kept = {k: f[k] for k in f.files}
    assert kept["covariances"].shape == (4, 63, 63) and kept["sessions"].tolist() == ["01", "02", "03", "04"]
    np.testing.assert_allclose(kept["whitener"], inverse_sqrt(kept["covariances"].mean(0)))
    for cov in kept["covariances"]:  # noise covariances: symmetric, positive definite, one per session
        np.testing.assert_allclose(cov, cov.T, atol=1e-12 * np.abs(cov).max())
        assert np.linalg.eigvalsh(cov).min() > 0
    c0, c1 = kept["covariances"][:2]
    assert np.abs(c0 - c1).max() > 0.01 * np.abs(c0).max()  # each session its own
    config = {"data": {"channels": list(CHANNELS_63), "sfreq": 250.0, "tmin": 0.0, "n_times": 250}}
    recipe = recipe_from_model(config, store=out / "sub-01.h5")
    np.testing.assert_allclose(recipe.mvnn, kept["whitener"])
    assert "mvnn" in recipe.post


def test_raw_options_change_output_and_are_recorded(tmp_path):
    root = tmp_path / "root"
    make_images(root)
    make_raw(root)
    a = prepare_things_eeg2(root, tmp_path / "a", progress_bar=False)
    b = prepare_things_eeg2(root, tmp_path / "b", progress_bar=False,
                            raw_options=RawOptions(l_freq=1.0, h_freq=40.0, mvnn_mode="time", sfreq=100.0,
                                                   crop_tmin=-0.1, crop_tmax=0.5))
    sa, sb = read_store(a / "sub-01.h5"), read_store(b / "sub-01.h5")
    assert sa.n_times == 250 and sb.n_times == 61 and sb.sfreq == 100.0 and sb.tmin == pytest.approx(-0.1)
    steps = {p["step"]: p["params"] for p in sb.provenance}
    assert steps["band_pass"]["l_freq"] == 1.0 and steps["mvnn"]["mode"] == "time"
    assert json.loads(sb.attrs["options"])["h_freq"] == 40.0


# --------------------------------------------------------------------------------------------------
# bad inputs
# --------------------------------------------------------------------------------------------------
class _Touch:
    """Unpickling this would create a file (if the unpickler ran callables)."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (os.mkdir, (self.path,))


@pytest.mark.parametrize("container", ["pickle", "npy"])
def test_malicious_file_is_refused(tmp_path, container):
    root = tmp_path / "root"
    make_images(root)
    make_preprocessed(root, "community-250hz")
    marker = tmp_path / "pwned"
    path = root / "Preprocessed_data_250Hz" / "sub-01" / "preprocessed_eeg_training.npy"
    obj = {"preprocessed_eeg_data": np.zeros((12, 4, 63, 250)), "ch_names": list(CHANNELS_63),
           "times": np.arange(-50, 250) / 250, "x": _Touch(marker)}
    if container == "pickle":
        path.write_bytes(pickle.dumps(obj, protocol=4))
    else:
        np.save(path, obj, allow_pickle=True)
    with pytest.raises(UnsafePickleError) as err:
        prepare_things_eeg2(root, tmp_path / "out", layout="community-250hz", progress_bar=False)
    assert str(path) in str(err.value) and "mkdir" in str(err.value)
    assert not marker.exists()


def test_wrong_shapes_are_errors(tmp_path):
    root = tmp_path / "root"
    make_images(root)
    make_preprocessed(root, "community-250hz")
    path = root / "Preprocessed_data_250Hz" / "sub-01" / "preprocessed_eeg_test.npy"
    good = load_pickled_dict(path)

    def write(**changes):
        path.write_bytes(pickle.dumps({**good, **changes}, protocol=4))

    write(preprocessed_eeg_data=good["preprocessed_eeg_data"][:, :, :62])  # a channel short
    with pytest.raises(ValueError, match=r"'ch_names' lists 63 channels but .* has 62"):
        prepare_things_eeg2(root, tmp_path / "o1", layout="community-250hz", progress_bar=False)
    with pytest.raises(ValueError, match=r"shape \(3, 80, 62, 250\); neither the community .* --layout"):
        prepare_things_eeg2(root, tmp_path / "o1", progress_bar=False)  # auto-detection
    write(preprocessed_eeg_data=good["preprocessed_eeg_data"][:, :, :17, :100], ch_names=list(CHANNELS_63[:17]))
    with pytest.raises(ValueError, match="channel names differ from the official-100hz set"):
        read_preprocessed_file(path, layout="official-100hz")
    write(preprocessed_eeg_data=good["preprocessed_eeg_data"][0])  # 3-D
    with pytest.raises(ValueError, match="must be a float array"):
        prepare_things_eeg2(root, tmp_path / "o2", layout="community-250hz", progress_bar=False)
    write(times=np.arange(100) / 250)  # fewer times than samples
    with pytest.raises(ValueError, match="'times' has 100 values but the data have 250"):
        prepare_things_eeg2(root, tmp_path / "o3", layout="community-250hz", progress_bar=False)
    write(preprocessed_eeg_data=good["preprocessed_eeg_data"][..., :100], times=np.arange(100) / 100)
    with pytest.raises(ValueError, match="100 time points .* expected 250"):
        prepare_things_eeg2(root, tmp_path / "o4", layout="community-250hz", progress_bar=False)
    del good["ch_names"]
    path.write_bytes(pickle.dumps(good, protocol=4))
    with pytest.raises(ValueError, match=r"lacks key\(s\) \['ch_names'\]"):
        prepare_things_eeg2(root, tmp_path / "o5", layout="community-250hz", progress_bar=False)


def test_condition_count_mismatch_is_an_error(tmp_path):
    root = tmp_path / "root"
    make_images(root)
    make_preprocessed(root, "community-250hz", n_train=11)
    with pytest.raises(ValueError, match=r"11 image conditions .* but 12 train images"):
        prepare_things_eeg2(root, tmp_path / "out", progress_bar=False)
    assert not (tmp_path / "out" / "sub-01.h5").exists()


def test_missing_files_and_images_listed_in_one_message(tmp_path):
    root = tmp_path / "root"
    make_raw(root)
    (root / "Raw_data" / "sub-01" / "ses-03" / "raw_eeg_test.npy").unlink()
    (root / "Raw_data" / "sub-01" / "ses-04" / "raw_eeg_training.npy").unlink()
    with pytest.raises(ManifestError) as err:
        prepare_things_eeg2(root, tmp_path / "out", layout="raw", progress_bar=False)
    msg = str(err.value)
    assert "Raw_data/sub-01/ses-03/raw_eeg_test.npy" in msg
    assert "Raw_data/sub-01/ses-04/raw_eeg_training.npy" in msg
    assert "training_images" in msg and "--images" in msg and "osf.io/y63gw" in msg
    assert "3 problem(s)" in msg


def test_missing_subject_and_explicit_images_folder(tmp_path):
    root = tmp_path / "root"
    ids = make_images(tmp_path / "elsewhere", sub="")
    make_preprocessed(root, "community-250hz")
    with pytest.raises(ManifestError, match="sub-02/preprocessed_eeg_training.npy"):
        prepare_things_eeg2(root, tmp_path / "out", subjects=["01", "02"], images=tmp_path / "elsewhere",
                            progress_bar=False)
    out = prepare_things_eeg2(root, tmp_path / "out", images=tmp_path / "elsewhere", progress_bar=False)
    assert open_prepared(out).stimuli.stimulus_id.tolist() == ids["train"] + ids["test"]


def test_raw_event_codes_beyond_images_and_too_few_repetitions(tmp_path):
    root = tmp_path / "root"
    make_images(root, n_train=5)  # 10 training images, but the EEG shows conditions 1-12
    make_raw(root)
    with pytest.raises(ValueError, match=r"event code\(s\) \[11, 12\] outside 1..10"):
        prepare_things_eeg2(root, tmp_path / "out", progress_bar=False)
    root2 = tmp_path / "root2"
    make_images(root2)
    make_raw(root2)
    with pytest.raises(ValueError, match="fewer than 3 trials"):
        prepare_things_eeg2(root2, tmp_path / "out2", progress_bar=False, raw_options=RawOptions(train_reps=3))
