"""fMRI encoder: a MindEye-style residual MLP on voxel patterns.

Scotti et al., "Reconstructing the Mind's Eye: fMRI-to-Image with Contrastive Learning and
Diffusion Priors" (NeurIPS 2023), map flattened voxels with a linear layer (layer norm, GELU,
dropout 0.5) to a wide hidden space, refine it with residual MLP blocks (linear, layer norm, GELU,
dropout 0.15) and map it linearly to the target embedding. MindEye2 (Scotti et al., ICML 2024)
shares that backbone across subjects and gives each subject its own input linear map into the
shared latent space, which :class:`FMRIMLP` does when ``n_subjects > 1``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from neurodecode.encoders.base import VoxelEncoder, per_subject, register_encoder

__all__ = ["FMRIMLP"]


class _ResidualBlock(nn.Module):
    def __init__(self, width: int, dropout: float) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(width, width), nn.LayerNorm(width), nn.GELU(), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


@register_encoder("fmri_mlp")
class FMRIMLP(VoxelEncoder):
    """MindEye-style residual MLP from voxels to an embedding.

    Parameters
    ----------
    n_voxels, n_outputs, n_subjects
        The encoder contract for voxel input (:class:`~neurodecode.encoders.base.VoxelEncoder`).
        With ``n_subjects > 1`` each subject has its own input layer (MindEye2's shared-subject
        latent space); ``subject=None`` then uses the average of the subject input layers (their
        mean weights and biases, which equals averaging their outputs).
    hidden : int
        Width of the hidden space (4096 in MindEye).
    n_blocks : int
        Residual MLP blocks (4).
    input_dropout : float
        Dropout after the input layer (0.5).
    block_dropout : float
        Dropout inside the residual blocks (0.15).
    """

    def __init__(self, n_voxels: int | None = None, n_outputs: int | None = None, *, n_subjects: int = 1,
                 hidden: int = 4096, n_blocks: int = 4, input_dropout: float = 0.5,
                 block_dropout: float = 0.15) -> None:
        super().__init__(n_voxels, n_outputs, n_subjects=n_subjects)
        self.hidden = int(hidden)
        self.input_layers = nn.ModuleList(nn.Linear(self.n_voxels, self.hidden) for _ in range(self.n_subjects))
        self.input_post = nn.Sequential(nn.LayerNorm(self.hidden), nn.GELU(), nn.Dropout(input_dropout))
        self.blocks = nn.Sequential(*(_ResidualBlock(self.hidden, block_dropout) for _ in range(int(n_blocks))))
        self.n_features = self.hidden
        self.head = nn.Linear(self.hidden, self.n_outputs)

    def _input_projection(self, x: torch.Tensor, subject: torch.Tensor | None) -> torch.Tensor:
        if self.n_subjects == 1:
            return self.input_layers[0](x)
        if subject is None:
            w = torch.stack([lin.weight for lin in self.input_layers]).mean(0)
            b = torch.stack([lin.bias for lin in self.input_layers]).mean(0)
            return F.linear(x, w, b)
        return per_subject(lambda s, rows: self.input_layers[s](x[rows]), subject)

    def forward_features(self, x: torch.Tensor, subject: torch.Tensor | int | None = None) -> torch.Tensor:
        """Hidden representation after the residual blocks ``(batch, hidden)``."""
        subject = self._prepare(x, subject)
        return self.blocks(self.input_post(self._input_projection(x, subject)))

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        """Linear map to ``n_outputs``."""
        return self.head(features)
