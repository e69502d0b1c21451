"""bf16-mixed against fp32 on the CPU: the training step of every encoder, and the accuracy it reaches.

Many current CPUs multiply bfloat16 several times faster than float32 (AVX512-BF16, AMX). Lightning's
``precision="bf16-mixed"`` on a CPU runs the forward pass (and the loss, computed in ``training_step``)
under ``torch.autocast("cpu", dtype=torch.bfloat16)``; weights, gradients and the optimizer state stay
float32. This benchmark measures, in one run:

1. **The training step** of every registered encoder: forward, the package's loss (each encoder's
   config loss), backward and AdamW, in ``fp32`` and under that autocast (``bf16``), on the same model
   and batch, interleaved (``fp32, bf16, bf16, fp32, ...`` so slow drifts of a shared machine cancel),
   medians of repetitions with their spread. Shapes: the EEG encoders at THINGS-EEG2's
   ``(64, 63, 250) -> 1024``; the brain module at the simulated MEG's ``(16, 271, 200) -> 768``
   (271 sensors, 1 s at 200 Hz, 4 subjects; batch 16, as a step at its config's 128 takes tens of
   seconds on two cores); the fMRI MLP at NSD's ``(32, 15724) -> 768``. ``Ridge`` is fitted in
   closed form (no training step) and skipped; ``ATM[reference]`` and ``NICE[reference]`` are the
   same models with the reference layers instead of the fused autograd functions. Before timing,
   one step's loss and gradients from the same weights, batch and dropout masks are compared
   between the two (relative loss difference, cosine and relative difference of the gradients),
   and an error raised under autocast (e.g. by a custom autograd function) is recorded, not raised.
2. **The accuracy**: ``neurodecode fit -c configs/sim/eeg_atm.yaml`` on the default simulated EEG with
   only the encoder swapped (as ``benchmarks/sim_encoders.py`` does), once with
   ``--trainer.precision 32-true`` and once with ``bf16-mixed``, same seed; test top-1/top-5 (50-way)
   and the wall time of each fit. ``--max-epochs`` caps the epochs (the config's 30 take hours on two
   cores for five encoders and two precisions); the JSON says what was used.

Usage::

    python benchmarks/cpu_bf16.py --out benchmarks/results/cpu_bf16.json            # both parts
    python benchmarks/cpu_bf16.py --out r.json --data sim_eeg --max-epochs 8 --threads 1
    python benchmarks/cpu_bf16.py --out r.json --skip-accuracy                     # steps only
    python benchmarks/cpu_bf16.py --out r.json --quick                             # smoke run (a minute)

Without ``--data`` the default simulated EEG is made first (``neurodecode simulate --modality eeg``;
``--quick``: a tiny one). The machine's CPU flags (``avx512_bf16``, ``amx_bf16``), torch's view of bf16
support and the load average are recorded: on a shared machine timings vary from run to run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SIM_CONFIG = ROOT / "configs" / "sim" / "eeg_atm.yaml"
EEG, MEG, NSD = (63, 250, 1024), (271, 200, 768), (15724, 768)

# what one training step of each encoder is timed on: (registry name, constructor kwargs, shape, batch, loss)
STEP_CASES = {
    "ATM": ("atm", {}, EEG, 64, {"contrastive": "clip", "text_weight": 0.01}),
    "ATM[reference]": ("atm", {"implementation": "reference"}, EEG, 64, {"contrastive": "clip", "text_weight": 0.01}),
    "NICE": ("nice", {}, EEG, 64, {"contrastive": "clip"}),
    "NICE[reference]": ("nice", {"implementation": "reference"}, EEG, 64, {"contrastive": "clip"}),
    "EEGNet": ("eegnet", {}, EEG, 64, {"contrastive": "clip"}),
    "ShallowConvNet": ("shallow", {}, EEG, 64, {"contrastive": "clip"}),
    "MLP": ("mlp", {}, EEG, 64, {"contrastive": "clip"}),
    "BrainModule": ("brain_module", {"n_subjects": 4}, MEG, 16,
                    {"contrastive": "clip", "regression": "mse", "contrastive_weight": 0.75}),
    "FMRIMLP": ("fmri_mlp", {}, NSD, 32, {"contrastive": "softclip"}),
}
SKIPPED = {"ridge": "closed-form fit (one least-squares solve), no training step to time"}
# the encoders trained on the simulator (class paths as in benchmarks/sim_encoders.py)
FIT_ENCODERS = {
    "ATM": "neurodecode.encoders.ATM",
    "NICE": "neurodecode.encoders.NICE",
    "EEGNet": "neurodecode.encoders.EEGNet",
    "ShallowConvNet": "neurodecode.encoders.ShallowConvNet",
    "MLP": "neurodecode.encoders.MLP",
}
PRECISIONS = {"fp32": "32-true", "bf16": "bf16-mixed"}


# --------------------------------------------------------------------------------------------------
# the machine
# --------------------------------------------------------------------------------------------------
def machine() -> dict:
    """CPU model and bf16 flags, torch's bf16 view, threads and load."""
    import torch

    flags: set[str] = set()
    model = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
            elif line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
    except OSError:
        pass
    out = {"cpu": model, "cpu_count": os.cpu_count(), "torch": torch.__version__,
           "torch_threads": torch.get_num_threads(), "cpu_capability": torch.backends.cpu.get_cpu_capability(),
           "flags": {f: f in flags for f in ("avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "avx512_fp16")},
           "load_average": list(os.getloadavg())}
    try:
        out["mkldnn_bf16_supported"] = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        out["mkldnn_bf16_supported"] = None
    try:
        from neurodecode._sys_info import cpu_bf16_support

        out["neurodecode_cpu_bf16"] = cpu_bf16_support()
    except ImportError:
        pass
    return out


def matmul_gflops(dtype, n: int = 1024, repeats: int = 5) -> float:
    """Best dense matmul rate of ``n x n`` matrices in ``dtype`` (GFLOP/s): the hardware's bf16 ratio."""
    import torch

    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best / 1e9


# --------------------------------------------------------------------------------------------------
# part 1: training steps
# --------------------------------------------------------------------------------------------------
def _build(case: tuple, seed: int = 0):
    import numpy as np
    import torch

    from neurodecode.encoders import create_encoder
    from neurodecode.losses import AlignmentLoss
    from neurodecode.training.lit import AlignmentModule

    name, kw, shape, batch, loss_kw = case
    torch.manual_seed(seed)
    kw = dict(kw)
    if len(shape) == 3:
        n_chans, n_times, dim = shape
        if name == "brain_module":
            kw["positions"] = np.random.default_rng(seed).uniform(size=(n_chans, 2)).tolist()
            kw["regression_outputs"] = dim
        enc = create_encoder(name, n_chans=n_chans, n_times=n_times, n_outputs=dim, sfreq=n_times, **kw)
        module = AlignmentModule(enc, AlignmentLoss(**loss_kw), n_chans=n_chans)
        x_shape = (batch, n_chans, n_times)
    else:
        n_vox, dim = shape
        enc = create_encoder(name, n_voxels=n_vox, n_outputs=dim, **kw)
        module = AlignmentModule(enc, AlignmentLoss(**loss_kw), n_voxels=n_vox)
        x_shape = (batch, n_vox)
    g = torch.Generator().manual_seed(seed + 1)
    n_sub = int(kw.get("n_subjects", 1))
    batch_d = {"x": torch.randn(*x_shape, generator=g), "target": torch.randn(batch, dim, generator=g),
               "subject": torch.randint(0, n_sub, (batch,), generator=g), "stim": torch.arange(batch)}
    if loss_kw.get("text_weight"):
        batch_d["text"] = torch.randn(batch, dim, generator=g)
    opt = torch.optim.AdamW(module.parameters(), lr=3e-4, weight_decay=0.01)
    module.train()
    return module, opt, batch_d


def _step(module, opt, batch, bf16: bool) -> float:
    """One training step as Lightning runs it (autocast around training_step only); returns the loss."""
    import torch

    opt.zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        _, total, _ = module._loss(batch, train=True)
    total.backward()
    opt.step()
    return float(total.detach())


def _compare_numerics(case: tuple) -> dict:
    """Loss and gradients of one step from the same weights, batch and dropout masks: bf16 vs fp32."""
    import torch

    res = {}
    grads = {}
    for mode in ("fp32", "bf16"):
        module, _, batch = _build(case)
        torch.manual_seed(123)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=mode == "bf16"):
            _, total, _ = module._loss(batch, train=True)
        total.backward()
        res[f"loss_{mode}"] = float(total.detach())
        grads[mode] = torch.cat([p.grad.reshape(-1).double() for p in module.parameters() if p.grad is not None])
    a, b = grads["fp32"], grads["bf16"]
    res["loss_rel_diff"] = abs(res["loss_bf16"] - res["loss_fp32"]) / max(abs(res["loss_fp32"]), 1e-12)
    res["grad_cosine"] = float(torch.nn.functional.cosine_similarity(a, b, dim=0))
    res["grad_rel_norm_diff"] = float((a - b).norm() / a.norm().clamp_min(1e-12))
    return res


def _stats(values: list[float]) -> dict:
    v = sorted(values)
    q = statistics.quantiles(v, n=4) if len(v) >= 2 else [v[0], v[0], v[0]]
    return {"median": statistics.median(v), "q1": q[0], "q3": q[2], "min": v[0], "max": v[-1], "n": len(v)}


def time_case(label: str, case: tuple, reps: int, target_s: float) -> dict:
    """Interleaved timing of one encoder's step in fp32 and bf16 (seconds per step)."""
    import torch

    out: dict = {"encoder": label, "registry_name": case[0], "shape": list(case[2]), "batch": case[3],
                 "loss": case[4], "arch": case[1]}
    try:
        out["numerics"] = _compare_numerics(case)
    except Exception as err:  # noqa: BLE001 - recorded: e.g. a custom autograd function refusing bf16
        out["error"] = f"{type(err).__name__}: {str(err).splitlines()[0][:300] if str(err) else ''}"
        return out
    module, opt, batch = _build(case)
    out["n_parameters"] = sum(p.numel() for p in module.parameters())
    for mode in ("fp32", "bf16", "fp32", "bf16"):  # warm-up (oneDNN primitive caches, allocator)
        t0 = time.perf_counter()
        _step(module, opt, batch, mode == "bf16")
        first = time.perf_counter() - t0
    k = max(1, int(round(target_s / max(first, 1e-3))))
    times: dict[str, list[float]] = {"fp32": [], "bf16": []}
    ratios = []
    for r in range(reps):
        order = ("fp32", "bf16") if r % 2 == 0 else ("bf16", "fp32")
        per = {}
        for mode in order:
            t0 = time.perf_counter()
            for _ in range(k):
                _step(module, opt, batch, mode == "bf16")
            per[mode] = (time.perf_counter() - t0) / k
            times[mode].append(per[mode])
        ratios.append(per["fp32"] / per["bf16"])
    out["steps_per_rep"] = k
    out["fp32_s"], out["bf16_s"] = _stats(times["fp32"]), _stats(times["bf16"])
    out["speedup"] = out["fp32_s"]["median"] / out["bf16_s"]["median"]
    out["paired_speedup"] = _stats(ratios)
    out["samples_per_s"] = {m: case[3] / out[f"{m}_s"]["median"] for m in ("fp32", "bf16")}
    del module, opt
    torch.set_num_threads(torch.get_num_threads())
    return out


# --------------------------------------------------------------------------------------------------
# part 2: accuracy on the simulator
# --------------------------------------------------------------------------------------------------
def _cli() -> list[str]:
    exe = Path(sys.executable).with_name("neurodecode")
    return [str(exe)] if exe.is_file() else [sys.executable, "-m", "neurodecode"]


def simulate(out: Path, quick: bool) -> Path:
    """The default simulated EEG (``--quick``: a tiny one)."""
    if (out / "ceiling.json").is_file():
        return out
    cmd = [*_cli(), "simulate", "--modality", "eeg", "--out", str(out), "--no-progress"]
    if quick:
        cmd += ["--subjects", "2", "--train-concepts", "20", "--test-concepts", "10", "--exemplars", "2",
                "--reps-test", "4", "--sfreq", "100"]
    subprocess.run(cmd, check=True)
    return out


def fit(data: Path, encoder: str, precision: str, root: Path, max_epochs: int | None, env: dict) -> dict:
    """One ``neurodecode fit`` of the simulator config with the encoder and precision swapped."""
    cmd = [*_cli(), "fit", "-c", str(SIM_CONFIG), "--data.root", str(data), "--model.init_args.encoder",
           FIT_ENCODERS[encoder], "--trainer.precision", precision, "--trainer.default_root_dir", str(root),
           "--trainer.enable_progress_bar", "false"]
    if max_epochs is not None:
        cmd += ["--trainer.max_epochs", str(max_epochs)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    row = {"encoder": encoder, "precision": precision, "seconds": round(seconds, 1), "command": " ".join(cmd)}
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        row["error"] = " | ".join(tail)[-600:]
        return row
    res = json.loads(sorted(root.rglob("results.json"))[-1].read_text())
    row.update({"test_top1": res["test"]["test/top1"], "test_top5": res["test"]["test/top5"],
                "epochs_trained": res["epochs_trained"], "best_val_loss": res["selection"]["best_score"],
                "fraction_of_ceiling_top1": res.get("fraction_of_ceiling_top1")})
    return row


def _rows(steps: list[dict], fits: list[dict]) -> list[dict]:
    rows = []
    for s in steps:
        if "error" in s:
            rows.append({"measure": f"{s['encoder']} training step, bf16 autocast", "value": None,
                         "note": f"failed under autocast: {s['error']}"})
            continue
        if "skipped" in s:
            continue
        b, f = s["bf16_s"], s["fp32_s"]
        rows.append({"measure": f"{s['encoder']} training step (batch {s['batch']}), bf16-mixed",
                     "value": round(b["median"] * 1e3, 2), "unit": "ms", "baseline": "fp32 (32-true)",
                     "baseline_value": round(f["median"] * 1e3, 2), "speedup": round(s["speedup"], 3),
                     "spread": [round(b["q1"] * 1e3, 2), round(b["q3"] * 1e3, 2)],
                     "baseline_spread": [round(f["q1"] * 1e3, 2), round(f["q3"] * 1e3, 2)],
                     "repeats": b["n"], "note": f"grad cosine {s['numerics']['grad_cosine']:.4f}"})
    by = {(r["encoder"], r["precision"]): r for r in fits}
    for enc in dict.fromkeys(r["encoder"] for r in fits):
        a, b = by.get((enc, "32-true"), {}), by.get((enc, "bf16-mixed"), {})
        if "test_top1" in a and "test_top1" in b:
            rows.append({"measure": f"{enc} test top-1 on the simulator, bf16-mixed", "value": b["test_top1"],
                         "baseline": "32-true", "baseline_value": a["test_top1"],
                         "comparison": f"top-5 {b['test_top5']:.3f} vs {a['test_top5']:.3f}; fit "
                                       f"{b['seconds']:.0f} s vs {a['seconds']:.0f} s"})
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=HERE / "results" / "cpu_bf16.json")
    p.add_argument("--quick", action="store_true", help="smoke run: 2 repetitions, a tiny simulation, 1 epoch")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--reps", type=int, default=None, help="timed repetitions per precision (default 7; quick 2)")
    p.add_argument("--target-s", type=float, default=None, help="seconds per timed block (default 1.0; quick 0.2)")
    p.add_argument("--encoders", default=",".join(STEP_CASES), help="step cases to time ('' for none)")
    p.add_argument("--fit-encoders", default=",".join(FIT_ENCODERS), help="encoders trained on the simulator")
    p.add_argument("--data", type=Path, default=None, help="a 'neurodecode simulate --modality eeg' folder")
    p.add_argument("--work", type=Path, default=None, help="where runs (and the simulation) go (default: temp)")
    p.add_argument("--max-epochs", type=int, default=None, help="cap the fits' epochs (default: the config's 30)")
    p.add_argument("--skip-accuracy", action="store_true")
    args = p.parse_args()

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    reps = args.reps or (2 if args.quick else 7)
    target = args.target_s or (0.2 if args.quick else 1.0)
    mach = machine()
    mach["matmul_gflops_1024"] = {"fp32": matmul_gflops(torch.float32), "bf16": matmul_gflops(torch.bfloat16)}
    print(json.dumps(mach), flush=True)
    t_start = time.perf_counter()
    from neurodecode.encoders import list_encoders

    steps: list[dict] = [{"encoder": n, "skipped": why} for n, why in SKIPPED.items()]
    covered = {c[0] for c in STEP_CASES.values()} | set(SKIPPED)
    steps += [{"encoder": n, "skipped": "no step case in benchmarks/cpu_bf16.py"} for n in list_encoders()
              if n not in covered]
    for label in [e for e in args.encoders.split(",") if e]:
        case = STEP_CASES[label]
        if args.quick:  # small batches: a smoke run
            case = (*case[:3], 8, case[4])
        res = time_case(label, case, reps, target)
        steps.append(res)
        print(json.dumps(res), flush=True)

    fits: list[dict] = []
    fit_info: dict = {"skipped": True}
    if not args.skip_accuracy and args.fit_encoders:
        work = args.work or Path(tempfile.mkdtemp(prefix="cpu_bf16_"))
        data = args.data or simulate(work / "sim_eeg", args.quick)
        max_epochs = 1 if args.quick and args.max_epochs is None else args.max_epochs
        env = dict(os.environ)
        if args.threads:
            env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(args.threads)
        env.pop("NEURODECODE_CPU_PRECISION", None)  # the precision is given explicitly to each fit
        for enc in [e for e in args.fit_encoders.split(",") if e]:
            for tag, prec in PRECISIONS.items():
                row = fit(data, enc, prec, work / "runs" / f"{enc}_{tag}", max_epochs, env)
                fits.append(row)
                print(json.dumps(row), flush=True)
        ceiling = json.loads((data / "ceiling.json").read_text())
        fit_info = {"data": str(data), "config": str(SIM_CONFIG), "max_epochs": max_epochs or "config (30)",
                    "n_way": ceiling.get("n_way"), "ceiling_top1": ceiling["mean"]["top1"],
                    "chance_top1": ceiling.get("chance_top1")}
    mach["load_average_end"] = list(os.getloadavg())
    out = {"machine": mach, "reps": reps, "target_s_per_block": target, "quick": args.quick,
           "seconds": round(time.perf_counter() - t_start, 1), "steps": steps, "fit": fit_info, "fits": fits,
           "rows": _rows(steps, fits), "command": " ".join(sys.argv)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_name(args.out.name + ".tmp")
    tmp.write_text(json.dumps(out, indent=2))
    os.replace(tmp, args.out)
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
