"""The one test of the real LSL path: PlayerLSL -> StreamLSL over the loopback, machine-only configuration.

The machine-only liblsl configuration (ResolveScope = machine, IPv6 off, loopback only) is set here,
at import, before anything loads MNE-LSL; the test skips, with the reason, where MNE-LSL or its liblsl
cannot be loaded."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from neurodecode.streaming.lslconfig import ENV_VAR, is_machine_only, lsl_available, use_machine_only

CONFIG = use_machine_only()  # before MNE-LSL is imported by anything
OK, WHY = lsl_available()
pytestmark = pytest.mark.skipif(not OK, reason=f"MNE-LSL / liblsl cannot be used here: {WHY}")

from test_stream_common import model_for_raw, random_gallery, recording, run_decoder  # noqa: E402, F401


def test_player_to_stream_over_loopback_decides_as_the_replay(recording, tmp_path):  # noqa: F811
    import mne
    from mne_lsl.lsl import StreamInlet, resolve_streams

    from neurodecode.streaming.decoder import DecoderSettings, StreamDecoder
    from neurodecode.streaming.lsl import PlayerSource
    from neurodecode.streaming.outputs import Outputs, read_jsonl
    from neurodecode.streaming.recipe import recipe_from_model
    from neurodecode.streaming.sources import ReplaySource
    from neurodecode.training.export import from_pretrained

    assert os.environ[ENV_VAR] == str(CONFIG) and is_machine_only(CONFIG)
    assert "ResolveScope = machine" in CONFIG.read_text() and "IPv6 = disable" in CONFIG.read_text()
    raw = mne.io.read_raw_fif(recording, preload=True, verbose="ERROR")
    model_dir = model_for_raw(tmp_path / "model", recording)
    gallery = random_gallery(recording)
    clean, _ = run_decoder(model_dir, ReplaySource(raw, speed=np.inf), gallery)

    # decisions also go out on an LSL outlet of their own; a "stimulus program" listens to it
    out = Outputs(tmp_path / "live", outlet=True, live=False, quiet=True)
    (info,) = resolve_streams(timeout=5, name="neurodecode-decisions")
    listener = StreamInlet(info)
    listener.open_stream(timeout=5)
    model = from_pretrained(model_dir)
    source = PlayerSource(raw, speed=8.0, lead_in=4.0, timeout=10)
    stats = StreamDecoder(model, recipe_from_model(model.config), gallery, DecoderSettings(),
                          on_decision=out.decision, on_event=out.event).run(source)
    values, _ = listener.pull_chunk(timeout=1.0)  # while the outlet is still there
    listener.close_stream()
    out.close(stats)
    rows = read_jsonl(tmp_path / "live" / "decisions.jsonl")

    # markers came on the player's annotation stream, samples on its data stream; both over LSL
    assert source.info.kind == "player" and source.info.sfreq == raw.info["sfreq"]
    assert len(rows) == len(clean.decisions) and stats["samples_dropped"] == 0
    assert [r["topk"] for r in rows] == [d.topk for d in clean.decisions]
    np.testing.assert_allclose([r["scores"] for r in rows], [d.scores for d in clean.decisions], atol=1e-5)
    # each marker landed on its own sample: the same spacing as in the recording (one constant offset:
    # the lead-in and what was played before the inlet connected)
    offset = {r["event_sample"] - d.event_sample for r, d in zip(rows, clean.decisions, strict=True)}
    assert len(offset) == 1 and offset.pop() > 0
    assert all(r["latency_ms"] > 0 for r in rows)
    received = [json.loads(v[0]) for v in values]
    assert [r["topk"] for r in received] == [r["topk"] for r in rows]
