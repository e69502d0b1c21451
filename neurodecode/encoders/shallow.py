"""Shallow ConvNet (Schirrmeister et al., 2017) with a linear head to the embedding.

Schirrmeister et al., "Deep learning with convolutional neural networks for EEG decoding and
visualization", Human Brain Mapping 38 (2017). Designed after filter-bank common spatial patterns:
a temporal convolution (40 filters of 25 samples at 250 Hz), a spatial convolution over all
channels (40 filters, no bias), batch norm, squaring, average pooling (75 samples, stride 15), a
logarithm, dropout 0.5 and a dense layer (here to ``n_outputs``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from neurodecode.encoders.base import TimeseriesEncoder, register_encoder

__all__ = ["ShallowConvNet"]


@register_encoder("shallow")
class ShallowConvNet(TimeseriesEncoder):
    """Shallow ConvNet with a square-log nonlinearity and a linear head.

    Parameters
    ----------
    n_chans, n_times, n_outputs, sfreq, chs_info, n_subjects
        The encoder contract. No subject-specific parameters (``subject`` is ignored).
    n_filters : int
        Filters of the temporal and spatial convolutions (40).
    filter_time_length, pool_time_length, pool_time_stride : int | None
        Temporal kernel (25), pooling window (75) and stride (15) in samples at 250 Hz; ``None``
        scales these paper values to ``sfreq`` when it is given.
    dropout : float
        Dropout before the head (0.5).
    log_eps : float
        The logarithm's input is clamped at this value (keeps gradients finite).
    """

    def __init__(self, n_chans: int | None = None, n_times: int | None = None, n_outputs: int | None = None, *,
                 sfreq: float | None = None, chs_info: Any = None, n_subjects: int = 1,
                 n_filters: int = 40, filter_time_length: int | None = None, pool_time_length: int | None = None,
                 pool_time_stride: int | None = None, dropout: float = 0.5, log_eps: float = 1e-6) -> None:
        super().__init__(n_chans, n_times, n_outputs, sfreq=sfreq, chs_info=chs_info, n_subjects=n_subjects)
        scale = self.sfreq / 250.0 if self.sfreq is not None else 1.0

        def pick(value: int | None, paper: int) -> int:
            return int(value) if value is not None else max(1, round(paper * scale))

        self.filter_time_length = pick(filter_time_length, 25)
        self.pool_time_length = pick(pool_time_length, 75)
        self.pool_time_stride = pick(pool_time_stride, 15)
        self.log_eps = float(log_eps)
        n_conv = self.n_times - self.filter_time_length + 1
        if n_conv < self.pool_time_length:
            raise ValueError(f"ShallowConvNet needs n_times >= filter_time_length + pool_time_length - 1 = "
                             f"{self.filter_time_length + self.pool_time_length - 1}, got n_times={self.n_times}; "
                             f"pass smaller filter_time_length/pool_time_length.")
        self.temporal = nn.Conv2d(1, n_filters, (1, self.filter_time_length))
        self.spatial = nn.Conv2d(n_filters, n_filters, (self.n_chans, 1), bias=False)
        self.bn = nn.BatchNorm2d(n_filters)
        self.pool = nn.AvgPool2d((1, self.pool_time_length), (1, self.pool_time_stride))
        self.dropout = nn.Dropout(dropout)
        n_pooled = (n_conv - self.pool_time_length) // self.pool_time_stride + 1
        self.n_features = n_filters * n_pooled
        self.head = nn.Linear(self.n_features, self.n_outputs)

    def forward_features(self, x: torch.Tensor, subject: torch.Tensor | int | None = None) -> torch.Tensor:
        """Log band power features ``(batch, n_filters * n_pooled)``."""
        self._prepare(x, subject)
        y = self.bn(self.spatial(self.temporal(x.unsqueeze(1))))
        y = torch.log(torch.clamp(self.pool(y * y), min=self.log_eps))
        return self.dropout(y).flatten(1)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        """Linear head to ``n_outputs``."""
        return self.head(features)
