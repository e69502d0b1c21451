"""Load a trained encoder with its data module, and embed responses with it.

:func:`load_for_evaluation` takes a checkpoint of ``neurodecode fit`` (or a folder of ``neurodecode
export``) and rebuilds the data module it was trained on from the settings the checkpoint recorded;
:func:`embed_set` runs the model over raw responses, and :func:`evaluation_targets` gives the targets
it was trained to predict (for a learned layer mix, ``data.fusion: mix``, the stimuli's stacked layers
mixed with the model's learned weights, per subject where it learned one set per subject). Evaluation,
the prior's training data and reconstruction all start here.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["data_sizes", "embed_set", "evaluation_targets", "load_for_evaluation", "mix_weights", "training_summary"]


# --------------------------------------------------------------------------------------------------
def load_for_evaluation(ckpt: str | Path, *, root: str | None = None, teacher: str | None = None,
                        extra_data: dict[str, Any] | None = None):
    """A trained model (eval mode) and its data module (rebuilt from the checkpoint's settings).

    Parameters
    ----------
    ckpt : path-like
        A ``.ckpt`` written by ``neurodecode fit``, or a folder written by ``neurodecode export``.
    root, teacher : str | None
        Override the prepared folder and the teacher recorded in the checkpoint.
    extra_data : dict | None
        Further data-module arguments to override.

    Returns
    -------
    model : torch.nn.Module
        Maps raw responses (and subject indices) to embeddings.
    dm : BrainImageDataModule
        With a learned layer mix (``data.fusion: mix``), its ``target_weights`` are the model's
        (:func:`mix_weights`), for :func:`evaluation_targets`.
    info : dict
        Where the model came from (``checkpoint``, ``epoch``, ``kind``).
    """
    from neurodecode.training.data import BrainImageDataModule

    path = Path(ckpt)
    if path.is_dir():
        from neurodecode.training.export import from_pretrained

        model = from_pretrained(path)
        dm_args = dict(model.config.get("datamodule", {}))
        info = {"checkpoint": str(path), "kind": "exported", "epoch": model.config.get("epoch")}
        raw = {"hyper_parameters": {"data": model.config.get("data", {})}}
    else:
        from neurodecode.training.lit import load_alignment_checkpoint

        model, raw = load_alignment_checkpoint(path)
        dm_args = dict(raw.get("datamodule_hyper_parameters", {}))
        info = {"checkpoint": str(path), "kind": "lightning", "epoch": raw.get("epoch"),
                "training": training_summary(path, raw)}
    allowed = set(inspect.signature(BrainImageDataModule.__init__).parameters) - {"self"}
    dm_args = {k: v for k, v in dm_args.items() if k in allowed}  # drop Lightning's bookkeeping keys
    if not dm_args:
        raise ValueError(f"{path}: holds no data settings; pass root= (--data.root) and teacher= (--data.teacher).")
    if root is not None:
        dm_args["root"] = str(root)
        dm_args["cache"] = None
    if teacher is not None:
        dm_args["teacher"] = teacher
    dm_args.update(extra_data or {})
    dm = BrainImageDataModule(**dm_args)
    if dm.n_target_layers > 1:
        dm.target_weights = mix_weights(raw, dm.n_target_layers, where=path)
        info["mix_weights"] = dm.target_weights.tolist()
    return model.eval(), dm, info


def mix_weights(raw: dict[str, Any], n_layers: int, *, where: Any = "the checkpoint") -> np.ndarray:
    """The learned layer weights (:meth:`~neurodecode.training.targets.LayerMix.table`) of a checkpoint dict.

    Parameters
    ----------
    raw : dict
        A Lightning checkpoint (its ``state_dict`` holds ``target_mixer.logits``), or a dict with
        ``hyper_parameters.data.mix_weights`` (what the module writes on saving; an export keeps it).
    n_layers : int
        Layers of the data module's mix.
    where : str | path
        Named in errors.

    Returns
    -------
    weights : ndarray, float32, (n_subjects, n_layers) or (1, n_layers)
        Softmax weights; one row per training subject when they were learned per subject.
    """
    logits = raw.get("state_dict", {}).get("target_mixer.logits")
    if logits is not None:
        w = torch.softmax(torch.as_tensor(logits).float(), dim=1).numpy()
    else:
        w = raw.get("hyper_parameters", {}).get("data", {}).get("mix_weights")
        if w is None:
            raise ValueError(f"{where}: trained with data.fusion: mix but holds no learned layer weights "
                             "(state_dict 'target_mixer.logits' or data.mix_weights); export it again from its "
                             "checkpoint, or evaluate the checkpoint itself.")
        w = np.asarray(w, dtype=np.float32)
    if w.ndim != 2 or w.shape[1] != n_layers:
        raise ValueError(f"{where}: its layer weights have shape {tuple(w.shape)}, but the data mix {n_layers} "
                         "layers (data.layers); evaluate with the data settings it was trained with.")
    return w.astype(np.float32)


def evaluation_targets(dm: Any, rows: Any, subjects: Any = -1) -> np.ndarray:
    """The targets a trained encoder predicts, for stimulus-table rows ``rows``.

    Parameters
    ----------
    dm : BrainImageDataModule
        From :func:`load_for_evaluation`.
    rows : array of int
        Stimulus-table rows.
    subjects : int | array of int
        Training-subject index of each row (or one for all; ``-1``: a subject unseen in training); used
        only by a per-subject layer mix.

    Returns
    -------
    targets : ndarray, (len(rows), dim)
        ``dm.image_embeddings[rows]``, or with a learned layer mix (``data.fusion: mix``) those stacked
        layers mixed with the model's weights (:func:`~neurodecode.training.targets.mix_layers`).
    """
    images = np.asarray(dm.image_embeddings)[np.asarray(rows, dtype=np.int64)]
    if getattr(dm, "n_target_layers", 1) <= 1:
        return images
    if getattr(dm, "target_weights", None) is None:
        raise ValueError("this data module mixes layers (data.fusion: mix) but knows no learned weights; load it "
                         "with load_for_evaluation(ckpt), which reads them from the checkpoint.")
    from neurodecode.training.targets import mix_layers

    return mix_layers(images, dm.target_weights, subjects)


def epochs_done(raw: dict[str, Any]) -> int | None:
    """Epochs a checkpoint had trained when it was written (from Lightning's loop state)."""
    prog = raw.get("loops", {}).get("fit_loop", {}).get("epoch_progress", {}).get("total", {})
    if "processed" in prog:
        return int(prog["processed"])
    return None if raw.get("epoch") is None else int(raw["epoch"]) + 1


def training_summary(path: Path, raw: dict[str, Any]) -> dict[str, Any]:
    """How long the run trained and how the evaluated epoch was chosen, from the checkpoint (and the
    run's ``last.ckpt`` beside it)."""
    out: dict[str, Any] = {"selected_epoch": raw.get("epoch"), "seed": raw.get("hyper_parameters", {}).get("seed"),
                           "epochs_run": epochs_done(raw), "n_seeds": 1}
    state = next((v for k, v in raw.get("callbacks", {}).items() if k.startswith("ModelCheckpoint")), None)
    from neurodecode.training.lit import load_checkpoint_dict

    last = path.with_name("last.ckpt")
    if last.is_file() and last.resolve() != path.resolve():
        try:
            out["epochs_run"] = epochs_done(load_checkpoint_dict(last))
        except Exception:  # noqa: BLE001 - a damaged last.ckpt only costs the count
            pass
    if state and state.get("monitor"):
        best, score = str(state.get("best_model_path") or ""), state.get("best_model_score")
        score = None if score is None else float(score)
        if best and Path(best).name == path.name:
            out["selection"] = (f"the epoch with the best {state['monitor']} ({score:.4g}) on the validation set "
                                "(concepts held out of training, not the test set)")
        else:
            out["selection"] = f"the checkpoint given ({path.name}; the best {state['monitor']} was {score}"
            out["selection"] += f" at {Path(best).name})" if best else ")"
        out["monitor"] = state["monitor"]
    else:
        out["selection"] = f"the checkpoint given ({path.name})"
    return out


def data_sizes(dm: Any) -> dict[str, Any]:
    """Samples, stimuli and subjects of the train, validation and test sets of a set-up data module."""
    hp = dm.hparams
    out: dict[str, Any] = {"train_subjects": list(dm.train_subjects), "test_subjects": list(dm.test_subjects)}
    for which, avg in (("train", hp.average_train_reps), ("val", hp.average_val_reps), ("test", hp.average_test_reps)):
        if (ts := dm.sets.get(which)) is None:
            continue
        out[f"{which}_samples"] = len(ts)
        out[f"{which}_stimuli"] = int(len(np.unique(ts.stim_rows)))
        out[f"{which}_averaged"] = bool(avg)
    return out


@torch.no_grad()
def embed_set(model: torch.nn.Module, x: np.ndarray, subjects: np.ndarray, *, batch_size: int = 256,
              device: str = "cpu") -> np.ndarray:
    """Brain embeddings of samples ``x`` (raw responses) with their subject indices.

    Parameters
    ----------
    model : torch.nn.Module
        Maps ``(x, subjects)`` to embeddings (e.g. from :func:`load_for_evaluation`).
    x : numpy.ndarray, shape (n_samples, ...)
        Raw responses.
    subjects : numpy.ndarray of int, shape (n_samples,)
        Subject index of each sample; -1 for subjects unseen in training (then ``None`` is passed).
    batch_size : int
        Samples per forward pass.
    device : str
        Where to run the model.

    Returns
    -------
    emb : numpy.ndarray of float32, shape (n_samples, dim)
        The embeddings.
    """
    model = model.to(device)
    out = []
    for start in range(0, len(x), batch_size):
        xb = torch.as_tensor(x[start:start + batch_size], device=device)
        sb = torch.as_tensor(subjects[start:start + batch_size], device=device)
        out.append(model(xb, None if bool((sb < 0).all()) else sb).float().cpu())
    return torch.cat(out).numpy() if out else np.zeros((0, 0), np.float32)


