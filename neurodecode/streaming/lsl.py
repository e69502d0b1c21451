"""LSL sources: a live stream read with MNE-LSL's ``StreamLSL``, and a file played by ``PlayerLSL``.

:class:`LSLSource` connects a ``StreamLSL`` (found by name, type and/or source id) with a background
acquisition every millisecond and clock synchronisation, and receives every pulled chunk through a
``StreamLSL`` callback, so no sample is missed however late the decoder reads (the ring buffer's
``get_data`` would only show the latest window). Markers come from a second LSL stream: a numeric one
(as ``PlayerLSL`` publishes annotations: one channel per description, non-zero where it occurs) through
another ``StreamLSL``, a string one (``"stim/123"``, as stimulus programs send) through a
``StreamInlet``. Without a marker stream, a stimulus channel of the data stream gives the events.

When the stream disappears, liblsl's inlet recovers by itself once a stream with the same source id is
back; if MNE-LSL drops the connection instead, :meth:`LSLSource.read` reconnects (once a second) and
says so. Either way the samples missed while the source was away show up as a gap in the timestamps,
which the decoder reports (:mod:`neurodecode.streaming.buffer`).

:class:`PlayerSource` replays a recording through ``PlayerLSL`` and reads it back with an
:class:`LSLSource` over the loopback: the whole LSL path, for tests and demonstrations. ``PlayerLSL``
has no speed setting, so a replay ``speed`` times real time is played as a recording whose nominal
rate is ``speed`` times higher, and the reader divides the rate and the timestamp intervals back. The
first ``lead_in`` seconds repeat the first sample, so that the inlet is connected before the
recording starts (LSL delivers no sample pushed before an inlet connects). ``PlayerLSL`` (MNE-LSL
1.14) stamps an annotation one sample period before the sample it marks; the reader adds that period
back (``marker_delay``); the LSL test checks that the decisions equal those of the in-process replay,
window for window. The played recording gets one more sample when its length is a multiple of the
chunk size (``PlayerLSL`` otherwise ends on an empty chunk and warns), and MNE-LSL's per-annotation
"single sample" warnings are silenced while the player runs.

Everything here imports MNE-LSL through :func:`neurodecode.streaming.lslconfig.import_mne_lsl`, which
first makes liblsl resolve on this machine only.
"""

from __future__ import annotations

import itertools
import os
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

import numpy as np

from neurodecode.streaming.lslconfig import import_mne_lsl
from neurodecode.streaming.sources import Chunk, Marker, Source, StreamInfo
from neurodecode.utils import UserError

__all__ = ["LSLSource", "PlayerSource"]

_COUNTER = itertools.count()


class LSLSource(Source):
    """A live LSL stream (MNE-LSL ``StreamLSL``) and, optionally, its marker stream.

    Parameters
    ----------
    name, stype, source_id : str | None
        What identifies the stream (at least one).
    markers : str | None
        Name of the marker stream; ``None``: events come from a stimulus channel of the stream.
    bufsize : float
        Seconds of the ``StreamLSL`` ring buffer (the inlet buffers as much).
    timeout : float
        Seconds to wait for the stream when connecting.
    time_scale : float
        Stream seconds per LSL second (:class:`PlayerSource` plays ``speed`` times faster).
    marker_delay : float
        Seconds added to every marker timestamp (after scaling).
    """

    def __init__(self, name: str | None = None, stype: str | None = None, source_id: str | None = None, *,
                 markers: str | None = None, bufsize: float = 30.0, timeout: float = 10.0, time_scale: float = 1.0,
                 marker_delay: float = 0.0) -> None:
        super().__init__()
        if not any((name, stype, source_id)):
            raise UserError("an LSL source needs a name, type or source id (e.g. --source lsl:MyAmp).")
        self.name, self.stype, self.source_id = name, stype, source_id
        self.markers = markers
        self.has_markers = bool(markers)
        self.speed = float(time_scale)
        self.bufsize = float(bufsize)
        self.timeout = float(timeout)
        self.time_scale = float(time_scale)
        self.marker_delay = float(marker_delay)
        self.n_received = 0
        self._stream: Any = None
        self._marker_stream: Any = None
        self._marker_inlet: Any = None
        self._lock = threading.Condition()
        self._chunks: deque[Chunk] = deque()
        self._markers: deque[Marker] = deque()
        self._t0: float | None = None
        self._last_attempt = 0.0
        self._lost_since: float | None = None

    # ------------------------------------------------------------------------------------------
    def _label(self) -> str:
        parts = [f"{k}={v}" for k, v in (("name", self.name), ("type", self.stype), ("source_id", self.source_id)) if v]
        return "LSL stream " + ",".join(parts)

    def _scaled(self, ts: np.ndarray) -> np.ndarray:
        if self._t0 is None:
            self._t0 = float(ts[0])
        if self.time_scale == 1.0:
            return ts
        return self._t0 + (ts - self._t0) * self.time_scale

    def _on_data(self, data: np.ndarray, timestamps: np.ndarray, info: Any) -> tuple[np.ndarray, np.ndarray]:
        now = time.perf_counter()
        with self._lock:
            ts = self._scaled(np.asarray(timestamps, dtype=np.float64).copy())
            self._chunks.append(Chunk(np.asarray(data, dtype=np.float64).T.copy(), ts, np.full(len(ts), now)))
            self.n_received += len(ts)
            self._lock.notify_all()
        return data, timestamps

    def _on_markers(self, data: np.ndarray, timestamps: np.ndarray, info: Any) -> tuple[np.ndarray, np.ndarray]:
        names = info["ch_names"]
        with self._lock:
            for row, ts in zip(np.asarray(data), np.asarray(timestamps), strict=True):
                for j in np.flatnonzero(row):
                    self._markers.append(self._marker(float(ts), names[j]))
        return data, timestamps

    def _marker(self, ts: float, text: str) -> Marker:
        if self._t0 is not None and self.time_scale != 1.0:
            ts = self._t0 + (ts - self._t0) * self.time_scale
        return Marker(ts + self.marker_delay, str(text))

    # ------------------------------------------------------------------------------------------
    def _connect(self) -> None:
        mne_lsl = import_mne_lsl()
        stream = mne_lsl.stream.StreamLSL(self.bufsize, name=self.name, stype=self.stype, source_id=self.source_id)
        try:
            stream.connect(acquisition_delay=0.001, processing_flags=["clocksync"], timeout=self.timeout)
        except RuntimeError as err:
            raise UserError(f"{self._label()} not found on this machine within {self.timeout:g} s ({err}). Start the "
                            "stream first (LSL stays on this machine: ResolveScope = machine), or check its name with "
                            "mne_lsl.lsl.resolve_streams().") from None
        stream.add_callback(self._on_data)
        self._stream = stream
        self.name, self.stype, self.source_id = stream.name, stream.stype, stream.source_id
        sfreq = float(stream.info["sfreq"])
        if sfreq <= 0:
            raise UserError(f"{self._label()} has an irregular rate (sfreq 0): decoding needs a regularly sampled "
                            "EEG/MEG stream.")
        self.info = StreamInfo(stream.name, list(stream.ch_names), list(stream.get_channel_types()),
                               sfreq / self.time_scale, "lsl", f"{self._label()} ({sfreq / self.time_scale:g} Hz)")

    def _connect_markers(self) -> None:
        mne_lsl = import_mne_lsl()
        found = mne_lsl.lsl.resolve_streams(timeout=self.timeout, name=self.markers)
        if not found:
            raise UserError(f"marker stream {self.markers!r} not found on this machine within {self.timeout:g} s. "
                            "Start it, or leave --markers out to use the stimulus channel of the data stream.")
        sinfo = found[0]
        if sinfo.dtype == "string":
            inlet = mne_lsl.lsl.StreamInlet(sinfo, processing_flags=("clocksync",))
            inlet.open_stream(timeout=self.timeout)
            self._marker_inlet = inlet
        else:
            ms = mne_lsl.stream.StreamLSL(1000, name=sinfo.name, source_id=sinfo.source_id)
            ms.connect(acquisition_delay=0.001, processing_flags=["clocksync"], timeout=self.timeout)
            ms.add_callback(self._on_markers)
            self._marker_stream = ms

    def open(self) -> LSLSource:
        """Connect the data stream and the marker stream (at the same time: each takes about a second)."""
        import_mne_lsl()
        errors: list[BaseException] = []

        def markers() -> None:
            try:
                self._connect_markers()
            except BaseException as err:  # noqa: BLE001 - re-raised below, in the caller's thread
                errors.append(err)

        t = threading.Thread(target=markers, daemon=True) if self.markers else None
        if t is not None:
            t.start()
        try:
            self._connect()
        finally:
            if t is not None:
                t.join()
        if errors:
            self.close()
            raise errors[0]
        return self

    def _check_connection(self) -> None:
        stream = self._stream
        if stream is not None and stream.connected:
            if self._lost_since is not None:
                self.note("reconnect", f"{self._label()}: reconnected after {time.perf_counter() - self._lost_since:.1f} s")
                self._lost_since = None
            return
        now = time.perf_counter()
        if self._lost_since is None:
            self._lost_since = now
            self.note("disconnect", f"{self._label()}: the connection was lost; reconnecting (once a second)")
        if now - self._last_attempt < 1.0:
            return
        self._last_attempt = now
        try:
            self._connect()
        except UserError:
            self._stream = None

    def read(self, timeout: float = 0.05) -> tuple[list[Chunk], list[Marker]]:
        self._check_connection()
        with self._lock:
            if not self._chunks and not self._markers:
                self._lock.wait(timeout)
            chunks, markers = list(self._chunks), list(self._markers)
            self._chunks.clear()
            self._markers.clear()
        if self._marker_inlet is not None:
            values, stamps = self._marker_inlet.pull_chunk(timeout=0.0)
            for v, ts in zip(values, np.atleast_1d(stamps), strict=False):
                markers.append(self._marker(float(ts), v[0] if isinstance(v, list | tuple) else v))
        return chunks, markers

    def close(self) -> None:
        for s in (self._marker_stream, self._stream):
            if s is not None and getattr(s, "connected", False):
                try:
                    s.disconnect()
                except Exception:  # noqa: BLE001 - closing must not hide the run's own error
                    pass
        if self._marker_inlet is not None:
            try:
                self._marker_inlet.close_stream()
            except Exception:  # noqa: BLE001
                pass
        self._stream = self._marker_stream = self._marker_inlet = None


class PlayerSource(Source):
    """A recording played through MNE-LSL's ``PlayerLSL`` and read back over the loopback.

    Parameters
    ----------
    raw : mne.io.Raw
        The recording (preloaded).
    speed : float
        Replay speed (1 = real time); finite.
    chunk_size : int | None
        Samples per pushed chunk (default: 20 ms worth).
    bufsize : float
        Seconds of the reader's ring buffer.
    lead_in : float
        Wall seconds of the first sample, repeated, played before the recording (the inlet connects meanwhile).
    timeout : float
        Seconds to wait for the player's stream.
    """

    def __init__(self, raw: Any, *, speed: float = 1.0, chunk_size: int | None = None, bufsize: float = 30.0,
                 lead_in: float = 4.0, timeout: float = 10.0) -> None:
        super().__init__()
        import mne

        if not np.isfinite(speed) or speed <= 0:
            raise UserError(f"--speed {speed}: a PlayerLSL replay needs a finite positive speed (use file:PATH for "
                            "'as fast as possible').")
        self.speed = float(speed)
        sfreq = float(raw.info["sfreq"])
        self.n_lead = int(round(lead_in * sfreq * self.speed))  # lead_in wall seconds at the played rate
        data = raw.get_data()
        self.n_samples = data.shape[1]
        played = np.concatenate([np.repeat(data[:, :1], self.n_lead, axis=1), data], axis=1)
        self.chunk_size = int(chunk_size or max(1, round(0.02 * sfreq)))
        if played.shape[1] % self.chunk_size == 0:
            played = np.concatenate([played, played[:, -1:]], axis=1)
        info = mne.create_info(list(raw.ch_names), sfreq * self.speed, list(raw.get_channel_types()))
        self._raw = mne.io.RawArray(played, info, verbose="ERROR")
        ann = raw.annotations
        self.has_markers = len(ann) > 0
        if self.has_markers:
            onsets = (ann.onset - raw.first_samp / sfreq + self.n_lead / sfreq) / self.speed
            self._raw.set_annotations(mne.Annotations(onsets, ann.duration / self.speed, ann.description))
        self.stream_name = f"neurodecode-replay-{os.getpid()}-{next(_COUNTER)}"
        self._player: Any = None
        self._reader = LSLSource(self.stream_name, source_id=self.stream_name,
                                 markers=f"{self.stream_name}-annotations" if self.has_markers else None,
                                 bufsize=bufsize, timeout=timeout, time_scale=self.speed, marker_delay=1.0 / sfreq)
        self._started = 0.0
        self._stopped_at: float | None = None
        self._label = _recording_name(raw)

    def open(self) -> PlayerSource:
        mne_lsl = import_mne_lsl()
        mne_lsl.set_log_level("ERROR")  # one warning per annotation pushed, otherwise
        self._player = mne_lsl.player.PlayerLSL(self._raw, chunk_size=self.chunk_size, n_repeat=1,
                                                name=self.stream_name, source_id=self.stream_name,
                                                annotations=self.has_markers)
        self._player.start()
        self._started = time.perf_counter()
        self._reader.open()
        took = time.perf_counter() - self._started
        if took > self.n_lead / (self._raw.info["sfreq"]):
            self.note("late", f"the LSL inlets connected {took:.1f} s after the player started, after its "
                              f"{self.n_lead / self._raw.info['sfreq']:.1f} s lead-in: the first samples and markers "
                              "may be missed (give a longer lead_in)")
        info = self._reader.info
        self.info = StreamInfo(self._label, info.ch_names, info.ch_types, info.sfreq, "player",
                               f"PlayerLSL replay of {self._label} at {self.speed:g}x over the loopback "
                               f"(LSL stream {self.stream_name})")
        return self

    def read(self, timeout: float = 0.05) -> tuple[list[Chunk], list[Marker]]:
        out = self._reader.read(timeout)
        for kind, msg in self._reader.drain_messages():
            self.note(kind, msg)
        return out

    @property
    def finished(self) -> bool:
        """True half a second after the player stopped (its last chunks have arrived by then)."""
        if self._player is None or self._player.running:
            return False
        now = time.perf_counter()
        if self._stopped_at is None:
            self._stopped_at = now
        return now - self._stopped_at > 0.5

    def close(self) -> None:
        self._reader.close()
        import_mne_lsl().set_log_level("WARNING")
        if self._player is not None:
            try:
                self._player.stop()
            except Exception:  # noqa: BLE001 - it may have stopped by itself at the end of the file
                pass
            self._player = None


def _recording_name(raw: Any) -> str:
    """The file name of a recording, or ``"recording"``."""
    files = getattr(raw, "filenames", None) or [None]
    return Path(files[0]).name if files[0] else "recording"
