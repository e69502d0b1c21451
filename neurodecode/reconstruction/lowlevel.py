"""The low-level branch: a head that draws a blurry image (or a VAE latent) from the brain signal.

High-level reconstruction (prior + generator) gets the object right but not where it was, how big
or what colour; brains encode those too. The low-level head predicts, from the raw brain response,
either

``target="pixels"``
    a low-resolution RGB image (``(3, s, s)`` in [0, 1], the demo generator's case), or
``target="vae"``
    the latent of a diffusers ``AutoencoderKL`` (the real generators' VAE):
    ``vae.encode(2 * image - 1).latent_dist.mean * scaling_factor`` (minus ``shift_factor`` first, for
    VAEs that have one), shape ``(latent_channels, s / f, s / f)``,

trained with an L1 loss (:class:`~neurodecode.reconstruction.lit_lowlevel.LowLevelModule`). Its images
are used in two ways: as the img2img start of a generator (``Generator.generate(..., init_images=,
strength=)``, strength 1 ignoring them) or, ATM's later alternative, blended with the reconstruction
pixel by pixel (:func:`blend`).

The head is a brain encoder of :mod:`neurodecode.encoders` (any one, built from its config) whose
``n_outputs``-d output feeds a small convolutional decoder (a linear map to a ``4 x 4`` grid, then
nearest-neighbour 2x upsampling + 3x3 convolution + GroupNorm + GELU per octave, a final 3x3
convolution; a sigmoid for pixels). It carries the input normalisation fitted on the training trials,
so it is called on raw responses, like :func:`~neurodecode.training.export.from_pretrained`.

An exported head is a folder: ``config.json`` (``{"format": "neurodecode-lowlevel", "head": ...,
"data": ...}``) and ``model.safetensors`` (:func:`export_lowlevel`, :func:`load_lowlevel`). The VAE is
not part of it: it is named by its spec (a local folder or a hub id) and loaded when latents are
decoded into images.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from neurodecode._version import __version__
from neurodecode.utils import PathLike, UserError, atomic_path, atomic_write_json, check_option

if TYPE_CHECKING:  # pragma: no cover
    from PIL import Image

__all__ = ["FORMAT", "TARGETS", "LowLevelHead", "blend", "decoder_octaves", "export_lowlevel", "load_lowlevel",
           "load_vae", "lowlevel_images", "pretrained_encoder", "vae_decode", "vae_encode", "vae_latent_shape"]

FORMAT = "neurodecode-lowlevel"
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
TARGETS = ("pixels", "vae")


def decoder_octaves(side: int) -> tuple[int, int]:
    """How the decoder reaches ``side``: ``(start side, number of 2x upsamplings)``.

    The start grid is halved from ``side`` while it stays even and at least 4 (32 -> (4, 3),
    16 -> (4, 2), 12 -> (6, 1), 7 -> (7, 0)).
    """
    side = int(side)
    if side < 1:
        raise ValueError(f"the low-level image side must be positive, got {side}.")
    k = 0
    while side % 2 == 0 and side // 2 >= 4:
        side //= 2
        k += 1
    return side, k


class LowLevelHead(nn.Module):
    """Brain encoder + small conv decoder: raw responses -> low-resolution image or VAE latent.

    Parameters
    ----------
    encoder : nn.Module
        A :mod:`neurodecode.encoders` model (``forward(x, subject)``, ``get_config()``); its
        ``n_outputs`` is the size of the code the decoder starts from.
    target_shape : sequence of int
        ``(channels, height, width)`` of the output: ``(3, s, s)`` for pixels, the VAE latent's shape
        (:func:`vae_latent_shape`) for ``"vae"``. Height and width must be equal.
    target : str
        ``"pixels"`` (a sigmoid keeps the output in [0, 1]) or ``"vae"`` (unbounded latents).
    vae : str | None
        The VAE's spec (local folder or hub id) for ``"vae"``: used to decode latents into images.
    width : int
        Channels of the decoder's convolutions.
    """

    def __init__(self, encoder: nn.Module, target_shape: Sequence[int] = (3, 32, 32), *, target: str = "pixels",
                 vae: str | None = None, width: int = 32) -> None:
        super().__init__()
        check_option("target", target, TARGETS)
        shape = tuple(int(v) for v in target_shape)
        if len(shape) != 3 or shape[1] != shape[2] or min(shape) < 1:
            raise ValueError(f"target_shape must be (channels, side, side), got {list(target_shape)}.")
        if target == "pixels" and shape[0] != 3:
            raise ValueError(f"target 'pixels' predicts RGB images: target_shape must start with 3, got {list(shape)}.")
        if target == "vae" and not vae:
            raise ValueError("target 'vae' needs the VAE's spec (vae=PATH_OR_HUB_ID) to decode latents into images.")
        n_out = getattr(encoder, "n_outputs", None)
        if n_out is None:
            raise ValueError(f"the encoder {type(encoder).__name__} has no n_outputs; use a neurodecode.encoders model.")
        self.encoder = encoder
        self.target, self.vae, self.width = target, vae, int(width)
        self.target_shape = shape
        self.timeseries = getattr(encoder, "n_voxels", None) is None
        size = encoder.n_chans if self.timeseries else encoder.n_voxels
        self.register_buffer("input_mean", torch.zeros(int(size)))
        self.register_buffer("input_std", torch.ones(int(size)))
        start, octaves = decoder_octaves(shape[1])
        self.start = start
        c = self.width
        self.fc = nn.Linear(int(n_out), c * start * start)
        layers: list[nn.Module] = [nn.GroupNorm(min(8, c), c), nn.GELU()]
        for _ in range(octaves):
            layers += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(c, c, 3, padding=1),
                       nn.GroupNorm(min(8, c), c), nn.GELU()]
        layers.append(nn.Conv2d(c, shape[0], 3, padding=1))
        self.decoder = nn.Sequential(*layers)
        self._vae_cache: dict[str, Any] = {}

    # -- configuration --------------------------------------------------------------------------
    def get_config(self) -> dict[str, Any]:
        """JSON-able description that :meth:`from_config` rebuilds the head from (fresh weights)."""
        if not hasattr(self.encoder, "get_config"):
            raise TypeError(f"the encoder {type(self.encoder).__name__} has no get_config(); use a "
                            "neurodecode.encoders model so that the head can be exported.")
        return {"encoder": self.encoder.get_config(), "target_shape": list(self.target_shape),
                "target": self.target, "vae": self.vae, "width": self.width}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> LowLevelHead:
        """Rebuild a head from :meth:`get_config` (weights are loaded separately)."""
        from neurodecode.encoders.base import BrainEncoder

        missing = [k for k in ("encoder", "target_shape", "target") if k not in config]
        if missing:
            raise ValueError(f"low-level head config lacks {missing}; it was not written by LowLevelHead.get_config().")
        return cls(BrainEncoder.from_config(config["encoder"]), config["target_shape"], target=config["target"],
                   vae=config.get("vae"), width=int(config.get("width", 32)))

    def set_input_stats(self, mean: Any, std: Any) -> None:
        """Set the per-channel (or per-voxel) normalisation applied to raw responses."""
        mean = torch.as_tensor(np.asarray(mean), dtype=torch.float32).reshape(-1)
        std = torch.as_tensor(np.asarray(std), dtype=torch.float32).reshape(-1)
        if mean.shape != self.input_mean.shape or std.shape != self.input_std.shape:
            raise ValueError(f"input statistics of length {mean.numel()} do not match the head's input size "
                             f"{self.input_mean.numel()}.")
        if not torch.all(std > 0):
            raise ValueError("input standard deviations must be positive.")
        self.input_mean.copy_(mean)
        self.input_std.copy_(std)

    # -- forward --------------------------------------------------------------------------------
    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the input normalisation."""
        if self.timeseries:
            return (x - self.input_mean[:, None]) / self.input_std[:, None]
        return (x - self.input_mean) / self.input_std

    def forward(self, x: torch.Tensor, subject: torch.Tensor | int | None = None) -> torch.Tensor:
        """Low-level prediction ``(n, *target_shape)`` from raw (un-normalised) responses ``x``.

        ``subject``: training-subject index per row (or one int), ``None`` (or all ``-1``) for an unseen
        subject.
        """
        if isinstance(subject, torch.Tensor) and bool((subject < 0).all()):
            subject = None
        elif isinstance(subject, torch.Tensor) and bool((subject < 0).any()):
            raise ValueError("a batch mixes subjects seen in training with unseen ones (subject -1); "
                             "predict them separately.")
        code = self.encoder(self.normalize(x), subject)
        h = self.fc(code).reshape(len(code), self.width, self.start, self.start)
        out = self.decoder(h)
        return torch.sigmoid(out) if self.target == "pixels" else out

    # -- images ---------------------------------------------------------------------------------
    def to_images(self, out: torch.Tensor) -> list[Image.Image]:
        """PIL images of predictions ``out`` (pixels directly; latents through the VAE's decoder)."""
        from PIL import Image

        out = out.detach().float().cpu()
        if self.target == "vae":
            if self.vae not in self._vae_cache:
                self._vae_cache[self.vae] = load_vae(self.vae)
            out = vae_decode(self._vae_cache[self.vae], out)
        arr = (out.clamp(0, 1).permute(0, 2, 3, 1).numpy() * 255.0).round().astype(np.uint8)
        return [Image.fromarray(a, mode="RGB") for a in arr]


def pretrained_encoder(path: PathLike) -> tuple[nn.Module, torch.Tensor, torch.Tensor, dict[str, Any]]:
    """A trained brain encoder to put the head on: ``(encoder, input_mean, input_std, data)``.

    Parameters
    ----------
    path : path-like
        An exported encoder folder (``neurodecode export``) or a ``neurodecode fit`` checkpoint of an
        ``AlignmentModule``.

    Returns
    -------
    encoder : nn.Module
        The encoder (its output, the teacher-space embedding, is the head's code).
    input_mean, input_std : torch.Tensor
        The input normalisation it was trained with.
    data : dict
        What it was trained on (channels, subjects, sfreq...).
    """
    path = Path(path)
    if path.is_dir():
        from neurodecode.training.export import from_pretrained

        dec = from_pretrained(path)
        return dec.encoder, dec.input_mean, dec.input_std, dict(dec.data)
    if not path.is_file():
        raise FileNotFoundError(f"pretrained encoder {path} not found: give an exported encoder folder or a "
                                "'neurodecode fit' checkpoint (.ckpt).")
    from neurodecode.training.lit import load_alignment_checkpoint

    module, ckpt = load_alignment_checkpoint(path)
    return module.encoder, module.input_mean, module.input_std, dict(ckpt.get("hyper_parameters", {}).get("data", {}))


# --------------------------------------------------------------------------------------------------
# the VAE (diffusers AutoencoderKL)
# --------------------------------------------------------------------------------------------------
def _vae_location(spec: str) -> tuple[str, str | None]:
    """``(path or id, subfolder)``: a folder with ``config.json``, or its ``vae/`` sub-folder."""
    p = Path(str(spec))
    if p.is_dir():
        if (p / "config.json").is_file():
            return str(p), None
        if (p / "vae" / "config.json").is_file():
            return str(p), "vae"
        raise UserError(f"VAE {spec}: the folder holds neither config.json nor vae/config.json; give the folder "
                        "of a diffusers AutoencoderKL (save_pretrained) or of a Stable Diffusion checkout.")
    return str(spec), "vae"


def _vae_config(spec: str) -> dict[str, Any]:
    from diffusers import AutoencoderKL

    where, sub = _vae_location(spec)
    tries = [sub] if Path(where).is_dir() else [sub, None]
    err: Exception | None = None
    for s in tries:
        try:
            return dict(AutoencoderKL.load_config(where, subfolder=s))
        except (OSError, ValueError) as e:  # not found (offline, or no such sub-folder)
            err = e
    raise UserError(f"VAE {spec!r}: cannot read its config offline ({str(err).splitlines()[0] if err else ''}). "
                    "Give a local folder holding config.json and diffusion_pytorch_model.safetensors "
                    "(an AutoencoderKL saved with save_pretrained, or the vae/ folder of a Stable Diffusion model).")


def load_vae(spec: str, *, device: str | torch.device = "cpu") -> Any:
    """A diffusers ``AutoencoderKL`` from a local folder (or its ``vae/``) or a cached hub id, in eval mode.

    Only safetensors weights are read (``use_safetensors=True``: nothing is unpickled).
    """
    from diffusers import AutoencoderKL

    where, sub = _vae_location(spec)
    tries = [sub] if Path(where).is_dir() else [sub, None]
    err: Exception | None = None
    for s in tries:
        try:
            vae = AutoencoderKL.from_pretrained(where, subfolder=s, use_safetensors=True)
            return vae.to(device).eval().requires_grad_(False)
        except (OSError, ValueError) as e:
            err = e
    raise UserError(f"VAE {spec!r} cannot be loaded offline ({str(err).splitlines()[0] if err else ''}). Give a "
                    "local folder with config.json and diffusion_pytorch_model.safetensors (AutoencoderKL).")


def vae_latent_shape(spec: str, image_size: int) -> tuple[int, int, int]:
    """Shape ``(latent_channels, side, side)`` of the VAE's latent of a ``image_size`` px image (config only)."""
    cfg = _vae_config(spec)
    factor = 2 ** (len(cfg.get("block_out_channels", (64,))) - 1)
    if int(image_size) % factor:
        raise UserError(f"image_size {image_size} is not a multiple of the VAE's downsampling factor {factor}.")
    return int(cfg.get("latent_channels", 4)), int(image_size) // factor, int(image_size) // factor


def _scale_shift(vae: Any) -> tuple[float, float]:
    cfg = vae.config
    shift = getattr(cfg, "shift_factor", None)
    return float(getattr(cfg, "scaling_factor", 1.0) or 1.0), float(shift or 0.0)


@torch.no_grad()
def vae_encode(vae: Any, images: torch.Tensor) -> torch.Tensor:
    """Latents of images ``(n, 3, H, W)`` in [0, 1]: ``(latent_dist.mean - shift) * scaling_factor``."""
    scale, shift = _scale_shift(vae)
    p = next(vae.parameters())
    z = vae.encode(images.to(p.device, p.dtype) * 2.0 - 1.0).latent_dist.mean
    return ((z - shift) * scale).float()


@torch.no_grad()
def vae_decode(vae: Any, latents: torch.Tensor) -> torch.Tensor:
    """Images ``(n, 3, H, W)`` in [0, 1] of latents made by :func:`vae_encode`."""
    scale, shift = _scale_shift(vae)
    p = next(vae.parameters())
    x = vae.decode(latents.to(p.device, p.dtype) / scale + shift).sample
    return ((x.float() + 1.0) / 2.0).clamp(0, 1)


# --------------------------------------------------------------------------------------------------
# using the images
# --------------------------------------------------------------------------------------------------
def blend(recon: Image.Image, lowlevel: Image.Image, alpha: float) -> Image.Image:
    """Pixel blend ``(1 - alpha) * recon + alpha * lowlevel`` (PIL's ``Image.blend``), ATM's low-level fusion.

    Parameters
    ----------
    recon : PIL.Image.Image
        The generator's reconstruction; the result has its size.
    lowlevel : PIL.Image.Image
        The low-level image, resized (bicubic) to ``recon``'s size when it differs.
    alpha : float
        Weight of the low-level image in [0, 1]: 0 returns ``recon``, 1 the (resized) low-level image.

    Returns
    -------
    image : PIL.Image.Image, RGB
    """
    from PIL import Image

    alpha = float(alpha)
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1] (0: the reconstruction, 1: the low-level image), got {alpha}.")
    a = recon.convert("RGB")
    b = lowlevel.convert("RGB")
    if b.size != a.size:
        b = b.resize(a.size, Image.Resampling.BICUBIC)
    return Image.blend(a, b, alpha)


@torch.no_grad()
def lowlevel_images(model: LowLevelHead, x: Any, subject: torch.Tensor | int | None = None, *,
                    size: int | None = None, batch_size: int = 64) -> list[Image.Image]:
    """The head's images of raw responses, one per trial (img2img starts or blend inputs).

    Parameters
    ----------
    model : LowLevelHead
        A trained head (:func:`load_lowlevel`).
    x : torch.Tensor | numpy.ndarray | mne.BaseEpochs
        Raw responses ``(n, n_chans, n_times)`` or ``(n, n_voxels)``, as the head was trained on.
    subject : torch.Tensor | int | None
        Training-subject index per trial (or one for all); ``None`` for an unseen subject.
    size : int | None
        Resize the images to ``size`` px (bicubic), e.g. the generator's ``image_size``.
    batch_size : int
        Trials per forward pass.

    Returns
    -------
    images : list of PIL.Image.Image
    """
    from PIL import Image

    if hasattr(x, "get_data") and not isinstance(x, torch.Tensor):
        x = x.get_data(copy=False)
    p = next(model.parameters())
    x = torch.as_tensor(np.asarray(x, dtype=np.float32)) if not isinstance(x, torch.Tensor) else x
    x = x.to(p.device, torch.float32)
    if x.ndim == (2 if model.timeseries else 1):
        x = x[None]
    if isinstance(subject, int):
        subject = torch.full((len(x),), subject, dtype=torch.long)
    was_training = model.training
    model.eval()
    images: list[Image.Image] = []
    try:
        for i in range(0, len(x), int(batch_size)):
            s = None if subject is None else subject[i:i + batch_size].to(p.device)
            images += model.to_images(model(x[i:i + batch_size], s))
    finally:
        model.train(was_training)
    if size is not None:
        images = [im.resize((int(size), int(size)), Image.Resampling.BICUBIC) for im in images]
    return images


# --------------------------------------------------------------------------------------------------
# export / load
# --------------------------------------------------------------------------------------------------
def export_lowlevel(model: LowLevelHead | PathLike, out: PathLike, *, data: dict[str, Any] | None = None) -> Path:
    """Write ``config.json`` + ``model.safetensors`` of a head (or of a ``LowLevelModule`` checkpoint).

    Parameters
    ----------
    model : LowLevelHead | path-like
        The head, or a ``.ckpt`` written by ``neurodecode fit`` with a ``LowLevelModule``.
    out : path-like
        The folder to write (created; each file is written atomically).
    data : dict | None
        What the head was trained on (the data module's ``describe()``); a checkpoint brings its own.

    Returns
    -------
    out : Path
    """
    from safetensors.torch import save_file

    source = None
    if not isinstance(model, nn.Module):
        source = Path(model)
        model, info = _load_checkpoint(source)
        data = data if data is not None else info.get("data")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    config = {"format": FORMAT, "format_version": 1, "neurodecode_version": __version__,
              "head": model.get_config(), "data": data or {},
              "source_checkpoint": source.name if source is not None else None}
    with atomic_path(out / WEIGHTS_NAME, suffix=".safetensors") as tmp:
        save_file(tensors, str(tmp), metadata={"format": FORMAT})
    atomic_write_json(out / CONFIG_NAME, json.loads(json.dumps(config, default=str)))
    return out


def _load_checkpoint(path: Path) -> tuple[LowLevelHead, dict[str, Any]]:
    from neurodecode.training.lit import load_checkpoint_dict

    ckpt = load_checkpoint_dict(path)
    hp = dict(ckpt.get("hyper_parameters", {}))
    cfg = hp.get("head_config")
    if cfg is None:
        raise ValueError(f"{path}: the checkpoint has no head_config; it was not written by neurodecode's "
                         "LowLevelModule.")
    head = LowLevelHead.from_config(cfg)
    state = {k[len("head."):]: v for k, v in ckpt["state_dict"].items() if k.startswith("head.")}
    _load_state(head, state, path)
    return head, {"data": hp.get("data", {}), "epoch": ckpt.get("epoch")}


def _load_state(head: LowLevelHead, state: dict[str, torch.Tensor], where: Path) -> None:
    missing, unexpected = head.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(f"{where}: weights do not match the low-level head's config (missing {missing[:5]}, "
                         f"unexpected {unexpected[:5]}).")


def load_lowlevel(path: PathLike, *, device: str | torch.device = "cpu") -> LowLevelHead:
    """Load a head from an exported folder (:func:`export_lowlevel`) or a ``LowLevelModule`` checkpoint.

    Returns
    -------
    head : LowLevelHead
        In eval mode; ``head.config`` holds the folder's ``config.json`` (``data``: what it was trained on).
    """
    from safetensors.torch import load_file

    path = Path(path)
    if path.is_file():
        head, info = _load_checkpoint(path)
        head.config = {"format": FORMAT, "head": head.get_config(), **info}
        return head.to(device).eval()
    cfg_file, w_file = path / CONFIG_NAME, path / WEIGHTS_NAME
    for f in (cfg_file, w_file):
        if not f.is_file():
            raise FileNotFoundError(f"{f} not found: an exported low-level head holds {CONFIG_NAME} and {WEIGHTS_NAME} "
                                    "(write one with neurodecode.reconstruction.lowlevel.export_lowlevel).")
    try:
        config = json.loads(cfg_file.read_text())
    except ValueError as err:
        raise ValueError(f"{cfg_file}: not valid JSON ({err}).") from None
    if config.get("format") != FORMAT or "head" not in config:
        raise ValueError(f"{cfg_file}: field 'format' is {config.get('format')!r}; expected {FORMAT!r} with a 'head' "
                         "entry (an exported low-level head).")
    head = LowLevelHead.from_config(config["head"])
    _load_state(head, load_file(str(w_file)), w_file)
    head.config = config
    return head.to(device).eval()
