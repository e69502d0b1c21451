"""The brain module's fast path computes the same function as its plain layers (implementation="reference")."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from neurodecode.encoders import BrainModule
from neurodecode.encoders.brain_module import _tile, _toom_cook, conv_time_last

pytestmark = pytest.mark.usefixtures("one_thread")

SMALL = dict(n_virtual=12, n_fourier=4, hidden=16, n_blocks=5, n_features=24)  # all five dilations


def make(n_chans=10, n_times=60, n_subjects=3, dtype=torch.float64, **kw) -> BrainModule:
    torch.manual_seed(0)
    pos = np.random.default_rng(0).random((n_chans, 2))
    model = BrainModule(n_chans, n_times, 8, positions=pos, n_subjects=n_subjects, **{**SMALL, **kw}).to(dtype)
    with torch.no_grad():  # subject matrices away from the identity, so that a mix-up would show
        model.subject_layers.add_(0.2 * torch.randn_like(model.subject_layers))
    return model


def run(model: BrainModule, implementation: str, x: torch.Tensor, subject, seed: int = 1):
    """Outputs, parameter gradients and buffers of one forward/backward of a copy of ``model``."""
    model = copy.deepcopy(model)
    model.implementation = implementation
    torch.manual_seed(seed)  # the same spatial-dropout centres and dropout masks in both paths
    heads = model.forward_heads(x, subject)
    (heads["contrastive"].square().sum() + heads["regression"].sin().sum()).backward()
    grads = {n: p.grad for n, p in model.named_parameters()}
    return heads, grads, dict(model.named_buffers())


def assert_same(model, x, subject, rtol, atol):
    ref, fast = run(model, "reference", x, subject), run(model, "fast", x, subject)
    for key in ref[0]:
        torch.testing.assert_close(fast[0][key], ref[0][key], rtol=rtol, atol=atol)
    # some gradients are zero in exact arithmetic (conv biases before batch norm in training, the
    # time-collapse bias before the heads' layer norm): compare on the scale of the largest gradient
    scale = max(float(g.abs().max()) for g in ref[1].values() if g is not None)
    for name, g in ref[1].items():
        if g is None:  # not used by this input (the subject matrices for subject=None, identity)
            assert fast[1][name] is None, name
            continue
        torch.testing.assert_close(fast[1][name], g, rtol=rtol, atol=atol * scale, msg=name)
    for name, b in ref[2].items():  # batch-norm running statistics
        torch.testing.assert_close(fast[2][name], b, rtol=rtol, atol=atol, msg=name)


@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_fast_path_equals_reference(mode, dtype):
    model = make(dtype=dtype, dropout=0.3 if mode == "train" else 0.0)
    getattr(model, mode)()
    x = torch.randn(7, 10, 60, dtype=dtype, generator=torch.Generator().manual_seed(2))
    subject = torch.tensor([2, 0, 2, 1, 0, 0, 2])
    tol = dict(rtol=1e-9, atol=1e-9) if dtype == torch.float64 else dict(rtol=1e-4, atol=1e-5)
    assert_same(model, x, subject, **tol)


@pytest.mark.parametrize("unknown", ["mean", "identity"])
def test_fast_path_without_subject_and_other_kernels(unknown):
    model = make(n_times=37, n_subjects=2, kernel_size=5, unknown_subject=unknown, spatial_dropout=0.0).train()
    x = torch.randn(4, 10, 37, dtype=torch.float64)
    assert_same(model, x, None, rtol=1e-9, atol=1e-9)
    assert_same(model.eval(), x, 1, rtol=1e-9, atol=1e-9)


def test_fast_path_keeps_parameters_and_checkpoints():
    ref = make(implementation="reference")
    fast = make()
    assert ref.state_dict().keys() == fast.state_dict().keys()
    fast.load_state_dict(ref.state_dict())  # a checkpoint of the plain layers loads into the fast path
    x = torch.randn(3, 10, 60, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(fast.eval()(x, 0), ref.eval()(x, 0), rtol=1e-10, atol=1e-10)
    assert BrainModule.from_config(ref.get_config()).implementation == "reference"
    with pytest.raises(ValueError, match="implementation"):
        make(implementation="winograd")


def test_attention_falls_back_when_the_softmax_normaliser_underflows():
    model = make().train()
    with torch.no_grad():  # logits spread over thousands: exp(logit - max) underflows for most sensors
        model.spatial_attention.weight.mul_(3000.0)
    x = torch.randn(5, 10, 60, dtype=torch.float64)
    assert_same(model, x, torch.tensor([0, 1, 2, 0, 1]), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("n_times, dilation, kernel", [(50, 1, 3), (50, 2, 3), (50, 16, 3), (13, 8, 3), (5, 8, 3),
                                                       (23, 3, 5), (9, 1, 1), (20, 1, 7)])
def test_winograd_convolution_equals_conv1d(n_times, dilation, kernel):
    torch.manual_seed(0)
    conv = torch.nn.Conv1d(6, 5, kernel, dilation=dilation, padding=dilation * (kernel - 1) // 2).double()
    x = torch.randn(3, 6, n_times, dtype=torch.float64, requires_grad=True)
    xt = x.detach().transpose(1, 2).contiguous().requires_grad_()
    gy = torch.randn(3, 5, n_times, dtype=torch.float64)
    want = conv(x)
    want.backward(gy)
    want_grads = [x.grad, conv.weight.grad.clone(), conv.bias.grad.clone()]
    conv.zero_grad()
    got = conv_time_last(xt, conv)
    got.backward(gy.transpose(1, 2))
    torch.testing.assert_close(got, want.transpose(1, 2), rtol=1e-10, atol=1e-10)
    for g, w in zip([xt.grad.transpose(1, 2), conv.weight.grad, conv.bias.grad], want_grads, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-10)


def test_toom_cook_matrices_and_tile_choice():
    rng = np.random.default_rng(0)
    for m, r in [(2, 3), (4, 3), (6, 3), (4, 5)]:
        at, g, bt = _toom_cook(m, r)
        d, k = rng.standard_normal(m + r - 1), rng.standard_normal(r)
        np.testing.assert_allclose(at @ ((g @ k) * (bt @ d)), np.correlate(d, k, mode="valid"), atol=1e-12)
    assert _tile(100, 3) == 6 and _tile(13, 3) == 5  # the fewest products, padding included
    assert _tile(1, 3) == 0 and _tile(50, 7) == 0  # direct convolution when Winograd does not pay


def test_fast_path_under_bf16_autocast_uses_direct_convolutions():
    model = make(dtype=torch.float32).eval()
    x = torch.randn(2, 10, 60)
    with torch.no_grad():
        want = model(x, 0)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            got = model(x, 0)
    assert got.dtype == torch.bfloat16 and torch.isfinite(got.float()).all()
    torch.testing.assert_close(got.float(), want, rtol=0.1, atol=0.1)
    assert F.cosine_similarity(got.float().flatten(), want.flatten(), dim=0) > 0.99
