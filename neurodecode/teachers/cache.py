"""The embedding cache: teacher features of every stimulus, in one HDF5 file.

Layout (``format`` attribute ``"neurodecode-embedding-cache"``, ``format_version`` 1)
------------------------------------------------------------------------------------
The default file is ``<out>/embeddings.h5``. It holds one group per (teacher, layer), named
``<slug>__<layer>`` where ``<slug>`` is :func:`~neurodecode.teachers.specs.spec_slug` of the spec
(readable characters + 8 hex digits of its hash). Each group holds

``stimulus_id`` (image layers) or ``concept`` (text layers)
    UTF-8 strings, one per row: the key of the row.
``features``
    float32 ``(n, dim)``, raw (unnormalised) features, one row per key.

and the attributes ``spec`` (the full spec string), ``layer``, ``key`` (name of the key dataset),
``dim``, ``transform`` (the evaluation transform, as text), ``neurodecode_version`` and, for text
layers, ``prompt``. Image layers are ``"final"`` and ``"blockN-mean"``/``"blockN-cls"``; text
embeddings of concept prompts are stored under ``"text"`` (default prompt) or ``"text-XXXXXXXX"``
(another prompt, see :func:`~neurodecode.teachers.specs.text_layer`), keyed by concept.

Writing is crash-safe. Extraction writes each finished batch as a small *shard* file in
``<out>/embeddings.parts/`` (each written to a temporary name and renamed, so a shard is either
complete or absent); :func:`merge_shards` then writes a complete new cache file next to the old one
and swaps it in with ``os.replace``, so readers see the old file or the new one, never a
half-written one. Shards are deleted only after the swap; a crash at any point loses at most the
batch in flight, and a rerun skips every id already in the cache or in a shard.

:class:`EmbeddingCache` opens the file for each call (never keeps a handle), so it always reads the
latest complete file.

This module reads better whole: the file layout, the shards, their merge and the removal of a stale
group are one protocol (who writes what, under which lock, in which order), checked in one place.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from neurodecode._version import __version__
from neurodecode.io.store import StoreError
from neurodecode.teachers.specs import spec_slug
from neurodecode.utils import PathLike, atomic_path, logger

DEFAULT_CACHE_NAME = "embeddings.h5"
CACHE_FORMAT = "neurodecode-embedding-cache"
CACHE_FORMAT_VERSION = 1
TEXT_KEY = "concept"
IMAGE_KEY = "stimulus_id"


class EmbeddingCacheError(StoreError):
    """An embedding cache (or a request to it) that cannot be served; names the file, group and fix."""


def default_cache_path(out: PathLike) -> Path:
    """The cache file of an output folder: ``<out>/embeddings.h5``."""
    return Path(out) / DEFAULT_CACHE_NAME


def resolve_cache_path(cache_path: PathLike | None, root: PathLike | None = None) -> Path:
    """The cache file meant by ``cache_path``: a file as it is, a folder (or a path without suffix
    that does not exist yet) as ``<folder>/embeddings.h5``; ``None`` as :func:`default_cache_path`
    of ``root``.

    Raises
    ------
    ValueError
        When both ``cache_path`` and ``root`` are None.
    """
    if cache_path is None:
        if root is None:
            raise ValueError("cache_path is required when the stimulus table has no root folder.")
        return default_cache_path(root)
    p = Path(cache_path)
    if p.is_dir() or (not p.suffix and not p.exists()):
        p = p / DEFAULT_CACHE_NAME
    return p


def parts_dir(cache_path: PathLike) -> Path:
    """The shard folder of a cache file: ``embeddings.h5`` -> ``embeddings.parts/`` next to it."""
    p = Path(cache_path)
    return p.with_name(p.stem + ".parts")


def group_name(spec: str, layer: str) -> str:
    """HDF5 group of (``spec``, ``layer``): ``<slug>__<layer>``."""
    return f"{spec_slug(spec)}__{layer}"


def key_name(layer: str) -> str:
    """Name of the key dataset of a layer: ``concept`` for text layers, else ``stimulus_id``."""
    return TEXT_KEY if str(layer).startswith("text") else IMAGE_KEY


def _str_dtype():
    import h5py

    return h5py.string_dtype("utf-8")


def _read_keys(group: Any, path: Path, name: str) -> np.ndarray:
    key = group.attrs.get("key", IMAGE_KEY)
    if key not in group or "features" not in group:
        raise EmbeddingCacheError(path, name, f"group lacks the '{key}' or 'features' dataset.",
                                  "The file is not a neurodecode embedding cache; delete it and run "
                                  "'neurodecode embed' again.")
    return np.asarray(group[key].asstr()[()], dtype=object)


# --------------------------------------------------------------------------------------------------
# reading
# --------------------------------------------------------------------------------------------------
class EmbeddingCache:
    """Read access to an embedding cache file.

    Parameters
    ----------
    path : path-like
        The cache file (``<out>/embeddings.h5``) or the folder holding it.

    Examples
    --------
    >>> cache = EmbeddingCache("prepared/embeddings.h5")            # doctest: +SKIP
    >>> cache.groups()                                               # doctest: +SKIP
    [('open_clip:ViT-H-14/laion2b_s32b_b79k', 'final'), ...]
    >>> feats = cache.get("efficientnet-lite0", ids=["img_001", "img_007"])  # doctest: +SKIP
    """

    def __init__(self, path: PathLike) -> None:
        p = Path(path)
        if p.is_dir():
            p = p / DEFAULT_CACHE_NAME
        self.path = p

    def __repr__(self) -> str:
        n = len(self.groups()) if self.exists() else 0
        return f"<EmbeddingCache {self.path} | {n} group(s)>"

    def exists(self) -> bool:
        """True when the cache file exists."""
        return self.path.is_file()

    @contextlib.contextmanager
    def _open(self) -> Iterator[Any]:
        import h5py

        if not self.path.is_file():
            raise EmbeddingCacheError(self.path, None, "embedding cache not found.",
                                      "Run 'neurodecode embed --stimuli DIR --teacher SPEC --out DIR' first "
                                      "(or let 'neurodecode fit' build it).")
        try:
            f = h5py.File(self.path, "r")
        except OSError as err:
            raise EmbeddingCacheError(self.path, None, f"cannot be read as HDF5 ({err}).",
                                      "Delete it and run 'neurodecode embed' again.") from None
        try:
            yield f
        finally:
            f.close()

    def groups(self) -> list[tuple[str, str]]:
        """The (spec, layer) pairs held, sorted. An absent file holds none."""
        if not self.exists():
            return []
        with self._open() as f:
            out = [(str(g.attrs["spec"]), str(g.attrs["layer"])) for g in f.values()
                   if "spec" in g.attrs and "layer" in g.attrs]
        return sorted(out)

    def _group(self, f: Any, spec: str, layer: str) -> Any:
        name = group_name(spec, layer)
        if name not in f:
            held = sorted((str(g.attrs.get("spec")), str(g.attrs.get("layer"))) for g in f.values())
            fix = ("Embed it with 'neurodecode embed --stimuli DIR --teacher "
                   f"\"{spec}\"" + ("" if layer == "final" else
                                    (" --text" if layer.startswith("text") else f" --layers {layer}"))
                   + " --out DIR'.")
            raise EmbeddingCacheError(self.path, name, f"no embeddings of teacher {spec!r}, layer {layer!r}; "
                                      f"the cache holds {held or 'nothing'}.", fix)
        return f[name]

    def attrs(self, spec: str, layer: str = "final") -> dict[str, Any]:
        """Attributes of a group (spec, layer, key, dim, transform, neurodecode_version, ...)."""
        with self._open() as f:
            g = self._group(f, spec, layer)
            return {k: (v.item() if hasattr(v, "item") else v) for k, v in g.attrs.items()}

    def ids(self, spec: str, layer: str = "final") -> np.ndarray:
        """Keys of a group (stimulus ids, or concepts for text layers); empty if the group is absent."""
        if not self.exists():
            return np.asarray([], dtype=object)
        with self._open() as f:
            name = group_name(spec, layer)
            if name not in f:
                return np.asarray([], dtype=object)
            return _read_keys(f[name], self.path, name)

    def missing(self, spec: str, layer: str, ids: Sequence[str]) -> list[str]:
        """Those of ``ids`` that the group lacks, in the order given."""
        have = set(self.ids(spec, layer).tolist())
        return [str(i) for i in ids if str(i) not in have]

    def has(self, spec: str, layer: str = "final", ids: Sequence[str] | None = None) -> bool:
        """True when the group exists and (if ``ids`` is given) holds every one of ``ids``."""
        if not self.exists():
            return False
        with self._open() as f:
            if group_name(spec, layer) not in f:
                return False
        return ids is None or not self.missing(spec, layer, ids)

    def dim(self, spec: str, layer: str = "final") -> int:
        """Feature dimension of a group."""
        return int(self.attrs(spec, layer)["dim"])

    def get(self, spec: str, layer: str = "final", ids: Sequence[str] | None = None
            ) -> tuple[np.ndarray, np.ndarray] | np.ndarray:
        """Features of one (teacher, layer).

        Parameters
        ----------
        spec : str
            The teacher spec, exactly as embedded.
        layer : str
            ``"final"``, ``"blockN-mean"``, ``"blockN-cls"``, ``"text"``, ...
        ids : sequence of str | None
            Keys to return, in this order (stimulus ids, or concepts for text layers).

        Returns
        -------
        ids, features : ndarray of str, ndarray (n, dim) float32
            When ``ids`` is None: every key of the group and its features.
        features : ndarray (len(ids), dim) float32
            When ``ids`` is given: rows aligned with ``ids``.

        Raises
        ------
        EmbeddingCacheError
            When the file or group is absent, or some ``ids`` are missing (they are listed).
        """
        with self._open() as f:
            g = self._group(f, spec, layer)
            keys = _read_keys(g, self.path, g.name.lstrip("/"))
            feats = np.asarray(g["features"][()], dtype=np.float32)
        if feats.ndim != 2 or len(feats) != len(keys):
            raise EmbeddingCacheError(self.path, group_name(spec, layer),
                                      f"features have shape {feats.shape} for {len(keys)} keys.",
                                      "Delete the file and run 'neurodecode embed' again.")
        if ids is None:
            return keys, feats
        index = {k: i for i, k in enumerate(keys.tolist())}
        rows = np.empty(len(ids), dtype=np.int64)
        missing = []
        for j, k in enumerate(ids):
            i = index.get(str(k))
            if i is None:
                missing.append(str(k))
                rows[j] = 0
            else:
                rows[j] = i
        if missing:
            what = "concept(s)" if layer.startswith("text") else "stimulus id(s)"
            raise EmbeddingCacheError(
                self.path, group_name(spec, layer),
                f"{len(missing)} of {len(ids)} {what} have no embedding: {missing[:10]}"
                + (" ..." if len(missing) > 10 else "") + ".",
                f"Run 'neurodecode embed' (or ensure_embeddings) for teacher {spec!r} on these stimuli.")
        return feats[rows]


# --------------------------------------------------------------------------------------------------
# shards
# --------------------------------------------------------------------------------------------------
def write_shard(parts: PathLike, spec: str, layers: Mapping[str, tuple[Sequence[str], np.ndarray, Mapping[str, Any]]],
                *, rank: int = 0) -> Path:
    """Write one finished batch as a shard file, atomically.

    Parameters
    ----------
    parts : path-like
        The shard folder (:func:`parts_dir` of the cache).
    spec : str
        Teacher spec.
    layers : mapping
        Layer name -> ``(keys, features (n, dim), attrs)``.
    rank : int
        Process rank (part of the file name, so processes never collide).

    Returns
    -------
    path : Path
        ``<parts>/<slug>.r<rank>.<random>.h5``.
    """
    import h5py

    parts = Path(parts)
    parts.mkdir(parents=True, exist_ok=True)
    path = parts / f"{spec_slug(spec)}.r{int(rank):03d}.{uuid.uuid4().hex[:12]}.h5"
    with atomic_path(path, suffix=".tmp") as tmp, h5py.File(tmp, "w") as f:
        f.attrs["spec"] = spec
        f.attrs["rank"] = int(rank)
        for layer, (keys, feats, attrs) in layers.items():
            feats = np.asarray(feats, dtype=np.float32)
            if feats.ndim != 2 or len(feats) != len(keys):
                raise ValueError(f"shard for layer {layer!r}: features {feats.shape} for {len(keys)} keys")
            g = f.create_group(layer)
            key = key_name(layer)
            g.create_dataset(key, data=np.asarray([str(k) for k in keys], dtype=object), dtype=_str_dtype())
            g.create_dataset("features", data=feats)
            for k, v in attrs.items():
                g.attrs[k] = v
            g.attrs.update({"spec": spec, "layer": layer, "key": key, "dim": int(feats.shape[1])})
    return path


def shard_files(parts: PathLike, spec: str | None = None) -> list[Path]:
    """Finished shard files in ``parts`` (of one teacher, or all), sorted by name."""
    parts = Path(parts)
    if not parts.is_dir():
        return []
    pattern = f"{spec_slug(spec)}.r*.h5" if spec is not None else "*.h5"
    return sorted(p for p in parts.glob(pattern) if not p.name.startswith("."))


def shard_keys(parts: PathLike, spec: str, layer: str) -> set[str]:
    """Keys of ``layer`` already written in the shards of ``spec`` (unreadable shards are skipped)."""
    import h5py

    out: set[str] = set()
    for p in shard_files(parts, spec):
        try:
            with h5py.File(p, "r") as f:
                if f.attrs.get("spec") != spec or layer not in f:
                    continue
                out.update(f[layer][key_name(layer)].asstr()[()].tolist())
        except OSError as err:
            logger.warning(f"skipping unreadable shard {p} ({err})")
    return out


def stored_keys(cache_path: PathLike, spec: str, layer: str) -> set[str]:
    """Keys of ``layer`` of ``spec`` already written: in the cache file or in a shard not merged yet.

    This is what a (re)run may skip: an interrupted run's finished batches count as done.
    """
    cache_path = Path(cache_path)
    return set(EmbeddingCache(cache_path).ids(spec, layer).tolist()) | shard_keys(parts_dir(cache_path), spec, layer)


@contextlib.contextmanager
def _locked(cache_path: Path) -> Iterator[None]:
    """Hold an exclusive lock beside the cache while merging (POSIX; a no-op elsewhere)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    cache_path.parent.mkdir(parents=True, exist_ok=True)
    lock = cache_path.with_name(f".{cache_path.name}.lock")
    with open(lock, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def merge_shards(cache_path: PathLike, parts: PathLike | None = None) -> dict[str, int]:
    """Merge the shard files into the cache, atomically, then delete them.

    A complete new cache file is written next to the old one (all old groups copied, new rows
    appended; a key already present is kept as it is) and swapped in with ``os.replace``. Shards
    are deleted only after the swap.

    Parameters
    ----------
    cache_path : path-like
        The cache file.
    parts : path-like | None
        The shard folder; default :func:`parts_dir` of ``cache_path``.

    Returns
    -------
    added : dict
        Group name -> number of rows added.
    """
    import h5py

    cache_path = Path(cache_path)
    parts = parts_dir(cache_path) if parts is None else Path(parts)
    with _locked(cache_path):
        files = shard_files(parts)
        if not files:
            return {}
        old_keys: dict[str, set[str]] = {}
        old_dims: dict[str, int] = {}
        if cache_path.is_file():
            cache = EmbeddingCache(cache_path)
            with cache._open() as f:
                for name, g in f.items():
                    old_keys[name] = set(_read_keys(g, cache_path, name).tolist())
                    old_dims[name] = int(g["features"].shape[1])
        new: dict[str, dict[str, Any]] = {}
        merged: list[Path] = []
        for p in files:
            try:
                fh = h5py.File(p, "r")
            except OSError as err:
                logger.warning(f"not merging unreadable shard {p} ({err}); delete it if it stays unreadable")
                continue
            with fh:
                spec = str(fh.attrs["spec"])
                for layer, g in fh.items():
                    name = group_name(spec, layer)
                    keys = g[key_name(layer)].asstr()[()].tolist()
                    feats = np.asarray(g["features"][()], dtype=np.float32)
                    entry = new.setdefault(name, {"attrs": dict(g.attrs), "keys": [], "feats": [],
                                                  "seen": set(old_keys.get(name, set()))})
                    dim = old_dims.get(name, int(entry["attrs"]["dim"]))
                    if feats.shape[1] != dim:
                        raise EmbeddingCacheError(
                            p, layer, f"has features of dimension {feats.shape[1]} but the cache holds {dim} "
                                      f"for teacher {spec!r}.",
                            "The same spec must always give the same model: delete the stale shard or cache.")
                    keep = []
                    for i, k in enumerate(keys):
                        if k not in entry["seen"]:
                            entry["seen"].add(k)
                            keep.append(i)
                    if keep:
                        entry["keys"].extend(keys[i] for i in keep)
                        entry["feats"].append(feats[keep])
            merged.append(p)
        added = {name: len(e["keys"]) for name, e in new.items()}
        if any(added.values()):
            _write_merged(cache_path, new)
        for p in merged:
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
        for stale in parts.glob(".*.tmp"):  # temporary files of shards whose writer was killed
            with contextlib.suppress(OSError):
                stale.unlink()
        with contextlib.suppress(OSError):
            parts.rmdir()
    return added


def drop_group(cache_path: PathLike, spec: str, layer: str) -> bool:
    """Remove the group of (``spec``, ``layer``) from the cache, atomically (and its unmerged shards).

    Used when a group is stale (built from another source); returns True when there was one.
    """
    import h5py

    cache_path = Path(cache_path)
    name = group_name(spec, layer)
    with _locked(cache_path):
        for p in shard_files(parts_dir(cache_path), spec):
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
        if not cache_path.is_file():
            return False
        with h5py.File(cache_path, "r") as src:
            if name not in src:
                return False
            with atomic_path(cache_path, suffix=".h5.tmp") as tmp, h5py.File(tmp, "w") as dst:
                for k, v in src.attrs.items():
                    dst.attrs[k] = v
                for other in src:
                    if other != name:
                        src.copy(src[other], dst, name=other)
    return True


def _write_merged(cache_path: Path, new: Mapping[str, Mapping[str, Any]]) -> None:
    import h5py

    with atomic_path(cache_path, suffix=".h5.tmp") as tmp, h5py.File(tmp, "w") as dst:
        dst.attrs["format"] = CACHE_FORMAT
        dst.attrs["format_version"] = CACHE_FORMAT_VERSION
        dst.attrs["neurodecode_version"] = __version__
        src = h5py.File(cache_path, "r") if cache_path.is_file() else None
        try:
            names = list(src.keys()) if src is not None else []
            for name in names:
                if name not in new or not new[name]["keys"]:
                    src.copy(src[name], dst, name=name)
            for name, entry in new.items():
                if not entry["keys"] and name in names:
                    continue
                attrs = dict(entry["attrs"])
                key = str(attrs.get("key", IMAGE_KEY))
                if src is not None and name in src:
                    old = src[name]
                    keys = old[key].asstr()[()].tolist() + list(entry["keys"])
                    feats = np.concatenate([np.asarray(old["features"][()], np.float32), *entry["feats"]])
                    attrs = {**attrs, **dict(old.attrs)}
                else:
                    keys = list(entry["keys"])
                    feats = np.concatenate(entry["feats"]) if entry["feats"] else np.zeros((0, attrs["dim"]), "f4")
                g = dst.create_group(name)
                g.create_dataset(key, data=np.asarray(keys, dtype=object), dtype=_str_dtype())
                g.create_dataset("features", data=feats.astype(np.float32, copy=False))
                for k, v in attrs.items():
                    g.attrs[k] = v
                g.attrs["dim"] = int(feats.shape[1])
        finally:
            if src is not None:
                src.close()


__all__ = ["DEFAULT_CACHE_NAME", "EmbeddingCache", "EmbeddingCacheError", "default_cache_path", "resolve_cache_path",
           "parts_dir", "group_name", "key_name", "write_shard", "shard_files", "shard_keys", "stored_keys",
           "merge_shards", "drop_group"]
