"""The candidates a streamed window is matched against: teacher embeddings of stimuli (or concepts).

A :class:`Gallery` holds one embedding per candidate stimulus, in the teacher space the model maps
into, and ranks candidates by cosine similarity (as :func:`neurodecode.evaluation.ranking.similarity_matrix`,
what ``neurodecode evaluate`` scores with, computes it; the gallery is normalised once, so a decision
costs one small matrix product). With ``by="concept"``, a concept's score is the best score
of its stimuli.

:func:`load_gallery` reads it from

* nothing given: the embedding cache of the prepared folder the model was trained on
  (``data.root/embeddings.h5``, the model's teacher and layer), restricted to the stimuli of one
  split of its ``stimuli.tsv`` (``test`` by default: zero-shot candidates never seen in training);
* an embedding cache ``.h5`` (``neurodecode embed``): the model's teacher and layer, restricted to a
  split when a ``stimuli.tsv`` lies next to it;
* an ``.npz`` with ``stimulus_id`` (or ``ids``) and ``embeddings`` (or ``features``), and optionally
  ``concept``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from neurodecode.utils import PathLike, UserError

__all__ = ["Gallery", "load_gallery"]


@dataclass
class Gallery:
    """Candidate embeddings and their ids.

    Attributes
    ----------
    ids : ndarray of str
        Candidate stimulus ids.
    embeddings : ndarray, shape (n, dim)
        Their teacher embeddings (float32).
    concepts : ndarray of str | None
        The concept of each candidate.
    source : str
        Where they came from.
    """

    ids: np.ndarray
    embeddings: np.ndarray
    concepts: np.ndarray | None = None
    source: str = ""

    def __post_init__(self) -> None:
        import torch

        self.ids = np.asarray(self.ids).astype(str)
        self.embeddings = np.asarray(self.embeddings, dtype=np.float32)
        if self.embeddings.ndim != 2 or len(self.embeddings) != len(self.ids) or len(self.ids) == 0:
            raise UserError(f"gallery {self.source}: {len(self.ids)} ids for embeddings of shape "
                            f"{self.embeddings.shape}; it needs one embedding row per id.")
        self._index = {s: i for i, s in enumerate(self.ids.tolist())}
        self._tensor = torch.nn.functional.normalize(torch.as_tensor(self.embeddings), dim=1)

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def dim(self) -> int:
        """Embedding size."""
        return int(self.embeddings.shape[1])

    def __contains__(self, stimulus_id: object) -> bool:
        return str(stimulus_id) in self._index

    def position(self, stimulus_id: str | None, by: str = "stimulus") -> int | None:
        """Column of ``stimulus_id`` (or of its concept, ``by="concept"``) among :meth:`labels`; ``None`` if absent."""
        if stimulus_id is None or str(stimulus_id) not in self._index:
            return None
        i = self._index[str(stimulus_id)]
        if by != "concept":
            return i
        return int(np.searchsorted(self.labels("concept"), self.concepts[i]))

    def labels(self, by: str = "stimulus") -> np.ndarray:
        """The names ranked: stimulus ids, or the sorted unique concepts."""
        if by == "concept":
            if self.concepts is None:
                raise UserError(f"gallery {self.source} has no concepts; rank by stimulus (--by stimulus).")
            return np.unique(self.concepts)
        return self.ids

    def scores(self, embeddings: Any, by: str = "stimulus") -> np.ndarray:
        """Cosine similarity of each query ``(n, dim)`` to each candidate ``(n, len(labels(by)))``.

        The computation of :func:`neurodecode.evaluation.ranking.similarity_matrix` (rows
        L2-normalised, then inner products; a zero row scores 0), with the gallery normalised once.
        """
        import torch

        q = torch.as_tensor(np.asarray(embeddings, dtype=np.float32))
        if q.ndim != 2 or q.shape[1] != self.dim:
            raise UserError(f"gallery {self.source}: queries of shape {tuple(q.shape)}, expected (n, {self.dim}); "
                            "were they made by the model of this teacher?")
        if not bool(torch.isfinite(q).all()):
            raise ValueError("the brain embeddings hold non-finite values; check the model's inputs.")
        s = (torch.nn.functional.normalize(q, dim=1) @ self._tensor.T).numpy()
        if by != "concept":
            return s
        names = self.labels("concept")
        cols = np.searchsorted(names, np.asarray(self.concepts).astype(str))
        out = np.empty((len(s), len(names)), dtype=s.dtype)
        for j in range(len(names)):
            out[:, j] = s[:, cols == j].max(axis=1)
        return out

    def topk(self, embeddings: Any, k: int, by: str = "stimulus") -> tuple[list[list[str]], np.ndarray, np.ndarray]:
        """The ``k`` best candidates of each query.

        Returns
        -------
        names : list of list of str
            Per query, the ``k`` best labels, best first (ties: the earlier label first).
        scores : ndarray, shape (n, k)
            Their cosine similarities.
        all_scores : ndarray, shape (n, n_labels)
            Every candidate's similarity.
        """
        s = self.scores(embeddings, by)
        labels = self.labels(by)
        k = min(int(k), s.shape[1])
        order = np.argsort(-s, axis=1, kind="stable")[:, :k]
        return [labels[row].tolist() for row in order], np.take_along_axis(s, order, axis=1), s


def _from_npz(path: Path) -> Gallery:
    with np.load(path, allow_pickle=False) as f:
        keys = set(f.files)
        id_key = next((k for k in ("stimulus_id", "ids") if k in keys), None)
        emb_key = next((k for k in ("embeddings", "features") if k in keys), None)
        if id_key is None or emb_key is None:
            raise UserError(f"--gallery {path}: an .npz gallery holds 'stimulus_id' (or 'ids') and 'embeddings' (or "
                            f"'features'); it has {sorted(keys)}.")
        concepts = f["concept"].astype(str) if "concept" in keys else None
        return Gallery(f[id_key].astype(str), f[emb_key], concepts, str(path))


def _from_cache(path: Path, teacher: str, layer: str, table: Any, split: str | None) -> Gallery:
    from neurodecode.teachers.cache import EmbeddingCache

    cache = EmbeddingCache(path)
    if not cache.has(teacher, layer):
        groups = cache.groups() if cache.exists() else []
        raise UserError(f"--gallery {path}: no embeddings of teacher {teacher!r} (layer {layer}), the model's teacher; "
                        f"it holds {groups}. Embed the stimuli with 'neurodecode embed' using that teacher.")
    ids, feats = cache.get(teacher, layer)
    ids = np.asarray(ids).astype(str)
    concepts = None
    if table is not None:
        index = table.index
        rows = np.array([index.get(s, -1) for s in ids.tolist()])
        keep = rows >= 0
        if split and split != "all":
            keep &= np.array([table.split[r] == split if r >= 0 else False for r in rows])
        if not keep.any():
            raise UserError(f"--gallery {path}: none of its {len(ids)} embeddings is a {split!r} stimulus of the "
                            "stimulus table; choose another --gallery-split (train, test or all).")
        ids, feats, rows = ids[keep], feats[keep], rows[keep]
        concepts = np.asarray(table.concept)[rows].astype(str)
    return Gallery(ids, feats, concepts, f"{path} [{teacher}, {layer}{', ' + split if split else ''}]")


def load_gallery(spec: PathLike | None, config: dict[str, Any], *, split: str | None = "test") -> Gallery:
    """The gallery of ``--gallery`` (see the module docstring).

    Parameters
    ----------
    spec : path-like | None
        An ``.h5`` embedding cache, an ``.npz``, or ``None`` for the model's own cache.
    config : dict
        The model's ``config.json`` (teacher, layer, root, embedding size).
    split : str | None
        Stimuli of this split only (``"test"``, ``"train"`` or ``"all"``), when a stimulus table is known.

    Returns
    -------
    gallery : Gallery
    """
    from neurodecode.io.stimuli import StimulusTable

    data = config.get("data", {})
    teacher, layer = data.get("teacher"), data.get("layer") or "final"
    root = Path(data["root"]) if data.get("root") else None
    if spec is None:
        if root is None or not (root / "embeddings.h5").is_file():
            raise UserError(f"no --gallery given, and the model's prepared folder ({root}) holds no embeddings.h5: "
                            "give --gallery (an embedding cache made by 'neurodecode embed', or an .npz with "
                            "stimulus_id and embeddings).")
        path = root / "embeddings.h5"
    else:
        path = Path(spec)
        if not path.is_file():
            raise UserError(f"--gallery {path} not found: give an embedding cache (.h5) or an .npz with stimulus_id "
                            "and embeddings.")
    if path.suffix == ".npz":
        gallery = _from_npz(path)
    else:
        if not teacher:
            raise UserError(f"--gallery {path}: the model's config.json names no teacher (data.teacher), so the cache "
                            "group to read is unknown; give an .npz gallery instead.")
        table_file = path.parent / "stimuli.tsv"
        table = StimulusTable.read_tsv(table_file) if table_file.is_file() else None
        gallery = _from_cache(path, teacher, layer, table, split if table is not None else None)
    dim = data.get("embed_dim") or config.get("encoder", {}).get("n_outputs")
    if dim and gallery.dim != int(dim):
        raise UserError(f"--gallery {gallery.source}: embeddings of size {gallery.dim}, but the model outputs {dim}; "
                        "give the embeddings of the model's teacher.")
    return gallery
