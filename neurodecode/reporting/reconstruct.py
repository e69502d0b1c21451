"""A whole reconstruction run: encoder -> prior -> generator -> images, metrics, report and gallery.

:func:`reconstruct` is what ``neurodecode reconstruct`` runs. Under ``out``:

``images/<stimulus_id>/<k>.png``
    ``n_samples`` reconstructions per test stimulus; sample ``k`` of stimulus ``s`` is drawn with the seed
    :func:`~neurodecode.reconstruction.jobs.sample_seed` ``(seed, s, k)`` (recorded in ``metrics.json``).
``references/ceiling/...``, ``references/chance/...``
    The same generator fed the teacher's own embeddings of the seen images (what a perfect prior would
    give: the generator's ceiling) and the system's embeddings shuffled over stimuli (a derangement:
    every stimulus gets another's; chance), ``reference_samples`` each.
``metrics.json``
    :func:`~neurodecode.evaluation.recon_metrics.score_reconstructions` of the reconstructions, with the
    protocol of the generation (encoder, prior and its sampling, generator and its protocol, seeds,
    low-level strength and blend, networks), ``ceiling`` and ``chance`` in the same format, and
    ``retrieval`` by stage (the encoder's embedding among the test images in its teacher's space, the
    prior's output among them in the prior's teacher space).
``report.md``, ``gallery.png``
    The report (:func:`~neurodecode.reporting.recon_report.write_recon_report`) and the gallery: per
    stimulus the seen image, its reconstructions and the encoder's top-5 retrieved stimuli.

A rerun draws only the images that are missing (files are written atomically) and scores again.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from neurodecode.utils import PathLike, UserError, atomic_write_json, logger

__all__ = ["reconstruct", "gallery_rows"]


def _check_generator(gen_protocol: Mapping[str, Any], embed_dim: int | None, protocol: Mapping[str, Any],
                     spec: str) -> None:
    teacher = protocol["teacher"]
    want = (gen_protocol.get("teacher") or {})
    if want.get("spec") and (want.get("spec"), want.get("layer") or "final") != (teacher["spec"], teacher["layer"] or "final"):
        raise UserError(f"--generator {spec} was trained on embeddings of teacher {want.get('spec')!r} (layer "
                        f"{want.get('layer')!r}) but the prior predicts teacher {teacher['spec']!r} (layer "
                        f"{teacher['layer']!r}); train the prior on the generator's teacher (data.teacher in its config).")
    if embed_dim is not None and embed_dim != protocol["target_dim"]:
        raise UserError(f"--generator {spec} takes {embed_dim}-d embeddings but the prior predicts "
                        f"{protocol['target_dim']}-d ones; use a prior trained on the generator's teacher.")


def _lowlevel_parts(path: PathLike, inputs: Any, size: int, strength: float, blend_alpha: float | None
                    ) -> tuple[list[Any] | None, Any, dict[str, Any]]:
    from neurodecode.reconstruction.lowlevel import load_lowlevel, lowlevel_images

    head = load_lowlevel(path)
    sub = inputs.subject_index if inputs.subject_index >= 0 else None
    images = lowlevel_images(head, inputs.responses, sub, size=size)
    post = None
    if blend_alpha is not None:
        post = _Blend(images, float(blend_alpha))
    init = images if strength < 1.0 else None
    return init, post, {"lowlevel": str(path), "strength": float(strength), "blend_alpha": blend_alpha}


class _Blend:
    """``post(image, row)``: ATM's pixel blend of a reconstruction with its stimulus's low-level image."""

    def __init__(self, lowlevel: Sequence[Any], alpha: float) -> None:
        self.lowlevel, self.alpha = list(lowlevel), alpha

    def __call__(self, image: Any, row: int) -> Any:
        from neurodecode.reconstruction.lowlevel import blend

        return blend(image, self.lowlevel[row], self.alpha)


def gallery_rows(inputs: Any, samples: Mapping[str, Sequence[Path]], seeds: Mapping[str, Sequence[int]],
                 top_rows: Sequence[Sequence[int]]) -> list[dict[str, Any]]:
    """One gallery row per stimulus: the seen image, its reconstructions and the top-5 retrieved stimuli."""
    rows = []
    for i, sid in enumerate(inputs.stimulus_ids):
        top = list(top_rows[i])[:5]
        rows.append({"stimulus_id": sid, "label": inputs.concepts[i], "seen": inputs.image_files[i],
                     "recons": list(samples[sid]), "seeds": list(seeds[sid]),
                     "top5": [inputs.image_files[j] for j in top], "top5_ids": [inputs.stimulus_ids[j] for j in top]})
    return rows


def reconstruct(encoder: PathLike, prior: PathLike, generator: str, out: PathLike, *, root: PathLike | None = None,
                subject: str | None = None, n_samples: int = 10, seed: int = 0, prior_steps: int | None = None,
                prior_guidance: float | None = None, steps: int | None = None, guidance: float | None = None,
                batch_size: int = 8, device: str = "auto", attention_slicing: bool = False, cpu_offload: bool = False,
                lowlevel: PathLike | None = None, strength: float = 1.0, blend_alpha: float | None = None,
                networks: Sequence[str] | None = None, weights: Mapping[str, str] | None = None,
                references: bool = True, reference_samples: int = 1, gallery_rows_max: int = 8,
                accelerator: str = "auto", devices: int | str | Sequence[int] = 1, num_nodes: int = 1,
                strategy: str = "auto", cache_dir: PathLike | None = None, progress: bool = True) -> dict[str, Any]:
    """Reconstruct the test images of one subject and score them (see the module docstring).

    Parameters
    ----------
    encoder, prior : path-like
        A ``neurodecode fit`` checkpoint or an exported folder of each.
    generator : str
        A generator spec (:func:`~neurodecode.reconstruction.generators.load_generator`).
    out : path-like
        Output folder.
    root : path-like | None
        The prepared data (default: the encoder's).
    subject : str | None
        Whose test trials (default the first test subject; ``"mean"``: averaged over subjects).
    n_samples : int
        Reconstructions per stimulus (ATM: 10).
    seed : int
        The run's seed (prior sampling and every image's seed).
    prior_steps, prior_guidance : int | None, float | None
        The prior's sampling (default: what it recorded; ATM 50 steps, guidance 5).
    steps, guidance : int | None, float | None
        The generator's (default: its protocol).
    batch_size : int
        Images per generator call.
    device : str
        ``"auto"``, ``"cpu"``, ``"cuda"``...
    attention_slicing, cpu_offload : bool
        Memory options of diffusers generators.
    lowlevel : path-like | None
        An exported low-level head: its images start img2img (``strength`` < 1) and/or are blended in.
    strength : float
        img2img strength with ``lowlevel`` (1: no img2img).
    blend_alpha : float | None
        Blend the low-level image into each reconstruction with this weight (ATM's fusion).
    networks : sequence of str | None
        Metric networks (``None``: all; unavailable ones are skipped with their reason).
    weights : dict | None
        Weights of the metric networks.
    references : bool
        Also draw and score the ceiling (teacher embeddings) and chance (shuffled embeddings).
    reference_samples : int
        Samples per stimulus of each reference.
    gallery_rows_max : int
        Rows of ``gallery.png``.
    accelerator, devices, num_nodes, strategy : see ``lightning.Trainer``
        Several devices shard the images over ranks.
    cache_dir : path-like | None
        Cache of the encoder's embeddings.
    progress : bool
        Progress bars.

    Returns
    -------
    metrics : dict
        The content of ``metrics.json`` (on the other ranks of a sharded run: ``{"rank": rank}``).
    """
    from neurodecode.evaluation.recon_metrics import score_reconstructions
    from neurodecode.reconstruction.generators import GeneratorFactory
    from neurodecode.reconstruction.jobs import draw_images, draw_images_sharded, read_samples, sample_seed
    from neurodecode.reconstruction.pipeline import derangement, prepare_inputs, stage_retrieval
    from neurodecode.reporting.figures.gallery import gallery_figure
    from neurodecode.reporting.recon_report import write_recon_report
    from neurodecode.teachers.models import resolve_device

    if n_samples < 1 or reference_samples < 1:
        raise UserError(f"--samples and --reference-samples must be >= 1, got {n_samples} and {reference_samples}.")
    if not 0.0 < strength <= 1.0:
        raise UserError(f"--strength {strength}: give a value in (0, 1] (1: no img2img from the low-level image).")
    if (strength < 1.0 or blend_alpha is not None) and lowlevel is None:
        raise UserError("--strength below 1 and --blend need a low-level head: give --lowlevel DIR (an exported "
                        "head, see configs/sim/lowlevel.yaml).")
    out = Path(out)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    dev = resolve_device(device)
    options = (("batch_size", int(batch_size)), ("steps", steps), ("guidance", guidance),
               ("attention_slicing", bool(attention_slicing)), ("cpu_offload", bool(cpu_offload)))
    factory = GeneratorFactory(generator, options)
    sharded = devices not in (1, "1") or strategy != "auto" or int(num_nodes) > 1
    gen = factory(dev)  # first (a wrong spec fails at once); also on the sharded path, for its protocol
    inputs = prepare_inputs(encoder, prior, root=root, subject=subject, seed=seed, steps=prior_steps,
                            guidance=prior_guidance, device=dev, responses=lowlevel is not None,
                            cache_dir=cache_dir, progress=progress)
    timings["loading + stage 1 (encoder + prior)"] = time.perf_counter() - t0
    ids = inputs.stimulus_ids
    protocol = {**inputs.protocol, "target_dim": int(inputs.predicted.shape[1])}

    gen_protocol = gen.protocol()
    _check_generator(gen_protocol, gen.embed_dim, protocol, generator)
    init, post, low = (None, None, {"lowlevel": None, "strength": 1.0, "blend_alpha": None})
    if lowlevel is not None:
        init, post, low = _lowlevel_parts(lowlevel, inputs, gen.image_size, strength, blend_alpha)
    if sharded:  # every rank builds its own generator in the predict loop: do not hold a second copy on rank 0
        gen = None
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    ranks = [0]

    def draw(embeds: np.ndarray, folder: Path, k: int, desc: str) -> None:
        if sharded:
            ranks[0] = max(ranks[0], draw_images_sharded(factory, embeds, ids, folder, n_samples=k, base_seed=seed, batch_size=batch_size,
                                accelerator=accelerator, devices=devices, num_nodes=num_nodes, strategy=strategy,
                                init_images=init, strength=strength, post=post, show_progress=progress)["rank"])
        else:
            draw_images(gen, embeds, ids, folder, n_samples=k, base_seed=seed, batch_size=batch_size,
                        init_images=init, strength=strength, post=post, show_progress=progress, desc=desc)

    ts = time.perf_counter()
    draw(inputs.predicted, out / "images", n_samples, "reconstructing")
    timings["stage 2 (generator)"] = time.perf_counter() - ts
    perm = derangement(len(ids), seed) if references else None
    if references:
        ts = time.perf_counter()
        draw(inputs.targets, out / "references" / "ceiling", reference_samples, "ceiling (teacher embeddings)")
        draw(inputs.predicted[perm], out / "references" / "chance", reference_samples, "chance (shuffled)")
        timings["references (ceiling + chance)"] = time.perf_counter() - ts
    if ranks[0] != 0:  # another rank of a sharded run: its images are drawn; rank 0 scores and reports
        return {"rank": ranks[0]}

    ts = time.perf_counter()
    truths = {sid: f for sid, f in zip(ids, inputs.image_files, strict=True)}
    samples = read_samples(out / "images", ids, n_samples)
    common = dict(networks=networks, device=dev, weights=weights, progress_bar=progress)
    result = score_reconstructions(samples, truths, **common)
    if references:
        for name in ("ceiling", "chance"):
            ref = score_reconstructions(read_samples(out / "references" / name, ids, reference_samples), truths,
                                        per_stimulus=False, **common)
            result[name] = {"metrics": ref["metrics"], "n_samples": ref["n_samples"]}
        result["chance"]["derangement"] = [ids[j] for j in perm]
    timings["metrics"] = time.perf_counter() - ts
    enc_ret = stage_retrieval(inputs.brain, inputs.encoder_targets)
    prior_ret = stage_retrieval(inputs.predicted, inputs.targets)
    result["retrieval"] = {stage: {k: r[k] for k in ("top1", "top5", "n_candidates", "mean_rank")}
                           for stage, r in (("encoder", enc_ret), ("prior", prior_ret))}
    seeds = {sid: [sample_seed(seed, sid, k) for k in range(n_samples)] for sid in ids}
    result["protocol"] = {**protocol, "generator": gen_protocol, "steps": gen_protocol.get("steps"),
                          "guidance": gen_protocol.get("guidance"), "samples_per_stimulus": n_samples,
                          "seeds": f"sample_seed(seed={seed}, stimulus_id, k): SHA-256 of 'seed/id/k', 31 bits "
                                   "(per image in 'image_seeds')", **low,
                          "references": {"ceiling": "the teacher's embeddings of the seen images",
                                         "chance": "the system's embeddings shuffled over stimuli (derangement)",
                                         "samples": reference_samples} if references else None,
                          **result["protocol"]}
    result["image_seeds"] = seeds
    result["timings_s"] = {k: round(v, 2) for k, v in timings.items()}
    out.mkdir(parents=True, exist_ok=True)
    per_stimulus = result.pop("per_stimulus", {})
    atomic_write_json(out / "per_stimulus.json", {"values": per_stimulus, "ranks": {
        "encoder": dict(zip(ids, enc_ret["ranks"], strict=True)), "prior": dict(zip(ids, prior_ret["ranks"], strict=True))}})
    atomic_write_json(out / "metrics.json", result)
    rows = gallery_rows(inputs, samples, seeds, enc_ret["top_rows"])
    title = (f"sub-{inputs.subject}: {len(ids)} test stimuli, {n_samples} sample(s) each, {generator}")
    png = gallery_figure(rows, out / "gallery.png", max_rows=gallery_rows_max, title=title)
    write_recon_report(result, out, png, title=f"Reconstruction: sub-{inputs.subject}")
    logger.info(f"reconstruction of {len(ids)} stimuli -> {out} in {time.perf_counter() - t0:.0f} s")
    return result
