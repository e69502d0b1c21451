"""Teachers: frozen image/text embedders named by spec strings, and the embedding cache.

- :mod:`~neurodecode.teachers.specs`: the spec grammar (``open_clip:ViT-H-14/laion2b_s32b_b79k``,
  ``timm:vit_large_patch14_dinov2.lvd142m``, ``hf:REPO_OR_DIR``, ``efficientnet-lite0``, ``.../random``),
  offline loading, deterministic eval transforms, final/intermediate/text features.
- :mod:`~neurodecode.teachers.cache`: the HDF5 cache (one group per teacher and layer), crash-safe.
- :mod:`~neurodecode.teachers.extract`: :func:`ensure_embeddings`, batched, resumable and
  data-parallel through Lightning's predict loop.

Importing this package is cheap: torch, timm, open_clip, h5py and Lightning load only when used.
"""

from neurodecode.teachers.cache import (
    DEFAULT_CACHE_NAME,
    EmbeddingCache,
    EmbeddingCacheError,
    default_cache_path,
    merge_shards,
    parts_dir,
)
from neurodecode.teachers.extract import IMAGE_EXTENSIONS, ensure_embeddings, load_stimuli, run_embedding, stimuli_from_images
from neurodecode.teachers.specs import (
    DEFAULT_PROMPT,
    Teacher,
    TeacherError,
    TeacherSpec,
    WeightsNotFoundError,
    load_teacher,
    parse_layer,
    parse_spec,
    text_layer,
)

__all__ = [
    "DEFAULT_CACHE_NAME", "DEFAULT_PROMPT", "IMAGE_EXTENSIONS", "EmbeddingCache", "EmbeddingCacheError", "Teacher",
    "TeacherError", "TeacherSpec", "WeightsNotFoundError", "default_cache_path", "ensure_embeddings", "load_stimuli",
    "load_teacher", "merge_shards", "parse_layer", "parse_spec", "parts_dir", "run_embedding", "stimuli_from_images",
    "text_layer",
]
