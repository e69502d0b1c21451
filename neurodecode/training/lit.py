"""LightningModules: thin wrappers that receive an encoder and a loss.

:class:`AlignmentModule` trains a brain encoder (any :mod:`neurodecode.encoders` model) to map
responses into a teacher's embedding space with an :class:`~neurodecode.losses.AlignmentLoss`. It owns
the input normalisation (statistics fitted on the training samples by the data module, stored as
buffers so checkpoints and exported models carry them), logs ``train/loss``, ``val/loss``,
``val/top1``, ``val/top5``, ``test/top1``, ``test/top5`` (k-way with ``k = min(eval_way, n)``: 200-way
for THINGS), and per-subject test numbers in joint protocols.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import lightning as L
import numpy as np
import torch
from torch import nn

from neurodecode.training.targets import LayerMix, ensure_view_embeddings
from neurodecode.training.ubp import UncertaintyBlur
from neurodecode.utils import check_option

OptimizerCallable = Callable[[Iterable], torch.optim.Optimizer]

SCHEDULERS = ("cosine", "constant")


class AlignmentModule(L.LightningModule):
    """Align brain responses with teacher embeddings.

    Parameters
    ----------
    encoder : nn.Module
        A brain encoder with ``forward(x, subject=None)`` (and optionally ``forward_heads`` for
        separate contrastive/regression heads).
    loss : nn.Module | None
        Called as ``loss(brain, image, text) -> (total, parts)``; default: CLIP loss
        (:class:`~neurodecode.losses.AlignmentLoss` with a learnable temperature).
    lr : float
        Peak learning rate (of the default AdamW; ignored when ``optimizer`` sets its own).
    weight_decay : float
        Weight decay of the default AdamW (biases, norms, subject/token embeddings and the
        temperature get none, whichever optimizer is used).
    betas : tuple of float
        Betas of the default AdamW.
    optimizer : callable | None
        Any ``torch.optim`` optimizer, from YAML as LightningCLI's dependency injection
        (``optimizer: {class_path: torch.optim.SGD, init_args: {lr: 0.01, momentum: 0.9}}``); it
        receives the two parameter groups (with and without weight decay). ``None``: AdamW with
        ``lr``, ``weight_decay`` and ``betas``.
    scheduler : str
        ``"cosine"`` (torch's ``LinearLR`` warm-up, then ``CosineAnnealingLR`` down to
        ``min_lr_ratio`` times the peak over the run, chained by ``SequentialLR``) or
        ``"constant"`` (after the same warm-up).
    warmup_epochs : float
        Warm-up length in epochs (fractions allowed).
    min_lr_ratio : float
        Final learning rate as a fraction of ``lr`` (cosine).
    n_chans, n_voxels : int | None
        Input size (linked from the data): length of the normalisation statistics.
    eval_way : int
        k of the k-way retrieval logged as ``top1``/``top5`` (capped at the number of candidates).
    compile : bool
        ``torch.compile`` the encoder (in place; state-dict keys unchanged).
    reseed_each_step : bool
        Reseed the global RNG from ``(seed, global step, rank)`` before every training step, so that
        dropout masks and other randomness do not depend on whether the run was interrupted and
        resumed (Lightning checkpoints do not hold RNG states, and data loaders draw from the global
        RNG when their iterators are made).
    seed : int
        Base of that reseeding (the CLI links ``seed_everything`` here).
    augment : nn.Module | None
        Brain-side augmentation of training batches (e.g.
        :class:`~neurodecode.training.augment.BrainAugment`), called on normalised inputs as
        ``augment(x, labels)``; validation and test are never augmented.
    positives : str
        What the labels of the batch are (for ``AlignmentLoss(contrastive="multipos")`` and same-label
        mixing): ``"image"`` (trials of one image) or ``"concept"`` (trials of one concept).
    mix_per_subject : bool
        With a data module whose ``fusion`` is ``"mix"``: learn one layer weighting per subject
        (:class:`~neurodecode.training.targets.LayerMix`) instead of one for all.
    image_views : int
        Image-side augmentation: embed this many augmented views of every stimulus once (cached,
        :func:`~neurodecode.training.targets.ensure_view_embeddings`); each training sample's target
        is then drawn at each step among the sharp embedding and its views. Needs one sharp teacher
        layer (no ``data.layers``/``data.blur``). 0: off.
    view_seed : int
        Seed of the views (part of their cache key).
    """

    def __init__(
        self,
        encoder: nn.Module,
        loss: nn.Module | None = None,
        lr: float = 3e-4,
        weight_decay: float = 0.01,
        betas: tuple[float, float] = (0.9, 0.999),
        optimizer: OptimizerCallable | None = None,
        scheduler: str = "cosine",
        warmup_epochs: float = 0.0,
        min_lr_ratio: float = 0.0,
        n_chans: int | None = None,
        n_voxels: int | None = None,
        eval_way: int = 200,
        compile: bool = False,
        reseed_each_step: bool = True,
        seed: int = 0,
        augment: nn.Module | None = None,
        positives: str = "image",
        mix_per_subject: bool = False,
        image_views: int = 0,
        view_seed: int = 0,
    ) -> None:
        super().__init__()
        check_option("scheduler", scheduler, SCHEDULERS)
        check_option("positives", positives, ("image", "concept"))
        # the optimizer factory is code, not data: checkpoints stay loadable with weights_only=True
        self.save_hyperparameters(ignore=["encoder", "loss", "optimizer", "augment"])
        self.augment = augment
        if augment is not None and hasattr(augment, "get_config"):
            self.hparams["augment_config"] = augment.get_config()
        self.target_mixer: nn.Module | None = None
        self.target_blur: nn.Module | None = None  # UBP's per-sample blur levels (data.blur: ubp)
        self.optimizer_factory = optimizer
        if hasattr(encoder, "get_config"):
            # lets a checkpoint rebuild its encoder without the YAML (see load_alignment_checkpoint)
            self.hparams["encoder_config"] = encoder.get_config()
        self.encoder = encoder
        if loss is None:
            from neurodecode.losses import AlignmentLoss

            loss = AlignmentLoss()
        self.loss = loss
        size = n_voxels if n_voxels is not None else n_chans
        if size is None:
            size = getattr(encoder, "n_voxels", None) or getattr(encoder, "n_chans", None)
        if size is None:
            raise ValueError("AlignmentModule needs n_chans (EEG/MEG) or n_voxels (fMRI) for its input statistics; "
                             "they are linked from the data module by the command line.")
        self.timeseries = n_voxels is None
        self.register_buffer("input_mean", torch.zeros(int(size)))
        self.register_buffer("input_std", torch.ones(int(size)))
        self.register_buffer("stats_fitted", torch.tensor(False))
        self._metrics: dict[str, dict[int, Any]] = {}
        self.test_results: dict[str, Any] = {}

    # -- set-up -------------------------------------------------------------------------------
    def _view_specs(self, dm: Any) -> list[str]:
        """Embed the augmented views the cache lacks (``image_views``) and return their specs."""
        hp, dhp = self.hparams, dm.hparams
        if getattr(dm, "target_layers", [dhp.layer]) != [dhp.layer] or getattr(dm, "target_spec", dhp.teacher) != dhp.teacher:
            raise ValueError("image_views augments the targets of one sharp teacher layer; drop data.layers and "
                             "data.blur, or set image_views: 0.")
        return ensure_view_embeddings(dm.dataset.stimuli, dhp.teacher, dhp.cache or dm.root / "embeddings.h5",
                                      hp.image_views, [dhp.layer], seed=hp.view_seed,
                                      batch_size=dhp.embed_batch_size, device=dhp.embed_device)

    def prepare_data(self) -> None:
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if self.hparams.image_views > 0 and dm is not None:
            self._view_specs(dm)  # one process embeds; the others read the cache in setup

    def setup(self, stage: str) -> None:
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if not bool(self.stats_fitted) and dm is not None and hasattr(dm, "input_stats"):
            stats = dm.input_stats()
            self.set_input_stats(stats["mean"], stats["std"])
        if dm is not None and hasattr(dm, "describe"):
            # what the model was trained on travels with the checkpoint (evaluate, export)
            self.hparams["data"] = dm.describe()
        if dm is not None and getattr(dm, "n_target_layers", 1) > 1 and self.target_mixer is None:
            # built before the optimizer and before a checkpoint's weights are restored
            self.target_mixer = LayerMix(dm.n_target_layers, dm.embed_dim, dm.n_subjects,
                                         per_subject=self.hparams.mix_per_subject)
        if dm is not None and getattr(dm, "ubp", None) is not None and self.target_blur is None:
            dm.setup("fit")  # one state entry per training sample; built in any stage, so checkpoints load
            self.target_blur = UncertaintyBlur(dm.blur_levels, len(dm.sets["train"]), dm.ubp.momentum, dm.ubp.alpha)
        if self.hparams.image_views > 0 and dm is not None and stage == "fit" and not hasattr(self, "target_views"):
            from neurodecode.teachers.cache import EmbeddingCache

            cache = EmbeddingCache(dm.hparams.cache or dm.root / "embeddings.h5")
            ids = dm.dataset.stimuli.stimulus_id.tolist()
            views = [dm.image_embeddings] + [cache.get(spec, dm.hparams.layer, ids=ids) for spec in self._view_specs(dm)]
            self.register_buffer("target_views", torch.as_tensor(np.stack(views), dtype=torch.float32),
                                 persistent=False)
        if dm is not None and hasattr(dm, "dataset") and not hasattr(self, "stim_concept"):
            codes = np.unique(np.asarray(dm.dataset.stimuli.concept), return_inverse=True)[1]
            self.register_buffer("stim_concept", torch.as_tensor(codes, dtype=torch.int64), persistent=False)
        if self.hparams.compile and stage == "fit":
            self.encoder.compile()

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self.target_mixer is not None:  # the learned layer weights go with the data (evaluate, export)
            hp = checkpoint.setdefault("hyper_parameters", {})
            hp["data"] = {**hp.get("data", {}), "mix_weights": self.target_mixer.table().tolist()}

    def set_input_stats(self, mean: Any, std: Any) -> None:
        """Set the normalisation (per channel or voxel) applied before the encoder."""
        mean = torch.as_tensor(np.asarray(mean), dtype=torch.float32).reshape(-1)
        std = torch.as_tensor(np.asarray(std), dtype=torch.float32).reshape(-1)
        if mean.shape != self.input_mean.shape or std.shape != self.input_std.shape:
            raise ValueError(f"input statistics of length {mean.numel()} do not match the model's input size "
                             f"{self.input_mean.numel()}.")
        if not torch.all(std > 0):
            raise ValueError("input standard deviations must be positive.")
        self.input_mean.copy_(mean)
        self.input_std.copy_(std)
        self.stats_fitted.fill_(True)

    # -- forward ------------------------------------------------------------------------------
    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the input normalisation."""
        if self.timeseries:
            return (x - self.input_mean[:, None]) / self.input_std[:, None]
        return (x - self.input_mean) / self.input_std

    def _encode(self, x: torch.Tensor, subject: torch.Tensor | None, heads: bool = False,
                augment_labels: torch.Tensor | None = None):
        x = self.normalize(x)
        if augment_labels is not None and self.augment is not None:
            x = self.augment(x, augment_labels)
        fn = self.encoder.forward_heads if heads and hasattr(self.encoder, "forward_heads") else self.encoder
        if subject is None or bool((subject < 0).all()):
            return fn(x, None)
        if bool((subject >= 0).all()):
            return fn(x, subject)
        raise ValueError("a batch mixes subjects seen in training with unseen ones (subject -1); "
                         "evaluate them separately.")

    def forward(self, x: torch.Tensor, subject: torch.Tensor | None = None) -> torch.Tensor:
        """Brain embedding of raw (un-normalised) responses ``x``."""
        out = self._encode(x, subject)
        return out["contrastive"] if isinstance(out, dict) else out

    # -- training -----------------------------------------------------------------------------
    @property
    def closed_form(self) -> bool:
        """True for encoders fitted in closed form (e.g. :class:`~neurodecode.encoders.Ridge`), not by SGD."""
        return bool(getattr(self.encoder, "closed_form", False))

    def on_fit_start(self) -> None:
        if not self.closed_form:
            return
        # one exact solve on every training sample; the training loop then has nothing left to do
        ts = self.trainer.datamodule.sets["train"]
        x = torch.as_tensor(ts.data if ts.data is not None else np.stack([ts.signals(i) for i in range(len(ts))]))
        x = self.normalize(x.to(self.input_mean.device))
        y = torch.as_tensor(ts.targets[ts.stim_rows])
        self.encoder.fit(x, y)

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        if self.hparams.reseed_each_step:
            rank = self.trainer.global_rank if self._trainer is not None else 0
            torch.manual_seed((int(self.hparams.seed) * 1_000_003 + self.global_step) * 1024 + rank)

    def labels(self, batch: dict[str, torch.Tensor], by: str) -> torch.Tensor:
        """Per-row labels: the stimulus row (``"image"``) or its concept's code (``"concept"``)."""
        if by == "image":
            return batch["stim"]
        if not hasattr(self, "stim_concept"):
            raise ValueError("labels by concept need the data module's stimulus table (fit with a data module).")
        return self.stim_concept[batch["stim"]]

    def target(self, batch: dict[str, torch.Tensor], train: bool = False) -> torch.Tensor:
        """The batch's targets: the teacher embeddings, their learned layer mix (fused targets), or in
        training with ``image_views`` a random view per sample, with ``data.blur: ubp`` its UBP blur level."""
        if train and hasattr(self, "target_views"):
            view = torch.randint(0, len(self.target_views), (len(batch["stim"]),), device=self.target_views.device)
            return self.target_views[view, batch["stim"]]
        if train and self.target_blur is not None:
            return self.target_blur(batch["stim"], batch["index"])
        return batch["target"] if self.target_mixer is None else self.target_mixer(batch["target"], batch["subject"])

    def _loss(self, batch: dict[str, torch.Tensor], train: bool = False):
        aug = None
        if train and self.augment is not None:
            aug = self.labels(batch, getattr(self.augment, "mix_by", self.hparams.positives))
        brain = self._encode(batch["x"], batch["subject"], heads=True, augment_labels=aug)
        target = self.target(batch, train=train)
        if getattr(self.loss, "uses_batch_info", False):
            total, parts = self.loss(brain, target, batch.get("text"),
                                     labels=self.labels(batch, self.hparams.positives), subject=batch["subject"])
        else:
            total, parts = self.loss(brain, target, batch.get("text"))
        if train and self.target_blur is not None:  # UBP: each sample's next blur, by this step's match
            ddp = self._trainer is not None and self.trainer.world_size > 1
            gather = (lambda t: self.all_gather(t).flatten(0, 1)) if ddp else None
            emb = brain["contrastive"] if isinstance(brain, dict) else brain
            level = self.target_blur.step(emb, target, batch["index"], gather)
            parts = {**parts, "ubp_strong": (level == 2).float().mean()}  # share of strong blurs next time
        return brain, total, parts

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor | None:
        if self.closed_form:
            return None  # fitted in on_fit_start
        _, total, parts = self._loss(batch, train=True)
        bs = len(batch["x"])
        self.log("train/loss", total, prog_bar=True, on_step=True, on_epoch=True, batch_size=bs, sync_dist=False)
        for k, v in parts.items():
            self.log(f"train/{k}", v, on_step=False, on_epoch=True, batch_size=bs)
        return total

    def _eval_step(self, batch: dict[str, torch.Tensor], stage: str) -> None:
        brain, total, _ = self._loss(batch)
        target = self.target(batch)
        emb = brain["contrastive"] if isinstance(brain, dict) else brain
        self.log(f"{stage}/loss", total, on_epoch=True, batch_size=len(batch["x"]), sync_dist=True,
                 prog_bar=stage == "val")
        if getattr(self.trainer, "sanity_checking", False):
            return
        for s, metric in self._metrics.get(stage, {}).items():
            m = batch["subject"] == s
            if bool(m.any()):
                metric.update(emb[m].detach().float(), target[m].detach().float(), ids=batch["index"][m],
                              targets=batch["stim"][m])

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._eval_step(batch, "test")

    def predict_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> dict[str, torch.Tensor]:
        return {"embedding": self(batch["x"], batch["subject"]), "stim": batch["stim"], "subject": batch["subject"]}

    # -- retrieval metrics (neurodecode's ZeroShotRetrieval: gathered across ranks, padding dropped) ------
    def _start_metrics(self, stage: str) -> None:
        """One :class:`~neurodecode.evaluation.retrieval.ZeroShotRetrieval` per subject of the stage's set.

        k of the k-way numbers is ``min(eval_way, n)`` with ``n`` that subject's number of distinct
        stimuli, known from the data module before the epoch, so every rank builds the same metrics.
        """
        from neurodecode.evaluation.retrieval_metric import ZeroShotRetrieval

        self._metrics[stage] = {}
        dm = getattr(self.trainer, "datamodule", None)
        sets = getattr(dm, "sets", {})
        which = "test" if stage == "test" else "val"
        if which not in sets or getattr(self.trainer, "sanity_checking", False):
            return
        ts = sets[which]
        for s in np.unique(ts.subjects):
            n = len(np.unique(ts.stim_rows[ts.subjects == s]))
            if n < 2:
                continue
            k = min(int(self.hparams.eval_way), n)
            tops = [t for t in (1, 5) if t <= k]
            metric = ZeroShotRetrieval(ks=[k], tops=tops, full=False, directions=("brain_to_image",),
                                       dist_sync_on_step=False)
            metric.k = k
            self._metrics[stage][int(s)] = metric.to(self.device)

    def _epoch_end(self, stage: str) -> None:
        metrics = self._metrics.pop(stage, {})
        if not metrics:
            return
        per_subject = {}
        for s, metric in metrics.items():
            k = metric.k
            if not metric.update_count:  # this rank saw none of the subject's rows: still join the gather
                empty = torch.zeros(0, self.trainer.datamodule.embed_dim, device=self.device)
                idx = torch.zeros(0, dtype=torch.int64, device=self.device)
                metric.update(empty, empty, ids=idx, targets=idx)
            flat = metric.compute()
            per_subject[s] = {f"top{t}": float(flat[f"brain_to_image/top{t}_{k}way"])
                              for t in (1, 5) if f"brain_to_image/top{t}_{k}way" in flat}
            per_subject[s]["k"] = k
        keys = [k for k in ("top1", "top5") if all(k in v for v in per_subject.values())]
        for key in keys:
            self.log(f"{stage}/{key}", float(np.mean([v[key] for v in per_subject.values()])), sync_dist=False,
                     rank_zero_only=False, prog_bar=stage == "val" and key == "top1")
        if stage == "test":
            dm = self.trainer.datamodule
            label = {i: s for s, i in getattr(dm, "subject_index", {}).items()}
            if getattr(dm, "hparams", {}).get("protocol") == "loso":
                label[-1] = dm.subject
            named = {label.get(s, str(s)): v for s, v in per_subject.items()}
            if len(named) > 1:
                for name, v in named.items():
                    for key in keys:
                        self.log(f"test/sub-{name}/{key}", v[key], sync_dist=False)
            self.test_results = {"per_subject": named,
                                 "mean": {k: float(np.mean([v[k] for v in per_subject.values()])) for k in keys},
                                 "k": int(next(iter(per_subject.values())).get("k", 0))}

    def on_validation_epoch_start(self) -> None:
        self._start_metrics("val")

    def on_test_epoch_start(self) -> None:
        self._start_metrics("test")

    def on_validation_epoch_end(self) -> None:
        self._epoch_end("val")

    def on_test_epoch_end(self) -> None:
        self._epoch_end("test")

    # -- optimisation -------------------------------------------------------------------------
    def configure_optimizers(self):
        hp = self.hparams
        decay, no_decay = [], []
        for name, p in self.named_parameters():
            if not p.requires_grad:
                continue
            # no weight decay on biases, norms, embeddings of subjects/tokens and the temperature
            (no_decay if p.ndim < 2 or "logit_scale" in name or "token" in name else decay).append(p)
        if self.optimizer_factory is None:
            opt = torch.optim.AdamW([{"params": decay, "weight_decay": hp.weight_decay},
                                     {"params": no_decay, "weight_decay": 0.0}], lr=hp.lr, betas=tuple(hp.betas))
        else:
            opt = self.optimizer_factory([{"params": decay}, {"params": no_decay, "weight_decay": 0.0}])
        total = max(1, int(self.trainer.estimated_stepping_batches))
        max_epochs = max(1, self.trainer.max_epochs or 1)
        warmup = int(round(hp.warmup_epochs * total / max_epochs))
        sched = lr_schedule(opt, hp.scheduler, warmup=warmup, total=total, min_lr_ratio=hp.min_lr_ratio)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def lr_schedule(optimizer: torch.optim.Optimizer, kind: str = "cosine", *, warmup: int = 0, total: int = 1,
                min_lr_ratio: float = 0.0) -> torch.optim.lr_scheduler.LRScheduler:
    """Linear warm-up then cosine decay (or a constant rate), from torch's schedulers, stepped per batch.

    Parameters
    ----------
    optimizer : torch.optim.Optimizer
        The optimizer; its learning rates are the peaks.
    kind : str
        ``"cosine"`` or ``"constant"``.
    warmup : int
        Warm-up steps: the rate rises linearly, ``(step + 1) / warmup`` of the peak (``LinearLR``).
    total : int
        Steps of the whole run; the cosine reaches ``min_lr_ratio`` of the peak at ``total``.
    min_lr_ratio : float
        Final rate of the cosine as a fraction of the peak.

    Returns
    -------
    scheduler : torch.optim.lr_scheduler.LRScheduler
        ``SequentialLR(LinearLR, CosineAnnealingLR | ConstantLR)``, or the second alone without warm-up.
    """
    from torch.optim import lr_scheduler as S

    check_option("scheduler", kind, SCHEDULERS)
    peak = optimizer.param_groups[0]["lr"]
    if kind == "cosine":
        after = S.CosineAnnealingLR(optimizer, T_max=max(1, total - warmup), eta_min=min_lr_ratio * peak)
    else:
        after = S.ConstantLR(optimizer, factor=1.0, total_iters=0)
    if warmup <= 1:
        return after
    ramp = S.LinearLR(optimizer, start_factor=1.0 / warmup, end_factor=1.0, total_iters=warmup - 1)
    return S.SequentialLR(optimizer, [ramp, after], milestones=[warmup])


def load_checkpoint_dict(path: str | Any) -> dict[str, Any]:
    """Read a Lightning checkpoint without unpickling arbitrary objects (``weights_only=True``)."""
    from lightning.fabric.utilities.data import AttributeDict

    torch.serialization.add_safe_globals([AttributeDict])
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise FileNotFoundError(f"checkpoint {path} not found.") from None
    except Exception as err:  # corrupt file or a disallowed type
        raise ValueError(f"{path}: cannot be read as a neurodecode checkpoint with weights_only=True ({err}). "
                         "Only checkpoints written by 'neurodecode fit' are supported.") from None


def load_alignment_checkpoint(path: str | Any) -> tuple[AlignmentModule, dict[str, Any]]:
    """Rebuild an :class:`AlignmentModule` (encoder, input statistics) from a checkpoint.

    Returns
    -------
    module : AlignmentModule
        In eval mode, on CPU; its loss is the default one (only the encoder is restored).
    ckpt : dict
        The checkpoint dict (``hyper_parameters``, ``datamodule_hyper_parameters``...).
    """
    from neurodecode.encoders.base import BrainEncoder

    ckpt = load_checkpoint_dict(path)
    hp = dict(ckpt.get("hyper_parameters", {}))
    cfg = hp.pop("encoder_config", None)
    if cfg is None:
        raise ValueError(f"{path}: the checkpoint has no encoder_config; it was not written by neurodecode's "
                         "AlignmentModule.")
    encoder = BrainEncoder.from_config(cfg)
    allowed = {k: hp[k] for k in ("lr", "weight_decay", "scheduler", "warmup_epochs", "min_lr_ratio", "n_chans",
                                   "n_voxels", "eval_way", "seed") if k in hp}
    module = AlignmentModule(encoder, **allowed)
    # the loss, a learned layer mix (targets.LayerMix) and UBP's blur state are training-time parts
    state = {k: v for k, v in ckpt["state_dict"].items() if not k.startswith(("loss.", "target_mixer.", "target_blur."))}
    missing, unexpected = module.load_state_dict(state, strict=False)
    missing = [m for m in missing if not m.startswith("loss.")]
    if missing or unexpected:
        raise ValueError(f"{path}: checkpoint does not match its encoder config (missing {missing[:5]}, "
                         f"unexpected {unexpected[:5]}).")
    return module.eval(), ckpt
