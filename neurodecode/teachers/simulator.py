"""The simulator's own feature space as a teacher (``sim:features``), for simulated data only.

A simulated data set (``neurodecode simulate``) stores, in ``features.npz``, the true features that
drive its brain responses: low-level image statistics, mid-level shape/texture codes and semantic
codes (see :mod:`neurodecode.simulate.forward`). ``sim:features`` embeds each stimulus as the
concatenation of these (z-scored low-level, mid-level and semantic blocks). It is the teacher whose
space the simulated brain encodes exactly, so training against it measures how much of the
information in the responses an encoder extracts, separately from how well a vision model matches
the brain (use ``efficientnet-lite0`` or CLIP for that).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from neurodecode.io.store import StimulusTable

SIM_SPEC = "sim:features"


def simulator_features(table: StimulusTable) -> np.ndarray:
    """``(n_stimuli, dim)`` features of the table's stimuli, read from ``<root>/features.npz``."""
    if table.root is None or not (Path(table.root) / "features.npz").is_file():
        where = "the stimulus table's folder" if table.root is None else str(Path(table.root) / "features.npz")
        raise FileNotFoundError(f"teacher {SIM_SPEC!r} needs the simulator's features.npz ({where} not found); it "
                                "works only on folders made by 'neurodecode simulate'.")
    with np.load(Path(table.root) / "features.npz", allow_pickle=False) as f:
        ids = f["stimulus_id"].astype(str)
        feats = np.concatenate([f["low"], f["mid"], f["sem"]], axis=1).astype(np.float32)
    index = {s: i for i, s in enumerate(ids.tolist())}
    missing = [s for s in table.stimulus_id.tolist() if s not in index]
    if missing:
        raise ValueError(f"{Path(table.root) / 'features.npz'}: no features for {len(missing)} stimuli, e.g. "
                         f"{missing[:3]}; it does not belong to this stimulus table.")
    return feats[[index[s] for s in table.stimulus_id.tolist()]]


def embed_simulator(table: StimulusTable, cache_path: Path, layers: list[str]) -> dict:
    """Write ``sim:features`` into the cache (layer ``final`` only)."""
    from neurodecode.teachers.cache import merge_shards, parts_dir, write_shard

    bad = [name for name in layers if name != "final"]
    if bad:
        raise ValueError(f"teacher {SIM_SPEC!r} has only the 'final' layer, not {bad}.")
    feats = simulator_features(table)
    write_shard(parts_dir(cache_path), SIM_SPEC,
                {"final": (table.stimulus_id.tolist(), feats, {"transform": "simulator ground-truth features"})})
    merge_shards(cache_path)
    return {"cache": str(cache_path), "spec": SIM_SPEC, "layers": ["final"], "n_stimuli": len(table), "n_images": 0,
            "n_concepts": 0, "seconds": 0.0, "images_per_s": None, "engine": "simulator", "rank": 0}
