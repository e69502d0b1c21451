"""Training throughput and peak memory of ATM at THINGS-EEG2 shape: optimised vs reference layers.

One training step = forward, ATM's loss (0.99 CLIP on image + 0.01 CLIP on text embeddings, with
the learnable temperature), backward and an AdamW step, for ATM on ``(batch, 63, 250)`` trials
with 1024-d embeddings. Variants of the same architecture, with the same parameters and outputs:

- ``reference``: layers as in the reference code's structure: the temporal-spatial convolution is
  ``Conv2d(1, 40, (1, 25))`` on ``(B, 1, C, T)`` giving ``(B, 40, C, T - 24)``, then
  ``AvgPool2d((1, 51), (1, 5))``, batch norm, ELU, the spatial ``Conv2d`` and so on; standard
  ``nn.Dropout`` and ``scaled_dot_product_attention`` in the transformer;
- ``fused`` (``neurodecode.encoders.ATM``'s default): in the temporal-spatial convolution, the
  pooling as a box mean of the input (float64 cumulative sums) followed by the 25-tap filter every
  5 samples, one matrix product on windows laid out as (batch, time, channel, tap) so that its
  output is already in the spatial convolution's layout; filter, batch norm, ELU and spatial
  convolution in one chunked autograd function whose batch-norm statistics come from the windows'
  26 x 26 Gram matrix and whose backward pass is one pass over the chunks (windows and ELU output
  kept within 256 MB, recomputed beyond); in the transformer's training path, attention as one
  batched product per head on column slices of the ``qkv`` projection with a hand-written
  backward (no permute or copy of ``qkv``, no stacking of its gradients), dropout multipliers
  from raw random bits (a byte per unit kept for the backward pass) and the residual dropouts as
  one ``addcmul``;
- ``fused_checkpointing``: ``fused`` plus activation checkpointing of the transformer over chunks
  of the batch (``ATM(..., checkpointing=True)``): least memory, some recomputation.

Each configuration runs in a fresh subprocess, so that its peak resident memory (``VmHWM``) is its
own. Each worker also measures the machine's dense float32 matmul rate at that moment (the best
of a few large ``torch.mm``), counts FLOPs with ``torch.utils.flop_counter.FlopCounterMode`` and
times the temporal convolution + pooling branch alone. The script first checks that the variants
give the same outputs and gradients (and stops if they do not).

Usage::

    python benchmarks/train_throughput.py                      # batch 64 and 1024, CPU (+ CUDA if present)
    python benchmarks/train_throughput.py --batch-sizes 64 --out results.json
    OMP_NUM_THREADS=1 python benchmarks/train_throughput.py --batch-sizes 64 --rounds 4 --min-time 8

The achieved share of the matmul peak divides the FLOPs of the architecture as the reference
layers compute them (a full-rate convolution followed by pooling) by the step time, for every
variant; the fused variants execute fewer FLOPs for the same result, which is part of their
speed-up (``flops_own`` gives the FLOPs each variant actually executes, recomputation included).
The machine's load average is recorded: on a shared machine timings vary from run to run, so
compare variants within one run, and with ``--rounds N`` every variant runs N times, interleaved,
so that a change of load hits them alike: the summary gives the ratio of median step times over
all rounds (``speedup_vs_reference_same_run``), the ratios of their quartiles
(``speedup_quartile_bounds``: reference first quartile over variant third quartile, and the
reverse) and each round's ratio of medians (``speedup_per_round``) as its spread.
``OMP_NUM_THREADS`` sets the threads of the workers.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

# numbers the issue gives for ATM's own code on a 2-core machine of this kind
ISSUE_REFERENCE = {
    "source": "issue 4 (ATM's own code, 2 CPU cores)",
    "samples_per_s": {"64": 135.0, "1024": [83.0, 95.0]},
    "share_of_matmul_peak": [0.09, 0.13],
    "peak_memory_gb_batch_1024": 7.8,
    "share_of_time_in_temporal_conv_and_pool": [0.55, 0.65],
}
N_CHANS, N_TIMES, EMBED = 63, 250, 1024
# the configurations compared: ATM keyword arguments
VARIANTS = {
    "reference": {"implementation": "reference"},
    "fused": {"implementation": "fused"},
    "fused_checkpointing": {"implementation": "fused", "checkpointing": True},
}


def _peak_rss_mb() -> float:
    """Peak resident memory of this process in MiB.

    ``VmHWM`` from ``/proc/self/status`` where available: unlike ``getrusage``'s max RSS, which
    Linux carries over from the parent across fork + exec, it starts afresh in each new program.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def matmul_peak_gflops(device: str, sizes=(2048, 4096), repeats: int = 5) -> float:
    """Best float32 dense matmul rate (GFLOP/s) over a few square sizes."""
    import torch

    best = 0.0
    for n in sizes:
        a = torch.randn(n, n, device=device)
        b = torch.randn(n, n, device=device)
        c = torch.empty(n, n, device=device)
        torch.mm(a, b, out=c)
        _sync(device)
        for _ in range(repeats):
            t0 = time.perf_counter()
            torch.mm(a, b, out=c)
            _sync(device)
            best = max(best, 2 * n**3 / (time.perf_counter() - t0) / 1e9)
        del a, b, c
    return best


def _build(variant: str, device: str, seed: int = 0):
    import torch

    from neurodecode.encoders import ATM
    from neurodecode.losses import AlignmentLoss

    torch.manual_seed(seed)
    model = ATM(N_CHANS, N_TIMES, EMBED, **VARIANTS[variant]).to(device)
    loss = AlignmentLoss("clip", text_weight=0.01).to(device)
    return model, loss


def _count_flops(variant: str, batch: int, device: str) -> float:
    """FLOPs of one forward + backward (encoder and loss) at ``batch``, counted by FlopCounterMode.

    The encoder's FLOPs are linear in the batch: they are counted at batch 8 and scaled; the loss
    (quadratic in the batch through its logits) is counted at the full batch.
    """
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    model, loss_fn = _build(variant, device)
    model.train()
    small = 8
    x = torch.randn(small, N_CHANS, N_TIMES, device=device)
    with FlopCounterMode(display=False) as counter:
        model(x).sum().backward()
    encoder_flops = counter.get_total_flops() * batch / small
    emb = torch.randn(batch, EMBED, device=device, requires_grad=True)
    tgt = torch.randn(batch, EMBED, device=device)
    with FlopCounterMode(display=False) as counter:
        loss_fn(emb, tgt, tgt)[0].backward()
    return float(encoder_flops + counter.get_total_flops())


def _time_temporal_branch(variant: str, batch: int, device: str, repeats: int = 2) -> float:
    """Seconds for forward + backward of the temporal convolution + pooling alone."""
    import torch
    import torch.nn.functional as F

    ts = _build(variant, device)[0].tsconv
    x = torch.randn(batch, N_CHANS, N_TIMES, device=device, requires_grad=True)

    def branch():
        if ts.implementation == "reference":
            y = F.avg_pool2d(ts.temporal_conv(x.unsqueeze(1)), (1, ts.pool_size), (1, ts.pool_stride))
        else:
            y = ts._temporal_fused(x)
        y.sum().backward()

    branch()
    _sync(device)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        branch()
        _sync(device)
        best = min(best, time.perf_counter() - t0)
    return best


def _time_steps(variant: str, batch: int, device: str, min_steps: int, min_time: float) -> list[float]:
    """Seconds of each timed training step (after one warm-up step)."""
    import torch

    model, loss_fn = _build(variant, device)
    opt = torch.optim.AdamW([*model.parameters(), *loss_fn.parameters()], lr=3e-4, weight_decay=1e-4)
    g = torch.Generator(device=device).manual_seed(1)
    x = torch.randn(batch, N_CHANS, N_TIMES, device=device, generator=g)
    img = torch.randn(batch, EMBED, device=device, generator=g)
    txt = torch.randn(batch, EMBED, device=device, generator=g)

    def step():
        opt.zero_grad(set_to_none=True)
        total, _ = loss_fn(model(x), img, txt)
        total.backward()
        opt.step()

    step()  # warm-up
    _sync(device)
    times: list[float] = []
    while len(times) < min_steps or sum(times) < min_time:
        t0 = time.perf_counter()
        step()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return times


def worker(variant: str, batch: int, device: str, min_steps: int, min_time: float) -> dict:
    """Time training steps of one configuration (meant to run in a fresh process)."""
    import torch

    rss_start = _peak_rss_mb()
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    times = _time_steps(variant, batch, device, min_steps, min_time)
    result = {
        "variant": variant,
        "batch": batch,
        "device": device,
        "steps_timed": len(times),
        "step_seconds": times,
        "step_seconds_median": float(sorted(times)[len(times) // 2]),
        "peak_rss_mb": _peak_rss_mb(),  # read before anything else allocates
        "rss_before_model_mb": rss_start,
        "load_average": os.getloadavg(),
    }
    if device.startswith("cuda"):
        result["peak_cuda_allocated_mb"] = torch.cuda.max_memory_allocated() / 2**20
    result["samples_per_s"] = batch / result["step_seconds_median"]
    result["temporal_branch_seconds"] = _time_temporal_branch(variant, batch, device)
    result["temporal_branch_share"] = result["temporal_branch_seconds"] / result["step_seconds_median"]
    result["matmul_peak_gflops"] = matmul_peak_gflops(device)
    result["flops_own"] = _count_flops(variant, batch, device)
    result["flops_reference_layers"] = (
        result["flops_own"] if variant == "reference" else _count_flops("reference", batch, device))
    achieved = result["flops_reference_layers"] / result["step_seconds_median"] / 1e9
    result["achieved_gflops"] = achieved
    result["share_of_matmul_peak"] = achieved / result["matmul_peak_gflops"]
    return result


def check_equivalence(device: str = "cpu", batch: int = 64) -> dict:
    """Largest relative differences of outputs and gradients between the variants and the reference.

    Evaluation mode compares outputs; training mode (batch statistics) compares outputs and
    gradients with dropout switched off, since the variants draw their dropout masks differently.
    """
    import torch

    ref, _ = _build("reference", device)
    x = torch.randn(batch, N_CHANS, N_TIMES, device=device)
    out: dict[str, float] = {}
    for variant in VARIANTS:
        if variant == "reference":
            continue
        model, _ = _build(variant, device)
        model.load_state_dict(ref.state_dict())
        for mode in ("eval", "train"):
            for m in (model, ref):
                m.train(mode == "train")
                for mod in m.modules():
                    if isinstance(mod, torch.nn.Dropout):
                        mod.p = 0.0
                for layer in m.layers:
                    layer.attn_dropout = 0.0
            a, b = model(x), ref(x)
            out[f"{variant}_max_rel_diff_{mode}"] = float(((a - b).abs().max() / b.abs().max()).detach())
            if mode == "train":
                ga = torch.autograd.grad(a.square().sum(), list(model.parameters()))
                gb = torch.autograd.grad(b.square().sum(), list(ref.parameters()))
                # relative to each gradient's scale, floored: biases just before a batch norm have an
                # analytically zero gradient, so only rounding noise is left in them
                floor = 1e-3 * max(float(v.abs().max()) for v in gb)
                out[f"{variant}_max_rel_diff_grad"] = max(
                    float((u - v).abs().max()) / max(float(v.abs().max()), floor) for u, v in zip(ga, gb, strict=True))
    worst = max(out.values())
    if worst > 1e-3:
        raise AssertionError(f"the ATM variants disagree with the reference layers: {out}")
    return out


def _run_subprocess(variant: str, batch: int, device: str, args) -> dict:
    cmd = [sys.executable, __file__, "--worker", variant, "--batch-sizes", str(batch),
           "--devices", device, "--min-steps", str(args.min_steps), "--min-time", str(args.min_time)]
    print(f"[train_throughput] {device} batch {batch} {variant} ...", file=sys.stderr, flush=True)
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        err = proc.stderr.strip().splitlines()
        return {"variant": variant, "batch": batch, "device": device,
                "error": err[-1] if err else f"exit status {proc.returncode}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _quartiles(values: list[float]) -> tuple[float, float]:
    """First and third quartiles (linear interpolation)."""
    v = sorted(values)

    def at(q: float) -> float:
        pos = q * (len(v) - 1)
        lo = int(pos)
        hi = min(lo + 1, len(v) - 1)
        return v[lo] + (v[hi] - v[lo]) * (pos - lo)

    return at(0.25), at(0.75)


def _pool_rounds(runs: list[dict]) -> dict[tuple, dict]:
    """One record per (device, batch, variant): the step times of all its rounds pooled."""
    by_key: dict[tuple, dict] = {}
    for r in runs:
        if "error" in r:
            continue
        key = (r["device"], r["batch"], r["variant"])
        if key not in by_key:
            by_key[key] = {**r, "step_seconds": list(r["step_seconds"]), "round_medians": []}
        else:
            by_key[key]["step_seconds"] += r["step_seconds"]
            by_key[key]["peak_rss_mb"] = max(by_key[key]["peak_rss_mb"], r["peak_rss_mb"])
        by_key[key]["round_medians"].append(r["step_seconds_median"])
    for r in by_key.values():
        times = sorted(r["step_seconds"])
        r["step_seconds_median"] = times[len(times) // 2]
        r["samples_per_s"] = r["batch"] / r["step_seconds_median"]
        r["temporal_branch_share"] = r["temporal_branch_seconds"] / r["step_seconds_median"]
        r["share_of_matmul_peak"] = r["flops_reference_layers"] / r["step_seconds_median"] / 1e9 / r["matmul_peak_gflops"]
    return by_key


def _summarise(runs: list[dict]) -> list[dict]:
    out = []
    by_key = _pool_rounds(runs)
    for (device, batch, variant), r in sorted(by_key.items()):
        q1, q3 = _quartiles(r["step_seconds"])
        row = {"device": device, "batch": batch, "variant": variant,
               "samples_per_s": round(r["samples_per_s"], 1),
               "step_seconds_median": round(r["step_seconds_median"], 4),
               "step_seconds_quartiles": [round(q1, 4), round(q3, 4)],
               "peak_rss_gb": round(r["peak_rss_mb"] / 1024, 2),
               "share_of_matmul_peak": round(r["share_of_matmul_peak"], 3),
               "temporal_branch_share": round(r["temporal_branch_share"], 3)}
        if "peak_cuda_allocated_mb" in r:
            row["peak_cuda_gb"] = round(r["peak_cuda_allocated_mb"] / 1024, 2)
        ref = by_key.get((device, batch, "reference"))
        if ref is not None and variant != "reference":
            row["speedup_vs_reference_same_run"] = round(r["samples_per_s"] / ref["samples_per_s"], 2)
            rq1, rq3 = _quartiles(ref["step_seconds"])
            row["speedup_quartile_bounds"] = [round(rq1 / q3, 2), round(rq3 / q1, 2)]
            if len(r["round_medians"]) > 1:
                pairs = zip(ref["round_medians"], r["round_medians"], strict=True)
                row["speedup_per_round"] = [round(a / b, 2) for a, b in pairs]
            row["memory_vs_reference_same_run"] = round(r["peak_rss_mb"] / ref["peak_rss_mb"], 2)
        issue = ISSUE_REFERENCE["samples_per_s"].get(str(batch))
        if device == "cpu" and issue is not None and variant != "reference":
            lo = min(issue) if isinstance(issue, list) else issue
            hi = max(issue) if isinstance(issue, list) else issue
            row["speedup_vs_issue_numbers"] = [round(r["samples_per_s"] / hi, 2), round(r["samples_per_s"] / lo, 2)]
        out.append(row)
    return out


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[64, 1024])
    parser.add_argument("--devices", nargs="+", default=None, help="default: cpu, plus cuda when present")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--min-steps", type=int, default=3, help="timed steps at least (after one warm-up)")
    parser.add_argument("--min-time", type=float, default=10.0, help="time steps for at least this many seconds")
    parser.add_argument("--rounds", type=int, default=1,
                        help="run every variant this many times, interleaved (fresh processes; the summary "
                             "pools their steps and lists each round's speed-up)")
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON report here")
    parser.add_argument("--worker", default=None, choices=list(VARIANTS), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:
        res = worker(args.worker, args.batch_sizes[0], args.devices[0], args.min_steps, args.min_time)
        print(json.dumps(res))
        return res

    import torch

    devices = args.devices or (["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
    report: dict = {
        "benchmark": "ATM training step (forward + CLIP/text loss + backward + AdamW)",
        "shape": {"n_chans": N_CHANS, "n_times": N_TIMES, "embed_dim": EMBED},
        "variants": VARIANTS,
        "machine": {
            "platform": platform.platform(),
            "processor": _cpu_name(),
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "load_average_start": os.getloadavg(),
        },
        "equivalence": check_equivalence(),
        "issue_reference": ISSUE_REFERENCE,
        "runs": [],
    }
    for device in devices:
        for batch in args.batch_sizes:
            for round_ in range(args.rounds):  # interleaved: every variant once per round
                for variant in args.variants:
                    run = _run_subprocess(variant, batch, device, args)
                    run["round"] = round_
                    report["runs"].append(run)
    report["machine"]["load_average_end"] = os.getloadavg()
    report["summary"] = _summarise(report["runs"])
    print(json.dumps(report, indent=2))
    if args.out is not None:
        from neurodecode.utils import atomic_write_json

        atomic_write_json(args.out, report)
    return report


if __name__ == "__main__":
    main()
