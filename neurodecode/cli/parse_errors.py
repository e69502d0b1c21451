"""One-line explanations of LightningCLI / jsonargparse parse errors.

jsonargparse reports a typo in a nested class (``model.init_args.loss.init_args.contrastiv``) as a tree
of every ``Union`` subtype it tried, 20-110 lines long. :func:`explain_parse_error` reads that tree,
keeps its innermost real error, and says it in one line: the file (or "the command line"), the dotted
key, what is wrong and a did-you-mean from the arguments the class really takes.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import re
from collections.abc import Sequence
from pathlib import Path

__all__ = ["explain_parse_error", "config_files"]

# the top-level sections of the fit/validate/test/predict parsers and the class each one configures
SECTIONS = {
    "trainer": "lightning.pytorch.Trainer",
    "model": None,
    "data": "neurodecode.training.data.BrainImageDataModule",
    "checkpoint": "lightning.pytorch.callbacks.ModelCheckpoint",
    "early_stopping": "lightning.pytorch.callbacks.EarlyStopping",
    "optimizer": None, "lr_scheduler": None, "seed_everything": None, "ckpt_path": None,
    "test_after_fit": None, "weights_only": None, "config": None, "print_config": None,
}
_STRUCTURE = ("Does not validate against", "Subtypes:", "Errors:", "Given value", "- Expected a <class 'NoneType'>",
              "Expected a <class 'NoneType'>")


def config_files(argv: Sequence[str]) -> list[str]:
    """The ``-c`` / ``--config`` files of ``argv``, in order."""
    out = []
    for i, a in enumerate(argv):
        if a in ("-c", "--config") and i + 1 < len(argv):
            out.append(argv[i + 1])
        elif a.startswith(("-c=", "--config=")):
            out.append(a.split("=", 1)[1])
    return out


def _import(path: str):
    mod, _, name = path.rpartition(".")
    try:
        return getattr(importlib.import_module(mod), name)
    except (ImportError, AttributeError, ValueError):
        return None


def _arguments(target) -> list[str]:
    """The keyword arguments a class (or its import path) accepts."""
    cls = _import(target) if isinstance(target, str) else target
    if cls is None:
        return []
    names: list[str] = []
    for klass in inspect.getmro(cls) if inspect.isclass(cls) else [cls]:
        init = getattr(klass, "__init__", None)
        try:
            params = inspect.signature(init).parameters.values()
        except (TypeError, ValueError):
            continue
        names += [p.name for p in params if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
        if not any(p.kind == p.VAR_KEYWORD for p in params):
            break
    return list(dict.fromkeys(names))


def _did_you_mean(word: str, candidates: Sequence[str], fmt: str = "'{}'") -> str:
    close = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return f" Did you mean {fmt.format(close[0])}?" if close else ""


def _where(needle: str, files: Sequence[str], key_pattern: bool) -> str:
    """The last ``-c`` file whose text holds ``needle`` (a YAML key or a value), else the command line."""
    pat = re.compile(rf"^\s*{re.escape(needle)}\s*:" if key_pattern else re.escape(needle), re.M)
    for f in reversed(list(files)):
        try:
            if pat.search(Path(f).read_text()):
                return f
        except OSError:
            continue
    return "the command line"


def _leaf_and_path(message: str) -> tuple[str, list[tuple[str, str]]]:
    """The innermost error line of a jsonargparse error tree and its ancestors (kind, value)."""
    stack: list[tuple[int, str, str]] = []
    for line in message.splitlines():
        text = line.strip()
        if not text:
            continue
        indent = len(line) - len(line.lstrip())
        while stack and stack[-1][0] >= indent:
            stack.pop()
        m = re.match(r'(?:- )?Parser key "([^"]+)":', text)
        if m:
            stack.append((indent, "key", m.group(1)))
            continue
        m = re.match(r"(?:- )?Problem with given class_path '([^']+)':", text)
        if m:
            stack.append((indent, "class", m.group(1)))
            continue
        if text.startswith(_STRUCTURE):
            continue
        return text.lstrip("- "), [(k, v) for _, k, v in stack]
    return message.strip().splitlines()[0] if message.strip() else message, []


def explain_parse_error(message: str, argv: Sequence[str]) -> str:
    """One line for a jsonargparse error ``message`` raised while parsing ``argv``."""
    files = config_files(argv)
    leaf, ancestors = _leaf_and_path(message)
    key_parts: list[str] = []
    cls = None
    for kind, value in ancestors:
        if kind == "key":
            if key_parts:
                key_parts.append("init_args")
            key_parts.append(value)
        else:
            cls = value
    key = ".".join(key_parts)

    m = re.match(r"unrecognized arguments: (\S+)", leaf, re.I)
    if m:
        opt = m.group(1).split("=", 1)[0]
        return f"unknown option {opt} (abbreviations are not accepted).{_option_hint(opt)}"

    m = re.match(r"module '([^']+)' has no attribute '([^']+)'", leaf)
    if m:
        module, name = m.groups()
        try:
            mod = importlib.import_module(module)
            names = [n for n, v in vars(mod).items() if inspect.isclass(v) and not n.startswith("_")]
        except ImportError:
            names = []
        where = _where(f"{module}.{name}", files, key_pattern=False)
        hint = _did_you_mean(name, names, fmt=f"'{module}.{{}}'")
        return f"{where}: {key or 'class_path'}.class_path: no class '{name}' in {module}.{hint}"

    m = re.match(r"No module named '([^']+)'", leaf)
    if m:
        where = _where(cls or m.group(1), files, key_pattern=False)
        return f"{where}: {key or 'class_path'}.class_path '{cls or m.group(1)}': no module named '{m.group(1)}'."

    m = re.match(r"(?:Option|.*does not accept option) '([^']+)'(?: is not accepted)?", leaf)
    if m:
        opt = m.group(1)
        if cls is not None:
            name = opt.split(".")[-1]
            where = _where(name, files, key_pattern=True)
            full = ".".join(filter(None, [key, "init_args", opt]))
            hint = _did_you_mean(name, _arguments(cls))
            return f"{where}: {full}: '{name}' is not an argument of {cls}.{hint}"
        where = _where(opt.split(".")[-1], files, key_pattern=True)
        return f"{where}: unknown key '{opt}'.{_option_hint('--' + opt, prefix='')}"

    where = files[-1] if files else "the command line"
    return f"{where}: {key + ': ' if key else ''}{leaf}"


def _option_hint(opt: str, prefix: str = "--") -> str:
    """A did-you-mean for a dotted option (``--trainer.max_epoch`` -> ``--trainer.max_epochs``)."""
    parts = opt.lstrip("-").split(".")
    head = parts[0]
    if head not in SECTIONS:
        rest = "".join("." + p for p in parts[1:])
        return _did_you_mean(head, list(SECTIONS), fmt=f"'{prefix}{{}}{rest}'")
    if len(parts) == 2 and SECTIONS[head]:
        return _did_you_mean(parts[1], _arguments(SECTIONS[head]), fmt=f"'{prefix}{head}.{{}}'")
    return ""
