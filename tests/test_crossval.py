"""Trial-level cross-validation of alignment models (neurodecode.training.crossval), on small
synthetic data made here: two categories whose trials carry a category-specific evoked waveform."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from neurodecode.training import crossval as cv
from neurodecode.training.crossval import (
    crossval_alignment,
    crossval_logistic,
    fold_metrics,
    inner_split,
    make_folds,
)


def _data(n: int = 160, n_chans: int = 4, n_times: int = 32, amplitude: float = 1.0, seed: int = 0):
    """Two categories; category c adds ``amplitude`` x a fixed waveform on every channel, plus unit noise."""
    rng = np.random.default_rng(seed)
    y = np.repeat([0, 1], n // 2)
    rng.shuffle(y)
    wave = np.sin(np.linspace(0, 3 * np.pi, n_times))[None, :] * rng.standard_normal((n_chans, 1))
    x = rng.standard_normal((n, n_chans, n_times)) + amplitude * (2 * y - 1)[:, None, None] * wave[None]
    # an offset and scale in "volts", so that the per-fold normalisation matters
    x = 1e-5 * x + 3e-5
    targets = rng.standard_normal((2, 16)) + 0.5  # two correlated "teacher" embeddings
    return x.astype(np.float32), y, targets.astype(np.float32)


FAST = dict(max_epochs=6, patience=None, batch_size=32, lr=3e-3, n_threads=1)
MLP = dict(encoder="mlp", encoder_kwargs={"hidden_sizes": [32], "dropout": 0.1})


# --------------------------------------------------------------------------------------------------
# folds and metrics
# --------------------------------------------------------------------------------------------------
def test_make_folds_are_stratified_disjoint_and_cover_every_trial():
    y = np.repeat([0, 1], [60, 40])
    folds = make_folds(y, 5, seed=3)
    assert len(folds) == 5
    tested = np.concatenate([te for _, te in folds])
    np.testing.assert_array_equal(np.sort(tested), np.arange(100))
    for tr, te in folds:
        assert not set(tr) & set(te) and len(tr) + len(te) == 100
        assert np.bincount(y[te]).tolist() == [12, 8]  # the class ratio of every test fold
    # the seed changes the partition, the same seed repeats it
    assert any(not np.array_equal(a[1], b[1]) for a, b in zip(folds, make_folds(y, 5, seed=4), strict=True))
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(folds, make_folds(y, 5, seed=3), strict=True))


def test_make_folds_with_groups_never_splits_a_group():
    y = np.tile([0, 1], 60)
    groups = np.repeat(np.arange(6), 20)
    for tr, te in make_folds(y, 3, groups=groups):
        assert not set(groups[tr]) & set(groups[te])
    with pytest.raises(ValueError, match="fewer than n_splits=8"):
        make_folds(y, 8, groups=groups)
    with pytest.raises(ValueError, match="at least 2 classes"):
        make_folds(np.zeros(10, int), 2)
    with pytest.raises(TypeError, match="integer target rows"):
        make_folds(np.array(["face", "house"] * 5), 2)
    with pytest.raises(ValueError, match="fewer than n_splits"):
        make_folds(np.r_[np.zeros(10, int), [1, 1]], 5)


def test_inner_split_is_stratified_and_disjoint():
    y = np.repeat([0, 1], 50)
    fit, val = inner_split(y, 0.2, seed=0)
    assert len(val) == 20 and np.bincount(y[val]).tolist() == [10, 10]
    assert not set(fit) & set(val) and len(fit) + len(val) == 100
    groups = np.repeat(np.arange(10), 10)
    fit, val = inner_split(y, 0.2, groups=groups, seed=0)
    assert not set(groups[fit]) & set(groups[val])
    with pytest.raises(ValueError, match="val_fraction"):
        inner_split(y, 1.5)


def test_fold_metrics_two_and_more_classes():
    y = np.array([0, 0, 1, 1])
    s = np.array([[0.9, 0.1], [0.2, 0.3], [0.1, 0.8], [0.5, 0.4]])
    m = fold_metrics(y, s)
    # decisions s1 - s0 = [-0.8, 0.1, 0.7, -0.1]: 3 of 4 (pos, neg) pairs ordered correctly
    assert m["roc_auc"] == pytest.approx(0.75) and m["accuracy"] == pytest.approx(0.5)
    y3 = np.array([0, 1, 2, 0, 1, 2])
    assert fold_metrics(y3, np.eye(3)[y3])["roc_auc"] == pytest.approx(1.0)


def test_clip_and_softclip_agree_when_targets_are_exact_duplicates():
    """The reason the loss choice between CLIP and SoftCLIP does not matter for 2 categories (docstring)."""
    from neurodecode.losses import clip_loss, soft_clip_loss

    g = torch.Generator().manual_seed(0)
    t2 = torch.randn(2, 16, generator=g)
    t = t2[torch.randint(0, 2, (24,), generator=g)]
    b = torch.randn(24, 16, generator=g, requires_grad=True)
    scale = torch.tensor(14.0)
    l1 = clip_loss(b, t, scale)
    (g1,) = torch.autograd.grad(l1, b)
    l2 = soft_clip_loss(b, t, scale, 1e3)  # sharp soft targets: weight only on the exact duplicates
    (g2,) = torch.autograd.grad(l2, b)
    torch.testing.assert_close(l1, l2, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(g1, g2, rtol=1e-4, atol=1e-6)
    # distinct targets: the two losses differ
    t_distinct = torch.randn(24, 16, generator=g) * 0.1 + t
    assert not torch.allclose(clip_loss(b, t_distinct, scale), soft_clip_loss(b, t_distinct, scale, 14.0))


# --------------------------------------------------------------------------------------------------
# the linear baseline
# --------------------------------------------------------------------------------------------------
def test_logistic_baseline_decodes_signal_and_not_noise():
    x, y, _ = _data(amplitude=0.5)
    folds = make_folds(y, 4, seed=0)
    res = crossval_logistic(x, y, folds=folds, C=None, Cs=(1e-3, 1e-1), inner_splits=3)
    assert res.roc_auc["mean"] > 0.9 and res.roc_auc["n"] == 4
    assert all(f["C"] in (1e-3, 1e-1) and len(f["inner_roc_auc"]) == 2 for f in res.folds)
    assert res.decision.shape == (len(y),) and (res.fold_of >= 0).all()
    # decision is oriented towards `positive` (class 0 here): class-0 trials score higher
    assert res.decision[y == 0].mean() > res.decision[y == 1].mean()
    noise = crossval_logistic(x, np.random.default_rng(1).permutation(y), folds=folds, C=0.01)
    assert abs(noise.pooled_roc_auc - 0.5) < 0.15


# --------------------------------------------------------------------------------------------------
# the alignment model
# --------------------------------------------------------------------------------------------------
def test_alignment_crossval_decodes_categories_and_reports_per_fold():
    x, y, targets = _data()
    threads = torch.get_num_threads()
    res = crossval_alignment(x, y, targets, n_splits=4, seed=0, **MLP, **FAST)
    assert torch.get_num_threads() == threads  # restored
    assert res.roc_auc["mean"] > 0.9 and res.accuracy["mean"] > 0.8
    assert res.scores.shape == (len(y), 2) and np.isfinite(res.scores).all()
    assert np.abs(res.scores).max() <= 1.0 + 1e-9  # cosine similarities
    np.testing.assert_allclose(res.decision, res.scores[:, 0] - res.scores[:, 1])
    assert res.pooled_roc_auc > 0.9
    for f in res.folds:
        assert f["n_train"] + f["n_val"] + f["n_test"] == len(y)
        assert f["n_val"] == pytest.approx(0.15 * (len(y) - f["n_test"]), abs=1)
        assert 0 <= f["best_epoch"] < FAST["max_epochs"] and len(f["history"]) == FAST["max_epochs"]
        assert f["val_score"] == pytest.approx(max(h["val_auc"] for h in f["history"]))
    s = res.summary()
    assert s["method"] == "alignment:mlp" and s["config"]["loss"]["contrastive"] == "softclip"
    import json

    json.dumps(s)  # JSON-able
    assert "alignment:mlp" in repr(res)


def test_alignment_crossval_is_deterministic_and_seed_dependent():
    x, y, targets = _data(n=80)
    kw = dict(n_splits=2, **MLP, **{**FAST, "max_epochs": 3})
    a = crossval_alignment(x, y, targets, seed=0, **kw)
    b = crossval_alignment(x, y, targets, seed=0, **kw)
    np.testing.assert_array_equal(a.scores, b.scores)
    c = crossval_alignment(x, y, targets, seed=1, **kw)
    assert not np.array_equal(a.scores, c.scores)


def test_alignment_crossval_fits_everything_on_training_trials_only(monkeypatch):
    """Normalisation statistics and the validation split come from the training part of each fold."""
    x, y, targets = _data(n=80)
    folds = make_folds(y, 2, seed=0)
    seen_stats, seen_inner = [], []
    real_stats, real_inner = cv._input_stats, cv.inner_split

    def spy_stats(a):
        seen_stats.append(a.copy())
        return real_stats(a)

    def spy_inner(labels, val_fraction, **kw):
        fit, val = real_inner(labels, val_fraction, **kw)
        seen_inner.append((len(labels), fit, val))
        return fit, val

    monkeypatch.setattr(cv, "_input_stats", spy_stats)
    monkeypatch.setattr(cv, "inner_split", spy_inner)
    crossval_alignment(x, y, targets, folds=folds, **MLP, **{**FAST, "max_epochs": 2})
    assert len(seen_stats) == 2
    for (tr, _), got, (n_labels, fit, val) in zip(folds, seen_stats, seen_inner, strict=True):
        np.testing.assert_array_equal(got, x[tr])  # exactly the training trials, never the test fold
        assert n_labels == len(tr) and set(fit) | set(val) == set(range(len(tr)))


def test_alignment_crossval_finds_no_signal_in_noise():
    """Labels shuffled against the data: cross-validated AUC must stay near chance (no leakage)."""
    x, y, targets = _data(n=160, amplitude=0.0, seed=2)
    res = crossval_alignment(x, y, targets, n_splits=4, **MLP, **FAST)
    assert abs(res.pooled_roc_auc - 0.5) < 0.12 and abs(res.roc_auc["mean"] - 0.5) < 0.12


def test_alignment_crossval_with_ridge_and_a_callable_encoder():
    x, y, targets = _data(amplitude=0.5)
    res = crossval_alignment(x, y, targets, encoder="ridge", n_splits=4, n_threads=1)
    assert res.roc_auc["mean"] > 0.9
    assert all(f["closed_form"] and f["n_val"] == 0 and f["alpha"] > 0 for f in res.folds)
    built = []

    class Linear(torch.nn.Module):
        def __init__(self, n_in, n_out):
            super().__init__()
            self.lin = torch.nn.Linear(n_in, n_out)

        def forward(self, x, subject=None):
            return self.lin(x.flatten(1))

    def linear(n_chans, n_times, n_outputs, **kw):
        built.append((n_chans, n_times, n_outputs, kw.get("sfreq")))
        return Linear(n_chans * n_times, n_outputs)

    res2 = crossval_alignment(x, y, targets, encoder=linear, sfreq=64.0, n_splits=2,
                              loss_kwargs={"contrastive": "softclip"}, **FAST)
    assert built == [(4, 32, 16, 64.0)] * 2 and res2.method == "alignment:linear"
    assert res2.roc_auc["mean"] > 0.8


def test_alignment_crossval_averages_an_ensemble_and_runs_it_in_parallel():
    x, y, targets = _data(n=80)
    kw = dict(n_splits=2, n_models=2, **MLP, **{**FAST, "max_epochs": 2})
    res = crossval_alignment(x, y, targets, **kw)
    assert all(len(f["models"]) == 2 for f in res.folds)
    one = crossval_alignment(x, y, targets, **{**kw, "n_models": 1})
    assert not np.allclose(res.scores, one.scores)  # the average of two models, not one of them
    par = crossval_alignment(x, y, targets, **{**kw, "n_jobs": 2})
    np.testing.assert_allclose(par.scores, res.scores, rtol=1e-5, atol=1e-6)  # seeded per fit


def test_alignment_crossval_errors_name_the_problem():
    x, y, targets = _data(n=40)
    with pytest.raises(ValueError, match="40 trials"):
        crossval_alignment(x, y[:-1], targets)
    with pytest.raises(ValueError, match="targets has only 2 rows"):
        crossval_alignment(x, np.where(y == 1, 2, 0), targets)
    with pytest.raises(ValueError, match="n_times"):
        crossval_alignment(x[:, 0, 0], y, targets)
    with pytest.raises(KeyError, match="Unknown encoder 'nope'"):
        crossval_alignment(x, y, targets, encoder="nope", n_splits=2)
    with pytest.raises(ValueError, match="pick a time-series encoder"):
        crossval_alignment(x, y, targets, encoder="fmri_mlp", n_splits=2)
    with pytest.raises(ValueError, match="'select'"):
        crossval_alignment(x, y, targets, select="accuracy")
    with pytest.raises(ValueError, match="n_threads"):
        crossval_alignment(x, y, targets, n_threads=0)
    with pytest.raises(ValueError, match="n_models must be an integer >= 1"):
        crossval_alignment(x, y, targets, n_models=0)
    with pytest.raises(TypeError, match="registry name"):
        crossval_alignment(x, y, targets, encoder=3)
    bad = x.copy()
    bad[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        crossval_alignment(bad, y, targets)


def test_alignment_crossval_shows_progress_with_each_folds_auc(capsys, monkeypatch):
    """A bar over folds x models, on by default, with every finished fold's test AUC and the running mean."""
    monkeypatch.delenv("NEURODECODE_NO_PROGRESS", raising=False)
    x, y, targets = _data(amplitude=0.5)
    res = crossval_alignment(x, y, targets, encoder="ridge", n_splits=3, n_models=2, n_threads=1)
    err = capsys.readouterr().err
    assert "crossval ridge" in err and "6/6" in err
    last = res.folds[-1]["roc_auc"]
    assert f"auc={last:.3f}" in err and "fold=2" in err and f"mean={res.roc_auc['mean']:.3f}" in err
    crossval_alignment(x, y, targets, encoder="ridge", n_splits=3, n_threads=1, progress_bar=False)
    assert "crossval ridge" not in capsys.readouterr().err
    monkeypatch.setenv("NEURODECODE_NO_PROGRESS", "1")
    crossval_alignment(x, y, targets, encoder="ridge", n_splits=3, n_threads=1)
    assert "crossval ridge" not in capsys.readouterr().err


def test_load_trials_decimates_and_checks_the_rate():
    from neurodecode.training.trials import decimation_factor

    assert decimation_factor(256.0, 128) == 2 and decimation_factor(256.0, None) == 1
    assert decimation_factor(256.0, 256.0) == 1
    with pytest.raises(ValueError, match=r"sfreq=100 Hz cannot be reached from the recording's 256 Hz.*128, 85.3333, 64"):
        decimation_factor(256.0, 100)
