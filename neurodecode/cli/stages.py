"""What a multi-stage command (the demo) has finished: one marker file per stage, written last.

A stage counts as done only when its marker exists and holds the hash of the stage's configuration,
and that hash includes the hashes of the stages it depends on: change the simulation and the fit,
the evaluation and the export are redone; change the number of epochs and the simulation is kept.
Markers are written atomically after the stage's outputs, so an interrupted stage has none.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from neurodecode.utils import atomic_write_json

__all__ = ["Stage", "StageBook", "config_hash"]


def config_hash(config: Any, upstream: tuple[str, ...] = ()) -> str:
    """A short, stable hash of a JSON-able ``config`` and the hashes of the stages it depends on."""
    blob = json.dumps({"config": config, "upstream": list(upstream)}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


@dataclass
class Stage:
    """One stage: its name, hash and, once run or found done, its seconds and key numbers."""

    name: str
    hash: str
    seconds: float | None = None
    numbers: dict[str, Any] = field(default_factory=dict)
    reused: bool = False


class StageBook:
    """The markers of one output folder (``<out>/stages/<name>.json``)."""

    def __init__(self, out: str | Path) -> None:
        self.folder = Path(out) / "stages"
        self.stages: list[Stage] = []

    def _path(self, name: str, suffix: str = "done") -> Path:
        return self.folder / f"{name}.{suffix}.json"

    def done(self, name: str, hash_: str) -> dict | None:
        """The marker of ``name`` if the stage finished with this configuration hash, else None."""
        path = self._path(name)
        if not path.is_file():
            return None
        try:
            marker = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        return marker if marker.get("hash") == hash_ else None

    def started(self, name: str, hash_: str) -> bool:
        """Whether ``name`` was started (and not finished) with this configuration hash."""
        path = self._path(name, "started")
        try:
            return json.loads(path.read_text()).get("hash") == hash_
        except (OSError, ValueError):
            return False

    def start(self, name: str, hash_: str, config: Any = None) -> None:
        """Record that ``name`` starts with ``hash_`` (and forget that it was done)."""
        self._path(name).unlink(missing_ok=True)
        atomic_write_json(self._path(name, "started"),
                          {"stage": name, "hash": hash_, "config": config, "started": time.time()})

    def finish(self, stage: Stage, config: Any = None) -> None:
        """Write the marker of a finished stage (after its outputs)."""
        atomic_write_json(self._path(stage.name), {
            "stage": stage.name, "hash": stage.hash, "config": config, "seconds": stage.seconds,
            "numbers": stage.numbers, "finished": time.time()})
        self._path(stage.name, "started").unlink(missing_ok=True)
        self.stages.append(stage)

    def reuse(self, name: str, marker: dict) -> Stage:
        """A stage found done: its recorded seconds and numbers."""
        st = Stage(name, marker["hash"], marker.get("seconds"), marker.get("numbers", {}), reused=True)
        self.stages.append(st)
        return st

    def table(self) -> str:
        """The closing table: stage, seconds (this run, or "done before"), key numbers."""
        rows = [("stage", "seconds", "key numbers")]
        for st in self.stages:
            secs = "-" if st.seconds is None else f"{st.seconds:.0f}"
            if st.reused:
                secs += " (done before)"
            nums = ", ".join(f"{k} {v}" for k, v in st.numbers.items()
                             if not isinstance(v, (dict, list)) and not k.endswith(("_checkpoint", "_path")))
            rows.append((st.name, secs, nums))
        w0 = max(len(r[0]) for r in rows) + 2
        w1 = max(len(r[1]) for r in rows) + 2
        return "\n".join(f"  {a.ljust(w0)}{b.ljust(w1)}{c}" for a, b, c in rows)
