"""Keep Lab Streaming Layer (LSL) traffic on this machine: the machine-only liblsl configuration.

LSL finds streams by multicast and, by default, reaches the whole site (``ResolveScope = site``:
239.255.172.215 with a hop count of 24, on IPv4 and IPv6). neurodecode never needs that: the
replays and tests run on one computer, and a lab that streams from an amplifier on another computer
can point ``LSLAPICFG`` at its own file. :func:`use_machine_only` writes a configuration that

* resolves on this machine only (``[multicast] ResolveScope = machine``: queries go to 127.0.0.1 with a
  hop count of 0, and ``MachineAddresses = {127.0.0.1}`` drops the IPv6 machine group);
* binds the outlets' servers to the loopback address (``ListenAddress = 127.0.0.1``);
* turns IPv6 off (``[ports] IPv6 = disable``);
* asks the loopback address directly as well (``[lab] KnownPeers = {127.0.0.1}``), which finds streams
  even where the loopback interface does not carry multicast (containers);

and points the environment variable ``LSLAPICFG`` at it. liblsl reads its configuration once, when
it is first used, and ``LSLAPICFG`` wins over every other place it looks (the working folder,
``~/lsl_api/``, ``/etc/lsl_api/``), so this must run before ``mne_lsl`` (or ``pylsl``) is imported:
:func:`import_mne_lsl` does both, in that order, and refuses to go on when liblsl was loaded
earlier with another configuration.

liblsl's reader knows ``;`` comments only (a ``#`` line makes it throw the whole file away and fall
back to the defaults), so the file below uses ``;``.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path
from types import ModuleType

from neurodecode.utils import PathLike, atomic_write_text

__all__ = ["ENV_VAR", "MACHINE_ONLY_CONFIG", "import_mne_lsl", "is_machine_only", "lsl_available",
           "use_machine_only", "write_lsl_config"]

ENV_VAR = "LSLAPICFG"

MACHINE_ONLY_CONFIG = """\
; written by neurodecode.streaming.lslconfig: LSL stays on this machine
[ports]
IPv6 = disable
[multicast]
ResolveScope = machine
MachineAddresses = {127.0.0.1}
ListenAddress = 127.0.0.1
[lab]
KnownPeers = {127.0.0.1}
"""

_LIBS = ("mne_lsl.lsl", "pylsl")


def write_lsl_config(path: PathLike) -> Path:
    """Write the machine-only liblsl configuration to ``path`` (atomically) and return it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write_text(path, MACHINE_ONLY_CONFIG)


def is_machine_only(path: PathLike | None) -> bool:
    """Whether ``path`` is a readable liblsl configuration that resolves on this machine only."""
    if not path or not Path(path).is_file():
        return False
    lines = {line.replace(" ", "").lower() for line in Path(path).read_text().splitlines()}
    return "resolvescope=machine" in lines and "ipv6=disable" in lines


def _default_path() -> Path:
    uid = os.getuid() if hasattr(os, "getuid") else os.getpid()
    return Path(tempfile.gettempdir()) / f"neurodecode-lsl-{uid}" / "lsl_api.cfg"


def use_machine_only(path: PathLike | None = None) -> Path:
    """Write the machine-only configuration and point ``LSLAPICFG`` at it, before liblsl loads.

    Parameters
    ----------
    path : path-like | None
        Where to write it; default ``<tmp>/neurodecode-lsl-<uid>/lsl_api.cfg``.

    Returns
    -------
    path : Path
        The configuration file in force.

    Raises
    ------
    RuntimeError
        When liblsl was already loaded in this process with a configuration that is not machine-only
        (liblsl reads it once; the fix is to call this first, or to set ``LSLAPICFG`` before starting
        Python).
    """
    current = os.environ.get(ENV_VAR)
    loaded = [m for m in _LIBS if m in sys.modules]
    if loaded:
        if is_machine_only(current):
            return Path(current)
        raise RuntimeError(f"{loaded[0]} was imported before the machine-only LSL configuration was set "
                           f"({ENV_VAR}={current!r}); liblsl reads its configuration once, so LSL could reach the "
                           "network. Call neurodecode.streaming.lslconfig.use_machine_only() before importing "
                           f"mne_lsl/pylsl, or start Python with {ENV_VAR} pointing at a file with "
                           "'ResolveScope = machine' and 'IPv6 = disable'.")
    target = Path(path) if path is not None else _default_path()
    if not (target.is_file() and target.read_text() == MACHINE_ONLY_CONFIG):
        write_lsl_config(target)
    os.environ[ENV_VAR] = str(target)
    return target


def import_mne_lsl() -> ModuleType:
    """``mne_lsl``, imported after :func:`use_machine_only` (its ``lsl``, ``stream`` and ``player`` loaded).

    Raises
    ------
    ImportError
        With the install command, when MNE-LSL (or its liblsl) is missing.
    """
    use_machine_only()
    try:
        import mne_lsl
        import mne_lsl.lsl
        import mne_lsl.player
        import mne_lsl.stream  # noqa: F401
    except ImportError as err:
        raise ImportError(f"LSL sources need MNE-LSL: pip install 'neurodecode[stream]' (or pip install mne-lsl); "
                          f"importing it failed: {err}") from None
    except RuntimeError as err:  # liblsl not found or not loadable
        raise ImportError(f"MNE-LSL is installed but its liblsl could not be loaded ({err}); see "
                          "https://mne.tools/mne-lsl/ for installing liblsl.") from None
    return mne_lsl


def lsl_available() -> tuple[bool, str]:
    """Whether MNE-LSL and liblsl load here, and if not, why (for skips and messages)."""
    try:
        mod = import_mne_lsl()
        return True, f"mne_lsl {mod.__version__}, liblsl {mod.lsl.library_version()}"
    except (ImportError, RuntimeError) as err:
        return False, str(err)
