"""Where the samples come from: the source interface, the in-process file replay, and source specs.

Every source gives the decoding loop the same three things (:class:`Source`):

* :attr:`Source.info` (:class:`StreamInfo`): channel names and types and the sampling rate, known once
  the source is open;
* :meth:`Source.read` returns the :class:`Chunk` s of samples and the :class:`Marker` s that arrived
  since the last call (waiting up to ``timeout`` seconds when nothing has), each sample with its
  timestamp in the source's clock and the moment it became available here (``time.perf_counter``);
* :meth:`Source.drain_messages` returns what the source itself has to say (a reconnection, an
  overflow), for the event log.

:class:`ReplaySource` replays a recording (any file :func:`read_recording` reads: MNE's formats and
the CSV (Muse) recordings of ``neurodecode prepare csv``) inside the process, with no socket: sample
``i`` becomes available ``(i + 1) / (sfreq * speed)`` seconds after :meth:`Source.open`, a chunk at a
time, as a device would deliver it. Its timestamps are the recording's own times (``i / sfreq``), and
its markers are the recording's annotations (``BAD``/``EDGE`` ones left out). A stimulus channel, if
the recording has one, stays among the channels: the decoder finds its events sample-exactly. Like a
receiver's ring buffer, it holds at most ``bufsize`` seconds that the reader has not taken: when the
reader falls further behind, the oldest samples are lost and counted (:attr:`Source.dropped`). The
LSL sources (MNE-LSL's ``StreamLSL``, and a file played through ``PlayerLSL``) are in
:mod:`neurodecode.streaming.lsl`.

:func:`open_source` turns a ``--source`` text into a source:

``file:PATH``
    in-process replay of ``PATH`` (the default for a bare path);
``player:PATH``
    ``PATH`` played by MNE-LSL's ``PlayerLSL`` and read back with ``StreamLSL`` over the loopback;
``lsl:NAME`` or ``lsl:name=NAME,type=TYPE,source_id=ID``
    a live LSL stream (at least one of the three), markers from ``markers=NAME`` when given there or
    in ``markers=`` (else from a stimulus channel in the stream).
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from neurodecode.utils import PathLike, UserError

__all__ = ["Chunk", "Marker", "ReplaySource", "Source", "StreamInfo", "open_source", "parse_source_spec",
           "read_recording"]

MNE_SUFFIXES = (".fif", ".fif.gz", ".edf", ".bdf", ".gdf", ".vhdr", ".set", ".cnt", ".mff", ".snirf", ".con",
                ".sqd", ".ds", ".nxe", ".eeg", ".mef")


@dataclass
class StreamInfo:
    """What a source streams.

    Attributes
    ----------
    name : str
        Its name (the file name, or the LSL stream name).
    ch_names, ch_types : list of str
        Channel names and MNE channel types (``"eeg"``, ``"mag"``, ``"stim"``...), in stream order.
    sfreq : float
        Nominal sampling rate (Hz).
    kind : str
        ``"replay"``, ``"lsl"`` or ``"player"``.
    description : str
        One line for the terminal and the summary.
    """

    name: str
    ch_names: list[str]
    ch_types: list[str]
    sfreq: float
    kind: str
    description: str = ""

    def stim_channels(self) -> list[str]:
        """Names of the stimulus (trigger) channels."""
        return [n for n, t in zip(self.ch_names, self.ch_types, strict=True) if t == "stim"]


@dataclass
class Chunk:
    """Consecutive samples as they arrived.

    Attributes
    ----------
    data : ndarray, shape (n_channels, n_samples)
        float64, in stream channel order.
    timestamps : ndarray, shape (n_samples,)
        Sample times in the source's clock (s).
    arrival : ndarray, shape (n_samples,)
        ``time.perf_counter()`` at which each sample became available here.
    """

    data: np.ndarray
    timestamps: np.ndarray
    arrival: np.ndarray

    @property
    def n(self) -> int:
        """Number of samples."""
        return int(self.timestamps.shape[0])


@dataclass
class Marker:
    """An event marker from a marker stream or the recording's annotations.

    Attributes
    ----------
    timestamp : float
        Its time in the source's clock (s), the clock of the samples.
    description : str
        Its text (``"stim/<stimulus_id>"`` in the simulator's recordings).
    """

    timestamp: float
    description: str


class Source:
    """Base class of the sample sources (see the module docstring)."""

    info: StreamInfo

    def __init__(self) -> None:
        self.dropped = 0
        self._messages: deque[tuple[str, str]] = deque()

    def note(self, kind: str, message: str) -> None:
        """Queue a message for the event log (``kind``: ``"reconnect"``, ``"overflow"``...)."""
        self._messages.append((kind, message))

    def drain_messages(self) -> list[tuple[str, str]]:
        """The messages queued since the last call."""
        out = list(self._messages)
        self._messages.clear()
        return out

    def open(self) -> Source:
        """Start delivering samples; returns ``self``."""
        return self

    def read(self, timeout: float = 0.05) -> tuple[list[Chunk], list[Marker]]:
        """The chunks and markers that arrived since the last call (waits up to ``timeout`` s for some)."""
        raise NotImplementedError

    @property
    def finished(self) -> bool:
        """True when no sample will ever come again (the end of a replayed file)."""
        return False

    def close(self) -> None:
        """Stop and release what the source holds."""

    def __enter__(self) -> Source:
        return self.open()

    def __exit__(self, *exc: Any) -> None:
        self.close()


# --------------------------------------------------------------------------------------------------
# recordings on disk
# --------------------------------------------------------------------------------------------------
def _csv_recording(path: Path, unit: str, sfreq: float | None):
    import mne

    from neurodecode.readers.csv import UNITS
    from neurodecode.readers.csv_files import estimate_sfreq, pick_columns, read_csv_recording

    if unit not in UNITS:
        raise UserError(f"CSV unit {unit!r} is not one of {sorted(UNITS)}.")
    header, data = read_csv_recording(path)
    tcol, mcol, chans, _ = pick_columns(path, header, time_column="timestamps", marker_column=None, channels=None)
    col = {h: i for i, h in enumerate(header)}
    if sfreq is None:
        if tcol is None:
            raise UserError(f"{path}: no 'timestamps' column to estimate the sampling rate from; give it "
                            "(ReplaySource(..., sfreq=) or --csv-sfreq).")
        sfreq = estimate_sfreq(data[:, col[tcol]])
    signals = data[:, [col[c] for c in chans]].T * UNITS[unit]
    info = mne.create_info([*chans, "STI"], float(sfreq), [*(["eeg"] * len(chans)), "stim"])
    return mne.io.RawArray(np.vstack([signals, data[:, col[mcol]][None, :]]), info, verbose=False)


def read_recording(path: PathLike, *, csv_unit: str = "uV", csv_sfreq: float | None = None):
    """Read a continuous recording into memory as an ``mne.io.Raw``.

    Parameters
    ----------
    path : path-like
        Any file ``mne.io.read_raw`` reads (``.fif``, ``.edf``, ``.bdf``, ``.vhdr``, ``.set``...) or a
        CSV recording as ``neurodecode prepare csv`` reads it (timestamps, one column per channel,
        a marker column, which becomes the stimulus channel ``STI``).
    csv_unit : str
        Unit of a CSV's values (``"uV"`` for Muse; converted to volts as the prepared stores are).
    csv_sfreq : float | None
        A CSV's sampling rate; ``None`` estimates it from its ``timestamps`` column.

    Returns
    -------
    raw : mne.io.Raw
        Preloaded.
    """
    import mne

    path = Path(path)
    if not path.is_file():
        raise UserError(f"recording {path} not found: give a file MNE can read (.fif, .edf, .bdf, .vhdr...) or "
                        "a CSV recording (make one with 'neurodecode simulate --continuous --out DIR').")
    if path.name.lower().endswith(".csv"):
        return _csv_recording(path, csv_unit, csv_sfreq)
    try:
        return mne.io.read_raw(path, preload=True, verbose="ERROR")
    except (ValueError, OSError, RuntimeError) as err:
        raise UserError(f"{path}: MNE cannot read it as a continuous recording ({err}); give a raw file "
                        f"({', '.join(MNE_SUFFIXES[:6])}...) or a CSV recording, not epochs.") from None


def _annotation_markers(raw) -> tuple[np.ndarray, list[str]]:
    """Sample index (into the data) and description of every non-BAD annotation of ``raw``."""
    import mne

    if len(raw.annotations) == 0:
        return np.zeros(0, np.int64), []
    events, event_id = mne.events_from_annotations(raw, use_rounding=True, verbose="ERROR")
    names = {v: k for k, v in event_id.items()}
    return events[:, 0].astype(np.int64) - raw.first_samp, [names[c] for c in events[:, 2]]


# --------------------------------------------------------------------------------------------------
# the in-process replay
# --------------------------------------------------------------------------------------------------
class ReplaySource(Source):
    """Replay a recording in this process at ``speed`` times real time (no socket).

    Parameters
    ----------
    raw : mne.io.Raw | path-like
        The recording (see :func:`read_recording`).
    speed : float
        Replay speed: 1 is real time, 10 ten times faster, ``math.inf`` as fast as the reader takes.
    chunk_size : int | None
        Samples a "device" delivers at once (default: 20 ms worth, at least 1).
    bufsize : float
        Seconds of samples held for a reader that falls behind; beyond, the oldest are lost and counted.
    markers : bool
        Deliver the recording's annotations as markers.
    clock : callable
        The wall clock (``time.perf_counter``); tests may pass another.
    """

    def __init__(self, raw: Any, *, speed: float = 1.0, chunk_size: int | None = None, bufsize: float = 30.0,
                 markers: bool = True, clock: Callable[[], float] = time.perf_counter) -> None:
        super().__init__()
        if not (speed > 0):
            raise UserError(f"--speed {speed}: give a positive replay speed (1 = real time, 10 = ten times faster, "
                            "inf = as fast as possible).")
        name = "recording"
        if not hasattr(raw, "get_data"):
            name = Path(raw).name
            raw = read_recording(raw)
        elif getattr(raw, "filenames", None) and raw.filenames[0]:
            name = Path(raw.filenames[0]).name
        self.data = np.ascontiguousarray(raw.get_data(), dtype=np.float64)
        sfreq = float(raw.info["sfreq"])
        self.info = StreamInfo(name, list(raw.ch_names), list(raw.get_channel_types()), sfreq, "replay",
                               f"in-process replay of {name} "
                               + ("as fast as possible" if math.isinf(speed) else f"at {speed:g}x real time"))
        self.speed = float(speed)
        self.chunk_size = int(chunk_size or max(1, round(0.02 * sfreq)))
        self.buf_samples = max(self.chunk_size, int(math.ceil(bufsize * sfreq)))
        idx, desc = _annotation_markers(raw) if markers else (np.zeros(0, np.int64), [])
        order = np.argsort(idx, kind="stable")
        self._marker_idx = idx[order]
        self._marker_desc = [desc[i] for i in order]
        self.has_markers = len(self._marker_idx) > 0
        self._clock = clock
        self._start: float | None = None
        self._pos = 0  # next sample to deliver
        self._next_marker = 0

    @property
    def n_samples(self) -> int:
        """Samples in the recording."""
        return int(self.data.shape[1])

    def open(self) -> ReplaySource:
        self._start = self._clock()
        self._pos = 0
        self._next_marker = 0
        return self

    @property
    def finished(self) -> bool:
        return self._pos >= self.n_samples

    def _available(self, now: float) -> int:
        if math.isinf(self.speed):
            return min(self.n_samples, self._pos + 64 * self.chunk_size)
        chunks = int((now - self._start) * self.speed * self.info.sfreq // self.chunk_size)
        return min(self.n_samples, chunks * self.chunk_size)

    def _arrival(self, start: int, stop: int, now: float) -> np.ndarray:
        if math.isinf(self.speed):
            return np.full(stop - start, now)
        chunk_end = (np.arange(start, stop) // self.chunk_size + 1) * self.chunk_size
        return self._start + np.minimum(chunk_end, self.n_samples) / (self.speed * self.info.sfreq)

    def read(self, timeout: float = 0.05) -> tuple[list[Chunk], list[Marker]]:
        if self._start is None:
            self.open()
        now = self._clock()
        avail = self._available(now)
        if avail <= self._pos and not self.finished:
            next_at = self._start + (self._pos + self.chunk_size) / (self.speed * self.info.sfreq)
            wait = min(timeout, max(0.0, next_at - now))
            if wait > 0:
                time.sleep(wait)
            now = self._clock()
            avail = self._available(now)
        start = self._pos
        chunks: list[Chunk] = []
        if avail - start > self.buf_samples:  # the reader fell behind by more than the buffer holds
            lost = avail - start - self.buf_samples
            self.dropped += lost
            self.note("overflow", f"{self.info.name}: the decoder fell {lost / self.info.sfreq:.2f} s behind the "
                                  f"{self.buf_samples / self.info.sfreq:.1f} s buffer; {lost} samples lost")
            start += lost
        if avail > start:
            sl = slice(start, avail)
            chunks.append(Chunk(self.data[:, sl], np.arange(start, avail) / self.info.sfreq,
                                self._arrival(start, avail, now)))
        markers = []
        while self._next_marker < len(self._marker_idx) and self._marker_idx[self._next_marker] < avail:
            i = self._next_marker
            markers.append(Marker(float(self._marker_idx[i] / self.info.sfreq), self._marker_desc[i]))
            self._next_marker += 1
        self._pos = max(self._pos, avail)
        return chunks, markers


# --------------------------------------------------------------------------------------------------
# --source texts
# --------------------------------------------------------------------------------------------------
def parse_source_spec(spec: str) -> tuple[str, dict[str, str]]:
    """Split a ``--source`` text into its kind (``file``, ``player``, ``lsl``) and fields.

    ``file:PATH`` / ``player:PATH`` give ``{"path": PATH}``; ``lsl:NAME`` gives ``{"name": NAME}``;
    ``lsl:name=A,type=B,source_id=C,markers=D`` gives those fields. A bare path is ``file``.
    """
    kind, sep, rest = spec.partition(":")
    if not sep or kind not in ("file", "player", "lsl") or (len(kind) == 1 and Path(spec).exists()):
        if Path(spec).exists() or spec.lower().endswith((".csv", *MNE_SUFFIXES)):
            return "file", {"path": spec}
        raise UserError(f"--source {spec!r}: not a source. Give file:PATH (in-process replay), player:PATH (replay "
                        "through MNE-LSL's PlayerLSL), or lsl:NAME / lsl:name=NAME,type=TYPE,source_id=ID (a live "
                        "LSL stream).")
    if kind in ("file", "player"):
        if not rest:
            raise UserError(f"--source {spec!r}: give the recording after '{kind}:', e.g. {kind}:sub-01_raw.fif.")
        return kind, {"path": rest}
    fields: dict[str, str] = {}
    if "=" not in rest:
        fields["name"] = rest
    else:
        for part in rest.split(","):
            key, eq, value = part.partition("=")
            key = key.strip().lower().replace("-", "_")
            key = {"stype": "type", "id": "source_id"}.get(key, key)
            if not eq or key not in ("name", "type", "source_id", "markers"):
                raise UserError(f"--source {spec!r}: {part!r} is not name=..., type=..., source_id=... or "
                                "markers=... (the marker stream's name).")
            fields[key] = value.strip()
    if not any(fields.get(k) for k in ("name", "type", "source_id")):
        raise UserError(f"--source {spec!r}: an LSL source needs a name, type or source_id, e.g. lsl:MyAmp or "
                        "lsl:type=EEG.")
    return kind, fields


def open_source(spec: str, *, speed: float = 1.0, chunk_size: int | None = None, bufsize: float = 30.0,
                markers: str | None = None, csv_unit: str = "uV", timeout: float = 10.0) -> Source:
    """The source a ``--source`` text names (see the module docstring); not opened yet.

    Parameters
    ----------
    spec : str
        ``file:PATH``, ``player:PATH``, ``lsl:...`` or a path.
    speed : float
        Replay speed of ``file:`` and ``player:`` sources.
    chunk_size : int | None
        Samples per delivered chunk of a replay.
    bufsize : float
        Seconds the source buffers.
    markers : str | None
        Name of the LSL marker stream of an ``lsl:`` source (overridden by ``markers=`` in the spec).
    csv_unit : str
        Unit of a CSV recording's values.
    timeout : float
        Seconds to wait for an LSL stream to be found.
    """
    kind, fields = parse_source_spec(spec)
    if kind == "file":
        raw = read_recording(fields["path"], csv_unit=csv_unit)
        return ReplaySource(raw, speed=speed, chunk_size=chunk_size, bufsize=bufsize)
    from neurodecode.streaming.lsl import LSLSource, PlayerSource

    if kind == "player":
        raw = read_recording(fields["path"], csv_unit=csv_unit)
        return PlayerSource(raw, speed=speed, chunk_size=chunk_size, bufsize=bufsize, timeout=timeout)
    return LSLSource(fields.get("name"), fields.get("type"), fields.get("source_id"),
                     markers=fields.get("markers", markers), bufsize=bufsize, timeout=timeout)

