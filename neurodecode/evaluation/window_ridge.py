"""Ridge decoders per time window: one decomposition per window, windows fitted side by side.

:func:`ridge_loo` is a standardised ridge regression whose regularisation is chosen by efficient
leave-one-out error: one eigendecomposition of the window's Gram matrix serves every value of the
grid and every target (embedding dimension). :func:`fit_windows` fits one such decoder per
window of an epoch and predicts held-out responses with it.

Why :func:`fit_windows` sets the BLAS threads: a window's problem is small (a few hundred
features), and a multi-threaded LAPACK eigendecomposition of that size spends its time in
synchronisation between threads. On a 2-core machine where another process holds a core, one
378 x 378 ``eigh`` measured 2.2 s with OpenBLAS's two threads and 14 ms with one thread (15 ms and
12 ms on an idle machine). So each window runs single-threaded, and the cores are used by fitting
several windows at once (threads: NumPy releases the GIL in its BLAS and LAPACK calls). The
results do not depend on ``n_jobs``; with ``blas_threads=None`` the thread count is left alone.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from typing import Any

import numpy as np

__all__ = ["default_jobs", "fit_windows", "ridge_loo", "ridge_predict", "window_features"]


def ridge_loo(x: np.ndarray, y: np.ndarray, alphas: Sequence[float]) -> dict[str, Any]:
    """Standardised ridge regression with the regularisation chosen by efficient leave-one-out error.

    The same model as scikit-learn's ``make_pipeline(StandardScaler(), RidgeCV(alphas,
    alpha_per_target=False))`` (intercept unpenalised; the value of ``alphas`` with the lowest mean
    squared leave-one-out error over samples and targets, the first on ties), computed from one
    eigendecomposition of the centred, standardised design's Gram matrix (``X X^T`` when there are
    fewer samples than features, else ``X^T X``) shared by every value of the grid and every target.

    Parameters
    ----------
    x : ndarray, (n_samples, n_features)
    y : ndarray, (n_samples, n_targets)
    alphas : sequence of float
        The grid.

    Returns
    -------
    fit : dict
        ``mean`` and ``scale`` (the standardisation), ``coef`` (n_features, n_targets), ``intercept``,
        ``alpha`` (the chosen value) and ``loo_mse`` (per value of the grid). Predict with
        :func:`ridge_predict`.
    """
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    if y.ndim == 1:
        y = y[:, None]
    alphas = np.asarray(alphas, np.float64)
    n, p = x.shape
    mean = x.mean(0)
    xc = x - mean
    scale = np.sqrt(np.einsum("ij,ij->j", xc, xc) / n)  # x.std(0), from the centred copy
    scale[scale < 10 * np.finfo(np.float64).eps * np.maximum(1.0, np.abs(mean))] = 1.0  # as StandardScaler
    xc /= scale
    xc -= xc.mean(0)
    y_mean = y.mean(0)
    yc = y - y_mean
    if n <= p:
        s, u = np.linalg.eigh(xc @ xc.T)
    else:
        s, w = np.linalg.eigh(xc.T @ xc)
    keep = s > max(s.max(), 0.0) * max(n, p) * np.finfo(np.float64).eps
    s = s[keep]
    if n <= p:
        u = u[:, keep]
    else:
        w = w[:, keep]
        u = (xc @ w) / np.sqrt(s)
    z = u.T @ yc  # (rank, n_targets)
    f = s / (s + alphas[:, None])  # (n_alphas, rank): shrinkage of each component
    h = 1.0 / n + (u * u) @ f.T  # (n, n_alphas): leverage, the intercept included
    # leave-one-out residuals (y_i - fitted_i) / (1 - h_i) for every value, in place (sign irrelevant)
    loo = (u @ (f[:, :, None] * z[None]).transpose(1, 0, 2).reshape(len(s), -1)).reshape(n, len(alphas), -1)
    loo -= yc[:, None, :]
    loo /= (1.0 - h)[:, :, None]
    mse = np.einsum("iat,iat->a", loo, loo) / (n * loo.shape[2])
    best = int(np.argmin(mse))
    d = np.sqrt(s) / (s + alphas[best])
    coef = (w @ (d[:, None] * z)) if n > p else xc.T @ (u @ (z / (s + alphas[best])[:, None]))
    return {"mean": mean, "scale": scale, "coef": coef, "intercept": y_mean, "alpha": float(alphas[best]),
            "loo_mse": mse}


def ridge_predict(fit: dict[str, Any], x: np.ndarray) -> np.ndarray:
    """Predictions of a :func:`ridge_loo` fit for samples ``x`` (n_samples, n_features)."""
    return ((np.asarray(x, np.float64) - fit["mean"]) / fit["scale"]) @ fit["coef"] + fit["intercept"]


def window_features(x: np.ndarray, start: int, stop: int) -> np.ndarray:
    """The samples ``start:stop`` of ``x`` (n, n_chans, n_times), flattened to (n, n_chans * width)."""
    return np.ascontiguousarray(x[:, :, start:stop].reshape(len(x), -1))


def default_jobs() -> int:
    """The cores this process may use (its CPU affinity where the platform has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - macOS, Windows
        return max(1, os.cpu_count() or 1)


def _blas_limit(blas_threads: int | None):
    if blas_threads is None:
        return nullcontext()
    from threadpoolctl import threadpool_limits  # a dependency of scikit-learn

    return threadpool_limits(limits=int(blas_threads), user_api="blas")


def fit_windows(
    train_x: np.ndarray, train_y: np.ndarray, windows: Sequence[tuple[int, int]], alphas: Sequence[float],
    tests: Sequence[np.ndarray] = (), *, n_jobs: int | None = None, blas_threads: int | None = 1,
) -> Iterator[tuple[float, list[np.ndarray]]]:
    """Fit :func:`ridge_loo` in every window and predict the test responses, window after window.

    Parameters
    ----------
    train_x : ndarray, (n_train, n_chans, n_times)
        Training responses.
    train_y : ndarray, (n_train, dim)
        Their targets.
    windows : sequence of (start, stop)
        Sample ranges (stop exclusive), e.g. from
        :func:`~neurodecode.evaluation.time_resolved.sliding_windows`.
    alphas : sequence of float
        The ridge grid.
    tests : sequence of ndarray, each (n, n_chans, n_times)
        Responses to predict with each window's decoder.
    n_jobs : int | None
        Windows fitted at the same time (threads); ``None``: the cores this process may use
        (:func:`default_jobs`). The results do not depend on it.
    blas_threads : int | None
        BLAS/LAPACK threads while fitting (see the module docstring); ``None`` leaves them as they are.

    Yields
    ------
    alpha, predictions : float, list of ndarray
        Per window, in order: the chosen regularisation and the predictions (n, dim) of each test
        array.
    """
    windows = [(int(a), int(b)) for a, b, *_ in windows]
    jobs = default_jobs() if n_jobs is None else int(n_jobs)
    if jobs < 1:
        raise ValueError(f"n_jobs must be a positive number of threads or None, got {n_jobs}.")
    jobs = min(jobs, max(1, len(windows)))

    def one(window: tuple[int, int]) -> tuple[float, list[np.ndarray]]:
        a, b = window
        fit = ridge_loo(window_features(train_x, a, b), train_y, alphas)
        return fit["alpha"], [ridge_predict(fit, window_features(t, a, b)) for t in tests]

    with _blas_limit(blas_threads):
        if jobs == 1:
            for w in windows:
                yield one(w)
            return
        with ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="window-ridge") as pool:
            # at most 2 * jobs windows in flight: bounded memory, results in window order
            pending = [pool.submit(one, w) for w in windows[:2 * jobs]]
            nxt = len(pending)
            for i in range(len(windows)):
                result = pending[i].result()
                pending[i] = None  # free it
                if nxt < len(windows):
                    pending.append(pool.submit(one, windows[nxt]))
                    nxt += 1
                yield result
