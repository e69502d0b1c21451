r"""Forward model of the simulator: the EEG, MEG or fMRI responses that simulated stimuli evoke.

Stimuli and their features (low-level, mid-level, semantic) are made by
:mod:`neurodecode.simulate.stimuli`; this module maps features to noiseless responses and draws
trial-to-trial noise. :mod:`neurodecode.simulate.dataset` writes whole data sets and
:mod:`neurodecode.simulate.ceiling` computes the ideal decoder's accuracy.

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
temporal filter removes). *Background noise*: the sum of two spatio-temporally separable parts: a
broadband part (30 background sources on random scalp positions plus sensor noise, all with a
:math:`1/f` spectrum) and an alpha part (4 posterior sources with a spectral peak at
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
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from neurodecode.simulate.config import SimulationConfig
from neurodecode.simulate.sensors import EEG63, N_MEG, eeg_info, eeg_montage, meg_info, meg_layout_xy
from neurodecode.simulate.stimuli import StimulusSet, feature_block

__all__ = ["COMPONENTS", "MEG_CENTRES", "SubjectModel", "fmri_model", "sample_noise", "timeseries_model"]

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


@dataclass
class SubjectModel:
    """The forward model of one subject (what the ideal decoder knows)."""

    mean: np.ndarray  # (n_stimuli, n_chans, n_times) or (n_stimuli, n_voxels): noiseless responses
    noise_scale: float
    # EEG/MEG: Sigma = scale^2 (S1 (x) T1 + S2 (x) T2); fMRI: Sigma = scale^2 (sigma2 I + U U^T)
    parts: dict[str, np.ndarray] = field(default_factory=dict)


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


def timeseries_model(cfg: SimulationConfig, stim: StimulusSet, subject: int) -> tuple[SubjectModel, Any]:
    """Noiseless responses and noise model of one EEG/MEG subject.

    Parameters
    ----------
    cfg : SimulationConfig
        A resolved configuration (:meth:`SimulationConfig.resolved`), modality ``"eeg"`` or ``"meg"``.
    stim : StimulusSet
        The stimuli (:func:`~neurodecode.simulate.stimuli.make_stimuli` of the same ``cfg``).
    subject : int
        Subject index (0-based); seeds the subject-specific parts.

    Returns
    -------
    model : SubjectModel
        ``mean`` of shape ``(n_stimuli, n_chans, n_times)`` and the parts of the noise covariance.
    info : mne.Info
        The sensors (:func:`~neurodecode.simulate.sensors.eeg_info` or
        :func:`~neurodecode.simulate.sensors.meg_info`).
    """
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
        with_ref.set_montage(eeg_montage(), verbose=False)
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

        pos2 = meg_layout_xy(mne.channels.read_layout("CTF-275"))[:N_MEG] * 0.24  # ~24 cm across

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
        f = feature_block(feats, block)
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


def fmri_model(cfg: SimulationConfig, stim: StimulusSet, subject: int) -> SubjectModel:
    """Noiseless betas and noise model of one fMRI subject.

    Parameters
    ----------
    cfg : SimulationConfig
        A resolved configuration with modality ``"fmri"``.
    stim : StimulusSet
        The stimuli of the same ``cfg``.
    subject : int
        Subject index (0-based).

    Returns
    -------
    model : SubjectModel
        ``mean`` of shape ``(n_stimuli, n_voxels)``; ``parts`` hold the noise model and the voxel grid
        (``ijk``, ``volume_shape``, ``region``).
    """
    from scipy.ndimage import gaussian_filter

    world = np.random.default_rng([cfg.seed, 3])
    srng = np.random.default_rng([cfg.seed, 100 + subject])
    rho = 0.5 * cfg.subject_variability
    ijk, vshape, region = _fmri_grid(cfg.n_voxels)
    feats = stim.features
    resp = np.zeros((len(stim.stimulus_id), cfg.n_voxels))
    patterns, feat_sd = [], []
    for r, block in enumerate(("low", "lowmid", "sem")):
        f = feature_block(feats, block)
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
    """Draw ``n`` independent noise trials from a subject's noise model.

    Parameters
    ----------
    model : SubjectModel
        From :func:`timeseries_model` or :func:`fmri_model`.
    n : int
        Number of trials.
    rng : numpy.random.Generator
        Random stream (consumed in a fixed order, so results are seeded).

    Returns
    -------
    noise : ndarray, shape (n, *model.mean.shape[1:])
    """
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

