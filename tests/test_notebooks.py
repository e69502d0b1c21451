"""The notebooks run from top to bottom (executed as Jupyter notebooks, on simulated data)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def _execute(name: str, tmp_path: Path, monkeypatch):
    """Run notebooks/<name> top to bottom as a Jupyter notebook, its work folder under tmp_path."""
    jupytext = pytest.importorskip("jupytext")
    nbclient = pytest.importorskip("nbclient")
    nb = jupytext.read(NOTEBOOKS / name)
    monkeypatch.setenv("NEURODECODE_NOTEBOOK_WORK", str(tmp_path / "work"))
    monkeypatch.setenv("NEURODECODE_NO_PROGRESS", "1")
    client = nbclient.NotebookClient(nb, timeout=900, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    return nb


@pytest.mark.slow
def test_retrieval_report_notebook_executes(tmp_path, monkeypatch):
    nb = _execute("retrieval_report.py", tmp_path, monkeypatch)
    work = tmp_path / "work"
    for name in ("similarity_matrix.png", "accuracy_vs_k.png", "evaluation/metrics.json", "evaluation/report.md"):
        assert (work / name).is_file(), name
    outputs = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "permutation p =" in outputs and "top-1" in outputs
    assert "error" not in {o.get("output_type") for c in nb.cells for o in c.get("outputs", [])}


@pytest.mark.slow
def test_reconstruction_gallery_notebook_executes(tmp_path, monkeypatch):
    nb = _execute("reconstruction_gallery.py", tmp_path, monkeypatch)
    recon = tmp_path / "work" / "recon"
    for name in ("gallery.png", "report.md", "images", "ceiling", "chance"):
        assert (recon / name).exists(), name
    n_images = len(list((recon / "images").rglob("*.png")))
    outputs = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "encoder  top-1" in outputs and "EfficientNet-lite0" in outputs and n_images == 2 * 20
    assert "image/png" in str([o.get("data", {}).keys() for c in nb.cells for o in c.get("outputs", [])])
    assert "error" not in {o.get("output_type") for c in nb.cells for o in c.get("outputs", [])}


def test_notebooks_have_no_committed_outputs():
    # jupytext percent files hold code and markdown only; no .ipynb with outputs is committed
    assert not list(NOTEBOOKS.glob("*.ipynb"))
    for f in NOTEBOOKS.glob("*.py"):
        assert "# %%" in f.read_text() and os.path.getsize(f) < 100_000
