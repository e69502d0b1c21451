"""Ablation grids: variants of a base config (one lever changed at a time), their runs and their summary.

A *grid* (YAML) names the variants of a base training config; each variant is a set of dotted config
overrides (the keys ``neurodecode fit`` accepts on its command line)::

    seeds: [0, 1, 2]                # optional (the command line's --seeds wins)
    subjects: ["01", "02"]          # optional: each run sets data.subject to one of them
    variants:                       # one lever each
      block3: {data.layer: block3-mean}
      posterior17: {data.channels: posterior17}
      noise: {model.init_args.augment: {class_path: neurodecode.training.augment.BrainAugment,
                                        init_args: {noise_std: 0.2}}}
    combinations:                   # named unions of variants (later ones win on a shared key)
      block3+noise: [block3, noise]

The base (no override) is always run, under the name ``base``. :func:`plan_runs` expands a grid into
runs (variant x subject x seed, in that order, base first), each with its own folder
``<out>/<variant>/sub-<S>/seed<N>``; the command line trains each one and writes its ``result.json``.
:func:`summarize` turns the results into the ablation table: per variant the mean +- sd over seeds and
subjects of top-1 / top-5 at the validation-selected checkpoint and at the last epoch (never at the best
test epoch), and the paired difference from the base over matching (subject, seed) pairs with an exact
sign-flip permutation test (and a paired t-test for reference).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from neurodecode.utils import UserError

__all__ = ["AblationGrid", "Run", "load_grid", "plan_runs", "override_args", "load_results", "summarize",
           "slurm_script", "BASE", "METRICS", "RESULT_FILE"]

BASE = "base"
RESULT_FILE = "result.json"
#: (checkpoint, metric) pairs of the table: the validation-selected checkpoint and the last epoch
METRICS = (("selected", "top1"), ("selected", "top5"), ("last", "top1"), ("last", "top5"))


@dataclass
class AblationGrid:
    """Variants of a base config.

    Attributes
    ----------
    variants : dict of str to dict
        Variant name -> dotted overrides (``base`` first, with none).
    kinds : dict of str to str
        Variant name -> ``"base"``, ``"lever"`` or ``"combination"``.
    seeds : list of int | None
        Seeds given in the grid.
    subjects : list of str | None
        Subjects given in the grid (``None``: the base config's).
    source : str
        Where the grid came from (for messages).
    """

    variants: dict[str, dict[str, Any]]
    kinds: dict[str, str]
    seeds: list[int] | None = None
    subjects: list[str] | None = None
    source: str = "<grid>"


@dataclass
class Run:
    """One training run of an ablation."""

    index: int
    variant: str
    seed: int
    subject: str | None
    overrides: dict[str, Any] = field(default_factory=dict)

    def folder(self, out: str | Path) -> Path:
        """``<out>/<variant>/sub-<S>/seed<N>`` (``sub-default`` when the base config's subject is used)."""
        return Path(out) / self.variant / f"sub-{self.subject or 'default'}" / f"seed{self.seed}"

    def result_path(self, out: str | Path) -> Path:
        """The run's ``result.json``."""
        return self.folder(out) / RESULT_FILE


def _check_name(name: Any, where: str) -> str:
    name = str(name)
    if not name or "/" in name or name.startswith(".") or name != name.strip():
        raise UserError(f"{where}: variant name {name!r} must be a non-empty name without '/' or leading dot.")
    return name


def _check_overrides(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise UserError(f"{where} must map dotted config keys to values (e.g. {{data.layer: block3-mean}}), "
                        f"got {type(value).__name__}.")
    out = {}
    for k, v in value.items():
        key = str(k)
        if key.startswith("-") or not key or " " in key:
            raise UserError(f"{where}: {key!r} is not a dotted config key; write it as e.g. data.layer "
                            "(no leading dashes).")
        if key in ("seed_everything", "trainer.default_root_dir", "data.subject"):
            raise UserError(f"{where}: {key} is set by the ablation itself (seeds, run folders, subjects); "
                            "give seeds and subjects at the top of the grid or on the command line.")
        out[key] = v
    return out


def grid_from_dict(raw: Any, source: str = "<grid>") -> AblationGrid:
    """Validate a parsed grid (see the module docstring); errors name ``source`` and the field."""
    if not isinstance(raw, Mapping):
        raise UserError(f"{source}: an ablation grid is a mapping with 'variants' (and optionally "
                        f"'combinations', 'seeds', 'subjects'), got {type(raw).__name__}.")
    unknown = sorted(set(raw) - {"variants", "combinations", "seeds", "subjects", "description"})
    if unknown:
        raise UserError(f"{source}: unknown field(s) {unknown}; allowed: variants, combinations, seeds, subjects, "
                        "description.")
    variants: dict[str, dict[str, Any]] = {BASE: {}}
    kinds = {BASE: "base"}
    for name, ov in (raw.get("variants") or {}).items():
        name = _check_name(name, f"{source}: variants")
        if name in variants:
            raise UserError(f"{source}: variants.{name}: the name is reserved or used twice; rename it.")
        variants[name] = _check_overrides(ov, f"{source}: variants.{name}")
        kinds[name] = "lever"
    for name, spec in (raw.get("combinations") or {}).items():
        name = _check_name(name, f"{source}: combinations")
        where = f"{source}: combinations.{name}"
        if name in variants:
            raise UserError(f"{where}: the name is already a variant; rename it.")
        if isinstance(spec, Mapping):
            merged = _check_overrides(spec, where)
        elif isinstance(spec, Sequence) and not isinstance(spec, str) and spec:
            merged = {}
            for part in spec:
                if str(part) not in variants or kinds[str(part)] != "lever":
                    levers = [v for v, k in kinds.items() if k == "lever"]
                    raise UserError(f"{where}: {part!r} is not a variant of the grid (variants: {levers}).")
                merged.update(variants[str(part)])
        else:
            raise UserError(f"{where} must list variant names (e.g. [block3, noise]) or map keys to values.")
        variants[name] = merged
        kinds[name] = "combination"
    seeds = raw.get("seeds")
    if seeds is not None:
        if not isinstance(seeds, Sequence) or isinstance(seeds, str) or not all(isinstance(s, int) for s in seeds):
            raise UserError(f"{source}: seeds must be a list of integers, e.g. [0, 1, 2], got {seeds!r}.")
        seeds = [int(s) for s in seeds]
    subjects = raw.get("subjects")
    if subjects is not None:
        if isinstance(subjects, (str, int)):
            subjects = [subjects]
        subjects = [str(s).removeprefix("sub-") for s in subjects]
    return AblationGrid(variants, kinds, seeds, subjects, source)


def load_grid(path: str | Path) -> AblationGrid:
    """Read and validate a grid YAML file."""
    import yaml

    p = Path(path)
    if not p.is_file():
        raise UserError(f"--grid {p}: no such file; give a YAML file of variants (see configs/ablations/).")
    try:
        raw = yaml.safe_load(p.read_text())
    except yaml.YAMLError as err:
        raise UserError(f"--grid {p}: not valid YAML ({str(err).splitlines()[0]}).") from None
    return grid_from_dict(raw, str(p))


def plan_runs(grid: AblationGrid, seeds: Sequence[int] | None = None, subjects: Sequence[str] | None = None,
              variants: Sequence[str] | None = None) -> list[Run]:
    """Every run of the ablation, numbered (the numbering is stable: a SLURM array index is a run index).

    Parameters
    ----------
    grid : AblationGrid
    seeds : list of int | None
        Seeds (default: the grid's, else ``[0]``).
    subjects : list of str | None
        Subjects (default: the grid's, else the base config's own subject).
    variants : list of str | None
        Only these variants (default: all; the base is always kept, the differences need it).
    """
    seeds = list(seeds if seeds is not None else grid.seeds or [0])
    subj: list[str | None] = list(subjects if subjects is not None else grid.subjects or [None])
    names = list(grid.variants)
    if variants is not None:
        unknown = [v for v in variants if v not in grid.variants]
        if unknown:
            raise UserError(f"--variants {unknown} are not in {grid.source} (variants: {names}).")
        names = [BASE] + [v for v in names if v in variants and v != BASE]
    runs = []
    for v in names:
        for s in subj:
            for seed in seeds:
                runs.append(Run(len(runs), v, int(seed), None if s is None else str(s), dict(grid.variants[v])))
    return runs


def _format_value(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value)  # lists, dicts, numbers, booleans and null, as jsonargparse parses them


def override_args(overrides: Mapping[str, Any]) -> list[str]:
    """Dotted overrides as command-line arguments (``{"data.layer": "x"}`` -> ``["--data.layer", "x"]``)."""
    out: list[str] = []
    for k, v in overrides.items():
        out += [f"--{k}", _format_value(v)]
    return out


def load_results(out: str | Path, runs: Sequence[Run]) -> list[dict[str, Any]]:
    """The ``result.json`` of every finished run (unfinished ones are left out)."""
    found = []
    for r in runs:
        p = r.result_path(out)
        if p.is_file():
            found.append(json.loads(p.read_text()))
    return found


def _mean_sd(values: Sequence[float]) -> dict[str, float | int]:
    v = np.asarray([x for x in values if x is not None and not math.isnan(x)], dtype=float)
    if not len(v):
        return {"mean": float("nan"), "sd": float("nan"), "n": 0}
    return {"mean": float(v.mean()), "sd": float(v.std(ddof=1)) if len(v) > 1 else 0.0, "n": int(len(v))}


def paired_difference(variant: Sequence[float], base: Sequence[float]) -> dict[str, Any]:
    """Mean paired difference ``variant - base`` with two tests of "no difference".

    ``p_value`` is the exact sign-flip permutation test of the mean difference (two-sided; exact for the
    small numbers of pairs of an ablation) from :func:`neurodecode.evaluation.stats.paired_comparison`;
    ``p_ttest`` is the paired t-test (:func:`scipy.stats.ttest_rel`), for reference. With ``n`` pairs the
    permutation test cannot go below ``2 / 2**n`` (0.25 for 3 pairs): use enough seeds x subjects.
    """
    from scipy import stats

    from neurodecode.evaluation.stats import paired_comparison

    a, b = np.asarray(variant, dtype=float), np.asarray(base, dtype=float)
    d = a - b
    out: dict[str, Any] = {"n_pairs": int(len(d)), "difference": float(d.mean()) if len(d) else float("nan"),
                           "sd": float(d.std(ddof=1)) if len(d) > 1 else float("nan"),
                           "test": "exact sign-flip permutation test of the mean paired difference (two-sided)",
                           "p_value": float("nan"), "p_ttest": float("nan")}
    if len(d) < 2:
        return out
    if np.allclose(d, 0):
        out["p_value"] = out["p_ttest"] = 1.0
        return out
    res = paired_comparison(a, b, method="permutation", n_resamples=9999, seed=0)
    out["p_value"] = float(res["p_value"])
    out["ci_low"], out["ci_high"] = float(res["ci_low"]), float(res["ci_high"])
    if np.std(d) > 0:
        out["p_ttest"] = float(stats.ttest_rel(a, b).pvalue)
    return out


def units(results: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The (subject, seed) units of the statistics: one per run, or one per tested subject of a run
    that tests several (a joint protocol: its ``per_subject`` numbers), so that the mean, the sd and
    the pairing are over seeds x subjects in every protocol."""
    out = []
    for r in results:
        per = r.get("per_subject") or {}
        run_key = (r.get("index"), r["seed"], r.get("subject"))
        if r.get("subject") is None and len(per) > 1:
            for s, v in per.items():
                out.append({**r, "subject": str(s), "selected": v.get("selected", {}), "last": v.get("last", {}),
                            "run_key": run_key})
        else:
            out.append({**r, "run_key": run_key})
    return out


def summarize(results: Sequence[Mapping[str, Any]], kinds: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The ablation table from the runs' results.

    Parameters
    ----------
    results : list of dict
        One per finished run: ``variant``, ``seed``, ``subject``, ``selected`` and ``last`` (each a dict
        with ``top1``/``top5``), ``wall_s``, ``overrides``, and optionally ``per_subject`` (subject ->
        ``selected``/``last``; used for runs that test several subjects, see :func:`units`).
    kinds : dict | None
        Variant -> kind (for the table; default ``"lever"``).

    Returns
    -------
    summary : dict
        ``variants`` (name -> ``kind``, ``overrides``, ``n_runs``, ``n_units`` (subject x seed pairs),
        ``wall_s`` mean, per metric
        ``"<checkpoint>/<metric>"`` mean/sd/n and ``diff`` (the paired difference from the base)), the
        ``order`` of the variants, and the ``selection`` rule.
    """
    by_variant: dict[str, list[Mapping[str, Any]]] = {}
    for r in units(results):
        by_variant.setdefault(str(r["variant"]), []).append(r)
    order = ([BASE] if BASE in by_variant else []) + [v for v in by_variant if v != BASE]

    def value(r: Mapping[str, Any], ck: str, m: str) -> float:
        x = (r.get(ck) or {}).get(m)
        return float("nan") if x is None else float(x)

    base_runs = {(r.get("subject"), r["seed"]): r for r in by_variant.get(BASE, [])}
    table: dict[str, Any] = {}
    for v in order:
        rs = by_variant[v]
        entry: dict[str, Any] = {"kind": (kinds or {}).get(v, "base" if v == BASE else "lever"),
                                 "overrides": rs[0].get("overrides", {}),
                                 "n_runs": len({r["run_key"] for r in rs}), "n_units": len(rs),
                                 "wall_s": float(np.mean([r.get("wall_s", float("nan")) for r in rs])),
                                 "metrics": {}}
        for ck, m in METRICS:
            key = f"{ck}/{m}"
            cell: dict[str, Any] = _mean_sd([value(r, ck, m) for r in rs])
            if v != BASE and base_runs:
                pairs = [(value(r, ck, m), value(base_runs[(r.get("subject"), r["seed"])], ck, m)) for r in rs
                         if (r.get("subject"), r["seed"]) in base_runs]
                pairs = [(a, b) for a, b in pairs if not (math.isnan(a) or math.isnan(b))]
                cell["diff"] = paired_difference([a for a, _ in pairs], [b for _, b in pairs])
            entry["metrics"][key] = cell
        table[v] = entry
    return {
        "order": order, "variants": table,
        "selection": "'selected': the checkpoint with the best validation loss (validation concepts held out "
                     "from training); 'last': the final epoch. The test set is used once per checkpoint, never "
                     "to choose an epoch.",
        "paired_test": "differences from the base are paired by (subject, seed); p_value: exact sign-flip "
                       "permutation test (two-sided); p_ttest: paired t-test",
    }


def slurm_script(n_runs: int, command: Sequence[str], *, job_name: str = "neurodecode-ablate",
                 time: str = "04:00:00", gpus: int = 1, cpus: int = 8, mem: str = "32G",
                 log_dir: str = "slurm-logs") -> str:
    """A SLURM array script running each run of an ablation as one task (``--task-index $SLURM_ARRAY_TASK_ID``).

    Parameters
    ----------
    n_runs : int
        Number of runs (the array is ``0..n_runs-1``).
    command : list of str
        The ``neurodecode ablate ...`` command without ``--task-index``.
    job_name, time, gpus, cpus, mem, log_dir
        The ``#SBATCH`` settings.
    """
    import shlex

    if n_runs < 1:
        raise ValueError("an ablation needs at least one run.")
    lines = [
        "#!/bin/bash",
        f"#SBATCH --job-name={job_name}",
        f"#SBATCH --array=0-{n_runs - 1}",
        f"#SBATCH --time={time}",
        f"#SBATCH --cpus-per-task={cpus}",
        f"#SBATCH --mem={mem}",
        *([f"#SBATCH --gres=gpu:{gpus}"] if gpus else []),
        f"#SBATCH --output={log_dir}/%x-%A_%a.out",
        "# one run per array task; a task whose result.json exists returns at once (resumable).",
        "# the task that finishes last writes ablation.json / ablation.md / ablation.png; rerun the",
        "# command without --task-index to rebuild them at any time.",
        "set -euo pipefail",
        f"mkdir -p {shlex.quote(log_dir)}",
        " ".join(shlex.quote(c) for c in command) + ' --task-index "$SLURM_ARRAY_TASK_ID"',
        "",
    ]
    return "\n".join(lines)
