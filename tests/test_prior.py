"""Stage 1 of reconstruction: the diffusion prior, the PriorTransformer, the aligner, their data and export."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import FEATURE_TEACHER
from torch.utils.data import DataLoader, Dataset

from neurodecode.reconstruction.lit_prior import PriorModule, embedding_metrics
from neurodecode.reconstruction.prior import export_prior, load_prior
from neurodecode.reconstruction.prior_nets import DiffusionPriorUNet, MLPAligner, PriorTransformerNet

SMALL_UNET = {"hidden_dims": [128, 64, 32], "time_embed_dim": 64}
SMALL_PT = {"num_layers": 2, "num_attention_heads": 2, "attention_head_dim": 16}


# --------------------------------------------------------------------------------------------------
# a linear-Gaussian problem: target = W @ condition + small noise
# --------------------------------------------------------------------------------------------------
class Pairs(Dataset):
    def __init__(self, brain: torch.Tensor, target: torch.Tensor) -> None:
        self.brain, self.target = brain, target

    def __len__(self) -> int:
        return len(self.brain)

    def __getitem__(self, i: int) -> dict:
        return {"brain": self.brain[i], "target": self.target[i], "stim": i, "index": i}


@pytest.fixture(scope="module")
def linear_problem():
    g = torch.Generator().manual_seed(0)
    n, d_brain, d_target = 1536, 16, 24
    w = torch.randn(d_target, d_brain, generator=g) / d_brain**0.5
    brain = torch.randn(n, d_brain, generator=g)
    # scaled like raw CLIP embeddings, inside the [-1, 1] that DDPMScheduler()'s default clip_sample keeps
    target = 0.3 * (brain @ w.T + 0.1 * torch.randn(n, d_target, generator=g))
    return {"train": (brain[:1280], target[:1280]), "val": (brain[1280:], target[1280:]), "dims": (d_brain, d_target)}


def _trainer(tmp_path: Path | None = None, **kw) -> L.Trainer:
    args = dict(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                enable_model_summary=False, gradient_clip_val=1.0, num_sanity_val_steps=0)
    if tmp_path is not None:
        args["default_root_dir"] = str(tmp_path)
    args.update(kw)
    return L.Trainer(**args)


def _fit(module: PriorModule, problem: dict, **trainer_kw) -> L.Trainer:
    module.prior.set_target_stats(problem["train"][1].mean(0), problem["train"][1].std(0))
    trainer = _trainer(**trainer_kw)
    trainer.fit(module, DataLoader(Pairs(*problem["train"]), batch_size=128, shuffle=True),
                DataLoader(Pairs(*problem["val"]), batch_size=256))
    return trainer


def _cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(F.cosine_similarity(a, b, dim=-1).mean())


@pytest.fixture(scope="module")
def trained_diffusion(linear_problem, tmp_path_factory):
    torch.manual_seed(0)
    d_brain, d_target = linear_problem["dims"]
    # ATM's objective and sampler (DDPMScheduler() defaults, epsilon prediction, guidance 5), a small net
    module = PriorModule(kind="diffusion", brain_dim=d_brain, target_dim=d_target, net=SMALL_UNET, warmup_steps=10,
                         val_steps=25, sample_every_n_epochs=20, seed=1)
    trainer = _fit(module, linear_problem, max_epochs=20)
    ckpt = tmp_path_factory.mktemp("prior_ckpt") / "prior.ckpt"
    trainer.save_checkpoint(ckpt)
    return module.eval(), trainer, ckpt


# --------------------------------------------------------------------------------------------------
# the networks
# --------------------------------------------------------------------------------------------------
def test_unet_predicts_noise_shaped_output_driven_by_timestep_and_condition():
    torch.manual_seed(0)
    net = DiffusionPriorUNet(embed_dim=24, cond_dim=16, hidden_dims=[64, 32, 16], time_embed_dim=32).eval()
    x, c = torch.randn(5, 24), torch.randn(5, 16)
    t = torch.tensor([0, 10, 100, 500, 999])
    out = net(x, t, c)
    assert out.shape == (5, 24)
    assert not torch.allclose(out, net(x, t.flip(0), c), atol=1e-4)       # the timestep matters
    assert not torch.allclose(out, net(x, t, torch.randn(5, 16)), atol=1e-4)  # the condition matters
    # a dropped condition (mask 0) is exactly the unconditional network, per row
    uncond = net(x, t)
    mixed = net(x, t, c, torch.tensor([1.0, 0.0, 1.0, 0.0, 0.0]))
    torch.testing.assert_close(mixed[[0, 2]], out[[0, 2]])
    torch.testing.assert_close(mixed[[1, 3, 4]], uncond[[1, 3, 4]])
    # ATM's widths by default, with a mirrored decoder and a level per width
    atm = DiffusionPriorUNet(embed_dim=1024, cond_dim=1024)
    assert atm.get_config()["hidden_dims"] == [1024, 512, 256, 128, 64]
    assert [m[0].out_features for m in atm.down] == [512, 256, 128, 64]
    assert [m[0].out_features for m in atm.up] == [128, 256, 512, 1024]
    assert [m.out_features for m in atm.cond_down] == [1024, 512, 256, 128]
    assert [m.out_features for m in atm.cond_up] == [64, 128, 256, 512]
    assert MLPAligner(24, 16, width=32)(c).shape == (5, 24)


@pytest.mark.filterwarnings("ignore:You are trying to `self.log\\(\\)`")
def test_condition_dropout_modes_drop_what_they_say():
    torch.manual_seed(0)
    batch = PriorModule(kind="diffusion", brain_dim=4, target_dim=4, net=SMALL_UNET, cond_dropout=0.1)
    masks = torch.stack([batch.condition_mask(64) for _ in range(3000)])
    per_step = masks.mean(1)
    assert set(per_step.unique().tolist()) == {0.0, 1.0}  # all or nothing in each step
    assert 0.08 < float((per_step == 0).float().mean()) < 0.12
    sample = PriorModule(kind="diffusion", brain_dim=4, target_dim=4, net=SMALL_UNET, cond_dropout=0.1,
                         cond_dropout_mode="sample")
    masks = torch.stack([sample.condition_mask(64) for _ in range(300)])
    assert 0.09 < float((masks == 0).float().mean()) < 0.11
    assert float(((masks.mean(1) > 0) & (masks.mean(1) < 1)).float().mean()) > 0.95  # mixed within a step
    assert batch.hparams.cond_dropout_mode == "batch"  # the default: ATM's whole-batch dropout
    # the training step really passes the mask to the network
    seen = []
    batch.prior.net.register_forward_hook(lambda m, args, out: seen.append(args[3].clone()))
    data = {"brain": torch.randn(8, 4), "target": torch.randn(8, 4)}
    for _ in range(60):
        batch.training_step(data, 0)
    kept = torch.stack(seen).mean(1)
    assert set(kept.unique().tolist()) == {0.0, 1.0}


# --------------------------------------------------------------------------------------------------
# learning the linear-Gaussian problem
# --------------------------------------------------------------------------------------------------
def test_diffusion_prior_learns_and_guidance_helps(trained_diffusion, linear_problem):
    module, trainer, _ = trained_diffusion
    brain, truth = linear_problem["val"]
    guided = module.prior.sample(brain, seed=0, steps=50, guidance=5.0, progress=False)
    shuffled = truth[torch.randperm(len(truth), generator=torch.Generator().manual_seed(0))]
    assert guided.shape == truth.shape
    assert _cosine(guided, truth) > 0.55
    assert _cosine(guided, truth) > _cosine(guided, shuffled) + 0.4
    unguided = module.prior.sample(brain, seed=0, steps=50, guidance=0.0, progress=False)
    assert _cosine(guided, truth) > _cosine(unguided, truth) + 0.3
    assert torch.equal(guided, module.prior.sample(brain, seed=0, steps=50, guidance=5.0, progress=False))
    assert not torch.equal(guided, module.prior.sample(brain, seed=1, steps=50, guidance=5.0, progress=False))
    # validation logged the objective and the comparable sampled metrics
    metrics = trainer.callback_metrics
    assert {"val/loss", "val/cosine", "val/top1", "val/top5"} <= set(metrics)
    assert float(metrics["val/top1"]) > 0.4  # 256 candidates: chance is 0.4%


def test_clean_sample_prediction_option(linear_problem):
    # noise_scheduler prediction_type "sample": the network regresses the clean embedding (unCLIP's choice)
    torch.manual_seed(0)
    d_brain, d_target = linear_problem["dims"]
    module = PriorModule(kind="diffusion", brain_dim=d_brain, target_dim=d_target, net=SMALL_UNET, warmup_steps=10,
                         noise_scheduler={"prediction_type": "sample", "clip_sample": False}, val_guidance=1.0)
    _fit(module, linear_problem, max_epochs=10, limit_val_batches=0)
    brain, truth = linear_problem["val"]
    pred = module.eval().prior.sample(brain, seed=0, progress=False)  # the recorded default: guidance 1
    assert module.prior.sampling == {"steps": 50, "guidance": 1.0}
    assert _cosine(pred, truth) > 0.8
    assert 0.7 < float(pred.norm(dim=1).mean() / truth.norm(dim=1).mean()) < 1.3


def test_aligner_learns_the_same_problem(linear_problem):
    torch.manual_seed(0)
    d_brain, d_target = linear_problem["dims"]
    module = PriorModule(kind="aligner", brain_dim=d_brain, target_dim=d_target, net={"width": 64, "n_blocks": 1},
                         warmup_steps=5)
    trainer = _fit(module, linear_problem, max_epochs=8)
    brain, truth = linear_problem["val"]
    pred = module.eval().prior.sample(brain, progress=False)
    assert _cosine(pred, truth) > 0.8
    assert embedding_metrics(pred, truth, torch.arange(len(truth)))["top1"] > 0.8
    assert float(trainer.callback_metrics["val/cosine"]) == pytest.approx(_cosine(pred, truth), abs=1e-4)


def test_prior_transformer_needs_and_gets_its_clip_stats(linear_problem):
    torch.manual_seed(0)
    d_brain, d_target = linear_problem["dims"]
    # diffusers' buffers start at zero: without the statistics every output is zero
    bare = PriorTransformerNet(d_target, d_brain, **SMALL_PT)
    assert torch.count_nonzero(bare.prior.post_process_latents(torch.randn(4, d_target))) == 0
    module = PriorModule(kind="prior_transformer", brain_dim=d_brain, target_dim=d_target, net=SMALL_PT,
                         warmup_steps=5, val_steps=10)
    with pytest.raises(RuntimeError, match="clip_mean/clip_std are zero"):
        module.prior.sample(linear_problem["val"][0][:4], steps=2, progress=False)
    trainer = _fit(module, linear_problem, max_steps=20, limit_val_batches=1)
    net = module.prior.net
    train_y = linear_problem["train"][1]
    torch.testing.assert_close(net.prior.clip_mean.reshape(-1), train_y.mean(0))
    torch.testing.assert_close(net.prior.clip_std.reshape(-1), train_y.std(0), rtol=1e-4, atol=1e-5)
    assert not net.prior.clip_std.requires_grad  # statistics, never trained
    assert "val/loss" in trainer.callback_metrics
    brain, truth = linear_problem["val"]
    out = module.eval().prior.sample(brain[:32], steps=10, guidance=2.0, progress=False)
    assert out.shape == (32, d_target) and torch.isfinite(out).all()
    assert float(out.std(0).mean()) > 0.2 * float(train_y.std(0).mean())  # real, varied embeddings, not zeros
    # token targets: 4 tokens of 6 channels, flattened
    tokens = PriorTransformerNet(d_target, d_brain, n_tokens=4, **SMALL_PT)
    tokens.set_stats(train_y.mean(0), train_y.std(0))
    assert tokens(torch.randn(3, d_target), torch.tensor(5), torch.randn(3, d_brain)).shape == (3, d_target)


# --------------------------------------------------------------------------------------------------
# checkpoints and export
# --------------------------------------------------------------------------------------------------
def test_export_and_load_give_identical_samples(trained_diffusion, linear_problem, tmp_path):
    module, _, ckpt = trained_diffusion
    raw = torch.load(ckpt, map_location="cpu", weights_only=True)  # nothing but plain data inside
    assert raw["hyper_parameters"]["prior_config"]["kind"] == "diffusion"
    brain = linear_problem["val"][0][:16]
    want = module.prior.sample(brain, seed=3, steps=20, progress=False)
    from_ckpt = load_prior(ckpt)
    torch.testing.assert_close(from_ckpt.sample(brain, seed=3, steps=20, progress=False), want, rtol=0, atol=0)
    out = export_prior(ckpt, tmp_path / "exported")
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors"]
    config = json.loads((out / "config.json").read_text())
    assert config["format"] == "neurodecode-prior" and config["format_version"] == 1
    assert config["kind"] == "diffusion" and config["targets"]["space"] == "raw"
    assert config["noise_scheduler"]["num_train_timesteps"] == 1000
    assert config["sampling"] == {"steps": 25, "guidance": 5.0}  # the validation settings it was trained with
    loaded = load_prior(out)
    assert loaded.kind == "diffusion"
    torch.testing.assert_close(loaded.sample(brain, seed=3, steps=20, progress=False), want, rtol=0, atol=0)
    with pytest.raises(ValueError, match="expects brain embeddings of shape"):
        loaded.sample(torch.randn(2, 5), progress=False)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "config.json").write_text(json.dumps({"format": "neurodecode-encoder"}))
    (bad / "model.safetensors").write_bytes(b"")
    with pytest.raises(ValueError, match="expected 'neurodecode-prior'"):
        load_prior(bad)


def test_normalized_targets_are_sampled_back_in_raw_space(linear_problem):
    torch.manual_seed(0)
    d_brain, d_target = linear_problem["dims"]
    shift = 50.0  # raw targets far from zero: a normalised model must still return raw-space embeddings
    problem = {**linear_problem, "train": (linear_problem["train"][0], linear_problem["train"][1] + shift)}
    module = PriorModule(kind="aligner", brain_dim=d_brain, target_dim=d_target, net={"width": 64, "n_blocks": 1},
                         normalize_targets=True, warmup_steps=5, contrastive=None, regression="mse")
    _fit(module, problem, max_epochs=4, limit_val_batches=0)
    pred = module.eval().prior.sample(linear_problem["val"][0], progress=False)
    assert abs(float(pred.mean()) - shift) < 1.0
    assert _cosine(pred - shift, linear_problem["val"][1]) > 0.7  # measured 0.76; shuffled targets give about 0


# --------------------------------------------------------------------------------------------------
# the data module on the simulated data set, with a tiny trained encoder
# --------------------------------------------------------------------------------------------------
def test_prior_data_embeds_only_training_trials_and_caches(tiny_encoder, sim_eeg, tmp_path, monkeypatch):
    from neurodecode.reconstruction.prior_data import PriorDataModule
    from neurodecode.training.lit import load_alignment_checkpoint

    dm = PriorDataModule(str(tiny_encoder), batch_size=64, cache_dir=str(tmp_path / "cache"), progress=False)
    assert (dm.brain_dim, dm.target_dim, dm.teacher) == (32, 32, FEATURE_TEACHER)
    dm.prepare_data()
    dm.setup("fit")
    table = dm.data.dataset.stimuli
    test_ids = set(table.stimulus_id[table.split == "test"])
    for which in ("train", "val"):
        ids = set(table.stimulus_id[dm.pairs[which].stim_rows])
        assert ids and not ids & test_ids
    # validation = the encoder's own validation concepts; both subjects of the joint protocol
    val_concepts = set(table.concept[dm.pairs["val"].stim_rows])
    assert val_concepts == set(dm.data.val_concepts())
    assert not val_concepts & set(table.concept[dm.pairs["train"].stim_rows])
    assert set(dm.pairs["train"].subjects) == {0, 1}
    # the pairs are the encoder's embeddings of those trials and the raw teacher embeddings of their images
    module, _ = load_alignment_checkpoint(tiny_encoder)
    ts = dm.data.sets["train"]
    x = torch.as_tensor(np.stack([ts.signals(i) for i in (0, 5)]))
    with torch.no_grad():
        want = module(x, torch.as_tensor(ts.subjects[[0, 5]]))
    torch.testing.assert_close(dm.pairs["train"].brain[[0, 5]], want, rtol=1e-4, atol=1e-5)
    item = dm.pairs["train"][5]
    np.testing.assert_array_equal(item["target"].numpy(), dm.data.image_embeddings[ts.stim_rows[5]])
    batch = next(iter(dm.train_dataloader()))
    assert batch["brain"].shape == (64, 32) and batch["target"].shape == (64, 32)
    # a rerun reads the cache and embeds nothing
    cached = sorted(p.name for p in (tmp_path / "cache").iterdir())
    assert len(cached) == 2 and all(n.startswith("last.ckpt-") for n in cached)
    again = PriorDataModule(str(tiny_encoder), batch_size=64, cache_dir=str(tmp_path / "cache"), progress=False)
    monkeypatch.setattr(type(again), "_embed", lambda *a, **k: pytest.fail("re-embedded despite the cache"))
    again.setup("fit")
    torch.testing.assert_close(again.pairs["train"].brain, dm.pairs["train"].brain)
    monkeypatch.undo()
    # test embeddings: repetitions averaged, one row per (subject, test image), stimulus ids given
    te = again.test_embeddings()
    assert set(te["stimulus_id"]) == test_ids and len(te["embedding"]) == 2 * len(test_ids)
    assert sorted(set(te["subject_label"])) == ["01", "02"]
    avg = again.test_embeddings(average_subjects=True)
    x_test = again.test_responses()
    assert x_test.shape == (len(te["embedding"]), *ts.signals(0).shape)
    assert len(avg["embedding"]) == len(test_ids)
    row = avg["stim_row"][0]
    np.testing.assert_allclose(avg["embedding"][0], te["embedding"][te["stim_row"] == row].mean(0), rtol=1e-5)
    stats = dm.target_stats()
    y = dm.data.image_embeddings[dm.pairs["train"].stim_rows]
    np.testing.assert_allclose(stats["mean"], y.mean(0), rtol=1e-4, atol=1e-5)


def test_prior_module_trains_from_the_data_module(tiny_encoder, tmp_path):
    from neurodecode.reconstruction.prior_data import PriorDataModule

    dm = PriorDataModule(str(tiny_encoder), batch_size=64, cache_dir=str(tmp_path / "cache"), progress=False)
    module = PriorModule(kind="diffusion", brain_dim=dm.brain_dim, target_dim=dm.target_dim, net=SMALL_UNET,
                         normalize_targets=dm.normalize_targets, warmup_steps=2, val_steps=5)
    trainer = _trainer(tmp_path, max_epochs=1, enable_checkpointing=True)
    trainer.fit(module, datamodule=dm)
    # the target statistics came from the data module; what it was trained on is recorded
    np.testing.assert_allclose(module.prior.target_mean.numpy(), dm.target_mean, rtol=1e-5, atol=1e-6)
    assert module.hparams["data"]["encoder"]["sha256"] and module.hparams["data"]["teacher"] == FEATURE_TEACHER
    result = trainer.test(module, datamodule=dm, verbose=False)[0]
    assert {"test/loss", "test/cosine", "test/top1"} <= set(result) and module.test_results["k"] == 8
    preds = trainer.predict(module, datamodule=dm)
    assert torch.cat([p["embedding"] for p in preds]).shape == (2 * 8, 32)  # 2 subjects x 8 test images
    ckpt = tmp_path / "prior.ckpt"
    trainer.save_checkpoint(ckpt)
    out = export_prior(ckpt, tmp_path / "exported")
    config = json.loads((out / "config.json").read_text())
    assert config["encoder"]["path"] == str(tiny_encoder) and config["teacher"]["spec"] == FEATURE_TEACHER
    assert (config["brain_dim"], config["target_dim"]) == (32, 32)


def test_packaged_prior_config_trains_through_neurodecode_fit(tiny_encoder, tmp_path):
    """``neurodecode fit -c configs/sim/prior.yaml --data.encoder CKPT``: the data module is chosen by its
    class_path and links brain_dim/target_dim into the model; the checkpoint loads back as a Prior."""
    from neurodecode.cli.lightning import run_cli
    from neurodecode.reconstruction.prior import load_prior

    cli = run_cli("fit", ["-c", "configs/sim/prior.yaml", "--data.init_args.encoder", str(tiny_encoder),
                          "--data.init_args.cache_dir", str(tmp_path / "cache"), "--data.init_args.progress", "false",
                          "--trainer.max_epochs", "2", "--trainer.default_root_dir", str(tmp_path / "run"),
                          "--trainer.enable_progress_bar", "false"])
    assert (cli.model.hparams.brain_dim, cli.model.hparams.target_dim) == (32, 32)  # linked from the data
    assert cli.trainer.current_epoch == 2
    # after fit, the checkpoint chosen on val/loss was tested on the test trials and results.json written
    results = json.loads(next((tmp_path / "run").rglob("results.json")).read_text())
    assert results["selection"]["monitor"] == "val/loss" and {"test/loss", "test/top1"} <= set(results["test"])
    prior = load_prior(tmp_path / "run" / "checkpoints" / "last.ckpt")
    out = prior.sample(torch.zeros(3, 32), seed=0, steps=5, progress=False)
    assert out.shape == (3, 32) and torch.isfinite(out).all()
