"""Shared helpers of the streaming tests (no tests here): a tiny exported model, a small continuous
recording of the simulator, a random gallery, and a decoder run that collects its decisions and events."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

# a small simulation: 8 test images, each shown 3 times at 5 per second, 100 Hz, one subject
SIM = dict(modality="eeg", n_subjects=1, n_train_concepts=10, n_test_concepts=8, n_exemplars=1, n_reps_train=1,
           n_reps_test=3, sfreq=100.0, snr=1.0, neural_noise=0.3)


def continuous_recording(root: Path, **kw) -> Path:
    """``root`` with sub-01_task-rsvp_raw.fif of the small simulation (cached per folder)."""
    from neurodecode.simulate.continuous import simulate_continuous

    path = root / "sub-01_task-rsvp_raw.fif"
    if not path.is_file():
        simulate_continuous(root, progress_bar=False, **{**SIM, **kw})
    return path


def export_tiny(out: Path, *, channels: list[str], sfreq: float, tmin: float, n_times: int, mean: np.ndarray,
                std: np.ndarray, root: Path | None = None, dim: int = 16, seed: int = 0,
                name: str = "mlp", **arch) -> Path:
    """An exported model folder (config.json + model.safetensors) of a random tiny encoder."""
    import torch
    from safetensors.torch import save_file

    from neurodecode.encoders.base import create_encoder

    torch.manual_seed(seed)
    arch = arch or {"hidden_sizes": (32,), "dropout": 0.0}
    enc = create_encoder(name, n_chans=len(channels), n_times=n_times, n_outputs=dim, sfreq=sfreq, **arch).eval()
    tensors = {f"encoder.{k}": v.detach().contiguous() for k, v in enc.state_dict().items()}
    tensors["input_mean"] = torch.as_tensor(np.asarray(mean, np.float32)).reshape(-1).contiguous()
    tensors["input_std"] = torch.as_tensor(np.asarray(std, np.float32)).reshape(-1).contiguous()
    out.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "neurodecode-encoder"})
    data = {"channels": list(channels), "sfreq": float(sfreq), "tmin": float(tmin), "n_times": int(n_times),
            "tmax": float(tmin + (n_times - 1) / sfreq), "n_chans": len(channels), "embed_dim": dim,
            "root": None if root is None else str(root), "subject": "01", "train_subjects": ["01"],
            "teacher": "test:features", "layer": "final", "modality": "eeg"}
    config = {"format": "neurodecode-encoder", "format_version": 1, "encoder": enc.get_config(), "data": data,
              "datamodule": {}}
    (out / "config.json").write_text(json.dumps(config))
    return out


def model_for_raw(out: Path, raw_path: Path, *, tmin: float = 0.0, n_times: int = 50, root: Path | None = None,
                  **kw) -> Path:
    """A tiny model taking ``n_times`` samples of the recording's EEG channels at its rate from ``tmin``."""
    import mne

    raw = mne.io.read_raw_fif(raw_path, preload=True, verbose="ERROR")
    eeg = raw.copy().pick("eeg")
    x = eeg.get_data()
    return export_tiny(out, channels=eeg.ch_names, sfreq=raw.info["sfreq"], tmin=tmin, n_times=n_times,
                       mean=x.mean(1), std=x.std(1), root=root, **kw)


def random_gallery(raw_path: Path, dim: int = 16, seed: int = 1):
    """A Gallery with a random embedding for every stimulus the recording shows."""
    from neurodecode.streaming.gallery import Gallery

    table = (raw_path.parent / "event_map.tsv").read_text().splitlines()[1:]
    ids = [line.split("\t")[1] for line in table]
    emb = np.random.default_rng(seed).standard_normal((len(ids), dim)).astype(np.float32)
    return Gallery(np.asarray(ids), emb, np.asarray([i.rsplit("_", 1)[0] for i in ids]), "random")


class Collect:
    """Callbacks of a StreamDecoder that keep what it says."""

    def __init__(self) -> None:
        self.decisions: list = []
        self.events: list[tuple[str, str]] = []

    def decision(self, d) -> None:
        self.decisions.append(d)

    def event(self, kind: str, message: str) -> None:
        self.events.append((kind, message))

    def kinds(self) -> list[str]:
        return [k for k, _ in self.events]

    def messages(self, kind: str) -> list[str]:
        return [m for k, m in self.events if k == kind]


def run_decoder(model_dir: Path, source, gallery, *, recipe=None, **settings):
    """Decode ``source`` with the exported model; returns (Collect, stats)."""
    from neurodecode.streaming.decoder import DecoderSettings, StreamDecoder
    from neurodecode.streaming.recipe import recipe_from_model
    from neurodecode.training.export import from_pretrained

    model = from_pretrained(model_dir)
    recipe = recipe or recipe_from_model(model.config)
    col = Collect()
    dec = StreamDecoder(model, recipe, gallery, DecoderSettings(**settings), on_decision=col.decision,
                        on_event=col.event)
    stats = dec.run(source)
    return col, stats


@pytest.fixture(scope="module")
def recording(tmp_path_factory) -> Path:
    return continuous_recording(tmp_path_factory.mktemp("stream_rec"))
