"""The low-level branch: head shapes, L1 training on simulated EEG, blend, export/load, VAE targets."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from PIL import Image

from neurodecode.encoders import create_encoder
from neurodecode.reconstruction.lit_lowlevel import LowLevelDataModule, LowLevelModule, lowres_images
from neurodecode.reconstruction.lowlevel import (
    LowLevelHead,
    blend,
    decoder_octaves,
    export_lowlevel,
    load_lowlevel,
    lowlevel_images,
    vae_encode,
)

TEACHER = "test:features"  # the feature cache written by conftest.make_sim


def _trainer(epochs: int, **kw) -> L.Trainer:
    kw.setdefault("enable_checkpointing", False)
    return L.Trainer(max_epochs=epochs, logger=False, enable_progress_bar=False, enable_model_summary=False,
                     accelerator="cpu", devices=1, **kw)


def _mlp(dm, n_outputs: int = 64):
    return create_encoder("mlp", n_chans=dm.n_chans, n_times=dm.n_times, sfreq=dm.sfreq, n_subjects=dm.n_subjects,
                          n_outputs=n_outputs, hidden_sizes=[256], dropout=0.3)


def _datamodule(root: Path, tmp_path: Path, **kw) -> LowLevelDataModule:
    kw = {"teacher": TEACHER, "protocol": "joint", "val_fraction": 0.25, "batch_size": 32,
          "average_train_reps": True, "image_size": 16, "target_cache": str(tmp_path / "targets.npz"), **kw}
    return LowLevelDataModule(str(root), **kw)


def _set_l1(module: LowLevelModule, dm: LowLevelDataModule, which: str) -> tuple[float, float, np.ndarray]:
    """(L1 of the model, L1 of the mean training image, predictions) on a set."""
    ts = dm.sets[which]
    module.eval()
    with torch.no_grad():
        pred = module(torch.as_tensor(ts.data), torch.as_tensor(ts.subjects)).numpy()
    gt = dm.targets[ts.stim_rows]
    mean = dm.targets[dm.sets["train"].stim_rows].mean(0)
    return float(np.abs(pred - gt).mean()), float(np.abs(mean - gt).mean()), pred


def _own_vs_other(pred: np.ndarray, gt: np.ndarray, rows: np.ndarray) -> tuple[float, float]:
    """Mean pixel Pearson r of each prediction with its own ground truth, and with other stimuli's."""
    p = pred.reshape(len(pred), -1)
    g = gt.reshape(len(gt), -1)
    p = p - p.mean(1, keepdims=True)
    g = g - g.mean(1, keepdims=True)
    r = (p / np.linalg.norm(p, axis=1, keepdims=True)) @ (g / np.linalg.norm(g, axis=1, keepdims=True)).T
    same = rows[:, None] == rows[None, :]
    return float(np.diag(r).mean()), float(r[~same].mean())


# --------------------------------------------------------------------------------------------------
# the head
# --------------------------------------------------------------------------------------------------
def test_decoder_octaves():
    assert decoder_octaves(32) == (4, 3)
    assert decoder_octaves(16) == (4, 2)
    assert decoder_octaves(12) == (6, 1)
    assert decoder_octaves(7) == (7, 0)


@pytest.mark.parametrize("side", [8, 16, 32])
def test_head_shapes_and_range(side):
    torch.manual_seed(0)
    enc = create_encoder("mlp", n_chans=5, n_times=20, n_outputs=12, hidden_sizes=[16], n_subjects=2)
    head = LowLevelHead(enc, (3, side, side), width=8).eval()
    x = torch.randn(4, 5, 20) * 30 + 7  # raw, un-normalised
    head.set_input_stats(torch.full((5,), 7.0), torch.full((5,), 30.0))
    with torch.no_grad():
        out = head(x, torch.tensor([0, 1, 0, 1]))
    assert out.shape == (4, 3, side, side)
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    with torch.no_grad():
        assert torch.allclose(head(x, None), head(x, torch.full((4,), -1)))  # -1: an unseen subject
    images = lowlevel_images(head, x, 0, size=40)
    assert len(images) == 4 and images[0].size == (40, 40) and images[0].mode == "RGB"


def test_head_refuses_bad_shapes():
    enc = create_encoder("mlp", n_chans=5, n_times=20, n_outputs=12, hidden_sizes=[16])
    with pytest.raises(ValueError, match="channels, side, side"):
        LowLevelHead(enc, (3, 16, 8))
    with pytest.raises(ValueError, match="start with 3"):
        LowLevelHead(enc, (4, 16, 16))
    with pytest.raises(ValueError, match="vae"):
        LowLevelHead(enc, (4, 8, 8), target="vae")
    with pytest.raises(ValueError, match="target"):
        LowLevelHead(enc, (3, 8, 8), target="latents")


# --------------------------------------------------------------------------------------------------
# blending
# --------------------------------------------------------------------------------------------------
def test_blend_endpoints_and_midpoint():
    rng = np.random.default_rng(0)
    a = Image.fromarray(rng.integers(0, 256, (24, 24, 3), dtype=np.uint8))
    b = Image.fromarray(rng.integers(0, 256, (24, 24, 3), dtype=np.uint8))
    assert np.array_equal(np.asarray(blend(a, b, 0.0)), np.asarray(a))
    assert np.array_equal(np.asarray(blend(a, b, 1.0)), np.asarray(b))
    mid = np.asarray(blend(a, b, 0.5), np.float64)
    expect = (np.asarray(a, np.float64) + np.asarray(b, np.float64)) / 2
    assert np.abs(mid - expect).max() <= 1.0
    # a smaller low-level image is resized to the reconstruction's size
    small = b.resize((8, 8))
    out = blend(a, small, 1.0)
    assert out.size == a.size
    assert np.array_equal(np.asarray(out), np.asarray(small.resize(a.size, Image.Resampling.BICUBIC)))
    with pytest.raises(ValueError, match="alpha"):
        blend(a, b, 1.5)


# --------------------------------------------------------------------------------------------------
# the data module
# --------------------------------------------------------------------------------------------------
def test_datamodule_targets_are_the_stimulus_images(sim_eeg, tmp_path):
    dm = _datamodule(sim_eeg, tmp_path)
    assert dm.target_shape == [3, 16, 16]
    dm.setup("fit")
    targets = dm.targets
    table = dm.dataset.stimuli
    assert targets.shape == (len(table), 3, 16, 16)
    assert targets.min() >= 0 and targets.max() <= 1
    with Image.open(table.image_file(3)) as im:
        ref = np.asarray(im.convert("RGB").resize((16, 16), Image.Resampling.BILINEAR), np.float32) / 255
    assert np.allclose(targets[3], ref.transpose(2, 0, 1), atol=1e-6)
    assert (tmp_path / "targets.npz").is_file()  # cached, read back by the next data module
    assert np.array_equal(_datamodule(sim_eeg, tmp_path).targets, targets)
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (32, 3, 16, 16)
    rows = batch["stim"].numpy()
    assert np.array_equal(batch["image"].numpy(), targets[rows])
    # training stimuli only for training, the held-out training concepts for validation
    train_concepts = set(table.concept[dm.sets["train"].stim_rows])
    val_concepts = set(table.concept[dm.sets["val"].stim_rows])
    assert val_concepts == set(dm.val_concepts()) and not (train_concepts & val_concepts)
    assert set(table.split[dm.sets["train"].stim_rows]) == {"train"}
    assert "test" not in dm.sets


# --------------------------------------------------------------------------------------------------
# training (L1) on simulated EEG
# --------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained(sim_eeg, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("lowlevel_fit")
    L.seed_everything(0, verbose=False)
    dm = _datamodule(sim_eeg, tmp)
    module = LowLevelModule(_mlp(dm), target_shape=dm.target_shape, n_chans=dm.n_chans, lr=1e-3)
    dm.setup("fit")
    untrained = LowLevelModule(_mlp(dm), target_shape=dm.target_shape, n_chans=dm.n_chans)
    untrained.head.set_input_stats(dm.input_stats()["mean"], dm.input_stats()["std"])
    trainer = _trainer(40, enable_checkpointing=True, default_root_dir=str(tmp))
    trainer.fit(module, datamodule=dm)
    ckpt = tmp / "lowlevel.ckpt"
    trainer.save_checkpoint(ckpt)
    return {"dm": dm, "module": module, "untrained": untrained, "trainer": trainer, "ckpt": ckpt, "tmp": tmp}


def test_l1_training_beats_the_mean_image(trained):
    dm, module = trained["dm"], trained["module"]
    l1, mean_l1, _ = _set_l1(module, dm, "val")
    untrained_l1, _, _ = _set_l1(trained["untrained"], dm, "val")
    # measured: val L1 0.065 (mean training image 0.087, untrained model 0.111)
    assert l1 < 0.9 * mean_l1, (l1, mean_l1)
    assert l1 < 0.75 * untrained_l1, (l1, untrained_l1)
    logged = trained["trainer"].callback_metrics
    assert float(logged["val/loss"]) == pytest.approx(l1, rel=1e-4)
    assert float(logged["val/loss_mean_image"]) == pytest.approx(mean_l1, rel=1e-4)


def test_checkpoint_is_weights_only_and_loads(trained):
    raw = torch.load(trained["ckpt"], map_location="cpu", weights_only=True)
    hp = raw["hyper_parameters"]
    assert hp["head_config"]["target_shape"] == [3, 16, 16]
    assert hp["data"]["lowlevel_target"] == "pixels"
    head = load_lowlevel(trained["ckpt"])
    ts = trained["dm"].sets["val"]
    x, s = torch.as_tensor(ts.data), torch.as_tensor(ts.subjects)
    trained["module"].eval()
    with torch.no_grad():
        assert torch.equal(head(x, s), trained["module"](x, s))


def test_export_load_roundtrip(trained, tmp_path):
    module, dm = trained["module"], trained["dm"]
    out = export_lowlevel(module.head, tmp_path / "exported", data=dm.describe())
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["format"] == "neurodecode-lowlevel" and cfg["data"]["image_size"] == 16
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors"]
    head = load_lowlevel(out)
    x = torch.as_tensor(dm.sets["val"].data)
    module.eval()
    with torch.no_grad():
        assert torch.equal(head(x, 1), module.head(x, 1))
    a = lowlevel_images(head, x[:3], 1)
    b = lowlevel_images(module.head, x[:3], 1)
    assert all(np.array_equal(np.asarray(i), np.asarray(j)) for i, j in zip(a, b, strict=True))
    # from the checkpoint directly, too
    again = load_lowlevel(export_lowlevel(trained["ckpt"], tmp_path / "from_ckpt"))
    with torch.no_grad():
        assert torch.equal(again(x, 1), head(x, 1))
    with pytest.raises(ValueError, match="format"):
        (tmp_path / "bad").mkdir()
        (tmp_path / "bad" / "config.json").write_text(json.dumps({"format": "neurodecode-encoder"}))
        (tmp_path / "bad" / "model.safetensors").write_bytes(b"")
        load_lowlevel(tmp_path / "bad")


def test_test_set_predictions_identify_their_stimulus(tmp_path_factory):
    """Own-vs-other pixel correlation on unseen (zero-shot) test stimuli.

    The session data set has 8 test images and 36 training images: too few to decode pixels (measured
    there: own r 0.17 vs other 0.21). This one has 270 training images of one subject (still clean data).
    MSE is used: L1 fades objects whose position is uncertain into the median background.
    """
    from conftest import make_sim

    root = make_sim(tmp_path_factory.mktemp("sim_lowlevel"), n_subjects=1, n_train_concepts=100,
                    n_test_concepts=20, n_exemplars=3)
    L.seed_everything(0, verbose=False)
    dm = _datamodule(root, root, val_fraction=0.1, protocol="intra")
    module = LowLevelModule(_mlp(dm), target_shape=dm.target_shape, n_chans=dm.n_chans, loss="mse")
    _trainer(30).fit(module, datamodule=dm)
    dm.setup("test")
    _, _, pred = _set_l1(module, dm, "test")
    ts = dm.sets["test"]
    own, other = _own_vs_other(pred, dm.targets[ts.stim_rows], ts.stim_rows)
    # measured: own 0.34, other 0.21
    assert own > other + 0.06, (own, other)


# --------------------------------------------------------------------------------------------------
# VAE latents (a tiny diffusers AutoencoderKL built from config)
# --------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_vae(tmp_path_factory) -> Path:
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    vae = AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
                        up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(8, 16), layers_per_block=1,
                        latent_channels=4, norm_num_groups=4, sample_size=16, scaling_factor=0.5)
    path = tmp_path_factory.mktemp("tiny_vae")
    vae.save_pretrained(path)
    return path


def test_vae_target_path(sim_eeg, tmp_path, tiny_vae):
    from diffusers import AutoencoderKL

    dm = _datamodule(sim_eeg, tmp_path, target="vae", vae=str(tiny_vae))
    assert dm.target_shape == [4, 8, 8]  # two levels: one 2x downsampling
    dm.setup("fit")
    vae = AutoencoderKL.from_pretrained(tiny_vae).eval()
    images = torch.from_numpy(lowres_images(dm.dataset.stimuli, [0, 5], 16))
    expect = vae_encode(vae, images).numpy()
    with torch.no_grad():
        direct = (vae.encode(images * 2 - 1).latent_dist.mean * 0.5).numpy()
    assert np.allclose(expect, direct, atol=1e-6)
    assert np.allclose(dm.targets[[0, 5]], expect, atol=1e-5)
    module = LowLevelModule(_mlp(dm, 16), target_shape=dm.target_shape, target="vae", vae=str(tiny_vae),
                            n_chans=dm.n_chans)
    _trainer(1, limit_train_batches=2, limit_val_batches=1).fit(module, datamodule=dm)
    out = export_lowlevel(module.head, tmp_path / "vae_head", data=dm.describe())
    head = load_lowlevel(out)
    x = torch.as_tensor(dm.sets["val"].data[:2])
    with torch.no_grad():
        assert head(x, 0).shape == (2, 4, 8, 8)
    images = lowlevel_images(head, x, 0)
    assert len(images) == 2 and images[0].size == (16, 16)  # decoded by the VAE


def test_vae_errors(sim_eeg, tmp_path):
    from neurodecode.utils import UserError

    with pytest.raises(ValueError, match="vae"):
        _datamodule(sim_eeg, tmp_path, target="vae")
    with pytest.raises(UserError, match="config.json"):
        _datamodule(sim_eeg, tmp_path, target="vae", vae=str(tmp_path))


# --------------------------------------------------------------------------------------------------
# the packaged config
# --------------------------------------------------------------------------------------------------
def test_packaged_config_trains_through_neurodecode_fit(sim_eeg, tmp_path):
    """``neurodecode fit -c configs/sim/lowlevel.yaml``: the data module is chosen by its class_path and
    links the encoder's input shape and the target into the model (the encoder's code size stays as set)."""
    from neurodecode.cli.lightning import run_cli

    cli = run_cli("fit", ["-c", "configs/sim/lowlevel.yaml", "--data.init_args.root", str(sim_eeg),
                          "--data.init_args.teacher", TEACHER, "--data.init_args.target_cache", str(tmp_path / "t.npz"),
                          "--data.init_args.progress_bar", "false", "--trainer.max_epochs", "1",
                          "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "1",
                          "--trainer.default_root_dir", str(tmp_path / "run"), "--trainer.enable_progress_bar", "false",
                          "--test_after_fit", "false"])
    dm, module = cli.datamodule, cli.model
    assert module.head.target_shape == (3, 32, 32) == tuple(dm.target_shape)
    assert module.head.encoder.n_chans == dm.n_chans  # linked from the data
    assert "val/loss" in cli.trainer.callback_metrics


# --------------------------------------------------------------------------------------------------
# on a trained alignment encoder
# --------------------------------------------------------------------------------------------------
def test_pretrained_encoder_route(sim_eeg, tmp_path):
    from neurodecode.training.data import BrainImageDataModule
    from neurodecode.training.lit import AlignmentModule

    L.seed_everything(0, verbose=False)
    common = {"teacher": TEACHER, "protocol": "joint", "val_fraction": 0.25, "average_train_reps": True}
    dm0 = BrainImageDataModule(str(sim_eeg), **common)
    enc = create_encoder("mlp", n_chans=dm0.n_chans, n_times=dm0.n_times, n_subjects=dm0.n_subjects,
                         n_outputs=dm0.embed_dim, hidden_sizes=[64])
    align = AlignmentModule(enc, n_chans=dm0.n_chans, eval_way=8)
    trainer = _trainer(1, limit_train_batches=2, limit_val_batches=1)
    trainer.fit(align, datamodule=dm0)
    ckpt = tmp_path / "align.ckpt"
    trainer.save_checkpoint(ckpt)

    dm = _datamodule(sim_eeg, tmp_path, **{k: v for k, v in common.items() if k != "teacher"})
    module = LowLevelModule(pretrained=str(ckpt), target_shape=dm.target_shape, n_chans=dm.n_chans)
    assert torch.equal(module.head.input_mean, align.input_mean)  # its normalisation comes along
    before = {k: v.clone() for k, v in module.head.encoder.state_dict().items()}
    decoder_before = module.head.fc.weight.detach().clone()
    _trainer(1, limit_train_batches=3, limit_val_batches=1).fit(module, datamodule=dm)
    after = module.head.encoder.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # frozen
    assert not torch.equal(module.head.fc.weight, decoder_before)  # the decoder learned
    head = load_lowlevel(export_lowlevel(module.head, tmp_path / "exported"))  # self-contained
    x = torch.as_tensor(dm.sets["val"].data[:2])
    module.eval()
    with torch.no_grad():
        assert torch.equal(head(x, 0), module(x, torch.zeros(2, dtype=torch.long)))
    # data that differ from the encoder's run are refused
    other = _datamodule(sim_eeg, tmp_path, protocol="intra")
    with pytest.raises(ValueError, match="train_subjects"):
        _trainer(1, limit_train_batches=1, limit_val_batches=0).fit(
            LowLevelModule(pretrained=str(ckpt), target_shape=other.target_shape), datamodule=other)
