"""Retrieval metrics and large-gallery search against brute-force computations written here."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from neurodecode.evaluation import ranking as rk
from neurodecode.evaluation import retrieval as ret
from neurodecode.evaluation import search as gal


# --------------------------------------------------------------------------------------------------
# brute force, written independently of the library
# --------------------------------------------------------------------------------------------------
def brute_kway(scores: np.ndarray, k: int, top: int, ties: str, targets=None) -> np.ndarray:
    """Per-query hit rate averaged over *every* set of k - 1 distractors (enumerated)."""
    n_q, n_c = scores.shape
    targets = np.arange(n_q) if targets is None else np.asarray(targets)
    out = np.zeros(n_q)
    for i in range(n_q):
        t = targets[i]
        others = [j for j in range(n_c) if j != t]
        vals = []
        for draw in itertools.combinations(others, k - 1):
            x = sum(scores[i, j] > scores[i, t] for j in draw)
            y = sum(scores[i, j] == scores[i, t] for j in draw)
            if ties == "pessimistic":
                vals.append(float(x + y < top))
            elif ties == "optimistic":
                vals.append(float(x < top))
            else:  # every position of the true item among the tied ones, equally likely
                vals.append(np.mean([float(x + u < top) for u in range(y + 1)]))
        out[i] = np.mean(vals)
    return out


def brute_ranks(scores: np.ndarray, ties: str) -> np.ndarray:
    ranks = []
    for i, row in enumerate(scores):
        better = np.sum(np.delete(row, i) > row[i])
        tied = np.sum(np.delete(row, i) == row[i])
        ranks.append(1 + better + {"pessimistic": tied, "optimistic": 0, "average": tied / 2}[ties])
    return np.array(ranks, dtype=float)


def brute_cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return a @ b.T


def paired(n=40, dim=16, noise=1.0, seed=0):
    rng = np.random.default_rng(seed)
    image = rng.standard_normal((n, dim)).astype(np.float32)
    brain = (image + noise * rng.standard_normal((n, dim))).astype(np.float32)
    return brain, image


# --------------------------------------------------------------------------------------------------
# exact k-way against enumeration
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("ties", ["pessimistic", "optimistic", "average"])
def test_exact_kway_equals_enumeration_with_ties(ties):
    rng = np.random.default_rng(1)
    scores = rng.integers(0, 4, size=(8, 8)).astype(np.float32)  # many ties
    for k, top in [(2, 1), (3, 1), (4, 2), (8, 1), (8, 3)]:
        got = ret.kway_hits(scores, k, tops=(top,), ties=ties)[0]
        np.testing.assert_allclose(got, brute_kway(scores, k, top, ties), atol=1e-12)


def test_exact_kway_random_scores_and_targets():
    rng = np.random.default_rng(2)
    scores = rng.standard_normal((12, 7))
    targets = rng.integers(0, 7, size=12)  # several queries per candidate
    for k, top in [(2, 1), (4, 1), (5, 3), (7, 2)]:
        got = ret.kway_hits(scores, k, tops=top, targets=targets)[0]
        np.testing.assert_allclose(got, brute_kway(scores, k, top, "pessimistic", targets), atol=1e-12)


def test_hand_built_ties_are_deterministic():
    # query 0: true score 1, one candidate better (2), one tied (1), one worse (0)
    scores = np.array([[1.0, 2.0, 1.0, 0.0],
                       [0.0, 5.0, 0.0, 0.0],
                       [3.0, 3.0, 3.0, 3.0],
                       [0.0, 0.0, 0.0, 1.0]])
    for _ in range(2):
        pess = rk.retrieval_ranks(scores, ties="pessimistic")
        np.testing.assert_array_equal(pess, [3, 1, 4, 1])
    np.testing.assert_array_equal(rk.retrieval_ranks(scores, ties="optimistic"), [2, 1, 1, 1])
    np.testing.assert_array_equal(rk.retrieval_ranks(scores, ties="average"), [2.5, 1, 2.5, 1])
    # full-set top-1: a tie is a miss (pessimistic), a hit (optimistic), 1/(t+1) on average
    full = {t: ret.kway_hits(scores, 4, ties=t)[0] for t in rk.TIES}
    np.testing.assert_allclose(full["pessimistic"], [0, 1, 0, 1])
    np.testing.assert_allclose(full["optimistic"], [0, 1, 1, 1])
    np.testing.assert_allclose(full["average"], [0, 1, 0.25, 1])


def test_ranks_equal_brute_force():
    brain, image = paired(n=30, noise=2.0)
    s = brute_cosine(brain.astype(np.float64), image.astype(np.float64))
    for ties in rk.TIES:
        np.testing.assert_allclose(rk.retrieval_ranks(s, ties=ties), brute_ranks(s, ties))
    res = ret.zero_shot_retrieval(brain, image, ks=(2,), directions=("brain_to_image",))
    s32 = rk.similarity_matrix(brain, image).numpy()
    b2i = res["inductive"]["brain_to_image"]
    assert b2i["median_rank"] == np.median(brute_ranks(s32, "pessimistic"))
    assert b2i["mean_rank"] == pytest.approx(np.mean(brute_ranks(s32, "pessimistic")))
    assert b2i["top1_full"] == pytest.approx(np.mean(brute_ranks(s32, "pessimistic") <= 1))
    assert b2i["top5_full"] == pytest.approx(np.mean(brute_ranks(s32, "pessimistic") <= 5))


# --------------------------------------------------------------------------------------------------
# perfect, random and constant decoders
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["exact", "monte_carlo"])
def test_perfect_decoder_scores_100_percent(method):
    _, image = paired(n=60)
    res = ret.zero_shot_retrieval(image * 3.0, image, ks=(2, 4, 10, 50), method=method, n_draws=5)
    for d in ret.DIRECTIONS:
        m = res["inductive"][d]
        for key, value in m.items():
            if key.startswith("top"):
                assert value == 1.0, (d, key)
        assert m["median_rank"] == 1.0 and m["mean_rank"] == 1.0


def test_random_decoder_is_at_chance():
    from neurodecode.evaluation.stats import bootstrap_ci

    rng = np.random.default_rng(3)
    brain = rng.standard_normal((200, 32))
    image = rng.standard_normal((200, 32))
    res = ret.zero_shot_retrieval(brain, image, ks=(2, 10, 50), per_item=True)
    items = res["per_item"]["inductive"]["brain_to_image"]
    for key, chance in [("top1_2way", 0.5), ("top1_10way", 0.1), ("top5_10way", 0.5), ("top1_50way", 0.02)]:
        ci = bootstrap_ci(items[key], confidence=0.99, n_resamples=2000, seed=0)
        assert ci["low"] <= chance <= ci["high"], (key, ci)
    assert abs(res["inductive"]["brain_to_image"]["mean_rank"] - 100.5) < 15


def test_constant_decoder_tie_policies():
    _, image = paired(n=20)
    brain = np.zeros((20, 16))  # a decoder that outputs nothing: cosine 0 to every image, all ties
    res = {t: ret.zero_shot_retrieval(brain, image, ks=(2, 4, 10), ties=t, directions=("brain_to_image",))
           for t in rk.TIES}
    for k in (2, 4, 10):
        assert res["pessimistic"]["inductive"]["brain_to_image"][f"top1_{k}way"] == 0.0
        assert res["optimistic"]["inductive"]["brain_to_image"][f"top1_{k}way"] == 1.0
        assert res["average"]["inductive"]["brain_to_image"][f"top1_{k}way"] == pytest.approx(1 / k)
    assert res["average"]["inductive"]["brain_to_image"]["mean_rank"] == pytest.approx(10.5)


# --------------------------------------------------------------------------------------------------
# Monte Carlo: seeded, reproducible, agrees with the closed form
# --------------------------------------------------------------------------------------------------
def test_monte_carlo_is_reproducible_and_seeded():
    brain, image = paired(n=50, noise=3.0)
    s = rk.similarity_matrix(brain, image)
    a = ret.kway_hits(s, 10, tops=(1, 5), method="monte_carlo", n_draws=30, seed=7)
    b = ret.kway_hits(s, 10, tops=(1, 5), method="monte_carlo", n_draws=30, seed=7)
    c = ret.kway_hits(s, 10, tops=(1, 5), method="monte_carlo", n_draws=30, seed=8)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert np.all(a[1] >= a[0])  # the same draws serve top-1 and top-5
    # a k's numbers do not depend on which other ks are computed
    r1 = ret.zero_shot_retrieval(brain, image, ks=(10,), method="monte_carlo", n_draws=30, seed=7)
    r2 = ret.zero_shot_retrieval(brain, image, ks=(2, 10, 50), method="monte_carlo", n_draws=30, seed=7)
    assert r1["inductive"]["brain_to_image"]["top1_10way"] == r2["inductive"]["brain_to_image"]["top1_10way"]
    assert r1["inductive"]["brain_to_image"]["top1_10way"] == pytest.approx(a[0].mean())
    assert r2["protocol"]["seed"] == 7 and r2["protocol"]["n_draws"] == 30


@pytest.mark.parametrize("protocol", ["per_query", "subset"])
@pytest.mark.parametrize("ties", ["pessimistic", "average"])
def test_monte_carlo_agrees_with_closed_form(protocol, ties):
    brain, image = paired(n=60, noise=2.5, seed=5)
    s = rk.similarity_matrix(brain, image).numpy()
    s = np.round(s * 8) / 8  # coarse scores: plenty of ties
    n_draws = 1000 if protocol == "per_query" else 3000
    for k, top in [(2, 1), (10, 1), (10, 5), (30, 1)]:
        exact = ret.kway_accuracy(s, k, top=top, ties=ties)
        mc = ret.kway_accuracy(s, k, top=top, ties=ties, method="monte_carlo", n_draws=n_draws, seed=3,
                               protocol=protocol)
        n_trials = n_draws * (s.shape[0] if protocol == "per_query" else k)
        se = np.sqrt(max(exact * (1 - exact), 1e-3) / n_trials)
        assert abs(mc - exact) < 5 * se + 1e-9, (k, top, mc, exact)
    # per query too: each query's Monte-Carlo rate is close to its own closed-form probability
    if protocol == "per_query":
        exact_q = ret.kway_hits(s, 10, tops=1, ties=ties)[0]
        mc_q = ret.kway_hits(s, 10, tops=1, ties=ties, method="monte_carlo", n_draws=n_draws, seed=3)[0]
        assert np.max(np.abs(mc_q - exact_q)) < 5 * 0.5 / np.sqrt(n_draws)


def test_subset_protocol_needs_one_to_one_pairing():
    s = np.random.default_rng(0).standard_normal((10, 5))
    with pytest.raises(ValueError, match="one-to-one"):
        ret.kway_hits(s, 3, targets=np.arange(10) % 5, method="monte_carlo", protocol="subset")


# --------------------------------------------------------------------------------------------------
# directions, targets, similarity, transductive CSLS, validation
# --------------------------------------------------------------------------------------------------
def test_image_to_brain_is_the_transpose():
    brain, image = paired(n=12, noise=2.0)
    res = ret.zero_shot_retrieval(brain, image, ks=(2, 4), similarity="dot")
    s = brain.astype(np.float64) @ image.astype(np.float64).T
    i2b = res["inductive"]["image_to_brain"]
    assert i2b["top1_4way"] == pytest.approx(brute_kway(s.T, 4, 1, "pessimistic").mean(), abs=1e-5)
    np.testing.assert_allclose(i2b["mean_rank"], brute_ranks(s.T, "pessimistic").mean(), atol=1e-5)
    assert res["protocol"]["similarity"] == "dot"
    # a permutation of the image rows with matching targets gives the same numbers
    perm = np.random.default_rng(0).permutation(12)
    res_p = ret.zero_shot_retrieval(brain, image[perm], targets=np.argsort(perm), ks=(2, 4), similarity="dot")
    for d in ret.DIRECTIONS:
        for key, value in res["inductive"][d].items():
            assert res_p["inductive"][d][key] == pytest.approx(value)


def test_many_trials_per_image():
    rng = np.random.default_rng(6)
    image = rng.standard_normal((10, 8))
    targets = np.repeat(np.arange(10), 4)
    brain = image[targets] + 0.5 * rng.standard_normal((40, 8))
    res = ret.zero_shot_retrieval(brain, image, targets=targets, ks=(2, 5), directions=("brain_to_image",))
    s = brute_cosine(brain, image)
    assert res["inductive"]["brain_to_image"]["top1_5way"] == pytest.approx(
        brute_kway(s, 5, 1, "pessimistic", targets).mean())
    assert res["protocol"]["skipped"] == []
    with pytest.raises(ValueError, match="one-to-one"):
        ret.zero_shot_retrieval(brain, image, targets=targets, ks=(2,))


def test_cosine_is_scale_invariant_and_dot_is_not():
    brain, image = paired(n=30, noise=2.0)
    scale = np.linspace(0.1, 10, 30)[:, None].astype(np.float32)
    cos_a = ret.zero_shot_retrieval(brain, image, ks=(10,), directions=("image_to_brain",))
    cos_b = ret.zero_shot_retrieval(brain * scale, image, ks=(10,), directions=("image_to_brain",))
    dot_a = ret.zero_shot_retrieval(brain, image, ks=(10,), similarity="dot", directions=("image_to_brain",))
    dot_b = ret.zero_shot_retrieval(brain * scale, image, ks=(10,), similarity="dot",
                                    directions=("image_to_brain",))
    d = "image_to_brain"
    assert cos_a["inductive"][d] == pytest.approx(cos_b["inductive"][d])
    assert dot_a["inductive"][d] != pytest.approx(dot_b["inductive"][d])


def test_csls_matches_formula_and_is_reported_apart():
    brain, image = paired(n=30, noise=2.0)
    s = brute_cosine(brain.astype(np.float64), image.astype(np.float64))
    k = 5
    r_c = np.sort(s, axis=1)[:, -k:].mean(axis=1)
    r_q = np.sort(s, axis=0)[-k:, :].mean(axis=0)
    expected = 2 * s - r_c[:, None] - r_q[None, :]
    np.testing.assert_allclose(rk.csls_scores(s, k=k).numpy(), expected, atol=1e-12)
    res = ret.zero_shot_retrieval(brain, image, ks=(2, 10), csls_k=k)
    assert res["transductive"]["method"] == "csls" and "transductive" in res["transductive"]["note"]
    c = rk.csls_scores(rk.similarity_matrix(brain, image), k=k)
    assert res["transductive"]["image_to_brain"]["top1_10way"] == pytest.approx(ret.kway_accuracy(c.T, 10))
    flat = ret.flatten_metrics(res)
    assert flat["brain_to_image/top1_2way"] == res["inductive"]["brain_to_image"]["top1_2way"]
    assert flat["transductive/brain_to_image/top1_2way"] == res["transductive"]["brain_to_image"]["top1_2way"]
    assert not any(key.startswith("brain_to_image") and "transductive" in key for key in flat)
    assert "transductive" not in ret.zero_shot_retrieval(brain, image, ks=(2,))


def test_protocol_records_settings_and_skips_large_k():
    brain, image = paired(n=30)
    res = ret.zero_shot_retrieval(torch.from_numpy(brain), torch.from_numpy(image), ks=(2, 50), tops=(1, 5))
    p = res["protocol"]
    assert p["method"] == "exact" and p["seed"] is None and p["ks"] == [2, 50]
    assert any("k=50" in s for s in p["skipped"])
    assert "top1_50way" not in res["inductive"]["brain_to_image"]
    assert "top5_2way" not in res["inductive"]["brain_to_image"]  # top-n only for n <= k
    assert p["chance"]["top5_50way"] == 0.1


def test_bad_inputs_have_clear_errors():
    brain, image = paired(n=10)
    bad = brain.copy()
    bad[3, 2] = np.nan
    with pytest.raises(ValueError, match=r"brain contains 1 non-finite value.*\(3, 2\)"):
        ret.zero_shot_retrieval(bad, image)
    with pytest.raises(ValueError, match="same embedding size"):
        ret.zero_shot_retrieval(brain, image[:, :5])
    with pytest.raises(ValueError, match="pass targets="):
        ret.zero_shot_retrieval(brain, image[:5])
    with pytest.raises(ValueError, match="'ties'"):
        ret.zero_shot_retrieval(brain, image, ties="random")
    with pytest.raises(ValueError, match="k >= 2"):
        ret.kway_accuracy(rk.similarity_matrix(brain, image), 1)
    with pytest.raises(ValueError, match="larger than the number of candidates"):
        ret.kway_accuracy(rk.similarity_matrix(brain, image), 11)


# --------------------------------------------------------------------------------------------------
# large-gallery search
# --------------------------------------------------------------------------------------------------
def brute_topk(q: np.ndarray, g: np.ndarray, k: int, cosine: bool = True):
    s = brute_cosine(q, g) if cosine else q @ g.T
    idx = np.argsort(-s, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(s, idx, axis=1), idx


@pytest.fixture()
def gallery_data():
    rng = np.random.default_rng(7)
    return rng.standard_normal((13, 24)).astype(np.float32), rng.standard_normal((300, 24)).astype(np.float32)


@pytest.mark.parametrize("chunk_size", [1, 7, 64, 300])
@pytest.mark.parametrize("similarity", ["cosine", "dot"])
def test_search_gallery_equals_brute_force(gallery_data, chunk_size, similarity):
    q, g = gallery_data
    scores, idx = gal.search_gallery(q, g, k=6, chunk_size=chunk_size, similarity=similarity)
    bs, bi = brute_topk(q.astype(np.float64), g.astype(np.float64), 6, cosine=similarity == "cosine")
    np.testing.assert_array_equal(idx.numpy(), bi)
    np.testing.assert_allclose(scores.numpy(), bs, rtol=1e-5, atol=1e-5)
    assert scores.dtype == torch.float32 and idx.dtype == torch.int64


def test_search_gallery_sources(gallery_data, tmp_path):
    import h5py

    q, g = gallery_data
    _, bi = brute_topk(q.astype(np.float64), g.astype(np.float64), 5)
    path = tmp_path / "gallery.npy"
    np.save(path, g)
    with h5py.File(tmp_path / "gallery.h5", "w") as f:
        f.create_dataset("emb", data=g, chunks=(100, 24))
    sources = {
        "numpy": g,
        "tensor": torch.from_numpy(g),
        "memmap": np.load(path, mmap_mode="r"),
        "npy path": path,
        "npy str": str(path),
        "h5 path": tmp_path / "gallery.h5",
    }
    for name, src in sources.items():
        kw = {"key": "emb"} if name == "h5 path" else {}
        _, idx = gal.search_gallery(q, src, k=5, chunk_size=99, **kw)
        np.testing.assert_array_equal(idx.numpy(), bi, err_msg=name)
    with h5py.File(tmp_path / "gallery.h5", "r") as f:
        _, idx = gal.search_gallery(torch.from_numpy(q), f["emb"], k=5, chunk_size=256, prefetch=False)
    np.testing.assert_array_equal(idx.numpy(), bi)
    # the .npy reader streams rows with plain reads and matches numpy exactly
    with gal.open_gallery(path) as src:
        np.testing.assert_array_equal(src.read(17, 233).numpy(), g[17:233])
        np.testing.assert_array_equal(src.read_rows(np.array([5, 2, 5, 299])).numpy(), g[[5, 2, 5, 299]])
    # the auto chunk size follows the memory budget
    assert gal.auto_chunk_size(10**6, 1024, 1000, max_memory_mb=256) < 10**6
    _, idx = gal.search_gallery(q, g, k=5, max_memory_mb=0.05)
    np.testing.assert_array_equal(idx.numpy(), bi)


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_search_gallery_low_precision(gallery_data, dtype):
    q, g = gallery_data
    bs, bi = brute_topk(q.astype(np.float64), g.astype(np.float64), 10)
    scores, idx = gal.search_gallery(q, g, k=10, chunk_size=200, dtype=dtype)
    assert scores.dtype == torch.float32
    np.testing.assert_allclose(scores.numpy(), bs, atol=0.02)
    overlap = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(idx.numpy(), bi, strict=True)])
    assert overlap > 0.8


def test_search_gallery_k_equals_size_and_ties():
    g = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [2.0, 0.0]], dtype=np.float32)
    scores, idx = gal.search_gallery(np.array([[1.0, 0.0]]), g, k=4, chunk_size=3)
    np.testing.assert_array_equal(idx.numpy(), [[0, 1, 3, 2]])  # tied scores ordered by index
    np.testing.assert_allclose(scores.numpy(), [[1, 1, 1, 0]])


def test_search_gallery_errors(gallery_data, tmp_path):
    q, g = gallery_data
    with pytest.raises(ValueError, match="k must be between 1 and the gallery size 300"):
        gal.search_gallery(q, g, k=301)
    bad = g.copy()
    bad[217, 3] = np.inf
    with pytest.raises(ValueError, match="gallery row 217"):
        gal.search_gallery(q, bad, k=3, chunk_size=100)
    with pytest.raises(ValueError, match="size 10"):
        gal.search_gallery(q[:, :10], g, k=3)
    np.save(tmp_path / "f.npy", np.asfortranarray(g))
    with pytest.raises(ValueError, match="Fortran"):
        gal.search_gallery(q, tmp_path / "f.npy", k=3)
    np.save(tmp_path / "o.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(TypeError, match="never unpickled"):
        gal.search_gallery(q, tmp_path / "o.npy", k=3)
    with pytest.raises(ValueError, match="key="):
        import h5py

        with h5py.File(tmp_path / "x.h5", "w") as f:
            f["emb"] = g
        gal.search_gallery(q, tmp_path / "x.h5", k=3)
    with pytest.raises(ValueError, match="'dtype'"):
        gal.search_gallery(q, g, k=3, dtype="int8")


def test_gallery_ranks_equal_brute_force(gallery_data):
    q, g = gallery_data
    rng = np.random.default_rng(8)
    pos_idx = rng.integers(0, 300, size=13)
    positives = g[pos_idx] + 0.3 * rng.standard_normal((13, 24)).astype(np.float32)
    # true images given as embeddings; the gallery is all distractors
    s_pos = np.sum(brute_cosine(q, positives) * np.eye(13), axis=1)
    expected = 1 + np.sum(brute_cosine(q, g) > s_pos[:, None] + 1e-6, axis=1)
    ranks = gal.gallery_ranks(q, g, positives=positives, chunk_size=64)
    np.testing.assert_allclose(ranks, expected)
    # true images given as gallery rows: that row is not its own distractor
    s = brute_cosine(q, g)
    s_true = s[np.arange(13), pos_idx]
    mask = np.ones_like(s, dtype=bool)
    mask[np.arange(13), pos_idx] = False
    expected = 1 + np.sum((s > s_true[:, None] + 1e-6) & mask, axis=1)
    np.testing.assert_allclose(gal.gallery_ranks(q, g, positive_indices=pos_idx, chunk_size=100), expected)
    res = gal.gallery_retrieval(q, g, positive_indices=pos_idx, tops=(1, 5), chunk_size=100)
    assert res["top5"] == pytest.approx(np.mean(expected <= 5)) and res["n_distractors"] == 299
    # a query equal to its true image ranks first against any gallery
    perfect = gal.gallery_ranks(g[pos_idx], g, positive_indices=pos_idx)
    np.testing.assert_array_equal(perfect, 1)


@pytest.mark.gpu
def test_search_gallery_on_cuda_matches_cpu(gallery_data):
    q, g = gallery_data
    cpu_s, cpu_i = gal.search_gallery(q, g, k=5, chunk_size=64)
    for gallery in (g, torch.from_numpy(g).cuda()):
        s, i = gal.search_gallery(torch.from_numpy(q).cuda(), gallery, k=5, chunk_size=64)
        assert s.device.type == "cuda"
        np.testing.assert_array_equal(i.cpu().numpy(), cpu_i.numpy())
        np.testing.assert_allclose(s.cpu().numpy(), cpu_s.numpy(), atol=1e-4)


def test_rank_counts_all_matches_rank_counts_for_every_target():
    rng = np.random.default_rng(3)
    s = rng.integers(0, 4, size=(6, 9)).astype(np.float32)  # many ties
    better_all, tied_all = rk.rank_counts_all(s)
    for j in range(s.shape[1]):
        better, tied = rk.rank_counts(s, np.full(s.shape[0], j))
        np.testing.assert_array_equal(better_all[:, j], better)
        np.testing.assert_array_equal(tied_all[:, j], tied)
    # a single draw's hits follow the same tie conventions as the closed form
    b, t = np.array([0, 1, 0]), np.array([0, 0, 2])
    np.testing.assert_array_equal(rk.hits_from_draw_counts(b, t, 1, "pessimistic"), [1, 0, 0])
    np.testing.assert_array_equal(rk.hits_from_draw_counts(b, t, 1, "optimistic"), [1, 0, 1])
    np.testing.assert_allclose(rk.hits_from_draw_counts(b, t, 1, "average"), [1, 0, 1 / 3])


def test_zero_shot_retrieval_metric_with_repeated_images_and_padding():
    # rows that show the same image (targets) count it once as a candidate; repeated ids (a
    # distributed sampler's padding) are dropped: the numbers equal the functional ones on unique data
    from neurodecode.evaluation.retrieval import zero_shot_retrieval
    from neurodecode.evaluation.retrieval_metric import ZeroShotRetrieval

    g = torch.Generator().manual_seed(0)
    images = torch.randn(6, 8, generator=g)
    stim = torch.tensor([0, 1, 2, 3, 4, 5, 0, 1, 2, 3, 4, 5])
    brain = images[stim] + 0.9 * torch.randn(12, 8, generator=g)
    ids = torch.arange(12)
    metric = ZeroShotRetrieval(ks=[6], tops=[1, 5], full=False, directions=("brain_to_image",))
    metric.update(brain[:7], images[stim[:7]], ids=ids[:7], targets=stim[:7])
    metric.update(brain[5:], images[stim[5:]], ids=ids[5:], targets=stim[5:])  # rows 5 and 6 twice
    metric.update(torch.zeros(0, 8), torch.zeros(0, 8), ids=ids[:0], targets=stim[:0])  # a rank with no rows
    flat = metric.compute()
    ref = zero_shot_retrieval(brain, images, targets=stim, ks=[6], tops=[1, 5], full=False,
                              directions=("brain_to_image",))["inductive"]["brain_to_image"]
    assert float(flat["brain_to_image/top1_6way"]) == pytest.approx(ref["top1_6way"])
    assert float(flat["brain_to_image/top5_6way"]) == pytest.approx(ref["top5_6way"])
    with pytest.raises(ValueError, match="targets in every update"):
        metric.update(brain[:2], images[stim[:2]], ids=ids[:2])
