"""What the online preprocessing must compute, read from what the exported model recorded.

An exported model (``neurodecode export``) records its input: the channels in order, the sampling
rate, the epoch's times (``tmin``, ``n_times``) and the input normalisation fitted on its training
data. How those epochs were made (filter, baseline, resampling, scaling, MVNN) is the provenance of
the trial stores it was trained on, which the model names (``data.root`` and ``data.subject``).
:func:`recipe_from_model` reads both into an :class:`OnlineRecipe`: the same steps, in the same
order, for one epoch at a time (:mod:`neurodecode.streaming.online` computes them).

The steps the trial stores can record, and what happens online:

``simulate``
    epochs straight from the simulator: the window only.
``mne_epochs`` (``prepare epochs``, THINGS-MEG)
    a filter, resampling, baseline and crop applied by MNE *to each epoch*: reproduced exactly online,
    once the epoch's window is complete (a window of the original ``-epo.fif``, read from its header
    when the file is still there).
``mne_epochs`` after ``read_csv`` (``prepare csv``), ``band_pass`` (THINGS-EEG2 raw)
    a filter of the *continuous* recording: zero-phase FIR offline (MNE's default, which looks at the
    future), a causal Butterworth filter online (order 4 by default, scipy's ``sosfilt`` with its state
    carried from chunk to chunk). That is the one documented difference: the magnitude responses are
    close in the pass band, but the causal filter delays and distorts the phase (its group delay in
    the pass band is in the recipe's notes); it starts in its steady state for the first sample.
``epoch`` (THINGS-EEG2 raw)
    window, baseline, resampling, crop, as :func:`neurodecode.preprocessing.epoching.epoch_operator`.
``scale_per_channel``
    the per-channel scaling fitted on training trials (from the store's ``scaler`` attribute).
``mvnn`` / ``things_eeg2.read_preprocessed``
    whitening fitted on training data per session, which the stores do not keep: give the whitener
    (``--mvnn FILE``, see :func:`neurodecode.streaming.online.fit_whitener`) or accept its absence
    (``--no-mvnn``); otherwise :func:`recipe_from_model` refuses, naming both fixes.

A ``preprocessing`` entry in the model's ``config.json`` (the dictionary of
:meth:`OnlineRecipe.to_dict`) is used as is, in place of the provenance.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from neurodecode.utils import PathLike, UserError, logger

__all__ = ["OnlineRecipe", "find_training_store", "recipe_from_model"]


@dataclass
class OnlineRecipe:
    """The per-epoch computation from stream samples to the model's input.

    Attributes
    ----------
    channels : list of str
        The model's channels, in its order.
    sfreq, tmin : float
        The model's sampling rate and the time of its first input sample (s from the event).
    n_times : int
        Input samples.
    window : tuple of float | None
        Window cut around the event (s, both ends included) before the epoch steps; ``None``: the
        model's window.
    epoch_steps : list of dict
        Linear steps applied by MNE to each cut epoch, in order: ``{"filter": [l, h], "method": m}``,
        ``{"resample": sfreq, "method": m}``, ``{"baseline": [a, b]}``, ``{"crop": [tmin, tmax]}``.
    stream_filter : dict | None
        ``{"l_freq": l, "h_freq": h, "order": n}``: causal Butterworth filter of the continuous stream.
    post : list of str
        ``"scaler"`` and/or ``"mvnn"``, in the order the training data had them.
    scaler : dict | None
        ``{"center": [...], "scale": [...], "clamp": c}`` per channel.
    mvnn : ndarray | None
        Whitener ``(n_chans, n_chans)``.
    scale : float
        Factor applied to incoming samples (unit conversion, e.g. 1e-6 for a stream in µV).
    notes : list of str
        Where each part came from, and what differs from the offline path.
    """

    channels: list[str]
    sfreq: float
    tmin: float
    n_times: int
    window: tuple[float, float] | None = None
    epoch_steps: list[dict[str, Any]] = field(default_factory=list)
    stream_filter: dict[str, Any] | None = None
    post: list[str] = field(default_factory=list)
    scaler: dict[str, Any] | None = None
    mvnn: np.ndarray | None = None
    scale: float = 1.0
    notes: list[str] = field(default_factory=list)

    @property
    def duration(self) -> float:
        """Seconds the model's input spans (``n_times / sfreq``)."""
        return self.n_times / self.sfreq

    def raw_window(self, stream_sfreq: float | None = None) -> tuple[float, float]:
        """The window cut around each event (s, both ends included): :attr:`window`, or the span of the
        model's input at the stream's rate (``stream_sfreq``, default the model's)."""
        if self.window is not None:
            return float(self.window[0]), float(self.window[1])
        return self.tmin, self.tmin + self.n_times / self.sfreq - 1.0 / (stream_sfreq or self.sfreq)

    def to_dict(self) -> dict[str, Any]:
        """JSON form (the ``preprocessing`` entry a ``config.json`` may carry, and the run summary's)."""
        return {"channels": list(self.channels), "sfreq": self.sfreq, "tmin": self.tmin, "n_times": self.n_times,
                "window": None if self.window is None else list(self.window), "epoch_steps": self.epoch_steps,
                "stream_filter": self.stream_filter, "post": list(self.post), "scaler": self.scaler,
                "mvnn": None if self.mvnn is None else np.asarray(self.mvnn).tolist(), "scale": self.scale,
                "notes": list(self.notes)}

    def override(self, *, l_freq: float | None = None, h_freq: float | None = None, no_filter: bool = False,
                 order: int | None = None, baseline: tuple[float | None, float | None] | None = None,
                 window: tuple[float, float] | None = None, scale: float | None = None) -> OnlineRecipe:
        """Replace parts of the recipe (the command line's ``--l-freq``, ``--baseline``...); returns ``self``."""
        if no_filter:
            if self.stream_filter is not None:
                self.notes.append("causal filter turned off (--no-filter)")
            self.stream_filter = None
        elif l_freq is not None or h_freq is not None:
            self.stream_filter = {"l_freq": l_freq, "h_freq": h_freq, "order": order or 4}
            self.notes.append(stream_filter_note(self.stream_filter) + " (set on the command line)")
        elif order is not None and self.stream_filter is not None:
            self.stream_filter["order"] = int(order)
        if baseline is not None:
            steps = [s for s in self.epoch_steps if "baseline" not in s]
            at = next((i for i, s in enumerate(steps) if "crop" in s), len(steps))
            steps.insert(at, {"baseline": _pair(baseline)})
            self.epoch_steps = steps
            self.notes.append(f"baseline {baseline} (set on the command line)")
        if window is not None:
            self.window = (float(window[0]), float(window[1]))
            self.notes.append(f"window {window[0]:g} to {window[1]:g} s (set on the command line)")
        if scale is not None:
            self.scale = float(scale)
        return self

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> OnlineRecipe:
        """Inverse of :meth:`to_dict`."""
        kw = dict(d)
        if kw.get("window") is not None:
            kw["window"] = tuple(kw["window"])
        if kw.get("mvnn") is not None:
            kw["mvnn"] = np.asarray(kw["mvnn"], dtype=np.float64)
        allowed = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in kw.items() if k in allowed})


# --------------------------------------------------------------------------------------------------
def find_training_store(config: dict[str, Any]) -> Path | None:
    """The trial store a model was trained on (``data.root``/``sub-<subject>.h5``), if it is still there."""
    data = config.get("data", {})
    root = data.get("root")
    if not root or not Path(root).is_dir():
        return None
    subjects = [data.get("subject")] + list(data.get("train_subjects") or [])
    for s in subjects:
        if s and (Path(root) / f"sub-{s}.h5").is_file():
            return Path(root) / f"sub-{s}.h5"
    found = sorted(Path(root).glob("sub-*.h5"))
    return found[0] if found else None


def _epochs_window(source: str | None) -> tuple[float, float] | None:
    """(tmin, tmax) of an ``-epo.fif`` file's epochs, read from its header, when it is there."""
    if not source or not Path(source).is_file():
        return None
    import mne

    try:
        ep = mne.read_epochs(source, preload=False, verbose="ERROR")
    except Exception:  # noqa: BLE001 - an unreadable file only costs the window
        return None
    return float(ep.tmin), float(ep.tmax)


def _pair(value: Any) -> list[float | None] | None:
    return None if value is None else [None if v is None else float(v) for v in value]


def _apply_provenance(recipe: OnlineRecipe, steps: list[dict[str, Any]], attrs: dict[str, Any], where: str) -> bool:
    """Fill ``recipe`` from a store's provenance; returns whether whitening (MVNN) was applied offline."""
    names = [s.get("step") for s in steps]
    continuous = "read_csv" in names  # prepare csv filters whole files before epoching
    whitened = False
    for st in steps:
        name, p = st.get("step"), st.get("params", {})
        if name == "simulate":
            recipe.notes.append(f"{where}: simulated epochs (no filter, baseline or resampling): the window only")
        elif name == "read_epochs":
            win = _epochs_window(p.get("source"))
            if win is not None:
                recipe.window = win
                recipe.notes.append(f"window {win[0]:g} to {win[1]:g} s: the epochs of {p.get('source')}")
            else:
                recipe.notes.append(f"the original epochs file ({p.get('source')}) is gone: the window is the "
                                    "model's (give --window to cut another)")
        elif name == "mne_epochs" and continuous:
            if p.get("l_freq") is not None or p.get("h_freq") is not None:
                recipe.stream_filter = {"l_freq": p.get("l_freq"), "h_freq": p.get("h_freq"), "order": 4}
            recipe.window = (float(p["tmin"]), float(p["tmax"]))
            if p.get("baseline") is not None:
                recipe.epoch_steps.append({"baseline": _pair(p["baseline"])})
        elif name == "mne_epochs":
            if p.get("l_freq") is not None or p.get("h_freq") is not None:
                recipe.epoch_steps.append({"filter": [p.get("l_freq"), p.get("h_freq")],
                                           "method": p.get("filter_method", "fir")})
            if p.get("sfreq") is not None:
                recipe.epoch_steps.append({"resample": float(p["sfreq"]), "method": p.get("resample_method", "fft")})
            if p.get("baseline") is not None:
                recipe.epoch_steps.append({"baseline": _pair(p["baseline"])})
            if p.get("tmin") is not None or p.get("tmax") is not None:
                recipe.epoch_steps.append({"crop": [p.get("tmin"), p.get("tmax")]})
        elif name == "band_pass":
            recipe.stream_filter = {"l_freq": p.get("l_freq"), "h_freq": p.get("h_freq"), "order": 4}
        elif name == "epoch":
            recipe.window = (float(p["tmin"]), float(p["tmax"]))
            if p.get("baseline") is not None:
                recipe.epoch_steps.append({"baseline": _pair(p["baseline"])})
            if p.get("resample_sfreq") is not None:
                recipe.epoch_steps.append({"resample": float(p["resample_sfreq"]), "method": "fft"})
            crop = p.get("crop") or [None, None]
            if any(c is not None for c in crop):
                recipe.epoch_steps.append({"crop": list(crop), "include_tmax": True})
        elif name == "scale_per_channel":
            sc = attrs.get("scaler")
            if isinstance(sc, str):
                sc = json.loads(sc)
            if not sc:
                raise UserError(f"{where}: provenance says the epochs were scaled per channel, but the store has no "
                                "'scaler' attribute; re-prepare the data or give the recipe in config.json "
                                "('preprocessing').")
            recipe.scaler = {"center": list(sc["center"]), "scale": list(sc["scale"]), "clamp": sc.get("clamp")}
            recipe.post.append("scaler")
        elif name in ("mvnn", "things_eeg2.read_preprocessed"):
            whitened = True
            recipe.post.append("mvnn")
            _kept_whitener(recipe, Path(where))
        elif name not in ("read_csv", "select_repetitions", "things_eeg2.read_raw", "things_meg_select"):
            recipe.notes.append(f"{where}: provenance step {name!r} is not reproduced online")
    if recipe.stream_filter is not None:
        recipe.notes.append(stream_filter_note(recipe.stream_filter))
    return whitened


def _kept_whitener(recipe: OnlineRecipe, store: Path) -> None:
    """Use the whitener ``prepare`` kept beside the store (raw THINGS-EEG2: the mean of the training sessions')."""
    path = store.with_suffix(".mvnn.npz")
    if not path.is_file():
        return
    with np.load(path, allow_pickle=False) as f:
        channels, w = [str(c) for c in f["channels"]], np.asarray(f["whitener"], dtype=np.float64)
    if channels != list(recipe.channels):  # whitening mixes channels: only valid on the channels it was fitted on
        recipe.notes.append(f"{path}: the kept whitener is over {len(channels)} channels, the model reads "
                            f"{len(recipe.channels)}: not used")
        return
    recipe.mvnn = w
    recipe.notes.append(f"MVNN: the whitener of the training sessions' mean noise covariance ({path.name})")


def stream_filter_note(f: dict[str, Any]) -> str:
    """The documented difference between the offline and the online filter."""
    band = f"{f.get('l_freq')}-{f.get('h_freq')} Hz"
    return (f"filter {band}: offline, MNE's zero-phase FIR on the continuous recording (it uses future samples); "
            f"online, a causal order-{f.get('order', 4)} Butterworth (scipy sosfilt, state kept across chunks, started "
            "in its steady state): similar magnitude response, but delayed phase (group delay in the summary)")


def recipe_from_model(config: dict[str, Any], *, store: PathLike | None = None, mvnn: np.ndarray | None = None,
                      no_mvnn: bool = False) -> OnlineRecipe:
    """The online recipe of an exported model.

    Parameters
    ----------
    config : dict
        The model's ``config.json`` (``PretrainedDecoder.config``).
    store : path-like | None
        A trial store whose provenance describes the training epochs; default: the store the model
        names (:func:`find_training_store`), if it is still there.
    mvnn : ndarray | None
        A whitener ``(n_chans, n_chans)`` in the model's channel order.
    no_mvnn : bool
        Go on without whitening although the training data were whitened.

    Returns
    -------
    recipe : OnlineRecipe
    """
    data = config.get("data", {})
    missing = [k for k in ("channels", "sfreq", "tmin", "n_times") if data.get(k) is None]
    if missing:
        raise UserError(f"the model's config.json has no data.{missing[0]} (fields {missing}): it was not trained on "
                        "EEG/MEG epochs, or was exported by an old version; re-export it with 'neurodecode export'.")
    base = {"channels": list(data["channels"]), "sfreq": float(data["sfreq"]), "tmin": float(data["tmin"]),
            "n_times": int(data["n_times"])}
    if config.get("preprocessing"):
        recipe = OnlineRecipe.from_dict({**config["preprocessing"], **base})
        recipe.notes.append("the recipe recorded in the model's config.json ('preprocessing')")
        whitened = recipe.mvnn is not None or "mvnn" in recipe.post
    else:
        recipe = OnlineRecipe(**base)
        path = Path(store) if store is not None else find_training_store(config)
        whitened = False
        if path is None:
            recipe.notes.append("the training stores are not on this machine (data.root): no filter, baseline or "
                                "scaling beyond the model's input normalisation (give --store to read them)")
        else:
            from neurodecode.io.store import TrialStore

            with TrialStore(path) as ts:
                steps, attrs = ts.provenance, ts.attrs
            whitened = _apply_provenance(recipe, steps, attrs, str(path))
    if mvnn is not None:
        w = np.asarray(mvnn, dtype=np.float64)
        n = len(recipe.channels)
        if w.shape != (n, n):
            raise UserError(f"--mvnn: the whitener has shape {w.shape}; the model has {n} channels, so it must be "
                            f"({n}, {n}) in the model's channel order.")
        recipe.mvnn = w
        if "mvnn" not in recipe.post:
            recipe.post.append("mvnn")
        recipe.notes.append("MVNN whitener given (--mvnn)")
    elif whitened and recipe.mvnn is None:
        if not no_mvnn:
            raise UserError("the model's training data were whitened (MVNN, fitted per session on training data), "
                            "and no whitener was kept beside the store (the preprocessed THINGS-EEG2 release comes "
                            "whitened; raw sessions prepared by neurodecode keep sub-XX.mvnn.npz): give it with --mvnn FILE.npy (fit one on a calibration "
                            "recording with neurodecode.streaming.online.fit_whitener), or pass --no-mvnn to decode "
                            "without whitening (expect lower accuracy).")
        recipe.post = [p for p in recipe.post if p != "mvnn"]
        recipe.notes.append("MVNN left out (--no-mvnn): the training data were whitened, the stream is not")
    logger.info("online recipe: " + "; ".join(recipe.notes))
    return recipe
