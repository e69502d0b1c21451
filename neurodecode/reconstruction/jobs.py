"""Stage 2 of a reconstruction run: draw ``k`` images per stimulus, each with its own recorded seed, resumably.

Every image is one job ``(stimulus_id, k)`` written to ``<folder>/<stimulus_id>/<k>.png``. A file is
written atomically (a temporary name, then a rename), so a file that exists is complete: a rerun skips
it and draws only what is missing. The seed of a job depends only on the run's base seed, the
stimulus id and ``k`` (:func:`sample_seed`), never on the order or the batch it was drawn in, so an
interrupted and resumed run, a run sharded over several GPUs and a run in one process give the same
images.

One process (the default): the jobs are drawn in batches by the generator given. Several devices
(``devices`` > 1, a ``strategy`` or several nodes): Lightning's predict loop shards the jobs over the
ranks (as ``neurodecode embed`` does); every rank builds its own generator on its device from a
factory, since a diffusers pipeline does not travel between processes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from neurodecode.utils import PathLike, atomic_path, logger, progress

__all__ = ["sample_seed", "image_path", "pending_jobs", "draw_images", "draw_images_sharded", "read_samples"]


def sample_seed(base_seed: int, stimulus_id: str, k: int) -> int:
    """The seed of sample ``k`` of ``stimulus_id`` (a 31-bit integer from SHA-256; order-free)."""
    digest = hashlib.sha256(f"{int(base_seed)}/{stimulus_id}/{int(k)}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def image_path(folder: PathLike, stimulus_id: str, k: int) -> Path:
    """``<folder>/<stimulus_id>/<k>.png``."""
    return Path(folder) / str(stimulus_id) / f"{int(k)}.png"


def pending_jobs(folder: PathLike, stimulus_ids: Sequence[str], n_samples: int) -> list[tuple[int, int]]:
    """``(row, k)`` of every image not yet on disk, stimulus by stimulus."""
    return [(i, k) for i, sid in enumerate(stimulus_ids) for k in range(int(n_samples))
            if not image_path(folder, sid, k).is_file()]


def _write(image: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path, suffix=".png") as tmp:
        image.save(tmp, format="PNG")


def _draw_batch(generator: Any, embeds: np.ndarray, jobs: Sequence[tuple[int, int]], stimulus_ids: Sequence[str],
                folder: Path, base_seed: int, init_images: Sequence[Any] | None, strength: float,
                post: Callable[[Any, int], Any] | None) -> None:
    import torch

    rows = [i for i, _ in jobs]
    seeds = [sample_seed(base_seed, stimulus_ids[i], k) for i, k in jobs]
    init = None if init_images is None else [init_images[i] for i in rows]
    images = generator.generate(torch.as_tensor(embeds[rows], dtype=torch.float32), seeds=seeds, init_images=init,
                                strength=strength, progress=False)
    for (i, k), im in zip(jobs, images, strict=True):
        _write(post(im, i) if post is not None else im, image_path(folder, stimulus_ids[i], k))


def draw_images(generator: Any, embeds: Any, stimulus_ids: Sequence[str], folder: PathLike, *, n_samples: int = 1,
                base_seed: int = 0, batch_size: int = 8, init_images: Sequence[Any] | None = None,
                strength: float = 1.0, post: Callable[[Any, int], Any] | None = None, show_progress: bool = True,
                desc: str = "reconstructing") -> dict[str, int]:
    """Draw the missing images of ``n_samples`` per stimulus into ``folder`` (in this process).

    Parameters
    ----------
    generator : Generator
        Stage 2 (:func:`~neurodecode.reconstruction.generators.load_generator`).
    embeds : array-like, (n, dim)
        One embedding per stimulus (row ``i`` is ``stimulus_ids[i]``).
    stimulus_ids : sequence of str
        The stimuli, in the order of ``embeds``.
    folder : path-like
        Where ``<stimulus_id>/<k>.png`` go.
    n_samples : int
        Images per stimulus.
    base_seed : int
        The run's seed (:func:`sample_seed`).
    batch_size : int
        Jobs per call of the generator.
    init_images : sequence of PIL images | None
        One img2img start per stimulus (the low-level branch).
    strength : float
        img2img strength (1: the start image is ignored).
    post : callable | None
        ``post(image, row) -> image`` applied before writing (e.g. the low-level blend).
    show_progress : bool
        A progress bar over images.
    desc : str
        The bar's label.

    Returns
    -------
    counts : dict
        ``{"drawn": ..., "skipped": ...}``.
    """
    folder = Path(folder)
    embeds = np.asarray(embeds, dtype=np.float32)
    if len(embeds) != len(stimulus_ids):
        raise ValueError(f"{len(embeds)} embeddings for {len(stimulus_ids)} stimuli; give one per stimulus.")
    jobs = pending_jobs(folder, stimulus_ids, n_samples)
    total = len(stimulus_ids) * int(n_samples)
    if len(jobs) < total:
        logger.info(f"{desc}: {total - len(jobs)} of {total} images already in {folder}, drawing {len(jobs)}")
    bar = progress(total=len(jobs), enabled=show_progress and bool(jobs), desc=desc, unit="image")
    try:
        for b in range(0, len(jobs), max(1, int(batch_size))):
            chunk = jobs[b:b + int(batch_size)]
            _draw_batch(generator, embeds, chunk, stimulus_ids, folder, base_seed, init_images, strength, post)
            bar.update(len(chunk))
    finally:
        bar.close()
    return {"drawn": len(jobs), "skipped": total - len(jobs)}


_LIGHTNING_CLASSES: dict[str, type] = {}


def _lightning_classes() -> dict[str, type]:
    """The predict-loop module, built on first use (keeps ``import`` light; PEP 562 below for spawn)."""
    if _LIGHTNING_CLASSES:
        return _LIGHTNING_CLASSES
    import lightning as L
    import torch

    class GenerateModule(L.LightningModule):
        """Each rank builds its generator on its device; each predict step draws and writes a batch of jobs."""

        def __init__(self, factory: Callable[[str], Any], embeds: np.ndarray, stimulus_ids: Sequence[str],
                     folder: str, base_seed: int, init_images: Sequence[Any] | None, strength: float,
                     post: Callable[[Any, int], Any] | None) -> None:
            super().__init__()
            self.factory, self.embeds, self.ids = factory, embeds, list(stimulus_ids)
            self.folder, self.base_seed = Path(folder), int(base_seed)
            self.init_images, self.strength, self.post = init_images, float(strength), post
            self.generator: Any = None
            self.anchor = torch.nn.Parameter(torch.zeros(1), requires_grad=False)  # gives the module a device
            self.n_done = 0

        def on_predict_start(self) -> None:
            self.generator = self.factory(str(self.device))

        def predict_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> int:
            jobs = [(int(i), int(k)) for i, k in batch.tolist()]
            jobs = [j for j in jobs if not image_path(self.folder, self.ids[j[0]], j[1]).is_file()]
            if jobs:
                _draw_batch(self.generator, self.embeds, jobs, self.ids, self.folder, self.base_seed,
                            self.init_images, self.strength, self.post)
            self.n_done += len(jobs)
            return len(jobs)

        def on_predict_end(self) -> None:
            logger.info(f"rank {self.global_rank}/{self.trainer.world_size}: drew {self.n_done} images")
            self.trainer.strategy.barrier("neurodecode-reconstruct-drawn")

    GenerateModule.__module__ = __name__
    GenerateModule.__qualname__ = "_GenerateModule"
    _LIGHTNING_CLASSES["_GenerateModule"] = GenerateModule
    return _LIGHTNING_CLASSES


def __getattr__(name: str) -> Any:  # PEP 562: the Lightning class, built on demand
    if name == "_GenerateModule":
        return _lightning_classes()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def draw_images_sharded(factory: Callable[[str], Any], embeds: Any, stimulus_ids: Sequence[str], folder: PathLike, *,
                        n_samples: int = 1, base_seed: int = 0, batch_size: int = 8, accelerator: str = "auto",
                        devices: int | str | Sequence[int] = 1, num_nodes: int = 1, strategy: str = "auto",
                        init_images: Sequence[Any] | None = None, strength: float = 1.0,
                        post: Callable[[Any, int], Any] | None = None,
                        show_progress: bool = True, trainer_kwargs: Mapping[str, Any] | None = None) -> dict[str, int]:
    """:func:`draw_images` over several devices with Lightning's predict loop (one shard of the jobs per rank).

    Parameters
    ----------
    factory : callable
        ``factory(device) -> Generator``, called once on every rank (picklable for spawn strategies).
    accelerator, devices, num_nodes, strategy : see ``lightning.Trainer``
    trainer_kwargs : dict | None
        More ``Trainer`` arguments.
    embeds, stimulus_ids, folder, n_samples, base_seed, batch_size, init_images, strength, post, show_progress
        As :func:`draw_images` (``post`` picklable for spawn strategies).

    Returns
    -------
    counts : dict
        ``{"drawn": ..., "skipped": ...}`` as planned before the ranks started, and this process's ``rank``.
    """
    import lightning as L
    import torch
    from torch.utils.data import DataLoader

    embeds = np.asarray(embeds, dtype=np.float32)
    jobs = pending_jobs(folder, stimulus_ids, n_samples)
    total = len(stimulus_ids) * int(n_samples)
    if not jobs:
        return {"drawn": 0, "skipped": total, "rank": 0}
    module = _lightning_classes()["_GenerateModule"](factory, embeds, stimulus_ids, str(folder), base_seed,
                                                     init_images, strength, post)
    loader = DataLoader(torch.as_tensor(jobs, dtype=torch.long), batch_size=max(1, int(batch_size)), shuffle=False)
    kwargs: dict[str, Any] = {"accelerator": accelerator, "devices": devices, "num_nodes": int(num_nodes),
                              "strategy": strategy, "logger": False, "enable_checkpointing": False,
                              "enable_model_summary": False, "enable_progress_bar": bool(show_progress),
                              "inference_mode": True, "default_root_dir": str(folder)}
    kwargs.update(trainer_kwargs or {})
    trainer = L.Trainer(**kwargs)
    trainer.predict(module, dataloaders=loader, return_predictions=False)
    return {"drawn": len(jobs), "skipped": total - len(jobs), "rank": int(trainer.global_rank)}


def read_samples(folder: PathLike, stimulus_ids: Sequence[str], n_samples: int) -> dict[str, list[Path]]:
    """``{stimulus_id: [<folder>/<id>/0.png, ...]}``; a missing file is an error naming it."""
    out: dict[str, list[Path]] = {}
    for sid in stimulus_ids:
        paths = [image_path(folder, sid, k) for k in range(int(n_samples))]
        missing = [p for p in paths if not p.is_file()]
        if missing:
            raise FileNotFoundError(f"{missing[0]} is missing ({len(missing)} image(s) of {sid}); rerun the command "
                                    "to draw what is missing.")
        out[str(sid)] = paths
    return out
