"""CPU training-step time of the brain module at simulated-MEG shape: fast path vs the plain layers.

One step = forward of both heads, the brain module's loss (``AlignmentLoss``: CLIP + MSE, contrastive
weight 0.75, as ``configs/things_meg/brain_module.yaml``), backward and an AdamW step, for
``BrainModule`` with its default architecture on ``(batch, 271, 200)``: the simulator's MEG (271
sensors, 1 s at 200 Hz, 4 subjects) and the 30-d ``sim:features`` targets. The two implementations
(``implementation="reference"`` and ``"fast"``) share one model (same parameters); they are timed
interleaved (alternating which goes first), after a check that they give the same outputs and
gradients. Reported per implementation: median and spread (min, max) of the wall time and of the
process CPU time per step (the CPU time is less sensitive to other processes on a shared machine),
the FLOPs each executes per step (``torch.utils.flop_counter``) and the achieved GFLOP/s, the
machine's float32 matmul rate measured in the same run, and the median eval-mode forward time.

    python benchmarks/brain_module_speed.py --out benchmarks/results/brain_module_speed.json
    python benchmarks/brain_module_speed.py --quick --out /tmp/bm.json     # smoke run (batch 16)

Threads: torch's default (all cores) unless ``--threads``.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import time
from pathlib import Path

import torch

from neurodecode.encoders import BrainModule
from neurodecode.losses import AlignmentLoss
from neurodecode.simulate.config import MODALITY_DEFAULTS, SimulationConfig
from neurodecode.simulate.sensors import N_MEG, meg_info
from neurodecode.utils import atomic_write_json

N_OUTPUTS, N_SUBJECTS = 30, 4  # sim:features (low 10 + mid 8 + sem 12); the simulator's default subjects
IMPLEMENTATIONS = ("reference", "fast")


def build(n_times: int, sfreq: float) -> BrainModule:
    torch.manual_seed(0)
    return BrainModule(N_MEG, n_times, N_OUTPUTS, sfreq=sfreq, chs_info=meg_info(sfreq)["chs"], n_subjects=N_SUBJECTS)


def batch(b: int, n_times: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(b, N_MEG, n_times, generator=g), torch.randint(0, N_SUBJECTS, (b,), generator=g),
            torch.randn(b, N_OUTPUTS, generator=g))


def check_same(model: BrainModule, n_times: int) -> dict[str, float]:
    """Largest differences between the two implementations on one small batch (train mode, same seeds)."""
    x, s, target = batch(8, n_times, seed=1)
    out, grads = {}, {}
    for impl in IMPLEMENTATIONS:
        m = copy.deepcopy(model).train()
        m.implementation = impl
        torch.manual_seed(3)
        heads = m.forward_heads(x, s)
        (heads["contrastive"].square().sum() + heads["regression"].sin().sum()).backward()
        out[impl] = torch.cat([heads["contrastive"], heads["regression"]], 1).detach()
        grads[impl] = {n: p.grad for n, p in m.named_parameters() if p.grad is not None}
    ref = out["reference"]
    out_rel = float((out["fast"] - ref).abs().max() / ref.abs().max())
    grad_rel = max(float((grads["fast"][n] - g).abs().max() / g.abs().max())
                   for n, g in grads["reference"].items() if float(g.abs().max()) > 1e-3 *
                   max(float(h.abs().max()) for h in grads["reference"].values()))
    if not (out_rel < 1e-4 and grad_rel < 1e-3):
        sys.exit(f"fast and reference differ: outputs {out_rel:.2e}, gradients {grad_rel:.2e} (relative)")
    return {"outputs_max_rel_diff": out_rel, "gradients_max_rel_diff": grad_rel}


def matmul_rate() -> float:
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    best = float("inf")
    for _ in range(4):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2 * 2048**3 / best / 1e9


def step_flops(model, loss_fn, opt, data) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        train_step(model, loss_fn, opt, data)
    return counter.get_total_flops()


def train_step(model, loss_fn, opt, data) -> None:
    x, s, target = data
    total, _ = loss_fn(model.forward_heads(x, s), target)
    opt.zero_grad(set_to_none=True)
    total.backward()
    opt.step()


def spread(v: list[float]) -> list[float]:
    return [round(min(v), 4), round(max(v), 4)]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/brain_module_speed.json"))
    p.add_argument("--quick", action="store_true", help="smoke run: batch 16, 2 repetitions")
    p.add_argument("--batch-size", type=int, default=None, help="default 128 (the MEG config's), 16 with --quick")
    p.add_argument("--repeats", type=int, default=None, help="timed steps per implementation (default 5; 2 quick)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's default)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    bs = args.batch_size or (16 if args.quick else 128)
    repeats = args.repeats or (2 if args.quick else 5)
    cfg = SimulationConfig(modality="meg").resolved()
    sfreq, n_times = float(cfg.sfreq), cfg.n_times
    assert sfreq == MODALITY_DEFAULTS["meg"]["sfreq"]

    model = build(n_times, sfreq)
    equal = check_same(model, n_times)
    loss_fn = AlignmentLoss(contrastive="clip", regression="mse", contrastive_weight=0.75)
    opt = torch.optim.AdamW([*model.parameters(), *loss_fn.parameters()], lr=3e-4)
    data = batch(bs, n_times)
    model.train()
    flops = {}
    for impl in IMPLEMENTATIONS:  # also the warm-up step of each
        model.implementation = impl
        flops[impl] = step_flops(model, loss_fn, opt, data)
    wall = {k: [] for k in IMPLEMENTATIONS}
    cpu = {k: [] for k in IMPLEMENTATIONS}
    peak = [matmul_rate()]
    for rep in range(repeats):
        for impl in IMPLEMENTATIONS[::1 if rep % 2 == 0 else -1]:
            model.implementation = impl
            t0, c0 = time.perf_counter(), time.process_time()
            train_step(model, loss_fn, opt, data)
            wall[impl].append(time.perf_counter() - t0)
            cpu[impl].append(time.process_time() - c0)
        print(f"repeat {rep + 1}/{repeats}: " + ", ".join(f"{k} {wall[k][-1]:.2f} s" for k in IMPLEMENTATIONS),
              flush=True)
    peak.append(matmul_rate())
    model.eval()
    infer = {k: [] for k in IMPLEMENTATIONS}
    with torch.no_grad():
        for _ in range(max(2, repeats // 2)):
            for impl in IMPLEMENTATIONS:
                model.implementation = impl
                t0 = time.perf_counter()
                model.forward_heads(data[0], data[1])
                infer[impl].append(time.perf_counter() - t0)

    med = {k: statistics.median(v) for k, v in wall.items()}
    med_cpu = {k: statistics.median(v) for k, v in cpu.items()}
    threads = torch.get_num_threads()
    shape = f"batch {bs}, {N_MEG} sensors x {n_times} samples, float32, {threads} CPU thread(s)"
    rows = [
        {"measure": f"brain module training step, wall ({shape})", "value": round(med["fast"], 4), "unit": "s",
         "baseline": "implementation='reference' (plain layers), same run", "baseline_value": round(med["reference"], 4),
         "speedup": round(med["reference"] / med["fast"], 3), "spread": spread(wall["fast"]),
         "baseline_spread": spread(wall["reference"]), "repeats": repeats, "note": "interleaved"},
        {"measure": f"brain module training step, process CPU time ({shape})", "value": round(med_cpu["fast"], 4),
         "unit": "s", "baseline": "implementation='reference', same run",
         "baseline_value": round(med_cpu["reference"], 4), "speedup": round(med_cpu["reference"] / med_cpu["fast"], 3),
         "spread": spread(cpu["fast"]), "baseline_spread": spread(cpu["reference"]), "repeats": repeats},
        {"measure": f"brain module eval forward ({shape})", "value": round(statistics.median(infer["fast"]), 4),
         "unit": "s", "baseline": "implementation='reference'",
         "baseline_value": round(statistics.median(infer["reference"]), 4),
         "speedup": round(statistics.median(infer["reference"]) / statistics.median(infer["fast"]), 3),
         "spread": spread(infer["fast"]), "baseline_spread": spread(infer["reference"]), "repeats": len(infer["fast"])},
        {"measure": "FLOPs per training step", "value": round(flops["fast"] / 1e9, 1), "unit": "GFLOP",
         "baseline": "implementation='reference'", "baseline_value": round(flops["reference"] / 1e9, 1),
         "comparison": f"{flops['reference'] / flops['fast']:.2f}x fewer"},
    ]
    out = {
        "benchmark": "brain_module_speed", "batch_size": bs, "n_chans": N_MEG, "n_times": n_times, "sfreq": sfreq,
        "n_subjects": N_SUBJECTS, "n_outputs": N_OUTPUTS, "threads": threads, "repeats": repeats,
        "load_average": list(os.getloadavg()), "equal": equal,
        "matmul_gflops_before_after": [round(r, 1) for r in peak],
        "step_wall_s": {k: [round(t, 4) for t in v] for k, v in wall.items()},
        "step_cpu_s": {k: [round(t, 4) for t in v] for k, v in cpu.items()},
        "gflop_per_step": {k: round(v / 1e9, 1) for k, v in flops.items()},
        "achieved_gflops_per_s": {k: round(flops[k] / 1e9 / med[k], 1) for k in IMPLEMENTATIONS},
        "rows": rows,
    }
    atomic_write_json(args.out, out)
    for r in rows:
        print(r)
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
