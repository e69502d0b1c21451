"""ATM: the Adaptive Thinking Mapper EEG encoder of Li et al. (NeurIPS 2024).

Li, Wei, Zhao, Li, Yang and Hu, "Visual Decoding and Reconstruction via EEG Embeddings with Guided
Diffusion", NeurIPS 2024. Written from the paper's description and the facts of its public code:

1. every channel's time series is one token: a linear map of its ``n_times`` samples to
   ``d_model`` (``d_model = n_times`` in the reference configuration);
2. a learned subject token is prepended, sinusoidal positional encodings are added, dropout 0.25;
3. one post-norm transformer encoder layer (4 heads, feed-forward width 256, GELU, dropout 0.25)
   attends across the channel tokens, followed by a layer norm;
4. the subject token is dropped and **all** channel tokens, read as a ``(n_chans, d_model)``
   "signal", go through NICE's temporal-spatial convolution (:class:`~neurodecode.encoders.nice.TSConv`);
5. the flattened result is projected to the embedding (linear, residual GELU block, layer norm).

Differences from the reference code, on purpose:

- the reference keeps the first 63 of the 64 tokens after attention, which keeps the subject token
  and drops the last channel; here the subject token is removed and every channel is kept;
- the reference multiplies logits by its temperature parameter without exponentiating it; the
  temperature lives in the loss here (:class:`neurodecode.losses.ContrastiveLoss`, exp-parametrised);
- the reference feeds the held-out subject's index in leave-one-subject-out runs (an index whose
  token was never trained). Here ``subject=None`` selects a subject-independent token:
  ``unknown_subject="mean"`` (default) uses the mean of the trained subject tokens;
  ``unknown_subject="learned"`` uses a separate learned token, trained by replacing the subject
  token with it on a random ``subject_dropout`` share of training rows (set ``subject_dropout > 0``).
- the reference adds no positional encoding (its time-mark input is ``None``); it is on by default
  here as the paper describes it (``positional_encoding=False`` turns it off).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from neurodecode.encoders.base import TimeseriesEncoder, register_encoder
from neurodecode.encoders.nice import Projector, TSConv
from neurodecode.utils import check_option

__all__ = ["ATM", "ChannelAttentionLayer", "FastDropout", "dropout_mask"]

UNKNOWN_SUBJECT = ("mean", "learned")
_CHECKPOINT_BYTES = 128 * 2**20  # activations recomputed at once under checkpointing


def sinusoidal_positions(n_positions: int, dim: int) -> torch.Tensor:
    """The fixed sine/cosine position table of Vaswani et al.: ``(n_positions, dim)``."""
    pos = torch.arange(n_positions, dtype=torch.float64)[:, None]
    freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float64) * (-math.log(10000.0) / dim))
    table = torch.zeros(n_positions, dim, dtype=torch.float64)
    table[:, 0::2] = torch.sin(pos * freq)
    table[:, 1::2] = torch.cos(pos * freq[: dim // 2])
    return table.float()


def _draws(shape: tuple[int, ...], p: float, device: torch.device | str | None) -> tuple[torch.Tensor, int]:
    """Random integers deciding dropout at rate ``p`` and the threshold (kept where ``draws >= threshold``)."""
    n = math.prod(shape)
    bits = next((bits for bits in (8, 16) if (p * 2**bits).is_integer()), 32)
    int_dtype = {8: torch.int8, 16: torch.int16, 32: torch.int32}[bits]
    words = torch.empty(-(-n * bits // 64), dtype=torch.int64, device=device).random_(-2**63, None)
    return words.view(int_dtype)[:n].view(shape), -2 ** (bits - 1) + round(p * 2**bits)


def _multipliers(draws: torch.Tensor, threshold: int, p: float, dtype: torch.dtype) -> torch.Tensor:
    mask = torch.ge(draws, threshold, out=torch.empty(draws.shape, dtype=dtype, device=draws.device))
    return mask.mul_(1.0 / (1.0 - p) if p < 1.0 else 0.0)


def dropout_mask(shape: tuple[int, ...], p: float, device: torch.device | str | None = None,
                 dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Inverted-dropout multipliers: ``1 / (1 - p)`` with probability ``1 - p``, else 0.

    Drawn from raw random bits (``random_`` over the full 64-bit range, viewed as 8, 16 or 32-bit
    integers): each unit is kept when its integer is at least ``-2**(bits - 1) + round(p * 2**bits)``,
    with the fewest bits that represent ``p`` exactly (8 for 0.25 or 0.5; 32, a resolution of
    2.3e-10, for other rates). One random 64-bit word serves up to eight units, about seven times
    faster on CPU than the ``torch.rand`` draw per unit (and much faster than ``bernoulli_``).
    :class:`FastDropout` keeps the integers (one byte per unit at rates 0.25 or 0.5) for the
    backward pass and rebuilds the multipliers there.
    """
    return _multipliers(*_draws(shape, p, device), p, dtype)


class _DropoutApply(torch.autograd.Function):
    """``base + x * m`` (or ``x * m``) for dropout multipliers ``m`` rebuilt in the backward pass from the draws."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, base: torch.Tensor | None, p: float) -> torch.Tensor:
        draws, threshold = _draws(x.shape, p, x.device)
        ctx.save_for_backward(draws)
        ctx.threshold, ctx.p, ctx.has_base = threshold, p, base is not None
        m = _multipliers(draws, threshold, p, x.dtype)
        return m.mul_(x) if base is None else torch.addcmul(base, x, m)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (draws,) = ctx.saved_tensors
        g_x = _multipliers(draws, ctx.threshold, ctx.p, grad.dtype).mul_(grad)
        return g_x, grad if ctx.has_base else None, None


class FastDropout(nn.Dropout):
    """``nn.Dropout`` with the multipliers of :func:`dropout_mask` (same distribution, faster, a byte per unit kept)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        if self.p >= 1.0:
            return torch.zeros_like(x)
        return _DropoutApply.apply(x, None, self.p)

    def add(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``x + dropout(y)`` in one pass."""
        if not self.training or self.p == 0.0 or self.p >= 1.0:
            return x + self(y)
        return _DropoutApply.apply(y, x, self.p)


class _Attention(torch.autograd.Function):
    """Multi-head softmax attention with dropout on the weights, read from and written to ``qkv`` layouts.

    Input ``qkv (B, N, 3 * H * D)`` as the projection gives it (queries, keys, values, each
    head-major), output ``(B, N, H * D)`` ready for the output projection: every head is a batched
    product on strided column slices, so that ``qkv`` is neither permuted nor copied in either
    pass, and the backward pass puts each head's three gradients in place in one ``qkv``-shaped
    tensor (no stacking or permuting of gradients). Keeps ``qkv``, the attention weights and the
    dropout draws (:func:`dropout_mask`).
    """

    @staticmethod
    def forward(ctx, qkv: torch.Tensor, n_heads: int, head_dim: int, p: float) -> torch.Tensor:
        b, n, _ = qkv.shape
        inner = n_heads * head_dim
        scale = 1.0 / math.sqrt(head_dim)
        with torch.autocast(qkv.device.type, enabled=False):
            out = qkv.new_empty(b, n, inner)
            probs = qkv.new_empty(n_heads, b, n, n)
            draws, threshold = _draws(probs.shape, p, qkv.device) if p > 0 else (None, 0)
            for i in range(n_heads):
                sl = slice(i * head_dim, (i + 1) * head_dim)
                q, k, v = (qkv[:, :, j * inner + i * head_dim:j * inner + (i + 1) * head_dim] for j in range(3))
                scores = torch.baddbmm(probs[i], q, k.transpose(1, 2), beta=0.0, alpha=scale)
                torch.softmax(scores, -1, out=probs[i])
                weights = probs[i]
                if draws is not None:
                    weights = _multipliers(draws[i], threshold, p, qkv.dtype).mul_(weights)
                out[:, :, sl] = torch.bmm(weights, v)
        ctx.save_for_backward(qkv, probs, draws)
        ctx.geom = (n_heads, head_dim, scale, threshold, p)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        qkv, probs, draws = ctx.saved_tensors
        n_heads, head_dim, scale, threshold, p = ctx.geom
        inner = n_heads * head_dim
        grad = grad.to(qkv.dtype)
        g_qkv = torch.empty_like(qkv)
        for i in range(n_heads):
            sl = slice(i * head_dim, (i + 1) * head_dim)
            cols = [slice(j * inner + i * head_dim, j * inner + (i + 1) * head_dim) for j in range(3)]
            q, k, v = (qkv[:, :, c] for c in cols)
            go, prob = grad[:, :, sl], probs[i]
            mask = _multipliers(draws[i], threshold, p, qkv.dtype) if draws is not None else None
            weights = prob * mask if mask is not None else prob
            # (products into contiguous results: bmm into a strided slice would loop over the batch)
            g_qkv[:, :, cols[2]] = torch.bmm(weights.transpose(1, 2), go)
            g_w = torch.bmm(go, v.transpose(1, 2))
            if mask is not None:
                g_w.mul_(mask)
            # softmax backward, scaled: d scores = scale * p * (g - sum(g * p))
            g_s = (g_w - (g_w * prob).sum(-1, keepdim=True)).mul_(prob).mul_(scale)
            g_qkv[:, :, cols[0]] = torch.bmm(g_s, k)
            g_qkv[:, :, cols[1]] = torch.bmm(g_s.transpose(1, 2), q)
        return g_qkv, None, None, None


class ChannelAttentionLayer(nn.Module):
    """One post-norm transformer encoder layer (multi-head self-attention + feed-forward).

    Written here rather than taken from ``nn.TransformerEncoderLayer`` because ATM's reference
    configuration has ``d_model = 250`` with 4 heads, which PyTorch's layer refuses (250 is not a
    multiple of 4): as in the reference, each head works in ``d_model // n_heads`` dimensions and
    the output projection maps the concatenated heads back to ``d_model``.

    Parameters
    ----------
    d_model : int
        Token dimension.
    n_heads : int
        Attention heads.
    d_ff : int
        Feed-forward width.
    dropout : float
        Dropout on attention weights, after attention and in the feed-forward block.
    fast : bool
        In training, compute the attention with :class:`_Attention` (per-head products on column
        slices of the ``qkv`` projection, no permute or copy of it, its own backward pass, dropout
        on the weights inside) and every dropout with the multipliers of :func:`dropout_mask`
        (the residual ones as one ``addcmul``); ``False``: ``nn.Dropout`` and
        ``F.scaled_dot_product_attention``. Evaluation is the same for both. Same model; in
        training the dropout masks come from another random stream.
    """

    def __init__(self, d_model: int, n_heads: int = 4, d_ff: int = 256, dropout: float = 0.25,
                 fast: bool = True) -> None:
        super().__init__()
        if d_model // n_heads < 1:
            raise ValueError(f"d_model={d_model} is too small for n_heads={n_heads}.")
        self.n_heads = n_heads
        self.head_dim = d_model // n_heads
        inner = self.head_dim * n_heads
        self.qkv = nn.Linear(d_model, 3 * inner)
        self.out = nn.Linear(inner, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.ff1 = nn.Linear(d_model, d_ff)
        self.ff2 = nn.Linear(d_ff, d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.fast = bool(fast)
        self.dropout = FastDropout(dropout) if fast else nn.Dropout(dropout)
        self.attn_dropout = dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        if self.fast and self.training:
            a = _Attention.apply(self.qkv(x), self.n_heads, self.head_dim, self.attn_dropout)
            x = self.norm1(self.dropout.add(x, self.out(a)))
            h = self.dropout(F.gelu(self.ff1(x)))
            return self.norm2(self.dropout.add(x, self.ff2(h)))
        q, k, v = self.qkv(x).view(b, n, 3, self.n_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        p = self.attn_dropout if self.training else 0.0
        a = F.scaled_dot_product_attention(q, k, v, dropout_p=p)
        a = self.out(a.transpose(1, 2).reshape(b, n, -1))
        x = self.norm1(x + self.dropout(a))
        y = self.dropout(self.ff2(self.dropout(F.gelu(self.ff1(x)))))
        return self.norm2(x + y)


@register_encoder("atm")
class ATM(TimeseriesEncoder):
    """ATM EEG encoder: channel-token transformer, temporal-spatial convolution, projector.

    Parameters
    ----------
    n_chans, n_times, n_outputs, sfreq, chs_info, n_subjects
        The encoder contract (:class:`~neurodecode.encoders.base.TimeseriesEncoder`).
    d_model : int | None
        Token dimension; ``None`` means ``n_times`` (the reference configuration).
    n_heads, d_ff, n_layers : int
        Attention heads (4), feed-forward width (256) and number of layers (1).
    dropout : float
        Dropout of the token embedding and the transformer (0.25).
    positional_encoding : bool
        Add sinusoidal position encodings to the tokens.
    unknown_subject : {"mean", "learned"}
        Token used when ``subject`` is ``None`` (see the module docstring).
    subject_dropout : float
        Training-time probability of replacing a row's subject token by the ``"learned"`` unknown
        token (only with ``unknown_subject="learned"``).
    n_filters, emb_size, temporal_kernel, pool_size, pool_stride, conv_dropout
        Temporal-spatial convolution (:class:`~neurodecode.encoders.nice.TSConv`).
    proj_dropout : float
        Dropout in the projector (0.5).
    implementation : {"fused", "reference"}
        ``"fused"``: the temporal-spatial convolution as one chunked block (box mean, strided
        filter, batch norm, ELU and spatial product; see :mod:`.nice`) and the transformer's fast
        training path (:class:`ChannelAttentionLayer` with ``fast=True``: attention without
        copies of the ``qkv`` projection, dropout by :func:`dropout_mask`); ``"reference"``: the
        layers as in the reference code. Same parameters, outputs and gradients (in training, the
        transformer's dropout masks come from different random streams).
    checkpointing : bool
        In training, run the transformer under activation checkpointing over chunks of the batch
        (the tokens are independent across examples): its activations are recomputed chunk by
        chunk in the backward pass instead of being kept, which cuts the peak training memory (2.7
        to 1.9 GB at batch 1024 for THINGS-EEG2 shapes, ``benchmarks/train_throughput.py``) for
        about a fifth more arithmetic. On CPU it is also faster at large batches (less memory
        traffic: 112 vs 92 samples/s at batch 1024, one thread) and slower at small ones (112 vs
        142 at 64).
        Same outputs in evaluation; in training the dropout masks are drawn per chunk.

    Notes
    -----
    ``forward_features`` returns the flattened convolution features ``(batch, n_features)``
    (1440 for 63 x 250 input) and ``forward_head`` is the projector.
    """

    def __init__(self, n_chans: int | None = None, n_times: int | None = None, n_outputs: int | None = None, *,
                 sfreq: float | None = None, chs_info: Any = None, n_subjects: int = 1,
                 d_model: int | None = None, n_heads: int = 4, d_ff: int = 256, n_layers: int = 1,
                 dropout: float = 0.25, positional_encoding: bool = True, unknown_subject: str = "mean",
                 subject_dropout: float = 0.0, n_filters: int = 40, emb_size: int = 40, temporal_kernel: int = 25,
                 pool_size: int = 51, pool_stride: int = 5, conv_dropout: float = 0.5, proj_dropout: float = 0.5,
                 implementation: str = "fused", checkpointing: bool = False) -> None:
        super().__init__(n_chans, n_times, n_outputs, sfreq=sfreq, chs_info=chs_info, n_subjects=n_subjects)
        check_option("unknown_subject", unknown_subject, UNKNOWN_SUBJECT)
        if not 0.0 <= subject_dropout < 1.0:
            raise ValueError(f"subject_dropout must be in [0, 1), got {subject_dropout}.")
        if subject_dropout > 0 and unknown_subject != "learned":
            raise ValueError("subject_dropout trains the learned unknown-subject token: it needs "
                             "unknown_subject='learned'.")
        self.d_model = int(d_model) if d_model is not None else self.n_times
        self.checkpointing = bool(checkpointing)
        self.unknown_subject = unknown_subject
        self.subject_dropout = float(subject_dropout)
        self.embedding = nn.Linear(self.n_times, self.d_model)
        self.subject_tokens = nn.Parameter(torch.randn(self.n_subjects, self.d_model))
        if unknown_subject == "learned":
            self.unknown_token = nn.Parameter(torch.randn(1, self.d_model))
        if positional_encoding:
            self.register_buffer("positions", sinusoidal_positions(self.n_chans + 1, self.d_model),
                                 persistent=False)
        else:
            self.positions = None
        fast = implementation == "fused"
        self.embed_dropout = FastDropout(dropout) if fast else nn.Dropout(dropout)
        self.layers = nn.ModuleList(ChannelAttentionLayer(self.d_model, n_heads, d_ff, dropout, fast=fast)
                                    for _ in range(n_layers))
        self.norm = nn.LayerNorm(self.d_model)
        self.tsconv = TSConv(self.n_chans, self.d_model, n_filters=n_filters, emb_size=emb_size,
                             temporal_kernel=temporal_kernel, pool_size=pool_size, pool_stride=pool_stride,
                             dropout=conv_dropout, implementation=implementation)
        self.n_features = self.tsconv.n_features
        self.projector = Projector(self.n_features, self.n_outputs, proj_dropout)

    def subject_token(self, subject: torch.Tensor | None, batch_size: int) -> torch.Tensor:
        """The token prepended to each row: ``(batch, 1, d_model)``."""
        if subject is None:
            if self.unknown_subject == "learned":
                tok = self.unknown_token
            else:
                tok = self.subject_tokens.mean(0, keepdim=True)
            return tok.expand(batch_size, -1).unsqueeze(1)
        tok = self.subject_tokens[subject]
        if self.training and self.subject_dropout > 0:
            drop = torch.rand(batch_size, 1, device=tok.device) < self.subject_dropout
            tok = torch.where(drop, self.unknown_token.to(tok.dtype), tok)
        return tok.unsqueeze(1)

    def _transformer(self, x: torch.Tensor, subject_token: torch.Tensor) -> torch.Tensor:
        tokens = self.embedding(x)
        tokens = torch.cat([subject_token.to(tokens.dtype), tokens], dim=1)
        if self.positions is not None:
            tokens = tokens + self.positions.to(tokens.dtype)
        tokens = self.embed_dropout(tokens)
        for layer in self.layers:
            tokens = layer(tokens)
        return self.norm(tokens)[:, 1:]

    def encode_tokens(self, x: torch.Tensor, subject: torch.Tensor | None) -> torch.Tensor:
        """Channel tokens after attention, subject token removed: ``(batch, n_chans, d_model)``."""
        subject_token = self.subject_token(subject, x.shape[0])
        if not (self.checkpointing and self.training and torch.is_grad_enabled()):
            return self._transformer(x, subject_token)
        from torch.utils.checkpoint import checkpoint

        # about 1.3 MB of saved activations per example at 64 tokens of 250: chunks of ~128 MB
        per_example = 20 * (self.n_chans + 1) * max(self.d_model, 256) * x.element_size()
        chunk = max(1, min(x.shape[0], _CHECKPOINT_BYTES // per_example))
        parts = [checkpoint(self._transformer, x[i:i + chunk], subject_token[i:i + chunk], use_reentrant=False)
                 for i in range(0, x.shape[0], chunk)]
        return torch.cat(parts)

    def forward_features(self, x: torch.Tensor, subject: torch.Tensor | int | None = None) -> torch.Tensor:
        """Flattened temporal-spatial convolution features ``(batch, n_features)``."""
        subject = self._prepare(x, subject)
        return self.tsconv(self.encode_tokens(x, subject))

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        """The projector: ``(batch, n_features) -> (batch, n_outputs)``."""
        return self.projector(features)
