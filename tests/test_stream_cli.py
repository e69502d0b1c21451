"""``neurodecode stream`` end to end on the in-process replay, and the pieces it is made of: the machine-only
LSL configuration, the causal filter, the sample buffer's timeline, the gallery, the replay's pace and the
live-reconstruction worker."""

from __future__ import annotations

import json
import sys
import time

import mne
import numpy as np
import pytest
from test_stream_common import model_for_raw, random_gallery, recording  # noqa: F401

from neurodecode.cli.main import main
from neurodecode.streaming.outputs import read_jsonl


@pytest.fixture(scope="module")
def cli_setup(recording, tmp_path_factory):  # noqa: F811
    tmp = tmp_path_factory.mktemp("cli")
    model = model_for_raw(tmp / "model", recording)
    g = random_gallery(recording)
    np.savez(tmp / "gallery.npz", stimulus_id=g.ids, embeddings=g.embeddings, concept=g.concepts)
    return recording, model, tmp / "gallery.npz"


def _stream(*args):
    return main(["stream", *map(str, args), "--no-live", "--quiet"])


def test_help_explains_sources_modes_and_an_example(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["stream", "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for needle in ("file:PATH", "player:PATH", "lsl:NAME", "ResolveScope = machine", "event ", "sliding",
                   "neurodecode demo --quick --out demo_out", "simulate --continuous --like demo_out/sim_eeg",
                   "--source file:live_rec/sub-01_task-rsvp_raw.fif", "causally"):
        assert needle in text, needle


def test_cli_decodes_a_replay_and_writes_every_decision(cli_setup, tmp_path, capsys):
    rec, model, gallery = cli_setup
    assert _stream("--model", model, "--source", f"file:{rec}", "--speed", "inf", "--gallery", gallery,
                   "--out", tmp_path / "a", "--k", "3") == 0
    out = capsys.readouterr().out
    assert "24 decisions" in out and "latency p50" in out
    rows = read_jsonl(tmp_path / "a" / "decisions.jsonl")
    assert len(rows) == 24
    assert {"event_time", "topk", "scores", "latency_ms", "stimulus_id", "rank"} <= set(rows[0])
    assert all(len(r["topk"]) == 3 and r["scores"] == sorted(r["scores"], reverse=True) for r in rows)
    assert np.allclose(np.diff([r["event_time"] for r in rows])[:4], 0.2)  # 5 images per second
    summary = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert summary["stats"]["decisions"] == 24 and summary["stats"]["samples_dropped"] == 0
    assert summary["subject"].startswith("training subject 01")
    assert summary["preprocessing"]["window_samples"] == 50
    # the stimulus channel (codes mapped by the event_map.tsv next to the recording) gives the same decisions
    assert _stream("--model", model, "--source", rec, "--speed", "inf", "--gallery", gallery, "--out",
                   tmp_path / "b", "--k", "3", "--events", "stim") == 0
    rows_b = read_jsonl(tmp_path / "b" / "decisions.jsonl")
    assert [(r["stimulus_id"], r["topk"], r["event_sample"]) for r in rows_b] == \
        [(r["stimulus_id"], r["topk"], r["event_sample"]) for r in rows]
    # an earlier run's decisions are never overwritten silently
    capsys.readouterr()
    assert _stream("--model", model, "--source", rec, "--gallery", gallery, "--out", tmp_path / "a") == 2
    assert "already holds 24 line(s)" in capsys.readouterr().err


def test_cli_sliding_windows_and_concepts(cli_setup, tmp_path):
    rec, model, gallery = cli_setup
    assert _stream("--model", model, "--source", rec, "--speed", "inf", "--gallery", gallery, "--out", tmp_path,
                   "--mode", "sliding", "--step", "0.5", "--by", "concept", "--k", "2") == 0
    rows = read_jsonl(tmp_path / "decisions.jsonl")
    n = mne.io.read_raw_fif(rec, verbose="ERROR").n_times
    assert len(rows) == (n - 50) // 50 + 1
    assert np.allclose(np.diff([r["event_time"] for r in rows]), 0.5)
    concepts = set(np.load(gallery)["concept"].tolist())
    assert all(set(r["topk"]) <= concepts and "stimulus_id" not in r for r in rows)


@pytest.mark.parametrize("args, message", [
    (["--source", "nope:thing"], "not a source"),
    (["--mode", "sliding", "--width", "0.3"], "decodes windows of 0.5 s"),
    (["--events", "stim:NOPE"], "no stimulus channel 'NOPE'"),
    (["--subject", "07"], "not a training subject"),
    (["--gallery", "missing.npz"], "not found"),
])
def test_cli_errors_name_the_option(cli_setup, tmp_path, capsys, args, message):
    rec, model, gallery = cli_setup
    opts = {"--model": model, "--source": f"file:{rec}", "--gallery": gallery, "--out": tmp_path}
    for k, v in zip(args[::2], args[1::2], strict=True):
        opts[k] = tmp_path / v if k == "--gallery" else v
    assert _stream(*[x for kv in opts.items() for x in kv]) == 2
    assert message in capsys.readouterr().err
    assert main(["stream", "--model", str(tmp_path / "none"), "--source", str(rec), "--out", str(tmp_path)]) == 2


def test_a_muse_csv_recording_replays_with_its_marker_column(tmp_path, capsys):
    from test_stream_common import export_tiny

    sfreq, n = 256.0, 256 * 12
    rng = np.random.default_rng(0)
    t = np.arange(n) / sfreq
    eeg = rng.standard_normal((n, 4)) * 10.0  # µV, as Muse logs them
    marker = np.zeros(n)
    onsets = np.arange(256, n - 256, 128)
    marker[onsets] = np.where(np.arange(len(onsets)) % 2, 2, 1)
    lines = ["timestamps,TP9,AF7,AF8,TP10,Right AUX,Marker0"]
    lines += [f"{1.6e9 + t[i]:.6f},{','.join(f'{v:.4f}' for v in eeg[i])},0.0,{marker[i]:g}" for i in range(n)]
    (tmp_path / "rec.csv").write_text("\n".join(lines) + "\n")
    model = export_tiny(tmp_path / "model", channels=["TP9", "AF7", "AF8", "TP10"], sfreq=sfreq, tmin=0.0, n_times=64,
                        mean=np.zeros(4), std=np.full(4, 1e-5))
    np.savez(tmp_path / "g.npz", stimulus_id=np.array(["face", "house"]), embeddings=rng.standard_normal((2, 16)))
    assert _stream("--model", model, "--source", f"file:{tmp_path / 'rec.csv'}", "--speed", "inf", "--gallery",
                   tmp_path / "g.npz", "--event-map", "1=face,2=house", "--out", tmp_path / "out") == 0
    rows = read_jsonl(tmp_path / "out" / "decisions.jsonl")
    assert [r["stimulus_id"] for r in rows] == ["face", "house"] * (len(onsets) // 2) + ["face"] * (len(onsets) % 2)
    assert [r["event_sample"] for r in rows] == onsets.tolist()  # the marker column, sample-exact
    assert all(0 < r["rank"] <= 2 for r in rows)


def test_live_reconstruction_in_the_background(cli_setup, tmp_path):
    import torch
    from safetensors.torch import save_file

    from neurodecode.reconstruction.demo_generator import (
        DemoDenoiser,
        default_scheduler_config,
        save_pretrained,
    )
    from neurodecode.reconstruction.prior import Prior

    rec, model, gallery = cli_setup
    torch.manual_seed(0)
    prior = Prior("aligner", brain_dim=16, target_dim=6)
    (tmp_path / "prior").mkdir()
    save_file({k: v.contiguous() for k, v in prior.state_dict().items()}, str(tmp_path / "prior" / "model.safetensors"))
    (tmp_path / "prior" / "config.json").write_text(json.dumps({"format": "neurodecode-prior", "format_version": 1,
                                                                "prior": prior.get_config()}))
    den = DemoDenoiser(6, image_size=16, block_out_channels=[8, 16], attention_levels=[False, True], time_embed_dim=32,
                       cond_hidden=16, norm_num_groups=4, attention_head_dim=8)
    gen = save_pretrained(den, tmp_path / "gen", scheduler=default_scheduler_config(), sampling={"steps": 2},
                          teacher={"spec": "test:features"}, output_size=32)
    assert _stream("--model", model, "--source", rec, "--speed", "inf", "--gallery", gallery, "--out",
                   tmp_path / "out", "--prior", tmp_path / "prior", "--generator", f"demo:{gen}",
                   "--recon-queue", "2") == 0
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())["reconstruction"]
    assert summary["error"] is None and summary["drawn"] >= 1
    assert summary["drawn"] + summary["dropped_oldest"] + summary["left_unfinished"] == 24
    thumbs = sorted((tmp_path / "out" / "reconstructions").glob("*.png"))
    assert len(thumbs) == summary["drawn"] and len(read_jsonl(tmp_path / "out" / "reconstructions.jsonl")) == len(thumbs)


def test_the_worker_never_blocks_and_drops_the_oldest(tmp_path):
    from PIL import Image

    from neurodecode.streaming.decoder import Decision
    from neurodecode.streaming.recon_worker import ReconstructionWorker

    def make():
        def draw(emb, seed):
            time.sleep(0.05)
            return Image.new("RGB", (256, 256), (int(emb[0]) % 255, 0, 0))
        return draw

    w = ReconstructionWorker(make, tmp_path, maxsize=2, thumbnail=64)
    time.sleep(0.05)
    t0 = time.perf_counter()
    for i in range(10):
        w.submit(Decision(i, 0.0, 0, [f"s{i}"], [1.0], 1.0, "event", embedding=np.full(4, float(i))))
    assert time.perf_counter() - t0 < 0.02  # submitting never waits for drawing
    res = w.close()
    assert res["dropped_oldest"] >= 6 and res["drawn"] + res["dropped_oldest"] == 10
    names = sorted(p.name for p in (tmp_path / "reconstructions").glob("*.png"))
    assert names[-1].startswith("000009_")  # the latest is drawn
    assert Image.open(tmp_path / "reconstructions" / names[-1]).size == (64, 64)


# --------------------------------------------------------------------------------------------------
# the pieces
# --------------------------------------------------------------------------------------------------
def test_machine_only_lsl_config(tmp_path, monkeypatch):
    from neurodecode.streaming import lslconfig

    path = lslconfig.write_lsl_config(tmp_path / "lsl_api.cfg")
    text = path.read_text()
    assert "[multicast]\nResolveScope = machine" in text and "[ports]\nIPv6 = disable" in text
    assert "ListenAddress = 127.0.0.1" in text and "#" not in text  # liblsl's reader knows ';' comments only
    keys = [line.split("=")[0].strip() for line in text.splitlines() if "=" in line]
    assert len(keys) == len(set(keys))  # liblsl throws the whole file away on a repeated key
    assert lslconfig.is_machine_only(path) and not lslconfig.is_machine_only(tmp_path / "none.cfg")
    monkeypatch.delenv(lslconfig.ENV_VAR, raising=False)
    for name in ("mne_lsl.lsl", "pylsl"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    got = lslconfig.use_machine_only(tmp_path / "x" / "cfg")
    assert got == tmp_path / "x" / "cfg" and lslconfig.os.environ[lslconfig.ENV_VAR] == str(got)
    # liblsl already loaded with another configuration: refuse, it could reach the network
    monkeypatch.setitem(sys.modules, "pylsl", object())
    monkeypatch.setenv(lslconfig.ENV_VAR, str(tmp_path / "site.cfg"))
    with pytest.raises(RuntimeError, match="before the machine-only LSL configuration"):
        lslconfig.use_machine_only()


def test_an_lsl_source_that_drops_reconnects_and_says_so():
    from neurodecode.streaming.lsl import LSLSource

    class Stream:  # stands for a StreamLSL whose connection MNE-LSL dropped, then a fresh one
        def __init__(self, connected):
            self.connected = connected

    src = LSLSource("amp")
    src._stream = Stream(False)
    attempts = []

    def connect():
        attempts.append(time.perf_counter())
        src._stream = Stream(len(attempts) > 1)  # the first attempt fails, the second succeeds
        if len(attempts) == 1:
            src._stream = None

    src._connect = connect
    for _ in range(3):
        src._last_attempt = 0.0  # (attempts are once a second; do not wait for it here)
        src.read(timeout=0.0)
    kinds = [k for k, _ in src.drain_messages()]
    assert kinds == ["disconnect", "reconnect"] and len(attempts) == 2
    src.read(timeout=0.0)
    assert src.drain_messages() == []  # connected: nothing more to say


def test_causal_filter_state_survives_any_chunking():
    from scipy.signal import sosfilt, sosfilt_zi

    from neurodecode.streaming.online import CausalFilter

    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 2000)) + 5.0
    whole = CausalFilter(1.0, 30.0, 250.0)(x)
    f = CausalFilter(1.0, 30.0, 250.0)
    cuts = np.sort(rng.choice(np.arange(1, 2000), 40, replace=False))
    pieces = [f(p) for p in np.split(x, cuts, axis=1)]
    np.testing.assert_allclose(np.concatenate(pieces, axis=1), whole, atol=1e-12)
    ref = sosfilt(f.sos, x, axis=-1, zi=sosfilt_zi(f.sos)[:, None, :] * x[None, :, :1])[0]
    np.testing.assert_allclose(whole, ref, atol=1e-12)  # started in the first sample's steady state
    # so the 5.0 offset makes no transient: the same as the signal minus its first sample, from rest
    np.testing.assert_allclose(whole, sosfilt(f.sos, x - x[:, :1], axis=-1), atol=1e-9)
    assert abs(sosfilt(f.sos, x, axis=-1)[:, :20]).max() > 2 * abs(whole[:, :20]).max()
    assert 1.0 < f.group_delay_ms() < 100.0
    with pytest.raises(ValueError, match="outside"):
        CausalFilter(1.0, 200.0, 250.0)


def test_buffer_timeline_gaps_clock_jumps_and_locate():
    from neurodecode.streaming.buffer import SampleBuffer, stim_onsets

    b = SampleBuffer(1, 300, 100.0, speed=1.0)
    ts = np.arange(200) / 100.0
    b.append(ts[None, :], ts, ts + 0.01)
    assert b.locate(0.5) == ("ok", 50) and b.locate(2.5)[0] == "future"
    # a gap: 1 s of timestamps missing, and the samples came after a 1 s pause
    (j,) = b.append(np.zeros((1, 50)), 3.0 + np.arange(50) / 100.0, 3.01 + np.arange(50) / 100.0)
    assert j.kind == "gap" and j.index == 200 and abs(j.seconds - 1.0) < 1e-9
    assert b.locate(2.5)[0] == "gap" and b.locate(3.1) == ("ok", 210)
    assert b.gap_inside(190, 210) is j and b.gap_inside(0, 200) is None
    # a clock jump: +10 s on the timestamps while samples arrive at their pace
    (c,) = b.append(np.zeros((1, 50)), 13.5 + np.arange(50) / 100.0, 3.51 + np.arange(50) / 100.0)
    assert c.kind == "clock" and b.locate(13.6) == ("ok", 260)
    # the ring buffer wrapped: old samples are gone
    assert b.first == 0 and b.available(0, 10) == "ok"
    b.append(np.zeros((1, 100)), 14.0 + np.arange(100) / 100.0, 4.01 + np.arange(100) / 100.0)
    assert b.available(0, 10) == "lost" and b.locate(0.5)[0] == "lost"
    np.testing.assert_array_equal(b.window(150, 160)[0], ts[150:160])
    assert stim_onsets(np.array([3, 3, 0, 0, 5, 5, 7, 0]), previous=3).tolist() == [4, 6]


def test_gallery_topk_by_stimulus_and_concept():
    from neurodecode.streaming.gallery import Gallery

    g = Gallery(np.array(["a1", "a2", "b1"]), np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]),
                np.array(["a", "a", "b"]), "test")
    names, scores, all_scores = g.topk(np.array([[1.0, 0.1]]), 2)
    assert names == [["a1", "b1"]] and np.allclose(scores[0, 0], 1.0 / np.sqrt(1.01), atol=1e-6)
    names, scores, _ = g.topk(np.array([[0.0, 1.0]]), 2, by="concept")
    assert names == [["a", "b"]] and np.isclose(scores[0, 0], 1.0)
    assert g.position("b1", "concept") == 1 and g.position("zz") is None


def test_replay_keeps_its_pace_and_counts_what_a_slow_reader_loses(recording):  # noqa: F811
    from neurodecode.streaming.sources import ReplaySource

    raw = mne.io.read_raw_fif(recording, preload=True, verbose="ERROR").crop(tmax=2.0)
    src = ReplaySource(raw, speed=40.0).open()
    t0, got = time.perf_counter(), 0
    while not src.finished:
        chunks, _ = src.read(0.01)
        got += sum(c.n for c in chunks)
    assert got == raw.n_times and 0.045 < time.perf_counter() - t0 < 0.5  # 2 s at 40x: 50 ms
    slow = ReplaySource(raw, speed=40.0, bufsize=0.2).open()
    time.sleep(0.06)  # the reader looks away for 2.4 s of data
    chunks, _ = slow.read(0.0)
    assert slow.dropped > 0 and sum(c.n for c in chunks) == 20
    assert "fell" in slow.drain_messages()[0][1]
