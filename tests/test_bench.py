"""``make bench``: the runner runs the benchmarks and collects one JSON and one Markdown table."""

from __future__ import annotations

import importlib.util
import json
import sys
import textwrap
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _run_all():
    spec = importlib.util.spec_from_file_location("bench_run_all", BENCHMARKS / "run_all.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_quick_eval_speed_through_run_all(tmp_path):
    run_all = _run_all()
    out = tmp_path / "results"
    assert run_all.main(["--quick", "--only", "eval_speed", "--out", str(out)]) == 0
    summary = json.loads((out / "bench.json").read_text())
    assert summary["quick"] is True and summary["machine"]["cpu_count"] >= 1 and "torch" in summary["machine"]["packages"]
    entry = summary["benchmarks"]["eval_speed"]
    assert entry["returncode"] == 0 and "eval_speed.py" in entry["command"] and "--quick" in entry["command"]
    (row,) = entry["rows"]
    assert row["unit"] == "s" and row["value"] > 0 and row["baseline_value"] > 0 and row["repeats"] == 1
    assert row["speedup"] == round(row["baseline_value"] / row["value"], 2) and row["command"] == entry["command"]
    # the benchmark checked that the fast path chose what the plain one chose in every window
    own = json.loads((out / "eval_speed.json").read_text())
    assert own["time_resolved"]["agreement_with_plain"]["fast"]["same_alpha_every_window"] is True
    assert own["time_resolved"]["agreement_with_plain"]["fast"]["max_abs_diff_top1"] == 0.0
    md = (out / "bench.md").read_text()
    assert "| benchmark | measure |" in md and "| eval_speed | time-resolved decoding" in md
    assert f"{summary['machine']['cpu_count']} CPU cores" in md and entry["command"] in md


def test_run_all_finds_new_benchmarks_and_reports_failures(tmp_path):
    run_all = _run_all()
    bench = tmp_path / "benchmarks"
    bench.mkdir()
    (bench / "toy.py").write_text(textwrap.dedent("""
        import argparse, json, time
        p = argparse.ArgumentParser()
        p.add_argument("--out")
        p.add_argument("--quick", action="store_true")
        a = p.parse_args()
        t0 = time.perf_counter(); sum(range(10000)); fast = time.perf_counter() - t0
        t0 = time.perf_counter(); sum(range(100000)); slow = time.perf_counter() - t0
        rows = [{"measure": "toy sum", "value": fast, "unit": "s", "baseline": "a longer sum",
                 "baseline_value": slow, "speedup": slow / fast, "quick": a.quick, "ignored": 1}]
        json.dump({"rows": rows, "quick": a.quick}, open(a.out, "w"))
    """))
    (bench / "broken.py").write_text("import sys\nsys.exit(3)\n")
    (bench / "_helper.py").write_text("raise SystemExit('not a benchmark')\n")
    out = tmp_path / "out"
    rc = run_all.main(["--benchmarks-dir", str(bench), "--quick", "--out", str(out)])
    assert rc == 1  # one failed
    summary = json.loads((out / "bench.json").read_text())
    assert set(summary["benchmarks"]) == {"toy", "broken"}
    toy = summary["benchmarks"]["toy"]
    assert toy["returncode"] == 0 and json.loads((out / "toy.json").read_text())["quick"] is True
    (row,) = toy["rows"]
    assert set(row) <= {*run_all.ROW_KEYS, "command"} and row["baseline"] == "a longer sum"
    assert "--quick" in row["command"] and "toy.py" in row["command"]
    broken = summary["benchmarks"]["broken"]
    assert broken["returncode"] == 3 and broken["rows"][0]["measure"] == "(failed: exit 3)"
    md = (out / "bench.md").read_text()
    assert "| toy | toy sum |" in md and "| broken | (failed: exit 3)" in md


def test_rows_from_a_benchmark_with_its_own_layout(tmp_path):
    run_all = _run_all()
    report = {"summary": [
        {"device": "cpu", "batch": 64, "variant": "reference", "samples_per_s": 100.0, "peak_rss_gb": 1.0},
        {"device": "cpu", "batch": 64, "variant": "fused", "samples_per_s": 250.0, "peak_rss_gb": 0.5},
    ]}
    path = tmp_path / "train_throughput.json"
    path.write_text(json.dumps(report))
    (row,) = run_all.rows_of("train_throughput", path)
    assert row["value"] == 250.0 and row["baseline_value"] == 100.0 and row["speedup"] == 2.5
    path.write_text(json.dumps({"summary": [{"device": "cpu"}]}))  # a layout the adapter does not know
    (row,) = run_all.rows_of("train_throughput", path)
    assert row["measure"] == "(rows not read)" and "train_throughput.json" in row["note"]
