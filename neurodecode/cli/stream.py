"""``neurodecode stream``: decode a live EEG/MEG stream (or a replayed recording) as it arrives."""

from __future__ import annotations

import argparse
import math
import re
from pathlib import Path
from typing import Any

HELP = "Decode a live EEG/MEG stream (LSL, or a replayed recording) window by window: top-k images, latency, live table."
DESCRIPTION = """\
Decode which image was just seen, while the recording goes on, with a model of 'neurodecode export'.

Sources (--source):
  file:PATH        replay a recording in this process (no socket): any file MNE reads (.fif, .edf,
                   .bdf, .vhdr...) or a CSV (Muse) recording; --speed 10 replays 10x faster,
                   --speed inf as fast as the decoder goes
  player:PATH      replay it through MNE-LSL's PlayerLSL and read it back with StreamLSL (the whole
                   LSL path, over the loopback)
  lsl:NAME         a live LSL stream, or lsl:name=NAME,type=EEG,source_id=ID,markers=MARKER_STREAM
LSL stays on this machine: neurodecode sets LSLAPICFG to a file with ResolveScope = machine and
IPv6 = disable before liblsl loads (set LSLAPICFG yourself to reach an amplifier on another computer).

Modes (--mode):
  event     at every stimulus marker (annotations, a marker stream, or a stimulus channel with
            --events stim[:NAME]), wait until the epoch window is complete, then decode it
  sliding   a window every --step seconds of data (its width is the model's epoch window)

Preprocessing is the training data's, read from the model's config.json and the provenance of the
trial stores it names: channels picked and ordered by name (a missing channel is an error),
per-epoch MNE filter, resampling, baseline and crop (exactly as offline), per-channel scaling, MVNN
whitening (kept beside the store as sub-XX.mvnn.npz by 'prepare' of raw THINGS-EEG2 sessions, or --mvnn
FILE), and the model's input normalisation. A filter of the continuous recording
runs causally online (Butterworth, scipy sosfilt with its state kept) where offline it was
zero-phase: the documented difference (its group delay is in summary.json).

Outputs in --out: decisions.jsonl (one line per window, flushed at once: event_time, topk, scores,
latency_ms, stimulus_id when the marker names it), events.jsonl (faults: gaps, stalls, reconnects,
late samples, flat channels, windows that never completed), summary.json, an LSL outlet
'neurodecode-decisions' (--outlet; on by default for LSL sources) and a live table in the terminal.
--prior DIR --generator SPEC draws each decision in a background thread (thumbnails in
--out/reconstructions; a full queue drops the oldest).

example (works on a fresh machine; the demo trains its model in a minute or two):
  neurodecode demo --quick --out demo_out
  neurodecode simulate --continuous --like demo_out/sim_eeg --out live_rec
  neurodecode stream --model demo_out/exported --source file:live_rec/sub-01_task-rsvp_raw.fif \\
      --speed 10 --out live
  neurodecode stream --model demo_out/exported --source player:live_rec/sub-01_task-rsvp_raw.fif \\
      --out live_lsl --max-decisions 50
"""


def _pair(text: str | None, option: str) -> tuple[float | None, float | None] | None:
    from neurodecode.utils import UserError

    if text is None:
        return None
    parts = [p.strip() for p in text.split(",")]
    try:
        if len(parts) != 2:
            raise ValueError
        return tuple(None if p.lower() == "none" else float(p) for p in parts)  # type: ignore[return-value]
    except ValueError:
        raise UserError(f"{option} {text!r}: give two numbers 'a,b' in seconds (None for an open end), e.g. -0.2,0.") from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    g = parser.add_argument_group("what to decode")
    g.add_argument("--model", type=Path, required=True, help="folder written by 'neurodecode export'")
    g.add_argument("--source", required=True, help="file:PATH, player:PATH or lsl:NAME (see above)")
    g.add_argument("--out", type=Path, required=True, help="output folder (decisions.jsonl, events.jsonl, summary.json)")
    g.add_argument("--gallery", type=Path, default=None,
                   help="candidate embeddings: an embedding cache (.h5) or an .npz with stimulus_id and embeddings "
                        "(default: the model's prepared folder's embeddings.h5)")
    g.add_argument("--gallery-split", default="test", choices=("test", "train", "all"),
                   help="stimuli of the gallery's stimulus table to rank (default test: zero-shot candidates)")
    g.add_argument("--subject", default=None,
                   help="training subject the stream comes from (its label, e.g. 01), or 'none' for a new subject "
                        "(default: 'sub-XX' in the recording's name when it is a training subject, else none)")
    m = parser.add_argument_group("mode")
    m.add_argument("--mode", choices=("event", "sliding"), default="event", help="default: event")
    m.add_argument("--step", type=float, default=0.2, help="sliding mode: seconds between windows (default 0.2)")
    m.add_argument("--width", type=float, default=None, help="sliding mode: window width (default: the model's)")
    m.add_argument("--events", default="auto",
                   help="event-locked mode: 'markers' (annotations / marker stream), 'stim' or 'stim:CHANNEL' (a "
                        "stimulus channel), or 'auto' (markers if the source has them, else a stimulus channel)")
    m.add_argument("--markers", default=None, help="name of the LSL marker stream of an lsl: source")
    m.add_argument("--marker-pattern", default=None,
                   help="decode only markers matching this regular expression (e.g. '^stim/')")
    m.add_argument("--event-map", default=None,
                   help="stimulus-channel codes to stimulus ids: '1=cat,2=dog' or a TSV with columns code, stimulus_id "
                        "(default: event_map.tsv next to a replayed recording)")
    m.add_argument("--k", type=int, default=5, help="candidates per decision (default 5)")
    m.add_argument("--by", choices=("stimulus", "concept"), default="stimulus",
                   help="rank stimuli or concepts (a concept scores its best stimulus); default stimulus")
    p = parser.add_argument_group("preprocessing (default: as the training data)")
    p.add_argument("--store", type=Path, default=None, help="a trial store whose provenance describes the training "
                   "epochs (default: the one the model names)")
    p.add_argument("--l-freq", type=float, default=None, help="causal high-pass edge (Hz), replacing the recorded one")
    p.add_argument("--h-freq", type=float, default=None, help="causal low-pass edge (Hz)")
    p.add_argument("--filter-order", type=int, default=None, help="Butterworth order per edge (default 4)")
    p.add_argument("--no-filter", action="store_true", help="no causal filter of the stream")
    p.add_argument("--baseline", default=None, help="baseline window 'a,b' in s (e.g. None,0), replacing the recorded one")
    p.add_argument("--window", default=None, help="epoch window 'a,b' in s cut around each event before the epoch steps")
    p.add_argument("--scale", type=float, default=None,
                   help="multiply incoming samples by this (unit conversion: 1e-6 for a stream in µV, a model in V)")
    p.add_argument("--mvnn", type=Path, default=None, help="MVNN whitener (.npy, channels x channels, model order)")
    p.add_argument("--no-mvnn", action="store_true", help="decode without whitening although the training data were "
                   "whitened")
    s = parser.add_argument_group("source")
    s.add_argument("--speed", type=float, default=1.0, help="replay speed of file:/player: sources (default 1 = real "
                   "time; inf: as fast as possible, file: only)")
    s.add_argument("--chunk-size", type=int, default=None, help="samples per replayed chunk (default: 20 ms worth)")
    s.add_argument("--bufsize", type=float, default=30.0, help="seconds of samples buffered (default 30)")
    s.add_argument("--csv-unit", default="uV", help="unit of a CSV recording's values (default uV)")
    s.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for an LSL stream (default 10)")
    s.add_argument("--stall-timeout", type=float, default=2.0, help="seconds without samples before saying so")
    s.add_argument("--stop-after-silence", type=float, default=None,
                   help="stop after this many seconds without samples (default: wait for the source to come back)")
    s.add_argument("--duration", type=float, default=None, help="stop after this many seconds of data")
    s.add_argument("--max-decisions", type=int, default=None, help="stop after this many decisions")
    o = parser.add_argument_group("outputs")
    o.add_argument("--outlet", action=argparse.BooleanOptionalAction, default=None,
                   help="push decisions on an LSL outlet 'neurodecode-decisions' (default: on for player:/lsl: sources)")
    o.add_argument("--live", action=argparse.BooleanOptionalAction, default=None,
                   help="live table in the terminal (default: when the output is a terminal)")
    o.add_argument("--quiet", action="store_true", help="without the live table, print no line per decision")
    o.add_argument("--overwrite", action="store_true", help="replace the decisions.jsonl of an earlier run in --out")
    o.add_argument("--fsync", action="store_true", help="force every decision to disk (safe against power loss)")
    r = parser.add_argument_group("live reconstruction")
    r.add_argument("--prior", type=Path, default=None, help="exported prior (or checkpoint): draw each decision")
    r.add_argument("--generator", default=None, help="generator spec for --prior (e.g. demo:PATH)")
    r.add_argument("--recon-queue", type=int, default=4, help="decisions waiting to be drawn at most (default 4)")
    x = parser.add_argument_group("compute")
    x.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    x.add_argument("--threads", type=int, default=1,
                   help="CPU threads of torch and NumPy's BLAS while decoding (default 1: one window at a time gains "
                        "little from more, and on a busy machine a pool thread waiting for a core multiplies the "
                        "latency; the source and the reconstruction worker need cores too)")


def read_event_map(text: str | None) -> dict[int, str]:
    """``'1=a,2=b'`` or a TSV/CSV file with columns ``code`` and ``stimulus_id`` -> ``{code: id}``."""
    from neurodecode.utils import UserError

    if not text:
        return {}
    path = Path(text)
    if path.is_file():
        import pandas as pd

        df = pd.read_csv(path, sep=None, engine="python", dtype=str)
        cols = {c.lower(): c for c in df.columns}
        key = cols.get("code")
        val = cols.get("stimulus_id") or cols.get("description")
        if key is None or val is None:
            raise UserError(f"--event-map {path}: needs columns 'code' and 'stimulus_id'; it has {list(df.columns)}.")
        return {int(float(c)): f"stim/{v}" for c, v in zip(df[key], df[val], strict=True)}
    out = {}
    for part in text.split(","):
        k, eq, v = part.partition("=")
        if not eq or not k.strip().lstrip("-").isdigit():
            raise UserError(f"--event-map {text!r}: give code=stimulus pairs such as '1=cat,2=dog', or a TSV file.")
        out[int(k)] = f"stim/{v.strip()}"
    return out


def _subject_index(config: dict[str, Any], given: str | None, source: str) -> tuple[int | None, str]:
    from neurodecode.utils import UserError

    data = config.get("data", {})
    train = [str(s) for s in (data.get("train_subjects") or [])]
    n_model = int(config.get("encoder", {}).get("n_subjects") or 1)
    if given is not None:
        if given.lower() == "none":
            return None, "a new subject (subject-independent input)"
        label = given.removeprefix("sub-")
        if label not in train:
            raise UserError(f"--subject {given}: not a training subject of the model ({train}); give one of them, or "
                            "'none' for a new subject.")
        return (train.index(label) if n_model > 1 else None), f"training subject {label}"
    m = re.search(r"sub-([A-Za-z0-9]+)", source)
    if m and m.group(1) in train:
        return (train.index(m.group(1)) if n_model > 1 else None), f"training subject {m.group(1)} (from the name)"
    return None, "a new subject (subject-independent input)"


def run(args: argparse.Namespace) -> int:
    from neurodecode.utils import UserError

    if not (args.model / "config.json").is_file():
        raise UserError(f"--model {args.model}: no config.json; give a folder written by 'neurodecode export' (the "
                        "demo writes one to demo_out/exported).")
    if args.out.exists() and not args.out.is_dir():
        raise UserError(f"--out {args.out} is a file; give a folder for decisions.jsonl and summary.json.")
    if (args.prior is None) != (args.generator is None):
        raise UserError("live reconstruction needs both --prior and --generator.")
    from neurodecode.streaming.sources import parse_source_spec

    kind, fields = parse_source_spec(args.source)
    if math.isinf(args.speed) and kind == "player":
        raise UserError("--speed inf works with file: sources only; give a finite speed for player:.")
    if kind in ("file", "player") and not Path(fields["path"]).is_file():
        raise UserError(f"--source {args.source}: {fields['path']} not found.")
    baseline, window = _pair(args.baseline, "--baseline"), _pair(args.window, "--window")

    from neurodecode.streaming.decoder import DecoderSettings, StreamDecoder
    from neurodecode.streaming.gallery import load_gallery
    from neurodecode.streaming.online import load_whitener
    from neurodecode.streaming.outputs import Outputs
    from neurodecode.streaming.recipe import recipe_from_model
    from neurodecode.streaming.sources import open_source
    from neurodecode.training.export import from_pretrained

    model = from_pretrained(args.model, device=args.device)
    recipe = recipe_from_model(model.config, store=args.store, mvnn=None if args.mvnn is None else load_whitener(args.mvnn),
                               no_mvnn=args.no_mvnn)
    recipe.override(l_freq=args.l_freq, h_freq=args.h_freq, no_filter=args.no_filter, order=args.filter_order,
                    baseline=baseline, window=window, scale=args.scale)
    gallery = load_gallery(args.gallery, model.config, split=args.gallery_split)
    event_map = args.event_map
    if event_map is None and kind in ("file", "player"):
        default = Path(fields["path"]).parent / "event_map.tsv"
        event_map = str(default) if default.is_file() else None
    subject, who = _subject_index(model.config, args.subject, fields.get("path") or fields.get("name") or "")
    settings = DecoderSettings(mode=args.mode, k=args.k, by=args.by, step=args.step, width=args.width,
                               events=args.events, marker_pattern=args.marker_pattern,
                               event_map=read_event_map(event_map), subject=subject, bufsize=args.bufsize,
                               stall_timeout=args.stall_timeout, stop_after_silence=args.stop_after_silence,
                               device=args.device, threads=args.threads if args.threads and args.threads > 0 else None)
    source = open_source(args.source, speed=args.speed, chunk_size=args.chunk_size, bufsize=args.bufsize,
                         markers=args.markers, csv_unit=args.csv_unit, timeout=args.timeout)
    worker = None
    if args.prior is not None:
        from neurodecode.streaming.recon_worker import ReconstructionWorker, load_reconstructor

        prior, gen, dev = args.prior, args.generator, args.device
        worker = ReconstructionWorker(lambda: load_reconstructor(prior, gen, device=dev), args.out,
                                      maxsize=args.recon_queue)
    outlet = args.outlet if args.outlet is not None else kind in ("player", "lsl")
    title = f"neurodecode stream: {args.model.name} <- {args.source} ({args.mode}, top-{args.k} of {len(gallery)})"
    outputs = Outputs(args.out, outlet=outlet, live=args.live, quiet=args.quiet, overwrite=args.overwrite,
                      fsync=args.fsync, title=title, on_decision=worker)
    decoder = StreamDecoder(model, recipe, gallery, settings, on_decision=outputs.decision, on_event=outputs.event,
                            on_tick=outputs.tick)
    stats: dict[str, Any] = {}
    interrupted = False
    try:
        stats = decoder.run(source, duration=args.duration, max_decisions=args.max_decisions)
    except KeyboardInterrupt:
        interrupted = True
        stats = decoder.stats()
    finally:
        summary = {"model": str(args.model), "source": getattr(getattr(source, "info", None), "description", args.source),
                   "subject": who, "mode": args.mode, "k": args.k, "by": args.by,
                   "gallery": {"source": gallery.source, "n": len(gallery)},
                   "preprocessing": decoder.pre.describe() if hasattr(decoder, "pre") else None,
                   "stats": stats, "interrupted": interrupted, "outlet": outlet}
        if worker is not None:
            summary["reconstruction"] = worker.close()
        outputs.close(summary if hasattr(decoder, "pre") else None)
    top1 = "-" if stats.get("top1") is None else f"{stats['top1']:.1%} of {stats['known']} (chance {1 / len(gallery):.1%})"
    p50, p99 = stats.get("latency_ms_p50"), stats.get("latency_ms_p99")
    lat = "-" if p50 is None else f"p50 {p50:.1f} ms, p99 {p99:.1f} ms"
    print(f"{stats.get('decisions', 0)} decisions; running top-1 {top1}; latency {lat}; "
          f"{stats.get('samples_dropped', 0)} samples dropped; faults {stats.get('faults', {})}")
    print(f"decisions -> {args.out / 'decisions.jsonl'}, summary -> {args.out / 'summary.json'}")
    return 130 if interrupted else 0
