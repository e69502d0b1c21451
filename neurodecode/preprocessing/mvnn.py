"""Multivariate noise normalisation (MVNN) of epoched EEG/MEG.

MVNN (Guggenmos et al. 2018, as used by THINGS-EEG2 and NICE): the noise covariance of the
sensors is estimated per image condition, either at each time point across the repetitions
(``mode="time"``) or over time within each repetition (``mode="epochs"``), each estimate shrunk
with the Ledoit-Wolf formula on standardised data (what
``sklearn.discriminant_analysis._cov(X, shrinkage="auto")`` computes, which the THINGS-EEG2 and NICE
scripts call), averaged over time or repetitions and then over conditions; the data are multiplied
by its inverse square root. :class:`MVNN` computes every condition's estimate in batched array
operations (no Python loop over the 16540 conditions) and accumulates their sum block by block, so
it can be fitted on data larger than memory. Fit it on the *training* data of a session only, then
transform that session's training and test data.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from neurodecode.utils import check_option, logger, progress

__all__ = ["MVNN", "inverse_sqrt", "mvnn", "mvnn_covariance", "shrunk_covariance_sum"]

MVNN_MODES = ("epochs", "time")


def shrunk_covariance_sum(X: np.ndarray, shrinkage: str | float | None = "auto") -> np.ndarray:
    """Sum of the shrunk covariance estimates of a batch of small data sets.

    Each ``X[b]`` (``n_samples x n_features``) gets the estimate
    ``sklearn.discriminant_analysis._cov(X[b], shrinkage)`` computes, without a Python loop:

    * ``"auto"``: the features are standardised, the Ledoit-Wolf shrinkage intensity
      ``s = min(b2, d2) / d2`` is computed on the standardised data (Ledoit & Wolf 2004:
      ``d2 = ||S - mu I||^2 / p`` and ``b2 = (sum_k ||z_k||^4 / n - ||S||^2) / (n p)``, with ``S``
      the biased sample covariance of the standardised data ``z`` and ``mu = tr(S) / p``), the
      standardised estimate ``(1 - s) S + s mu I`` is formed and scaled back to the original units;
    * a float ``s`` in [0, 1]: ``(1 - s) C + s tr(C)/p I`` on the raw covariance ``C``;
    * ``None``: the biased sample covariance.

    Parameters
    ----------
    X : ndarray, shape (n_batch, n_samples, n_features)
        The data sets (any strides; a transposed view costs nothing).
    shrinkage : "auto" | float | None
        The estimator.

    Returns
    -------
    total : ndarray, shape (n_features, n_features), float64
        The sum over the batch of the estimates. Float32 input is computed in float32 (each
        estimate) and summed in float64; other input in float64.
    """
    X = np.asarray(X)
    if X.ndim != 3:
        raise ValueError(f"X must be (n_batch, n_samples, n_features), got shape {X.shape}.")
    return _shrunk_sum(np.swapaxes(X, 1, 2), shrinkage)


def _shrunk_sum(X: np.ndarray, shrinkage: str | float | None) -> np.ndarray:
    """:func:`shrunk_covariance_sum` on data laid out ``(n_batch, n_features, n_samples)``.

    This is the layout of EEG epochs (channels x times), so ``mode="epochs"`` needs no copy.
    When ``n >= p`` the covariances come from one batched product and everything else
    (variances, standardised covariances, their norms) is derived from them; when ``n < p``
    (e.g. 2 repetitions x 63 channels) the ``n x n`` Gram matrices give the norms instead.
    """
    work = np.float32 if X.dtype == np.float32 else np.float64
    B, p, n = X.shape
    if B == 0:
        return np.zeros((p, p))
    Xc = X.astype(work, copy=True)
    Xc -= Xc.mean(axis=2, keepdims=True)
    big = n >= p
    if big:
        C = np.matmul(Xc, Xc.transpose(0, 2, 1))
        C /= n
        var = np.diagonal(C, axis1=1, axis2=2).astype(np.float64)
    else:
        C = None
        var = (Xc.astype(np.float64) ** 2).mean(axis=2) if work == np.float64 else (Xc**2).mean(axis=2)

    def weighted_sum(weights: np.ndarray) -> np.ndarray:
        """sum_b w_b C_b in float64."""
        if big:
            return np.tensordot(weights, C.astype(np.float64, copy=False), axes=(0, 0))
        Y = Xc * np.sqrt(weights).astype(work)[:, None, None]
        flat = Y.transpose(1, 0, 2).reshape(p, B * n)
        return (flat @ flat.T).astype(np.float64) / n

    if shrinkage is None:
        return weighted_sum(np.ones(B))
    if not isinstance(shrinkage, str):
        s = float(shrinkage)
        if not 0.0 <= s <= 1.0:
            raise ValueError(f"shrinkage must be 'auto', None or a number in [0, 1], got {shrinkage!r}.")
        mu = np.asarray(var, dtype=np.float64).sum(axis=1) / p
        return (1 - s) * weighted_sum(np.ones(B)) + s * mu.sum() * np.eye(p)
    check_option("shrinkage", shrinkage, ("auto",))
    var = np.asarray(var, dtype=np.float64)
    scale = np.sqrt(var)
    scale[scale < 10 * np.finfo(work).eps] = 1.0  # as sklearn's StandardScaler: constant features keep 1
    inv = (1.0 / scale).astype(work)
    if big:
        Sz = C * inv[:, :, None] * inv[:, None, :]
        fro2 = (Sz.astype(np.float64) ** 2).sum(axis=(1, 2))
        row_sq = np.matmul((inv**2)[:, None, :], Xc**2)[:, 0, :]  # ||z_k||^2 for each sample k
    else:
        Z = Xc * inv[:, :, None]
        G = np.matmul(Z.transpose(0, 2, 1), Z)
        fro2 = (G.astype(np.float64) ** 2).sum(axis=(1, 2)) / n**2
        row_sq = (Z**2).sum(axis=1)
    row_sq = row_sq.astype(np.float64)
    mu = row_sq.sum(axis=1) / (n * p)  # tr(S) / p
    b2 = ((row_sq**2).sum(axis=1) / n - fro2) / (p * n)
    d2 = (fro2 - p * mu**2) / p
    b2 = np.minimum(b2, d2)
    with np.errstate(divide="ignore", invalid="ignore"):
        shrink = np.where(b2 > 0, b2 / np.where(d2 > 0, d2, 1.0), 0.0)
    if p == 1:
        shrink[:] = 0.0
    # back in original units: D ((1 - s) S_z + s mu I) D = (1 - s) C + s mu D^2
    total = weighted_sum(1.0 - shrink)
    total[np.diag_indices(p)] += ((shrink * mu)[:, None] * scale**2).sum(axis=0)
    return total


def _items(X: np.ndarray, mode: str) -> np.ndarray:
    """Rearrange (n_cond, n_rep, n_chans, n_times) into the data sets of ``mode``, (batch, chans, samples)."""
    C, R, P, T = X.shape
    if mode == "time":  # one data set per (condition, time point): channels x repetitions
        return X.transpose(0, 3, 2, 1).reshape(C * T, P, R)
    return X.reshape(C * R, P, T)  # per (condition, repetition): channels x times (a view)


def _check_4d(X: np.ndarray, name: str = "X") -> None:
    if X.ndim != 4:
        raise ValueError(f"{name} must have shape (n_conditions, n_repetitions, n_channels, n_times), "
                         f"got {X.shape}.")


def inverse_sqrt(cov: np.ndarray) -> np.ndarray:
    """Inverse square root of a symmetric positive-definite matrix (by ``scipy.linalg.eigh``).

    Same result as ``scipy.linalg.fractional_matrix_power(cov, -0.5)`` for such matrices, but
    exactly symmetric and real.
    """
    from scipy import linalg

    cov = np.asarray(cov, dtype=np.float64)
    w, V = linalg.eigh((cov + cov.T) / 2)
    if w.min() <= 0:
        raise ValueError(f"The covariance is not positive definite (smallest eigenvalue {w.min():.3g}); "
                         f"its inverse square root does not exist. Use shrinkage='auto' or a shrinkage > 0, "
                         f"or remove linearly dependent channels (e.g. after an average reference).")
    return (V / np.sqrt(w)) @ V.T


class MVNN:
    """Multivariate noise normalisation (whitening), fitted on training data only.

    Parameters
    ----------
    mode : "epochs" | "time"
        ``"epochs"`` (the THINGS-EEG2 default): a covariance per repetition of each condition,
        estimated over its time points; ``"time"``: a covariance per time point of each
        condition, estimated over its repetitions (needs at least 2 repetitions). Either way the
        estimates are averaged over all repetitions/time points and conditions.
    shrinkage : "auto" | float | None
        Covariance estimator (see :func:`shrunk_covariance_sum`); ``"auto"`` is Ledoit-Wolf, as the
        reference scripts.
    block_size : int
        Conditions per batched computation (bounds the memory of :meth:`fit`/:meth:`transform`).

    Attributes
    ----------
    covariance_ : ndarray, shape (n_channels, n_channels)
        The averaged noise covariance.
    whitener_ : ndarray, shape (n_channels, n_channels)
        Its inverse square root.
    n_estimates_ : int
        How many covariance estimates were averaged.

    Notes
    -----
    Data are ``(n_conditions, n_repetitions, n_channels, n_times)``, as THINGS-EEG2 stores them.
    With the same number of repetitions in every condition, the average over repetitions (or
    time points) and then over conditions equals the plain average over all estimates, which is
    what :meth:`partial_fit` accumulates.
    """

    def __init__(self, mode: str = "epochs", shrinkage: str | float | None = "auto", block_size: int = 64) -> None:
        check_option("mode", mode, MVNN_MODES)
        self.mode = mode
        self.shrinkage = shrinkage
        self.block_size = int(block_size)
        self._reset()

    def _reset(self) -> None:
        self._sum: np.ndarray | None = None
        self.n_estimates_ = 0
        self.covariance_: np.ndarray | None = None
        self.whitener_: np.ndarray | None = None

    def partial_fit(self, X: np.ndarray) -> MVNN:
        """Add the estimates of some conditions (all repetitions of each) to the running average."""
        X = np.asarray(X)
        _check_4d(X)
        if self.mode == "time" and X.shape[1] < 2:
            raise ValueError(f"mode='time' estimates a covariance over repetitions and needs at least 2; "
                             f"the data have {X.shape[1]}. Use mode='epochs'.")
        if self._sum is not None and self._sum.shape[0] != X.shape[2]:
            raise ValueError(f"X has {X.shape[2]} channels but the previous blocks had {self._sum.shape[0]}.")
        for start in range(0, X.shape[0], self.block_size):
            items = _items(X[start:start + self.block_size], self.mode)
            total = _shrunk_sum(items, self.shrinkage)
            self._sum = total if self._sum is None else self._sum + total
            self.n_estimates_ += len(items)
        self.covariance_ = self._sum / self.n_estimates_
        self.whitener_ = None
        return self

    def fit(self, X: np.ndarray, *, progress_bar: bool = False) -> MVNN:
        """Estimate the noise covariance from training data ``(n_cond, n_rep, n_chans, n_times)``.

        Parameters
        ----------
        X : ndarray
            Training data of one session.
        progress_bar : bool
            Show a progress bar over blocks of conditions.
        """
        self._reset()
        X = np.asarray(X) if not isinstance(X, np.ndarray) else X
        _check_4d(X)
        starts = range(0, X.shape[0], self.block_size)
        for start in progress(starts, enabled=progress_bar, desc="MVNN fit", unit="block"):
            self.partial_fit(X[start:start + self.block_size])
        self._finish()
        return self

    def _finish(self) -> None:
        if self.covariance_ is None:
            raise ValueError("MVNN has not seen any data; call fit() first.")
        self.whitener_ = inverse_sqrt(self.covariance_)

    @classmethod
    def from_covariance(cls, covariance: np.ndarray, **kwargs: Any) -> MVNN:
        """An MVNN whose whitener is the inverse square root of ``covariance``."""
        obj = cls(**kwargs)
        obj.covariance_ = np.asarray(covariance, dtype=np.float64)
        obj.n_estimates_ = 0
        obj._finish()
        return obj

    def transform(self, X: np.ndarray, *, out: np.ndarray | None = None) -> np.ndarray:
        """Whiten data: every time sample's channel vector is multiplied by the whitener.

        Parameters
        ----------
        X : ndarray, shape (..., n_channels, n_times)
            Data of the session the MVNN was fitted on (training or test).
        out : ndarray | None
            Where to write; pass ``X`` itself to whiten in place. A new array by default.

        Returns
        -------
        whitened : ndarray, same shape and dtype as ``X``
        """
        if self.whitener_ is None:
            self._finish()
        W = self.whitener_
        if X.shape[-2] != W.shape[0]:
            raise ValueError(f"X has {X.shape[-2]} channels on axis -2 but the MVNN was fitted on {W.shape[0]}.")
        dtype = X.dtype if np.issubdtype(X.dtype, np.floating) else np.float64
        if out is None:
            out = np.empty(X.shape, dtype=dtype)
        Wd = W.astype(dtype)
        flat_in = X.reshape(-1, *X.shape[-2:])
        flat_out = out.reshape(-1, *X.shape[-2:])
        step = max(1, self.block_size * 4)
        for start in range(0, len(flat_in), step):
            flat_out[start:start + step] = Wd @ flat_in[start:start + step]
        return out

    def fit_transform(self, X: np.ndarray) -> np.ndarray:
        """Fit on ``X`` and return it whitened."""
        return self.fit(X).transform(X)

    def __repr__(self) -> str:
        state = "fitted" if self.covariance_ is not None else "not fitted"
        return f"<MVNN mode={self.mode!r} shrinkage={self.shrinkage!r} | {state}>"


def mvnn_covariance(X: np.ndarray, mode: str = "epochs", shrinkage: str | float | None = "auto",
                    block_size: int = 64) -> np.ndarray:
    """The MVNN noise covariance of ``X`` ``(n_cond, n_rep, n_chans, n_times)`` (see :class:`MVNN`)."""
    return MVNN(mode, shrinkage, block_size).fit(X).covariance_


def mvnn(train: np.ndarray, *others: np.ndarray, mode: str = "epochs", shrinkage: str | float | None = "auto",
         fit_on: str = "train", block_size: int = 64) -> tuple[np.ndarray, ...]:
    """Whiten one session: fit MVNN on its training data, apply it to training and other data.

    Parameters
    ----------
    train : ndarray, shape (n_conditions, n_repetitions, n_channels, n_times)
        Training data of the session.
    *others : ndarray
        Further data of the same session (e.g. test data), any leading shape.
    mode, shrinkage, block_size
        See :class:`MVNN`.
    fit_on : "train" | "train+test"
        ``"train"`` (default) estimates the covariance from training data only.
        ``"train+test"`` averages it with the covariance of ``others[0]`` (4-D), as the THINGS-EEG2
        and NICE scripts do; this lets test-set noise statistics into the training data and is
        only meant to reproduce the published files.

    Returns
    -------
    whitened : tuple of ndarray
        ``train`` and then each of ``others``, whitened.
    """
    check_option("fit_on", fit_on, ("train", "train+test"))
    model = MVNN(mode, shrinkage, block_size).fit(train)
    if fit_on == "train+test":
        if not others:
            raise ValueError("fit_on='train+test' needs the test data as the second argument.")
        cov = (model.covariance_ + mvnn_covariance(others[0], mode, shrinkage, block_size)) / 2
        model = MVNN.from_covariance(cov, mode=mode, shrinkage=shrinkage, block_size=block_size)
    logger.info(f"MVNN ({mode}, shrinkage={shrinkage}) fitted on {fit_on} data of shape {train.shape}")
    return tuple(model.transform(x) for x in (train, *others))
