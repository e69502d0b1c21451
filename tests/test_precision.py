"""The CPU precision default: bf16 detection, the decision, and a run that takes it."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
import yaml
from tests_helpers import tiny_fit_config

import neurodecode._sys_info as si
from neurodecode.cli import lightning as ndl

BF16 = {"supported": True, "features": ["avx512_bf16"], "source": "test", "machine": "x86_64"}
NO_BF16 = {"supported": False, "features": [], "source": "test", "machine": "x86_64"}


def _cpuinfo(tmp_path: Path, flags: str) -> str:
    path = tmp_path / "cpuinfo"
    path.write_text(f"processor\t: 0\nmodel name\t: Test CPU\nflags\t\t: {flags}\n\nprocessor\t: 1\nflags\t\t: fpu\n")
    return str(path)


@pytest.mark.parametrize(("flags", "features"), [
    ("fpu sse2 avx2 avx512f avx512bw avx512_bf16", ["avx512_bf16"]),   # e.g. AMD Zen 4, Cooper Lake
    ("fpu avx512f avx512_bf16 amx_tile amx_bf16 amx_int8", ["amx_bf16", "avx512_bf16"]),  # Sapphire Rapids
    ("fpu sse2 avx2 avx512f avx512bw avx512vl", []),   # AVX-512 without bf16: emulated, not native
])
def test_cpu_bf16_support_reads_the_cpu_flags(tmp_path, flags, features):
    info = si.cpu_bf16_support(_cpuinfo(tmp_path, flags))
    assert info["features"] == features
    assert info["supported"] is bool(features)
    assert info["source"] == "/proc/cpuinfo"


def test_cpu_bf16_support_of_this_machine_agrees_with_torch():
    info = si.cpu_bf16_support()
    assert set(info) >= {"supported", "features", "source", "machine"}
    probe = getattr(torch.cpu, "_is_avx512_bf16_supported", None)
    if info["source"] == "/proc/cpuinfo" and probe is not None:
        assert ("avx512_bf16" in info["features"]) == bool(probe())


def test_default_cpu_precision_decision():
    assert si.default_cpu_precision(BF16, env={})[0] == "bf16-mixed"
    assert "avx512_bf16" in si.default_cpu_precision(BF16, env={})[1]
    assert si.default_cpu_precision(NO_BF16, env={})[0] == "32-true"
    # the environment variable wins over the detection, both ways
    env32 = {si.CPU_PRECISION_ENV: "32-true"}
    assert si.default_cpu_precision(BF16, env=env32) == ("32-true", f"${si.CPU_PRECISION_ENV}=32-true")
    assert si.default_cpu_precision(NO_BF16, env={si.CPU_PRECISION_ENV: "bf16"})[0] == "bf16-mixed"
    with pytest.raises(ValueError, match=si.CPU_PRECISION_ENV):
        si.default_cpu_precision(BF16, env={si.CPU_PRECISION_ENV: "16-mixed"})


@pytest.fixture
def bf16_cpu(monkeypatch):
    """This machine as a CPU with native bf16 and no GPU, with the environment override unset."""
    monkeypatch.setattr(si, "cpu_bf16_support", lambda *a: BF16)
    monkeypatch.delenv(si.CPU_PRECISION_ENV, raising=False)


def test_choose_precision(bf16_cpu, monkeypatch):
    # a stated precision always wins
    assert ndl.choose_precision("32-true", "cpu")[0] == "32-true"
    assert ndl.choose_precision("16-mixed", "gpu")[0] == "16-mixed"
    # not stated, on the CPU: the CPU default
    assert ndl.choose_precision(None, "cpu")[0] == "bf16-mixed"
    cpu_class = {"class_path": "lightning.pytorch.accelerators.CPUAccelerator"}
    assert ndl.choose_precision(None, cpu_class)[0] == "bf16-mixed"
    monkeypatch.setattr(si, "cpu_bf16_support", lambda *a: NO_BF16)
    assert ndl.choose_precision(None, "cpu")[0] == "32-true"
    monkeypatch.setattr(si, "cpu_bf16_support", lambda *a: BF16)
    # GPUs untouched: Lightning's default
    assert ndl.choose_precision(None, "gpu")[0] is None
    assert ndl.choose_precision(None, "cuda")[0] is None
    from lightning.pytorch.accelerators import CUDAAccelerator, MPSAccelerator, XLAAccelerator

    monkeypatch.setattr(CUDAAccelerator, "is_available", staticmethod(lambda: True))
    assert ndl.choose_precision(None, "auto")[0] is None
    for acc in (CUDAAccelerator, MPSAccelerator, XLAAccelerator):
        monkeypatch.setattr(acc, "is_available", staticmethod(lambda: False))
    assert ndl.choose_precision(None, "auto")[0] == "bf16-mixed"
    monkeypatch.setenv(si.CPU_PRECISION_ENV, "bf16-mixd")
    with pytest.raises(ndl.UserError, match="bf16-mixd"):
        ndl.choose_precision(None, "cpu")


def test_emulated_bf16_warning(bf16_cpu, monkeypatch):
    # a CPU with native bf16, or float32, or a GPU: nothing to say
    assert ndl.emulated_bf16_warning("bf16-mixed", "cpu") is None
    monkeypatch.setattr(si, "cpu_bf16_support", lambda *a: NO_BF16)
    assert ndl.emulated_bf16_warning("32-true", "cpu") is None
    assert ndl.emulated_bf16_warning(None, "cpu") is None
    assert ndl.emulated_bf16_warning("bf16-mixed", "gpu") is None
    # bfloat16 stated for a CPU that emulates it: the warning names the option and the fix
    for stated in ("bf16-mixed", "bf16-true", "bf16"):
        msg = ndl.emulated_bf16_warning(stated, "cpu")
        assert msg is not None and stated in msg and "--trainer.precision 32-true" in msg


def test_packaged_cpu_configs_leave_precision_to_the_default():
    # the configs that the simulator and the demo train on a CPU must not force emulated bf16 on a CPU without it
    import yaml

    from neurodecode.cli.checks import packaged_config

    for name in ("sim/eeg_atm.yaml", "sim/meg_brainmodule.yaml", "sim/generator.yaml"):
        trainer = yaml.safe_load(packaged_config(name).read_text())["trainer"]
        assert "bf16" not in str(trainer.get("precision", "")), name


def _fit(tmp_path: Path, sim_eeg: Path, *argv: str):
    cfg = tiny_fit_config(sim_eeg, tmp_path / "run")
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    records: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda r: records.append(r.getMessage())  # type: ignore[method-assign]
    log = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    log.addHandler(handler)
    try:
        cli = ndl.run_cli("fit", ["-c", str(tmp_path / "config.yaml"), *argv])
    finally:
        log.removeHandler(handler)
    res = json.loads((tmp_path / "run" / "results.json").read_text())
    return cli, res, [r for r in records if r.startswith("neurodecode: precision")]


def test_fit_takes_the_cpu_default_and_a_stated_precision_wins(tmp_path, sim_eeg, bf16_cpu, one_thread):
    cli, res, lines = _fit(tmp_path / "a", sim_eeg)
    assert cli.trainer.precision == "bf16-mixed" and res["precision"] == "bf16-mixed"
    assert lines == ["neurodecode: precision bf16-mixed (CPU default: this CPU computes bfloat16 natively "
                     "(avx512_bf16); --trainer.precision 32-true for float32)"]
    assert 0.0 <= res["test"]["test/top1"] <= 1.0 and torch.isfinite(torch.tensor(res["test"]["test/loss"]))
    # the saved config says what the run used
    saved = yaml.safe_load((tmp_path / "a" / "run" / "config.yaml").read_text())
    assert saved["trainer"]["precision"] == "bf16-mixed"
    # the weights stay float32 under bf16-mixed
    assert all(p.dtype == torch.float32 for p in cli.model.parameters())

    cli, res, lines = _fit(tmp_path / "b", sim_eeg, "--trainer.precision", "32-true")
    assert cli.trainer.precision == "32-true" and res["precision"] == "32-true"
    assert lines == ["neurodecode: precision 32-true (stated by the config or the command line)"]


def test_environment_keeps_fits_in_fp32(tmp_path, sim_eeg, bf16_cpu, one_thread, monkeypatch):
    monkeypatch.setenv(si.CPU_PRECISION_ENV, "32-true")
    cli, res, lines = _fit(tmp_path, sim_eeg)
    assert cli.trainer.precision == "32-true" and res["precision"] == "32-true"
    assert lines == [f"neurodecode: precision 32-true (CPU default: ${si.CPU_PRECISION_ENV}=32-true)"]
