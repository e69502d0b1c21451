"""Shared fixtures and marker handling."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("NEURODECODE_NO_PROGRESS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
# fits that state no precision run in float32 here, on every CPU (bf16-mixed is the CPU default where native)
os.environ.setdefault("NEURODECODE_CPU_PRECISION", "32-true")


def pytest_collection_modifyitems(config, items):
    import torch

    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device (none present)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real recordings folder (../shared/data or $NEURODECODE_SHARED_DATA); skip when absent."""
    from neurodecode.utils import shared_data_dir

    path = shared_data_dir()
    if path is None:
        pytest.skip("real recordings not found: set NEURODECODE_SHARED_DATA or place them in ../shared/data")
    return path


# --------------------------------------------------------------------------------------------------
# small simulated data sets with a ready embedding cache (shared by the training/evaluation tests)
# --------------------------------------------------------------------------------------------------
FEATURE_TEACHER = "test:features"


def write_feature_cache(root: Path, dim: int = 32, seed: int = 0) -> str:
    """Cache a 'teacher' whose embeddings are a fixed random projection of the simulator's true features.

    Writes ``<root>/embeddings.h5`` through the cache's own shard + merge path and returns the spec.
    """
    import numpy as np

    from neurodecode.teachers.cache import merge_shards, parts_dir, write_shard

    feats = np.load(root / "features.npz")
    f = np.concatenate([feats["low"], feats["mid"], feats["sem"]], axis=1)
    proj = np.random.default_rng(seed).standard_normal((f.shape[1], dim)) / np.sqrt(f.shape[1])
    emb = (f @ proj).astype("float32")
    cache = root / "embeddings.h5"
    write_shard(parts_dir(cache), FEATURE_TEACHER,
                {"final": (feats["stimulus_id"].tolist(), emb, {"note": "simulator features, test only"})})
    merge_shards(cache)
    return FEATURE_TEACHER


def make_sim(root: Path, **kw) -> Path:
    from neurodecode.simulate.dataset import simulate

    # a clean signal (high SNR, little neural noise): these data test the machinery, not the limits
    cfg = dict(modality="eeg", n_subjects=2, n_train_concepts=24, n_test_concepts=8, n_exemplars=2,
               n_reps_train=2, n_reps_test=4, sfreq=100.0, snr=1.0, neural_noise=0.3, progress_bar=False)
    cfg.update(kw)
    simulate(root, **cfg)
    write_feature_cache(root)
    return root


@pytest.fixture(scope="session")
def sim_eeg(tmp_path_factory) -> Path:
    """2 subjects of simulated EEG at 100 Hz with a feature-teacher cache (read-only: copy to modify)."""
    return make_sim(tmp_path_factory.mktemp("sim_eeg_cached"))


@pytest.fixture(scope="session")
def tiny_encoder(sim_eeg, tmp_path_factory) -> Path:
    """A 1-epoch MLP encoder (32-d, test:features teacher, joint protocol) trained on ``sim_eeg``: its last.ckpt."""
    import yaml

    from neurodecode.cli.lightning import run_lightning_cli

    tmp = tmp_path_factory.mktemp("prior_encoder")
    from tests_helpers import tiny_fit_config

    cfg = tiny_fit_config(sim_eeg, tmp / "run", test_after_fit=False)
    (tmp / "config.yaml").write_text(yaml.safe_dump(cfg))
    run_lightning_cli("fit", ["-c", str(tmp / "config.yaml")])
    return tmp / "run" / "checkpoints" / "last.ckpt"


@pytest.fixture
def one_thread():
    """Tiny models run faster on one torch thread, and much faster when other processes share the cores."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
