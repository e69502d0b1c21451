"""Training the demo generator with Lightning: the module and the export of its checkpoints.

``neurodecode fit -c configs/sim/generator.yaml --data.root sim_eeg`` trains
:class:`GeneratorModule` (a :class:`~neurodecode.reconstruction.demo_generator.DemoDenoiser`) on the
images of :class:`~neurodecode.reconstruction.generator_data.GeneratorDataModule` (the training split's
images and their raw teacher embeddings); :func:`export_generator` writes the folder that
``load_generator("demo:PATH")`` reads.

Module
    DDPM noise on the images, the v (or noise, or image) target, min-SNR-gamma loss weights (Hang et
    al. 2023), condition dropout for classifier-free guidance (per sample by default, or the whole
    batch as ATM's prior does), AdamW with warm-up + cosine, an optional EMA of the weights (exported
    when present). ``val/loss`` is the unweighted denoising loss of the validation images at fixed
    timesteps with fixed noise, so it is comparable across epochs (``test/loss``, the same on the test
    images, is evaluation only: ``neurodecode fit``'s test after fit); every ``sample_every_n_epochs``,
    ``val/pixcorr`` scores a few guided samples of validation images against them and a PNG strip
    (truth above, sample below) is written to ``<log_dir>/samples/``.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import lightning as L
import torch

from neurodecode.reconstruction.demo_generator import (
    DemoDenoiser,
    default_scheduler_config,
    export_config,
    make_scheduler,
    sample_images,
    save_pretrained,
)
from neurodecode.utils import PathLike, UserError, check_option

__all__ = ["GeneratorModule", "export_generator", "load_generator_checkpoint"]

DROPOUT_MODES = ("sample", "batch")


# --------------------------------------------------------------------------------------------------
# the module
# --------------------------------------------------------------------------------------------------
class GeneratorModule(L.LightningModule):
    """Train a :class:`~neurodecode.reconstruction.demo_generator.DemoDenoiser` (see the module docstring).

    Parameters
    ----------
    embed_dim, resolution : int | None
        Condition size and image side in pixels; taken from the data module (its ``embed_dim`` and
        ``image_size``, linked by ``neurodecode fit``) when ``None`` (the model is then built in ``setup``).
    block_out_channels, layers_per_block, attention_levels, time_embed_dim, cond_hidden, norm_num_groups
        The UNet and condition MLP (see :class:`~neurodecode.reconstruction.demo_generator.DemoDenoiser`).
    num_train_timesteps, beta_schedule, prediction_type : int, str, str
        The DDPM training schedule and target (``"v_prediction"``, ``"epsilon"``, ``"sample"``).
    cond_dropout : float
        Probability of dropping the condition (classifier-free guidance).
    cond_dropout_mode : str
        ``"sample"`` (each sample on its own; default) or ``"batch"`` (the whole batch, as ATM's prior).
    snr_gamma : float | None
        Min-SNR-gamma loss weighting (``None``: plain MSE).
    lr, weight_decay, warmup_steps, min_lr_ratio : float, float, int, float
        AdamW and its warm-up + cosine schedule (stepped per batch).
    ema_decay : float
        Decay of an exponential moving average of the weights (0: none); the EMA is validated and
        exported when on.
    val_timesteps : int
        Fixed timesteps at which ``val/loss`` is measured (evenly spaced).
    val_samples : int
        Validation images sampled for ``val/pixcorr`` and the PNG strip (0: none).
    sample_steps, sample_guidance, sampler : int, float, str
        Sampling settings of those samples; also the exported defaults.
    sample_every_n_epochs : int
        How often to sample (and at the last epoch).
    output_size : int | None
        Side of the exported generator's images (default: the training images' source size).
    seed : int
        Seed of the training noise (drawn from ``(seed, global step)``, so a resumed run draws the same).
    """

    def __init__(self, embed_dim: int | None = None, resolution: int | None = None,
                 block_out_channels: list[int] = [32, 64, 128], layers_per_block: int = 1,  # noqa: B006
                 attention_levels: list[bool] | None = None, time_embed_dim: int | None = None,
                 cond_hidden: int = 256, norm_num_groups: int = 8, attention_head_dim: int = 32,
                 dropout: float = 0.0, num_train_timesteps: int = 1000, beta_schedule: str = "squaredcos_cap_v2",
                 prediction_type: str = "v_prediction", cond_dropout: float = 0.1, cond_dropout_mode: str = "sample",
                 snr_gamma: float | None = 5.0, lr: float = 1e-3, weight_decay: float = 0.0, warmup_steps: int = 50,
                 min_lr_ratio: float = 0.05, ema_decay: float = 0.0, val_timesteps: int = 8, val_samples: int = 8,
                 sample_steps: int = 25, sample_guidance: float = 2.0, sampler: str = "ddim",
                 sample_every_n_epochs: int = 10, output_size: int | None = None, seed: int = 0) -> None:
        super().__init__()
        check_option("cond_dropout_mode", cond_dropout_mode, DROPOUT_MODES)
        if not 0 <= cond_dropout < 1:
            raise ValueError(f"cond_dropout must be in [0, 1), got {cond_dropout}.")
        if not 0 <= ema_decay < 1:
            raise ValueError(f"ema_decay must be in [0, 1), got {ema_decay}.")
        self.save_hyperparameters()
        self.scheduler_config = default_scheduler_config(num_train_timesteps, beta_schedule, prediction_type)
        self.noise_scheduler = make_scheduler(self.scheduler_config, "ddpm")
        self.denoiser: DemoDenoiser | None = None
        self.ema: DemoDenoiser | None = None
        if embed_dim is not None and resolution is not None:
            self._build(embed_dim, resolution)
        self._val_batch: dict[str, torch.Tensor] | None = None

    # -- set-up -----------------------------------------------------------------------------------
    def _build(self, embed_dim: int, image_size: int) -> None:
        hp = self.hparams
        self.denoiser = DemoDenoiser(
            int(embed_dim), int(image_size), block_out_channels=hp.block_out_channels,
            layers_per_block=hp.layers_per_block, attention_levels=hp.attention_levels,
            time_embed_dim=hp.time_embed_dim, cond_hidden=hp.cond_hidden, norm_num_groups=hp.norm_num_groups,
            attention_head_dim=hp.attention_head_dim, dropout=hp.dropout)
        if hp.ema_decay > 0:
            self.ema = copy.deepcopy(self.denoiser).requires_grad_(False)
        # the checkpoint rebuilds the model from these (plain data: loadable with weights_only=True)
        self.hparams["embed_dim"], self.hparams["resolution"] = int(embed_dim), int(image_size)
        self.hparams["denoiser_config"] = self.denoiser.get_config()

    def setup(self, stage: str) -> None:
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if self.denoiser is None:
            embed_dim = self.hparams.embed_dim or getattr(dm, "embed_dim", None)
            image_size = self.hparams.resolution or getattr(dm, "image_size", None)
            if embed_dim is None or image_size is None:
                raise ValueError("GeneratorModule needs embed_dim and resolution: give them, or train it with a "
                                 "GeneratorDataModule (they are read from it).")
            self._build(embed_dim, image_size)
        if dm is not None and hasattr(dm, "image_size") and dm.image_size != self.denoiser.image_size:
            raise ValueError(f"the data are at {dm.image_size} px but the model at {self.denoiser.image_size} px; "
                             "set data.image_size and model.resolution alike (or leave model.resolution out).")
        if stage == "fit" and dm is not None and hasattr(dm, "embed_stats"):
            stats = dm.embed_stats()
            self.denoiser.set_embed_stats(stats["mean"], stats["std"])
            if self.ema is not None:
                self.ema.set_embed_stats(stats["mean"], stats["std"])
            self.hparams["data"] = dm.describe()

    def configure_optimizers(self):
        from neurodecode.training.lit import lr_schedule

        hp = self.hparams
        opt = torch.optim.AdamW(self.denoiser.parameters(), lr=hp.lr, weight_decay=hp.weight_decay)
        total = int(self.trainer.estimated_stepping_batches) if self._trainer is not None else 1
        sched = lr_schedule(opt, "cosine", warmup=hp.warmup_steps, total=total, min_lr_ratio=hp.min_lr_ratio)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    # -- the diffusion loss ---------------------------------------------------------------------------
    def _target(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        kind = self.hparams.prediction_type
        if kind == "epsilon":
            return noise
        if kind == "sample":
            return x0
        return self.noise_scheduler.get_velocity(x0, noise, t)

    def _snr_weights(self, t: torch.Tensor) -> torch.Tensor:
        ac = self.noise_scheduler.alphas_cumprod.to(t.device)[t].float()
        snr = ac / (1 - ac)
        gamma = self.hparams.snr_gamma
        if gamma is None:
            return torch.ones_like(snr)
        clipped = torch.clamp(snr, max=gamma)
        kind = self.hparams.prediction_type
        if kind == "epsilon":
            return clipped / snr
        if kind == "v_prediction":
            return clipped / (snr + 1)
        return clipped

    def _loss(self, model: DemoDenoiser, x0: torch.Tensor, embeds: torch.Tensor, noise: torch.Tensor,
              t: torch.Tensor, drop: torch.Tensor | None, weights: torch.Tensor | None) -> torch.Tensor:
        xt = self.noise_scheduler.add_noise(x0, noise, t)
        out = model(xt, t, embeds, drop=drop)
        err = (out.float() - self._target(x0, noise, t).float()).pow(2).mean(dim=(1, 2, 3))
        return (err * weights).mean() if weights is not None else err.mean()

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        hp = self.hparams
        x0, embeds = batch["image"], batch["embed"]
        n, dev = len(x0), x0.device
        g = torch.Generator().manual_seed(int(hp.seed) * 1_000_003 + int(self.global_step))
        noise = torch.randn(x0.shape, generator=g).to(dev, x0.dtype)
        t = torch.randint(0, hp.num_train_timesteps, (n,), generator=g).to(dev)
        if hp.cond_dropout_mode == "batch":
            drop = torch.full((n,), bool(torch.rand((), generator=g) < hp.cond_dropout))
        else:
            drop = torch.rand(n, generator=g) < hp.cond_dropout
        loss = self._loss(self.denoiser, x0, embeds, noise, t, drop.to(dev), self._snr_weights(t))
        self.log("train/loss", loss, prog_bar=True, batch_size=n)
        return loss

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self.ema is None:
            return
        step = int(self.global_step)
        decay = min(self.hparams.ema_decay, (1 + step) / (10 + step))  # warm-up: early weights fade fast
        with torch.no_grad():
            for e, p in zip(self.ema.parameters(), self.denoiser.parameters(), strict=True):
                e.lerp_(p.detach(), 1 - decay)

    @property
    def sampling_model(self) -> DemoDenoiser:
        """The weights that are validated and exported (the EMA when on)."""
        return self.ema if self.ema is not None else self.denoiser

    def _fixed_loss(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        """Unweighted denoising loss at ``val_timesteps`` evenly spaced timesteps, noise fixed per batch."""
        hp = self.hparams
        x0, embeds = batch["image"], batch["embed"]
        n, dev = len(x0), x0.device
        g = torch.Generator().manual_seed(7919 * (batch_idx + 1))
        total = x0.new_zeros((), dtype=torch.float32)
        for k in range(hp.val_timesteps):
            t = torch.full((n,), int((k + 0.5) * hp.num_train_timesteps / hp.val_timesteps), device=dev)
            noise = torch.randn(x0.shape, generator=g).to(dev, x0.dtype)
            total = total + self._loss(self.sampling_model, x0, embeds, noise, t, None, None)
        return total / hp.val_timesteps

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        n = len(batch["image"])
        self.log("val/loss", self._fixed_loss(batch, batch_idx), prog_bar=True, batch_size=n, sync_dist=True)
        if batch_idx == 0:
            k = self.hparams.val_samples
            self._val_batch = {"image": batch["image"][:k], "embed": batch["embed"][:k]}

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        """``test/loss``: the same fixed-noise loss on the TEST images (novel concepts; evaluation only)."""
        self.log("test/loss", self._fixed_loss(batch, batch_idx), batch_size=len(batch["image"]), sync_dist=True)

    def on_validation_epoch_end(self) -> None:
        hp = self.hparams
        if self._val_batch is None or hp.val_samples <= 0 or self.trainer.sanity_checking:
            return
        last = self.current_epoch + 1 >= (self.trainer.max_epochs or 0)
        every = max(1, hp.sample_every_n_epochs)
        if not last and (self.current_epoch + 1) % every:
            return
        truth, embeds = self._val_batch["image"], self._val_batch["embed"]
        gens = [torch.Generator().manual_seed(i) for i in range(len(truth))]
        was_training = self.sampling_model.training
        self.sampling_model.eval()
        x = sample_images(self.sampling_model, self.scheduler_config, embeds, gens, steps=hp.sample_steps,
                          guidance=hp.sample_guidance, sampler=hp.sampler)
        self.sampling_model.train(was_training)
        a = x.flatten(1) - x.flatten(1).mean(1, keepdim=True)
        b = truth.float().flatten(1) - truth.float().flatten(1).mean(1, keepdim=True)
        r = (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1)).clamp_min(1e-8)
        self.log("val/pixcorr", r.mean(), batch_size=len(x))
        self._write_strip(truth, x)

    def _write_strip(self, truth: torch.Tensor, samples: torch.Tensor) -> None:
        log_dir = getattr(self.trainer, "log_dir", None)
        if not log_dir or not self.trainer.is_global_zero:
            return
        from neurodecode.reconstruction.demo_generator import tensor_to_images
        from neurodecode.utils import atomic_path

        top, bottom = tensor_to_images(truth), tensor_to_images(samples)
        s = top[0].size[0]
        from PIL import Image

        strip = Image.new("RGB", (s * len(top), 2 * s))
        for i, (a, b) in enumerate(zip(top, bottom, strict=True)):
            strip.paste(a, (i * s, 0))
            strip.paste(b, (i * s, s))
        out = Path(log_dir) / "samples" / f"epoch={self.current_epoch:03d}.png"
        with atomic_path(out, suffix=".png") as tmp:
            strip.save(tmp, format="PNG")

    # -- export -----------------------------------------------------------------------------------
    def export_config(self) -> dict[str, Any]:
        """The exported ``config.json`` of the current weights."""
        return _config_from_hparams(self.sampling_model, dict(self.hparams))


def _config_from_hparams(denoiser: DemoDenoiser, hp: dict[str, Any], source: str | None = None) -> dict[str, Any]:
    data = dict(hp.get("data") or {})
    sched = default_scheduler_config(hp.get("num_train_timesteps", 1000), hp.get("beta_schedule", "squaredcos_cap_v2"),
                                     hp.get("prediction_type", "v_prediction"))
    sampling = {"sampler": hp.get("sampler", "ddim"), "steps": int(hp.get("sample_steps", 25)),
                "guidance": float(hp.get("sample_guidance", 2.0))}
    teacher = {"spec": data.get("teacher", ""), "layer": data.get("layer", "final")}
    extra = {"data": data, "training": {k: hp[k] for k in ("cond_dropout", "cond_dropout_mode", "snr_gamma", "lr",
                                                            "ema_decay") if k in hp}}
    if source is not None:
        extra["source_checkpoint"] = source
    return export_config(denoiser, scheduler=sched, sampling=sampling, teacher=teacher,
                         output_size=hp.get("output_size") or data.get("source_size"), extra=extra)


def load_generator_checkpoint(ckpt: PathLike) -> tuple[DemoDenoiser, dict[str, Any]]:
    """The model (EMA weights when trained with them) and the export config of a ``GeneratorModule`` checkpoint.

    The checkpoint is read with ``torch.load(weights_only=True)``: nothing is unpickled.
    """
    ckpt = Path(ckpt)
    if not ckpt.is_file():
        raise UserError(f"checkpoint {ckpt} not found.")
    raw = torch.load(ckpt, map_location="cpu", weights_only=True)
    hp = raw.get("hyper_parameters", {})
    if "denoiser_config" not in hp:
        raise UserError(f"{ckpt} is not a demo-generator checkpoint (no 'denoiser_config' in its hyper_parameters); "
                        "train one with 'neurodecode fit -c configs/sim/generator.yaml'.")
    model = DemoDenoiser.from_config(hp["denoiser_config"])
    state = raw["state_dict"]
    prefix = "ema." if any(k.startswith("ema.") for k in state) else "denoiser."
    model.load_state_dict({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)})
    return model.eval(), _config_from_hparams(model, hp, source=ckpt.name)


def export_generator(ckpt: PathLike, out: PathLike) -> Path:
    """Write the exported folder (``config.json`` + ``model.safetensors``) of a ``GeneratorModule`` checkpoint.

    Parameters
    ----------
    ckpt : path-like
        A checkpoint written by ``neurodecode fit -c configs/sim/generator.yaml``.
    out : path-like
        The folder; ``load_generator(f"demo:{out}")`` reads it.

    Returns
    -------
    out : Path
    """
    model, config = load_generator_checkpoint(ckpt)
    extra = {k: v for k, v in config.items() if k in ("data", "training", "source_checkpoint")}
    return save_pretrained(model, out, scheduler=config["scheduler"], sampling=config["sampling"],
                           teacher={k: config["teacher"][k] for k in ("spec", "layer")},
                           output_size=config["output_size"], extra=extra)
