"""Real-time decoding: an EEG/MEG stream in, a decision per window out (``neurodecode stream``).

The data flow, one module each:

- :mod:`~neurodecode.streaming.lslconfig`: the machine-only liblsl configuration (``LSLAPICFG``),
  set before MNE-LSL loads;
- :mod:`~neurodecode.streaming.sources`: the source interface, the in-process file replay (no socket)
  and the ``--source`` texts; :mod:`~neurodecode.streaming.lsl`: MNE-LSL's ``StreamLSL`` and a file
  played by ``PlayerLSL``;
- :mod:`~neurodecode.streaming.recipe`: what the exported model's training data went through (read
  from its config and its stores' provenance); :mod:`~neurodecode.streaming.online`: the same steps
  online (channel pick by name, causal filter with state, MNE's epoch steps as one linear map,
  scaling, MVNN);
- :mod:`~neurodecode.streaming.buffer`: recent samples and the stream's timeline (gaps, clock jumps);
- :mod:`~neurodecode.streaming.gallery`: the candidate embeddings and the top-k;
- :mod:`~neurodecode.streaming.decoder`: the event-locked and sliding-window loop, its faults and
  latency; :mod:`~neurodecode.streaming.records`: its settings and its decisions;
- :mod:`~neurodecode.streaming.outputs`: ``decisions.jsonl``, ``events.jsonl``, an LSL outlet, the live
  table; :mod:`~neurodecode.streaming.recon_worker`: live reconstruction in a background thread;
- :mod:`~neurodecode.streaming.offline`: the same decisions from a prepared trial store (the
  equivalence check).

Names are imported lazily: ``import neurodecode.streaming`` loads neither torch nor MNE-LSL.
"""

from __future__ import annotations

from neurodecode.utils import lazy_exports

_EXPORTS = {
    "lslconfig": ("import_mne_lsl", "lsl_available", "use_machine_only", "write_lsl_config"),
    "sources": ("Chunk", "Marker", "ReplaySource", "Source", "StreamInfo", "open_source", "read_recording"),
    "lsl": ("LSLSource", "PlayerSource"),
    "recipe": ("OnlineRecipe", "recipe_from_model"),
    "online": ("CausalFilter", "OnlinePreprocessor", "fit_whitener", "load_whitener"),
    "buffer": ("SampleBuffer",),
    "gallery": ("Gallery", "load_gallery"),
    "records": ("Decision", "DecoderSettings"),
    "decoder": ("StreamDecoder",),
    "outputs": ("Outputs", "read_jsonl"),
    "recon_worker": ("ReconstructionWorker", "load_reconstructor"),
    "offline": ("offline_decisions",),
}
__all__, __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
