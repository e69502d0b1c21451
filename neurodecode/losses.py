"""Alignment losses between brain embeddings and frozen teacher embeddings.

- :class:`ContrastiveLoss`: symmetric InfoNCE (CLIP) with a learnable, exp-parametrised and
  clamped temperature. Under ``torch.distributed`` it gathers the embeddings of every process
  *with gradients* (open_clip's ``ClipLoss(gather_with_grad=True)``), so each rank sees all
  negatives of the global batch and the loss equals the single-process loss on that batch.
- :class:`SoftCLIPLoss`: InfoNCE against soft targets, the softmax of the teacher-teacher
  similarities (as in MindEye), also gathered across ranks.
- :class:`MultiPositiveLoss`: InfoNCE in which every pair of the batch with the same label (image or
  concept) is a positive, so repetitions of one image are not pushed apart as negatives.
- :func:`coral_loss`, :func:`mmd_loss`: domain alignment between the subjects of a batch (CORAL's
  covariance distance, a Gaussian-kernel MMD), for leave-one-subject-out training.
- :class:`RegressionLoss`: MSE or cosine distance per example.
- :class:`AlignmentLoss`: ``w * contrastive + (1 - w) * regression`` (Benchetrit et al. use
  ``w = 0.75``), optionally mixed with the same loss against a text embedding
  (``(1 - t) * image + t * text``; ATM uses ``t = 0.01``). One module, one call:
  ``total, parts = loss(brain_emb, image_emb, text_emb)``.

The temperature is a parameter of the loss module: a LightningModule that holds the loss as a
submodule optimises it with the encoder.

This module reads better whole: every contrastive term follows the same gathering protocol (below)
and :class:`AlignmentLoss` combines them all; split up, each file would restate that protocol.

Distributed use
---------------
Rank and world size are read from ``torch.distributed`` at each call (the loss can be built
before the process group exists). Every rank must hold a local batch of the same size (the
``DistributedSampler`` default); this is checked. With the default ``local_loss=False`` every rank
computes the full global ``N x N`` logits and returns the global loss; the gradients that reach a
rank's embeddings are ``world_size`` times the single-process ones, which DDP's gradient averaging
divides back, so DDP training equals single-process training on the global batch.
``local_loss=True`` computes only the local rows (``N_local x N``, less memory for large world
sizes); each rank then returns its share and the mean over ranks is the global loss.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from neurodecode.utils import check_option

__all__ = [
    "LogitScale",
    "ContrastiveLoss",
    "SoftCLIPLoss",
    "MultiPositiveLoss",
    "RegressionLoss",
    "AlignmentLoss",
    "clip_loss",
    "soft_clip_loss",
    "multi_positive_loss",
    "coral_loss",
    "mmd_loss",
    "distributed_info",
    "gather_with_grad",
]

CONTRASTIVE_KINDS = ("clip", "softclip", "multipos")
DOMAIN_KINDS = ("coral", "mmd")
REGRESSION_KINDS = ("mse", "cosine")


# --------------------------------------------------------------------------------------------------
# distributed helpers
# --------------------------------------------------------------------------------------------------
def distributed_info() -> tuple[int, int]:
    """``(rank, world_size)`` of the default process group, ``(0, 1)`` when there is none."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _check_equal_batches(n_local: int, world_size: int, device: torch.device) -> None:
    import torch.distributed as dist

    size = torch.tensor([n_local], device=device)
    sizes = [torch.zeros_like(size) for _ in range(world_size)]
    dist.all_gather(sizes, size)
    sizes = [int(s) for s in sizes]
    if len(set(sizes)) != 1:
        raise ValueError(f"The contrastive loss gathers embeddings across processes and needs the same batch "
                         f"size on every rank, got {sizes}. Use drop_last=True in the training DataLoader (or "
                         f"the DistributedSampler's padding).")


def gather_with_grad(*tensors: torch.Tensor, check_sizes: bool = True) -> tuple[torch.Tensor, ...]:
    """Concatenate each tensor over all ranks along dim 0, keeping gradients (identity on one process).

    Uses ``open_clip.loss.gather_features`` (``gather_with_grad=True``), i.e.
    ``torch.distributed.nn.all_gather``, whose backward sums the gradients of every rank.
    """
    rank, world_size = distributed_info()
    if world_size == 1:
        return tensors
    if check_sizes:
        _check_equal_batches(tensors[0].shape[0], world_size, tensors[0].device)
    from open_clip.loss import gather_features

    out = []
    for i in range(0, len(tensors), 2):
        pair = tensors[i:i + 2]
        a, b = gather_features(pair[0], pair[-1], local_loss=False, gather_with_grad=True,
                               rank=rank, world_size=world_size)
        out += [a, b] if len(pair) == 2 else [a]
    return tuple(out)


# --------------------------------------------------------------------------------------------------
# temperature
# --------------------------------------------------------------------------------------------------
class LogitScale(nn.Module):
    """A learnable inverse temperature ``exp(s)``, with ``s`` clamped to ``[log(min_scale), log(max_scale)]``.

    Parameters
    ----------
    init_temperature : float
        Initial temperature (CLIP: 0.07, i.e. a logit scale of 1 / 0.07).
    max_scale : float
        Largest logit scale (CLIP: 100).
    min_scale : float
        Smallest logit scale (1).
    learnable : bool
        Fixed temperature when False (kept as a buffer).
    """

    def __init__(self, init_temperature: float = 0.07, max_scale: float = 100.0, min_scale: float = 1.0,
                 learnable: bool = True) -> None:
        super().__init__()
        if not 0 < init_temperature:
            raise ValueError(f"init_temperature must be positive, got {init_temperature}.")
        if not 0 < min_scale <= max_scale:
            raise ValueError(f"need 0 < min_scale <= max_scale, got {min_scale}, {max_scale}.")
        value = torch.tensor(math.log(1.0 / init_temperature))
        if learnable:
            self.log_scale = nn.Parameter(value)
        else:
            self.register_buffer("log_scale", value)
        self.log_min, self.log_max = math.log(min_scale), math.log(max_scale)

    def forward(self) -> torch.Tensor:
        """The current logit scale ``exp(clamp(s))`` (a 0-d tensor)."""
        return self.log_scale.clamp(self.log_min, self.log_max).exp()


# --------------------------------------------------------------------------------------------------
# functional forms (single process, for reference and tests)
# --------------------------------------------------------------------------------------------------
def clip_loss(brain: torch.Tensor, target: torch.Tensor, logit_scale: torch.Tensor | float) -> torch.Tensor:
    """Symmetric InfoNCE of L2-normalised embeddings on one process (no gathering)."""
    b, t = F.normalize(brain.float(), dim=-1), F.normalize(target.float(), dim=-1)
    logits = logit_scale * b @ t.T
    labels = torch.arange(len(b), device=b.device)
    return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2


def soft_clip_loss(brain: torch.Tensor, target: torch.Tensor, logit_scale: torch.Tensor | float,
                   target_scale: torch.Tensor | float) -> torch.Tensor:
    """InfoNCE against soft targets ``softmax(target_scale * cos(target_i, target_j))``, both directions."""
    b, t = F.normalize(brain.float(), dim=-1), F.normalize(target.float(), dim=-1)
    soft = torch.softmax(target_scale * t @ t.T, dim=-1)  # symmetric similarity: rows = columns
    logits = logit_scale * b @ t.T
    return (F.cross_entropy(logits, soft) + F.cross_entropy(logits.T, soft.T)) / 2


def multi_positive_loss(brain: torch.Tensor, target: torch.Tensor, labels: torch.Tensor,
                        logit_scale: torch.Tensor | float) -> torch.Tensor:
    """Symmetric InfoNCE with several positives: row ``i``'s positives are the columns with its label.

    Each direction is ``-mean_i mean_{j: y_j = y_i} log softmax_j(s * cos(b_i, t_j))`` (the "outside"
    form of SupCon, Khosla et al. 2020, across the two modalities); with distinct labels it is
    :func:`clip_loss`. Positives that share one target (repetitions of an image) leave it equal to
    :func:`clip_loss` too (their columns are identical); it differs for positives with different
    targets, e.g. the images of one concept.
    """
    b, t = F.normalize(brain.float(), dim=-1), F.normalize(target.float(), dim=-1)
    logits = logit_scale * b @ t.T
    pos = (labels.reshape(-1, 1) == labels.reshape(1, -1)).float()

    def side(lg: torch.Tensor) -> torch.Tensor:
        return -((pos * F.log_softmax(lg, dim=1)).sum(1) / pos.sum(1)).mean()

    return (side(logits) + side(logits.T)) / 2  # pos is symmetric


def _group_pairs(emb: torch.Tensor, groups: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
    members = [emb[groups == g] for g in torch.unique(groups)]
    members = [m for m in members if len(m) >= 2]
    return [(members[i], members[j]) for i in range(len(members)) for j in range(i + 1, len(members))]


def coral_loss(emb: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
    """CORAL (Sun & Saenko 2016) between groups: mean over pairs of ``||C_g - C_h||_F^2 / (4 d^2)``.

    ``C_g`` is the covariance of group ``g``'s L2-normalised embeddings; groups with fewer than two rows
    are left out; 0 with fewer than two groups.
    """
    e = F.normalize(emb.float(), dim=-1)
    pairs = _group_pairs(e, groups)
    if not pairs:
        return e.new_zeros(())
    d = e.shape[1]
    return torch.stack([((torch.cov(a.T) - torch.cov(b.T)) ** 2).sum() / (4 * d * d) for a, b in pairs]).mean()


def mmd_loss(emb: torch.Tensor, groups: torch.Tensor, bandwidths: tuple[float, ...] = (0.25, 0.5, 1.0)
             ) -> torch.Tensor:
    """Squared MMD (biased estimate, Gretton et al. 2012) between groups, mean over pairs of groups.

    Gaussian kernels ``exp(-||x - y||^2 / (2 s^2))`` summed over ``bandwidths`` ``s``, on L2-normalised
    embeddings; 0 with fewer than two groups of at least two rows.
    """
    e = F.normalize(emb.float(), dim=-1)
    pairs = _group_pairs(e, groups)
    if not pairs:
        return e.new_zeros(())

    def k(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        d2 = torch.cdist(x, y).pow(2)
        return sum(torch.exp(-d2 / (2 * s * s)) for s in bandwidths).mean()

    return torch.stack([k(a, a) + k(b, b) - 2 * k(a, b) for a, b in pairs]).mean()


def _gather_plain(x: torch.Tensor) -> torch.Tensor:
    """``x`` concatenated over ranks, without gradients (labels)."""
    _, world_size = distributed_info()
    if world_size == 1:
        return x
    import torch.distributed as dist

    out = [torch.empty_like(x) for _ in range(world_size)]
    dist.all_gather(out, x.contiguous())
    return torch.cat(out)


# --------------------------------------------------------------------------------------------------
# modules
# --------------------------------------------------------------------------------------------------
class ContrastiveLoss(nn.Module):
    """Symmetric InfoNCE with a learnable temperature, gathered across processes with gradients.

    Parameters
    ----------
    init_temperature, max_scale, learn_temperature
        See :class:`LogitScale`.
    local_loss : bool
        See the module docstring (``False``: every rank returns the global loss).
    check_batch_sizes : bool
        Check that every rank holds the same batch size before gathering (one tiny collective).

    Notes
    -----
    Embeddings are L2-normalised here; pass raw encoder outputs and teacher embeddings.
    """

    def __init__(self, init_temperature: float = 0.07, max_scale: float = 100.0, learn_temperature: bool = True,
                 local_loss: bool = False, check_batch_sizes: bool = True) -> None:
        super().__init__()
        self.logit_scale = LogitScale(init_temperature, max_scale, learnable=learn_temperature)
        self.local_loss = bool(local_loss)
        self.check_batch_sizes = bool(check_batch_sizes)
        self._clip: Any = None

    def _clip_loss(self) -> Any:
        if self._clip is None:
            from open_clip.loss import ClipLoss  # heavy import, done once on first use

            # a plain attribute, not a submodule: it has no parameters or state worth saving
            object.__setattr__(self, "_clip", ClipLoss(local_loss=self.local_loss, gather_with_grad=True,
                                                       cache_labels=True))
        return self._clip

    def forward(self, brain: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Loss of ``brain`` ``(batch, dim)`` against ``target`` ``(batch, dim)`` (matching rows)."""
        _check_pair(brain, target)
        rank, world_size = distributed_info()
        if world_size > 1 and self.check_batch_sizes:
            _check_equal_batches(brain.shape[0], world_size, brain.device)
        loss_fn = self._clip_loss()
        loss_fn.rank, loss_fn.world_size = rank, world_size
        b, t = F.normalize(brain.float(), dim=-1), F.normalize(target.float(), dim=-1)
        return loss_fn(b, t, self.logit_scale())


class SoftCLIPLoss(nn.Module):
    """InfoNCE against soft targets from the teacher-teacher similarities (MindEye's SoftCLIP).

    The target distribution of row ``i`` is ``softmax_j(cos(target_i, target_j) / target_temperature)``
    and the loss is the cross-entropy of the brain-to-target logits with it, in both directions.
    Gathered across processes like :class:`ContrastiveLoss` (each rank returns the global loss).

    Parameters
    ----------
    init_temperature, max_scale, learn_temperature
        Temperature of the brain-to-target logits (:class:`LogitScale`).
    target_temperature : float | None
        Temperature of the soft targets; ``None`` uses the current (detached) learned temperature.
    check_batch_sizes : bool
        As in :class:`ContrastiveLoss`.
    """

    def __init__(self, init_temperature: float = 0.07, max_scale: float = 100.0, learn_temperature: bool = True,
                 target_temperature: float | None = None, check_batch_sizes: bool = True) -> None:
        super().__init__()
        if target_temperature is not None and not target_temperature > 0:
            raise ValueError(f"target_temperature must be positive or None, got {target_temperature}.")
        self.logit_scale = LogitScale(init_temperature, max_scale, learnable=learn_temperature)
        self.target_temperature = target_temperature
        self.check_batch_sizes = bool(check_batch_sizes)

    def forward(self, brain: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Loss of ``brain`` against ``target`` (matching rows)."""
        _check_pair(brain, target)
        b, t = gather_with_grad(brain, target, check_sizes=self.check_batch_sizes)
        scale = self.logit_scale()
        target_scale = scale.detach() if self.target_temperature is None else 1.0 / self.target_temperature
        return soft_clip_loss(b, t, scale, target_scale)


class MultiPositiveLoss(nn.Module):
    """:func:`multi_positive_loss` with a learnable temperature, gathered across processes.

    Parameters
    ----------
    init_temperature, max_scale, learn_temperature
        See :class:`LogitScale`.
    check_batch_sizes : bool
        As in :class:`ContrastiveLoss`.
    """

    def __init__(self, init_temperature: float = 0.07, max_scale: float = 100.0, learn_temperature: bool = True,
                 check_batch_sizes: bool = True) -> None:
        super().__init__()
        self.logit_scale = LogitScale(init_temperature, max_scale, learnable=learn_temperature)
        self.check_batch_sizes = bool(check_batch_sizes)

    def forward(self, brain: torch.Tensor, target: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Loss of ``brain`` against ``target`` (matching rows); rows with equal ``labels`` are positives."""
        _check_pair(brain, target)
        b, t = gather_with_grad(brain, target, check_sizes=self.check_batch_sizes)
        return multi_positive_loss(b, t, _gather_plain(labels.to(brain.device)), self.logit_scale())


class RegressionLoss(nn.Module):
    """Per-example regression of the target embedding: ``"mse"`` or ``"cosine"`` (1 - cosine similarity).

    Parameters
    ----------
    kind : {"mse", "cosine"}
    normalize : bool
        For ``"mse"``: L2-normalise both embeddings first (regress directions, not norms).
    """

    def __init__(self, kind: str = "mse", normalize: bool = False) -> None:
        super().__init__()
        check_option("kind", kind, REGRESSION_KINDS)
        self.kind = kind
        self.normalize = bool(normalize)

    def forward(self, brain: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Mean loss over the (local) batch."""
        _check_pair(brain, target)
        b, t = brain.float(), target.float()
        if self.kind == "cosine":
            return (1.0 - F.cosine_similarity(b, t, dim=-1)).mean()
        if self.normalize:
            b, t = F.normalize(b, dim=-1), F.normalize(t, dim=-1)
        return F.mse_loss(b, t)


class AlignmentLoss(nn.Module):
    """Contrastive + regression mixture, with an optional auxiliary text target.

    ``loss(x) = w * contrastive(brain, x) + (1 - w) * regression(brain, x)`` and
    ``total = (1 - t) * loss(image) + t * loss(text)`` (``t = 0`` or no text: ``loss(image)``).

    Parameters
    ----------
    contrastive : {"clip", "softclip", "multipos"} | None
        Contrastive term (None: none); ``"multipos"`` needs ``labels`` at each call.
    regression : {"mse", "cosine"} | None
        Regression term (None: none).
    contrastive_weight : float | None
        ``w``. ``None``: 1 with only a contrastive term, 0 with only a regression term, 0.75 with
        both (Benchetrit et al.).
    text_weight : float
        ``t``, the weight of the text target (ATM: 0.01). Needs ``text_emb`` at each call when > 0.
    init_temperature, max_scale, learn_temperature
        The contrastive temperature (shared by the image and text terms, as in ATM).
    target_temperature : float | None
        SoftCLIP's soft-target temperature (see :class:`SoftCLIPLoss`).
    normalize_regression : bool
        L2-normalise both sides of the MSE.
    local_loss : bool
        See the module docstring (CLIP only).
    domain : {"coral", "mmd"} | None
        Domain-alignment term between the subjects of each batch (needs ``subject`` at each call).
    domain_weight : float
        Its weight, added to the total.

    Notes
    -----
    ``brain_emb`` may be a tensor or a dict ``{"contrastive": ..., "regression": ...}`` (the two
    heads of :meth:`neurodecode.encoders.BrainModule.forward_heads`); each term then reads its own.
    """

    def __init__(self, contrastive: str | None = "clip", regression: str | None = None,
                 contrastive_weight: float | None = None, text_weight: float = 0.0,
                 init_temperature: float = 0.07, max_scale: float = 100.0, learn_temperature: bool = True,
                 target_temperature: float | None = None, normalize_regression: bool = False,
                 local_loss: bool = False, domain: str | None = None, domain_weight: float = 0.1) -> None:
        super().__init__()
        check_option("contrastive", contrastive, (*CONTRASTIVE_KINDS, None))
        check_option("domain", domain, (*DOMAIN_KINDS, None))
        self.domain, self.domain_weight = domain, float(domain_weight)
        #: the LightningModule passes ``labels`` and ``subject`` when this is True
        self.uses_batch_info = contrastive == "multipos" or domain is not None
        if contrastive is None and regression is None:
            raise ValueError("AlignmentLoss needs a contrastive term, a regression term, or both.")
        if contrastive_weight is None:
            contrastive_weight = 1.0 if regression is None else 0.0 if contrastive is None else 0.75
        w = float(contrastive_weight)
        if not 0.0 <= w <= 1.0:
            raise ValueError(f"contrastive_weight must be in [0, 1], got {w}.")
        if (contrastive is None and w > 0) or (regression is None and w < 1):
            raise ValueError(f"contrastive_weight={w} weighs a term that is switched off "
                             f"(contrastive={contrastive!r}, regression={regression!r}).")
        if not 0.0 <= text_weight <= 1.0:
            raise ValueError(f"text_weight must be in [0, 1], got {text_weight}.")
        self.contrastive_weight = w
        self.text_weight = float(text_weight)
        if contrastive == "clip":
            self.contrastive: nn.Module | None = ContrastiveLoss(init_temperature, max_scale, learn_temperature,
                                                                 local_loss=local_loss)
        elif contrastive == "softclip":
            self.contrastive = SoftCLIPLoss(init_temperature, max_scale, learn_temperature, target_temperature)
        elif contrastive == "multipos":
            self.contrastive = MultiPositiveLoss(init_temperature, max_scale, learn_temperature)
        else:
            self.contrastive = None
        self.regression = RegressionLoss(regression, normalize_regression) if regression is not None else None

    @property
    def logit_scale(self) -> torch.Tensor | None:
        """The current contrastive logit scale (None without a contrastive term)."""
        return None if self.contrastive is None else self.contrastive.logit_scale()

    def _terms(self, brain: torch.Tensor | Mapping[str, torch.Tensor], target: torch.Tensor,
               labels: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        parts: dict[str, torch.Tensor] = {}
        total = target.new_zeros((), dtype=torch.float32)
        if self.contrastive is not None:
            if isinstance(self.contrastive, MultiPositiveLoss):
                if labels is None:
                    raise ValueError("AlignmentLoss(contrastive='multipos') needs labels (which rows share an "
                                     "image or concept); the AlignmentModule passes them.")
                c = self.contrastive(_pick(brain, "contrastive"), target, labels)
            else:
                c = self.contrastive(_pick(brain, "contrastive"), target)
            parts["contrastive"] = c
            total = total + self.contrastive_weight * c
        if self.regression is not None:
            r = self.regression(_pick(brain, "regression"), target)
            parts["regression"] = r
            total = total + (1.0 - self.contrastive_weight) * r
        return total, parts

    def forward(self, brain_emb: torch.Tensor | Mapping[str, torch.Tensor], image_emb: torch.Tensor,
                text_emb: torch.Tensor | None = None, labels: torch.Tensor | None = None,
                subject: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Total loss and its parts.

        Parameters
        ----------
        brain_emb : torch.Tensor | dict
            Encoder output ``(batch, dim)``, or the two heads as a dict.
        image_emb : torch.Tensor
            Teacher image embeddings ``(batch, dim)``, matching rows.
        text_emb : torch.Tensor | None
            Teacher text embeddings ``(batch, dim)``; needed when ``text_weight > 0``.
        labels, subject : torch.Tensor | None
            Per-row positive label (``"multipos"``) and subject index (``domain``).

        Returns
        -------
        total : torch.Tensor
            0-d, differentiable.
        parts : dict of str to torch.Tensor
            Detached values for logging: ``"image"``, ``"contrastive"`` and/or ``"regression"``
            (image terms), ``"text"`` and ``"domain"`` (when used) and ``"logit_scale"``.
        """
        total, parts = self._terms(brain_emb, image_emb, labels)
        out = {"image": total, **parts}
        if self.text_weight > 0:
            if text_emb is None:
                raise ValueError(f"AlignmentLoss has text_weight={self.text_weight} but no text embeddings were "
                                 f"given: pass text_emb, or set text_weight=0.")
            text_total, _ = self._terms(brain_emb, text_emb, labels)
            out["text"] = text_total
            total = (1.0 - self.text_weight) * total + self.text_weight * text_total
        if self.domain is not None and subject is not None:
            fn = coral_loss if self.domain == "coral" else mmd_loss
            out["domain"] = fn(_pick(brain_emb, "contrastive"), subject)
            total = total + self.domain_weight * out["domain"]
        if self.contrastive is not None:
            out["logit_scale"] = self.contrastive.logit_scale()
        return total, {k: v.detach() for k, v in out.items()}


def _pick(brain: torch.Tensor | Mapping[str, torch.Tensor], key: str) -> torch.Tensor:
    if isinstance(brain, Mapping):
        if key not in brain:
            raise KeyError(f"the brain embedding dict has no {key!r} entry (keys: {sorted(brain)}).")
        return brain[key]
    return brain


def _check_pair(brain: torch.Tensor, target: torch.Tensor) -> None:
    if brain.ndim != 2 or target.ndim != 2 or brain.shape != target.shape:
        raise ValueError(f"brain and target embeddings must both be (batch, dim) with the same shape, got "
                         f"{tuple(brain.shape)} and {tuple(target.shape)}. Check that the encoder's n_outputs "
                         f"equals the teacher's embedding dimension.")
