"""Training throughput on the device present: the device-resident store against the DataLoader path.

What it measures
----------------
ATM (``configs/things_eeg2/atm.yaml``: batch 1024, AdamW 3e-4, CLIP loss with 0.01 of the text
target, gradient clipping 1.0) trained through Lightning on a synthetic subject of THINGS-EEG2's
shape: 66,160 training trials (16,540 images x 4 repetitions) of 63 channels x 250 samples
(4.2 GB as float32), 1024-d image and text targets. The data are random: the speed does not depend
on them. Variants, in one run:

``dataloader_fp32`` (**baseline**)
    the usual path: :func:`neurodecode.training.sets.make_loader` over the in-memory set, ``--workers``
    DataLoader workers, pinned memory, float32 (``32-true``);
``dataloader_bf16``
    the same with ``bf16-mixed`` autocast (separates what bf16 gives from what the store gives);
``device_bf16``
    :class:`neurodecode.training.device_store.DeviceBatches` (``BrainImageDataModule(device_store=True)``):
    the whole set on the device, batches sliced there, no workers and no host copies; ``bf16-mixed``;
``device_bf16_compile``
    the same with ``torch.compile`` of the encoder (``AlignmentModule(compile=True)``; its
    compilation happens in the warm-up steps and is reported apart).
``device_fp32``
    the store in float32 (the quick run's comparison, and CPUs without fast bf16).

Each variant trains ``--warmup`` steps, then ``--steps`` timed steps (the device synchronised at
both ends): samples/s is the timed samples over the timed seconds (summed over GPUs under DDP). The
time of a 40-epoch subject (``--epochs``, default 40 on a GPU) is measured for the fastest device
store variant by a real run of that many epochs (no validation); for the others, and on a CPU
(where it would take hours; ``--epochs 0``), it is estimated as epochs x trials / samples/s.

Usage::

    python benchmarks/gpu_train.py --out gpu_train.json          # CUDA when present, else CPU
    python benchmarks/gpu_train.py --quick                       # smoke run: tiny data, a few steps
    python benchmarks/gpu_train.py --variants device_bf16_compile --epochs 40

Many GPUs (data parallel, one process per GPU)::

    python benchmarks/gpu_train.py --devices 8 --variants dataloader_fp32,device_bf16
    torchrun --nproc_per_node 8 benchmarks/gpu_train.py --devices 8      # or under torchrun
    srun --ntasks-per-node 8 python benchmarks/gpu_train.py --devices 8 --nodes 2   # SLURM, 2 nodes

``--devices N`` makes Lightning run DDP: it starts one process per GPU (re-running this script, or
joining torchrun's / SLURM's processes). Every process makes the same synthetic subject and keeps all
of it on its GPU (4.2 GB each; host memory: 4.2 GB per process), and trains on its share of every
epoch (the store shards the epoch's order by rank). The batch is per GPU (``--batch``), as with
``neurodecode fit``. Only rank 0 writes the JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

THINGS_EEG2 = {"n_train": 66160, "n_images": 16540, "n_chans": 63, "n_times": 250, "sfreq": 250.0, "dim": 1024}
QUICK = {"n_train": 256, "n_images": 64, "n_chans": 63, "n_times": 250, "sfreq": 250.0, "dim": 1024}
VARIANTS: dict[str, dict[str, Any]] = {
    "dataloader_fp32": {"store": False, "precision": "32-true", "compile": False},
    "dataloader_bf16": {"store": False, "precision": "bf16-mixed", "compile": False},
    "device_bf16": {"store": True, "precision": "bf16-mixed", "compile": False},
    "device_bf16_compile": {"store": True, "precision": "bf16-mixed", "compile": True},
    "device_fp32": {"store": True, "precision": "32-true", "compile": False},
}
BASELINE = "dataloader_fp32"


class ArraySet(Dataset):
    """An in-memory set with the items and attributes of :class:`neurodecode.training.sets.TrialSet`."""

    def __init__(self, data: np.ndarray, targets: np.ndarray, texts: np.ndarray, stim_rows: np.ndarray) -> None:
        self.data, self.targets, self.texts, self.stim_rows = data, targets, texts, stim_rows
        self.subjects = np.zeros(len(data), np.int64)

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int) -> dict[str, Any]:
        row = int(self.stim_rows[i])
        return {"x": torch.from_numpy(self.data[i]), "target": torch.from_numpy(self.targets[row]),
                "subject": int(self.subjects[i]), "stim": row, "index": i, "text": torch.from_numpy(self.texts[row])}


def make_data(shape: dict[str, Any], seed: int = 0) -> ArraySet:
    """A synthetic subject: trials, image and text targets by image, and the image of each trial."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((shape["n_train"], shape["n_chans"], shape["n_times"]), dtype=np.float32)
    img = rng.standard_normal((shape["n_images"], shape["dim"]), dtype=np.float32)
    txt = rng.standard_normal((shape["n_images"], shape["dim"]), dtype=np.float32)
    rows = np.arange(shape["n_train"], dtype=np.int64) % shape["n_images"]
    return ArraySet(x, img, txt, rows)


def _sync(device) -> None:
    if getattr(device, "type", str(device)).startswith("cuda"):
        torch.cuda.synchronize(device)


def run_variant(name: str, ds, args, *, epochs: int = 0) -> dict[str, Any]:
    """Train one variant: timed steps (``epochs=0``) or a full run of ``epochs`` epochs."""
    import lightning as L

    from neurodecode.encoders import ATM
    from neurodecode.losses import AlignmentLoss
    from neurodecode.training.device_store import device_loader
    from neurodecode.training.lit import AlignmentModule
    from neurodecode.training.sets import make_loader

    spec = VARIANTS[name]
    shape = args.shape

    class Data(L.LightningDataModule):
        def train_dataloader(self):
            if spec["store"]:
                return device_loader(ds, shuffle=True, batch_size=args.batch, seed=0, trainer=self.trainer)
            return make_loader(ds, shuffle=True, batch_size=args.batch, seed=0, num_workers=args.workers)

    class Timer(L.Callback):
        def __init__(self) -> None:
            self.i = 0
            self.marks: dict[str, float] = {}

        def _mark(self, trainer, key: str) -> None:
            _sync(trainer.strategy.root_device)
            self.marks[key] = time.perf_counter()

        def on_train_start(self, trainer, pl_module) -> None:
            self._mark(trainer, "start")

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            if not epochs and self.i == args.warmup:
                self._mark(trainer, "timed_start")

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            self.i += 1
            if not epochs and self.i == args.warmup + args.steps:
                self._mark(trainer, "timed_end")

        def on_train_end(self, trainer, pl_module) -> None:
            self._mark(trainer, "end")

    L.seed_everything(0, verbose=False)
    enc = ATM(shape["n_chans"], shape["n_times"], shape["dim"], sfreq=shape["sfreq"], n_heads=4, dropout=0.25)
    module = AlignmentModule(enc, AlignmentLoss("clip", text_weight=0.01, init_temperature=0.07), lr=3e-4,
                             weight_decay=0.01, scheduler="constant", n_chans=shape["n_chans"], compile=spec["compile"])
    module.set_input_stats(np.zeros(shape["n_chans"]), np.ones(shape["n_chans"]))  # normalize: none, as atm.yaml
    timer = Timer()
    trainer = L.Trainer(
        accelerator=args.accelerator, devices=args.devices, num_nodes=args.nodes, precision=spec["precision"],
        max_epochs=epochs if epochs else -1, max_steps=-1 if epochs else args.warmup + args.steps,
        gradient_clip_val=1.0, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, num_sanity_val_steps=0, callbacks=[timer])
    what = f"{epochs} epochs" if epochs else f"{args.warmup} + {args.steps} steps"
    print(f"[gpu_train] {name}: {what}", file=sys.stderr, flush=True)
    trainer.fit(module, datamodule=Data())
    world = trainer.world_size
    out: dict[str, Any] = {"variant": name, **spec, "batch_per_device": args.batch, "world_size": world,
                           "device": str(trainer.strategy.root_device), "rank": trainer.global_rank}
    m = timer.marks
    if epochs:
        out.update(epochs=epochs, seconds=m["end"] - m["start"],
                   samples_per_s=epochs * (len(ds) // world // args.batch) * args.batch * world / (m["end"] - m["start"]))
    else:
        timed = m["timed_end"] - m["timed_start"]
        out.update(timed_steps=args.steps, warmup_steps=args.warmup, timed_seconds=timed,
                   warmup_seconds=m["timed_start"] - m["start"], samples_per_s=args.steps * args.batch * world / timed)
    if torch.cuda.is_available() and out["device"].startswith("cuda"):
        out["peak_cuda_gb"] = torch.cuda.max_memory_allocated() / 2**30
        torch.cuda.reset_peak_memory_stats()
    del trainer, module
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return out


def _rows(report: dict[str, Any], command: str) -> list[dict[str, Any]]:
    runs = {r["variant"]: r for r in report["runs"] if "error" not in r}
    base = runs.get(BASELINE)
    dev = report["device"]
    rows = []
    for name, r in runs.items():
        if name == BASELINE:
            continue
        row = {"measure": f"ATM training, {name}, batch {r['batch_per_device']} x {r['world_size']} on {dev}",
               "value": round(r["samples_per_s"], 1), "unit": "samples/s", "command": command,
               "note": f"{r['timed_steps']} timed steps after {r['warmup_steps']} warm-up steps"}
        if base:
            row.update(baseline=f"{BASELINE} (DataLoader, {report['settings']['workers']} workers, float32)",
                       baseline_value=round(base["samples_per_s"], 1), speedup=r["samples_per_s"] / base["samples_per_s"])
        rows.append(row)
    full = report.get("full_run")
    n = report["shape"]["n_train"]
    if full or base:
        e = full["epochs"] if full else report["epochs_for_estimate"]
        best = max((r for k, r in runs.items() if k != BASELINE), key=lambda r: r["samples_per_s"], default=None)
        value = full["seconds"] if full else (e * n / best["samples_per_s"] if best else None)
        row = {"measure": f"{e} epochs of a {n:,}-trial subject, "
                          f"{full['variant'] if full else (best or {}).get('variant')}"
                          + (" (measured)" if full else " (estimated from samples/s)"),
               "value": round(value, 1) if value else None, "unit": "s", "command": command}
        if base:
            bt = e * n / base["samples_per_s"]
            row.update(baseline=f"{BASELINE}, estimated from its samples/s", baseline_value=round(bt, 1),
                       speedup=bt / value if value else None)
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=None, help="JSON output path (default: print only)")
    p.add_argument("--variants", default=None, help=f"comma-separated, from {list(VARIANTS)} (default: all; on a "
                   "CPU without the compile variant)")
    p.add_argument("--batch", type=int, default=None, help="batch per device (default 1024; --quick 32)")
    p.add_argument("--steps", type=int, default=None, help="timed steps (default 50; CPU 5; --quick 2)")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps first (default 10; CPU 2; --quick 1)")
    p.add_argument("--epochs", type=int, default=None, help="epochs of the measured full run (default 40 on a "
                   "GPU, 0 = estimate only on a CPU)")
    p.add_argument("--workers", type=int, default=None, help="DataLoader workers of the baseline (default: "
                   "min(8, cores - 1); --quick 0)")
    p.add_argument("--n-train", type=int, default=None, help="training trials (default 66160, a THINGS-EEG2 subject)")
    p.add_argument("--accelerator", default="auto", help="Lightning accelerator (default auto: cuda when present)")
    p.add_argument("--devices", type=int, default=1, help="GPUs (data parallel; see the docstring)")
    p.add_argument("--nodes", type=int, default=1, help="nodes (with --devices per node)")
    p.add_argument("--quick", action="store_true", help="smoke run: 256 trials, batch 32, 1 + 2 steps, float32")
    args = p.parse_args(argv)
    cuda = torch.cuda.is_available() and args.accelerator in ("auto", "gpu", "cuda")
    args.shape = dict(QUICK if args.quick else THINGS_EEG2)
    if args.n_train:
        args.shape.update(n_train=args.n_train, n_images=max(1, min(args.shape["n_images"], args.n_train)))
    args.batch = args.batch or (32 if args.quick else 1024)
    args.steps = args.steps or (2 if args.quick else 50 if cuda else 5)
    args.warmup = args.warmup if args.warmup is not None else (1 if args.quick else 10 if cuda else 2)
    args.workers = args.workers if args.workers is not None else (0 if args.quick else min(8, max(0, (os.cpu_count() or 1) - 1)))
    epochs = args.epochs if args.epochs is not None else (0 if args.quick or not cuda else 40)
    if args.variants:
        names = [v for v in args.variants.split(",") if v]
    elif args.quick:
        names = ["dataloader_fp32", "device_fp32"]
    else:
        names = [v for v in VARIANTS if v != "device_fp32" and (cuda or not VARIANTS[v]["compile"])]
    bad = sorted(set(names) - set(VARIANTS))
    if bad:
        p.error(f"unknown variant(s) {bad}; choose from {list(VARIANTS)}")
    t0 = time.perf_counter()
    ds = make_data(args.shape)
    report: dict[str, Any] = {
        "benchmark": "gpu_train", "model": "ATM (configs/things_eeg2/atm.yaml), CLIP + 0.01 text loss",
        "device": torch.cuda.get_device_name(0) if cuda else f"cpu ({os.cpu_count()} cores)",
        "shape": args.shape, "data_gb": ds.data.nbytes / 2**30, "make_data_seconds": time.perf_counter() - t0,
        "settings": {"batch": args.batch, "steps": args.steps, "warmup": args.warmup, "workers": args.workers,
                     "devices": args.devices, "nodes": args.nodes, "quick": args.quick},
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(), "torch": torch.__version__,
                    "cuda": torch.version.cuda, "torch_threads": torch.get_num_threads(),
                    "load_average_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None},
        "runs": [], "epochs_for_estimate": 40,
    }
    for name in names:
        try:
            r = run_variant(name, ds, args)
        except Exception as e:  # noqa: BLE001 - e.g. torch.compile failing on this device: record, go on
            r = {"variant": name, **VARIANTS[name], "error": f"{type(e).__name__}: {e}"[:2000]}
            print(f"[gpu_train] {name} failed: {r['error']}", file=sys.stderr, flush=True)
        else:
            print(f"[gpu_train] {name}: {r['samples_per_s']:.1f} samples/s", file=sys.stderr, flush=True)
        report["runs"].append(r)
    store = [r for r in report["runs"] if r["store"] and "error" not in r]
    if epochs and store:
        best = max(store, key=lambda r: r["samples_per_s"])["variant"]
        report["full_run"] = run_variant(best, ds, args, epochs=epochs)
        print(f"[gpu_train] {best}: {epochs} epochs in {report['full_run']['seconds']:.1f} s", file=sys.stderr)
    report["machine"]["load_average_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    command = " ".join(["python", "benchmarks/gpu_train.py", *(sys.argv[1:] if argv is None else argv)])
    report["rows"] = _rows(report, command)
    ranks = [r["rank"] for r in report["runs"] if "rank" in r]
    if int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", 0))) != 0 or any(ranks):
        return 0  # only rank 0 reports
    text = json.dumps(report, indent=2)
    if args.out is not None:
        from neurodecode.utils import atomic_write_text

        args.out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(args.out, text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
