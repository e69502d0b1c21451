"""The uncertainty-aware blur (UBP: Wu et al., "Bridging the Vision-Brain Gap with an Uncertainty-Aware Blur
Prior", CVPR 2025): ``data.blur: ubp`` blurs a training sample's image more when its brain and image
embeddings match worse. Every stimulus is embedded once at three blur levels (:class:`UBPConfig`;
cached as ``"<teacher>#blur<SIGMA>-fovea<G>"``) and :class:`UncertaintyBlur` picks each sample's level in
training; validation, test and ``neurodecode evaluate`` use the middle one, as UBP does. As in the
authors' code:

* a sample's mismatch is its brain-image similarity ``s`` (the cosine of the encoder's embedding and
  the target it was given), smoothed per sample: ``m = momentum s + (1 - momentum) m_prev`` (0.3);
* at every step the batch's smoothed values give an interval ``mean +- z sd`` (``z`` the ``1 - alpha/2``
  normal quantile, alpha 0.05, ``ddof=1``); a sample whose ``s`` lies above it (a good match) gets the
  weak blur the next time it is drawn, one below it (poor match, high uncertainty) the strong one, the
  others the middle one: a level changes once per epoch, as UBP refreshes them every epoch;
* the blur is UBP's foveated Gaussian (:class:`~neurodecode.training.targets.GaussianBlur` with ``fovea=3``); its kernels of 45, 51
  and 57 px at 224 px are Gaussians of sigma 7.1, 8.0 and 8.9 px (OpenCV's sigma of a kernel size).
  UBP's image encoder is CLIP (RN50, ViT-H-14); any image teacher works here.

Two choices differ from that code: it starts every average at 1 (on the scale of its logits, which carry
the temperature and the brain embedding's norm), here each starts at the sample's first cosine, so the
first epoch does not class samples by the starting value; and the ranks' similarities are gathered, so
every process holds the same levels.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields
from statistics import NormalDist
from typing import Any

import numpy as np
import torch
from torch import nn

from neurodecode.training.targets import blurred_spec

__all__ = ["UBPConfig", "target_specs", "UncertaintyBlur"]


@dataclass(frozen=True)
class UBPConfig:
    """Settings of the uncertainty-aware blur (``data.blur: ubp``; ``data.ubp: {...}`` overrides them).

    Parameters
    ----------
    sigmas : tuple of 3 float
        Gaussian sigmas (px at the teacher's input resolution) of the weak, middle and strong blur.
    fovea : float | None
        Falloff ``G`` of the foveated blend (:class:`~neurodecode.training.targets.GaussianBlur`); ``None``: a uniform blur.
    momentum, alpha : float
        Weight of the new similarity in a sample's moving average (UBP's gamma); the interval is
        ``mean +- z_{1-alpha/2} sd`` of the batch's averages.
    """

    sigmas: tuple[float, float, float] = (7.1, 8.0, 8.9)
    fovea: float | None = 3.0
    momentum: float = 0.3
    alpha: float = 0.05

    def __post_init__(self) -> None:
        sig = tuple(float(v) for v in self.sigmas)
        if len(sig) != 3 or not 0 < sig[0] <= sig[1] <= sig[2]:
            raise ValueError(f"data.ubp.sigmas must be 3 increasing positive blurs (px: weak, middle, strong), got "
                             f"{list(self.sigmas)}.")
        if not (0 < self.momentum <= 1 and 0 < self.alpha < 1):
            raise ValueError(f"data.ubp needs 0 < momentum <= 1 and 0 < alpha < 1, got {self.momentum}, {self.alpha}.")
        if self.fovea is not None and float(self.fovea) < 0:
            raise ValueError(f"data.ubp.fovea must be >= 0 or null (uniform blur), got {self.fovea}.")
        object.__setattr__(self, "sigmas", sig)

    @classmethod
    def from_options(cls, options: dict[str, Any] | None) -> UBPConfig:
        """The defaults with ``options`` (``data.ubp``) over them; unknown keys are an error."""
        options = dict(options or {})
        known = {f.name for f in fields(cls)}
        if set(options) - known:
            raise ValueError(f"data.ubp has unknown key(s) {sorted(set(options) - known)}; known: {sorted(known)}.")
        return cls(**options)

    def specs(self, teacher: str) -> list[str]:
        """The cache specs of the three blur levels (weak, middle, strong)."""
        return [blurred_spec(teacher, s, self.fovea) for s in self.sigmas]

    def describe(self) -> dict[str, Any]:
        return {**asdict(self), "sigmas": list(self.sigmas), "eval_level": "middle"}


def target_specs(teacher: str, blur: float | str | None, ubp: dict[str, Any] | None = None,
                 layers: Sequence[str] | None = None) -> tuple[UBPConfig | None, list[str]]:
    """UBP's settings (``blur="ubp"``, else None) and the cache specs of the targets (UBP: its 3 levels)."""
    if ubp is not None and blur != "ubp":
        raise ValueError("data.ubp sets the uncertainty-aware blur, which needs data.blur: ubp.")
    if isinstance(blur, str) and blur != "ubp":
        raise ValueError(f"data.blur must be a sigma in pixels, 'ubp' or null, got {blur!r}.")
    if blur != "ubp":
        return None, [blurred_spec(teacher, blur)]
    if layers:
        raise ValueError("data.blur: ubp blurs the targets of one teacher layer; drop data.layers or the blur.")
    cfg = UBPConfig.from_options(ubp)
    return cfg, cfg.specs(teacher)


class UncertaintyBlur(nn.Module):
    """Each training sample's blur level, set by its brain-image mismatch (UBP; see the module docstring).

    Parameters
    ----------
    levels : array-like, (3, n_stimuli, dim)
        The targets of every stimulus at the weak, middle and strong blur.
    n_samples : int
        Samples of the training set (their ``index`` keys the state).
    momentum, alpha : float
        As in :class:`UBPConfig`.

    Notes
    -----
    The state (``similarity``, each sample's moving average, NaN before its first step; ``level``, 0, 1
    or 2, 1 at the start) is saved with the checkpoint, so a resumed run continues it; the target table
    is not (it is the cache's).
    """

    def __init__(self, levels: Any, n_samples: int, momentum: float = 0.3, alpha: float = 0.05) -> None:
        super().__init__()
        levels = torch.as_tensor(np.asarray(levels), dtype=torch.float32)
        if levels.ndim != 3 or len(levels) != 3:
            raise ValueError(f"UncertaintyBlur needs targets at 3 blur levels, (3, n_stimuli, dim), got {tuple(levels.shape)}.")
        self.momentum, self.z = float(momentum), NormalDist().inv_cdf(1 - float(alpha) / 2)
        self.register_buffer("levels", levels, persistent=False)
        self.register_buffer("similarity", torch.full((int(n_samples),), float("nan")))
        self.register_buffer("level", torch.ones(int(n_samples), dtype=torch.long))

    def forward(self, stim: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """The targets of stimulus rows ``stim`` at the current levels of training samples ``index``."""
        return self.levels[self.level[index], stim]

    @torch.no_grad()
    def update(self, index: torch.Tensor, similarity: torch.Tensor) -> torch.Tensor:
        """Fold one step's similarities into the samples' averages and set their next levels (returned)."""
        s = similarity.detach().to(self.similarity)
        prev = self.similarity[index]
        avg = torch.where(torch.isnan(prev), s, self.momentum * s + (1 - self.momentum) * prev)
        level = torch.ones_like(index)
        if len(avg) >= 2:
            mean, sd = avg.mean(), avg.std(unbiased=True)
            level = torch.where(s > mean + self.z * sd, 0, torch.where(s < mean - self.z * sd, 2, level))
        self.similarity[index] = avg
        self.level[index] = level
        return level

    def step(self, brain: torch.Tensor, target: torch.Tensor, index: torch.Tensor,
             gather: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
        """:meth:`update` from a batch's brain embeddings and the targets they were given (cosine similarity);
        ``gather`` collects the ranks' ``(index, similarity)`` first, so every rank holds the same state."""
        sim = torch.nn.functional.cosine_similarity(brain.detach().float(), target.detach().float(), dim=1)
        if gather is not None:
            index, sim = gather(index), gather(sim)
        return self.update(index, sim)


