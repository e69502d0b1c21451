"""Latency and throughput of ``neurodecode stream``: ATM at 63 channels x 250 samples on CPU, beside the
offline path on the same windows, in the same run.

What it does
------------
1. Simulates a continuous EEG recording at 250 Hz (the 63 THINGS-EEG2 channels and a stimulus
   channel; ``--images`` test images x ``--reps``, 5 per second in sequences of 20), builds ATM for
   63 x 250 -> 1024 (the CLIP ViT-H size; random weights: the cost does not depend on them) and
   exports it, with a gallery of ``--gallery`` random 1024-d embeddings (the test images among them).
2. Offline path, on the same windows: ``mne.Epochs`` of the recording saved as ``-epo.fif``,
   ``prepare epochs`` (trial store), then the embedding and scoring of ``evaluate``
   (:func:`neurodecode.streaming.offline.offline_decisions`); timed per stage. The exported model
   names this trial store, so the stream reads its preprocessing from the store's provenance.
3. Latency: the recording replayed in process at ``--latency-speed`` times real time (samples
   delivered in 20 ms chunks, as a device would), every marker decoded; per window, the time from the
   arrival of its last sample to its decision. p50, p99 and max per repetition, medians over
   ``--repeats`` repetitions; the process's CPU use (CPU seconds of all threads per wall second) while
   replaying in real time, and CPU milliseconds per window. The online top-k is checked against the
   offline one.
4. Throughput: replays at increasing speeds (``--speeds``) with a receiver buffer of ``--bufsize``
   seconds: a window is *missed* when its samples were lost before it could be decoded (the decoder
   fell further behind than the buffer holds) or when it was not decoded at all. Reported: the
   fastest speed with no window missed (and each speed's p99 latency), and the windows per second
   of an as-fast-as-possible replay.

Torch and NumPy's BLAS run on each of ``--threads`` thread counts in turn for the latency runs
(default ``1,2``: 1 is ``neurodecode stream``'s default, 2 the cores this project budgets); the CPU
use, the speed sweep and the offline path use the first. The machine may be shared: the load average before and after is
recorded with the results, and a loaded machine reads slower (with 2 intra-op threads on 2 busy
cores, a thread waiting for its core stalls every operation: compare the two latency rows).

Usage::

    python benchmarks/stream_latency.py --out stream_latency.json
    python benchmarks/stream_latency.py --images 20 --reps 2 --repeats 1 --speeds 5,20,80   # a smoke run

Prints a summary and the JSON (also written to ``--out`` when given).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SEED = 0


def build(tmp: Path, args: argparse.Namespace) -> dict:
    """Recording, offline trial store, exported ATM and gallery; the offline path timed."""
    import mne
    import torch
    from safetensors.torch import save_file

    from neurodecode.encoders.base import create_encoder
    from neurodecode.io.store import TrialStore
    from neurodecode.readers.epochs import EpochsOptions, prepare_epochs
    from neurodecode.simulate.continuous import recording_name, simulate_continuous

    cfg = dict(modality="eeg", n_subjects=1, n_train_concepts=10, n_exemplars=1, n_test_concepts=args.images,
               n_reps_test=args.reps, sfreq=250.0, seed=SEED)
    simulate_continuous(tmp / "rec", progress_bar=False, **cfg)
    rec = tmp / "rec" / recording_name("01")
    raw = mne.io.read_raw_fif(rec, preload=True, verbose="ERROR")
    timing = {}
    t0 = time.perf_counter()
    events, event_id = mne.events_from_annotations(raw, verbose="ERROR")
    names = {v: k[len("stim/"):] for k, v in event_id.items()}
    ep = mne.Epochs(raw, events, {names[c]: c for c in np.unique(events[:, 2])}, tmin=0.0, tmax=0.996,
                    baseline=None, picks="eeg", preload=True, verbose="ERROR")
    ep.save(tmp / "sub-01-epo.fif", overwrite=True, verbose="ERROR")
    timing["epoch_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    prepare_epochs(tmp / "sub-01-epo.fif", tmp / "prepared", EpochsOptions(), subject="01", progress=False)
    timing["prepare_s"] = time.perf_counter() - t0
    with TrialStore(tmp / "prepared" / "sub-01.h5") as ts:
        x = ts.get_signals()
        channels, n_times = ts.ch_names, ts.n_times
    torch.manual_seed(SEED)
    enc = create_encoder("atm", n_chans=len(channels), n_times=n_times, n_outputs=1024, sfreq=250.0).eval()
    tensors = {f"encoder.{k}": v.detach().contiguous() for k, v in enc.state_dict().items()}
    tensors["input_mean"] = torch.as_tensor(x.mean((0, 2))).contiguous()
    tensors["input_std"] = torch.as_tensor(x.std((0, 2))).contiguous()
    model_dir = tmp / "model"
    model_dir.mkdir()
    save_file(tensors, str(model_dir / "model.safetensors"))
    data = {"channels": channels, "sfreq": 250.0, "tmin": 0.0, "n_times": n_times, "root": str(tmp / "prepared"),
            "subject": "01", "train_subjects": ["01"], "embed_dim": 1024}
    (model_dir / "config.json").write_text(json.dumps({"format": "neurodecode-encoder", "format_version": 1,
                                                       "encoder": enc.get_config(), "data": data}))
    shown = sorted(set(names.values()))
    rng = np.random.default_rng(SEED)
    ids = shown + [f"distractor_{i:05d}" for i in range(max(0, args.gallery - len(shown)))]
    gallery = (np.asarray(ids), rng.standard_normal((len(ids), 1024)).astype(np.float32))
    return {"raw": raw, "model_dir": model_dir, "store": tmp / "prepared" / "sub-01.h5", "gallery": gallery,
            "n_windows": len(events), "timing": timing, "duration_s": raw.n_times / raw.info["sfreq"]}


def decode(setup: dict, speed: float, *, bufsize: float = 30.0, threads: int = 1) -> dict:
    """One replay through StreamDecoder; latencies, CPU, decisions and misses."""
    from neurodecode.streaming.decoder import DecoderSettings, StreamDecoder
    from neurodecode.streaming.gallery import Gallery
    from neurodecode.streaming.recipe import recipe_from_model
    from neurodecode.streaming.sources import ReplaySource
    from neurodecode.training.export import from_pretrained

    model = from_pretrained(setup["model_dir"])
    gallery = Gallery(*setup["gallery"], source="random")
    decisions, events = [], []
    dec = StreamDecoder(model, recipe_from_model(model.config), gallery, DecoderSettings(k=5, bufsize=bufsize, threads=threads),
                        on_decision=decisions.append, on_event=lambda k, m: events.append((k, m)))
    stats = dec.run(ReplaySource(setup["raw"], speed=speed, bufsize=bufsize))
    lat = np.array([d.latency_ms for d in decisions])
    missed = setup["n_windows"] - len(decisions)
    return {"speed": speed, "decisions": len(decisions), "missed": int(missed),
            "samples_dropped": stats["samples_dropped"],
            "latency_ms": {"p50": float(np.percentile(lat, 50)), "p99": float(np.percentile(lat, 99)),
                           "max": float(lat.max())} if len(lat) else None,
            "wall_s": stats["wall_seconds"], "cpu_s": stats["cpu_seconds"],
            "cpu_percent": 100.0 * stats["cpu_seconds"] / stats["wall_seconds"],
            "faults": stats["faults"], "topk": [d.topk for d in decisions]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=None, help="write the JSON here too")
    parser.add_argument("--images", type=int, default=50, help="test images shown (default 50)")
    parser.add_argument("--reps", type=int, default=2, help="presentations of each (default 2)")
    parser.add_argument("--gallery", type=int, default=200, help="gallery size (default 200, THINGS-EEG2's test set)")
    parser.add_argument("--threads", default="1,2", help="torch thread counts of the latency runs (default 1,2)")
    parser.add_argument("--repeats", type=int, default=3, help="latency repetitions (default 3)")
    parser.add_argument("--latency-speed", type=float, default=2.0,
                        help="replay speed of the latency runs (default 2: windows at 10/s, twice THINGS-EEG2's pace)")
    parser.add_argument("--speeds", default="5,10,20,40,80,160,320", help="throughput speeds, increasing")
    parser.add_argument("--bufsize", type=float, default=1.0,
                        help="receiver buffer of the throughput runs in seconds (default 1: a decision more than "
                             "~1 s late is useless to a BCI)")
    args = parser.parse_args(argv)
    import torch

    threads = [int(t) for t in args.threads.split(",") if t.strip()]
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(threads[0])
    threadpool_limits(limits=threads[0], user_api="blas")  # the offline path too
    load_before = os.getloadavg() if hasattr(os, "getloadavg") else None
    with tempfile.TemporaryDirectory(prefix="stream_latency_") as tmp:
        setup = build(Path(tmp), args)
        from neurodecode.streaming.gallery import Gallery
        from neurodecode.streaming.offline import offline_decisions
        from neurodecode.training.export import from_pretrained

        model = from_pretrained(setup["model_dir"])
        off = offline_decisions(model, setup["store"], Gallery(*setup["gallery"], source="random"), k=5)
        offline = {**setup["timing"], "embed_and_score_s": off["seconds"]}
        offline["total_s"] = sum(offline.values())
        offline["per_window_ms"] = 1e3 * offline["total_s"] / setup["n_windows"]
        offline["embed_and_score_per_window_ms"] = 1e3 * off["seconds"] / setup["n_windows"]
        decode(setup, math.inf, threads=threads[0])  # warm-up (first torch calls)
        by_threads = {t: [decode(setup, args.latency_speed, threads=t) for _ in range(args.repeats)] for t in threads}
        runs = by_threads[threads[0]]
        agree = float(np.mean([a == b for a, b in zip(runs[0]["topk"], off["topk"], strict=False)]))
        fast = decode(setup, math.inf, threads=threads[0])
        sweep = []
        for s in [float(v) for v in args.speeds.split(",") if v.strip()]:
            r = decode(setup, s, bufsize=args.bufsize, threads=threads[0])
            sweep.append({k: r[k] for k in ("speed", "decisions", "missed", "samples_dropped", "latency_ms",
                                             "cpu_percent")})
            if r["missed"]:
                break
        ok = [r["speed"] for r in sweep if r["missed"] == 0]
    def median(rs):
        return {k: float(np.median([r["latency_ms"][k] for r in rs])) for k in ("p50", "p99", "max")}

    med = median(runs)
    result = {
        "benchmark": "stream_latency",
        "what": "ATM 63 channels x 250 samples (250 Hz, 1 s windows) -> 1024-d, top-5 of a "
                f"{args.gallery}-embedding gallery, CPU, torch threads {threads[0]} (latency also with {threads[1:]})",
        "recording": {"windows": setup["n_windows"], "seconds": setup["duration_s"], "sfreq": 250.0},
        "latency_ms_median_of_repeats": med,
        "latency_ms_median_by_threads": {str(t): median(rs) for t, rs in by_threads.items()},
        "latency_runs": {str(t): [{k: r[k] for k in ("speed", "decisions", "latency_ms", "cpu_percent", "wall_s")}
                                  for r in rs] for t, rs in by_threads.items()},
        "aim_p99_under_20ms": med["p99"] < 20.0,
        f"cpu_percent_realtime_x{args.latency_speed:g}": float(np.median([r["cpu_percent"] for r in runs])),
        "cpu_ms_per_window": 1e3 * fast["cpu_s"] / max(fast["decisions"], 1),
        "as_fast_as_possible": {"windows_per_s": fast["decisions"] / fast["wall_s"], "wall_s": fast["wall_s"],
                                "speed_x_realtime": setup["duration_s"] / fast["wall_s"]},
        "fastest_speed_no_window_missed": max(ok) if ok else None,
        "speed_sweep": sweep, "sweep_bufsize_s": args.bufsize,
        "offline_same_windows": offline,
        "online_offline_top5_agreement": agree,
        "machine": {"python": platform.python_version(), "torch": torch.__version__, "cpus": os.cpu_count(),
                    "load_average_before": load_before,
                    "load_average_after": os.getloadavg() if hasattr(os, "getloadavg") else None},
    }
    text = json.dumps(result, indent=2)
    for t, m in result["latency_ms_median_by_threads"].items():
        print(f"  {t} torch thread(s): p50 {m['p50']:.1f} ms, p99 {m['p99']:.1f} ms, max {m['max']:.1f} ms",
              file=sys.stderr)
    print(f"latency per window (median of {args.repeats}, {threads[0]} thread(s)): p50 {med['p50']:.1f} ms, "
          f"p99 {med['p99']:.1f} ms "
          f"(aim < 20 ms: {'met' if result['aim_p99_under_20ms'] else 'not met'}); CPU "
          f"{result[f'cpu_percent_realtime_x{args.latency_speed:g}']:.0f}% at {args.latency_speed:g}x real time, "
          f"{result['cpu_ms_per_window']:.1f} CPU ms per window", file=sys.stderr)
    print(f"fastest replay with no window missed: {result['fastest_speed_no_window_missed']}x "
          f"({args.bufsize:g} s buffer); as fast as possible: {result['as_fast_as_possible']['windows_per_s']:.0f} "
          f"windows/s; offline path on the same {setup['n_windows']} windows: {offline['total_s']:.2f} s "
          f"({offline['per_window_ms']:.1f} ms/window, of which embed+score "
          f"{offline['embed_and_score_per_window_ms']:.1f}); online/offline top-5 agreement {agree:.0%}",
          file=sys.stderr)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
