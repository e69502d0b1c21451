"""Trial store: round trips, lazy reading in DataLoader workers, atomic writes, every bad input, the
one stimulus table per folder, and version 1 stores (with an embedded table) still opening."""

from __future__ import annotations

import json
import multiprocessing as mp
import shutil
import warnings

import h5py
import numpy as np
import pytest

from neurodecode.io.prepared import open_prepared
from neurodecode.io.store import (
    SCHEMA_VERSION,
    STIMULI_FILENAME,
    StimulusTable,
    StoreError,
    StoreWriter,
    TrialStore,
    validate_store,
    write_store,
)


def _table(n_train=3, n_test=2):
    ids = [f"img{i}" for i in range(n_train + n_test)]
    return StimulusTable(ids, [f"concept{i}" for i in range(n_train + n_test)], [""] * len(ids),
                         ["train"] * n_train + ["test"] * n_test)


def _eeg(tmp_path, n=12, name="sub-01.h5", **kw):
    rng = np.random.default_rng(0)
    table = _table()
    x = rng.standard_normal((n, 4, 20)).astype(np.float32)
    ids = [table.stimulus_id[i % 5] for i in range(n)]
    split = [table.split[i % 5] for i in range(n)]
    path = write_store(tmp_path / name, x, stimulus_id=ids, split=split, stimuli=table, modality="eeg",
                       repetition=np.arange(n) // 5, sfreq=100.0, tmin=-0.1, ch_names=["Cz", "Pz", "O1", "O2"],
                       provenance=[{"step": "test"}], **kw)
    table.write_tsv(tmp_path / STIMULI_FILENAME)  # the folder's one stimulus table
    return path, x, ids


def test_eeg_round_trip(tmp_path):
    path, x, ids = _eeg(tmp_path, extra={"label": np.arange(12) % 2})
    s = TrialStore(path, validate="values")
    assert s.shape == (12, 4, 20) and s.n_chans == 4 and s.n_times == 20
    assert s.modality == "eeg" and s.sfreq == 100.0 and s.tmin == -0.1
    np.testing.assert_allclose(s.times, -0.1 + np.arange(20) / 100)
    assert s.ch_names == ["Cz", "Pz", "O1", "O2"]
    assert s.info["sfreq"] == 100.0
    np.testing.assert_array_equal(s.get_signals(), x)
    # arbitrary order, duplicates and channel picks by name
    np.testing.assert_array_equal(s.get_signals([5, 1, 5, 0]), x[[5, 1, 5, 0]])
    np.testing.assert_array_equal(s.get_signals([11, 0]), x[[11, 0]])
    np.testing.assert_array_equal(s.get_signals(slice(2, 4), picks=["O2", "Cz"]), x[2:4][:, [3, 0]])
    assert s.stimulus_id.tolist() == ids
    assert s.repetition.tolist() == (np.arange(12) // 5).tolist()
    assert s.trial_field("label").tolist() == (np.arange(12) % 2).tolist()
    assert s.provenance == [{"step": "test"}]
    assert len(s.stimuli) == 5 and s.stimuli.concept[2] == "concept2"
    epochs = s.to_epochs(verbose=False)
    assert epochs.get_data().shape == (12, 4, 20)
    assert epochs.metadata["stimulus_id"].tolist() == ids
    assert epochs.event_id == {f"concept{i}": i + 1 for i in range(5)}
    with pytest.raises(StoreError, match="channel.*'Fz'.*not found"):
        s.get_signals(0, picks=["Fz"])


def test_to_epochs_has_one_event_id_per_concept(tmp_path):
    """Each concept of the stimulus table gets its own event id; a trial's code is its concept's."""
    table = StimulusTable(["f1", "f2", "h1", "c1"], ["face", "face", "house", "car"], [""] * 4, ["train"] * 4)
    ids = ["f1", "h1", "f2", "c1", "h1", "f1"]
    x = np.random.default_rng(3).standard_normal((6, 2, 10)).astype(np.float32)
    path = write_store(tmp_path / "sub-01.h5", x, stimulus_id=ids, split=["train"] * 6, stimuli=table,
                       modality="eeg", sfreq=100.0, tmin=0.0, ch_names=["Cz", "Pz"])
    table.write_tsv(tmp_path / STIMULI_FILENAME)
    epochs = TrialStore(path).to_epochs(verbose=False)
    assert epochs.event_id == {"car": 1, "face": 2, "house": 3}
    assert epochs.events[:, 2].tolist() == [2, 3, 2, 1, 3, 2]
    assert epochs.metadata["concept"].tolist() == ["face", "house", "face", "car", "house", "face"]
    assert len(epochs["face"]) == 3 and len(epochs["house"]) == 2
    np.testing.assert_allclose(epochs["house"].get_data(), x[[1, 4]], rtol=1e-6)
    sub = TrialStore(path).to_epochs([1, 4], verbose=False)  # only the concepts of the chosen trials
    assert sub.event_id == {"house": 1} and sub.events[:, 2].tolist() == [1, 1]
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy(path, alone / "sub-01.h5")  # away from its stimuli.tsv: each stimulus is its own category
    lone = TrialStore(alone / "sub-01.h5", validate=False).to_epochs(verbose=False)
    assert lone.event_id == {"c1": 1, "f1": 2, "f2": 3, "h1": 4} and lone.events[:, 2].tolist() == [2, 4, 3, 1, 4, 2]


def test_fmri_round_trip(tmp_path):
    table = _table()
    x = np.random.default_rng(1).standard_normal((5, 30)).astype(np.float32)
    ijk = np.stack([np.arange(30), np.zeros(30), np.zeros(30)], 1)
    path = write_store(tmp_path / "sub-02.h5", x, stimulus_id=table.stimulus_id, split=table.split,
                       stimuli=table, modality="fmri", subject="02", voxel_ijk=ijk, volume_shape=(30, 1, 1))
    s = TrialStore(path, stimuli=table)  # no stimuli.tsv beside it: the table is given
    assert s.modality == "fmri" and s.n_voxels == 30 and s.sfreq is None and s.info is None
    np.testing.assert_array_equal(s.get_signals([4, 0]), x[[4, 0]])
    np.testing.assert_array_equal(s.voxel_ijk[:, 0], np.arange(30))
    with pytest.raises(AttributeError, match="no 'n_chans'"):
        _ = s.n_chans


def test_stimulus_table_tsv_round_trip(tmp_path):
    img = tmp_path / "images" / "a.png"
    img.parent.mkdir()
    img.write_bytes(b"x")
    t = StimulusTable(["a", "b"], ["cat", "dog"], [str(img), ""], ["train", "test"])
    t.write_tsv(tmp_path / "stimuli.tsv")
    assert "images/a.png" in (tmp_path / "stimuli.tsv").read_text()  # relative inside the folder
    t2 = StimulusTable.read_tsv(tmp_path / "stimuli.tsv")
    assert t2.image_file(0) == tmp_path / "images" / "a.png" and t2.image_file(1) is None
    assert t2.concepts("test") == ["dog"]


def test_stimulus_table_errors(tmp_path):
    with pytest.raises(StoreError, match="unique.*'a'"):
        StimulusTable(["a", "a"], ["x", "y"], ["", ""], ["train", "train"])
    with pytest.raises(StoreError, match="unknown split.*'val'"):
        StimulusTable(["a"], ["x"], [""], ["val"])
    bad = tmp_path / "stimuli.tsv"
    bad.write_text("stimulus_id\tconcept\nA\tB\n")
    with pytest.raises(StoreError, match=r"stimuli.tsv, field 'header': missing column\(s\) \['image_path', 'split'\]"):
        StimulusTable.read_tsv(bad)
    with pytest.raises(StoreError, match="stimulus table not found"):
        StimulusTable.read_tsv(tmp_path / "nope.tsv")
    t = _table()
    with pytest.raises(StoreError, match="not in the stimulus table.*'zzz'"):
        t.rows(["img0", "zzz"])


# --------------------------------------------------------------------------------------------------
# bad files: each case names the file and the field
# --------------------------------------------------------------------------------------------------
def _corrupt(path, fn):
    with h5py.File(path, "r+") as f:
        fn(f)


@pytest.mark.parametrize(
    "mutate, field, message",
    [
        (lambda f: f.attrs.__delitem__("schema_version"), "schema_version", "attribute is missing"),
        (lambda f: f.attrs.__setitem__("schema_version", 99), "schema_version", "is 99, but this neurodecode"),
        (lambda f: f.attrs.__delitem__("sfreq"), "sfreq", "attribute is missing"),
        (lambda f: f.attrs.__setitem__("sfreq", -5.0), "sfreq", "expected a positive number"),
        (lambda f: f.attrs.__setitem__("modality", "ecog"), "modality", "expected one of"),
        (lambda f: f.__delitem__("signals"), "signals", "dataset is missing"),
        (lambda f: (f.__delitem__("signals"), f.create_dataset("signals", data=np.zeros((12, 4, 20), "i4"))),
         "signals", "has dtype int32; expected float32"),
        (lambda f: (f.__delitem__("signals"), f.create_dataset("signals", data=np.zeros((12, 80), "f4"))),
         "signals", r"needs \(n_trials, n_chans, n_times\)"),
        (lambda f: (f.__delitem__("signals"), f.create_dataset("signals", data=np.zeros((12, 3, 20), "f4"))),
         "info", "lists 4 channels but signals have 3"),
        (lambda f: f["trials"].__delitem__("repetition"), "trials/repetition", "dataset is missing"),
        (lambda f: (f["trials"].__delitem__("session"), f["trials"].create_dataset("session", data=np.zeros(7, "i4"))),
         "trials/session", r"expected \(12,\), one value per trial"),
        (lambda f: f["signals"].__setitem__((3, 1, 2), np.nan), "signals", "first NaN in trial 3"),
        (lambda f: f["signals"].__setitem__((7, 0, 0), np.inf), "signals", "first Inf in trial 7"),
        (lambda f: f["trials/stimulus_id"].__setitem__(4, "ghost"), "trials/stimulus_id",
         r"not in the stimulus table, e.g. \['ghost'\] \(first at trial 4\)"),
        (lambda f: f["trials/split"].__setitem__(0, "valid"), "trials/split", r"unknown value\(s\) \['valid'\]"),
    ],
)
def test_bad_store_is_rejected_with_file_and_field(tmp_path, mutate, field, message):
    path, _, _ = _eeg(tmp_path)
    _corrupt(path, mutate)
    with pytest.raises(StoreError, match=message) as err:
        validate_store(path)
    assert err.value.field == field
    assert str(path) in str(err.value) and f"field '{field}'" in str(err.value)
    with pytest.raises(StoreError):
        TrialStore(path, validate="values")


def test_truncated_and_missing_files(tmp_path):
    path, _, _ = _eeg(tmp_path)
    data = path.read_bytes()
    trunc = tmp_path / "trunc.h5"
    trunc.write_bytes(data[: len(data) // 2])
    with pytest.raises(StoreError, match="trunc.h5: is not a readable HDF5 file .*truncated"):
        TrialStore(trunc)
    garbage = tmp_path / "garbage.h5"
    garbage.write_bytes(b"this is not hdf5" * 10)
    with pytest.raises(StoreError, match="not a readable HDF5"):
        TrialStore(garbage)
    with pytest.raises(StoreError, match="missing.h5: file not found"):
        TrialStore(tmp_path / "missing.h5")


def test_writer_rejects_bad_input_and_leaves_nothing(tmp_path):
    table = _table()
    target = tmp_path / "sub-01.h5"
    x = np.zeros((5, 2, 10), np.float32)
    x[2, 1, 3] = np.nan
    with pytest.raises(StoreError, match=r"signals.*trials 0:5.*NaN at index \(2, 1, 3\)"):
        write_store(target, x, stimulus_id=table.stimulus_id, split=table.split, stimuli=table, modality="eeg",
                    sfreq=100.0, tmin=0.0)
    assert not target.exists() and not list(tmp_path.iterdir())  # no file, no temporary left behind
    x = np.zeros((5, 2, 10), np.float32)
    with pytest.raises(StoreError, match="trials/stimulus_id.*'nope'"):
        write_store(target, x, stimulus_id=["nope"] * 5, split=table.split, stimuli=table, modality="eeg",
                    sfreq=100.0, tmin=0.0)
    with pytest.raises(StoreError, match="sfreq.*positive number"):
        write_store(target, x, stimulus_id=table.stimulus_id, split=table.split, stimuli=table, modality="eeg",
                    sfreq=None, tmin=0.0)
    with pytest.raises(StoreError, match="info.*has 3 channels but the signals have 2"):
        write_store(target, x, stimulus_id=table.stimulus_id, split=table.split, stimuli=table, modality="eeg",
                    sfreq=100.0, tmin=0.0, ch_names=["a", "b", "c"])
    with pytest.raises(StoreError, match=r"trials/repetition.*shape \(5,\)"):
        write_store(target, x, stimulus_id=table.stimulus_id, split=table.split, stimuli=table, modality="eeg",
                    sfreq=100.0, tmin=0.0, repetition=[0, 1])
    with pytest.raises(ValueError, match="'modality' parameter"):
        write_store(target, x, stimulus_id=table.stimulus_id, split=table.split, stimuli=table, modality="ecog",
                    sfreq=100.0, tmin=0.0)
    assert not list(tmp_path.iterdir())


def test_interrupted_write_keeps_the_old_file(tmp_path):
    path, x, _ = _eeg(tmp_path)
    before = path.read_bytes()
    table = _table()
    with pytest.raises(RuntimeError, match="power cut"):
        with StoreWriter(path, 10, (4, 20), modality="eeg", stimuli=table, sfreq=100.0, tmin=0.0) as w:
            w.write(0, np.ones((5, 4, 20), np.float32))
            raise RuntimeError("power cut")
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stimuli.tsv", "sub-01.h5"]
    with pytest.raises(StoreError, match="trial 5 .* was never written"):
        with StoreWriter(path, 10, (4, 20), modality="eeg", stimuli=table, sfreq=100.0, tmin=0.0) as w:
            w.write(0, np.ones((5, 4, 20), np.float32))
            w.finish(stimulus_id=["img0"] * 10, split=["train"] * 10)
    assert path.read_bytes() == before


# --------------------------------------------------------------------------------------------------
# DataLoader workers (fork and spawn)
# --------------------------------------------------------------------------------------------------
class _StoreDataset:
    def __init__(self, store: TrialStore):
        self.store = store

    def __len__(self):
        return len(self.store)

    def __getitem__(self, i):
        import os

        return self.store.get_signals(i), i, os.getpid()


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_lazy_reading_in_dataloader_workers(tmp_path, method):
    import torch
    from torch.utils.data import DataLoader

    if method not in mp.get_all_start_methods():
        pytest.skip(f"{method} not available")
    path, x, _ = _eeg(tmp_path)
    store = TrialStore(path)
    _ = store.get_signals(0)  # open a handle in the parent: workers must not reuse it
    loader = DataLoader(_StoreDataset(store), batch_size=3, num_workers=2,
                        multiprocessing_context=method, persistent_workers=False)
    got, idx, pids = [], [], set()
    for sig, i, pid in loader:
        got.append(sig)
        idx.append(i)
        pids.update(pid.tolist())
    order = torch.cat(idx).numpy()
    np.testing.assert_array_equal(torch.cat(got).numpy(), x[order])
    assert len(pids) == 2 and all(p != __import__("os").getpid() for p in pids)


def test_open_prepared(tmp_path):
    from neurodecode.readers.common import write_prepared_metadata

    _eeg(tmp_path, name="sub-01.h5")
    _eeg(tmp_path, name="sub-02.h5", subject="02")
    write_prepared_metadata(tmp_path, _table(), {"source": "test"})
    ds = open_prepared(tmp_path)
    assert ds.subjects == ["01", "02"] and ds.modality == "eeg" and ds.meta["source"] == "test"
    with pytest.raises(StoreError, match=r"no store for subject\(s\) \['07'\]"):
        open_prepared(tmp_path, subjects=["07"])
    empty = tmp_path / "empty"
    empty.mkdir()
    shutil.copy(tmp_path / "stimuli.tsv", empty)
    with pytest.raises(StoreError, match="holds no trial stores"):
        open_prepared(empty)
    assert json.loads((tmp_path / "dataset.json").read_text())["source"] == "test"
    assert SCHEMA_VERSION == 2
    # every store of the folder shares the folder's table
    assert ds.stores["01"].stimuli is ds.stimuli and ds.stores["02"].stimuli is ds.stimuli


# --------------------------------------------------------------------------------------------------
# one stimulus table per prepared folder
# --------------------------------------------------------------------------------------------------
def test_new_stores_hold_no_stimulus_table(tmp_path):
    path, _, _ = _eeg(tmp_path)
    with h5py.File(path, "r") as f:
        assert "stimuli" not in f and int(f.attrs["schema_version"]) == SCHEMA_VERSION


def test_store_without_its_folder_table_names_the_file_and_fix(tmp_path):
    path, _, _ = _eeg(tmp_path)
    (tmp_path / STIMULI_FILENAME).unlink()
    for call in (lambda: validate_store(path), lambda: TrialStore(path),
                 lambda: TrialStore(path, validate=False).stimuli):
        with pytest.raises(StoreError, match=r"stimuli.tsv: stimulus table not found; the trial store sub-01.h5 "
                                             r"takes its stimuli .*open_prepared\(\).*stimuli=") as err:
            call()
        assert err.value.file == str(tmp_path / STIMULI_FILENAME)
    # the table can be given instead, and is then what trial ids are checked against
    s = TrialStore(path, stimuli=_table())
    assert len(s.stimuli) == 5
    with pytest.raises(StoreError, match=r"trials/stimulus_id.*not in the stimulus table, e.g. \['img3', 'img4'\]"):
        TrialStore(path, stimuli=_table().select([True, True, True, False, False]))


def test_folder_table_is_checked_on_open(tmp_path):
    path, _, _ = _eeg(tmp_path)
    _table().select([True, True, False, True, True]).write_tsv(tmp_path / STIMULI_FILENAME)
    with pytest.raises(StoreError, match=r"sub-01.h5, field 'trials/stimulus_id'.*\['img2'\].*stimuli.tsv"):
        TrialStore(path)


def _old_format_store(path, table, *, n=10):
    """A version 1 store written by hand, as neurodecode wrote them before: with a /stimuli group."""
    import mne

    rng = np.random.default_rng(3)
    x = rng.standard_normal((n, 3, 8)).astype(np.float32)
    str_dt = h5py.string_dtype("utf-8")
    ids = [table.stimulus_id[i % len(table)] for i in range(n)]
    with h5py.File(path, "w") as f:
        f.create_dataset("signals", data=x, chunks=(1, 3, 8))
        t = f.create_group("trials")
        t.create_dataset("stimulus_id", data=ids, dtype=str_dt)
        t.create_dataset("split", data=[table.split[i % len(table)] for i in range(n)], dtype=str_dt)
        t.create_dataset("repetition", data=np.arange(n, dtype=np.int32) // len(table))
        t.create_dataset("session", data=np.zeros(n, np.int32))
        g = f.create_group("stimuli")
        for k, v in table.to_dict().items():
            g.create_dataset(k, data=v, dtype=str_dt)
        f.attrs["schema_version"] = 1
        f.attrs["modality"] = "eeg"
        f.attrs["subject"] = "01"
        f.attrs["provenance"] = json.dumps([{"step": "old"}])
        f.attrs["neurodecode_version"] = "0.1.0"
        f.attrs["sfreq"] = 50.0
        f.attrs["tmin"] = 0.0
        f.attrs["info"] = json.dumps(mne.create_info(["Cz", "Pz", "Oz"], 50.0, "eeg").to_json_dict())
    return x, ids


def test_version_1_store_with_embedded_table_still_opens(tmp_path):
    table = _table()
    path = tmp_path / "sub-01.h5"
    x, ids = _old_format_store(path, table)
    # alone (no stimuli.tsv): the embedded copy is the table
    validate_store(path, check_values=True)
    s = TrialStore(path, validate="values")
    assert s.schema_version == 1 and s.ch_names == ["Cz", "Pz", "Oz"]
    np.testing.assert_array_equal(s.get_signals([3, 1]), x[[3, 1]])
    assert s.stimulus_id.tolist() == ids
    assert s.stimuli.to_dict() == table.to_dict() and s.stimuli.root == tmp_path
    s.close()
    # an embedded table that misses a trial's id is still caught
    with h5py.File(path, "r+") as f:
        f["trials/stimulus_id"][0] = "ghost"
    with pytest.raises(StoreError, match=r"trials/stimulus_id.*\['ghost'\]"):
        TrialStore(path)
    # in its prepared folder: the folder's stimuli.tsv is the one table
    folder = tmp_path / "prepared"
    folder.mkdir()
    _old_format_store(folder / "sub-01.h5", table)
    table.write_tsv(folder / STIMULI_FILENAME)
    (folder / "dataset.json").write_text(json.dumps({"source": "old"}))
    ds = open_prepared(folder, validate="values")
    assert ds.subjects == ["01"] and ds.stores["01"].stimuli is ds.stimuli and len(ds.stimuli) == 5
    assert TrialStore(folder / "sub-01.h5").stimuli.root == folder


def test_old_import_path_warns_and_works(tmp_path):
    import neurodecode.store as old

    _eeg(tmp_path)
    with pytest.warns(DeprecationWarning, match="neurodecode.io.store.open_prepared"):
        fn = old.open_prepared
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert fn(tmp_path).subjects == ["01"]
    import neurodecode.io.store as new

    assert not hasattr(new, "read_store")
