"""Brain-side augmentation of training batches: noise, time shift, channel dropout, same-label mixing.

:class:`BrainAugment` is given to :class:`~neurodecode.training.lit.AlignmentModule` as ``augment``
(YAML: ``model.init_args.augment: {class_path: neurodecode.training.augment.BrainAugment, init_args:
{noise_std: 0.2}}``). It acts on *normalised* inputs (zero mean, unit sd per channel), in training steps
only; validation and test see the responses as they are. Every transform is off by default. Randomness
comes from torch's global generator, which the module reseeds before every step (so a resumed run draws
the same augmentations).

The order is: mixing, time shift, channel dropout, noise.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from neurodecode.utils import check_option

__all__ = ["BrainAugment", "MIX_BY"]

MIX_BY = ("image", "concept")


class BrainAugment(nn.Module):
    """Random transforms of a training batch of normalised brain responses.

    Parameters
    ----------
    noise_std : float
        Gaussian noise added to every value, in units of the (normalised) channel sd.
    max_shift : int
        Each sample is shifted in time by a random whole number of samples in ``[-max_shift,
        max_shift]``; the samples shifted in are zeros (the channel mean). EEG/MEG only.
    channel_dropout : float
        Probability that a channel of a sample is set to zero (its mean) for the whole epoch; not
        rescaled (a missing channel, not dropout's inverted scaling).
    mix_prob : float
        Probability that a sample is replaced by ``lam * x_i + (1 - lam) * x_j``, ``lam ~ U(0, 1)``, with
        ``x_j`` another sample of the batch with the same label (a repetition of the same image, or a
        trial of the same concept: ``mix_by``); samples without a partner are left as they are.
    mix_by : {"image", "concept"}
        What "the same label" means for mixing (the module passes the labels).
    """

    def __init__(self, noise_std: float = 0.0, max_shift: int = 0, channel_dropout: float = 0.0,
                 mix_prob: float = 0.0, mix_by: str = "image") -> None:
        super().__init__()
        check_option("mix_by", mix_by, MIX_BY)
        for name, v in (("noise_std", noise_std), ("max_shift", max_shift)):
            if v < 0:
                raise ValueError(f"BrainAugment: {name} must be >= 0, got {v}.")
        for name, v in (("channel_dropout", channel_dropout), ("mix_prob", mix_prob)):
            if not 0 <= v <= 1:
                raise ValueError(f"BrainAugment: {name} must be in [0, 1], got {v}.")
        if channel_dropout >= 1:
            raise ValueError("BrainAugment: channel_dropout=1 would drop every channel; use a value below 1.")
        self.noise_std, self.max_shift = float(noise_std), int(max_shift)
        self.channel_dropout, self.mix_prob, self.mix_by = float(channel_dropout), float(mix_prob), mix_by

    def get_config(self) -> dict[str, Any]:
        """The settings (recorded with the model's hyper-parameters)."""
        return {"noise_std": self.noise_std, "max_shift": self.max_shift, "channel_dropout": self.channel_dropout,
                "mix_prob": self.mix_prob, "mix_by": self.mix_by}

    @property
    def active(self) -> bool:
        """Whether any transform is switched on."""
        return bool(self.noise_std or self.max_shift or self.channel_dropout or self.mix_prob)

    def mix(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Mix each chosen sample with a random other sample of the same label."""
        n = len(x)
        same = (labels.reshape(-1, 1) == labels.reshape(1, -1)) & ~torch.eye(n, dtype=torch.bool, device=x.device)
        score = torch.rand(n, n, device=x.device).masked_fill(~same, -1.0)
        partner = score.argmax(1)
        chosen = (torch.rand(n, device=x.device) < self.mix_prob) & same.any(1)
        lam = torch.rand(n, device=x.device).reshape(-1, *([1] * (x.ndim - 1)))
        mixed = lam * x + (1 - lam) * x[partner]
        return torch.where(chosen.reshape(-1, *([1] * (x.ndim - 1))), mixed, x)

    def shift(self, x: torch.Tensor) -> torch.Tensor:
        """Shift each sample of ``(batch, chans, times)`` by its own random lag, zero-filled."""
        n, c, t = x.shape
        lag = torch.randint(-self.max_shift, self.max_shift + 1, (n,), device=x.device)
        src = torch.arange(t, device=x.device).reshape(1, -1) - lag.reshape(-1, 1)
        valid = (src >= 0) & (src < t)
        out = x.gather(2, src.clamp(0, t - 1).unsqueeze(1).expand(n, c, t))
        return out * valid.unsqueeze(1).to(x.dtype)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Augmented copy of ``x`` (``(batch, chans, times)`` or ``(batch, voxels)``), normalised inputs."""
        if self.mix_prob > 0 and labels is not None and len(x) > 1:
            x = self.mix(x, labels)
        if self.max_shift > 0 and x.ndim == 3:
            x = self.shift(x)
        if self.channel_dropout > 0:
            keep = torch.rand(*x.shape[:2], device=x.device) >= self.channel_dropout
            x = x * keep.reshape(*x.shape[:2], *([1] * (x.ndim - 2))).to(x.dtype)
        if self.noise_std > 0:
            x = x + self.noise_std * torch.randn_like(x)
        return x
