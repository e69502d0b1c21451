"""Options of the readers as dataclasses: one place for every default, type and help text.

Each reader describes its options with a dataclass derived from :class:`ReaderOptions` whose
fields carry their help text (``field(metadata={"help": ...})``, written with :func:`option`).
The command line (:mod:`neurodecode.cli.prepare`) generates its ``--flags`` from these fields, and
the ``prepare_*`` functions accept the same names as keywords (:func:`resolve_options`), so a
default is written once. The chunked MNE processing shared by the epochs and THINGS-MEG readers
is :class:`EpochOptions`, nested in their option classes.

Field metadata understood here and by the command line:

``help``
    One-line description (``(default: X)`` is appended on the command line unless the text
    already says ``default``).
``choices``
    Allowed values; checked with :func:`neurodecode.utils.check_option` on construction.
``parse``
    Function turning the command-line text into the value (e.g. :func:`comma_list`).
``flag``
    Command-line name when it is not ``--field-name`` (e.g. ``--stimulus-column``).
``none``
    What a ``None`` default means, for the command line's ``(default: ...)`` (e.g. ``"keep"``).
``nargs``, ``metavar``
    Passed to ``argparse``.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from neurodecode._docs import fill_doc
from neurodecode.utils import check_option

__all__ = ["ReaderOptions", "EpochOptions", "option", "resolve_options", "comma_list", "float_or_none",
           "int_or_none", "nonzero_or_none", "str_or_none", "parse_baseline", "ids_or_file"]

SCALINGS = ("none", "zscore", "robust")

OptionsT = TypeVar("OptionsT", bound="ReaderOptions")


def option(default: Any = dataclasses.MISSING, *, help: str, factory: Callable[[], Any] | None = None,
           **meta: Any) -> Any:
    """A dataclass field with its help text (and optional ``choices``, ``parse``, ``flag``...).

    Parameters
    ----------
    default : object
        The default value.
    help : str
        One-line description, used by the command line.
    factory : callable | None
        ``default_factory`` instead of ``default`` (for mutable or nested-option defaults).
    **meta
        Further metadata (see the module docstring).

    Returns
    -------
    field : dataclasses.Field
    """
    if factory is not None:
        return field(default_factory=factory, metadata={"help": help, **meta})
    return field(default=default, metadata={"help": help, **meta})


# --------------------------------------------------------------------------------------------------
# text parsers (command line and string options)
# --------------------------------------------------------------------------------------------------
def comma_list(text: str | None) -> list[str] | None:
    """``"a, b,,c"`` -> ``["a", "b", "c"]``; ``None`` stays ``None``."""
    if text is None:
        return None
    return [t.strip() for t in str(text).split(",") if t.strip()]


def float_or_none(text: str) -> float | None:
    """``"none"`` (or an empty text) -> ``None``, else ``float(text)``."""
    return None if str(text).strip().lower() in ("none", "") else float(text)


def int_or_none(text: str) -> int | None:
    """``"none"`` (or an empty text) -> ``None``, else ``int(text)``."""
    return None if str(text).strip().lower() in ("none", "") else int(text)


def nonzero_or_none(kind: Callable[[str], Any]) -> Callable[[str], Any]:
    """A parser reading ``kind(text)`` where ``0`` (or ``"none"``) means ``None``."""

    def parse(text: str) -> Any:
        if str(text).strip().lower() in ("none", ""):
            return None
        return kind(text) or None

    parse.__name__ = getattr(kind, "__name__", "value")
    return parse


def str_or_none(text: str) -> str | None:
    """``"none"`` -> ``None``, else the text."""
    return None if str(text).strip().lower() == "none" else str(text)


def parse_baseline(text: str | tuple | None) -> tuple[float | None, float | None] | None:
    """``"None,0"`` -> ``(None, 0.0)``; a tuple or ``None`` is returned as is."""
    if text is None or isinstance(text, tuple | list):
        return None if text is None else tuple(text)  # type: ignore[return-value]
    parts = [p.strip() for p in str(text).split(",")]
    if len(parts) != 2:
        raise ValueError(f"--baseline must be two values 'a,b' (e.g. 'None,0'), got {text!r}.")
    return tuple(None if p.lower() == "none" else float(p) for p in parts)  # type: ignore[return-value]


def ids_or_file(text: str | None) -> list[str] | None:
    """Comma-separated ids, or the path of a text file with one id per line."""
    if text is None:
        return None
    p = Path(text)
    if p.is_file():
        return [line.strip() for line in p.read_text().splitlines() if line.strip()]
    return comma_list(text)


# --------------------------------------------------------------------------------------------------
# base class
# --------------------------------------------------------------------------------------------------
@dataclass
class ReaderOptions:
    """Base of the readers' option dataclasses: checks ``choices`` and resolves overrides.

    ``GROUP`` names the command-line argument group of the class's own fields.
    """

    GROUP: ClassVar[str] = "options"

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            choices = f.metadata.get("choices")
            if choices is not None:
                check_option(f.name, getattr(self, f.name), tuple(choices))

    def nested(self) -> dict[str, ReaderOptions]:
        """The fields holding nested option objects, by name."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if isinstance(getattr(self, f.name), ReaderOptions)}

    def names(self) -> list[str]:
        """Every option name, nested ones included (the keywords :func:`resolve_options` accepts)."""
        out = []
        for f in dataclasses.fields(self):
            sub = getattr(self, f.name)
            out += sub.names() if isinstance(sub, ReaderOptions) else [f.name]
        return out

    def updated(self: OptionsT, **changes: Any) -> OptionsT:
        """A copy with ``changes`` applied; names of nested options are routed to them.

        Raises a ``TypeError`` naming the unknown option (and the closest known one).
        """
        own = {f.name for f in dataclasses.fields(self)}
        top = {k: v for k, v in changes.items() if k in own}
        rest = {k: v for k, v in changes.items() if k not in own}
        for name, sub in self.nested().items():
            mine = {k: v for k, v in rest.items() if k in sub.names()}
            if mine:
                top[name] = sub.updated(**mine)
                rest = {k: v for k, v in rest.items() if k not in mine}
        if rest:
            known = self.names()
            hints = [f"{k!r} (did you mean {m[0]!r}?)" if (m := difflib.get_close_matches(k, known, n=1))
                     else repr(k) for k in rest]
            raise TypeError(f"{type(self).__name__}: unknown option(s) {', '.join(hints)}; known options are "
                            f"{known}.")
        return dataclasses.replace(self, **top) if top else self

    def as_dict(self) -> dict[str, Any]:
        """Every option (nested ones flattened), e.g. for ``dataset.json``."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if isinstance(v, ReaderOptions):
                out.update(v.as_dict())
            else:
                out[f.name] = list(v) if isinstance(v, tuple) else v
        return out


def resolve_options(cls: type[OptionsT], options: OptionsT | None, overrides: Mapping[str, Any]) -> OptionsT:
    """``options`` (default ``cls()``) with the keyword ``overrides`` applied.

    Parameters
    ----------
    cls : type
        The reader's option dataclass.
    options : instance of cls | None
        Options object given by the caller.
    overrides : dict
        Keyword arguments naming options (nested ones included).

    Returns
    -------
    options : instance of cls
    """
    base = cls() if options is None else options
    if not isinstance(base, cls):
        raise TypeError(f"options must be a {cls.__name__}, got {type(base).__name__}.")
    return base.updated(**overrides)


# --------------------------------------------------------------------------------------------------
# the shared MNE epoch processing block
# --------------------------------------------------------------------------------------------------
@fill_doc
@dataclass
class EpochOptions(ReaderOptions):
    """Chunked MNE processing of epochs (epochs and THINGS-MEG readers).

    In this order: filter, resample, baseline, crop; then a per-channel scaling fitted on training
    trials only.

    Parameters
    ----------
    %(tmin_tmax)s
        Here a crop window ``[tmin, tmax)`` applied after filtering and resampling; ``None`` keeps
        that end.
    %(l_freq_h_freq)s
    %(sfreq)s
    filter_method, resample_method : str
        ``mne.Epochs.filter`` method (``"fir"``, MNE's default, or ``"iir"``) and
        ``mne.Epochs.resample`` method (``"fft"``, MNE's default, or ``"polyphase"``); MNE runs FIR
        filters and FFT resampling one channel at a time, slow on many channels.
    %(baseline)s
    %(scaling)s
    clamp : float | None
        Clip scaled values to ``[-clamp, clamp]``.
    fit_trials, seed : int | None, int
        Size (``None``: every training trial) and seed of the subset the scaling is fitted on.
    %(chunk_size)s
    """

    GROUP: ClassVar[str] = "processing (MNE, chunk by chunk)"

    tmin: float | None = option(None, help="start of the crop window in s", none="keep",
                                parse=float_or_none)
    tmax: float | None = option(None, help="end of the crop window in s, exclusive",
                                none="keep", parse=float_or_none)
    l_freq: float | None = option(None, help="high-pass edge of a band-pass filter in Hz",
                                  parse=float_or_none)
    h_freq: float | None = option(None, help="low-pass edge of a band-pass filter in Hz",
                                  parse=float_or_none)
    sfreq: float | None = option(None, help="resample to this rate in Hz", none="keep the data rate",
                                 parse=float_or_none)
    filter_method: str = option("fir", choices=("fir", "iir"),
                                help="mne filter method: 'fir' (MNE's default, zero-phase FIR) or 'iir' (faster on "
                                     "many channels)")
    resample_method: str = option("fft", choices=("fft", "polyphase"),
                                  help="mne resample method: 'fft' (MNE's default) or 'polyphase' (faster on many "
                                       "channels)")
    baseline: tuple[float | None, float | None] | None = option(
        None, parse=parse_baseline,
        help="baseline window 'a,b' in s for baseline correction (use 'None,0' for start..0)")
    scaling: str = option("none", choices=SCALINGS, help="per-channel scaling fitted on training trials only")
    clamp: float | None = option(None, parse=float_or_none, help="clip scaled values to [-CLAMP, CLAMP]",
                                 none="no clip")
    fit_trials: int | None = option(1000, parse=nonzero_or_none(int),
                                    help="fit the scaling on a seeded subset of at most this many training trials "
                                         "(0: all)")
    seed: int = option(0, help="seed of the subset used to fit the scaling")
    chunk_size: int = option(256, help="epochs processed at a time; bounds memory")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.baseline is not None:
            self.baseline = parse_baseline(self.baseline)
        if self.chunk_size < 1:
            raise ValueError(f"chunk_size must be at least 1, got {self.chunk_size}.")
