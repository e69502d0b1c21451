"""The command line: help, sys-info, simulate end to end, python -m, unknown commands."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from neurodecode.cli.main import LIGHTNING_COMMANDS, PLAIN_COMMANDS, main


def _run(*args, check=True):
    proc = subprocess.run([sys.executable, "-m", "neurodecode", *args], capture_output=True, text=True, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
    return proc


def test_help_lists_every_subcommand(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in LIGHTNING_COMMANDS:
        assert f"\n  {name} " in out
    import importlib

    for name, module in PLAIN_COMMANDS.items():
        try:
            importlib.import_module(module)
        except ModuleNotFoundError:
            continue
        line = next(ln for ln in out.splitlines() if ln.startswith(f"  {name} "))
        assert len(line.split(None, 1)[1]) > 10  # one line of help each


def test_python_m_and_version():
    proc = _run("--version")
    assert proc.stdout.startswith("neurodecode ")
    assert "simulate" in _run("--help").stdout


def test_unknown_command_suggests(capsys):
    assert main(["simulat"]) == 2
    assert "Did you mean 'simulate'" in capsys.readouterr().err


def test_sys_info():
    proc = _run("sys-info", "--json")
    info = json.loads(proc.stdout)
    for pkg in ("torch", "mne", "lightning", "open_clip_torch", "diffusers"):
        assert info["packages"][pkg] != "not installed"
    assert info["devices"][0] == "cpu" and "cuda_available" in info
    table = _run("sys-info").stdout
    assert "torch" in table and "CUDA" in table and "Devices" in table


def test_simulate_end_to_end(tmp_path):
    out = tmp_path / "sim"
    proc = _run("simulate", "--modality", "eeg", "--out", str(out), "--subjects", "2", "--train-concepts", "10",
                "--test-concepts", "5", "--exemplars", "2", "--reps-test", "4", "--no-progress")
    assert "ceiling" in proc.stdout and "5-way" in proc.stdout
    from neurodecode.io.prepared import open_prepared

    ds = open_prepared(out, validate="values")
    assert ds.subjects == ["01", "02"] and len(ds.stimuli) == 25
    ceiling = json.loads((out / "ceiling.json").read_text())
    assert set(ceiling["per_subject"]) == {"01", "02"} and 0 < ceiling["mean"]["top1"] <= 1


def test_simulate_bad_flag_is_clear(tmp_path):
    proc = _run("simulate", "--modality", "ecog", "--out", str(tmp_path), check=False)
    assert proc.returncode == 2 and "invalid choice: 'ecog'" in proc.stderr


@pytest.mark.parametrize("cmd", ["simulate", "sys-info"])
def test_subcommand_help(cmd):
    assert "usage: neurodecode " + cmd in _run(cmd, "--help").stdout
