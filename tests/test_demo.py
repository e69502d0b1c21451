"""Checkpoints every epoch, and the demo's truth about what is finished: an interrupted fit resumes
from its last complete epoch and finishes, a finished stage is not redone, the packaged config is found
outside a checkout."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
import yaml
from conftest import FEATURE_TEACHER

from neurodecode.cli.lightning import run_cli
from neurodecode.cli.stages import StageBook, config_hash

TESTS = Path(__file__).resolve().parent


class InterruptOnce(L.Callback):
    """Press Ctrl-C (SIGINT to this process) at ``batch`` of ``epoch``, once: the flag file is removed."""

    def __init__(self, flag: str, epoch: int, batch: int = 1) -> None:
        self.flag, self.epoch, self.batch = flag, epoch, batch

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.current_epoch == self.epoch and batch_idx == self.batch and os.path.exists(self.flag):
            os.remove(self.flag)
            os.kill(os.getpid(), signal.SIGINT)


def _config(path: Path, root: Path | None = None, **trainer) -> Path:
    cfg = {
        "seed_everything": 3,
        "trainer": {"max_epochs": 4, "accelerator": "cpu", "devices": 1, "enable_progress_bar": False,
                    "enable_model_summary": False, **trainer},
        "model": {"class_path": "neurodecode.training.lit.AlignmentModule",
                  "init_args": {"encoder": {"class_path": "neurodecode.encoders.MLP",
                                            "init_args": {"hidden_sizes": [32], "dropout": 0.3}},
                                "lr": 3e-3, "warmup_epochs": 0.5}},
        "data": {"batch_size": 16, **({"root": str(root), "teacher": FEATURE_TEACHER, "subject": "01"} if root else {})},
    }
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_last_ckpt_is_written_every_epoch(tmp_path, sim_eeg):
    cfg = _config(tmp_path / "c.yaml", sim_eeg, default_root_dir=str(tmp_path / "run"),
                  logger={"class_path": "lightning.pytorch.loggers.CSVLogger", "init_args": {"save_dir": ""}})
    # monitor the max of the validation loss: the best checkpoint is (nearly) never saved after epoch 0, so
    # a last.ckpt tied to it (Lightning 2.6's save_last=True) would stay behind
    cli = run_cli("fit", ["-c", str(cfg), "--checkpoint.mode", "max", "--test_after_fit", "false"])
    ck = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    assert ck["epoch"] == 3 and ck["global_step"] == cli.trainer.global_step
    # the logger the config states, writing into default_root_dir
    assert type(cli.trainer.logger).__name__ == "CSVLogger"
    assert Path(cli.trainer.logger.log_dir).resolve().is_relative_to((tmp_path / "run").resolve())


def test_stage_hashes_chain():
    sim = config_hash({"n": 1})
    fit = config_hash({"epochs": 3}, (sim,))
    assert fit == config_hash({"epochs": 3}, (sim,))
    assert fit != config_hash({"epochs": 4}, (sim,)) and fit != config_hash({"epochs": 3}, (config_hash({"n": 2}),))


def test_stage_marker_is_the_last_word(tmp_path):
    from neurodecode.cli.stages import Stage

    book = StageBook(tmp_path)
    book.start("fit", "h1")
    assert book.started("fit", "h1") and book.done("fit", "h1") is None
    book.finish(Stage("fit", "h1", 1.0, {"epochs": 3}))
    assert book.done("fit", "h1")["numbers"] == {"epochs": 3} and not book.started("fit", "h1")
    assert book.done("fit", "h2") is None  # another configuration is not done
    book.start("fit", "h2")  # restarting forgets the old marker
    assert book.done("fit", "h1") is None


def test_demo_finds_its_packaged_config_outside_a_checkout(tmp_path):
    code = ("import os; os.chdir(os.environ['ELSEWHERE']); from neurodecode.cli.demo import demo_config_path; "
            "p = demo_config_path(); print(p); assert p.is_file() and p.name == 'eeg_atm.yaml'")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "ELSEWHERE": str(tmp_path)}, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    import neurodecode

    assert Path(proc.stdout.strip()).is_relative_to(Path(neurodecode.__file__).parent / "configs")


def _demo(out: Path, cfg: Path | None, *extra: str) -> subprocess.CompletedProcess:
    """``neurodecode demo --quick`` in a child process, with ``cfg`` or (None) the packaged config."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}
    # SIGINT back to its default in the child: a shell that starts the tests in the background ignores it, and a
    # Python started with SIGINT ignored never turns it into KeyboardInterrupt (the test presses Ctrl-C)
    config = ["--config", str(cfg)] if cfg else []
    return subprocess.run([sys.executable, "-m", "neurodecode", "demo", "--out", str(out), "--quick", *config, *extra],
                          capture_output=True, text=True, timeout=900, env=env,
                          preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def test_interrupted_demo_resumes_and_finishes(tmp_path):
    flag = tmp_path / "press-ctrl-c"
    flag.write_text("")
    cfg = _config(tmp_path / "demo.yaml", logger=False,
                  callbacks=[{"class_path": "test_demo.InterruptOnce", "init_args": {"flag": str(flag), "epoch": 1}}])
    out = tmp_path / "demo"
    first = _demo(out, cfg)
    assert first.returncode == 130, first.stdout[-2000:] + first.stderr[-3000:]
    assert "interrupted: run the same demo command again to resume" in first.stderr
    assert "demo finished" not in first.stdout and not flag.exists()
    assert not (out / "stages" / "fit.done.json").exists() and (out / "stages" / "simulate.done.json").exists()
    assert torch.load(out / "run" / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == 0

    second = _demo(out, cfg)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "[simulate] done before" in second.stdout
    assert "resuming the interrupted training from" in second.stdout and "(1 epoch(s) complete)" in second.stdout
    assert "[fit] finished in" in second.stdout and ": 3 epochs" in second.stdout
    assert "neurodecode demo finished" in second.stdout and "zero-shot top-1" in second.stdout
    # the reconstruction stages ran: prior and generator trained and exported, the images drawn and scored
    assert "[prior] exported" in second.stdout and "[generator] exported" in second.stdout
    assert "two-way identification (EfficientNet-lite0)" in second.stdout and "ceiling" in second.stdout
    recon = out / "reconstruction"
    assert (recon / "gallery.png").is_file() and len(list((recon / "images").rglob("*.png"))) == 20
    report = (out / "report.md").read_text()
    assert "![reconstruction gallery](reconstruction/gallery.png)" in report and "| EfficientNet-lite0 ↑ |" in report
    assert "A smoke run" in report and "| diffusion" in report and "| aligner" in report
    assert "validation, aligner prior: cosine" in second.stdout
    resumed = torch.load(out / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    assert resumed["epoch"] == 2

    # the same training without the interruption ends with the same weights
    plain = _config(tmp_path / "plain.yaml", logger=False, max_epochs=3, default_root_dir=str(tmp_path / "plain"))
    run_cli("fit", ["-c", str(plain), "--data.root", str(out / "sim_eeg"), "--data.teacher", "sim:features",
                    "--test_after_fit", "false"])
    want = torch.load(tmp_path / "plain" / "checkpoints" / "last.ckpt", weights_only=True)
    assert resumed["global_step"] == want["global_step"]
    for k, v in want["state_dict"].items():
        torch.testing.assert_close(resumed["state_dict"][k], v, rtol=0, atol=0, msg=k)

    # run again: nothing is redone, the closing table still says what each stage did
    third = _demo(out, cfg)
    assert third.returncode == 0
    for stage in ("simulate", "fit", "evaluate", "export", "prior", "aligner", "generator", "reconstruct"):
        assert f"[{stage}] done before" in third.stdout
    assert "(done before)" in third.stdout and "mean_top1" in third.stdout


@pytest.mark.slow
def test_packaged_demo_runs_every_step_then_redoes_only_what_a_change_touches(tmp_path):
    out = tmp_path / "demo"
    first = _demo(out, None)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "neurodecode demo finished" in first.stdout and "zero-shot top-1" in first.stdout
    for f in ("sim_eeg/ceiling.json", "run/checkpoints/last.ckpt", "evaluation/metrics.json", "evaluation/report.md",
              "evaluation/retrieval_strip.png", "exported/model.safetensors", "exported/config.json"):
        assert (out / f).is_file(), f
    again = _demo(out, None, "--epochs", "2")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "[simulate] done before" in again.stdout and "configuration changed" in again.stdout
    assert ": 2 epochs" in again.stdout and "[evaluate] best-epoch" in again.stdout
    assert "[export] done before" not in again.stdout
