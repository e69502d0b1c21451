"""Reading pickled ``.npy`` files from the internet without running their code.

THINGS-EEG2 ships its EEG as Python dictionaries in files named ``*.npy``, in two containers:

* a **bare pickle** (protocol 4) with a ``.npy`` name: the community 250 Hz release of NICE/ATM,
  written with ``pickle.dump``;
* a **real** ``.npy`` **file holding a 0-d object array**: the official release and the raw data,
  written with ``np.save`` of a dict (users read them with ``np.load(allow_pickle=True).item()``).

Unpickling runs whatever callables the file names, so a file from the internet could run any
code. This module never calls ``pickle.load`` or ``np.load(allow_pickle=True)`` on such a file.
It parses the ``.npy`` header with :mod:`numpy.lib.format` and unpickles the payload with a
*restricted* unpickler that resolves only the few globals numpy's own pickles need
(``_reconstruct``, ``ndarray``, ``dtype``, ``scalar`` and ``_frombuffer``, under both the
``numpy.core`` and the ``numpy._core`` module names; and ``_codecs.encode`` and ``bytes``
limited to the way protocol-2 pickles spell bytes). Lists, dicts, tuples, strings, bytes,
numbers, booleans and ``None`` are built by pickle opcodes and need no global. Anything else
(``os.system``, ``builtins.eval``, any other class or callable) is refused with an
:class:`UnsafePickleError` naming the file and the global. The object-building opcodes that
numpy never emits (``OBJ``, ``INST``, ``NEWOBJ``, ``NEWOBJ_EX``, persistent ids) are refused as
well, and ``BUILD`` is only allowed on numpy arrays and dtypes.

Large arrays need not be read at all. Unpickling normally reads every array into memory (a
THINGS-EEG2 community training file holds 8.3 GB of float64). Here, payloads of at least
``defer_bytes`` that sit in the file outside a pickle frame (where pickle protocols 3 to 5 put
large ``bytes``) are skipped when the opcode is met; the array is then either memory-mapped
read-only from the file (``mmap=True``: pages are read when used and can be dropped again) or
read straight into its final buffer (``mmap=False``: memory = the array itself).

This relies on the pure-Python unpickler (:class:`pickle._Unpickler`), whose opcode table can be
extended; the restriction itself only uses the documented ``find_class`` hook and refusing
opcodes, and the tests pin the behaviour for pickle protocols 2 to 5.

The module is one cohesive thing that reads better whole (about 500 lines): the restricted unpickler,
its allow-list and its deferred reading of large payloads are one security boundary, and the
loaders at the end (:func:`restricted_load`, :func:`load_npy`, :func:`load_pickled_dict`) are its
only entry points; split, the allow-list and the opcode handling would have to be read together
anyway.
"""

from __future__ import annotations

import _compat_pickle
import io
import os
import pickle
import struct
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from neurodecode.utils import PathLike

__all__ = [
    "UnsafePickleError",
    "detect_container",
    "load_npy",
    "load_pickled_dict",
    "restricted_load",
    "restricted_loads",
]

NPY_MAGIC = b"\x93NUMPY"
PICKLE_PROTO = 0x80
_DEFAULT_DEFER = 1 << 20  # payloads of at least 1 MiB are read lazily


class UnsafePickleError(pickle.UnpicklingError):
    """A pickle that asks for something this reader does not allow (a callable, a class...)."""


# --------------------------------------------------------------------------------------------------
# the allowed globals
# --------------------------------------------------------------------------------------------------
def _frombuffer_reference():
    # numpy's own helper for protocol-5 pickles; found through numpy itself so that the module
    # that holds it (numpy.core / numpy._core) does not matter.
    return np.arange(2).__reduce_ex__(5)[0]


def _allowed_globals() -> dict[tuple[str, str], Any]:
    """``(module, name) -> object`` for every global a numpy pickle may name."""
    reconstruct = np.ndarray((0,)).__reduce__()[0]
    scalar = np.float64(0).__reduce__()[0]
    allowed: dict[tuple[str, str], Any] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
    }
    for mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed[(mod, "_reconstruct")] = reconstruct
        allowed[(mod, "scalar")] = scalar
    # "_frombuffer" is mapped to the unpickler's own wrapper (see _RestrictedUnpickler.find_class)
    for mod in ("numpy.core.numeric", "numpy._core.numeric"):
        allowed[(mod, "_frombuffer")] = _frombuffer_reference
    # protocol 2 stores bytes as _codecs.encode(text, "latin1") and b"" as bytes(); only those uses
    allowed[("_codecs", "encode")] = _latin1_encode
    allowed[("builtins", "bytes")] = _empty_bytes
    return allowed


def _empty_bytes(*args: Any) -> bytes:
    """``bytes()`` with no argument (how protocol 2 pickles ``b""``); anything else is refused."""
    if args:
        raise UnsafePickleError("builtins.bytes is only admitted without arguments (an empty bytes object).")
    return b""


def _latin1_encode(text: Any, encoding: str = "latin1") -> bytes:
    """``_codecs.encode`` restricted to what protocol-2 pickles of bytes use."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise UnsafePickleError(f"_codecs.encode is only admitted for text and 'latin1', got "
                                f"({type(text).__name__}, {encoding!r}).")
    return text.encode("latin1")


_ALLOWED: dict[tuple[str, str], Any] | None = None


def _allowed() -> dict[tuple[str, str], Any]:
    global _ALLOWED
    if _ALLOWED is None:
        _ALLOWED = _allowed_globals()
    return _ALLOWED


class _Deferred:
    """A large byte payload left in the file: where it starts and how long it is."""

    __slots__ = ("offset", "length", "writable")

    def __init__(self, offset: int, length: int, writable: bool) -> None:
        self.offset = offset
        self.length = length
        self.writable = writable

    def __repr__(self) -> str:  # pragma: no cover - debugging aid
        return f"<deferred payload of {self.length} bytes at offset {self.offset}>"


def _refuse(what: str):
    def handler(self: _RestrictedUnpickler) -> None:
        raise UnsafePickleError(
            f"{self.source}: refused pickle opcode {what}: it builds arbitrary objects, which numpy "
            f"arrays, dicts, lists, strings and numbers never need. The file may be corrupt or "
            f"malicious; download it again from its publisher.")
    return handler


class _RestrictedUnpickler(pickle._Unpickler):  # type: ignore[name-defined]
    """Unpickler that admits numpy arrays and plain data only (see the module docstring)."""

    dispatch = dict(pickle._Unpickler.dispatch)  # type: ignore[attr-defined]

    def __init__(self, fh: io.BufferedIOBase, *, source: str, path: Path | None = None,
                 mmap: bool = False, defer_bytes: int | None = _DEFAULT_DEFER) -> None:
        super().__init__(fh)
        self._fh = fh
        self.source = source
        self._path = path
        self._mmap = bool(mmap) and path is not None
        self._defer = defer_bytes if (defer_bytes is not None and self._seekable()) else None
        self._size = self._file_size()

    # -- globals -------------------------------------------------------------------------------
    def find_class(self, module: str, name: str) -> Any:
        if self.proto < 3 and self.fix_imports:  # Python 2 names, as pickle.Unpickler maps them
            if (module, name) in _compat_pickle.NAME_MAPPING:
                module, name = _compat_pickle.NAME_MAPPING[(module, name)]
            elif module in _compat_pickle.IMPORT_MAPPING:
                module = _compat_pickle.IMPORT_MAPPING[module]
        obj = _allowed().get((module, name))
        if obj is None:
            raise UnsafePickleError(
                f"{self.source}: refused to load the global '{module}.{name}'. Only numpy arrays, "
                f"dtypes and scalars, and lists, dicts, tuples, strings and numbers may appear in "
                f"this file; anything else could run code. The file may be corrupt or malicious: "
                f"download it again from its publisher.")
        if obj is _frombuffer_reference:
            return self._frombuffer
        return obj

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError(f"{self.source}: refused a persistent id ({pid!r}); numpy data never uses them.")

    # -- deferred payloads ---------------------------------------------------------------------
    def _seekable(self) -> bool:
        try:
            return bool(self._fh.seekable())
        except (AttributeError, ValueError):
            return False

    def _file_size(self) -> int | None:
        if not self._seekable():
            return None
        pos = self._fh.tell()
        end = self._fh.seek(0, os.SEEK_END)
        self._fh.seek(pos)
        return end

    def _outside_frame(self) -> bool:
        """True when the next bytes come straight from the file (not from a pickle frame)."""
        unframer = getattr(self, "_unframer", None)
        frame = getattr(unframer, "current_frame", None)
        if frame is None:
            return unframer is not None
        pos = frame.tell()
        end = frame.seek(0, os.SEEK_END)
        frame.seek(pos)
        return pos >= end

    def _push_payload(self, n: int, *, writable: bool) -> None:
        if n < 0:
            raise pickle.UnpicklingError(f"{self.source}: negative byte count {n}")
        if self._defer is not None and n >= self._defer and self._outside_frame():
            start = self._fh.tell()
            if self._size is not None and start + n > self._size:
                raise pickle.UnpicklingError(
                    f"{self.source}: the file ends {start + n - self._size} bytes before the end of an "
                    f"array payload (truncated download?). Download it again.")
            self._fh.seek(n, os.SEEK_CUR)
            self.append(_Deferred(start, n, writable))
            return
        data = self.read(n)
        if len(data) != n:
            raise pickle.UnpicklingError(f"{self.source}: truncated pickle (expected {n} bytes, got {len(data)}). "
                                         f"Download the file again.")
        self.append(bytearray(data) if writable else data)

    def _read_length(self, fmt: str) -> int:
        raw = self.read(struct.calcsize(fmt))
        if len(raw) != struct.calcsize(fmt):
            raise pickle.UnpicklingError(f"{self.source}: truncated pickle. Download the file again.")
        return int(struct.unpack(fmt, raw)[0])

    def _load_binbytes(self) -> None:
        self._push_payload(self._read_length("<I"), writable=False)

    def _load_binbytes8(self) -> None:
        self._push_payload(self._read_length("<Q"), writable=False)

    def _load_bytearray8(self) -> None:
        self._push_payload(self._read_length("<Q"), writable=True)

    def _read_array(self, payload: _Deferred, dtype: np.dtype, shape: tuple[int, ...], fortran: bool) -> np.ndarray:
        """Materialise a deferred payload as an array: memory-mapped, or read into its own buffer."""
        if not isinstance(dtype, np.dtype) or dtype.hasobject:
            raise UnsafePickleError(f"{self.source}: an array payload with dtype {dtype!r} is not allowed.")
        shape = tuple(int(s) for s in shape)
        nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        if nbytes != payload.length:
            raise pickle.UnpicklingError(
                f"{self.source}: array payload has {payload.length} bytes but shape {shape} and dtype {dtype} "
                f"need {nbytes} (corrupt file?).")
        order = "F" if fortran else "C"
        if self._mmap and nbytes > 0:
            mode = "c" if payload.writable else "r"
            return np.memmap(self._path, dtype=dtype, mode=mode, offset=payload.offset, shape=shape, order=order)
        arr = np.empty(shape, dtype=dtype, order=order)
        target = arr.T if fortran else arr
        view = memoryview(target).cast("B") if nbytes else memoryview(b"")
        pos = self._fh.tell()
        try:
            self._fh.seek(payload.offset)
            got = 0
            while got < nbytes:
                n = self._fh.readinto(view[got:])
                if not n:
                    raise pickle.UnpicklingError(f"{self.source}: truncated array payload. Download the file again.")
                got += n
        finally:
            self._fh.seek(pos)
        return arr

    def _materialise_bytes(self, payload: _Deferred) -> bytes | bytearray:
        pos = self._fh.tell()
        try:
            self._fh.seek(payload.offset)
            data = self._fh.read(payload.length)
        finally:
            self._fh.seek(pos)
        if len(data) != payload.length:
            raise pickle.UnpicklingError(f"{self.source}: truncated payload. Download the file again.")
        return bytearray(data) if payload.writable else data

    def _resolve(self, obj: Any, depth: int = 0) -> Any:
        """Replace deferred payloads that did not become arrays by real bytes."""
        if isinstance(obj, _Deferred):
            return self._materialise_bytes(obj)
        if depth > 50:
            return obj
        if isinstance(obj, dict):
            for k, v in list(obj.items()):
                obj[k] = self._resolve(v, depth + 1)
            return obj
        if isinstance(obj, list):
            for i, v in enumerate(obj):
                obj[i] = self._resolve(v, depth + 1)
            return obj
        if isinstance(obj, tuple) and any(isinstance(v, _Deferred | dict | list | tuple) for v in obj):
            return tuple(self._resolve(v, depth + 1) for v in obj)
        return obj

    # -- numpy's reconstruction paths ---------------------------------------------------------
    def _frombuffer(self, buf: Any, dtype: np.dtype, shape: Sequence[int], order: str) -> np.ndarray:
        """Protocol-5 path (``numpy._core.numeric._frombuffer``), deferred payloads included."""
        if order not in ("C", "F"):
            raise UnsafePickleError(f"{self.source}: unknown array order {order!r}.")
        if isinstance(buf, _Deferred):
            return self._read_array(buf, dtype, tuple(shape), order == "F")
        if not isinstance(buf, bytes | bytearray | memoryview):
            raise UnsafePickleError(f"{self.source}: array buffer of type {type(buf).__name__} is not allowed.")
        return np.frombuffer(buf, dtype=dtype).reshape(shape, order=order)

    def _load_build(self) -> None:
        stack = self.stack
        state = stack[-1]
        inst = stack[-2]
        if not isinstance(inst, np.ndarray | np.dtype):
            raise UnsafePickleError(
                f"{self.source}: refused to set the state of a {type(inst).__name__} object; only numpy "
                f"arrays and dtypes are rebuilt from a state.")
        if isinstance(inst, np.ndarray) and isinstance(state, tuple) and state and isinstance(state[-1], _Deferred):
            # ndarray state: (version, shape, dtype, is_fortran, rawdata) or without the version
            if len(state) == 5:
                _, shape, dtype, fortran, payload = state
            elif len(state) == 4:
                shape, dtype, fortran, payload = state
            else:
                raise pickle.UnpicklingError(f"{self.source}: unexpected ndarray state of length {len(state)}.")
            new = self._read_array(payload, dtype, tuple(shape), bool(fortran))
            stack.pop()
            stack[-1] = new
            for key, value in list(self.memo.items()):
                if value is inst:
                    self.memo[key] = new
            return
        pickle._Unpickler.load_build(self)  # type: ignore[attr-defined]

    def load(self) -> Any:
        return self._resolve(super().load())


_R = _RestrictedUnpickler
_R.dispatch[pickle.BINBYTES[0]] = _R._load_binbytes
_R.dispatch[pickle.BINBYTES8[0]] = _R._load_binbytes8
_R.dispatch[pickle.BYTEARRAY8[0]] = _R._load_bytearray8
_R.dispatch[pickle.BUILD[0]] = _R._load_build
for _op, _name in ((pickle.OBJ, "OBJ"), (pickle.INST, "INST"), (pickle.NEWOBJ, "NEWOBJ"),
                   (pickle.NEWOBJ_EX, "NEWOBJ_EX")):
    _R.dispatch[_op[0]] = _refuse(_name)
del _R, _op, _name


# --------------------------------------------------------------------------------------------------
# public functions
# --------------------------------------------------------------------------------------------------
def restricted_loads(data: bytes, *, source: str = "<bytes>") -> Any:
    """Unpickle ``data`` admitting only numpy arrays, dtypes, scalars and plain Python data.

    Parameters
    ----------
    data : bytes
        A pickle (any protocol from 2 to 5, without out-of-band buffers).
    source : str
        Name used in error messages.

    Returns
    -------
    obj : object
        The unpickled object.

    Raises
    ------
    UnsafePickleError
        If the pickle names a global other than numpy's array helpers, or uses an opcode that
        builds arbitrary objects.
    """
    return _RestrictedUnpickler(io.BytesIO(data), source=source, defer_bytes=None).load()


def restricted_load(file: PathLike | io.BufferedIOBase, *, mmap: bool = False, source: str | None = None,
                    defer_bytes: int | None = _DEFAULT_DEFER) -> Any:
    """Unpickle a file (or a binary file object positioned at a pickle) with the restricted unpickler.

    Parameters
    ----------
    file : path-like | binary file object
        The pickle.
    mmap : bool
        Memory-map large arrays read-only instead of reading them (only for paths).
    source : str | None
        Name used in error messages (default: the path).
    defer_bytes : int | None
        Payloads of at least this many bytes are read straight into their array (or mapped);
        ``None`` reads everything through the unpickler.

    Returns
    -------
    obj : object
    """
    if isinstance(file, str | os.PathLike):
        path = Path(file)
        with open(path, "rb") as fh:
            return _RestrictedUnpickler(fh, source=source or str(path), path=path, mmap=mmap,
                                        defer_bytes=defer_bytes).load()
    name = source or getattr(file, "name", "<file>")
    return _RestrictedUnpickler(file, source=str(name), defer_bytes=defer_bytes).load()


def detect_container(path: PathLike) -> str:
    """Say what a ``.npy``-named file really is.

    Returns
    -------
    kind : str
        ``"npy"`` (a real ``.npy`` file) or ``"pickle"`` (a bare pickle, protocol 2 or later).

    Raises
    ------
    ValueError
        If the file is neither (the message names the file and shows its first bytes).
    """
    path = Path(path)
    with open(path, "rb") as fh:
        head = fh.read(8)
    if head.startswith(NPY_MAGIC):
        return "npy"
    if len(head) >= 2 and head[0] == PICKLE_PROTO and 2 <= head[1] <= 5:
        return "pickle"
    raise ValueError(f"{path}: neither a .npy file (magic {NPY_MAGIC!r}) nor a pickle (protocol 2-5); "
                     f"it starts with {head!r}. The download may be incomplete or an HTML error page.")


def _read_npy_header(fh: io.BufferedIOBase, path: Path) -> tuple[tuple[int, ...], bool, np.dtype]:
    from numpy.lib import format as npy_format

    try:
        version = npy_format.read_magic(fh)
        if version == (1, 0):
            return npy_format.read_array_header_1_0(fh)
        if version == (2, 0):
            return npy_format.read_array_header_2_0(fh)
        reader = getattr(npy_format, "_read_array_header", None)
        if reader is None:  # pragma: no cover - future numpy
            raise ValueError(f"unsupported .npy format version {version}")
        return reader(fh, version)
    except ValueError as err:
        raise ValueError(f"{path}: unreadable .npy header ({err}). The file may be truncated.") from None


def load_npy(path: PathLike, *, mmap: bool = False) -> Any:
    """Read a ``.npy``-named file in either container, never running code from it.

    A real ``.npy`` file with a numeric dtype is returned as an array (memory-mapped with
    ``mmap=True``); one with an object dtype has its pickled payload read by the restricted
    unpickler, and a 0-d object array is unwrapped (``.item()``), as users of ``np.save(dict)``
    expect. A bare pickle is read by the restricted unpickler.

    Parameters
    ----------
    path : path-like
        The file.
    mmap : bool
        Memory-map large arrays read-only instead of reading them into memory.

    Returns
    -------
    obj : object
        An array, or whatever the pickle held (for THINGS-EEG2, a dict).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: file not found.")
    kind = detect_container(path)
    if kind == "pickle":
        return restricted_load(path, mmap=mmap)
    with open(path, "rb") as fh:
        shape, fortran, dtype = _read_npy_header(fh, path)
        if not dtype.hasobject:
            offset = fh.tell()
    if not dtype.hasobject:
        if mmap and int(np.prod(shape)) > 0:
            return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape,
                             order="F" if fortran else "C")
        return np.load(path, allow_pickle=False)
    with open(path, "rb") as fh:
        _read_npy_header(fh, path)
        obj = _RestrictedUnpickler(fh, source=str(path), path=path, mmap=mmap).load()
    if not isinstance(obj, np.ndarray) or obj.dtype != object:
        raise ValueError(f"{path}: the header announces an object array of shape {shape} but the payload "
                         f"holds a {type(obj).__name__}. The file is corrupt.")
    if obj.shape != tuple(shape):
        obj = obj.reshape(shape)
    return obj.item() if obj.shape == () else obj


def load_pickled_dict(path: PathLike, *, mmap: bool = False, required_keys: Sequence[str] = (),
                      what: str = "file") -> dict[str, Any]:
    """Read a THINGS-EEG2-style pickled dict (bare pickle or ``np.save``'d dict), safely.

    Parameters
    ----------
    path : path-like
        The ``.npy``-named file.
    mmap : bool
        Memory-map large arrays read-only (they stay valid while the file exists).
    required_keys : sequence of str
        Keys that must be present; a missing key raises an error naming the file, the
        missing keys and the keys found (a ``ValueError``).
    what : str
        What the file is, for error messages (e.g. ``"THINGS-EEG2 preprocessed file"``).

    Returns
    -------
    data : dict
    """
    path = Path(path)
    obj = load_npy(path, mmap=mmap)
    if not isinstance(obj, Mapping):
        kind = type(obj).__name__ + (f" of shape {obj.shape}" if isinstance(obj, np.ndarray) else "")
        raise ValueError(f"{path}: expected a {what} holding a dict, found a {kind}.")
    missing = [k for k in required_keys if k not in obj]
    if missing:
        raise ValueError(f"{path}: {what} lacks key(s) {missing}; it has {sorted(map(str, obj))}. "
                         f"Is this the right file?")
    return dict(obj)
