"""Training the stage-1 prior with Lightning: :class:`PriorModule`.

A thin wrapper around :class:`~neurodecode.reconstruction.prior.Prior`, fed by
:class:`~neurodecode.reconstruction.prior_data.PriorDataModule` (batches ``{"brain", "target",
"stim", "index"}``: the encoder's embedding of a training trial and the raw teacher embedding of its
image).

Objectives
----------
``kind="diffusion"`` (ATM)
    MSE between the predicted and the true noise at a uniformly drawn timestep (the target follows the
    scheduler's ``prediction_type``: noise, clean sample or velocity). For classifier-free guidance the
    condition is dropped with probability ``cond_dropout`` (0.1): with ``cond_dropout_mode="batch"``
    (the DEFAULT, ATM's choice) for the whole batch at once, with ``"sample"`` for each sample on its own.
``kind="prior_transformer"``
    the same with diffusers' ``PriorTransformer``, predicting the clean normalised embedding (unCLIP).
``kind="aligner"``
    :class:`~neurodecode.losses.AlignmentLoss`: ``w * InfoNCE + (1 - w) * regression`` (MSE or cosine).

Optimisation: Adam (lr 1e-3, ATM), linear warm-up over ``warmup_steps`` (500) then cosine
(:func:`neurodecode.training.lit.lr_schedule`), stepped per batch. The trainer clips gradients (1.0 in
the configs).

Logged: ``train/loss``; ``val/loss`` (the objective on the validation set, with fixed noise and
timesteps for the diffusion kinds, so epochs compare: what checkpointing and early stopping monitor);
and, comparable across kinds, ``val/cosine`` (mean cosine between the sampled or predicted embedding
and the true one, raw space), ``val/top1`` and ``val/top5`` (retrieval of the true validation image
among all validation images from the predicted embedding). The same ``test/...`` numbers after fit.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F

from neurodecode.reconstruction.prior import KINDS, Prior
from neurodecode.training.lit import SCHEDULERS, lr_schedule
from neurodecode.utils import check_option, logger

OptimizerCallable = Callable[[Iterable], torch.optim.Optimizer]
DROPOUT_MODES = ("batch", "sample")


def embedding_metrics(pred: torch.Tensor, target: torch.Tensor, stim: torch.Tensor) -> dict[str, float]:
    """Mean cosine to the true embedding, and top-1/top-5 retrieval of the true image among the set's images.

    Parameters
    ----------
    pred, target : torch.Tensor, (n, dim)
        Predicted and true embeddings (raw space), matching rows.
    stim : torch.Tensor, (n,)
        Stimulus of each row; the candidates are the distinct stimuli (each once).

    Returns
    -------
    metrics : dict
        ``cosine``, ``top1``, ``top5`` (when there are at least 5 candidates) and ``n_candidates``.
    """
    from neurodecode.evaluation.ranking import retrieval_ranks, similarity_matrix

    pred, target = pred.float().cpu(), target.float().cpu()
    stim = stim.cpu().numpy()
    out: dict[str, float] = {"cosine": float(F.cosine_similarity(pred, target, dim=-1).mean())}
    uniq, first, label = np.unique(stim, return_index=True, return_inverse=True)
    out["n_candidates"] = float(len(uniq))
    if len(uniq) >= 2:
        ranks = retrieval_ranks(similarity_matrix(pred, target[first]), label)
        out["top1"] = float(np.mean(ranks <= 1))
        if len(uniq) >= 5:
            out["top5"] = float(np.mean(ranks <= 5))
    return out


class PriorModule(L.LightningModule):
    """Train a stage-1 prior (diffusion prior, PriorTransformer or MLP aligner).

    Parameters
    ----------
    kind : {"diffusion", "prior_transformer", "aligner"}
        The model (see :mod:`neurodecode.reconstruction.prior`).
    brain_dim, target_dim : int
        Brain and teacher embedding sizes (linked from the data module by the command line:
        ``data.brain_dim`` and ``data.target_dim``).
    net : dict | None
        Network options, e.g. ``{"hidden_dims": [1024, 512, 256, 128, 64], "time_embed_dim": 512}``
        (diffusion), ``{"num_layers": 4, "num_attention_heads": 8}`` (prior_transformer),
        ``{"width": 1024, "n_blocks": 2, "dropout": 0.1}`` (aligner).
    noise_scheduler : dict | None
        Overrides of the noise scheduler's configuration (``DDPMScheduler()`` defaults for diffusion,
        as ATM; unCLIP's prior scheduler for the PriorTransformer), e.g. ``{"clip_sample": false}``.
    normalize_targets : bool
        Train on z-scored targets (linked from ``data.normalize_targets``; default raw, ATM).
    cond_dropout : float
        Probability of dropping the condition (classifier-free guidance; ATM 0.1).
    cond_dropout_mode : {"batch", "sample"}
        ``"batch"`` (default, ATM): the whole batch at once; ``"sample"``: each sample on its own.
    regression, contrastive, contrastive_weight
        The aligner's loss (:class:`~neurodecode.losses.AlignmentLoss` arguments; default MSE + CLIP,
        weighted 0.25 / 0.75).
    lr, weight_decay, betas
        Adam's settings (ATM: lr 1e-3, no weight decay); ignored when ``optimizer`` is given.
    optimizer : callable | None
        Any ``torch.optim`` optimizer by ``class_path`` (LightningCLI dependency injection).
    lr_scheduler : {"cosine", "constant"}
        After the warm-up.
    warmup_steps : int
        Linear warm-up in optimizer steps (ATM: 500).
    min_lr_ratio : float
        Final learning rate of the cosine, as a fraction of ``lr``.
    val_steps, val_guidance : int, float
        Sampling settings of the validation and test metrics (ATM's sampling: 50 steps, guidance 5),
        recorded as the trained prior's defaults (:meth:`Prior.sample` without ``steps``/``guidance``).
    sample_every_n_epochs : int
        Sample the validation set every n epochs (and at the last one); ``val/loss`` is logged every epoch.
    reseed_each_step : bool
        Reseed the global RNG from ``(seed, global step)`` before each step (noise, timesteps and dropout
        do not depend on an interruption and resume).
    seed : int
        Base of that reseeding and of the validation noise (the CLI links ``seed_everything`` here).
    """

    def __init__(
        self,
        kind: str = "diffusion",
        brain_dim: int | None = None,
        target_dim: int | None = None,
        net: dict[str, Any] | None = None,
        noise_scheduler: dict[str, Any] | None = None,
        normalize_targets: bool = False,
        cond_dropout: float = 0.1,
        cond_dropout_mode: str = "batch",
        regression: str | None = "mse",
        contrastive: str | None = "clip",
        contrastive_weight: float | None = None,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        betas: tuple[float, float] = (0.9, 0.999),
        optimizer: OptimizerCallable | None = None,
        lr_scheduler: str = "cosine",
        warmup_steps: int = 500,
        min_lr_ratio: float = 0.0,
        val_steps: int = 50,
        val_guidance: float = 5.0,
        sample_every_n_epochs: int = 1,
        reseed_each_step: bool = True,
        seed: int = 0,
    ) -> None:
        super().__init__()
        check_option("kind", kind, KINDS)
        check_option("cond_dropout_mode", cond_dropout_mode, DROPOUT_MODES)
        check_option("lr_scheduler", lr_scheduler, SCHEDULERS)
        if brain_dim is None or target_dim is None:
            raise ValueError("PriorModule needs brain_dim and target_dim; the command line links them from the data "
                             "module (data.brain_dim, data.target_dim).")
        if not 0.0 <= cond_dropout < 1.0:
            raise ValueError(f"cond_dropout must be in [0, 1), got {cond_dropout}.")
        if sample_every_n_epochs < 1:
            raise ValueError(f"sample_every_n_epochs must be at least 1, got {sample_every_n_epochs}.")
        self.save_hyperparameters(ignore=["optimizer"])
        self.optimizer_factory = optimizer
        self.prior = Prior(kind, brain_dim, target_dim, net=net, noise_scheduler=noise_scheduler,
                           normalize_targets=normalize_targets,
                           sampling={"steps": int(val_steps), "guidance": float(val_guidance)})
        # lets a checkpoint rebuild the prior without the YAML (load_prior, export_prior)
        self.hparams["prior_config"] = self.prior.get_config()
        self.loss = None
        if kind == "aligner":
            from neurodecode.losses import AlignmentLoss

            self.loss = AlignmentLoss(contrastive=contrastive, regression=regression,
                                      contrastive_weight=contrastive_weight)
        self._collected: dict[str, list[dict[str, torch.Tensor]]] = {}
        self.test_results: dict[str, Any] = {}

    @property
    def kind(self) -> str:
        """The prior's kind."""
        return self.prior.kind

    # -- set-up -------------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if dm is None:
            return
        if not bool(self.prior.stats_fitted) and hasattr(dm, "target_stats"):
            stats = dm.target_stats()
            self.prior.set_target_stats(stats["mean"], stats["std"])
        if hasattr(dm, "describe"):
            self.hparams["data"] = dm.describe()
            self.prior.info = dict(self.hparams["data"])
        if stage == "fit" and self.kind == "diffusion" and not self.prior.normalize_targets:
            sched = self.prior.train_scheduler()
            limit = float(sched.config.clip_sample_range)
            mean, std = self.prior.target_mean, self.prior.target_std
            reach = float((mean.abs() + 3 * std).max())
            if bool(sched.config.clip_sample) and reach > limit:
                logger.warning(f"prior: raw targets reach about {reach:.2f} but the DDPM scheduler clips predicted "
                               f"samples to +-{limit:g} (DDPMScheduler's default); set model.noise_scheduler "
                               "{clip_sample: false} or data.normalize_targets true.")

    # -- condition dropout --------------------------------------------------------------------
    def condition_mask(self, n: int, device: torch.device | str = "cpu") -> torch.Tensor:
        """Per-sample 1 (keep the condition) / 0 (drop it) for one training batch."""
        p = float(self.hparams.cond_dropout)
        if self.hparams.cond_dropout_mode == "batch":
            keep = float(torch.rand(()) >= p)
            return torch.full((n,), keep, device=device)
        return (torch.rand(n) >= p).float().to(device)

    # -- objectives ---------------------------------------------------------------------------
    def _diffusion_loss(self, batch: dict[str, torch.Tensor], mask: torch.Tensor | None,
                        generator: torch.Generator | None = None) -> torch.Tensor:
        prior = self.prior
        x0 = prior.to_model_space(batch["target"].float())
        sched = prior.train_scheduler()
        n = len(x0)
        n_t = int(sched.config.num_train_timesteps)
        if generator is None:  # training: the global RNG, reseeded each step (on the batch's device)
            noise = torch.randn_like(x0)
            t = torch.randint(0, n_t, (n,), device=x0.device)
        else:  # validation: the same noise and timesteps every epoch (a CPU generator)
            noise = torch.randn(x0.shape, generator=generator).to(x0.device)
            t = torch.randint(0, n_t, (n,), generator=generator).to(x0.device)
        xt = sched.add_noise(x0, noise, t)
        out = prior.net(xt, t, batch["brain"].float(), mask)
        kind = sched.config.prediction_type
        if kind == "epsilon":
            target = noise
        elif kind == "sample":
            target = x0
        elif kind == "v_prediction":
            target = sched.get_velocity(x0, noise, t)
        else:
            raise ValueError(f"noise_scheduler prediction_type {kind!r} is not supported (epsilon, sample, v_prediction).")
        return F.mse_loss(out, target)

    def _aligner_loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        pred = self.prior.net(batch["brain"].float())
        total, _ = self.loss(pred, self.prior.to_model_space(batch["target"].float()))
        return total, self.prior.from_model_space(pred)

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        if self.hparams.reseed_each_step:
            rank = self.trainer.global_rank if self._trainer is not None else 0
            torch.manual_seed((int(self.hparams.seed) * 1_000_003 + self.global_step) * 1024 + rank)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        if self.kind == "aligner":
            loss, _ = self._aligner_loss(batch)
        else:
            loss = self._diffusion_loss(batch, self.condition_mask(len(batch["brain"]), batch["brain"].device))
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=len(batch["brain"]))
        return loss

    # -- evaluation ---------------------------------------------------------------------------
    def _eval_step(self, batch: dict[str, torch.Tensor], batch_idx: int, stage: str) -> None:
        n = len(batch["brain"])
        if self.kind == "aligner":
            loss, pred = self._aligner_loss(batch)
        else:
            g = torch.Generator().manual_seed(int(self.hparams.seed) * 100_003 + batch_idx)
            loss = self._diffusion_loss(batch, None, generator=g)
            pred = None
        self.log(f"{stage}/loss", loss, on_epoch=True, batch_size=n, sync_dist=True, prog_bar=stage == "val")
        if getattr(self.trainer, "sanity_checking", False):
            return
        item = {k: batch[k].detach() for k in ("brain", "target", "stim", "index")}
        if pred is not None:
            item["pred"] = pred.detach()
        self._collected.setdefault(stage, []).append(item)

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._eval_step(batch, batch_idx, "val")

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._eval_step(batch, batch_idx, "test")

    def predict_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> dict[str, torch.Tensor]:
        """Sampled (or predicted) raw teacher embeddings of a batch, seeded by the batch index."""
        emb = self.prior.sample(batch["brain"], seed=int(self.hparams.seed) * 100_003 + batch_idx, progress=False)
        return {"embedding": emb, "stim": batch["stim"], "subject": batch["subject"]}

    def _sample_now(self, stage: str) -> bool:
        if stage == "test" or self.kind == "aligner":
            return True
        every = int(self.hparams.sample_every_n_epochs)
        last = self.trainer.max_epochs is not None and self.current_epoch + 1 >= self.trainer.max_epochs
        return (self.current_epoch + 1) % every == 0 or last

    def _gather(self, x: torch.Tensor) -> torch.Tensor:
        if self.trainer.world_size <= 1:
            return x
        return self.all_gather(x).flatten(0, 1)

    def _epoch_end(self, stage: str) -> None:
        items = self._collected.pop(stage, [])
        if not items or not self._sample_now(stage):
            return
        cat = {k: torch.cat([it[k] for it in items]) for k in items[0]}
        if "pred" not in cat:
            cat["pred"] = self.prior.sample(cat["brain"], seed=int(self.hparams.seed), progress=False)
        pred, target, stim, index = (self._gather(cat[k]) for k in ("pred", "target", "stim", "index"))
        _, keep = np.unique(index.cpu().numpy(), return_index=True)  # rows a distributed sampler repeated
        keep = torch.as_tensor(keep, device=pred.device)
        metrics = embedding_metrics(pred[keep], target[keep], stim[keep])
        for key in ("cosine", "top1", "top5"):
            if key in metrics:
                self.log(f"{stage}/{key}", metrics[key], sync_dist=False, rank_zero_only=False,
                         prog_bar=stage == "val" and key == "top1")
        if stage == "test":
            self.test_results = {"k": int(metrics["n_candidates"]),
                                 "mean": {k: metrics[k] for k in ("cosine", "top1", "top5") if k in metrics},
                                 "kind": self.kind}

    def on_validation_epoch_start(self) -> None:
        self._collected.pop("val", None)

    def on_test_epoch_start(self) -> None:
        self._collected.pop("test", None)

    def on_validation_epoch_end(self) -> None:
        self._epoch_end("val")

    def on_test_epoch_end(self) -> None:
        self._epoch_end("test")

    # -- optimisation -------------------------------------------------------------------------
    def configure_optimizers(self):
        hp = self.hparams
        params = [p for p in self.parameters() if p.requires_grad]
        if self.optimizer_factory is None:
            opt = torch.optim.Adam(params, lr=hp.lr, betas=tuple(hp.betas), weight_decay=hp.weight_decay)
        else:
            opt = self.optimizer_factory(params)
        total = max(1, int(self.trainer.estimated_stepping_batches))
        sched = lr_schedule(opt, hp.lr_scheduler, warmup=int(hp.warmup_steps), total=total,
                            min_lr_ratio=hp.min_lr_ratio)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
