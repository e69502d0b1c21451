"""ATM's fused training path: same model as the reference layers, dropout statistics, bf16 autocast."""

from __future__ import annotations

import copy

import pytest
import torch

import neurodecode.encoders.nice as nice
from neurodecode.encoders import ATM
from neurodecode.encoders.atm import ChannelAttentionLayer, FastDropout, dropout_mask
from neurodecode.encoders.nice import TSConv


def _no_dropout(model: torch.nn.Module) -> torch.nn.Module:
    for mod in model.modules():
        if isinstance(mod, torch.nn.Dropout):
            mod.p = 0.0
        if isinstance(mod, ChannelAttentionLayer):
            mod.attn_dropout = 0.0
    return model


def _rel_errors(got, want) -> list[float]:
    """Largest error of each tensor relative to its largest entry.

    Floored at 1% of the largest entry overall: the biases just before a batch norm have an
    analytically zero gradient in training, of which only rounding noise is left.
    """
    floor = 1e-2 * max(float(w.detach().abs().max()) for w in want)
    return [float((g.double() - w.double()).detach().abs().max()) / max(float(w.detach().abs().max()), floor)
            for g, w in zip(got, want, strict=True)]


def _outputs_and_grads(model, x, inputs):
    out = model(x)
    return out, torch.autograd.grad(out.square().sum(), inputs)


# --------------------------------------------------------------------------------------------------
# the fused temporal-spatial block
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("cache", ["all", "none", "one_chunk"])
@pytest.mark.parametrize("offset", [0.0, 30.0])
def test_tsconv_fused_is_as_accurate_as_the_float32_reference(cache, offset, monkeypatch):
    """Fused block vs the reference layers in float64: outputs, input and parameter gradients, running stats.

    With a large offset on the input (the Gram-matrix statistics must not cancel) and with all,
    none or one chunk of activations kept for the backward pass (3 rows per chunk).
    """
    n_chans, n_times, batch = 6, 112, 8
    n_steps = (n_times - 75) // 5 + 1
    monkeypatch.setattr(nice, "_CHUNK_BYTES", 3 * n_steps * n_chans * 40 * 4)
    one_chunk = 3 * n_steps * n_chans * (26 + 40) * 4
    monkeypatch.setattr(nice, "_CACHE_BYTES", {"all": 2**30, "none": 0, "one_chunk": one_chunk}[cache])
    torch.manual_seed(0)
    fused = TSConv(n_chans, n_times, dropout=0.0)
    ref32 = TSConv(n_chans, n_times, dropout=0.0, implementation="reference")
    ref32.load_state_dict(fused.state_dict())
    ref64 = copy.deepcopy(ref32).double()
    x = (torch.randn(batch, n_chans, n_times) + offset).requires_grad_()
    x64 = x.detach().double().requires_grad_()
    for mode in ("train", "eval"):
        for m in (fused, ref32, ref64):
            m.train(mode == "train")
        a, ga = _outputs_and_grads(fused, x, [x, *fused.parameters()])
        b, gb = _outputs_and_grads(ref32, x, [x, *ref32.parameters()])
        c, gc = _outputs_and_grads(ref64, x64, [x64, *ref64.parameters()])
        err_fused, err_ref = _rel_errors([a, *ga], [c, *gc]), _rel_errors([b, *gb], [c, *gc])
        assert max(err_fused) < 1e-4, (mode, cache, offset, err_fused, err_ref)
    for buf in ("running_mean", "running_var"):
        torch.testing.assert_close(getattr(fused.bn1, buf).double(), getattr(ref64.bn1, buf), rtol=1e-5, atol=1e-6)
    assert int(fused.bn1.num_batches_tracked) == int(ref64.bn1.num_batches_tracked) == 1


def test_tsconv_fused_eval_without_grad_keeps_nothing_and_agrees():
    torch.manual_seed(1)
    fused = TSConv(5, 100).eval()
    ref = TSConv(5, 100, implementation="reference").eval()
    ref.load_state_dict(fused.state_dict())
    x = torch.randn(4, 5, 100)
    with torch.no_grad():
        torch.testing.assert_close(fused(x), ref(x), rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------------------------------
# dropout
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("p", [0.25, 0.5, 0.1, 0.3])
def test_dropout_mask_statistics(p):
    torch.manual_seed(0)
    m = dropout_mask((400, 2500), p)
    kept = m != 0
    n = kept.numel()
    rate = float(kept.double().mean())
    assert abs(rate - (1 - p)) < 4 * (p * (1 - p) / n) ** 0.5
    assert torch.equal(m[kept], torch.full_like(m[kept], 1.0 / (1.0 - p)))  # inverted-dropout scaling
    # neighbouring units (bytes of one random word) are independent: their joint keep rate is (1 - p)^2
    pair = (kept[:, 0::2] & kept[:, 1::2]).double().mean()
    assert abs(float(pair) - (1 - p) ** 2) < 4 * ((1 - p) ** 2 / (n / 2)) ** 0.5
    # rows are not copies of each other, and the draw follows the seed
    assert not torch.equal(kept[0], kept[1])
    torch.manual_seed(0)
    assert torch.equal(dropout_mask((400, 2500), p), m)


def test_fast_dropout_forward_and_backward_share_the_mask():
    layer = FastDropout(0.25).train()
    x = torch.randn(300, 400, requires_grad=True)
    r = torch.randn(300, 400, requires_grad=True)
    torch.manual_seed(3)
    y = layer.add(r, x)  # r + dropout(x), one addcmul
    torch.manual_seed(3)
    dropped = layer(x.detach())  # the same draw, alone
    torch.testing.assert_close(y, r + dropped)
    kept = dropped != 0
    assert float(kept.float().mean()) == pytest.approx(0.75, abs=0.01)
    torch.testing.assert_close(dropped[kept], x.detach()[kept] / 0.75)
    g = torch.randn_like(y)
    y.backward(g)
    torch.testing.assert_close(x.grad, torch.where(kept, g / 0.75, 0.0))
    torch.testing.assert_close(r.grad, g)
    layer.eval()
    assert torch.equal(layer.add(r, x), r + x)


def test_attention_layer_fast_path_is_the_gradient_of_its_own_random_forward():
    """Float64 gradcheck of the fast training layer with dropout: every mask is reused by the backward pass."""
    torch.manual_seed(0)
    layer = ChannelAttentionLayer(12, n_heads=3, d_ff=16, dropout=0.3).double().train()
    x = torch.randn(2, 5, 12, dtype=torch.float64, requires_grad=True)

    def seeded(inp):
        torch.manual_seed(7)  # same masks on every call: a deterministic function of the input
        return layer(inp)

    assert not torch.equal(seeded(x), layer(x))  # dropout is active
    assert torch.autograd.gradcheck(seeded, (x,), eps=1e-6, atol=1e-6)


def test_attention_layer_fast_and_reference_paths_agree_without_dropout():
    torch.manual_seed(0)
    fast = ChannelAttentionLayer(250, n_heads=4, dropout=0.0).train()
    slow = ChannelAttentionLayer(250, n_heads=4, dropout=0.0, fast=False).train()
    slow.load_state_dict(fast.state_dict())
    x = torch.randn(3, 64, 250, requires_grad=True)
    a, ga = _outputs_and_grads(fast, x, [x, *fast.parameters()])
    b, gb = _outputs_and_grads(slow, x, [x, *slow.parameters()])
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    assert max(_rel_errors(ga, gb)) < 1e-4


# --------------------------------------------------------------------------------------------------
# the whole encoder
# --------------------------------------------------------------------------------------------------
def test_atm_fused_matches_reference_in_eval_and_in_dropout_free_training():
    torch.manual_seed(0)
    fused = ATM(10, 120, 16, n_subjects=2)
    ref = ATM(10, 120, 16, n_subjects=2, implementation="reference")
    ref.load_state_dict(fused.state_dict())
    assert list(fused.state_dict()) == list(ref.state_dict())
    ref64 = copy.deepcopy(ref).double()
    x, s = torch.randn(6, 10, 120), torch.tensor([0, 1, 1, 0, 1, 0])
    fused.eval()
    ref.eval()
    torch.testing.assert_close(fused(x, s), ref(x, s), rtol=1e-5, atol=1e-5)
    for m in (fused, ref, ref64):
        _no_dropout(m).train()
    a = fused(x, s)
    b = ref(x, s)
    c = ref64(x.double(), s)
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    ga = torch.autograd.grad(a.square().sum(), list(fused.parameters()))
    gb = torch.autograd.grad(b.square().sum(), list(ref.parameters()))
    gc = torch.autograd.grad(c.square().sum(), list(ref64.parameters()))
    err_fused, err_ref = _rel_errors(ga, gc), _rel_errors(gb, gc)
    assert max(err_fused) < max(3 * max(err_ref), 1e-4), (err_fused, err_ref)


def test_atm_fused_trains_with_bf16_autocast_on_cpu():
    torch.manual_seed(0)
    model = ATM(8, 100, 16, n_subjects=2).train()
    x, s = torch.randn(16, 8, 100), torch.randint(0, 2, (16,))
    target = torch.randn(16, 16)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(8):
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(x, s)
        assert out.dtype == torch.bfloat16
        loss = (out.float() - target).square().mean()
        loss.backward()
        grads = [p.grad for p in model.parameters()]
        assert all(g is not None and g.dtype == torch.float32 and torch.isfinite(g).all() for g in grads)
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.7 * losses[0]
    # bf16 autocast output close to float32 in evaluation
    model.eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        low = model(x, s).float()
    with torch.no_grad():
        full = model(x, s)
    assert float((low - full).norm() / full.norm()) < 0.05
