r"""Brain-response simulator: procedurally drawn objects and the EEG, MEG or fMRI responses they evoke.

Everything in neurodecode can run on a fresh machine with no download because this module makes a
complete data set: a stimulus set of object images with a zero-shot split (training concepts and
disjoint test concepts, like THINGS-EEG2), and trial stores of several subjects.

Stimuli
-------
A concept is a (shape, colour, texture) combination (see :mod:`neurodecode.simulate.shapes`);
training and test concepts are disjoint, but every attribute of a test concept also occurs in some
training concepts, so zero-shot decoding is possible through shared features. Training concepts have
``n_exemplars`` images each, test concepts ``n_test_exemplars`` (THINGS-EEG2: 10 and 1). Exemplars
vary in size, position, pose, colour jitter and texture phase.

Features of an image
--------------------
* **low-level** (10 numbers computed from the pixels: mean R, G, B, contrast, object area, centroid
  x and y, orientation energy (2), high-spatial-frequency share), z-scored with training statistics;
* **mid-level** (8): the concept's shape and texture codes (random 4-d vectors per attribute value);
* **semantic** (12): shape, colour and texture codes, plus a concept-specific idiosyncratic code of
  relative size ``idiosyncratic`` that no image feature predicts (real brains encode things that no
  vision model does), scaled to unit variance per dimension.

EEG / MEG forward model
-----------------------
The noiseless response of subject :math:`s` to image :math:`i` is a sum of sources

.. math:: \mu_s(i)[c, t] = g_s \sum_{k} \sum_{j \in k} \big(b_{kj} + w^{(s)}_{kj} \cdot f_k(i)\big)
          \, \mathrm{topo}^{(s)}_{kj}[c] \, \mathrm{wave}^{(s)}_{kj}(t)

with four components :math:`k` of six sources each: P1 (100 ms, occipital, driven by low-level
features), N1/N170 (170 ms, occipito-temporal, low+mid-level), P3 (300 ms, parietal, semantic) and a
late sustained component (450 ms, centro-parietal, semantic). Each source has a Gaussian waveform around its
component's latency (per-source offsets of up to 15 ms) and a topography: for EEG a Gaussian blob on
the scalp around a 10-05 electrode position, referenced to Fz (the THINGS-EEG2 reference); for MEG
a dipolar pattern (a positive and a negative lobe) on the CTF-275 sensor layout. :math:`b_{kj}` is the
stimulus-independent ERP; :math:`w_{kj}` maps features to amplitude.

Subjects differ, so that cross-subject transfer is possible but not free: source positions are
jittered (``subject_variability`` x 1.5 cm), latencies shift (x 8 ms), the feature weights are
:math:`w^{(s)} = \sqrt{1-\rho^2}\,w + \rho\,w'_s` with :math:`\rho = \tfrac12` ``subject_variability``
and a subject-specific :math:`w'_s`, and the gain :math:`g_s` and noise level vary log-normally.

Trial-to-trial variability has two parts, both Gaussian and independent across trials. *Neural
noise*: each source's amplitude varies from trial to trial with a standard deviation of
``neural_noise`` times its spread over stimuli (noise inside the signal subspace, which no spatial or
temporal filter removes). *Background noise*: the sum of two spatio-temporally separable parts: a broadband part (30 background sources on random scalp positions plus sensor noise,
all with a :math:`1/f` spectrum) and an alpha part (4 posterior sources with a spectral peak at
10 +- 1 Hz). The background covariance is therefore exactly
:math:`\Sigma = S_1 \otimes T_1 + S_2 \otimes T_2` (spatial x temporal), and the total covariance adds
the low-rank neural part :math:`\sigma^2 P P^\top`; both are known in closed form.
Its scale is set per subject so that the single-trial ratio of stimulus-specific signal variance
(variance over stimuli of :math:`\mu`, averaged over channels and times) to noise variance equals
``snr`` (times a subject factor). No other trial-to-trial variability is simulated. Defaults: EEG
``snr`` 0.3 and ``neural_noise`` 4 (an ideal decoder identifies about 15% of single test trials and
about 95% of test images averaged over 20 repetitions, 50-way).

fMRI forward model
------------------
``n_voxels`` voxels in three regions of a voxel grid: an early region tuned to low-level features, an
intermediate one to low+mid-level and a ventral one to semantic features; tuning weights are spatially
smooth random fields. Single-trial betas are :math:`g_s W_s (f(i) + \epsilon)` plus noise
:math:`\sigma^2 I + U U^\top` (independent voxel noise plus three global fluctuations), scaled to
``snr`` the same way; :math:`\epsilon` is the feature-level neural noise (``neural_noise`` times the
features' spread). Subjects share voxel grids; their weights mix shared and subject-specific fields.

Ceiling
-------
:func:`ideal_decoder_accuracy` is the Bayes-optimal identification of each test image among all test
images for a decoder that knows the forward model (the noiseless responses and the noise covariance):
maximum likelihood, i.e. the nearest mean after exact whitening. It is computed on the simulated test
set itself, from responses averaged over all test repetitions (as the THINGS protocol averages), and
also from single trials. No decoder that sees only the data can beat it in expectation, so it tells how
close a trained model gets.

Outputs of :func:`simulate`: ``images/{train,test}/NNNNN_<concept>/<concept>_NN.png``, ``stimuli.tsv``,
``sub-XX.h5`` per subject, ``features.npz`` (the true features per stimulus), ``ceiling.json`` and
``dataset.json``. Seeded and deterministic.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from neurodecode.io.channels import THINGS_EEG2_63
from neurodecode.io.store import StimulusTable, StoreWriter, store_filename
from neurodecode.utils import atomic_path, atomic_write_json, check_option, logger, progress, use_log_level
from neurodecode.readers.common import provenance_step, write_prepared_metadata
from neurodecode.simulate.shapes import (
    COLOURS,
    LOW_LEVEL_NAMES,
    SHAPES,
    TEXTURES,
    Concept,
    all_concepts,
    low_level_features,
    render,
)

EEG63 = THINGS_EEG2_63  # the THINGS-EEG2 montage (Fz reference)
N_MEG = 271

MODALITY_DEFAULTS: dict[str, dict[str, Any]] = {
    # repetitions per image follow the public data sets: THINGS-EEG2 (4 train, 80 test: we use 20 to stay
    # small), THINGS-MEG (1 train, 12 test), NSD (up to 3; 1 for training images here).
    "eeg": {"n_reps_train": 4, "n_reps_test": 20, "sfreq": 250.0, "snr": 0.3, "neural_noise": 4.0},
    "meg": {"n_reps_train": 1, "n_reps_test": 12, "sfreq": 200.0, "snr": 0.3, "neural_noise": 3.0},
    "fmri": {"n_reps_train": 1, "n_reps_test": 3, "sfreq": None, "snr": 0.1, "neural_noise": 3.5},
}

# components: name, latency (s), width (s), scalp centres (EEG electrode names) and feature block
COMPONENTS = (
    ("P1", 0.100, 0.018, ("O1", "O2", "Oz", "PO3", "PO4", "POz"), "low"),
    ("N170", 0.170, 0.025, ("P7", "P8", "PO7", "PO8", "P5", "P6"), "lowmid"),
    ("P3", 0.300, 0.050, ("Pz", "CPz", "P1", "P2", "CP3", "CP4"), "sem"),
    ("late", 0.450, 0.090, ("CP1", "CP2", "Cz", "C1", "C2", "FCz"), "sem"),
)
# where the same components sit on the MEG layout (2-D layout coordinates, nose up, in [0, 1])
MEG_CENTRES = {
    "P1": ((0.42, 0.12), (0.58, 0.12), (0.5, 0.08), (0.4, 0.2), (0.6, 0.2), (0.5, 0.16)),
    "N170": ((0.2, 0.25), (0.8, 0.25), (0.3, 0.18), (0.7, 0.18), (0.15, 0.35), (0.85, 0.35)),
    "P3": ((0.5, 0.35), (0.45, 0.45), (0.55, 0.3), (0.4, 0.32), (0.6, 0.32), (0.5, 0.4)),
    "late": ((0.4, 0.5), (0.6, 0.5), (0.5, 0.55), (0.35, 0.45), (0.65, 0.45), (0.5, 0.62)),
}
ATTRIBUTE_DIM = 4


@dataclass
class SimulationConfig:
    """Parameters of a simulated data set (see the module docstring for the model).

    ``None`` for ``n_reps_train``, ``n_reps_test``, ``sfreq`` and ``snr`` takes the modality's default.
    """

    modality: str = "eeg"
    n_subjects: int = 4
    n_train_concepts: int = 150
    n_test_concepts: int = 50
    n_exemplars: int = 5
    n_test_exemplars: int = 1
    n_reps_train: int | None = None
    n_reps_test: int | None = None
    snr: float | None = None
    sfreq: float | None = None
    duration: float = 1.0
    image_size: int = 64
    n_voxels: int = 2000
    neural_noise: float | None = None
    subject_variability: float = 0.5
    idiosyncratic: float = 0.25
    seed: int = 0

    def resolved(self) -> SimulationConfig:
        """A copy with modality defaults filled in and every value checked."""
        check_option("modality", self.modality, tuple(MODALITY_DEFAULTS))
        d = asdict(self)
        for k, v in MODALITY_DEFAULTS[self.modality].items():
            if d[k] is None:
                d[k] = v
        cfg = SimulationConfig(**d)
        n_all = len(SHAPES) * len(COLOURS) * len(TEXTURES)
        for name in ("n_subjects", "n_train_concepts", "n_test_concepts", "n_exemplars", "n_test_exemplars",
                     "n_reps_train", "n_reps_test", "image_size"):
            if int(getattr(cfg, name)) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(cfg, name)}")
        if cfg.n_test_concepts < 2:
            raise ValueError(f"n_test_concepts must be at least 2 for retrieval, got {cfg.n_test_concepts}")
        if cfg.n_train_concepts + cfg.n_test_concepts > n_all:
            raise ValueError(f"n_train_concepts + n_test_concepts must be at most {n_all} (the number of "
                             f"shape x colour x texture combinations), got "
                             f"{cfg.n_train_concepts + cfg.n_test_concepts}")
        if cfg.snr is None or not cfg.snr > 0:
            raise ValueError(f"snr must be positive, got {cfg.snr}")
        if cfg.neural_noise is None or cfg.neural_noise < 0:
            raise ValueError(f"neural_noise must be >= 0, got {cfg.neural_noise}")
        if cfg.modality != "fmri" and (cfg.sfreq is None or cfg.sfreq <= 0):
            raise ValueError(f"sfreq must be positive, got {cfg.sfreq}")
        if not 0 <= cfg.subject_variability <= 2:
            raise ValueError(f"subject_variability must be in [0, 2], got {cfg.subject_variability}")
        if cfg.image_size < 16:
            raise ValueError(f"image_size must be at least 16, got {cfg.image_size}")
        return cfg

    @property
    def n_times(self) -> int:
        """Samples per trial (EEG/MEG)."""
        return int(round(self.duration * float(self.sfreq)))


@dataclass
class StimulusSet:
    """The simulated stimuli: concepts, images and true features."""

    concepts: list[Concept]
    concept_split: np.ndarray  # per concept, "train"/"test"
    stim_concept: np.ndarray  # per stimulus, index into concepts
    stim_exemplar: np.ndarray  # per stimulus, exemplar number within its concept
    stimulus_id: np.ndarray
    split: np.ndarray
    images: np.ndarray  # (n_stimuli, size, size, 3) uint8
    exemplars: list[dict[str, float]]
    features: dict[str, np.ndarray]  # "low", "mid", "sem", each (n_stimuli, d)

    def table(self, image_paths: Sequence[str] | None = None, root: Path | None = None) -> StimulusTable:
        """The stimulus table (image paths optional)."""
        paths = [""] * len(self.stimulus_id) if image_paths is None else list(image_paths)
        names = [self.concepts[c].name for c in self.stim_concept]
        return StimulusTable(self.stimulus_id, names, paths, self.split, root=root)


@dataclass
class SubjectModel:
    """The forward model of one subject (what the ideal decoder knows)."""

    mean: np.ndarray  # (n_stimuli, n_chans, n_times) or (n_stimuli, n_voxels): noiseless responses
    noise_scale: float
    # EEG/MEG: Sigma = scale^2 (S1 (x) T1 + S2 (x) T2); fMRI: Sigma = scale^2 (sigma2 I + U U^T)
    parts: dict[str, np.ndarray] = field(default_factory=dict)


# --------------------------------------------------------------------------------------------------
# stimuli
# --------------------------------------------------------------------------------------------------
def make_stimuli(cfg: SimulationConfig) -> StimulusSet:
    """Choose concepts (zero-shot split), render exemplars and compute their features."""
    from neurodecode.simulate.shapes import sample_exemplar

    cfg = cfg.resolved()
    rng = np.random.default_rng([cfg.seed, 1])
    pool = all_concepts()
    train_c, test_c = _split_concepts(pool, cfg.n_train_concepts, cfg.n_test_concepts, rng)
    concepts = train_c + test_c
    concept_split = np.array(["train"] * len(train_c) + ["test"] * len(test_c), dtype=object)

    stim_concept, stim_ex, ids, split, images, exemplars = [], [], [], [], [], []
    for ci, (concept, sp) in enumerate(zip(concepts, concept_split, strict=True)):
        n_ex = cfg.n_exemplars if sp == "train" else cfg.n_test_exemplars
        for e in range(n_ex):
            ex = sample_exemplar(rng)
            stim_concept.append(ci)
            stim_ex.append(e)
            ids.append(f"{concept.name}_{e + 1:02d}")
            split.append(sp)
            images.append(render(concept, ex, cfg.image_size))
            exemplars.append(ex.to_dict())
    stim_concept = np.asarray(stim_concept)
    split = np.asarray(split, dtype=object)
    images = np.stack(images)
    low = np.stack([low_level_features(im, background=None) for im in images])
    train = split == "train"
    low = (low - low[train].mean(0)) / (low[train].std(0) + 1e-8)

    # attribute codes are properties of the simulated "world" (shared by all subjects)
    wrng = np.random.default_rng([cfg.seed, 2])
    codes = {
        "shape": {s: wrng.standard_normal(ATTRIBUTE_DIM) for s in SHAPES},
        "colour": {c: wrng.standard_normal(ATTRIBUTE_DIM) for c in COLOURS},
        "texture": {t: wrng.standard_normal(ATTRIBUTE_DIM) for t in TEXTURES},
    }
    idio = {c.name: wrng.standard_normal(3 * ATTRIBUTE_DIM) for c in concepts}
    mid, sem = [], []
    for ci in stim_concept:
        c = concepts[ci]
        mid.append(np.concatenate([codes["shape"][c.shape], codes["texture"][c.texture]]))
        s = np.concatenate([codes["shape"][c.shape], codes["colour"][c.colour], codes["texture"][c.texture]])
        sem.append((s + cfg.idiosyncratic * idio[c.name]) / np.sqrt(1 + cfg.idiosyncratic**2))
    features = {"low": low, "mid": np.stack(mid), "sem": np.stack(sem)}
    return StimulusSet(concepts, concept_split, stim_concept, np.asarray(stim_ex), np.asarray(ids, dtype=object),
                       split, images, exemplars, features)


def _split_concepts(pool: list[Concept], n_train: int, n_test: int,
                    rng: np.random.Generator) -> tuple[list[Concept], list[Concept]]:
    """Draw training concepts, then test concepts (disjoint) whose shape, colour and texture each occur
    among the training concepts, so that zero-shot decoding through shared attributes is possible."""
    order = [pool[i] for i in rng.permutation(len(pool))]
    train = order[:n_train]
    seen = [{getattr(c, a) for c in train} for a in ("shape", "colour", "texture")]
    candidates = [c for c in order[n_train:]
                  if c.shape in seen[0] and c.colour in seen[1] and c.texture in seen[2]]
    if len(candidates) < n_test:
        raise ValueError(f"only {len(candidates)} test concepts share all their attributes with the "
                         f"{n_train} training concepts; use more training concepts or fewer test concepts")
    return train, candidates[:n_test]


def _feature_block(feats: dict[str, np.ndarray], block: str) -> np.ndarray:
    if block == "low":
        return feats["low"]
    if block == "lowmid":
        return np.concatenate([feats["low"], feats["mid"]], axis=1)
    if block == "sem":
        return feats["sem"]
    if block == "all":
        return np.concatenate([feats["low"], feats["mid"], feats["sem"]], axis=1)
    raise ValueError(block)


# --------------------------------------------------------------------------------------------------
# sensors
# --------------------------------------------------------------------------------------------------
def eeg_info(sfreq: float = 250.0):
    """``mne.Info`` of the 63 THINGS-EEG2 channels with positions from MNE's ``colin27_1005`` montage."""
    import mne

    info = mne.create_info(list(EEG63), float(sfreq), "eeg")
    info.set_montage(_montage(), verbose=False)
    return info


def _montage():
    import mne

    try:
        return mne.channels.make_standard_montage("colin27_1005")
    except ValueError:  # older MNE
        return mne.channels.make_standard_montage("standard_1005")


def meg_info(sfreq: float = 200.0):
    """``mne.Info`` of 271 axial-gradiometer-like MEG channels with positions from the CTF-275 layout.

    Positions: the 2-D layout coordinates are mapped onto a hemisphere of radius 12 cm (x to the
    right, y to the front, z up) and stored in each channel's ``loc``; the channel type is ``mag``.
    """
    import mne

    lay = mne.channels.read_layout("CTF-275")
    names = [n.split("-")[0] for n in lay.names][:N_MEG]
    xy = _meg_xy(lay)[:N_MEG]
    info = mne.create_info(names, float(sfreq), "mag")
    r = 0.12
    with info._unlock():
        for ch, (x, y) in zip(info["chs"], xy, strict=True):
            px, py = (x - 0.5) * 2, (y - 0.5) * 2
            rho = min(np.hypot(px, py), 1.0)
            theta = rho * np.pi / 2
            phi = np.arctan2(py, px)
            pos = r * np.array([np.sin(theta) * np.cos(phi), np.sin(theta) * np.sin(phi), np.cos(theta)])
            ch["loc"][:3] = pos
            ch["loc"][3:12] = np.r_[1, 0, 0, 0, 1, 0, pos / np.linalg.norm(pos)]
    return info


def _meg_xy(lay) -> np.ndarray:
    """Layout box centres normalised to [0, 1]^2."""
    xy = lay.pos[:, :2] + lay.pos[:, 2:4] / 2
    xy = (xy - xy.min(0)) / (xy.max(0) - xy.min(0))
    return xy


# --------------------------------------------------------------------------------------------------
# noise spectra
# --------------------------------------------------------------------------------------------------
def _filters(n_times: int, sfreq: float, alpha_freq: float) -> tuple[np.ndarray, np.ndarray]:
    """Amplitude responses (rfft bins of a 2*n_times circular process) for the 1/f and the alpha noise.

    Both are normalised to unit variance.
    """
    m = 2 * n_times
    f = np.fft.rfftfreq(m, 1.0 / sfreq)
    pink = 1.0 / (f + 1.0)
    alpha = np.exp(-0.5 * ((f - alpha_freq) / 1.5) ** 2) + 1e-4
    out = []
    for psd in (pink, alpha):
        h = np.sqrt(psd)
        var = np.fft.irfft(h**2, n=m)[0]
        out.append(h / np.sqrt(var))
    return out[0], out[1]


def _temporal_cov(h: np.ndarray, n_times: int) -> np.ndarray:
    """Covariance of ``n_times`` consecutive samples of circular noise shaped by ``h``."""
    from scipy.linalg import toeplitz

    acov = np.fft.irfft(h**2, n=2 * n_times)
    return toeplitz(acov[:n_times])


def _coloured(rng: np.random.Generator, shape: tuple[int, ...], h: np.ndarray, n_times: int) -> np.ndarray:
    """Gaussian noise with spectrum ``h**2``: white noise filtered circularly, first ``n_times`` samples."""
    import scipy.fft

    w = rng.standard_normal((*shape, 2 * n_times), dtype=np.float32)
    spec = scipy.fft.rfft(w, axis=-1, workers=-1)
    spec *= h.astype(np.float32)
    return scipy.fft.irfft(spec, n=2 * n_times, axis=-1, workers=-1)[..., :n_times]


# --------------------------------------------------------------------------------------------------
# forward models
# --------------------------------------------------------------------------------------------------
def _weights(world: np.random.Generator, subj: np.random.Generator, shape: tuple[int, ...], rho: float):
    w = world.standard_normal(shape)
    return np.sqrt(1 - rho**2) * w + rho * subj.standard_normal(shape)


def _timeseries_model(cfg: SimulationConfig, stim: StimulusSet, subject: int) -> tuple[SubjectModel, Any]:
    """Noiseless responses and noise model of one EEG/MEG subject."""
    world = np.random.default_rng([cfg.seed, 3])  # identical for every subject
    srng = np.random.default_rng([cfg.seed, 100 + subject])
    var = cfg.subject_variability
    rho = 0.5 * var
    sfreq, n_t = float(cfg.sfreq), cfg.n_times
    times = np.arange(n_t) / sfreq
    if cfg.modality == "eeg":
        info = eeg_info(sfreq)
        pos = np.array([ch["loc"][:3] for ch in info["chs"]])
        # positions in the head frame of Info (the reference Fz is not recorded: place it the same way)
        import mne

        with_ref = mne.create_info([*EEG63, "Fz"], sfreq, "eeg")
        with_ref.set_montage(_montage(), verbose=False)
        mont = {ch["ch_name"]: ch["loc"][:3].copy() for ch in with_ref["chs"]}
        ref = mont["Fz"]
        centre_of = {n: mont[n] for comp in COMPONENTS for n in comp[3]}

        def topo(centre: np.ndarray) -> np.ndarray:
            blob = np.exp(-np.sum((pos - centre) ** 2, 1) / (2 * 0.03**2))
            return blob - np.exp(-np.sum((ref - centre) ** 2) / (2 * 0.03**2))

        def jitter(centre: np.ndarray, scale: float) -> np.ndarray:
            c = centre + srng.normal(0, scale, 3)
            return c * np.linalg.norm(centre) / np.linalg.norm(c)  # stay on the head surface

        unit = 2e-6  # volts
        sensor_sd = 0.3
    else:
        info = meg_info(sfreq)
        import mne

        pos2 = _meg_xy(mne.channels.read_layout("CTF-275"))[:N_MEG] * 0.24  # ~24 cm across

        def topo(centre: np.ndarray) -> np.ndarray:
            ang = centre[2]
            d = 0.02 * np.array([np.cos(ang), np.sin(ang)])
            c = centre[:2]

            def blob(p):
                return np.exp(-np.sum((pos2 - p) ** 2, 1) / (2 * 0.025**2))

            return blob(c + d) - blob(c - d)

        def jitter(centre: np.ndarray, scale: float) -> np.ndarray:
            return centre + np.r_[srng.normal(0, scale, 2), srng.normal(0, 0.3)]

        unit = 1e-13  # tesla
        sensor_sd = 0.3

    feats = stim.features
    amps, topos, waves = [], [], []
    for name, lat, width, centres, block in COMPONENTS:
        f = _feature_block(feats, block)
        for j, cname in enumerate(centres if cfg.modality == "eeg" else MEG_CENTRES[name]):
            if cfg.modality == "eeg":
                centre = centre_of[cname]
            else:
                centre = np.r_[np.asarray(cname) * 0.24, world.uniform(0, 2 * np.pi)]
            w = _weights(world, srng, (f.shape[1],), rho) / np.sqrt(f.shape[1])
            base = world.normal(1.0, 0.3) * (1 if j % 2 == 0 else -1)
            amps.append(base + f @ w * 1.5)
            topos.append(topo(jitter(centre, 0.015 * var)))
            offset = world.uniform(-0.015, 0.015) + srng.normal(0, 0.008 * var)
            waves.append(np.exp(-0.5 * ((times - lat - offset) / width) ** 2))
    gain = np.exp(srng.normal(0, 0.2 * var))
    amp = np.stack(amps, 1)  # (n_stim, n_src)
    topo_m = np.stack(topos)  # (n_src, C)
    wave_m = np.stack(waves)  # (n_src, T)
    patterns = gain * unit * topo_m[:, :, None] * wave_m[:, None, :]  # (n_src, C, T)
    mean = np.einsum("is,sct->ict", amp, patterns, optimize=True)
    # trial-to-trial variability of each source's amplitude, relative to its spread over stimuli
    source_sd = cfg.neural_noise * amp.std(0).mean()

    # noise model: background 1/f sources + sensor noise, and posterior alpha sources
    n_c = len(info["ch_names"])
    n_bg = 30
    if cfg.modality == "eeg":
        bg_centres = [jitter(pos[srng.integers(n_c)], 0.02) for _ in range(n_bg)]
        alpha_names = ("O1", "O2", "POz", "Pz")
        alpha_centres = [jitter(mont[n], 0.01) for n in alpha_names]
    else:
        bg_centres = [np.r_[srng.uniform(0, 0.24, 2), srng.uniform(0, 2 * np.pi)] for _ in range(n_bg)]
        alpha_centres = [np.r_[np.asarray(c) * 0.24, srng.uniform(0, 2 * np.pi)]
                         for c in ((0.4, 0.1), (0.6, 0.1), (0.5, 0.2), (0.5, 0.3))]
    A1 = np.stack([topo(c) for c in bg_centres], 1)  # (C, n_bg)
    A2 = np.stack([topo(c) for c in alpha_centres], 1) * 1.5
    S1 = A1 @ A1.T + sensor_sd**2 * np.eye(n_c)
    S2 = A2 @ A2.T
    alpha_freq = 10.0 + srng.normal(0, 1.0)
    h1, h2 = _filters(n_t, sfreq, alpha_freq)
    T1, T2 = _temporal_cov(h1, n_t), _temporal_cov(h2, n_t)
    noise_var = (np.trace(S1) * np.trace(T1) + np.trace(S2) * np.trace(T2)) / (n_c * n_t)
    signal_var = mean.var(axis=0).mean()
    snr = cfg.snr * np.exp(srng.normal(0, 0.15 * var))
    scale = float(np.sqrt(signal_var / (snr * noise_var)))
    model = SubjectModel(mean=mean.astype(np.float64), noise_scale=scale,
                         parts={"A1": A1, "A2": A2, "sensor_sd": np.array(sensor_sd), "S1": S1, "S2": S2,
                                "T1": T1, "T2": T2, "h1": h1, "h2": h2, "snr": np.array(snr),
                                "patterns": patterns, "source_sd": np.array(source_sd)})
    return model, info


def _fmri_grid(n_voxels: int) -> tuple[np.ndarray, tuple[int, int, int], np.ndarray]:
    """Voxel coordinates of three regions in a volume (early, intermediate, ventral)."""
    shape = (40, 40, 20)
    sizes = [int(round(n_voxels * p)) for p in (0.35, 0.3)]
    sizes.append(n_voxels - sum(sizes))
    boxes = [((2, 14), (2, 38), (2, 18)), ((14, 26), (2, 38), (2, 18)), ((26, 38), (2, 38), (2, 18))]
    ijk, region = [], []
    for r, (n, box) in enumerate(zip(sizes, boxes, strict=True)):
        cells = np.stack(np.meshgrid(*[np.arange(a, b) for a, b in box], indexing="ij"), -1).reshape(-1, 3)
        if n > len(cells):
            raise ValueError(f"n_voxels={n_voxels} is too large for the simulated volume (max ~{3 * len(cells)})")
        sel = np.linspace(0, len(cells) - 1, n).round().astype(int)
        ijk.append(cells[sel])
        region += [r] * n
    return np.concatenate(ijk), shape, np.asarray(region)


def _fmri_model(cfg: SimulationConfig, stim: StimulusSet, subject: int) -> SubjectModel:
    from scipy.ndimage import gaussian_filter

    world = np.random.default_rng([cfg.seed, 3])
    srng = np.random.default_rng([cfg.seed, 100 + subject])
    rho = 0.5 * cfg.subject_variability
    ijk, vshape, region = _fmri_grid(cfg.n_voxels)
    feats = stim.features
    resp = np.zeros((len(stim.stimulus_id), cfg.n_voxels))
    patterns, feat_sd = [], []
    for r, block in enumerate(("low", "lowmid", "sem")):
        f = _feature_block(feats, block)
        sel = region == r
        W = np.empty((sel.sum(), f.shape[1]))
        for d in range(f.shape[1]):
            field_w = gaussian_filter(world.standard_normal(vshape), 1.5)
            field_s = gaussian_filter(srng.standard_normal(vshape), 1.5)
            fw = np.sqrt(1 - rho**2) * field_w + rho * field_s
            W[:, d] = fw[tuple(ijk[sel].T)]
        W /= W.std() * np.sqrt(f.shape[1])
        resp[:, sel] = f @ W.T
        P = np.zeros((f.shape[1], cfg.n_voxels))
        P[:, sel] = W.T
        patterns.append(P)
        feat_sd.append(np.full(f.shape[1], f.std(0).mean()))
    gain = np.exp(srng.normal(0, 0.2 * cfg.subject_variability))
    mean = resp * gain
    # trial-to-trial variability of the represented features (noise in the signal subspace)
    patterns = gain * np.concatenate(patterns) * np.concatenate(feat_sd)[:, None]
    source_sd = float(cfg.neural_noise)
    U = srng.standard_normal((cfg.n_voxels, 3)) * 0.5
    sigma2 = 1.0
    noise_var = sigma2 + (U**2).sum(1).mean()
    snr = cfg.snr * np.exp(srng.normal(0, 0.15 * cfg.subject_variability))
    scale = float(np.sqrt(mean.var(0).mean() / (snr * noise_var)))
    return SubjectModel(mean=mean, noise_scale=scale, parts={"U": U, "sigma2": np.array(sigma2), "ijk": ijk,
                                                             "volume_shape": np.array(vshape),
                                                             "region": region, "snr": np.array(snr),
                                                             "patterns": patterns,
                                                             "source_sd": np.array(source_sd)})


def sample_noise(model: SubjectModel, n: int, rng: np.random.Generator) -> np.ndarray:
    """Draw ``n`` independent noise trials from a subject's noise model."""
    p = model.parts
    pat = p["patterns"]
    src = rng.standard_normal((n, len(pat))) * float(p["source_sd"])
    neural = (src @ pat.reshape(len(pat), -1)).reshape(n, *pat.shape[1:])
    if "U" in p:  # fMRI
        n_v = p["U"].shape[0]
        e = rng.standard_normal((n, n_v)) * np.sqrt(float(p["sigma2"]))
        g = rng.standard_normal((n, p["U"].shape[1])) @ p["U"].T
        return model.noise_scale * (e + g) + neural
    n_c, n_t = model.mean.shape[1:]
    A1, A2 = p["A1"], p["A2"]
    z1 = _coloured(rng, (n, A1.shape[1] + n_c), p["h1"], n_t)
    z2 = _coloured(rng, (n, A2.shape[1]), p["h2"], n_t)
    mix1 = np.concatenate([A1, float(p["sensor_sd"]) * np.eye(n_c)], 1).astype(np.float32)
    # one GEMM per part over all trials and samples (a batched matmul on these strided views is slow)
    bg = np.tensordot(mix1, z1, axes=([1], [1])) + np.tensordot(A2.astype(np.float32), z2, axes=([1], [1]))
    return model.noise_scale * bg.transpose(1, 0, 2) + neural


# --------------------------------------------------------------------------------------------------
# the ideal decoder
# --------------------------------------------------------------------------------------------------
class _Whitener:
    r"""Exact Mahalanobis geometry of the simulator's noise covariance.

    The covariance is :math:`\Sigma = c^2 \Sigma_{bg} + \sigma^2 P P^\top` (background noise plus the
    low-rank trial-to-trial source variability). ``embed`` maps a response to ``(z, q)`` such that
    :math:`(x-y)^\top \Sigma^{-1} (x-y) = \|z_x - z_y\|^2 - \|q_x - q_y\|^2` (Woodbury identity):
    ``z`` whitens the background exactly and ``q`` removes the low-rank part.
    """

    def __init__(self, model: SubjectModel) -> None:
        from scipy.linalg import cholesky, eigh

        p = model.parts
        self.fmri = "U" in p
        self.scale = model.noise_scale
        pat = p["patterns"].reshape(len(p["patterns"]), -1)
        if self.fmri:
            cov = float(p["sigma2"]) * np.eye(p["U"].shape[0]) + p["U"] @ p["U"].T
            self.L = cholesky(cov, lower=True)
        else:
            lam, V = eigh(p["S2"], p["S1"])  # V.T S1 V = I, V.T S2 V = diag(lam)
            self.V = V
            lam = np.maximum(lam, 0.0)
            # channels of the transformed space share a temporal covariance T1 + lam T2; most lam are 0
            # (the alpha part has low rank), so group them and whiten each group with one matrix
            keys = np.where(lam < 1e-9, 0.0, lam)
            self.groups = []
            for key in np.unique(keys):
                Lk = cholesky(p["T1"] + key * p["T2"], lower=True)
                self.groups.append((np.flatnonzero(keys == key), np.linalg.inv(Lk).T))
        b = self._white(pat.reshape(len(pat), *model.mean.shape[1:])) * float(p["source_sd"])  # (k, D)
        M = np.eye(len(b)) + b @ b.T
        self.b = b
        self.LM = cholesky(M, lower=True)

    def _white(self, x: np.ndarray) -> np.ndarray:
        from scipy.linalg import solve_triangular

        x = np.asarray(x, dtype=np.float64) / self.scale
        if self.fmri:
            return solve_triangular(self.L, x.T, lower=True).T
        n, c, t = x.shape
        # spatial transform and temporal whitening as single large GEMMs
        y = (x.transpose(0, 2, 1).reshape(n * t, c) @ self.V).reshape(n, t, c).transpose(0, 2, 1)
        out = np.empty((n, c, t))
        for idx, linv_t in self.groups:
            out[:, idx] = (np.ascontiguousarray(y[:, idx]).reshape(-1, t) @ linv_t).reshape(n, len(idx), t)
        return out.reshape(n, -1)

    def embed(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(z, q)`` of responses ``x`` (see the class docstring)."""
        from scipy.linalg import solve_triangular

        z = self._white(x)
        q = solve_triangular(self.LM, self.b @ z.T, lower=True).T
        return z, q


def ideal_decoder_accuracy(model: SubjectModel, responses: np.ndarray, true_index: np.ndarray,
                           candidates: np.ndarray, n_reps: int = 1, *,
                           whitener: _Whitener | None = None) -> dict[str, float]:
    """Identification accuracy of the Bayes-optimal decoder that knows the forward model.

    Parameters
    ----------
    model : SubjectModel
        Noiseless responses (``model.mean``) and noise covariance.
    responses : ndarray
        Observed responses: single trials, or averages over ``n_reps`` repetitions (the noise
        covariance then shrinks by ``n_reps``, which scales every distance alike and leaves the
        ranking unchanged).
    true_index : ndarray of int
        Row of ``model.mean`` each response was evoked by.
    candidates : ndarray of int
        Rows of ``model.mean`` to choose from (e.g. all test images).
    n_reps : int
        Repetitions averaged in ``responses`` (recorded only).
    whitener : _Whitener | None
        Reuse a whitener already built for ``model``.

    Returns
    -------
    acc : dict
        ``top1``, ``top5``, ``two_way`` (share of distractors ranked below the true image) and
        ``n_candidates``.
    """
    white = _Whitener(model) if whitener is None else whitener
    zc, qc = white.embed(model.mean[candidates])
    ranks = []
    pos = {int(c): k for k, c in enumerate(candidates)}
    for start in range(0, len(responses), 512):
        zx, qx = white.embed(responses[start:start + 512])
        d = ((zx**2).sum(1)[:, None] - 2 * zx @ zc.T + (zc**2).sum(1)[None, :]
             - ((qx**2).sum(1)[:, None] - 2 * qx @ qc.T + (qc**2).sum(1)[None, :]))
        true_col = np.array([pos[int(t)] for t in true_index[start:start + 512]])
        true_d = d[np.arange(len(zx)), true_col]
        ranks.append((d < true_d[:, None]).sum(1))
    r = np.concatenate(ranks)
    n = len(candidates)
    return {"top1": float((r == 0).mean()), "top5": float((r < 5).mean()),
            "two_way": float(1 - (r / (n - 1)).mean()), "n_candidates": int(n), "n_reps": int(n_reps)}


# --------------------------------------------------------------------------------------------------
# driver
# --------------------------------------------------------------------------------------------------
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
    from PIL import Image

    t0 = time.perf_counter()
    cfg = SimulationConfig(**{**asdict(cfg or SimulationConfig()), **overrides}).resolved()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with use_log_level(verbose):
        stim = make_stimuli(cfg)
        # images in the THINGS folder layout: images/<split>/<NNNNN>_<concept>/<concept>_<NN>.png
        paths = []
        concept_no = {}
        for i, sid in enumerate(stim.stimulus_id):
            ci = stim.stim_concept[i]
            sp = stim.split[i]
            concept_no.setdefault(ci, sum(1 for k in concept_no if stim.concept_split[k] == sp) + 1)
            folder = out / "images" / sp / f"{concept_no[ci]:05d}_{stim.concepts[ci].name}"
            folder.mkdir(parents=True, exist_ok=True)
            p = folder / f"{sid}.png"
            with atomic_path(p, suffix=".png") as tmp:
                Image.fromarray(stim.images[i]).save(tmp, format="PNG")
            paths.append(p.relative_to(out).as_posix())
        table = stim.table(paths, root=out)
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
        model, info = _fmri_model(cfg, stim, s), None
    else:
        model, info = _timeseries_model(cfg, stim, s)
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
    white = _Whitener(model)
    acc = ideal_decoder_accuracy(model, avg, test_rows, test_rows, n_reps=cfg.n_reps_test, whitener=white)
    single = ideal_decoder_accuracy(model, np.concatenate(single_x)[:1000], np.asarray(single_t)[:1000],
                                    test_rows, whitener=white)
    acc["single_trial_top1"] = single["top1"]
    acc["single_trial_top5"] = single["top5"]
    acc["noise_scale"] = model.noise_scale
    acc["snr"] = float(model.parts["snr"])
    return path, acc


def read_ceiling(root: str | Path) -> dict[str, Any] | None:
    """The ``ceiling.json`` of a simulated folder, or ``None`` for other data."""
    p = Path(root) / "ceiling.json"
    return json.loads(p.read_text()) if p.is_file() else None
