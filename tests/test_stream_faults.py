"""Faults of a live stream, on the in-process replay: each is said clearly and decoding goes on where it can.

The source stops and comes back, samples arrive late and in bursts, a marker's window never completes,
a channel is flat or missing, the clock jumps, the decoder falls behind; and every decision is on disk
the moment it is made."""

from __future__ import annotations

import time

import mne
import numpy as np
import pytest
from test_stream_common import Collect, model_for_raw, random_gallery, recording, run_decoder  # noqa: F401

from neurodecode.streaming.sources import Chunk, ReplaySource, Source
from neurodecode.utils import UserError

SPEED = 50.0  # the ~10 s recording replays in ~0.2 s, in real time (its timing matters here)


class Scripted(Source):
    """A replay with faults: an outage (samples dropped, the source silent meanwhile), a clock jump, bursts."""

    def __init__(self, inner: ReplaySource, *, outage=None, clock_jump=None, hold: float | None = None) -> None:
        super().__init__()
        self.inner, self.info, self.speed, self.has_markers = inner, inner.info, inner.speed, inner.has_markers
        self.outage, self.clock_jump, self.hold = outage, clock_jump, hold
        self._held: list[Chunk] = []

    def open(self):
        self.inner.open()
        return self

    @property
    def dropped(self):
        return self.inner.dropped

    @dropped.setter
    def dropped(self, value):
        pass

    def drain_messages(self):
        return self.inner.drain_messages()

    @property
    def finished(self):
        return self.inner.finished and not self._held

    def read(self, timeout=0.05):
        chunks, markers = self.inner.read(timeout)
        out = []
        for c in chunks:
            keep = np.ones(c.n, bool)
            if self.outage:
                keep = (c.timestamps < self.outage[0]) | (c.timestamps >= self.outage[1])
            ts = c.timestamps[keep].copy()
            if self.clock_jump:
                ts[ts >= self.clock_jump[0]] += self.clock_jump[1]
            if keep.any():
                out.append(Chunk(c.data[:, keep], ts, c.arrival[keep]))
        if self.clock_jump:
            for m in markers:
                if m.timestamp >= self.clock_jump[0]:
                    m.timestamp += self.clock_jump[1]
        if self.hold:
            self._held += out
            span = sum(c.n for c in self._held) / self.info.sfreq
            if span < self.hold and not self.inner.finished:
                return [], markers
            now = time.perf_counter()
            out = [Chunk(np.concatenate([c.data for c in self._held], 1),
                         np.concatenate([c.timestamps for c in self._held]),
                         np.full(sum(c.n for c in self._held), now))] if self._held else []
            self._held = []
        return out, markers


@pytest.fixture(scope="module")
def setup(recording, tmp_path_factory):  # noqa: F811
    raw = mne.io.read_raw_fif(recording, preload=True, verbose="ERROR")
    model = model_for_raw(tmp_path_factory.mktemp("model"), recording)
    gallery = random_gallery(recording)
    clean, _ = run_decoder(model, ReplaySource(raw, speed=np.inf), gallery)
    return raw, model, gallery, clean


def _by_marker(col):
    return {(d.marker, round(d.event_time, 3)): d for d in col.decisions}


def test_source_stops_and_comes_back(setup):
    raw, model, gallery, clean = setup
    # at 10x the 2 s outage lasts 200 ms of wall time: long enough for a loaded machine to see the 10 ms stall
    col, stats = run_decoder(model, Scripted(ReplaySource(raw, speed=10.0), outage=(3.0, 5.0)), gallery,
                             stall_timeout=0.01)
    kinds = col.kinds()
    assert "stall" in kinds and "resume" in kinds
    assert kinds.index("stall") < kinds.index("resume")
    (gap,) = col.messages("gap")
    assert "2.00 s of data missing" in gap and "200 samples lost" in gap
    assert stats["samples_dropped"] == 200
    # markers in the outage or whose window touches it are skipped and said so; the others are decided
    skipped = col.messages("skipped")
    assert skipped and all("gap" in m for m in skipped)
    decided = _by_marker(col)
    for key, d in _by_marker(clean).items():
        start, end = d.event_time, d.event_time + 0.49
        if end < 3.0 or start >= 5.0:
            assert key in decided and decided[key].topk == d.topk
    assert len(col.decisions) + len(skipped) == len(clean.decisions)
    assert any(d.event_time >= 5.0 for d in col.decisions)  # decoding went on after the source came back


def test_late_and_bursty_samples_give_the_same_decisions(setup):
    raw, model, gallery, clean = setup
    col, _ = run_decoder(model, Scripted(ReplaySource(raw, speed=SPEED), hold=1.5), gallery)
    assert "late" in col.kinds() and "burst" in col.kinds()
    assert "behind the stream's pace" in col.messages("late")[0]
    assert [d.topk for d in col.decisions] == [d.topk for d in clean.decisions]
    np.testing.assert_allclose([d.scores for d in col.decisions], [d.scores for d in clean.decisions], atol=1e-6)


def test_a_marker_whose_window_never_completes(setup):
    raw, model, gallery, clean = setup
    end = clean.decisions[-1].event_time + 0.2  # the last windows need 0.49 s after their markers
    cut = raw.copy().crop(tmax=end)
    col, stats = run_decoder(model, ReplaySource(cut, speed=np.inf), gallery)
    incomplete = [d for d in clean.decisions if d.event_time + 0.49 > end + 1e-9]
    skipped = col.messages("skipped")
    assert len(skipped) == len(incomplete) >= 1
    assert all("never completed" in m and "stream ended" in m for m in skipped)
    assert incomplete[-1].marker in skipped[-1] and "0.29" in skipped[-1]  # how much data it lacked
    assert [d.topk for d in col.decisions] == [d.topk for d in clean.decisions[:len(clean.decisions) - len(skipped)]]
    assert stats["pending"] == 0


def test_flat_and_missing_values_channels(setup):
    raw, model, gallery, clean = setup
    bad = raw.copy()
    oz, pz = bad.ch_names.index("Oz"), bad.ch_names.index("Pz")
    bad._data[oz] = 1e-6  # an electrode that came off: constant
    bad._data[pz, int(4.0 * bad.info["sfreq"]):] = np.nan  # samples missing from 4 s on
    col, _ = run_decoder(model, ReplaySource(bad, speed=np.inf), gallery)
    flat = col.messages("flat")
    assert "'Oz'" in flat[0] and "held at their training mean" in flat[0]
    assert any("'Pz'" in m for m in flat)
    assert len(col.decisions) == len(clean.decisions)  # decoding went on
    assert all("flat:Oz" in d.flags for d in col.decisions)
    assert all(np.isfinite(d.scores).all() for d in col.decisions)
    assert any("flat:Pz" in d.flags for d in col.decisions) and "flat:Pz" not in col.decisions[0].flags


def test_a_missing_channel_is_a_clear_error(setup):
    raw, model, gallery, _ = setup
    with pytest.raises(UserError, match=r"lacks 1 of the model's 63 channels: \['Cz'\]"):
        run_decoder(model, ReplaySource(raw.copy().drop_channels(["Cz"]), speed=np.inf), gallery)


def test_the_clock_jumps(setup):
    raw, model, gallery, clean = setup
    col, _ = run_decoder(model, Scripted(ReplaySource(raw, speed=SPEED), clock_jump=(4.0, 5.0)), gallery)
    (msg,) = col.messages("clock")
    assert "+5.000 s" in msg and "continuous" in msg
    assert "gap" not in col.kinds() and "skipped" not in col.kinds()
    assert [d.topk for d in col.decisions] == [d.topk for d in clean.decisions]
    shift = np.array([d.event_time for d in col.decisions]) - np.array([d.event_time for d in clean.decisions])
    assert set(np.round(shift, 6)) == {0.0, 5.0}


def test_a_decoder_that_falls_behind_loses_samples_and_says_so(setup):
    raw, model, gallery, _ = setup
    from neurodecode.streaming.decoder import DecoderSettings, StreamDecoder
    from neurodecode.streaming.recipe import recipe_from_model
    from neurodecode.training.export import from_pretrained

    m = from_pretrained(model)
    slow = m.forward

    def forward(x, subject=None):
        time.sleep(0.03)  # 1.5 s of data at 50x per batch
        return slow(x, subject)

    m.forward = forward
    col = Collect()
    src = ReplaySource(raw, speed=SPEED, bufsize=0.5)
    stats = StreamDecoder(m, recipe_from_model(m.config), gallery, DecoderSettings(),
                          on_decision=col.decision, on_event=col.event).run(src)
    assert "overflow" in col.kinds() and "fell" in col.messages("overflow")[0]
    assert stats["samples_dropped"] >= src.dropped > 0
    assert "gap" in col.kinds()


def test_each_decision_is_on_disk_when_made(setup, tmp_path):
    raw, model, gallery, clean = setup
    from neurodecode.streaming.decoder import DecoderSettings, StreamDecoder
    from neurodecode.streaming.outputs import Outputs, read_jsonl
    from neurodecode.streaming.recipe import recipe_from_model
    from neurodecode.training.export import from_pretrained

    out = Outputs(tmp_path, live=False, quiet=True)
    seen = []

    def decision(d):
        out.decision(d)
        seen.append(len((tmp_path / "decisions.jsonl").read_text().splitlines()))

    m = from_pretrained(model)
    StreamDecoder(m, recipe_from_model(m.config), gallery, DecoderSettings(), on_decision=decision,
                  on_event=out.event).run(ReplaySource(raw, speed=np.inf))
    assert seen == list(range(1, len(clean.decisions) + 1))  # line i is there when decision i is made
    out.close({"done": True})
    rows = read_jsonl(tmp_path / "decisions.jsonl")
    assert [r["topk"] for r in rows] == [d.topk for d in clean.decisions]
    assert {"event_time", "topk", "scores", "latency_ms", "stimulus_id"} <= set(rows[0])
    with pytest.raises(UserError, match="already holds"):
        Outputs(tmp_path, live=False)
