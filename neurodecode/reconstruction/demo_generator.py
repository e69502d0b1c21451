"""The demo generator: a small embedding-conditioned pixel-space diffusion model that trains on a CPU.

It is what draws the simulator's objects back in ``neurodecode demo`` with nothing downloaded, and the
generator a user trains on their own image set (``neurodecode fit -c configs/sim/generator.yaml``, see
:mod:`~neurodecode.reconstruction.lit_generator`).

The model (:class:`DemoDenoiser`)
    diffusers' ``UNet2DModel`` over RGB pixels in ``[-1, 1]`` at ``image_size`` (32 by default; the
    simulator's 64-pixel images are box-downsampled for training and the samples upsampled (bicubic) to
    the source size for display, which :meth:`DemoGenerator.protocol` records). The condition is the
    teacher's *raw* image embedding (the space the prior outputs), z-scored with statistics of the
    training images (buffers, so they travel with the weights; any teacher's scale works), mapped by a
    small MLP to the size of the timestep embedding and added to it (``class_embed_type="identity"``);
    with ``resnet_time_scale_shift="scale_shift"`` every residual block is FiLM-modulated by it. No
    cross-attention: a single vector condition added to the timestep embedding is the cheapest
    conditioning that reaches every block, which is what a CPU budget of minutes needs.
Classifier-free guidance
    a learned "no condition" vector replaces the projected embedding for a share of the training
    samples (condition dropout); sampling mixes ``uncond + guidance * (cond - uncond)``.
Schedules (diffusers)
    trained with ``DDPMScheduler`` noise (1,000 steps, cosine schedule, v-prediction: well-posed at
    every noise level, which suits few-step sampling), sampled with DDIM (default, 25 steps, trailing
    spacing, deterministic), DPM-Solver++ or the full DDPM chain.
img2img
    ``init_images`` with ``strength`` in (0, 1]: the start image is noised to the timestep that leaves
    ``strength * steps`` steps to run (the low-level branch's start).

An exported folder holds ``config.json`` (``{"format": "neurodecode-demo-generator", "format_version":
1, "model": ..., "scheduler": ..., "sampling": ..., "teacher": ..., "image_size": ...}``) and
``model.safetensors`` (the UNet, the condition MLP and the embedding statistics ``embed_mean`` /
``embed_std``). :class:`DemoGenerator` loads it (``load_generator("demo:PATH")``).
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
from neurodecode.evaluation.threads import thread_limits
from neurodecode.reconstruction.base import Generator
from neurodecode.utils import PathLike, UserError, atomic_path, atomic_write_json, check_option
from neurodecode.utils import progress as progress_iter

if TYPE_CHECKING:  # pragma: no cover
    from PIL import Image

__all__ = ["DemoDenoiser", "DemoGenerator", "FORMAT", "SAMPLERS", "default_scheduler_config", "export_config",
           "images_to_tensor", "make_scheduler", "read_pretrained", "sample_images", "save_pretrained", "tensor_to_images"]

FORMAT = "neurodecode-demo-generator"
FORMAT_VERSION = 1
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
SAMPLERS = ("ddim", "dpm", "ddpm")
PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")


def default_scheduler_config(num_train_timesteps: int = 1000, beta_schedule: str = "squaredcos_cap_v2",
                             prediction_type: str = "v_prediction") -> dict[str, Any]:
    """The training noise schedule (a ``DDPMScheduler`` config; samplers are built from it).

    ``clip_sample`` keeps each step's predicted clean image in the pixel range ``[-1, 1]``.
    """
    check_option("prediction_type", prediction_type, PREDICTION_TYPES)
    return {"num_train_timesteps": int(num_train_timesteps), "beta_schedule": beta_schedule,
            "prediction_type": prediction_type, "clip_sample": True, "clip_sample_range": 1.0}


def make_scheduler(config: dict[str, Any], sampler: str = "ddpm"):
    """A diffusers scheduler of kind ``sampler`` (``"ddpm"``, ``"ddim"``, ``"dpm"``) over ``config``."""
    from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler

    check_option("sampler", sampler, SAMPLERS)
    if sampler == "ddpm":
        return DDPMScheduler(**config)
    if sampler == "ddim":
        # trailing spacing starts at the last training step (pure noise), as it must for few steps
        return DDIMScheduler(**config, timestep_spacing="trailing", set_alpha_to_one=True)
    extra = {k: v for k, v in config.items() if k not in ("clip_sample", "clip_sample_range")}
    return DPMSolverMultistepScheduler(**extra, algorithm_type="dpmsolver++", timestep_spacing="trailing",
                                       final_sigmas_type="zero")


# --------------------------------------------------------------------------------------------------
# the model
# --------------------------------------------------------------------------------------------------
class DemoDenoiser(nn.Module):
    """Embedding-conditioned UNet that predicts the diffusion target (noise, v or the clean image).

    Parameters
    ----------
    embed_dim : int
        Size of the teacher embeddings it is conditioned on.
    image_size : int
        Side of the square RGB images it models (divisible by ``2 ** (len(block_out_channels) - 1)``).
    block_out_channels : sequence of int
        Channels per UNet level (each level after the first halves the resolution).
    layers_per_block : int
        Residual blocks per level.
    attention_levels : sequence of bool | None
        Self-attention at each level (default: at the lowest resolution only).
    time_embed_dim : int | None
        Size of the timestep (and condition) embedding (default: 4 x the first level's channels).
    cond_hidden : int
        Hidden width of the condition MLP.
    norm_num_groups : int
        GroupNorm groups (must divide every level's channels).
    attention_head_dim : int
        Channels per attention head.
    dropout : float
        Dropout in the residual blocks.
    """

    def __init__(self, embed_dim: int, image_size: int = 32, block_out_channels: Sequence[int] = (32, 64, 128),
                 layers_per_block: int = 1, attention_levels: Sequence[bool] | None = None,
                 time_embed_dim: int | None = None, cond_hidden: int = 256, norm_num_groups: int = 8,
                 attention_head_dim: int = 32, dropout: float = 0.0) -> None:
        super().__init__()
        from diffusers import UNet2DModel

        levels = [int(c) for c in block_out_channels]
        if attention_levels is None:
            attention_levels = [False] * (len(levels) - 1) + [True]
        attention_levels = [bool(a) for a in attention_levels]
        if len(attention_levels) != len(levels):
            raise ValueError(f"attention_levels has {len(attention_levels)} entries for {len(levels)} levels "
                             f"(block_out_channels={levels}); give one per level.")
        if int(embed_dim) < 1:
            raise ValueError(f"embed_dim must be positive, got {embed_dim}.")
        factor = 2 ** (len(levels) - 1)
        if image_size % factor:
            raise ValueError(f"image_size {image_size} is not divisible by {factor} ({len(levels)} UNet levels).")
        bad = [c for c in levels if c % norm_num_groups]
        if bad:
            raise ValueError(f"norm_num_groups={norm_num_groups} does not divide the channels {bad}.")
        attn_channels = [c for c, a in zip(levels, attention_levels, strict=True) if a] + [levels[-1]]
        bad = [c for c in attn_channels if c % attention_head_dim]
        if bad:
            raise ValueError(f"attention_head_dim={attention_head_dim} does not divide the channels {bad} of the "
                             "attention levels (and the middle block); choose a divisor.")
        tdim = int(time_embed_dim or 4 * levels[0])
        self.config = {"embed_dim": int(embed_dim), "image_size": int(image_size), "block_out_channels": levels,
                       "layers_per_block": int(layers_per_block), "attention_levels": attention_levels,
                       "time_embed_dim": tdim, "cond_hidden": int(cond_hidden),
                       "norm_num_groups": int(norm_num_groups), "attention_head_dim": int(attention_head_dim),
                       "dropout": float(dropout)}
        self.embed_dim = int(embed_dim)
        self.image_size = int(image_size)
        self.unet = UNet2DModel(
            sample_size=image_size, in_channels=3, out_channels=3, block_out_channels=tuple(levels),
            layers_per_block=layers_per_block, time_embedding_dim=tdim,
            down_block_types=tuple("AttnDownBlock2D" if a else "DownBlock2D" for a in attention_levels),
            up_block_types=tuple("AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attention_levels)),
            add_attention=attention_levels[-1], attention_head_dim=attention_head_dim,
            norm_num_groups=norm_num_groups, dropout=dropout, class_embed_type="identity",
            resnet_time_scale_shift="scale_shift")
        self.cond = nn.Sequential(nn.Linear(self.embed_dim, cond_hidden), nn.SiLU(), nn.Linear(cond_hidden, tdim))
        self.null_cond = nn.Parameter(torch.zeros(tdim))
        self.register_buffer("embed_mean", torch.zeros(self.embed_dim))
        self.register_buffer("embed_std", torch.ones(self.embed_dim))

    def get_config(self) -> dict[str, Any]:
        """The constructor's arguments (JSON-able)."""
        return dict(self.config)

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> DemoDenoiser:
        """Build from :meth:`get_config`'s output."""
        return cls(**config)

    def set_embed_stats(self, mean: Any, std: Any) -> None:
        """Set the z-scoring of the condition (per-dimension mean and sd of the training embeddings)."""
        mean = torch.as_tensor(np.asarray(mean, dtype=np.float32)).reshape(-1)
        std = torch.as_tensor(np.asarray(std, dtype=np.float32)).reshape(-1)
        if mean.numel() != self.embed_dim or std.numel() != self.embed_dim:
            raise ValueError(f"embedding statistics of length {mean.numel()}/{std.numel()} for a "
                             f"{self.embed_dim}-d generator.")
        self.embed_mean.copy_(mean)
        self.embed_std.copy_(torch.where(std > 0, std, torch.ones_like(std)))

    def condition(self, embeds: torch.Tensor | None, n: int, drop: torch.Tensor | None = None) -> torch.Tensor:
        """Projected condition ``(n, time_embed_dim)``; the null vector where ``drop`` or ``embeds is None``."""
        null = self.null_cond.to(self.embed_mean.dtype if embeds is None else embeds.dtype)
        if embeds is None:
            return null.expand(n, -1)
        if embeds.ndim != 2 or embeds.shape[1] != self.embed_dim:
            raise ValueError(f"the demo generator expects ({n}, {self.embed_dim}) embeddings, got "
                             f"{tuple(embeds.shape)}; use a prior trained on the generator's teacher.")
        c = self.cond((embeds - self.embed_mean.to(embeds.dtype)) / self.embed_std.to(embeds.dtype))
        if drop is not None:
            c = torch.where(drop[:, None], null.to(c.dtype).expand_as(c), c)
        return c

    def forward(self, x: torch.Tensor, t: torch.Tensor, embeds: torch.Tensor | None,
                drop: torch.Tensor | None = None) -> torch.Tensor:
        """Model output for noisy images ``x`` ``(n, 3, s, s)`` at timesteps ``t`` given raw embeddings.

        ``embeds=None`` is the unconditional model; ``drop`` (bool, ``(n,)``) drops single conditions.
        """
        if t.ndim == 0:
            t = t.expand(len(x))
        c = self.condition(embeds, len(x), drop).to(x.dtype)
        return self.unet(x, t, class_labels=c).sample


# --------------------------------------------------------------------------------------------------
# images <-> tensors
# --------------------------------------------------------------------------------------------------
def images_to_tensor(images: Sequence[Image.Image], size: int) -> torch.Tensor:
    """PIL images -> ``(n, 3, size, size)`` float32 in ``[-1, 1]`` (RGB, box-filtered resize)."""
    from PIL import Image

    arrs = []
    for im in images:
        im = im.convert("RGB")
        if im.size != (size, size):
            im = im.resize((size, size), Image.Resampling.BOX if im.size[0] >= size else Image.Resampling.BICUBIC)
        arrs.append(np.asarray(im, dtype=np.float32) / 127.5 - 1.0)
    return torch.from_numpy(np.stack(arrs)).permute(0, 3, 1, 2).contiguous()


def tensor_to_images(x: torch.Tensor, size: int | None = None) -> list[Image.Image]:
    """``(n, 3, s, s)`` in ``[-1, 1]`` -> PIL RGB images, upsampled (bicubic) to ``size`` when given."""
    from PIL import Image

    arr = ((x.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    out = []
    for a in arr.permute(0, 2, 3, 1).numpy():
        im = Image.fromarray(a, "RGB")
        if size is not None and size != im.size[0]:
            im = im.resize((size, size), Image.Resampling.BICUBIC)
        out.append(im)
    return out


# --------------------------------------------------------------------------------------------------
# sampling
# --------------------------------------------------------------------------------------------------
@torch.no_grad()
def sample_images(denoiser: DemoDenoiser, scheduler_config: dict[str, Any], embeds: torch.Tensor,
                  generators: Sequence[torch.Generator], *, steps: int = 25, guidance: float = 2.0,
                  sampler: str = "ddim", init: torch.Tensor | None = None, strength: float = 1.0,
                  progress_bar: bool = False) -> torch.Tensor:
    """Draw images ``(n, 3, s, s)`` in ``[-1, 1]`` for raw ``embeds`` ``(n, embed_dim)``.

    Row ``i``'s starting noise (and any sampler noise) comes from ``generators[i]``, so a row's image
    does not depend on the other rows. ``init`` (``(n, 3, s, s)`` in ``[-1, 1]``) with ``strength < 1``
    starts from the noised image and runs the last ``round(strength * steps)`` steps (at least one).
    ``guidance == 1`` runs the conditional model alone.
    """
    from diffusers.utils.torch_utils import randn_tensor

    if not 0 < strength <= 1:
        raise ValueError(f"strength must be in (0, 1], got {strength}.")
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}.")
    dev = denoiser.embed_mean.device
    dtype = next(denoiser.parameters()).dtype
    n, s = len(embeds), denoiser.image_size
    sched = make_scheduler(scheduler_config, sampler)
    sched.set_timesteps(steps, device=dev)
    timesteps = sched.timesteps
    gens = list(generators)
    noise = randn_tensor((n, 3, s, s), generator=gens, device=torch.device("cpu"), dtype=torch.float32).to(dev, dtype)
    if init is not None and strength < 1:
        run = max(1, min(steps, int(round(strength * steps))))
        timesteps = timesteps[len(timesteps) - run:]
        if hasattr(sched, "set_begin_index"):
            sched.set_begin_index(len(sched.timesteps) - run)
        x = sched.add_noise(init.to(dev, dtype), noise, timesteps[:1].repeat(n))
    else:
        x = noise * sched.init_noise_sigma
    embeds = embeds.to(dev, dtype)
    both = guidance != 1.0
    for t in progress_iter(timesteps, enabled=progress_bar, desc="demo generator", leave=False):
        xin = sched.scale_model_input(x, t)
        if both:
            out = denoiser(torch.cat([xin, xin]), t, torch.cat([embeds, embeds]),
                           drop=torch.arange(2 * n, device=dev) >= n)
            cond, uncond = out.chunk(2)
            out = uncond + guidance * (cond - uncond)
        else:
            out = denoiser(xin, t, embeds)
        kw = {"generator": gens} if sampler == "ddpm" else {}
        x = sched.step(out, t, x, **kw).prev_sample
    return x.clamp(-1, 1).float()


# --------------------------------------------------------------------------------------------------
# export and the Generator
# --------------------------------------------------------------------------------------------------
def export_config(denoiser: DemoDenoiser, *, scheduler: dict[str, Any], sampling: dict[str, Any] | None = None,
                  teacher: dict[str, Any] | None = None, output_size: int | None = None,
                  extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The ``config.json`` of an exported demo generator (see :func:`save_pretrained` for the arguments)."""
    sampling = {"sampler": "ddim", "steps": 25, "guidance": 2.0, **(sampling or {})}
    check_option("sampler", sampling["sampler"], SAMPLERS)
    config = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "neurodecode_version": __version__,
        "model": denoiser.get_config(), "scheduler": dict(scheduler), "sampling": sampling,
        "teacher": {"spec": "", "layer": "final", **(teacher or {}), "embed_dim": denoiser.embed_dim},
        "embedding_normalisation": {"kind": "zscore", "tensors": ["embed_mean", "embed_std"],
                                    "note": "statistics of the training images' raw teacher embeddings"},
        "image_size": denoiser.image_size, "output_size": int(output_size or denoiser.image_size),
        **(extra or {}),
    }
    return json.loads(json.dumps(config, default=str))


def save_pretrained(denoiser: DemoDenoiser, out: PathLike, *, scheduler: dict[str, Any],
                    sampling: dict[str, Any] | None = None, teacher: dict[str, Any] | None = None,
                    output_size: int | None = None, extra: dict[str, Any] | None = None) -> Path:
    """Write ``config.json`` + ``model.safetensors`` of a demo generator into ``out`` (atomically, file by file).

    Parameters
    ----------
    denoiser : DemoDenoiser
        The trained model (its ``embed_mean`` / ``embed_std`` buffers hold the condition's z-scoring).
    out : path-like
        The folder (created).
    scheduler : dict
        The training ``DDPMScheduler`` config (:func:`default_scheduler_config`).
    sampling : dict | None
        Default sampling settings: ``sampler``, ``steps``, ``guidance``.
    teacher : dict | None
        The teacher the embeddings come from: ``spec``, ``layer``.
    output_size : int | None
        Side of the returned images (default: the model's; larger is bicubic upsampling for display).
    extra : dict | None
        More JSON-able facts to record (the training data, the source checkpoint...).
    """
    from safetensors.torch import save_file

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().float().cpu().contiguous() for k, v in denoiser.state_dict().items()}
    config = export_config(denoiser, scheduler=scheduler, sampling=sampling, teacher=teacher,
                           output_size=output_size, extra=extra)
    with atomic_path(out / WEIGHTS_NAME, suffix=".safetensors") as tmp:
        save_file(tensors, str(tmp), metadata={"format": FORMAT})
    atomic_write_json(out / CONFIG_NAME, config)
    return out


def read_pretrained(path: PathLike) -> tuple[DemoDenoiser, dict[str, Any]]:
    """Load an exported folder: the model (on CPU, float32) and its ``config.json``."""
    from safetensors.torch import load_file

    path = Path(path)
    cfg_file, weights = path / CONFIG_NAME, path / WEIGHTS_NAME
    if not cfg_file.is_file() or not weights.is_file():
        raise UserError(f"{path} is not an exported demo generator: it needs {CONFIG_NAME} and {WEIGHTS_NAME} "
                        "(write them with export_generator(CKPT, OUT) after 'neurodecode fit -c "
                        "configs/sim/generator.yaml').")
    config = json.loads(cfg_file.read_text())
    if config.get("format") != FORMAT:
        raise UserError(f"{cfg_file}: format {config.get('format')!r} is not {FORMAT!r}; this folder holds "
                        "another kind of model.")
    if int(config.get("format_version", 0)) > FORMAT_VERSION:
        raise UserError(f"{cfg_file}: format_version {config['format_version']} is newer than this neurodecode "
                        f"reads ({FORMAT_VERSION}); upgrade neurodecode.")
    model = DemoDenoiser.from_config(config["model"])
    model.load_state_dict(load_file(str(weights)))
    return model.eval(), config


class DemoGenerator(Generator):
    """The demo generator loaded for sampling (see the module docstring).

    Parameters
    ----------
    denoiser : DemoDenoiser
        The trained model.
    config : dict
        Its exported ``config.json`` (``scheduler``, ``sampling``, ``teacher``, ``output_size``...).
    spec : str
        The spec it was loaded from.
    device : str
        ``"auto"`` (CUDA when present), ``"cpu"``, ``"cuda"``...
    batch_size : int
        Images per model call.
    steps, guidance : int | float | None
        Sampling steps and classifier-free guidance (default: the exported ``sampling``).
    sampler : str | None
        ``"ddim"``, ``"dpm"`` or ``"ddpm"`` (default: the exported one).
    output_size : int | None
        Side of the returned images (default: the exported ``output_size``, the training images' size;
        bicubic upsampling from the model's resolution).
    dtype : torch.dtype | None
        Default: float16 on CUDA, float32 on CPU.
    threads : int | None
        Torch and BLAS threads while sampling on the CPU (default 1; ``None`` keeps torch's setting).
        This model's convolutions are too small to share between threads: on a 2-core machine with one
        other job running, 8 images took 1.3 s on one thread and 34-37 s on two (the threads wait on
        each other for a core).
    """

    def __init__(self, denoiser: DemoDenoiser, config: dict[str, Any], *, spec: str = "demo", device: str = "auto",
                 batch_size: int = 8, steps: int | None = None, guidance: float | None = None,
                 sampler: str | None = None, output_size: int | None = None,
                 dtype: torch.dtype | None = None, threads: int | None = 1) -> None:
        if threads is not None and int(threads) < 1:
            raise ValueError(f"generator {spec!r}: threads must be a positive number or None, got {threads}.")
        self.threads = None if threads is None else int(threads)
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        self.dtype = dtype or (torch.float16 if self.device.type == "cuda" else torch.float32)
        self.denoiser = denoiser.to(self.device, self.dtype).eval()
        self.config = config
        sampling = config.get("sampling", {})
        self.steps = int(steps if steps is not None else sampling.get("steps", 25))
        self.guidance = float(guidance if guidance is not None else sampling.get("guidance", 2.0))
        self.sampler = check_option("sampler", sampler or sampling.get("sampler", "ddim"), SAMPLERS)
        self.batch_size = max(1, int(batch_size))
        self.spec = spec
        self.embed_dim = denoiser.embed_dim
        self.model_size = denoiser.image_size
        self.image_size = int(output_size or config.get("output_size") or denoiser.image_size)

    @classmethod
    def from_pretrained(cls, path: PathLike, *, device: str = "auto", **kwargs: Any) -> DemoGenerator:
        """Load an exported folder, or a ``GeneratorModule`` checkpoint (``.ckpt``, read with ``weights_only``)."""
        path = Path(path)
        if path.is_file() and path.suffix == ".ckpt":
            from neurodecode.reconstruction.lit_generator import load_generator_checkpoint

            denoiser, config = load_generator_checkpoint(path)
        else:
            denoiser, config = read_pretrained(path)
        return cls(denoiser, config, spec=f"demo:{path}", device=device, **kwargs)

    @property
    def teacher(self) -> dict[str, Any]:
        """The teacher whose embeddings condition it (``spec``, ``layer``, ``embed_dim``)."""
        return dict(self.config.get("teacher", {}))

    def generate(self, embeds: torch.Tensor, *, seeds: Sequence[int], init_images: Sequence[Image.Image] | None = None,
                 strength: float = 0.8, progress: bool = True) -> list[Image.Image]:
        """One image per row of ``embeds`` (raw teacher embeddings); see :meth:`Generator.generate`."""
        embeds = torch.as_tensor(embeds)
        self.check_inputs(embeds, seeds, init_images)
        if not 0 < strength <= 1:
            raise ValueError(f"generator {self.spec!r}: strength must be in (0, 1], got {strength}.")
        with thread_limits(self.threads if self.device.type == "cpu" else None):
            return self._generate(embeds, seeds, init_images, strength, progress)

    def _generate(self, embeds: torch.Tensor, seeds: Sequence[int], init_images: Sequence[Image.Image] | None,
                  strength: float, progress: bool) -> list[Image.Image]:
        out: list[Image.Image] = []
        starts = range(0, len(embeds), self.batch_size)
        for b in progress_iter(starts, enabled=progress and len(embeds) > self.batch_size, desc="generate"):
            sl = slice(b, b + self.batch_size)
            gens = [torch.Generator().manual_seed(int(s)) for s in seeds[sl]]
            init = None if init_images is None else images_to_tensor(init_images[sl], self.model_size)
            x = sample_images(self.denoiser, self.config["scheduler"], embeds[sl].float(), gens, steps=self.steps,
                              guidance=self.guidance, sampler=self.sampler, init=init,
                              strength=strength if init is not None else 1.0,
                              progress_bar=progress and len(embeds) <= self.batch_size)
            out.extend(tensor_to_images(x, self.image_size))
        return out

    def protocol(self) -> dict[str, Any]:
        """Spec, sampler, steps, guidance, dtype, resolutions and teacher."""
        return {"spec": self.spec, "kind": "demo", "sampler": self.sampler, "steps": self.steps,
                "guidance": self.guidance, "dtype": str(self.dtype).removeprefix("torch."),
                "model_size": self.model_size, "image_size": self.image_size,
                "upsampling": "bicubic" if self.image_size != self.model_size else None,
                "teacher": self.teacher, "prediction_type": self.config["scheduler"].get("prediction_type"),
                "num_train_timesteps": self.config["scheduler"].get("num_train_timesteps")}

