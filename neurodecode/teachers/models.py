"""Teacher models: a frozen embedder, its deterministic eval transform, and its features.

:class:`Teacher` wraps a frozen model (eval mode, gradients off) and gives the features of a batch of
transformed images for any layer of :func:`~neurodecode.teachers.specs.parse_layer` (``"final"``,
``"blockN-mean"``, ``"blockN-cls"``; several from one forward pass) and, for CLIP-type models, of
texts. :class:`OpenCLIPTeacher`, :class:`TimmTeacher` and :class:`HFTeacher` adapt open_clip, timm and
``transformers`` models. Build them with :func:`~neurodecode.teachers.loading.load_teacher`.

Every teacher exposes the deterministic evaluation transform of its model (open_clip's
``preprocess_val``; timm's ``resolve_data_config`` + ``create_transform(is_training=False)``; the
``transformers`` image processor), never a random training crop, and returns raw (unnormalised)
features.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from neurodecode.teachers.specs import (
    TeacherError,
    TeacherSpec,
    WeightsNotFoundError,
    canonical_layer,
    parse_layer,
)

if TYPE_CHECKING:  # pragma: no cover
    import torch


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
            ``"final"`` and/or ``"blockN[-mean|-cls]"`` (see :mod:`neurodecode.teachers.specs`).

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


def resolve_device(device: str | None) -> str:
    """``"auto"``/``None`` -> ``"cuda"`` when available else ``"cpu"``; other values pass through."""
    if device in (None, "auto"):
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return str(device)


__all__ = ["Teacher", "OpenCLIPTeacher", "TimmTeacher", "HFTeacher", "resolve_device"]
