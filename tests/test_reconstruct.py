"""``neurodecode reconstruct``: seeds that do not depend on order, resumable image jobs, retrieval by stage,
the whole command on simulated data (images, metrics, references, gallery, report) and its errors."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from conftest import FEATURE_TEACHER
from PIL import Image

from neurodecode.cli.main import main
from neurodecode.reconstruction.demo_generator import DemoDenoiser, DemoGenerator, default_scheduler_config
from neurodecode.reconstruction.jobs import (
    draw_images,
    draw_images_sharded,
    image_path,
    pending_jobs,
    read_samples,
    sample_seed,
)
from neurodecode.reconstruction.pipeline import derangement, stage_retrieval

TINY = {"image_size": 16, "block_out_channels": [8, 16], "attention_levels": [False, False], "time_embed_dim": 32,
        "cond_hidden": 16, "norm_num_groups": 4, "attention_head_dim": 8}


def _denoiser(embed_dim: int, seed: int = 0) -> DemoDenoiser:
    torch.manual_seed(seed)
    model = DemoDenoiser(embed_dim, **TINY)
    with torch.no_grad():  # random weights everywhere (diffusers zero-initialises some output layers)
        for p in model.parameters():
            p.add_(0.2 * torch.randn_like(p))
    return model.eval()


def _export_generator(out: Path, embed_dim: int = 32) -> Path:
    from neurodecode.reconstruction.demo_generator import save_pretrained

    return save_pretrained(_denoiser(embed_dim), out, scheduler=default_scheduler_config(),
                           sampling={"steps": 3, "guidance": 2.0, "sampler": "ddim"},
                           teacher={"spec": FEATURE_TEACHER, "layer": "final"}, output_size=32)


def _bytes(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*.png"))}


def _pixels(folder: Path) -> dict[str, np.ndarray]:
    out = {}
    for p in sorted(folder.rglob("*.png")):
        with Image.open(p) as im:
            out[p.relative_to(folder).as_posix()] = np.asarray(im, dtype=np.int16)
    return out


def _assert_same_images(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    """The same images, up to float rounding of other batch shapes (a few 1/255 steps at most)."""
    assert a.keys() == b.keys()
    for name, x in a.items():
        diff = np.abs(x - b[name])
        assert diff.max() <= 3 and diff.mean() < 0.05, (name, diff.max(), diff.mean())


def test_sample_seed_is_a_function_of_seed_id_and_k():
    assert sample_seed(0, "a", 0) == sample_seed(0, "a", 0)
    seeds = {sample_seed(s, i, k) for s in (0, 1) for i in ("a", "b") for k in (0, 1)}
    assert len(seeds) == 8 and all(0 <= v < 2**31 for v in seeds)


def test_jobs_are_order_free_resumable_and_shardable(tmp_path, monkeypatch):
    gen = DemoGenerator.from_pretrained(_export_generator(tmp_path / "gen", 6), device="cpu")
    ids = ["s3", "s1", "s2"]
    emb = np.random.default_rng(0).standard_normal((3, 6)).astype(np.float32)
    assert draw_images(gen, emb, ids, tmp_path / "a", n_samples=2, batch_size=4, show_progress=False) == \
        {"drawn": 6, "skipped": 0}
    assert sorted(_bytes(tmp_path / "a")) == [f"{s}/{k}.png" for s in ("s1", "s2", "s3") for k in (0, 1)]
    # other batches, other order of the stimuli: the same image for the same (stimulus, k)
    order = [2, 0, 1]
    draw_images(gen, emb[order], [ids[i] for i in order], tmp_path / "b", n_samples=2, batch_size=1,
                show_progress=False)
    _assert_same_images(_pixels(tmp_path / "a"), _pixels(tmp_path / "b"))
    a = _pixels(tmp_path / "a")
    assert np.abs(a["s1/0.png"] - a["s1/1.png"]).mean() > 5 and np.abs(a["s1/0.png"] - a["s2/0.png"]).mean() > 5
    # an interrupted run: only what is missing is drawn, and it is the same image
    image_path(tmp_path / "a", "s2", 1).unlink()
    assert pending_jobs(tmp_path / "a", ids, 2) == [(2, 1)]
    calls = []
    real = DemoGenerator.generate
    monkeypatch.setattr(DemoGenerator, "generate", lambda self, e, **kw: calls.append(len(e)) or real(self, e, **kw))
    assert draw_images(gen, emb, ids, tmp_path / "a", n_samples=2, show_progress=False) == {"drawn": 1, "skipped": 5}
    assert calls == [1]
    _assert_same_images(_pixels(tmp_path / "a"), a)
    monkeypatch.undo()
    # Lightning's predict loop (the multi-device path, here on one CPU device) writes the same files
    from neurodecode.reconstruction.generators import GeneratorFactory

    factory = GeneratorFactory(f"demo:{tmp_path / 'gen'}", (("batch_size", 2),))
    L.seed_everything(5)
    draw_images_sharded(factory, emb, ids, tmp_path / "c", n_samples=2, batch_size=2, accelerator="cpu",
                        devices=1, show_progress=False)
    _assert_same_images(_pixels(tmp_path / "c"), a)
    assert set(read_samples(tmp_path / "c", ids, 2)) == set(ids)
    with pytest.raises(FileNotFoundError, match="rerun the command"):
        read_samples(tmp_path / "c", ids, 3)


def test_stage_retrieval_ranks_and_derangement():
    g = np.eye(6, dtype=np.float32)
    r = stage_retrieval(g, g)
    assert r["top1"] == 1.0 and r["ranks"] == [1] * 6 and r["n_candidates"] == 6
    assert [row[0] for row in r["top_rows"]] == list(range(6))
    q = g.copy()
    q[0] = 0.6 * g[0] + 0.8 * g[1]  # closer to stimulus 1 than to its own: rank 2, then its own
    r = stage_retrieval(q, g)
    assert r["ranks"] == [2, 1, 1, 1, 1, 1] and r["top1"] == pytest.approx(5 / 6) and r["top5"] == 1.0
    assert r["top_rows"][0][:2] == [1, 0]
    p = derangement(7, seed=3)
    assert sorted(p) == list(range(7)) and not np.any(p == np.arange(7))
    with pytest.raises(ValueError, match="same embedding size"):
        stage_retrieval(np.ones((3, 4)), np.ones((3, 5)))


@pytest.fixture(scope="module")
def tiny_prior(tiny_encoder, tmp_path_factory) -> Path:
    from neurodecode.reconstruction.lit_prior import PriorModule
    from neurodecode.reconstruction.prior import export_prior
    from neurodecode.reconstruction.prior_data import PriorDataModule

    tmp = tmp_path_factory.mktemp("recon_prior")
    dm = PriorDataModule(str(tiny_encoder), batch_size=64, cache_dir=str(tmp / "cache"), progress=False)
    module = PriorModule(kind="diffusion", brain_dim=dm.brain_dim, target_dim=dm.target_dim,
                         net={"hidden_dims": [64, 32], "time_embed_dim": 32}, warmup_steps=1, val_steps=3,
                         val_guidance=2.0)
    trainer = L.Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_progress_bar=False,
                        enable_model_summary=False, enable_checkpointing=False, default_root_dir=str(tmp))
    trainer.fit(module, datamodule=dm)
    trainer.save_checkpoint(tmp / "prior.ckpt")
    return export_prior(tmp / "prior.ckpt", tmp / "prior")


def _reconstruct(out: Path, encoder: Path, prior: Path, generator: Path, *extra: str) -> int:
    return main(["reconstruct", "--encoder", str(encoder), "--prior", str(prior), "--generator", f"demo:{generator}",
                 "--out", str(out), "--samples", "2", "--networks", "efficientnet-lite0", "--device", "cpu",
                 "--no-progress", *extra])


def test_reconstruct_command_end_to_end(tiny_encoder, tiny_prior, tmp_path, capsys, monkeypatch):
    gen = _export_generator(tmp_path / "gen")
    out = tmp_path / "recon"
    assert _reconstruct(out, tiny_encoder, tiny_prior, gen, "--subject", "02", "--prior-steps", "5") == 0
    printed = capsys.readouterr().out
    assert "retrieval from the encoder's output" in printed and "two-way identification (EfficientNet-lite0)" in printed
    m = json.loads((out / "metrics.json").read_text())
    ids = m["stimulus_ids"]
    assert m["n_stimuli"] == 8 and m["n_samples"] == 2 and ids == sorted(ids)
    for sid in ids:  # images/<id>/<k>.png, sized by the generator
        for k in (0, 1):
            with Image.open(image_path(out / "images", sid, k)) as im:
                assert im.size == (32, 32)
        assert image_path(out / "references" / "ceiling", sid, 0).is_file()
        assert image_path(out / "references" / "chance", sid, 0).is_file()
    # every metric per round, the references in the same format, the protocol of the generation
    assert {"pixcorr", "ssim", "efficientnet-lite0"} <= set(m["metrics"])
    assert len(m["metrics"]["efficientnet-lite0"]["rounds"]) == 2
    assert 0.0 <= m["metrics"]["efficientnet-lite0"]["mean"] <= 1.0
    for ref in ("ceiling", "chance"):
        assert set(m[ref]["metrics"]) == set(m["metrics"]) and m[ref]["n_samples"] == 1
    assert sorted(m["chance"]["derangement"]) == ids and all(a != b for a, b in zip(m["chance"]["derangement"], ids, strict=True))
    p = m["protocol"]
    assert p["subject"] == "02" and p["prior_steps"] == 5 and p["prior_guidance"] == 2.0
    assert p["generator"]["spec"] == f"demo:{gen}" and p["steps"] == 3 and p["strength"] == 1.0
    assert p["teacher"] == {"spec": FEATURE_TEACHER, "layer": "final"} and "efficientnet-lite0" in p["networks"]
    assert m["image_seeds"][ids[0]] == [sample_seed(0, ids[0], k) for k in (0, 1)]
    # the encoder's retrieval is the one computed directly from its test embeddings of sub-02
    from neurodecode.reconstruction.prior_data import PriorDataModule

    dm = PriorDataModule(str(tiny_encoder), progress=False, cache_dir=str(tmp_path / "cache"))
    te = dm.test_embeddings()
    rows = np.flatnonzero(te["subject_label"] == "02")
    rows = rows[np.argsort(te["stimulus_id"][rows])]
    want = stage_retrieval(te["embedding"][rows], dm.data.image_embeddings[te["stim_row"][rows]])
    assert m["retrieval"]["encoder"]["top1"] == want["top1"] and m["retrieval"]["encoder"]["n_candidates"] == 8
    assert set(m["retrieval"]["prior"]) == {"top1", "top5", "n_candidates", "mean_rank"}
    with Image.open(out / "gallery.png") as im:
        assert im.size[0] > 400 and im.size[1] > 300
    report = (out / "report.md").read_text()
    for heading in ("## Metrics", "## References", "## Retrieval by stage", "![reconstruction gallery](gallery.png)"):
        assert heading in report
    # a rerun draws nothing and scores the same images again
    before = _bytes(out / "images")
    monkeypatch.setattr(DemoGenerator, "generate", lambda *a, **k: pytest.fail("redrew a finished image"))
    assert _reconstruct(out, tiny_encoder, tiny_prior, gen, "--subject", "02", "--prior-steps", "5") == 0
    assert _bytes(out / "images") == before
    assert json.loads((out / "metrics.json").read_text())["metrics"] == m["metrics"]


def test_reconstruct_lowlevel_start_and_blend(tiny_encoder, tiny_prior, tmp_path):
    from neurodecode.reconstruction.lowlevel import LowLevelHead, export_lowlevel, pretrained_encoder

    enc, _, _, _ = pretrained_encoder(tiny_encoder)
    torch.manual_seed(0)
    head = export_lowlevel(LowLevelHead(enc, (3, 16, 16), width=8), tmp_path / "lowlevel")
    gen = _export_generator(tmp_path / "gen")
    common = ("--no-references", "--samples", "1", "--prior-steps", "3")
    assert _reconstruct(tmp_path / "plain", tiny_encoder, tiny_prior, gen, *common) == 0
    assert _reconstruct(tmp_path / "low", tiny_encoder, tiny_prior, gen, *common, "--lowlevel", str(head),
                        "--strength", "0.5", "--blend", "0.4") == 0
    plain, low = _bytes(tmp_path / "plain" / "images"), _bytes(tmp_path / "low" / "images")
    assert plain.keys() == low.keys() and all(plain[k] != low[k] for k in plain)
    p = json.loads((tmp_path / "low" / "metrics.json").read_text())["protocol"]
    assert (p["lowlevel"], p["strength"], p["blend_alpha"]) == (str(head), 0.5, 0.4)


def test_validate_priors_scores_validation_concepts_only(tiny_encoder, tiny_prior, tmp_path):
    from neurodecode.evaluation.ranking import retrieval_ranks, similarity_matrix
    from neurodecode.reconstruction.pipeline import validate_priors
    from neurodecode.reconstruction.prior import load_prior
    from neurodecode.reconstruction.prior_data import PriorDataModule

    got = validate_priors(tiny_encoder, {"p": tiny_prior}, seed=2, cache_dir=tmp_path)["p"]
    dm = PriorDataModule(str(tiny_encoder), progress=False, cache_dir=str(tmp_path))
    val = dm.brain_embeddings("val")
    table = dm.data.dataset.stimuli
    assert not set(table.split[val["stim_row"]]) - {"train"}  # validation concepts come from the training split
    rows, targets = np.unique(val["stim_row"], return_inverse=True)
    pred = load_prior(tiny_prior).sample(val["embedding"], seed=2, progress=False).numpy()
    ranks = retrieval_ranks(similarity_matrix(pred, dm.data.image_embeddings[rows]), targets)
    assert got["top1"] == pytest.approx(np.mean(ranks <= 1)) and got["n_candidates"] == len(rows)
    own = dm.data.image_embeddings[rows][targets]
    cos = (pred * own).sum(1) / np.linalg.norm(pred, axis=1) / np.linalg.norm(own, axis=1)
    assert got["cosine"] == pytest.approx(cos.mean(), rel=1e-5)


def test_export_tells_a_prior_checkpoint(tiny_prior, tmp_path, capsys):
    from neurodecode.reconstruction.prior import load_prior

    ckpt = tiny_prior.parent / "prior.ckpt"
    assert main(["export", "--ckpt", str(ckpt), "--out", str(tmp_path / "p")]) == 0
    assert "exported the prior" in capsys.readouterr().out
    brain = torch.randn(4, 32, generator=torch.Generator().manual_seed(0))
    a = load_prior(tmp_path / "p").sample(brain, seed=1, steps=4, progress=False)
    b = load_prior(ckpt).sample(brain, seed=1, steps=4, progress=False)
    torch.testing.assert_close(a, b)


def test_reconstruct_errors_name_the_fix(tiny_encoder, tiny_prior, tmp_path, capsys):
    gen = _export_generator(tmp_path / "gen")
    assert _reconstruct(tmp_path / "o", tiny_encoder, tmp_path / "nope", gen) == 2
    assert "--prior" in capsys.readouterr().err
    assert _reconstruct(tmp_path / "o", tiny_encoder, tiny_prior, gen, "--subject", "07") == 2
    err = capsys.readouterr().err
    assert "--subject 07" in err and "'01', '02'" in err and "'mean'" in err
    other = _export_generator(tmp_path / "gen6", embed_dim=6)
    assert _reconstruct(tmp_path / "o", tiny_encoder, tiny_prior, other) == 2
    assert "6-d" in capsys.readouterr().err
    assert _reconstruct(tmp_path / "o", tiny_encoder, tiny_prior, gen, "--blend", "0.3") == 2
    assert "--lowlevel" in capsys.readouterr().err
    assert main(["reconstruct", "--encoder", str(tiny_encoder), "--prior", str(tiny_prior), "--generator",
                 "dmeo:x", "--out", str(tmp_path / "o")]) == 2
    assert "demo" in capsys.readouterr().err


@pytest.mark.slow
def test_two_ddp_processes_draw_the_single_process_images(tiny_encoder, tiny_prior, tmp_path):
    """``--devices 2 --strategy ddp`` (2 CPU processes over gloo) shards the jobs and draws the same images."""
    import os
    import subprocess
    import sys

    gen = _export_generator(tmp_path / "gen")
    common = ["--encoder", str(tiny_encoder), "--prior", str(tiny_prior), "--generator", f"demo:{gen}",
              "--samples", "3", "--networks", "none", "--no-references", "--device", "cpu", "--no-progress",
              "--prior-steps", "4"]
    env = {**os.environ, "NEURODECODE_NO_PROGRESS": "1", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run([sys.executable, "-m", "neurodecode", "reconstruct", *common, "--out", str(tmp_path / "ddp"),
                           "--devices", "2", "--strategy", "ddp", "--accelerator", "cpu"],
                          env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    assert "Starting with 2 processes" in log and log.count("images, metrics.json") == 1, log[-4000:]  # rank 0 reports
    assert main(["reconstruct", *common, "--out", str(tmp_path / "one")]) == 0
    ddp, one = _pixels(tmp_path / "ddp" / "images"), _pixels(tmp_path / "one" / "images")
    assert len(one) == 8 * 3
    _assert_same_images(ddp, one)
    assert json.loads((tmp_path / "ddp" / "metrics.json").read_text())["metrics"].keys() == {"pixcorr", "ssim"}
