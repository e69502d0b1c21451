"""The CSV and NIfTI readers end to end on real recordings (``../shared/data``): the N170 Muse EEG
(faces vs houses) and the Haxby et al. (2001) block-design fMRI. Reference numbers are those of
``shared/data/README.md``: N170 subject1 has 1133 epochs after 100 uV rejection and a plain
logistic regression reaches ROC AUC 0.68 +- 0.05; Haxby 1-slice 8-way leave-one-run-out accuracy
0.70 with a linear SVM (C = 0.01)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from neurodecode.io.prepared import open_prepared

pytestmark = pytest.mark.real_data


@pytest.fixture(scope="module")
def n170(shared_data, tmp_path_factory):
    from neurodecode.readers.csv import prepare_csv

    root = shared_data / "n170"
    if not root.is_dir():
        pytest.skip(f"{root} not found")
    out = prepare_csv(root, tmp_path_factory.mktemp("n170"), event_map="1=face,2=house", l_freq=1.0, h_freq=30.0,
                      tmin=-0.1, tmax=0.8, reject=100.0, progress=False)
    return root, out


@pytest.fixture(scope="module")
def haxby(shared_data, tmp_path_factory):
    from neurodecode.readers.nifti import prepare_nifti

    root = shared_data / "haxby2001"
    if not root.is_dir():
        pytest.skip(f"{root} not found")
    return root, prepare_nifti(root, tmp_path_factory.mktemp("haxby"), bold="bold_1slice.nii.gz", delay=4.0,
                               progress=False)


def test_n170_prepared(n170):
    root, out = n170
    ds = open_prepared(out, validate="values")
    assert ds.subjects == ["01", "02", "03", "10", "11"]
    st = ds.stores["01"]
    assert st.n_trials == 1133  # 1174 markers in 6 files, 41 rejected at 100 uV peak-to-peak
    assert st.ch_names == ["TP9", "AF7", "AF8", "TP10"]
    assert st.sfreq == 256.0 and st.tmin == pytest.approx(-26 / 256) and st.n_times == 232
    counts = dict(zip(*np.unique(st.stimulus_id, return_counts=True), strict=True))
    assert counts == {"face": 567, "house": 566}
    assert set(st.session.tolist()) == {1} and sorted(set(st.trial_field("run").tolist())) == [1, 2, 3, 4, 5, 6]
    assert np.abs(st.get_signals()).max() < 150e-6  # volts, after rejection
    # subject3's file copied under two sessions is counted once
    meta = json.loads((out / "dataset.json").read_text())
    assert [d["dropped"] for d in meta["duplicates_dropped"]] == [
        "recordings/subject3/session2/data_2018-05-14-19.38.10.csv"]
    files3 = [f["file"] for f in meta["subjects_info"]["03"]["files"]]
    assert len(files3) == 5 and not any("session2/data_2018-05-14-19.38.10" in f for f in files3)
    t = ds.stimuli
    assert t.stimulus_id.tolist() == ["face", "house"]
    assert t.image_file(0) == (root / "stimuli" / "faces").resolve()
    assert len(list(t.image_file(1).glob("*.jpg"))) == 48


def test_n170_linear_decoder_beats_chance(n170):
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    st = open_prepared(n170[1]).stores["01"]
    x = st.get_signals().reshape(st.n_trials, -1)
    y = (st.stimulus_id == "face").astype(int)
    clf = make_pipeline(StandardScaler(), LogisticRegression(C=0.01, solver="liblinear"))
    auc = cross_val_score(clf, x, y, cv=StratifiedKFold(5, shuffle=True, random_state=0), scoring="roc_auc")
    print(f"N170 subject1: 5-fold ROC AUC {auc.mean():.3f} +- {auc.std():.3f}")
    assert auc.mean() > 0.6


def test_haxby_prepared(haxby):
    root, out = haxby
    ds = open_prepared(out, validate="values")
    assert ds.subjects == ["001"]
    st = ds.stores["001"]
    assert st.modality == "fmri" and st.n_trials == 96
    assert sorted(set(st.trial_field("run").tolist())) == list(range(1, 13))
    counts = dict(zip(*np.unique(st.stimulus_id, return_counts=True), strict=True))
    assert counts == {c: 12 for c in ("bottle", "cat", "chair", "face", "house", "scissors", "scrambledpix", "shoe")}
    assert st.n_voxels == 530  # 800 voxels of the 40 x 20 x 1 slice minus 270 that are 0 in every run
    assert tuple(st.h5["voxels"].attrs["volume_shape"]) == (40, 20, 1)
    assert json.loads((out / "dataset.json").read_text())["subjects_info"]["001"]["tr"] == [2.5]
    assert set(st.trial_field("n_volumes").tolist()) <= {7, 8}


def test_haxby_leave_one_run_out_decoder(haxby):
    from sklearn.model_selection import LeaveOneGroupOut, cross_val_score
    from sklearn.svm import SVC

    st = open_prepared(haxby[1]).stores["001"]
    acc = cross_val_score(SVC(kernel="linear", C=0.01), st.get_signals(), st.stimulus_id.astype(str),
                          groups=st.trial_field("run"), cv=LeaveOneGroupOut())
    print(f"Haxby 1-slice: 8-way leave-one-run-out accuracy {acc.mean():.3f} +- {acc.std():.3f}")
    assert acc.mean() > 0.5


def test_haxby_25mm_with_vt_mask(shared_data, tmp_path):
    from neurodecode.readers.nifti import prepare_nifti

    root = shared_data / "haxby2001"
    if not root.is_dir():
        pytest.skip(f"{root} not found")
    out = prepare_nifti(root, tmp_path / "h25", bold="bold_25mm.nii.gz", mask="sub{subject}/masks/25mm/vt.nii.gz",
                        progress=False)
    st = open_prepared(out).stores["001"]
    import nibabel as nib

    vt = np.asarray(nib.load(str(root / "sub001/masks/25mm/vt.nii.gz")).dataobj) > 0
    assert st.shape == (96, int(vt.sum()))
    np.testing.assert_array_equal(st.voxel_ijk, np.argwhere(vt))


def test_n170_prepare_prints_kept_and_rejected_per_subject(shared_data, tmp_path, capsys, caplog):
    """The default output says, per subject, how many epochs were kept and rejected, and warns about
    the files that lose most of theirs (subject3's third session: 7 of 7 at 100 uV)."""
    import argparse

    from neurodecode.cli.prepare import add_arguments, run

    root = shared_data / "n170"
    if not root.is_dir():
        pytest.skip(f"{root} not found")
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    out = tmp_path / "n170"
    with caplog.at_level("WARNING", logger="neurodecode"):
        assert run(parser.parse_args(["csv", "--root", str(root), "--out", str(out), "--event-map", "1=face,2=house",
                                      "--subjects", "1,3", "--no-progress"])) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed == [f"prepared csv -> {out}",
                       "  sub-01: 1133 trials kept, 41 of 1174 epochs rejected (3%), 6 file(s)",
                       "  sub-03: 638 trials kept, 157 of 795 epochs rejected (20%), 5 file(s)",
                       "    recordings/subject3/session3/recording_2018-05-31-16.03.39.csv.csv: 0 kept, 7 of 7 rejected"]
    assert ("recordings/subject3/session3/recording_2018-05-31-16.03.39.csv.csv: 7 of 7 epochs rejected (6 over the "
            "peak-to-peak threshold of 100 uV; 1 too close to the start or end of the recording); only 0 kept"
            in caplog.text)
    rec = json.loads((out / "dataset.json").read_text())["prepare_options"]
    assert rec["event_map"] == "1=face,2=house" and rec["reject"] == 100.0 and rec["tmax"] == 0.8
    # a wrong event map names the codes the recordings hold, with their counts
    from neurodecode.utils import UserError

    with pytest.raises(UserError, match=r"matches none of the marker codes found, 1 \(x\d+\), 2 \(x\d+\)"):
        run(parser.parse_args(["csv", "--root", str(root), "--out", str(tmp_path / "bad"), "--event-map",
                               "3=face,4=house", "--subjects", "2", "--no-progress"]))
