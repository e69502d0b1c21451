"""The decoding loop: samples in, one decision per window out, as soon as the window is complete.

:class:`StreamDecoder` reads a :class:`~neurodecode.streaming.sources.Source`, preprocesses each chunk
causally (:class:`~neurodecode.streaming.online.OnlinePreprocessor`), keeps the recent samples
(:class:`~neurodecode.streaming.buffer.SampleBuffer`) and decodes

* **event-locked** (``mode="event"``): at every stimulus marker (a marker-stream entry or
  annotation, or a stimulus-channel onset), once the samples of its epoch window have all arrived;
* **sliding window** (``mode="sliding"``): a window every ``step`` seconds of data.

Windows that are ready together (a burst, a fast replay) go through the model in one batch. Each
decision (:class:`Decision`) holds the event's time, the top-k candidates of the
:class:`~neurodecode.streaming.gallery.Gallery` with their cosine scores, and the latency from the
arrival of the window's last sample to the decision; it goes to the outputs at once.

What can go wrong is said, once per occurrence, through ``on_event(kind, message)`` (the outputs
write it to ``events.jsonl`` and the terminal), and decoding goes on where it can:

``stall`` / ``resume``
    no sample for ``stall_timeout`` seconds, and when samples come back;
``gap``, ``clock``
    lost samples (the filter restarts; windows across the gap are skipped) or a jump of the source's
    clock (samples continuous; markers follow the new clock);
``late``, ``burst``
    samples arriving later than the stream's pace, or many at once;
``skipped``
    a window that cannot be decoded: across a gap, its samples already overwritten, before the
    stream began, or never completed when the stream ended;
``flat``, ``units``
    channels flat or missing (NaN) in a window (held at their training mean), or an amplitude far from
    the training data's (wrong units?);
``overflow``, ``disconnect``, ``reconnect``
    from the source.
"""

from __future__ import annotations

import math
import re
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from neurodecode.evaluation.threads import thread_limits
from neurodecode.streaming.buffer import SampleBuffer, stim_onsets
from neurodecode.streaming.gallery import Gallery
from neurodecode.streaming.online import OnlinePreprocessor
from neurodecode.streaming.recipe import OnlineRecipe
from neurodecode.streaming.records import Decision, DecoderSettings, stimulus_of
from neurodecode.streaming.sources import Chunk, Marker, Source
from neurodecode.utils import UserError

__all__ = ["Decision", "DecoderSettings", "StreamDecoder", "stimulus_of"]


@dataclass
class _Window:
    event: int  # absolute sample of the event
    event_time: float
    marker: str | None
    stimulus: str | None


class StreamDecoder:
    """Decode a stream window by window (see the module docstring).

    Parameters
    ----------
    model : torch.nn.Module
        An exported model (:func:`neurodecode.from_pretrained`): raw inputs -> embeddings.
    recipe : OnlineRecipe
        Its preprocessing.
    gallery : Gallery
        The candidates.
    settings : DecoderSettings
        Mode, k, events...
    on_decision : callable | None
        Called with each :class:`Decision` as soon as it is made.
    on_event : callable | None
        Called as ``on_event(kind, message)`` for each fault or status message.
    on_tick : callable | None
        Called with :meth:`stats` after every read (the live table).
    """

    def __init__(self, model: Any, recipe: OnlineRecipe, gallery: Gallery, settings: DecoderSettings | None = None, *,
                 on_decision: Callable[[Decision], None] | None = None,
                 on_event: Callable[[str, str], None] | None = None,
                 on_tick: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.model = model.eval().to(settings.device if settings else "cpu")
        self.recipe = recipe
        self.gallery = gallery
        self.settings = settings or DecoderSettings()
        self.on_decision = on_decision or (lambda d: None)
        self.on_event = on_event or (lambda kind, msg: None)
        self.on_tick = on_tick
        self._pattern = re.compile(self.settings.marker_pattern) if self.settings.marker_pattern else None
        mean = getattr(model, "input_mean", None)
        self._fill = None if mean is None else mean.detach().cpu().numpy().astype(np.float64)
        self._std = None if getattr(model, "input_std", None) is None else model.input_std.detach().cpu().numpy()

    # ------------------------------------------------------------------------------------------
    def _event(self, kind: str, message: str) -> None:
        self.counts[kind] = self.counts.get(kind, 0) + 1
        self.on_event(kind, message)

    def _setup(self, source: Source) -> None:
        info = source.info
        s = self.settings
        self.pre = OnlinePreprocessor(self.recipe, info)
        self.sfreq = info.sfreq
        cap = int(math.ceil(max(s.bufsize, 4 * self.pre.n_in / info.sfreq) * info.sfreq))
        self.buffer = SampleBuffer(self.pre.n_channels, cap, info.sfreq, speed=float(getattr(source, "speed", 1.0)))
        self._warm_up()
        self.counts: dict[str, int] = {}
        self.decisions = 0
        self.latencies: list[float] = []
        self.known = self.correct = 0
        self.pending: list[Marker] = []
        self.windows: list[_Window] = []
        self.flat: frozenset[str] = frozenset()
        self.units_checked = False
        self.last_data = time.perf_counter()
        self.stalled = False
        self.late = False
        self.gap_samples = 0
        self.stim_index: int | None = None
        self.stim_prev = 0.0
        stims = info.stim_channels()
        ev = s.events
        if s.mode == "event":
            if ev.startswith("stim"):
                name = ev.partition(":")[2] or (stims[0] if stims else "")
                if name not in info.ch_names:
                    raise UserError(f"--events {ev}: the stream has no stimulus channel {name!r} (its stimulus channels: "
                                    f"{stims or 'none'}); give --events stim:NAME, or --events markers.")
                self.stim_index = info.ch_names.index(name)
            elif ev == "auto" and not getattr(source, "has_markers", True) and stims:
                self.stim_index = info.ch_names.index(stims[0])
            elif ev not in ("auto", "markers"):
                raise UserError(f"--events {ev!r}: give auto, markers, stim or stim:CHANNEL.")
            self.use_markers = self.stim_index is None
            if self.use_markers and not getattr(source, "has_markers", True):
                raise UserError(f"{info.description or info.name}: no events to lock to: no marker stream or "
                                "annotations, and no stimulus channel. Give a marker stream (lsl:...,markers=NAME), "
                                "--events stim:CHANNEL, or decode in --mode sliding.")
        else:
            self.use_markers = False
            width = self.pre.n_in / info.sfreq
            if s.width is not None and abs(s.width - width) > 0.5 / info.sfreq:
                raise UserError(f"--width {s.width:g}: this model decodes windows of {width:g} s (its epoch window "
                                f"{self.recipe.raw_window(info.sfreq)[0]:g} to {self.recipe.raw_window(info.sfreq)[1]:g} s); give --width "
                                f"{width:g} or leave it out.")
            self.step = max(1, int(round(s.step * info.sfreq)))
            self.next_event = -self.pre.start

    def _warm_up(self) -> None:
        """One forward pass on a blank window, so that the first decision does not pay torch's first call."""
        import torch

        x = np.zeros((1, self.pre.n_channels, self.recipe.n_times), np.float32)
        if self._fill is not None:
            x += self._fill.astype(np.float32)[None, :, None]
        with torch.inference_mode():
            self.model(torch.as_tensor(x, device=self.settings.device), self.settings.subject)
        self.gallery.topk(np.ones((1, self.gallery.dim), np.float32), 1)

    # ------------------------------------------------------------------------------------------
    def _ingest(self, chunk: Chunk) -> None:
        buf = self.buffer
        base = buf.total
        first = base == 0
        jumps = buf.scan(chunk.timestamps, chunk.arrival)
        cuts = [0] + [j.index - base for j in jumps] + [chunk.n]
        pieces = []
        for a, b, j in zip(cuts[:-1], cuts[1:], [None, *jumps], strict=True):
            if j is not None:
                if j.kind == "gap":
                    self.pre.reset()
                    lost = max(0, int(round(j.seconds * self.sfreq)))
                    self.gap_samples += lost
                    self._event("gap", f"{lost / self.sfreq:.2f} s of data missing before t={chunk.timestamps[a]:.3f} "
                                       f"(~{lost} samples lost; the source paused {j.paused:.2f} s): the filter restarts "
                                       "and windows across the gap are skipped")
                else:
                    self._event("clock", f"the source's clock jumped by {j.seconds:+.3f} s at t={chunk.timestamps[a]:.3f} "
                                         "while samples kept arriving: samples taken as continuous, markers placed on "
                                         "the new clock")
            pieces.append(self.pre.process_chunk(chunk.data[:, a:b]))
        data = pieces[0] if len(pieces) == 1 else np.concatenate(pieces, axis=1)
        buf.store(data, chunk.timestamps, chunk.arrival)
        if self.stim_index is not None:
            vals = chunk.data[self.stim_index]
            for i in stim_onsets(vals, self.stim_prev).tolist():
                code = int(round(vals[i]))
                desc = self.settings.event_map.get(code, str(code))
                self._add_window(base + i, float(chunk.timestamps[i]), desc)
            self.stim_prev = float(vals[-1]) if len(vals) else self.stim_prev
        if not first:  # the first chunk holds what the source buffered while connecting: no pace yet
            self._check_pace(chunk)

    def _check_pace(self, chunk: Chunk) -> None:
        """Say when samples arrive later than the stream's pace, or many at once.

        The pace is set by the earliest arrivals seen (each chunk's last sample, relative to its
        timestamp); a chunk's first sample arriving more than ``late_threshold`` seconds of stream
        time after that pace is late.
        """
        seg = self.buffer.segments[-1]
        speed = self.buffer.speed
        if math.isinf(speed) or chunk.n == 0:
            return
        first = int(np.searchsorted(chunk.timestamps, seg.ts_start)) if seg.ts_start > chunk.timestamps[0] else 0
        if first >= chunk.n:
            return
        ts, arr = chunk.timestamps, chunk.arrival
        seg.arrival_start = min(seg.arrival_start, float(arr[-1] - (ts[-1] - seg.ts_start) / speed))
        lag = float(arr[first] - seg.arrival_start - (ts[first] - seg.ts_start) / speed) * speed
        threshold = self.settings.late_threshold
        if lag > threshold and not self.late:
            self.late = True
            self._event("late", f"samples arrive up to {lag:.2f} s (of stream time) behind the stream's pace: late "
                                "or bursty delivery; decisions wait for them, and latency counts from their arrival")
        elif lag < threshold / 2 and self.late:
            self.late = False
            self._event("late", f"samples on time again (lag {max(lag, 0.0):.2f} s)")
        # a burst: many samples delivered at the same moment (not a reader that took several chunks at once)
        together = int(np.max(np.unique(np.round(arr, 3), return_counts=True)[1]))
        span = together / self.sfreq
        if span >= max(0.5, 2 * threshold):
            self._event("burst", f"{together} samples ({span:.2f} s of data) arrived at once")

    def _add_window(self, event: int, event_time: float, marker: str | None) -> None:
        if marker is not None and self._pattern is not None and not self._pattern.search(marker):
            self.counts["ignored_markers"] = self.counts.get("ignored_markers", 0) + 1
            return
        stim = None if marker is None else stimulus_of(marker)
        self.windows.append(_Window(event, event_time, marker, stim))

    def _resolve_markers(self) -> None:
        keep = []
        for m in self.pending:
            status, idx = self.buffer.locate(m.timestamp)
            if status == "ok":
                self._add_window(idx, m.timestamp, m.description)
            elif status == "future":
                keep.append(m)
            else:
                what = ("its samples have already left the buffer (the marker came too late)" if status == "lost"
                        else "it falls in a gap of the data")
                self._event("skipped", f"marker {m.description!r} at t={m.timestamp:.3f}: not decoded, {what}")
        self.pending = keep

    def _sliding_windows(self) -> None:
        while self.next_event + self.pre.start + self.pre.n_in <= self.buffer.total:
            e = self.next_event
            first = max(e + self.pre.start, self.buffer.first)
            t = self.buffer.timestamp(first) + (e - first) / self.sfreq
            self.windows.append(_Window(e, t, None, None))
            self.next_event += self.step

    # ------------------------------------------------------------------------------------------
    def _ready(self) -> list[tuple[_Window, int, int]]:
        ready, keep = [], []
        for w in self.windows:
            a, b = w.event + self.pre.start, w.event + self.pre.start + self.pre.n_in
            label = w.marker or f"window at t={w.event_time:.3f}"
            status = self.buffer.available(a, b)
            if status == "future":
                keep.append(w)
            elif a < 0:
                self._event("skipped", f"{label}: its window starts {-a / self.sfreq:.3f} s before the stream began")
            elif status == "lost":
                self._event("skipped", f"{label}: its samples were overwritten before it could be decoded (the decoder "
                                       "fell behind; raise --bufsize or lower --speed)")
            elif (gap := self.buffer.gap_inside(a, b)) is not None:
                self._event("skipped", f"{label}: its window spans a gap of {gap.seconds:.2f} s in the data")
            else:
                ready.append((w, a, b))
        self.windows = keep
        return ready

    def _flat_channels(self, x: np.ndarray) -> np.ndarray:
        """Boolean ``(n, n_channels)``: flat (no variation) or missing (non-finite) in each window."""
        finite = np.isfinite(x)
        bad = ~finite.all(axis=2)
        sd = np.where(finite, x, 0.0).std(axis=2)
        with warnings.catch_warnings():  # a window whose every channel is missing has no median
            warnings.simplefilter("ignore", RuntimeWarning)
            ref = np.nanmedian(np.where(bad, np.nan, sd), axis=1, keepdims=True)
        ref = np.where(np.isfinite(ref) & (ref > 0), ref, np.inf)
        return bad | (sd <= 1e-6 * ref)

    def _decode(self, ready: list[tuple[_Window, int, int]]) -> None:
        import torch

        s = self.settings
        for start in range(0, len(ready), s.batch_size):
            t0 = time.perf_counter()
            part = ready[start:start + s.batch_size]
            raw = np.stack([self.buffer.window(a, b) for _, a, b in part])
            flat = self._flat_channels(raw)
            x = self.pre.epochs(np.where(np.isfinite(raw), raw, 0.0))
            if flat.any() and s.flat_policy == "mean" and self._fill is not None:
                x[flat] = self._fill.astype(np.float32)[np.nonzero(flat)[1], None]
            self._report_flat(flat[-1])
            if not self.units_checked and self._std is not None:
                self._check_units(x)
            with torch.inference_mode():
                emb = self.model(torch.as_tensor(x, device=s.device), s.subject).float().cpu().numpy()
            names, scores, all_scores = self.gallery.topk(emb, s.k, s.by)
            now = time.perf_counter()
            for i, (w, _, b) in enumerate(part):
                rank = None
                j = self.gallery.position(w.stimulus, s.by)
                if j is not None:
                    rank = 1 + int((all_scores[i] > all_scores[i, j]).sum())
                    self.known += 1
                    self.correct += rank == 1
                flags = [f"flat:{self.pre.recipe.channels[c]}" for c in np.flatnonzero(flat[i])]
                lat = (now - self.buffer.last_arrival(b)) * 1e3
                self.latencies.append(lat)
                d = Decision(self.decisions, w.event_time, int(w.event), names[i], scores[i].tolist(), lat,
                             s.mode, w.marker, w.stimulus, rank, flags, emb[i], (now - t0) * 1e3)
                self.decisions += 1
                self.on_decision(d)

    def _report_flat(self, flat_row: np.ndarray) -> None:
        now = frozenset(self.pre.recipe.channels[c] for c in np.flatnonzero(flat_row))
        if now != self.flat:
            if now - self.flat:
                held = "held at their training mean" if self.settings.flat_policy == "mean" else "kept as they are"
                self._event("flat", f"channel(s) {sorted(now - self.flat)} flat or missing (NaN) in the latest window: "
                                    f"{held}; decoding goes on (check the electrodes)")
            if self.flat - now:
                self._event("flat", f"channel(s) {sorted(self.flat - now)} carry signal again")
            self.flat = now

    def _check_units(self, x: np.ndarray) -> None:
        self.units_checked = True
        sd = x.std(axis=(0, 2))
        ok = sd > 0
        if not ok.any():
            return
        ratio = float(np.median(sd[ok] / np.maximum(self._std[ok], 1e-30)))
        if ratio > 100 or ratio < 0.01:
            self._event("units", f"the stream's amplitude is {ratio:.3g} times the training data's: are the units the "
                                 f"same (e.g. µV vs V)? If not, pass --scale with the unit factor (about "
                                 f"{1 / ratio:.1e})")

    # ------------------------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        """Running numbers: decisions, top-1, latency percentiles, samples received and dropped."""
        lat = np.asarray(self.latencies)
        return {"decisions": self.decisions, "known": self.known, "correct": self.correct,
                "top1": self.correct / self.known if self.known else None,
                "latency_ms_p50": float(np.percentile(lat, 50)) if len(lat) else None,
                "latency_ms_p99": float(np.percentile(lat, 99)) if len(lat) else None,
                "latency_ms_max": float(lat.max()) if len(lat) else None,
                "samples_received": int(self.buffer.total), "samples_dropped": int(self.dropped()),
                "stream_seconds": self.buffer.total / self.sfreq, "pending": len(self.pending) + len(self.windows),
                "faults": {k: v for k, v in self.counts.items()}, "stalled": self.stalled}

    def dropped(self) -> int:
        """Samples lost: by the source (overflow) and in gaps of the timestamps."""
        return int(getattr(self._source, "dropped", 0) + self.gap_samples)

    def run(self, source: Source, *, duration: float | None = None, max_decisions: int | None = None,
            poll: float = 0.02, should_stop: Callable[[], bool] | None = None) -> dict[str, Any]:
        """Decode ``source`` until it ends (or ``duration`` stream seconds, ``max_decisions``, a stop request).

        Returns
        -------
        stats : dict
            :meth:`stats` at the end, with ``wall_seconds`` and ``cpu_seconds``.
        """
        with thread_limits(self.settings.threads):
            return self._run(source, duration, max_decisions, poll, should_stop)

    def _run(self, source: Source, duration: float | None, max_decisions: int | None, poll: float,
             should_stop: Callable[[], bool] | None) -> dict[str, Any]:
        t0, c0 = time.perf_counter(), time.process_time()
        self._source = source
        source.open()
        try:
            self._setup(source)
            while True:
                chunks, markers = source.read(timeout=poll)
                for kind, msg in source.drain_messages():
                    self._event(kind, msg)
                now = time.perf_counter()
                if chunks:
                    if self.stalled:
                        self._event("resume", f"{source.info.name} is back: samples again after "
                                              f"{now - self.last_data:.1f} s without data")
                        self.stalled = False
                    self.last_data = now
                for c in chunks:
                    self._ingest(c)
                if self.use_markers:
                    self.pending.extend(markers)
                    self._resolve_markers()
                elif self.settings.mode == "sliding":
                    self._sliding_windows()
                ready = self._ready()
                if ready:
                    self._decode(ready)
                silent = now - self.last_data
                if not chunks and not self.stalled and silent > self.settings.stall_timeout and not source.finished:
                    self.stalled = True
                    self._event("stall", f"no samples from {source.info.name} for {silent:.1f} s; waiting for the "
                                         "source to come back")
                if self.on_tick is not None:
                    self.on_tick(self.stats())
                why = "the stream ended" if source.finished and not chunks else None
                if self.settings.stop_after_silence is not None and silent > self.settings.stop_after_silence:
                    self._event("stop", f"no samples for {silent:.1f} s: stopping")
                    why = "decoding stopped after the silence"
                if duration is not None and self.buffer.total >= duration * self.sfreq:
                    why = f"decoding stopped after {duration:g} s of data"
                if max_decisions is not None and self.decisions >= max_decisions:
                    why = f"decoding stopped after {max_decisions} decisions"
                if should_stop is not None and should_stop():
                    why = "decoding was stopped"
                if why:
                    break
            self._finish(why)
        finally:
            source.close()
        out = self.stats()
        out["wall_seconds"] = time.perf_counter() - t0
        out["cpu_seconds"] = time.process_time() - c0
        return out

    def _finish(self, why: str) -> None:
        last = self.buffer.timestamp(self.buffer.total - 1) if self.buffer.total else float("nan")
        for m in self.pending:
            self._event("skipped", f"marker {m.description!r} at t={m.timestamp:.3f}: its window never completed "
                                   f"({why} at t={last:.3f})")
        for w in self.windows:
            need = (w.event + self.pre.start + self.pre.n_in - self.buffer.total) / self.sfreq
            self._event("skipped", f"{w.marker or 'window'} at t={w.event_time:.3f}: its window never completed "
                                   f"({need:.3f} s of data missing when {why} at t={last:.3f})")
        self.pending, self.windows = [], []
