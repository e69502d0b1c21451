"""The simulator: determinism, shapes, sensor positions, exact noise model and the ceiling."""

from __future__ import annotations

import json

import numpy as np
import pytest

from neurodecode.io.prepared import open_prepared
from neurodecode.io.store import StimulusTable
from neurodecode.simulate.ceiling import Whitener, ideal_decoder_accuracy
from neurodecode.simulate.config import SimulationConfig
from neurodecode.simulate.dataset import simulate
from neurodecode.simulate.forward import fmri_model, sample_noise, timeseries_model
from neurodecode.simulate.sensors import EEG63
from neurodecode.simulate.stimuli import make_stimuli

SMALL = dict(n_subjects=2, n_train_concepts=12, n_test_concepts=6, n_exemplars=2, n_reps_train=2, n_reps_test=3)


@pytest.fixture(scope="module")
def eeg_small(tmp_path_factory):
    out = tmp_path_factory.mktemp("sim_eeg")
    return simulate(out, modality="eeg", progress_bar=False, **SMALL)


def test_eeg_layout_and_shapes(eeg_small):
    res = eeg_small
    ds = open_prepared(res.root, validate="values")
    assert ds.subjects == ["01", "02"] and ds.modality == "eeg"
    s = ds.stores["01"]
    n_train_trials = 12 * 2 * 2
    n_test_trials = 6 * 1 * 3
    assert s.shape == (n_train_trials + n_test_trials, 63, 250)
    assert s.sfreq == 250.0 and s.tmin == 0.0
    assert s.ch_names == list(EEG63)
    assert (s.split == "train").sum() == n_train_trials
    # every training image seen n_reps_train times, every test image n_reps_test times
    ids, counts = np.unique(s.stimulus_id[s.split == "test"], return_counts=True)
    assert len(ids) == 6 and set(counts) == {3}
    assert set(s.repetition[s.split == "test"]) == {0, 1, 2}
    # zero-shot split: test concepts never appear in training
    table = ds.stimuli
    assert not set(table.concepts("train")) & set(table.concepts("test"))
    assert len(table.concepts("train")) == 12 and len(table) == 12 * 2 + 6
    # images exist, are RGB, at least 64x64, in the THINGS folder layout
    from PIL import Image

    img = Image.open(table.image_file(0))
    assert img.mode == "RGB" and img.size == (64, 64)
    assert table.image_path[0].startswith("images/train/00001_")
    feats = np.load(res.root / "features.npz")
    assert feats["low"].shape == (30, 10) and feats["mid"].shape == (30, 8) and feats["sem"].shape == (30, 12)
    assert feats["stimulus_id"].tolist() == table.stimulus_id.tolist()
    assert json.loads((res.root / "ceiling.json").read_text())["n_way"] == 6


def test_eeg_channel_positions_match_the_standard_montage(eeg_small):
    import mne

    info = open_prepared(eeg_small.root).stores["01"].info
    ref = mne.create_info(list(EEG63), 250.0, "eeg")
    ref.set_montage(mne.channels.make_standard_montage("colin27_1005"))
    for ch, want in zip(info["chs"], ref["chs"], strict=True):
        assert ch["ch_name"] == want["ch_name"]
        np.testing.assert_allclose(ch["loc"][:3], want["loc"][:3], atol=1e-7)
    assert len(info["dig"]) >= 63
    # a real head: occipital channels at the back (negative y), frontal at the front
    pos = {ch["ch_name"]: ch["loc"][:3] for ch in info["chs"]}
    assert pos["Oz"][1] < -0.05 < 0.05 < pos["Fp1"][1]


def test_deterministic_and_seeded(tmp_path, eeg_small):
    again = simulate(tmp_path / "again", modality="eeg", progress_bar=False, **SMALL)
    a = open_prepared(eeg_small.root).stores["02"]
    b = open_prepared(again.root).stores["02"]
    np.testing.assert_array_equal(a.get_signals(), b.get_signals())
    assert a.stimulus_id.tolist() == b.stimulus_id.tolist()
    assert again.ceiling["per_subject"] == eeg_small.ceiling["per_subject"]
    other = simulate(tmp_path / "other", modality="eeg", progress_bar=False, seed=1, **SMALL)
    c = open_prepared(other.root).stores["02"]
    assert not np.allclose(a.get_signals(slice(0, 5)), c.get_signals(slice(0, 5)))


def test_subjects_differ_but_share_structure(eeg_small):
    """Cross-subject transfer possible but not free: noiseless responses correlate, far from identical."""
    cfg = eeg_small.config
    stim = make_stimuli(cfg)
    m1, _ = timeseries_model(cfg, stim, 0)
    m2, _ = timeseries_model(cfg, stim, 1)
    # stimulus-specific parts
    d1 = (m1.mean - m1.mean.mean(0)).ravel()
    d2 = (m2.mean - m2.mean.mean(0)).ravel()
    r = np.corrcoef(d1, d2)[0, 1]
    assert 0.2 < r < 0.95


def test_evoked_components_at_the_right_latencies(eeg_small):
    s = open_prepared(eeg_small.root).stores["01"]
    x = s.get_signals()
    evoked = x.mean(0)  # average over all trials
    times = s.times
    gfp = evoked.std(0)  # global field power
    peak = times[np.argmax(gfp)]
    assert 0.08 <= peak <= 0.5
    # stimulus information (variance over stimuli of the noiseless response) is concentrated in the
    # component windows, and absent at the very end of the epoch
    cfg = eeg_small.config
    stim = make_stimuli(cfg)
    model, _ = timeseries_model(cfg, stim, 0)
    info_t = model.mean.var(0).mean(0)
    assert info_t[(times > 0.08) & (times < 0.5)].mean() > 20 * info_t[times > 0.9].mean()


@pytest.mark.parametrize("modality", ["eeg", "meg", "fmri"])
def test_noise_model_is_exact(modality):
    """The whitener's Mahalanobis norm of simulated noise averages the dimension (chi-square mean)."""
    cfg = SimulationConfig(modality=modality, n_train_concepts=8, n_test_concepts=4, n_exemplars=1,
                               n_voxels=300).resolved()
    stim = make_stimuli(cfg)
    if modality == "fmri":
        model = fmri_model(cfg, stim, 0)
    else:
        model, _ = timeseries_model(cfg, stim, 0)
    n = 200
    noise = sample_noise(model, n, np.random.default_rng(5))
    white = Whitener(model)
    z, q = white.embed(noise)
    maha = (z**2).sum(1) - (q**2).sum(1)
    dim = int(np.prod(model.mean.shape[1:]))
    # mean of a chi-square with `dim` degrees of freedom, sd sqrt(2 dim / n)
    assert abs(maha.mean() - dim) < 5 * np.sqrt(2 * dim / n)
    # and a wrong covariance (no source noise) is clearly detected by the same statistic
    assert (z**2).sum(1).mean() > dim + 20 * np.sqrt(2 * dim / n)


def test_ceiling_at_default_snr_is_far_above_chance_and_below_100():
    # default noise settings, 50-way test with the default number of test repetitions
    res_cfg = dict(modality="eeg", n_subjects=1, n_train_concepts=40, n_test_concepts=50, n_exemplars=1,
                   n_reps_train=1)
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        res = simulate(d, progress_bar=False, **res_cfg)
    c = res.ceiling["mean"]
    assert res.ceiling["n_way"] == 50 and res.ceiling["n_reps_test"] == 20
    assert 0.5 < c["top1"] < 0.99, c
    assert c["top1"] > 10 * res.ceiling["chance_top1"]
    assert c["single_trial_top1"] < c["top1"]  # averaging repetitions helps
    # the ideal decoder beats a plain nearest-mean decoder on the same responses
    cfg = res.config
    stim = make_stimuli(cfg)
    model, _ = timeseries_model(cfg, stim, 0)
    rng = np.random.default_rng(0)
    test = np.flatnonzero(stim.split == "test")
    avg = model.mean[test] + sample_noise(model, len(test), rng) / np.sqrt(20)
    ideal = ideal_decoder_accuracy(model, avg, test, test)["top1"]
    flat_x = avg.reshape(len(test), -1)
    flat_m = model.mean[test].reshape(len(test), -1)
    d = ((flat_x[:, None] - flat_m[None]) ** 2).sum(-1)
    naive = (d.argmin(1) == np.arange(len(test))).mean()
    assert ideal >= naive


def test_meg_and_fmri(tmp_path):
    meg = simulate(tmp_path / "meg", modality="meg", progress_bar=False, n_subjects=1, n_train_concepts=6,
                       n_test_concepts=4, n_exemplars=1)
    s = open_prepared(meg.root).stores["01"]
    assert s.shape[1:] == (271, 200) and s.sfreq == 200.0
    locs = np.array([ch["loc"][:3] for ch in s.info["chs"]])
    assert np.all(np.isfinite(locs)) and np.linalg.norm(locs, axis=1).min() > 0.05
    assert len(np.unique(locs.round(4), axis=0)) == 271  # distinct positions
    fmri = simulate(tmp_path / "fmri", modality="fmri", progress_bar=False, n_subjects=2, n_train_concepts=6,
                        n_test_concepts=4, n_exemplars=1, n_voxels=2500)
    f = open_prepared(fmri.root).stores["02"]
    assert f.modality == "fmri" and f.n_voxels == 2500 and f.voxel_ijk.shape == (2500, 3)
    assert (f.split == "test").sum() == 4 * 3


def test_bad_config_errors(tmp_path):
    with pytest.raises(ValueError, match="'modality' parameter.*'ecog'"):
        simulate(tmp_path, modality="ecog")
    with pytest.raises(ValueError, match="n_test_concepts must be at least 2"):
        simulate(tmp_path, n_test_concepts=1)
    with pytest.raises(ValueError, match="at most 720"):
        simulate(tmp_path, n_train_concepts=700, n_test_concepts=50)
    with pytest.raises(ValueError, match="snr must be positive"):
        simulate(tmp_path, snr=0.0)


def test_stimulus_images_vary_within_and_between_concepts():
    cfg = SimulationConfig(n_train_concepts=10, n_test_concepts=4, n_exemplars=3).resolved()
    stim = make_stimuli(cfg)
    imgs = stim.images.astype(float)
    same, diff = [], []
    for i in range(len(imgs)):
        for j in range(i + 1, len(imgs)):
            d = np.abs(imgs[i] - imgs[j]).mean()
            (same if stim.stim_concept[i] == stim.stim_concept[j] else diff).append(d)
    assert min(same) > 0  # exemplars are never identical
    assert isinstance(stim.table(), StimulusTable)
    # features of exemplars of one concept are closer than features of different concepts
    f = np.concatenate([stim.features["mid"], stim.features["sem"]], 1)
    fs = [np.linalg.norm(f[i] - f[j]) for i in range(len(f)) for j in range(i + 1, len(f))
          if stim.stim_concept[i] == stim.stim_concept[j]]
    fd = [np.linalg.norm(f[i] - f[j]) for i in range(len(f)) for j in range(i + 1, len(f))
          if stim.stim_concept[i] != stim.stim_concept[j]]
    assert np.mean(fs) < 0.2 * np.mean(fd)


# fingerprints of a tiny simulation recorded before simulate/forward.py was split into config, stimuli,
# sensors, forward, ceiling and dataset: the same seed must keep giving the same numbers
TINY = dict(n_subjects=2, n_train_concepts=4, n_test_concepts=3, n_exemplars=1, n_reps_train=1, n_reps_test=2,
            n_voxels=200, image_size=16, duration=0.2)
FINGERPRINTS = {
    "eeg": {
        "first": [1.4620004549215082e-06, -1.746234374877531e-06,
                  -1.5374506574517e-06, -2.5223794182238635e-06],
        "last": [-1.1607717169681564e-05, -1.1602863196458202e-05,
                 -1.0295827451045625e-05, -8.227671060012653e-06],
        "rms": 2.871136123235906e-06,
        "ceiling": [0.8333333333333333, 0.75, 9.070632059569732e-07],
    },
    "meg": {
        "first": [4.453826630418378e-14, -3.164869489527197e-14,
                  -9.6646357637762e-15, -2.9211252557462264e-14],
        "last": [2.9522791275462396e-14, 5.967377606592647e-14,
                 7.570958020664681e-14, -7.757758770500587e-15],
        "rms": 1.1192177962295026e-13,
        "ceiling": [1.0, 1.0, 5.595438298978299e-14],
    },
    "fmri": {
        "first": [-5.101438999176025, -7.123654842376709,
                  -5.845646381378174, 2.8415141105651855],
        "last": [4.711187839508057, -0.17076653242111206,
                 -3.417205810546875, 5.6065521240234375],
        "rms": 4.4934672450129405,
        "ceiling": [1.0, 1.0, 2.1873720574952484],
    },
}
FIRST_IDS = ["yellow_gradient_ellipse_01", "orange_rings_crescent_01", "orange_solid_arrow_01",
             "purple_dots_crescent_01", "green_solid_circle_01"]


@pytest.mark.parametrize("modality", ["eeg", "meg", "fmri"])
def test_fixed_seed_output_is_unchanged(tmp_path, modality):
    res = simulate(tmp_path, modality=modality, progress_bar=False, verbose="error", **TINY)
    store = open_prepared(res.root).stores["02"]
    x = store.get_signals().astype(np.float64).reshape(len(store.stimulus_id), -1)
    want = FINGERPRINTS[modality]
    assert store.stimulus_id.tolist()[:5] == FIRST_IDS
    np.testing.assert_allclose(x[0, :4], want["first"], rtol=1e-4)
    np.testing.assert_allclose(x[-1, -4:], want["last"], rtol=1e-4)
    np.testing.assert_allclose(np.sqrt((x**2).mean()), want["rms"], rtol=1e-5)
    got = [res.ceiling["mean"]["top1"], res.ceiling["mean"]["single_trial_top1"],
           res.ceiling["per_subject"]["02"]["noise_scale"]]
    np.testing.assert_allclose(got, want["ceiling"], rtol=1e-6)
