"""Online preprocessing: stream samples in, the model's input out, as the offline path computes it.

:class:`OnlinePreprocessor` carries out an :class:`~neurodecode.streaming.recipe.OnlineRecipe` in two
stages.

*Per chunk, causally* (:meth:`OnlinePreprocessor.process_chunk`): the model's channels are picked by
name in the model's order (a missing channel is an error that lists them; names that differ only in
case are matched and said so), multiplied by the recipe's unit factor, and filtered by the causal
Butterworth filter of the recipe, if any (:class:`CausalFilter`: second-order sections through
``scipy.signal.sosfilt`` with the state ``zi`` carried from chunk to chunk, so chunking never changes
the output, started in the steady state of the first sample, reset after a gap in the data).

*Per epoch, once its window is complete* (:meth:`OnlinePreprocessor.epochs`): the epoch steps
(MNE filter of the epoch, resampling, baseline, crop) form one linear map of the window's samples,
which :func:`epoch_matrix` obtains by running those MNE steps on unit impulses (so it is MNE's own
computation, padding and windowing included, the idea of
:func:`neurodecode.preprocessing.epoching.epoch_operator`); then the per-channel scaling and the MVNN
whitener in the order the training data had them. The model's own input normalisation is applied by
the model (:class:`~neurodecode.training.export.PretrainedDecoder`).

:func:`fit_whitener` fits an MVNN whitener on calibration epochs
(:class:`neurodecode.preprocessing.mvnn.MVNN`), for models whose training data were whitened.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from neurodecode.streaming.recipe import OnlineRecipe
from neurodecode.streaming.sources import StreamInfo
from neurodecode.utils import PathLike, UserError

__all__ = ["CausalFilter", "OnlinePreprocessor", "epoch_matrix", "fit_whitener", "load_whitener", "pick_channels"]


class CausalFilter:
    """A causal Butterworth filter whose state survives from chunk to chunk.

    Parameters
    ----------
    l_freq, h_freq : float | None
        High-pass and low-pass edges (Hz); one of them may be ``None``.
    sfreq : float
        Sampling rate (Hz).
    order : int
        Butterworth order per edge (a band-pass has twice as many poles).
    """

    def __init__(self, l_freq: float | None, h_freq: float | None, sfreq: float, order: int = 4) -> None:
        from scipy.signal import butter, sosfilt_zi

        nyq = sfreq / 2
        if l_freq is None and h_freq is None:
            raise ValueError("a filter needs l_freq or h_freq.")
        for name, f in (("l_freq", l_freq), ("h_freq", h_freq)):
            if f is not None and not 0 < f < nyq:
                raise UserError(f"filter {name}={f} Hz is outside (0, {nyq:g}) Hz, the band of a {sfreq:g} Hz stream.")
        if l_freq is not None and h_freq is not None:
            if l_freq >= h_freq:
                raise UserError(f"filter l_freq={l_freq} must be below h_freq={h_freq}.")
            wn, btype = [l_freq, h_freq], "bandpass"
        elif l_freq is not None:
            wn, btype = l_freq, "highpass"
        else:
            wn, btype = h_freq, "lowpass"
        self.l_freq, self.h_freq, self.sfreq, self.order = l_freq, h_freq, float(sfreq), int(order)
        self.sos = butter(int(order), wn, btype=btype, fs=sfreq, output="sos")
        self._zi_unit = sosfilt_zi(self.sos)  # (n_sections, 2)
        self.zi: np.ndarray | None = None

    def reset(self) -> None:
        """Forget the state: the next chunk starts in the steady state of its first sample."""
        self.zi = None

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Filter ``x`` of shape ``(n_channels, n_samples)``, continuing from the previous call."""
        from scipy.signal import sosfilt

        if x.shape[1] == 0:
            return x
        if self.zi is None:
            self.zi = self._zi_unit[:, None, :] * x[None, :, 0, None]
        y, self.zi = sosfilt(self.sos, x, axis=-1, zi=self.zi)
        return y

    def group_delay_ms(self, freq: float | None = None) -> float:
        """Group delay (ms) at ``freq`` (default: the pass band's geometric centre, or 10 Hz if open)."""
        from scipy.signal import sosfreqz

        if freq is None:
            lo = self.l_freq or 0.0
            hi = self.h_freq or self.sfreq / 2
            freq = float(np.sqrt(max(lo, 0.5) * hi)) if self.l_freq and self.h_freq else (10.0 if lo < 10 < hi else
                                                                                          (lo + hi) / 2)
        f = np.array([freq * 0.99, freq * 1.01])
        _, h = sosfreqz(self.sos, worN=f, fs=self.sfreq)
        phase = np.unwrap(np.angle(h))
        return float(-(phase[1] - phase[0]) / (2 * np.pi * (f[1] - f[0])) * 1e3)


def pick_channels(model_channels: list[str], info: StreamInfo) -> tuple[np.ndarray, list[str]]:
    """Indices of the model's channels in the stream, in the model's order, and notes on the match.

    Raises
    ------
    UserError
        Naming the channels the stream lacks.
    """
    exact = {n: i for i, n in enumerate(info.ch_names)}
    folded = {n.lower(): i for i, n in enumerate(info.ch_names)}
    picks, notes, missing = [], [], []
    for name in model_channels:
        if name in exact:
            picks.append(exact[name])
        elif name.lower() in folded:
            picks.append(folded[name.lower()])
            notes.append(f"{name}<-{info.ch_names[folded[name.lower()]]}")
        else:
            missing.append(name)
    if missing:
        raise UserError(f"the stream {info.name!r} lacks {len(missing)} of the model's {len(model_channels)} channels: "
                        f"{missing[:12]}{' ...' if len(missing) > 12 else ''}. Its channels are "
                        f"{info.ch_names[:12]}{' ...' if len(info.ch_names) > 12 else ''}. Stream the channels the "
                        "model was trained on (same names), or use a model trained on these channels.")
    return np.asarray(picks, dtype=np.int64), ([f"channels matched ignoring case: {', '.join(notes)}"] if notes else [])


def epoch_matrix(recipe: OnlineRecipe, sfreq: float) -> tuple[np.ndarray, int, np.ndarray]:
    """The linear map of the recipe's epoch steps at a stream rate of ``sfreq``.

    Returns
    -------
    matrix : ndarray, shape (n_times, n_in)
        ``epoch = window @ matrix.T`` per channel.
    start : int
        First sample of the window relative to the event sample.
    times : ndarray, shape (n_times,)
        Times of the output samples (s).
    """
    import mne

    w0, w1 = recipe.raw_window(sfreq)
    start, stop = int(round(w0 * sfreq)), int(round(w1 * sfreq))
    n_in = stop - start + 1
    if n_in < 2:
        raise UserError(f"the epoch window {w0:g} to {w1:g} s holds {n_in} sample(s) at {sfreq:g} Hz.")
    steps = list(recipe.epoch_steps)
    if not any("resample" in s for s in steps) and abs(sfreq - recipe.sfreq) > 1e-6:
        steps.append({"resample": recipe.sfreq, "method": "fft"})  # the stream's rate is not the model's
    info = mne.create_info(["impulse"], float(sfreq), "eeg")
    ep = mne.EpochsArray(np.eye(n_in)[:, None, :], info, tmin=start / sfreq, baseline=None, proj=False, verbose=False)
    for st in steps:
        if "filter" in st:
            ep.filter(st["filter"][0], st["filter"][1], method=st.get("method", "fir"), verbose="ERROR")
        elif "resample" in st:
            ep.resample(float(st["resample"]), method=st.get("method", "fft"), verbose="ERROR")
        elif "baseline" in st:
            ep.apply_baseline(tuple(st["baseline"]), verbose="ERROR")
        elif "crop" in st:
            lo, hi = st["crop"]
            ep.crop(lo, hi, include_tmax=st.get("include_tmax", hi is None), verbose="ERROR")
    times = ep.times
    if len(times) > recipe.n_times:  # keep the model's window (e.g. no crop was recorded)
        first = int(np.argmin(np.abs(times - recipe.tmin)))
        ep.crop(times[first], times[min(first + recipe.n_times, len(times)) - 1], verbose="ERROR")
        times = ep.times
    if len(times) != recipe.n_times or abs(times[0] - recipe.tmin) > 0.5 / recipe.sfreq:
        raise UserError(f"the online epoch ({len(times)} samples from {times[0]:g} s at {ep.info['sfreq']:g} Hz) does not "
                        f"match the model's input ({recipe.n_times} samples from {recipe.tmin:g} s at {recipe.sfreq:g} Hz); "
                        f"the window {w0:g} to {w1:g} s at the stream's {sfreq:g} Hz cannot make it. Give --window, or "
                        "stream at a rate the model's can be resampled from.")
    return np.ascontiguousarray(ep.get_data(copy=False)[:, 0, :].T), start, times.copy()


class OnlinePreprocessor:
    """The recipe, bound to a stream (see the module docstring).

    Parameters
    ----------
    recipe : OnlineRecipe
        What to compute.
    info : StreamInfo
        The stream.
    """

    def __init__(self, recipe: OnlineRecipe, info: StreamInfo) -> None:
        self.recipe = recipe
        self.info = info
        self.picks, notes = pick_channels(recipe.channels, info)
        self.notes = list(recipe.notes) + notes
        self.scale = float(recipe.scale)
        f = recipe.stream_filter
        self.filter = None
        if f is not None and (f.get("l_freq") is not None or f.get("h_freq") is not None):
            self.filter = CausalFilter(f.get("l_freq"), f.get("h_freq"), info.sfreq, int(f.get("order", 4)))
        self.matrix, self.start, self.times = epoch_matrix(recipe, info.sfreq)
        self.n_in = self.matrix.shape[1]
        self._mt = np.ascontiguousarray(self.matrix.T)
        sc = recipe.scaler
        self._center = None if sc is None else np.asarray(sc["center"], np.float64)[:, None]
        self._scale = None if sc is None else np.asarray(sc["scale"], np.float64)[:, None]
        self._clamp = None if sc is None else sc.get("clamp")
        self._mvnn = None if recipe.mvnn is None else np.asarray(recipe.mvnn, np.float64)

    @property
    def n_channels(self) -> int:
        """The model's channels."""
        return len(self.picks)

    def process_chunk(self, data: np.ndarray) -> np.ndarray:
        """Pick, scale and causally filter a chunk ``(n_stream_channels, n)`` -> ``(n_channels, n)``."""
        x = data[self.picks]
        if self.scale != 1.0:
            x = x * self.scale
        if self.filter is not None:
            bad = ~np.isfinite(x)
            if bad.any():  # a NaN would poison the filter state for good: hold the channel at zero instead
                x = np.where(bad, 0.0, x)
            x = self.filter(x)
        return x

    def reset(self) -> None:
        """Restart the causal filter (after a gap in the data)."""
        if self.filter is not None:
            self.filter.reset()

    def epochs(self, windows: np.ndarray) -> np.ndarray:
        """The model's input for raw windows ``(n, n_channels, n_in)`` -> ``(n, n_channels, n_times)`` float32."""
        n, c, _ = windows.shape
        y = (np.ascontiguousarray(windows).reshape(n * c, self.n_in) @ self._mt).reshape(n, c, -1)  # one GEMM
        for step in self.recipe.post:
            if step == "scaler" and self._center is not None:
                y = (y - self._center) / self._scale
                if self._clamp is not None:
                    np.clip(y, -self._clamp, self._clamp, out=y)
            elif step == "mvnn" and self._mvnn is not None:
                y = np.einsum("ij,njt->nit", self._mvnn, y, optimize=True)
        return y.astype(np.float32)

    def describe(self) -> dict[str, Any]:
        """What runs online (for the summary and the terminal)."""
        d: dict[str, Any] = {"recipe": self.recipe.to_dict(), "stream_sfreq": self.info.sfreq,
                             "window_samples": self.n_in, "window_start_sample": self.start,
                             "notes": self.notes}
        if self.filter is not None:
            d["causal_filter"] = {"l_freq": self.filter.l_freq, "h_freq": self.filter.h_freq, "order": self.filter.order,
                                  "group_delay_ms": round(self.filter.group_delay_ms(), 2)}
        return d


def fit_whitener(epochs: np.ndarray, *, mode: str = "epochs", shrinkage: str | float | None = "auto") -> np.ndarray:
    """An MVNN whitener from calibration epochs (THINGS-EEG2's estimator; see :class:`neurodecode.preprocessing.mvnn.MVNN`).

    Parameters
    ----------
    epochs : ndarray, shape (n_conditions, n_repetitions, n_channels, n_times)
        Preprocessed epochs grouped by image condition, channels in the model's order.
    mode, shrinkage
        As :class:`~neurodecode.preprocessing.mvnn.MVNN`.

    Returns
    -------
    whitener : ndarray, shape (n_channels, n_channels)
        Save it with ``numpy.save`` and give it to ``neurodecode stream --mvnn``.
    """
    from neurodecode.preprocessing.mvnn import MVNN

    return np.asarray(MVNN(mode, shrinkage).fit(np.asarray(epochs)).whitener_, dtype=np.float64)


def load_whitener(path: PathLike) -> np.ndarray:
    """A whitener saved with ``numpy.save`` (read without unpickling)."""
    try:
        w = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise UserError(f"--mvnn {path}: not a readable .npy array ({err}); save the whitener with numpy.save.") from None
    if w.ndim != 2 or w.shape[0] != w.shape[1]:
        raise UserError(f"--mvnn {path}: expected a square (n_channels, n_channels) whitener, got shape {w.shape}.")
    return w.astype(np.float64)
