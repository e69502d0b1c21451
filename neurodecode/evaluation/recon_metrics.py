"""Reconstruction metrics with MindEye2's conventions, matched by stimulus id, per sample round.

The protocol, exactly as MindEye2's evaluation computes it:

1. every image (reconstruction and ground truth) is converted to float RGB in [0, 1] (uint8 and PIL
   images are divided by 255: feeding 0-255 values to the networks is a known bug of some metric
   scripts) and resized to 256 x 256 (bilinear, antialiased);
2. **PixCorr**: resized to 425 px (bilinear), Pearson r between the flattened RGB of a reconstruction
   and of its ground truth, mean over images;
3. **SSIM**: resized to 425 px, converted to grey as ``skimage.color.rgb2gray`` does
   (0.2125 R + 0.7154 G + 0.0721 B), SSIM with Gaussian weights (sigma 1.5, 11 x 11 window, no
   sample-covariance correction, data range 1, the 5-pixel border left out of the mean), as
   ``skimage.metrics.structural_similarity(gaussian_weights=True, sigma=1.5,
   use_sample_covariance=False, data_range=1)`` computes it. torchmetrics computes the SSIM map
   (float64 on CUDA, float32 on CPUs: within ~1e-5 of scikit-image's float64); the map is cropped
   by its 5-pixel border before the mean as scikit-image does (torchmetrics itself averages the
   whole map, 2e-3 off); a test checks the numbers against scikit-image;
4. **two-way identification** for AlexNet ``features.4`` and ``features.11``, InceptionV3 ``avgpool``,
   CLIP image embeddings and ``efficientnet-lite0``: for reconstruction j, the fraction of the N - 1
   other ground truths whose Pearson correlation with reconstruction j (over flattened features) is
   lower than that of ground truth j, averaged over j (chance 0.5, perfect 1.0);
5. **correlation distance** (1 - Pearson r between the features of a reconstruction and of its own
   ground truth, mean over images; lower is better) for EfficientNet-B1 and SwAV ``avgpool``.

The networks, their input sizes and where their weights come from are described in
:mod:`neurodecode.evaluation.feature_nets`; a network whose weights are not on this machine is
listed under ``"skipped"`` with the reason, never faked.

Several samples per stimulus: *round* k compares sample k of every stimulus with its ground truth
(all N stimuli, so identification has its full set of distractors); the result reports each
round, the mean and sample standard deviation (ddof = 1) over rounds, and, under its own label,
``best_of_k``: for each stimulus the best of its k samples *for that metric* (chosen with the
ground truth, so an optimistic upper bound, not a result to compare with single-sample numbers).

Images are always paired by stimulus id (the keys of the dictionaries), never by order; the ids
are processed sorted, and no number depends on the order they are given in.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from neurodecode.utils import UserError, progress

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = [
    "GRAY_WEIGHTS",
    "IMAGE_SIZE",
    "LOW_LEVEL_SIZE",
    "METRICS_FORMAT",
    "correlation_distance",
    "images_to_tensor",
    "pixcorr",
    "score_reconstructions",
    "ssim",
    "two_way_identification",
]

METRICS_FORMAT = "neurodecode-recon-metrics"
IMAGE_SIZE = 256
LOW_LEVEL_SIZE = 425
GRAY_WEIGHTS = (0.2125, 0.7154, 0.0721)  # skimage.color.rgb2gray (ITU-R BT.709 luma)
SSIM_SIGMA = 1.5
SSIM_KERNEL = 11  # skimage: 2 * int(3.5 * sigma + 0.5) + 1 with truncate = 3.5


# --------------------------------------------------------------------------------------------------
# images
# --------------------------------------------------------------------------------------------------
def _one_image(image: Any, what: str) -> torch.Tensor:
    """An image of any supported kind as a float ``(3, H, W)`` tensor in [0, 1]."""
    import torch
    from PIL import Image

    if isinstance(image, str | os.PathLike):
        from neurodecode.evaluation.recon_files import read_image

        image = read_image(image)
    if isinstance(image, Image.Image):
        image = np.asarray(image.convert("RGB"))
    if isinstance(image, np.ndarray):
        arr = image
        if arr.ndim == 2:
            arr = np.repeat(arr[..., None], 3, axis=-1)
        if arr.ndim != 3 or arr.shape[-1] not in (3, 4):
            raise UserError(f"{what}: numpy images must be (H, W, 3) (channel last), got shape {arr.shape}.")
        t = torch.from_numpy(np.array(arr[..., :3], copy=True)).permute(2, 0, 1)
    elif isinstance(image, torch.Tensor):
        t = image.detach().cpu()
        if t.ndim == 2:
            t = t.unsqueeze(0).expand(3, -1, -1)
        if t.ndim != 3 or t.shape[0] not in (3, 4):
            raise UserError(f"{what}: tensor images must be (3, H, W) (channel first), got shape {tuple(t.shape)}.")
        t = t[:3]
    else:
        raise UserError(f"{what}: expected a PIL image, an image file, an (H, W, 3) array or a (3, H, W) tensor, "
                        f"got {type(image).__name__}.")
    if t.dtype == torch.uint8:
        return t.float() / 255.0  # never feed 0-255 values on
    if t.dtype == torch.bool or not t.dtype.is_floating_point:
        raise UserError(f"{what}: images must be uint8 (0-255) or float in [0, 1], got {t.dtype}.")
    t = t.float()
    lo, hi = float(t.min()), float(t.max())
    if not np.isfinite([lo, hi]).all() or lo < -1e-3 or hi > 1 + 1e-3:
        raise UserError(f"{what}: float images must hold values in [0, 1], got [{lo:.3g}, {hi:.3g}]; divide "
                        f"0-255 images by 255 (or pass them as uint8).")
    return t.clamp(0, 1)


def _resize(x: torch.Tensor, size: int) -> torch.Tensor:
    import torch.nn.functional as F

    if tuple(x.shape[-2:]) == (size, size):
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)


def images_to_tensor(images: Sequence[Any], *, size: int = IMAGE_SIZE, what: str = "images") -> torch.Tensor:
    """Images as one float ``(n, 3, size, size)`` tensor in [0, 1] (bilinear resize, step 1 of the protocol).

    Parameters
    ----------
    images : sequence
        PIL images, image files, ``(H, W, 3)`` arrays or ``(3, H, W)`` tensors; uint8 is divided by 255,
        floats must be in [0, 1]. A ``(n, 3, H, W)`` tensor is accepted as it is.
    size : int
        Output side in pixels.
    what : str
        How the images are named in error messages.

    Returns
    -------
    images : torch.Tensor
        ``(n, 3, size, size)`` float32.
    """
    import torch

    if isinstance(images, torch.Tensor) and images.ndim == 4:
        images = list(images)
    out = [_resize(_one_image(im, f"{what}[{i}]")[None], size)[0] for i, im in enumerate(images)]
    if not out:
        raise UserError(f"{what}: no images.")
    return torch.stack(out).clamp_(0, 1)


# --------------------------------------------------------------------------------------------------
# metrics on tensors / feature matrices
# --------------------------------------------------------------------------------------------------
def _as_images(x: Any, what: str) -> torch.Tensor:
    import torch

    if isinstance(x, torch.Tensor) and x.ndim == 4 and x.dtype.is_floating_point and x.shape[-1] == x.shape[-2] == IMAGE_SIZE:
        return x
    return images_to_tensor(x, what=what)


def _check_pair(a: torch.Tensor, b: torch.Tensor) -> None:
    if a.shape != b.shape:
        raise UserError(f"reconstructions {tuple(a.shape)} and ground truths {tuple(b.shape)} differ in number; "
                        f"give one ground truth per reconstruction.")


def pixcorr(recons: Any, truths: Any, *, per_image: bool = False) -> float | np.ndarray:
    """PixCorr: Pearson r over the flattened RGB at 425 px of each reconstruction and its ground truth.

    Parameters
    ----------
    recons, truths : images or tensor
        Paired images (anything :func:`images_to_tensor` takes, or its ``(n, 3, 256, 256)`` output).
    per_image : bool
        Return the ``(n,)`` per-image values instead of their mean.

    Returns
    -------
    value : float or numpy.ndarray
    """
    import torch

    a, b = _as_images(recons, "recons"), _as_images(truths, "truths")
    _check_pair(a, b)
    out = []
    for i in range(0, len(a), 64):
        x = _resize(a[i:i + 64], LOW_LEVEL_SIZE).flatten(1).double()
        y = _resize(b[i:i + 64].to(a.device), LOW_LEVEL_SIZE).flatten(1).double()
        out.append(_row_corr(x, y).clamp(-1, 1).cpu())
    r = torch.cat(out).numpy()
    return r if per_image else float(r.mean())


def _gray(x: torch.Tensor) -> torch.Tensor:
    import torch

    w = torch.tensor(GRAY_WEIGHTS, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x * w).sum(1, keepdim=True)


def ssim(recons: Any, truths: Any, *, per_image: bool = False) -> float | np.ndarray:
    """SSIM at 425 px grayscale with scikit-image's Gaussian settings (see the module docstring).

    Parameters
    ----------
    recons, truths : images or tensor
        Paired images (anything :func:`images_to_tensor` takes, or its output).
    per_image : bool
        Return the ``(n,)`` per-image values instead of their mean.

    Returns
    -------
    value : float or numpy.ndarray
    """
    import torch
    from torchmetrics.functional.image import structural_similarity_index_measure

    a, b = _as_images(recons, "recons"), _as_images(truths, "truths")
    _check_pair(a, b)
    # float64 where convolutions in it are cheap (CUDA); on CPUs float64 convolutions are ~20x slower,
    # and float32 stays within ~1e-5 of scikit-image's float64 numbers (identical images: 1 - 1e-5,
    # from torchmetrics clamping negative rounding-error variances but not the covariance)
    dtype = torch.float64 if a.device.type == "cuda" else torch.float32
    out = []
    for i in range(0, len(a), 32):
        x = _gray(_resize(a[i:i + 32], LOW_LEVEL_SIZE).to(dtype))
        y = _gray(_resize(b[i:i + 32].to(a.device), LOW_LEVEL_SIZE).to(dtype))
        _, full = structural_similarity_index_measure(x, y, gaussian_kernel=True, sigma=SSIM_SIGMA,
                                                      kernel_size=SSIM_KERNEL, data_range=1.0, k1=0.01, k2=0.03,
                                                      reduction="none", return_full_image=True)
        # torchmetrics averages the whole map, border included (computed on torch's reflection padding);
        # scikit-image leaves out the (win_size - 1) // 2 border pixels, whose windows leave the image
        pad = (SSIM_KERNEL - 1) // 2
        out.append(full[..., pad:-pad, pad:-pad].double().flatten(1).mean(1).cpu())
    v = torch.cat(out).numpy()
    return v if per_image else float(v.mean())


def _zscore(x: torch.Tensor) -> torch.Tensor:
    x = x.double()
    x = x - x.mean(1, keepdim=True)
    return x / x.norm(dim=1, keepdim=True)  # a constant row gives NaN, as np.corrcoef does


def _row_corr(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return (_zscore(x) * _zscore(y)).sum(1)


def _features(x: Any, what: str) -> torch.Tensor:
    import torch

    t = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x)
    if t.ndim < 2:
        raise UserError(f"{what}: feature matrices must be (n, ...) with one row per image, got shape {tuple(t.shape)}.")
    return t.flatten(1)


def two_way_identification(recon_features: Any, truth_features: Any, *, per_image: bool = False) -> float | np.ndarray:
    """Two-way identification (MindEye2): how often a reconstruction's own ground truth beats another.

    For reconstruction j, the fraction of the N - 1 other ground truths i whose Pearson correlation
    with reconstruction j is strictly lower than that of ground truth j; the mean over j.

    Parameters
    ----------
    recon_features, truth_features : array or tensor, shape (n, ...)
        Row j of both belongs to stimulus j (flattened to ``(n, dim)``).
    per_image : bool
        Return the ``(n,)`` per-reconstruction fractions.

    Returns
    -------
    value : float or numpy.ndarray
        1.0 for perfect reconstructions, about 0.5 at chance.
    """
    import torch

    r_ = _features(recon_features, "recon_features")
    t_ = _features(truth_features, "truth_features")
    if r_.shape != t_.shape:
        raise UserError(f"recon_features {tuple(r_.shape)} and truth_features {tuple(t_.shape)} must have the "
                        f"same shape (one row per stimulus, same feature size).")
    n = r_.shape[0]
    if n < 2:
        raise UserError("two-way identification needs at least 2 stimuli.")
    corr = _zscore(t_) @ _zscore(r_.to(t_.device)).T  # corr[i, j] = r(truth i, recon j)
    own = torch.diagonal(corr)
    score = (corr < own[None, :]).sum(0).double() / (n - 1)  # the diagonal is never below itself
    v = score.cpu().numpy()
    return v if per_image else float(v.mean())


def correlation_distance(recon_features: Any, truth_features: Any, *, per_image: bool = False) -> float | np.ndarray:
    """Mean correlation distance ``1 - r`` between each reconstruction's features and its ground truth's.

    Parameters
    ----------
    recon_features, truth_features : array or tensor, shape (n, ...)
        Row j of both belongs to stimulus j.
    per_image : bool
        Return the ``(n,)`` per-image distances.

    Returns
    -------
    value : float or numpy.ndarray
        0 for identical features; lower is better.
    """
    r_ = _features(recon_features, "recon_features")
    t_ = _features(truth_features, "truth_features")
    if r_.shape != t_.shape:
        raise UserError(f"recon_features {tuple(r_.shape)} and truth_features {tuple(t_.shape)} must have the same shape.")
    v = (1.0 - _row_corr(r_, t_.to(r_.device))).cpu().numpy()
    return v if per_image else float(v.mean())


# --------------------------------------------------------------------------------------------------
# the whole protocol
# --------------------------------------------------------------------------------------------------
_LOW_LEVEL = {"pixcorr": ("PixCorr", pixcorr), "ssim": ("SSIM", ssim)}


def _check_inputs(recons: Mapping[str, Sequence[Any]], truths: Mapping[str, Any]) -> tuple[list[str], int]:
    if not isinstance(recons, Mapping) or not isinstance(truths, Mapping):
        raise UserError("recons and truths must be dicts keyed by stimulus id (recons: id -> list of samples).")
    extra, missing = set(recons) - set(truths), set(truths) - set(recons)
    if extra or missing:
        parts = []
        if extra:
            parts.append(f"reconstructions without ground truth: {sorted(map(str, extra))[:8]}")
        if missing:
            parts.append(f"ground truths without reconstruction: {sorted(map(str, missing))[:8]}")
        raise UserError("stimulus ids of reconstructions and ground truths differ; " + "; ".join(parts) + ".")
    ids = sorted(recons, key=str)
    if len(ids) < 2:
        raise UserError(f"at least 2 stimuli are needed (identification compares with the others), got {len(ids)}.")
    counts = {}
    for sid in ids:
        samples = recons[sid]
        if not isinstance(samples, Sequence) or isinstance(samples, str | bytes):
            samples = [samples]  # a single image per stimulus
        counts[sid] = len(samples)
    k = max(counts.values())
    short = [sid for sid, c in counts.items() if c != k]
    if short or k == 0:
        raise UserError(f"every stimulus needs the same number of samples ({k}); {sorted(short)[:8]} have "
                        f"{sorted({counts[s] for s in short})}.")
    return ids, k


def _samples(recons: Mapping[str, Any], sid: str) -> Sequence[Any]:
    v = recons[sid]
    return v if isinstance(v, Sequence) and not isinstance(v, str | bytes) else [v]


def _summary(values: np.ndarray, higher: bool) -> dict[str, Any]:
    """values: (k rounds, n images) -> rounds, mean, sd, best_of_k."""
    rounds = values.mean(1)
    k = len(rounds)
    best = values.max(0) if higher else values.min(0)
    return {"rounds": rounds.tolist(), "mean": float(rounds.mean()),
            "sd": float(rounds.std(ddof=1)) if k > 1 else None,
            "best_of_k": float(best.mean()) if k > 1 else None, "k": k}


def score_reconstructions(recons: Mapping[str, Sequence[Any]], truths: Mapping[str, Any],
                          networks: Sequence[str] | None = None, device: str = "cpu", *,
                          weights: Mapping[str, str] | None = None, batch_size: int = 32,
                          progress_bar: bool = True, per_stimulus: bool = True) -> dict[str, Any]:
    """Score reconstructions against their ground truths with the whole protocol (module docstring).

    Parameters
    ----------
    recons : dict
        Stimulus id -> list of k samples (images: PIL, files, uint8 or [0, 1] arrays/tensors); every
        stimulus has the same k. A bare image counts as one sample.
    truths : dict
        Stimulus id -> ground-truth image; the same ids as ``recons``.
    networks : sequence of str | None
        Metric networks (:data:`~neurodecode.evaluation.feature_nets.NETWORKS`); ``None``: all of them;
        ``[]``: PixCorr and SSIM only.
    device : str
        ``"cpu"``, ``"cuda"`` or ``"auto"``.
    weights : dict | None
        Where each network's weights are (see :mod:`~neurodecode.evaluation.feature_nets`).
    batch_size : int
        Images per network forward pass.
    progress_bar : bool
        Show a bar over rounds.
    per_stimulus : bool
        Include every per-image value (``"per_stimulus"``: metric -> id -> one value per sample).

    Returns
    -------
    result : dict
        ``format``, ``protocol`` (sizes, settings, networks with layers and weight sources),
        ``stimulus_ids``, ``n_stimuli``, ``n_samples``, ``metrics`` (name -> ``label``, ``kind``,
        ``higher_is_better``, ``chance``, ``rounds``, ``mean``, ``sd``, ``best_of_k``, ``k``),
        ``skipped`` (name -> reason) and optionally ``per_stimulus``.
    """
    from neurodecode.evaluation.feature_nets import (
        DEFAULT_NETWORKS,
        NETWORKS,
        NetworkUnavailable,
        load_feature_extractor,
        network_families,
    )
    from neurodecode.evaluation.recon_stats import identification_permutation_test
    from neurodecode.teachers.models import resolve_device

    ids, k = _check_inputs(recons, truths)
    device = resolve_device(device)
    names = list(DEFAULT_NETWORKS if networks is None else dict.fromkeys(networks))
    families = network_families(names)
    truth_t = images_to_tensor([truths[s] for s in ids], what="truths").to(device)

    extractors, skipped, truth_feats, net_protocol = {}, {}, {}, {}
    for family, nets in families.items():
        try:
            ex = load_feature_extractor(family, sorted({n.layer for n in nets}), weights=weights, device=device)
        except NetworkUnavailable as err:
            for n in nets:
                skipped[n.name] = str(err)
            continue
        extractors[family] = ex
        feats = ex(truth_t, batch_size=batch_size)
        for n in nets:
            truth_feats[n.name] = feats[n.layer]
            net_protocol[n.name] = {"label": n.label, "network": family, "layer": n.layer, "input_size": ex.input_size,
                                    "mean": list(ex.mean), "std": list(ex.std), "metric": n.kind, "weights": ex.source}

    active = [NETWORKS[n] for n in names if n not in skipped]
    per: dict[str, np.ndarray] = {m: np.zeros((k, len(ids))) for m in [*_LOW_LEVEL, *(n.name for n in active)]}
    corrs: dict[str, list[np.ndarray]] = {}
    for s in progress(range(k), enabled=progress_bar, desc="scoring rounds", leave=False):
        rec_t = images_to_tensor([_samples(recons, sid)[s] for sid in ids], what=f"recons (sample {s})").to(device)
        per["pixcorr"][s] = pixcorr(rec_t, truth_t, per_image=True)
        per["ssim"][s] = ssim(rec_t, truth_t, per_image=True)
        by_family: dict[str, dict[str, Any]] = {}
        for n in active:
            if n.family not in by_family:
                by_family[n.family] = extractors[n.family](rec_t, batch_size=batch_size)
            f = by_family[n.family][n.layer]
            fn = two_way_identification if n.kind == "two_way" else correlation_distance
            per[n.name][s] = fn(f, truth_feats[n.name], per_image=True)
            if n.kind == "two_way":  # kept for the permutation test against chance
                corrs.setdefault(n.name, []).append((_zscore(truth_feats[n.name].flatten(1)) @ _zscore(
                    f.flatten(1).to(truth_feats[n.name].device)).T).cpu().numpy())
        del rec_t, by_family

    metrics: dict[str, Any] = {}
    for m, (label, _) in _LOW_LEVEL.items():
        metrics[m] = {"label": label, "kind": m, "higher_is_better": True, "chance": None, **_summary(per[m], True)}
    for n in active:
        higher = n.kind == "two_way"
        metrics[n.name] = {"label": n.label, "kind": n.kind, "higher_is_better": higher,
                           "chance": 0.5 if higher else None, **_summary(per[n.name], higher)}
        if n.name in corrs and len(ids) > 2:
            metrics[n.name]["vs_chance"] = identification_permutation_test(corrs[n.name])
    result: dict[str, Any] = {
        "format": METRICS_FORMAT,
        "protocol": _protocol(names, net_protocol, k, len(ids)),
        "n_stimuli": len(ids), "n_samples": k, "stimulus_ids": [str(s) for s in ids],
        "metrics": metrics, "skipped": skipped,
    }
    if per_stimulus:
        result["per_stimulus"] = {m: {str(sid): per[m][:, j].tolist() for j, sid in enumerate(ids)} for m in metrics}
    return result


def _protocol(names: Sequence[str], nets: Mapping[str, Any], k: int, n: int) -> dict[str, Any]:
    return {
        "conventions": "MindEye2",
        "matching": "by stimulus id",
        "image_size": IMAGE_SIZE,
        "resize": "bilinear (antialiased), float RGB in [0, 1] (uint8 / 255)",
        "pixcorr": {"size": LOW_LEVEL_SIZE, "what": "Pearson r over flattened RGB, mean over images"},
        "ssim": {"size": LOW_LEVEL_SIZE, "gray": "skimage rgb2gray " + str(GRAY_WEIGHTS), "gaussian_weights": True,
                 "sigma": SSIM_SIGMA, "win_size": SSIM_KERNEL, "use_sample_covariance": False, "data_range": 1.0,
                 "implementation": "torchmetrics (float64 on CUDA, float32 on CPU; map cropped by 5 px as in scikit-image), "
                                   "checked against scikit-image"},
        "two_way": "for recon j, share of the N-1 other ground truths less correlated with it than ground truth j",
        "corr_distance": "1 - Pearson r between features of recon and its ground truth, mean over images",
        "networks_requested": list(names),
        "networks": dict(nets),
        "rounds": f"round k = sample k of every stimulus ({k} rounds, {n} stimuli); mean and sd (ddof=1) over rounds",
        "best_of_k": "per stimulus the best of its samples for each metric separately (chosen with the ground "
                     "truth: an upper bound)",
        "vs_chance": "two-way identification against chance: one-sided permutation test over the assignment of "
                     "ground truths to reconstructions (1000 draws, the same for every round)",
    }
