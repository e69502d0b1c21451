"""Embed the stimuli of a data set with a teacher: batched, resumable, data-parallel.

:func:`ensure_embeddings` is the entry point (``neurodecode fit`` calls it on first use, ``neurodecode
embed`` on the command line). It embeds only what the cache lacks, in batches, writing every
finished batch as a shard file (see :mod:`neurodecode.teachers.cache`), and merges the shards into
the cache at the end. An interrupted run loses at most the batch in flight; rerunning it skips every
stimulus already in the cache or in a shard.

Two engines do the work:

``"loop"``
    a plain loop in this process (one device). The default for one device, and safe to call from
    inside another job (e.g. a training run's data setup).
``"lightning"``
    Lightning's predict loop, ``Trainer(accelerator, devices, num_nodes, strategy).predict(...)``:
    data-parallel over GPUs and nodes. Each process embeds its share of the stimuli (Lightning's
    distributed sampler) and writes its own shards; after a barrier, rank 0 merges them, and a
    second barrier lets every rank return the complete cache. Chosen automatically when ``strategy``,
    ``devices`` other than 1, or ``num_nodes`` > 1 is asked for. Multi-process strategies such as
    ``"ddp"`` start the other processes by re-running the current command, so run them from a
    script or the command line (``neurodecode embed ... --strategy ddp --devices 4``), not from an
    interactive session. With several nodes, the output folder must be on a file system that all
    nodes share (every rank writes its shards there).

The stimuli (tables, image files, folder stimuli) are read by :mod:`neurodecode.teachers.stimuli`;
the shards, their merge and the cache file are :mod:`neurodecode.teachers.cache`'s.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from neurodecode._version import __version__
from neurodecode.io.store import StimulusTable
from neurodecode.teachers.cache import (
    EmbeddingCache,
    merge_shards,
    parts_dir,
    resolve_cache_path,
    stored_keys,
    write_shard,
)
from neurodecode.teachers.loading import load_teacher
from neurodecode.teachers.models import Teacher, resolve_device
from neurodecode.teachers.specs import (
    DEFAULT_PROMPT,
    TeacherError,
    TeacherSpec,
    canonical_layer,
    check_prompt,
    format_prompt,
    parse_layer,
    parse_spec,
    text_layer,
)
from neurodecode.teachers.stimuli import StimulusImages, collate_stimuli, load_stimuli, stimulus_image_files
from neurodecode.utils import PathLike, check_option, logger, progress, quiet_loggers, use_log_level

ENGINES = ("auto", "loop", "lightning")
# Lightning's start-up chatter (GPU available..., etc.), kept out of the output unless verbose
_LIGHTNING_LOGGERS = ("lightning.pytorch", "lightning.fabric")


# --------------------------------------------------------------------------------------------------
# one batch
# --------------------------------------------------------------------------------------------------
def embed_batch(teacher: Teacher, batch: Mapping[str, Any], layers: Sequence[str], *,
                chunk_size: int = 32) -> dict[str, np.ndarray]:
    """Features of one collated batch: layer -> float32 ``(n_stimuli, dim)``.

    Images go through the model in chunks of ``chunk_size``; a stimulus with several images (a
    folder) gets the mean of their features (accumulated in float64).
    """
    import torch

    images, counts = batch["images"], batch["counts"].cpu()
    device = teacher.device
    parts: dict[str, list[torch.Tensor]] = {name: [] for name in layers}
    for start in range(0, len(images), max(1, int(chunk_size))):
        chunk = images[start:start + chunk_size].to(device, non_blocking=True)
        feats = teacher.image_features(chunk, layers)
        for name in layers:
            parts[name].append(feats[name].detach().to("cpu", torch.float64))
    out = {}
    single = bool((counts == 1).all())
    segment = torch.repeat_interleave(torch.arange(len(counts)), counts)
    for name in layers:
        f = torch.cat(parts[name])
        if not single:
            f = torch.zeros(len(counts), f.shape[1], dtype=torch.float64).index_add_(0, segment, f)
            f = f / counts[:, None].to(torch.float64)
        out[name] = f.to(torch.float32).numpy()
    return out


def embed_texts(teacher: Teacher, concepts: Sequence[str], prompt: str = DEFAULT_PROMPT, *,
                batch_size: int = 256) -> np.ndarray:
    """Text embeddings ``(n, dim)`` of ``prompt`` filled with each concept (raw, float32)."""
    check_prompt(prompt)
    texts = [format_prompt(prompt, c) for c in concepts]
    chunks = [teacher.text_features(texts[s:s + batch_size]).cpu().numpy()
              for s in range(0, len(texts), batch_size)]
    if not chunks:
        return np.zeros((0, 0), dtype=np.float32)
    return np.concatenate(chunks).astype(np.float32, copy=False)


def _layer_attrs(teacher: Teacher) -> dict[str, Any]:
    return {"transform": teacher.transform_description, "neurodecode_version": __version__}


# --------------------------------------------------------------------------------------------------
# planning
# --------------------------------------------------------------------------------------------------
class _Plan:
    """What is left to embed: stimulus rows and their image files, and concepts for text."""

    def __init__(self, table: StimulusTable, spec: str, layers: Sequence[str], text: str | None,
                 cache_path: Path) -> None:
        ids = table.stimulus_id.astype(str)
        todo = np.zeros(len(ids), dtype=bool)
        for layer in layers:
            have = stored_keys(cache_path, spec, layer)
            todo |= ~np.isin(ids, np.asarray(sorted(have), dtype=str)) if have else True
        self.rows = np.flatnonzero(todo)
        self.ids = ids[self.rows].tolist()
        self.concepts: list[str] = []
        if text is not None:
            concepts = sorted({str(c) for c in table.concept.tolist() if str(c)})
            have = stored_keys(cache_path, spec, text)
            self.concepts = [c for c in concepts if c not in have]
        self.files: list[list[Path]] | None = None

    @property
    def empty(self) -> bool:
        return not len(self.rows) and not self.concepts

    def resolve_files(self, table: StimulusTable) -> list[list[Path]]:
        if self.files is None:
            self.files = stimulus_image_files(table, self.rows)
        return self.files


# --------------------------------------------------------------------------------------------------
# engines
# --------------------------------------------------------------------------------------------------
def _write_texts(teacher: Teacher, concepts: Sequence[str], prompt: str, spec: str, parts: Path,
                 rank: int = 0) -> None:
    if not concepts:
        return
    feats = embed_texts(teacher, concepts, prompt)
    attrs = {"prompt": prompt, "transform": "", "neurodecode_version": __version__}
    write_shard(parts, spec, {text_layer(prompt): (list(concepts), feats, attrs)}, rank=rank)


def _run_loop(teacher: Teacher, dataset: StimulusImages, layers: Sequence[str], spec: str, parts: Path, *,
              batch_size: int, num_workers: int, show_progress: bool) -> None:
    from torch.utils.data import DataLoader

    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                        collate_fn=collate_stimuli, pin_memory=teacher.device.type == "cuda")
    attrs = _layer_attrs(teacher)
    bar = progress(None, enabled=show_progress, total=len(dataset), desc=f"embed {spec}", unit="stim")
    try:
        for batch in loader:
            feats = embed_batch(teacher, batch, layers, chunk_size=batch_size)
            write_shard(parts, spec, {name: (batch["stimulus_id"], feats[name], attrs) for name in layers})
            bar.update(len(batch["stimulus_id"]))
    finally:
        bar.close()


_LIGHTNING_CLASSES: dict[str, type] = {}


def _lightning_classes() -> dict[str, type]:
    """Build the LightningModule/DataModule classes on first use (keeps ``import`` light).

    They are also reachable as module attributes (PEP 562 ``__getattr__`` below), so a spawned
    process can unpickle them.
    """
    if _LIGHTNING_CLASSES:
        return _LIGHTNING_CLASSES
    import lightning as L
    from torch.utils.data import DataLoader

    class EmbedModule(L.LightningModule):
        """Wraps a frozen teacher; each predict step embeds a batch and writes it as a shard."""

        def __init__(self, teacher: Teacher, layers: Sequence[str], cache_path: Path, prompt: str | None,
                     concepts: Sequence[str], chunk_size: int) -> None:
            super().__init__()
            self.teacher = teacher
            self.model = teacher.model  # registered, so Lightning moves it to the device
            self.layers = list(layers)
            self.cache_path = Path(cache_path)
            self.parts = parts_dir(cache_path)
            self.prompt = prompt
            self.concepts = list(concepts)
            self.chunk_size = chunk_size
            self.attrs = _layer_attrs(teacher)
            self.n_done = 0

        def predict_step(self, batch: Mapping[str, Any], batch_idx: int, dataloader_idx: int = 0) -> int:
            feats = embed_batch(self.teacher, batch, self.layers, chunk_size=self.chunk_size)
            write_shard(self.parts, self.teacher.spec.spec,
                        {name: (batch["stimulus_id"], feats[name], self.attrs) for name in self.layers},
                        rank=self.global_rank)
            self.n_done += len(batch["stimulus_id"])
            return len(batch["stimulus_id"])

        def on_predict_start(self) -> None:
            if self.global_rank == 0 and self.prompt is not None:
                _write_texts(self.teacher, self.concepts, self.prompt, self.teacher.spec.spec, self.parts)

        def on_predict_end(self) -> None:
            strategy = self.trainer.strategy
            logger.info(f"rank {self.global_rank}/{self.trainer.world_size}: embedded {self.n_done} stimuli")
            strategy.barrier("neurodecode-embed-written")
            if self.global_rank == 0:
                merge_shards(self.cache_path)
            strategy.barrier("neurodecode-embed-merged")

    class EmbedDataModule(L.LightningDataModule):
        """The stimuli left to embed, planned after the processes have joined (all ranks agree)."""

        def __init__(self, table: StimulusTable, spec: str, layers: Sequence[str], cache_path: Path,
                     transform: Any, batch_size: int, num_workers: int) -> None:
            super().__init__()
            self.table, self.spec, self.layers = table, spec, list(layers)
            self.cache_path = Path(cache_path)
            self.transform = transform
            self.batch_size, self.num_workers = batch_size, num_workers
            self.dataset: StimulusImages | None = None

        def setup(self, stage: str) -> None:
            # Lightning calls a barrier right after setup, so no rank writes a shard before all planned.
            plan = _Plan(self.table, self.spec, self.layers, None, self.cache_path)
            self.dataset = StimulusImages(plan.ids, plan.resolve_files(self.table), self.transform)

        def predict_dataloader(self) -> Any:
            assert self.dataset is not None
            return DataLoader(self.dataset, batch_size=self.batch_size, shuffle=False,
                              num_workers=self.num_workers, collate_fn=collate_stimuli)

    for cls in (EmbedModule, EmbedDataModule):
        cls.__module__ = __name__
        cls.__qualname__ = f"_{cls.__name__}"
        _LIGHTNING_CLASSES[cls.__qualname__] = cls
    return _LIGHTNING_CLASSES


def __getattr__(name: str) -> Any:  # PEP 562: the Lightning classes, built on demand
    if name in ("_EmbedModule", "_EmbedDataModule"):
        return _lightning_classes()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _run_lightning(teacher: Teacher, table: StimulusTable, layers: Sequence[str], cache_path: Path,
                   prompt: str | None, concepts: Sequence[str], *, batch_size: int, num_workers: int,
                   accelerator: str | None, devices: int | str | Sequence[int] | None, num_nodes: int,
                   strategy: str | None, show_progress: bool, trainer_kwargs: Mapping[str, Any] | None) -> int:
    import lightning as L

    classes = _lightning_classes()
    module = classes["_EmbedModule"](teacher, layers, cache_path, prompt, concepts, batch_size)
    data = classes["_EmbedDataModule"](table, teacher.spec.spec, layers, cache_path, teacher.transform,
                                       batch_size, num_workers)
    kwargs: dict[str, Any] = {
        "accelerator": accelerator or "auto", "devices": devices if devices is not None else 1,
        "num_nodes": num_nodes, "strategy": strategy or "auto", "logger": False, "enable_checkpointing": False,
        "enable_model_summary": False, "enable_progress_bar": _progress_enabled(show_progress), "inference_mode": True,
        "default_root_dir": str(parts_dir(cache_path)),
    }
    kwargs.update(trainer_kwargs or {})
    trainer = L.Trainer(**kwargs)
    trainer.predict(module, datamodule=data, return_predictions=False)
    return int(trainer.global_rank)


# --------------------------------------------------------------------------------------------------
# entry points
# --------------------------------------------------------------------------------------------------
def _accelerator_to_device(accelerator: str | None, device: str | None) -> str:
    if device not in (None, "auto"):
        return str(device)
    mapping = {"gpu": "cuda", "cuda": "cuda", "cpu": "cpu", "mps": "mps", "auto": "auto", None: "auto"}
    return resolve_device(mapping.get(accelerator, accelerator))


def run_embedding(
    stimuli: StimulusTable | PathLike,
    spec: str | TeacherSpec,
    cache_path: PathLike | None = None,
    layers: Sequence[str] = ("final",),
    texts: bool = False,
    *,
    prompt: str = DEFAULT_PROMPT,
    batch_size: int = 32,
    num_workers: int = 0,
    device: str | None = "auto",
    accelerator: str | None = None,
    devices: int | str | Sequence[int] | None = None,
    num_nodes: int = 1,
    strategy: str | None = None,
    engine: str = "auto",
    progress: bool = True,
    trainer_kwargs: Mapping[str, Any] | None = None,
    verbose: bool | str | int | None = None,
) -> dict[str, Any]:
    """Embed what the cache lacks and report what was done (see :func:`ensure_embeddings`).

    Returns
    -------
    report : dict
        ``cache`` (path), ``spec``, ``layers``, ``n_stimuli`` and ``n_images`` embedded now,
        ``n_concepts`` (text), ``seconds``, ``images_per_s``, ``engine`` and ``rank``.
    """
    with use_log_level(verbose):
        check_option("engine", engine, ENGINES)
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}.")
        table = load_stimuli(stimuli)
        cache_path = resolve_cache_path(cache_path, table.root)
        from neurodecode.teachers.simulator import SIM_SPEC, embed_simulator

        if str(spec) == SIM_SPEC:
            if texts:
                raise TeacherError(f"teacher {SIM_SPEC!r} has no text embeddings.")
            return embed_simulator(table, cache_path, [str(n) for n in layers])
        from neurodecode.teachers.names import embed_names, is_name_teacher, missing_images_message

        if is_name_teacher(spec):
            return embed_names(table, str(spec), cache_path, [str(n).strip() for n in layers], texts, prompt)
        s = parse_spec(spec)
        layers = list(dict.fromkeys(str(name).strip() for name in layers))
        kinds = [parse_layer(name) for name in layers]
        if any(k == "text" for k, _, _ in kinds):
            raise TeacherError("Text layers are not image layers: pass texts=True (command line: --text) instead "
                               f"of {[n for n, (k, _, _) in zip(layers, kinds, strict=True) if k == 'text']}.")
        if not layers and not texts:
            raise ValueError("Nothing to embed: give at least one layer or texts=True.")
        text = text_layer(prompt) if texts else None
        use_lightning = engine == "lightning" or (engine == "auto" and (
            strategy not in (None,) or devices not in (None, 1, "1") or int(num_nodes) > 1))
        loop_device = _accelerator_to_device(accelerator, device)
        teacher: Teacher | None = None
        if any(k == "block" and i is not None and i < 0 for k, i, _ in kinds):
            teacher = load_teacher(s, device=None)
            layers = teacher.canonical_layers(layers)
        else:
            layers = [canonical_layer(name) for name in layers]
        parts = parts_dir(cache_path)
        plan = _Plan(table, s.spec, layers, text, cache_path)
        report: dict[str, Any] = {"cache": str(cache_path), "spec": s.spec, "layers": layers + ([text] if text else []),
                                  "n_stimuli": int(len(plan.rows)), "n_images": 0, "n_concepts": len(plan.concepts),
                                  "seconds": 0.0, "images_per_s": None,
                                  "engine": "lightning" if use_lightning else "loop", "rank": 0}
        if plan.empty:
            merge_shards(cache_path)  # shards of an interrupted run whose work is otherwise done (if any)
            logger.info(f"{s.spec}: every stimulus is already in {cache_path}")
            return report
        no_image = [int(i) for i in plan.rows if table.image_file(int(i)) is None]
        if no_image and len(no_image) == len(plan.rows):  # no images at all (mixed cases: listed below)
            raise TeacherError(missing_images_message(s.spec, table, no_image))
        files = plan.resolve_files(table)  # fail on missing images before loading any model
        report["n_images"] = sum(len(f) for f in files)
        if teacher is None:
            teacher = load_teacher(s, device=None)
            teacher.canonical_layers(layers)  # block indices checked against the model before any work
        if plan.concepts and not teacher.has_text:
            teacher.text_features([])  # raises the explanatory error
        if use_lightning and len(plan.rows):
            t0 = time.perf_counter()
            with contextlib.nullcontext() if verbose else quiet_loggers(_LIGHTNING_LOGGERS):
                report["rank"] = _run_lightning(
                    teacher, table, layers, cache_path, text and prompt, plan.concepts, batch_size=int(batch_size),
                    num_workers=int(num_workers), accelerator=accelerator, devices=devices, num_nodes=int(num_nodes),
                    strategy=strategy, show_progress=progress, trainer_kwargs=trainer_kwargs)
            report["seconds"] = time.perf_counter() - t0
        else:
            teacher.to(loop_device)
            t0 = time.perf_counter()
            _write_texts(teacher, plan.concepts, prompt, s.spec, parts)
            if len(plan.rows):
                dataset = StimulusImages(plan.ids, files, teacher.transform)
                _run_loop(teacher, dataset, layers, s.spec, parts, batch_size=int(batch_size),
                          num_workers=int(num_workers), show_progress=progress)
            merge_shards(cache_path)
            report["seconds"] = time.perf_counter() - t0
        if report["n_images"] and report["seconds"] > 0:
            report["images_per_s"] = report["n_images"] / report["seconds"]
        if report["rank"] == 0:
            logger.info(f"{s.spec}: embedded {report['n_stimuli']} stimuli ({report['n_images']} images) and "
                        f"{report['n_concepts']} concepts in {report['seconds']:.1f} s -> {cache_path}")
        return report


def _progress_enabled(show: bool) -> bool:
    """``show``, unless ``NEURODECODE_NO_PROGRESS`` switches every bar off (as in neurodecode.utils.progress)."""
    return bool(show) and os.environ.get("NEURODECODE_NO_PROGRESS", "") in ("", "0")


def ensure_embeddings(
    stimuli: StimulusTable | PathLike,
    spec: str | TeacherSpec,
    cache_path: PathLike | None = None,
    layers: Sequence[str] = ("final",),
    texts: bool = False,
    *,
    prompt: str = DEFAULT_PROMPT,
    batch_size: int = 32,
    num_workers: int = 0,
    device: str | None = "auto",
    accelerator: str | None = None,
    devices: int | str | Sequence[int] | None = None,
    num_nodes: int = 1,
    strategy: str | None = None,
    engine: str = "auto",
    progress: bool = True,
    trainer_kwargs: Mapping[str, Any] | None = None,
    verbose: bool | str | int | None = None,
) -> EmbeddingCache:
    """Make sure the cache holds the teacher's embeddings of every stimulus; embed only what is missing.

    Nothing is loaded when the cache is already complete (so this is cheap and works offline on a
    finished cache). Otherwise the teacher is loaded (offline; see
    :func:`~neurodecode.teachers.loading.load_teacher`), the missing stimuli are embedded in batches
    and each finished batch is written as a shard; the shards are merged into the cache atomically
    at the end. Rerunning after an interruption skips everything already written.

    This function reads no rank environment variables and never waits for other processes: with
    the default ``engine="auto"`` and no ``strategy``/``devices``/``num_nodes``, it runs in this one
    process. Inside a distributed training job, call it from one process only, e.g. a
    ``LightningDataModule.prepare_data()`` (Lightning runs that before the other ranks read the
    cache). Do not run two embeddings into one cache at the same time: a merge removes the
    temporary files it finds in the shard folder.

    Parameters
    ----------
    stimuli : StimulusTable | path-like
        The stimuli: a table, a prepared folder (its ``stimuli.tsv``), a ``.tsv`` file or a folder
        of images. A row whose ``image_path`` is a folder is embedded as the mean of its images.
    spec : str | TeacherSpec
        Teacher spec, e.g. ``"open_clip:ViT-H-14/laion2b_s32b_b79k"`` or ``"efficientnet-lite0"``.
    cache_path : path-like | None
        Cache file (or its folder); default ``<stimuli root>/embeddings.h5``.
    layers : sequence of str
        Image layers: ``"final"`` and/or ``"blockN[-mean|-cls]"``, all from one forward pass.
    texts : bool
        Also embed ``prompt`` for every concept of the table (CLIP-type teachers), stored under
        :func:`~neurodecode.teachers.specs.text_layer` of the prompt and keyed by concept.
    prompt : str
        Template with a ``{concept}`` placeholder (underscores of concepts become spaces).
    batch_size : int
        Stimuli per batch (and images per forward pass).
    num_workers : int
        DataLoader worker processes for reading and transforming images.
    device : str | None
        Device of the single-process engine (``"auto"``: CUDA when present).
    accelerator, devices, num_nodes, strategy : see ``lightning.Trainer``
        Asking for a strategy, several devices or several nodes runs Lightning's predict loop,
        data-parallel (see the module docstring).
    engine : {"auto", "loop", "lightning"}
        Force an engine.
    progress : bool
        Show a progress bar.
    trainer_kwargs : mapping | None
        Extra ``lightning.Trainer`` arguments (e.g. ``callbacks``) for the Lightning engine.
    verbose : bool | str | int | None
        Log level for this call (MNE-style).

    Returns
    -------
    cache : EmbeddingCache
    """
    report = run_embedding(stimuli, spec, cache_path, layers, texts, prompt=prompt, batch_size=batch_size,
                           num_workers=num_workers, device=device, accelerator=accelerator, devices=devices,
                           num_nodes=num_nodes, strategy=strategy, engine=engine, progress=progress,
                           trainer_kwargs=trainer_kwargs, verbose=verbose)
    return EmbeddingCache(report["cache"])


__all__ = ["ENGINES", "embed_batch", "embed_texts", "ensure_embeddings", "run_embedding"]
