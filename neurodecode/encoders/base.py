"""The encoder contract and the encoder registry.

Every brain encoder is a plain :class:`torch.nn.Module` with one signature, following braindecode's
argument names for time series and timm's split between features and head:

``Encoder(n_chans, n_times, n_outputs, *, sfreq=None, chs_info=None, n_subjects=1, **arch)``
    for EEG/MEG (:class:`TimeseriesEncoder`, input ``(batch, n_chans, n_times)``);
``Encoder(n_voxels, n_outputs, *, n_subjects=1, **arch)``
    for fMRI (:class:`VoxelEncoder`, input ``(batch, n_voxels)``).

``forward(x, subject=None)`` equals ``forward_head(forward_features(x, subject))``. ``subject`` is a
``LongTensor`` of subject indices in ``0 .. n_subjects - 1`` (one per row of ``x``), a Python int
(the same subject for the whole batch) or ``None``. ``None`` means "no subject identity": encoders
without subject-specific parts ignore it, encoders with them use a subject-independent stand-in
that each class documents (for example the mean of the subject tokens or matrices). With
``n_subjects=1`` that stand-in is subject 0 itself, so ``None`` and ``0`` give the same output.
Never pass the index of a subject the model was not trained on: leave-one-subject-out evaluation
passes ``None``.

:meth:`BrainEncoder.get_config` returns a JSON-able dict holding the registry name (``"name"``)
and every constructor argument; :meth:`BrainEncoder.from_config` rebuilds an encoder (with fresh
weights) from it. Weights travel separately (state dict, safetensors).

The registry maps short names to classes (timm style)::

    @register_encoder("atm")
    class ATM(TimeseriesEncoder): ...

    list_encoders()                      # ['atm', 'brain_module', ...]
    create_encoder("atm", n_chans=63, n_times=250, n_outputs=1024)

The contract (the two base classes, their checks of ``n_chans``/``chs_info``/``sfreq``, the config round
trip) and the registry that the parametrised encoder test runs over are one thing and read better whole.
"""

from __future__ import annotations

import functools
import inspect
import json
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar, TypeVar

import numpy as np
import torch
from torch import nn

from neurodecode.utils import check_option, to_jsonable

__all__ = [
    "BrainEncoder",
    "TimeseriesEncoder",
    "VoxelEncoder",
    "register_encoder",
    "list_encoders",
    "create_encoder",
    "encoder_class",
    "normalize_chs_info",
]

MODALITIES = ("timeseries", "voxels")
_REGISTRY: dict[str, type[BrainEncoder]] = {}
_E = TypeVar("_E", bound=type)


# --------------------------------------------------------------------------------------------------
# registry
# --------------------------------------------------------------------------------------------------
def register_encoder(name: str) -> Callable[[_E], _E]:
    """Class decorator that adds an encoder class to the registry under ``name``.

    Parameters
    ----------
    name : str
        Short, unique, lower-case name (``"atm"``, ``"eegnet"``...). It is stored in
        :meth:`BrainEncoder.get_config` and used by :func:`create_encoder`.

    Returns
    -------
    decorator : callable
        Returns the class unchanged, with ``encoder_name`` set to ``name``.
    """
    if not isinstance(name, str) or not name or name != name.strip():
        raise ValueError(f"An encoder name must be a non-empty string without surrounding spaces, got {name!r}.")

    def decorator(cls: _E) -> _E:
        if not (isinstance(cls, type) and issubclass(cls, BrainEncoder)):
            raise TypeError(f"register_encoder({name!r}) decorates BrainEncoder subclasses, got {cls!r}.")
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            other = _REGISTRY[name]
            raise ValueError(f"The encoder name {name!r} is already taken by "
                             f"{other.__module__}.{other.__qualname__}; choose another name.")
        cls.encoder_name = name
        _REGISTRY[name] = cls
        return cls

    return decorator


def list_encoders(modality: str | None = None) -> list[str]:
    """Names of the registered encoders, sorted.

    Parameters
    ----------
    modality : str | None
        ``"timeseries"`` (EEG/MEG) or ``"voxels"`` (fMRI) to list only encoders taking that input;
        ``None`` lists all.

    Returns
    -------
    names : list of str
    """
    check_option("modality", modality, (*MODALITIES, None))
    return sorted(n for n, c in _REGISTRY.items() if modality is None or c.modality == modality)


def encoder_class(name: str) -> type[BrainEncoder]:
    """The class registered under ``name``.

    Raises
    ------
    KeyError
        Naming the unknown encoder and listing the known ones.
    """
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"Unknown encoder {name!r}. Registered encoders: {', '.join(list_encoders())}.") from None


def create_encoder(name: str, **overrides: Any) -> BrainEncoder:
    """Build the encoder registered under ``name`` (timm's ``create_model`` style).

    Parameters
    ----------
    name : str
        Registry name, see :func:`list_encoders`.
    **overrides
        Constructor arguments: the data shape (``n_chans``, ``n_times``, ``n_outputs`` or
        ``n_voxels``, ``n_outputs``), ``sfreq``, ``chs_info``, ``n_subjects`` and architecture
        options that replace the class defaults.

    Returns
    -------
    encoder : BrainEncoder
    """
    cls = encoder_class(name)
    sig = inspect.signature(cls.__init__)
    takes_var_kw = any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values())
    unknown = sorted(set(overrides) - set(sig.parameters) - {"self"})
    if unknown and not takes_var_kw:
        allowed = [p for p in sig.parameters if p != "self"]
        raise TypeError(f"create_encoder({name!r}): unknown argument(s) {unknown}. "
                        f"{cls.__name__} takes: {', '.join(allowed)}.")
    return cls(**overrides)


# --------------------------------------------------------------------------------------------------
# channel information
# --------------------------------------------------------------------------------------------------
def normalize_chs_info(chs_info: Any) -> list[dict[str, Any]] | None:
    """Channel descriptions in a small JSON-able form: ``[{"ch_name", "loc", "kind"}, ...]``.

    Parameters
    ----------
    chs_info : mne.Info | sequence of dict | None
        ``info["chs"]`` of an ``mne.Info`` (as braindecode takes it), the ``"chs"`` list of
        ``Info.to_json_dict()``, an ``mne.Info`` itself, or an already normalised list. Each entry
        needs ``"ch_name"``; ``"loc"`` (the first three values are the sensor position in metres)
        and ``"kind"`` are kept when present.

    Returns
    -------
    chs : list of dict | None
        One dict per channel with ``"ch_name"`` (str), ``"loc"`` (three floats, or ``None`` when the
        position is unknown) and ``"kind"`` (int or ``None``).
    """
    if chs_info is None:
        return None
    if hasattr(chs_info, "ch_names") and hasattr(chs_info, "__getitem__") and not isinstance(chs_info, list):
        chs_info = chs_info["chs"]  # an mne.Info
    if isinstance(chs_info, (str, bytes)) or not isinstance(chs_info, Sequence):
        raise TypeError(f"chs_info must be a list of channel dicts (mne.Info['chs']) or an mne.Info, "
                        f"got {type(chs_info).__name__}.")
    out = []
    for i, ch in enumerate(chs_info):
        if not isinstance(ch, Mapping) or "ch_name" not in ch:
            raise ValueError(f"chs_info[{i}] must be a dict with at least a 'ch_name' key "
                             f"(an entry of mne.Info['chs']), got {ch!r:.80}.")
        loc = ch.get("loc")
        pos = None
        if loc is not None:
            arr = np.asarray(loc, dtype=float).ravel()[:3]
            if arr.size == 3 and np.all(np.isfinite(arr)) and np.any(arr != 0):
                pos = [float(v) for v in arr]
        kind = ch.get("kind")
        if isinstance(kind, Mapping):  # Info.to_json_dict() writes NamedInt as a dict
            kind = kind.get("value")
        out.append({"ch_name": str(ch["ch_name"]), "loc": pos, "kind": None if kind is None else int(kind)})
    return out


# --------------------------------------------------------------------------------------------------
# base classes
# --------------------------------------------------------------------------------------------------
class BrainEncoder(nn.Module):
    """Base class of all brain encoders: input checks, subject handling and config round trip.

    Subclasses implement :meth:`forward_features` and :meth:`forward_head`; :meth:`forward`
    chains them. The constructor arguments of the most derived class are recorded automatically
    (see :meth:`get_config`), so subclasses need nothing special to support the round trip.

    Attributes
    ----------
    encoder_name : str
        The registry name (set by :func:`register_encoder`).
    modality : str
        ``"timeseries"`` (input ``(batch, n_chans, n_times)``) or ``"voxels"`` (input
        ``(batch, n_voxels)``).
    closed_form : bool
        ``True`` for encoders fitted in closed form by a ``fit(X, Y)`` method rather than by
        gradient descent (:class:`~neurodecode.encoders.Ridge`).
    """

    encoder_name: ClassVar[str | None] = None
    modality: ClassVar[str] = "timeseries"
    closed_form: ClassVar[bool] = False

    n_outputs: int
    n_subjects: int

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "__init__" in cls.__dict__:
            cls.__init__ = _record_init_args(cls.__dict__["__init__"])

    # ---------------------------------------------------------------------------------- forward
    def forward(self, x: torch.Tensor, subject: torch.Tensor | int | None = None) -> torch.Tensor:
        """Embed a batch: ``forward_head(forward_features(x, subject))``.

        Parameters
        ----------
        x : torch.Tensor
            ``(batch, n_chans, n_times)`` for time series, ``(batch, n_voxels)`` for voxels.
        subject : torch.LongTensor | int | None
            Subject index of each row (see the module docstring for ``None``).

        Returns
        -------
        out : torch.Tensor
            ``(batch, n_outputs)``.
        """
        return self.forward_head(self.forward_features(x, subject))

    def forward_features(self, x: torch.Tensor, subject: torch.Tensor | int | None = None) -> torch.Tensor:
        """Everything but the output head: ``(batch, n_features)``."""
        raise NotImplementedError

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        """The output head, from :meth:`forward_features` to ``(batch, n_outputs)``."""
        raise NotImplementedError

    # ---------------------------------------------------------------------------------- checks
    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one input example (without the batch dimension)."""
        raise NotImplementedError

    def _input_description(self) -> str:
        raise NotImplementedError

    def check_input(self, x: torch.Tensor) -> None:
        """Raise a ``ValueError`` naming the expected and the given shape when ``x`` does not fit."""
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{type(self).__name__} expects a torch.Tensor, got {type(x).__name__}.")
        expected = self.input_shape
        if x.ndim != len(expected) + 1 or tuple(x.shape[1:]) != expected:
            raise ValueError(f"{type(self).__name__} expects input of shape {self._input_description()} = "
                             f"(batch, {', '.join(map(str, expected))}), got {tuple(x.shape)}.")
        if not x.is_floating_point():
            raise TypeError(f"{type(self).__name__} expects a floating-point input, got {x.dtype}.")

    def check_subject(self, subject: torch.Tensor | int | None, batch_size: int,
                      device: torch.device | None = None) -> torch.Tensor | None:
        """Validate ``subject`` and return it as a ``(batch,)`` LongTensor (or ``None``).

        Raises
        ------
        ValueError
            When the shape does not match the batch or an index is outside ``0..n_subjects-1``.
        """
        if subject is None:
            return None
        if isinstance(subject, (int, np.integer)):
            subject = torch.full((batch_size,), int(subject), dtype=torch.long, device=device)
        if not isinstance(subject, torch.Tensor):
            raise TypeError(f"subject must be a LongTensor of subject indices, an int or None, "
                            f"got {type(subject).__name__}.")
        if subject.dtype.is_floating_point or subject.dtype == torch.bool or subject.is_complex():
            raise TypeError(f"subject must hold integer subject indices, got dtype {subject.dtype}.")
        if subject.ndim == 0:
            subject = subject.expand(batch_size)
        if subject.shape != (batch_size,):
            raise ValueError(f"subject must have shape (batch,) = ({batch_size},), got {tuple(subject.shape)}.")
        subject = subject.to(device=device, dtype=torch.long)
        if batch_size and (int(subject.min()) < 0 or int(subject.max()) >= self.n_subjects):
            bad = subject[(subject < 0) | (subject >= self.n_subjects)][0].item()
            raise ValueError(f"subject index {bad} is outside 0..{self.n_subjects - 1} (n_subjects="
                             f"{self.n_subjects}). Pass subject=None for a subject the model was not "
                             f"trained on (leave-one-subject-out).")
        return subject

    def _prepare(self, x: torch.Tensor, subject: torch.Tensor | int | None) -> torch.Tensor | None:
        self.check_input(x)
        return self.check_subject(subject, x.shape[0], x.device)

    # ---------------------------------------------------------------------------------- config
    def get_config(self) -> dict[str, Any]:
        """The registry name and every constructor argument, as a JSON-able dict.

        Returns
        -------
        config : dict
            ``{"name": encoder_name, <argument>: <value>, ...}``; ``chs_info`` is stored in the
            normalised form of :func:`normalize_chs_info` (positions as lists).
        """
        if self.encoder_name is None:
            raise TypeError(f"{type(self).__name__} is not registered; decorate it with @register_encoder(name).")
        args = dict(getattr(self, "_init_args", {}))
        if "chs_info" in args:
            args["chs_info"] = normalize_chs_info(args["chs_info"])
        cfg = {"name": self.encoder_name, **{k: to_jsonable(v, allow_nan=False) for k, v in args.items()}}
        json.dumps(cfg)  # fail here, not later, if something slipped through
        return cfg

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> BrainEncoder:
        """Rebuild an encoder (fresh weights) from :meth:`get_config`'s dict.

        Called on :class:`BrainEncoder` it looks the class up by ``config["name"]``; called on a
        registered class it checks that the name matches.
        """
        if not isinstance(config, Mapping):
            raise TypeError(f"config must be a dict from get_config(), got {type(config).__name__}.")
        cfg = dict(config)
        name = cfg.pop("name", None)
        if cls.encoder_name is None:  # a base class: dispatch on the name
            if name is None:
                raise ValueError("config has no 'name' key: cannot tell which encoder to build. "
                                 f"Registered encoders: {', '.join(list_encoders())}.")
            target = encoder_class(name)
        else:
            if name is not None and name != cls.encoder_name:
                raise ValueError(f"config is for encoder {name!r}, not {cls.encoder_name!r}; "
                                 f"use BrainEncoder.from_config(config) or encoder_class({name!r}).")
            target = cls
        return target(**cfg)

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in getattr(self, "_init_args", {}).items()
                         if k not in ("chs_info", "positions"))


def _record_init_args(init: Callable) -> Callable:
    """Wrap ``__init__`` so that the outermost call records its bound arguments on the instance."""
    sig = inspect.signature(init)

    @functools.wraps(init)
    def wrapper(self, *args, **kwargs):
        outermost = "_init_args" not in self.__dict__
        if outermost:
            try:
                bound = sig.bind(self, *args, **kwargs)
            except TypeError as err:
                raise TypeError(f"{type(self).__name__}: {err}") from None
            bound.apply_defaults()
            recorded = {}
            for pname, value in list(bound.arguments.items())[1:]:
                if sig.parameters[pname].kind is inspect.Parameter.VAR_KEYWORD:
                    recorded.update(value)
                elif sig.parameters[pname].kind is inspect.Parameter.VAR_POSITIONAL:
                    if value:
                        raise TypeError(f"{type(self).__name__} takes no extra positional arguments.")
                else:
                    recorded[pname] = value
            object.__setattr__(self, "_init_args", recorded)
        init(self, *args, **kwargs)

    return wrapper


class TimeseriesEncoder(BrainEncoder):
    """Base class of EEG/MEG encoders: input ``(batch, n_chans, n_times)``.

    Parameters
    ----------
    n_chans : int | None
        Number of channels; may be left out when ``chs_info`` is given.
    n_times : int
        Number of time samples per trial.
    n_outputs : int
        Output (embedding) dimension.
    sfreq : float | None
        Sampling frequency in Hz; some architectures scale their kernels with it.
    chs_info : list of dict | mne.Info | None
        Channel descriptions (``mne.Info["chs"]``); when given its length must equal ``n_chans``.
    n_subjects : int
        Number of subjects with their own parameters (subject tokens, subject layers).
    """

    modality: ClassVar[str] = "timeseries"

    def __init__(self, n_chans: int | None = None, n_times: int | None = None, n_outputs: int | None = None,
                 *, sfreq: float | None = None, chs_info: Any = None, n_subjects: int = 1) -> None:
        super().__init__()
        name = type(self).__name__
        chs = normalize_chs_info(chs_info)
        if n_chans is None:
            if chs is None:
                raise ValueError(f"{name}: give n_chans (the number of channels) or chs_info.")
            n_chans = len(chs)
        self.n_chans = _positive_int(n_chans, "n_chans", name)
        if chs is not None and len(chs) != self.n_chans:
            raise ValueError(f"{name}: chs_info describes {len(chs)} channels but n_chans={self.n_chans}; "
                             f"pass the chs_info of the channels actually fed to the model (or fix n_chans).")
        if n_times is None:
            raise ValueError(f"{name}: n_times (the number of time samples per trial) is required.")
        self.n_times = _positive_int(n_times, "n_times", name)
        if n_outputs is None:
            raise ValueError(f"{name}: n_outputs (the embedding dimension) is required.")
        self.n_outputs = _positive_int(n_outputs, "n_outputs", name)
        if sfreq is not None:
            sfreq = float(sfreq)
            if not (math.isfinite(sfreq) and sfreq > 0):
                raise ValueError(f"{name}: sfreq must be a positive number of Hz, got {sfreq}.")
        self.sfreq = sfreq
        self.chs_info = chs
        self.n_subjects = _positive_int(n_subjects, "n_subjects", name)

    @property
    def input_shape(self) -> tuple[int, int]:
        return (self.n_chans, self.n_times)

    def _input_description(self) -> str:
        return "(batch, n_chans, n_times)"


class VoxelEncoder(BrainEncoder):
    """Base class of fMRI encoders: input ``(batch, n_voxels)``.

    Parameters
    ----------
    n_voxels : int
        Number of voxels per trial.
    n_outputs : int
        Output (embedding) dimension.
    n_subjects : int
        Number of subjects with their own parameters.
    """

    modality: ClassVar[str] = "voxels"

    def __init__(self, n_voxels: int | None = None, n_outputs: int | None = None, *, n_subjects: int = 1) -> None:
        super().__init__()
        name = type(self).__name__
        if n_voxels is None:
            raise ValueError(f"{name}: n_voxels (the number of voxels per trial) is required.")
        if n_outputs is None:
            raise ValueError(f"{name}: n_outputs (the embedding dimension) is required.")
        self.n_voxels = _positive_int(n_voxels, "n_voxels", name)
        self.n_outputs = _positive_int(n_outputs, "n_outputs", name)
        self.n_subjects = _positive_int(n_subjects, "n_subjects", name)

    @property
    def input_shape(self) -> tuple[int]:
        return (self.n_voxels,)

    def _input_description(self) -> str:
        return "(batch, n_voxels)"


def _positive_int(value: Any, what: str, owner: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or int(value) < 1:
        raise ValueError(f"{owner}: {what} must be a positive integer, got {value!r}.")
    return int(value)


def subject_groups(subject: torch.Tensor) -> list[tuple[int, torch.Tensor]]:
    """``[(subject_index, row_indices), ...]`` for the subjects present in a batch."""
    return [(int(s), torch.nonzero(subject == s, as_tuple=True)[0]) for s in torch.unique(subject).tolist()]


def per_subject(fn: Callable[[int, torch.Tensor], torch.Tensor], subject: torch.Tensor) -> torch.Tensor:
    """Apply ``fn(subject_index, rows)`` to each subject's rows and put the results back in batch order.

    Used by subject-specific layers: one matrix product per subject present in the batch instead of
    gathering a weight matrix per row.
    """
    parts = [(rows, fn(s, rows)) for s, rows in subject_groups(subject)]
    first = parts[0][1]
    out = first.new_empty((subject.shape[0], *first.shape[1:]))
    for rows, value in parts:
        out[rows] = value
    return out
