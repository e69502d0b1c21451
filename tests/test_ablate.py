"""``neurodecode ablate``: grids, run plans, the summary's statistics, and a tiny end-to-end ablation."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from tests_helpers import tiny_fit_config

from neurodecode.training.ablation import (
    BASE,
    grid_from_dict,
    load_grid,
    override_args,
    paired_difference,
    plan_runs,
    slurm_script,
    summarize,
)
from neurodecode.utils import UserError


def test_grid_variants_combinations_and_plan(tmp_path):
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump({
        "seeds": [3, 4], "subjects": ["sub-01", "02"],
        "variants": {"block3": {"data.layer": "block3-mean"}, "post": {"data.channels": "posterior17"}},
        "combinations": {"both": ["block3", "post"]},
    }))
    grid = load_grid(path)
    assert list(grid.variants) == [BASE, "block3", "post", "both"]
    assert grid.variants["both"] == {"data.layer": "block3-mean", "data.channels": "posterior17"}
    assert grid.kinds == {BASE: "base", "block3": "lever", "post": "lever", "both": "combination"}
    runs = plan_runs(grid)
    assert len(runs) == 4 * 2 * 2
    assert [r.index for r in runs] == list(range(16))
    assert (runs[0].variant, runs[0].subject, runs[0].seed) == (BASE, "01", 3)
    assert runs[-1].folder(tmp_path) == tmp_path / "both" / "sub-02" / "seed4"
    only = plan_runs(grid, seeds=[0], subjects=["01"], variants=["post"])
    assert [r.variant for r in only] == [BASE, "post"]


@pytest.mark.parametrize("raw, match", [
    ({"variants": {"a": {"seed_everything": 1}}}, "set by the ablation"),
    ({"variants": {"a": {"--data.layer": "x"}}}, "dotted config key"),
    ({"variants": {"a": ["data.layer"]}}, "must map dotted"),
    ({"variants": {"base": {"data.layer": "x"}}}, "reserved"),
    ({"combinations": {"c": ["nope"]}}, "not a variant"),
    ({"varients": {}}, "unknown field"),
    ({"seeds": "0,1"}, "list of integers"),
])
def test_grid_errors_name_the_field(raw, match):
    with pytest.raises(UserError, match=match):
        grid_from_dict(raw, "g.yaml")


def test_override_args_round_trip_through_yaml():
    args = override_args({"data.layer": "block3-mean", "data.channels": ["O1", "Oz"], "model.init_args.lr": 0.01,
                          "data.average_train_reps": True, "data.tmin": None,
                          "model.init_args.augment": {"class_path": "x.Y", "init_args": {"noise_std": 0.1}}})
    values = dict(zip(args[::2], args[1::2], strict=True))
    assert values["--data.layer"] == "block3-mean"
    # every value parses back (as jsonargparse reads it: YAML) to what the grid said
    assert yaml.safe_load(values["--data.channels"]) == ["O1", "Oz"]
    assert yaml.safe_load(values["--model.init_args.lr"]) == 0.01
    assert yaml.safe_load(values["--data.average_train_reps"]) is True
    assert yaml.safe_load(values["--data.tmin"]) is None
    assert yaml.safe_load(values["--model.init_args.augment"])["init_args"]["noise_std"] == 0.1


def _result(variant, seed, subject, top1, top5=None):
    top5 = top1 + 0.2 if top5 is None else top5
    return {"variant": variant, "seed": seed, "subject": subject, "overrides": {}, "wall_s": 1.0,
            "selected": {"top1": top1, "top5": top5}, "last": {"top1": top1 - 0.05, "top5": top5}}


def test_summary_pairs_by_subject_and_seed():
    rng = np.random.default_rng(0)
    base = rng.uniform(0.2, 0.4, size=6)
    gain = rng.uniform(0.05, 0.1, size=6)
    keys = [(s, seed) for s in ("01", "02") for seed in (0, 1, 2)]
    results = [_result(BASE, seed, s, b) for (s, seed), b in zip(keys, base, strict=True)]
    # the variant's runs in another order: the pairing must follow (subject, seed), not the list order
    results += [_result("better", seed, s, b + g) for (s, seed), b, g in
                reversed(list(zip(keys, base, gain, strict=True)))]
    summary = summarize(results)
    cell = summary["variants"]["better"]["metrics"]["selected/top1"]
    assert cell["mean"] == pytest.approx(np.mean(base + gain))
    assert cell["sd"] == pytest.approx(np.std(base + gain, ddof=1))
    assert cell["diff"]["difference"] == pytest.approx(gain.mean())
    assert cell["diff"]["n_pairs"] == 6
    # every pair improves: the exact sign-flip test gives 2 / 2**6
    assert cell["diff"]["p_value"] == pytest.approx(2 / 2 ** 6, rel=1e-6)
    from scipy import stats

    assert cell["diff"]["p_ttest"] == pytest.approx(stats.ttest_rel(base + gain, base).pvalue)
    assert summary["order"] == [BASE, "better"]
    assert "diff" not in summary["variants"][BASE]["metrics"]["selected/top1"]


def test_summary_expands_joint_runs_into_subjects():
    def joint(variant, seed, a, b):
        r = _result(variant, seed, None, (a + b) / 2)
        r["index"] = seed
        r["per_subject"] = {"01": {"selected": {"top1": a, "top5": a}, "last": {"top1": a, "top5": a}},
                            "02": {"selected": {"top1": b, "top5": b}, "last": {"top1": b, "top5": b}}}
        return r

    results = [joint(BASE, 0, 0.2, 0.4), joint(BASE, 1, 0.3, 0.5), joint("v", 0, 0.3, 0.4), joint("v", 1, 0.3, 0.6)]
    summary = summarize(results)
    v = summary["variants"]["v"]
    assert (v["n_runs"], v["n_units"]) == (2, 4)
    cell = v["metrics"]["selected/top1"]
    assert cell["mean"] == pytest.approx(np.mean([0.3, 0.4, 0.3, 0.6]))
    assert cell["diff"]["n_pairs"] == 4
    assert cell["diff"]["difference"] == pytest.approx(np.mean([0.1, 0.0, 0.0, 0.1]))


def test_paired_difference_of_no_change_is_not_significant():
    d = paired_difference([0.3, 0.4, 0.5], [0.3, 0.4, 0.5])
    assert d["difference"] == 0 and d["p_value"] == 1.0
    mixed = paired_difference([0.31, 0.39, 0.52, 0.40], [0.30, 0.40, 0.50, 0.41])
    assert mixed["p_value"] > 0.3


def test_slurm_script():
    text = slurm_script(7, ["neurodecode", "ablate", "-c", "a b.yaml", "--out", "o"])
    assert "#SBATCH --array=0-6" in text
    assert "'a b.yaml'" in text and '--task-index "$SLURM_ARRAY_TASK_ID"' in text


def test_report_files(tmp_path):
    from neurodecode.reporting.ablation_report import write_ablation_report

    results = [_result(BASE, 0, None, 0.3), _result(BASE, 1, None, 0.32), _result("v", 0, None, 0.4),
               _result("v", 1, None, 0.45)]
    paths = write_ablation_report(summarize(results), results, tmp_path)
    md = paths["md"].read_text()
    assert "| v | lever | 2 | 42.5 ± 3.5 | +11.5 (p=" in md
    assert json.loads(paths["json"].read_text())["variants"]["v"]["metrics"]["selected/top1"]["n"] == 2
    assert paths["png"].read_bytes()[:4] == b"\x89PNG"


# --------------------------------------------------------------------------------------------------
# end to end on the simulator (LightningCLI runs, resume, task index)
# --------------------------------------------------------------------------------------------------
def _parse(argv):
    from neurodecode.cli import ablate

    parser = argparse.ArgumentParser()
    ablate.add_arguments(parser)
    return ablate, parser.parse_args(argv)


def _base_config(tmp_path, sim_eeg):
    cfg = tiny_fit_config(sim_eeg, None, max_epochs=2, data={"protocol": "intra"})
    path = tmp_path / "base.yaml"
    path.write_text(yaml.safe_dump(cfg))
    grid = tmp_path / "grid.yaml"
    grid.write_text(yaml.safe_dump({"variants": {"lr_high": {"model.init_args.lr": 3e-2},
                                                 "avg": {"data.average_train_reps": True}}}, sort_keys=False))
    return path, grid


@pytest.mark.slow
def test_ablate_end_to_end_resumes(tmp_path, sim_eeg):
    base, grid = _base_config(tmp_path, sim_eeg)
    out = tmp_path / "abl"
    ablate, args = _parse(["-c", str(base), "--grid", str(grid), "--seeds", "0,1", "--out", str(out)])
    assert ablate.run(args) == 0
    summary = json.loads((out / "ablation.json").read_text())
    assert summary["order"] == [BASE, "lr_high", "avg"]
    assert len(summary["runs"]) == 6
    run = next(r for r in summary["runs"] if r["variant"] == "lr_high")
    # the override reached the model, and the resolved config is recorded
    assert run["config"]["model"]["init_args"]["lr"] == pytest.approx(3e-2)
    assert run["config"]["seed_everything"] == run["seed"]
    for r in summary["runs"]:
        for ck in ("selected", "last"):
            assert 0.0 <= r[ck]["top1"] <= r[ck]["top5"] <= 1.0
        assert r["selected_checkpoint"].endswith(".ckpt") and "best-epoch" in r["selected_checkpoint"]
        (only,) = r["per_subject"].values()  # intra: one tested subject, the same numbers
        assert only["selected"]["top1"] == pytest.approx(r["selected"]["top1"])
        assert only["last"]["top5"] == pytest.approx(r["last"]["top5"])
    avg = next(r for r in summary["runs"] if r["variant"] == "avg")
    basic = next(r for r in summary["runs"] if r["variant"] == BASE)
    assert avg["data"]["average_train_reps"] is True and basic["data"]["average_train_reps"] is False
    cell = summary["variants"]["lr_high"]["metrics"]["selected/top1"]
    assert cell["n"] == 2 and cell["diff"]["n_pairs"] == 2
    assert (out / "ablation.md").is_file() and (out / "ablation.png").is_file()
    # a rerun trains nothing: every result.json is kept as it was
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("result.json")}
    assert ablate.run(args) == 0
    assert {p: p.stat().st_mtime_ns for p in out.rglob("result.json")} == stamps
    # a changed variant is not silently answered by the old results
    grid.write_text(yaml.safe_dump({"variants": {"lr_high": {"model.init_args.lr": 1e-2},
                                                 "avg": {"data.average_train_reps": True}}}, sort_keys=False))
    with pytest.raises(UserError, match="other overrides"):
        ablate.run(args)


def test_ablate_task_index_runs_one_run(tmp_path, sim_eeg, capsys):
    base, grid = _base_config(tmp_path, sim_eeg)
    out = tmp_path / "abl"
    ablate, args = _parse(["-c", str(base), "--grid", str(grid), "--seeds", "0", "--out", str(out),
                           "--task-index", "1"])
    assert ablate.run(args) == 0
    done = sorted(p.relative_to(out).as_posix() for p in out.rglob("result.json"))
    assert done == ["lr_high/sub-default/seed0/result.json"]
    assert not (out / "ablation.json").exists()  # not complete: the report waits for the other runs
    _, listing = _parse(["-c", str(base), "--grid", str(grid), "--seeds", "0", "--out", str(out), "--list"])
    capsys.readouterr()
    ablate.run(listing)
    lines = capsys.readouterr().out.splitlines()
    assert [ln.split()[-1] for ln in lines] == ["todo", "done", "todo"]
    _, slurm = _parse(["-c", str(base), "--grid", str(grid), "--seeds", "0", "--out", str(out),
                       "--slurm", str(tmp_path / "a.sbatch")])
    ablate.run(slurm)
    assert "#SBATCH --array=0-2" in (tmp_path / "a.sbatch").read_text()
    with pytest.raises(UserError, match="runs 0..2"):
        ablate.run(_parse(["-c", str(base), "--grid", str(grid), "--seeds", "0", "--out", str(out),
                           "--task-index", "3"])[1])


def _dotted(cfg, key):
    for part in key.split("."):
        cfg = cfg[part]
    return cfg


@pytest.mark.slow
@pytest.mark.parametrize("grid, base", [("sim.yaml", "ablations/sim_base.yaml"),
                                        ("things_eeg2.yaml", "things_eeg2/atm.yaml"),
                                        ("things_meg.yaml", "things_meg/brain_module.yaml")])
def test_example_grids_are_valid_fit_overrides(grid, base, capsys):
    """Every variant of the packaged grids is accepted by 'neurodecode fit' and lands where it says."""
    from importlib.resources import files

    from neurodecode.cli.lightning import run_cli

    configs = files("neurodecode") / "configs"
    g = load_grid(str(configs / "ablations" / grid))
    assert len(g.variants) > 5
    for name, ov in g.variants.items():
        capsys.readouterr()
        with pytest.raises(SystemExit) as exit_info:
            run_cli("fit", ["-c", str(configs / base), *override_args(ov), "--print_config"])
        assert exit_info.value.code in (0, None), name
        printed = yaml.safe_load(capsys.readouterr().out)
        for key, value in ov.items():
            got = _dotted(printed, key)
            if isinstance(value, dict):
                assert got["class_path"] == value["class_path"], (name, key)
                for k, v in value.get("init_args", {}).items():
                    assert got["init_args"][k] == v, (name, key, k)
            else:
                assert got == value, (name, key)


def test_set_and_shard_options():
    from neurodecode.cli.ablate import _shard, fit_args, parse_sets
    from neurodecode.training.ablation import Run

    assert parse_sets(["data.root=sim", "trainer.max_epochs=5", "data.channels=[O1, Oz]"]) == {
        "data.root": "sim", "trainer.max_epochs": 5, "data.channels": ["O1", "Oz"]}
    with pytest.raises(UserError, match="KEY=VALUE"):
        parse_sets(["data.root"])
    assert _shard("1/4") == (1, 4) and _shard(None) is None
    with pytest.raises(UserError, match="0 <= K < N"):
        _shard("4/4")
    run = Run(0, "v", 2, "03", {"data.layer": "block1-mean"})
    args = fit_args(["a.yaml"], run, Path("out"), {"data.layer": "final", "data.root": "r"})
    # the base's overrides come first, the variant's win; the seed, folder and subject are the run's
    assert args.index("--data.layer") < len(args) - 1
    assert [args[i + 1] for i, a in enumerate(args) if a == "--data.layer"] == ["final", "block1-mean"]
    assert args[args.index("--seed_everything") + 1] == "2" and args[args.index("--data.subject") + 1] == "03"
    assert args[args.index("--trainer.default_root_dir") + 1] == str(Path("out") / "train")
