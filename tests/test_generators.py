"""Stage-2 generators: spec parsing, and the SDXL-Turbo + IP-Adapter and Stable unCLIP paths.

The diffusers paths run on tiny random components built from config and saved with
``save_pretrained``, so the real ``from_pretrained`` + ``load_ip_adapter`` call path (the same
pipeline classes as the real weights) is exercised through ``load_generator``. Nothing downloads.
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

from neurodecode.reconstruction.generators import (  # noqa: E402
    DEFAULT_IP_ADAPTER,
    list_generators,
    load_generator,
    parse_generator_spec,
)
from neurodecode.utils import UserError  # noqa: E402

# diffusers' schedulers call np.array(tensor, copy=False) on recent numpy; not ours to fix
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

EMBED_DIM = 24      # the tiny IP-Adapter's / unCLIP image encoder's embedding size
STEPS = 2


# --------------------------------------------------------------------------------------------------
# tiny components
# --------------------------------------------------------------------------------------------------
def _tokenizer(root: Path):
    """A CLIP tokenizer from a tiny vocabulary (letters, BOS/EOS) written offline."""
    from transformers import CLIPTokenizer

    root.mkdir(parents=True, exist_ok=True)
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for suffix in ("", "</w>"):
        for c in "abcdefghijklmnopqrstuvwxyz":
            vocab[c + suffix] = len(vocab)
    (root / "vocab.json").write_text(json.dumps(vocab))
    (root / "merges.txt").write_text("#version: 0.2\n")
    return CLIPTokenizer(str(root / "vocab.json"), str(root / "merges.txt"), model_max_length=16), len(vocab)


def _text_config(vocab_size: int, projection_dim: int = 32):
    from transformers import CLIPTextConfig

    return CLIPTextConfig(bos_token_id=0, eos_token_id=1, pad_token_id=1, hidden_size=32, intermediate_size=37,
                          num_attention_heads=4, num_hidden_layers=2, vocab_size=vocab_size,
                          max_position_embeddings=16, projection_dim=projection_dim)


def _vae():
    from diffusers import AutoencoderKL

    return AutoencoderKL(block_out_channels=(16, 32), in_channels=3, out_channels=3, latent_channels=4,
                         down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                         norm_num_groups=8, sample_size=32)


def _ip_adapter_state(unet, embed_dim: int) -> dict[str, torch.Tensor]:
    """Random IP-Adapter weights in the layout ``load_ip_adapter`` reads from a safetensors file.

    ``image_proj.proj`` maps one image embedding to 4 tokens of the UNet's cross-attention width;
    ``ip_adapter.{k}.to_k_ip/to_v_ip`` (k = 1, 3, 5, ... over the cross-attention layers in the order of
    ``unet.attn_processors``) project those tokens to keys and values.
    """
    cross = unet.config.cross_attention_dim
    state = {"image_proj.proj.weight": torch.randn(4 * cross, embed_dim) / embed_dim ** 0.5,
             "image_proj.proj.bias": torch.zeros(4 * cross),
             "image_proj.norm.weight": torch.ones(cross), "image_proj.norm.bias": torch.zeros(cross)}
    key = 1
    for name in unet.attn_processors:
        if name.endswith("attn1.processor"):
            continue
        hidden = unet.get_submodule(name[: -len(".processor")]).to_q.in_features
        for proj in ("to_k_ip", "to_v_ip"):
            state[f"ip_adapter.{key}.{proj}.weight"] = torch.randn(hidden, cross) / cross ** 0.5
        key += 2
    return state


def build_tiny_sdxl(root: Path) -> tuple[Path, Path]:
    """Save a tiny random SDXL pipeline (hub-like folder) and IP-Adapter weights; returns both folders."""
    from diffusers import EulerAncestralDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from safetensors.torch import save_file
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        unet = UNet2DConditionModel(
            block_out_channels=(16, 32), layers_per_block=1, sample_size=16, in_channels=4, out_channels=4,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), attention_head_dim=(2, 4),
            use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=8,
            transformer_layers_per_block=(1, 1), projection_class_embeddings_input_dim=8 * 6 + 32,
            cross_attention_dim=64, norm_num_groups=8)
        tok, n_vocab = _tokenizer(root / "vocab")
        pipe = StableDiffusionXLPipeline(
            vae=_vae(), text_encoder=CLIPTextModel(_text_config(n_vocab)),
            text_encoder_2=CLIPTextModelWithProjection(_text_config(n_vocab)), tokenizer=tok, tokenizer_2=tok,
            unet=unet, scheduler=EulerAncestralDiscreteScheduler(
                beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", timestep_spacing="trailing"),
            add_watermarker=False)
        ip = _ip_adapter_state(unet, EMBED_DIM)
    sdxl_dir, ip_dir = root / "sdxl", root / "ip-adapter"
    pipe.save_pretrained(sdxl_dir)
    (ip_dir / "sdxl_models").mkdir(parents=True)
    save_file(ip, str(ip_dir / "sdxl_models" / "ip-adapter_sdxl_vit-h.safetensors"))
    return sdxl_dir, ip_dir


def build_tiny_unclip(root: Path) -> Path:
    """Save a tiny random Stable unCLIP (img2img) pipeline; returns its folder."""
    from diffusers import DDIMScheduler, DDPMScheduler, StableUnCLIPImg2ImgPipeline, UNet2DConditionModel
    from diffusers.pipelines.stable_diffusion.stable_unclip_image_normalizer import (
        StableUnCLIPImageNormalizer,
    )
    from transformers import (
        CLIPImageProcessor,
        CLIPTextModel,
        CLIPVisionConfig,
        CLIPVisionModelWithProjection,
    )

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        tok, n_vocab = _tokenizer(root / "vocab")
        unet = UNet2DConditionModel(
            block_out_channels=(16, 32), layers_per_block=1, sample_size=16, in_channels=4, out_channels=4,
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), attention_head_dim=(2, 4),
            use_linear_projection=True, cross_attention_dim=32, class_embed_type="projection",
            projection_class_embeddings_input_dim=2 * EMBED_DIM, norm_num_groups=8)
        encoder = CLIPVisionModelWithProjection(CLIPVisionConfig(
            hidden_size=32, projection_dim=EMBED_DIM, num_hidden_layers=1, num_attention_heads=4, image_size=32,
            patch_size=8, intermediate_size=37))
        pipe = StableUnCLIPImg2ImgPipeline(
            feature_extractor=CLIPImageProcessor(crop_size=32, size=32), image_encoder=encoder,
            image_normalizer=StableUnCLIPImageNormalizer(embedding_dim=EMBED_DIM),
            image_noising_scheduler=DDPMScheduler(beta_schedule="squaredcos_cap_v2"), tokenizer=tok,
            text_encoder=CLIPTextModel(_text_config(n_vocab)), unet=unet,
            scheduler=DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                                    prediction_type="v_prediction", set_alpha_to_one=False, steps_offset=1),
            vae=_vae())
    out = root / "unclip"
    pipe.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def sdxl_dirs(tmp_path_factory) -> tuple[Path, Path]:
    return build_tiny_sdxl(tmp_path_factory.mktemp("tiny_sdxl"))


@pytest.fixture(scope="module")
def sdxl(sdxl_dirs):
    sdxl_dir, ip_dir = sdxl_dirs
    return load_generator(f"sdxl-turbo-ip-adapter:{sdxl_dir}+{ip_dir}", device="cpu", steps=STEPS)


@pytest.fixture(scope="module")
def unclip_dir(tmp_path_factory) -> Path:
    return build_tiny_unclip(tmp_path_factory.mktemp("tiny_unclip"))


@pytest.fixture(scope="module")
def unclip(unclip_dir):
    return load_generator(f"unclip:{unclip_dir}", device="cpu", steps=STEPS)


def _embeds(n: int, seed: int = 0, dim: int = EMBED_DIM) -> torch.Tensor:
    return torch.randn(n, dim, generator=torch.Generator().manual_seed(seed)) * 3


def _px(image) -> np.ndarray:
    return np.asarray(image, dtype=np.float64)


def _diff(a, b) -> float:
    return float(np.abs(_px(a) - _px(b)).mean())


# --------------------------------------------------------------------------------------------------
# specs
# --------------------------------------------------------------------------------------------------
def test_parse_specs_and_defaults():
    assert parse_generator_spec("sdxl-turbo-ip-adapter").args == ("", "")
    assert parse_generator_spec(" SDXL-Turbo-IP-Adapter:a/b+c/d ").args == ("a/b", "c/d")
    assert parse_generator_spec("sdxl-turbo-ip-adapter:+ip").args == ("", "ip")
    assert parse_generator_spec("unclip:org/model").args == ("org/model",)
    assert parse_generator_spec("demo:some/folder").args == ("some/folder",)
    assert len(list_generators()) == 3 and any(DEFAULT_IP_ADAPTER in line for line in list_generators())


def test_unknown_spec_says_did_you_mean():
    with pytest.raises(UserError, match=r"unknown generator 'sdxl-turbo'.*Did you mean 'sdxl-turbo-ip-adapter'"):
        load_generator("sdxl-turbo")
    with pytest.raises(UserError, match="unknown generator 'sdxl'. Did you mean 'sdxl-turbo-ip-adapter'"):
        load_generator("sdxl")
    with pytest.raises(UserError, match="unknown generator 'unclipp:x'. Did you mean 'unclip'"):
        load_generator("unclipp:x")
    with pytest.raises(UserError, match="unknown generator 'dalle'.*Known generators: demo:PATH"):
        load_generator("dalle")
    with pytest.raises(UserError, match="give the demo generator's folder"):
        load_generator("demo:")


def test_missing_folder_and_unreachable_hub_id_say_what_to_do(tmp_path, sdxl_dirs):
    with pytest.raises(UserError, match="does not exist; give an existing local folder"):
        load_generator(f"unclip:{tmp_path / 'nowhere'}", device="cpu")
    # a hub id that is not cached (the tests run with HF_HUB_OFFLINE=1): the error says to pass a folder
    with pytest.raises(UserError, match=r"could not load the Stable unCLIP pipeline from 'neurodecode-test/absent'"
                                        r".*pass the local folder: 'unclip:DIR'"):
        load_generator("unclip:neurodecode-test/absent", device="cpu")
    sdxl_dir, _ = sdxl_dirs
    with pytest.raises(UserError, match=r"IP-Adapter weights .* from 'neurodecode-test/absent'.*pass the folder"):
        load_generator(f"sdxl-turbo-ip-adapter:{sdxl_dir}+neurodecode-test/absent", device="cpu")
    (tmp_path / "ip").mkdir()
    (tmp_path / "ip" / "other.safetensors").write_bytes(b"")
    with pytest.raises(UserError, match=r"no ip-adapter_sdxl_vit-h.safetensors .*found: other.safetensors"):
        load_generator(f"sdxl-turbo-ip-adapter:{sdxl_dir}+{tmp_path / 'ip'}", device="cpu")
    # folders of the wrong kind
    with pytest.raises(UserError, match="is not a diffusers pipeline folder"):
        load_generator(f"unclip:{tmp_path / 'ip'}", device="cpu")
    with pytest.raises(UserError, match="holds a StableDiffusionXLPipeline pipeline, not the Stable unCLIP"):
        load_generator(f"unclip:{sdxl_dir}", device="cpu")


def test_ip_adapter_made_for_another_unet_is_a_clear_error(tmp_path, sdxl_dirs):
    from safetensors.torch import load_file, save_file

    sdxl_dir, ip_dir = sdxl_dirs
    state = load_file(str(ip_dir / "sdxl_models" / "ip-adapter_sdxl_vit-h.safetensors"))
    state = {k: (torch.zeros(v.shape[0], v.shape[1] + 8) if ".to_k_ip." in k else v) for k, v in state.items()}
    save_file(state, str(tmp_path / "ip-adapter_sdxl_vit-h.safetensors"))
    with pytest.raises(UserError, match="do not fit this SDXL UNet"):
        load_generator(f"sdxl-turbo-ip-adapter:{sdxl_dir}+{tmp_path}", device="cpu")


def test_demo_route(tmp_path):
    """``demo:PATH`` loads an exported demo generator with the options it takes."""
    if importlib.util.find_spec("neurodecode.reconstruction.demo_generator") is None:
        pytest.skip("neurodecode.reconstruction.demo_generator is not written yet")
    from neurodecode.reconstruction.demo_generator import (
        DemoDenoiser,
        default_scheduler_config,
        save_pretrained,
    )

    with pytest.raises(UserError, match="demo generator folder .* does not exist"):
        load_generator(f"demo:{tmp_path / 'none'}", device="cpu")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        denoiser = DemoDenoiser(embed_dim=8, image_size=16, block_out_channels=(8, 16), norm_num_groups=4,
                                attention_head_dim=8)
    save_pretrained(denoiser, tmp_path / "demo", scheduler=default_scheduler_config())
    spec = f"demo:{tmp_path / 'demo'}"
    gen = load_generator(spec, device="cpu", steps=2, batch_size=2, attention_slicing=True)
    assert gen.spec == spec and gen.embed_dim == 8 and gen.steps == 2 and gen.batch_size == 2
    images = gen.generate(_embeds(3, dim=8), seeds=[0, 1, 2], progress=False)
    assert len(images) == 3 and all(im.size == (16, 16) for im in images)


# --------------------------------------------------------------------------------------------------
# SDXL-Turbo + IP-Adapter
# --------------------------------------------------------------------------------------------------
def test_sdxl_loads_through_the_real_path(sdxl, sdxl_dirs):
    from diffusers.models.attention_processor import IPAdapterAttnProcessor2_0

    assert sdxl.embed_dim == EMBED_DIM and sdxl.image_size == 32
    procs = sdxl.pipe.unet.attn_processors
    cross = [name for name in procs if name.endswith("attn2.processor")]
    assert len(cross) == 4 and all(isinstance(procs[name], IPAdapterAttnProcessor2_0) for name in cross)
    assert all(p.scale == [1.0] for p in procs.values() if isinstance(p, IPAdapterAttnProcessor2_0))
    proto = sdxl.protocol()
    assert proto["steps"] == STEPS and proto["guidance"] == 0.0 and proto["adapter_scale"] == 1.0
    assert proto["dtype"] == "float32" and proto["models"]["ip_adapter_subfolder"] == "sdxl_models"
    assert proto["models"]["sdxl"] == str(sdxl_dirs[0]) and proto["negative_image_embeds"] is None
    json.dumps(proto)
    # ATM's protocol by default
    _, ip_dir = sdxl_dirs
    weights = ip_dir / "sdxl_models" / "ip-adapter_sdxl_vit-h.safetensors"  # the file itself after '+'
    default = load_generator(f"sdxl-turbo-ip-adapter:{sdxl_dirs[0]}+{weights}", device="cpu")
    assert default.steps == 4 and default.guidance == 0.0 and default.batch_size == 8


def test_sdxl_embedding_and_seed_condition_the_image(sdxl):
    e = _embeds(2)
    a = sdxl.generate(e, seeds=[7, 7], progress=False)
    assert all(im.size == (32, 32) and im.mode == "RGB" for im in a)
    again = sdxl.generate(e, seeds=[7, 7], progress=False)
    assert all(np.array_equal(_px(x), _px(y)) for x, y in zip(a, again, strict=True))  # same seed, same image
    assert _diff(a[0], a[1]) > 2.0                      # same seed, different embedding
    reseeded = sdxl.generate(e[:1], seeds=[8], progress=False)[0]
    assert _diff(a[0], reseeded) > 2.0                  # same embedding, different seed


def test_sdxl_batch_equals_one_by_one(sdxl):
    """Each image depends only on its own embedding and seed, whatever the batch around it."""
    e, seeds = _embeds(3, seed=1), [3, 4, 5]
    batched = sdxl.generate(e, seeds=seeds, progress=False)
    alone = [sdxl.generate(e[i:i + 1], seeds=[seeds[i]], progress=False)[0] for i in range(3)]
    for x, y in zip(batched, alone, strict=True):
        assert np.abs(_px(x) - _px(y)).max() <= 2.0


def test_sdxl_img2img_start_and_strength(sdxl):
    from PIL import Image

    e = _embeds(1, seed=2).repeat(2, 1)
    starts = [Image.new("RGB", (48, 48), (255, 0, 0)), Image.new("RGB", (48, 48), (0, 0, 255))]
    low = sdxl.generate(e, seeds=[1, 1], init_images=starts, strength=0.5, progress=False)
    high = sdxl.generate(e, seeds=[1, 1], init_images=starts, strength=1.0, progress=False)
    assert all(im.size == (32, 32) for im in low + high)  # starts are resized to the generator's size
    # same embedding and seed: only the start differs, and it matters more the lower the strength
    # (through a random tiny VAE the effect is small, but far above float noise)
    assert _diff(low[0], low[1]) > 0.5
    assert _diff(low[0], low[1]) > 3 * _diff(high[0], high[1])
    with pytest.raises(ValueError, match="leaves no denoising step"):
        sdxl.generate(e, seeds=[1, 1], init_images=starts, strength=0.2, progress=False)
    with pytest.raises(ValueError, match=r"strength must be in \(0, 1\]"):
        sdxl.generate(e, seeds=[1, 1], init_images=starts, strength=1.5, progress=False)


def test_sdxl_wrong_inputs_are_clear_errors(sdxl):
    with pytest.raises(ValueError, match=f"expects {EMBED_DIM}-d image embeddings, got 10-d"):
        sdxl.generate(torch.zeros(2, 10), seeds=[0, 1], progress=False)
    with pytest.raises(ValueError, match="1 seeds for 2 embeddings"):
        sdxl.generate(_embeds(2), seeds=[0], progress=False)
    with pytest.raises(ValueError, match="NaN or Inf"):
        sdxl.generate(torch.full((1, EMBED_DIM), float("nan")), seeds=[0], progress=False)


def test_sdxl_guidance_chunking_and_slicing_keep_the_conditioning(sdxl_dirs):
    """With guidance > 1 (zero negative embedding), batch chunks of 1 and sliced self-attention, the
    embedding still conditions the image and the IP-Adapter processors survive the slicing."""
    from diffusers.models.attention_processor import IPAdapterAttnProcessor2_0, SlicedAttnProcessor

    sdxl_dir, ip_dir = sdxl_dirs
    gen = load_generator(f"sdxl-turbo-ip-adapter:{sdxl_dir}+{ip_dir}", device="cpu", steps=STEPS, guidance=3.0,
                         batch_size=1, attention_slicing=True)
    kinds = {type(p) for p in gen.pipe.unet.attn_processors.values()}
    assert kinds == {IPAdapterAttnProcessor2_0, SlicedAttnProcessor}
    assert gen.protocol()["negative_image_embeds"] == "zeros" and gen.protocol()["attention_slicing"]
    e = _embeds(2, seed=3)
    a = gen.generate(e, seeds=[5, 5], progress=False)
    assert _diff(a[0], a[1]) > 2.0
    b = gen.generate(e, seeds=[5, 5], progress=False)
    assert all(np.array_equal(_px(x), _px(y)) for x, y in zip(a, b, strict=True))


def test_cpu_offload_needs_a_gpu(sdxl_dirs):
    sdxl_dir, ip_dir = sdxl_dirs
    with pytest.raises(UserError, match="cpu_offload moves the models between the CPU and a GPU"):
        load_generator(f"sdxl-turbo-ip-adapter:{sdxl_dir}+{ip_dir}", device="cpu", cpu_offload=True)


# --------------------------------------------------------------------------------------------------
# Stable unCLIP
# --------------------------------------------------------------------------------------------------
def test_unclip_embedding_and_seed_condition_the_image(unclip):
    assert unclip.embed_dim == EMBED_DIM and unclip.image_size == 32
    proto = unclip.protocol()
    assert proto["noise_level"] == 0 and proto["steps"] == STEPS and proto["guidance"] == 10.0
    assert proto["negative_image_embeds"] == "zeros" and proto["dtype"] == "float32"
    e = _embeds(2, seed=4)
    a = unclip.generate(e, seeds=[9, 9], progress=False)
    assert all(im.size == (32, 32) and im.mode == "RGB" for im in a)
    again = unclip.generate(e, seeds=[9, 9], progress=False)
    assert all(np.array_equal(_px(x), _px(y)) for x, y in zip(a, again, strict=True))
    assert _diff(a[0], a[1]) > 2.0
    assert _diff(a[0], unclip.generate(e[:1], seeds=[10], progress=False)[0]) > 2.0
    alone = unclip.generate(e[1:], seeds=[9], progress=False)[0]
    assert np.abs(_px(alone) - _px(a[1])).max() <= 2.0


def test_unclip_wrong_inputs_are_clear_errors(unclip):
    from PIL import Image

    with pytest.raises(ValueError, match=f"expects {EMBED_DIM}-d image embeddings, got 7-d"):
        unclip.generate(torch.zeros(1, 7), seeds=[0], progress=False)
    with pytest.raises(UserError, match="takes no img2img start images"):
        unclip.generate(_embeds(1), seeds=[0], init_images=[Image.new("RGB", (32, 32))], progress=False)


# --------------------------------------------------------------------------------------------------
# CUDA: the tiny pipelines in fp16, and the real weights when local folders are named
# --------------------------------------------------------------------------------------------------
@pytest.mark.gpu
def test_tiny_pipelines_in_fp16_on_cuda(sdxl_dirs, unclip_dir):
    sdxl_dir, ip_dir = sdxl_dirs
    for spec in (f"sdxl-turbo-ip-adapter:{sdxl_dir}+{ip_dir}", f"unclip:{unclip_dir}"):
        gen = load_generator(spec, device="cuda", steps=STEPS)
        assert gen.protocol()["dtype"] == "float16" and gen.pipe.unet.device.type == "cuda"
        e = _embeds(2, seed=5)
        a = gen.generate(e, seeds=[1, 1], progress=False)
        assert all(np.isfinite(_px(im)).all() and _px(im).std() > 1 for im in a)
        assert _diff(a[0], a[1]) > 2.0
        b = gen.generate(e, seeds=[1, 1], progress=False)
        assert all(_diff(x, y) < 1.0 for x, y in zip(a, b, strict=True))


def _env_folder(name: str) -> Path:
    value = os.environ.get(name)
    if not value or not Path(value).is_dir():
        pytest.skip(f"set {name} to a local folder of the real weights to run this test")
    return Path(value)


@pytest.mark.gpu
@pytest.mark.parametrize("family", ["sdxl-turbo-ip-adapter", "unclip"])
def test_real_weights_on_cuda(family):
    """The real generators from local folders: ``NEURODECODE_SDXL_TURBO`` + ``NEURODECODE_IP_ADAPTER``,
    ``NEURODECODE_UNCLIP``; 1024-d embeddings (the OpenCLIP ViT-H-14 space) of random direction."""
    if family == "unclip":
        spec, size = f"unclip:{_env_folder('NEURODECODE_UNCLIP')}", 768
    else:
        spec = f"{family}:{_env_folder('NEURODECODE_SDXL_TURBO')}+{_env_folder('NEURODECODE_IP_ADAPTER')}"
        size = 512
    gen = load_generator(spec, device="cuda")
    assert gen.embed_dim == 1024 and gen.image_size == size and gen.protocol()["dtype"] == "float16"
    e = torch.nn.functional.normalize(_embeds(2, seed=6, dim=1024), dim=-1) * 20
    a = gen.generate(e, seeds=[0, 0], progress=False)
    assert all(im.size == (size, size) for im in a)
    assert all(_px(im).std() > 5 for im in a)  # not a blank (NaN -> black) image
    assert _diff(a[0], a[1]) > 5.0              # the embedding conditions the image
    alone = gen.generate(e[:1], seeds=[0], progress=False)[0]
    assert _diff(a[0], alone) < 2.0             # its own seed and embedding, whatever the batch
