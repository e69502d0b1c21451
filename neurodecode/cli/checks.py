"""Checks of the command line that run before the heavy imports (torch, Lightning): a wrong path, a
YAML file that does not parse, a bad ``--seeds`` or a file that is no checkpoint fail in well under a
second, with one line that names the file or option and the fix (:class:`~neurodecode.utils.UserError`).

Only the standard library and PyYAML are imported here.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

from neurodecode.utils import UserError

__all__ = ["check_checkpoint", "packaged_config", "packaged_configs", "parse_int_list", "precheck_lightning"]

# the first bytes of the files torch.save writes: a zip archive (torch >= 1.6) or a legacy pickle
_TORCH_MAGIC = (b"PK\x03\x04", b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05")
_CKPT_KEYWORDS = ("last", "best", "hpc", "registry")


def packaged_configs() -> list[str]:
    """The default configs shipped inside the package, as ``sim/eeg_atm.yaml`` etc."""
    root = resources.files("neurodecode") / "configs"
    out = []

    def walk(node, prefix: str) -> None:
        for child in sorted(node.iterdir(), key=lambda c: c.name):
            if child.is_dir():
                walk(child, f"{prefix}{child.name}/")
            elif child.name.endswith((".yaml", ".yml")):
                out.append(prefix + child.name)

    if root.is_dir():
        walk(root, "")
    return out


def packaged_config(name: str) -> Path:
    """The path of the packaged default config ``name`` (e.g. ``"sim/eeg_atm.yaml"``).

    Found through :mod:`importlib.resources`, so it works from an installed wheel, outside a checkout.
    """
    node = resources.files("neurodecode") / "configs"
    for part in name.split("/"):
        node = node / part
    if not node.is_file():
        raise UserError(f"no packaged config '{name}'; the shipped ones are: {', '.join(packaged_configs())}.")
    return Path(str(node))


def parse_int_list(value: str, option: str, example: str = "0,1,2") -> list[int]:
    """``"0,1,2"`` -> ``[0, 1, 2]``; a one-line :class:`UserError` naming ``option`` otherwise."""
    items = [s.strip() for s in str(value).replace("[", "").replace("]", "").split(",") if s.strip()]
    bad = [s for s in items if not s.lstrip("-").isdigit()]
    if bad or not items:
        what = f"'{bad[0]}' is not an integer" if bad else "no value given"
        raise UserError(f"{option} {value!r}: {what}. Give a comma-separated list of integers, e.g. "
                        f"{option} {example}")
    return [int(s) for s in items]


def _option_value(argv: Sequence[str], name: str) -> str | None:
    """The last value of ``--name VALUE`` / ``--name=VALUE`` in ``argv``."""
    value = None
    for i, a in enumerate(argv):
        if a == name and i + 1 < len(argv):
            value = argv[i + 1]
        elif a.startswith(name + "="):
            value = a.split("=", 1)[1]
    return value


def _load_yaml(path: Path) -> dict:
    import yaml

    try:
        cfg = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise UserError(f"config {path}:{where}: {problem} (a YAML syntax error, often the indentation: nested "
                        f"keys need 2 more spaces than their parent).") from None
    except UnicodeDecodeError:
        raise UserError(f"config {path} is not a text (YAML) file.") from None
    if cfg is None:
        return {}
    if not isinstance(cfg, dict):
        raise UserError(f"config {path} holds a {type(cfg).__name__}, not a mapping of keys (trainer:, model:, "
                        f"data:, ...).")
    return cfg


def _resolve_config(given: str) -> str:
    p = Path(given)
    if p.is_file():
        return given
    if p.is_dir():
        raise UserError(f"-c {given} is a folder; give a YAML config file, e.g. -c configs/sim/eeg_atm.yaml.")
    parts = p.parts
    if "configs" in parts:  # README commands (configs/sim/eeg_atm.yaml) outside a checkout
        name = "/".join(parts[parts.index("configs") + 1:])
        if name in packaged_configs():
            found = str(packaged_config(name))
            print(f"neurodecode: no {given} here; using the packaged copy {found}", file=sys.stderr)
            return found
    shipped = ", ".join(f"configs/{c}" for c in packaged_configs())
    raise UserError(f"config file '{given}' (-c) not found. Give the path of a YAML config; shipped: {shipped}.")


def check_checkpoint(path: str | Path, option: str, exported: bool = True) -> Path:
    """Check that ``path`` is a file torch.save wrote (or, if ``exported``, a folder of ``neurodecode
    export``); a one-line :class:`UserError` otherwise."""
    p = Path(path)
    fix = "give a .ckpt written by 'neurodecode fit' (in <run>/checkpoints/)"
    if exported:
        fix += " or a folder of 'neurodecode export'"
    if p.is_dir():
        if exported and (p / "config.json").is_file() and (p / "model.safetensors").is_file():
            return p
        what = "a folder without config.json and model.safetensors" if exported else "a folder"
        raise UserError(f"{option} {p}: {what}, not a checkpoint; {fix}.")
    if not p.exists():
        raise UserError(f"{option} {p}: no such file; {fix}.")
    with open(p, "rb") as fh:
        head = fh.read(4)
    if not head.startswith(_TORCH_MAGIC):
        raise UserError(f"{option} {p} is not a neurodecode checkpoint (not a file written by torch.save); {fix}.")
    return p


def precheck_lightning(command: str, argv: Sequence[str]) -> list[str]:
    """Cheap checks of ``neurodecode fit|validate|test|predict`` arguments; returns ``argv`` with
    ``-c configs/...`` resolved to the packaged config when there is no such file here."""
    argv = list(argv)
    out = []
    i = 0
    files: list[str] = []
    while i < len(argv):
        a = argv[i]
        if a in ("-c", "--config") and i + 1 < len(argv):
            path = _resolve_config(argv[i + 1])
            files.append(path)
            out += [a, path]
            i += 2
            continue
        if a.startswith(("-c=", "--config=")):
            path = _resolve_config(a.split("=", 1)[1])
            files.append(path)
            a = a.split("=", 1)[0] + "=" + path
        out.append(a)
        i += 1
    yamls = {f: _load_yaml(Path(f)) for f in files}
    seeds = _option_value(out, "--seeds")
    if seeds is not None:
        parse_int_list(seeds, "--seeds")
    if any(a in ("-h", "--help", "--print_config") or a.startswith("--print_config=") for a in out):
        return out  # printing the config needs no data
    root, source = _option_value(out, "--data.root"), "--data.root"
    if root is None:
        for f in reversed(files):
            data = yamls[f].get("data")
            if isinstance(data, dict) and data.get("root") is not None:
                root, source = str(data["root"]), f"data.root in {f}"
                break
    if root is not None:
        p = Path(root)
        if p.is_file():
            raise UserError(f"{source}: {root} is a file; give the folder written by 'neurodecode prepare' or "
                            f"'neurodecode simulate' (it holds dataset.json and sub-*.h5).")
        if not p.exists():
            raise UserError(f"{source}: folder {root} does not exist; make it with 'neurodecode simulate --out "
                            f"{root}' or 'neurodecode prepare ... --out {root}', or pass --data.root DIR.")
    ckpt = _option_value(out, "--ckpt_path")
    if ckpt is not None and ckpt not in _CKPT_KEYWORDS and ckpt.lower() not in ("null", "none"):
        p = Path(ckpt)
        if p.is_dir() or not p.exists():
            raise UserError(f"--ckpt_path {ckpt}: no such checkpoint file; give a .ckpt written by 'neurodecode "
                            f"fit', or 'last' to resume the run in trainer.default_root_dir.")
        check_checkpoint(p, "--ckpt_path", exported=False)
    return out


def debug_requested(argv: Sequence[str]) -> bool:
    """``--debug`` anywhere in ``argv`` or ``NEURODECODE_DEBUG=1`` in the environment."""
    return "--debug" in argv or os.environ.get("NEURODECODE_DEBUG", "").strip().lower() in ("1", "true", "yes")
