"""Large-gallery search: top-k retrieval against millions of image embeddings in bounded memory.

This is *search* of a big distractor gallery (e.g. every image of a data set, or a web-scale set of
embeddings). It is not the reconstruction gallery (the images shown next to reconstructed images),
and not the k-way test-set retrieval of :mod:`~neurodecode.evaluation.retrieval`. Ranks and ties follow :mod:`~neurodecode.evaluation.ranking`.

The gallery is read in chunks of rows; each chunk is compared with every query and only the best
``k`` per query are kept (``torch.topk`` on the chunk, merged with the running best). Memory is
bounded by the chunk size, not by the gallery size, and the gallery can stay on disk:

- a numpy array or ``np.memmap`` (e.g. ``np.load(path, mmap_mode="r")``), a torch tensor (CPU or
  CUDA), an ``h5py.Dataset`` (any object with ``shape`` and row slicing works);
- a path to a ``.npy`` file, read chunk by chunk with plain file reads into a fresh buffer (no
  memory map, so the resident memory of the process stays at one or two chunks; no pickle, only
  numeric dtypes are accepted);
- a path to an ``.h5``/``.hdf5`` file with ``key=`` naming the dataset.

While one chunk is compared, the next one can be read in a background thread (``prefetch``; on by
default on CUDA only).
Chunks can be compared in ``float16``/``bfloat16`` (``dtype=``) to halve the arithmetic and memory
traffic; scores are returned in float32. Everything runs on CPU or CUDA (``device=``).

Ties: equal scores are returned ordered by gallery index, but which of several items tied at the
``k``-th place is kept is up to ``torch.topk``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch

from neurodecode.evaluation.ranking import SIMILARITIES, TIES, ArrayLike, as_embeddings, ranks_from_counts
from neurodecode.utils import check_option, progress

__all__ = ["GallerySource", "auto_chunk_size", "gallery_ranks", "gallery_retrieval", "open_gallery",
           "search_gallery"]

_DTYPES = {None: torch.float32, "float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16,
           torch.float32: torch.float32, torch.float16: torch.float16, torch.bfloat16: torch.bfloat16}


class GallerySource:
    """Row-chunk reader over any supported gallery (see the module documentation).

    Parameters
    ----------
    gallery : array-like | torch.Tensor | h5py.Dataset | str | os.PathLike
        The gallery, ``(n_items, dim)``.
    key : str | None
        Dataset name inside an HDF5 file given by path.

    Attributes
    ----------
    shape : tuple of int
        ``(n_items, dim)``.
    name : str
        A description used in error messages.
    """

    def __init__(self, gallery: Any, *, key: str | None = None) -> None:
        self._file = None
        self._h5 = None
        self._tensor: torch.Tensor | None = None
        self._array: Any = None
        if isinstance(gallery, str | os.PathLike):
            path = Path(gallery)
            self.name = str(path)
            if not path.is_file():
                raise FileNotFoundError(f"gallery file {path} does not exist.")
            if path.suffix == ".npy":
                self._open_npy(path)
            elif path.suffix in (".h5", ".hdf5"):
                if key is None:
                    raise ValueError(f"gallery {path} is an HDF5 file: pass key= with the name of the "
                                     "(n_items, dim) embedding dataset.")
                import h5py

                self._h5 = h5py.File(path, "r")
                if key not in self._h5:
                    names = list(self._h5.keys())
                    self._h5.close()
                    raise KeyError(f"gallery {path} has no dataset {key!r}; top-level names: {names}.")
                self._array = self._h5[key]
                self.name = f"{path}:{key}"
            else:
                raise ValueError(f"gallery {path}: unsupported file type {path.suffix!r}; use a .npy file (see "
                                 "numpy.save / numpy.lib.format.open_memmap) or an .h5 file with key=.")
        elif isinstance(gallery, torch.Tensor):
            self._tensor = gallery.detach()
            self.name = "gallery tensor"
        elif hasattr(gallery, "shape") and hasattr(gallery, "__getitem__") and hasattr(gallery, "dtype"):
            self._array = gallery  # numpy array, np.memmap, h5py.Dataset, zarr array...
            self.name = getattr(gallery, "name", None) or type(gallery).__name__
        else:
            self._array = np.asarray(gallery)
            self.name = "gallery"
        shape = tuple(self._shape_dtype()[0])
        if len(shape) != 2:
            raise ValueError(f"{self.name}: the gallery must have shape (n_items, dim), got {shape}.")
        if shape[0] == 0:
            raise ValueError(f"{self.name}: the gallery is empty.")
        dtype = self._shape_dtype()[1]
        if not (dtype.is_floating_point if isinstance(dtype, torch.dtype) else np.issubdtype(dtype, np.floating)):
            raise TypeError(f"{self.name}: gallery embeddings must be floating point, got dtype {dtype}.")
        self.shape = shape

    def _open_npy(self, path: Path) -> None:
        f = open(path, "rb", buffering=0)  # noqa: SIM115 (closed in close())
        try:
            major, _ = np.lib.format.read_magic(f)
            read_header = {1: np.lib.format.read_array_header_1_0, 2: np.lib.format.read_array_header_2_0}
            if major not in read_header:
                raise ValueError(f"gallery {path}: unsupported .npy format version {major}.")
            shape, fortran, dtype = read_header[major](f)
        except Exception:
            f.close()
            raise
        if dtype.hasobject or not np.issubdtype(dtype, np.floating):
            f.close()
            raise TypeError(f"gallery {path}: embeddings must be a floating-point array, got dtype {dtype} "
                            "(object arrays are never unpickled).")
        if fortran and len(shape) == 2 and shape[0] > 1 and shape[1] > 1:
            f.close()
            raise ValueError(f"gallery {path} is stored in Fortran (column-major) order, so rows cannot be "
                             "streamed; re-save it with np.save(path, np.ascontiguousarray(x)).")
        self._file = f
        self._npy = (tuple(shape), dtype, f.tell())
        expected = self._npy[2] + int(np.prod(shape)) * dtype.itemsize
        if os.path.getsize(path) < expected:
            f.close()
            raise ValueError(f"gallery {path} is truncated: {os.path.getsize(path)} bytes, expected {expected} "
                             f"for shape {tuple(shape)} {dtype}.")

    def _shape_dtype(self) -> tuple[tuple[int, ...], Any]:
        if self._file is not None:
            return self._npy[0], self._npy[1]
        if self._tensor is not None:
            return tuple(self._tensor.shape), self._tensor.dtype
        return tuple(self._array.shape), np.dtype(self._array.dtype)

    @property
    def itemsize(self) -> int:
        """Bytes per stored value."""
        dtype = self._shape_dtype()[1]
        return dtype.itemsize if isinstance(dtype, torch.dtype) else np.dtype(dtype).itemsize

    def read(self, start: int, stop: int) -> torch.Tensor:
        """Rows ``start:stop`` as a tensor (CPU, or the device of a tensor gallery)."""
        if self._tensor is not None:
            return self._tensor[start:stop]
        if self._file is not None:
            shape, dtype, offset = self._npy
            buf = np.empty((stop - start, shape[1]), dtype=dtype)
            self._file.seek(offset + start * shape[1] * dtype.itemsize)
            view = memoryview(buf).cast("B")
            got = 0
            while got < view.nbytes:  # raw reads may return fewer bytes than asked
                n = self._file.readinto(view[got:])
                if not n:
                    raise OSError(f"gallery {self.name}: unexpected end of file at row {start}.")
                got += n
            return torch.from_numpy(buf)
        chunk = self._array[start:stop]
        if not isinstance(chunk, np.ndarray) or not chunk.flags.writeable or not chunk.flags.c_contiguous:
            chunk = np.array(chunk)  # a read-only memmap or a strided view: read / copy the rows
        return torch.from_numpy(chunk)

    def read_rows(self, rows: np.ndarray) -> torch.Tensor:
        """Arbitrary rows (in the given order) as a tensor."""
        rows = np.asarray(rows, dtype=np.int64)
        if self._tensor is not None:
            return self._tensor[torch.from_numpy(rows).to(self._tensor.device)]
        uniq, inv = np.unique(rows, return_inverse=True)
        parts = [self.read(int(r), int(r) + 1) for r in uniq]
        return torch.cat(parts)[torch.from_numpy(inv)]

    def chunks(self, chunk_size: int, *, prefetch: bool = True) -> Iterator[tuple[int, torch.Tensor]]:
        """Yield ``(start, rows)`` chunks in order, reading the next chunk while the caller works."""
        n = self.shape[0]
        starts = range(0, n, chunk_size)
        if not prefetch or len(starts) == 1:
            for s in starts:
                yield s, self.read(s, min(s + chunk_size, n))
            return
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="gallery-read") as pool:
            it = iter(starts)
            s = next(it)
            fut = pool.submit(self.read, s, min(s + chunk_size, n))
            for nxt in it:
                rows = fut.result()
                fut = pool.submit(self.read, nxt, min(nxt + chunk_size, n))
                yield s, rows
                s = nxt
            yield s, fut.result()

    def close(self) -> None:
        """Close files opened by this reader."""
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._h5 is not None:
            self._h5.close()
            self._h5 = None

    def __enter__(self) -> GallerySource:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def open_gallery(gallery: Any, *, key: str | None = None) -> GallerySource:
    """Open a gallery for chunked reading; see :class:`GallerySource`."""
    return gallery if isinstance(gallery, GallerySource) else GallerySource(gallery, key=key)


def auto_chunk_size(n_items: int, dim: int, n_queries: int, *, itemsize: int = 4, compute_itemsize: int = 4,
                    max_memory_mb: float = 256.0, prefetch: bool = True) -> int:
    """Rows per chunk so that the working memory of one step stays under ``max_memory_mb``.

    Per gallery row: the read buffer(s) (two with prefetch), a float32 copy, a copy in the compute
    dtype, and one column of the query-by-row similarity block (compute dtype and float32); an
    upper bound, since several of these copies are skipped when the dtypes already match.
    """
    per_row = dim * (itemsize * (2 if prefetch else 1) + 4 + compute_itemsize) + n_queries * (compute_itemsize + 4)
    rows = int(max_memory_mb * 2**20 // per_row)
    return int(min(max(rows, 256), n_items))


def _prepare_queries(queries: ArrayLike, similarity: str, device: torch.device, dtype: torch.dtype
                     ) -> torch.Tensor:
    q = as_embeddings(queries, "queries").to(device, torch.float32)
    if similarity == "cosine":
        q = torch.nn.functional.normalize(q, dim=1)
    return q.to(dtype)


def _prepare_chunk(rows: torch.Tensor, start: int, name: str, dim: int, similarity: str, device: torch.device,
                   dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Gallery rows in the compute dtype, and (cosine) the inverse row norms to apply to the products.

    Scaling the similarity block by the inverse norms costs ``n_queries x rows`` multiplications
    instead of ``rows x dim`` for normalising the rows, and the norms double as the finiteness check
    (a row holding NaN or Inf has a non-finite norm), so every row is read once. float16 cannot hold
    raw products of large embeddings, so there the rows are normalised first.
    """
    g = rows.to(device, torch.float32)
    if g.shape[1] != dim:
        raise ValueError(f"{name}: gallery embeddings have size {g.shape[1]} but the queries have size {dim}.")
    norms = torch.linalg.vector_norm(g, dim=1) if similarity == "cosine" else g.sum(dim=1)
    if not bool(torch.isfinite(norms).all()):
        bad = torch.nonzero(~torch.isfinite(g).all(dim=1)).flatten()
        if bad.numel():
            raise ValueError(f"{name}: gallery row {int(bad[0]) + start} contains NaN or Inf; fix or drop it "
                             "before searching.")
        r = int(torch.nonzero(~torch.isfinite(norms)).flatten()[0]) + start
        raise ValueError(f"{name}: gallery row {r} has values too large for float32 arithmetic; rescale the "
                         "embeddings.")
    if similarity != "cosine":
        return g.to(dtype), None
    inv = 1.0 / norms.clamp_min(1e-12)  # a zero row gets similarity 0, as with F.normalize
    if dtype == torch.float16:
        return (g * inv[:, None]).to(dtype), None
    return g.to(dtype), inv


def _similarities(q: torch.Tensor, g: torch.Tensor, inv: torch.Tensor | None) -> torch.Tensor:
    """Query-by-row similarity block in float32."""
    sims = q @ g.T
    sims = sims.float() if sims.dtype != torch.float32 else sims
    return sims if inv is None else sims.mul_(inv[None, :])


def _resolve(queries: ArrayLike, src: GallerySource, device: Any, dtype: Any, similarity: str
             ) -> tuple[torch.device, torch.dtype]:
    check_option("similarity", similarity, SIMILARITIES)
    if not (dtype is None or isinstance(dtype, (str, torch.dtype))):  # e.g. a numpy dtype
        raise ValueError(f"dtype must be None, a name ('float32', 'float16', 'bfloat16') or a torch dtype, got "
                         f"{dtype!r} of type {type(dtype).__name__}.")
    check_option("dtype", dtype, tuple(_DTYPES))
    if device is None:
        if isinstance(queries, torch.Tensor):
            device = queries.device
        elif src._tensor is not None:
            device = src._tensor.device
        else:
            device = "cpu"
    return torch.device(device), _DTYPES[dtype]


def search_gallery(queries: ArrayLike, gallery: Any, k: int = 5, *, chunk_size: int | None = None,
                   similarity: str = "cosine", dtype: Any = None, device: Any = None, key: str | None = None,
                   max_memory_mb: float = 256.0, prefetch: bool | None = None,
                   verbose: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-``k`` gallery items for every query, streaming the gallery in chunks.

    Parameters
    ----------
    queries : array-like | torch.Tensor, shape (n_queries, dim)
        E.g. brain embeddings.
    gallery : array-like | np.memmap | torch.Tensor | h5py.Dataset | str | os.PathLike
        ``(n_items, dim)`` embeddings, in memory or on disk (see the module documentation).
    k : int
        Items returned per query, ``1 <= k <= n_items``.
    chunk_size : int | None
        Gallery rows per chunk; default: :func:`auto_chunk_size` with ``max_memory_mb``.
    similarity : ``"cosine"`` | ``"dot"``
        Cosine normalises queries and every gallery row (a zero row scores 0).
    dtype : None | ``"float32"`` | ``"float16"`` | ``"bfloat16"``
        Precision of the similarity products (normalisation is always float32).
    device : str | torch.device | None
        Where to compute; default: the queries' device (a tensor), else the gallery tensor's, else
        CPU.
    key : str | None
        HDF5 dataset name when ``gallery`` is an ``.h5`` path.
    max_memory_mb : float
        Working-memory budget used to pick ``chunk_size``.
    prefetch : bool | None
        Read the next chunk in a background thread while the current one is compared. ``None``
        (default): only when computing on CUDA, where reading overlaps with GPU work. On CPU the
        reading thread competes with the matrix-product threads: on 2 cores, reading 1M x 1024
        from the page cache, it gained nothing and sometimes cost time (``benchmarks/
        gallery_search.py``); turn it on for cold, slow disks with cores to spare.
    verbose : bool
        Progress bar over chunks.

    Returns
    -------
    scores : torch.Tensor, shape (n_queries, k), float32
        Similarities, best first.
    indices : torch.Tensor, shape (n_queries, k), int64
        Gallery row indices. Both on the compute device.
    """
    src = open_gallery(gallery, key=key)
    try:
        n, dim = src.shape
        k = int(k)
        if not 1 <= k <= n:
            raise ValueError(f"k must be between 1 and the gallery size {n}, got {k}.")
        dev, cdt = _resolve(queries, src, device, dtype, similarity)
        prefetch = (dev.type == "cuda") if prefetch is None else bool(prefetch)
        q = _prepare_queries(queries, similarity, dev, cdt)
        if q.shape[1] != dim:
            raise ValueError(f"queries have size {q.shape[1]} but the gallery ({src.name}) has size {dim}.")
        n_q = q.shape[0]
        if chunk_size is None:
            chunk_size = auto_chunk_size(n, dim, n_q, itemsize=src.itemsize, compute_itemsize=q.element_size(),
                                         max_memory_mb=max_memory_mb, prefetch=prefetch)
        chunk_size = int(chunk_size)
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}.")
        best_s = torch.empty((n_q, 0), device=dev, dtype=torch.float32)
        best_i = torch.empty((n_q, 0), device=dev, dtype=torch.int64)
        n_chunks = -(-n // chunk_size)
        bar = progress(total=n_chunks, enabled=verbose, desc="gallery chunks", unit="chunk")
        with bar:
            for start, rows in src.chunks(chunk_size, prefetch=prefetch):
                g, inv = _prepare_chunk(rows, start, src.name, dim, similarity, dev, cdt)
                sims = _similarities(q, g, inv)
                cs, ci = sims.topk(min(k, g.shape[0]), dim=1)
                merged_s = torch.cat([best_s, cs], dim=1)
                merged_i = torch.cat([best_i, ci + start], dim=1)
                best_s, pos = merged_s.topk(min(k, merged_s.shape[1]), dim=1)
                best_i = merged_i.gather(1, pos)
                bar.update(1)
        # order equal scores by gallery index: stable sort by index, then by score (descending)
        by_index = best_i.argsort(dim=1, stable=True)
        best_s, best_i = best_s.gather(1, by_index), best_i.gather(1, by_index)
        by_score = best_s.argsort(dim=1, descending=True, stable=True)
        return best_s.gather(1, by_score), best_i.gather(1, by_score)
    finally:
        if src is not gallery:
            src.close()


def gallery_ranks(queries: ArrayLike, gallery: Any, *, positives: ArrayLike | None = None,
                  positive_indices: ArrayLike | None = None, similarity: str = "cosine", ties: str = "pessimistic",
                  chunk_size: int | None = None, dtype: Any = None, device: Any = None, key: str | None = None,
                  max_memory_mb: float = 256.0, prefetch: bool | None = None, verbose: bool = False) -> np.ndarray:
    """Rank of each query's true image among a large gallery of distractors, streamed in chunks.

    Give the true images either as embeddings (``positives``: the gallery holds distractors only)
    or as gallery rows (``positive_indices``: that row is left out of the distractors). The rank is
    ``1 + #distractors scoring higher`` (+ ties per ``ties``), so top-n accuracy against the
    gallery is ``mean(ranks <= n)``.

    Parameters
    ----------
    queries : array-like | torch.Tensor, shape (n_queries, dim)
    gallery
        See :func:`search_gallery`.
    positives : array-like | torch.Tensor, shape (n_queries, dim) | None
    positive_indices : array-like of int, shape (n_queries,) | None
    similarity, chunk_size, dtype, device, key, max_memory_mb, prefetch, verbose
        See :func:`search_gallery`.
    ties : ``"pessimistic"`` | ``"optimistic"`` | ``"average"``
        See :mod:`neurodecode.evaluation.retrieval`.

    Returns
    -------
    ranks : np.ndarray of float64, shape (n_queries,)
    """
    return _gallery_ranks(queries, gallery, positives=positives, positive_indices=positive_indices,
                          similarity=similarity, ties=ties, chunk_size=chunk_size, dtype=dtype, device=device,
                          key=key, max_memory_mb=max_memory_mb, prefetch=prefetch, verbose=verbose)[0]


def _gallery_ranks(queries: ArrayLike, gallery: Any, *, positives: ArrayLike | None,
                   positive_indices: ArrayLike | None, similarity: str, ties: str, chunk_size: int | None,
                   dtype: Any, device: Any, key: str | None, max_memory_mb: float, prefetch: bool | None,
                   verbose: bool) -> tuple[np.ndarray, int]:
    check_option("ties", ties, TIES)
    if (positives is None) == (positive_indices is None):
        raise ValueError("give exactly one of positives= (true image embeddings) or positive_indices= (their "
                         "gallery rows).")
    src = open_gallery(gallery, key=key)
    try:
        n, dim = src.shape
        dev, cdt = _resolve(queries, src, device, dtype, similarity)
        prefetch = (dev.type == "cuda") if prefetch is None else bool(prefetch)
        q = _prepare_queries(queries, similarity, dev, cdt)
        n_q = q.shape[0]
        if q.shape[1] != dim:
            raise ValueError(f"queries have size {q.shape[1]} but the gallery ({src.name}) has size {dim}.")
        if positives is not None:
            p = as_embeddings(positives, "positives")
            if p.shape != q.shape:
                raise ValueError(f"positives must have the queries' shape {tuple(q.shape)}, got {tuple(p.shape)}.")
            pos_idx = None
        else:
            pos_idx = np.asarray(positive_indices, dtype=np.int64)
            if pos_idx.shape != (n_q,) or pos_idx.min() < 0 or pos_idx.max() >= n:
                raise ValueError(f"positive_indices must be {n_q} gallery rows in [0, {n - 1}].")
            p = src.read_rows(pos_idx)
        p, p_inv = _prepare_chunk(p, 0, "positives", dim, similarity, dev, cdt)
        true = (q.float() * p.float()).sum(dim=1, keepdim=True)
        if p_inv is not None:
            true = true * p_inv[:, None]
        if chunk_size is None:
            chunk_size = auto_chunk_size(n, dim, n_q, itemsize=src.itemsize, compute_itemsize=q.element_size(),
                                         max_memory_mb=max_memory_mb, prefetch=prefetch)
        better = torch.zeros(n_q, dtype=torch.int64, device=dev)
        tied = torch.zeros(n_q, dtype=torch.int64, device=dev)
        pos_t = None if pos_idx is None else torch.from_numpy(pos_idx).to(dev)
        bar = progress(total=-(-n // int(chunk_size)), enabled=verbose, desc="gallery chunks", unit="chunk")
        with bar:
            for start, rows in src.chunks(int(chunk_size), prefetch=prefetch):
                g, inv = _prepare_chunk(rows, start, src.name, dim, similarity, dev, cdt)
                sims = _similarities(q, g, inv)
                if pos_t is not None:  # the true image is not its own distractor
                    inside = (pos_t >= start) & (pos_t < start + g.shape[0])
                    r = torch.nonzero(inside).flatten()
                    sims[r, pos_t[r] - start] = -torch.inf
                better += (sims > true).sum(dim=1)
                tied += (sims == true).sum(dim=1)
                bar.update(1)
        return ranks_from_counts(better.cpu().numpy(), tied.cpu().numpy(), ties), n
    finally:
        if src is not gallery:
            src.close()


def gallery_retrieval(queries: ArrayLike, gallery: Any, *, tops: tuple[int, ...] = (1, 5),
                      **kwargs: Any) -> dict[str, Any]:
    """Top-n accuracy and ranks of the true images against a large gallery of distractors.

    Parameters
    ----------
    queries, gallery
        See :func:`gallery_ranks`.
    tops : tuple of int
        top-n accuracies to report.
    **kwargs
        Passed to :func:`gallery_ranks` (``positives`` or ``positive_indices`` is required).

    Returns
    -------
    result : dict
        ``top{n}`` (fractions), ``median_rank``, ``mean_rank``, ``n_distractors``, ``n_queries``,
        ``ties``, ``similarity``.
    """
    defaults = dict(positives=None, positive_indices=None, similarity="cosine", ties="pessimistic",
                    chunk_size=None, dtype=None, device=None, key=None, max_memory_mb=256.0, prefetch=None,
                    verbose=False)
    unknown = set(kwargs) - set(defaults)
    if unknown:
        raise TypeError(f"gallery_retrieval got unexpected arguments {sorted(unknown)}.")
    opts = {**defaults, **kwargs}
    ranks, n = _gallery_ranks(queries, gallery, **opts)
    n_distractors = n - (1 if opts["positive_indices"] is not None else 0)
    out: dict[str, Any] = {f"top{t}": float(np.mean(ranks <= t)) for t in tops}
    out.update(median_rank=float(np.median(ranks)), mean_rank=float(np.mean(ranks)), n_distractors=int(n_distractors),
               n_queries=int(ranks.size), ties=opts["ties"], similarity=opts["similarity"])
    return out
