"""The accuracy levers: fused targets, brain augmentation, multi-positive and domain-alignment losses."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from tests_helpers import tiny_fit_config

from neurodecode.losses import (
    AlignmentLoss,
    MultiPositiveLoss,
    clip_loss,
    coral_loss,
    mmd_loss,
    multi_positive_loss,
)
from neurodecode.training.augment import BrainAugment
from neurodecode.training.targets import LayerMix, fuse_concat, stack_layers

FEATURE_TEACHER = "test:features"


pytestmark = pytest.mark.usefixtures("one_thread")


def _pair(n=6, d=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g, dtype=torch.float64), torch.randn(n, d, generator=g, dtype=torch.float64)


# -- losses ------------------------------------------------------------------------------------------
def _reference_multipos(b, t, labels, scale):
    """Written out term by term: for each anchor, mean over its positives of -log p(positive)."""
    b = [np.asarray(v) / np.linalg.norm(v) for v in b]
    t = [np.asarray(v) / np.linalg.norm(v) for v in t]
    n = len(b)

    def direction(q, k):
        total = 0.0
        for i in range(n):
            z = [scale * float(q[i] @ k[j]) for j in range(n)]
            log_norm = np.log(sum(np.exp(v) for v in z))
            pos = [j for j in range(n) if labels[j] == labels[i]]
            total += -sum(z[j] - log_norm for j in pos) / len(pos)
        return total / n

    return 0.5 * (direction(b, t) + direction(t, b))


def test_multi_positive_matches_hand_written_reference():
    b, t = _pair()
    labels = torch.tensor([0, 1, 0, 2, 1, 0])
    value = multi_positive_loss(b, t, labels, 10.0)
    assert float(value) == pytest.approx(_reference_multipos(b.numpy(), t.numpy(), labels.tolist(), 10.0), rel=1e-6)
    # distinct labels: plain CLIP; repeated labels: a different loss
    assert float(multi_positive_loss(b, t, torch.arange(6), 10.0)) == pytest.approx(float(clip_loss(b, t, 10.0)))
    assert float(value) != pytest.approx(float(clip_loss(b, t, 10.0)))
    module = MultiPositiveLoss(init_temperature=0.1)
    assert float(module(b.float(), t.float(), labels)) == pytest.approx(float(value), rel=1e-5)


def test_multi_positive_by_image_equals_clip_when_positives_share_the_target():
    """Positives with one identical target (repetitions of an image) change nothing: duplicate columns
    already share the logit. The loss differs only for positives with different targets (a concept's images)."""
    b, t = _pair(6, 4)
    t[3] = t[0]
    t[5] = t[0]
    same_image = torch.tensor([0, 1, 2, 0, 4, 0])
    assert float(multi_positive_loss(b, t, same_image, 10.0)) == pytest.approx(float(clip_loss(b, t, 10.0)), rel=1e-6)
    same_concept = torch.tensor([0, 1, 1, 0, 4, 0])  # rows 1 and 2: different images of one concept
    assert float(multi_positive_loss(b, t, same_concept, 10.0)) != pytest.approx(float(clip_loss(b, t, 10.0)))


def test_alignment_loss_multipos_and_domain_terms():
    b, t = _pair(8, 5)
    b, t = b.float(), t.float()
    labels = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    subject = torch.tensor([0, 1, 0, 1, 0, 1, 0, 1])
    loss = AlignmentLoss(contrastive="multipos", domain="coral", domain_weight=0.5)
    assert loss.uses_batch_info and not AlignmentLoss().uses_batch_info
    total, parts = loss(b, t, labels=labels, subject=subject)
    scale = float(loss.logit_scale)
    assert float(parts["contrastive"]) == pytest.approx(float(multi_positive_loss(b, t, labels, scale)), rel=1e-5)
    assert float(parts["domain"]) == pytest.approx(float(coral_loss(b, subject)), rel=1e-6)
    assert float(total) == pytest.approx(float(parts["contrastive"] + 0.5 * parts["domain"]), rel=1e-6)
    with pytest.raises(ValueError, match="needs labels"):
        loss(b, t)


def test_coral_matches_formula_and_vanishes_for_one_subject():
    g = torch.Generator().manual_seed(1)
    e = torch.randn(10, 3, generator=g, dtype=torch.float64)
    groups = torch.tensor([0] * 5 + [1] * 5)
    u = F.normalize(e, dim=1).numpy()
    c0, c1 = np.cov(u[:5].T), np.cov(u[5:].T)
    assert float(coral_loss(e, groups)) == pytest.approx(((c0 - c1) ** 2).sum() / (4 * 9), rel=1e-6)
    assert float(coral_loss(e, torch.zeros(10, dtype=torch.long))) == 0.0
    # a subject whose embeddings vary along another axis is further away than a resample of the same law
    same = torch.cat([e[:5], e[:5] + 1e-9])
    assert float(coral_loss(same, groups)) == pytest.approx(0.0, abs=1e-12)


def test_mmd_matches_formula():
    g = torch.Generator().manual_seed(2)
    e = torch.randn(7, 3, generator=g, dtype=torch.float64)
    groups = torch.tensor([0, 0, 0, 1, 1, 1, 1])
    u = F.normalize(e, dim=1).numpy()

    def k(x, y):
        d2 = ((x[:, None] - y[None]) ** 2).sum(-1)
        return sum(np.exp(-d2 / (2 * s * s)) for s in (0.25, 0.5, 1.0)).mean()

    a, b = u[:3], u[3:]
    assert float(mmd_loss(e, groups)) == pytest.approx(k(a, a) + k(b, b) - 2 * k(a, b), rel=1e-6)
    assert float(mmd_loss(torch.cat([e[:3], e[:3]]), torch.tensor([0, 0, 0, 1, 1, 1]))) == pytest.approx(0, abs=1e-12)


# -- augmentation ------------------------------------------------------------------------------------
def test_augment_off_by_default_and_each_transform():
    x = torch.randn(16, 5, 20)
    assert torch.equal(BrainAugment()(x), x) and not BrainAugment().active
    torch.manual_seed(0)
    noisy = BrainAugment(noise_std=0.5)(x)
    assert float((noisy - x).std()) == pytest.approx(0.5, rel=0.1)
    shifted = BrainAugment(max_shift=3)(x)
    for i in range(len(x)):  # each sample is a zero-filled shift of itself by one lag in [-3, 3]
        ok = False
        for lag in range(-3, 4):
            ref = torch.zeros_like(x[i])
            if lag >= 0:
                ref[:, lag:] = x[i][:, :20 - lag]
            else:
                ref[:, :lag] = x[i][:, -lag:]
            ok |= torch.equal(shifted[i], ref)
        assert ok
    big = torch.randn(400, 10, 4) + 3.0
    dropped = BrainAugment(channel_dropout=0.3)(big)
    zero = (dropped == 0).all(-1)  # whole channels, never parts of one
    assert ((dropped == 0).any(-1) == zero).all()
    assert float(zero.float().mean()) == pytest.approx(0.3, abs=0.03)


def test_augment_mixes_only_same_label_samples():
    torch.manual_seed(1)
    x = torch.randn(12, 3, 8)
    labels = torch.tensor([0, 0, 1, 1, 1, 2, 3, 3, 4, 4, 5, 6])
    out = BrainAugment(mix_prob=1.0)(x, labels)
    for i in range(len(x)):
        partners = [j for j in range(len(x)) if labels[j] == labels[i] and j != i]
        if not partners:
            assert torch.equal(out[i], x[i])
            continue
        # out_i = lam x_i + (1 - lam) x_j for some same-label j and lam in [0, 1]
        fits = []
        for j in partners:
            d = (x[i] - x[j]).flatten()
            lam = float(((out[i] - x[j]).flatten() @ d) / (d @ d))
            fits.append(0 <= lam <= 1 and torch.allclose(out[i], lam * x[i] + (1 - lam) * x[j], atol=1e-5))
        assert any(fits)


def test_augment_rejects_bad_settings():
    with pytest.raises(ValueError, match="channel_dropout"):
        BrainAugment(channel_dropout=1.0)
    with pytest.raises(ValueError, match="noise_std"):
        BrainAugment(noise_std=-1)


# -- fused targets -------------------------------------------------------------------------------------
def test_fuse_concat_and_stack():
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((5, 3)), rng.standard_normal((5, 7))
    f = fuse_concat([a, b])
    assert f.shape == (5, 10)
    np.testing.assert_allclose(np.linalg.norm(f, axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(f[:, :3] * np.sqrt(2), a / np.linalg.norm(a, axis=1, keepdims=True), rtol=1e-6)
    s = stack_layers([a, b])
    assert s.shape == (5, 14)
    np.testing.assert_allclose(np.linalg.norm(s[:, :7], axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(s[:, 7:], b / np.linalg.norm(b, axis=1, keepdims=True), rtol=1e-6)
    np.testing.assert_array_equal(stack_layers([a, b]), s)  # fixed projection
    with pytest.raises(ValueError, match="same stimuli"):
        fuse_concat([a, b[:4]])


def test_layer_mix_weights_per_subject_and_gradients():
    mix = LayerMix(3, 4, n_subjects=2, per_subject=True)
    assert mix.logits.shape == (2, 3)
    t = torch.randn(5, 12)
    subject = torch.tensor([0, 1, 1, 0, -1])
    out = mix(t, subject)
    np.testing.assert_allclose(out.detach().numpy(), t.reshape(5, 3, 4).mean(1).numpy(), rtol=1e-6)
    with torch.no_grad():
        mix.logits[1] = torch.tensor([5.0, 0.0, 0.0])
    w = mix.weights(subject)
    assert torch.allclose(w[0], torch.full((3,), 1 / 3)) and float(w[1, 0]) > 0.9
    assert torch.allclose(w[4], (w[0] + w[1]) / 2)  # unseen subject: mean weights
    mix(t, subject).sum().backward()
    assert mix.logits.grad is not None and float(mix.logits.grad.abs().sum()) > 0


def _with_layers(sim_eeg, tmp_path):
    """A copy of the simulated folder whose cache also holds a 16-d 'block1-mean' layer."""
    from neurodecode.teachers.cache import EmbeddingCache, merge_shards, parts_dir, write_shard

    root = tmp_path / "sim"
    shutil.copytree(sim_eeg, root)
    cache = EmbeddingCache(root / "embeddings.h5")
    final = cache.get(FEATURE_TEACHER, "final")
    ids = [str(s) for s in np.load(root / "features.npz")["stimulus_id"]]
    low = np.load(root / "features.npz")["low"].astype("float32")
    block = low @ np.random.default_rng(3).standard_normal((low.shape[1], 16)).astype("float32")
    write_shard(parts_dir(root / "embeddings.h5"), FEATURE_TEACHER, {"block1-mean": (ids, block, {})})
    merge_shards(root / "embeddings.h5")
    return root, final


def test_datamodule_fuses_cached_layers(sim_eeg, tmp_path):
    from neurodecode.teachers.cache import EmbeddingCache
    from neurodecode.training.data import BrainImageDataModule

    root, _ = _with_layers(sim_eeg, tmp_path)
    cache = EmbeddingCache(root / "embeddings.h5")
    plain = BrainImageDataModule(str(root), teacher=FEATURE_TEACHER)
    assert plain.embed_dim == 32 and plain.n_target_layers == 1
    dm = BrainImageDataModule(str(root), teacher=FEATURE_TEACHER, layers=["final", "block1-mean"])
    assert dm.embed_dim == 48 and dm.n_target_layers == 1
    ids = dm.dataset.stimuli.stimulus_id.tolist()
    expect = fuse_concat([cache.get(FEATURE_TEACHER, "final", ids=ids), cache.get(FEATURE_TEACHER, "block1-mean", ids=ids)])
    np.testing.assert_allclose(dm.image_embeddings, expect, rtol=1e-6)
    mixed = BrainImageDataModule(str(root), teacher=FEATURE_TEACHER, layers=["final", "block1-mean"], fusion="mix")
    assert mixed.embed_dim == 32 and mixed.n_target_layers == 2
    assert mixed.image_embeddings.shape == (len(ids), 64)
    assert mixed.describe()["layers"] == ["final", "block1-mean"] and mixed.describe()["fusion"] == "mix"
    with pytest.raises(ValueError, match="fusion"):
        BrainImageDataModule(str(root), teacher=FEATURE_TEACHER, layers=["final"], fusion="sum")


@pytest.mark.slow
def test_fit_with_every_lever(sim_eeg, tmp_path):
    """One LightningCLI fit with a learned per-subject layer mix, augmentation, multi-positive + CORAL."""
    import json

    import yaml

    from neurodecode.cli.lightning import run_cli

    root, _ = _with_layers(sim_eeg, tmp_path)
    cfg = tiny_fit_config(root, tmp_path / "run", max_epochs=2, model={
        "loss": {"class_path": "neurodecode.losses.AlignmentLoss",
                 "init_args": {"contrastive": "multipos", "domain": "coral", "domain_weight": 1.0}},
        "augment": {"class_path": "neurodecode.training.augment.BrainAugment",
                    "init_args": {"noise_std": 5.0, "max_shift": 2, "channel_dropout": 0.1, "mix_prob": 0.5}},
        "positives": "concept", "mix_per_subject": True, "lr": 3e-2},
        data={"layers": ["final", "block1-mean"], "fusion": "mix"})
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    cli = run_cli("fit", ["-c", str(tmp_path / "c.yaml")])
    model = cli.model
    assert model.target_mixer.logits.shape == (2, 2)
    assert not torch.allclose(model.target_mixer.logits, torch.zeros(2, 2))  # the mix was learned
    assert model.hparams["augment_config"]["noise_std"] == 5.0
    res = json.loads((tmp_path / "run" / "results.json").read_text())
    assert 0 <= res["test"]["test/top1"] <= 1 and res["data"]["fusion"] == "mix"
    # augmentation only in training steps: evaluation of one batch is deterministic, training is not
    model.eval()
    batch = next(iter(cli.datamodule.val_dataloader()))
    assert torch.equal(model._loss(batch)[1], model._loss(batch)[1])
    assert not torch.equal(model._loss(batch, train=True)[1], model._loss(batch, train=True)[1])
    # the checkpoint still loads as an encoder (the mix is a training-time part)
    from neurodecode.training.lit import load_alignment_checkpoint

    module, _ = load_alignment_checkpoint(tmp_path / "run" / "checkpoints" / "last.ckpt")
    assert module.target_mixer is None


def test_gaussian_blur_transform():
    from neurodecode.training.targets import GaussianBlur, blurred_spec

    checker = torch.zeros(3, 32, 32)
    checker[:, ::2] = 1.0
    out = GaussianBlur(lambda im: im, 2.0)(checker)
    assert out.shape == checker.shape
    assert float(out.std()) < 0.1 * float(checker.std())  # fine detail gone
    assert float(out.mean()) == pytest.approx(float(checker.mean()), abs=0.02)
    assert blurred_spec("efficientnet-lite0", 2) == "efficientnet-lite0#blur2"
    assert blurred_spec("efficientnet-lite0", None) == blurred_spec("efficientnet-lite0", 0) == "efficientnet-lite0"


@pytest.mark.slow
def test_blurred_targets_are_cached_under_their_own_key(sim_eeg, tmp_path):
    from neurodecode.teachers.cache import EmbeddingCache
    from neurodecode.training.data import BrainImageDataModule
    from neurodecode.training.targets import blurred_spec

    root = tmp_path / "sim"
    shutil.copytree(sim_eeg, root)
    teacher = "efficientnet-lite0"
    kw = {"teacher": teacher, "embed_device": "cpu", "embed_batch_size": 16}
    blurred = BrainImageDataModule(str(root), blur=4.0, **kw)
    cache = EmbeddingCache(root / "embeddings.h5")
    assert blurred.embed_dim == 1280
    b = blurred.image_embeddings
    assert cache.has(blurred_spec(teacher, 4.0), "final") and not cache.has(teacher, "final")
    sharp = BrainImageDataModule(str(root), **kw).image_embeddings
    assert b.shape == sharp.shape
    cos = (b * sharp).sum(1) / np.linalg.norm(b, axis=1) / np.linalg.norm(sharp, axis=1)
    assert np.all(cos < 0.999) and np.all(cos > 0.2)  # the same images, seen blurred
    assert blurred.describe()["blur"] == 4.0
    # a second data module reads the cache (no re-embedding: the rows are identical)
    again = BrainImageDataModule(str(root), blur=4.0, **kw)
    np.testing.assert_array_equal(again.image_embeddings, b)


def test_random_view_is_fixed_per_image_and_view():
    from PIL import Image

    from neurodecode.training.targets import RandomView, view_spec

    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 255, (40, 60, 3), dtype=np.uint8))
    other = Image.fromarray(rng.integers(0, 255, (40, 60, 3), dtype=np.uint8))

    def to_tensor(im):
        return torch.as_tensor(np.asarray(im.resize((32, 32)), dtype=np.float32))

    a1, a2 = RandomView(to_tensor, 1)(img), RandomView(to_tensor, 1)(img)
    assert torch.equal(a1, a2)  # recomputable: the cache key names it
    assert not torch.equal(a1, RandomView(to_tensor, 2)(img))
    assert not torch.equal(a1, to_tensor(img))
    assert not torch.equal(RandomView(to_tensor, 1, seed=1)(img), a1)
    assert RandomView(to_tensor, 1)(other).shape == a1.shape
    assert view_spec("efficientnet-lite0", 2, 0) == "efficientnet-lite0#view2-seed0"


@pytest.mark.slow
def test_fit_with_image_views(sim_eeg, tmp_path):
    """Views embedded once, cached under their own keys, and drawn per sample in training only."""
    import yaml

    from neurodecode.cli.lightning import run_cli
    from neurodecode.teachers.cache import EmbeddingCache
    from neurodecode.training.targets import view_spec

    root = tmp_path / "sim"
    shutil.copytree(sim_eeg, root)
    cfg = {
        "seed_everything": 0, "test_after_fit": False,
        "trainer": {"max_epochs": 1, "accelerator": "cpu", "devices": 1, "logger": False,
                    "enable_progress_bar": False, "enable_model_summary": False,
                    "default_root_dir": str(tmp_path / "run")},
        "model": {"class_path": "neurodecode.training.lit.AlignmentModule", "init_args": {
            "encoder": {"class_path": "neurodecode.encoders.MLP", "init_args": {"hidden_sizes": [16]}},
            "image_views": 2}},
        "data": {"root": str(root), "teacher": "efficientnet-lite0", "batch_size": 32, "embed_device": "cpu"},
    }
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    cli = run_cli("fit", ["-c", str(tmp_path / "c.yaml")])
    model, dm = cli.model, cli.datamodule
    cache = EmbeddingCache(root / "embeddings.h5")
    assert cache.has(view_spec("efficientnet-lite0", 1), "final") and cache.has(view_spec("efficientnet-lite0", 2), "final")
    views = model.target_views
    assert views.shape == (3, len(dm.dataset.stimuli), 1280)
    np.testing.assert_array_equal(views[0].numpy(), dm.image_embeddings)
    assert not torch.allclose(views[1], views[0]) and not torch.allclose(views[2], views[1])
    batch = next(iter(dm.train_dataloader()))
    assert torch.equal(model.target(batch), batch["target"])  # evaluation: the sharp targets
    torch.manual_seed(0)
    drawn = torch.stack([model.target(batch, train=True) for _ in range(8)])  # (draws, batch, dim)
    options = views[:, batch["stim"]]  # (3, batch, dim)
    match = (drawn[:, None] == options[None]).all(-1)  # (draws, 3, batch)
    assert bool(match.any(1).all())  # every drawn target is one of the sample's views
    assert len(set(match.float().argmax(1).flatten().tolist())) == 3  # and all three are drawn


# -- uncertainty-aware blur (UBP) ------------------------------------------------------------------------
def test_ubp_settings_and_cache_keys():
    from neurodecode.training.targets import blurred_spec
    from neurodecode.training.ubp import UBPConfig, target_specs

    cfg = UBPConfig()  # UBP's kernels 45/51/57 px at 224 px as OpenCV Gaussians, foveated with G = 3
    assert cfg.sigmas == (7.1, 8.0, 8.9) and cfg.fovea == 3.0 and cfg.momentum == 0.3 and cfg.alpha == 0.05
    assert cfg.specs("efficientnet-lite0") == ["efficientnet-lite0#blur7.1-fovea3", "efficientnet-lite0#blur8-fovea3",
                                               "efficientnet-lite0#blur8.9-fovea3"]
    assert blurred_spec("t", 2.0) == "t#blur2" and blurred_spec("t", 2.0, None) == "t#blur2"  # the fixed blur's key
    # default: sharp targets, one spec (today's behaviour); a fixed blur: its own spec; ubp: three
    assert target_specs("t", None) == (None, ["t"]) and target_specs("t", 2.0) == (None, ["t#blur2"])
    ubp, specs = target_specs("t", "ubp", {"sigmas": [1, 2, 3], "fovea": None})
    assert ubp.sigmas == (1.0, 2.0, 3.0) and specs == ["t#blur1", "t#blur2", "t#blur3"]
    for kw, msg in [({"blur": "ubp", "ubp": {"sigma": [1]}}, "unknown key"),
                    ({"blur": None, "ubp": {}}, "needs data.blur: ubp"),
                    ({"blur": "gauss"}, "'ubp' or null"),
                    ({"blur": "ubp", "layers": ["final", "block1-mean"]}, "one teacher layer"),
                    ({"blur": "ubp", "ubp": {"sigmas": [3, 2, 1]}}, "increasing"),
                    ({"blur": "ubp", "ubp": {"momentum": 0}}, "momentum")]:
        with pytest.raises(ValueError, match=msg):
            target_specs("t", kw["blur"], kw.get("ubp"), kw.get("layers"))


def test_foveated_blur_keeps_half_the_centre_and_blurs_the_periphery():
    from neurodecode.training.targets import GaussianBlur

    fov = GaussianBlur(lambda im: im, 2.0, fovea=3.0)
    share = fov.sharp_share(9, 9)
    assert float(share[4, 4]) == pytest.approx(0.5)  # the centre: half sharp, half blurred
    assert float(share[0, 0]) == pytest.approx(0.5 * np.exp(-3.0), rel=1e-6)  # a corner: almost all blurred
    assert float(share[4, 6]) == pytest.approx(0.5 * np.exp(-3.0 * 2 / np.hypot(4, 4)), rel=1e-6)
    checker = torch.zeros(3, 33, 33)
    checker[:, ::2] = 1.0
    plain = GaussianBlur(lambda im: im, 2.0)(checker)
    out = fov(checker)
    np.testing.assert_allclose(out.numpy(), (fov.sharp_share(33, 33) * checker + (1 - fov.sharp_share(33, 33)) * plain)
                               .numpy(), atol=1e-6)
    centre, corner = out[:, 12:21, 12:21], out[:, :6, :6]
    assert float(centre.std()) > 5 * float(corner.std())  # detail kept in the fovea only
    assert "foveated G=3" in repr(fov) and "foveated G" not in repr(GaussianBlur(lambda im: im, 2.0))


def test_uncertainty_blur_follows_the_mismatch_by_hand():
    """Twelve samples: the worst match gets the strong blur, the best one the weak blur, as UBP classes them."""
    from neurodecode.training.ubp import UncertaintyBlur

    n_stim, dim = 5, 4
    levels = torch.stack([torch.full((n_stim, dim), float(k)) + torch.arange(n_stim)[:, None] / 10 for k in range(3)])
    ubp = UncertaintyBlur(levels, n_samples=12)
    index, stim = torch.arange(12), torch.arange(12) % n_stim
    assert torch.equal(ubp(stim, index), levels[1, stim])  # everyone starts at the middle blur
    s = torch.tensor([0.3] * 10 + [0.9, -0.3])
    # by hand: mean 0.3, sd (ddof=1) sqrt(0.72 / 11) = 0.256, so the interval is 0.3 +- 1.96 * 0.256 = [-0.20, 0.80]
    level = ubp.update(index, s)
    assert level.tolist() == [1] * 10 + [0, 2]
    np.testing.assert_allclose(ubp.similarity.numpy(), s.numpy())  # the average starts at the first similarity
    targets = ubp(stim, index)
    assert torch.equal(targets[10], levels[0, stim[10]]) and torch.equal(targets[11], levels[2, stim[11]])
    assert torch.equal(targets[:10], levels[1, stim[:10]])
    # the next step folds the new similarity in with momentum 0.3: averages 0.24, 0.27, ..., 0.39 (mean 0.315,
    # sd 0.3 * 0.187 = 0.056), interval 0.315 +- 0.110 = [0.205, 0.425]; as in UBP the current similarity is
    # compared with it, so 0.1 and 0.2 (worse than the samples' smoothed record) get the strong blur
    s2 = torch.tensor([0.1, 0.2, 0.3, 0.4, 0.5, 0.6])
    level2 = ubp.update(index[:6], s2)
    np.testing.assert_allclose(ubp.similarity[:6].numpy(), (0.3 * s2 + 0.7 * 0.3).numpy(), rtol=1e-6)
    assert level2.tolist() == [2, 2, 1, 1, 0, 0] and ubp.level.tolist() == [2, 2, 1, 1, 0, 0] + [1] * 4 + [0, 2]
    sigma = np.array([7.1, 8.0, 8.9])[ubp.level.numpy()]  # higher mismatch (lower similarity), stronger blur
    assert sigma[0] > sigma[2] > sigma[4] and sigma[11] == 8.9
    # step() measures the mismatch as the cosine of brain and target embeddings: a poor match, a strong blur
    brain = levels[1, stim].clone()
    brain[3] = -brain[3]  # the opposite direction: cosine -1
    lv = UncertaintyBlur(levels, 12).step(brain + 0.01 * torch.randn(12, dim), levels[1, stim], index)
    assert int(lv[3]) == 2 and int((lv == 2).sum()) == 1
    assert set(ubp.state_dict()) == {"similarity", "level"}  # the target table is the cache's, not the checkpoint's


def _with_ubp_levels(root):
    """Cache the feature teacher's 'blurred' embeddings at UBP's three levels (less low-level signal each)."""
    from neurodecode.teachers.cache import EmbeddingCache, merge_shards, parts_dir, write_shard
    from neurodecode.training.ubp import UBPConfig

    cache = EmbeddingCache(root / "embeddings.h5")
    ids = [str(s) for s in np.load(root / "features.npz")["stimulus_id"]]
    final = cache.get(FEATURE_TEACHER, "final", ids=ids)
    rng = np.random.default_rng(5)
    levels = []
    for k, spec in enumerate(UBPConfig().specs(FEATURE_TEACHER)):
        emb = (final + (0.3 + 0.2 * k) * rng.standard_normal(final.shape)).astype("float32")
        write_shard(parts_dir(root / "embeddings.h5"), spec, {"final": (ids, emb, {})})
        levels.append(emb)
    merge_shards(root / "embeddings.h5")
    return np.stack(levels)


@pytest.mark.slow
def test_ubp_levels_are_embedded_and_cached_under_their_own_keys(tmp_path):
    """The real image teacher: three foveated blur levels, each cached once under its key, none of them sharp."""
    from conftest import make_sim

    from neurodecode.teachers.cache import EmbeddingCache
    from neurodecode.training.data import BrainImageDataModule

    root = make_sim(tmp_path / "sim", n_subjects=1, n_train_concepts=6, n_test_concepts=2, n_exemplars=1)
    kw = {"teacher": "efficientnet-lite0", "embed_device": "cpu", "embed_batch_size": 32}
    dm = BrainImageDataModule(str(root), blur="ubp", **kw)
    levels = dm.blur_levels
    cache = EmbeddingCache(root / "embeddings.h5")
    specs = ["efficientnet-lite0#blur7.1-fovea3", "efficientnet-lite0#blur8-fovea3", "efficientnet-lite0#blur8.9-fovea3"]
    assert dm.target_specs == specs and all(cache.has(spec, "final") for spec in specs)
    assert not cache.has("efficientnet-lite0", "final") and levels.shape == (3, len(dm.dataset.stimuli), 1280)
    np.testing.assert_array_equal(dm.image_embeddings, levels[1])
    sharp = BrainImageDataModule(str(root), **kw).image_embeddings

    def cos(a, b):
        return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)

    to_sharp = [cos(level, sharp) for level in levels]
    assert all(np.all(c < 0.9999) for c in to_sharp)  # every level differs from the sharp targets
    assert to_sharp[0].mean() > to_sharp[1].mean() > to_sharp[2].mean()  # stronger blur, further from sharp
    again = BrainImageDataModule(str(root), blur="ubp", **kw)  # read back from the cache, not embedded again
    np.testing.assert_array_equal(again.blur_levels, levels)


def test_fit_and_evaluate_with_ubp(sim_eeg, tmp_path):
    """data.blur: ubp trains on each sample's level, validates and evaluates on the middle one, and resumes."""
    import json

    import yaml

    from neurodecode.cli.lightning import run_cli
    from neurodecode.reporting.evaluate import evaluate
    from neurodecode.training.data import BrainImageDataModule

    root = tmp_path / "sim"
    shutil.copytree(sim_eeg, root)
    levels = _with_ubp_levels(root)
    default = BrainImageDataModule(str(root), teacher=FEATURE_TEACHER)
    assert default.ubp is None and default.target_specs == [FEATURE_TEACHER] and default.blur_levels is None
    cfg = {
        "seed_everything": 0, "test_after_fit": False,
        "trainer": {"max_epochs": 2, "accelerator": "cpu", "devices": 1, "logger": False,
                    "enable_progress_bar": False, "enable_model_summary": False,
                    "default_root_dir": str(tmp_path / "run")},
        "model": {"class_path": "neurodecode.training.lit.AlignmentModule", "init_args": {
            "encoder": {"class_path": "neurodecode.encoders.MLP", "init_args": {"hidden_sizes": [16]}}}},
        "data": {"root": str(root), "teacher": FEATURE_TEACHER, "batch_size": 16, "protocol": "joint",
                 "blur": "ubp"},
    }
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    cli = run_cli("fit", ["-c", str(tmp_path / "c.yaml")])
    model, dm = cli.model, cli.datamodule
    np.testing.assert_array_equal(dm.blur_levels, levels)
    np.testing.assert_array_equal(dm.image_embeddings, levels[1])  # validation/test/evaluation: the middle blur
    blur = model.target_blur
    assert len(blur.similarity) == len(dm.sets["train"]) and bool(torch.isfinite(blur.similarity).all())
    assert set(blur.level.unique().tolist()) <= {0, 1, 2}
    batch = next(iter(dm.train_dataloader()))
    np.testing.assert_array_equal(model.target(batch, train=True).numpy(),
                                  levels[blur.level[batch["index"]].numpy(), batch["stim"].numpy()])
    assert torch.equal(model.target(batch), batch["target"])
    assert dm.describe()["ubp"]["sigmas"] == [7.1, 8.0, 8.9]
    # the state is in the checkpoint (a resumed run continues it), not in the encoder
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    state = torch.load(last, weights_only=True)["state_dict"]
    torch.testing.assert_close(state["target_blur.similarity"], blur.similarity)
    m = evaluate(last, tmp_path / "ev", time_resolved=False, ablation=False, figures=False, n_boot=50,
                 n_permutations=20, progress_bar=False)
    assert m["data"]["blur"] == "ubp"
    json.dumps(m["data"])


# -- evaluating fused targets --------------------------------------------------------------------------
def _fit_fused(root, tmp_path, name, **data):
    import yaml

    from neurodecode.cli.lightning import run_cli

    cfg = tiny_fit_config(root, tmp_path / name, max_epochs=3, test_after_fit=False,
                          model={"lr": 3e-2, "mix_per_subject": True},
                          data={"batch_size": 16, "layers": ["final", "block1-mean"], **data})
    (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(cfg))
    run_cli("fit", ["-c", str(tmp_path / f"{name}.yaml")])
    return tmp_path / name / "checkpoints" / "last.ckpt"


def _direct_top1(ckpt, targets_of):
    """Top-1 and 2-way accuracy per test subject, from the model's embeddings and ``targets_of(rows, subject)``."""
    from neurodecode.training.loading import embed_set, load_for_evaluation

    model, dm, _ = load_for_evaluation(ckpt)
    dm.setup("test")
    ts = dm.sets["test"]
    emb = embed_set(model, ts.data, ts.subjects)
    out = {}
    for s in np.unique(ts.subjects):
        m = ts.subjects == s
        cand, true = np.unique(ts.stim_rows[m], return_inverse=True)
        img = targets_of(dm, cand, int(s))
        e = emb[m] / np.linalg.norm(emb[m], axis=1, keepdims=True)
        sim = e @ (img / np.linalg.norm(img, axis=1, keepdims=True)).T
        two = np.mean([(sim[q, true[q]] > np.delete(sim[q], true[q])).mean() for q in range(len(sim))])
        out[s] = ((sim.argmax(1) == true).mean(), two)
    return out


def test_evaluate_a_learned_layer_mix_per_subject(sim_eeg, tmp_path):
    """evaluate scores a 'mix' encoder against the stimuli's layers mixed by its learned per-subject weights."""
    from neurodecode.reporting.evaluate import evaluate
    from neurodecode.training.export import export_checkpoint

    root, _ = _with_layers(sim_eeg, tmp_path)
    ckpt = _fit_fused(root, tmp_path, "mix", fusion="mix")
    raw = torch.load(ckpt, weights_only=True)
    weights = torch.softmax(raw["state_dict"]["target_mixer.logits"], dim=1).numpy()  # (2 subjects, 2 layers)
    assert weights.shape == (2, 2) and not np.allclose(weights[0], weights[1])  # learned, one set per subject
    np.testing.assert_allclose(raw["hyper_parameters"]["data"]["mix_weights"], weights, rtol=1e-6)

    def mixed(dm, rows, s):  # written out: sum over layers of the subject's weight times its unit-norm block
        stacked = np.asarray(dm.image_embeddings)[rows].reshape(len(rows), 2, 32)
        return weights[s, 0] * stacked[:, 0] + weights[s, 1] * stacked[:, 1]

    direct = _direct_top1(ckpt, mixed)
    m = evaluate(ckpt, tmp_path / "ev", time_resolved=True, tr_width=0.2, tr_step=0.2, ablation=True, figures=False,
                 n_boot=50, n_permutations=20, progress_bar=False)
    for s, name in enumerate(["01", "02"]):
        r = m["subjects"][name]["retrieval"]["inductive"]["brain_to_image"]
        assert r["top1_full"] == pytest.approx(direct[s][0]) and r["top1_2way"] == pytest.approx(direct[s][1])
    np.testing.assert_allclose(m["model"]["mix_weights"], weights, rtol=1e-6)
    assert set(m["time_resolved"]) == {"01", "02"} and m["ablation"]["baseline"]["top1_full"] >= 0
    # the other subject's weights would give other targets: the per-subject path is the one taken
    from neurodecode.training.loading import evaluation_targets, load_for_evaluation

    _, dm, _ = load_for_evaluation(ckpt)
    rows = np.arange(6)
    np.testing.assert_allclose(evaluation_targets(dm, rows, 1), mixed(dm, rows, 1), rtol=1e-5, atol=1e-6)
    assert not np.allclose(evaluation_targets(dm, rows, 0), evaluation_targets(dm, rows, 1))
    np.testing.assert_allclose(evaluation_targets(dm, rows, -1),  # an unseen subject: the mean weights
                               0.5 * (mixed(dm, rows, 0) + mixed(dm, rows, 1)), rtol=1e-5, atol=1e-6)
    # an exported folder carries the weights: the same numbers
    exported = export_checkpoint(ckpt, tmp_path / "exported")
    m2 = evaluate(exported, tmp_path / "ev2", time_resolved=False, ablation=False, figures=False, n_boot=50,
                  n_permutations=20, progress_bar=False)
    for name in ("01", "02"):
        assert (m2["subjects"][name]["retrieval"]["inductive"]["brain_to_image"]["top1_full"]
                == m["subjects"][name]["retrieval"]["inductive"]["brain_to_image"]["top1_full"])


def test_evaluate_concatenated_layers(sim_eeg, tmp_path):
    from neurodecode.reporting.evaluate import evaluate
    from neurodecode.teachers.cache import EmbeddingCache

    root, _ = _with_layers(sim_eeg, tmp_path)
    ckpt = _fit_fused(root, tmp_path, "concat", fusion="concat")
    cache = EmbeddingCache(root / "embeddings.h5")

    def concat(dm, rows, s):
        ids = dm.dataset.stimuli.stimulus_id[rows].tolist()
        return fuse_concat([cache.get(FEATURE_TEACHER, "final", ids=ids), cache.get(FEATURE_TEACHER, "block1-mean", ids=ids)])

    direct = _direct_top1(ckpt, concat)
    m = evaluate(ckpt, tmp_path / "ev", time_resolved=False, ablation=False, figures=True, n_boot=50,
                 n_permutations=20, progress_bar=False)
    for s, name in enumerate(["01", "02"]):
        r = m["subjects"][name]["retrieval"]["inductive"]["brain_to_image"]
        assert r["top1_full"] == pytest.approx(direct[s][0]) and r["top1_2way"] == pytest.approx(direct[s][1])
    assert "mix_weights" not in m["model"] and (tmp_path / "ev" / m["figures"]["similarity_matrix"]).is_file()
