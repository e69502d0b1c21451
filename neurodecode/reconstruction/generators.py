"""Stage 2 by name: parse a generator spec and load the generator it names.

Specs (like the teachers', a name and an optional argument after ``:``):

``demo:PATH``
    A demo generator exported by ``neurodecode fit`` (the small embedding-conditioned diffusion model
    of :mod:`~neurodecode.reconstruction.demo_generator`).
``sdxl-turbo-ip-adapter[:SDXL[+IP_ADAPTER]]``
    ATM's generator, SDXL-Turbo + IP-Adapter. ``SDXL`` is a hub id or a local diffusers folder
    (default ``stabilityai/sdxl-turbo``); ``IP_ADAPTER`` a hub id, a local folder (holding
    ``ip-adapter_sdxl_vit-h.safetensors`` directly or under ``sdxl_models/``) or the weights file
    itself (default ``h94/IP-Adapter``, ``sdxl_models/ip-adapter_sdxl_vit-h.safetensors``). Either
    part may be left empty for its default (``sdxl-turbo-ip-adapter:+DIR``).
``unclip[:SOURCE]``
    Stable unCLIP, a hub id or local folder (default ``stabilityai/stable-diffusion-2-1-unclip``).

A local folder is used when it exists; any other argument is a hub id, loaded (or downloaded) by
diffusers; when the hub cannot be reached the error says how to pass a local folder instead.
"""

from __future__ import annotations

import difflib
import inspect
from dataclasses import dataclass
from pathlib import Path

from neurodecode.reconstruction.base import Generator
from neurodecode.teachers.models import resolve_device
from neurodecode.utils import UserError, logger

__all__ = ["GENERATORS", "GeneratorFactory", "GeneratorSpec", "list_generators", "parse_generator_spec", "load_generator",
           "DEFAULT_SDXL", "DEFAULT_IP_ADAPTER", "DEFAULT_UNCLIP"]

DEFAULT_SDXL = "stabilityai/sdxl-turbo"
DEFAULT_IP_ADAPTER = "h94/IP-Adapter"
DEFAULT_IP_ADAPTER_SUBFOLDER = "sdxl_models"
DEFAULT_UNCLIP = "stabilityai/stable-diffusion-2-1-unclip"

#: generator names and what they are
GENERATORS: dict[str, str] = {
    "demo": "demo:PATH - a demo generator folder exported by `neurodecode fit` (trained on your images)",
    "sdxl-turbo-ip-adapter": f"sdxl-turbo-ip-adapter[:SDXL[+IP_ADAPTER]] - SDXL-Turbo + IP-Adapter, ATM's generator "
                             f"(default {DEFAULT_SDXL} + {DEFAULT_IP_ADAPTER})",
    "unclip": f"unclip[:SOURCE] - Stable unCLIP (default {DEFAULT_UNCLIP})",
}


def list_generators() -> list[str]:
    """One line per generator spec form: ``"name[:ARG] - what it is"``."""
    return list(GENERATORS.values())


@dataclass(frozen=True)
class GeneratorSpec:
    """A parsed generator spec.

    Attributes
    ----------
    spec : str
        The spec string (stripped).
    name : str
        ``"demo"``, ``"sdxl-turbo-ip-adapter"`` or ``"unclip"``.
    args : tuple of str
        The ``+``-separated parts of the argument after ``:`` (empty strings for defaults).
    """

    spec: str
    name: str
    args: tuple[str, ...]


def parse_generator_spec(spec: str) -> GeneratorSpec:
    """Split ``spec`` into its name and arguments; a clear error for unknown names.

    Raises
    ------
    neurodecode.utils.UserError
        Unknown name (with a did-you-mean), or ``demo`` without a path.
    """
    text = str(spec).strip()
    name, sep, arg = text.partition(":")
    name = name.strip().lower()
    if name not in GENERATORS:
        close = [g for g in GENERATORS if name and g.startswith(name)] or \
            difflib.get_close_matches(name, list(GENERATORS), n=1, cutoff=0.5)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise UserError(f"unknown generator {text!r}.{hint} Known generators: " + "; ".join(list_generators()))
    if name == "demo":
        if not arg.strip():
            raise UserError(f"generator {text!r}: give the demo generator's folder, 'demo:PATH' "
                            f"(a folder exported by `neurodecode fit` with a generator config).")
        return GeneratorSpec(text, name, (arg.strip(),))
    if name == "unclip":
        return GeneratorSpec(text, name, (arg.strip(),))
    sdxl, _, ip = arg.rpartition("+") if "+" in arg else (arg, "", "")
    return GeneratorSpec(text, name, (sdxl.strip(), ip.strip()))


def _looks_like_path(text: str) -> bool:
    return (text.startswith((".", "/", "~", "\\")) or text.count("/") > 1 or "\\" in text
            or text.endswith((".safetensors", ".bin", ".json")))


def resolve_source(text: str, default: str, *, what: str, spec: str) -> str:
    """A local folder/file when ``text`` names one, else a hub id (``default`` when empty).

    Raises
    ------
    neurodecode.utils.UserError
        ``text`` looks like a path but nothing is there.
    """
    if not text:
        return default
    path = Path(text).expanduser()
    if path.exists():
        return str(path)
    if _looks_like_path(text):
        raise UserError(f"generator {spec!r}: the {what} {text!r} does not exist; give an existing local folder "
                        f"or a hub id like {default!r}.")
    return text


def resolve_ip_adapter(source: str, *, spec: str) -> tuple[str, str | None, str]:
    """``(source, subfolder, weight_name)`` for ``load_ip_adapter`` from a hub id, folder or file."""
    from neurodecode.reconstruction.diffusers_generators import IP_ADAPTER_WEIGHT

    path = Path(source)
    if not path.exists():  # a hub id: the hub layout
        return source, DEFAULT_IP_ADAPTER_SUBFOLDER, IP_ADAPTER_WEIGHT
    if path.is_file():
        return str(path), None, path.name
    if (path / IP_ADAPTER_WEIGHT).is_file():
        return str(path), None, IP_ADAPTER_WEIGHT
    if (path / DEFAULT_IP_ADAPTER_SUBFOLDER / IP_ADAPTER_WEIGHT).is_file():
        return str(path), DEFAULT_IP_ADAPTER_SUBFOLDER, IP_ADAPTER_WEIGHT
    found = sorted(str(p.relative_to(path)) for p in [*path.glob("*.safetensors"), *path.glob("*/*.safetensors")])
    raise UserError(f"generator {spec!r}: no {IP_ADAPTER_WEIGHT} in {str(path)!r} or its "
                    f"{DEFAULT_IP_ADAPTER_SUBFOLDER}/ (found: {', '.join(found) or 'no .safetensors'}); name the "
                    f"weights file itself after '+'.")


def load_generator(spec: str, *, device: str = "auto", batch_size: int = 8, attention_slicing: bool = False,
                   cpu_offload: bool = False, steps: int | None = None, guidance: float | None = None) -> Generator:
    """Load the generator named by ``spec``.

    Parameters
    ----------
    spec : str
        ``"demo:PATH"``, ``"sdxl-turbo-ip-adapter[:SDXL[+IP_ADAPTER]]"`` or ``"unclip[:SOURCE]"``
        (see the module docstring and :func:`list_generators`).
    device : str
        ``"auto"`` (CUDA when present), ``"cpu"``, ``"cuda"``, ``"cuda:1"``... fp16 on CUDA, fp32 on CPU.
    batch_size : int
        Images per pipeline call.
    attention_slicing : bool
        Compute attention in slices (less memory, slower).
    cpu_offload : bool
        Keep the models on the CPU and move each to the GPU while it runs (needs ``accelerate`` and CUDA).
    steps, guidance : int | None, float | None
        Denoising steps and guidance scale; ``None`` keeps the generator's protocol (SDXL-Turbo: 4 and 0;
        unCLIP: 20 and 10; the demo generator: its exported values).

    Returns
    -------
    Generator
    """
    parsed = parse_generator_spec(spec)
    dev = resolve_device(device)
    if parsed.name == "demo":
        return _load_demo(parsed, device=dev, batch_size=batch_size, steps=steps, guidance=guidance,
                          attention_slicing=attention_slicing, cpu_offload=cpu_offload)
    from neurodecode.reconstruction.diffusers_generators import SDXLTurboIPAdapter, StableUnCLIP

    common = dict(spec=parsed.spec, device=dev, batch_size=batch_size, steps=steps, guidance=guidance,
                  attention_slicing=attention_slicing, cpu_offload=cpu_offload)
    if parsed.name == "unclip":
        source = resolve_source(parsed.args[0], DEFAULT_UNCLIP, what="Stable unCLIP folder", spec=parsed.spec)
        return StableUnCLIP.from_pretrained(source, **common)
    sdxl = resolve_source(parsed.args[0], DEFAULT_SDXL, what="SDXL folder", spec=parsed.spec)
    ip = resolve_source(parsed.args[1], DEFAULT_IP_ADAPTER, what="IP-Adapter folder or file", spec=parsed.spec)
    ip_source, subfolder, weight = resolve_ip_adapter(ip, spec=parsed.spec)
    return SDXLTurboIPAdapter.from_pretrained(sdxl, ip_source, subfolder=subfolder, weight_name=weight, **common)


def _load_demo(parsed: GeneratorSpec, *, device: str, **options) -> Generator:
    """``DemoGenerator.from_pretrained(PATH, device=...)`` with the options it accepts.

    Memory options (attention slicing, CPU offload) have nothing to act on in the small demo model and
    are dropped when it does not take them; ``steps`` / ``guidance`` it does not take are an error.
    """
    from neurodecode.reconstruction.demo_generator import DemoGenerator

    path = Path(parsed.args[0]).expanduser()
    if not path.exists():
        raise UserError(f"generator {parsed.spec!r}: the demo generator folder {str(path)!r} does not exist; export "
                        f"one with `neurodecode fit` (a generator config) or give its folder.")
    accepted = set(_keyword_names(DemoGenerator.from_pretrained, DemoGenerator.__init__))
    kwargs = {}
    for key, value in options.items():
        if key in accepted:
            kwargs[key] = value
        elif key in ("steps", "guidance") and value is not None:
            raise UserError(f"generator {parsed.spec!r}: the demo generator has no {key!r} option; leave it out.")
        elif value not in (None, False):
            logger.info("generator %r: %s does not apply to the demo generator; ignored", parsed.spec, key)
    gen = DemoGenerator.from_pretrained(path, device=device, **kwargs)
    gen.spec = parsed.spec
    return gen


def _keyword_names(*functions) -> list[str]:
    """Keyword parameters of ``functions[0]``, following ``**kwargs`` on to the next function."""
    names: list[str] = []
    for fn in functions:
        params = inspect.signature(fn).parameters.values()
        names += [p.name for p in params if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)]
        if not any(p.kind is p.VAR_KEYWORD for p in params):
            break
    return names


@dataclass(frozen=True)
class GeneratorFactory:
    """A picklable recipe for a generator: ``factory(device)`` calls :func:`load_generator` on that device.

    Each rank of a sharded run builds its own generator from it (a pipeline does not travel between
    processes).

    Parameters
    ----------
    spec : str
        The generator spec.
    options : tuple of (str, value)
        Keyword arguments of :func:`load_generator` other than ``device``.
    """

    spec: str
    options: tuple[tuple[str, object], ...] = ()

    def __call__(self, device: str = "auto") -> Generator:
        return load_generator(self.spec, device=device, **dict(self.options))
