"""The decoder's memory of the stream: recent samples by absolute index, and the stream's timeline.

:class:`SampleBuffer` keeps the last ``capacity`` preprocessed samples (picked and causally filtered)
with their timestamps and arrival times, indexed by the absolute number of the sample since the
stream started, and the *segments* of the timeline: runs of samples whose timestamps follow each
other at the nominal rate. A new segment starts where the timestamps jump, and the jump is
classified from the arrival times:

* a **gap** (forward jump, and the samples arrived after a pause that long): samples were lost, e.g.
  the source stopped and came back. The filter restarts, and a window across it is not decoded;
* a **clock jump** (forward or backward jump while samples kept arriving at their pace): the source's
  clock changed, the samples are continuous. Windows across it are decoded; markers are placed on the
  new clock.

:meth:`SampleBuffer.locate` maps a marker's timestamp to the sample it marks (the first sample at or
after it, within half a sample period, in the newest segment that holds it). Stimulus-channel events
(:func:`stim_onsets`) carry their sample directly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["Jump", "SampleBuffer", "Segment", "stim_onsets"]


@dataclass
class Segment:
    """Samples ``start`` (absolute) onwards whose timestamps run on from ``ts_start``."""

    start: int
    ts_start: float
    arrival_start: float


@dataclass
class Jump:
    """A discontinuity of the timestamps before absolute sample ``index``."""

    index: int
    seconds: float
    kind: str  # "gap" or "clock"
    paused: float  # wall seconds between the samples on either side


def stim_onsets(values: np.ndarray, previous: float) -> np.ndarray:
    """Positions in ``values`` where a stimulus channel changes to a non-zero value.

    ``previous`` is the channel's last value before ``values`` (0 at the start), so an event that
    straddles two chunks is found once. This is ``mne.find_events(..., consecutive=True)`` on the
    concatenated channel.
    """
    v = np.asarray(values)
    prev = np.concatenate([[previous], v[:-1]])
    return np.flatnonzero((v != 0) & (v != prev))


class SampleBuffer:
    """Recent samples and the timeline of a stream (see the module docstring).

    Parameters
    ----------
    n_channels : int
        Channels kept.
    capacity : int
        Samples kept.
    sfreq : float
        Nominal rate (Hz).
    speed : float
        Stream seconds per wall second of the source (1 for a live stream; ``inf``: as fast as possible).
    jump_tolerance : float | None
        Seconds by which a timestamp step may exceed one sample period before it counts as a jump
        (default: the larger of 0.1 s and 10 samples).
    """

    def __init__(self, n_channels: int, capacity: int, sfreq: float, *, speed: float = 1.0,
                 jump_tolerance: float | None = None) -> None:
        self.capacity = int(capacity)
        self.sfreq = float(sfreq)
        self.speed = float(speed)
        self.tol = float(jump_tolerance if jump_tolerance is not None else max(0.1, 10.0 / sfreq))
        self.data = np.zeros((n_channels, self.capacity))
        self.ts = np.full(self.capacity, np.nan)
        self.arrival = np.full(self.capacity, np.nan)
        self.total = 0
        self.segments: list[Segment] = []
        self.jumps: list[Jump] = []

    # ------------------------------------------------------------------------------------------
    @property
    def first(self) -> int:
        """Oldest absolute sample still held."""
        return max(0, self.total - self.capacity)

    def _find_jumps(self, ts: np.ndarray, arrival: np.ndarray) -> list[int]:
        """Positions in ``ts`` that start a new segment (recording a Jump for each)."""
        step = 1.0 / self.sfreq
        if self.total:
            last = int((self.total - 1) % self.capacity)
            prev_ts, prev_arr = self.ts[last], self.arrival[last]
        else:
            prev_ts, prev_arr = np.nan, np.nan
        d = np.diff(np.concatenate([[prev_ts], ts]))
        cuts = np.flatnonzero(np.abs(d - step) > self.tol)
        starts = []
        for c in cuts.tolist():
            jump = float(d[c])
            before_arr = prev_arr if c == 0 else arrival[c - 1]
            paused = float(arrival[c] - before_arr)
            if jump > 0 and not math.isinf(self.speed):
                kind = "gap" if paused >= 0.5 * (jump - step) / self.speed else "clock"
            else:
                kind = "gap" if jump > 0 else "clock"
            self.jumps.append(Jump(self.total + c, jump - step if jump > 0 else jump, kind, paused))
            starts.append(c)
        return starts

    def scan(self, ts: np.ndarray, arrival: np.ndarray) -> list[Jump]:
        """Register the timeline of samples about to be stored; returns their jumps (``Jump.index`` absolute).

        Call :meth:`store` with the same samples next (the decoder filters them in between, restarting
        the filter at each gap).
        """
        if ts.shape[0] == 0:
            return []
        before = len(self.jumps)
        if not self.segments:
            self.segments.append(Segment(0, float(ts[0]), float(arrival[0])))
            cuts = [c for c in self._find_jumps(ts, arrival) if c > 0]
            self.jumps = [j for j in self.jumps if j.index > 0]
        else:
            cuts = self._find_jumps(ts, arrival)
        for c in cuts:
            self.segments.append(Segment(self.total + c, float(ts[c]), float(arrival[c])))
        if len(self.segments) > 64:  # keep the timeline bounded: old segments have left the buffer
            keep = [s for s in self.segments if s.start >= self.first]
            self.segments = self.segments[-max(1, len(keep) + 1):]
        if len(self.jumps) > 256:
            self.jumps = [j for j in self.jumps if j.index >= self.first] or self.jumps[-1:]
            before = min(before, len(self.jumps))
        return self.jumps[before:]

    def store(self, data: np.ndarray, ts: np.ndarray, arrival: np.ndarray) -> None:
        """Store samples ``(n_channels, n)`` (after :meth:`scan`)."""
        n = int(ts.shape[0])
        if n == 0:
            return
        skip = max(0, n - self.capacity)
        if skip:
            data, ts, arrival = data[:, skip:], ts[skip:], arrival[skip:]
        pos = np.arange(self.total + skip, self.total + n) % self.capacity
        self.data[:, pos] = data
        self.ts[pos] = ts
        self.arrival[pos] = arrival
        self.total += n

    def append(self, data: np.ndarray, ts: np.ndarray, arrival: np.ndarray) -> list[Jump]:
        """:meth:`scan` then :meth:`store`; returns the new jumps."""
        jumps = self.scan(ts, arrival)
        self.store(data, ts, arrival)
        return jumps

    # ------------------------------------------------------------------------------------------
    def available(self, start: int, stop: int) -> str:
        """``"ok"``, ``"future"`` (not all arrived), ``"lost"`` (partly overwritten) for samples ``[start, stop)``."""
        if stop > self.total:
            return "future"
        if start < self.first:
            return "lost"
        return "ok"

    def window(self, start: int, stop: int) -> np.ndarray:
        """Samples ``[start, stop)`` as ``(n_channels, stop - start)`` (they must be held)."""
        pos = np.arange(start, stop) % self.capacity
        return self.data[:, pos]

    def last_arrival(self, stop: int) -> float:
        """Arrival time of sample ``stop - 1``."""
        return float(self.arrival[(stop - 1) % self.capacity])

    def timestamp(self, index: int) -> float:
        """Timestamp of a held sample."""
        return float(self.ts[index % self.capacity])

    def gap_inside(self, start: int, stop: int) -> Jump | None:
        """The first gap (lost samples) between samples ``start`` and ``stop - 1``, if any."""
        for j in self.jumps:
            if j.kind == "gap" and start < j.index < stop:
                return j
        return None

    def locate(self, timestamp: float) -> tuple[str, int]:
        """Where a marker's ``timestamp`` falls.

        Returns
        -------
        status : str
            ``"ok"`` (sample found), ``"future"`` (after the newest sample: wait), ``"lost"`` (its
            samples have left the buffer) or ``"gap"`` (between segments, where no sample was received).
        index : int
            The absolute sample (meaningful for ``"ok"``).
        """
        if not self.segments:
            return "future", -1
        half = 0.5 / self.sfreq
        for k in range(len(self.segments) - 1, -1, -1):
            seg = self.segments[k]
            end = self.segments[k + 1].start if k + 1 < len(self.segments) else self.total
            lo = max(seg.start, self.first)
            if timestamp < seg.ts_start - half:
                continue  # before this segment: try the one before
            if lo >= end:
                return "lost", -1
            stamps = self.ts[np.arange(lo, end) % self.capacity]
            i = int(np.searchsorted(stamps, timestamp - half, side="left"))
            if i >= len(stamps):
                if k == len(self.segments) - 1:
                    return "future", -1
                return "gap", -1
            if i == 0 and lo > seg.start and timestamp < stamps[0] - half:
                return "lost", -1
            return "ok", lo + i
        return ("lost", -1) if self.first > 0 else ("gap", -1)
