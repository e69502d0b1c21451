"""Continuous simulated recordings: the same subjects and stimuli as the epoched simulation, as a Raw FIF
with a stimulus channel and annotations, 5 images per second; ``neurodecode simulate --continuous [--like]``."""

from __future__ import annotations

import json

import mne
import numpy as np
import pandas as pd
import pytest

from neurodecode.cli.main import main
from neurodecode.io.store import TrialStore
from neurodecode.simulate.continuous import (
    STIM_CHANNEL,
    presentation_schedule,
    recording_name,
    simulate_continuous,
)
from neurodecode.simulate.dataset import simulate

SMALL = dict(modality="eeg", n_subjects=1, n_train_concepts=6, n_test_concepts=6, n_exemplars=1, n_reps_train=1,
             n_reps_test=4, sfreq=100.0)


def _raw(folder, subject="01"):
    return mne.io.read_raw_fif(folder / recording_name(subject), preload=True, verbose="ERROR")


def test_noiseless_recording_is_the_epoched_subjects_responses_at_their_onsets(tmp_path):
    # without noise, the epoched trials are the subject's responses; the continuous recording must be
    # exactly their sum at the onsets, which only holds for the same subjects and stimuli
    quiet = dict(SMALL, snr=1e8, neural_noise=0.0)
    simulate(tmp_path / "epoched", progress_bar=False, **quiet)
    res = simulate_continuous(tmp_path / "cont", like=tmp_path / "epoched", progress_bar=False)
    with TrialStore(tmp_path / "epoched" / "sub-01.h5") as ts:
        resp = {s: ts.get_signals(np.flatnonzero(ts.stimulus_id == s)).mean(0) for s in np.unique(ts.stimulus_id)}
    raw = _raw(tmp_path / "cont")
    events = pd.read_csv(tmp_path / "cont" / "sub-01_events.tsv", sep="\t")
    expected = np.zeros((63, raw.n_times))
    for o, s in zip(events["sample"], events["stimulus_id"], strict=True):
        expected[:, o:o + resp[s].shape[1]] += resp[s]
    got = raw.get_data(picks="eeg")
    assert np.abs(got - expected).max() < 1e-3 * np.abs(expected).max()
    assert res.settings["like"] == str((tmp_path / "epoched").resolve())
    # another seed simulates other subjects: the same sum does not fit
    other = simulate_continuous(tmp_path / "other", progress_bar=False, **dict(quiet, seed=3))
    assert other.settings["n_presentations"] == res.settings["n_presentations"]
    assert np.abs(_raw(tmp_path / "other").get_data(picks="eeg") - expected).max() > 0.1 * np.abs(expected).max()


def test_a_decoder_of_the_epoched_data_identifies_the_continuous_responses(tmp_path):
    # with noise: nearest class mean, fitted on the epoched simulation, applied to epochs cut from the
    # continuous recording (responses of neighbours overlapping, as in the real rapid design)
    simulate(tmp_path / "epoched", progress_bar=False, **dict(SMALL, n_reps_test=10, snr=1.0, neural_noise=0.3))
    simulate_continuous(tmp_path / "cont", like=tmp_path / "epoched", n_reps=10, progress_bar=False)
    with TrialStore(tmp_path / "epoched" / "sub-01.h5") as ts:
        test = ts.split == "test"
        ids = np.unique(ts.stimulus_id[test])
        means = np.stack([ts.get_signals(np.flatnonzero(ts.stimulus_id == s)).mean(0) for s in ids])
    raw = _raw(tmp_path / "cont")
    ev, ev_id = mne.events_from_annotations(raw, verbose="ERROR")
    names = {v: k[len("stim/"):] for k, v in ev_id.items()}
    ep = mne.Epochs(raw, ev, tmin=0, tmax=0.99, baseline=None, picks="eeg", preload=True, verbose="ERROR")
    shown = np.array([names[c] for c in ep.events[:, 2]])
    avg = np.stack([ep.get_data()[shown == s].mean(0) for s in ids])
    a = (avg - avg.mean(0)).reshape(len(ids), -1)
    b = (means - means.mean(0)).reshape(len(ids), -1)
    corr = np.corrcoef(a, b)[:len(ids), len(ids):]
    assert (corr.argmax(1) == np.arange(len(ids))).mean() >= 0.8  # chance: 1/6


def test_recording_layout_rate_and_reproducibility(tmp_path):
    res = simulate_continuous(tmp_path / "a", progress_bar=False, **SMALL)
    raw = _raw(tmp_path / "a")
    assert raw.get_channel_types(picks=[STIM_CHANNEL]) == ["stim"] and len(raw.ch_names) == 64
    stim_ev = mne.find_events(raw, stim_channel=STIM_CHANNEL, verbose="ERROR")
    codes = pd.read_csv(tmp_path / "a" / "event_map.tsv", sep="\t")
    code_to_id = dict(zip(codes["code"], codes["stimulus_id"], strict=True))
    ann = raw.annotations
    assert len(stim_ev) == len(ann) == 6 * 4 == res.settings["n_presentations"]
    # stimulus channel, annotations and the events table agree
    assert [f"stim/{code_to_id[c]}" for c in stim_ev[:, 2]] == list(ann.description)
    np.testing.assert_allclose(ann.onset, stim_ev[:, 0] / 100.0)
    table = pd.read_csv(tmp_path / "a" / "sub-01_events.tsv", sep="\t")
    assert table["sample"].tolist() == stim_ev[:, 0].tolist()
    # the test images, each 4 times (once per repetition block), 5 per second within a sequence
    stimuli = pd.read_csv(tmp_path / "a" / "stimuli.tsv", sep="\t")
    assert set(table["stimulus_id"]) == set(stimuli["stimulus_id"][stimuli["split"] == "test"])
    assert (table.groupby("stimulus_id").size() == 4).all()
    steps = np.diff(table["onset"].to_numpy())
    assert np.allclose(steps[steps < 0.5], 0.2) and (steps < 0.5).sum() >= 20
    meta = json.loads((tmp_path / "a" / "continuous.json").read_text())
    assert meta["continuous"]["soa"] == 0.2 and meta["config"]["seed"] == 0
    # seeded: the same again
    simulate_continuous(tmp_path / "b", progress_bar=False, **SMALL)
    assert np.array_equal(raw.get_data(), _raw(tmp_path / "b").get_data())


def test_schedule_sequences_and_pauses():
    image, rep, onset = presentation_schedule(5, 3, 100.0, np.random.default_rng(0), sequence_length=4, pause=1.0)
    assert sorted(image[:5].tolist()) == list(range(5)) and rep.tolist() == [0] * 5 + [1] * 5 + [2] * 5
    gaps = np.diff(onset)
    assert gaps.tolist() == ([20, 20, 20, 120] * 4)[:14]


def test_cli_continuous_and_like(tmp_path, capsys):
    simulate(tmp_path / "sim", progress_bar=False, **SMALL)
    assert main(["simulate", "--continuous", "--like", str(tmp_path / "sim"), "--out", str(tmp_path / "live"),
                 "--reps-test", "2", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "6 test images x 2" in out and "neurodecode stream --model" in out
    assert (tmp_path / "live" / recording_name("01")).is_file()
    assert not (tmp_path / "live" / "stimuli.tsv").exists()  # --like: the stimuli are SIM_DIR's
    assert main(["simulate", "--modality", "eeg", "--continuous", "--out", str(tmp_path / "fresh"), "--subjects", "1",
                 "--train-concepts", "4", "--test-concepts", "3", "--exemplars", "1", "--reps-test", "1",
                 "--sfreq", "50", "--no-progress"]) == 0
    assert (tmp_path / "fresh" / "stimuli.tsv").is_file() and (tmp_path / "fresh" / "features.npz").is_file()
    capsys.readouterr()
    assert main(["simulate", "--continuous", "--like", str(tmp_path / "live"), "--out", str(tmp_path / "x")]) == 2
    assert "dataset.json" in capsys.readouterr().err
    assert main(["simulate", "--modality", "fmri", "--continuous", "--out", str(tmp_path / "y")]) == 2
    assert "EEG and MEG only" in capsys.readouterr().err


@pytest.mark.parametrize("bad", [dict(soa=0), dict(images="train")])
def test_bad_settings(tmp_path, bad):
    with pytest.raises(ValueError):
        simulate_continuous(tmp_path, progress_bar=False, **SMALL, **bad)
