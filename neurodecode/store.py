"""Deprecated location of the trial store: use :mod:`neurodecode.io.store`.

``from neurodecode.store import open_prepared`` (the 0.1 API) still works and warns that the
module moved.
"""

from __future__ import annotations

import warnings
from typing import Any


def __getattr__(name: str) -> Any:
    from neurodecode.io import store

    warnings.warn(
        f"neurodecode.store.{name} moved to neurodecode.io.store.{name}; import it from there "
        "(neurodecode.store will be removed in a future release).",
        DeprecationWarning,
        stacklevel=2,
    )
    return getattr(store, name)
