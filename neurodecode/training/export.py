"""Export a trained model as ``config.json`` + ``model.safetensors`` and load it back.

An exported folder is self-contained: the encoder's configuration (``get_config()``), the input
normalisation fitted on the training data, and what the data were (teacher, layer, channels, sampling
rate, epoch window, subjects). Nothing is pickled: weights are safetensors, the rest JSON.

>>> decoder = from_pretrained("exported/")          # doctest: +SKIP
>>> emb = decoder(x)  # raw responses (batch, n_chans, n_times) -> teacher-space embeddings
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from neurodecode._version import __version__
from neurodecode.utils import PathLike, atomic_path, atomic_write_json

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
FORMAT = "neurodecode-encoder"


class PretrainedDecoder(nn.Module):
    """An exported encoder with its input normalisation: ``forward(x, subject=None)`` on raw responses.

    Attributes
    ----------
    encoder : nn.Module
        The brain encoder.
    config : dict
        The exported ``config.json`` (``encoder``, ``data``, ``format``...).
    """

    def __init__(self, encoder: nn.Module, mean: torch.Tensor, std: torch.Tensor, config: dict[str, Any]) -> None:
        super().__init__()
        self.encoder = encoder
        self.register_buffer("input_mean", mean.float().reshape(-1))
        self.register_buffer("input_std", std.float().reshape(-1))
        self.config = config
        self.timeseries = config["encoder"].get("n_voxels") is None

    @property
    def data(self) -> dict[str, Any]:
        """What the model was trained on (teacher, channels, sfreq...)."""
        return self.config.get("data", {})

    def forward(self, x: torch.Tensor | Any, subject: torch.Tensor | int | None = None) -> torch.Tensor:
        """Embeddings of raw responses.

        Parameters
        ----------
        x : torch.Tensor | numpy.ndarray | mne.BaseEpochs
            ``(n_trials, n_chans, n_times)`` (EEG/MEG) or ``(n_trials, n_voxels)`` (fMRI), in the units
            and channel order the model was trained on (``decoder.data["channels"]``); a single trial
            without the leading dimension is accepted too. MNE epochs give their data.
        subject : torch.Tensor | int | None
            Training-subject index per trial (or one for all); ``None`` for an unseen subject.

        Returns
        -------
        embedding : torch.Tensor, shape (n_trials, dim)
        """
        if hasattr(x, "get_data") and not isinstance(x, torch.Tensor):
            x = x.get_data(copy=False)
        if not isinstance(x, torch.Tensor):
            x = torch.as_tensor(np.asarray(x, dtype=np.float32))
        x = x.to(self.input_mean.device, torch.float32)
        if x.ndim == (2 if self.timeseries else 1):
            x = x[None]
        if isinstance(subject, int):
            subject = torch.full((len(x),), subject, dtype=torch.long, device=x.device)
        if self.timeseries:
            x = (x - self.input_mean[:, None]) / self.input_std[:, None]
        else:
            x = (x - self.input_mean) / self.input_std
        return self.encoder(x, subject)


def export_checkpoint(ckpt: PathLike, out: PathLike) -> Path:
    """Write ``config.json`` and ``model.safetensors`` of a ``neurodecode fit`` checkpoint into ``out``."""
    from safetensors.torch import save_file

    from neurodecode.training.lit import load_alignment_checkpoint

    module, raw = load_alignment_checkpoint(ckpt)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    hp = raw.get("hyper_parameters", {})
    tensors = {f"encoder.{k}": v.detach().cpu().contiguous() for k, v in module.encoder.state_dict().items()}
    tensors["input_mean"] = module.input_mean.detach().cpu().contiguous()
    tensors["input_std"] = module.input_std.detach().cpu().contiguous()
    config = {
        "format": FORMAT, "format_version": 1, "neurodecode_version": __version__,
        "encoder": hp["encoder_config"], "data": hp.get("data", {}),
        "datamodule": {k: v for k, v in raw.get("datamodule_hyper_parameters", {}).items()},
        "source_checkpoint": str(Path(ckpt).name), "epoch": raw.get("epoch"),
    }
    with atomic_path(out / WEIGHTS_NAME, suffix=".safetensors") as tmp:
        save_file(tensors, str(tmp), metadata={"format": FORMAT})
    atomic_write_json(out / CONFIG_NAME, json.loads(json.dumps(config, default=str)))
    return out


def from_pretrained(path: PathLike, *, device: str | torch.device = "cpu") -> PretrainedDecoder:
    """Load an exported folder (see :func:`export_checkpoint`).

    Parameters
    ----------
    path : path-like
        Folder with ``config.json`` and ``model.safetensors``.
    device : str | torch.device
        Where to put the weights.

    Returns
    -------
    decoder : PretrainedDecoder
        In eval mode.
    """
    from safetensors.torch import load_file

    from neurodecode.encoders.base import BrainEncoder

    path = Path(path)
    cfg_file, w_file = path / CONFIG_NAME, path / WEIGHTS_NAME
    for f in (cfg_file, w_file):
        if not f.is_file():
            raise FileNotFoundError(f"{f} not found: an exported model folder holds {CONFIG_NAME} and "
                                    f"{WEIGHTS_NAME} (make one with 'neurodecode export --ckpt CKPT --out DIR').")
    try:
        config = json.loads(cfg_file.read_text())
    except ValueError as err:
        raise ValueError(f"{cfg_file}: not valid JSON ({err}).") from None
    if config.get("format") != FORMAT or "encoder" not in config:
        raise ValueError(f"{cfg_file}: field 'format' is {config.get('format')!r}; expected {FORMAT!r} with an "
                         "'encoder' entry. Export the model with 'neurodecode export'.")
    tensors = load_file(str(w_file), device=str(device))
    encoder = BrainEncoder.from_config(config["encoder"])
    state = {k[len("encoder."):]: v for k, v in tensors.items() if k.startswith("encoder.")}
    missing, unexpected = encoder.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(f"{w_file}: weights do not match the encoder in {cfg_file.name} "
                         f"(missing {missing[:5]}, unexpected {unexpected[:5]}).")
    return PretrainedDecoder(encoder, tensors["input_mean"], tensors["input_std"], config).to(device).eval()
