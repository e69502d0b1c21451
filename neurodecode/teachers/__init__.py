"""Teachers: frozen image/text embedders named by spec strings, and the embedding cache.

- :mod:`~neurodecode.teachers.specs`: the spec grammar (``open_clip:ViT-H-14/laion2b_s32b_b79k``,
  ``timm:vit_large_patch14_dinov2.lvd142m``, ``hf:REPO_OR_DIR``, ``efficientnet-lite0``, ``.../random``)
  and layer names; parsing only.
- :mod:`~neurodecode.teachers.models`: the frozen teacher models, their deterministic eval transforms
  and final/intermediate/text features.
- :mod:`~neurodecode.teachers.loading`: :func:`load_teacher`, offline (local caches only).
- :mod:`~neurodecode.teachers.stimuli`: stimulus tables and their images (folder stimuli included).
- :mod:`~neurodecode.teachers.cache`: the HDF5 cache (one group per teacher and layer) and its
  crash-safe shard protocol (shards, lock, merge).
- :mod:`~neurodecode.teachers.extract`: :func:`ensure_embeddings`, batched, resumable and
  data-parallel through Lightning's predict loop.
- :mod:`~neurodecode.teachers.probe`: a layer's dimension without embedding anything;
- :mod:`~neurodecode.teachers.simulator`: the simulator's own feature space (``sim:features``).

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
from neurodecode.teachers.extract import ensure_embeddings, run_embedding
from neurodecode.teachers.loading import load_teacher
from neurodecode.teachers.models import Teacher
from neurodecode.teachers.probe import probe_dim
from neurodecode.teachers.specs import (
    DEFAULT_PROMPT,
    TeacherError,
    TeacherSpec,
    WeightsNotFoundError,
    parse_layer,
    parse_spec,
    text_layer,
)
from neurodecode.teachers.stimuli import IMAGE_EXTENSIONS, load_stimuli, stimuli_from_images

__all__ = [
    "DEFAULT_CACHE_NAME", "DEFAULT_PROMPT", "IMAGE_EXTENSIONS", "EmbeddingCache", "EmbeddingCacheError", "Teacher",
    "TeacherError", "TeacherSpec", "WeightsNotFoundError", "default_cache_path", "ensure_embeddings", "load_stimuli",
    "load_teacher", "merge_shards", "parse_layer", "parse_spec", "parts_dir", "probe_dim", "run_embedding", "stimuli_from_images",
    "text_layer",
]
