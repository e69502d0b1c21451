"""The brain module of Défossez et al. (2023) and Benchetrit et al. (2023) for MEG and EEG.

Written from the papers' descriptions:

- Défossez, Caucheteux, Rapin, Kabeli and King, "Decoding speech perception from non-invasive
  brain recordings", Nature Machine Intelligence 5 (2023): a spatial attention layer remaps the
  sensors onto a fixed number of virtual channels (270). Each virtual channel ``j`` weighs sensor
  ``i`` by ``softmax_i(a_j(x_i, y_i))``, where ``(x_i, y_i)`` is the sensor's 2-D position
  normalised to [0, 1] and ``a_j`` a learned Fourier series of the position (``K = 32``
  frequencies per axis, so ``2 K**2`` cosine and sine features). During training, all sensors
  within a radius (0.2) of a random point are dropped. Then a 1 x 1 convolution, a subject layer
  (one matrix per subject), and five blocks of three convolutions (kernel 3, 320 channels): two
  residual ones with batch norm and GELU whose dilations cycle through 1, 2, 4, 8, 16, then one
  of dilation 2 with twice the channels followed by a GLU. Two 1 x 1 convolutions (GELU between)
  give the output features.
- Benchetrit, Banville and King, "Brain decoding: toward real-time reconstruction of visual
  perception", ICLR 2024: for one embedding per trial, the time dimension is collapsed by a
  learned affine map over time (instead of averaging), and two MLP heads are trained, one with
  the contrastive (CLIP) loss and one with the regression (MSE) loss.

:meth:`BrainModule.forward` returns the contrastive head's output; :meth:`BrainModule.forward_heads`
returns both heads (``{"contrastive": ..., "regression": ...}``), which
:class:`neurodecode.losses.AlignmentLoss` accepts in place of a single embedding.

Speed (``implementation="fast"``, the default; ``"reference"`` runs the plain layers, same parameters
and the same function up to float rounding):

- the network runs time-last ``(batch, n_times, channels)``, so each 1 x 1 layer is one matrix product;
- the 1 x 1 input convolution and the subject matrices are multiplied together once per step, and in
  eval mode the attention too (one product per subject from sensors to the first block);
- spatial dropout: the softmax's exponentials are shared by the batch; a dropped sensor is zeroed in
  the input and each example's normaliser is the sum over its kept sensors;
- the last 1 x 1 convolution is linear, so it is applied after the (linear) collapse of time: at
  ``n_features`` x ``2 hidden`` it was the largest layer, now it acts on one vector per example;
- on CPU the dilated convolutions use Winograd's minimal filtering F(m, 3) (Lavin and Gray, "Fast
  algorithms for convolutional neural networks", CVPR 2016; Toom-Cook matrices from the
  interpolation points 0, +-1, +-2, +-1/2 and infinity) on the ``dilation`` interleaved sub-sequences:
  ``m + 2`` matrix products per ``m`` outputs instead of ``3 m`` (``m`` chosen per dilation, up to 6).
  Under autocast, in half precision and on accelerators the convolutions stay direct.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from neurodecode.encoders.base import TimeseriesEncoder, per_subject, register_encoder, subject_groups
from neurodecode.utils import check_option

__all__ = ["BrainModule", "SpatialAttention", "sensor_positions_2d"]

UNKNOWN_SUBJECT = ("mean", "identity")
IMPLEMENTATIONS = ("fast", "reference")
# finite interpolation points of the Toom-Cook (Winograd) convolutions, in order of use (and infinity)
_POINTS = (0.0, 1.0, -1.0, 2.0, -2.0, 0.5, -0.5)


# --------------------------------------------------------------------------------------------------
# sensor positions
# --------------------------------------------------------------------------------------------------
def _fit_sphere_center(pos: np.ndarray) -> np.ndarray:
    """Least-squares centre of the sphere through the points (centroid when degenerate)."""
    if len(pos) >= 4:
        a = np.c_[2 * pos, np.ones(len(pos))]
        b = (pos**2).sum(1)
        sol, _, rank, _ = np.linalg.lstsq(a, b, rcond=None)
        if rank == 4 and np.all(np.isfinite(sol)):
            center = sol[:3]
            radius = np.sqrt(max(sol[3] + center @ center, 0.0))
            # a sphere much larger than the sensor cloud means nearly coplanar points: not trusted
            spread = np.ptp(pos, axis=0).max()
            if 0 < radius < 10 * max(spread, 1e-12):
                return center
    center = pos.mean(0)
    center[2] -= np.ptp(pos, axis=0).max()  # below the cap of sensors, so angles stay small
    return center


def _normalize_unit_square(xy: np.ndarray) -> np.ndarray:
    lo, hi = xy.min(0), xy.max(0)
    span = np.where(hi - lo > 0, hi - lo, 1.0)
    out = (xy - lo) / span
    out[:, hi - lo <= 0] = 0.5
    return out


def sensor_positions_2d(chs_info: Sequence[dict[str, Any]]) -> np.ndarray:
    """2-D sensor positions in [0, 1] from 3-D channel locations.

    The 3-D positions (``loc[:3]`` of each channel) are taken relative to the centre of a sphere
    fitted to them and projected with an azimuthal equidistant projection seen from the top of
    the head (what MNE's topographic maps do); each axis is then scaled to [0, 1].

    Parameters
    ----------
    chs_info : list of dict
        Normalised channel descriptions (:func:`~neurodecode.encoders.base.normalize_chs_info`).

    Returns
    -------
    positions : ndarray, shape (n_chans, 2)
    """
    missing = [ch["ch_name"] for ch in chs_info if ch.get("loc") is None]
    if missing:
        raise ValueError(f"BrainModule needs sensor positions, but {len(missing)} channel(s) have none "
                         f"(e.g. {missing[:5]}). Set a montage on the recording before preparing it "
                         f"(e.g. raw.set_montage('colin27_1005') for 10-05 EEG names) or pass "
                         f"positions=[[x, y], ...] explicitly.")
    pos = np.asarray([ch["loc"][:3] for ch in chs_info], dtype=float)
    v = pos - _fit_sphere_center(pos)
    norm = np.linalg.norm(v, axis=1)
    norm[norm == 0] = 1.0
    theta = np.arccos(np.clip(v[:, 2] / norm, -1.0, 1.0))
    phi = np.arctan2(v[:, 1], v[:, 0])
    return _normalize_unit_square(np.c_[theta * np.cos(phi), theta * np.sin(phi)])


# --------------------------------------------------------------------------------------------------
# layers
# --------------------------------------------------------------------------------------------------
class SpatialAttention(nn.Module):
    """Fourier-parametrised attention of virtual channels over sensor positions.

    Parameters
    ----------
    positions : array, shape (n_chans, 2)
        Sensor positions in [0, 1].
    n_virtual : int
        Output (virtual) channels.
    n_fourier : int
        Frequencies per axis ``K``; the attention logits are a Fourier series with ``2 K**2``
        learned coefficients per virtual channel.
    dropout_radius : float
        Training-time spatial dropout: all sensors closer than this to a random point of the unit
        square (drawn per example) are removed from the softmax; 0 disables it.
    """

    def __init__(self, positions: np.ndarray | torch.Tensor, n_virtual: int = 270, n_fourier: int = 32,
                 dropout_radius: float = 0.2) -> None:
        super().__init__()
        pos = torch.as_tensor(np.asarray(positions, dtype=np.float32))
        self.register_buffer("positions", pos, persistent=False)
        k = torch.arange(n_fourier, dtype=torch.float32)
        phase = 2 * math.pi * (pos[:, 0, None, None] * k[None, :, None] + pos[:, 1, None, None] * k[None, None, :])
        phase = phase.reshape(len(pos), -1)
        self.register_buffer("fourier", torch.cat([torch.cos(phase), torch.sin(phase)], dim=1), persistent=False)
        self.weight = nn.Parameter(torch.randn(n_virtual, 2 * n_fourier**2) / math.sqrt(2 * n_fourier**2))
        self.dropout_radius = float(dropout_radius)

    def logits(self) -> torch.Tensor:
        """Attention logits ``(n_virtual, n_chans)`` (before the softmax over sensors)."""
        return self.weight @ self.fourier.T.to(self.weight.dtype)

    @property
    def drops(self) -> bool:
        """Whether the spatial dropout is active (training mode and a positive radius)."""
        return self.training and self.dropout_radius > 0

    def dropped(self, batch_size: int) -> torch.Tensor:
        """A random spatial-dropout mask ``(batch, n_chans)``, True for the removed sensors."""
        center = torch.rand(batch_size, 1, 2, device=self.positions.device)
        dropped = torch.linalg.vector_norm(self.positions[None] - center, dim=-1) < self.dropout_radius
        return dropped & ~dropped.all(dim=1, keepdim=True)  # never drop every sensor of an example

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(batch, n_chans, n_times)`` -> ``(batch, n_virtual, n_times)``."""
        logits = self.logits()
        if self.drops:
            logits = logits[None].masked_fill(self.dropped(x.shape[0])[:, None, :], float("-inf"))
        attn = torch.softmax(logits, dim=-1).to(x.dtype)
        return torch.matmul(attn, x)

    def forward_time_last(self, x: torch.Tensor) -> torch.Tensor:
        """:meth:`forward` in training mode with a time-last output ``(batch, n_times, n_virtual)``.

        The exponentials of the softmax are shared by the batch: dropped sensors are zeroed in the
        input and each example's normaliser sums the exponentials of its kept sensors.
        """
        logits = self.logits()
        dropped = self.dropped(len(x)) if self.drops else x.new_zeros(len(x), logits.shape[1], dtype=torch.bool)
        if x.device.type == "cpu":  # off the CPU the underflow check below would make the host wait each step
            e = torch.exp(logits - logits.amax(dim=-1, keepdim=True))  # (V, C)
            keep = (~dropped).to(e.dtype)
            norm = keep @ e.T  # (B, V)
            if not bool((norm < 1e-30).any()):  # else the kept sensors' exponentials underflow: the plain softmax
                y = torch.matmul((x * keep[:, :, None].to(x.dtype)).transpose(1, 2), e.T.to(x.dtype))
                return y / norm[:, None, :].to(x.dtype)
        attn = torch.softmax(logits[None].masked_fill(dropped[:, None, :], float("-inf")), dim=-1)
        return torch.matmul(attn.to(x.dtype), x).transpose(1, 2)


@functools.cache
def _toom_cook(m: int, r: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(A^T, G, B^T)`` of Winograd's F(m, r): ``y = A^T [(G g) * (B^T d)]`` correlates ``d`` with ``g``.

    Linear convolution evaluates both polynomials at ``n = m + r - 1`` points (Vandermonde matrices,
    the point at infinity giving the leading coefficient) and interpolates; correlation is its
    transpose.
    """
    pts = _POINTS[:m + r - 2]

    def vander(k: int) -> np.ndarray:
        return np.array([[p**i for i in range(k)] for p in pts] + [[0.0] * (k - 1) + [1.0]])

    return vander(m).T, vander(r), np.linalg.inv(vander(m + r - 1)).T


def _tile(q: int, r: int) -> int:
    """Output tile ``m`` of F(m, r) with the fewest products for ``q`` outputs (0: direct is cheaper)."""
    best, cost = 0, q * r
    for m in range(max(2, r - 1), len(_POINTS) + 3 - r):  # m >= r - 1: a tile overlaps only the next one
        c = -(-q // m) * (m + r - 1)
        if c < cost:
            best, cost = m, c
    return best


def _winograd_ok(x: torch.Tensor) -> bool:
    return (x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64)
            and not torch.is_autocast_enabled("cpu"))


def conv_time_last(x: torch.Tensor, conv: nn.Conv1d) -> torch.Tensor:
    """``conv`` (odd kernel, 'same' zero padding, any dilation) on time-last ``(batch, n_times, channels)``.

    On CPU in float32/64 it uses Winograd's F(m, r) on the ``dilation`` interleaved sub-sequences.
    """
    b, t, c = x.shape
    w, d = conv.weight, conv.dilation[0]
    o, _, r = w.shape
    if r == 1:
        return F.linear(x, w[:, :, 0], conv.bias)
    m = _tile(-(-t // d), r) if _winograd_ok(x) else 0
    if m == 0:
        return conv(x.transpose(1, 2)).transpose(1, 2)
    bias = conv.bias if conv.bias is not None else w.new_zeros(o)
    return _Winograd.apply(x, w, bias, d, m)


class _Winograd(torch.autograd.Function):
    """F(m, r) on the ``d`` interleaved sub-sequences of time-last input, with a backward of few copies."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor, d: int, m: int) -> torch.Tensor:
        (b, t, c), (o, _, r) = x.shape, w.shape
        n, h, nt = m + r - 1, (r - 1) // 2, -(-((t + d - 1) // d) // m)  # nt: tiles per sub-sequence
        at, g, bt = (torch.as_tensor(a, dtype=x.dtype) for a in _toom_cook(m, r))
        xp = F.pad(x, (0, 0, h * d, ((nt + 1) * m - h) * d - t)).view(b, (nt + 1) * m, d, c)
        # tile i reads sub-sequence steps i m .. i m + n - 1: its own m steps and the next tile's first r - 1
        tiles = x.new_empty(n, b, nt, d, c)
        tiles[:m] = xp[:, :nt * m].view(b, nt, m, d, c).permute(2, 0, 1, 3, 4)
        tiles[m:] = xp[:, m:].view(b, nt, m, d, c)[:, :, :r - 1].permute(2, 0, 1, 3, 4)
        v = (bt @ tiles.view(n, -1)).view(n, -1, c)  # (n, b nt d, c)
        u = torch.einsum("pk,ock->pco", g, w)  # transformed kernels (n, c, o)
        y = (at @ torch.bmm(v, u).view(n, -1)).view(m, b, nt, d, o).permute(1, 2, 0, 3, 4)
        ctx.save_for_backward(v, u)
        ctx.sizes = (b, t, c, o, r, d, m, n, h, nt)
        return y.reshape(b, nt * m * d, o)[:, :t] + bias

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, gy: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        v, u = ctx.saved_tensors
        b, t, c, o, r, d, m, n, h, nt = ctx.sizes
        at, g, bt = (torch.as_tensor(a, dtype=gy.dtype) for a in _toom_cook(m, r))
        gy_tiles = F.pad(gy, (0, 0, 0, nt * m * d - t)).view(b, nt, m, d, o).permute(2, 0, 1, 3, 4)
        gm = (at.T @ gy_tiles.reshape(m, -1)).view(n, -1, o)
        gw = torch.einsum("pk,pco->ock", g, torch.bmm(v.transpose(1, 2), gm))
        gx = None
        if ctx.needs_input_grad[0]:
            gt = (bt.T @ torch.bmm(gm, u.transpose(1, 2)).view(n, -1)).view(n, b, nt, d, c)
            gxp = gy.new_zeros(b, (nt + 1) * m, d, c)
            gxp[:, :nt * m] = gt[:m].permute(1, 2, 0, 3, 4).reshape(b, nt * m, d, c)
            gxp[:, m:].view(b, nt, m, d, c)[:, :, :r - 1] += gt[m:].permute(1, 2, 0, 3, 4)
            gx = gxp.view(b, -1, c)[:, h * d:h * d + t]
        return gx, gw, gy.sum((0, 1)), None, None


class _ConvBlock(nn.Module):
    """Two residual dilated convolutions (BN, GELU) and a GLU convolution (Défossez et al.)."""

    def __init__(self, in_channels: int, channels: int, dilations: tuple[int, int], kernel: int = 3,
                 glu_dilation: int = 2, dropout: float = 0.0) -> None:
        super().__init__()
        self.convs = nn.ModuleList()
        self.norms = nn.ModuleList()
        width = in_channels
        for d in dilations:
            self.convs.append(nn.Conv1d(width, channels, kernel, dilation=d, padding=d * (kernel - 1) // 2))
            self.norms.append(nn.BatchNorm1d(channels))
            width = channels
        self.in_channels = in_channels
        self.glu = nn.Conv1d(channels, 2 * channels, kernel, dilation=glu_dilation,
                             padding=glu_dilation * (kernel - 1) // 2)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv, norm in zip(self.convs, self.norms, strict=True):
            y = self.dropout(F.gelu(norm(conv(x))))
            x = x + y if x.shape[1] == y.shape[1] else y
        return F.glu(self.glu(x), dim=1)

    def forward_time_last(self, x: torch.Tensor) -> torch.Tensor:
        """:meth:`forward` on time-last ``(batch, n_times, channels)`` (the same dropout masks)."""
        for conv, norm in zip(self.convs, self.norms, strict=True):
            y = conv_time_last(x, conv)
            y = F.gelu(norm(y.reshape(-1, y.shape[-1])).view(y.shape))
            p = self.dropout.p
            if self.training and p > 0:  # the mask nn.Dropout draws on (B, C, T)
                mask = torch.empty_like(y.transpose(1, 2), memory_format=torch.contiguous_format).bernoulli_(1 - p)
                y = y * (mask.div_(1 - p) if p < 1 else mask).transpose(1, 2)
            x = x + y if x.shape[-1] == y.shape[-1] else y
        return F.glu(conv_time_last(x, self.glu), dim=-1)


class _Head(nn.Sequential):
    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__(nn.LayerNorm(in_features), nn.GELU(), nn.Linear(in_features, out_features))


# --------------------------------------------------------------------------------------------------
# the encoder
# --------------------------------------------------------------------------------------------------
@register_encoder("brain_module")
class BrainModule(TimeseriesEncoder):
    """Spatial attention, subject layer, dilated residual convolutions, temporal aggregation, two heads.

    Parameters
    ----------
    n_chans, n_times, n_outputs, sfreq, chs_info, n_subjects
        The encoder contract. ``chs_info`` must hold sensor positions unless ``positions`` is given.
    positions : array-like, shape (n_chans, 2) | None
        Explicit 2-D sensor positions (any scale; each axis is rescaled to [0, 1]). Overrides the
        positions derived from ``chs_info``.
    n_virtual : int
        Virtual channels of the spatial attention (270).
    n_fourier : int
        Fourier frequencies per axis of the attention (32).
    spatial_dropout : float
        Radius of the training-time spatial dropout in normalised units (0.2).
    hidden : int
        Channels of the convolution blocks (320).
    n_blocks : int
        Convolution blocks (5), each with two residual convolutions and a GLU convolution.
    kernel_size : int
        Temporal kernel of the convolutions (3).
    n_features : int
        Channels of the last 1 x 1 convolution, i.e. the width of the features the heads read
        (2048 by default; our choice).
    regression_outputs : int | None
        Output size of the regression head (``n_outputs`` when ``None``).
    unknown_subject : {"mean", "identity"}
        Subject layer used for ``subject=None``: the mean of the subject matrices (default) or the
        identity (no subject layer). With ``n_subjects=1`` the mean is subject 0's matrix.
    dropout : float
        Dropout after each residual convolution (0).
    implementation : {"fast", "reference"}
        ``"fast"`` (default) computes the same function with fewer operations (see the module
        docstring); ``"reference"`` runs the plain layers. Both read the same parameters, and the
        attribute can be switched on a built model.

    Notes
    -----
    Subject matrices start as the identity. ``forward_features`` returns the time-aggregated
    features ``(batch, n_features)``; ``forward_head`` is the contrastive head.
    """

    def __init__(self, n_chans: int | None = None, n_times: int | None = None, n_outputs: int | None = None, *,
                 sfreq: float | None = None, chs_info: Any = None, n_subjects: int = 1,
                 positions: Sequence[Sequence[float]] | None = None, n_virtual: int = 270, n_fourier: int = 32,
                 spatial_dropout: float = 0.2, hidden: int = 320, n_blocks: int = 5, kernel_size: int = 3,
                 n_features: int = 2048, regression_outputs: int | None = None, unknown_subject: str = "mean",
                 dropout: float = 0.0, implementation: str = "fast") -> None:
        super().__init__(n_chans, n_times, n_outputs, sfreq=sfreq, chs_info=chs_info, n_subjects=n_subjects)
        check_option("unknown_subject", unknown_subject, UNKNOWN_SUBJECT)
        self.implementation = implementation
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd (same-length dilated convolutions), got {kernel_size}.")
        if positions is not None:
            pos = np.asarray(positions, dtype=float)
            if pos.shape != (self.n_chans, 2) or not np.all(np.isfinite(pos)):
                raise ValueError(f"positions must be finite 2-D sensor positions of shape (n_chans, 2) = "
                                 f"({self.n_chans}, 2), got shape {pos.shape}.")
            pos = _normalize_unit_square(pos)
        elif self.chs_info is not None:
            pos = sensor_positions_2d(self.chs_info)
        else:
            raise ValueError("BrainModule needs sensor positions: pass chs_info (mne.Info['chs'] with a montage "
                             "set) or positions=[[x, y], ...] (one pair per channel).")
        self.unknown_subject = unknown_subject
        self.spatial_attention = SpatialAttention(pos, n_virtual, n_fourier, spatial_dropout)
        self.initial = nn.Conv1d(n_virtual, n_virtual, 1)
        self.subject_layers = nn.Parameter(torch.eye(n_virtual).repeat(self.n_subjects, 1, 1))
        blocks = []
        width = n_virtual
        for k in range(int(n_blocks)):
            dil = (2 ** ((2 * k) % 5), 2 ** ((2 * k + 1) % 5))
            blocks.append(_ConvBlock(width, hidden, dil, kernel_size, dropout=dropout))
            width = hidden
        self.blocks = nn.Sequential(*blocks)
        self.final = nn.Sequential(nn.Conv1d(width, 2 * hidden, 1), nn.GELU(), nn.Conv1d(2 * hidden, n_features, 1))
        self.temporal_aggregation = nn.Linear(self.n_times, 1)
        with torch.no_grad():  # start as the average over time
            self.temporal_aggregation.weight.fill_(1.0 / self.n_times)
            self.temporal_aggregation.bias.zero_()
        self.n_features = int(n_features)
        self.contrastive_head = _Head(self.n_features, self.n_outputs)
        self.regression_head = _Head(self.n_features, int(regression_outputs or self.n_outputs))

    def _subject_layer(self, x: torch.Tensor, subject: torch.Tensor | None) -> torch.Tensor:
        if subject is None:
            if self.unknown_subject == "identity":
                return x
            return torch.matmul(self.subject_layers.mean(0).to(x.dtype), x)
        return per_subject(lambda s, rows: torch.matmul(self.subject_layers[s].to(x.dtype), x[rows]), subject)

    @property
    def implementation(self) -> str:
        """``"fast"`` or ``"reference"``; checked when set, so a built model can be switched."""
        return self._implementation

    @implementation.setter
    def implementation(self, value: str) -> None:
        check_option("implementation", value, IMPLEMENTATIONS)
        self._implementation = value

    def forward_features(self, x: torch.Tensor, subject: torch.Tensor | int | None = None) -> torch.Tensor:
        """Time-aggregated features ``(batch, n_features)``."""
        subject = self._prepare(x, subject)
        if self.implementation == "fast":
            return self._features_fast(x, subject)
        y = self.initial(self.spatial_attention(x))
        y = self._subject_layer(y, subject)
        y = self.final(self.blocks(y))  # (B, n_features, n_times)
        return self.temporal_aggregation(y).squeeze(-1)

    def _input_maps(self, subject: torch.Tensor | None) -> list[tuple[Any, torch.Tensor, torch.Tensor]]:
        """``[(rows or None for all, matrix, bias)]``: subject matrix times the 1 x 1 input convolution."""
        w, b = self.initial.weight[:, :, 0], self.initial.bias
        if subject is None:
            if self.unknown_subject == "identity":
                return [(None, w, b)]
            s = self.subject_layers.mean(0)
            return [(None, s @ w, s @ b)]
        layers = self.subject_layers
        return [(rows, layers[s] @ w, layers[s] @ b) for s, rows in subject_groups(subject)]

    def _features_fast(self, x: torch.Tensor, subject: torch.Tensor | None) -> torch.Tensor:
        attn = self.spatial_attention
        maps = self._input_maps(subject)
        if attn.drops:
            y = attn.forward_time_last(x)  # (B, T, V)
        else:  # one map per subject from the sensors to the first block, attention included
            a = torch.softmax(attn.logits(), dim=-1)
            y, maps = x.transpose(1, 2), [(rows, w @ a, b) for rows, w, b in maps]
        if len(maps) == 1 and maps[0][0] is None:
            y = F.linear(y, maps[0][1].to(y.dtype), maps[0][2].to(y.dtype))
        else:
            parts = [(rows, F.linear(y[rows], w.to(y.dtype), b.to(y.dtype))) for rows, w, b in maps]
            y = parts[0][1].new_empty((len(y), *parts[0][1].shape[1:]))  # (autocast may change the dtype)
            for rows, part in parts:
                y[rows] = part
        for block in self.blocks:
            y = block.forward_time_last(y)
        conv1, act, conv2 = self.final
        y = act(F.linear(y, conv1.weight[:, :, 0], conv1.bias))  # (B, T, 2 hidden)
        agg = self.temporal_aggregation
        # time is collapsed before the last (linear) 1 x 1 convolution: W (sum_t a_t h_t) + b sum_t a_t + c
        z = torch.matmul(y.transpose(1, 2), agg.weight[0].to(y.dtype))  # (B, 2 hidden)
        return F.linear(z, conv2.weight[:, :, 0], conv2.bias * agg.weight.sum()) + agg.bias

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        """The contrastive (CLIP) head."""
        return self.contrastive_head(features)

    def forward_heads(self, x: torch.Tensor, subject: torch.Tensor | int | None = None) -> dict[str, torch.Tensor]:
        """Both heads: ``{"contrastive": (batch, n_outputs), "regression": (batch, regression_outputs)}``."""
        features = self.forward_features(x, subject)
        return {"contrastive": self.contrastive_head(features), "regression": self.regression_head(features)}
