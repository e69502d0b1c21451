"""Live reconstruction beside decoding: a background worker that draws what each decision saw.

Decoding takes milliseconds, drawing an image (the diffusion prior, then the generator) takes much
longer, so :class:`ReconstructionWorker` runs it in a thread of its own and never makes the decoder
wait: :meth:`ReconstructionWorker.submit` puts a decision's brain embedding in a queue of at most
``maxsize`` entries and returns at once; when the queue is full the *oldest* waiting decision is
dropped (and counted), since a live display wants the latest. For each one it draws, the worker writes
a thumbnail ``DIR/reconstructions/<index>_<stimulus>.png`` (atomically) and a line of
``DIR/reconstructions.jsonl``.

:func:`load_reconstructor` builds the drawing function from a prior (``neurodecode`` exported prior
folder or checkpoint, :func:`neurodecode.reconstruction.prior.load_prior`) and a generator spec
(:func:`neurodecode.reconstruction.generators.load_generator`, e.g. ``demo:PATH``); it is called in the
worker thread, so loading the models does not delay the first decisions either.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from neurodecode.utils import PathLike, atomic_path, logger

__all__ = ["ReconstructionWorker", "load_reconstructor"]


def load_reconstructor(prior: PathLike, generator: str, *, device: str = "cpu", steps: int | None = None,
                       generator_steps: int | None = None) -> Callable[[np.ndarray, int], Any]:
    """A function ``(brain_embedding, seed) -> PIL.Image``: the prior's sample, then the generator's image.

    Parameters
    ----------
    prior : path-like
        An exported prior folder or a prior checkpoint.
    generator : str
        A generator spec (``demo:PATH``, ``sdxl-turbo-ip-adapter``, ``unclip``...).
    device : str
        Where both run.
    steps, generator_steps : int | None
        Denoising steps of the prior and of the generator (``None``: their defaults).
    """
    import torch

    from neurodecode.reconstruction.generators import load_generator
    from neurodecode.reconstruction.prior import load_prior

    p = load_prior(prior, device=device)
    g = load_generator(generator, device=device, batch_size=1, steps=generator_steps)

    def draw(embedding: np.ndarray, seed: int) -> Any:
        with torch.inference_mode():
            image_emb = p.sample(np.asarray(embedding, np.float32)[None], seed=seed, steps=steps, progress=False)
            return g.generate(image_emb, seeds=[seed], progress=False)[0]

    return draw


class ReconstructionWorker:
    """Draw decisions in a background thread; a full queue drops its oldest entry.

    Parameters
    ----------
    make : callable
        Called once, in the worker thread, to get the drawing function ``(embedding, seed) -> PIL.Image``
        (e.g. ``lambda: load_reconstructor(prior, generator)``).
    out : path-like
        Output folder (``reconstructions/`` and ``reconstructions.jsonl`` go there).
    maxsize : int
        Decisions waiting at most.
    thumbnail : int
        Side of the thumbnails (pixels).
    """

    def __init__(self, make: Callable[[], Callable[[np.ndarray, int], Any]], out: PathLike, *, maxsize: int = 4,
                 thumbnail: int = 128) -> None:
        self.out = Path(out)
        self.folder = self.out / "reconstructions"
        self.folder.mkdir(parents=True, exist_ok=True)
        self.maxsize = max(1, int(maxsize))
        self.thumbnail = int(thumbnail)
        self.dropped = 0
        self.done = 0
        self.failed: str | None = None
        self.seconds: list[float] = []
        self._queue: deque[tuple[int, str, np.ndarray]] = deque()
        self._cond = threading.Condition()
        self._stop = False
        self._make = make
        self._log = (self.out / "reconstructions.jsonl").open("w", encoding="utf-8")
        self._thread = threading.Thread(target=self._run, name="neurodecode-reconstruction", daemon=True)
        self._thread.start()

    def submit(self, decision: Any) -> None:
        """Queue a decision (its ``index``, top-1 and ``embedding``); never blocks."""
        if decision.embedding is None:
            return
        with self._cond:
            if len(self._queue) >= self.maxsize:
                self._queue.popleft()
                self.dropped += 1
            self._queue.append((decision.index, decision.stimulus_id or decision.topk[0], decision.embedding))
            self._cond.notify()

    __call__ = submit

    @property
    def waiting(self) -> int:
        """Decisions in the queue."""
        with self._cond:
            return len(self._queue)

    def _run(self) -> None:
        try:
            draw = self._make()
        except Exception as err:  # noqa: BLE001 - reported, decoding goes on without reconstructions
            self.failed = f"live reconstruction disabled: loading the prior/generator failed ({err})"
            logger.warning(self.failed)
            return
        while True:
            with self._cond:
                while not self._queue and not self._stop:
                    self._cond.wait()
                if not self._queue:
                    return
                index, label, emb = self._queue.popleft()
            t0 = time.perf_counter()
            try:
                image = draw(emb, index)
            except Exception as err:  # noqa: BLE001
                self.failed = f"reconstruction of decision {index} failed ({err})"
                logger.warning(self.failed)
                continue
            image = image.copy()
            image.thumbnail((self.thumbnail, self.thumbnail))
            safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in label)[:60]
            path = self.folder / f"{index:06d}_{safe}.png"
            with atomic_path(path, suffix=".png") as tmp:
                image.save(tmp, format="PNG")
            dt = time.perf_counter() - t0
            self.seconds.append(dt)
            self.done += 1
            self._log.write(f'{{"index": {index}, "file": "reconstructions/{path.name}", "seconds": {dt:.3f}}}\n')
            self._log.flush()

    def close(self, timeout: float = 30.0) -> dict[str, Any]:
        """Finish what is queued (up to ``timeout`` s) and stop; returns counts."""
        with self._cond:
            self._stop = True
            self._cond.notify()
        self._thread.join(timeout)
        with self._cond:
            left = len(self._queue)
            self._queue.clear()
        self._log.close()
        return {"drawn": self.done, "dropped_oldest": self.dropped, "left_unfinished": left,
                "seconds_median": float(np.median(self.seconds)) if self.seconds else None, "error": self.failed}
