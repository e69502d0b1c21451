"""Parameters of a simulated data set: :class:`SimulationConfig` and the per-modality defaults.

The model the parameters control is described in :mod:`neurodecode.simulate.forward` (responses)
and :mod:`neurodecode.simulate.stimuli` (images and their features).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from neurodecode.simulate.shapes import COLOURS, SHAPES, TEXTURES
from neurodecode.utils import check_option

__all__ = ["MODALITY_DEFAULTS", "SimulationConfig"]

MODALITY_DEFAULTS: dict[str, dict[str, Any]] = {
    # repetitions per image follow the public data sets: THINGS-EEG2 (4 train, 80 test: we use 20 to stay
    # small), THINGS-MEG (1 train, 12 test), NSD (up to 3; 1 for training images here).
    "eeg": {"n_reps_train": 4, "n_reps_test": 20, "sfreq": 250.0, "snr": 0.3, "neural_noise": 4.0},
    "meg": {"n_reps_train": 1, "n_reps_test": 12, "sfreq": 200.0, "snr": 0.3, "neural_noise": 3.0},
    "fmri": {"n_reps_train": 1, "n_reps_test": 3, "sfreq": None, "snr": 0.1, "neural_noise": 3.5},
}



@dataclass
class SimulationConfig:
    """Parameters of a simulated data set (see :mod:`neurodecode.simulate.forward` for the model).

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
