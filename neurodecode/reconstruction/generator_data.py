"""The demo generator's training data: the images of a stimulus table's training split and their teacher embeddings.

:class:`GeneratorDataModule` feeds :class:`~neurodecode.reconstruction.lit_generator.GeneratorModule`
(``neurodecode fit -c configs/sim/generator.yaml``).

The images of the *training* split only are trained on: the test images stay novel, so a reconstruction of
a test stimulus shows what the generator makes of a concept it never saw, not a memorised picture (they are
read for ``test/loss`` alone, an evaluation). A seeded share of the training *concepts* is held out for
validation (the same draw as :class:`~neurodecode.training.data.BrainImageDataModule`, so an encoder and a
generator trained on one folder hold out the same concepts). The conditions are the teacher's raw
embeddings from the data set's embedding cache (``embeddings.h5``), embedded on first use by
:func:`neurodecode.teachers.ensure_embeddings`, the machinery the encoders use. No augmentation: a
horizontal flip would contradict the embedding (the simulator's features encode position and orientation,
and so do vision models' to a degree).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from neurodecode.reconstruction.demo_generator import images_to_tensor
from neurodecode.utils import UserError, logger

__all__ = ["GeneratorDataModule"]


class _ImageSet(Dataset):
    def __init__(self, images: torch.Tensor, embeds: torch.Tensor, rows: np.ndarray) -> None:
        self.images, self.embeds, self.rows = images, embeds, torch.as_tensor(rows)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"image": self.images[i], "embed": self.embeds[i], "stim": self.rows[i], "index": torch.tensor(i)}


class GeneratorDataModule(L.LightningDataModule):
    """Training images of a stimulus table with their teacher embeddings (see the module docstring).

    Parameters
    ----------
    root : str
        A prepared or simulated folder (``stimuli.tsv`` + images), a ``.tsv`` table or a plain folder of
        images (all of them "train").
    teacher : str
        Teacher spec of the conditions (``"sim:features"`` on simulated data, ``"efficientnet-lite0"``,
        a CLIP...). Must be the teacher of the prior that will feed the generator.
    layer : str
        Teacher layer.
    image_size : int
        Side the images are resized to (box filter) for training; the model's resolution.
    val_fraction : float
        Share of training concepts held out for validation (a folder with a single concept holds out
        that share of its images instead).
    split_seed : int
        Seed of the validation draw.
    batch_size, eval_batch_size : int
        Training / validation batch sizes.
    num_workers : int
        DataLoader workers (the images are in memory; 0 is right on a CPU).
    cache : str | None
        Embedding cache (default ``<root>/embeddings.h5``).
    embed_batch_size : int
        Batch size for embedding stimuli the cache lacks.
    embed_device : str
        Device for that embedding.
    seed : int
        Seed of the training order (each epoch's order depends only on it and the epoch).
    """

    # what ``neurodecode fit`` links from this data module into the model (no YAML repeats them)
    CLI_LINKS = (("data.embed_dim", "model.init_args.embed_dim"), ("data.image_size", "model.init_args.resolution"))

    def __init__(self, root: str, teacher: str = "sim:features", layer: str = "final", image_size: int = 32,
                 val_fraction: float = 0.1, split_seed: int = 0, batch_size: int = 64, eval_batch_size: int = 256,
                 num_workers: int = 0, cache: str | None = None, embed_batch_size: int = 32,
                 embed_device: str = "auto", seed: int = 0) -> None:
        super().__init__()
        self.save_hyperparameters()
        from neurodecode.teachers import load_stimuli

        if not 0 < val_fraction < 1:
            raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}.")
        if image_size < 8:
            raise ValueError(f"image_size must be at least 8 pixels, got {image_size}.")
        self.root = Path(root)
        self.stimuli = load_stimuli(self.root)
        self.train_rows = np.flatnonzero(self.stimuli.split == "train")
        if not len(self.train_rows):
            raise UserError(f"{self.root}: the stimulus table has no 'train' images; the demo generator trains on "
                            "the training split only (test images stay novel).")
        self.image_size = int(image_size)
        self.embed_dim = self._embed_dim()
        self.sets: dict[str, _ImageSet] = {}
        self.source_size: int | None = None
        self._stats: dict[str, np.ndarray] | None = None

    # -- embeddings (the encoders' cache and teachers) ---------------------------------------------
    def _cache(self):
        from neurodecode.teachers import EmbeddingCache

        return EmbeddingCache(self.hparams.cache or self.root / "embeddings.h5")

    def _ids(self, rows: np.ndarray | None = None) -> list[str]:
        return self.stimuli.stimulus_id[self.train_rows if rows is None else rows].tolist()

    def _embed_dim(self) -> int:
        hp = self.hparams
        cache = self._cache()
        if cache.has(hp.teacher, hp.layer):
            return int(cache.dim(hp.teacher, hp.layer))
        from neurodecode.teachers import probe_dim

        return int(probe_dim(hp.teacher, hp.layer, self.stimuli))

    def prepare_data(self) -> None:
        """Embed the stimuli the cache lacks (Lightning runs this on one process)."""
        hp = self.hparams
        if self._cache().has(hp.teacher, hp.layer, self.stimuli.stimulus_id.tolist()):
            return
        from neurodecode.teachers import ensure_embeddings

        logger.info(f"embedding the stimuli of {self.root} with {hp.teacher} -> {self._cache().path}")
        ensure_embeddings(self.stimuli, hp.teacher, self._cache().path, layers=(hp.layer,),
                          batch_size=hp.embed_batch_size, device=hp.embed_device)

    def embeddings(self, rows: np.ndarray | None = None) -> np.ndarray:
        """Raw teacher embeddings ``(n, dim)`` of stimulus-table ``rows`` (default: the training split)."""
        hp = self.hparams
        ids = self._ids(rows)
        if not self._cache().has(hp.teacher, hp.layer, ids):
            self.prepare_data()  # outside a Trainer
        return np.asarray(self._cache().get(hp.teacher, hp.layer, ids=ids), dtype=np.float32)

    # -- splits ---------------------------------------------------------------------------------
    def val_concepts(self) -> list[str]:
        """Training concepts held out for validation (the draw of ``BrainImageDataModule.val_concepts``)."""
        concepts = self.stimuli.concepts("train")
        if len(concepts) < 2:
            return []
        rng = np.random.default_rng(self.hparams.split_seed)
        n_val = max(1, int(round(self.hparams.val_fraction * len(concepts))))
        if n_val >= len(concepts):
            raise ValueError(f"val_fraction={self.hparams.val_fraction} leaves no training concept "
                             f"({len(concepts)} in all).")
        return sorted(np.asarray(concepts)[rng.permutation(len(concepts))[:n_val]].tolist())

    def _val_mask(self) -> np.ndarray:
        val = self.val_concepts()
        if val:
            return np.isin(self.stimuli.concept[self.train_rows].astype(str), val)
        # one concept (a plain folder of images): hold out a seeded share of the images
        n = len(self.train_rows)
        n_val = max(1, int(round(self.hparams.val_fraction * n)))
        if n_val >= n:
            raise ValueError(f"{self.root} has {n} training image(s): too few to hold out validation images.")
        mask = np.zeros(n, dtype=bool)
        mask[np.random.default_rng(self.hparams.split_seed).permutation(n)[:n_val]] = True
        return mask

    def _load(self, rows: np.ndarray, groups: np.ndarray, names: tuple[str, ...]) -> None:
        """Read the images of ``rows`` into the sets ``names[group]`` (resized to ``image_size``)."""
        from PIL import Image

        from neurodecode.teachers.stimuli import stimulus_image_files

        emb = self.embeddings(rows)
        parts: dict[str, tuple[list, list, list]] = {n: ([], [], []) for n in names}
        for j, (row, paths) in enumerate(zip(rows, stimulus_image_files(self.stimuli, rows), strict=True)):
            ims, es, rs = parts[names[groups[j]]]
            for p in paths:  # a folder stimulus: each of its images, with the folder's (mean) embedding
                with Image.open(p) as im:
                    im.load()
                    if self.source_size is None:
                        self.source_size = int(max(im.size))
                    ims.append(images_to_tensor([im], self.image_size)[0])
                es.append(emb[j])
                rs.append(row)
        for name, (ims, es, rs) in parts.items():
            if not ims:
                raise ValueError(f"the {name} set of {self.root} is empty; use more training images or another "
                                 "val_fraction.")
            self.sets[name] = _ImageSet(torch.stack(ims), torch.as_tensor(np.stack(es)), np.asarray(rs))

    def setup(self, stage: str | None = None) -> None:
        """Training and validation images (``fit``, ``validate``); the test images only for ``test``."""
        if "train" not in self.sets:
            self._load(self.train_rows, self._val_mask().astype(int), ("train", "val"))
            logger.info(f"generator data: {len(self.sets['train'])} training and {len(self.sets['val'])} "
                        f"validation images at {self.image_size} px, {self.embed_dim}-d {self.hparams.teacher} "
                        "conditions")
        if stage == "test" and "test" not in self.sets:
            rows = np.flatnonzero(self.stimuli.split == "test")
            if not len(rows):
                raise UserError(f"{self.root}: the stimulus table has no 'test' images to test on.")
            self._load(rows, np.zeros(len(rows), dtype=int), ("test",))

    def embed_stats(self) -> dict[str, np.ndarray]:
        """Per-dimension mean and sd of the training images' embeddings (the condition's z-scoring)."""
        if self._stats is None:
            self.setup("fit")
            e = self.sets["train"].embeds.double()
            self._stats = {"mean": e.mean(0).float().numpy(), "std": e.std(0).float().numpy()}
        return self._stats

    def train_dataloader(self) -> DataLoader:
        from neurodecode.training.sets import EpochSeededSampler

        hp = self.hparams
        ds = self.sets["train"]
        return DataLoader(ds, batch_size=hp.batch_size, sampler=EpochSeededSampler(len(ds), hp.seed),
                          drop_last=len(ds) > hp.batch_size, num_workers=hp.num_workers,
                          persistent_workers=hp.num_workers > 0)

    def _eval_loader(self, which: str) -> DataLoader:
        return DataLoader(self.sets[which], batch_size=self.hparams.eval_batch_size, shuffle=False,
                          num_workers=self.hparams.num_workers, persistent_workers=self.hparams.num_workers > 0)

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader("val")

    def test_dataloader(self) -> DataLoader:
        """The TEST images, for ``test/loss`` only (never trained on)."""
        return self._eval_loader("test")

    def describe(self) -> dict[str, Any]:
        """What the generator was trained on (recorded in checkpoints and exports)."""
        self.setup("fit")
        return {"root": str(self.root), "teacher": self.hparams.teacher, "layer": self.hparams.layer,
                "embed_dim": self.embed_dim, "image_size": self.image_size, "source_size": self.source_size,
                "n_train_images": len(self.sets["train"]), "n_val_images": len(self.sets["val"]),
                "val_concepts": len(self.val_concepts()), "val_fraction": self.hparams.val_fraction,
                "split_seed": self.hparams.split_seed, "splits": ["train"]}


