"""Thread limits for evaluation: small tensor and matrix operations run faster on one thread.

Evaluation is made of many small operations (similarities of a few hundred embeddings, bootstrap
resamples, one ridge per time window) that alternate between torch and NumPy. Each library keeps
its own pool of threads (torch's OpenMP pool, OpenBLAS's pool), and a pool's threads spin for a
while after each operation; two pools on the same few cores, or another process on them, leave
every operation waiting for a core. Measured on a shared 2-core machine, the channel-region
ablation of the demo took 0.7 s with one thread and 2.6-4.7 s with two, the split-half noise
ceiling 1.4-2.0 s against 5-7 s. :func:`thread_limits` sets one thread for both inside a block
(and restores the previous numbers after it), :func:`with_thread_limits` around a function that
takes ``threads``; parallelism comes from doing independent pieces side by side instead (e.g.
:func:`~neurodecode.evaluation.window_ridge.fit_windows`).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

__all__ = ["thread_limits", "with_thread_limits"]

F = TypeVar("F", bound=Callable[..., Any])


@contextmanager
def thread_limits(threads: int | None = 1) -> Iterator[None]:
    """Limit torch's intra-op threads and the BLAS threads of NumPy/SciPy inside a ``with`` block.

    Parameters
    ----------
    threads : int | None
        Threads for both (at least 1); ``None`` leaves them as they are.

    Examples
    --------
    >>> with thread_limits(1):
    ...     pass  # evaluation code
    """
    if threads is None:
        yield
        return
    threads = int(threads)
    if threads < 1:
        raise ValueError(f"threads must be a positive number or None, got {threads}.")
    import torch
    from threadpoolctl import threadpool_limits  # a dependency of scikit-learn

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with threadpool_limits(limits=threads, user_api="blas"):
            yield
    finally:
        torch.set_num_threads(before)


def with_thread_limits(fn: F) -> F:
    """Decorator: run ``fn`` inside :func:`thread_limits` of its own ``threads`` argument.

    ``fn`` must have a parameter named ``threads`` (its default applies when a call leaves it out).
    """
    sig = inspect.signature(fn)
    if "threads" not in sig.parameters:
        raise TypeError(f"{fn.__qualname__} has no 'threads' parameter for with_thread_limits.")
    default = sig.parameters["threads"].default

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        threads = sig.bind_partial(*args, **kwargs).arguments.get("threads", default)
        with thread_limits(threads):
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]
