"""Targets other than one teacher layer of the sharp image: fused layers, blurred images.

Intermediate layers of a vision model are often better targets for brain signals than its final
embedding, and several layers together better still (Shallow Alignment; SAMGA mixes layers with
per-subject weights). The data module reads each cached layer (``data.layers: [block3-mean,
block5-mean, final]``) and fuses them (``data.fusion``):

``"concat"``
    :func:`fuse_concat`: each layer's rows L2-normalised and scaled by ``1/sqrt(L)``, then
    concatenated, so every layer weighs the same and the fused rows have unit norm; the target has
    ``sum(dims)`` dimensions.
``"mix"``
    :func:`stack_layers`: each layer L2-normalised and brought to one dimension ``D`` (default: the
    largest layer's) by a fixed, seeded random Gaussian projection when it has another (distances are
    kept approximately: Johnson-Lindenstrauss), stacked as ``(n, L * D)``. The model then mixes them
    with :class:`LayerMix`, softmax weights over layers learned with the encoder, one set for all
    subjects or one per subject; the encoder predicts the ``D``-dimensional mix.

Blurred targets (the brain resolves less detail than the vision model sees):
``data.blur: SIGMA`` embeds every stimulus blurred by a fixed Gaussian of ``SIGMA`` pixels at the
teacher's input resolution (e.g. 224 px), applied after the teacher's own transform (blur is linear
and the transform's normalisation per-channel affine, so it equals blurring the resized image).
:func:`ensure_blurred_embeddings` caches them like any other layer, under the teacher spec
:func:`blurred_spec` (``"<teacher>#blur<SIGMA>"``), so they never mix with the sharp ones.

Uncertainty-aware blur (UBP, ``data.blur: ubp``): :mod:`neurodecode.training.ubp`, on this module's
foveated :class:`GaussianBlur`.

Image-side augmentation (NeuroBridge): ``model.init_args.image_views: K`` embeds ``K`` augmented views
of every stimulus once (:class:`RandomView`: a random resized crop and flip, fixed per image and
view), cached under :func:`view_spec`; each training step draws, per sample, the sharp target or one
of the views (:func:`ensure_view_embeddings`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = ["FUSIONS", "fuse_concat", "stack_layers", "fused_dim", "LayerMix", "mix_layers", "blurred_spec",
           "GaussianBlur", "RandomView", "view_spec", "ensure_derived_embeddings",
           "ensure_blurred_embeddings", "ensure_view_embeddings"]

FUSIONS = ("concat", "mix")


def _unit_rows(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    norm = np.linalg.norm(a, axis=1, keepdims=True)
    return a / np.where(norm > 0, norm, 1.0)


def _check(embeddings: Sequence[np.ndarray]) -> None:
    if not embeddings:
        raise ValueError("fusing layers needs at least one layer's embeddings.")
    n = {len(e) for e in embeddings}
    if len(n) != 1 or any(np.ndim(e) != 2 for e in embeddings):
        raise ValueError(f"every layer must be (n_stimuli, dim) for the same stimuli, got shapes "
                         f"{[np.shape(e) for e in embeddings]}.")


def fuse_concat(embeddings: Sequence[np.ndarray]) -> np.ndarray:
    """Concatenate layers with equal weight: each L2-normalised and scaled by ``1/sqrt(L)``.

    Returns
    -------
    fused : ndarray, float32, (n, sum of dims)
        Unit-norm rows.
    """
    _check(embeddings)
    scale = 1.0 / np.sqrt(len(embeddings))
    return np.concatenate([_unit_rows(e) * scale for e in embeddings], axis=1).astype(np.float32)


def fused_dim(dims: Sequence[int], fusion: str, dim: int | None = None) -> int:
    """Dimension of the encoder's output for layers of dimensions ``dims`` fused by ``fusion``."""
    if fusion == "concat":
        return int(sum(dims))
    return int(dim or max(dims))


def stack_layers(embeddings: Sequence[np.ndarray], dim: int | None = None, seed: int = 0) -> np.ndarray:
    """Layers brought to one dimension and stacked, for :class:`LayerMix`.

    Parameters
    ----------
    embeddings : list of ndarray, (n, d_l)
    dim : int | None
        Common dimension ``D`` (default: the largest ``d_l``). A layer of another dimension is
        projected by a fixed Gaussian matrix (seeded by ``seed`` and its position) scaled by
        ``1/sqrt(D)``, then re-normalised.
    seed : int

    Returns
    -------
    stacked : ndarray, float32, (n, L * D)
        Layer ``l`` in columns ``l*D:(l+1)*D``; every block has unit-norm rows.
    """
    _check(embeddings)
    d = int(dim or max(e.shape[1] for e in embeddings))
    blocks = []
    for i, e in enumerate(embeddings):
        u = _unit_rows(e)
        if u.shape[1] != d:
            proj = np.random.default_rng([seed, i]).standard_normal((u.shape[1], d)) / np.sqrt(d)
            u = _unit_rows(u @ proj)
        blocks.append(u)
    return np.concatenate(blocks, axis=1).astype(np.float32)


class LayerMix(nn.Module):
    """Learned convex mix of stacked layer targets: ``sum_l softmax(w_s)_l * t_l``.

    Parameters
    ----------
    n_layers : int
        ``L``.
    dim : int
        ``D``, each layer's dimension in the stacked target.
    n_subjects : int
        Training subjects (for ``per_subject``).
    per_subject : bool
        One weight vector per subject (SAMGA) instead of one for all; an unseen subject (index -1)
        gets the mean of the subjects' weights.

    Notes
    -----
    The weights start equal (zeros before the softmax). They are learned through the alignment loss,
    with the encoder: the target moves towards the layers the brain signal predicts best.
    """

    def __init__(self, n_layers: int, dim: int, n_subjects: int = 1, per_subject: bool = False) -> None:
        super().__init__()
        if n_layers < 1 or dim < 1:
            raise ValueError(f"LayerMix needs n_layers >= 1 and dim >= 1, got {n_layers} and {dim}.")
        self.n_layers, self.dim, self.per_subject = int(n_layers), int(dim), bool(per_subject)
        self.logits = nn.Parameter(torch.zeros(int(n_subjects) if per_subject else 1, self.n_layers))

    def weights(self, subject: torch.Tensor | None = None) -> torch.Tensor:
        """Layer weights ``(batch, L)`` (or ``(1, L)`` without ``subject`` or per-subject weights)."""
        w = torch.softmax(self.logits, dim=1)
        if not self.per_subject or subject is None:
            return w.mean(0, keepdim=True) if self.per_subject else w
        mean = w.mean(0, keepdim=True)
        s = subject.long()
        return torch.where((s >= 0).unsqueeze(1), w[s.clamp(min=0)], mean)

    def forward(self, target: torch.Tensor, subject: torch.Tensor | None = None) -> torch.Tensor:
        """Mix ``target`` ``(batch, L * D)`` (or ``(batch, L, D)``) into ``(batch, D)``."""
        t = target.reshape(len(target), self.n_layers, self.dim)
        return (self.weights(subject).unsqueeze(2) * t).sum(1)

    def table(self) -> np.ndarray:
        """The learned weights, ``(n_subjects, L)`` (per subject) or ``(1, L)``: what :func:`mix_layers` takes."""
        return torch.softmax(self.logits.detach().float(), dim=1).cpu().numpy()


def mix_layers(stacked: np.ndarray, weights: np.ndarray, subjects: Any = -1) -> np.ndarray:
    """:class:`LayerMix` with fixed weights, in NumPy: the mixed targets of stacked rows.

    Parameters
    ----------
    stacked : ndarray, (n, L * D)
        Rows of :func:`stack_layers`.
    weights : ndarray, (S, L)
        :meth:`LayerMix.table`: one row for all subjects (``S = 1``) or one per training subject.
    subjects : int | array of int
        Training-subject index of each row (or one for all); ``-1`` (unseen) takes the mean of the rows.

    Returns
    -------
    mixed : ndarray, float32, (n, D)
    """
    w, stacked = np.asarray(weights, dtype=np.float64), np.asarray(stacked)
    if w.ndim != 2 or stacked.ndim != 2 or stacked.shape[1] % w.shape[1]:
        raise ValueError(f"mixing needs weights (subjects, layers) and rows (n, layers * dim), got {w.shape} and "
                         f"{stacked.shape}.")
    n, n_layers = len(stacked), w.shape[1]
    s = np.broadcast_to(np.asarray(subjects, dtype=np.int64), (n,))
    if len(w) > 1 and s.max(initial=-1) >= len(w):
        raise ValueError(f"subject index {int(s.max())} has no mix weights (the model learned {len(w)}).")
    per_row = np.where((s >= 0)[:, None], w[np.clip(s, 0, len(w) - 1)], w.mean(0)) if len(w) > 1 else w[[0] * n]
    t = stacked.reshape(n, n_layers, -1).astype(np.float64)
    return np.einsum("nl,nld->nd", per_row, t).astype(np.float32)


# --------------------------------------------------------------------------------------------------
# blurred-image targets
# --------------------------------------------------------------------------------------------------
def blurred_spec(teacher: str, sigma: float | None, fovea: float | None = None) -> str:
    """The cache spec of ``teacher``'s embeddings of images blurred by ``sigma`` px (``teacher`` for none).

    ``fovea`` (the falloff of :class:`GaussianBlur`'s foveated blend) adds ``-fovea<G>``.
    """
    if sigma is None or float(sigma) == 0:
        return teacher
    if float(sigma) < 0:
        raise ValueError(f"blur sigma must be >= 0 pixels, got {sigma}.")
    return f"{teacher}#blur{float(sigma):g}" + ("" if fovea is None else f"-fovea{float(fovea):g}")


class GaussianBlur:
    """``transform`` followed by a Gaussian blur of ``sigma`` pixels (torchvision, kernel ``2*ceil(3 sigma)+1``).

    With ``fovea=G`` the blurred image is blended with the sharp one, the sharp share being
    ``0.5 exp(-G r)`` at distance ``r`` from the centre (over the centre-to-corner distance): UBP's
    foveated blur (its ``FoveaBlur`` with an exponential curve). The blend is per pixel with weights
    summing to 1, so, like the blur, it commutes with the transform's per-channel normalisation.
    """

    def __init__(self, transform: Any, sigma: float, fovea: float | None = None) -> None:
        self.transform, self.sigma = transform, float(sigma)
        self.fovea = None if fovea is None else float(fovea)

    def __call__(self, image: Any) -> torch.Tensor:
        from torchvision.transforms.functional import gaussian_blur

        x = self.transform(image)
        k = 2 * int(math.ceil(3 * self.sigma)) + 1
        blurred = gaussian_blur(x, [k, k], [self.sigma, self.sigma])
        if self.fovea is None:
            return blurred
        sharp = self.sharp_share(x.shape[-2], x.shape[-1]).to(x.dtype)
        return sharp * x + (1 - sharp) * blurred

    def sharp_share(self, h: int, w: int) -> torch.Tensor:
        """The sharp image's weight per pixel, ``(h, w)``, of the foveated blend."""
        cy, cx = h // 2, w // 2
        yy, xx = torch.meshgrid(torch.arange(h) - cy, torch.arange(w) - cx, indexing="ij")
        r = torch.clamp(torch.hypot(yy.double(), xx.double()) / (math.hypot(h - cy - 1, w - cx - 1) or 1.0), max=1.0)
        return 0.5 * torch.exp(-float(self.fovea or 0.0) * r)

    def __repr__(self) -> str:
        fov = "" if self.fovea is None else f", foveated G={self.fovea:g}"
        return f"GaussianBlur(sigma={self.sigma:g} px{fov}) after {self.transform!r}"


class RandomView:
    """``transform`` after a random resized crop (``scale`` of the area, aspect 3/4 to 4/3) and a
    horizontal flip with probability 1/2, drawn from ``(seed, view)`` and the image's pixels: the same
    image always gets the same view ``view`` (so a cached view can be recomputed)."""

    def __init__(self, transform: Any, view: int, seed: int = 0, scale: tuple[float, float] = (0.5, 1.0)) -> None:
        self.transform, self.view, self.seed, self.scale = transform, int(view), int(seed), tuple(scale)

    def __call__(self, image: Any) -> torch.Tensor:
        import hashlib

        digest = int.from_bytes(hashlib.sha1(image.tobytes()).digest()[:7], "little")
        g = torch.Generator().manual_seed(digest ^ (self.seed * 1_000_003 + self.view))
        u = torch.rand(5, generator=g).tolist()
        w, h = image.size
        area = self.scale[0] + (self.scale[1] - self.scale[0]) * u[0]
        ratio = math.exp(math.log(3 / 4) + (math.log(4 / 3) - math.log(3 / 4)) * u[1])
        cw = min(w, max(1, int(round(math.sqrt(area * w * h * ratio)))))
        ch = min(h, max(1, int(round(math.sqrt(area * w * h / ratio)))))
        left, top = int(u[2] * (w - cw + 1)), int(u[3] * (h - ch + 1))
        out = image.crop((left, top, left + cw, top + ch))
        if u[4] < 0.5:
            out = out.transpose(0)  # PIL's FLIP_LEFT_RIGHT
        return self.transform(out)

    def __repr__(self) -> str:
        return f"RandomView(view={self.view}, seed={self.seed}, scale={self.scale}) then {self.transform!r}"


def view_spec(teacher: str, view: int, seed: int = 0) -> str:
    """The cache spec of augmented view ``view`` (1, 2, ...) of ``teacher``'s embeddings."""
    return f"{teacher}#view{int(view)}-seed{int(seed)}"


def ensure_derived_embeddings(table: Any, teacher: str, cache_path: str | Path, jobs: Sequence[tuple[str, Any]],
                              layers: Sequence[str] = ("final",), *, batch_size: int = 32, device: str = "auto",
                              progress_bar: bool = True) -> list[str]:
    """Embed the stimuli through derived transforms, each cached under its own spec (resumable).

    Parameters
    ----------
    table : StimulusTable
        The stimuli (with image files).
    teacher : str
        An image teacher spec (``efficientnet-lite0``, ``open_clip:...``).
    cache_path : path-like
        The embedding cache file.
    jobs : list of (str, callable)
        ``(spec, wrap)``: ``wrap(teacher_transform)`` is the transform whose embeddings go under ``spec``.
    layers : list of str
        Layers to cache.
    batch_size, device, progress_bar
        As for :func:`neurodecode.teachers.ensure_embeddings`.

    Returns
    -------
    specs : list of str
        The jobs' specs. Only the stimuli a spec lacks are embedded (one shard per batch).
    """
    from torch.utils.data import DataLoader

    from neurodecode.teachers import load_teacher
    from neurodecode.teachers.cache import merge_shards, parts_dir, stored_keys, write_shard
    from neurodecode.teachers.extract import embed_batch
    from neurodecode.teachers.models import resolve_device
    from neurodecode.teachers.stimuli import StimulusImages, collate_stimuli, stimulus_image_files
    from neurodecode.utils import progress

    ids = [str(i) for i in table.stimulus_id.tolist()]
    index = {s: i for i, s in enumerate(ids)}
    model = None
    for spec, wrap in jobs:
        missing = sorted({i for layer in layers for i in set(ids) - stored_keys(cache_path, spec, layer)})
        if not missing:
            continue
        if model is None:
            model = load_teacher(teacher, device=resolve_device(device))
        if getattr(model, "transform", None) is None:
            raise ValueError(f"teacher {teacher!r} has no image transform; blurred or augmented targets need an "
                             "image teacher (efficientnet-lite0, open_clip:..., timm:...).")
        transform = wrap(model.transform)
        dataset = StimulusImages(missing, stimulus_image_files(table, [index[i] for i in missing]), transform)
        loader = DataLoader(dataset, batch_size=batch_size, collate_fn=collate_stimuli)
        attrs = {"transform": repr(transform)}
        parts = parts_dir(cache_path)
        for batch in progress(loader, desc=f"embedding {spec}", enabled=progress_bar):
            feats = embed_batch(model, batch, list(layers), chunk_size=batch_size)
            write_shard(parts, spec, {name: (batch["stimulus_id"], feats[name], attrs) for name in layers})
        merge_shards(cache_path)
    return [spec for spec, _ in jobs]


def ensure_blurred_embeddings(table: Any, teacher: str, cache_path: str | Path, sigma: float | Sequence[float],
                              layers: Sequence[str] = ("final",), *, fovea: float | None = None, **kw: Any) -> Any:
    """Embed the stimuli blurred by ``sigma`` px (:class:`GaussianBlur`) that the cache lacks; their spec.

    ``sigma`` may be a list (UBP's levels; their specs are returned as a list). Keywords as for
    :func:`ensure_derived_embeddings`.
    """
    sigmas = [float(sigma)] if np.isscalar(sigma) else [float(v) for v in sigma]
    jobs = [(blurred_spec(teacher, v, fovea), lambda t, v=v: GaussianBlur(t, v, fovea)) for v in sigmas]
    specs = ensure_derived_embeddings(table, teacher, cache_path, jobs, layers, **kw)
    return specs[0] if np.isscalar(sigma) else specs


def ensure_view_embeddings(table: Any, teacher: str, cache_path: str | Path, n_views: int,
                           layers: Sequence[str] = ("final",), *, seed: int = 0, **kw: Any) -> list[str]:
    """Embed ``n_views`` augmented views (:class:`RandomView`) of every stimulus; their specs.

    Keywords as for :func:`ensure_derived_embeddings`.
    """
    jobs = [(view_spec(teacher, v, seed), lambda t, v=v: RandomView(t, v, seed)) for v in range(1, int(n_views) + 1)]
    return ensure_derived_embeddings(table, teacher, cache_path, jobs, layers, **kw)
