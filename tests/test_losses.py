"""Alignment losses on one process: values against hand-written formulas, temperature, mixtures."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from neurodecode.losses import (
    AlignmentLoss,
    ContrastiveLoss,
    LogitScale,
    RegressionLoss,
    SoftCLIPLoss,
    clip_loss,
    soft_clip_loss,
)

pytestmark = pytest.mark.usefixtures("one_thread")



def _pair(n=8, d=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g), torch.randn(n, d, generator=g)


def _numpy_infonce(b, t, scale, soft=None):
    """Symmetric cross-entropy written out with numpy (row-wise log-softmax)."""
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    t = t / np.linalg.norm(t, axis=1, keepdims=True)
    logits = scale * b @ t.T
    target = np.eye(len(b)) if soft is None else soft

    def ce(z, p):
        z = z - z.max(1, keepdims=True)
        logp = z - np.log(np.exp(z).sum(1, keepdims=True))
        return -(p * logp).sum(1).mean()

    return 0.5 * (ce(logits, target) + ce(logits.T, target.T))


def test_contrastive_loss_matches_the_formula():
    b, t = _pair()
    loss = ContrastiveLoss()
    value = loss(b, t)
    expected = _numpy_infonce(b.double().numpy(), t.double().numpy(), 1 / 0.07)
    assert float(value.detach()) == pytest.approx(expected, rel=1e-5)
    assert float(clip_loss(b, t, 1 / 0.07)) == pytest.approx(expected, rel=1e-5)
    # aligned pairs of orthogonal embeddings: near-zero loss; the temperature gets a gradient
    e = torch.eye(8)
    assert float(loss(e, e).detach()) < 1e-3
    value.backward()
    assert loss.logit_scale.log_scale.grad is not None and loss.logit_scale.log_scale.grad != 0


def test_logit_scale_is_exp_parametrised_and_clamped():
    scale = LogitScale(0.07, max_scale=100.0)
    assert float(scale().detach()) == pytest.approx(1 / 0.07)
    assert float(scale.log_scale.detach()) == pytest.approx(math.log(1 / 0.07))
    with torch.no_grad():
        scale.log_scale.fill_(10.0)
    assert float(scale().detach()) == pytest.approx(100.0)
    with torch.no_grad():
        scale.log_scale.fill_(-3.0)
    assert float(scale().detach()) == pytest.approx(1.0)
    fixed = LogitScale(0.1, learnable=False)
    assert not list(fixed.parameters()) and float(fixed()) == pytest.approx(10.0)


def test_softclip_targets():
    b, t = _pair(6, 4, seed=1)
    loss = SoftCLIPLoss(target_temperature=0.5)
    tn = F.normalize(t.double(), dim=-1).numpy()
    soft = np.exp(tn @ tn.T / 0.5)
    soft /= soft.sum(1, keepdims=True)
    expected = _numpy_infonce(b.double().numpy(), t.double().numpy(), 1 / 0.07, soft)
    assert float(loss(b, t).detach()) == pytest.approx(expected, rel=1e-5)
    # with a very sharp target temperature the soft targets become one-hot: SoftCLIP -> CLIP
    assert float(soft_clip_loss(b, t, 1 / 0.07, 1e4)) == pytest.approx(float(clip_loss(b, t, 1 / 0.07)), rel=1e-4)


def test_regression_losses():
    b, t = _pair()
    assert float(RegressionLoss("mse")(b, t)) == pytest.approx(float(((b - t) ** 2).mean()))
    assert float(RegressionLoss("cosine")(3 * t, t)) == pytest.approx(0.0, abs=1e-6)
    assert float(RegressionLoss("cosine")(-t, t)) == pytest.approx(2.0)
    assert float(RegressionLoss("mse", normalize=True)(5 * t, t)) == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="'kind'"):
        RegressionLoss("l1")


def test_alignment_loss_mixture_and_text_target():
    b, img = _pair(seed=2)
    _, txt = _pair(seed=3)
    loss = AlignmentLoss("clip", "mse", contrastive_weight=0.75, text_weight=0.01)
    total, parts = loss(b, img, txt)
    c_img, r_img = clip_loss(b, img, 1 / 0.07), F.mse_loss(b, img)
    c_txt, r_txt = clip_loss(b, txt, 1 / 0.07), F.mse_loss(b, txt)
    expected = 0.99 * (0.75 * c_img + 0.25 * r_img) + 0.01 * (0.75 * c_txt + 0.25 * r_txt)
    assert float(total.detach()) == pytest.approx(float(expected), rel=1e-5)
    assert float(parts["contrastive"]) == pytest.approx(float(c_img), rel=1e-5)
    assert float(parts["regression"]) == pytest.approx(float(r_img), rel=1e-5)
    assert float(parts["logit_scale"]) == pytest.approx(1 / 0.07)
    assert total.requires_grad and not any(v.requires_grad for v in parts.values())
    # defaults: contrastive only, Benchetrit's 0.75 for both, regression only
    assert AlignmentLoss().contrastive_weight == 1.0
    assert AlignmentLoss("clip", "mse").contrastive_weight == 0.75
    only_reg = AlignmentLoss(None, "cosine")
    total, parts = only_reg(b, img)
    assert only_reg.logit_scale is None and set(parts) == {"image", "regression"}
    assert not list(only_reg.parameters())


def test_alignment_loss_reads_both_heads():
    b1, img = _pair(seed=4)
    b2, _ = _pair(seed=5)
    loss = AlignmentLoss("clip", "mse", contrastive_weight=0.5)
    total, parts = loss({"contrastive": b1, "regression": b2}, img)
    assert float(parts["contrastive"]) == pytest.approx(float(clip_loss(b1, img, 1 / 0.07)), rel=1e-5)
    assert float(parts["regression"]) == pytest.approx(float(F.mse_loss(b2, img)), rel=1e-5)


def test_alignment_loss_errors():
    b, img = _pair()
    with pytest.raises(ValueError, match="no text embeddings"):
        AlignmentLoss(text_weight=0.01)(b, img)
    with pytest.raises(ValueError, match="switched off"):
        AlignmentLoss("clip", None, contrastive_weight=0.5)
    with pytest.raises(ValueError, match="needs a contrastive term, a regression term"):
        AlignmentLoss(None, None)
    with pytest.raises(ValueError, match="teacher's embedding dimension"):
        AlignmentLoss()(b, img[:, :3])
    with pytest.raises(ValueError, match="'contrastive'"):
        AlignmentLoss("infonce")


def test_contrastive_training_aligns_embeddings():
    """A linear map trained with the loss learns to retrieve the right target (sanity of gradients)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 10, generator=g)
    target = x @ torch.randn(10, 6, generator=g)
    model = torch.nn.Linear(10, 6)
    loss = AlignmentLoss()
    opt = torch.optim.Adam([*model.parameters(), *loss.parameters()], lr=0.05)
    for _ in range(150):
        opt.zero_grad()
        total, _ = loss(model(x), target)
        total.backward()
        opt.step()
    with torch.no_grad():
        sim = F.normalize(model(x), dim=-1) @ F.normalize(target, dim=-1).T
    assert (sim.argmax(1) == torch.arange(64)).float().mean() > 0.9
