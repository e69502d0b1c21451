"""Simulate a whole data set and write it as a prepared folder (the entry of ``neurodecode simulate``).

:func:`simulate` draws the stimuli (:mod:`~neurodecode.simulate.stimuli`), the forward model of every
subject (:mod:`~neurodecode.simulate.forward`), writes the trials, and computes the ideal decoder's
ceiling on the simulated test set (:mod:`~neurodecode.simulate.ceiling`).

Outputs of :func:`simulate`: ``images/{train,test}/NNNNN_<concept>/<concept>_NN.png``, ``stimuli.tsv``,
``sub-XX.h5`` per subject, ``features.npz`` (the true features per stimulus), ``ceiling.json`` and
``dataset.json``. Seeded and deterministic.

:class:`~neurodecode.simulate.config.SimulationConfig` is importable from here too, for callers that
build a configuration and simulate it.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from neurodecode.io.prepared import store_filename
from neurodecode.io.store import StimulusTable, StoreWriter
from neurodecode.readers.common import provenance_step, write_prepared_metadata
from neurodecode.simulate.ceiling import Whitener, ideal_decoder_accuracy
from neurodecode.simulate.config import SimulationConfig
from neurodecode.simulate.forward import fmri_model, sample_noise, timeseries_model
from neurodecode.simulate.shapes import LOW_LEVEL_NAMES
from neurodecode.simulate.stimuli import StimulusSet, make_stimuli
from neurodecode.utils import atomic_path, atomic_write_json, logger, progress, use_log_level

__all__ = ["SimulationConfig", "SimulationResult", "simulate"]


@dataclass
class SimulationResult:
    """What :func:`simulate` made."""

    root: Path
    config: SimulationConfig
    ceiling: dict[str, Any]
    stores: list[Path]
    seconds: float

    def summary(self) -> str:
        """A few lines for the command line."""
        c = self.ceiling
        lines = [
            f"simulated {self.config.modality}: {self.config.n_subjects} subject(s), "
            f"{self.config.n_train_concepts} training + {self.config.n_test_concepts} test concepts -> {self.root} "
            f"({self.seconds:.1f} s)",
            f"ceiling (ideal decoder, {c['n_way']}-way on test responses averaged over {c['n_reps_test']} "
            f"repetitions): top-1 {c['mean']['top1']:.1%}, top-5 {c['mean']['top5']:.1%} "
            f"(chance {1 / c['n_way']:.1%}); single trial top-1 {c['mean']['single_trial_top1']:.1%}",
        ]
        return "\n".join(lines)


def simulate(out: str | Path, cfg: SimulationConfig | None = None, *, progress_bar: bool = True,
             verbose: bool | str | None = None, **overrides: Any) -> SimulationResult:
    """Simulate a complete data set into the folder ``out``.

    Parameters
    ----------
    out : path-like
        Output folder (created). Existing subject stores in it are overwritten.
    cfg : SimulationConfig | None
        Parameters; ``None`` uses the defaults. Keyword ``overrides`` replace single fields.
    progress_bar : bool
        Show a progress bar over subjects.
    verbose : bool | str | None
        Log level (MNE style).

    Returns
    -------
    result : SimulationResult
        The folder, the resolved configuration, the ceiling and the stores written.

    Examples
    --------
    >>> res = simulate("sim_eeg", modality="eeg", n_subjects=2)  # doctest: +SKIP
    >>> res.ceiling["mean"]["top1"]  # doctest: +SKIP
    """

    t0 = time.perf_counter()
    cfg = SimulationConfig(**{**asdict(cfg or SimulationConfig()), **overrides}).resolved()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with use_log_level(verbose):
        stim = make_stimuli(cfg)
        table = stim.table(stim.write_images(out), root=out)  # images in the THINGS folder layout
        write_prepared_metadata(out, table, {
            "source": "simulate", "modality": cfg.modality, "subjects": [f"{s + 1:02d}" for s in range(cfg.n_subjects)],
            "config": asdict(cfg), "description": "simulated data; see neurodecode.simulate.forward",
        })
        with atomic_path(out / "features.npz", suffix=".npz") as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, stimulus_id=stim.stimulus_id.astype(str), low=stim.features["low"],
                         mid=stim.features["mid"], sem=stim.features["sem"],
                         low_names=np.asarray(LOW_LEVEL_NAMES))

        per_subject: dict[str, dict[str, float]] = {}
        stores = []
        for s in progress(range(cfg.n_subjects), enabled=progress_bar, desc=f"simulating {cfg.modality}",
                          unit="subject"):
            label = f"{s + 1:02d}"
            path, acc = _simulate_subject(cfg, stim, table, s, out / store_filename(label))
            stores.append(path)
            per_subject[label] = acc
            logger.info(f"subject {label}: ceiling top-1 {acc['top1']:.3f}")
        keys = next(iter(per_subject.values())).keys()
        mean = {k: float(np.mean([v[k] for v in per_subject.values()])) for k in keys}
        n_test = int((stim.split == "test").sum())
        ceiling = {
            "what": "identification accuracy of the Bayes-optimal decoder that knows the forward model "
                    "(nearest noiseless response after exact noise whitening), among all test images",
            "n_way": n_test, "n_reps_test": cfg.n_reps_test, "chance_top1": 1 / n_test,
            "snr": cfg.snr, "per_subject": per_subject, "mean": mean,
        }
        atomic_write_json(out / "ceiling.json", ceiling)
    res = SimulationResult(out, cfg, ceiling, stores, time.perf_counter() - t0)
    return res


def _simulate_subject(cfg: SimulationConfig, stim: StimulusSet, table: StimulusTable, s: int,
                      path: Path) -> tuple[Path, dict[str, float]]:
    rng = np.random.default_rng([cfg.seed, 1000 + s])
    if cfg.modality == "fmri":
        model, info = fmri_model(cfg, stim, s), None
    else:
        model, info = timeseries_model(cfg, stim, s)
    # presentation order: each image n_reps times, shuffled within each repetition block
    reps = np.where(stim.split == "train", cfg.n_reps_train, cfg.n_reps_test)
    order_stim, order_rep = [], []
    for r in range(int(reps.max())):
        idx = np.flatnonzero(reps > r)
        idx = idx[rng.permutation(len(idx))]
        order_stim.append(idx)
        order_rep.append(np.full(len(idx), r))
    order_stim = np.concatenate(order_stim)
    order_rep = np.concatenate(order_rep)
    n = len(order_stim)
    shape = model.mean.shape[1:]
    test_rows = np.flatnonzero(stim.split == "test")
    test_sum = np.zeros((len(test_rows), *shape))
    test_of = np.full(len(stim.stimulus_id), -1)
    test_of[test_rows] = np.arange(len(test_rows))
    single_x, single_t = [], []
    prov = [provenance_step("simulate", **{k: v for k, v in asdict(cfg).items()}, subject_index=s,
                            noise_scale=model.noise_scale, subject_snr=float(model.parts["snr"]))]
    kw: dict[str, Any] = {}
    if cfg.modality != "fmri":
        kw = {"sfreq": cfg.sfreq, "tmin": 0.0, "info": info}
    attrs = {"unit": {"eeg": "V", "meg": "T", "fmri": "percent signal change"}[cfg.modality]}
    with StoreWriter(path, n, shape, modality=cfg.modality, stimuli=table, subject=f"{s + 1:02d}",
                     provenance=prov, attrs=attrs, **kw) as w:
        block = 256
        for start in range(0, n, block):
            idx = order_stim[start:start + block]
            x = model.mean[idx] + sample_noise(model, len(idx), rng)
            w.write(start, x.astype(np.float32))
            is_test = np.flatnonzero(test_of[idx] >= 0)
            np.add.at(test_sum, test_of[idx[is_test]], x[is_test])
            if len(single_t) < 1000:
                single_x.append(x[is_test])
                single_t.extend(idx[is_test].tolist())
        extra = {}
        finish_kw: dict[str, Any] = {}
        if cfg.modality == "fmri":
            finish_kw = {"voxel_ijk": model.parts["ijk"], "volume_shape": model.parts["volume_shape"],
                         "affine": np.diag([2.0, 2.0, 2.0, 1.0])}
        w.finish(stimulus_id=stim.stimulus_id[order_stim], split=stim.split[order_stim], repetition=order_rep,
                 session=np.zeros(n, np.int32), extra=extra or None, **finish_kw)
    avg = test_sum / cfg.n_reps_test
    white = Whitener(model)
    acc = ideal_decoder_accuracy(model, avg, test_rows, test_rows, n_reps=cfg.n_reps_test, whitener=white)
    single = ideal_decoder_accuracy(model, np.concatenate(single_x)[:1000], np.asarray(single_t)[:1000],
                                    test_rows, whitener=white)
    acc["single_trial_top1"] = single["top1"]
    acc["single_trial_top5"] = single["top5"]
    acc["noise_scale"] = model.noise_scale
    acc["snr"] = float(model.parts["snr"])
    return path, acc

