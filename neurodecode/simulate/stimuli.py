"""Simulated stimuli: concepts with a zero-shot split, rendered exemplars and their true features.

Stimuli
-------
A concept is a (shape, colour, texture) combination (see :mod:`neurodecode.simulate.shapes`);
training and test concepts are disjoint, but every attribute of a test concept also occurs in some
training concepts, so zero-shot decoding is possible through shared features. Training concepts have
``n_exemplars`` images each, test concepts ``n_test_exemplars`` (THINGS-EEG2: 10 and 1). Exemplars
vary in size, position, pose, colour jitter and texture phase.

Features of an image
--------------------
* **low-level** (10 numbers computed from the pixels: mean R, G, B, contrast, object area, centroid
  x and y, orientation energy (2), high-spatial-frequency share), z-scored with training statistics;
* **mid-level** (8): the concept's shape and texture codes (random 4-d vectors per attribute value);
* **semantic** (12): shape, colour and texture codes, plus a concept-specific idiosyncratic code of
  relative size ``idiosyncratic`` that no image feature predicts (real brains encode things that no
  vision model does), scaled to unit variance per dimension.

The EEG, MEG and fMRI responses to these features are made by :mod:`neurodecode.simulate.forward`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from neurodecode.io.store import StimulusTable
from neurodecode.simulate.config import SimulationConfig
from neurodecode.simulate.shapes import (
    COLOURS,
    SHAPES,
    TEXTURES,
    Concept,
    all_concepts,
    low_level_features,
    render,
    sample_exemplar,
)
from neurodecode.utils import check_option

__all__ = ["ATTRIBUTE_DIM", "FEATURE_BLOCKS", "StimulusSet", "feature_block", "make_stimuli"]

ATTRIBUTE_DIM = 4  # size of the random code of each shape, colour and texture
FEATURE_BLOCKS: tuple[str, ...] = ("low", "lowmid", "sem", "all")


@dataclass
class StimulusSet:
    """The simulated stimuli: concepts, images and true features."""

    concepts: list[Concept]
    concept_split: np.ndarray  # per concept, "train"/"test"
    stim_concept: np.ndarray  # per stimulus, index into concepts
    stim_exemplar: np.ndarray  # per stimulus, exemplar number within its concept
    stimulus_id: np.ndarray
    split: np.ndarray
    images: np.ndarray  # (n_stimuli, size, size, 3) uint8
    exemplars: list[dict[str, float]]
    features: dict[str, np.ndarray]  # "low", "mid", "sem", each (n_stimuli, d)

    def table(self, image_paths: Sequence[str] | None = None, root: Path | None = None) -> StimulusTable:
        """The stimulus table (image paths optional)."""
        paths = [""] * len(self.stimulus_id) if image_paths is None else list(image_paths)
        names = [self.concepts[c].name for c in self.stim_concept]
        return StimulusTable(self.stimulus_id, names, paths, self.split, root=root)

    def write_images(self, out: Path) -> list[str]:
        """Write the images in the THINGS layout ``images/<split>/<NNNNN>_<concept>/<id>.png`` (atomically).

        Returns
        -------
        paths : list of str
            Each image's path relative to ``out``, in stimulus order.
        """
        from PIL import Image

        from neurodecode.utils import atomic_path

        paths: list[str] = []
        concept_no: dict[int, int] = {}
        for i, sid in enumerate(self.stimulus_id):
            ci, sp = self.stim_concept[i], self.split[i]
            concept_no.setdefault(ci, sum(1 for k in concept_no if self.concept_split[k] == sp) + 1)
            folder = Path(out) / "images" / sp / f"{concept_no[ci]:05d}_{self.concepts[ci].name}"
            folder.mkdir(parents=True, exist_ok=True)
            p = folder / f"{sid}.png"
            with atomic_path(p, suffix=".png") as tmp:
                Image.fromarray(self.images[i]).save(tmp, format="PNG")
            paths.append(p.relative_to(out).as_posix())
        return paths


# --------------------------------------------------------------------------------------------------
# stimuli
# --------------------------------------------------------------------------------------------------
def make_stimuli(cfg: SimulationConfig) -> StimulusSet:
    """Choose concepts (zero-shot split), render exemplars and compute their features."""
    cfg = cfg.resolved()
    rng = np.random.default_rng([cfg.seed, 1])
    pool = all_concepts()
    train_c, test_c = _split_concepts(pool, cfg.n_train_concepts, cfg.n_test_concepts, rng)
    concepts = train_c + test_c
    concept_split = np.array(["train"] * len(train_c) + ["test"] * len(test_c), dtype=object)

    stim_concept, stim_ex, ids, split, images, exemplars = [], [], [], [], [], []
    for ci, (concept, sp) in enumerate(zip(concepts, concept_split, strict=True)):
        n_ex = cfg.n_exemplars if sp == "train" else cfg.n_test_exemplars
        for e in range(n_ex):
            ex = sample_exemplar(rng)
            stim_concept.append(ci)
            stim_ex.append(e)
            ids.append(f"{concept.name}_{e + 1:02d}")
            split.append(sp)
            images.append(render(concept, ex, cfg.image_size))
            exemplars.append(ex.to_dict())
    stim_concept = np.asarray(stim_concept)
    split = np.asarray(split, dtype=object)
    images = np.stack(images)
    low = np.stack([low_level_features(im, background=None) for im in images])
    train = split == "train"
    low = (low - low[train].mean(0)) / (low[train].std(0) + 1e-8)

    # attribute codes are properties of the simulated "world" (shared by all subjects)
    wrng = np.random.default_rng([cfg.seed, 2])
    codes = {
        "shape": {s: wrng.standard_normal(ATTRIBUTE_DIM) for s in SHAPES},
        "colour": {c: wrng.standard_normal(ATTRIBUTE_DIM) for c in COLOURS},
        "texture": {t: wrng.standard_normal(ATTRIBUTE_DIM) for t in TEXTURES},
    }
    idio = {c.name: wrng.standard_normal(3 * ATTRIBUTE_DIM) for c in concepts}
    mid, sem = [], []
    for ci in stim_concept:
        c = concepts[ci]
        mid.append(np.concatenate([codes["shape"][c.shape], codes["texture"][c.texture]]))
        s = np.concatenate([codes["shape"][c.shape], codes["colour"][c.colour], codes["texture"][c.texture]])
        sem.append((s + cfg.idiosyncratic * idio[c.name]) / np.sqrt(1 + cfg.idiosyncratic**2))
    features = {"low": low, "mid": np.stack(mid), "sem": np.stack(sem)}
    return StimulusSet(concepts, concept_split, stim_concept, np.asarray(stim_ex), np.asarray(ids, dtype=object),
                       split, images, exemplars, features)


def _split_concepts(pool: list[Concept], n_train: int, n_test: int,
                    rng: np.random.Generator) -> tuple[list[Concept], list[Concept]]:
    """Draw training concepts, then test concepts (disjoint) whose shape, colour and texture each occur
    among the training concepts, so that zero-shot decoding through shared attributes is possible."""
    order = [pool[i] for i in rng.permutation(len(pool))]
    train = order[:n_train]
    seen = [{getattr(c, a) for c in train} for a in ("shape", "colour", "texture")]
    candidates = [c for c in order[n_train:]
                  if c.shape in seen[0] and c.colour in seen[1] and c.texture in seen[2]]
    if len(candidates) < n_test:
        raise ValueError(f"only {len(candidates)} test concepts share all their attributes with the "
                         f"{n_train} training concepts; use more training concepts or fewer test concepts")
    return train, candidates[:n_test]


def feature_block(feats: dict[str, np.ndarray], block: str) -> np.ndarray:
    """The features that drive one response component or region.

    Parameters
    ----------
    feats : dict of ndarray
        ``"low"``, ``"mid"`` and ``"sem"`` features, each ``(n_stimuli, d)`` (:attr:`StimulusSet.features`).
    block : ``"low"`` | ``"lowmid"`` | ``"sem"`` | ``"all"``
        Which features: low-level, low+mid-level, semantic, or all three, concatenated in that order.

    Returns
    -------
    block : ndarray, shape (n_stimuli, d_block)
    """
    check_option("block", block, FEATURE_BLOCKS)
    if block == "low":
        return feats["low"]
    if block == "lowmid":
        return np.concatenate([feats["low"], feats["mid"]], axis=1)
    if block == "sem":
        return feats["sem"]
    # "all"
    return np.concatenate([feats["low"], feats["mid"], feats["sem"]], axis=1)
