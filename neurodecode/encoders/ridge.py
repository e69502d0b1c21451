"""Ridge regression fitted in closed form, with the penalty chosen by cross-validation.

The classic linear decoding baseline (e.g. the linear baselines of Benchetrit et al. 2023 and of
the fMRI literature): ``Y ~ X W + b`` with an L2 penalty ``alpha |W|^2``. Fitting uses one thin
SVD ``X = U diag(s) V^T`` of the centred data, after which every candidate ``alpha`` costs only
matrix products: ``W(alpha) = V diag(s / (s^2 + alpha)) U^T Y``. The penalty is chosen on a
logarithmic grid by

- ``cv="loo"``: exact leave-one-out error, from the diagonal of the hat matrix
  (``e_loo = e / (1 - h)``), one SVD in all;
- ``cv="gcv"``: generalised cross-validation (Golub, Heath and Wahba, 1979): mean squared
  residual divided by ``(1 - dof / n)^2``, one SVD in all;
- ``cv=k`` (an int): k-fold cross-validation over contiguous folds, one SVD per fold.

The model is an ``nn.Module`` with the encoder contract, but it is **not trained by gradient
descent**: call :meth:`Ridge.fit` once; the weights are buffers (not parameters), so an optimiser
leaves them alone and they are saved in the state dict. Gradients still flow to the input.
Written here rather than taken from scikit-learn's ``RidgeCV`` to run on torch tensors (GPU
included), keep the fitted map inside the encoder contract, and offer k-fold and per-target
penalties from the same decomposition.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from neurodecode.encoders.base import VoxelEncoder, register_encoder
from neurodecode.utils import logger, use_log_level

__all__ = ["Ridge"]

CV_MODES = ("loo", "gcv")


@register_encoder("ridge")
class Ridge(VoxelEncoder):
    """Closed-form ridge regression from voxels (or flattened trials) to the embedding.

    Parameters
    ----------
    n_voxels, n_outputs, n_subjects
        The encoder contract for voxel input. The same map is used for every subject
        (``subject`` is checked and ignored).
    n_chans, n_times : int | None
        Give these instead of ``n_voxels`` to use the model on EEG/MEG trials
        ``(batch, n_chans, n_times)``, flattened (``modality`` is then ``"timeseries"``).
    sfreq, chs_info
        Accepted for time-series use (recorded, unused).
    alphas : sequence of float | None
        Candidate penalties. ``None`` means 17 values from 1e-4 to 1e4 (log-spaced) times the mean
        squared singular value of the centred training data, which adapts the grid to the scale
        of the data; explicit values are used as they are.
    cv : {"loo", "gcv"} | int
        How the penalty is chosen (see the module docstring).
    alpha_per_target : bool
        Choose a penalty per output dimension instead of one for all.
    fit_intercept : bool
        Centre ``X`` and ``Y`` (an unpenalised intercept).

    Attributes
    ----------
    weight : torch.Tensor, shape (n_features, n_outputs)
        Fitted map (buffer).
    bias : torch.Tensor, shape (n_outputs,)
    alpha_ : torch.Tensor, shape (n_outputs,)
        The chosen penalty of each output.
    cv_errors_ : ndarray, shape (n_alphas,) or (n_alphas, n_outputs)
        Cross-validated mean squared error on the grid (after :meth:`fit`).
    alphas_ : ndarray
        The grid actually used (absolute values).
    """

    closed_form = True

    def __init__(self, n_voxels: int | None = None, n_outputs: int | None = None, *, n_subjects: int = 1,
                 n_chans: int | None = None, n_times: int | None = None, sfreq: float | None = None,
                 chs_info: Any = None, alphas: Sequence[float] | None = None, cv: str | int = "loo",
                 alpha_per_target: bool = False, fit_intercept: bool = True) -> None:
        timeseries = n_voxels is None and n_chans is not None and n_times is not None
        if n_voxels is not None and (n_chans is not None or n_times is not None):
            raise ValueError("Ridge: give either n_voxels (fMRI) or n_chans and n_times (EEG/MEG), not both.")
        super().__init__(int(n_chans) * int(n_times) if timeseries else n_voxels, n_outputs, n_subjects=n_subjects)
        self._shape: tuple[int, ...] = (int(n_chans), int(n_times)) if timeseries else (self.n_voxels,)
        if timeseries:
            self.modality = "timeseries"  # instance attribute: this model reads trials
            self.n_chans, self.n_times = self._shape
        self.sfreq = sfreq
        if isinstance(cv, bool) or not ((isinstance(cv, str) and cv in CV_MODES) or
                                        (isinstance(cv, (int, np.integer)) and cv >= 2)):
            raise ValueError(f"Invalid value for the 'cv' parameter: 'loo', 'gcv' or a number of folds >= 2, "
                             f"got {cv!r}.")
        if alphas is not None:
            a = np.asarray(alphas, dtype=float).ravel()
            if a.size == 0 or not np.all(np.isfinite(a)) or np.any(a <= 0):
                raise ValueError(f"alphas must be positive finite numbers, got {list(alphas)}.")
        self.alphas = None if alphas is None else [float(v) for v in np.asarray(alphas, dtype=float).ravel()]
        self.cv = cv
        self.alpha_per_target = bool(alpha_per_target)
        self.fit_intercept = bool(fit_intercept)
        self.register_buffer("weight", torch.zeros(self.n_voxels, self.n_outputs))
        self.register_buffer("bias", torch.zeros(self.n_outputs))
        self.register_buffer("alpha_", torch.zeros(self.n_outputs))
        self.register_buffer("fitted", torch.zeros((), dtype=torch.bool))
        self.n_features = self.n_voxels
        self.cv_errors_: np.ndarray | None = None
        self.alphas_: np.ndarray | None = None

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self._shape

    def _input_description(self) -> str:
        return "(batch, n_chans, n_times)" if len(self._shape) == 2 else "(batch, n_voxels)"

    # ------------------------------------------------------------------------------------------
    def forward_features(self, x: torch.Tensor, subject: torch.Tensor | int | None = None) -> torch.Tensor:
        """The flattened input ``(batch, n_features)`` (ridge has no hidden layer)."""
        self._prepare(x, subject)
        return x.flatten(1)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        """``features @ weight + bias``."""
        if not bool(self.fitted):
            raise RuntimeError("Ridge is fitted in closed form, not by gradient descent: call "
                               "model.fit(X, Y) before using it.")
        return features @ self.weight.to(features.dtype) + self.bias.to(features.dtype)

    # ------------------------------------------------------------------------------------------
    @torch.no_grad()
    def fit(self, X: torch.Tensor | np.ndarray, Y: torch.Tensor | np.ndarray, subject: Any = None, *,
            verbose: bool | str | int | None = None) -> Ridge:
        """Fit the map and choose the penalty by cross-validation.

        Parameters
        ----------
        X : array or tensor, shape (n_samples, *input_shape)
            Training inputs (flattened internally).
        Y : array or tensor, shape (n_samples, n_outputs)
            Targets (e.g. image embeddings).
        subject : ignored
            Accepted for symmetry with ``forward``.
        verbose : bool | str | int | None
            Log the chosen penalty (MNE-style).

        Returns
        -------
        self : Ridge
        """
        with use_log_level(verbose):
            device = self.weight.device
            X = torch.as_tensor(X).to(device=device, dtype=torch.float64)
            Y = torch.as_tensor(Y).to(device=device, dtype=torch.float64)
            if X.ndim < 2 or tuple(X.shape[1:]) != self._shape:
                raise ValueError(f"Ridge.fit: X must have shape (n_samples, {', '.join(map(str, self._shape))}), "
                                 f"got {tuple(X.shape)}.")
            X = X.reshape(X.shape[0], -1)
            if Y.ndim != 2 or Y.shape != (X.shape[0], self.n_outputs):
                raise ValueError(f"Ridge.fit: Y must have shape (n_samples, n_outputs) = ({X.shape[0]}, "
                                 f"{self.n_outputs}), got {tuple(Y.shape)}.")
            if not (torch.isfinite(X).all() and torch.isfinite(Y).all()):
                raise ValueError("Ridge.fit: X or Y holds NaN or Inf values; clean the data first.")
            n = X.shape[0]
            if n < 3:
                raise ValueError(f"Ridge.fit needs at least 3 samples, got {n}.")
            if not isinstance(self.cv, str) and self.cv > n:
                raise ValueError(f"Ridge.fit: cv={self.cv} folds but only {n} samples.")
            xm, ym, Xc, Yc = self._center(X, Y)
            U, s, Vt = torch.linalg.svd(Xc, full_matrices=False)
            alphas = self._alpha_grid(s)
            if isinstance(self.cv, str):
                errors = self._svd_cv(U, s, Yc, alphas, n, self.cv)
            else:
                errors = self._kfold_cv(X, Y, alphas, int(self.cv))
            if self.alpha_per_target:
                best = errors.argmin(0)  # (n_outputs,)
            else:
                best = errors.mean(1).argmin().expand(self.n_outputs)
            alpha = alphas[best]
            UtY = U.T @ Yc
            W = Vt.T @ ((s[:, None] / (s[:, None] ** 2 + alpha[None, :])) * UtY)
            self.weight.copy_(W.to(self.weight.dtype))
            self.bias.copy_((ym - xm @ W).to(self.bias.dtype))
            self.alpha_.copy_(alpha.to(self.alpha_.dtype))
            self.fitted.fill_(True)
            self.alphas_ = alphas.cpu().numpy()
            err = errors.cpu().numpy()
            self.cv_errors_ = err if self.alpha_per_target else err.mean(1)
            chosen = np.unique(self.alpha_.cpu().numpy())
            if len(chosen) == 1 and (best[0] == 0 or best[0] == len(alphas) - 1):
                logger.warning(f"Ridge: the chosen alpha {chosen[0]:.3g} is at the edge of the grid "
                               f"[{alphas[0]:.3g}, {alphas[-1]:.3g}]; consider a wider grid (alphas=...).")
            logger.info(f"Ridge fitted on {n} samples x {X.shape[1]} features, cv={self.cv!r}, "
                        f"alpha={'per target' if len(chosen) > 1 else f'{chosen[0]:.4g}'}")
        return self

    def _center(self, X: torch.Tensor, Y: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if self.fit_intercept:
            xm, ym = X.mean(0), Y.mean(0)
        else:
            xm, ym = X.new_zeros(X.shape[1]), Y.new_zeros(Y.shape[1])
        return xm, ym, X - xm, Y - ym

    def _alpha_grid(self, s: torch.Tensor) -> torch.Tensor:
        if self.alphas is not None:
            grid = torch.tensor(sorted(self.alphas), dtype=torch.float64, device=s.device)
        else:
            scale = (s**2).mean().clamp_min(torch.finfo(torch.float64).tiny)
            grid = torch.logspace(-4, 4, 17, dtype=torch.float64, device=s.device) * scale
        return grid

    def _svd_cv(self, U: torch.Tensor, s: torch.Tensor, Yc: torch.Tensor, alphas: torch.Tensor, n: int,
                mode: str) -> torch.Tensor:
        """Leave-one-out or GCV mean squared error, ``(n_alphas, n_outputs)``, from one SVD."""
        UtY = U.T @ Yc
        U2 = U**2
        extra = 1.0 / n if self.fit_intercept else 0.0  # the intercept's share of the hat matrix
        out = []
        for a in alphas:
            d = s**2 / (s**2 + a)
            resid = Yc - U @ (d[:, None] * UtY)
            if mode == "loo":
                h = U2 @ d + extra
                resid = resid / (1.0 - h).clamp_min(1e-12)[:, None]
                out.append((resid**2).mean(0))
            else:
                dof = d.sum() + (1.0 if self.fit_intercept else 0.0)
                out.append((resid**2).mean(0) / (1.0 - dof / n).clamp_min(1e-12) ** 2)
        return torch.stack(out)

    def _kfold_cv(self, X: torch.Tensor, Y: torch.Tensor, alphas: torch.Tensor, k: int) -> torch.Tensor:
        """K-fold mean squared error over contiguous folds, ``(n_alphas, n_outputs)``."""
        n = X.shape[0]
        bounds = np.linspace(0, n, k + 1).round().astype(int)
        sq = torch.zeros(len(alphas), Y.shape[1], dtype=X.dtype, device=X.device)
        for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
            test = torch.zeros(n, dtype=torch.bool, device=X.device)
            test[lo:hi] = True
            xm, ym, Xc, Yc = self._center(X[~test], Y[~test])
            U, s, Vt = torch.linalg.svd(Xc, full_matrices=False)
            proj = (X[test] - xm) @ Vt.T  # (n_test, r)
            UtY = U.T @ Yc
            for i, a in enumerate(alphas):
                pred = proj @ ((s / (s**2 + a))[:, None] * UtY) + ym
                sq[i] += ((Y[test] - pred) ** 2).sum(0)
        return sq / n
