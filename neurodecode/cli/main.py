"""The ``neurodecode`` command line.

``fit | validate | test | predict`` go to :class:`NeuroDecodeCLI`, a ``LightningCLI`` subclass:
composable ``-c`` YAML files, dotted overrides, and data-to-model links so that ``n_chans``,
``n_times``, ``sfreq``, ``n_subjects`` and ``embed_dim`` are read from the data, never repeated in
YAML. Every other subcommand is a plain function in ``neurodecode/cli/<name>.py`` exposing
``HELP`` (one line), ``add_arguments(parser)`` and ``run(args) -> int``; they are imported only when
used, so ``neurodecode --help`` is fast.
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import sys
from collections.abc import Sequence

LIGHTNING_COMMANDS = {
    "fit": "Train an encoder (LightningCLI: -c config.yaml [-c more.yaml] [--dotted.overrides]).",
    "validate": "Run the validation loop of a model on its data (LightningCLI).",
    "test": "Run the test loop (zero-shot retrieval on held-out concepts) of a model (LightningCLI).",
    "predict": "Embed brain responses with a trained encoder (LightningCLI).",
}

# name -> module; the one-line help comes from the module's HELP.
PLAIN_COMMANDS = {
    "simulate": "neurodecode.cli.simulate",
    "prepare": "neurodecode.cli.prepare",
    "embed": "neurodecode.cli.embed",
    "evaluate": "neurodecode.cli.evaluate",
    "export": "neurodecode.cli.export",
    "demo": "neurodecode.cli.demo",
    "sys-info": "neurodecode.cli.sys_info",
}


def _plain_help(name: str) -> str | None:
    try:
        mod = importlib.import_module(PLAIN_COMMANDS[name])
    except ModuleNotFoundError as err:  # a command not built in this version
        if err.name == PLAIN_COMMANDS[name]:
            return None
        raise
    return getattr(mod, "HELP", "")


def _available_commands() -> dict[str, str]:
    out = dict(LIGHTNING_COMMANDS)
    for name in PLAIN_COMMANDS:
        h = _plain_help(name)
        if h is not None:
            out[name] = h
    return out


def _usage() -> str:
    from neurodecode._version import __version__

    cmds = _available_commands()
    width = max(len(c) for c in cmds) + 2
    lines = [
        f"neurodecode {__version__}: decode what a person saw from EEG, MEG and fMRI.",
        "",
        "usage: neurodecode <command> [options]      (also: python -m neurodecode <command>)",
        "",
        "commands:",
    ]
    lines += [f"  {c.ljust(width)}{h}" for c, h in cmds.items()]
    lines += [
        "",
        "Run 'neurodecode <command> --help' for the options of one command.",
        "Example: neurodecode simulate --modality eeg --out sim_eeg && "
        "neurodecode fit -c configs/sim/eeg_atm.yaml --data.root sim_eeg",
    ]
    return "\n".join(lines)


def run_plain(name: str, argv: Sequence[str]) -> int:
    """Parse ``argv`` for the plain command ``name`` and run it."""
    mod = importlib.import_module(PLAIN_COMMANDS[name])
    parser = argparse.ArgumentParser(
        prog=f"neurodecode {name}", description=getattr(mod, "DESCRIPTION", None) or mod.HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    mod.add_arguments(parser)
    args = parser.parse_args(list(argv))
    rc = mod.run(args)
    return 0 if rc is None else int(rc)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``neurodecode`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    if argv[0] in ("-V", "--version"):
        from neurodecode._version import __version__

        print(f"neurodecode {__version__}")
        return 0
    cmd, rest = argv[0], argv[1:]
    if cmd in LIGHTNING_COMMANDS:
        from neurodecode.cli.lightning import run_lightning_cli

        return run_lightning_cli(cmd, rest)
    if cmd in PLAIN_COMMANDS and _plain_help(cmd) is not None:
        return run_plain(cmd, rest)
    close = difflib.get_close_matches(cmd, list(_available_commands()), n=1)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    print(f"neurodecode: unknown command '{cmd}'.{hint} Run 'neurodecode --help' for the list.", file=sys.stderr)
    return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
