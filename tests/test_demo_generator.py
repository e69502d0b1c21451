"""The demo generator: model, sampling, export/load, img2img, Lightning training and (slow) identification."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from neurodecode.reconstruction.demo_generator import (
    DemoDenoiser,
    DemoGenerator,
    default_scheduler_config,
    images_to_tensor,
    save_pretrained,
)

TINY = {"image_size": 16, "block_out_channels": [8, 16], "attention_levels": [False, True], "time_embed_dim": 32,
        "cond_hidden": 16, "norm_num_groups": 4, "attention_head_dim": 8}
TINY_MODULE = {"block_out_channels": [8, 16], "attention_levels": [False, True], "time_embed_dim": 32,
               "cond_hidden": 16, "norm_num_groups": 4, "attention_head_dim": 8, "sample_steps": 3, "val_samples": 2,
               "sample_every_n_epochs": 1, "val_timesteps": 2, "warmup_steps": 1}


def _tiny(embed_dim: int = 6, seed: int = 0) -> DemoDenoiser:
    torch.manual_seed(seed)
    model = DemoDenoiser(embed_dim, **TINY)
    with torch.no_grad():  # random weights everywhere (diffusers zero-initialises some output layers)
        for p in model.parameters():
            p.add_(0.2 * torch.randn_like(p))
    model.set_embed_stats(np.full(embed_dim, 1.0), np.full(embed_dim, 2.0))
    return model.eval()


def _generator(model: DemoDenoiser, **kw) -> DemoGenerator:
    from neurodecode.reconstruction.demo_generator import export_config

    config = export_config(model, scheduler=default_scheduler_config(), sampling={"steps": 4, "guidance": 2.0},
                           teacher={"spec": "test:features"}, output_size=32)
    return DemoGenerator(model, config, device="cpu", **kw)


def _arr(images) -> np.ndarray:
    return np.stack([np.asarray(im, dtype=np.float32) for im in images])


def test_seeded_conditioned_and_export_roundtrip(tmp_path):
    model = _tiny()
    gen = _generator(model)
    emb = torch.randn(3, 6, generator=torch.Generator().manual_seed(1)) * 2 + 1
    a = gen.generate(emb, seeds=[0, 1, 2], progress=False)
    assert len(a) == 3 and a[0].size == (32, 32) and a[0].mode == "RGB"  # upsampled to output_size
    again = gen.generate(emb, seeds=[0, 1, 2], progress=False)
    np.testing.assert_array_equal(_arr(a), _arr(again))  # same seed, same image
    other_seed = gen.generate(emb, seeds=[5, 1, 2], progress=False)
    assert np.abs(_arr(other_seed)[0] - _arr(a)[0]).mean() > 1.0
    np.testing.assert_array_equal(_arr(other_seed)[1:], _arr(a)[1:])  # a row does not depend on the others
    other_emb = gen.generate(emb.flip(0), seeds=[0, 1, 2], progress=False)
    assert np.abs(_arr(other_emb)[0] - _arr(a)[0]).mean() > 1.0  # the embedding conditions the image
    # export -> load gives the same images
    out = save_pretrained(model, tmp_path / "gen", scheduler=default_scheduler_config(),
                          sampling={"steps": 4, "guidance": 2.0}, teacher={"spec": "test:features"}, output_size=32)
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["format"] == "neurodecode-demo-generator" and cfg["format_version"] == 1
    assert cfg["teacher"] == {"spec": "test:features", "layer": "final", "embed_dim": 6}
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors"]
    loaded = DemoGenerator.from_pretrained(out, device="cpu")
    np.testing.assert_array_equal(_arr(loaded.generate(emb, seeds=[0, 1, 2], progress=False)), _arr(a))
    np.testing.assert_array_equal(loaded.denoiser.embed_std.numpy(), np.full(6, 2.0, np.float32))
    proto = loaded.protocol()
    assert proto["steps"] == 4 and proto["guidance"] == 2.0 and proto["sampler"] == "ddim"
    assert proto["model_size"] == 16 and proto["image_size"] == 32 and proto["upsampling"] == "bicubic"
    assert proto["dtype"] == "float32"


def test_embedding_scale_is_normalised_inside():
    """Raw embeddings of any scale: an affine change of units with matching statistics gives the same images."""
    model = _tiny()
    gen = _generator(model)
    emb = torch.randn(2, 6, generator=torch.Generator().manual_seed(3)) * 2 + 1
    a = _arr(gen.generate(emb, seeds=[0, 1], progress=False))
    scaled = _tiny()
    scaled.set_embed_stats(np.full(6, 100.0 * 1 + 5), np.full(6, 100.0 * 2))
    b = _arr(_generator(scaled).generate(emb * 100 + 5, seeds=[0, 1], progress=False))
    assert np.abs(a - b).max() <= 1.0  # equal up to rounding of the last uint8 step


def test_samplers_guidance_and_img2img():
    from PIL import Image

    model = _tiny()
    emb = torch.randn(2, 6, generator=torch.Generator().manual_seed(4))
    base = _generator(model)
    ref = _arr(base.generate(emb, seeds=[0, 1], progress=False))
    for sampler in ("dpm", "ddpm"):
        alt = _arr(_generator(model, sampler=sampler).generate(emb, seeds=[0, 1], progress=False))
        assert alt.shape == ref.shape and np.isfinite(alt).all()
        np.testing.assert_array_equal(alt, _arr(_generator(model, sampler=sampler).generate(emb, seeds=[0, 1],
                                                                                             progress=False)))
    unguided = _arr(_generator(model, guidance=1.0).generate(emb, seeds=[0, 1], progress=False))
    assert np.abs(unguided - ref).mean() > 0.5
    # img2img: a low strength stays near the start image, strength 1 ignores it
    rng = np.random.default_rng(0)
    starts = [Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)) for _ in range(2)]
    start = _arr([im.resize((32, 32), Image.Resampling.BICUBIC) for im in
                  [Image.fromarray(((images_to_tensor([s], 16)[0].permute(1, 2, 0).numpy() + 1) * 127.5)
                                   .round().astype(np.uint8)) for s in starts]])
    dist = {}
    for strength in (0.25, 0.75, 1.0):
        out = _arr(base.generate(emb, seeds=[0, 1], init_images=starts, strength=strength, progress=False))
        dist[strength] = float(np.abs(out - start).mean())
    assert dist[0.25] < dist[0.75] < dist[1.0] + 1e-6
    np.testing.assert_array_equal(
        _arr(base.generate(emb, seeds=[0, 1], init_images=starts, strength=1.0, progress=False)), ref)
    with pytest.raises(ValueError, match="strength"):
        base.generate(emb, seeds=[0, 1], init_images=starts, strength=0.0, progress=False)
    with pytest.raises(ValueError, match="start images"):
        base.generate(emb, seeds=[0, 1], init_images=starts[:1], progress=False)


def test_wrong_inputs_are_clear_errors(tmp_path):
    gen = _generator(_tiny())
    with pytest.raises(ValueError, match="expects 6-d image embeddings, got 5-d"):
        gen.generate(torch.zeros(2, 5), seeds=[0, 1], progress=False)
    with pytest.raises(ValueError, match="2 seeds for 3 embeddings"):
        gen.generate(torch.zeros(3, 6), seeds=[0, 1], progress=False)
    with pytest.raises(ValueError, match="expects"):
        gen.denoiser(torch.zeros(1, 3, 16, 16), torch.tensor([1]), torch.zeros(1, 7))
    from neurodecode.utils import UserError

    with pytest.raises(UserError, match="config.json"):
        DemoGenerator.from_pretrained(tmp_path, device="cpu")
    (tmp_path / "config.json").write_text(json.dumps({"format": "neurodecode-encoder"}))
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(UserError, match="neurodecode-demo-generator"):
        DemoGenerator.from_pretrained(tmp_path, device="cpu")
    with pytest.raises(ValueError, match="not divisible"):
        DemoDenoiser(6, image_size=18, block_out_channels=[8, 16, 16], norm_num_groups=4)


# --------------------------------------------------------------------------------------------------
# training with Lightning on the session's simulated data
# --------------------------------------------------------------------------------------------------
def _trainer(root: Path, **kw):
    import lightning as L

    return L.Trainer(accelerator="cpu", devices=1, default_root_dir=str(root), enable_progress_bar=False,
                     enable_model_summary=False, logger=L.pytorch.loggers.CSVLogger(str(root)), **kw)


def test_datamodule_uses_training_images_only(sim_eeg):
    from neurodecode.io.stimuli import StimulusTable
    from neurodecode.reconstruction.generator_data import GeneratorDataModule
    from neurodecode.teachers import EmbeddingCache

    dm = GeneratorDataModule(str(sim_eeg), teacher="test:features", image_size=16, batch_size=8)
    dm.setup("fit")
    table = StimulusTable.read_tsv(sim_eeg / "stimuli.tsv")
    used = np.concatenate([dm.sets["train"].rows.numpy(), dm.sets["val"].rows.numpy()])
    assert set(table.split[used]) == {"train"}
    assert sorted(used.tolist()) == np.flatnonzero(table.split == "train").tolist()
    val_concepts = set(table.concept[dm.sets["val"].rows.numpy()])
    assert val_concepts == set(dm.val_concepts()) and not val_concepts & set(table.concept[dm.sets["train"].rows.numpy()])
    cache = EmbeddingCache(sim_eeg / "embeddings.h5").get("test:features", "final",
                                                          ids=table.stimulus_id[dm.sets["train"].rows.numpy()].tolist())
    np.testing.assert_array_equal(dm.sets["train"].embeds.numpy(), cache)
    assert dm.embed_dim == 32 and dm.sets["train"].images.shape[1:] == (3, 16, 16)
    assert float(dm.sets["train"].images.min()) >= -1 and float(dm.sets["train"].images.max()) <= 1
    assert dm.describe()["source_size"] == 64
    stats = dm.embed_stats()
    np.testing.assert_allclose(stats["mean"], cache.mean(0), rtol=1e-4, atol=1e-5)


def test_fit_with_the_packaged_config_checkpoint_and_export(sim_eeg, tmp_path):
    """``neurodecode fit -c configs/sim/generator.yaml`` (tiny overrides) -> weights-only checkpoint -> export."""
    from neurodecode.cli.checks import packaged_config
    from neurodecode.cli.lightning import run_cli
    from neurodecode.reconstruction.generator_data import GeneratorDataModule
    from neurodecode.reconstruction.lit_generator import GeneratorModule

    root = tmp_path / "run"
    tiny = [f"--model.{k}={json.dumps(v)}" for k, v in TINY_MODULE.items()]
    cli = run_cli("fit", ["-c", str(packaged_config("sim/generator.yaml")), "--data.root", str(sim_eeg),
                          "--data.teacher", "test:features", "--data.image_size", "16", "--data.batch_size", "16",
                          *tiny, "--trainer.max_epochs", "2", "--trainer.limit_train_batches", "2",
                          "--trainer.enable_progress_bar", "false", "--trainer.default_root_dir", str(root)])
    module, dm = cli.model, cli.datamodule
    assert isinstance(module, GeneratorModule) and isinstance(dm, GeneratorDataModule)
    assert module.denoiser.embed_dim == 32 and module.denoiser.image_size == 16  # linked from the data
    log_dir = Path(cli.trainer.log_dir)
    log = (log_dir / "metrics.csv").read_text()
    assert "val/loss" in log and "val/pixcorr" in log
    assert (log_dir / "samples" / "epoch=001.png").is_file()
    results = json.loads((log_dir / "results.json").read_text())
    assert np.isfinite(results["test"]["test/loss"])  # the novel test images, evaluation only
    ckpt = root / "checkpoints" / "last.ckpt"
    raw = torch.load(ckpt, weights_only=True, map_location="cpu")  # no pickled objects
    hp = raw["hyper_parameters"]
    assert hp["embed_dim"] == 32 and hp["data"]["teacher"] == "test:features" and hp["data"]["splits"] == ["train"]
    # reloaded from the checkpoint, the same val/loss (fixed timesteps and noise)
    first = _trainer(tmp_path / "v1").validate(module, dm, verbose=False)[0]["val/loss"]
    again = _trainer(tmp_path / "v2").validate(GeneratorModule.load_from_checkpoint(ckpt, weights_only=True), dm,
                                               verbose=False)[0]["val/loss"]
    assert first == pytest.approx(again, rel=1e-5)
    # `neurodecode export` tells a generator checkpoint and exports it; folder and checkpoint give the same images
    from neurodecode.cli.main import main

    assert main(["export", "--ckpt", str(ckpt), "--out", str(tmp_path / "exported")]) == 0
    out = tmp_path / "exported"
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["teacher"]["spec"] == "test:features" and cfg["output_size"] == 64 and cfg["image_size"] == 16
    assert cfg["sampling"] == {"sampler": "ddim", "steps": 3, "guidance": 2.0}
    emb = torch.as_tensor(dm.sets["val"].embeds[:2])
    a = DemoGenerator.from_pretrained(out, device="cpu").generate(emb, seeds=[3, 4], progress=False)
    b = DemoGenerator.from_pretrained(ckpt, device="cpu").generate(emb, seeds=[3, 4], progress=False)
    np.testing.assert_array_equal(_arr(a), _arr(b))
    assert a[0].size == (64, 64)


# --------------------------------------------------------------------------------------------------
# slow: the default config learns to draw the stimuli
# --------------------------------------------------------------------------------------------------
# The session fixture sim_eeg has 48 training and 8 test images: too few to learn to draw novel concepts and
# to measure a two-way identification (8 test images give scores in steps of 1/7). This test simulates the
# images of a small data set of its own (one subject, seconds) and uses the demo's teacher, sim:features.
SLOW_SIM = {"modality": "eeg", "n_subjects": 1, "n_train_concepts": 60, "n_test_concepts": 40, "n_exemplars": 5,
            "n_reps_train": 1, "n_reps_test": 1, "sfreq": 50.0}
SLOW_EPOCHS = 40
IDENT_MIN = 0.62  # measured 0.694 (40 test images; shuffled 0.500) after 40 epochs, 109 s on 2 cores
CHANCE_MAX = 0.62



@pytest.mark.slow
def test_default_config_draws_recognisable_test_stimuli(tmp_path):
    """Trained briefly with the packaged config, teacher-conditioned samples of the held-out TEST stimuli are
    identified (efficientnet-lite0 features, two-way) far above chance, and shuffled conditions are not."""
    import yaml
    from PIL import Image

    from neurodecode.cli.checks import packaged_config
    from neurodecode.evaluation.recon_metrics import two_way_identification
    from neurodecode.reconstruction.generator_data import GeneratorDataModule
    from neurodecode.reconstruction.lit_generator import GeneratorModule
    from neurodecode.simulate.dataset import simulate
    from neurodecode.teachers import load_teacher
    from neurodecode.teachers.stimuli import stimulus_image_files

    root = tmp_path / "sim"
    simulate(root, progress_bar=False, **SLOW_SIM)
    cfg = yaml.safe_load(Path(packaged_config("sim/generator.yaml")).read_text())
    dm = GeneratorDataModule(**{**cfg["data"]["init_args"], "root": str(root)})
    module = GeneratorModule(**cfg["model"]["init_args"], seed=0)
    trainer = _trainer(tmp_path, max_epochs=SLOW_EPOCHS, precision=cfg["trainer"].get("precision", "32-true"),
                       gradient_clip_val=cfg["trainer"]["gradient_clip_val"], num_sanity_val_steps=0)
    trainer.fit(module, dm)
    gen = DemoGenerator(module.sampling_model.eval(), module.export_config(), device="cpu", batch_size=32)
    rows = np.flatnonzero(dm.stimuli.split == "test")
    emb = dm.embeddings(rows)
    truth = [Image.open(f[0]).convert("RGB") for f in stimulus_image_files(dm.stimuli, rows)]
    teacher = load_teacher("efficientnet-lite0")

    def feats(images):
        with torch.inference_mode():
            x = torch.stack([teacher.transform(im) for im in images])
            return teacher.image_features(x, ["final"])["final"].numpy()

    seeds = list(range(len(rows)))
    ft = feats(truth)
    ident = two_way_identification(feats(gen.generate(torch.as_tensor(emb), seeds=seeds, progress=False)), ft)
    perm = np.roll(np.arange(len(rows)), 1)  # every stimulus gets another one's embedding
    chance = two_way_identification(feats(gen.generate(torch.as_tensor(emb[perm]), seeds=seeds, progress=False)), ft)
    print(f"two-way identification: {ident:.3f} (shuffled {chance:.3f})")
    assert ident >= IDENT_MIN, (ident, chance)
    assert chance <= CHANCE_MAX, (ident, chance)


def test_cpu_sampling_thread_limit_gives_the_same_images_and_restores_torch():
    model = _tiny()
    outer = torch.get_num_threads()
    torch.set_num_threads(2)
    before = torch.get_num_threads()
    one = _generator(model)  # the default: one thread while sampling on the CPU
    assert one.threads == 1
    seen = []
    orig = one._generate
    one._generate = lambda *a: (seen.append(torch.get_num_threads()), orig(*a))[1]
    emb = torch.randn(3, 6)
    a = one.generate(emb, seeds=[1, 2, 3], progress=False)
    assert seen == [1] and torch.get_num_threads() == before
    b = _generator(model, threads=None).generate(emb, seeds=[1, 2, 3], progress=False)
    np.testing.assert_allclose(_arr(a), _arr(b), atol=2)  # uint8 images: threads may move a pixel by rounding
    torch.set_num_threads(outer)
    with pytest.raises(ValueError, match="threads"):
        _generator(model, threads=0)
