"""What a user sees when a reader meets a wrong input: a damaged file named with the format expected,
a file given as a folder, a wrong event map with the codes found, images that are not there, a flat
image folder, a rerun with other options, lost epochs, several experiments under one root, absent
subjects, and the manifests found outside a checkout."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from neurodecode.io.prepared import open_prepared
from neurodecode.readers.common import BadFileError
from neurodecode.utils import UserError

mne = pytest.importorskip("mne")
nib = pytest.importorskip("nibabel")

FS = 256.0
HEADER = "timestamps,TP9,AF7,AF8,TP10,Right AUX,Marker0"
REPO = Path(__file__).resolve().parents[1]


def _truncate(path: Path, fraction: float) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])
    return path


def _muse_csv(path: Path, seed: int, onsets, codes, n: int = 2560, artifacts=()) -> None:
    rng = np.random.default_rng(seed)
    t = 1000.0 + np.arange(n) / FS
    eeg = rng.normal(0, 5, (n, 5))
    for a in artifacts:
        eeg[a: a + 20, 1] += 400.0  # a 400 uV artifact: over the 100 uV peak-to-peak threshold
    marker = np.zeros(n, int)
    marker[np.asarray(onsets)] = codes
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [HEADER] + [f"{t[i]:.4f}," + ",".join(f"{v:.3f}" for v in eeg[i]) + f",{marker[i]}" for i in range(n)]
    path.write_text("\n".join(rows) + "\n")


ONSETS = np.arange(100, 2300, 150)  # 15 markers: codes 1 (x8) and 2 (x7)
CODES = 1 + (np.arange(len(ONSETS)) % 2)


@pytest.fixture()
def csv_root(tmp_path):
    root = tmp_path / "exp"
    _muse_csv(root / "subject1/session1/a.csv", 1, ONSETS, CODES)
    _muse_csv(root / "subject2/session1/b.csv", 2, ONSETS, CODES)
    return root


def _prepare_csv(root, out, **kw):
    from neurodecode.readers.csv import prepare_csv

    kw.setdefault("event_map", "1=face,2=house")
    return prepare_csv(root, out, progress=False, **kw)


# --------------------------------------------------------------------------------------------------
# damaged files: the message names the file and the format expected
# --------------------------------------------------------------------------------------------------
def _epochs_file(path: Path, n: int = 40) -> Path:
    info = mne.create_info(["Cz", "Pz"], 100.0, "eeg")
    ep = mne.EpochsArray(np.random.default_rng(0).standard_normal((n, 2, 100)) * 1e-6, info,
                         events=np.column_stack([np.arange(n) * 200, np.zeros(n, int), 1 + np.arange(n) % 2]),
                         event_id={"a": 1, "b": 2}, verbose=False)
    ep.save(path, overwrite=True, verbose=False)
    return path


@pytest.mark.parametrize("fraction", [0.3, 0.9])
def test_truncated_fif_names_the_file(tmp_path, fraction):
    from neurodecode.readers.epochs import prepare_epochs

    f = _truncate(_epochs_file(tmp_path / "sub-01-epo.fif"), fraction)
    with pytest.raises(BadFileError) as err:
        prepare_epochs(f, tmp_path / "out", progress=False)
    msg = str(err.value)
    assert msg.startswith(f"{f}: cannot be read as an MNE epochs file (-epo.fif")
    assert "truncated" in msg and "replace it with a complete copy" in msg
    assert isinstance(err.value, UserError)


def test_fif_that_is_not_one(tmp_path):
    from neurodecode.readers.epochs import prepare_epochs

    f = tmp_path / "sub-01-epo.fif"
    f.write_bytes(os.urandom(4000))
    with pytest.raises(UserError, match=r"sub-01-epo\.fif: cannot be read as an MNE epochs file .*does not start "
                                        r"with a file id tag"):
        prepare_epochs(f, tmp_path / "out", progress=False)


def _nifti_root(tmp_path: Path) -> Path:
    root = tmp_path / "haxby"
    run = root / "sub001/BOLD/task001_run001"
    run.mkdir(parents=True)
    data = np.random.default_rng(0).standard_normal((6, 5, 4, 40)).astype(np.float32)
    nib.save(nib.Nifti1Image(data, np.eye(4)), str(run / "bold.nii.gz"))
    (run / "bold_events.tsv").write_text("onset\tduration\ttrial_type\n4\t20\tface\n40\t20\thouse\n")
    return root


def test_truncated_nifti_names_the_file(tmp_path):
    from neurodecode.readers.nifti import prepare_nifti

    root = _nifti_root(tmp_path)
    bold = _truncate(root / "sub001/BOLD/task001_run001/bold.nii.gz", 0.5)
    with pytest.raises(BadFileError) as err:
        prepare_nifti(root, tmp_path / "out", bold="bold.nii.gz", tr=2.0, progress=False)
    # the header reads; the data end early: nibabel's bare EOFError becomes a message naming the file
    assert str(err.value).startswith(f"{bold}: cannot be read as a 4-D NIfTI run (.nii or .nii.gz) (EOFError")


def test_nifti_and_events_that_are_not_ones(tmp_path):
    from neurodecode.readers.nifti import prepare_nifti

    root = _nifti_root(tmp_path)
    ev = root / "sub001/BOLD/task001_run001/bold_events.tsv"
    ev.write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(200))
    with pytest.raises(BadFileError, match=r"bold_events\.tsv: cannot be read as a tab-separated events table "
                                           r"\(onset, duration, trial_type\) \(not UTF-8 text"):
        prepare_nifti(root, tmp_path / "out", bold="bold.nii.gz", tr=2.0, progress=False)
    bold = root / "sub001/BOLD/task001_run001/bold.nii.gz"
    bold.write_bytes(os.urandom(3000))
    with pytest.raises(BadFileError, match=r"bold\.nii\.gz: cannot be read as a 4-D NIfTI run .*not a gzip file"):
        prepare_nifti(root, tmp_path / "out", bold="bold.nii.gz", tr=2.0, progress=False)


def test_mat_that_is_not_one(tmp_path):
    from neurodecode.readers.nsd import read_expdesign

    f = tmp_path / "nsd_expdesign.mat"
    f.write_bytes(os.urandom(3000))
    with pytest.raises(BadFileError, match=r"nsd_expdesign\.mat: cannot be read as a MATLAB v5 \.mat file "
                                           r"\(NSD's nsd_expdesign\.mat\) \(ValueError: Unknown mat file type"):
        read_expdesign(f)


@pytest.mark.parametrize("content", [os.urandom(3000), b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4])
def test_csv_that_is_not_one(tmp_path, content):
    from neurodecode.readers.csv import CSVFormatError, read_csv_recording

    f = tmp_path / "rec.csv"
    f.write_bytes(content)
    with pytest.raises(CSVFormatError) as err:
        read_csv_recording(f)
    msg = str(err.value)
    assert msg.startswith(f"{f}: not a text file") and "expected a CSV recording (a header line such as" in msg
    assert isinstance(err.value, UserError)


# --------------------------------------------------------------------------------------------------
# misleading or silent cases
# --------------------------------------------------------------------------------------------------
def test_a_file_as_root_says_it_is_a_file(csv_root, tmp_path):
    import argparse

    from neurodecode.cli.prepare import check_paths
    from neurodecode.readers.nifti import prepare_nifti

    f = csv_root / "subject1/session1/a.csv"
    with pytest.raises(UserError, match=rf"--root {f} is a file, not a folder: give the folder that holds the CSV "
                                        r"recordings \(subjectN/sessionM/\*\.csv\) \(perhaps .*session1\)"):
        _prepare_csv(f, tmp_path / "out")
    with pytest.raises(UserError, match="is a file, not a folder"):
        prepare_nifti(f, tmp_path / "out", progress=False)
    for source in ("csv", "nsd", "things-meg", "things-eeg2", "nifti"):
        with pytest.raises(UserError, match=rf"--root {f} is a file, not a folder: give the folder that holds the "
                                            rf"{source} data set"):
            check_paths(argparse.Namespace(source=source, root=f, out=tmp_path / "o"))
    check_paths(argparse.Namespace(source="epochs", root=f, out=tmp_path / "o"))  # epochs take one file
    with pytest.raises(UserError, match=rf"--root {tmp_path / 'nope'} does not exist"):
        check_paths(argparse.Namespace(source="csv", root=tmp_path / "nope", out=tmp_path / "o"))


def test_manifest_readers_say_a_file_root_is_a_file(tmp_path):
    from neurodecode.io.manifests import check_root

    f = tmp_path / "ds004212.zip"
    f.write_bytes(b"PK")
    with pytest.raises(UserError, match=rf"--root {f} is a file, not a folder: give the folder that holds the "
                                        r"things_meg data set \(the 'preprocessed' layout, see .*things_meg\.yaml\)"):
        check_root(f, "things_meg", "preprocessed", subjects=["1"])


def test_wrong_event_map_lists_the_codes_found_with_counts(csv_root, tmp_path):
    with pytest.raises(UserError) as err:
        _prepare_csv(csv_root, tmp_path / "out", event_map="3=face,4=house", subjects=["1"])
    msg = str(err.value)
    assert "Subject 01: no epoch in 1 file(s): the event map 3=face,4=house matches none of the marker codes found, " \
           "1 (x8), 2 (x7) (code (xcount)). Fix --event-map, e.g. --event-map 1=NAME1,2=NAME2." == msg


def test_event_map_code_that_never_occurs_is_reported(csv_root, tmp_path, caplog):
    with caplog.at_level("WARNING", logger="neurodecode"):
        _prepare_csv(csv_root, tmp_path / "out", event_map="1=face,2=house,9=car", subjects=["1"], reject=None)
    assert "sub-01: event map code(s) [9] never occur; marker codes found: 1 (x8), 2 (x7)" in caplog.text


def test_absent_subject_lists_the_available_ones(csv_root, tmp_path):
    with pytest.raises(UserError) as err:
        _prepare_csv(csv_root, tmp_path / "out", subjects=["7"])
    assert str(err.value) == (f"--subjects: no subject 07 under {csv_root}; available subjects: 01, 02 "
                              "(e.g. --subjects 01,02).")
    assert "\n" not in str(err.value)
    assert not (tmp_path / "out" / "sub-01.h5").exists()


def test_images_pointing_at_an_empty_folder_is_an_error(csv_root, tmp_path):
    empty = tmp_path / "stimuli"
    empty.mkdir()
    with pytest.raises(UserError) as err:
        _prepare_csv(csv_root, tmp_path / "out", images=empty, subjects=["1"])
    msg = str(err.value)
    assert msg.startswith(f"--images {empty}: no images for categories ['face', 'house']; the folder {empty} is empty. "
                          "Expected a folder per category (DIR/face/, DIR/faces/ or DIR/facees/), or image files")
    assert "leave out --images to prepare without images" in msg
    (empty / "faces").mkdir()  # one category found, the other not: still an error naming the one missing
    with pytest.raises(UserError, match=r"no images for category \['house'\] \(found for \['face'\]\)"):
        _prepare_csv(csv_root, tmp_path / "out", images=empty, subjects=["1"])


def test_no_images_at_all_is_stated_and_recorded(csv_root, tmp_path, caplog):
    with caplog.at_level("WARNING", logger="neurodecode"):
        out = _prepare_csv(csv_root, tmp_path / "out", subjects=["1"], reject=None)
    assert ("no images: the stimulus table lists the categories ['face', 'house'] without image paths (no --images "
            "given), so decoding targets must be made from the category names") in caplog.text
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["images"] == "none"
    assert open_prepared(out).stimuli.image_path.tolist() == ["", ""]


def test_flat_image_folder_matched_by_file_name_prefix(csv_root, tmp_path):
    from PIL import Image

    flat = tmp_path / "pictures"
    flat.mkdir()
    names = ["target-001.jpg", "target_002.png", "Target 3.jpg", "nontarget-001.jpg", "nontarget-002.jpg",
             "nontargets7.jpg", "readme.txt"]
    for i, n in enumerate(names):
        if n.endswith(".txt"):
            (flat / n).write_text("not an image")
        else:
            Image.new("RGB", (4, 4), (i * 30, 0, 0)).save(flat / n)
    out = _prepare_csv(csv_root, tmp_path / "out", event_map="1=target,2=nontarget", images=flat, subjects=["1"],
                       reject=None)
    t = open_prepared(out).stimuli
    target, nontarget = t.image_file(t.index["target"]), t.image_file(t.index["nontarget"])
    assert target == (out / "images" / "target").resolve() and nontarget == (out / "images" / "nontarget").resolve()
    assert sorted(p.name for p in target.iterdir()) == ["Target 3.jpg", "target-001.jpg", "target_002.png"]
    assert sorted(p.name for p in nontarget.iterdir()) == ["nontarget-001.jpg", "nontarget-002.jpg", "nontargets7.jpg"]
    # the folder-per-category layout still works, and wins over flat files of the same category
    (flat / "targets").mkdir()
    Image.new("RGB", (4, 4)).save(flat / "targets" / "x.jpg")
    out2 = _prepare_csv(csv_root, tmp_path / "out2", event_map="1=target,2=nontarget", images=flat, subjects=["1"],
                        reject=None)
    t2 = open_prepared(out2).stimuli
    assert t2.image_file(t2.index["target"]) == (flat / "targets").resolve()
    assert t2.image_file(t2.index["nontarget"]) == (out2 / "images" / "nontarget").resolve()


# --------------------------------------------------------------------------------------------------
# options recorded; a rerun with other options refused; epochs kept and rejected reported
# --------------------------------------------------------------------------------------------------
def test_rerun_with_other_options_is_refused_same_options_skip(csv_root, tmp_path):
    out = _prepare_csv(csv_root, tmp_path / "out", tmax=0.5, reject=None)
    meta = json.loads((out / "dataset.json").read_text())
    rec = meta["prepare_options"]
    assert rec["source"] == "csv" and rec["tmax"] == 0.5 and rec["event_map"] == "1=face,2=house"
    assert rec["reject"] is None and rec["l_freq"] == 1.0
    store = out / "sub-01.h5"
    stamp = store.stat().st_mtime_ns
    _prepare_csv(csv_root, out, tmax=0.5, reject=None)  # the same options: finished subjects are skipped
    assert store.stat().st_mtime_ns == stamp
    _prepare_csv(csv_root, out, tmax=0.5, reject=None, subjects=["2"])  # another subject selection is fine
    with pytest.raises(UserError) as err:
        _prepare_csv(csv_root, out, tmax=0.8, reject=None, event_map="1=a,2=b")
    assert str(err.value) == (f"{out} holds 2 store(s) prepared with other options: event_map \"1=face,2=house\" "
                              "(now \"1=a,2=b\"); tmax 0.5 (now 0.8). Pass --overwrite to rebuild them with the new "
                              "options, or choose another --out.")
    assert store.stat().st_mtime_ns == stamp
    _prepare_csv(csv_root, out, tmax=0.8, reject=None, event_map="1=a,2=b", overwrite=True)
    st = open_prepared(out).stores["01"]
    assert st.n_times == int(round(0.8 * FS)) - int(round(-0.1 * FS)) + 1 and set(st.stimulus_id.tolist()) == {"a", "b"}
    assert json.loads((out / "dataset.json").read_text())["prepare_options"]["tmax"] == 0.8


def test_rerun_from_the_command_line_with_a_changed_tmax(csv_root, tmp_path):
    import argparse

    from neurodecode.cli.prepare import add_arguments, run

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    base = ["csv", "--root", str(csv_root), "--out", str(tmp_path / "o"), "--event-map", "1=face,2=house",
            "--no-progress", "--reject", "0"]
    assert run(parser.parse_args(base)) == 0
    with pytest.raises(UserError, match=r"tmax 0\.8 \(now 0\.6\)\. Pass --overwrite"):
        run(parser.parse_args(base + ["--tmax", "0.6"]))
    assert run(parser.parse_args(base + ["--tmax", "0.6", "--overwrite"])) == 0


def test_lost_epochs_are_warned_about_and_counted(tmp_path, caplog, capsys):
    import argparse

    from neurodecode.cli.prepare import add_arguments, run

    root = tmp_path / "exp"
    # file a: 12 of 15 epochs hit by a 400 uV artifact; file b: clean
    _muse_csv(root / "subject1/session1/a.csv", 1, ONSETS, CODES, artifacts=[o + 30 for o in ONSETS[:12]])
    _muse_csv(root / "subject1/session2/b.csv", 2, ONSETS, CODES)
    with caplog.at_level("WARNING", logger="neurodecode"):
        out = _prepare_csv(root, tmp_path / "out")
    assert ("subject1/session1/a.csv: 12 of 15 epochs rejected (12 over the peak-to-peak threshold of 100 uV); only 3 "
            "kept: check the recording (a loose electrode?) or raise --reject (0 keeps every epoch)") in caplog.text
    assert "session2/b.csv" not in caplog.text
    info = json.loads((out / "dataset.json").read_text())["subjects_info"]["01"]
    assert (info["n_trials"], info["n_events"], info["n_rejected"]) == (18, 30, 12)
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    capsys.readouterr()
    assert run(parser.parse_args(["csv", "--root", str(root), "--out", str(tmp_path / "o2"), "--event-map",
                                  "1=face,2=house", "--no-progress"])) == 0
    printed = capsys.readouterr().out
    assert f"prepared csv -> {tmp_path / 'o2'}\n  sub-01: 18 trials kept, 12 of 30 epochs rejected (40%), 2 file(s)\n" \
           "    subject1/session1/a.csv: 3 kept, 12 of 15 rejected\n" == printed


def test_root_with_several_experiments_is_refused(tmp_path):
    root = tmp_path / "eeg-notebooks"
    for exp, seed in (("visual-N170", 1), ("visual-P300", 2), ("auditory-SSAEP", 3)):
        _muse_csv(root / exp / "subject1/session1/rec.csv", seed, ONSETS, CODES)
    _muse_csv(root / "visual-N170/subject2/session1/rec.csv", 4, ONSETS, CODES)
    with pytest.raises(UserError) as err:
        _prepare_csv(root, tmp_path / "out")
    assert str(err.value) == (
        f"--root {root} holds recordings of 3 experiments: auditory-SSAEP (1 file(s), subject(s) 01); visual-N170 "
        "(2 file(s), subject(s) 01, 02); visual-P300 (1 file(s), subject(s) 01). Their subject folders would be "
        "merged into the same subjects' sessions. Prepare one experiment at a time: pass its folder as --root (e.g. "
        f"--root {root / 'auditory-SSAEP'}) and a separate --out for each.")
    out = _prepare_csv(root / "visual-N170", tmp_path / "out", reject=None)  # one experiment: fine
    assert open_prepared(out).subjects == ["01", "02"]


# --------------------------------------------------------------------------------------------------
# manifests are package data
# --------------------------------------------------------------------------------------------------
def test_manifests_found_outside_a_checkout(tmp_path):
    """A copy of the package alone (no data_manifests/ beside it), run from another folder."""
    site = tmp_path / "site"
    shutil.copytree(REPO / "neurodecode", site / "neurodecode",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    code = ("import neurodecode, json; from neurodecode.io.manifests import load_manifest, available_manifests, "
            "manifests_dir; m = load_manifest('things_meg'); print(json.dumps([neurodecode.__file__, m['name'], "
            "sorted(m['layouts']), available_manifests(), str(manifests_dir())]))")
    env = {k: v for k, v in os.environ.items() if k != "NEURODECODE_MANIFESTS"}
    env["PYTHONPATH"] = str(site)
    res = subprocess.run([sys.executable, "-c", code], cwd=elsewhere, env=env, capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stderr
    file, name, layouts, avail, folder = json.loads(res.stdout.strip().splitlines()[-1])
    assert Path(file).is_relative_to(site)
    assert name == "things_meg" and "preprocessed" in layouts
    assert avail == ["nsd", "things_eeg2", "things_meg"]
    assert Path(folder) == site / "neurodecode" / "io" / "data_manifests"


def test_missing_manifest_says_where_it_looked(monkeypatch, tmp_path):
    from neurodecode.io.manifests import load_manifest

    monkeypatch.setenv("NEURODECODE_MANIFESTS", str(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"No manifest 'things_meg' in .*; available: \[\] "
                                                r"\(\$NEURODECODE_MANIFESTS is set: unset it"):
        load_manifest("things_meg")


def test_wheel_ships_the_manifests():
    """pyproject's package data covers the manifests, so a wheel carries them."""
    import fnmatch

    try:
        import tomllib
    except ModuleNotFoundError:  # pragma: no cover - Python 3.10
        tomllib = pytest.importorskip("tomli")
    conf = tomllib.loads((REPO / "pyproject.toml").read_text())
    patterns = conf["tool"]["setuptools"]["package-data"]["neurodecode"]
    shipped = sorted(p.relative_to(REPO / "neurodecode").as_posix()
                     for p in (REPO / "neurodecode/io/data_manifests").glob("*.yaml"))
    assert len(shipped) == 3
    for rel in shipped:
        assert any(fnmatch.fnmatch(rel, pat) for pat in patterns), (rel, patterns)
