"""Data for the stage-1 prior: the encoder's embeddings of the training trials, paired with their images'.

:class:`PriorDataModule` takes a trained encoder (a ``neurodecode fit`` ``.ckpt`` or an exported folder),
rebuilds the encoder's :class:`~neurodecode.training.data.BrainImageDataModule` from what the encoder
recorded (the checkpoint's data-module hyper-parameters, or the exported ``config.json``'s
``"datamodule"``), embeds the TRAINING trials with the encoder (no gradients, batched, progress bar) and
pairs each with the raw teacher embedding of its stimulus. The validation set is the encoder's own
validation concepts, so the prior's model selection never sees test data; the test set (repetitions
averaged) is embedded only for ``trainer.test`` and :meth:`PriorDataModule.test_embeddings`, after
training.

Brain embeddings are cached in ``cache_dir`` (default: ``prior_cache/`` next to the encoder), one
``.npz`` per set, keyed by a hash of the encoder's weights and of the data settings: a rerun does not
re-embed. A cached file is used only when its rows match the set built now.

Batches: ``{"brain", "target", "stim", "index", "subject"}`` (``target`` raw; the model normalises).

Command-line links the lead's LightningCLI adds for ``configs/<dataset>/prior.yaml``::

    data.brain_dim         -> model.init_args.brain_dim
    data.target_dim        -> model.init_args.target_dim
    data.normalize_targets -> model.init_args.normalize_targets

(the target statistics travel by :meth:`PriorDataModule.target_stats`, read by the model's ``setup``).
"""

from __future__ import annotations

import hashlib
import inspect
import json
import time
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from neurodecode.training.data import BrainImageDataModule
from neurodecode.training.sets import TrialSet, make_loader
from neurodecode.utils import UserError, atomic_path, logger, progress

__all__ = ["PriorDataModule", "EmbeddingPairs", "encoder_info", "load_encoder"]

CACHE_VERSION = 1
# data settings that change which trials a set holds or how they are averaged (part of the cache key)
SET_KEYS = ("protocol", "subject", "subjects", "val_fraction", "split_seed", "average_test_reps", "average_val_reps",
            "average_train_reps", "channels", "tmin", "tmax")


def encoder_info(path: str | Path) -> dict[str, Any]:
    """What a trained encoder recorded, read without building it.

    Parameters
    ----------
    path : str | Path
        A ``neurodecode fit`` checkpoint or an exported folder.

    Returns
    -------
    info : dict
        ``{"path", "format" ("checkpoint" | "exported"), "weights" (file to hash), "encoder_config",
        "datamodule" (data-module arguments), "data" (the data description)}``.
    """
    from neurodecode.training.export import CONFIG_NAME, WEIGHTS_NAME
    from neurodecode.training.lit import load_checkpoint_dict

    p = Path(path)
    if p.is_dir():
        cfg_file = p / CONFIG_NAME
        if not cfg_file.is_file() or not (p / WEIGHTS_NAME).is_file():
            raise UserError(f"encoder {path}: an exported encoder folder holds {CONFIG_NAME} and {WEIGHTS_NAME}.")
        cfg = json.loads(cfg_file.read_text())
        if "encoder" not in cfg:
            raise UserError(f"encoder {cfg_file}: no 'encoder' entry; export the encoder with 'neurodecode export'.")
        return {"path": str(p), "format": "exported", "weights": str(p / WEIGHTS_NAME), "encoder_config": cfg["encoder"],
                "datamodule": dict(cfg.get("datamodule") or {}), "data": dict(cfg.get("data") or {})}
    if p.is_file():
        ckpt = load_checkpoint_dict(p)
        hp = ckpt.get("hyper_parameters", {})
        if "encoder_config" not in hp:
            raise UserError(f"encoder {path}: the checkpoint has no encoder_config; give a checkpoint of an encoder "
                            "trained with 'neurodecode fit' (AlignmentModule).")
        return {"path": str(p), "format": "checkpoint", "weights": str(p), "encoder_config": hp["encoder_config"],
                "datamodule": dict(ckpt.get("datamodule_hyper_parameters") or {}), "data": dict(hp.get("data") or {})}
    raise UserError(f"encoder {path}: no such file or folder; give a 'neurodecode fit' checkpoint (.ckpt) or an "
                    "exported encoder folder (config.json + model.safetensors).")


def load_encoder(path: str | Path) -> tuple[torch.nn.Module, dict[str, Any]]:
    """A trained encoder and what it recorded about its data.

    Parameters
    ----------
    path : str | Path
        A ``neurodecode fit`` checkpoint or an exported folder.

    Returns
    -------
    model : torch.nn.Module
        Called as ``model(x_raw, subject)`` (input normalisation included), in eval mode, on CPU.
    info : dict
        ``{"path", "format" ("checkpoint" | "exported"), "weights" (file to hash), "encoder_config",
        "datamodule" (data-module arguments), "data" (the data description)}``.
    """
    from neurodecode.training.export import from_pretrained
    from neurodecode.training.lit import load_alignment_checkpoint

    info = encoder_info(path)
    if info["format"] == "exported":
        return from_pretrained(path).eval(), info
    module, _ = load_alignment_checkpoint(path)
    return module.eval(), info


def _datamodule_args(info: dict[str, Any]) -> dict[str, Any]:
    """BrainImageDataModule arguments from what the encoder recorded."""
    allowed = set(inspect.signature(BrainImageDataModule.__init__).parameters) - {"self"}
    if info["datamodule"]:
        return {k: v for k, v in info["datamodule"].items() if k in allowed}
    d = info["data"]  # an older export without the data-module arguments: use the description
    if not d.get("root"):
        raise UserError(f"encoder {info['path']} records neither its data-module arguments nor its data root; "
                        "pass data.root and data.teacher.")
    args = {k: d[k] for k in ("root", "teacher", "layer", "protocol", "subject", "val_fraction", "split_seed",
                              "average_test_reps", "average_train_reps", "channels", "normalize") if k in d}
    subjects = sorted(set(d.get("train_subjects", [])) | set(d.get("test_subjects", [])))
    if subjects:
        args["subjects"] = subjects
    if d.get("tmin") is not None:
        args["tmin"], args["tmax"] = d["tmin"], d["tmax"]
    return args


def _build_datamodule(args: dict[str, Any]) -> BrainImageDataModule:
    # Built on first use, never inside PriorDataModule.__init__: there, Lightning's save_hyperparameters
    # would give the inner module the outer one's arguments (LightningCLI hands the hyper-parameters of the
    # class it instantiates to every save_hyperparameters call made meanwhile; without the CLI it walks up
    # the frames of nested __init__ calls). The same holds for the encoder's AlignmentModule.
    return BrainImageDataModule(**args)


def _teacher_dim(args: dict[str, Any]) -> int:
    """The target teacher layer's size, from the embedding cache or by probing the teacher with one image."""
    from neurodecode.io.prepared import open_prepared
    from neurodecode.teachers import probe_dim
    from neurodecode.teachers.cache import EmbeddingCache

    root = Path(args["root"])
    cache = EmbeddingCache(args.get("cache") or root / "embeddings.h5")
    if cache.has(args["teacher"], args["layer"]):
        return int(cache.dim(args["teacher"], args["layer"]))
    return int(probe_dim(args["teacher"], args["layer"], open_prepared(root).stimuli))


def _sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


class EmbeddingPairs(Dataset):
    """Brain embeddings paired with the teacher embeddings of their stimuli.

    Parameters
    ----------
    brain : ndarray, (n, brain_dim)
    stim_rows : ndarray of int, (n,)
        Stimulus-table row of each sample.
    subjects : ndarray of int, (n,)
    targets : ndarray, (n_stimuli, target_dim)
        Raw teacher embeddings by stimulus row.
    """

    def __init__(self, brain: np.ndarray, stim_rows: np.ndarray, subjects: np.ndarray, targets: np.ndarray) -> None:
        self.brain = torch.as_tensor(np.asarray(brain, np.float32))
        self.stim_rows = np.asarray(stim_rows, np.int64)
        self.subjects = np.asarray(subjects, np.int64)
        self.targets = torch.as_tensor(np.asarray(targets, np.float32))

    def __len__(self) -> int:
        return len(self.brain)

    def __getitem__(self, i: int) -> dict[str, Any]:
        row = int(self.stim_rows[i])
        return {"brain": self.brain[i], "target": self.targets[row], "stim": row, "index": i,
                "subject": int(self.subjects[i])}


class PriorDataModule(L.LightningDataModule):
    """Encoder embeddings of training trials + raw teacher image embeddings (see the module docstring).

    Parameters
    ----------
    encoder : str
        A ``neurodecode fit`` checkpoint of the encoder, or its exported folder.
    root : str | None
        The prepared data folder (default: the one the encoder recorded).
    teacher : str | None
        Teacher of the targets (default: the encoder's); e.g. the teacher a generator was trained on.
    layer : str | None
        Teacher layer of the targets (default: the encoder's with its teacher, else ``"final"``).
    normalize_targets : bool
        Train the prior on z-scored targets (linked to the model); default raw (ATM).
    batch_size : int
        Training batch size (ATM: 1024).
    eval_batch_size : int | None
        Validation/test batch size (default ``batch_size``).
    num_workers : int
        DataLoader workers (the pairs are in memory: 0 is usually fastest).
    val_fraction : float | None
        Share of training concepts held out for validation (default: the encoder's, so that the prior
        validates on the encoder's validation concepts).
    average_train_reps : bool | None
        Average the repetitions of a training image (default: as the encoder was trained).
    cache_dir : str | None
        Where brain embeddings are cached (default ``<encoder's folder>/prior_cache``).
    embed_batch_size : int
        Batch size of the encoder when embedding.
    device : str
        Device for embedding (``"auto"``: CUDA when present).
    progress : bool
        Progress bars while embedding.
    seed : int
        Seed of the training order.
    """

    #: what ``neurodecode fit`` links from this data module into the model (see cli/lightning.py)
    CLI_LINKS = (("data.brain_dim", "model.init_args.brain_dim"), ("data.target_dim", "model.init_args.target_dim"),
                 ("data.normalize_targets", "model.init_args.normalize_targets"))

    def __init__(self, encoder: str, root: str | None = None, teacher: str | None = None, layer: str | None = None,
                 normalize_targets: bool = False, batch_size: int = 1024, eval_batch_size: int | None = None,
                 num_workers: int = 0, val_fraction: float | None = None, average_train_reps: bool | None = None,
                 cache_dir: str | None = None, embed_batch_size: int = 256, device: str = "auto",
                 progress: bool = True, seed: int = 0) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.encoder_info = encoder_info(encoder)
        self._encoder_model: torch.nn.Module | None = None
        args = _datamodule_args(self.encoder_info)
        recorded_root = args.get("root")
        if root is None and (recorded_root is None or not Path(recorded_root).is_dir()):
            raise UserError(f"encoder {encoder} was trained on data at {recorded_root}, which is not found here; "
                            "pass data.root (the prepared folder).")
        if root is not None and args.get("root") is not None and Path(root) != Path(args["root"]):
            args["cache"] = None  # another copy of the data: its own embedding cache
        enc_teacher, enc_layer = args.get("teacher", "efficientnet-lite0"), args.get("layer", "final")
        args.update(root=str(root or recorded_root), teacher=teacher or enc_teacher, text=False, preload=False,
                    num_workers=0, average_test_reps=True)
        args["layer"] = layer or (enc_layer if (teacher or enc_teacher) == enc_teacher else "final")
        if val_fraction is not None:
            args["val_fraction"] = val_fraction
        if average_train_reps is not None:
            args["average_train_reps"] = average_train_reps
        self._data_args = args
        self._data: BrainImageDataModule | None = None
        self.root = Path(args["root"])
        self.teacher, self.layer = args["teacher"], args["layer"]
        n_out = self.encoder_info["encoder_config"].get("n_outputs")
        if n_out is None:
            raise UserError(f"encoder {encoder}: its configuration has no n_outputs (the embedding size).")
        self.brain_dim = int(n_out)
        self.target_dim = _teacher_dim(args)
        self.normalize_targets = bool(normalize_targets)
        self.pairs: dict[str, EmbeddingPairs] = {}
        self._brain: dict[str, dict[str, np.ndarray]] = {}
        self._stats: dict[str, np.ndarray] | None = None
        self._weights_hash: str | None = None

    @property
    def data(self) -> BrainImageDataModule:
        """The encoder's data module, rebuilt from what the encoder recorded (on first use)."""
        if self._data is None:
            self._data = _build_datamodule(self._data_args)
        return self._data

    @property
    def encoder_model(self) -> torch.nn.Module:
        """The encoder (input normalisation included), loaded on first use, on CPU between uses."""
        if self._encoder_model is None:
            self._encoder_model, _ = load_encoder(self.hparams.encoder)
        return self._encoder_model

    @property
    def test_subjects(self) -> list[str]:
        """The subjects of the test set."""
        return self.data.test_subjects

    @property
    def dataset(self):
        """The prepared dataset (stimulus table, trial stores) of the encoder's data."""
        return self.data.dataset

    # -- brain embeddings (cached) ----------------------------------------------------------
    def cache_path(self, which: str) -> Path:
        """The cache file of set ``which`` (``"train"``, ``"val"``, ``"test"``)."""
        if self._weights_hash is None:
            self._weights_hash = _sha256(self.encoder_info["weights"])
        hp = self.data.hparams
        key = {"version": CACHE_VERSION, "weights": self._weights_hash, "root": str(self.root.resolve()),
               "set": which, **{k: hp.get(k) for k in SET_KEYS}}
        digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]
        folder = Path(self.hparams.cache_dir) if self.hparams.cache_dir else \
            Path(self.encoder_info["path"]).parent / "prior_cache"
        return folder / f"{Path(self.encoder_info['path']).name}-{digest}-{which}.npz"

    def _set(self, which: str) -> TrialSet:
        if which not in self.data.sets:
            self.data.setup("test" if which == "test" else "fit")
        return self.data.sets[which]

    def brain_embeddings(self, which: str) -> dict[str, np.ndarray]:
        """``{"embedding", "stim_row", "subject"}`` of set ``which``, from the cache or embedded now."""
        if which in self._brain:
            return self._brain[which]
        ts = self._set(which)
        path = self.cache_path(which)
        if path.is_file():
            with np.load(path, allow_pickle=False) as f:
                got = {k: f[k] for k in f.files}
            if (np.array_equal(got.get("stim_row"), ts.stim_rows) and np.array_equal(got.get("subject"), ts.subjects)
                    and got["embedding"].shape == (len(ts), self.brain_dim)):
                logger.info(f"prior data: {which} brain embeddings from the cache {path}")
                self._brain[which] = got
                return got
            logger.info(f"prior data: the cache {path} does not match the {which} set; embedding again")
        t0 = time.perf_counter()
        emb = self._embed(ts, which)
        out = {"embedding": emb, "stim_row": ts.stim_rows.copy(), "subject": ts.subjects.copy(),
               "stimulus_id": np.asarray(self.data.dataset.stimuli.stimulus_id)[ts.stim_rows].astype(str)}
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path, suffix=".npz") as tmp:
            np.savez(tmp, **out)
        logger.info(f"prior data: embedded {len(emb)} {which} samples in {time.perf_counter() - t0:.1f} s -> {path}")
        self._brain[which] = out
        return out

    @torch.no_grad()
    def _embed(self, ts: TrialSet, which: str) -> np.ndarray:
        dev = self.hparams.device
        device = torch.device("cuda" if dev == "auto" and torch.cuda.is_available() else "cpu" if dev == "auto" else dev)
        model = self.encoder_model.to(device)
        bs = int(self.hparams.embed_batch_size)
        out = np.zeros((len(ts), self.brain_dim), np.float32)
        chunk = max(bs, 4096)  # read (and average) trials in blocks: memory is bounded by one block
        bar = progress(total=len(ts), enabled=self.hparams.progress, desc=f"embedding {which} trials", unit="trial")
        try:
            for start in range(0, len(ts), chunk):
                stop = min(start + chunk, len(ts))
                block = TrialSet(ts.stores, ts.groups[start:stop], ts.stim_rows[start:stop], ts.subjects[start:stop],
                                 ts.targets, ts.picks, ts.time_slice, preload=True)
                for b in range(0, len(block), bs):
                    x = torch.as_tensor(block.data[b:b + bs]).to(device)
                    subj = block.subjects[b:b + bs]
                    emb = torch.empty(len(x), self.brain_dim, device=device)
                    for s in np.unique(subj):  # one subject per call (-1: a subject the encoder never saw)
                        m = torch.as_tensor(subj == s, device=device)
                        sub = None if s < 0 else torch.full((int(m.sum()),), int(s), dtype=torch.long, device=device)
                        emb[m] = model(x[m], sub).float()
                    out[start + b:start + b + len(x)] = emb.cpu().numpy()
                    bar.update(len(x))
        finally:
            bar.close()
            self.encoder_model.cpu()
        return out

    # -- Lightning hooks ----------------------------------------------------------------------
    def prepare_data(self) -> None:
        """Teacher embeddings of the stimuli (when missing) and the brain embeddings of train and val."""
        self.data.prepare_data()
        for which in ("train", "val"):
            self.brain_embeddings(which)

    def _pairs(self, which: str) -> EmbeddingPairs:
        b = self.brain_embeddings(which)
        return EmbeddingPairs(b["embedding"], b["stim_row"], b["subject"], self.data.image_embeddings)

    def setup(self, stage: str | None = None) -> None:
        need = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",), "predict": ("test",)}
        for which in need.get(stage or "fit", ("train", "val")):
            if which not in self.pairs:
                self.pairs[which] = self._pairs(which)

    def target_stats(self) -> dict[str, np.ndarray]:
        """Per-dimension mean and sd of the raw targets over the training samples (no embedding needed)."""
        if self._stats is None:
            y = np.asarray(self.data.image_embeddings, np.float64)[self._set("train").stim_rows]
            std = y.std(0)
            self._stats = {"mean": y.mean(0).astype(np.float32),
                           "std": np.where(std > 0, std, 1.0).astype(np.float32)}
        return self._stats

    @property
    def target_mean(self) -> np.ndarray:
        """Mean of the raw training targets (per dimension)."""
        return self.target_stats()["mean"]

    @property
    def target_std(self) -> np.ndarray:
        """Standard deviation of the raw training targets (per dimension)."""
        return self.target_stats()["std"]

    def _loader(self, which: str, shuffle: bool) -> DataLoader:
        hp = self.hparams
        return make_loader(self.pairs[which], shuffle=shuffle, batch_size=hp.batch_size,
                           eval_batch_size=hp.eval_batch_size, seed=hp.seed, num_workers=hp.num_workers)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

    # -- test embeddings and description -------------------------------------------------------
    def test_embeddings(self, *, average_subjects: bool = False) -> dict[str, np.ndarray]:
        """The encoder's embeddings of the TEST trials (repetitions averaged) with their stimulus ids.

        Parameters
        ----------
        average_subjects : bool
            Average the embeddings of a test image over subjects (one row per image).

        Returns
        -------
        out : dict
            ``embedding`` (n, brain_dim) float32, ``stimulus_id`` (str), ``stim_row`` (row in the stimulus
            table), ``subject`` (the encoder's subject index, -1 for an unseen subject) and
            ``subject_label`` (the subject's name; ``"mean"`` when averaged over subjects).
        """
        b = self.brain_embeddings("test")
        ts = self._set("test")
        names = [st.subject for st in ts.stores]
        labels = np.asarray([names[g[0]] for g in ts.groups], dtype=str)
        out = {"embedding": b["embedding"], "stim_row": b["stim_row"], "subject": b["subject"], "subject_label": labels}
        if average_subjects:
            rows, inv = np.unique(b["stim_row"], return_inverse=True)
            emb = np.zeros((len(rows), self.brain_dim), np.float64)
            np.add.at(emb, inv, b["embedding"])
            emb /= np.bincount(inv)[:, None]
            out = {"embedding": emb.astype(np.float32), "stim_row": rows, "subject": np.full(len(rows), -1),
                   "subject_label": np.full(len(rows), "mean")}
        out["stimulus_id"] = np.asarray(self.data.dataset.stimuli.stimulus_id)[out["stim_row"]].astype(str)
        return out

    def test_responses(self) -> np.ndarray:
        """The raw TEST responses (repetitions averaged), in the row order of :meth:`test_embeddings`.

        Returns
        -------
        x : numpy.ndarray, float32, (n, n_chans, n_times) or (n, n_voxels)
        """
        ts = self._set("test")
        if ts.data is not None:
            return ts.data
        return np.stack([ts.signals(i) for i in range(len(ts))]) if len(ts) else np.zeros((0,), np.float32)

    def describe(self) -> dict[str, Any]:
        """What the prior is trained on: targets, data and the encoder (recorded in checkpoints and exports)."""
        info = self.encoder_info
        d = self.data.describe()
        d.update({
            "teacher": self.teacher, "layer": self.layer, "brain_dim": self.brain_dim, "target_dim": self.target_dim,
            "normalize_targets": self.normalize_targets, "n_train": len(self.pairs["train"]) if "train" in self.pairs
            else None, "n_val": len(self.pairs["val"]) if "val" in self.pairs else None,
            "encoder": {"path": info["path"], "format": info["format"],
                        "sha256": self._weights_hash or _sha256(info["weights"]),
                        "name": info["encoder_config"].get("name"), "n_outputs": self.brain_dim,
                        "teacher": info["data"].get("teacher") or info["datamodule"].get("teacher"),
                        "layer": info["data"].get("layer") or info["datamodule"].get("layer")},
        })
        d.pop("embed_dim", None)
        return d

