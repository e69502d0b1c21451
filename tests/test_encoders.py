"""Brain encoders: one test over the whole registry, plus what each architecture promises."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from neurodecode.encoders import (
    ATM,
    FMRIMLP,
    MLP,
    NICE,
    BrainEncoder,
    BrainModule,
    EEGNet,
    Ridge,
    ShallowConvNet,
    create_encoder,
    encoder_class,
    list_encoders,
    normalize_chs_info,
)
from neurodecode.encoders.brain_module import SpatialAttention, sensor_positions_2d
from neurodecode.encoders.nice import TSConv

CH_NAMES = ["Fz", "Cz", "Pz", "Oz", "T7", "T8"]
N_CHANS, N_TIMES, N_OUT, N_VOX, N_SUB = len(CH_NAMES), 100, 8, 40, 2

# tiny architectures so that the registry test stays fast; anything not listed uses its defaults
TINY = {
    "atm": dict(d_ff=32),
    "brain_module": dict(n_virtual=12, n_fourier=4, hidden=16, n_blocks=2, n_features=24),
    "mlp": dict(hidden_sizes=[32, 16]),
    "fmri_mlp": dict(hidden=32, n_blocks=2),
    "nice": dict(),
    "eegnet": dict(),
    "shallow": dict(),
    "ridge": dict(),
}

pytestmark = pytest.mark.usefixtures("one_thread")



@pytest.fixture(scope="module")
def chs_info():
    mne = pytest.importorskip("mne")
    info = mne.create_info(CH_NAMES, 100.0, "eeg")
    info.set_montage("colin27_1005")
    return info["chs"]


def build(name: str, chs_info, **extra) -> BrainEncoder:
    cls = encoder_class(name)
    torch.manual_seed(0)
    if cls.modality == "voxels":
        kw = dict(n_voxels=N_VOX, n_outputs=N_OUT, n_subjects=N_SUB)
    else:
        kw = dict(n_chans=N_CHANS, n_times=N_TIMES, n_outputs=N_OUT, sfreq=100.0, chs_info=chs_info,
                  n_subjects=N_SUB)
    model = create_encoder(name, **kw, **TINY.get(name, {}), **extra)
    if cls.closed_form:
        g = torch.Generator().manual_seed(1)
        model.fit(torch.randn(64, *model.input_shape, generator=g), torch.randn(64, N_OUT, generator=g))
    return model


def batch(model: BrainEncoder, n: int = 6, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, *model.input_shape, generator=g)


def test_registry_lists_the_exported_classes():
    names = list_encoders()
    for cls in (ATM, NICE, EEGNet, ShallowConvNet, BrainModule, MLP, FMRIMLP, Ridge):
        assert cls.encoder_name in names
        assert encoder_class(cls.encoder_name) is cls
    assert set(list_encoders("voxels")) == {"fmri_mlp", "ridge"}
    assert set(TINY) >= set(names), "give every registered encoder a tiny configuration in TINY"
    with pytest.raises(KeyError, match="Registered encoders"):
        encoder_class("no_such_model")
    with pytest.raises(TypeError, match="unknown argument"):
        create_encoder("mlp", n_chans=2, n_times=3, n_outputs=4, hidden_size=3)


@pytest.mark.parametrize("name", list_encoders())
def test_encoder_contract(name, chs_info):
    model = build(name, chs_info)
    subject = torch.tensor([0, 1, 0, 1, 1, 0])
    x = batch(model)

    # shapes and backward pass
    model.train()
    x.requires_grad_(True)
    out = model(x, subject)
    assert out.shape == (6, N_OUT)
    feats = model.forward_features(x, subject)
    assert feats.ndim == 2 and feats.shape[0] == 6
    # every head takes part in the loss (the brain module has a second, regression head)
    outputs = list(model.forward_heads(x, subject).values()) if hasattr(model, "forward_heads") else [out]
    sum((o**2).sum() for o in outputs).backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    params = [p for p in model.parameters() if p.requires_grad]
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in params)
    if params:  # (ridge has none: it is fitted in closed form)
        assert sum(float(p.grad.abs().sum()) > 0 for p in params) >= 0.8 * len(params)

    # deterministic in eval mode; forward = head(features)
    model.eval()
    with torch.no_grad():
        a, b = model(x, subject), model(x, subject)
        torch.testing.assert_close(a, b, rtol=0, atol=0)
        torch.testing.assert_close(model.forward_head(model.forward_features(x, subject)), a)

    # config round trip through JSON, same weights -> same outputs
    cfg = json.loads(json.dumps(model.get_config()))
    assert cfg["name"] == name
    clone = BrainEncoder.from_config(cfg)
    assert type(clone) is type(model) and clone.get_config() == cfg
    clone.load_state_dict(model.state_dict())
    clone.eval()
    with torch.no_grad():
        torch.testing.assert_close(clone(x, subject), a, rtol=0, atol=0)

    # wrong input shape: a clear error naming the expected layout and the given shape
    wrong = torch.randn(6, *[s + 1 for s in model.input_shape])
    with pytest.raises(ValueError, match=r"expects input of shape \(batch, .*got \(6, "):
        model(wrong)
    with pytest.raises(ValueError, match="expects input of shape"):
        model(x[0])
    # subject indices outside the trained range are refused
    with pytest.raises(ValueError, match="outside 0..1"):
        model(x, torch.tensor([0, 1, 2, 0, 1, 0]))
    # subject=None works (subject-independent stand-in)
    with torch.no_grad():
        assert model(x).shape == (6, N_OUT)


def test_chs_info_must_match_n_chans(chs_info):
    with pytest.raises(ValueError, match="chs_info describes 6 channels but n_chans=5"):
        NICE(5, N_TIMES, N_OUT, chs_info=chs_info)
    model = MLP(None, 10, 4, chs_info=chs_info)  # n_chans taken from chs_info
    assert model.n_chans == N_CHANS


def test_config_is_json_with_positions_as_lists(chs_info):
    cfg = build("brain_module", chs_info).get_config()
    text = json.dumps(cfg, allow_nan=False)
    chs = json.loads(text)["chs_info"]
    assert [c["ch_name"] for c in chs] == CH_NAMES
    assert all(isinstance(c["loc"], list) and len(c["loc"]) == 3 for c in chs)
    np.testing.assert_allclose(chs[0]["loc"], chs_info[0]["loc"][:3])
    with pytest.raises(ValueError, match="not 'atm'"):
        ATM.from_config(cfg)


# --------------------------------------------------------------------------------------------------
# NICE / ATM
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("n_times", [100, 103])
@pytest.mark.parametrize("chunks", ["one", "recomputed", "partly_kept"])
def test_tsconv_fused_equals_reference_layers(n_times, chunks, monkeypatch):
    """Conv(1x25) + AvgPool(51, 5) as one filter, fused block: same outputs, gradients, running stats."""
    import neurodecode.encoders.nice as nice

    if chunks != "one":  # 2 rows per chunk: the chunked statistics and the two-pass backward
        row = 5 * ((n_times - 75) // 5 + 1) * 40 * 4
        monkeypatch.setattr(nice, "_CHUNK_BYTES", 2 * row)
        monkeypatch.setattr(nice, "_CACHE_BYTES", 0 if chunks == "recomputed" else 4 * row)
    torch.manual_seed(0)
    fused = TSConv(5, n_times, implementation="fused")
    ref = TSConv(5, n_times, implementation="reference")
    ref.load_state_dict(fused.state_dict())
    x = torch.randn(7, 5, n_times, requires_grad=True)
    for mode in ("eval", "train"):
        fused.train(mode == "train")
        ref.train(mode == "train")
        torch.manual_seed(1)
        a = fused(x)
        torch.manual_seed(1)
        b = ref(x)
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
        assert a.shape == (7, 40 * ((n_times - 75) // 5 + 1))
        # gradients of the input and of every parameter (batch statistics in train mode, running ones in eval)
        ga = torch.autograd.grad(a.square().sum(), [x, *fused.parameters()])
        gb = torch.autograd.grad(b.square().sum(), [x, *ref.parameters()])
        names = ["x"] + [n for n, _ in fused.named_parameters()]
        # biases just before a batch norm have an analytically zero gradient in training: only rounding
        # noise is left there, so tolerances are relative to the largest gradient too
        floor = 1e-5 * max(float(v.abs().max()) for v in gb)
        for name, u, v in zip(names, ga, gb, strict=True):
            torch.testing.assert_close(u, v, rtol=1e-4, atol=max(1e-4 * float(v.abs().max()), floor), msg=name)
    # running statistics moved identically (momentum update with the unbiased variance)
    for buf in ("running_mean", "running_var", "num_batches_tracked"):
        torch.testing.assert_close(getattr(fused.bn1, buf), getattr(ref.bn1, buf))


def test_atm_fused_and_reference_implementations_agree():
    torch.manual_seed(0)
    fast = ATM(N_CHANS, N_TIMES, N_OUT, n_subjects=3)
    slow = ATM(N_CHANS, N_TIMES, N_OUT, n_subjects=3, implementation="reference")
    slow.load_state_dict(fast.state_dict())
    x, s = torch.randn(5, N_CHANS, N_TIMES), torch.tensor([0, 1, 2, 2, 0])
    fast.eval()
    slow.eval()
    torch.testing.assert_close(fast(x, s), slow(x, s), rtol=1e-5, atol=1e-5)
    # training (batch statistics), dropout off so that both draw nothing random: same gradients
    for m in (fast, slow):
        m.train()
        for mod in m.modules():
            if isinstance(mod, torch.nn.Dropout):
                mod.p = 0.0
        for layer in m.layers:
            layer.attn_dropout = 0.0
    a, b = fast(x, s), slow(x, s)
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    ga = torch.autograd.grad(a.square().sum(), list(fast.parameters()))
    gb = torch.autograd.grad(b.square().sum(), list(slow.parameters()))
    floor = 1e-5 * max(float(g.abs().max()) for g in gb)
    for (name, _), u, v in zip(fast.named_parameters(), ga, gb, strict=True):
        torch.testing.assert_close(u, v, rtol=1e-4, atol=max(1e-4 * float(v.abs().max()), floor), msg=name)


def test_fast_dropout():
    from neurodecode.encoders.atm import FastDropout

    layer = FastDropout(0.25).train()
    x = torch.ones(200, 500, requires_grad=True)
    torch.manual_seed(0)
    y = layer(x)
    kept = y != 0
    assert float(kept.float().mean()) == pytest.approx(0.75, abs=0.01)
    torch.testing.assert_close(y[kept], torch.full_like(y[kept], 1 / 0.75))
    y.sum().backward()
    torch.testing.assert_close(x.grad, kept.float() / 0.75)
    assert torch.equal(layer.eval()(x), x)


def test_atm_checkpointing_gives_the_same_model(monkeypatch):
    import neurodecode.encoders.atm as atm

    monkeypatch.setattr(atm, "_CHECKPOINT_BYTES", 1)  # one example per chunk
    kw = dict(n_subjects=2, dropout=0.0, conv_dropout=0.0, proj_dropout=0.0)
    torch.manual_seed(0)
    plain = ATM(N_CHANS, N_TIMES, N_OUT, **kw)
    light = ATM(N_CHANS, N_TIMES, N_OUT, checkpointing=True, **kw)
    light.load_state_dict(plain.state_dict())
    x, s = torch.randn(5, N_CHANS, N_TIMES), torch.tensor([0, 1, 1, 0, 1])
    a, b = plain(x, s), light(x, s)
    torch.testing.assert_close(a, b)
    ga = torch.autograd.grad(a.square().sum(), list(plain.parameters()))
    gb = torch.autograd.grad(b.square().sum(), list(light.parameters()))
    floor = 1e-5 * max(float(g.abs().max()) for g in ga)
    for (name, _), u, v in zip(plain.named_parameters(), ga, gb, strict=True):
        torch.testing.assert_close(v, u, rtol=1e-4, atol=max(1e-4 * float(u.abs().max()), floor), msg=name)


def test_atm_uses_every_channel_and_drops_the_subject_token():
    torch.manual_seed(0)
    model = ATM(N_CHANS, N_TIMES, N_OUT, n_subjects=2).eval()
    x = torch.randn(3, N_CHANS, N_TIMES)
    s = torch.tensor([0, 1, 0])
    tokens = model.encode_tokens(x, s)
    assert tokens.shape == (3, N_CHANS, model.d_model)  # subject token removed, all channels kept
    with torch.no_grad():
        base = model(x, s)
        x_last = x.clone()
        x_last[:, -1] += torch.randn(3, N_TIMES)
        assert (model(x_last, s) - base).abs().max() > 1e-3  # the last channel matters
        # the subject token only acts through attention: replacing it changes the output...
        other = model(x, 1 - s)
        assert (other - base).abs().max() > 1e-4
        # ...and it is not read by the convolution: with attention removed, subjects give equal outputs
        model.layers = torch.nn.ModuleList()
        torch.testing.assert_close(model(x, s), model(x, 1 - s))
        # ...while the last channel is, directly
        assert (model(x_last, s) - model(x, s)).abs().max() > 1e-3


def test_atm_unknown_subject():
    torch.manual_seed(0)
    model = ATM(N_CHANS, N_TIMES, N_OUT, n_subjects=3).eval()
    x = torch.randn(2, N_CHANS, N_TIMES)
    with torch.no_grad():
        out_none = model(x)  # mean of the subject tokens
        model.subject_tokens.data[:] = model.subject_tokens.data.mean(0, keepdim=True)
        torch.testing.assert_close(out_none, model(x, 0))
    single = ATM(N_CHANS, N_TIMES, N_OUT, n_subjects=1).eval()
    torch.testing.assert_close(single(x), single(x, 0))
    # a learned unknown-subject token is trained through subject dropout
    learned = ATM(N_CHANS, N_TIMES, N_OUT, n_subjects=3, unknown_subject="learned", subject_dropout=0.5)
    torch.manual_seed(3)
    learned(torch.randn(16, N_CHANS, N_TIMES), torch.zeros(16, dtype=torch.long)).sum().backward()
    assert learned.unknown_token.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="unknown_subject='learned'"):
        ATM(N_CHANS, N_TIMES, N_OUT, subject_dropout=0.1)


def test_tsconv_needs_enough_samples():
    with pytest.raises(ValueError, match="at least temporal_kernel \\+ pool_size - 1 = 75"):
        NICE(4, 60, 8)


# --------------------------------------------------------------------------------------------------
# brain module
# --------------------------------------------------------------------------------------------------
def test_sensor_positions_follow_the_head(chs_info):
    pos = sensor_positions_2d(normalize_chs_info(chs_info))
    assert pos.shape == (N_CHANS, 2) and pos.min() >= 0 and pos.max() <= 1
    idx = {n: i for i, n in enumerate(CH_NAMES)}
    # MNE head coordinates: +x to the right ear, +y to the nose
    assert pos[idx["Fz"], 1] > pos[idx["Cz"], 1] > pos[idx["Pz"], 1] > pos[idx["Oz"], 1]
    assert pos[idx["T8"], 0] > pos[idx["Cz"], 0] > pos[idx["T7"], 0]


def test_brain_module_uses_positions(chs_info):
    model = build("brain_module", chs_info).eval()
    x = batch(model, 4)
    with torch.no_grad():
        base = model(x, 0)
        # the same weights with the sensors at other places give another output
        moved = [dict(ch) for ch in normalize_chs_info(chs_info)]
        locs = [ch["loc"] for ch in moved]
        for ch, loc in zip(moved, locs[::-1], strict=True):
            ch["loc"] = loc
        other = create_encoder("brain_module", n_chans=N_CHANS, n_times=N_TIMES, n_outputs=N_OUT,
                               chs_info=moved, n_subjects=N_SUB, **TINY["brain_module"])
        other.load_state_dict(model.state_dict())
        assert (other.eval()(x, 0) - base).abs().max() > 1e-4
        heads = model.forward_heads(x, 0)
        assert set(heads) == {"contrastive", "regression"}
        torch.testing.assert_close(heads["contrastive"], base)
        # subject layers are per subject (identity at start, so perturb one)
        model.subject_layers.data[1] += 0.1 * torch.randn_like(model.subject_layers.data[1])
        assert (model(x, 1) - model(x, 0)).abs().max() > 1e-4


def test_brain_module_needs_positions():
    with pytest.raises(ValueError, match="needs sensor positions"):
        BrainModule(4, 50, 8)
    no_montage = [{"ch_name": f"X{i}", "loc": [np.nan] * 12} for i in range(4)]
    with pytest.raises(ValueError, match="set_montage"):
        BrainModule(4, 50, 8, chs_info=no_montage)
    model = BrainModule(4, 50, 8, positions=[[0, 0], [1, 0], [0, 1], [1, 1]], n_virtual=4, n_fourier=2,
                        hidden=8, n_blocks=1, n_features=8)
    assert model(torch.randn(2, 4, 50)).shape == (2, 8)


def test_spatial_dropout_removes_sensors_near_a_point():
    pos = np.array([[0.0, 0.0], [0.05, 0.0], [1.0, 1.0], [0.5, 0.5]])
    layer = SpatialAttention(pos, n_virtual=3, n_fourier=2, dropout_radius=0.3).train()
    n = 4000
    x = torch.eye(4).unsqueeze(0).repeat(n, 1, 1)  # input row i picks sensor i: output = attention weights
    torch.manual_seed(0)
    attn = layer(x)  # (n, 3, 4)
    dropped = attn[:, 0, :] == 0
    # the same sensors are dropped for every virtual channel, and attention still sums to one
    assert torch.equal(dropped, (attn == 0).all(dim=1))
    torch.testing.assert_close(attn.sum(-1), torch.ones(n, 3))
    # a disk of radius 0.3 never covers sensors more than 0.6 apart
    assert not (dropped[:, 0] & dropped[:, 2]).any() and not (dropped[:, 0] & dropped[:, 3]).any()
    # drop rates follow the area of the disk inside the unit square: pi r^2 / 4 at a corner, pi r^2 inside
    rate = dropped.float().mean(0).numpy()
    assert rate[0] == pytest.approx(np.pi * 0.09 / 4, abs=0.02)
    assert rate[3] == pytest.approx(np.pi * 0.09, abs=0.03)
    assert (dropped[:, 0] & ~dropped[:, 1]).any() or (~dropped[:, 0] & dropped[:, 1]).any()
    layer.eval()
    assert (layer(x[:2]) > 0).all()


# --------------------------------------------------------------------------------------------------
# small convnets and MLPs
# --------------------------------------------------------------------------------------------------
def test_kernels_scale_with_sfreq():
    assert EEGNet(4, 256, 8, sfreq=256.0).kernel_length == 128
    assert EEGNet(4, 256, 8).kernel_length == 64
    shallow = ShallowConvNet(4, 500, 8, sfreq=500.0)
    assert (shallow.filter_time_length, shallow.pool_time_length, shallow.pool_time_stride) == (50, 150, 30)


def test_shallow_square_log_nonlinearity():
    torch.manual_seed(0)
    model = ShallowConvNet(3, 120, 4).eval()
    x = torch.randn(2, 3, 120)
    with torch.no_grad():
        y = model.bn(model.spatial(model.temporal(x.unsqueeze(1))))
        expected = torch.log(torch.clamp(torch.nn.functional.avg_pool2d(y**2, (1, 75), (1, 15)), min=1e-6))
        torch.testing.assert_close(model.forward_features(x), expected.flatten(1))


def test_fmri_mlp_subject_layers():
    torch.manual_seed(0)
    model = FMRIMLP(N_VOX, N_OUT, n_subjects=3, hidden=16, n_blocks=1).eval()
    x = torch.randn(4, N_VOX)
    with torch.no_grad():
        assert (model(x, 0) - model(x, 1)).abs().max() > 1e-4
        mean_layer = torch.nn.Linear(N_VOX, 16)
        mean_layer.weight.copy_(torch.stack([m.weight for m in model.input_layers]).mean(0))
        mean_layer.bias.copy_(torch.stack([m.bias for m in model.input_layers]).mean(0))
        expected = model.head(model.blocks(model.input_post(mean_layer(x))))
        torch.testing.assert_close(model(x), expected)
        mixed = model(x, torch.tensor([2, 0, 2, 1]))
        torch.testing.assert_close(mixed[1], model(x[1:2], 0)[0])


# --------------------------------------------------------------------------------------------------
# ridge
# --------------------------------------------------------------------------------------------------
def test_ridge_recovers_a_planted_map():
    rng = np.random.default_rng(0)
    n, p, k = 400, 30, 5
    X = rng.standard_normal((n, p))
    W = rng.standard_normal((p, k))
    Y = X @ W + 3.0 + 0.05 * rng.standard_normal((n, k))
    model = Ridge(p, k).fit(X, Y)
    np.testing.assert_allclose(model.weight.numpy(), W, atol=0.02)
    np.testing.assert_allclose(model.bias.numpy(), 3.0, atol=0.02)
    assert float(model.alpha_[0]) < 1.0  # little noise: little shrinkage
    with torch.no_grad():
        pred = model(torch.as_tensor(X, dtype=torch.float32)).numpy()
    assert np.mean((pred - Y) ** 2) < 0.01


@pytest.mark.parametrize("cv", ["loo", "gcv", 5])
def test_ridge_penalty_choice(cv):
    """Noisy targets and few samples call for a strong penalty; LOO matches scikit-learn's RidgeCV."""
    rng = np.random.default_rng(1)
    n, p, k = 60, 40, 3
    X = rng.standard_normal((n, p))
    W = 0.1 * rng.standard_normal((p, k))
    Y = X @ W + rng.standard_normal((n, k))
    alphas = np.logspace(-3, 5, 33)
    model = Ridge(p, k, alphas=alphas, cv=cv).fit(X, Y)
    noisy_alpha = float(model.alpha_[0])
    clean = Ridge(p, k, alphas=alphas, cv=cv).fit(X, X @ W + 0.01 * rng.standard_normal((n, k)))
    assert noisy_alpha > 30 * float(clean.alpha_[0])
    if cv == "loo":
        from sklearn.linear_model import RidgeCV

        ref = RidgeCV(alphas=alphas).fit(X, Y)  # efficient leave-one-out, one alpha for all targets
        assert noisy_alpha == pytest.approx(ref.alpha_)
        np.testing.assert_allclose(model.weight.numpy(), ref.coef_.T, rtol=1e-4, atol=1e-5)


def test_ridge_per_target_alpha_and_timeseries_mode():
    rng = np.random.default_rng(2)
    X = rng.standard_normal((80, 4, 5))
    flat = X.reshape(80, -1)
    W = rng.standard_normal((20, 2))
    Y = flat @ W
    Y[:, 1] = rng.standard_normal(80)  # pure noise in the second target
    model = Ridge(n_chans=4, n_times=5, n_outputs=2, alpha_per_target=True)
    assert model.modality == "timeseries" and model.input_shape == (4, 5)
    with pytest.raises(RuntimeError, match="call model.fit"):
        model(torch.zeros(1, 4, 5))
    model.fit(X, Y)
    assert float(model.alpha_[1]) > 100 * float(model.alpha_[0])
    assert model.cv_errors_.shape == (17, 2)
    with pytest.raises(ValueError, match=r"X must have shape \(n_samples, 4, 5\)"):
        model.fit(flat, Y)


@pytest.mark.gpu
def test_atm_fused_matches_reference_on_cuda():
    torch.manual_seed(0)
    fast = ATM(N_CHANS, N_TIMES, N_OUT, n_subjects=2).cuda().eval()
    slow = ATM(N_CHANS, N_TIMES, N_OUT, n_subjects=2, implementation="reference").cuda().eval()
    slow.load_state_dict(fast.state_dict())
    x = torch.randn(9, N_CHANS, N_TIMES, device="cuda")
    s = torch.tensor([0, 1] * 4 + [0], device="cuda")
    torch.testing.assert_close(fast(x, s), slow(x, s), rtol=1e-4, atol=1e-4)
    fast.train()
    out = fast(x, s)
    out.square().sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in fast.parameters() if p.grad is not None)
