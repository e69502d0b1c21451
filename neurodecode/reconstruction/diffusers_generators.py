"""The two diffusers generators: SDXL-Turbo + IP-Adapter (ATM's) and Stable unCLIP.

Both take image embeddings, draw one image per row with its own seeded ``torch.Generator`` and
return PIL images. The prompt is empty: it is encoded once per generator and reused, so only the
image embedding conditions the output.

- :class:`SDXLTurboIPAdapter`: the embedding goes into the UNet through an IP-Adapter as a
  precomputed image embedding (``ip_adapter_image_embeds``; the adapter is loaded with
  ``image_encoder_folder=None``, so no image encoder is needed). ATM's protocol: 4 steps, guidance 0,
  adapter scale 1. With start images, the same components run as ``StableDiffusionXLImg2ImgPipeline``.
- :class:`StableUnCLIP`: ``StableUnCLIPImg2ImgPipeline`` with ``image_embeds=`` and noise level 0
  (the pipeline's own 20 steps and guidance 10 by default).

fp16 on CUDA, fp32 on CPU; the batch is cut into chunks of ``batch_size``; attention slicing and
model CPU offload (which needs ``accelerate``) are options. Load them with
:func:`neurodecode.reconstruction.generators.load_generator`.
"""

from __future__ import annotations

import logging
import types
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from neurodecode.reconstruction.base import Generator
from neurodecode.utils import UserError, progress, quiet_loggers

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from PIL import Image

__all__ = ["DiffusersGenerator", "SDXLTurboIPAdapter", "StableUnCLIP", "IP_ADAPTER_WEIGHT"]

IP_ADAPTER_WEIGHT = "ip-adapter_sdxl_vit-h.safetensors"
# diffusers' loaders log one line per expected situation of this path (no image encoder loaded, ...)
_DIFFUSERS_LOGGERS = ("diffusers.loaders.ip_adapter", "diffusers.pipelines.pipeline_utils",
                      "diffusers.models.modeling_utils")


def _dtype_for(device: str) -> torch.dtype:
    import torch

    return torch.float16 if str(device).startswith("cuda") else torch.float32


def _has_accelerate() -> bool:
    import importlib.util

    return importlib.util.find_spec("accelerate") is not None


def load_pipeline(cls: type, source: str, *, dtype: torch.dtype, what: str, hint: str,
                  expect: Sequence[str] = (), **kwargs: Any) -> Any:
    """``cls.from_pretrained(source)`` with errors that say what to do when the weights are missing.

    Parameters
    ----------
    cls : type
        A diffusers pipeline class.
    source : str
        Hub id or local folder.
    dtype : torch.dtype
        Weights' dtype.
    what : str
        Name of the model in error messages.
    hint : str
        The spec to use with a local folder, e.g. ``"sdxl-turbo-ip-adapter:DIR"``.
    expect : sequence of str
        Pipeline classes (``model_index.json``'s ``_class_name``) a local folder may hold; default ``cls``'s.
    """
    import json
    from pathlib import Path

    folder = Path(source)
    if folder.exists():
        index = folder / "model_index.json"
        if not index.is_file():
            raise UserError(f"{str(folder)!r} is not a diffusers pipeline folder (no model_index.json); give the "
                            f"folder of the {what} (as `hf download` or `save_pretrained` writes it).")
        found = json.loads(index.read_text(encoding="utf-8")).get("_class_name")
        allowed = tuple(expect) or (cls.__name__,)
        if found not in allowed:
            raise UserError(f"{str(folder)!r} holds a {found} pipeline, not the {what} ({' or '.join(allowed)}).")
    try:
        with quiet_loggers(_DIFFUSERS_LOGGERS, logging.ERROR):
            return cls.from_pretrained(source, dtype=dtype, low_cpu_mem_usage=_has_accelerate(), **kwargs)
    except OSError as err:
        if folder.exists():
            raise UserError(f"could not load the {what} from {source!r}: {str(err).splitlines()[0]}") from err
        raise UserError(
            f"could not load the {what} from {source!r}: {str(err).splitlines()[0]} Download it once "
            f"(e.g. `hf download {source} --local-dir DIR`) and pass the local folder: {hint!r}."
        ) from err


class DiffusersGenerator(Generator):
    """Shared machinery of the diffusers generators: chunking, seeding, progress, the protocol.

    Subclasses implement :meth:`draw` for one chunk.

    Parameters
    ----------
    pipe : diffusers.DiffusionPipeline
        The loaded pipeline (already on its device or offloaded).
    spec : str
        The spec it was loaded from.
    embed_dim : int
        Embedding size the pipeline takes.
    image_size : int
        Side of the output images.
    device : str
        Device the denoising runs on.
    batch_size : int
        Images per pipeline call.
    steps, guidance : int, float
        Denoising steps and classifier-free guidance scale.
    models : dict
        Model ids / folders, recorded in :meth:`protocol`.
    attention_slicing, cpu_offload : bool
        Memory options in use (recorded).
    step_progress : bool
        Show diffusers' own per-step bar (off by default; the per-batch bar is ours).
    """

    family = ""
    supports_init_images = True

    def __init__(self, pipe: Any, *, spec: str, embed_dim: int, image_size: int, device: str, batch_size: int,
                 steps: int, guidance: float, models: dict[str, Any], attention_slicing: bool = False,
                 cpu_offload: bool = False, step_progress: bool = False) -> None:
        if int(batch_size) < 1:
            raise ValueError(f"generator {spec!r}: batch_size must be >= 1, got {batch_size}.")
        if int(steps) < 1:
            raise ValueError(f"generator {spec!r}: steps must be >= 1, got {steps}.")
        if float(guidance) < 0:
            raise ValueError(f"generator {spec!r}: guidance must be >= 0, got {guidance}.")
        self.pipe = pipe
        self.spec = spec
        self.embed_dim = int(embed_dim)
        self.image_size = int(image_size)
        self.device = str(device)
        self.dtype = pipe.unet.dtype
        self.batch_size = int(batch_size)
        self.steps = int(steps)
        self.guidance = float(guidance)
        self.models = dict(models)
        self.attention_slicing = bool(attention_slicing)
        self.cpu_offload = bool(cpu_offload)
        self.step_progress = bool(step_progress)
        self._prompt: tuple | None = None
        pipe.set_progress_bar_config(disable=not step_progress)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.spec!r} {self.image_size}px on {self.device} ({self.dtype})>"

    # -- generation --------------------------------------------------------------------------
    def generate(self, embeds: torch.Tensor, *, seeds: Sequence[int],
                 init_images: Sequence[Image.Image] | None = None, strength: float = 0.8,
                 progress: bool = True) -> list[Image.Image]:
        """One image per row of ``embeds``, row ``i`` seeded ``seeds[i]`` (see :meth:`Generator.generate`)."""
        import torch
        from PIL import Image

        embeds = torch.as_tensor(embeds)
        self.check_inputs(embeds, seeds, init_images)
        if embeds.is_floating_point() and not bool(torch.isfinite(embeds).all()):
            raise ValueError(f"generator {self.spec!r}: the embeddings hold NaN or Inf values; check the prior's output.")
        if init_images is not None:
            if not self.supports_init_images:
                raise UserError(f"generator {self.spec!r} takes no img2img start images; use "
                                f"'sdxl-turbo-ip-adapter' or a demo generator for the low-level branch, or blend "
                                f"the images afterwards.")
            self.check_strength(strength)
        out: list[Image.Image] = []
        starts = range(0, len(embeds), self.batch_size)
        for start in _bar(starts, progress, f"{self.family} images", self.batch_size, len(embeds)):
            stop = start + self.batch_size
            # CPU generators: the same seed gives the same noise on every device
            gens = [torch.Generator("cpu").manual_seed(int(s)) for s in seeds[start:stop]]
            chunk = embeds[start:stop].to(device=self.device, dtype=self.dtype)
            init = None
            if init_images is not None:
                init = [im.convert("RGB").resize((self.image_size, self.image_size), Image.Resampling.BICUBIC)
                        for im in init_images[start:stop]]
            # (the pipelines' VAE upcast logs a warning on every call)
            with torch.inference_mode(), quiet_loggers(_DIFFUSERS_LOGGERS, logging.ERROR):
                out.extend(self.draw(chunk, gens, init, float(strength)))
        return out

    def check_strength(self, strength: float) -> None:
        """Raise when ``strength`` is outside (0, 1] or leaves no denoising step."""
        if not 0.0 < float(strength) <= 1.0:
            raise ValueError(f"generator {self.spec!r}: strength must be in (0, 1], got {strength}.")
        if int(self.steps * float(strength)) < 1:
            raise ValueError(f"generator {self.spec!r}: {self.steps} steps x strength {strength} leaves no "
                             f"denoising step; raise steps or strength so that steps x strength >= 1.")

    def draw(self, embeds: torch.Tensor, generators: list[torch.Generator], init_images: list[Image.Image] | None,
             strength: float) -> list[Image.Image]:
        """One pipeline call for a chunk (embeddings already on the device, in the pipeline's dtype)."""
        raise NotImplementedError

    @property
    def cfg(self) -> bool:
        """Whether classifier-free guidance runs (the pipelines' rule: guidance > 1)."""
        return self.guidance > 1.0

    # -- record ------------------------------------------------------------------------------
    def protocol(self) -> dict[str, Any]:
        """Spec, model ids, steps, guidance, dtype, scheduler, memory options, diffusers version."""
        import diffusers

        return {
            **super().protocol(), "family": self.family, "models": dict(self.models), "steps": self.steps,
            "guidance": self.guidance, "prompt": "", "dtype": str(self.dtype).replace("torch.", ""),
            "device": self.device, "batch_size": self.batch_size, "scheduler": type(self.pipe.scheduler).__name__,
            "seeding": "one torch.Generator('cpu') per image, seeded with its seed",
            "attention_slicing": self.attention_slicing, "cpu_offload": self.cpu_offload,
            "embed_dim": self.embed_dim, "diffusers": diffusers.__version__,
        }


def _bar(starts: range, enabled: bool, desc: str, batch: int, n: int):
    return progress(starts, enabled=enabled and len(starts) > 0, desc=desc, unit="batch",
                    postfix={"images": n, "per_batch": batch})


def _place(pipe: Any, device: str, cpu_offload: bool, spec: str) -> None:
    """Move ``pipe`` to ``device``, or let accelerate move each model to it when it runs."""
    if not cpu_offload:
        pipe.to(device)
        return
    if not device.startswith("cuda"):
        raise UserError(f"generator {spec!r}: cpu_offload moves the models between the CPU and a GPU, but the "
                        f"device is {device!r}; drop cpu_offload or use a CUDA device.")
    if not _has_accelerate():
        raise UserError(f"generator {spec!r}: cpu_offload needs the 'accelerate' package "
                        f"(`pip install accelerate`), or drop cpu_offload.")
    pipe.enable_model_cpu_offload(device=device)


# --------------------------------------------------------------------------------------------------
# SDXL-Turbo + IP-Adapter
# --------------------------------------------------------------------------------------------------
def _embeds_as_given(self: Any, ip_adapter_image, ip_adapter_image_embeds, device, num_images_per_prompt,
                     do_classifier_free_guidance):
    """Stand-in for the pipelines' ``prepare_ip_adapter_image_embeds`` for a batch of precomputed embeddings.

    The stock method repeats each precomputed tensor ``batch_size x num_images_per_prompt`` times, which
    is right for one shared reference but mixes the rows of a batch of different embeddings
    (diffusers issue #9813). Here every row already belongs to its image (and the zero negative half,
    when guidance runs, comes first), so the tensors are passed through unchanged.
    """
    if ip_adapter_image_embeds is None:
        raise ValueError("this generator passes precomputed IP-Adapter embeddings only")
    return [e.to(device=device) for e in ip_adapter_image_embeds]


def _slice_self_attention(unet: Any) -> None:
    """Attention slicing that keeps the IP-Adapter: slice the self-attention layers only.

    ``enable_attention_slicing`` replaces every attention processor, the IP-Adapter's cross-attention
    ones included, which would silently drop the embedding; self-attention (over the latent pixels)
    is where the memory goes anyway.
    """
    from diffusers.models.attention_processor import SlicedAttnProcessor

    procs = {}
    for name, proc in unet.attn_processors.items():
        if name.endswith("attn1.processor"):
            attn = unet.get_submodule(name[: -len(".processor")])
            procs[name] = SlicedAttnProcessor(max(1, attn.sliceable_head_dim // 2))
        else:
            procs[name] = proc
    unet.set_attn_processor(procs)


class SDXLTurboIPAdapter(DiffusersGenerator):
    """SDXL-Turbo with an IP-Adapter fed precomputed image embeddings (ATM's generator).

    Build it with :meth:`from_pretrained` or ``load_generator("sdxl-turbo-ip-adapter[:SDXL[+IP]]")``.
    The embeddings are the IP-Adapter's image-encoder space (OpenCLIP ViT-H-14 image embeddings, 1024-d,
    for ``ip-adapter_sdxl_vit-h``); with guidance > 1 the unconditional half is a zero embedding, as
    diffusers makes it from an image.
    """

    family = "sdxl-turbo-ip-adapter"
    default_steps = 4
    default_guidance = 0.0

    def __init__(self, pipe: Any, *, adapter_scale: float = 1.0, **kwargs: Any) -> None:
        super().__init__(pipe, **kwargs)
        self.adapter_scale = float(adapter_scale)
        self._img2img: Any = None
        pipe.prepare_ip_adapter_image_embeds = types.MethodType(_embeds_as_given, pipe)

    @classmethod
    def from_pretrained(cls, sdxl: str, ip_adapter: str, *, subfolder: str | None, weight_name: str,
                        spec: str = "sdxl-turbo-ip-adapter", device: str = "cpu", batch_size: int = 8,
                        steps: int | None = None, guidance: float | None = None, adapter_scale: float = 1.0,
                        attention_slicing: bool = False, cpu_offload: bool = False,
                        step_progress: bool = False) -> SDXLTurboIPAdapter:
        """Load the SDXL pipeline from ``sdxl`` and the IP-Adapter weights from ``ip_adapter``.

        Parameters
        ----------
        sdxl : str
            Hub id or local folder of an SDXL(-Turbo) diffusers pipeline.
        ip_adapter : str
            Hub id, local folder or file of the IP-Adapter weights.
        subfolder, weight_name : str | None, str
            Where the weights are inside ``ip_adapter`` (``"sdxl_models"``,
            ``"ip-adapter_sdxl_vit-h.safetensors"`` on the hub).
        device, batch_size, steps, guidance, adapter_scale, attention_slicing, cpu_offload, step_progress
            See :class:`DiffusersGenerator`; steps and guidance default to 4 and 0.
        """
        from diffusers import StableDiffusionXLPipeline
        from diffusers.models.embeddings import ImageProjection

        pipe = load_pipeline(StableDiffusionXLPipeline, sdxl, dtype=_dtype_for(device), what="SDXL pipeline",
                             hint=f"sdxl-turbo-ip-adapter:DIR+{ip_adapter}", add_watermarker=False,
                             expect=("StableDiffusionXLPipeline", "StableDiffusionXLImg2ImgPipeline"))
        try:
            with quiet_loggers(_DIFFUSERS_LOGGERS, logging.ERROR):
                pipe.load_ip_adapter(ip_adapter, subfolder=subfolder, weight_name=weight_name,
                                     image_encoder_folder=None, low_cpu_mem_usage=_has_accelerate())
        except OSError as err:
            raise UserError(
                f"could not load the IP-Adapter weights {weight_name!r} from {ip_adapter!r}: "
                f"{str(err).splitlines()[0]} Download them once (e.g. `hf download h94/IP-Adapter "
                f"sdxl_models/{IP_ADAPTER_WEIGHT} --local-dir DIR`) and pass the folder or file: "
                f"'sdxl-turbo-ip-adapter:{sdxl}+DIR'.") from err
        except (RuntimeError, KeyError) as err:  # a size mismatch or missing layer: made for another UNet
            raise UserError(f"the IP-Adapter weights {weight_name!r} from {ip_adapter!r} do not fit this SDXL UNet "
                            f"({str(err).strip().splitlines()[0]}); use {IP_ADAPTER_WEIGHT} (from "
                            f"h94/IP-Adapter's sdxl_models).") from err
        proj = pipe.unet.encoder_hid_proj.image_projection_layers[0]
        if not isinstance(proj, ImageProjection):
            raise UserError(f"the IP-Adapter {weight_name!r} ({type(proj).__name__}) takes image-encoder hidden "
                            f"states, not one pooled image embedding per image; use {IP_ADAPTER_WEIGHT}.")
        pipe.set_ip_adapter_scale(float(adapter_scale))
        if attention_slicing:
            _slice_self_attention(pipe.unet)
        _place(pipe, device, cpu_offload, spec)
        return cls(pipe, spec=spec, embed_dim=proj.image_embeds.in_features,
                   image_size=pipe.default_sample_size * pipe.vae_scale_factor, device=device, batch_size=batch_size,
                   steps=cls.default_steps if steps is None else steps,
                   guidance=cls.default_guidance if guidance is None else guidance,
                   models={"sdxl": sdxl, "ip_adapter": ip_adapter, "ip_adapter_subfolder": subfolder,
                           "ip_adapter_weight": weight_name},
                   attention_slicing=attention_slicing, cpu_offload=cpu_offload, adapter_scale=adapter_scale,
                   step_progress=step_progress)

    @property
    def cfg(self) -> bool:
        """Guidance runs when > 1 and the UNet is not guidance-distilled (the SDXL pipelines' rule)."""
        return self.guidance > 1.0 and self.pipe.unet.config.time_cond_proj_dim is None

    def img2img(self) -> Any:
        """The ``StableDiffusionXLImg2ImgPipeline`` sharing this pipeline's components (built once)."""
        if self._img2img is None:
            from diffusers import StableDiffusionXLImg2ImgPipeline

            zeros = self.pipe.config.force_zeros_for_empty_prompt
            pipe = StableDiffusionXLImg2ImgPipeline(**self.pipe.components, add_watermarker=False,
                                                    force_zeros_for_empty_prompt=zeros)
            pipe.prepare_ip_adapter_image_embeds = types.MethodType(_embeds_as_given, pipe)
            pipe.set_progress_bar_config(disable=not self.step_progress)
            self._img2img = pipe
        return self._img2img

    def empty_prompt(self) -> tuple:
        """``(prompt_embeds, negative, pooled, negative_pooled)`` of the empty prompt, encoded once."""
        if self._prompt is None:
            self._prompt = self.pipe.encode_prompt("", device=self.device, num_images_per_prompt=1,
                                                   do_classifier_free_guidance=self.cfg)
        return self._prompt

    def draw(self, embeds, generators, init_images, strength):
        """One SDXL (or SDXL img2img) call: empty prompt, the embeddings as IP-Adapter image embeddings."""
        import torch

        n = len(embeds)
        pe, npe, pooled, npooled = self.empty_prompt()
        ip = embeds[:, None, :]  # (batch, images per row = 1, dim)
        if self.cfg:
            ip = torch.cat([torch.zeros_like(ip), ip])
        kw: dict[str, Any] = dict(prompt_embeds=pe.repeat(n, 1, 1), pooled_prompt_embeds=pooled.repeat(n, 1),
                                  ip_adapter_image_embeds=[ip], num_inference_steps=self.steps,
                                  guidance_scale=self.guidance, generator=generators, output_type="pil")
        if self.cfg:
            kw.update(negative_prompt_embeds=npe.repeat(n, 1, 1), negative_pooled_prompt_embeds=npooled.repeat(n, 1))
        if init_images is None:
            return self.pipe(height=self.image_size, width=self.image_size, **kw).images
        return self.img2img()(image=init_images, strength=strength, **kw).images

    def protocol(self) -> dict[str, Any]:
        """The shared protocol plus the adapter scale and the negative image embedding."""
        return {**super().protocol(), "adapter_scale": self.adapter_scale,
                "negative_image_embeds": "zeros" if self.cfg else None, "watermark": False}


# --------------------------------------------------------------------------------------------------
# Stable unCLIP
# --------------------------------------------------------------------------------------------------
class StableUnCLIP(DiffusersGenerator):
    """``StableUnCLIPImg2ImgPipeline`` conditioned on image embeddings (``image_embeds=``).

    The embeddings are the pipeline's image-encoder space (OpenCLIP ViT-H-14 image embeddings, 1024-d,
    for ``stabilityai/stable-diffusion-2-1-unclip``). ``noise_level`` 0 adds (almost) no noise to them.
    An img2img start is not offered: this pipeline has no start-image input (its ``image`` is what it
    embeds).
    """

    family = "unclip"
    supports_init_images = False
    default_steps = 20
    default_guidance = 10.0

    def __init__(self, pipe: Any, *, noise_level: int = 0, **kwargs: Any) -> None:
        super().__init__(pipe, **kwargs)
        n_train = pipe.image_noising_scheduler.config.num_train_timesteps
        if not 0 <= int(noise_level) < n_train:
            raise ValueError(f"generator {self.spec!r}: noise_level must be in [0, {n_train}), got {noise_level}.")
        self.noise_level = int(noise_level)

    @classmethod
    def from_pretrained(cls, source: str, *, spec: str = "unclip", device: str = "cpu", batch_size: int = 8,
                        steps: int | None = None, guidance: float | None = None, noise_level: int = 0,
                        attention_slicing: bool = False, cpu_offload: bool = False,
                        step_progress: bool = False) -> StableUnCLIP:
        """Load a Stable unCLIP (img2img variant) pipeline from a hub id or local folder.

        Steps and guidance default to the pipeline's own 20 and 10.
        """
        from diffusers import StableUnCLIPImg2ImgPipeline

        pipe = load_pipeline(StableUnCLIPImg2ImgPipeline, source, dtype=_dtype_for(device),
                             what="Stable unCLIP pipeline", hint="unclip:DIR")
        if attention_slicing:
            pipe.enable_attention_slicing()
        _place(pipe, device, cpu_offload, spec)
        return cls(pipe, spec=spec, embed_dim=pipe.image_normalizer.config.embedding_dim,
                   image_size=pipe.unet.config.sample_size * pipe.vae_scale_factor, device=device,
                   batch_size=batch_size, steps=cls.default_steps if steps is None else steps,
                   guidance=cls.default_guidance if guidance is None else guidance, models={"unclip": source},
                   attention_slicing=attention_slicing, cpu_offload=cpu_offload, noise_level=noise_level,
                   step_progress=step_progress)

    def empty_prompt(self) -> tuple:
        """``(prompt_embeds, negative_prompt_embeds)`` of the empty prompt, encoded once."""
        if self._prompt is None:
            self._prompt = self.pipe.encode_prompt("", device=self.device, num_images_per_prompt=1,
                                                   do_classifier_free_guidance=self.cfg)
        return self._prompt

    def draw(self, embeds, generators, init_images, strength):
        """One unCLIP call: empty prompt, ``image_embeds=`` the embeddings, the set noise level."""
        n = len(embeds)
        pe, npe = self.empty_prompt()
        kw: dict[str, Any] = {}
        if self.cfg:
            kw["negative_prompt_embeds"] = npe.repeat(n, 1, 1)
        return self.pipe(prompt_embeds=pe.repeat(n, 1, 1), image_embeds=embeds, noise_level=self.noise_level,
                         num_inference_steps=self.steps, guidance_scale=self.guidance, generator=generators,
                         height=self.image_size, width=self.image_size, output_type="pil", **kw).images

    def protocol(self) -> dict[str, Any]:
        """The shared protocol plus the noise level and the negative prompt / image embedding."""
        return {**super().protocol(), "noise_level": self.noise_level,
                "negative_prompt": "" if self.cfg else None, "negative_image_embeds": "zeros" if self.cfg else None}
