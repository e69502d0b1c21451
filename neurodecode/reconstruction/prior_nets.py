"""The stage-1 networks: brain embedding -> teacher image embedding.

Three networks, all plain :class:`torch.nn.Module` with a JSON-able :meth:`get_config` and
``from_config`` (what the exported ``config.json`` stores):

:class:`DiffusionPriorUNet`
    ATM's diffusion prior (Li et al., NeurIPS 2024), written from its description: an MLP "U-Net"
    over the embedding vector. An input layer lifts the noisy embedding to the first width; the
    encoder goes down the widths (1024, 512, 256, 128, 64 by default), the decoder mirrors it back up,
    and every level first adds a timestep embedding and a *linear* embedding of the condition (the
    brain embedding) to the hidden vector; each decoder level adds back the encoder activation of the
    same width (additive skips). It predicts the noise. The condition can be switched off per sample
    (``cond_mask``), which is how classifier-free guidance gets its unconditional prediction: with the
    mask 0 the condition's embedding (bias included) is not added at all.
:class:`PriorTransformerNet`
    diffusers' unCLIP ``PriorTransformer`` (reused, not rewritten) set up for one vector target
    (``n_tokens=1``: the unCLIP read-out token) or a target made of ``n_tokens`` tokens (passed
    flattened, ``n_tokens * token_dim``). It predicts the clean (normalised) embedding, as unCLIP's
    prior does. Its ``clip_mean``/``clip_std`` start at **zero**, so ``post_process_latents`` would
    return zeros: :meth:`PriorTransformerNet.set_stats` sets them from the training targets (and they
    are frozen: they are parameters in diffusers, never to be trained).
:class:`MLPAligner`
    a residual MLP, brain embedding -> image embedding, trained by regression + contrastive losses:
    the light alternative to a diffusion prior when data are few.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

__all__ = ["DiffusionPriorUNet", "PriorTransformerNet", "MLPAligner", "NETS", "build_net"]


def _timestep_layers(time_embed_dim: int, widths: Sequence[int]):
    """diffusers' sinusoidal projection and one ``TimestepEmbedding`` MLP per width."""
    from diffusers.models.embeddings import TimestepEmbedding, Timesteps

    proj = Timesteps(time_embed_dim, flip_sin_to_cos=True, downscale_freq_shift=0)
    return proj, nn.ModuleList([TimestepEmbedding(time_embed_dim, int(w)) for w in widths])


def _block(d_in: int, d_out: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d_in, d_out), nn.LayerNorm(d_out), nn.SiLU(), nn.Dropout(dropout))


def _masked(emb: torch.Tensor, cond_mask: torch.Tensor | None) -> torch.Tensor:
    return emb if cond_mask is None else emb * cond_mask.to(emb.dtype).reshape(-1, 1)


class DiffusionPriorUNet(nn.Module):
    """ATM's MLP "U-Net" diffusion prior over an embedding vector (predicts the noise).

    Parameters
    ----------
    embed_dim : int
        Size of the target (image) embedding, the diffused variable.
    cond_dim : int
        Size of the condition (brain embedding).
    hidden_dims : sequence of int
        Widths from the top level down (ATM: 1024, 512, 256, 128, 64).
    time_embed_dim : int
        Size of the sinusoidal timestep projection (ATM: 512).
    dropout : float
        Dropout after each hidden layer.
    """

    def __init__(self, embed_dim: int, cond_dim: int, hidden_dims: Sequence[int] = (1024, 512, 256, 128, 64),
                 time_embed_dim: int = 512, dropout: float = 0.0) -> None:
        super().__init__()
        widths = [int(w) for w in hidden_dims]
        if len(widths) < 2 or min(widths) < 1:
            raise ValueError(f"hidden_dims needs at least two positive widths, got {list(hidden_dims)}.")
        self.config = {"embed_dim": int(embed_dim), "cond_dim": int(cond_dim), "hidden_dims": widths,
                       "time_embed_dim": int(time_embed_dim), "dropout": float(dropout)}
        self.embed_dim, self.cond_dim = int(embed_dim), int(cond_dim)
        down = widths[:-1]            # width at which each encoder level adds its embeddings
        up = widths[:0:-1]            # the same for the decoder, from the bottom up
        self.time_proj, self.time_down = _timestep_layers(time_embed_dim, down)
        _, self.time_up = _timestep_layers(time_embed_dim, up)
        self.cond_down = nn.ModuleList([nn.Linear(cond_dim, w) for w in down])
        self.cond_up = nn.ModuleList([nn.Linear(cond_dim, w) for w in up])
        self.input = _block(embed_dim, widths[0], 0.0)
        self.down = nn.ModuleList([_block(a, b, dropout) for a, b in zip(widths[:-1], widths[1:], strict=True)])
        self.up = nn.ModuleList([_block(a, b, dropout) for a, b in zip(widths[:0:-1], widths[-2::-1], strict=True)])
        self.output = nn.Linear(widths[0], embed_dim)

    def get_config(self) -> dict[str, Any]:
        """Constructor arguments (JSON-able)."""
        return dict(self.config)

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> DiffusionPriorUNet:
        """Build from :meth:`get_config`'s dict (fresh weights)."""
        return cls(**config)

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor | None = None,
                cond_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Predicted noise.

        Parameters
        ----------
        x : torch.Tensor, (batch, embed_dim)
            Noisy embeddings.
        t : torch.Tensor, (batch,) or scalar
            Diffusion timesteps.
        cond : torch.Tensor, (batch, cond_dim) | None
            Brain embeddings; ``None``: unconditional.
        cond_mask : torch.Tensor, (batch,) | None
            1 keeps a row's condition, 0 drops it (classifier-free guidance).

        Returns
        -------
        eps : torch.Tensor, (batch, embed_dim)
        """
        t = torch.as_tensor(t, device=x.device)
        # one timestep for the whole batch (sampling): embed it once, the additions broadcast
        temb = self.time_proj(t.reshape(-1)).to(x.dtype)
        h = self.input(x)
        skips = []
        for i, layer in enumerate(self.down):
            skips.append(h)
            h = h + self.time_down[i](temb)
            if cond is not None:
                h = h + _masked(self.cond_down[i](cond), cond_mask)
            h = layer(h)
        for i, layer in enumerate(self.up):
            h = h + self.time_up[i](temb)
            if cond is not None:
                h = h + _masked(self.cond_up[i](cond), cond_mask)
            h = layer(h) + skips[-1 - i]
        return self.output(h)


class PriorTransformerNet(nn.Module):
    """diffusers' ``PriorTransformer`` for vector (or token) targets, conditioned on a brain embedding.

    Parameters
    ----------
    embed_dim : int
        Size of the (flattened) target: ``n_tokens * token_dim``.
    cond_dim : int
        Size of the brain embedding (``embedding_proj_dim``).
    n_tokens : int
        1 for a vector target (read out at unCLIP's extra token); more for token targets.
    num_layers, num_attention_heads, attention_head_dim, dropout
        The transformer's size (``PriorTransformer`` arguments).

    Notes
    -----
    The network works in the space normalised by ``clip_mean``/``clip_std``; :meth:`normalize` and
    :meth:`post_process` go back and forth. Both start at zero in diffusers: call :meth:`set_stats`
    with the training targets' statistics before training or sampling.
    """

    def __init__(self, embed_dim: int, cond_dim: int, n_tokens: int = 1, num_layers: int = 4,
                 num_attention_heads: int = 8, attention_head_dim: int = 64, dropout: float = 0.0) -> None:
        super().__init__()
        from diffusers import PriorTransformer

        if n_tokens < 1 or embed_dim % n_tokens:
            raise ValueError(f"embed_dim={embed_dim} must be n_tokens={n_tokens} times the token size.")
        self.config = {"embed_dim": int(embed_dim), "cond_dim": int(cond_dim), "n_tokens": int(n_tokens),
                       "num_layers": int(num_layers), "num_attention_heads": int(num_attention_heads),
                       "attention_head_dim": int(attention_head_dim), "dropout": float(dropout)}
        self.embed_dim, self.cond_dim, self.n_tokens = int(embed_dim), int(cond_dim), int(n_tokens)
        self.token_dim = self.embed_dim // self.n_tokens
        vector = self.n_tokens == 1
        # sequence: [condition, timestep, target token(s), (read-out token)] -- no text tokens
        self.prior = PriorTransformer(
            num_attention_heads=num_attention_heads, attention_head_dim=attention_head_dim, num_layers=num_layers,
            embedding_dim=self.token_dim, num_embeddings=self.n_tokens, additional_embeddings=3 if vector else 2,
            dropout=dropout, encoder_hid_proj_type=None, added_emb_type="prd" if vector else None,
            embedding_proj_dim=self.cond_dim)
        for p in (self.prior.clip_mean, self.prior.clip_std):
            p.requires_grad_(False)

    def get_config(self) -> dict[str, Any]:
        """Constructor arguments (JSON-able)."""
        return dict(self.config)

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> PriorTransformerNet:
        """Build from :meth:`get_config`'s dict (fresh weights; zero clip statistics)."""
        return cls(**config)

    def set_stats(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        """Set ``clip_mean``/``clip_std`` from per-dimension statistics of the (flattened) targets.

        With tokens the statistics are pooled over tokens per channel (the buffers are per channel).
        """
        mean = torch.as_tensor(mean, dtype=torch.float32).reshape(self.n_tokens, self.token_dim)
        std = torch.as_tensor(std, dtype=torch.float32).reshape(self.n_tokens, self.token_dim)
        m = mean.mean(0)
        var = (std**2 + mean**2).mean(0) - m**2
        with torch.no_grad():
            self.prior.clip_mean.copy_(m.reshape(1, -1))
            self.prior.clip_std.copy_(var.clamp_min(1e-12).sqrt().reshape(1, -1))

    @property
    def stats_set(self) -> bool:
        """False while ``clip_std`` is still diffusers' initial zero."""
        return bool((self.prior.clip_std != 0).all())

    def _tokens(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(len(x), self.n_tokens, self.token_dim)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """Raw (flattened) targets -> the network's normalised space."""
        if not self.stats_set:
            raise RuntimeError("PriorTransformerNet: clip_mean/clip_std are still zero; call set_stats() with the "
                               "training targets' statistics first.")
        z = (self._tokens(x) - self.prior.clip_mean) / self.prior.clip_std
        return z.reshape(len(x), -1)

    def post_process(self, z: torch.Tensor) -> torch.Tensor:
        """Normalised space -> raw (flattened) embeddings (diffusers' ``post_process_latents``)."""
        return self.prior.post_process_latents(self._tokens(z)).reshape(len(z), -1)

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor | None = None,
                cond_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Predicted clean embedding (normalised space), flattened like ``x``.

        ``cond=None`` or a 0 in ``cond_mask`` replaces the condition by zeros (the null condition the
        network learns with condition dropout).
        """
        if cond is None:
            cond = x.new_zeros(len(x), self.cond_dim)
        elif cond_mask is not None:
            cond = cond * cond_mask.to(cond.dtype).reshape(-1, 1)
        t = torch.as_tensor(t, device=x.device)
        if t.ndim == 0:
            t = t.expand(len(x))
        h = x if self.n_tokens == 1 else self._tokens(x)
        out = self.prior(h, t, proj_embedding=cond, return_dict=False)[0]
        return out.reshape(len(x), -1)


class _ResidualBlock(nn.Module):
    def __init__(self, width: int, dropout: float) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, width), nn.GELU(), nn.Dropout(dropout),
                                 nn.Linear(width, width))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + self.net(h)


class MLPAligner(nn.Module):
    """Residual MLP from the brain embedding to the image embedding.

    Parameters
    ----------
    embed_dim : int
        Output size (the target embedding).
    cond_dim : int
        Input size (the brain embedding).
    width : int
        Hidden width.
    n_blocks : int
        Residual blocks (``h + MLP(LayerNorm(h))``).
    dropout : float
        Dropout inside the blocks.
    """

    def __init__(self, embed_dim: int, cond_dim: int, width: int = 1024, n_blocks: int = 2,
                 dropout: float = 0.1) -> None:
        super().__init__()
        self.config = {"embed_dim": int(embed_dim), "cond_dim": int(cond_dim), "width": int(width),
                       "n_blocks": int(n_blocks), "dropout": float(dropout)}
        self.embed_dim, self.cond_dim = int(embed_dim), int(cond_dim)
        self.input = nn.Linear(cond_dim, width)
        self.blocks = nn.Sequential(*[_ResidualBlock(width, dropout) for _ in range(int(n_blocks))])
        self.output = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, embed_dim))

    def get_config(self) -> dict[str, Any]:
        """Constructor arguments (JSON-able)."""
        return dict(self.config)

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> MLPAligner:
        """Build from :meth:`get_config`'s dict (fresh weights)."""
        return cls(**config)

    def forward(self, brain: torch.Tensor) -> torch.Tensor:
        """Predicted image embedding ``(batch, embed_dim)``."""
        return self.output(self.blocks(self.input(brain)))


NETS: dict[str, type[nn.Module]] = {"diffusion": DiffusionPriorUNet, "prior_transformer": PriorTransformerNet,
                                    "aligner": MLPAligner}


def build_net(kind: str, embed_dim: int, cond_dim: int, options: dict[str, Any] | None = None) -> nn.Module:
    """The network of a prior ``kind`` (``"diffusion"``, ``"prior_transformer"``, ``"aligner"``).

    Parameters
    ----------
    kind : str
        Which network.
    embed_dim, cond_dim : int
        Target and brain embedding sizes.
    options : dict | None
        Further constructor arguments (e.g. ``{"hidden_dims": [512, 256, 128]}``).
    """
    from neurodecode.utils import check_option

    check_option("kind", kind, tuple(NETS))
    options = dict(options or {})
    for k in ("embed_dim", "cond_dim"):
        options.pop(k, None)
    try:
        return NETS[kind](embed_dim=int(embed_dim), cond_dim=int(cond_dim), **options)
    except TypeError as err:
        raise ValueError(f"prior net options {sorted(options)} do not fit {NETS[kind].__name__} ({err}).") from None
