"""Prepare-from-raw throughput: neurodecode's streamed THINGS-EEG2 pipeline against the community's.

A raw THINGS-EEG2 training session is simulated at its real sampling rate and channel count
(1000 Hz, 63 EEG channels + stimulus channel, images at 5 Hz in sequences of 20, target trials
coded 99999) and saved as the official release does (``np.save`` of a dict). Both pipelines then
prepare it, each in a fresh process:

``baseline``
    The straightforward computation of the THINGS-EEG2/NICE scripts: ``np.load(allow_pickle=True)``
    (acceptable here: the file is our own), ``mne.io.RawArray``, ``mne.find_events``, pick the 63
    channels, ``mne.Epochs(-0.2, 1.0, baseline=(None, 0), preload=True)`` of the whole session,
    ``Epochs.resample(250)``, a per-condition loop choosing repetitions with
    ``sklearn.utils.shuffle``, the crop to 0-0.996 s, and MVNN with a per-condition loop over
    ``sklearn.discriminant_analysis._cov(..., shrinkage="auto")`` and
    ``scipy.linalg.fractional_matrix_power``. MVNN is fitted on the training data.
``neurodecode``
    :func:`neurodecode.readers.things_eeg2.preprocess_raw_session` on the file read by the
    restricted unpickler with a memory map: the epoching operator applied block by block, batched
    MVNN (float32 output, as stored).

Reported per pipeline: seconds and trials per second for epoching (load included) and for MVNN;
the peak resident memory above the process's memory after imports (``ru_maxrss``; for
neurodecode it includes the pages of the memory-mapped raw file, which the kernel can drop) and
the peak of memory allocated by Python and numpy (``tracemalloc``), both also per trial. The
output alone is 0.063 MB per trial (63 x 250 float32). The outputs are compared (they must agree to float32 precision) and the speed-up printed.
The result is JSON (stdout, and ``--json PATH``).

For reference, the community's NICE preprocessing measured on this kind of machine (2 cores):
epoching 230-290 trials/s with 0.8-0.9 MB per trial, MVNN 630-750 trials/s.

Usage::

    python benchmarks/prepare_throughput.py                      # 2000 conditions x 2 = 4000 trials
    python benchmarks/prepare_throughput.py --n-conditions 8270  # a full training session (16540)
    python benchmarks/prepare_throughput.py --skip-baseline --n-conditions 8270
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import resource
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

NICE_REFERENCE = {"epoching_trials_per_s": [230, 290], "epoching_mb_per_trial": [0.8, 0.9],
                  "mvnn_trials_per_s": [630, 750], "source": "issue 3 (NICE preprocessing, 2 cores)"}


def simulate_session(path: Path, n_conditions: int, n_reps: int, seed: int) -> dict:
    """Write a raw THINGS-EEG2-like training session; return its description."""
    from neurodecode.readers.things_eeg2 import CHANNELS_63

    rng = np.random.default_rng(seed)
    codes = np.repeat(np.arange(1, n_conditions + 1), n_reps)
    rng.shuffle(codes)
    # sequences of 20 images at 5 Hz; about one target per two sequences; 1 s between sequences
    seq = []
    for start in range(0, len(codes), 20):
        block = list(codes[start:start + 20])
        if rng.random() < 0.5:
            block.insert(int(rng.integers(0, len(block) + 1)), 99999)
        seq.append(block)
    onsets, values, t = [], [], 1000
    for block in seq:
        for c in block:
            onsets.append(t)
            values.append(c)
            t += 200
        t += 1000
    n = t + 2000
    order = list(CHANNELS_63[1::2]) + list(CHANNELS_63[::2])  # recording order differs from CHANNELS_63
    data = np.empty((64, n))
    for i in range(63):  # slow drifts + broadband noise + electrode offset, in volts
        drift = np.cumsum(rng.standard_normal(n)) * 2e-8
        data[i] = drift + rng.standard_normal(n) * 5e-6 + rng.uniform(-5e-3, 5e-3)
    onsets = np.asarray(onsets)
    values = np.asarray(values)
    evoked = np.hanning(200) * 3e-6
    for on, c in zip(onsets, values, strict=True):
        if c != 99999:
            data[:63, on + 80:on + 280] += np.sin(c * 0.37 + np.arange(63))[:, None] * evoked
    data[63] = 0.0
    data[63, onsets] = values
    raw = {"raw_eeg_data": data, "ch_names": order + ["stim"], "ch_types": ["eeg"] * 63 + ["stim"],
           "sfreq": 1000, "highpass": 0.01, "lowpass": 100}
    np.save(path, raw, allow_pickle=True)
    return {"n_samples": int(n), "duration_s": n / 1000, "n_image_trials": int(len(codes)),
            "n_targets": int((values == 99999).sum()), "file_mb": path.stat().st_size / 1e6}


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3  # KiB on Linux


def run_baseline(path: str, out: str, seed: int, queue: mp.Queue) -> None:
    """The community's whole-session computation (see the module docstring)."""
    import mne
    import scipy.linalg
    from sklearn.discriminant_analysis import _cov
    from sklearn.utils import shuffle

    from neurodecode.readers.things_eeg2 import CHANNELS_63

    mne.set_log_level("ERROR")
    start_rss = _rss_mb()
    tracemalloc.start()
    t0 = time.perf_counter()
    d = np.load(path, allow_pickle=True).item()
    info = mne.create_info(d["ch_names"], d["sfreq"], d["ch_types"])
    raw = mne.io.RawArray(d["raw_eeg_data"], info)
    del d
    events = mne.find_events(raw, stim_channel="stim")
    raw.pick(list(CHANNELS_63))
    raw.reorder_channels(list(CHANNELS_63))
    events = events[events[:, 2] != 99999]
    epochs = mne.Epochs(raw, events, tmin=-0.2, tmax=1.0, baseline=(None, 0), preload=True)
    del raw
    epochs.resample(250)
    data = epochs.get_data()
    ev = epochs.events[:, 2]
    del epochs
    conds = np.unique(ev)
    sorted_data = np.zeros((len(conds), 2, data.shape[1], data.shape[2]))
    for i, c in enumerate(conds):
        idx = shuffle(np.where(ev == c)[0], random_state=seed, n_samples=2)
        sorted_data[i] = data[idx]
    del data
    x = sorted_data[:, :, :, 50:]
    t1 = time.perf_counter()
    sigma_cond = np.empty((len(x), x.shape[2], x.shape[2]))
    for i in range(len(x)):
        sigma_cond[i] = np.mean([_cov(x[i, e].T, shrinkage="auto") for e in range(x.shape[1])], axis=0)
    sigma_inv = scipy.linalg.fractional_matrix_power(sigma_cond.mean(axis=0), -0.5)
    white = np.reshape((np.reshape(x, (-1, x.shape[2], x.shape[3])).swapaxes(1, 2) @ sigma_inv).swapaxes(1, 2),
                       x.shape)
    t2 = time.perf_counter()
    peak = _peak_mb()
    heap = tracemalloc.get_traced_memory()[1] / 1e6
    tracemalloc.stop()
    np.save(out, white.real.astype(np.float64))
    queue.put({"epoching_s": t1 - t0, "mvnn_s": t2 - t1, "n_trials": int(x.shape[0] * x.shape[1]),
               "start_rss_mb": start_rss, "peak_rss_mb": peak, "peak_heap_mb": heap})


def run_fast(path: str, out: str, seed: int, block_size: int, queue: mp.Queue) -> None:
    """neurodecode's streamed pipeline on a memory-mapped file."""
    import mne  # noqa: F401  (imported before the clock starts, as in the baseline)
    import scipy.linalg  # noqa: F401
    import sklearn  # noqa: F401

    from neurodecode.io.safeio import load_pickled_dict
    from neurodecode.readers.things_eeg2 import RawOptions, preprocess_raw_session

    start_rss = _rss_mb()
    tracemalloc.start()
    t0 = time.perf_counter()
    d = load_pickled_dict(path, mmap=True)
    t_load = time.perf_counter() - t0
    session = preprocess_raw_session(d, None, options=RawOptions(seed=seed, block_size=block_size),
                                     verbose=False)
    peak = _peak_mb()
    heap = tracemalloc.get_traced_memory()[1] / 1e6
    tracemalloc.stop()
    np.save(out, session.train)
    queue.put({"epoching_s": t_load + session.info["epoching_s"], "mvnn_s": session.info["mvnn_s"],
               "n_trials": int(session.train.shape[0] * session.train.shape[1]),
               "start_rss_mb": start_rss, "peak_rss_mb": peak, "peak_heap_mb": heap, "load_s": t_load})


def _in_process(target, *args) -> dict:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=target, args=(*args, queue))
    proc.start()
    result = queue.get()
    proc.join()
    if proc.exitcode != 0:
        raise RuntimeError(f"{target.__name__} failed with exit code {proc.exitcode}")
    return result


def _summary(r: dict) -> dict:
    n = r["n_trials"]
    extra = r["peak_rss_mb"] - r["start_rss_mb"]
    return {"n_trials": n, "epoching_s": round(r["epoching_s"], 3), "mvnn_s": round(r["mvnn_s"], 3),
            "total_s": round(r["epoching_s"] + r["mvnn_s"], 3),
            "epoching_trials_per_s": round(n / r["epoching_s"], 1), "mvnn_trials_per_s": round(n / r["mvnn_s"], 1),
            "total_trials_per_s": round(n / (r["epoching_s"] + r["mvnn_s"]), 1),
            "peak_rss_above_start_mb": round(extra, 1), "rss_mb_per_trial": round(extra / n, 4),
            "peak_heap_mb": round(r["peak_heap_mb"], 1), "heap_mb_per_trial": round(r["peak_heap_mb"] / n, 4),
            "output_mb_per_trial": round(63 * 250 * 4 / 1e6, 4),
            **({"load_s": round(r["load_s"], 3)} if "load_s" in r else {})}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n-conditions", type=int, default=2000,
                        help="image conditions in the session (a real training session has 8270); default 2000")
    parser.add_argument("--seed", type=int, default=20200220)
    parser.add_argument("--block-size", type=int, default=64, help="epochs per block in neurodecode's path")
    parser.add_argument("--skip-baseline", action="store_true", help="time neurodecode's path only")
    parser.add_argument("--workdir", type=Path, default=None, help="where the simulated file goes (default: temp)")
    parser.add_argument("--json", type=Path, default=None, help="also write the result here")
    args = parser.parse_args(argv)

    import mne
    import sklearn

    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        tmp = Path(tmp)
        raw_path = tmp / "raw_eeg_training.npy"
        t = time.perf_counter()
        session = simulate_session(raw_path, args.n_conditions, 2, args.seed)
        session["simulate_s"] = round(time.perf_counter() - t, 1)
        print(f"simulated session: {session}", file=sys.stderr)
        result: dict = {"benchmark": "prepare_throughput", "session": session,
                        "config": {"n_conditions": args.n_conditions, "n_reps": 2, "sfreq_in": 1000,
                                   "sfreq_out": 250, "tmin": -0.2, "tmax": 1.0, "crop": [0.0, None],
                                   "mvnn": "epochs, Ledoit-Wolf, fitted on training data",
                                   "block_size": args.block_size, "seed": args.seed},
                        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                                    "numpy": np.__version__, "mne": mne.__version__, "sklearn": sklearn.__version__,
                                    "platform": platform.platform()},
                        "nice_reference": NICE_REFERENCE}
        fast = _in_process(run_fast, str(raw_path), str(tmp / "fast.npy"), args.seed, args.block_size)
        result["neurodecode"] = _summary(fast)
        print(f"neurodecode: {result['neurodecode']}", file=sys.stderr)
        if not args.skip_baseline:
            base = _in_process(run_baseline, str(raw_path), str(tmp / "base.npy"), args.seed)
            result["baseline"] = _summary(base)
            print(f"baseline: {result['baseline']}", file=sys.stderr)
            a = np.load(tmp / "fast.npy", mmap_mode="r")
            b = np.load(tmp / "base.npy", mmap_mode="r")
            assert a.shape == b.shape, (a.shape, b.shape)
            scale = float(np.abs(b).max())
            max_diff = max(float(np.abs(a[i:i + 256] - b[i:i + 256]).max()) for i in range(0, len(a), 256))
            rel = max_diff / scale
            result["outputs_match"] = {"max_abs_diff": max_diff, "max_abs_value": scale, "relative": rel,
                                       "tolerance": 1e-4, "shape": list(a.shape)}
            del a, b
            assert rel < 1e-4, f"outputs differ: max relative difference {rel:.2e}"
            nb, nf = result["baseline"], result["neurodecode"]
            result["speedup"] = {k: round(nf[f"{k}_trials_per_s"] / nb[f"{k}_trials_per_s"], 2)
                                 for k in ("epoching", "mvnn", "total")}
            result["memory_ratio_baseline_over_neurodecode"] = {
                "rss": round(nb["peak_rss_above_start_mb"] / max(nf["peak_rss_above_start_mb"], 1e-6), 2),
                "heap": round(nb["peak_heap_mb"] / max(nf["peak_heap_mb"], 1e-6), 2)}
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
    return result


if __name__ == "__main__":
    main()
