"""EEGNet (Lawhern et al., 2018), version 4, with a linear head to the embedding.

Lawhern, Solon, Waytowich, Gordon, Hung and Lance, "EEGNet: a compact convolutional neural network
for EEG-based brain-computer interfaces", J. Neural Eng. 15 (2018). Block 1: a temporal
convolution (F1 filters, half a second long: 64 samples at 128 Hz) and batch norm, then a
depthwise spatial convolution (D filters per temporal filter, max-norm 1), batch norm, ELU,
average pooling by 4 and dropout. Block 2: a separable convolution (depthwise 16-sample temporal
filter then pointwise F2 = F1 * D filters), batch norm, ELU, average pooling by 8 and dropout.
The flattened output goes through a dense layer (max-norm 0.25), here to ``n_outputs``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from neurodecode.encoders.base import TimeseriesEncoder, register_encoder

__all__ = ["EEGNet"]


def _same_pad(kernel: int) -> nn.ZeroPad2d:
    """Zero padding that keeps the time length through a ``(1, kernel)`` convolution (odd or even kernel)."""
    left = (kernel - 1) // 2
    return nn.ZeroPad2d((left, kernel - 1 - left, 0, 0))


class _MaxNormConv2d(nn.Conv2d):
    """Conv2d whose per-filter weight norm is capped (applied differentiably at each call)."""

    def __init__(self, *args: Any, max_norm: float | None = 1.0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.max_norm = max_norm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight if self.max_norm is None else torch.renorm(self.weight, 2, 0, self.max_norm)
        return self._conv_forward(x, w, self.bias)


class _MaxNormLinear(nn.Linear):
    def __init__(self, *args: Any, max_norm: float | None = 0.25, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.max_norm = max_norm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight if self.max_norm is None else torch.renorm(self.weight, 2, 0, self.max_norm)
        return F.linear(x, w, self.bias)


@register_encoder("eegnet")
class EEGNet(TimeseriesEncoder):
    """EEGNet-v4 with a linear head to ``n_outputs``.

    Parameters
    ----------
    n_chans, n_times, n_outputs, sfreq, chs_info, n_subjects
        The encoder contract. EEGNet has no subject-specific parameters (``subject`` is ignored).
    F1, D, F2 : int
        Temporal filters (8), depth multiplier (2) and pointwise filters (16).
    kernel_length : int | None
        Temporal kernel in samples; ``None`` means half a second: 64 samples at 128 Hz, scaled to
        ``sfreq`` when it is given (``round(64 * sfreq / 128)``), 64 otherwise.
    separable_kernel : int
        Temporal length of the separable convolution (16).
    pool1, pool2 : int
        Average pooling factors of the two blocks (4 and 8).
    dropout : float
        Dropout rate (0.25, the paper's cross-subject value; 0.5 within subject).
    max_norm : bool
        Apply the paper's max-norm constraints (1 on the depthwise filters, 0.25 on the head).
    """

    def __init__(self, n_chans: int | None = None, n_times: int | None = None, n_outputs: int | None = None, *,
                 sfreq: float | None = None, chs_info: Any = None, n_subjects: int = 1,
                 F1: int = 8, D: int = 2, F2: int = 16, kernel_length: int | None = None,
                 separable_kernel: int = 16, pool1: int = 4, pool2: int = 8, dropout: float = 0.25,
                 max_norm: bool = True) -> None:
        super().__init__(n_chans, n_times, n_outputs, sfreq=sfreq, chs_info=chs_info, n_subjects=n_subjects)
        if kernel_length is None:
            kernel_length = max(1, round(64 * self.sfreq / 128)) if self.sfreq is not None else 64
        self.kernel_length = int(kernel_length)
        n_after = self.n_times // pool1 // pool2
        if n_after < 1:
            raise ValueError(f"EEGNet pools time by pool1 * pool2 = {pool1 * pool2}, more than n_times="
                             f"{self.n_times}; use smaller pool1/pool2.")
        self.block1 = nn.Sequential(
            _same_pad(self.kernel_length),
            nn.Conv2d(1, F1, (1, self.kernel_length), bias=False),
            nn.BatchNorm2d(F1),
            _MaxNormConv2d(F1, F1 * D, (self.n_chans, 1), groups=F1, bias=False, max_norm=1.0 if max_norm else None),
            nn.BatchNorm2d(F1 * D),
            nn.ELU(),
            nn.AvgPool2d((1, pool1)),
            nn.Dropout(dropout),
        )
        self.block2 = nn.Sequential(
            _same_pad(separable_kernel),
            nn.Conv2d(F1 * D, F1 * D, (1, separable_kernel), groups=F1 * D, bias=False),
            nn.Conv2d(F1 * D, F2, 1, bias=False),
            nn.BatchNorm2d(F2),
            nn.ELU(),
            nn.AvgPool2d((1, pool2)),
            nn.Dropout(dropout),
        )
        self.n_features = F2 * n_after
        self.head = _MaxNormLinear(self.n_features, self.n_outputs, max_norm=0.25 if max_norm else None)

    def forward_features(self, x: torch.Tensor, subject: torch.Tensor | int | None = None) -> torch.Tensor:
        """Flattened output of the two blocks ``(batch, F2 * n_times // (pool1 * pool2))``."""
        self._prepare(x, subject)
        return self.block2(self.block1(x.unsqueeze(1))).flatten(1)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        """Linear head to ``n_outputs``."""
        return self.head(features)
