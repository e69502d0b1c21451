"""The README's Python examples run as written (on data the test makes the way the README says)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import make_sim

README = Path(__file__).resolve().parents[1] / "README.md"


def _python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_has_python_examples():
    assert len(_python_blocks()) >= 1


def test_the_first_python_example_runs(tmp_path, monkeypatch):
    from neurodecode.cli.lightning import run_lightning_cli
    from neurodecode.training.export import export_checkpoint

    root = make_sim(tmp_path / "sim_eeg")
    run_lightning_cli("fit", [
        "--model", "neurodecode.training.lit.AlignmentModule",
        "--model.encoder", "neurodecode.encoders.MLP", "--model.encoder.hidden_sizes", "[16]",
        "--data.root", str(root), "--data.teacher", "test:features", "--trainer.max_epochs", "1",
        "--trainer.logger", "false", "--trainer.enable_progress_bar", "false", "--test_after_fit", "false",
        "--trainer.default_root_dir", str(tmp_path / "run")])
    export_checkpoint(tmp_path / "run" / "checkpoints" / "last.ckpt", tmp_path / "exported")
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(_python_blocks()[0], str(README), "exec"), scope)
    assert tuple(scope["embedding"].shape) == (10, 32)
    # the Epochs keep one event id per concept, so the trials can be told apart by category
    assert len(scope["epochs"].event_id) > 1


@pytest.mark.real_data
def test_the_crossval_python_example_runs(shared_data, tmp_path, monkeypatch):
    """The few-category Python example, as written, on the shared N170 recordings.

    The example's training budget (60 epochs, 3 models per fold) is what a user runs; here the one
    heavy call is given a budget of 2 epochs and 1 model so that the test checks that the snippet runs
    and returns what it prints (its accuracy is checked by tests/test_few_category.py).
    """
    from neurodecode.cli import main
    from neurodecode.training import crossval

    n170 = shared_data / "n170"
    prepared = tmp_path / "prepared" / "n170"
    assert main(["prepare", "csv", "--root", str(n170), "--out", str(prepared), "--event-map", "1=face,2=house",
                 "--images", str(n170 / "stimuli"), "--subjects", "01", "--no-progress"]) == 0
    real_call = crossval.crossval_alignment

    def short(*args, **kwargs):
        kwargs.update(n_models=1, max_epochs=2, progress_bar=False)
        return real_call(*args, **kwargs)

    monkeypatch.setattr(crossval, "crossval_alignment", short)
    monkeypatch.chdir(tmp_path)
    blocks = [b for b in _python_blocks() if "crossval_alignment" in b]
    assert len(blocks) == 1
    scope: dict = {}
    exec(compile(blocks[0], str(README), "exec"), scope)
    assert scope["x"].shape[0] == 1133 and scope["x"].shape[-1] < 256  # decimated to 128 Hz
    assert 0.0 <= scope["result"].roc_auc["mean"] <= 1.0 and scope["result"].roc_auc["n"] == 5
    assert 0.6 < scope["baseline"].roc_auc["mean"] < 0.8
