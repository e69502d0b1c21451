"""Continuous simulated recordings: the simulated subjects watching a rapid sequence of images.

The epoched simulation (:mod:`neurodecode.simulate.dataset`) writes one independent trial per
presentation. Here the *same* subjects (the forward models of
:func:`~neurodecode.simulate.forward.timeseries_model` for the same configuration and seed) and the
*same* stimuli (:func:`~neurodecode.simulate.stimuli.make_stimuli`) make one continuous recording per
subject, as THINGS-EEG2 recorded them: images shown at 5 per second (a stimulus onset asynchrony of
200 ms; each image on for 100 ms) in rapid serial sequences of 20, with a short pause between
sequences; every test image (or every image) ``n_reps`` times, in a seeded random order.

The signal is the sum of

* the response of every presentation (the subject's noiseless response to that image plus its
  trial-to-trial source-amplitude noise, as in the epoched trials) at its onset: at 5 images per
  second, consecutive 1 s responses overlap, as they do in the real recordings;
* one continuous background: the same 1/f sources, sensor noise and posterior alpha sources, with the
  same spectra (interpolated to the recording's length) and scale as the epoched trials' background.

A model trained on the epoched simulation therefore decodes the continuous one (and the reverse),
up to the overlap of neighbouring responses, which real rapid designs have too.

Each subject's recording is an MNE Raw FIF (``sub-XX_task-rsvp_raw.fif``) with the EEG (or MEG)
channels, a stimulus channel ``STI 014`` whose value at an onset is the stimulus code, and one
annotation per presentation (``stim/<stimulus_id>``, 100 ms). ``event_map.tsv`` maps codes to stimulus
ids, ``sub-XX_events.tsv`` lists every presentation, and ``continuous.json`` records the settings
(with ``like``, the simulation it re-simulates). :func:`simulate_continuous` with ``like=SIM_DIR``
reads the configuration an earlier ``neurodecode simulate`` recorded in ``SIM_DIR/dataset.json``;
without it, it also writes the stimulus table, images and true features, as the epoched simulation
does.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from neurodecode.simulate.config import SimulationConfig
from neurodecode.simulate.forward import SubjectModel, timeseries_model
from neurodecode.simulate.shapes import LOW_LEVEL_NAMES
from neurodecode.simulate.stimuli import StimulusSet, make_stimuli
from neurodecode.utils import (
    PathLike,
    UserError,
    atomic_path,
    atomic_write_json,
    atomic_write_text,
    logger,
    progress,
)

__all__ = ["STIM_CHANNEL", "ContinuousResult", "continuous_noise", "presentation_schedule", "recording_name",
           "simulate_continuous"]

STIM_CHANNEL = "STI 014"


def recording_name(subject: str) -> str:
    """File name of a subject's continuous recording."""
    return f"sub-{subject}_task-rsvp_raw.fif"


@dataclass
class ContinuousResult:
    """What :func:`simulate_continuous` made."""

    root: Path
    config: SimulationConfig
    recordings: list[Path]
    settings: dict[str, Any]
    seconds: float

    def summary(self) -> str:
        """A few lines for the command line."""
        s = self.settings
        return (f"simulated continuous {self.config.modality}: {len(self.recordings)} subject(s), "
                f"{s['n_presentations']} presentations each ({s['n_images']} {s['images']} images x {s['n_reps']}) "
                f"at {1 / s['soa']:g} per second, {s['duration_s']:.0f} s per recording -> {self.root} "
                f"({self.seconds:.1f} s)" + (f"\nsubjects and stimuli of {s['like']}" if s.get("like") else ""))


def presentation_schedule(n_images: int, n_reps: int, sfreq: float, rng: np.random.Generator, *, soa: float = 0.2,
                          sequence_length: int = 20, pause: float = 1.0, lead: float = 1.0,
                          ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Which image is shown when: every image ``n_reps`` times, shuffled within each repetition.

    Returns
    -------
    image : ndarray of int, shape (n_presentations,)
        Index (among the ``n_images``) of each presentation.
    repetition : ndarray of int
        Its repetition number.
    onset : ndarray of int
        Its onset sample: ``soa`` apart within a sequence of ``sequence_length``, ``pause`` seconds
        more between sequences, starting ``lead`` seconds into the recording.
    """
    image = np.concatenate([rng.permutation(n_images) for _ in range(n_reps)])
    repetition = np.repeat(np.arange(n_reps), n_images)
    k = np.arange(len(image))
    t = lead + k * soa + (k // sequence_length) * pause
    return image, repetition, np.round(t * sfreq).astype(np.int64)


def _long_filter(h_short: np.ndarray, n_short: int, m: int, sfreq: float) -> np.ndarray:
    """An amplitude response of the epoched noise, on the frequency grid of an ``m``-sample process."""
    f_short = np.fft.rfftfreq(2 * n_short, 1.0 / sfreq)
    f = np.fft.rfftfreq(m, 1.0 / sfreq)
    h = np.interp(f, f_short, h_short)
    return h / np.sqrt(np.fft.irfft(h**2, n=m)[0])  # unit variance, the rule of the epoched noise


def continuous_noise(model: SubjectModel, n: int, sfreq: float, rng: np.random.Generator) -> np.ndarray:
    """``n`` samples of a subject's background noise (1/f sources + sensor noise + alpha), continuous.

    The spatial mixing, spectra and scale are those of the epoched trials'
    (:func:`~neurodecode.simulate.forward.sample_noise`), so any window of it has the trials' background
    statistics.

    Returns
    -------
    noise : ndarray, shape (n_channels, n), float32
    """
    import scipy.fft

    p = model.parts
    n_c, n_t = model.mean.shape[1:]
    m = scipy.fft.next_fast_len(int(n))
    out = np.zeros((n_c, n), np.float32)
    mix1 = np.concatenate([p["A1"], float(p["sensor_sd"]) * np.eye(n_c)], 1).astype(np.float32)
    for mix, h in ((mix1, p["h1"]), (p["A2"].astype(np.float32), p["h2"])):
        hh = _long_filter(h, n_t, m, sfreq).astype(np.float32)
        w = rng.standard_normal((mix.shape[1], m), dtype=np.float32)
        z = scipy.fft.irfft(scipy.fft.rfft(w, axis=-1, workers=-1) * hh, n=m, axis=-1, workers=-1)[:, :n]
        out += mix @ z.astype(np.float32)
    return out * np.float32(model.noise_scale)


def _write_stimulus_files(out: Path, stim: StimulusSet) -> None:
    """Images, stimulus table and true features, laid out as the epoched simulation lays them out."""
    stim.table(stim.write_images(out), root=out).write_tsv(out / "stimuli.tsv")
    with atomic_path(out / "features.npz", suffix=".npz") as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, stimulus_id=stim.stimulus_id.astype(str), low=stim.features["low"], mid=stim.features["mid"],
                     sem=stim.features["sem"], low_names=np.asarray(LOW_LEVEL_NAMES))


def _like_config(like: Path) -> SimulationConfig:
    meta = like / "dataset.json"
    if not meta.is_file():
        raise UserError(f"--like {like}: no dataset.json; give a folder written by 'neurodecode simulate' (or by "
                        "'neurodecode demo', its sim_eeg/ folder).")
    try:
        d = json.loads(meta.read_text())
    except ValueError as err:
        raise UserError(f"{meta}: not valid JSON ({err}).") from None
    if d.get("source") != "simulate" or not isinstance(d.get("config"), dict):
        raise UserError(f"{meta}: field 'source' is {d.get('source')!r}, not 'simulate' with a 'config': --like needs a "
                        "simulated data set, whose settings it re-simulates.")
    fields = set(SimulationConfig.__dataclass_fields__)
    return SimulationConfig(**{k: v for k, v in d["config"].items() if k in fields})


def simulate_continuous(out: PathLike, cfg: SimulationConfig | None = None, *, like: PathLike | None = None,
                        n_reps: int | None = None, images: str = "test", soa: float = 0.2, sequence_length: int = 20,
                        pause: float = 1.0, subjects: list[int] | None = None, progress_bar: bool = True,
                        **overrides: Any) -> ContinuousResult:
    """Write one continuous recording per simulated subject into ``out``.

    Parameters
    ----------
    out : path-like
        Output folder (created).
    cfg : SimulationConfig | None
        The simulation (subjects, stimuli, noise); ``None`` uses the defaults; ``overrides`` replace fields.
    like : path-like | None
        An earlier simulation's folder: its recorded configuration is used (``cfg`` must then be ``None``).
    n_reps : int | None
        Presentations of each image (default: the configuration's ``n_reps_test``).
    images : str
        ``"test"`` (the zero-shot test images, as THINGS-EEG2's test sequences) or ``"all"``.
    soa : float
        Stimulus onset asynchrony (s): 0.2 is THINGS-EEG2's 5 images per second.
    sequence_length : int
        Images per rapid sequence.
    pause : float
        Seconds between sequences.
    subjects : list of int | None
        0-based subject indices to simulate (default: all).
    progress_bar : bool
        Show progress over subjects.

    Returns
    -------
    result : ContinuousResult
    """
    import mne

    t0 = time.perf_counter()
    out = Path(out)
    if like is not None:
        if cfg is not None or overrides:
            raise ValueError("like= re-simulates a recorded configuration; do not also pass cfg or overrides.")
        cfg = _like_config(Path(like))
    cfg = SimulationConfig(**{**asdict(cfg or SimulationConfig()), **overrides}).resolved()
    if cfg.modality == "fmri":
        raise UserError("continuous recordings are simulated for EEG and MEG only (--modality eeg or meg).")
    if images not in ("test", "all"):
        raise ValueError(f"images must be 'test' or 'all', got {images!r}.")
    if not (soa > 0 and sequence_length >= 1 and pause >= 0):
        raise ValueError("soa must be positive, sequence_length at least 1 and pause non-negative.")
    out.mkdir(parents=True, exist_ok=True)
    stim = make_stimuli(cfg)
    if like is None:
        _write_stimulus_files(out, stim)
    shown = np.flatnonzero(stim.split == "test") if images == "test" else np.arange(len(stim.stimulus_id))
    reps = int(n_reps if n_reps is not None else cfg.n_reps_test)
    if reps < 1:
        raise UserError(f"repetitions per image must be at least 1, got {reps}.")
    sfreq = float(cfg.sfreq)
    codes = np.arange(1, len(stim.stimulus_id) + 1)
    atomic_write_text(out / "event_map.tsv", "code\tstimulus_id\n" + "".join(
        f"{c}\t{s}\n" for c, s in zip(codes[shown], stim.stimulus_id[shown], strict=True)))
    recordings, per_subject = [], {}
    duration = 0.0
    for s in progress(list(subjects) if subjects is not None else range(cfg.n_subjects), enabled=progress_bar,
                      desc=f"continuous {cfg.modality}", unit="subject"):
        label = f"{s + 1:02d}"
        model, info = timeseries_model(cfg, stim, s)
        rng = np.random.default_rng([cfg.seed, 5000 + s])
        image, repetition, onset = presentation_schedule(len(shown), reps, sfreq, rng, soa=soa,
                                                         sequence_length=sequence_length, pause=pause)
        n_t = model.mean.shape[2]
        n = int(onset[-1] + n_t + round(sfreq))  # the last response, and a second of background after it
        signal = continuous_noise(model, n, sfreq, rng)
        pat = model.parts["patterns"]
        src = rng.standard_normal((len(image), len(pat))) * float(model.parts["source_sd"])
        flat_pat = pat.reshape(len(pat), -1)
        for i, (img, o) in enumerate(zip(shown[image], onset, strict=True)):
            evoked = model.mean[img] + (src[i] @ flat_pat).reshape(model.mean.shape[1], n_t)
            signal[:, o:o + n_t] += evoked.astype(np.float32)
        stim_row = np.zeros((1, n))
        stim_row[0, onset] = codes[shown[image]]
        raw = mne.io.RawArray(signal.astype(np.float64), info, verbose="ERROR")
        raw.add_channels([mne.io.RawArray(stim_row, mne.create_info([STIM_CHANNEL], sfreq, "stim"), verbose="ERROR")],
                         force_update_info=True)
        ids = stim.stimulus_id[shown[image]]
        raw.set_annotations(mne.Annotations(onset / sfreq, np.full(len(onset), 0.1), [f"stim/{x}" for x in ids]))
        path = out / recording_name(label)
        with atomic_path(path, suffix="_raw.fif") as tmp:
            raw.save(tmp, overwrite=True, verbose="ERROR")
        rows = "".join(f"{o / sfreq:.6f}\t{o}\t{c}\t{x}\t{r}\t{k // sequence_length}\n" for k, (o, c, x, r) in
                       enumerate(zip(onset, codes[shown[image]], ids, repetition, strict=True)))
        atomic_write_text(out / f"sub-{label}_events.tsv", "onset\tsample\tcode\tstimulus_id\trepetition\tsequence\n"
                          + rows)
        duration = n / sfreq
        recordings.append(path)
        per_subject[label] = {"file": path.name, "n_presentations": int(len(onset)), "duration_s": duration,
                              "noise_scale": model.noise_scale}
        logger.info(f"sub-{label}: {len(onset)} presentations, {duration:.0f} s -> {path}")
    settings = {"images": images, "n_images": int(len(shown)), "n_reps": reps, "n_presentations": int(len(shown) * reps),
                "soa": soa, "on_duration": 0.1, "sequence_length": sequence_length, "pause": pause,
                "duration_s": duration, "stim_channel": STIM_CHANNEL, "annotations": "stim/<stimulus_id>",
                "like": None if like is None else str(Path(like).resolve())}
    atomic_write_json(out / "continuous.json", {
        "source": "simulate_continuous", "modality": cfg.modality, "config": asdict(cfg), "continuous": settings,
        "subjects": per_subject, "event_map": "event_map.tsv",
        "description": "continuous recordings of the simulated subjects (see neurodecode.simulate.continuous)"})
    return ContinuousResult(out, cfg, recordings, settings, time.perf_counter() - t0)
