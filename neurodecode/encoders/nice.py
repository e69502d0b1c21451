"""NICE: the temporal-spatial convolution encoder and projector of Song et al. (ICLR 2024).

Song, Liu, Li, Gao and Song, "Decoding Natural Images from EEG for Object Recognition", ICLR 2024.
The EEG encoder ("TSConv", revised from ShallowNet) is a temporal convolution (1 x 25, 40 filters),
an average pooling (1 x 51, stride 5), batch norm and ELU, a spatial convolution over all channels
(n_chans x 1, 40 filters), batch norm, ELU and dropout 0.5, and a 1 x 1 convolution; its output is
flattened (time-major) and a projector maps it to the embedding: a linear layer, a residual block
(GELU, linear, dropout 0.5) and a layer norm. ATM (:mod:`neurodecode.encoders.atm`) reuses both.

Implementation note (speed and memory, same numerics)
-----------------------------------------------------
A convolution followed by an average pooling is one linear map: convolving the input with the
temporal kernel and then averaging 51 neighbours equals convolving it with the temporal kernel
smoothed by a 51-sample box (a combined kernel of 25 + 51 - 1 = 75 taps) evaluated every 5
samples. The reference layers compute the full-rate convolution output ``(batch, 40, n_chans,
n_times - 24)`` (2.3 GB at batch 1024 for THINGS-EEG2 shapes) and pool it. Here
(``implementation="fused"``, the default) the combined filter is applied as one matrix product on
overlapping windows of the input, and the sequence "filter, batch norm, ELU, spatial convolution"
runs as one autograd function (:class:`_FusedTemporalSpatial`) over chunks of the batch: the
batch-norm statistics are gathered in a first pass, and the backward pass recomputes what it needs
chunk by chunk, so that no activation of that size is ever kept (the whole block keeps its input
and a few vectors). The parameters are those of the original layers (``temporal_conv`` is still
a ``Conv2d(1, 40, (1, 25))``), and ``implementation="reference"`` runs the original sequence of
layers on the same parameters, which the tests use to check that both agree.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from neurodecode.encoders.base import TimeseriesEncoder, register_encoder
from neurodecode.utils import check_option

__all__ = ["NICE", "TSConv", "Projector"]

IMPLEMENTATIONS = ("fused", "reference")
# size of one chunk's (rows, channels, steps, filters) activation in the fused block (small enough
# for the element-wise passes over a chunk to stay in cache), and how much the block may keep
# between its passes to avoid recomputing chunks
_CHUNK_BYTES = 4 * 2**20
_CACHE_BYTES = 256 * 2**20


class TSConv(nn.Module):
    """Temporal-spatial convolution block of NICE/ATM, flattened output.

    Parameters
    ----------
    n_chans : int
        Number of rows (channels) of the input ``(batch, n_chans, n_times)``.
    n_times : int
        Number of samples of the input.
    n_filters : int
        Filters of the temporal and the spatial convolutions (40 in the papers).
    emb_size : int
        Output channels of the final 1 x 1 convolution (40 in the papers).
    temporal_kernel, pool_size, pool_stride : int
        Temporal convolution length and average pooling window and stride (25, 51, 5).
    dropout : float
        Dropout after the spatial convolution (0.5).
    implementation : {"fused", "reference"}
        ``"fused"``: convolution and pooling as one strided linear map inside a chunked autograd
        function (fast, little memory); ``"reference"``: the original Conv2d + AvgPool2d sequence.
        Both give the same outputs and gradients (up to float rounding).
    """

    _BLOCK = 4  # outputs per window of the fused temporal filter (see _window_filter)

    def __init__(self, n_chans: int, n_times: int, *, n_filters: int = 40, emb_size: int = 40,
                 temporal_kernel: int = 25, pool_size: int = 51, pool_stride: int = 5, dropout: float = 0.5,
                 implementation: str = "fused") -> None:
        super().__init__()
        check_option("implementation", implementation, IMPLEMENTATIONS)
        for what, v in (("temporal_kernel", temporal_kernel), ("pool_size", pool_size),
                        ("pool_stride", pool_stride), ("n_filters", n_filters), ("emb_size", emb_size)):
            if int(v) < 1:
                raise ValueError(f"TSConv: {what} must be a positive integer, got {v}.")
        self.n_chans, self.n_times = int(n_chans), int(n_times)
        self.temporal_kernel, self.pool_size, self.pool_stride = int(temporal_kernel), int(pool_size), int(pool_stride)
        self.implementation = implementation
        combined = self.temporal_kernel + self.pool_size - 1
        if self.n_times < combined:
            raise ValueError(f"TSConv needs at least temporal_kernel + pool_size - 1 = {combined} time samples "
                             f"(got {self.n_times}); use longer trials or smaller temporal_kernel/pool_size.")
        self.n_steps = (self.n_times - combined) // self.pool_stride + 1
        self.temporal_conv = nn.Conv2d(1, n_filters, (1, self.temporal_kernel))
        self.bn1 = nn.BatchNorm2d(n_filters)
        self.spatial_conv = nn.Conv2d(n_filters, n_filters, (self.n_chans, 1))
        self.bn2 = nn.BatchNorm2d(n_filters)
        self.dropout = nn.Dropout(dropout)
        self.projection = nn.Conv2d(n_filters, emb_size, (1, 1))
        self.n_features = emb_size * self.n_steps
        box = torch.full((1, 1, self.pool_size), 1.0 / self.pool_size)
        self.register_buffer("_box", box, persistent=False)

    # ------------------------------------------------------------------------------------------
    def combined_kernel(self) -> torch.Tensor:
        """The temporal kernel convolved with the pooling box: ``(n_filters, temporal_kernel + pool_size - 1)``."""
        w = self.temporal_conv.weight.reshape(-1, 1, self.temporal_kernel)
        return F.conv_transpose1d(w, self._box.to(w.dtype)).squeeze(1)

    def _window_filter(self, device: torch.device) -> tuple[torch.Tensor, int, int, int]:
        """The combined filter as a ``(win, block * F)`` matrix acting on windows of ``win`` samples.

        Each window yields ``block`` consecutive outputs (``block`` = :attr:`_BLOCK`), so the
        overlapping windows hold about three times the input rather than the ``L / s = 15`` times
        of one window per output, and the product has ``block * F`` columns.

        Returns
        -------
        w_block, win, n_blocks, t_pad
        """
        s, block = self.pool_stride, self._BLOCK
        k = self.combined_kernel()  # (F, L)
        n_filt, length = k.shape
        n_blocks = -(-self.n_steps // block)
        win = s * (block - 1) + length
        t_pad = s * block * (n_blocks - 1) + win
        # w_block[j, i, f] = k[f, j - s * i]: window sample j feeds output i of the block
        j = torch.arange(win, device=device)[:, None] - s * torch.arange(block, device=device)[None, :]
        inside = (j >= 0) & (j < length)
        w_block = (k[:, j.clamp(0, length - 1)] * inside).permute(1, 2, 0).reshape(win, block * n_filt)
        return w_block, win, n_blocks, t_pad

    def _temporal_fused(self, x: torch.Tensor) -> torch.Tensor:
        """Conv(1 x k) + AvgPool(1 x p, stride s) as one strided filter: ``(B, C, T) -> (B, C, n_steps, F)``."""
        w_block, win, n_blocks, t_pad = self._window_filter(x.device)
        x = _fit_length(x, t_pad)
        y = _apply_window_filter(x, w_block.to(x.dtype), win, self.pool_stride * self._BLOCK, n_blocks,
                                 self.n_steps, w_block.shape[1] // self._BLOCK)
        return y + self.temporal_conv.bias.to(y.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(batch, n_chans, n_times)`` -> ``(batch, n_features)`` (time-major flatten)."""
        b = x.shape[0]
        if self.implementation == "reference":
            y = self.temporal_conv(x.unsqueeze(1))  # (B, F, C, T - k + 1)
            y = F.avg_pool2d(y, (1, self.pool_size), (1, self.pool_stride))
            y = F.elu(self.bn1(y))
            y = F.elu(self.bn2(self.spatial_conv(y)))  # (B, F, 1, n_steps)
            y = self.projection(self.dropout(y))
            return y.flatten(2).transpose(1, 2).reshape(b, -1)
        n_steps = self.n_steps
        w_block, win, n_blocks, t_pad = self._window_filter(x.device)
        n_filt = self.bn1.num_features
        # spatial conv weight as a ((channel, filter), out) matrix
        w_spatial = self.spatial_conv.weight.squeeze(-1).permute(2, 1, 0).reshape(self.n_chans * n_filt, -1)
        bn1 = self.bn1
        use_batch_stats = bn1.training or bn1.running_mean is None
        if use_batch_stats:
            mean = var = None
        else:
            mean, var = bn1.running_mean, bn1.running_var
        dtype = x.dtype
        y, batch_mean, batch_var = _FusedTemporalSpatial.apply(
            _fit_length(x, t_pad), w_block.to(dtype), self.temporal_conv.bias.to(dtype),
            bn1.weight.to(dtype), bn1.bias.to(dtype), w_spatial.to(dtype), self.spatial_conv.bias.to(dtype),
            mean, var, (win, self.pool_stride * self._BLOCK, n_blocks, n_steps, bn1.eps))
        if bn1.training and bn1.track_running_stats and bn1.running_mean is not None:
            _update_running_stats(bn1, batch_mean, batch_var, n=b * self.n_chans * n_steps)
        y = F.elu(_batch_norm(self.bn2, y))  # (B * n_steps, G)
        if self.training and self.dropout.p > 0:
            # the mask is drawn in the (batch, filter, time) order of the original layout, so that a
            # given seed drops the same units in both implementations
            keep = 1.0 - self.dropout.p
            noise = torch.empty(b, y.shape[1], n_steps, dtype=y.dtype, device=y.device).bernoulli_(keep)
            y = y * noise.div_(keep).transpose(1, 2).reshape(b * n_steps, -1)
        wp = self.projection.weight.flatten(1)  # (E, G)
        y = torch.addmm(self.projection.bias.to(y.dtype), y, wp.t().to(y.dtype))  # (B * n_steps, E)
        return y.view(b, -1)


def _fit_length(x: torch.Tensor, t_pad: int) -> torch.Tensor:
    """Zero-pad or crop the last axis to ``t_pad`` samples (crop only drops samples no output reads)."""
    t = x.shape[-1]
    if t_pad > t:
        return F.pad(x, (0, t_pad - t))
    return x[..., :t_pad] if t_pad < t else x


def _apply_window_filter(x: torch.Tensor, w_block: torch.Tensor, win: int, step: int, n_blocks: int,
                         n_steps: int, n_filt: int) -> torch.Tensor:
    """``(B, C, t_pad) -> (B, C, n_steps, F)``: the window filter on each ``step``-spaced window."""
    b, c, _ = x.shape
    windows = x.unfold(-1, win, step)  # (B, C, n_blocks, win), a view
    y = (windows.reshape(-1, win) @ w_block).view(b, c, -1, n_filt)
    return y[:, :, :n_steps] if y.shape[2] != n_steps else y


def _chunk_rows(batch: int, bytes_per_row: int) -> int:
    return max(1, min(batch, _CHUNK_BYTES // max(1, bytes_per_row)))


def _elu_(z: torch.Tensor) -> torch.Tensor:
    """ELU (alpha 1) of ``z``, in place: ``max(z, exp(min(z, 0)) - 1)``.

    Same function as ``F.elu`` (which uses ``expm1``): the results differ by at most about 6e-8
    (float32 rounding of ``exp(z) - 1`` near 0), while ``exp`` is vectorised on CPU and
    ``expm1`` is not, which makes this 2 to 3 times faster there.
    """
    e = torch.minimum(z, z.new_zeros(())).exp_().sub_(1.0)
    return torch.maximum(z, e, out=z)


def _column_moments(y: torch.Tensor, shift: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-column sum and sum of squares of ``y - shift`` (float64), for ``y`` of shape ``(rows, F)``.

    The shift (an estimate of the mean) avoids the cancellation of the raw-moment formula; the
    sums are matrix-vector products, much faster on CPU than column-wise ``var_mean``.
    """
    d = y - shift
    ones = d.new_ones(1, d.shape[0])
    s1 = (ones @ d).squeeze(0).double()
    s2 = (ones @ d.mul_(d)).squeeze(0).double()
    return s1, s2


class _FusedTemporalSpatial(torch.autograd.Function):
    """Window filter -> batch norm -> ELU -> spatial matrix product, over chunks of the batch.

    Inputs: ``x (B, C, t_pad)``, the window filter ``(win, block * F)`` and its bias ``(F,)``, the
    batch-norm weight and bias ``(F,)``, the spatial matrix ``(C * F, G)`` and bias ``(G,)``, the
    running mean and variance (``None`` for batch statistics) and the geometry
    ``(win, step, n_blocks, n_steps, eps)``. Output: ``(B * n_steps, G)`` rows in (batch, time)
    order, plus the batch mean and (biased) variance for the running-statistics update.

    Written by hand (not left to autograd) for memory: autograd would keep three activations of
    ``(B, C, n_steps, F)`` (2.3 GB at batch 1024 for THINGS-EEG2 shapes, plus as much again in
    transient gradients); this function keeps only its input and per-filter vectors, and its
    backward pass recomputes the filter output chunk by chunk (twice: once to gather the two
    batch-norm reductions, once to form the gradients), except for the chunks it can keep between
    passes within ``_CACHE_BYTES`` (all of them for small batches).
    """

    @staticmethod
    def forward(ctx, x, w_block, t_bias, gamma, beta, w_spatial, s_bias, running_mean, running_var, geom):
        win, step, n_blocks, n_steps, eps = geom
        b, c, _ = x.shape
        n_filt = gamma.shape[0]
        chunk = _chunk_rows(b, c * n_steps * n_filt * x.element_size())

        def filt(lo: int, hi: int) -> torch.Tensor:
            return _apply_window_filter(x[lo:hi], w_block, win, step, n_blocks, n_steps, n_filt) + t_bias

        cache: dict[int, torch.Tensor] = {}
        cached = 0
        if running_mean is None:
            # batch statistics: shifted sums per chunk, accumulated in float64
            s1 = torch.zeros(n_filt, dtype=torch.float64, device=x.device)
            s2 = torch.zeros_like(s1)
            shift = None
            for lo in range(0, b, chunk):
                y = filt(lo, lo + chunk)
                rows = y.reshape(-1, n_filt)
                if shift is None:
                    shift = rows[: min(len(rows), 4096)].mean(0)
                m1, m2 = _column_moments(rows, shift)
                s1 += m1
                s2 += m2
                if cached + y.numel() * y.element_size() <= _CACHE_BYTES:
                    cache[lo] = y
                    cached += y.numel() * y.element_size()
            n = b * c * n_steps
            mean_shifted = s1 / n
            var = (s2 / n - mean_shifted**2).clamp_min(0.0).to(torch.float32)
            mean = (mean_shifted + shift.double()).to(torch.float32)
        else:
            mean, var = running_mean.float(), running_var.float()
        invstd = torch.rsqrt(var + eps)
        scale = (gamma.float() * invstd).to(x.dtype)
        shift = (beta.float() - mean * gamma.float() * invstd).to(x.dtype)
        out = x.new_empty(b * n_steps, w_spatial.shape[1])
        for lo in range(0, b, chunk):
            hi = min(lo + chunk, b)
            y = cache.pop(lo) if lo in cache else filt(lo, hi)
            z = torch.addcmul(shift, y, scale)  # (bc, C, n_steps, F)
            e = z.transpose(1, 2).reshape((hi - lo) * n_steps, c * n_filt)
            del z, y
            _elu_(e)
            torch.addmm(s_bias, e, w_spatial, out=out[lo * n_steps:hi * n_steps])
        ctx.save_for_backward(x, w_block, t_bias, gamma, beta, w_spatial, mean, invstd)
        ctx.geom, ctx.chunk, ctx.batch_stats = geom, chunk, running_mean is None
        mean_out, var_out = mean.detach().clone(), var.detach().clone()
        ctx.mark_non_differentiable(mean_out, var_out)
        return out, mean_out, var_out

    @staticmethod
    def backward(ctx, grad_out, _grad_mean, _grad_var):
        x, w_block, t_bias, gamma, beta, w_spatial, mean, invstd = ctx.saved_tensors
        win, step, n_blocks, n_steps, _ = ctx.geom
        b, c, _ = x.shape
        n_filt = gamma.shape[0]
        block = w_block.shape[1] // n_filt
        chunk = ctx.chunk
        n = b * c * n_steps
        dt = x.dtype
        grad_out = grad_out.contiguous()
        mean_d, invstd_d = mean.to(dt), invstd.to(dt)

        def recompute(lo: int, hi: int, want_wsp: torch.Tensor | None):
            """Normalised filter output and the gradient reaching the batch-norm output, for rows lo:hi."""
            bc = hi - lo
            y = _apply_window_filter(x[lo:hi], w_block, win, step, n_blocks, n_steps, n_filt) + t_bias
            xhat = (y - mean_d).mul_(invstd_d)
            e = torch.addcmul(beta, xhat, gamma).transpose(1, 2).reshape(bc * n_steps, c * n_filt)
            _elu_(e)
            go = grad_out[lo * n_steps:hi * n_steps]
            if want_wsp is not None:
                want_wsp.addmm_(e.T, go)
            g_e = go @ w_spatial.T  # (bc * n_steps, C * F)
            # ELU'(z) = 1 for z > 0, exp(z) = elu(z) + 1 otherwise
            g_e.mul_(torch.minimum(e.add_(1.0), e.new_ones(()), out=e))
            # back to the (batch, channel, time, filter) layout of xhat, as one copy
            g_z = g_e.view(bc, n_steps, c, n_filt).transpose(1, 2).contiguous()
            return xhat, g_z

        need = ctx.needs_input_grad
        g_wsp = torch.zeros_like(w_spatial)
        g_sbias = grad_out.sum(0) if need[6] else None
        sum_dz = torch.zeros(n_filt, dtype=torch.float64, device=x.device)
        sum_dz_xhat = torch.zeros_like(sum_dz)
        cache: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        cached = 0
        for lo in range(0, b, chunk):
            xhat, g_z = recompute(lo, min(lo + chunk, b), g_wsp)
            ones = g_z.new_ones(1, g_z.numel() // n_filt)
            sum_dz += (ones @ g_z.view(-1, n_filt)).squeeze(0).double()
            sum_dz_xhat += (ones @ (g_z * xhat).view(-1, n_filt)).squeeze(0).double()
            size = 2 * xhat.numel() * xhat.element_size()
            if cached + size <= _CACHE_BYTES:  # keep it for the second pass instead of recomputing
                cache[lo] = (xhat, g_z)
                cached += size
        k1 = (gamma.float() * invstd).to(dt)
        m_dz, m_dzx = (sum_dz / n).to(dt), (sum_dz_xhat / n).to(dt)
        g_x = torch.zeros_like(x) if need[0] else None
        g_wb = torch.zeros_like(w_block) if need[1] else None
        g_tb = torch.zeros(n_filt, dtype=torch.float64, device=x.device)
        if need[0] or need[1] or need[2]:
            for lo in range(0, b, chunk):
                hi = min(lo + chunk, b)
                xhat, g_z = cache.pop(lo) if lo in cache else recompute(lo, hi, None)
                if ctx.batch_stats:  # batch norm with batch statistics: the mean and variance depend on y
                    g_y = torch.addcmul(g_z - m_dz, xhat, m_dzx, value=-1.0).mul_(k1)
                else:
                    g_y = g_z * k1
                del xhat, g_z
                g_tb += (g_y.new_ones(1, g_y.numel() // n_filt) @ g_y.view(-1, n_filt)).squeeze(0).double()
                if n_blocks * block != n_steps:
                    g_y = F.pad(g_y, (0, 0, 0, n_blocks * block - n_steps))
                g_y = g_y.reshape(-1, block * n_filt)  # (bc * C * n_blocks, block * F)
                if g_wb is not None:
                    g_wb.addmm_(x[lo:hi].unfold(-1, win, step).reshape(-1, win).T, g_y)
                if g_x is not None:
                    g_win = (g_y @ w_block.T).view(hi - lo, c, n_blocks, win)
                    gx = g_x[lo:hi]
                    for i in range(n_blocks):  # overlap-add of the windows' gradients
                        gx[..., i * step:i * step + win] += g_win[:, :, i]
        return (g_x, g_wb, g_tb.to(t_bias.dtype) if need[2] else None,
                sum_dz_xhat.to(gamma.dtype) if need[3] else None, sum_dz.to(beta.dtype) if need[4] else None,
                g_wsp if need[5] else None, g_sbias, None, None, None)


def _update_running_stats(bn: nn.modules.batchnorm._BatchNorm, mean: torch.Tensor, var: torch.Tensor,
                          n: int) -> None:
    """The running-average update a batch-norm module makes in training (unbiased running variance)."""
    with torch.no_grad():
        if bn.num_batches_tracked is not None:
            bn.num_batches_tracked.add_(1)
        momentum = 1.0 / float(bn.num_batches_tracked) if bn.momentum is None else bn.momentum
        unbiased = var * (n / max(n - 1, 1))
        bn.running_mean.mul_(1 - momentum).add_(mean.to(bn.running_mean.dtype), alpha=momentum)
        bn.running_var.mul_(1 - momentum).add_(unbiased.to(bn.running_var.dtype), alpha=momentum)


def _batch_norm(bn: nn.modules.batchnorm._BatchNorm, x: torch.Tensor) -> torch.Tensor:
    """Apply ``bn`` (any dimensionality) to ``x`` of shape ``(N, num_features)``, with its usual bookkeeping.

    Same semantics as calling the module on its native layout: batch statistics and running-average
    updates in training (momentum, or a cumulative average when momentum is None), running
    statistics in evaluation.
    """
    momentum = 0.0 if bn.momentum is None else bn.momentum
    if bn.training and bn.track_running_stats and bn.num_batches_tracked is not None:
        bn.num_batches_tracked.add_(1)
        momentum = 1.0 / float(bn.num_batches_tracked) if bn.momentum is None else bn.momentum
    use_batch_stats = bn.training or (bn.running_mean is None and bn.running_var is None)
    track = not bn.training or bn.track_running_stats
    return F.batch_norm(x, bn.running_mean if track else None, bn.running_var if track else None,
                        bn.weight, bn.bias, use_batch_stats, momentum, bn.eps)


class Projector(nn.Sequential):
    """Linear to the embedding, residual (GELU, linear, dropout) block, layer norm (NICE/ATM).

    Parameters
    ----------
    in_features, out_features : int
        Input and embedding dimensions.
    dropout : float
        Dropout in the residual block (0.5).
    """

    def __init__(self, in_features: int, out_features: int, dropout: float = 0.5) -> None:
        super().__init__()
        self.linear = nn.Linear(in_features, out_features)
        self.residual = nn.Sequential(nn.GELU(), nn.Linear(out_features, out_features), nn.Dropout(dropout))
        self.norm = nn.LayerNorm(out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.linear(x)
        return self.norm(x + self.residual(x))


@register_encoder("nice")
class NICE(TimeseriesEncoder):
    """NICE's TSConv EEG encoder and projector (Song et al., ICLR 2024).

    Parameters
    ----------
    n_chans, n_times, n_outputs, sfreq, chs_info, n_subjects
        The encoder contract (:class:`~neurodecode.encoders.base.TimeseriesEncoder`). NICE has
        no subject-specific parameters: ``subject`` is accepted and ignored.
    n_filters, emb_size, temporal_kernel, pool_size, pool_stride : int
        TSConv sizes (defaults are the paper's, for 250 Hz data).
    conv_dropout, proj_dropout : float
        Dropout after the spatial convolution and in the projector (0.5 and 0.5).
    implementation : {"fused", "reference"}
        See :class:`TSConv`; same outputs, the fused one is faster.
    """

    def __init__(self, n_chans: int | None = None, n_times: int | None = None, n_outputs: int | None = None, *,
                 sfreq: float | None = None, chs_info: Any = None, n_subjects: int = 1,
                 n_filters: int = 40, emb_size: int = 40, temporal_kernel: int = 25, pool_size: int = 51,
                 pool_stride: int = 5, conv_dropout: float = 0.5, proj_dropout: float = 0.5,
                 implementation: str = "fused") -> None:
        super().__init__(n_chans, n_times, n_outputs, sfreq=sfreq, chs_info=chs_info, n_subjects=n_subjects)
        self.tsconv = TSConv(self.n_chans, self.n_times, n_filters=n_filters, emb_size=emb_size,
                             temporal_kernel=temporal_kernel, pool_size=pool_size, pool_stride=pool_stride,
                             dropout=conv_dropout, implementation=implementation)
        self.n_features = self.tsconv.n_features
        self.projector = Projector(self.n_features, self.n_outputs, proj_dropout)

    def forward_features(self, x: torch.Tensor, subject: torch.Tensor | int | None = None) -> torch.Tensor:
        """TSConv features ``(batch, n_features)``; ``subject`` is checked and ignored."""
        self._prepare(x, subject)
        return self.tsconv(x)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        """The projector: ``(batch, n_features) -> (batch, n_outputs)``."""
        return self.projector(features)
