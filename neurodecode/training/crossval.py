"""Trial-level cross-validation of alignment models, with a linear baseline on the same folds.

Data sets with few categories and many trials (the N170 faces/houses recordings: 2 categories, about
1100 trials per subject) cannot be split by concept, as :mod:`neurodecode.training.data` does for THINGS: there
would be no concept left to train on. :func:`crossval_alignment` cross-validates over *trials* instead:

1. the trials are split into ``n_splits`` folds, stratified by category (or grouped, e.g. by session
   or run, when ``groups`` is given, so that no group is in both the training and the test part);
2. in each fold the input normalisation (per channel mean and standard deviation) is fitted on the
   training trials only; a stratified inner split of the *training* trials (``val_fraction``) is
   held out for early stopping and model selection, so the test fold is never used to choose
   anything;
3. an :class:`~neurodecode.training.lit.AlignmentModule` (encoder + :class:`~neurodecode.losses.AlignmentLoss`)
   is trained with a plain ``lightning.Trainer`` on CPU (no logger, no checkpoint files, seeded); the
   weights of the epoch with the best validation score are kept (in memory);
4. the test trials are embedded and each is scored by the cosine similarity of its brain embedding
   to every category's teacher embedding; with two categories the decision score is
   ``cos(b, t_pos) - cos(b, t_neg)`` (ROC AUC) and the predicted category is the most similar one
   (accuracy).

:func:`crossval_logistic` is the plain linear baseline on the *same folds*: standardisation and an
L2 logistic regression (liblinear) on the flattened epoch, ``C`` fixed or chosen by an inner
cross-validation of each training part. :func:`make_folds` makes the folds both use.

Both return a :class:`CrossvalResult`: per-fold ROC AUC and accuracy, their mean +- sd over folds, the
ROC AUC of the pooled out-of-fold scores, and the out-of-fold scores themselves.
"""

from __future__ import annotations

import contextlib
import functools
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from neurodecode.training.folds import (
    CrossvalResult,
    as_labels,
    cosine_similarities,
    crossval_logistic,
    fold_metrics,
    inner_split,
    make_folds,
    summarise_folds,
)
from neurodecode.training.trials import Trials, load_trials
from neurodecode.utils import check_option, logger, progress, quiet_loggers, use_log_level

__all__ = [
    "CrossvalResult",
    "make_folds",
    "inner_split",
    "cosine_similarities",
    "fold_metrics",
    "crossval_alignment",
    "crossval_logistic",
    "DEFAULT_LOSS",
    "Trials",
    "load_trials",
]

#: The default loss for few-category data (see :func:`crossval_alignment`, Notes).
DEFAULT_LOSS: dict[str, Any] = {"contrastive": "softclip", "regression": "cosine", "contrastive_weight": 0.75}
SELECT = ("auc", "loss")


def _quiet_lightning() -> contextlib.AbstractContextManager:
    """Silence Lightning's start-up chatter and its data-loader-worker advice for the inner fits."""
    stack = contextlib.ExitStack()
    stack.enter_context(quiet_loggers(("lightning.pytorch", "lightning.fabric", "lightning")))
    stack.enter_context(warnings.catch_warnings())
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*number of training batches.*")
    warnings.filterwarnings("ignore", message=".*GPU available.*")
    warnings.filterwarnings("ignore", message=".*no `val_dataloader`.*")  # validation is SelectBest's job
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")  # a deprecation inside Lightning itself
    return stack


@functools.lru_cache(maxsize=1)
def _lightning_parts() -> tuple[type, type]:
    """The Dataset and Callback classes (built on demand: torch and lightning load only when used)."""
    import lightning as L
    import torch

    class TrialBatches(torch.utils.data.Dataset):
        """Whole batches by index lists, in the dict form :class:`AlignmentModule` reads."""

        def __init__(self, x: torch.Tensor, rows: torch.Tensor, targets: torch.Tensor) -> None:
            self.x, self.rows, self.targets = x, rows, targets

        def __len__(self) -> int:
            return len(self.x)

        def __getitem__(self, idx: list[int]) -> dict[str, torch.Tensor]:
            i = torch.as_tensor(idx, dtype=torch.long)
            r = self.rows[i]
            return {"x": self.x[i], "target": self.targets[r], "stim": r,
                    "subject": torch.zeros(len(i), dtype=torch.long)}

    class SelectBest(L.Callback):
        """Score the validation trials after every training epoch; keep the best weights in memory."""

        def __init__(self, x_val: torch.Tensor, rows_val: np.ndarray, targets: torch.Tensor, select: str) -> None:
            self.x_val, self.rows_val, self.targets, self.select = x_val, rows_val, targets, select
            self.best: float = -np.inf
            self.best_epoch = -1
            self.best_state: dict[str, torch.Tensor] | None = None
            self.history: list[dict[str, float]] = []

        @torch.no_grad()
        def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
            was_training = pl_module.training
            pl_module.eval()
            emb = pl_module(self.x_val)
            loss = float(pl_module.loss(emb, self.targets[torch.as_tensor(self.rows_val)])[0])
            pl_module.train(was_training)
            m = fold_metrics(self.rows_val, cosine_similarities(emb.double().numpy(), self.targets.double().numpy()))
            value = m["roc_auc"] if self.select == "auc" else -loss
            self.history.append({"epoch": trainer.current_epoch, "val_loss": loss, "val_auc": m["roc_auc"],
                                 "val_accuracy": m["accuracy"]})
            pl_module.log("val/select", value, on_epoch=True, prog_bar=True)
            if value > self.best:
                self.best, self.best_epoch = value, trainer.current_epoch
                self.best_state = {k: v.detach().clone() for k, v in pl_module.state_dict().items()}

    return TrialBatches, SelectBest


def crossval_alignment(
    x: Any,
    stimulus_rows: Any,
    targets: Any,
    *,
    encoder: str | Callable[..., Any] = "eegnet",
    encoder_kwargs: Mapping[str, Any] | None = None,
    loss_kwargs: Mapping[str, Any] | None = None,
    n_splits: int = 5,
    groups: Any = None,
    folds: Sequence[tuple[np.ndarray, np.ndarray]] | None = None,
    seed: int = 0,
    max_epochs: int = 60,
    patience: int | None = 20,
    batch_size: int = 64,
    lr: float = 1e-3,
    weight_decay: float = 0.01,
    scheduler: str = "cosine",
    val_fraction: float = 0.15,
    select: str = "auc",
    n_models: int = 1,
    sfreq: float | None = None,
    chs_info: Any = None,
    positive: int = 0,
    n_jobs: int = 1,
    n_threads: int | None = None,
    progress_bar: bool = True,
    verbose: bool | str | int | None = None,
) -> CrossvalResult:
    """Cross-validate an alignment model over trials and score it as a category decoder.

    Parameters
    ----------
    x : array-like, shape (n_trials, n_chans, n_times) or (n_trials, n_voxels)
        Brain responses (raw units: the normalisation is fitted per fold on training trials).
    stimulus_rows : array-like of int, shape (n_trials,)
        Row of ``targets`` that each trial saw (its category).
    targets : array-like, shape (n_targets, dim)
        Teacher embedding of every category (e.g. the mean ``efficientnet-lite0`` embedding of the
        category's images). These are the regression/contrastive targets and the candidates
        each test trial is compared with.
    encoder : str | callable
        A registry name (``"eegnet"``, ``"shallow"``, ``"mlp"``, ``"ridge"``... see
        :func:`neurodecode.encoders.list_encoders`) or a callable taking the encoder contract's
        keyword arguments (``n_chans, n_times, n_outputs, sfreq, chs_info`` or ``n_voxels,
        n_outputs``) plus ``encoder_kwargs`` and returning an ``nn.Module`` whose ``forward(x,
        subject=None)`` gives ``(batch, dim)`` embeddings. Closed-form encoders
        (``closed_form = True``, e.g. :class:`~neurodecode.encoders.Ridge`) are fitted once on
        all training trials of the fold (their penalty is chosen by their own internal
        cross-validation) instead of being trained by gradient descent.
    encoder_kwargs : mapping | None
        Architecture options for the encoder.
    loss_kwargs : mapping | None
        Arguments of :class:`~neurodecode.losses.AlignmentLoss`; default :data:`DEFAULT_LOSS`
        (SoftCLIP + cosine regression, weight 0.75 on SoftCLIP; see Notes).
    n_splits, groups, seed
        Folds (see :func:`make_folds`); ``seed`` also seeds the inner split, the weights, the
        batch order and dropout of each model (model ``m`` of fold ``k`` uses ``seed + 1000 * k + m``), so
        results do not depend on ``n_jobs``.
    folds : list of (train, test) | None
        Precomputed folds (overrides ``n_splits``/``groups``), e.g. to share them with
        :func:`crossval_logistic`.
    max_epochs : int
        Training epochs at most.
    patience : int | None
        Stop after this many epochs without a better validation score (``None``: never).
    batch_size : int
        Training batch size (the last incomplete batch is dropped when the training part is
        larger than one batch; batch norm and contrastive losses dislike tiny batches).
    lr, weight_decay, scheduler
        AdamW learning rate and weight decay; ``"cosine"`` (decay over ``max_epochs``) or
        ``"constant"``; see :class:`~neurodecode.training.lit.AlignmentModule`.
    val_fraction : float
        Share of each fold's training trials held out for early stopping and for choosing the
        epoch whose weights are kept (:func:`inner_split`; grouped when ``groups`` is given).
    select : {"auc", "loss"}
        What the validation trials choose the epoch by: the ROC AUC of their similarity scores
        (the quantity reported; mean one-vs-rest AUC with more than two targets) or the
        alignment loss.
    n_models : int
        Models trained per fold with different seeds (and inner splits); their test similarities
        are averaged (a small ensemble that reduces the variance of training on ~1000 trials).
    sfreq, chs_info
        Passed to the encoder (kernel sizes scale with ``sfreq``).
    positive : int
        Target row whose decision score ``cos(b, t_positive) - cos(b, t_other)`` is stored in
        :attr:`CrossvalResult.decision` (two targets).
    n_jobs : int
        Fits run in parallel in this many worker processes (joblib, ``loky``); each fit is
        independent and seeded, so the result is the same as with ``n_jobs=1``.
    n_threads : int | None
        Torch intra-op threads of each fit (restored afterwards). ``None``: left alone with
        ``n_jobs=1``, 1 per worker otherwise. These models are small: on a busy machine one thread
        can be many times faster than oversubscribed cores.
    progress_bar : bool
        Show a progress bar over the fits (folds x models) with the test ROC AUC of each fold as it
        finishes and the running mean (default; ``NEURODECODE_NO_PROGRESS=1`` also hides it).
    verbose : bool | str | int | None
        Log level for this call (MNE-style).

    Returns
    -------
    result : CrossvalResult
        ``scores`` are the cosine similarities of each trial's out-of-fold brain embedding to each
        target; ``folds`` also hold ``best_epoch``, ``epochs``, ``val_score`` and the per-epoch
        validation ``history`` of every model.

    Notes
    -----
    **Which loss for a handful of targets.** With two categories about half of any batch shares
    each target embedding, so a contrastive batch holds many exact duplicate targets. For plain
    CLIP (InfoNCE, one positive per row) that looks wrong, but the duplicates make their logits
    identical: the cross-entropy against the one-hot label equals the cross-entropy against a label
    spread evenly over the duplicates, in value and in gradient (``tests/test_crossval.py`` checks
    this). SoftCLIP (soft targets ``softmax(s cos(t_i, t_j))``) spreads the label over the
    duplicates by construction, plus a leak of weight ``exp(-s (1 - cos(t_a, t_b)))`` onto the other
    category: about ``exp(-10)`` for ``efficientnet-lite0`` faces vs houses (cosine 0.24) at the
    learned scale ``s ~ 13`` (it stays near its initial 1 / 0.07 here). So both contrastive losses
    reduce to the same thing: a temperature-scaled softmax over the cosine similarities of a
    trial's embedding to the category embeddings, i.e. exactly the decision rule scored here. The
    SoftCLIP form is kept because it stays correct when targets are merely similar (image-level
    targets within a category) and does not rely on the duplicates being exact. Cosine regression
    alone pulls each embedding towards its target but spends much of its effort on the direction
    the two targets share, which carries no category information; as a small extra term (weight
    0.25, as in Benchetrit et al. 2023) it keeps the embeddings in the teacher's space (useful for
    retrieval and reconstruction). Hence the default ``softclip + 0.25 cosine``. On the N170 data
    (EEGNet, one 5-fold split) the three choices were within noise of each other: mixture 0.718,
    SoftCLIP alone 0.706 (CLIP: identical), cosine alone 0.698 ROC AUC; the fold-to-fold sd is
    about 0.05. Any :class:`~neurodecode.losses.AlignmentLoss` can be given through ``loss_kwargs``.

    **Honesty of the estimate.** The test fold is used once, after training, to compute the
    reported numbers: the normalisation statistics, the epoch kept and early stopping come from
    the training part of the fold only.
    """
    t0 = time.perf_counter()
    check_option("select", select, SELECT)
    check_option("scheduler", scheduler, ("cosine", "constant"))
    for what, value, low in (("n_models", n_models, 1), ("n_jobs", n_jobs, 1), ("max_epochs", max_epochs, 1),
                             ("batch_size", batch_size, 1)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise ValueError(f"{what} must be an integer >= {low}, got {value!r}.")
    if n_threads is not None and (isinstance(n_threads, bool) or not isinstance(n_threads, (int, np.integer))
                                  or n_threads < 1):
        raise ValueError(f"n_threads must be a positive integer or None, got {n_threads!r}.")
    if patience is not None and (isinstance(patience, bool) or not isinstance(patience, (int, np.integer))
                                 or patience < 1):
        raise ValueError(f"patience must be a positive integer or None, got {patience!r}.")
    with use_log_level(verbose):
        X = np.ascontiguousarray(np.asarray(x, dtype=np.float32))
        if X.ndim not in (2, 3):
            raise ValueError(f"x must be (n_trials, n_chans, n_times) or (n_trials, n_voxels), got shape {X.shape}.")
        if not np.all(np.isfinite(X)):
            raise ValueError("x holds NaN or Inf values; clean the trials first.")
        y = as_labels(stimulus_rows, X.shape[0])
        T = np.asarray(targets, dtype=np.float32)
        if T.ndim != 2:
            raise ValueError(f"targets must be (n_targets, dim), got shape {T.shape}.")
        if y.max() >= T.shape[0]:
            raise ValueError(f"stimulus_rows reaches {int(y.max())} but targets has only {T.shape[0]} rows.")
        if not np.all(np.isfinite(T)):
            raise ValueError("targets hold NaN or Inf values.")
        _check_encoder(encoder, X.shape[1:])
        if folds is None:
            folds = make_folds(y, n_splits, groups=groups, seed=seed)
        g = None if groups is None else np.asarray(groups)
        settings = {"encoder": encoder, "encoder_kwargs": dict(encoder_kwargs or {}),
                    "loss_kwargs": dict(DEFAULT_LOSS if loss_kwargs is None else loss_kwargs),
                    "sfreq": sfreq, "chs_info": chs_info, "max_epochs": int(max_epochs), "patience": patience,
                    "batch_size": int(batch_size), "lr": float(lr), "weight_decay": float(weight_decay),
                    "scheduler": scheduler, "val_fraction": float(val_fraction), "select": select,
                    "n_threads": n_threads if n_jobs == 1 or n_threads is not None else 1}
        # one task per (fold, model); fold k, model m is seeded with seed + 1000 k + m
        tasks = [(k, m, tr, te) for k, (tr, te) in enumerate(folds) for m in range(int(n_models))]

        def run(task: tuple[int, int, np.ndarray, np.ndarray]) -> Any:
            k, m, tr, te = task
            return _fit_and_score(X[tr], y[tr], None if g is None else g[tr], X[te], T,
                                  int(seed) + 1000 * k + m, settings)

        if n_jobs == 1:
            results: Any = (run(t) for t in tasks)
        else:
            from joblib import Parallel, delayed

            # processes, one torch thread each by default: these models are too small for threads
            parallel = Parallel(n_jobs=int(n_jobs), backend="loky", return_as="generator")
            results = parallel(delayed(_fit_and_score)(
                X[tr], y[tr], None if g is None else g[tr], X[te], T, int(seed) + 1000 * k + m, settings)
                for k, m, tr, te in tasks)
        name = encoder if isinstance(encoder, str) else getattr(encoder, "__name__", type(encoder).__name__)
        outs = _collect(results, tasks, y, int(n_models), progress_bar, f"crossval {name}")

        n_targets = T.shape[0]
        scores = np.full((len(y), n_targets), np.nan)
        fold_of = np.full(len(y), -1, dtype=np.int64)
        rows = []
        for k, (tr, te) in enumerate(folds):
            mine = [out for (kk, _, _, _), out in zip(tasks, outs, strict=True) if kk == k]
            sims = np.mean([s for s, _ in mine], axis=0)
            records = [r for _, r in mine]
            scores[te], fold_of[te] = sims, k
            row = {"fold": k, "n_train": int(len(tr) - records[0]["n_val"]), "n_val": int(records[0]["n_val"]),
                   "n_test": int(len(te)), **fold_metrics(y[te], sims)}
            if len(records) == 1:
                row.update(records[0])
            else:
                row["models"] = records
            rows.append(row)
    config = {k: v for k, v in settings.items() if k not in ("encoder", "chs_info", "n_threads")}
    config["loss"] = config.pop("loss_kwargs")
    config.update(encoder=name, n_splits=len(folds), grouped=groups is not None, seed=int(seed),
                  n_models=int(n_models), n_jobs=int(n_jobs))
    return summarise_folds(f"alignment:{name}", rows, scores, y, fold_of, positive, config, t0)


def _collect(results: Any, tasks: Sequence[tuple[int, int, np.ndarray, np.ndarray]], y: np.ndarray, n_models: int,
             show: bool, desc: str) -> list[Any]:
    """Gather the fits' outputs in task order, with a bar over folds x models showing each fold's test AUC.

    A fold's AUC (of its models' mean similarities, as reported) appears once its last model is done,
    with the running mean over the folds finished so far.
    """
    bar = progress(None, enabled=show, total=len(tasks), desc=desc, unit="fit")
    outs: list[Any] = []
    done: list[float] = []
    try:
        for (k, m, _, te), out in zip(tasks, results, strict=True):
            outs.append(out)
            bar.update(1)
            if m == n_models - 1:
                sims = np.mean([o[0] for o in outs[-n_models:]], axis=0)
                done.append(fold_metrics(y[te], sims)["roc_auc"])
                bar.set_postfix(fold=k, auc=f"{done[-1]:.3f}", mean=f"{np.nanmean(done):.3f}")
                logger.info(f"fold {k}: ROC AUC {done[-1]:.3f} ({len(done)} folds done, mean {np.nanmean(done):.3f})")
    finally:
        bar.close()
    return outs


def _check_encoder(encoder: Any, shape: tuple[int, ...]) -> None:
    """Fail before any training when the encoder cannot read trials of this shape."""
    if isinstance(encoder, str):
        from neurodecode.encoders import encoder_class

        cls = encoder_class(encoder)  # KeyError listing the registered names
        if len(shape) == 2 and cls.modality == "voxels" and encoder != "ridge":
            raise ValueError(f"encoder {encoder!r} takes (n_trials, n_voxels) input but x is "
                             f"(n_trials, {shape[0]}, {shape[1]}); pick a time-series encoder.")
        if len(shape) == 1 and cls.modality == "timeseries":
            raise ValueError(f"encoder {encoder!r} takes (n_trials, n_chans, n_times) input but x is "
                             f"(n_trials, {shape[0]}); pick a voxel encoder (e.g. 'fmri_mlp' or 'ridge').")
    elif not callable(encoder):
        raise TypeError(f"encoder must be a registry name (neurodecode.encoders.list_encoders()) or a callable "
                        f"returning an nn.Module, got {type(encoder).__name__}.")


def _build_encoder(encoder: str | Callable[..., Any], shape: tuple[int, ...], n_outputs: int, *,
                   sfreq: float | None, chs_info: Any, kwargs: Mapping[str, Any]) -> Any:
    if len(shape) == 2:
        dims: dict[str, Any] = {"n_chans": shape[0], "n_times": shape[1], "n_outputs": n_outputs}
        if sfreq is not None:
            dims["sfreq"] = sfreq
        if chs_info is not None:
            dims["chs_info"] = chs_info
    else:
        dims = {"n_voxels": shape[0], "n_outputs": n_outputs}
    if isinstance(encoder, str):
        from neurodecode.encoders import create_encoder

        return create_encoder(encoder, **dims, **dict(kwargs))
    return encoder(**dims, **dict(kwargs))


def _input_stats(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per channel (time series) or per voxel mean and standard deviation of training trials."""
    if x.ndim == 3:
        mean, std = x.mean(axis=(0, 2)), x.std(axis=(0, 2))
    else:
        mean, std = x.mean(axis=0), x.std(axis=0)
    std = np.where(std > 0, std, 1.0)
    return mean, std


def _fit_and_score(x: np.ndarray, y: np.ndarray, groups: np.ndarray | None, x_test: np.ndarray,
                   targets: np.ndarray, seed: int, settings: dict[str, Any]) -> tuple[np.ndarray, dict[str, Any]]:
    """Train one model on a fold's training trials; cosine similarities of the test trials to the targets.

    A module-level function so that joblib can run it in worker processes. The torch thread count
    is set for the call and restored.
    """
    import torch

    threads = torch.get_num_threads()
    if settings["n_threads"] is not None:
        torch.set_num_threads(int(settings["n_threads"]))
    try:
        module, record = _fit_one(x, y, groups, torch.from_numpy(targets), seed, settings)
        module.eval()
        with torch.no_grad():
            emb = torch.cat([module(torch.from_numpy(x_test[i:i + 512])) for i in range(0, len(x_test), 512)])
    finally:
        torch.set_num_threads(threads)
    return cosine_similarities(emb.double().numpy(), targets), record


def _fit_one(x: np.ndarray, y: np.ndarray, groups: np.ndarray | None, targets: Any, seed: int,
             settings: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """Train one model on the training part of a fold; return it (weights of its best epoch) and a record."""
    import lightning as L
    import torch

    from neurodecode.losses import AlignmentLoss
    from neurodecode.training.lit import AlignmentModule

    s = settings
    TrialBatches, SelectBest = _lightning_parts()
    mean, std = _input_stats(x)  # the training trials of the fold only (fit + validation parts)
    with torch.random.fork_rng(devices=[]):  # seeded without touching the caller's random state
        torch.manual_seed(seed)
        enc = _build_encoder(s["encoder"], x.shape[1:], targets.shape[1], sfreq=s["sfreq"], chs_info=s["chs_info"],
                             kwargs=s["encoder_kwargs"])
        size = {"n_chans": x.shape[1]} if x.ndim == 3 else {"n_voxels": x.shape[1]}
        module = AlignmentModule(enc, AlignmentLoss(**s["loss_kwargs"]), lr=s["lr"], weight_decay=s["weight_decay"],
                                 scheduler=s["scheduler"], eval_way=targets.shape[0], seed=seed, **size)
        module.set_input_stats(mean, std)
        if getattr(enc, "closed_form", False):
            with torch.no_grad():
                enc.fit(module.normalize(torch.from_numpy(x)), targets[torch.from_numpy(y)])
            alpha = getattr(enc, "alpha_", None)
            return module, {"n_val": 0, "closed_form": True,
                            "alpha": None if alpha is None else float(alpha.reshape(-1)[0])}
        fit, val = inner_split(y, s["val_fraction"], groups=groups, seed=seed)
        data = TrialBatches(torch.from_numpy(x[fit]), torch.from_numpy(y[fit]), targets)
        gen = torch.Generator().manual_seed(seed)
        bs = s["batch_size"]
        sampler = torch.utils.data.BatchSampler(torch.utils.data.RandomSampler(range(len(fit)), generator=gen),
                                                batch_size=bs, drop_last=len(fit) > bs)
        loader = torch.utils.data.DataLoader(data, sampler=sampler, batch_size=None)
        sel = SelectBest(torch.from_numpy(x[val]), y[val], targets, s["select"])
        callbacks: list[Any] = [sel]
        if s["patience"] is not None:
            from lightning.pytorch.callbacks import EarlyStopping

            callbacks.append(EarlyStopping(monitor="val/select", mode="max", patience=int(s["patience"]),
                                           check_on_train_epoch_end=True))
        deterministic = torch.are_deterministic_algorithms_enabled()
        with _quiet_lightning():
            trainer = L.Trainer(accelerator="cpu", devices=1, max_epochs=s["max_epochs"], logger=False,
                                enable_checkpointing=False, enable_model_summary=False,
                                enable_progress_bar=False, deterministic=True, callbacks=callbacks,
                                num_sanity_val_steps=0)
            try:
                trainer.fit(module, train_dataloaders=loader)
            finally:
                torch.use_deterministic_algorithms(deterministic)
    if sel.best_state is not None:
        module.load_state_dict(sel.best_state)
    return module, {"n_val": int(len(val)), "best_epoch": int(sel.best_epoch), "epochs": int(trainer.current_epoch),
                    "val_score": float(sel.best),
                    "history": [{k: round(float(v), 5) for k, v in h.items()} for h in sel.history]}
