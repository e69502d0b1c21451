"""The restricted unpickler: numpy data in, code out."""

from __future__ import annotations

import builtins
import collections
import io
import os
import pickle
import tracemalloc

import numpy as np
import pytest

from neurodecode.io.safeio import (
    UnsafePickleError,
    detect_container,
    load_npy,
    load_pickled_dict,
    restricted_load,
    restricted_loads,
)


def _sample() -> dict:
    rng = np.random.default_rng(0)
    return {
        "preprocessed_eeg_data": rng.standard_normal((3, 2, 5, 7)),
        "fortran": np.asfortranarray(rng.standard_normal((40, 30))),
        "big_endian": np.arange(12, dtype=">f4").reshape(3, 4),
        "int16": np.arange(-5, 5, dtype=np.int16),
        "bool": np.array([True, False]),
        "empty": np.zeros((0, 3)),
        "zero_d": np.array(3.5),
        "large": rng.standard_normal((63, 5000)),  # > 1 MiB: read lazily
        "ch_names": ["Fp1", "Fp2"],
        "times": np.arange(-50, 250) / 250,
        "sfreq": np.float64(1000.0),
        "n": 1000,
        "nested": {"a": (1, 2.5, None, "x", b"raw"), "b": [np.int64(3)]},
        "object_array": np.array(["a", 1, None], dtype=object),
    }


def _assert_same(a, b):
    assert type(a) is type(b) or isinstance(a, np.ndarray)
    if isinstance(b, dict):
        assert set(a) == set(b)
        for k in b:
            _assert_same(a[k], b[k])
    elif isinstance(b, list | tuple):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            _assert_same(x, y)
    elif isinstance(b, np.ndarray):
        # numpy itself may hand back a non-native byte order as native: compare kind and size
        assert a.dtype.kind == b.dtype.kind and a.dtype.itemsize == b.dtype.itemsize and a.shape == b.shape
        if b.dtype == object:
            assert a.tolist() == b.tolist()
        else:
            np.testing.assert_array_equal(a, b)
    else:
        assert a == b


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
@pytest.mark.parametrize("mmap", [False, True])
def test_bare_pickle_roundtrip(tmp_path, protocol, mmap):
    obj = _sample()
    path = tmp_path / "preprocessed_eeg_training.npy"
    path.write_bytes(pickle.dumps(obj, protocol=protocol))
    assert detect_container(path) == "pickle"
    got = load_pickled_dict(path, mmap=mmap, required_keys=("preprocessed_eeg_data", "ch_names"))
    _assert_same(got, obj)
    if mmap and protocol >= 3:  # protocol 2 stores bytes as text, which cannot be mapped
        assert isinstance(got["large"], np.memmap)
        assert got["fortran"].flags.f_contiguous


@pytest.mark.parametrize("mmap", [False, True])
def test_npy_object_container_roundtrip(tmp_path, mmap):
    obj = _sample()
    path = tmp_path / "raw_eeg_training.npy"
    np.save(path, obj, allow_pickle=True)  # what the official release does
    assert detect_container(path) == "npy"
    _assert_same(load_pickled_dict(path, mmap=mmap), obj)


def test_plain_npy_and_bytes(tmp_path):
    arr = np.arange(24.0).reshape(2, 3, 4)
    np.save(tmp_path / "a.npy", arr)
    np.testing.assert_array_equal(load_npy(tmp_path / "a.npy"), arr)
    assert isinstance(load_npy(tmp_path / "a.npy", mmap=True), np.memmap)
    with pytest.raises(ValueError, match="expected a .* holding a dict, found a ndarray of shape"):
        load_pickled_dict(tmp_path / "a.npy")
    _assert_same(restricted_loads(pickle.dumps(_sample(), protocol=4)), _sample())
    buf = io.BytesIO(pickle.dumps({"x": np.arange(3)}, protocol=5))
    np.testing.assert_array_equal(restricted_load(buf)["x"], np.arange(3))


class _Call:
    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return (self.func, self.args)


class _Plain:
    def __init__(self):
        self.x = 1


@pytest.mark.parametrize(("payload", "global_name"), [
    (_Call(os.system, "echo pwned"), "system"),
    (_Call(builtins.eval, "1+1"), "builtins.eval"),
    (_Call(builtins.getattr, [], "append"), "builtins.getattr"),
    (collections.OrderedDict(a=1), "collections.OrderedDict"),
    (_Plain(), "_Plain"),
])
@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_callables_are_refused(tmp_path, payload, global_name, protocol):
    path = tmp_path / "evil.npy"
    path.write_bytes(pickle.dumps({"preprocessed_eeg_data": np.zeros(3), "x": payload}, protocol=protocol))
    with pytest.raises(UnsafePickleError) as err:
        load_pickled_dict(path)
    msg = str(err.value)
    assert str(path) in msg and global_name in msg and "refused" in msg


def test_refused_global_is_never_called(tmp_path):
    marker = tmp_path / "created_by_pickle"
    evil = {"x": _Call(os.mkdir, str(marker))}
    for i, data in enumerate([pickle.dumps(evil, protocol=4), pickle.dumps(evil, protocol=2)]):
        path = tmp_path / f"e{i}.npy"
        path.write_bytes(data)
        with pytest.raises(UnsafePickleError):
            load_npy(path)
    np.save(tmp_path / "e.npy", evil, allow_pickle=True)  # inside an object .npy
    with pytest.raises(UnsafePickleError, match="posix.mkdir|os.mkdir"):
        load_npy(tmp_path / "e.npy")
    assert not marker.exists()
    # the same bytes would run the call under plain pickle: the test exercises a real threat
    pickle.loads(pickle.dumps(evil, protocol=4))
    assert marker.exists()


def test_object_building_opcodes_are_refused():
    # NEWOBJ on an allowed class, then BUILD on something that is not an array
    data = (b"\x80\x04\x8c\x05numpy\x8c\x07ndarray\x93K\x01\x85\x81."  # ndarray.__new__(ndarray, 1)
            )
    with pytest.raises(UnsafePickleError, match="NEWOBJ"):
        restricted_loads(data, source="crafted")
    build_on_dict = b"\x80\x04}\x8c\x01a\x8c\x01b\x86b."  # {} BUILD ('a', 'b')
    with pytest.raises(UnsafePickleError, match="set the state of a dict"):
        restricted_loads(build_on_dict, source="crafted")


def test_bad_files_have_clear_errors(tmp_path):
    html = tmp_path / "html.npy"
    html.write_bytes(b"<!DOCTYPE html><html>rate limited</html>")
    with pytest.raises(ValueError, match=r"neither a \.npy file .* nor a pickle .* HTML"):
        load_npy(html)
    full = pickle.dumps({"a": np.random.default_rng(0).standard_normal(300_000)}, protocol=4)
    trunc = tmp_path / "trunc.npy"
    trunc.write_bytes(full[: len(full) // 2])
    with pytest.raises(pickle.UnpicklingError, match="truncated"):
        load_npy(trunc)
    with pytest.raises(FileNotFoundError, match="not found"):
        load_npy(tmp_path / "missing.npy")
    path = tmp_path / "d.npy"
    path.write_bytes(pickle.dumps({"times": np.arange(3)}, protocol=4))
    with pytest.raises(ValueError, match=r"lacks key\(s\) \['ch_names'\]; it has \['times'\]"):
        load_pickled_dict(path, required_keys=("ch_names", "times"))


def test_large_arrays_are_mapped_or_read_in_place(tmp_path):
    arr = np.random.default_rng(0).standard_normal((1000, 5000))  # 40 MB
    path = tmp_path / "big.npy"
    with open(path, "wb") as f:
        pickle.dump({"preprocessed_eeg_data": arr}, f, protocol=4)
    for mmap, limit in ((False, 1.1), (True, 0.01)):
        tracemalloc.start()
        got = load_pickled_dict(path, mmap=mmap)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert peak < limit * arr.nbytes, (mmap, peak / arr.nbytes)
        np.testing.assert_array_equal(got["preprocessed_eeg_data"], arr)
        del got
