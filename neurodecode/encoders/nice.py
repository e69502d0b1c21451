"""NICE: the temporal-spatial convolution encoder and projector of Song et al. (ICLR 2024).

Song, Liu, Li, Gao and Song, "Decoding Natural Images from EEG for Object Recognition", ICLR 2024.
The EEG encoder ("TSConv", revised from ShallowNet) is a temporal convolution (1 x 25, 40 filters),
an average pooling (1 x 51, stride 5), batch norm and ELU, a spatial convolution over all channels
(n_chans x 1, 40 filters), batch norm, ELU and dropout 0.5, and a 1 x 1 convolution; its output is
flattened (time-major) and a projector maps it to the embedding: a linear layer, a residual block
(GELU, linear, dropout 0.5) and a layer norm. ATM (:mod:`neurodecode.encoders.atm`) reuses both.

Implementation note (speed and memory, same numerics)
-----------------------------------------------------
A convolution followed by an average pooling is one linear map, and the two commute: averaging 51
neighbours of the input (a box mean, computed exactly from float64 cumulative sums) and then
applying the 25-tap temporal kernel every 5 samples gives the pooled convolution. The reference
layers compute the full-rate convolution output ``(batch, 40, n_chans, n_times - 24)`` (2.3 GB at
batch 1024 for THINGS-EEG2 shapes) and pool it. Here (``implementation="fused"``, the default) the
strided filter is one matrix product on 25-sample windows of the box mean laid out as (batch,
time, channel, tap), so that its output is already in the layout of the spatial convolution (a
matrix product over (channel, filter)); the sequence "filter, batch norm, ELU, spatial
convolution" runs as one autograd function (:class:`_FusedTemporalSpatial`) over chunks of the
batch. A ones column on the windows carries the biases, so the filter, the batch norm and its
shift are one ``(26, 40)`` matrix; the batch-norm statistics follow from the windows' ``26 x 26``
Gram matrix, and in the backward pass the batch-norm reductions and the filter's weight and input
gradients follow from products with the windows, so that the filter output is formed once per
pass, one chunk at a time. The windows and the ELU output are kept for the backward pass within
``_CACHE_BYTES`` (a batch of 64 fits) and recomputed chunk by chunk beyond. The parameters are
those of the original layers (``temporal_conv`` is still a ``Conv2d(1, 40, (1, 25))``), and
``implementation="reference"`` runs the original sequence of layers on the same parameters, which
the tests use to check that both agree.
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
# size of one chunk's (rows, steps, channels, filters) activation in the fused block (small enough
# for the element-wise passes over a chunk to stay in cache), and how much the block may keep
# between its passes (windows, ELU output) to avoid recomputing chunks
_CHUNK_BYTES = 4 * 2**20
_CACHE_BYTES = 128 * 2**20


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
        ``"fused"``: box mean and strided filter, batch norm, ELU and spatial product inside a
        chunked autograd function (fast, little memory, see the module notes); ``"reference"``:
        the original Conv2d + AvgPool2d sequence.
        Both give the same outputs and gradients (up to float rounding).
    """

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

    def _temporal_fused(self, x: torch.Tensor) -> torch.Tensor:
        """Conv(1 x k) + AvgPool(1 x p, stride s) as box mean then strided filter: ``(B, C, T) -> (B, C, n_steps, F)``."""
        windows = _box_mean(x, self.pool_size).unfold(-1, self.temporal_kernel, self.pool_stride)
        w = self.temporal_conv.weight.flatten(1).t().to(x.dtype)  # (k, F)
        return windows[:, :, :self.n_steps] @ w + self.temporal_conv.bias.to(x.dtype)

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
        if torch.is_autocast_enabled(x.device.type) and x.dtype == torch.float32:
            x = x.to(torch.get_autocast_dtype(x.device.type))  # the block runs autocast-free in x's dtype
        dtype = x.dtype
        n_filt = self.bn1.num_features
        w_t = self.temporal_conv.weight.flatten(1).t().to(dtype)  # (k, F)
        # spatial conv weight as a ((channel, filter), out) matrix
        w_spatial = self.spatial_conv.weight.squeeze(-1).permute(2, 1, 0).reshape(self.n_chans * n_filt, -1)
        bn1 = self.bn1
        if bn1.training or bn1.running_mean is None:
            mean = var = None
        else:
            mean, var = bn1.running_mean, bn1.running_var
        y, batch_mean, batch_var = _FusedTemporalSpatial.apply(
            x, w_t, self.temporal_conv.bias.to(dtype), bn1.weight.to(dtype), bn1.bias.to(dtype),
            w_spatial.to(dtype), self.spatial_conv.bias.to(dtype), mean, var,
            (self.pool_size, self.pool_stride, n_steps, bn1.eps, torch.is_grad_enabled()))
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


def _box_mean(x: torch.Tensor, p: int, shift: float = 0.0) -> torch.Tensor:
    """Means of ``p`` consecutive samples along the last axis (``T -> T - p + 1``) minus ``shift``.

    Differences of float64 cumulative sums (exact to float32 rounding).
    """
    cs = x.cumsum(-1, dtype=torch.float64)
    out = x.new_empty(*x.shape[:-1], x.shape[-1] - p + 1)
    out[..., :1] = cs[..., p - 1:p]
    out[..., 1:] = cs[..., p:] - cs[..., :-p]
    out.mul_(1.0 / p)
    return out.sub_(shift) if shift else out


def _chunk_rows(batch: int, bytes_per_row: int) -> int:
    return max(1, min(batch, _CHUNK_BYTES // max(1, bytes_per_row)))


def _elu_(z: torch.Tensor, scratch: torch.Tensor | None = None) -> torch.Tensor:
    """ELU (alpha 1) of ``z``, in place: ``max(z, exp(min(z, 0)) - 1)``.

    Same function as ``F.elu`` (which uses ``expm1``): the results differ by at most about 6e-8
    (float32 rounding of ``exp(z) - 1`` near 0). Its derivative is ``1 + min(elu(z), 0)``.
    """
    e = torch.clamp_max(z, 0.0, out=scratch) if scratch is not None else torch.clamp_max(z, 0.0)
    return torch.maximum(z, e.exp_().sub_(1.0), out=z)


def _overlap_add(acc: torch.Tensor, g: torch.Tensor, stride: int) -> None:
    """Add window gradients ``g (B, n_steps, C, q * stride)`` into ``acc (B, C, >= (n_steps + q - 1) * stride)``."""
    b, n_steps, c, width = g.shape
    q = width // stride
    blocks = acc[..., :(n_steps + q - 1) * stride].view(b, c, n_steps + q - 1, stride)
    g = g.view(b, n_steps, c, q, stride)
    for j in range(q):  # window phase j lands on block t + j
        blocks[:, :, j:j + n_steps] += g[:, :, :, j].transpose(1, 2)


class _FusedTemporalSpatial(torch.autograd.Function):
    """Box mean -> strided temporal filter -> batch norm -> ELU -> spatial matrix product, in chunks.

    Inputs: ``x (B, C, T)``, the temporal filter ``(k, F)`` and its bias ``(F,)``, the batch-norm
    weight and bias ``(F,)``, the spatial matrix ``(C * F, G)`` and bias ``(G,)``, the running
    mean and variance (``None`` for batch statistics) and ``(pool, stride, n_steps, eps)``. Output:
    ``(B * n_steps, G)`` rows in (batch, time) order, plus the batch mean and (biased) variance.

    The conv + pooling of the reference is a box mean of ``pool`` samples (cumulative sums) followed
    by the ``k``-tap filter every ``stride`` samples, a matrix product on windows laid out as
    (batch, time, channel, tap) so that its output is already in the spatial product's layout. A
    ones column appended to the windows carries every bias, and the filter, the batch norm and
    their shift fold into one ``(k + 1, F)`` matrix. The batch statistics of the filter output
    follow from the windows' ``(k + 1) x (k + 1)`` Gram matrix (centred by the batch mean of the
    input, float64 sums), and in the backward pass the batch-norm reductions, the filter gradient
    and the input gradient follow from products with the windows, so that no pass needs a whole
    filter output. Windows and ELU output are kept for the backward pass within ``_CACHE_BYTES``
    (and the windows between the two forward passes when all of that fits); chunks beyond it are
    recomputed.
    """

    @staticmethod
    def forward(ctx, x, w, t_bias, gamma, beta, w_spatial, s_bias, running_mean, running_var, geom):
        pool, stride, n_steps, eps, keep = geom
        b, c, _ = x.shape
        k, n_filt = w.shape
        dt, f64 = x.dtype, torch.float64
        with torch.autocast(x.device.type, enabled=False):
            s0 = x.float().mean()  # centring constant: the Gram matrix below has no large mean to cancel
            xb = _box_mean(x, pool, float(s0))
            chunk = _chunk_rows(b, c * n_steps * n_filt * x.element_size())

            def windows(lo: int, hi: int) -> torch.Tensor:
                wa = xb.new_empty(hi - lo, n_steps, c, k + 1)
                wa[..., :k] = xb[lo:hi].unfold(-1, k, stride)[:, :, :n_steps].transpose(1, 2)
                wa[..., k] = 1.0
                return wa.view(-1, k + 1)

            c0 = (s0.double() * w.double().sum(0) + t_bias.double())  # filter response to the centring
            win_cache: dict[int, torch.Tensor] = {}
            cached = 0
            # windows are cheap to recompute: kept between the forward passes only when the
            # windows and ELU outputs of the whole batch fit (or when nothing is kept for backward)
            fits = b * n_steps * c * (k + 1 + n_filt) * x.element_size() <= _CACHE_BYTES
            gram = None
            if running_mean is None:
                gram = torch.zeros(k + 1, k + 1, dtype=f64, device=x.device)
                for lo in range(0, b, chunk):
                    wa = windows(lo, min(lo + chunk, b))
                    wf = wa.float()
                    gram += (wf.T @ wf).double()
                    if (fits or not keep) and cached + wa.numel() * wa.element_size() <= _CACHE_BYTES:
                        win_cache[lo] = wa
                        cached += wa.numel() * wa.element_size()
                n = gram[k, k]
                mu = gram[k, :k] / n
                cov = gram[:k, :k] / n - torch.outer(mu, mu)
                wd = w.double()
                mean = mu @ wd + c0
                var = torch.einsum("kf,kl,lf->f", wd, cov, wd).clamp_min_(0.0)
            else:
                mean, var = running_mean.double(), running_var.double()
            invstd = torch.rsqrt(var + eps)
            k1 = gamma.double() * invstd
            wa_mat = torch.cat([w.double(), (c0 - mean)[None]])  # windows @ wa_mat = y - mean
            wz = wa_mat * k1
            wz[k] += beta.double()
            wz = wz.to(dt)
            out = x.new_empty(b * n_steps, w_spatial.shape[1])
            acts: dict[int, tuple] = {}
            kept = 0
            scratch = None
            for lo in range(0, b, chunk):
                hi = min(lo + chunk, b)
                wa = win_cache.pop(lo) if lo in win_cache else windows(lo, hi)
                z = (wa @ wz).view((hi - lo) * n_steps, c * n_filt)
                if scratch is None or scratch.shape != z.shape:
                    scratch = torch.empty_like(z)
                _elu_(z, scratch)
                out[lo * n_steps:hi * n_steps] = torch.addmm(s_bias, z, w_spatial)
                size = (wa.numel() + z.numel()) * z.element_size()
                if keep and kept + size <= _CACHE_BYTES:
                    acts[lo] = (wa, z)
                    kept += size
        ctx.save_for_backward(x, w, gamma, w_spatial, wz, wa_mat, invstd, k1)
        ctx.geom, ctx.chunk, ctx.acts, ctx.gram, ctx.s0 = geom, chunk, acts, gram, s0
        mean_out, var_out = mean.to(torch.float32), var.to(torch.float32)
        ctx.mark_non_differentiable(mean_out, var_out)
        return out, mean_out, var_out

    @staticmethod
    def backward(ctx, grad_out, _grad_mean, _grad_var):
        x, w, gamma, w_spatial, wz, wa_mat, invstd, k1 = ctx.saved_tensors
        pool, stride, n_steps, _, _ = ctx.geom
        b, c, t = x.shape
        k, n_filt = w.shape
        chunk, acts, gram = ctx.chunk, ctx.acts, ctx.gram
        dt, f64 = x.dtype, torch.float64
        need = ctx.needs_input_grad
        q = -(-k // stride)  # window phases
        with torch.autocast(x.device.type, enabled=False):
            grad_out = grad_out.contiguous().to(dt)
            xb = None

            def windows(lo: int, hi: int) -> torch.Tensor:
                nonlocal xb
                if xb is None:
                    xb = _box_mean(x, pool, float(ctx.s0))
                wa = xb.new_empty(hi - lo, n_steps, c, k + 1)
                wa[..., :k] = xb[lo:hi].unfold(-1, k, stride)[:, :, :n_steps].transpose(1, 2)
                wa[..., k] = 1.0
                return wa.view(-1, k + 1)

            # input gradient of the filter with the batch-norm scale, padded to whole phases
            a_mat = F.pad((w.double() * k1).T, (0, q * stride - k)).to(dt)  # (F, q * stride)
            length = max(pool - 1 + (n_steps + q - 1) * stride, t + pool - 1)
            g_pad = x.new_zeros(b, c, length) if need[0] else None  # box-output gradients after pool - 1 zeros
            g_xb = g_pad[..., pool - 1:] if need[0] else None
            g_wsp = torch.zeros_like(w_spatial)
            w_spat_t = w_spatial.T.contiguous()
            g_sbias = grad_out.sum(0) if need[6] else None
            p_mat = torch.zeros(k + 1, n_filt, dtype=f64, device=x.device)  # windows^T @ d(loss)/dz
            pending: dict[int, tuple] = {}  # window gradients completed once the batch sums are known
            for lo in range(0, b, chunk):
                hi = min(lo + chunk, b)
                was_kept = lo in acts
                if was_kept:
                    wa, e = acts.pop(lo)
                else:
                    wa = windows(lo, hi)
                    e = _elu_((wa @ wz).view((hi - lo) * n_steps, c * n_filt))
                go = grad_out[lo * n_steps:hi * n_steps]
                g_wsp.addmm_(e.T, go)
                # ELU'(z) = 1 for z > 0, exp(z) = elu(z) + 1 otherwise
                g_z = (go @ w_spat_t).mul_(e.add_(1.0).clamp_max_(1.0)).view(-1, n_filt)  # rows in (b, t, c) order
                del e
                p_mat += (wa.float().T @ g_z.float()).double()
                if g_xb is not None:
                    g_win = g_z @ a_mat
                    if gram is not None and was_kept:
                        pending[lo] = (wa, g_win)
                    else:
                        _overlap_add(g_xb[lo:hi], g_win.view(hi - lo, n_steps, c, -1), stride)
            ctx.acts = None
            sum_dz = p_mat[k]
            sum_dz_xhat = (p_mat * wa_mat).sum(0) * invstd
            if gram is not None:  # batch statistics: the mean and variance depend on the filter output
                n = gram[k, k]
                m_dz, m_dzx = sum_dz / n, sum_dz_xhat / n
                xhat_w = (gram @ wa_mat) * invstd  # windows^T @ xhat
                g_wfull = k1 * (p_mat - gram[:, k:] * m_dz - xhat_w * m_dzx)
                if g_xb is not None:
                    m_x = (wa_mat * (invstd * m_dzx * k1)) @ w.double().T  # (k + 1, k)
                    m_x[k] += (m_dz * k1) @ w.double().T
                    m_x = F.pad(-m_x, (0, q * stride - k)).to(dt)
                    for lo in range(0, b, chunk):
                        hi = min(lo + chunk, b)
                        if lo in pending:
                            wa, g_win = pending.pop(lo)
                            g_win.addmm_(wa, m_x)
                        else:
                            g_win = windows(lo, hi) @ m_x
                        _overlap_add(g_xb[lo:hi], g_win.view(hi - lo, n_steps, c, -1), stride)
            else:
                g_wfull = p_mat * k1
            g_wfull[:k] += ctx.s0.double() * g_wfull[k]  # the filter saw centred windows
            g_x = None
            if g_xb is not None:  # adjoint of the box mean
                g_pad[..., t:] = 0.0  # only the t - pool + 1 box outputs receive gradients
                g_x = _box_mean(g_pad, pool)[..., :t]
        return (g_x, g_wfull[:k].to(w.dtype) if need[1] else None, g_wfull[k].to(w.dtype) if need[2] else None,
                sum_dz_xhat.to(gamma.dtype) if need[3] else None, sum_dz.to(gamma.dtype) if need[4] else None,
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
