"""What the decoding loop is told and what it says: :class:`DecoderSettings` and :class:`Decision`.

:class:`DecoderSettings` gathers the options of :class:`~neurodecode.streaming.decoder.StreamDecoder`
(the command line's ``--mode``, ``--k``, ``--events``...); a :class:`Decision` is one decoded window,
and :meth:`Decision.to_json` its line in ``decisions.jsonl``. :func:`stimulus_of` reads the stimulus a
marker names.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from neurodecode.utils import UserError, check_option

__all__ = ["Decision", "DecoderSettings", "stimulus_of"]


@dataclass
class DecoderSettings:
    """How :class:`~neurodecode.streaming.decoder.StreamDecoder` decodes (``neurodecode stream --help``).

    Attributes
    ----------
    mode : {"event", "sliding"}
        Event-locked windows at markers, or a window every ``step`` seconds.
    k : int
        Candidates per decision.
    by : {"stimulus", "concept"}
        What is ranked.
    step, width : float, float | None
        Sliding mode: seconds between windows, and the width (``None``: the model's).
    events : str
        ``"auto"``, ``"markers"``, ``"stim"`` or ``"stim:CHANNEL"``.
    marker_pattern : str | None
        Decode only markers matching this regular expression.
    event_map : dict
        Stimulus-channel code -> marker text (``"stim/<id>"``).
    subject : int | None
        Training-subject index for the model (``None``: unseen subject).
    bufsize : float
        Seconds of samples the decoder keeps.
    batch_size : int
        Windows per forward pass when several are ready.
    stall_timeout, stop_after_silence : float, float | None
        Seconds without samples before saying so, and before stopping.
    late_threshold : float
        Stream seconds behind the pace that count as late.
    flat_policy : {"mean", "keep"}
        Hold flat or missing channels at their training mean, or keep them.
    device : str
        Where the model runs.
    threads : int | None
        CPU threads of torch and of NumPy's BLAS while decoding (``None``: as they are). One is best for
        one window at a time: each library keeps a pool whose threads spin after every operation, and
        on a busy machine an operation waits for the thread that has no core.
    """

    mode: str = "event"
    k: int = 5
    by: str = "stimulus"
    step: float = 0.2
    width: float | None = None
    events: str = "auto"
    marker_pattern: str | None = None
    event_map: dict[int, str] = field(default_factory=dict)
    subject: int | None = None
    bufsize: float = 30.0
    batch_size: int = 64
    stall_timeout: float = 2.0
    stop_after_silence: float | None = None
    late_threshold: float = 0.5
    flat_policy: str = "mean"
    device: str = "cpu"
    threads: int | None = None

    def __post_init__(self) -> None:
        check_option("mode", self.mode, ("event", "sliding"))
        check_option("by", self.by, ("stimulus", "concept"))
        check_option("flat_policy", self.flat_policy, ("mean", "keep"))
        if self.k < 1:
            raise UserError(f"--k {self.k}: give at least 1.")
        if self.mode == "sliding" and not self.step > 0:
            raise UserError(f"--step {self.step}: the sliding window's step must be positive (seconds).")


@dataclass
class Decision:
    """One decoded window.

    Attributes
    ----------
    index : int
        Its number in the run.
    event_time : float
        The event's time in the source's clock (the marker's timestamp, or a sliding window's t = 0).
    event_sample : int
        The event's sample, counted from the first sample received.
    topk, scores : list
        The best candidates, best first, and their cosine similarities.
    latency_ms : float
        From the arrival of the window's last sample to the decision.
    mode : str
        ``"event"`` or ``"sliding"``.
    marker, stimulus_id : str | None
        The marker's text and the stimulus it names.
    rank : int | None
        Rank of that stimulus among all candidates (1 = top-1), when it is in the gallery.
    flags : list of str
        ``"flat:<channel>"`` for channels held at their mean.
    embedding : ndarray | None
        The brain embedding (for live reconstruction; not written).
    compute_ms : float | None
        Of the latency, the time spent preprocessing, embedding and ranking.
    """

    index: int
    event_time: float
    event_sample: int
    topk: list[str]
    scores: list[float]
    latency_ms: float
    mode: str
    marker: str | None = None
    stimulus_id: str | None = None
    rank: int | None = None
    flags: list[str] = field(default_factory=list)
    embedding: np.ndarray | None = None
    compute_ms: float | None = None

    @property
    def correct(self) -> bool | None:
        """Whether the top-1 is the true stimulus (``None`` when it is unknown or not in the gallery)."""
        return None if self.rank is None else self.rank == 1

    def to_json(self) -> dict[str, Any]:
        """The JSON line of ``decisions.jsonl``."""
        d: dict[str, Any] = {"index": self.index, "event_time": round(self.event_time, 6),
                             "event_sample": self.event_sample, "topk": self.topk,
                             "scores": [round(float(s), 6) for s in self.scores],
                             "latency_ms": round(self.latency_ms, 3), "mode": self.mode}
        if self.compute_ms is not None:
            d["compute_ms"] = round(self.compute_ms, 3)
        if self.marker is not None:
            d["marker"] = self.marker
        if self.stimulus_id is not None:
            d["stimulus_id"] = self.stimulus_id
            d["rank"] = self.rank
            d["correct"] = self.correct
        if self.flags:
            d["flags"] = self.flags
        return d


def stimulus_of(description: str) -> str:
    """The stimulus a marker names: the text after ``stim/`` (the simulator's annotations), else all of it."""
    return description[5:] if description.startswith("stim/") else description
