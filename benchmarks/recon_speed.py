"""Reconstruction speed on this machine: demo-generator images per second (and the prior's samples per second).

What it measures
----------------
1. **Demo generator sampling** (``neurodecode.reconstruction.demo_generator``), the default model of
   ``configs/sim/generator.yaml`` (random weights: the speed does not depend on them), conditioned on
   30-d embeddings (``sim:features``), a batch of ``--batch`` images per call:

   - ``default``: DDIM, 25 steps, classifier-free guidance 2 (two model passes per step), float32:
     what ``neurodecode reconstruct`` runs on a CPU;
   - ``no_guidance``: the same at guidance 1 (one pass per step);
   - ``dpm_20``: DPM-Solver++, 20 steps, guidance 2;
   - ``ddpm_1000`` (**baseline**): the full 1,000-step DDPM chain the model is trained with, guidance 2
     (what sampling costs without a few-step sampler); ``--baseline-repeats`` (default 1) of it.

   Each configuration runs ``--repeats`` times after one warm-up call; the JSON has every time and the
   median, and images/s = batch / median.
2. **Demo generator training step** (forward, v-prediction loss, backward, AdamW), ``32-true`` vs
   ``bf16-mixed`` (CPU autocast), at ``--train-batch`` images: training images/s, the number behind
   "trains in minutes".
3. **Prior sampling** (``neurodecode.reconstruction.prior``): samples/s of ``Prior.sample`` on 200 random
   brain embeddings (a THINGS-EEG2 test set) at 50 steps, guidance 5 (ATM's setting), for ATM's diffusion
   prior at 1024 -> 1024 dimensions built from its default config (random weights), or for the prior given
   by ``--prior PATH`` (an exported folder or checkpoint).

The threads (``torch.get_num_threads()``, ``--threads``) and the load average are recorded: on a shared
machine, timings vary from run to run, and more threads than free cores slow OpenMP down badly.

Usage::

    python benchmarks/recon_speed.py --out recon_speed.json
    python benchmarks/recon_speed.py --quick                         # a smoke run (few repeats, no baseline)
    python benchmarks/recon_speed.py --prior exported_prior --out recon_speed.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

EMBED_DIM = 30  # sim:features
SAMPLING = {
    "default": {"sampler": "ddim", "steps": 25, "guidance": 2.0},
    "no_guidance": {"sampler": "ddim", "steps": 25, "guidance": 1.0},
    "dpm_20": {"sampler": "dpm", "steps": 20, "guidance": 2.0},
    "ddpm_1000": {"sampler": "ddpm", "steps": 1000, "guidance": 2.0},
}


def _default_model(embed_dim: int = EMBED_DIM):
    """The denoiser of the packaged generator config (its model arguments), random weights."""
    import torch
    import yaml

    from neurodecode.reconstruction.demo_generator import DemoDenoiser

    cfg_file = Path(__file__).resolve().parents[1] / "neurodecode" / "configs" / "sim" / "generator.yaml"
    cfg = yaml.safe_load(cfg_file.read_text())
    margs = cfg["model"]["init_args"]
    keys = ("block_out_channels", "layers_per_block", "attention_levels", "time_embed_dim", "cond_hidden",
            "norm_num_groups", "attention_head_dim", "dropout")
    size = int(cfg["data"]["init_args"].get("image_size", 32))
    torch.manual_seed(0)
    return DemoDenoiser(embed_dim, size, **{k: margs[k] for k in keys if k in margs}), margs


def time_sampling(batch: int, repeats: int, name: str) -> dict:
    """Seconds per call of :func:`sample_images` for one configuration of :data:`SAMPLING`."""
    import torch

    from neurodecode.reconstruction.demo_generator import default_scheduler_config, sample_images

    model, margs = _default_model()
    model.eval()
    sched = default_scheduler_config(prediction_type=margs.get("prediction_type", "v_prediction"))
    emb = torch.randn(batch, EMBED_DIM, generator=torch.Generator().manual_seed(0))
    spec = SAMPLING[name]

    def call() -> float:
        gens = [torch.Generator().manual_seed(i) for i in range(batch)]
        t0 = time.perf_counter()
        sample_images(model, sched, emb, gens, **spec)
        return time.perf_counter() - t0

    warm = call() if spec["steps"] <= 100 else None  # the 1,000-step chain is its own warm-up
    times = [call() for _ in range(repeats)]
    med = statistics.median(times)
    return {**spec, "batch": batch, "warmup_s": warm, "times_s": [round(t, 4) for t in times],
            "median_s": round(med, 4), "images_per_s": round(batch / med, 3),
            "model_passes_per_image": spec["steps"] * (2 if spec["guidance"] != 1 else 1)}


def time_training(batch: int, repeats: int, precision: str) -> dict:
    """Seconds per training step (forward, loss, backward, AdamW) at ``precision``."""
    import contextlib

    import torch

    from neurodecode.reconstruction.demo_generator import default_scheduler_config, make_scheduler

    model, _ = _default_model()
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    sched = make_scheduler(default_scheduler_config(), "ddpm")
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(batch, 3, model.image_size, model.image_size, generator=g) * 2 - 1
    emb = torch.randn(batch, EMBED_DIM, generator=g)

    def step() -> float:
        t0 = time.perf_counter()
        noise = torch.randn(x0.shape, generator=g)
        t = torch.randint(0, 1000, (batch,), generator=g)
        ctx = torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bf16-mixed" else contextlib.nullcontext()
        with ctx:
            out = model(sched.add_noise(x0, noise, t), t, emb)
        loss = (out.float() - sched.get_velocity(x0, noise, t)).pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return time.perf_counter() - t0

    step()
    times = [step() for _ in range(repeats)]
    med = statistics.median(times)
    return {"precision": precision, "batch": batch, "times_s": [round(t, 4) for t in times],
            "median_s": round(med, 4), "images_per_s": round(batch / med, 2)}


def time_prior(path: str | None, n: int, repeats: int, dims: tuple[int, int] = (1024, 1024)) -> dict:
    """Samples/s of the prior's ``sample`` (50 steps, guidance 5, ATM's setting).

    ``path``: an exported prior or checkpoint; ``None``: ATM's diffusion prior built from its default config
    with random weights (``brain_dim``, ``target_dim`` = ``dims``; the speed does not depend on the weights).
    """
    try:
        import torch

        from neurodecode.reconstruction.prior import Prior, load_prior
    except ImportError as err:
        return {"measured": False, "why": f"neurodecode.reconstruction.prior is not importable: {err}"}
    if path:
        prior, source = load_prior(path, device="cpu"), str(path)
    else:
        torch.manual_seed(0)
        prior, source = Prior("diffusion", brain_dim=dims[0], target_dim=dims[1]).eval(), "default config, random weights"
    brain = torch.randn(n, int(prior.brain_dim), generator=torch.Generator().manual_seed(0))
    prior.sample(brain, seed=0, steps=50, guidance=5.0, progress=False)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        prior.sample(brain, seed=0, steps=50, guidance=5.0, progress=False)
        times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    return {"measured": True, "source": source, "kind": prior.kind, "brain_dim": prior.brain_dim,
            "target_dim": prior.target_dim, "n": n, "steps": 50, "guidance": 5.0,
            "times_s": [round(t, 4) for t in times], "median_s": round(med, 4), "samples_per_s": round(n / med, 2)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=None, help="JSON output file (default: print only)")
    parser.add_argument("--batch", type=int, default=16, help="images per sampling call (default %(default)s)")
    parser.add_argument("--repeats", type=int, default=5, help="timed repetitions (default %(default)s)")
    parser.add_argument("--baseline-repeats", type=int, default=1, help="repetitions of the 1,000-step baseline")
    parser.add_argument("--train-batch", type=int, default=32, help="training batch (default %(default)s)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--prior", default=None, help="exported prior folder or checkpoint to time (default: ATM's, random)")
    parser.add_argument("--quick", action="store_true", help="2 repeats and no 1,000-step baseline")
    args = parser.parse_args(argv)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    repeats = 2 if args.quick else args.repeats
    report: dict = {
        "benchmark": "recon_speed", "machine": {
            "platform": platform.platform(), "processor": platform.processor(), "cpu_count": os.cpu_count(),
            "torch": torch.__version__, "threads": torch.get_num_threads(),
            "load_average_at_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None},
        "demo_generator": {"embed_dim": EMBED_DIM, "sampling": {}, "training": {}},
    }
    for name in SAMPLING:
        if name == "ddpm_1000" and args.quick:
            continue
        reps = args.baseline_repeats if name == "ddpm_1000" else repeats
        res = time_sampling(args.batch, reps, name)
        report["demo_generator"]["sampling"][name] = res
        print(f"sampling {name:12s} {res['images_per_s']:8.2f} images/s (median of {reps})", flush=True)
    sampling = report["demo_generator"]["sampling"]
    if "ddpm_1000" in sampling:
        report["demo_generator"]["default_speedup_over_ddpm_1000"] = round(
            sampling["default"]["images_per_s"] / sampling["ddpm_1000"]["images_per_s"], 1)
    for precision in ("32-true", "bf16-mixed"):
        res = time_training(args.train_batch, repeats, precision)
        report["demo_generator"]["training"][precision] = res
        print(f"training {precision:12s} {res['images_per_s']:8.1f} images/s (median of {repeats})", flush=True)
    report["prior"] = time_prior(args.prior, 200, repeats)
    if report["prior"].get("measured"):
        print(f"prior sampling        {report['prior']['samples_per_s']:8.1f} samples/s", flush=True)
    report["load_average_at_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    text = json.dumps(report, indent=2)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
