"""What every image generator offers: embeddings in, PIL images out, with a recorded protocol."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from PIL import Image

__all__ = ["Generator"]


class Generator:
    """Base class of the stage-2 generators (image embedding -> image).

    Attributes
    ----------
    spec : str
        The spec string it was loaded from (``"demo:PATH"``, ``"sdxl-turbo-ip-adapter"``...).
    embed_dim : int | None
        The embedding size it expects (``None``: any).
    image_size : int
        Side of the images it returns, in pixels.
    """

    spec: str = ""
    embed_dim: int | None = None
    image_size: int = 0

    def generate(self, embeds: torch.Tensor, *, seeds: Sequence[int],
                 init_images: Sequence[Image.Image] | None = None, strength: float = 0.8,
                 progress: bool = True) -> list[Image.Image]:
        """One image per row of ``embeds``.

        Parameters
        ----------
        embeds : torch.Tensor, shape (n, embed_dim)
            Image embeddings in the space the generator was built for.
        seeds : sequence of int
            One seed per row; row ``i`` is drawn with a ``torch.Generator`` seeded ``seeds[i]``, so a
            given (embedding, seed) always gives the same image.
        init_images : sequence of PIL images | None
            Optional img2img starts (the low-level branch), one per row.
        strength : float
            img2img strength in (0, 1]: 1 ignores the start image.
        progress : bool
            Show a progress bar.

        Returns
        -------
        images : list of PIL.Image.Image
        """
        raise NotImplementedError

    def protocol(self) -> dict[str, Any]:
        """What a result needs to be reproduced: spec, steps, guidance, dtype, ..."""
        return {"spec": self.spec, "image_size": self.image_size}

    def check_inputs(self, embeds: torch.Tensor, seeds: Sequence[int],
                     init_images: Sequence[Any] | None) -> None:
        """Raise a clear error when the batch does not fit this generator."""
        if embeds.ndim != 2:
            raise ValueError(f"generator {self.spec!r}: embeddings must be (n, dim), got shape {tuple(embeds.shape)}")
        if self.embed_dim is not None and embeds.shape[1] != self.embed_dim:
            raise ValueError(f"generator {self.spec!r} expects {self.embed_dim}-d image embeddings, got "
                             f"{embeds.shape[1]}-d; use a prior trained on the same teacher as the generator.")
        if len(seeds) != len(embeds):
            raise ValueError(f"generator {self.spec!r}: {len(seeds)} seeds for {len(embeds)} embeddings; give one each.")
        if init_images is not None and len(init_images) != len(embeds):
            raise ValueError(f"generator {self.spec!r}: {len(init_images)} start images for {len(embeds)} embeddings.")
