"""``neurodecode evaluate``: files, numbers against brute force, figures, comparisons; time-resolved decoding."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import FEATURE_TEACHER
from PIL import Image

from neurodecode.cli import main
from neurodecode.cli.lightning import run_lightning_cli


def _train(tmp_path: Path, root: Path, name: str, **data) -> Path:
    cfg = {
        "seed_everything": 0, "test_after_fit": False,
        "trainer": {"max_epochs": 6, "accelerator": "cpu", "devices": 1, "logger": False,
                    "enable_progress_bar": False, "enable_model_summary": False,
                    "default_root_dir": str(tmp_path / name)},
        "model": {"class_path": "neurodecode.training.lit.AlignmentModule",
                  "init_args": {"encoder": {"class_path": "neurodecode.encoders.MLP",
                                            "init_args": {"hidden_sizes": [64], "dropout": 0.3}}, "lr": 3e-3}},
        "data": {"root": str(root), "teacher": FEATURE_TEACHER, "batch_size": 16, **data},
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    run_lightning_cli("fit", ["-c", str(path)])
    return tmp_path / name / "checkpoints" / "last.ckpt"


@pytest.fixture(scope="module")
def trained(tmp_path_factory, sim_eeg):
    tmp = tmp_path_factory.mktemp("evaluate")
    return tmp, _train(tmp, sim_eeg, "intra", subject="01")


@pytest.fixture(scope="module")
def evaluated(trained):
    """``neurodecode evaluate`` of the trained model, run once for the tests of this module."""
    tmp, ckpt = trained
    out = tmp / "eval"
    assert main(["evaluate", "--ckpt", str(ckpt), "--out", str(out), "--n-boot", "300", "--n-permutations", "200",
                 "--no-progress"]) == 0
    return out, json.loads((out / "metrics.json").read_text())


def test_evaluate_writes_every_file_with_correct_numbers(trained, evaluated):
    _, ckpt = trained
    out, m = evaluated
    # every figure named in the issue, and each opens as an image
    for name in ("retrieval_strip", "similarity_matrix", "accuracy_vs_k", "time_resolved", "per_subject", "ablation"):
        png = out / m["figures"][name]
        with Image.open(png) as im:
            assert im.size[0] > 300 and im.size[1] > 200
    report = (out / "report.md").read_text()
    assert "| sub-01 | 8 |" in report and "Transductive (CSLS" in report and "Simulator ceiling" in report
    # the numbers equal a brute-force computation from the model's own embeddings
    from neurodecode.reporting.evaluate import embed_set, load_for_evaluation

    model, dm, _ = load_for_evaluation(ckpt)
    dm.setup("test")
    ts = dm.sets["test"]
    emb = embed_set(model, ts.data, ts.subjects)
    img = np.asarray(dm.image_embeddings)[ts.stim_rows]
    e = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    i = img / np.linalg.norm(img, axis=1, keepdims=True)
    sim = e @ i.T
    hits = (sim.argmax(1) == np.arange(len(sim))).mean()
    r = m["subjects"]["01"]["retrieval"]["inductive"]["brain_to_image"]
    assert r["top1_full"] == pytest.approx(hits)
    # 2-way: the share of distractors scored below the true image
    two = np.mean([(sim[q, q] > np.delete(sim[q], q)).mean() for q in range(len(sim))])
    assert r["top1_2way"] == pytest.approx(two)
    # the protocol is recorded with the numbers
    p = m["protocol"]
    assert p["seed"] == 0 and p["n_draws"] == 100 and "averaged" in p["test_averaging"]
    assert m["data"]["teacher"] == FEATURE_TEACHER and m["model"]["checkpoint"] == str(ckpt)
    assert m["subjects"]["01"]["retrieval_monte_carlo"]["protocol"]["method"] == "monte_carlo"
    ci = m["subjects"]["01"]["confidence_intervals"]["top1_full"]
    assert ci["low"] <= ci["estimate"] <= ci["high"]
    assert 0 < m["subjects"]["01"]["permutation_test"]["p_value"] <= 1
    assert m["subjects"]["01"]["retrieval"]["transductive"]["method"] == "csls"
    # time-resolved curve and ablation cover the epoch and the regions
    tr = m["time_resolved"]["01"]
    assert len(tr["times"]) == len(tr["top1"]) > 10 and tr["times"][0] < 0.1 < 0.8 < tr["times"][-1]
    assert set(m["ablation"]["regions"]) == {"frontal", "central", "temporal", "parietal", "occipital"}
    assert m["noise_ceiling"]["01"]["split_half_reliability"]["n_repetitions"] == 4


def test_simulated_information_appears_after_onset(evaluated):
    _, m = evaluated
    tr = m["time_resolved"]["01"]
    t, a = np.asarray(tr["times"]), np.asarray(tr["top1"])
    # the simulated components sit between 80 and 550 ms: decoding peaks there, not at the end of the epoch
    assert 0.08 <= t[np.argmax(a)] <= 0.55
    assert a[(t > 0.1) & (t < 0.5)].mean() > a[t > 0.85].mean()


def test_compare_intra_and_loso_side_by_side(trained, sim_eeg, tmp_path):
    tmp, intra = trained
    loso = _train(tmp_path, sim_eeg, "loso", protocol="loso", subject="01")
    out = tmp_path / "cmp"
    assert main(["evaluate", "--ckpt", str(intra), "--ckpt", str(loso), "--out", str(out), "--no-time-resolved",
                 "--no-ablation", "--no-figures", "--n-boot", "200", "--n-permutations", "100", "--no-progress"]) == 0
    comp = json.loads((out / "comparison.json").read_text())
    assert comp["models"] == ["intra-sub01", "loso-sub01"]
    assert set(comp["per_subject"]["01"]) == {"intra-sub01", "loso-sub01"}
    assert comp["paired"] and comp["paired"][0]["subject"] == "01" and 0 <= comp["paired"][0]["p_value"] <= 1
    report = (out / "report.md").read_text()
    assert "Side by side" in report and "loso-sub01" in report
    loso_metrics = json.loads((out / "model2" / "metrics.json").read_text())
    assert loso_metrics["data"]["train_subjects"] == ["02"]


def test_evaluate_exported_folder_and_overrides(trained, sim_eeg, tmp_path):
    tmp, ckpt = trained
    from neurodecode.reporting.evaluate import evaluate
    from neurodecode.training.export import export_checkpoint

    exported = export_checkpoint(ckpt, tmp_path / "exported")
    moved = tmp_path / "moved_data"
    shutil.copytree(sim_eeg, moved)
    m = evaluate(exported, tmp_path / "ev", root=str(moved), time_resolved=False, ablation=False, figures=False,
                 n_boot=100, n_permutations=50, progress_bar=False)
    assert m["model"]["kind"] == "exported" and m["data"]["root"] == str(moved)
    with pytest.raises(FileNotFoundError, match="not found"):
        evaluate(tmp_path / "nothing.ckpt", tmp_path / "ev2")


def test_time_resolved_classification_on_synthetic_epochs():
    from neurodecode.evaluation.time_resolved import sliding_windows, time_resolved_classification

    rng = np.random.default_rng(0)
    times = np.arange(-0.1, 0.6, 0.01)
    y = np.repeat([0, 1], 200)
    x = rng.standard_normal((400, 3, len(times)))
    window = (times > 0.15) & (times < 0.25)
    x[y == 1, 0, :] += np.where(window, 0.8, 0.0)  # a class difference only between 150 and 250 ms
    res = time_resolved_classification(x, y, times, width=0.05, step=0.05, n_boot=200, progress_bar=False)
    t = np.asarray(res["times"])
    s = np.asarray(res["score"])
    sig = np.asarray(res["significant"])
    assert res["scoring"] == "roc_auc" and res["chance"] == 0.5
    assert s[(t > 0.15) & (t < 0.25)].min() > 0.8 and sig[(t > 0.15) & (t < 0.25)].all()
    assert np.abs(s[t < 0] - 0.5).max() < 0.1  # pure noise before onset scores near chance
    assert [w[:2] for w in sliding_windows(np.arange(10) / 10, 0.3, 0.2)] == [(0, 3), (2, 5), (4, 7), (6, 9)]
    with pytest.raises(ValueError, match="longer than the epoch"):
        sliding_windows(np.arange(5) / 10, 1.0, 0.1)


@pytest.mark.real_data
def test_n170_time_resolved_peaks_at_the_n170_and_is_at_chance_before_onset(shared_data, tmp_path):
    """Faces vs houses from 4 Muse channels: above chance around the N170 (130-200 ms), not before onset."""
    from neurodecode.evaluation.time_resolved import time_resolved_classification
    from neurodecode.io.prepared import open_prepared
    from neurodecode.readers.csv import prepare_csv

    prepare_csv(shared_data / "n170", tmp_path / "n170", event_map="1=face,2=house",
                images=shared_data / "n170" / "stimuli", subjects=["01"])
    st = open_prepared(tmp_path / "n170", subjects=["01"]).stores["01"]
    res = time_resolved_classification(st.get_signals(), st.stimulus_id, st.times, width=0.05, step=0.02,
                                       C=0.1, progress_bar=False)
    t, s = np.asarray(res["times"]), np.asarray(res["score"])
    lo = np.asarray(res["ci_low"])
    pre = t < 0
    assert pre.sum() >= 2
    assert not (lo[pre] > 0.5).any()  # no pre-stimulus window is above chance
    assert np.abs(s[pre] - 0.5).max() < 0.07
    n170 = (t >= 0.13) & (t <= 0.2)
    assert (lo[n170] > 0.5).any()  # a window of the N170 latency range is above chance
    assert s[n170].max() > 0.58


def test_report_and_metrics_say_what_each_number_is(trained, evaluated):
    """report.md: ceiling caveat, p at the permutation floor, no empty k-way columns, ablation CIs, training
    and data sizes, figure subjects; metrics.json: the time-resolved correction."""
    out, m = evaluated
    report = (out / "report.md").read_text()
    # the noise ceiling is another quantity, said next to it as in metrics.json
    assert m["noise_ceiling_note"].startswith("a ceiling of a different quantity")
    assert "Caveat: a ceiling of a different quantity: identification of the test responses" in report
    # a p at the floor 1/(n_perm + 1) reads "< 1/n_perm" (200 permutations here), never as a value
    p = m["subjects"]["01"]["permutation_test"]["p_value"]
    row = next(line for line in report.splitlines() if line.startswith("| sub-01 |"))
    if p <= 1 / 201:
        assert row.endswith("| < 0.005 |") and "0.00498" not in row
    # 8 candidates: no 10-, 50- or 200-way columns full of dashes; the note says why
    header = next(line for line in report.splitlines() if line.startswith("| subject |"))
    assert "2-way top-1" in header and "4-way top-1" in header and "200-way" not in header and "10-way" not in header
    assert "Not shown: 10-way, 50-way, 100-way, 200-way (n/a: 8 candidates at most" in report
    assert "–" not in row
    # ablation: labelled baseline row, intervals for every number
    assert "| all channels (no ablation) | " in report and "| none |" not in report
    abl = [line for line in report.splitlines() if " ch) | " in line]
    assert len(abl) == 5 and all(line.count("[") == 2 for line in abl)
    for v in m["ablation"]["regions"].values():
        assert v["top1_full_ci"]["low"] <= v["top1_full"] <= v["top1_full_ci"]["high"]
    # training length, selection, seeds and data sizes
    import torch

    raw = torch.load(trained[1], map_location="cpu", weights_only=False)
    tr = m["model"]["training"]
    done = raw["loops"]["fit_loop"]["epoch_progress"]["total"]["processed"]
    assert tr["epochs_run"] == done and tr["n_seeds"] == 1 and tr["selected_epoch"] == raw["epoch"]
    assert (f"- training: {done} epoch(s) run; evaluated epoch {raw['epoch']} (counting from 0), chosen as the "
            "checkpoint given (last.ckpt; the best val/loss was") in report
    assert "1 seed (seed 0)" in report
    sz = m["data_sizes"]
    assert sz["test_samples"] == 8 and sz["test_stimuli"] == 8 and sz["train_subjects"] == ["01"]
    assert sz["train_samples"] + sz["val_samples"] > 0
    assert (f"- data sizes: train {sz['train_samples']} single trials of {sz['train_stimuli']} stimuli; validation "
            f"{sz['val_samples']}") in report and "1 training subject(s) (01), 1 test subject(s)" in report
    # time-resolved: the correction used, the band called uncorrected, pre-stimulus windows as a sanity check
    tr = m["time_resolved"]["01"]
    assert tr["significance"]["correction"] == "cluster" and tr["protocol"]["correction"] == "cluster"
    assert "uncorrected" in tr["protocol"]["band"]
    assert "Significant windows: cluster-based permutation test over adjacent windows (MNE" in report
    assert "Pre-stimulus windows are a sanity check" in report
    t = np.asarray(tr["times"])
    if (t < 0).any():  # simulated information starts after onset: no pre-stimulus window may be flagged
        assert not np.asarray(tr["significant"])[t < 0].any() and "pre-stimulus windows significant: 0 of" in report
    else:
        assert f"no pre-stimulus window to check (the first window is centred at {t[0] * 1000:.0f} ms)" in report
    assert tr["protocol"]["train_averaging"].startswith("responses sharing a stimulus")
    # figures: which subjects they show
    assert m["figure_subjects"]["similarity_matrix"] == "sub-01" and "Subjects in the figures:" in report


def _planted(seed: int, planted: bool, n_train: int = 160, n_test: int = 40):
    rng = np.random.default_rng(seed)
    times = np.round(np.arange(-0.2, 0.6, 0.01), 3)
    y = rng.standard_normal((n_train + n_test, 8))
    mix = rng.standard_normal((8, 6))
    x = rng.standard_normal((n_train + n_test, 6, len(times)))
    if planted:  # information only between 150 and 350 ms
        x[:, :, (times > 0.15) & (times < 0.35)] += 1.5 * (y @ mix)[:, :, None]
    return x[:n_train], y[:n_train], x[n_train:], y[n_train:], times


@pytest.mark.parametrize("correction", ["cluster", "fdr"])
def test_time_resolved_retrieval_controls_the_error_across_windows(correction):
    from neurodecode.evaluation.time_resolved import time_resolved_retrieval

    kw = dict(width=0.05, step=0.02, n_boot=200, correction=correction, progress_bar=False, seed=1)
    tx, ty, ex, ey, times = _planted(0, planted=False)
    noise = time_resolved_retrieval(tx, ty, ex, ey, np.arange(len(ey)), times, **kw)
    assert not any(noise["significant"])  # pure noise: no window flagged
    assert noise["significance"]["correction"] == correction
    tx, ty, ex, ey, times = _planted(0, planted=True)
    res = time_resolved_retrieval(tx, ty, ex, ey, np.arange(len(ey)), times, **kw)
    t, sig = np.asarray(res["times"]), np.asarray(res["significant"])
    assert sig[(t > 0.18) & (t < 0.32)].all()  # the planted effect is found ...
    assert not sig[(t < 0.1) | (t > 0.42)].any()  # ... and nothing far from it
    if correction == "cluster":
        assert "permutation_cluster_1samp_test" in res["significance"]["method"]
        assert [c for c in res["significance"]["clusters"] if c["p_value"] < 0.05]


def test_fast_ridge_equals_scikit_learn_ridge_cv():
    """One decomposition per window for every alpha and every target: the same fit as StandardScaler + RidgeCV."""
    from sklearn.linear_model import RidgeCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from neurodecode.evaluation.ranking import similarity_matrix
    from neurodecode.evaluation.retrieval import kway_hits
    from neurodecode.evaluation.time_resolved import (
        average_groups,
        ridge_loo,
        ridge_predict,
        sliding_windows,
        time_resolved_retrieval,
    )

    rng = np.random.default_rng(3)
    alphas = np.logspace(-1, 6, 15)
    for n, p in ((40, 120), (200, 30)):  # fewer samples than features (X X^T) and more (X^T X)
        x = rng.standard_normal((n, p)) * rng.uniform(0.5, 3, p) + 2
        y = x @ rng.standard_normal((p, 5)) * 0.1 + rng.standard_normal((n, 5)) * 3
        xt = rng.standard_normal((10, p)) + 2
        ref = make_pipeline(StandardScaler(), RidgeCV(alphas=alphas, alpha_per_target=False)).fit(x, y)
        fit = ridge_loo(x, y, alphas)
        assert fit["alpha"] == ref[-1].alpha_
        np.testing.assert_allclose(ridge_predict(fit, xt), ref.predict(xt), atol=1e-6, rtol=0)
        assert -fit["loo_mse"].min() == pytest.approx(ref[-1].best_score_, abs=1e-6)
    # the whole time-resolved curve equals the straightforward per-window scikit-learn ridge
    tx, ty, ex, ey, times = _planted(1, planted=True, n_train=60, n_test=20)
    res = time_resolved_retrieval(tx, ty, ex, ey, np.arange(20), times, width=0.05, step=0.05, n_boot=0,
                                  progress_bar=False)
    for i, (a, b, _) in enumerate(sliding_windows(times, 0.05, 0.05)):
        wtx, wex = (z[:, :, a:b].reshape(len(z), -1) for z in (tx, ex))
        ref = make_pipeline(StandardScaler(), RidgeCV(alphas=alphas, alpha_per_target=False)).fit(wtx, ty)
        assert res["alpha"][i] == ref[-1].alpha_
        hits = kway_hits(similarity_matrix(ref.predict(wex), ey), 20, tops=[1])[0]
        assert res["top1"][i] == pytest.approx(float(np.mean(hits)), abs=1e-6)
    # averaging repetitions first: the mean of each group's rows
    xa, ya = average_groups(np.arange(12.0).reshape(4, 3), np.arange(8.0).reshape(4, 2), [("01", 1), ("01", 1),
                                                                                          ("01", 0), ("02", 1)])
    np.testing.assert_allclose(xa, [[6, 7, 8], [1.5, 2.5, 3.5], [9, 10, 11]])
    np.testing.assert_allclose(ya, [[4, 5], [1, 2], [6, 7]])
