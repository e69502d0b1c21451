"""Several evaluated checkpoints side by side (e.g. intra-subject and leave-one-subject-out).

:func:`evaluate_many` evaluates each checkpoint into ``out/model<i>/`` with
:func:`neurodecode.reporting.evaluate.evaluate`, then writes ``out/comparison.json`` (the per-subject
table of :func:`compare` and paired tests on the subjects whose test items the models share) and a
side-by-side ``out/report.md``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from neurodecode.evaluation.stats import paired_comparison
from neurodecode.reporting.evaluate import evaluate
from neurodecode.reporting.report import render_report
from neurodecode.utils import atomic_write_json, atomic_write_text, to_jsonable

__all__ = ["compare", "evaluate_many"]


def compare(results: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Per-subject table of several evaluated models.

    Parameters
    ----------
    results : sequence of dict
        What :func:`~neurodecode.reporting.evaluate.evaluate` returned, one per model.

    Returns
    -------
    comparison : dict
        ``per_subject`` (subject -> model label -> ``top1_full``/``top5_full``) and ``models`` (the
        labels, in order).
    """
    table = {}
    for r in results:
        for s, v in r["subjects"].items():
            m = v["retrieval"]["inductive"]["brain_to_image"]
            table.setdefault(s, {})[r["label"]] = {k: m[k] for k in ("top1_full", "top5_full") if k in m}
    return {"per_subject": table, "models": [r["label"] for r in results]}


def evaluate_many(ckpts: Sequence[str | Path], out: str | Path, **kwargs: Any) -> dict[str, Any]:
    """Evaluate several checkpoints into ``out/model<i>/`` and write a side-by-side ``out/report.md``.

    Parameters
    ----------
    ckpts : sequence of path-like
        Checkpoints or exported folders.
    out : path-like
        Output folder.
    **kwargs
        Passed to :func:`~neurodecode.reporting.evaluate.evaluate`.

    Returns
    -------
    comparison : dict
        :func:`compare`'s table plus ``paired``: one paired test per pair of models and shared subject
        whose test items are the same (what ``comparison.json`` holds).
    """
    out = Path(out)
    results = [evaluate(c, out / f"model{i + 1}", **kwargs) for i, c in enumerate(ckpts)]
    comp = compare(results)
    paired = []
    for s in comp["per_subject"]:
        have = [r for r in results if s in r["subjects"]]
        for i in range(len(have)):
            for j in range(i + 1, len(have)):
                a = _per_item_hits(have[i], s)
                b = _per_item_hits(have[j], s)
                if a is not None and b is not None and np.array_equal(a[0], b[0]):  # same test items
                    pc = paired_comparison(a[1], b[1])
                    paired.append({"subject": s, "a": have[i]["label"], "b": have[j]["label"], **pc})
    comp["paired"] = paired
    atomic_write_json(out / "comparison.json", to_jsonable(comp))
    atomic_write_text(out / "report.md", render_report(results, comp))
    return comp


def _per_item_hits(result: dict[str, Any], subject: str) -> tuple[np.ndarray, np.ndarray] | None:
    """Stimulus ids and per-item top-1 hits, ordered by id (so two models' items line up)."""
    v = result["subjects"][subject].get("per_item")
    if v is None:
        return None
    ids = np.asarray(v["stimulus_id"])
    order = np.argsort(ids)
    return ids[order], np.asarray(v["top1_full"])[order]
