"""Training the low-level head with Lightning: an L1 loss on low-resolution images or VAE latents.

:class:`LowLevelDataModule` is :class:`~neurodecode.training.data.BrainImageDataModule` (same
arguments, same trials, splits and protocols: training trials for training, the held-out training
*concepts* for validation, the test set untouched until ``test``) whose batches also carry
``"image"``: the low-level target of the trial's stimulus, read from the stimulus table's image
files (a folder stimulus: the mean of its images' targets), resized (bilinear, antialiased; no crop)
to ``image_size`` px in [0, 1], and for ``target="vae"`` encoded by the VAE. Targets are computed in
``prepare_data`` and cached next to the data (``target_cache``).

:class:`LowLevelModule` trains a :class:`~neurodecode.reconstruction.lowlevel.LowLevelHead` on them
with an L1 loss (Adam, warm-up + cosine from :func:`~neurodecode.training.lit.lr_schedule`); it logs
``train/loss``, ``val/loss`` and ``test/loss`` (the mean absolute error per pixel or latent value),
and ``val/loss_mean_image``, the L1 of always predicting the mean training target (the number to
beat). Its checkpoint holds only plain data in ``hyper_parameters`` (``head_config``, ``data``) and
loads with ``torch.load(weights_only=True)``; :func:`~neurodecode.reconstruction.lowlevel.load_lowlevel`
and :func:`~neurodecode.reconstruction.lowlevel.export_lowlevel` take it directly.

Data-to-model links for ``neurodecode fit`` (LightningCLI): the encoder's shape, as for the encoders
(``data.n_chans``, ``n_times``, ``n_voxels``, ``sfreq``, ``chs_info``, ``n_subjects`` to
``model.init_args.encoder.init_args.*``; ``data.n_chans`` / ``data.n_voxels`` to
``model.init_args.n_chans`` / ``n_voxels``), plus ``data.target_shape``, ``data.target`` and
``data.vae`` to ``model.init_args.target_shape``, ``target`` and ``vae``. The encoder's ``n_outputs``
(the code size) is the model's own choice, set in the YAML.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from neurodecode.reconstruction.lowlevel import (
    TARGETS,
    LowLevelHead,
    load_vae,
    pretrained_encoder,
    vae_encode,
    vae_latent_shape,
)
from neurodecode.training.data import BrainImageDataModule
from neurodecode.training.lit import SCHEDULERS, lr_schedule
from neurodecode.utils import atomic_path, check_option, logger, progress

__all__ = ["LOSSES", "LowLevelDataModule", "LowLevelModule", "lowres_images"]

LOSSES = ("l1", "mse")


# --------------------------------------------------------------------------------------------------
# targets
# --------------------------------------------------------------------------------------------------
def lowres_images(table: Any, rows: Any, size: int, *, progress_bar: bool = False) -> np.ndarray:
    """Stimulus images resized to ``size`` px: ``(n, 3, size, size)`` float32 in [0, 1].

    Parameters
    ----------
    table : StimulusTable
        The stimulus table (image paths relative to its folder).
    rows : sequence of int
        Its rows to read; a folder stimulus gives the mean of its images.
    size : int
        Output side (bilinear, antialiased by PIL when shrinking; not cropped).
    progress_bar : bool
        Show a progress bar.
    """
    from PIL import Image

    from neurodecode.teachers.stimuli import stimulus_image_files

    files = stimulus_image_files(table, rows)
    out = np.zeros((len(files), 3, int(size), int(size)), np.float32)
    for i, group in enumerate(progress(files, enabled=progress_bar, desc="low-level targets", unit="image")):
        for p in group:
            with Image.open(p) as im:
                img = im.convert("RGB").resize((int(size), int(size)), Image.Resampling.BILINEAR)
            out[i] += np.asarray(img, np.float32).transpose(2, 0, 1) / 255.0
        out[i] /= len(group)
    return out


class _WithTargets(Dataset):
    """A trial set whose items also carry ``"image"``: the low-level target of their stimulus."""

    def __init__(self, trials: Dataset, targets: np.ndarray) -> None:
        self.trials, self.targets = trials, targets

    def __len__(self) -> int:
        return len(self.trials)

    def __getitem__(self, i: int) -> dict[str, Any]:
        item = self.trials[i]
        item["image"] = torch.from_numpy(self.targets[int(item["stim"])])
        return item


class LowLevelDataModule(BrainImageDataModule):
    """Trials with their stimuli's low-resolution images (or VAE latents) as targets.

    Takes every argument of :class:`~neurodecode.training.data.BrainImageDataModule` (``root``,
    ``teacher``, ``protocol``, ``subject``, ``val_fraction``, ...; the teacher's cached embeddings stay
    in the batch as ``"target"``), plus the ones below.

    Parameters
    ----------
    image_size : int
        Side of the images the targets are made from: the low-resolution image itself for
        ``"pixels"``, the VAE's input for ``"vae"`` (the latent is ``image_size / 2^(levels-1)`` a side).
    target : str
        ``"pixels"`` or ``"vae"``.
    vae : str | None
        The diffusers ``AutoencoderKL`` of ``"vae"``: a local folder (or its ``vae/`` sub-folder) or a
        cached hub id.
    target_cache : str | None
        ``.npz`` file for the targets; default ``<root>/lowlevel-<target>-<image_size>[-<vae hash>].npz``.
    target_batch_size : int
        Images per VAE forward pass.
    target_device : str
        Device of the VAE (``"auto"``: CUDA when present).
    progress_bar : bool
        Show progress while computing the targets (``NEURODECODE_NO_PROGRESS=1`` switches it off too).
    """

    #: what ``neurodecode fit`` links into the model: the encoder's input shape (as for the alignment
    #: encoders, but not ``embed_dim``: the encoder's ``n_outputs`` is the decoder's code size, set in YAML)
    #: and the target
    CLI_LINKS = tuple((src, dst) for src, dst in BrainImageDataModule.CLI_LINKS if src != "data.embed_dim") + (
        ("data.target_shape", "model.init_args.target_shape"), ("data.target", "model.init_args.target"),
        ("data.vae", "model.init_args.vae"))

    def __init__(self, root: str, image_size: int = 32, target: str = "pixels", vae: str | None = None,
                 target_cache: str | None = None, target_batch_size: int = 16, target_device: str = "auto",
                 progress_bar: bool = True, **kwargs: Any) -> None:
        super().__init__(root, **kwargs)
        check_option("target", target, TARGETS)
        if int(image_size) < 1:
            raise ValueError(f"image_size must be positive, got {image_size}.")
        if target == "vae" and not vae:
            raise ValueError("target 'vae' needs --data.vae: the folder (or hub id) of a diffusers AutoencoderKL.")
        self.image_size, self.target, self.vae = int(image_size), target, vae if target == "vae" else None
        self.target_batch_size, self.target_device = int(target_batch_size), target_device
        self.progress_bar = bool(progress_bar)
        if target == "vae":
            self.target_shape: list[int] = list(vae_latent_shape(vae, self.image_size))
        else:
            self.target_shape = [3, self.image_size, self.image_size]
        if target_cache is None:
            tag = f"-{hashlib.sha1(str(vae).encode()).hexdigest()[:8]}" if target == "vae" else ""
            target_cache = str(self.root / f"lowlevel-{target}-{self.image_size}{tag}.npz")
        self.target_cache = Path(target_cache)
        self._targets: np.ndarray | None = None

    # -- targets --------------------------------------------------------------------------------
    def _read_cache(self) -> np.ndarray | None:
        if not self.target_cache.is_file():
            return None
        with np.load(self.target_cache, allow_pickle=False) as f:
            ids, arr = f["stimulus_id"], f["targets"]
        if ids.tolist() != self.dataset.stimuli.stimulus_id.astype(str).tolist() or list(arr.shape[1:]) != self.target_shape:
            logger.info(f"{self.target_cache} does not match the stimuli or the target; recomputing it")
            return None
        return arr.astype(np.float32, copy=False)

    def _compute_targets(self) -> np.ndarray:
        table = self.dataset.stimuli
        logger.info(f"low-level targets ({self.target}, {self.image_size} px) of {len(table)} stimuli -> "
                    f"{self.target_cache}")
        images = lowres_images(table, np.arange(len(table)), self.image_size, progress_bar=self.progress_bar)
        if self.target == "pixels":
            return images
        device = self.target_device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        vae = load_vae(self.vae, device=device)
        bs = self.target_batch_size
        starts = progress(range(0, len(images), bs), enabled=self.progress_bar, desc="VAE latents", unit="batch")
        chunks = [vae_encode(vae, torch.from_numpy(images[i:i + bs])).cpu().numpy() for i in starts]
        return np.concatenate(chunks).astype(np.float32)

    def prepare_data(self) -> None:
        """The teacher's embeddings (as the parent), then the low-level targets the cache lacks."""
        super().prepare_data()
        if self._read_cache() is not None:
            return
        targets = self._compute_targets()
        with atomic_path(self.target_cache, suffix=".npz") as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, stimulus_id=self.dataset.stimuli.stimulus_id.astype(str), targets=targets)

    @property
    def targets(self) -> np.ndarray:
        """Low-level targets by stimulus-table row, ``(n_stimuli, *target_shape)``."""
        if self._targets is None:
            self._targets = self._read_cache()
            if self._targets is None:
                self.prepare_data()  # outside a Trainer, in one process
                self._targets = self._read_cache()
            if self._targets is None:
                raise RuntimeError(f"low-level targets could not be read back from {self.target_cache}.")
        return self._targets

    def mean_target(self) -> np.ndarray:
        """The mean target of the training samples (the constant prediction to beat)."""
        if "train" not in self.sets:
            self.setup("fit")
        return self.targets[self.sets["train"].stim_rows].mean(0)

    # -- loaders --------------------------------------------------------------------------------
    def _dataset(self, which: str) -> Dataset:
        return _WithTargets(self.sets[which], self.targets)

    def describe(self) -> dict[str, Any]:
        """The parent's description plus the low-level target."""
        d = super().describe()
        d.update({"lowlevel_target": self.target, "image_size": self.image_size, "vae": self.vae,
                  "target_shape": list(self.target_shape)})
        return d


# --------------------------------------------------------------------------------------------------
# the LightningModule
# --------------------------------------------------------------------------------------------------
class LowLevelModule(L.LightningModule):
    """Train a :class:`~neurodecode.reconstruction.lowlevel.LowLevelHead` with an L1 loss.

    The decoder sits on a brain encoder: either a fresh one trained with it (``encoder``), or the
    trained encoder of an alignment run (``pretrained``), whose teacher-space embedding already holds
    what the brain encodes; on little or noisy data the second learns far better (see the tests).

    Parameters
    ----------
    encoder : nn.Module | None
        A fresh brain encoder under the decoder (any :mod:`neurodecode.encoders` model; its
        ``n_outputs`` is the code size).
    pretrained : str | None
        An exported encoder folder or an alignment checkpoint (``neurodecode fit``): its encoder and
        input normalisation are used (:func:`~neurodecode.reconstruction.lowlevel.pretrained_encoder`)
        and ``encoder``, if given, is not (so a YAML keeps its ``encoder`` entry, whose data links
        still resolve, and ``--model.init_args.pretrained CKPT`` switches to the trained one).
    freeze_encoder : bool
        With ``pretrained``: keep the encoder's weights fixed (and its dropout off) and train only the
        decoder; ``False`` fine-tunes it too.
    target_shape : sequence of int
        ``(channels, side, side)`` of the target (linked from the data module's ``target_shape``).
    target : str
        ``"pixels"`` or ``"vae"`` (linked from the data).
    vae : str | None
        The VAE's spec for ``"vae"`` (linked from the data).
    width : int
        Channels of the decoder's convolutions (not ``channels``, the data's channel selection).
    loss : str
        ``"l1"`` (the mean absolute error, as MindEye's and ATM's low-level branches) or ``"mse"``.
    lr : float
        Peak learning rate of Adam.
    weight_decay : float
        Adam's (L2) weight decay.
    scheduler : str
        ``"cosine"`` or ``"constant"``, after ``warmup_epochs`` of linear warm-up
        (:func:`~neurodecode.training.lit.lr_schedule`).
    warmup_epochs : float
        Warm-up length in epochs (fractions allowed).
    min_lr_ratio : float
        Final learning rate of the cosine as a fraction of ``lr``.
    n_chans, n_voxels : int | None
        Input size (linked from the data), checked against the encoder's.
    reseed_each_step : bool
        Reseed the global RNG from ``(seed, global step, rank)`` before each step (dropout does not
        depend on whether a run was resumed).
    seed : int
        Base of that reseeding (the CLI links ``seed_everything`` here).
    """

    def __init__(self, encoder: nn.Module | None = None, pretrained: str | None = None, freeze_encoder: bool = True,
                 target_shape: Sequence[int] = (3, 32, 32),
                 target: str = "pixels", vae: str | None = None, width: int = 32, loss: str = "l1", lr: float = 1e-3,
                 weight_decay: float = 0.0, scheduler: str = "cosine", warmup_epochs: float = 0.0,
                 min_lr_ratio: float = 0.0, n_chans: int | None = None, n_voxels: int | None = None,
                 reseed_each_step: bool = True, seed: int = 0) -> None:
        super().__init__()
        check_option("scheduler", scheduler, SCHEDULERS)
        check_option("loss", loss, LOSSES)
        self.save_hyperparameters(ignore=["encoder"])
        self.hparams["target_shape"] = [int(v) for v in target_shape]
        if encoder is None and pretrained is None:
            raise ValueError("LowLevelModule needs 'encoder' (a fresh encoder, class_path under "
                             "model.init_args.encoder) or 'pretrained' (a trained encoder's folder or checkpoint).")
        if encoder is not None and pretrained is not None:
            logger.info(f"low-level head on the pretrained encoder {pretrained}; the fresh "
                        f"{type(encoder).__name__} given as 'encoder' is not used")
        stats = None
        self.pretrained_data: dict[str, Any] = {}
        if pretrained is not None:
            encoder, mean, std, self.pretrained_data = pretrained_encoder(pretrained)
            stats = (mean, std)
            if freeze_encoder:
                encoder.requires_grad_(False)
        self.frozen = pretrained is not None and freeze_encoder
        self.head = LowLevelHead(encoder, target_shape, target=target, vae=vae, width=width)
        size = n_voxels if n_voxels is not None else n_chans
        if size is not None and int(size) != self.head.input_mean.numel():
            raise ValueError(f"the data have {size} {'voxels' if n_voxels is not None else 'channels'} but the "
                             f"encoder takes {self.head.input_mean.numel()}.")
        self.hparams["head_config"] = self.head.get_config()
        self.register_buffer("stats_fitted", torch.tensor(False))
        if stats is not None:
            self.head.set_input_stats(*stats)
            self.stats_fitted.fill_(True)
        self.register_buffer("mean_image", torch.zeros(self.head.target_shape))
        self.register_buffer("mean_image_set", torch.tensor(False))

    def setup(self, stage: str) -> None:
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if dm is None:
            return
        self._check_pretrained(dm)
        if not bool(self.stats_fitted) and hasattr(dm, "input_stats"):
            stats = dm.input_stats()
            self.head.set_input_stats(stats["mean"], stats["std"])
            self.stats_fitted.fill_(True)
        if not bool(self.mean_image_set) and hasattr(dm, "mean_target") and stage == "fit":
            self.mean_image.copy_(torch.as_tensor(dm.mean_target()))
            self.mean_image_set.fill_(True)
        if hasattr(dm, "describe"):
            self.hparams["data"] = dm.describe()

    def _check_pretrained(self, dm: Any) -> None:
        """The data must be what the pretrained encoder was trained on (channels, subjects' order)."""
        pre = self.pretrained_data
        if not pre:
            return
        for key, ours in (("channels", getattr(dm, "ch_names", None)), ("train_subjects", getattr(dm, "train_subjects", None))):
            theirs = pre.get(key)
            if theirs is not None and ours is not None and list(theirs) != list(ours):
                raise ValueError(f"the pretrained encoder {self.hparams.pretrained} was trained with {key} "
                                 f"{list(theirs)[:8]}..., but the data have {list(ours)[:8]}...; use the same data "
                                 "settings (channels, protocol, subjects) as its training run.")

    def train(self, mode: bool = True) -> LowLevelModule:
        """Train mode, with a frozen pretrained encoder kept in eval mode (no dropout)."""
        super().train(mode)
        if self.frozen:
            self.head.encoder.eval()
        return self

    def forward(self, x: torch.Tensor, subject: torch.Tensor | None = None) -> torch.Tensor:
        """The head's prediction ``(n, *target_shape)`` of raw responses."""
        return self.head(x, subject)

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        if self.hparams.reseed_each_step:
            rank = self.trainer.global_rank if self._trainer is not None else 0
            torch.manual_seed((int(self.hparams.seed) * 1_000_003 + self.global_step) * 1024 + rank)

    def _loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        fn = nn.functional.l1_loss if self.hparams.loss == "l1" else nn.functional.mse_loss
        return fn(self.head(batch["x"], batch["subject"]), batch["image"].float())

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = self._loss(batch)
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=len(batch["x"]))
        return loss

    def _eval_step(self, batch: dict[str, torch.Tensor], stage: str) -> None:
        n = len(batch["x"])
        self.log(f"{stage}/loss", self._loss(batch), on_epoch=True, batch_size=n, sync_dist=True,
                 prog_bar=stage == "val")
        if bool(self.mean_image_set):
            err = batch["image"].float() - self.mean_image
            base = err.abs().mean() if self.hparams.loss == "l1" else err.square().mean()
            self.log(f"{stage}/loss_mean_image", base, on_epoch=True, batch_size=n, sync_dist=True)

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._eval_step(batch, "test")

    def predict_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> dict[str, torch.Tensor]:
        return {"lowlevel": self.head(batch["x"], batch["subject"]), "stim": batch["stim"],
                "subject": batch["subject"]}

    def configure_optimizers(self):
        hp = self.hparams
        params = [p for p in self.parameters() if p.requires_grad]
        opt = torch.optim.Adam(params, lr=hp.lr, weight_decay=hp.weight_decay)
        total = max(1, int(self.trainer.estimated_stepping_batches))
        max_epochs = max(1, self.trainer.max_epochs or 1)
        warmup = int(round(hp.warmup_epochs * total / max_epochs))
        sched = lr_schedule(opt, hp.scheduler, warmup=warmup, total=total, min_lr_ratio=hp.min_lr_ratio)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
