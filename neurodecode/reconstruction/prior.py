"""Stage 1 of reconstruction: a brain embedding -> the teacher's image embedding (the "prior").

:class:`Prior` is the trained model, whatever its kind:

``"diffusion"`` (default, ATM's design)
    :class:`~neurodecode.reconstruction.prior_nets.DiffusionPriorUNet` with diffusers'
    ``DDPMScheduler`` (ATM uses ``DDPMScheduler()``'s defaults: 1,000 training steps, linear betas,
    epsilon prediction, predicted samples clipped to [-1, 1]), sampled with ``steps`` (50) steps and
    classifier-free guidance ``eps = eps_uncond + g * (eps_cond - eps_uncond)`` (``g`` = 5);
``"prior_transformer"``
    diffusers' unCLIP ``PriorTransformer``
    (:class:`~neurodecode.reconstruction.prior_nets.PriorTransformerNet`) with ``UnCLIPScheduler`` set
    as unCLIP's prior scheduler (predicts the clean sample, ``fixed_small_log`` variance, samples
    clipped to +-5 in the normalised space), guided the same way on its prediction;
``"aligner"``
    :class:`~neurodecode.reconstruction.prior_nets.MLPAligner`, one forward pass.

Targets are the teacher's raw, unnormalised image embeddings (ATM's choice, the default), or, with
``normalize_targets=True``, z-scored per dimension with the training targets' statistics; either way
:meth:`Prior.sample` returns embeddings in the teacher's RAW space (the PriorTransformer always works
in its own normalised space, through its ``clip_mean``/``clip_std``, set from the same statistics).

An exported prior is a folder with ``config.json`` (``{"format": "neurodecode-prior",
"format_version": 1, "kind", "prior": {net and scheduler configuration}, "targets", "teacher",
"brain_dim", "target_dim", "encoder", ...}``) and ``model.safetensors`` (the network and the target
statistics ``target_mean``/``target_std``), written by :func:`export_prior` and read by
:func:`load_prior`, which also reads a ``neurodecode fit`` checkpoint of
:class:`~neurodecode.reconstruction.lit_prior.PriorModule` (``torch.load(weights_only=True)``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from neurodecode._version import __version__
from neurodecode.reconstruction.prior_nets import build_net
from neurodecode.utils import PathLike, atomic_path, atomic_write_json, check_option, progress

__all__ = ["KINDS", "FORMAT", "Prior", "load_prior", "export_prior", "noise_scheduler_config"]

FORMAT = "neurodecode-prior"
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
KINDS = ("diffusion", "prior_transformer", "aligner")
# ATM: DDPMScheduler() as it comes; unCLIP's prior (kakaobrain/karlo-v1-alpha "prior_scheduler")
DEFAULT_NOISE_SCHEDULERS: dict[str, dict[str, Any]] = {
    "diffusion": {},
    "prior_transformer": {"prediction_type": "sample", "clip_sample": True, "clip_sample_range": 5.0,
                          "variance_type": "fixed_small_log", "num_train_timesteps": 1000},
}


def noise_scheduler_config(kind: str, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """The full configuration of the noise scheduler of a diffusion ``kind`` (defaults + ``overrides``)."""
    check_option("kind", kind, KINDS)
    if kind == "aligner":
        return {}
    return dict(_make_scheduler(kind, overrides).config)


def _make_scheduler(kind: str, overrides: dict[str, Any] | None = None):
    from diffusers import DDPMScheduler, UnCLIPScheduler

    cfg = {**DEFAULT_NOISE_SCHEDULERS[kind], **{k: v for k, v in (overrides or {}).items() if not k.startswith("_")}}
    cls = DDPMScheduler if kind == "diffusion" else UnCLIPScheduler
    try:
        return cls(**cfg)
    except TypeError as err:
        raise ValueError(f"noise_scheduler options {sorted(cfg)} do not fit {cls.__name__} ({err}).") from None


class Prior(nn.Module):
    """A stage-1 model: brain embeddings in, teacher image embeddings (raw space) out.

    Parameters
    ----------
    kind : {"diffusion", "prior_transformer", "aligner"}
        Which network (see the module docstring).
    brain_dim : int
        Size of the brain embedding (the encoder's output).
    target_dim : int
        Size of the teacher's image embedding.
    net : dict | None
        Options of the network (``hidden_dims``, ``time_embed_dim``, ``num_layers``, ``width``...).
    noise_scheduler : dict | None
        Overrides of the noise scheduler's configuration (diffusion kinds).
    normalize_targets : bool
        Diffuse / regress z-scored targets instead of raw ones (diffusion and aligner; the
        PriorTransformer always normalises with its own statistics).
    sampling : dict | None
        Default ``steps`` and ``guidance`` of :meth:`sample` (ATM: 50 and 5).
    info : dict | None
        What the prior was trained on (teacher, encoder, data); kept in the exported config.

    Attributes
    ----------
    target_mean, target_std : torch.Tensor, (target_dim,)
        Statistics of the training targets (set with :meth:`set_target_stats`).
    """

    def __init__(self, kind: str = "diffusion", brain_dim: int = 1024, target_dim: int = 1024,
                 net: dict[str, Any] | None = None, noise_scheduler: dict[str, Any] | None = None,
                 normalize_targets: bool = False, sampling: dict[str, Any] | None = None,
                 info: dict[str, Any] | None = None) -> None:
        super().__init__()
        check_option("kind", kind, KINDS)
        self.kind = kind
        self.brain_dim, self.target_dim = int(brain_dim), int(target_dim)
        self.net = build_net(kind, self.target_dim, self.brain_dim, net)
        self.noise_scheduler_overrides = dict(noise_scheduler or {})
        self.normalize_targets = bool(normalize_targets)
        self.sampling = {"steps": 50, "guidance": 5.0, **(sampling or {})}
        self.info: dict[str, Any] = dict(info or {})
        self.register_buffer("target_mean", torch.zeros(self.target_dim))
        self.register_buffer("target_std", torch.ones(self.target_dim))
        self.register_buffer("stats_fitted", torch.tensor(False))
        self._train_scheduler: Any = None

    # -- configuration --------------------------------------------------------------------------
    def get_config(self) -> dict[str, Any]:
        """Everything needed to rebuild the prior (fresh weights), JSON-able."""
        return {"kind": self.kind, "brain_dim": self.brain_dim, "target_dim": self.target_dim,
                "net": self.net.get_config(), "noise_scheduler": dict(self.noise_scheduler_overrides),
                "normalize_targets": self.normalize_targets, "sampling": dict(self.sampling)}

    @classmethod
    def from_config(cls, config: dict[str, Any], info: dict[str, Any] | None = None) -> Prior:
        """Rebuild from :meth:`get_config`'s dict."""
        keys = ("kind", "brain_dim", "target_dim", "net", "noise_scheduler", "normalize_targets", "sampling")
        missing = [k for k in keys[:3] if k not in config]
        if missing:
            raise ValueError(f"prior configuration lacks {missing}; was it written by neurodecode?")
        return cls(**{k: config[k] for k in keys if k in config}, info=info)

    def set_target_stats(self, mean: Any, std: Any) -> None:
        """Set the per-dimension mean and sd of the raw training targets (also the PriorTransformer's)."""
        mean = torch.as_tensor(np.asarray(mean), dtype=torch.float32).reshape(-1)
        std = torch.as_tensor(np.asarray(std), dtype=torch.float32).reshape(-1)
        if mean.shape != self.target_mean.shape or std.shape != self.target_std.shape:
            raise ValueError(f"target statistics of length {mean.numel()} do not match target_dim {self.target_dim}.")
        std = torch.where(std > 0, std, torch.ones_like(std))
        self.target_mean.copy_(mean)
        self.target_std.copy_(std)
        self.stats_fitted.fill_(True)
        if self.kind == "prior_transformer":
            self.net.set_stats(mean, std)

    # -- spaces -------------------------------------------------------------------------------
    def to_model_space(self, raw: torch.Tensor) -> torch.Tensor:
        """Raw teacher embeddings -> the space the network is trained in."""
        if self.kind == "prior_transformer":
            return self.net.normalize(raw)
        if self.normalize_targets:
            return (raw - self.target_mean) / self.target_std
        return raw

    def from_model_space(self, z: torch.Tensor) -> torch.Tensor:
        """The network's space -> raw teacher embeddings."""
        if self.kind == "prior_transformer":
            return self.net.post_process(z)
        if self.normalize_targets:
            return z * self.target_std + self.target_mean
        return z

    def train_scheduler(self):
        """The noise scheduler used for training (``add_noise``, ``get_velocity``); None for the aligner."""
        if self.kind == "aligner":
            return None
        if self._train_scheduler is None:
            self._train_scheduler = _make_scheduler(self.kind, self.noise_scheduler_overrides)
        return self._train_scheduler

    # -- sampling -----------------------------------------------------------------------------
    def _guided(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor, guidance: float) -> torch.Tensor:
        n = len(x)
        if guidance == 1.0:
            return self.net(x, t, cond)
        if guidance == 0.0:
            return self.net(x, t, cond, torch.zeros(n, device=x.device))
        mask = torch.cat([torch.ones(n, device=x.device), torch.zeros(n, device=x.device)])
        out = self.net(torch.cat([x, x]), t, torch.cat([cond, cond]), mask)
        cond_out, uncond_out = out[:n], out[n:]
        return uncond_out + guidance * (cond_out - uncond_out)

    @torch.no_grad()
    def sample(self, brain: torch.Tensor | np.ndarray, *, seed: int = 0, steps: int | None = None,
               guidance: float | None = None, progress: bool = True) -> torch.Tensor:
        """Teacher image embeddings (RAW space) for brain embeddings.

        Parameters
        ----------
        brain : torch.Tensor | numpy.ndarray, (n, brain_dim)
            The encoder's embeddings.
        seed : int
            Seed of the initial noise and of every sampling step (same seed, same output).
        steps : int | None
            Denoising steps (diffusion kinds); ``None``: the prior's default (``sampling["steps"]``,
            ATM's 50 unless it was trained with other settings).
        guidance : float | None
            Classifier-free guidance scale ``g`` (1 = conditional only, 0 = unconditional); ``None``:
            the prior's default (``sampling["guidance"]``, ATM's 5 unless trained otherwise).
        progress : bool
            Show a progress bar over the steps.

        Returns
        -------
        embeddings : torch.Tensor, (n, target_dim), float32, on the prior's device
        """
        device = self.target_mean.device
        brain = torch.as_tensor(np.asarray(brain) if not isinstance(brain, torch.Tensor) else brain)
        brain = brain.to(device, torch.float32)
        if brain.ndim != 2 or brain.shape[1] != self.brain_dim:
            raise ValueError(f"prior ({self.kind}) expects brain embeddings of shape (n, {self.brain_dim}), got "
                             f"{tuple(brain.shape)}; use the encoder the prior was trained with.")
        if self.kind == "prior_transformer" and not self.net.stats_set:
            raise RuntimeError("the PriorTransformer's clip_mean/clip_std are zero (never set): its output would be "
                               "all zeros. Train it with PriorModule, or call set_target_stats() first.")
        if self.kind == "aligner":
            return self.from_model_space(self.net(brain)).float()
        steps = int(self.sampling["steps"] if steps is None else steps)
        guidance = float(self.sampling["guidance"] if guidance is None else guidance)
        if steps < 1:
            raise ValueError(f"steps must be at least 1, got {steps}.")
        scheduler = _make_scheduler(self.kind, self.noise_scheduler_overrides)
        scheduler.set_timesteps(int(steps), device=device)
        gen = torch.Generator(device="cpu").manual_seed(int(seed))
        x = torch.randn(len(brain), self.target_dim, generator=gen).to(device) * scheduler.init_noise_sigma
        timesteps = scheduler.timesteps
        for i, t in enumerate(progress_bar(timesteps, progress)):
            out = self._guided(x, t, brain, float(guidance))
            if self.kind == "prior_transformer":
                prev = None if i + 1 == len(timesteps) else timesteps[i + 1]
                x = scheduler.step(out, t, x, prev_timestep=prev, generator=gen).prev_sample
            else:
                x = scheduler.step(out, t, x, generator=gen).prev_sample
        return self.from_model_space(x).float()


def progress_bar(timesteps: torch.Tensor, enabled: bool):
    """The sampling steps, with a ``tqdm.auto`` bar when ``enabled``."""
    return progress(timesteps, enabled=enabled, desc="prior sampling", unit="step", leave=False)


# --------------------------------------------------------------------------------------------------
# loading and export
# --------------------------------------------------------------------------------------------------
def _from_checkpoint(path: Path) -> tuple[Prior, dict[str, Any]]:
    from neurodecode.training.lit import load_checkpoint_dict

    ckpt = load_checkpoint_dict(path)
    hp = dict(ckpt.get("hyper_parameters", {}))
    if "prior_config" not in hp:
        raise ValueError(f"{path}: no prior_config in the checkpoint's hyper-parameters; it is not a checkpoint of "
                         "neurodecode's PriorModule (train one with 'neurodecode fit -c configs/<dataset>/prior.yaml').")
    prior = Prior.from_config(hp["prior_config"], info=hp.get("data", {}))
    state = {k[len("prior."):]: v for k, v in ckpt["state_dict"].items() if k.startswith("prior.")}
    missing, unexpected = prior.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(f"{path}: weights do not match the prior's configuration (missing {missing[:5]}, "
                         f"unexpected {unexpected[:5]}).")
    return prior, ckpt


def load_prior(path: PathLike, *, device: str | torch.device = "cpu") -> Prior:
    """Load a prior: an exported folder (:func:`export_prior`) or a ``neurodecode fit`` checkpoint.

    Parameters
    ----------
    path : path-like
        Folder with ``config.json`` + ``model.safetensors``, or a PriorModule ``.ckpt`` (read with
        ``torch.load(weights_only=True)``).
    device : str | torch.device
        Where to put it (``"auto"``: CUDA when present).

    Returns
    -------
    prior : Prior
        In eval mode.
    """
    path = Path(path)
    if str(device) == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if path.is_file():
        prior, _ = _from_checkpoint(path)
        return prior.to(device).eval()
    if not path.is_dir():
        raise FileNotFoundError(f"prior {path} not found: give an exported prior folder or a PriorModule .ckpt.")
    from safetensors.torch import load_file

    cfg_file, w_file = path / CONFIG_NAME, path / WEIGHTS_NAME
    for f in (cfg_file, w_file):
        if not f.is_file():
            raise FileNotFoundError(f"{f} not found: an exported prior holds {CONFIG_NAME} and {WEIGHTS_NAME} "
                                    "(export a PriorModule checkpoint with neurodecode.reconstruction.prior.export_prior).")
    try:
        config = json.loads(cfg_file.read_text())
    except ValueError as err:
        raise ValueError(f"{cfg_file}: not valid JSON ({err}).") from None
    if config.get("format") != FORMAT or "prior" not in config:
        raise ValueError(f"{cfg_file}: field 'format' is {config.get('format')!r}; expected {FORMAT!r} with a 'prior' "
                         "entry (an encoder folder is loaded with neurodecode.from_pretrained, not as a prior).")
    if int(config.get("format_version", 0)) > 1:
        raise ValueError(f"{cfg_file}: format_version {config['format_version']} is newer than this neurodecode "
                         f"({__version__}) reads (1); upgrade neurodecode.")
    teacher = config.get("teacher") or {}
    info = {**(config.get("data") or {}), "teacher": teacher.get("spec"), "layer": teacher.get("layer"),
            "encoder": config.get("encoder") or {}}
    prior = Prior.from_config(config["prior"], info=info)
    state = load_file(str(w_file))
    missing, unexpected = prior.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(f"{w_file}: weights do not match the prior in {cfg_file.name} (missing {missing[:5]}, "
                         f"unexpected {unexpected[:5]}).")
    return prior.to(device).eval()


def export_prior(ckpt: PathLike, out: PathLike) -> Path:
    """Write ``config.json`` + ``model.safetensors`` of a PriorModule checkpoint into ``out``.

    Parameters
    ----------
    ckpt : path-like
        A ``neurodecode fit`` checkpoint of :class:`~neurodecode.reconstruction.lit_prior.PriorModule`.
    out : path-like
        The folder to write (created; the two files are written atomically, the config last).

    Returns
    -------
    out : Path
    """
    from safetensors.torch import save_file

    prior, raw = _from_checkpoint(Path(ckpt))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in prior.state_dict().items()}
    data = dict(prior.info)
    config = {
        "format": FORMAT, "format_version": 1, "neurodecode_version": __version__, "kind": prior.kind,
        "prior": prior.get_config(),
        "noise_scheduler": noise_scheduler_config(prior.kind, prior.noise_scheduler_overrides),
        "sampling": dict(prior.sampling) if prior.kind != "aligner" else {},
        "targets": {"space": "normalized" if prior.normalize_targets else "raw",
                    "returned": "raw teacher embeddings",
                    "stats": f"target_mean, target_std (per dimension, training targets) in {WEIGHTS_NAME}"},
        "teacher": {"spec": data.get("teacher"), "layer": data.get("layer")},
        "brain_dim": prior.brain_dim, "target_dim": prior.target_dim,
        "encoder": data.get("encoder", {}),
        "data": {k: v for k, v in data.items() if k != "encoder"},
        "source_checkpoint": Path(ckpt).name, "epoch": raw.get("epoch"),
    }
    with atomic_path(out / WEIGHTS_NAME, suffix=".safetensors") as tmp:
        save_file(tensors, str(tmp), metadata={"format": FORMAT})
    atomic_write_json(out / CONFIG_NAME, json.loads(json.dumps(config, default=str)))
    return out
