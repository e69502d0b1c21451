"""A multilayer perceptron on the flattened EEG/MEG trial (the strong simple baseline of UBP).

The trial ``(n_chans, n_times)`` is flattened into one vector and passed through hidden layers
(linear, layer norm, GELU, dropout) and a linear head. Simple models of this kind are competitive
on THINGS-EEG2 retrieval (e.g. with 17 posterior channels at 100 Hz); they are also the cheapest
encoders to train, which makes them the first thing to try on a new data set.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from neurodecode.encoders.base import TimeseriesEncoder, register_encoder

__all__ = ["MLP", "mlp_stack"]


def mlp_stack(in_features: int, hidden_sizes: Sequence[int], *, dropout: float = 0.0,
              layer_norm: bool = True) -> tuple[nn.Sequential, int]:
    """Hidden layers ``[Linear, LayerNorm?, GELU, Dropout] * len(hidden_sizes)``.

    Returns
    -------
    stack : nn.Sequential
    out_features : int
        Width of the last hidden layer (``in_features`` when ``hidden_sizes`` is empty).
    """
    layers: list[nn.Module] = []
    width = int(in_features)
    for h in hidden_sizes:
        if int(h) < 1:
            raise ValueError(f"hidden sizes must be positive integers, got {list(hidden_sizes)}.")
        layers.append(nn.Linear(width, int(h)))
        if layer_norm:
            layers.append(nn.LayerNorm(int(h)))
        layers += [nn.GELU(), nn.Dropout(dropout)]
        width = int(h)
    return nn.Sequential(*layers), width


@register_encoder("mlp")
class MLP(TimeseriesEncoder):
    """MLP on the flattened trial.

    Parameters
    ----------
    n_chans, n_times, n_outputs, sfreq, chs_info, n_subjects
        The encoder contract. No subject-specific parameters (``subject`` is ignored).
    hidden_sizes : sequence of int
        Widths of the hidden layers (default one layer of 1024); empty means a linear model.
    dropout : float
        Dropout after each hidden layer (0.5).
    input_dropout : float
        Dropout on the flattened input (0.0).
    layer_norm : bool
        Layer norm after each hidden linear layer.
    """

    def __init__(self, n_chans: int | None = None, n_times: int | None = None, n_outputs: int | None = None, *,
                 sfreq: float | None = None, chs_info: Any = None, n_subjects: int = 1,
                 hidden_sizes: Sequence[int] = (1024,), dropout: float = 0.5, input_dropout: float = 0.0,
                 layer_norm: bool = True) -> None:
        super().__init__(n_chans, n_times, n_outputs, sfreq=sfreq, chs_info=chs_info, n_subjects=n_subjects)
        self.input_dropout = nn.Dropout(input_dropout)
        self.body, self.n_features = mlp_stack(self.n_chans * self.n_times, list(hidden_sizes),
                                               dropout=dropout, layer_norm=layer_norm)
        self.head = nn.Linear(self.n_features, self.n_outputs)

    def forward_features(self, x: torch.Tensor, subject: torch.Tensor | int | None = None) -> torch.Tensor:
        """Last hidden layer ``(batch, hidden_sizes[-1])``."""
        self._prepare(x, subject)
        return self.body(self.input_dropout(x.flatten(1)))

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        """Linear head to ``n_outputs``."""
        return self.head(features)
