"""The ideal decoder's ceiling: Bayes-optimal identification under the known forward model.

:func:`ideal_decoder_accuracy` is the Bayes-optimal identification of each test image among all test
images for a decoder that knows the forward model (the noiseless responses and the noise covariance):
maximum likelihood, i.e. the nearest mean after exact whitening. It is computed on the simulated test
set itself, from responses averaged over all test repetitions (as the THINGS protocol averages), and
also from single trials. No decoder that sees only the data can beat it in expectation, so it tells how
close a trained model gets.

The noise covariance is the one of :mod:`neurodecode.simulate.forward`; :class:`Whitener` applies it
exactly, without forming the full covariance.
"""

from __future__ import annotations

import numpy as np

from neurodecode.simulate.forward import SubjectModel

__all__ = ["Whitener", "ideal_decoder_accuracy"]


class Whitener:
    r"""Exact Mahalanobis geometry of the simulator's noise covariance.

    The covariance is :math:`\Sigma = c^2 \Sigma_{bg} + \sigma^2 P P^\top` (background noise plus the
    low-rank trial-to-trial source variability). ``embed`` maps a response to ``(z, q)`` such that
    :math:`(x-y)^\top \Sigma^{-1} (x-y) = \|z_x - z_y\|^2 - \|q_x - q_y\|^2` (Woodbury identity):
    ``z`` whitens the background exactly and ``q`` removes the low-rank part.

    Parameters
    ----------
    model : SubjectModel
        The subject's forward model (:func:`~neurodecode.simulate.forward.timeseries_model` or
        :func:`~neurodecode.simulate.forward.fmri_model`).
    """

    def __init__(self, model: SubjectModel) -> None:
        from scipy.linalg import cholesky, eigh

        p = model.parts
        self.fmri = "U" in p
        self.scale = model.noise_scale
        pat = p["patterns"].reshape(len(p["patterns"]), -1)
        if self.fmri:
            cov = float(p["sigma2"]) * np.eye(p["U"].shape[0]) + p["U"] @ p["U"].T
            self.L = cholesky(cov, lower=True)
        else:
            lam, V = eigh(p["S2"], p["S1"])  # V.T S1 V = I, V.T S2 V = diag(lam)
            self.V = V
            lam = np.maximum(lam, 0.0)
            # channels of the transformed space share a temporal covariance T1 + lam T2; most lam are 0
            # (the alpha part has low rank), so group them and whiten each group with one matrix
            keys = np.where(lam < 1e-9, 0.0, lam)
            self.groups = []
            for key in np.unique(keys):
                Lk = cholesky(p["T1"] + key * p["T2"], lower=True)
                self.groups.append((np.flatnonzero(keys == key), np.linalg.inv(Lk).T))
        b = self._white(pat.reshape(len(pat), *model.mean.shape[1:])) * float(p["source_sd"])  # (k, D)
        M = np.eye(len(b)) + b @ b.T
        self.b = b
        self.LM = cholesky(M, lower=True)

    def _white(self, x: np.ndarray) -> np.ndarray:
        from scipy.linalg import solve_triangular

        x = np.asarray(x, dtype=np.float64) / self.scale
        if self.fmri:
            return solve_triangular(self.L, x.T, lower=True).T
        n, c, t = x.shape
        # spatial transform and temporal whitening as single large GEMMs
        y = (x.transpose(0, 2, 1).reshape(n * t, c) @ self.V).reshape(n, t, c).transpose(0, 2, 1)
        out = np.empty((n, c, t))
        for idx, linv_t in self.groups:
            out[:, idx] = (np.ascontiguousarray(y[:, idx]).reshape(-1, t) @ linv_t).reshape(n, len(idx), t)
        return out.reshape(n, -1)

    def embed(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(z, q)`` of responses ``x`` (see the class docstring)."""
        from scipy.linalg import solve_triangular

        z = self._white(x)
        q = solve_triangular(self.LM, self.b @ z.T, lower=True).T
        return z, q


def ideal_decoder_accuracy(model: SubjectModel, responses: np.ndarray, true_index: np.ndarray,
                           candidates: np.ndarray, n_reps: int = 1, *,
                           whitener: Whitener | None = None) -> dict[str, float]:
    """Identification accuracy of the Bayes-optimal decoder that knows the forward model.

    Parameters
    ----------
    model : SubjectModel
        Noiseless responses (``model.mean``) and noise covariance.
    responses : ndarray
        Observed responses: single trials, or averages over ``n_reps`` repetitions (the noise
        covariance then shrinks by ``n_reps``, which scales every distance alike and leaves the
        ranking unchanged).
    true_index : ndarray of int
        Row of ``model.mean`` each response was evoked by.
    candidates : ndarray of int
        Rows of ``model.mean`` to choose from (e.g. all test images).
    n_reps : int
        Repetitions averaged in ``responses`` (recorded only).
    whitener : Whitener | None
        Reuse a whitener already built for ``model``.

    Returns
    -------
    acc : dict
        ``top1``, ``top5``, ``two_way`` (share of distractors ranked below the true image) and
        ``n_candidates``.
    """
    white = Whitener(model) if whitener is None else whitener
    zc, qc = white.embed(model.mean[candidates])
    ranks = []
    pos = {int(c): k for k, c in enumerate(candidates)}
    for start in range(0, len(responses), 512):
        zx, qx = white.embed(responses[start:start + 512])
        d = ((zx**2).sum(1)[:, None] - 2 * zx @ zc.T + (zc**2).sum(1)[None, :]
             - ((qx**2).sum(1)[:, None] - 2 * qx @ qc.T + (qc**2).sum(1)[None, :]))
        true_col = np.array([pos[int(t)] for t in true_index[start:start + 512]])
        true_d = d[np.arange(len(zx)), true_col]
        ranks.append((d < true_d[:, None]).sum(1))
    r = np.concatenate(ranks)
    n = len(candidates)
    return {"top1": float((r == 0).mean()), "top5": float((r < 5).mean()),
            "two_way": float(1 - (r / (n - 1)).mean()), "n_candidates": int(n), "n_reps": int(n_reps)}

