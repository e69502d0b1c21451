"""The Lightning data module: trial stores joined with the teacher-embedding cache.

:class:`BrainImageDataModule` reads a prepared folder (``neurodecode prepare`` / ``simulate``), makes
sure the teacher's embeddings of its stimuli are cached (embedding them on first use), and yields
batches ``{"x", "target", "subject", "stim"[, "text"]}``:

``x``
    the brain response, ``(n_chans, n_times)`` or ``(n_voxels,)``, float32, *not* normalised (the
    LightningModule normalises with statistics fitted on the training set, so that a checkpoint or an
    exported model carries them);
``target``
    the teacher embedding of the stimulus (raw; losses normalise where they need to);
``subject``
    the subject's index among the *training* subjects, or ``-1`` for a subject the model never saw
    (leave-one-subject-out testing);
``stim``
    the stimulus's row in the stimulus table;
``index``
    the sample's position in its set (metrics use it to drop the samples a distributed sampler repeats).

Lightning's split is followed: ``__init__`` only reads the folder (and the embedding dimension, from the
cache or, on first use, by asking the teacher for one image's embedding); :meth:`prepare_data` embeds the
stimuli the cache lacks (Lightning runs it on one process per node, the others wait at its barrier);
:meth:`setup` reads the embeddings and builds the sets.

Protocols (``protocol=``):

``"intra"``
    train, validate and test on one subject (``subject``);
``"loso"``
    leave one subject out: train and validate on all other subjects, test on ``subject``, whose data
    and id are never seen in training (its samples carry ``subject = -1``);
``"joint"``
    train and validate on all subjects, test each of them.

Model selection is honest: the validation set is a seeded random ``val_fraction`` of the *training
concepts* (all their images and trials), never the test set. Repetitions of a test image are
averaged (``average_test_reps``), as the THINGS-EEG2 protocol does, and optionally those of training
and validation images.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import lightning as L
import numpy as np
from torch.utils.data import DataLoader, Dataset

from neurodecode.io.channels import resolve_channels
from neurodecode.io.prepared import PreparedDataset, open_prepared
from neurodecode.training.sets import TrialSet, make_loader
from neurodecode.training.targets import FUSIONS
from neurodecode.training.ubp import target_specs
from neurodecode.utils import check_option, logger

PROTOCOLS = ("intra", "loso", "joint")
NORMALIZE = ("zscore", "none")
ENCODER_LINKS: tuple[tuple[str, str], ...] = (
    ("data.n_chans", "model.init_args.encoder.init_args.n_chans"),
    ("data.n_times", "model.init_args.encoder.init_args.n_times"),
    ("data.n_voxels", "model.init_args.encoder.init_args.n_voxels"),
    ("data.sfreq", "model.init_args.encoder.init_args.sfreq"),
    ("data.chs_info", "model.init_args.encoder.init_args.chs_info"),
    ("data.n_subjects", "model.init_args.encoder.init_args.n_subjects"),
    ("data.embed_dim", "model.init_args.encoder.init_args.n_outputs"),
    ("data.n_chans", "model.init_args.n_chans"),
    ("data.n_voxels", "model.init_args.n_voxels"),
)


class BrainImageDataModule(L.LightningDataModule):
    """Trial stores + teacher embeddings for training encoders (see the module docstring).

    Parameters
    ----------
    root : str
        A prepared folder (``stimuli.tsv``, ``sub-XX.h5``, ``dataset.json``).
    teacher : str
        Teacher spec (e.g. ``"efficientnet-lite0"``, ``"open_clip:ViT-H-14/laion2b_s32b_b79k"``); its
        embeddings are read from the cache, and computed on first use when missing.
    layer : str
        Teacher layer to align with (``"final"`` or an intermediate layer name).
    protocol : str
        ``"intra"``, ``"loso"`` or ``"joint"``.
    subject : str | None
        The subject of ``"intra"`` and the held-out subject of ``"loso"`` (default: the first).
    subjects : list of str | None
        Subjects to use (default: all in the folder).
    val_fraction : float
        Share of training concepts held out for validation (model selection, early stopping).
    split_seed : int
        Seed of the validation split.
    average_test_reps, average_val_reps, average_train_reps : bool
        Average the repetitions of each image (per subject) into one sample.
    channels : str | list of str | None
        Channel subset by name or named set (``"posterior17"``, a region, ``"-occipital"``...).
    tmin, tmax : float | None
        Crop the epoch (seconds, inclusive) at load time.
    normalize : str
        ``"zscore"`` (per channel/voxel, statistics of the training samples) or ``"none"``; applied by
        the LightningModule.
    text : bool
        Also yield text embeddings of each stimulus's concept (CLIP-type teachers; for the auxiliary
        text target of ATM).
    prompt : str
        Prompt for the text embeddings.
    batch_size, eval_batch_size : int
        Training / evaluation batch sizes (per process).
    num_workers : int
        DataLoader workers.
    preload : bool
        Load (and average) all samples into memory in ``setup``; ``False`` reads lazily.
    cache : str | None
        Embedding cache file; default ``<root>/embeddings.h5``.
    embed_batch_size : int
        Batch size for embedding missing stimuli.
    embed_device : str
        Device for embedding missing stimuli (``"auto"``, ``"cpu"``, ``"cuda"``).
    seed : int
        Seed of the training order (each epoch's order depends only on the seed and the epoch).
    device_store : bool
        Keep every set on the training device and slice batches there (no DataLoader workers, no
        host copies; the same batches in the same order): for GPUs whose memory holds the data
        (:mod:`neurodecode.training.device_store`). Needs ``preload=True``.
    layers : list of str | None
        Several cached teacher layers fused into one target (``layer`` is then unused); see
        :mod:`neurodecode.training.targets`.
    fusion : str
        ``"concat"`` (equal-weight concatenation) or ``"mix"`` (layers stacked for the model's learned
        :class:`~neurodecode.training.targets.LayerMix`).
    fusion_dim : int | None
        Common dimension of the layers of a ``"mix"`` (default: the largest layer's).
    blur : float | "ubp" | None
        Targets from the stimuli blurred by a Gaussian of this many pixels at the teacher's input
        resolution, embedded on first use and cached under their own key
        (:func:`~neurodecode.training.targets.ensure_blurred_embeddings`). ``"ubp"``: UBP's blur, one of
        three levels per training sample set by the model (:class:`~neurodecode.training.ubp.UncertaintyBlur`),
        the middle one in validation, test and evaluation.
    ubp : dict | None
        ``blur: ubp``'s settings over :class:`~neurodecode.training.ubp.UBPConfig`'s defaults.
    """

    #: what ``neurodecode fit`` links from this data module into the model: the data's shape into the
    #: encoder (and the closed-form models), so that no YAML repeats it
    CLI_LINKS: tuple[tuple[str, str], ...] = ENCODER_LINKS

    def __init__(
        self,
        root: str,
        teacher: str = "efficientnet-lite0",
        layer: str = "final",
        protocol: str = "intra",
        subject: str | None = None,
        subjects: list[str] | None = None,
        val_fraction: float = 0.1,
        split_seed: int = 0,
        average_test_reps: bool = True,
        average_val_reps: bool = True,
        average_train_reps: bool = False,
        channels: str | list[str] | None = None,
        tmin: float | None = None,
        tmax: float | None = None,
        normalize: str = "zscore",
        text: bool = False,
        prompt: str = "This picture is {concept}",
        batch_size: int = 64,
        eval_batch_size: int = 256,
        num_workers: int = 0,
        preload: bool = True,
        cache: str | None = None,
        embed_batch_size: int = 32,
        embed_device: str = "auto",
        seed: int = 0,
        device_store: bool = False,
        layers: list[str] | None = None,
        fusion: str = "concat",
        fusion_dim: int | None = None,
        blur: float | Literal["ubp"] | None = None,
        ubp: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        check_option("protocol", protocol, PROTOCOLS)
        check_option("normalize", normalize, NORMALIZE)
        check_option("fusion", fusion, FUSIONS)
        #: the teacher layers of the target, and how many the model mixes (1: none)
        self.target_layers: list[str] = [str(x) for x in layers] if layers else [layer]
        self.n_target_layers = len(self.target_layers) if layers and fusion == "mix" else 1
        #: UBP's settings (else None), the targets' cache specs (UBP: 3 levels), the image targets' (UBP: middle)
        self.ubp, self.target_specs = target_specs(teacher, blur, ubp, layers)
        self.target_spec = self.target_specs[len(self.target_specs) // 2]
        #: learned layer weights of a "mix" (``LayerMix.table``), set when evaluating a trained model
        self.target_weights: np.ndarray | None = None
        if not 0 < val_fraction < 1:
            raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}.")
        if device_store and not preload:
            raise ValueError("device_store=True keeps the loaded sets on the device: it needs preload=True.")
        self.root = Path(root)
        self.dataset: PreparedDataset = open_prepared(self.root, subjects=subjects)
        labels = self.dataset.subjects
        self.subject = str(subject).removeprefix("sub-") if subject is not None else labels[0]
        if self.subject not in labels:
            raise ValueError(f"subject {self.subject!r} is not in {self.root} (available: {labels}).")
        if protocol == "loso" and len(labels) < 2:
            raise ValueError(f"protocol 'loso' needs at least two subjects; {self.root} has {labels}.")
        if protocol == "intra":
            self.train_subjects, self.test_subjects = [self.subject], [self.subject]
        elif protocol == "loso":
            self.train_subjects, self.test_subjects = [s for s in labels if s != self.subject], [self.subject]
        else:
            self.train_subjects, self.test_subjects = list(labels), list(labels)
        self.subject_index = {s: i for i, s in enumerate(self.train_subjects)}
        first = self.dataset.stores[self.subject]
        self.modality = first.modality
        self._check_compatible()
        if self.modality == "fmri":
            self.ch_names: list[str] = []
            self.n_voxels: int | None = first.n_voxels
            self.n_chans: int | None = None
            self.n_times: int | None = None
            self.sfreq: float | None = None
            self.chs_info: list[dict] | None = None
            self._time_slice = slice(None)
        else:
            from neurodecode.encoders.base import normalize_chs_info

            self.ch_names = resolve_channels(channels, first.ch_names)
            info = first.info
            by_name = {c["ch_name"]: c for c in info["chs"]}
            self.chs_info = normalize_chs_info([by_name[n] for n in self.ch_names])
            times = first.times
            lo = 0 if tmin is None else int(np.searchsorted(times, tmin - 1e-9))
            hi = len(times) if tmax is None else int(np.searchsorted(times, tmax + 1e-9))
            if hi - lo < 1:
                raise ValueError(f"tmin={tmin}, tmax={tmax} select no sample of the epoch "
                                 f"[{times[0]:.3f}, {times[-1]:.3f}] s.")
            self._time_slice = slice(lo, hi)
            self.times = times[lo:hi]
            self.n_chans = len(self.ch_names)
            self.n_times = hi - lo
            self.sfreq = first.sfreq
            self.n_voxels = None
        self.n_subjects = len(self.train_subjects)
        self.embed_dim = self._embed_dim()
        self._image_embeddings: np.ndarray | None = None
        self._blur_levels: np.ndarray | None = None
        self._text_embeddings: np.ndarray | None = None
        self.sets: dict[str, TrialSet] = {}
        self._stats: dict[str, np.ndarray] | None = None

    # -- embeddings ---------------------------------------------------------------------------
    def _cache(self):
        from neurodecode.teachers.cache import EmbeddingCache

        return EmbeddingCache(self.hparams.cache or self.root / "embeddings.h5")

    def _cached(self) -> bool:
        cache, ids = self._cache(), self.dataset.stimuli.stimulus_id.tolist()
        return (all(cache.has(spec, layer, ids) for spec in self.target_specs for layer in self.target_layers)
                and (not self.hparams.text or cache.has(self.hparams.teacher, "text")))

    def _embed_dim(self) -> int:
        """The teacher layer's dimension, without embedding the stimuli (the model is built from it)."""
        hp, cache = self.hparams, self._cache()
        from neurodecode.teachers import probe_dim

        dims = [int(cache.dim(self.target_spec, layer)) if cache.has(self.target_spec, layer)
                else int(probe_dim(hp.teacher, layer, self.dataset.stimuli)) for layer in self.target_layers]
        if not hp.layers:
            return dims[0]
        from neurodecode.training.targets import fused_dim

        return fused_dim(dims, hp.fusion, hp.fusion_dim)

    def prepare_data(self) -> None:
        """Embed the stimuli the cache lacks with the teacher (Lightning calls this on one process)."""
        if self._cached():
            return
        hp = self.hparams
        from neurodecode.teachers.extract import ensure_embeddings

        cache = self._cache()
        logger.info(f"embedding the stimuli of {self.root} with {hp.teacher} (first use) -> {cache.path}")
        sharp = self.target_specs == [hp.teacher]
        if not sharp:  # blurred images, at each level the targets use, cached under their own specs
            from neurodecode.training.targets import ensure_blurred_embeddings

            ensure_blurred_embeddings(self.dataset.stimuli, hp.teacher, cache.path,
                                      list(self.ubp.sigmas) if self.ubp else hp.blur, self.target_layers,
                                      fovea=self.ubp.fovea if self.ubp else None,
                                      batch_size=hp.embed_batch_size, device=hp.embed_device)
        if sharp or hp.text:
            ensure_embeddings(self.dataset.stimuli, hp.teacher, cache.path, layers=tuple(self.target_layers) if sharp else (),
                              texts=hp.text, prompt=hp.prompt, batch_size=hp.embed_batch_size, device=hp.embed_device)

    def _load_embeddings(self) -> None:
        if self._image_embeddings is not None:
            return
        if not self._cached():
            import torch.distributed as dist

            if dist.is_available() and dist.is_initialized():
                raise RuntimeError(f"the embedding cache {self._cache().path} lacks {self.hparams.teacher!r} "
                                   "embeddings in setup(); prepare_data() should have written them (run "
                                   "'neurodecode embed' first when prepare_data is disabled).")
            self.prepare_data()  # used outside a Trainer, in one process
        hp, ids = self.hparams, self.dataset.stimuli.stimulus_id.tolist()
        embs = [self._cache().get(self.target_spec, layer, ids=ids) for layer in self.target_layers]
        if self.ubp is not None:  # (3, n, dim): the weak, middle and strong blur of every stimulus
            self._blur_levels = np.stack([self._cache().get(spec, hp.layer, ids=ids) for spec in self.target_specs])
        if not hp.layers:
            self._image_embeddings = embs[0]
        else:
            from neurodecode.training.targets import fuse_concat, stack_layers

            self._image_embeddings = fuse_concat(embs) if hp.fusion == "concat" else stack_layers(embs, self.embed_dim)
        if hp.text:
            self._text_embeddings = self._cache().get(hp.teacher, "text", ids=self.dataset.stimuli.concept.tolist())

    @property
    def image_embeddings(self) -> np.ndarray:
        """Teacher embeddings of every stimulus, by stimulus-table row (read from the cache on first use)."""
        self._load_embeddings()
        return self._image_embeddings

    @property
    def blur_levels(self) -> np.ndarray | None:
        """UBP's targets of every stimulus at its weak, middle and strong blur, ``(3, n_stimuli, dim)`` (else None)."""
        if self.ubp is not None:
            self._load_embeddings()
        return self._blur_levels

    @property
    def text_embeddings(self) -> np.ndarray | None:
        """Text embeddings of each stimulus's concept (``text=True``), by stimulus-table row, else None."""
        self._load_embeddings()
        return self._text_embeddings

    # -- splits -------------------------------------------------------------------------------
    def _check_compatible(self) -> None:
        first = self.dataset.stores[self.subject]
        for s, st in self.dataset.stores.items():
            if st.modality != first.modality:
                raise ValueError(f"subject {s} is {st.modality} but subject {self.subject} is {first.modality}.")
            if st.modality != "fmri":
                if st.sfreq != first.sfreq or st.n_times != first.n_times:
                    raise ValueError(f"subjects {self.subject} and {s} differ in sfreq or epoch length "
                                     f"({first.sfreq} Hz x {first.n_times} vs {st.sfreq} Hz x {st.n_times}); "
                                     "prepare them with the same settings.")
            elif self.hparams.protocol != "intra" and st.n_voxels != first.n_voxels:
                raise ValueError(f"subjects {self.subject} and {s} have {first.n_voxels} and {st.n_voxels} "
                                 "voxels; cross-subject protocols need the same voxel set (use 'intra').")

    def val_concepts(self) -> list[str]:
        """The training concepts held out for validation (seeded)."""
        concepts = self.dataset.stimuli.concepts("train")
        rng = np.random.default_rng(self.hparams.split_seed)
        n_val = max(1, int(round(self.hparams.val_fraction * len(concepts))))
        if n_val >= len(concepts):
            raise ValueError(f"val_fraction={self.hparams.val_fraction} leaves no training concept "
                             f"({len(concepts)} in all).")
        return sorted(np.asarray(concepts)[rng.permutation(len(concepts))[:n_val]].tolist())

    def _groups(self, subjects: Sequence[str], which: str, average: bool, unseen: bool = False):
        table = self.dataset.stimuli
        val = set(self.val_concepts())
        stores, groups, rows, subj = [], [], [], []
        for si, s in enumerate(subjects):
            st = self.dataset.stores[s]
            stores.append(st)
            trial_rows = table.rows(st.stimulus_id, where=f"stimulus table of {self.root}")
            concept = table.concept[trial_rows]
            split = st.split
            if which == "test":
                mask = split == "test"
            else:
                in_val = np.isin(concept, list(val))
                mask = (split == "train") & (in_val if which == "val" else ~in_val)
            idx = np.flatnonzero(mask)
            sid = -1 if unseen else self.subject_index[s]
            if average:
                order = np.argsort(trial_rows[idx], kind="stable")
                sorted_rows = trial_rows[idx][order]
                uniq, starts = np.unique(sorted_rows, return_index=True)
                for r, chunk in zip(uniq, np.split(idx[order], starts[1:]), strict=True):
                    groups.append((si, chunk))
                    rows.append(r)
                    subj.append(sid)
            else:
                for t in idx:
                    groups.append((si, np.array([t])))
                    rows.append(trial_rows[t])
                    subj.append(sid)
        return stores, groups, np.asarray(rows, np.int64), np.asarray(subj, np.int64)

    def _make_set(self, which: str) -> TrialSet:
        hp = self.hparams
        if which == "test":
            subjects = self.test_subjects
            average = hp.average_test_reps
        else:
            subjects = self.train_subjects
            average = hp.average_val_reps if which == "val" else hp.average_train_reps
        unseen = which == "test" and hp.protocol == "loso"
        stores, groups, rows, subj = self._groups(subjects, which, average, unseen=unseen)
        if not groups:
            raise ValueError(f"the {which} set of {self.root} is empty (protocol {hp.protocol!r}, subject(s) "
                             f"{subjects}); check the splits in stimuli.tsv and the trial stores.")
        picks = [None if self.modality == "fmri" else st.pick_indices(self.ch_names) for st in stores]
        t0 = time.perf_counter()
        ts = TrialSet(stores, groups, rows, subj, self.image_embeddings, picks, self._time_slice,
                      texts=self.text_embeddings, preload=hp.preload)
        logger.info(f"{which}: {len(ts)} samples from {len(stores)} subject(s) ({time.perf_counter() - t0:.1f} s)")
        return ts

    def setup(self, stage: str | None = None) -> None:
        need = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",), "predict": ("test",)}
        for which in need.get(stage or "fit", ("train", "val", "test")):
            if which not in self.sets:
                self.sets[which] = self._make_set(which)

    # -- normalisation statistics ---------------------------------------------------------------
    def input_stats(self) -> dict[str, np.ndarray]:
        """Per-channel (EEG/MEG) or per-voxel (fMRI) mean and sd of the training samples.

        With ``normalize="none"`` the mean is 0 and the sd 1.
        """
        if self._stats is not None:
            return self._stats
        size = self.n_voxels if self.modality == "fmri" else self.n_chans
        if self.hparams.normalize == "none":
            self._stats = {"mean": np.zeros(size, np.float32), "std": np.ones(size, np.float32)}
            return self._stats
        if "train" not in self.sets:
            self.sets["train"] = self._make_set("train")
        ts = self.sets["train"]
        if ts.data is not None:
            x = ts.data
        else:
            rng = np.random.default_rng(0)
            pick = rng.choice(len(ts), size=min(len(ts), 2048), replace=False)
            x = np.stack([ts.signals(int(i)) for i in pick])
        axes = (0,) if self.modality == "fmri" else (0, 2)
        mean = x.mean(axis=axes, dtype=np.float64)
        std = x.std(axis=axes, dtype=np.float64)
        std = np.where(std > 0, std, 1.0)
        self._stats = {"mean": mean.astype(np.float32), "std": std.astype(np.float32)}
        return self._stats

    # -- loaders ------------------------------------------------------------------------------
    def _dataset(self, which: str) -> Dataset:
        """The set a loader serves (a subclass may wrap it, e.g. to add targets)."""
        return self.sets[which]

    def _loader(self, which: str, shuffle: bool) -> DataLoader:
        hp = self.hparams
        if hp.device_store:
            from neurodecode.training.device_store import device_loader

            return device_loader(self._dataset(which), shuffle=shuffle, batch_size=hp.batch_size,
                                 eval_batch_size=hp.eval_batch_size, seed=hp.seed, trainer=self.trainer)
        return make_loader(self._dataset(which), shuffle=shuffle, batch_size=hp.batch_size,
                           eval_batch_size=hp.eval_batch_size, seed=hp.seed, num_workers=hp.num_workers)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

    # -- description --------------------------------------------------------------------------
    def describe(self) -> dict[str, Any]:
        """What the data are (recorded next to every result)."""
        d = {
            "root": str(self.root), "modality": self.modality, "teacher": self.hparams.teacher,
            "layer": self.hparams.layer, "protocol": self.hparams.protocol, "subject": self.subject,
            "layers": self.target_layers, "fusion": self.hparams.fusion if self.hparams.layers else None,
            "blur": self.hparams.blur, "ubp": self.ubp.describe() if self.ubp else None,
            "train_subjects": self.train_subjects, "test_subjects": self.test_subjects,
            "val_fraction": self.hparams.val_fraction, "split_seed": self.hparams.split_seed,
            "val_concepts": len(self.val_concepts()),
            "average_test_reps": self.hparams.average_test_reps, "average_train_reps": self.hparams.average_train_reps,
            "channels": self.ch_names if self.modality != "fmri" else None,
            "n_chans": self.n_chans, "n_times": self.n_times, "n_voxels": self.n_voxels, "sfreq": self.sfreq,
            "embed_dim": self.embed_dim, "normalize": self.hparams.normalize,
            "source": self.dataset.meta.get("source"),
        }
        if self.modality != "fmri":
            d["tmin"], d["tmax"] = float(self.times[0]), float(self.times[-1])
        return d
