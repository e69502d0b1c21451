"""Preprocessing: the streamed epoching equals MNE's pipeline; batched MVNN equals a per-condition loop."""

from __future__ import annotations

import mne
import numpy as np
import pytest
import scipy.linalg
from sklearn.covariance import LedoitWolf
from sklearn.preprocessing import StandardScaler
from sklearn.utils import shuffle

from neurodecode.preprocessing.epoching import (
    band_pass,
    epoch_operator,
    epoch_with_mne,
    epochs_from_array,
    find_stim_events,
    iter_epochs,
    select_repetitions,
)
from neurodecode.preprocessing.mvnn import MVNN, inverse_sqrt, mvnn, mvnn_covariance, shrunk_covariance_sum


# --------------------------------------------------------------------------------------------------
# references, written out the straightforward way
# --------------------------------------------------------------------------------------------------
def lw_cov(x: np.ndarray) -> np.ndarray:
    """Ledoit-Wolf on standardised features, rescaled: what the THINGS-EEG2/NICE scripts use."""
    sc = StandardScaler().fit(x)
    s = LedoitWolf().fit(sc.transform(x)).covariance_
    return sc.scale_[:, None] * s * sc.scale_[None, :]


def reference_mvnn_cov(x: np.ndarray, mode: str) -> np.ndarray:
    """Per-condition loop: average over time points (or repetitions), then over conditions."""
    per_cond = []
    for cond in x:  # (n_rep, n_chans, n_times)
        if mode == "time":
            per_cond.append(np.mean([lw_cov(cond[:, :, t]) for t in range(cond.shape[2])], axis=0))
        else:
            per_cond.append(np.mean([lw_cov(cond[r].T) for r in range(cond.shape[0])], axis=0))
    return np.mean(per_cond, axis=0)


def noisy(shape, seed=0, scale=1e-5, mix=0.4):
    """Sensor noise ``(n_cond, n_rep, n_chans, n_times)`` with a correlated, channel-mixing covariance."""
    rng = np.random.default_rng(seed)
    p = shape[2]
    mix = np.eye(p) + mix * rng.standard_normal((p, p))
    return scale * np.einsum("pq,crqt->crpt", mix, rng.standard_normal(shape))


# --------------------------------------------------------------------------------------------------
# MVNN
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["epochs", "time"])
def test_mvnn_equals_per_condition_reference(mode):
    x = noisy((9, 3, 7, 30))
    ref = reference_mvnn_cov(x, mode)
    model = MVNN(mode, block_size=4).fit(x)
    np.testing.assert_allclose(model.covariance_, ref, rtol=1e-10, atol=0)
    w_ref = scipy.linalg.fractional_matrix_power(ref, -0.5)
    np.testing.assert_allclose(model.whitener_, w_ref, rtol=1e-8, atol=1e-8 * np.abs(w_ref).max())
    # whitening as the reference scripts write it: (x.swapaxes(-1, -2) @ W).swapaxes(-1, -2)
    want = (x.swapaxes(-1, -2) @ w_ref).swapaxes(-1, -2)
    np.testing.assert_allclose(model.transform(x), want, rtol=1e-8, atol=1e-8 * np.abs(want).max())


def test_mvnn_matches_sklearn_private_cov_used_by_the_reference_scripts():
    from sklearn.discriminant_analysis import _cov

    x = noisy((5, 2, 6, 20), seed=3)
    ref = np.mean([np.mean([_cov(c[:, :, t], shrinkage="auto") for t in range(c.shape[2])], axis=0) for c in x],
                  axis=0)
    np.testing.assert_allclose(mvnn_covariance(x, "time"), ref, rtol=1e-10)


@pytest.mark.parametrize(("n", "p"), [(2, 9), (5, 5), (40, 6)])
@pytest.mark.parametrize("shrinkage", ["auto", None, 0.25])
def test_shrunk_covariance_sum(n, p, shrinkage):
    from sklearn.covariance import empirical_covariance, shrunk_covariance

    rng = np.random.default_rng(n * p)
    X = rng.standard_normal((6, n, p)) @ rng.standard_normal((p, p)) + 3.0
    if shrinkage == "auto":
        ref = sum(lw_cov(x) for x in X)
    elif shrinkage is None:
        ref = sum(empirical_covariance(x) for x in X)
    else:
        ref = sum(shrunk_covariance(empirical_covariance(x), shrinkage) for x in X)
    np.testing.assert_allclose(shrunk_covariance_sum(X, shrinkage), ref, rtol=1e-10, atol=1e-12)


def test_constant_channel_is_handled_like_sklearn():
    rng = np.random.default_rng(1)
    X = rng.standard_normal((4, 10, 5))
    X[:, :, 2] = 7.0  # a flat channel: StandardScaler keeps scale 1
    np.testing.assert_allclose(shrunk_covariance_sum(X, "auto"), sum(lw_cov(x) for x in X), rtol=1e-10,
                               atol=1e-12)


@pytest.mark.parametrize("mode", ["epochs", "time"])
def test_whitened_training_data_have_identity_covariance(mode):
    x = noisy((12, 4, 6, 400), seed=2)
    # with the empirical covariance, whitening is exact
    white = MVNN(mode, shrinkage=None).fit_transform(x)
    np.testing.assert_allclose(mvnn_covariance(white, mode, None), np.eye(6), atol=1e-10)
    # with Ledoit-Wolf shrinkage (towards the diagonal, which regularises weak directions), close to
    # identity when there are many samples per estimate and the covariance is well conditioned
    shape = (12, 4, 6, 2000) if mode == "epochs" else (6, 1000, 6, 8)
    x = noisy(shape, seed=2, scale=1.0, mix=0.2)
    white = MVNN(mode).fit_transform(x)
    cov = mvnn_covariance(white, mode, None)
    assert np.abs(cov - np.eye(6)).max() < 0.05
    assert np.abs(mvnn_covariance(x, mode, None) - np.eye(6)).max() > 0.2  # the input was not white


def test_partial_fit_in_blocks_equals_fit_and_fit_on_train_only():
    train, test = noisy((10, 2, 5, 25), seed=4), noisy((3, 20, 5, 25), seed=5) * 3
    full = MVNN().fit(train)
    part = MVNN()
    for s in (slice(0, 3), slice(3, 4), slice(4, 10)):
        part.partial_fit(train[s])
    np.testing.assert_allclose(part.covariance_, full.covariance_, rtol=1e-12)
    w_train, w_test = mvnn(train, test)
    np.testing.assert_allclose(w_test, full.transform(test), rtol=1e-12)  # test never enters the fit
    _, w_test_both = mvnn(train, test, fit_on="train+test")
    cov = (mvnn_covariance(train) + mvnn_covariance(test)) / 2
    want = MVNN.from_covariance(cov).transform(test)
    np.testing.assert_allclose(w_test_both, want, rtol=1e-12)
    assert not np.allclose(w_test_both, w_test)


def test_mvnn_float32_in_place_and_errors():
    x = noisy((6, 2, 4, 30)).astype(np.float32)
    model = MVNN().fit(x)
    want = model.transform(x.astype(np.float64))
    out = model.transform(x, out=x)
    assert out is x and x.dtype == np.float32
    np.testing.assert_allclose(x, want, rtol=1e-4, atol=1e-5 * np.abs(want).max())
    with pytest.raises(ValueError, match="mode='time' .* needs at least 2"):
        MVNN("time").fit(x[:, :1])
    with pytest.raises(ValueError, match="Allowed values are 'epochs', 'time'"):
        MVNN("trials")
    with pytest.raises(ValueError, match="has 3 channels on axis -2 but the MVNN was fitted on 4"):
        model.transform(x[:, :, :3])
    with pytest.raises(ValueError, match="not positive definite"):
        inverse_sqrt(np.diag([1.0, 0.0]))


# --------------------------------------------------------------------------------------------------
# epoching
# --------------------------------------------------------------------------------------------------
def _raw(n_samples=40_000, seed=0):
    rng = np.random.default_rng(seed)
    data = rng.standard_normal((4, n_samples)).cumsum(axis=1) * 1e-7 + rng.uniform(-0.01, 0.01, (4, 1))
    stim = np.zeros(n_samples)
    onsets = np.arange(300, n_samples - 1300, 200)
    onsets = np.concatenate([onsets[:60], onsets[150:]])  # a long pause in the middle
    stim[onsets] = rng.integers(1, 9, len(onsets))
    info = mne.create_info(["a", "b", "c", "d", "stim"], 1000.0, ["eeg"] * 4 + ["stim"])
    return mne.io.RawArray(np.vstack([data, stim]), info, verbose=False), data, stim


@pytest.mark.parametrize(("sfreq", "crop", "baseline"), [(250.0, (0.0, None), (None, 0)),
                                                        (100.0, (-0.1, 0.5), (-0.1, 0.0)),
                                                        (None, (None, None), None)])
def test_streamed_epochs_equal_mne(sfreq, crop, baseline):
    raw, data, stim = _raw()
    events = find_stim_events(stim, 1000.0, verbose=False)
    np.testing.assert_array_equal(events, mne.find_events(raw, verbose=False))
    epochs = epoch_with_mne(raw.copy().pick(["a", "b", "c", "d"]), events, tmin=-0.2, tmax=1.0,
                            baseline=baseline, sfreq=sfreq, crop=crop, verbose=False)
    want = epochs.get_data()
    op = epoch_operator(1000.0, -0.2, 1.0, baseline=baseline, resample_sfreq=sfreq, crop=crop)
    np.testing.assert_allclose(op.times, epochs.times, atol=1e-12)
    got = epochs_from_array(data, events[:, 0], op, block_size=16, dtype=np.float64)
    scale = np.abs(want).max()
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-10 * scale)
    got32 = epochs_from_array(data, events[:, 0], op, block_size=7)
    assert got32.dtype == np.float32
    np.testing.assert_allclose(got32, want, rtol=0, atol=1e-4 * scale)


def test_iter_epochs_order_picks_and_bounds():
    _, data, stim = _raw()
    events = find_stim_events(stim, 1000.0, verbose=False)
    op = epoch_operator(1000.0, -0.2, 1.0, resample_sfreq=250.0, crop=(0.0, None))
    onsets = events[::-1, 0][:50]  # any order
    full = epochs_from_array(data, onsets, op, dtype=np.float64)
    seen = np.zeros(len(onsets), bool)
    for pos, block in iter_epochs(data, onsets, op, picks=[3, 1], block_size=8, dtype=np.float64):
        assert len(pos) <= 8
        np.testing.assert_allclose(block, full[pos][:, [3, 1]], rtol=1e-10, atol=1e-12 * np.abs(full).max())
        seen[pos] = True
    assert seen.all()
    with pytest.raises(ValueError, match="extend beyond the data"):
        next(iter_epochs(data, np.array([100]), op))


def test_select_repetitions_equals_sklearn_shuffle():
    rng = np.random.default_rng(0)
    codes = np.concatenate([np.repeat(np.arange(1, 30), 2), np.repeat([40, 41], 5), [7]])
    rng.shuffle(codes)
    conds, index = select_repetitions(codes, 2, seed=20200220)
    assert conds.tolist() == sorted(set(codes.tolist()))
    for c, idx in zip(conds, index, strict=True):
        want = shuffle(np.where(codes == c)[0], random_state=20200220, n_samples=2)
        np.testing.assert_array_equal(idx, want)
    _, first = select_repetitions(codes, 2, seed=None)
    np.testing.assert_array_equal(first[conds.tolist().index(40)], np.where(codes == 40)[0][:2])
    with pytest.raises(ValueError, match="fewer than 3 trials .* Lower the number"):
        select_repetitions(codes, 3, seed=1)


def test_band_pass_attenuates_out_of_band():
    sf = 500.0
    t = np.arange(5000) / sf
    x = np.vstack([np.sin(2 * np.pi * 10 * t) + np.sin(2 * np.pi * 80 * t)])
    y = band_pass(x, sf, 1.0, 30.0, verbose=False)
    spec = np.abs(np.fft.rfft(y[0, 1000:-1000]))
    freqs = np.fft.rfftfreq(3000, 1 / sf)
    assert spec[np.argmin(np.abs(freqs - 80))] < 0.01 * spec[np.argmin(np.abs(freqs - 10))]
    assert band_pass(x, sf, None, None) is not x
