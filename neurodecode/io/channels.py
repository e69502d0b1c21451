"""Channel names and named channel sets (chosen at load time, never baked into a store).

``THINGS_EEG2_63``
    The 63 channels of THINGS-EEG2 in the published order (10-10 system; Fz is the reference).
``POSTERIOR_17``
    The 17 occipito-parietal channels of the official THINGS-EEG2 preprocessed release, also used by
    UBP and others.
``REGIONS``
    Frontal, central, temporal, parietal and occipital sets of the 10-10 names (for region ablations
    as in ATM's analyses). A name belongs to the region of its letter prefix (``Fp``/``AF``/``F``/``FC``
    frontal, ``C`` and ``CP`` central, ``FT``/``T``/``TP`` temporal, ``P`` parietal, ``PO``/``O``/``I``
    occipital); sets are computed from whatever channels a store has.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

THINGS_EEG2_63 = tuple(
    "Fp1 Fp2 AF7 AF3 AFz AF4 AF8 F7 F5 F3 F1 F2 F4 F6 F8 FT9 FT7 FC5 FC3 FC1 FCz FC2 FC4 FC6 FT8 FT10 "
    "T7 C5 C3 C1 Cz C2 C4 C6 T8 TP9 TP7 CP5 CP3 CP1 CPz CP2 CP4 CP6 TP8 TP10 P7 P5 P3 P1 Pz P2 P4 P6 "
    "P8 PO7 PO3 POz PO4 PO8 O1 Oz O2".split()
)
POSTERIOR_17 = ("P7", "P5", "P3", "P1", "Pz", "P2", "P4", "P6", "P8", "PO7", "PO3", "POz", "PO4", "PO8", "O1", "Oz",
                "O2")
REGION_NAMES = ("frontal", "central", "temporal", "parietal", "occipital")
_PREFIX_REGION = (
    ("FT", "temporal"), ("TP", "temporal"), ("Fp", "frontal"), ("AF", "frontal"), ("FC", "frontal"),
    ("CP", "central"), ("PO", "occipital"), ("F", "frontal"), ("C", "central"), ("T", "temporal"),
    ("P", "parietal"), ("O", "occipital"), ("I", "occipital"),
)
NAMED_SETS = ("all", "posterior17", *REGION_NAMES)


def region_of(name: str) -> str | None:
    """The scalp region of a 10-10/10-05 channel name (``None`` when the name is not of that system)."""
    m = re.match(r"^([A-Za-z]+)(\d+|z|Z)$", name)
    if not m:
        return None
    prefix = m.group(1)
    for p, region in _PREFIX_REGION:
        if prefix.upper() == p.upper():
            return region
    return None


def regions(ch_names: Sequence[str]) -> dict[str, list[str]]:
    """Channels of ``ch_names`` per region (regions with no channel are left out)."""
    out: dict[str, list[str]] = {r: [] for r in REGION_NAMES}
    for n in ch_names:
        r = region_of(n)
        if r is not None:
            out[r].append(n)
    return {k: v for k, v in out.items() if v}


def resolve_channels(spec: str | Sequence[str] | None, ch_names: Sequence[str]) -> list[str]:
    """Turn a channel selection into names present in ``ch_names``.

    Parameters
    ----------
    spec : str | list of str | None
        ``None`` or ``"all"``: every channel; ``"posterior17"``; a region name (``"occipital"``...);
        a region name prefixed with ``"-"`` (e.g. ``"-occipital"``: all channels except that region,
        for ablations); or an explicit list of names.
    ch_names : list of str
        The channels available.

    Returns
    -------
    names : list of str
        In the order of ``spec`` for explicit lists, else in the order of ``ch_names``.
    """
    names = list(ch_names)
    if spec is None or spec == "all":
        return names
    if isinstance(spec, str):
        exclude = spec.startswith("-")
        key = spec[1:] if exclude else spec
        if key == "posterior17":
            chosen = [n for n in names if n in POSTERIOR_17]
            missing = [n for n in POSTERIOR_17 if n not in names]
            if missing and not exclude:
                raise ValueError(f"channel set 'posterior17' needs {missing}, which the data lack "
                                 f"(available: {names}).")
        elif key in REGION_NAMES:
            chosen = regions(names).get(key, [])
            if not chosen:
                raise ValueError(f"no channel of the data is in region {key!r} (available: {names}).")
        else:
            raise ValueError(f"Invalid channel set {spec!r}. Allowed: a list of names, or one of "
                             f"{', '.join(repr(s) for s in NAMED_SETS)} (prefix a region with '-' to exclude it).")
        if exclude:
            drop = set(chosen)
            return [n for n in names if n not in drop]
        return chosen
    spec = list(spec)
    missing = [n for n in spec if n not in names]
    if missing:
        raise ValueError(f"channel(s) {missing} are not in the data; available: {names}.")
    return spec
