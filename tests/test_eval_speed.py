"""The fast evaluation path computes what the plain one does (numbers compared, never timings)."""

from __future__ import annotations

import numpy as np
import pytest
import torch


def _data(seed: int, n_train: int = 90, n_chans: int = 6, n_times: int = 40, dim: int = 5):
    rng = np.random.default_rng(seed)
    times = np.arange(n_times) / 100.0
    mix = rng.standard_normal((dim, n_chans))
    bump = np.exp(-0.5 * ((times - 0.2) / 0.05) ** 2)

    def resp(y):
        return (rng.standard_normal((len(y), n_chans, n_times)) + (y @ mix)[:, :, None] * bump).astype(np.float32)

    ty = rng.standard_normal((n_train, dim))
    tests = {}
    for name in ("01", "02"):
        cand = rng.standard_normal((15, dim)).astype(np.float32)
        tests[name] = (resp(cand), cand, np.arange(15))
    return resp(ty), ty, tests, times


def test_windows_fitted_side_by_side_equal_the_plain_loop():
    from sklearn.linear_model import RidgeCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from neurodecode.evaluation.time_resolved import sliding_windows
    from neurodecode.evaluation.window_ridge import fit_windows, ridge_loo, ridge_predict, window_features

    tx, ty, tests, times = _data(0)
    test_x = [t[0] for t in tests.values()]
    alphas = np.logspace(-1, 6, 15)
    # 5-sample windows: 30 features < 90 samples (X^T X); 20-sample windows: 120 > 90 (X X^T)
    for width in (0.05, 0.2):
        wins = sliding_windows(times, width, 0.03)
        fast = list(fit_windows(tx, ty, wins, alphas, test_x, n_jobs=3, blas_threads=1))
        plain = []
        for a, b, _ in wins:  # the straightforward loop, the libraries' threads
            fit = ridge_loo(window_features(tx, a, b), ty, alphas)
            plain.append((fit["alpha"], [ridge_predict(fit, window_features(t, a, b)) for t in test_x]))
        assert len(fast) == len(plain) == len(wins)
        for (fa, fp), (pa, pp) in zip(fast, plain, strict=True):
            assert fa == pa
            for u, v in zip(fp, pp, strict=True):
                np.testing.assert_allclose(u, v, rtol=1e-10, atol=1e-12)
        # and the textbook model, in the first and the last window
        for i in (0, -1):
            a, b, _ = wins[i]
            ref = make_pipeline(StandardScaler(), RidgeCV(alphas=alphas, alpha_per_target=False))
            ref.fit(window_features(tx, a, b), ty)
            assert fast[i][0] == ref[-1].alpha_
            np.testing.assert_allclose(fast[i][1][0], ref.predict(window_features(test_x[0], a, b)), atol=1e-6)


def test_time_resolved_fast_path_gives_the_plain_numbers():
    from neurodecode.evaluation.threads import thread_limits
    from neurodecode.evaluation.time_resolved import time_resolved_retrieval_sets

    tx, ty, tests, times = _data(1)
    kw = dict(width=0.05, step=0.02, n_boot=200, n_permutations=200, progress_bar=False, seed=2)
    plain = time_resolved_retrieval_sets(tx, ty, tests, times, n_jobs=1, blas_threads=None, **kw)
    with thread_limits(1):
        fast = time_resolved_retrieval_sets(tx, ty, tests, times, n_jobs=2, blas_threads=1, **kw)
    assert set(fast) == set(plain) == set(tests)
    for name in tests:
        f, p = fast[name], plain[name]
        assert f["alpha"] == p["alpha"] and f["significant"] == p["significant"]
        for key in ("top1", "top5", "top1_ci_low", "top1_ci_high", "rank_score"):
            np.testing.assert_allclose(f[key], p[key], rtol=0, atol=1e-12, err_msg=key)
        np.testing.assert_allclose(f["significance"]["p_values"], p["significance"]["p_values"], atol=1e-12)
    # the planted information (around 0.2 s) is decoded: the comparison is not between two chance curves
    t = np.asarray(fast["01"]["times"])
    assert np.mean(np.asarray(fast["01"]["top1"])[np.abs(t - 0.2) < 0.04]) > 3 / 15


def test_repetitions_are_averaged_before_fitting():
    from neurodecode.evaluation.time_resolved import time_resolved_retrieval_sets

    tx, ty, tests, times = _data(2, n_train=40)
    rng = np.random.default_rng(5)
    reps = 3  # each training stimulus seen 3 times, with its own noise
    x_reps = np.concatenate([tx + rng.standard_normal(tx.shape).astype(np.float32) for _ in range(reps)])
    y_reps = np.concatenate([ty] * reps)
    groups = [("01", i) for _ in range(reps) for i in range(len(tx))]
    kw = dict(width=0.05, step=0.05, n_boot=0, n_permutations=100, progress_bar=False)
    grouped = time_resolved_retrieval_sets(x_reps, y_reps, tests, times, train_groups=groups, **kw)
    x_mean = x_reps.reshape(reps, len(tx), *tx.shape[1:]).mean(0)
    averaged = time_resolved_retrieval_sets(x_mean, ty, tests, times, **kw)
    for name in tests:
        assert grouped[name]["alpha"] == averaged[name]["alpha"]
        np.testing.assert_allclose(grouped[name]["top1"], averaged[name]["top1"], atol=1e-12)
        assert grouped[name]["protocol"]["n_train"] == len(tx)
        assert grouped[name]["protocol"]["n_train_responses"] == reps * len(tx)


def test_thread_limits_set_and_restore_the_threads():
    from threadpoolctl import threadpool_info

    from neurodecode.evaluation.threads import thread_limits, with_thread_limits

    outer = torch.get_num_threads()
    torch.set_num_threads(2)  # so that the limit is seen even where the suite runs single-threaded
    try:
        _check_limits(thread_limits, with_thread_limits, threadpool_info)
    finally:
        torch.set_num_threads(outer)


def _check_limits(thread_limits, with_thread_limits, threadpool_info):
    before = torch.get_num_threads()
    blas_before = [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]
    with thread_limits(1):
        assert torch.get_num_threads() == 1
        assert all(i["num_threads"] == 1 for i in threadpool_info() if i["user_api"] == "blas")
    assert torch.get_num_threads() == before
    assert [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"] == blas_before
    with thread_limits(None):
        assert torch.get_num_threads() == before
    with pytest.raises(ValueError, match="threads"), thread_limits(0):
        pass

    @with_thread_limits
    def inside(x, *, threads: int | None = 1):
        return x, torch.get_num_threads()

    assert inside(7) == (7, 1) and inside(7, threads=None) == (7, before)
    assert torch.get_num_threads() == before


def test_evaluate_fast_and_plain_write_the_same_metrics(tiny_encoder, tmp_path):
    from neurodecode.reporting.evaluate import evaluate

    kw = dict(n_boot=100, n_permutations=50, n_draws=10, figures=False, progress_bar=False)
    fast = evaluate(tiny_encoder, tmp_path / "fast", threads=1, n_jobs=2, **kw)
    plain = evaluate(tiny_encoder, tmp_path / "plain", threads=None, n_jobs=1, **kw)
    assert "time_resolved" in fast and "ablation" in fast
    for key in ("subjects", "summary", "noise_ceiling", "time_resolved", "ablation"):
        assert _same(fast[key], plain[key]), key


def _same(a, b) -> bool:
    """Nested dicts/lists of numbers equal to 1e-6 (the model's forward pass may differ in the last bits)."""
    if isinstance(a, dict):
        return isinstance(b, dict) and set(a) == set(b) and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return isinstance(b, list | tuple) and len(a) == len(b) and all(_same(u, v) for u, v in zip(a, b, strict=True))
    if isinstance(a, float) and isinstance(b, float):
        return (np.isnan(a) and np.isnan(b)) or abs(a - b) <= 1e-6 * max(1.0, abs(b))
    if isinstance(a, np.ndarray):
        return np.allclose(a, b, atol=1e-6, equal_nan=True)
    return a == b
