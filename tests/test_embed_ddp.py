"""Data-parallel embedding: 2 CPU processes (DDP over gloo) give the single-process cache."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from neurodecode.io.store import StimulusTable
from neurodecode.teachers import EmbeddingCache, ensure_embeddings, parts_dir

pytest.importorskip("lightning")
Image = pytest.importorskip("PIL.Image")

SPEC = "timm:test_vit/random"
LAYERS = ["final", "block1-cls", "block-1-mean"]


def test_ddp_two_cpu_processes_equal_single_process(tmp_path):
    root = tmp_path / "prepared"
    rng = np.random.default_rng(0)
    ids, concepts, paths = [], [], []
    for i in range(11):  # odd on purpose: the two ranks get unequal shares
        concept = f"c{i % 3}"
        p = root / "images" / concept / f"img{i:02d}.png"
        p.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray((rng.random((30, 40, 3)) * 255).astype("uint8")).save(p)
        ids.append(p.stem)
        concepts.append(concept)
        paths.append(p.relative_to(root).as_posix())
    # one folder stimulus (mean of its images), which must land whole on one rank
    ids.append("folder")
    concepts.append("c0")
    paths.append("images/c1")
    StimulusTable(ids, concepts, paths, ["train"] * len(ids), root=root).write_tsv(root / "stimuli.tsv")

    out = tmp_path / "ddp"
    env = {**os.environ, "NEURODECODE_NO_PROGRESS": "1", "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}
    cmd = [sys.executable, "-m", "neurodecode", "embed", "--stimuli", str(root), "--teacher", SPEC,
           "--out", str(out), "--layers", *LAYERS, "--batch-size", "2", "--strategy", "ddp", "--devices", "2",
           "--accelerator", "cpu", "--no-progress", "--verbose"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    assert "rank 0/2: embedded" in log and "rank 1/2: embedded" in log, log[-4000:]
    assert not parts_dir(out / "embeddings.h5").exists()

    single = ensure_embeddings(root, SPEC, tmp_path / "single", layers=LAYERS, batch_size=5, progress=False,
                               engine="loop", device="cpu")
    ddp = EmbeddingCache(out / "embeddings.h5")
    assert set(ddp.groups()) == set(single.groups()) == {(SPEC, "final"), (SPEC, "block1-cls"), (SPEC, "block5-mean")}
    for _, layer in single.groups():
        keys, feats = ddp.get(SPEC, layer)
        assert sorted(keys.tolist()) == sorted(ids)  # every stimulus exactly once
        np.testing.assert_allclose(feats, single.get(SPEC, layer, ids=keys.tolist()), rtol=1e-5, atol=1e-6)
