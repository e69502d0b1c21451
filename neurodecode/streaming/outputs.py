"""Where decisions go: JSON lines on disk, an LSL outlet of their own, and a live table in the terminal.

:class:`JsonLines` writes one JSON object per line and flushes it to the operating system at once
(``fsync=True`` also forces it to the disk), so a crash or a Ctrl-C loses nothing already decided:
``decisions.jsonl`` (fields ``index``, ``event_time``, ``event_sample``, ``topk``, ``scores``,
``latency_ms``, ``mode``, and ``marker``, ``stimulus_id``, ``rank``, ``correct`` when the marker names
a stimulus) and ``events.jsonl`` (``time``, ``kind``, ``message``: the faults and status messages).

:class:`DecisionOutlet` pushes every decision as a JSON string on an LSL stream of type ``Markers``
(irregular rate), so a stimulus program can react to it; it goes through
:func:`neurodecode.streaming.lslconfig.import_mne_lsl` and stays on this machine.

:class:`LiveTable` shows, with ``rich``, the last decisions (true stimulus, top-k, score, latency), the
running top-1 where the true stimulus is known, latency p50/p99, samples received and dropped, and the
latest messages. :class:`Outputs` puts the three together for :class:`~neurodecode.streaming.decoder.StreamDecoder`.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import sys
import time
from collections import deque
from pathlib import Path
from typing import IO, Any

from neurodecode.utils import PathLike, UserError, atomic_write_json, to_jsonable

__all__ = ["DecisionOutlet", "JsonLines", "LiveTable", "Outputs", "read_jsonl"]


class JsonLines:
    """Append JSON objects to a file, one per line, flushed per line.

    Parameters
    ----------
    path : path-like
        The file (created; an existing non-empty one is refused unless ``overwrite``).
    overwrite : bool
        Replace an existing file.
    fsync : bool
        Also ``os.fsync`` after every line (safe against power loss; slower).
    """

    def __init__(self, path: PathLike, *, overwrite: bool = False, fsync: bool = False) -> None:
        self.path = Path(path)
        if self.path.is_file() and self.path.stat().st_size > 0 and not overwrite:
            n = sum(1 for _ in self.path.open())
            raise UserError(f"{self.path} already holds {n} line(s) from an earlier run: give another --out, or "
                            "--overwrite to replace it.")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh: IO[str] | None = self.path.open("w", encoding="utf-8")
        self.fsync = fsync
        self.n = 0

    def write(self, obj: dict[str, Any]) -> None:
        """Write one line and flush it."""
        if self._fh is None:
            raise ValueError(f"{self.path} is closed.")
        self._fh.write(json.dumps(to_jsonable(obj), allow_nan=True) + "\n")
        self._fh.flush()
        if self.fsync:
            os.fsync(self._fh.fileno())
        self.n += 1

    def close(self) -> None:
        """Flush to disk and close."""
        if self._fh is not None:
            self._fh.flush()
            os.fsync(self._fh.fileno())
            self._fh.close()
            self._fh = None


def read_jsonl(path: PathLike) -> list[dict[str, Any]]:
    """The complete lines of a JSON-lines file (a last line cut by a crash is left out)."""
    out = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            break
    return out


class DecisionOutlet:
    """An LSL outlet (type ``Markers``, one string channel) that carries each decision as JSON.

    Parameters
    ----------
    name : str
        Stream name (``neurodecode-decisions`` by default); the source id adds the process id.
    """

    def __init__(self, name: str = "neurodecode-decisions") -> None:
        from neurodecode.streaming.lslconfig import import_mne_lsl

        lsl = import_mne_lsl().lsl
        self.name = name
        info = lsl.StreamInfo(name, "Markers", 1, 0.0, "string", f"{name}-{os.getpid()}")
        info.set_channel_names(["decision"])
        self._outlet = lsl.StreamOutlet(info)
        self._clock = lsl.local_clock

    def push(self, decision: dict[str, Any]) -> None:
        """Push one decision (its JSON line)."""
        self._outlet.push_sample([json.dumps(to_jsonable(decision))], timestamp=self._clock())

    def close(self) -> None:
        """Drop the outlet."""
        self._outlet = None


class LiveTable:
    """A ``rich`` live view of the last decisions and the running numbers.

    Parameters
    ----------
    title : str
        The first line (model, source, mode).
    rows : int
        Decisions shown.
    console : rich.console.Console | None
        Where to draw (default: standard output).
    """

    def __init__(self, title: str, *, rows: int = 12, console: Any = None) -> None:
        from rich.console import Console
        from rich.live import Live

        self.console = console or Console()
        self.title = title
        self.rows: deque[dict[str, Any]] = deque(maxlen=rows)
        self.messages: deque[str] = deque(maxlen=4)
        self.stats: dict[str, Any] = {}
        self._live = Live(self._render(), console=self.console, refresh_per_second=4, transient=False)
        self._live.start()
        self._last = 0.0

    def _render(self) -> Any:
        from rich.console import Group
        from rich.table import Table
        from rich.text import Text

        t = Table(title=self.title, expand=False, title_justify="left")
        for col, kw in (("#", {"justify": "right"}), ("t (s)", {"justify": "right"}), ("seen", {}), ("top-k", {}),
                        ("score", {"justify": "right"}), ("ms", {"justify": "right"})):
            t.add_column(col, **kw)
        for r in self.rows:
            mark = "" if r.get("correct") is None else (" [green]✓[/]" if r["correct"] else " [red]✗[/]")
            t.add_row(str(r["index"]), f"{r['event_time']:.2f}", (r.get("stimulus_id") or "-") + mark,
                      ", ".join(r["topk"][:3]), f"{r['scores'][0]:.3f}", f"{r['latency_ms']:.1f}")
        s = self.stats
        top1 = "-" if s.get("top1") is None else f"{s['top1']:.1%} of {s['known']}"
        p50 = "-" if s.get("latency_ms_p50") is None else f"{s['latency_ms_p50']:.1f}"
        p99 = "-" if s.get("latency_ms_p99") is None else f"{s['latency_ms_p99']:.1f}"
        line = (f"decisions {s.get('decisions', 0)} | running top-1 {top1} | latency p50 {p50} ms, p99 {p99} ms | "
                f"samples {s.get('samples_received', 0)} received, {s.get('samples_dropped', 0)} dropped"
                f"{' | STALLED' if s.get('stalled') else ''}")
        return Group(t, Text(line), *[Text(m, style="yellow") for m in self.messages])

    def decision(self, d: dict[str, Any]) -> None:
        """Add a decision row."""
        self.rows.append(d)

    def message(self, text: str) -> None:
        """Show a message under the table."""
        self.messages.append(text)
        self._live.update(self._render())

    def update(self, stats: dict[str, Any]) -> None:
        """Refresh the numbers (at most 4 times a second)."""
        self.stats = stats
        now = time.perf_counter()
        if now - self._last > 0.25:
            self._last = now
            self._live.update(self._render())

    def close(self) -> None:
        """Draw the last state and stop."""
        self._live.update(self._render())
        self._live.stop()
        self.console.print()


class Outputs:
    """Decisions and events to ``DIR/decisions.jsonl`` and ``DIR/events.jsonl``, an LSL outlet and the terminal.

    Parameters
    ----------
    out : path-like
        Output folder.
    outlet : bool
        Push decisions on an LSL outlet (:class:`DecisionOutlet`).
    live : bool | None
        Show the live table; ``None``: when standard output is a terminal.
    quiet : bool
        Without the live table, print nothing per decision (messages still go to standard error).
    overwrite, fsync : bool
        See :class:`JsonLines`.
    title : str
        The live table's title.
    on_decision : callable | None
        Also called with each Decision (the reconstruction worker).
    """

    def __init__(self, out: PathLike, *, outlet: bool = False, live: bool | None = None, quiet: bool = False,
                 overwrite: bool = False, fsync: bool = False, title: str = "neurodecode stream",
                 on_decision: Any = None) -> None:
        self.out = Path(out)
        if self.out.exists() and not self.out.is_dir():
            raise UserError(f"--out {self.out} is a file; give a folder for decisions.jsonl, events.jsonl and summary.json.")
        self.decisions = JsonLines(self.out / "decisions.jsonl", overwrite=overwrite, fsync=fsync)
        self.events = JsonLines(self.out / "events.jsonl", overwrite=True, fsync=fsync)
        self.outlet = DecisionOutlet() if outlet else None
        live = sys.stdout.isatty() if live is None else live
        self.live = LiveTable(title) if live else None
        self.quiet = quiet
        self.extra = on_decision

    def decision(self, d: Any) -> None:
        """Write, push and show one decision."""
        row = d.to_json()
        self.decisions.write(row)
        if self.outlet is not None:
            self.outlet.push(row)
        if self.live is not None:
            self.live.decision(row)
        elif not self.quiet:
            truth = f" seen {row['stimulus_id']}{' ✓' if row.get('correct') else ''}" if "stimulus_id" in row else ""
            print(f"#{row['index']} t={row['event_time']:.3f}{truth}: {', '.join(row['topk'][:3])} "
                  f"({row['scores'][0]:.3f}) {row['latency_ms']:.1f} ms", flush=True)
        if self.extra is not None:
            self.extra(d)

    def event(self, kind: str, message: str) -> None:
        """Log and show a fault or status message."""
        self.events.write({"time": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds"),
                           "kind": kind, "message": message})
        if self.live is not None:
            self.live.message(f"[{kind}] {message}")
        else:
            print(f"[{kind}] {message}", file=sys.stderr, flush=True)

    def tick(self, stats: dict[str, Any]) -> None:
        """Refresh the live numbers."""
        if self.live is not None:
            self.live.update(stats)

    def close(self, summary: dict[str, Any] | None = None) -> None:
        """Close the files (and write ``summary.json`` atomically)."""
        if self.live is not None:
            if summary is not None:
                self.live.stats = summary.get("stats", summary)
            self.live.close()
        self.decisions.close()
        self.events.close()
        if self.outlet is not None:
            self.outlet.close()
        if summary is not None:
            atomic_write_json(self.out / "summary.json", to_jsonable(summary))
