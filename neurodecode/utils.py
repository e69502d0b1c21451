"""Small shared helpers: atomic writes, input validation, logging and progress.

Everything here is dependency-light so that ``import neurodecode`` stays fast.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger("neurodecode")

PathLike = str | os.PathLike
_LEVELS = {"DEBUG": 10, "INFO": 20, "WARNING": 30, "ERROR": 40, "CRITICAL": 50}


# --------------------------------------------------------------------------------------------------
# logging / verbosity (MNE-style ``verbose=`` arguments)
# --------------------------------------------------------------------------------------------------
def set_log_level(verbose: bool | str | int | None = None) -> int:
    """Set the package's log level, MNE-style.

    Parameters
    ----------
    verbose : bool | str | int | None
        ``True`` means ``"INFO"``, ``False`` means ``"WARNING"``, ``None`` leaves the level alone,
        a string is a level name and an int a level number.

    Returns
    -------
    level : int
        The previous level, so that callers can restore it.
    """
    old = logger.level
    if verbose is None:
        return old
    if isinstance(verbose, bool):
        level = logging.INFO if verbose else logging.WARNING
    elif isinstance(verbose, str):
        name = verbose.upper()
        if name not in _LEVELS:
            raise ValueError(f"verbose must be a bool, an int or one of {sorted(_LEVELS)}, got {verbose!r}")
        level = _LEVELS[name]
    else:
        level = int(verbose)
    logger.setLevel(level)
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
    return old


@contextlib.contextmanager
def use_log_level(verbose: bool | str | int | None) -> Iterator[None]:
    """Temporarily set the package's log level (no-op for ``None``)."""
    old = set_log_level(verbose)
    try:
        yield
    finally:
        logger.setLevel(old)


@contextlib.contextmanager
def quiet_loggers(names: Sequence[str], level: int = logging.WARNING) -> Iterator[None]:
    """Temporarily raise the level of the named loggers (``""`` is the root logger) to ``level``.

    Used around third-party code that logs at INFO on every call (Lightning's trainer banner,
    open_clip's and timm's model-creation messages); the previous levels are restored on exit.
    """
    loggers = [logging.getLogger(n) if n else logging.getLogger() for n in names]
    old = [lg.level for lg in loggers]
    try:
        for lg in loggers:
            if lg.getEffectiveLevel() < level:
                lg.setLevel(level)
        yield
    finally:
        for lg, lvl in zip(loggers, old, strict=True):
            lg.setLevel(lvl)


def progress(iterable: Iterable | None = None, *, enabled: bool = True, **kwargs: Any):
    """Wrap ``iterable`` in a ``tqdm.auto`` bar, or return it unchanged when ``enabled`` is False.

    The environment variable ``NEURODECODE_NO_PROGRESS=1`` switches every bar off.
    """
    if not enabled or os.environ.get("NEURODECODE_NO_PROGRESS", "") not in ("", "0"):
        if iterable is None:
            return _NullBar()
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, **kwargs)


class _NullBar:
    """Stand-in for a manual tqdm bar when progress is switched off."""

    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass

    def set_postfix(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __enter__(self) -> _NullBar:
        return self

    def __exit__(self, *exc: Any) -> None:
        pass


# --------------------------------------------------------------------------------------------------
# atomic writing
# --------------------------------------------------------------------------------------------------
@contextlib.contextmanager
def atomic_path(path: PathLike, *, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` only on success.

    The temporary file lives in the destination directory so the final ``os.replace`` is an
    atomic rename on POSIX file systems: readers see either the old file or the complete new one,
    never a half-written file. On error the temporary file is removed and ``path`` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        dir=path.parent, prefix=f".{path.name}.", suffix=suffix if suffix is not None else ".tmp"
    )
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp creates 0600 files; give the result the permissions a plain open() would
        umask = os.umask(0)
        os.umask(umask)
        with contextlib.suppress(FileNotFoundError):
            os.chmod(tmp_path, 0o666 & ~umask)
        os.replace(tmp_path, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


def atomic_write_text(path: PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` atomically (UTF-8)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def atomic_write_json(path: PathLike, obj: Any, *, indent: int = 2) -> Path:
    """Write ``obj`` as JSON to ``path`` atomically; numpy scalars and arrays are converted."""
    return atomic_write_text(path, json.dumps(obj, indent=indent, default=_json_default) + "\n")


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "detach") and hasattr(obj, "tolist"):  # a torch tensor (torch is not imported here)
        return obj.detach().cpu().tolist()
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serialisable")


def to_jsonable(obj: Any, *, allow_nan: bool = True) -> Any:
    """Round-trip ``obj`` through JSON to get plain Python types (tuples become lists; numpy arrays and
    scalars, torch tensors and paths are converted).

    Parameters
    ----------
    obj : object
        What to convert.
    allow_nan : bool
        With ``False``, a NaN or infinite float raises a ``ValueError`` (strict JSON, e.g. model configs).
    """
    try:
        return json.loads(json.dumps(obj, default=_json_default, allow_nan=allow_nan))
    except ValueError as err:
        raise ValueError(f"cannot convert a non-finite value to strict JSON ({err}).") from None


# --------------------------------------------------------------------------------------------------
# user errors
# --------------------------------------------------------------------------------------------------
class UserError(ValueError):
    """A mistake the user can fix (a wrong path, option or file): the command line prints its message
    as one or two lines and exits with status 2, without a traceback (``--debug`` shows it).

    The message says what is wrong, which file or option, and how to fix it.
    """


# --------------------------------------------------------------------------------------------------
# validation (MNE-style messages: name the argument, the allowed values and what was given)
# --------------------------------------------------------------------------------------------------
def check_option(name: str, value: Any, allowed: Sequence[Any]) -> Any:
    """Raise a ``ValueError`` naming ``name`` and ``allowed`` if ``value`` is not allowed."""
    if value not in allowed:
        raise ValueError(f"Invalid value for the '{name}' parameter. Allowed values are "
                         f"{', '.join(repr(a) for a in allowed)}, but got {value!r} instead.")
    return value


def check_finite(array: np.ndarray, *, what: str, where: str = "", fix: str = "") -> None:
    """Raise a ``ValueError`` if ``array`` holds NaN or Inf, saying where the first one is."""
    arr = np.asarray(array)
    if not np.issubdtype(arr.dtype, np.floating):
        return
    bad = ~np.isfinite(arr)
    if bad.any():
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        kind = "NaN" if np.isnan(arr[first]) else "Inf"
        msg = f"{where + ': ' if where else ''}{what} contains {int(bad.sum())} non-finite value(s) " \
              f"(first {kind} at index {first})."
        if fix:
            msg += f" {fix}"
        raise ValueError(msg)


def shared_data_dir() -> Path | None:
    """The folder of real recordings: ``$NEURODECODE_SHARED_DATA`` or ``../shared/data``.

    Returns ``None`` when neither exists.
    """
    env = os.environ.get("NEURODECODE_SHARED_DATA")
    candidates = [Path(env)] if env else []
    candidates.append(Path.cwd().parent / "shared" / "data")
    candidates.append(Path(__file__).resolve().parents[2] / "shared" / "data")
    for c in candidates:
        if c.is_dir():
            return c
    return None


def lazy_exports(package: str, exports: dict[str, tuple[str, ...]]) -> tuple[list[str], Any, Any]:
    """``__all__``, ``__getattr__`` and ``__dir__`` of a package whose names load on first use (PEP 562).

    Parameters
    ----------
    package : str
        The package's ``__name__``.
    exports : dict
        Submodule name -> the names it exports.

    Returns
    -------
    all_, getattr_, dir_
        Assign them to ``__all__``, ``__getattr__`` and ``__dir__`` in the package's ``__init__``.
    """
    import importlib
    import sys

    where = {name: module for module, names in exports.items() for name in names}

    def getattr_(name: str) -> Any:
        if name in where:
            value = getattr(importlib.import_module(f".{where[name]}", package), name)
            setattr(sys.modules[package], name, value)
            return value
        if name in exports:
            return importlib.import_module(f".{name}", package)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def dir_() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(where) | set(exports))

    return sorted(where), getattr_, dir_
