"""Stage 1 of a reconstruction run: brain responses -> encoder embeddings -> the prior's image embeddings.

:func:`prepare_inputs` gathers everything the generator and the metrics need for one subject's test
set (or the subject average): the encoder's embeddings of the test trials (repetitions averaged, as in
every published protocol), the prior's sampled image embeddings, the teacher's own embeddings of the
seen images (the generator's ceiling, and the gallery the prior's output is ranked in), the encoder
teacher's embeddings (the gallery of the encoder's own retrieval) and the seen images' files. Rows are
sorted by stimulus id, so that nothing downstream depends on the order trials were stored in.

:func:`stage_retrieval` ranks the seen stimulus among the test images from one stage's output: the
encoder's brain embedding in its teacher's space, the prior's output in the prior's teacher space. Shown
side by side, they tell what the prior adds or loses.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from neurodecode.utils import PathLike, UserError, logger

__all__ = ["ReconInputs", "prepare_inputs", "stage_retrieval", "derangement", "validate_priors"]


@dataclass
class ReconInputs:
    """What one reconstruction run decodes, one row per test stimulus, sorted by stimulus id.

    Attributes
    ----------
    stimulus_ids : list of str
    concepts : list of str
    image_files : list of Path
        The seen images.
    subject : str
        The subject whose test trials are decoded (``"mean"``: averaged over subjects).
    brain : numpy.ndarray, (n, brain_dim)
        The encoder's embeddings of the (averaged) test trials.
    predicted : numpy.ndarray, (n, target_dim)
        The prior's image embeddings (raw teacher space), the generator's input.
    targets : numpy.ndarray, (n, target_dim)
        The prior's teacher's embeddings of the seen images (the generator's ceiling).
    encoder_targets : numpy.ndarray, (n, encoder_dim)
        The encoder's teacher's embeddings of the seen images (the encoder's retrieval gallery).
    subject_index : int
        The encoder's index of the subject (``-1``: unseen or averaged).
    responses : numpy.ndarray | None
        The (averaged) raw test responses, when asked for (the low-level branch's input).
    protocol : dict
        Encoder, prior, teacher, sampling settings and seed.
    """

    stimulus_ids: list[str]
    concepts: list[str]
    image_files: list[Path]
    subject: str
    brain: np.ndarray
    predicted: np.ndarray
    targets: np.ndarray
    encoder_targets: np.ndarray
    subject_index: int = -1
    responses: np.ndarray | None = None
    protocol: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.stimulus_ids)


def _pick_subject(test: dict[str, np.ndarray], subject: str | None, encoder: PathLike) -> np.ndarray:
    labels = list(dict.fromkeys(test["subject_label"].tolist()))
    if subject is None:
        subject = labels[0]
        if len(labels) > 1:
            logger.info(f"reconstructing the test set of sub-{subject} (of {labels}); --subject picks another, "
                        "'mean' averages over subjects")
    if subject not in labels:
        raise UserError(f"--subject {subject}: the test data of encoder {encoder} has subjects {labels}; give one of "
                        "them, or 'mean' for the average over subjects.")
    return np.flatnonzero(test["subject_label"] == subject)


def prepare_inputs(encoder: PathLike, prior: Any, *, root: PathLike | None = None, subject: str | None = None,
                   seed: int = 0, steps: int | None = None, guidance: float | None = None, device: str = "auto",
                   responses: bool = False, cache_dir: PathLike | None = None, progress: bool = True) -> ReconInputs:
    """Embed one subject's test trials with the encoder and sample the prior's image embeddings.

    Parameters
    ----------
    encoder : path-like
        The encoder: a ``neurodecode fit`` checkpoint or an exported folder.
    prior : Prior | path-like
        The prior (:func:`~neurodecode.reconstruction.prior.load_prior` reads a path), trained on this
        encoder's embeddings.
    root : path-like | None
        The prepared data folder (default: the one the encoder recorded).
    subject : str | None
        Whose test trials (default: the first test subject); ``"mean"``: embeddings averaged over subjects.
    seed : int
        Seed of the prior's sampling.
    steps, guidance : int | None, float | None
        The prior's sampling settings (default: those it recorded).
    device : str
        Where the encoder and the prior run (``"auto"``: CUDA when present).
    responses : bool
        Also return the averaged raw responses (for the low-level branch; one subject only).
    cache_dir : path-like | None
        Where the encoder's embeddings are cached (default: next to the encoder).
    progress : bool
        Progress bars.

    Returns
    -------
    ReconInputs
    """
    import torch

    from neurodecode.reconstruction.prior import Prior, load_prior
    from neurodecode.reconstruction.prior_data import PriorDataModule
    from neurodecode.teachers.models import resolve_device

    dev = resolve_device(device)
    if not isinstance(prior, Prior):
        prior_path = str(prior)
        prior = load_prior(prior, device=dev)
    else:
        prior_path = None
    teacher, layer = prior.info.get("teacher"), prior.info.get("layer")
    dm = PriorDataModule(str(encoder), root=None if root is None else str(root), teacher=teacher, layer=layer,
                         device=dev, progress=progress, cache_dir=None if cache_dir is None else str(cache_dir))
    if dm.brain_dim != prior.brain_dim:
        raise UserError(f"--prior {prior_path or 'given'} takes {prior.brain_dim}-d brain embeddings but encoder "
                        f"{encoder} makes {dm.brain_dim}-d ones; use the prior trained on this encoder.")
    if dm.target_dim != prior.target_dim:
        raise UserError(f"--prior {prior_path or 'given'} predicts {prior.target_dim}-d embeddings of teacher "
                        f"{teacher!r} but that teacher's cached embeddings are {dm.target_dim}-d here.")
    average = subject == "mean"
    test = dm.test_embeddings(average_subjects=average)
    rows = np.arange(len(test["stimulus_id"])) if average else _pick_subject(test, subject, encoder)
    rows = rows[np.argsort(test["stimulus_id"][rows], kind="stable")]
    ids = test["stimulus_id"][rows]
    if len(np.unique(ids)) != len(ids):
        raise UserError(f"encoder {encoder}: the test set of sub-{test['subject_label'][rows[0]]} holds a stimulus "
                        "more than once after averaging its repetitions; its store's stimulus ids are inconsistent.")
    stim_rows = test["stim_row"][rows]
    brain = test["embedding"][rows]
    targets = np.asarray(dm.data.image_embeddings, np.float32)[stim_rows]
    enc_teacher = dm.encoder_info["data"].get("teacher") or dm.encoder_info["datamodule"].get("teacher")
    enc_layer = dm.encoder_info["data"].get("layer") or dm.encoder_info["datamodule"].get("layer") or "final"
    if (enc_teacher, enc_layer) == (dm.teacher, dm.layer):
        enc_targets = targets
    else:  # the prior aims at another teacher than the encoder: the encoder's own gallery
        enc_dm = PriorDataModule(str(encoder), root=None if root is None else str(root), device=dev,
                                 progress=progress, cache_dir=None if cache_dir is None else str(cache_dir))
        enc_targets = np.asarray(enc_dm.data.image_embeddings, np.float32)[stim_rows]
    with torch.no_grad():
        predicted = prior.sample(brain, seed=seed, steps=steps, guidance=guidance, progress=progress)
    table = dm.dataset.stimuli
    files = [table.image_file(int(r)) for r in stim_rows]
    missing = [str(i) for i, f in zip(ids, files, strict=True) if f is None or not Path(f).is_file()]
    if missing:
        raise UserError(f"the stimulus table of {dm.root} has no image file for {len(missing)} test stimuli "
                        f"({missing[:5]}); the seen images are needed to score and show the reconstructions.")
    raw = None
    if responses:
        if average:
            raise UserError("--subject mean averages embeddings over subjects; the low-level branch reads one "
                            "subject's responses: give --subject NAME with --lowlevel.")
        raw = dm.test_responses()[rows]
    sampling = {} if prior.kind == "aligner" else {
        "steps": int(prior.sampling["steps"] if steps is None else steps),
        "guidance": float(prior.sampling["guidance"] if guidance is None else guidance)}
    protocol = {"encoder": str(encoder), "prior": prior_path, "prior_kind": prior.kind, "prior_seed": int(seed),
                **{f"prior_{k}": v for k, v in sampling.items()}, "teacher": {"spec": dm.teacher, "layer": dm.layer},
                "encoder_teacher": {"spec": enc_teacher, "layer": enc_layer}, "subject": str(
                    "mean" if average else test["subject_label"][rows[0]]), "n_test_stimuli": len(ids),
                "test_repetitions": "averaged"}
    concepts = np.asarray(table.concept)[stim_rows].astype(str).tolist()
    return ReconInputs(stimulus_ids=ids.astype(str).tolist(), concepts=concepts, image_files=[Path(f) for f in files],
                       subject=protocol["subject"], brain=brain, predicted=predicted.cpu().numpy(), targets=targets,
                       encoder_targets=enc_targets, subject_index=int(test["subject"][rows[0]]), responses=raw,
                       protocol=protocol)


def stage_retrieval(queries: Any, gallery: Any, *, top: int = 5) -> dict[str, Any]:
    """Rank the seen stimulus among the test images (cosine similarity); row ``i`` of both is stimulus ``i``.

    Parameters
    ----------
    queries : array-like, (n, dim)
        One stage's outputs (the encoder's embeddings, the prior's predictions).
    gallery : array-like, (n, dim)
        The test images' embeddings in the same space, in the same order.
    top : int
        How many best candidates to return per query.

    Returns
    -------
    result : dict
        ``top1``, ``top5`` (fractions), ``n_candidates``, ``mean_rank``, ``ranks`` (1 = best, ties
        pessimistic) and ``top_rows`` (per query the ``top`` best gallery rows, best first).
    """
    import torch

    from neurodecode.evaluation.ranking import retrieval_ranks, similarity_matrix

    scores = similarity_matrix(queries, gallery, query_name="stage outputs", candidate_name="test image embeddings")
    if scores.shape[0] != scores.shape[1]:
        raise ValueError(f"stage outputs ({scores.shape[0]}) and test image embeddings ({scores.shape[1]}) must have "
                         "one row per test stimulus each, in the same order.")
    ranks = retrieval_ranks(scores)
    k = min(int(top), scores.shape[1])
    best = torch.topk(scores, k, dim=1).indices.cpu().numpy()
    return {"top1": float(np.mean(ranks <= 1)), "top5": float(np.mean(ranks <= 5)), "n_candidates": int(scores.shape[1]),
            "mean_rank": float(ranks.mean()), "ranks": ranks.astype(int).tolist(), "top_rows": best.tolist()}


def derangement(n: int, seed: int = 0) -> np.ndarray:
    """A random permutation of ``range(n)`` that moves every element (chance: each row gets another's input)."""
    if n < 2:
        raise ValueError(f"shuffled embeddings need at least 2 stimuli, got {n}.")
    rng = np.random.default_rng(seed)
    while True:
        p = rng.permutation(n)
        if not np.any(p == np.arange(n)):
            return p


def validate_priors(encoder: PathLike, priors: dict[str, PathLike], *, seed: int = 0, device: str = "cpu",
                    cache_dir: PathLike | None = None) -> dict[str, dict[str, float]]:
    """Compare priors on the encoder's VALIDATION concepts (never the test set): cosine and retrieval.

    Parameters
    ----------
    encoder : path-like
        The encoder the priors were trained on.
    priors : dict
        Name -> prior (checkpoint or exported folder); all aim at the same teacher.
    seed : int
        Seed of the priors' sampling.
    device : str
        Where they run.
    cache_dir : path-like | None
        Cache of the encoder's embeddings.

    Returns
    -------
    result : dict
        Name -> ``cosine`` (mean cosine similarity of the prediction with its image's embedding),
        ``top1``, ``top5`` (retrieval of the image among the validation images) and ``n_candidates``.
    """
    from neurodecode.evaluation.ranking import retrieval_ranks, similarity_matrix
    from neurodecode.reconstruction.prior import load_prior
    from neurodecode.reconstruction.prior_data import PriorDataModule

    out: dict[str, dict[str, float]] = {}
    dm = None
    for name, path in priors.items():
        prior = load_prior(path, device=device)
        if dm is None:
            dm = PriorDataModule(str(encoder), teacher=prior.info.get("teacher"), layer=prior.info.get("layer"),
                                 device=device, progress=False, cache_dir=None if cache_dir is None else str(cache_dir))
        val = dm.brain_embeddings("val")
        rows, targets = np.unique(val["stim_row"], return_inverse=True)
        gallery = np.asarray(dm.data.image_embeddings, np.float32)[rows]
        pred = prior.sample(val["embedding"], seed=seed, progress=False).cpu().numpy()
        ranks = retrieval_ranks(similarity_matrix(pred, gallery), targets)
        own = gallery[targets]
        cos = np.sum(pred * own, 1) / np.maximum(np.linalg.norm(pred, axis=1) * np.linalg.norm(own, axis=1), 1e-12)
        out[name] = {"cosine": float(cos.mean()), "top1": float(np.mean(ranks <= 1)), "top5": float(np.mean(ranks <= 5)),
                     "n_candidates": int(len(rows)), "kind": prior.kind}
    return out
