"""The ``neurodecode`` command line.

``fit | validate | test | predict`` go to :class:`NeuroDecodeCLI`, a ``LightningCLI`` subclass:
composable ``-c`` YAML files, dotted overrides, and data-to-model links so that ``n_chans``,
``n_times``, ``sfreq``, ``n_subjects`` and ``embed_dim`` are read from the data, never repeated in
YAML. Every other subcommand is a plain function in ``neurodecode/cli/<name>.py`` exposing
``HELP`` (one line), ``add_arguments(parser)`` and ``run(args) -> int``; they are imported only when
used, so ``neurodecode --help`` and ``neurodecode fit --help`` (a short overview; every LightningCLI
option with ``--help-all``) answer without importing torch.

Errors. The rule, applied around every command by :func:`main`:

- a :class:`~neurodecode.utils.UserError`, or a ``ValueError``, ``KeyError``, ``LookupError`` or
  ``OSError`` raised *by neurodecode's own code* (the innermost frame of the traceback is in the
  package), or an ``OSError`` naming its file (``filename`` set, e.g. "No such file or directory"),
  is a mistake the user can fix: its message is printed as ``neurodecode <command>: error: ...``
  and the exit status is 2;
- anything else (an exception raised inside torch, h5py, numpy, ...; a ``TypeError``; an
  ``AssertionError``) is a bug or a case our readers do not catch yet: the traceback is shown;
- ``--debug`` (anywhere on the command line) or ``NEURODECODE_DEBUG=1`` shows the traceback of a user
  error too; Ctrl-C exits with status 130 and one line.
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import os
import sys
from collections.abc import Sequence
from pathlib import Path

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
    "reconstruct": "neurodecode.cli.reconstruct",
    "recon-metrics": "neurodecode.cli.recon_metrics",
    "stream": "neurodecode.cli.stream",
    "crossval": "neurodecode.cli.crossval",
    "ablate": "neurodecode.cli.ablate",
    "export": "neurodecode.cli.export",
    "demo": "neurodecode.cli.demo",
    "encoders": "neurodecode.cli.encoders",
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
        "Global option: --debug (or NEURODECODE_DEBUG=1) shows the traceback of an error.",
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


def lightning_help(command: str) -> str:
    """The short help of ``neurodecode fit|validate|test|predict`` (no torch import)."""
    from neurodecode.cli.checks import packaged_configs
    from neurodecode.cli.encoders import encoder_lines

    lines = [
        f"usage: neurodecode {command} -c CONFIG.yaml [-c MORE.yaml] [--section.key VALUE ...] [options]",
        "",
        LIGHTNING_COMMANDS[command],
        "",
        "options of neurodecode:",
        "  -c, --config FILE       a YAML config; repeat to compose (later files and options override)",
        "  --seeds 0,1,2           run once per seed, each in <default_root_dir>/seed<N>, and write",
        "                          seeds_summary.json (mean +- sd of the test metrics)",
        "  --ckpt_path PATH|last   start from a checkpoint; 'last' resumes <default_root_dir>/checkpoints/last.ckpt",
        "  --test_after_fit BOOL   after fit, test the checkpoint selected on validation (default true)",
        "  --print_config          print the resolved config and exit",
        "  --debug                 show the traceback of an error (or NEURODECODE_DEBUG=1)",
        "  --help-all              every option of LightningCLI (trainer., model., data., checkpoint., ...)",
        "",
        "frequent overrides: --data.root DIR  --data.teacher SPEC  --trainer.max_epochs N",
        "  --trainer.default_root_dir DIR  --trainer.accelerator cpu|gpu  --model.init_args.lr LR",
        "  --model.init_args.encoder CLASS_PATH  (abbreviations are not accepted)",
        "",
        "encoders (model.init_args.encoder.class_path; 'neurodecode encoders'):",
        *encoder_lines(),
        "",
        "shipped configs (also inside the installed package; -c configs/<name> finds them anywhere):",
        *[f"  configs/{c}" for c in packaged_configs()],
        "",
        "example: neurodecode simulate --out sim_eeg && neurodecode fit -c configs/sim/eeg_atm.yaml "
        "--data.root sim_eeg",
    ]
    return "\n".join(lines)


def _innermost_file(err: BaseException) -> str:
    tb = err.__traceback__
    last = None
    while tb is not None:
        last = tb
        tb = tb.tb_next
    return last.tb_frame.f_code.co_filename if last is not None else ""


_PACKAGE_DIR = str(Path(__file__).resolve().parents[1])


def is_user_error(err: BaseException) -> bool:
    """Whether ``err`` is printed as a one-line user error (the rule of the module docstring)."""
    from neurodecode.utils import UserError

    if isinstance(err, UserError):
        return True
    if isinstance(err, OSError) and getattr(err, "filename", None):
        return True
    if isinstance(err, (ValueError, LookupError, OSError)):
        return str(Path(_innermost_file(err)).resolve()).startswith(_PACKAGE_DIR)
    return False


def _message(err: BaseException) -> str:
    if isinstance(err, KeyError) and len(err.args) == 1 and isinstance(err.args[0], str):
        return err.args[0]  # str(KeyError) quotes its message
    if isinstance(err, OSError) and getattr(err, "filename", None) and err.strerror:
        return f"{err.filename}: {err.strerror}"
    return str(err) or type(err).__name__


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``neurodecode`` console script (errors handled as the module docstring says)."""
    from neurodecode.cli.checks import debug_requested

    argv = list(sys.argv[1:] if argv is None else argv)
    debug = debug_requested(argv)
    argv = [a for a in argv if a != "--debug"]
    before = os.environ.get("NEURODECODE_DEBUG")
    if debug:
        os.environ["NEURODECODE_DEBUG"] = "1"  # DDP workers re-run the command line without --debug
    name = argv[0] if argv else ""
    try:
        return _dispatch(argv)
    except BrokenPipeError:  # the output was piped into head or less, which closed it
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print(f"\nneurodecode {name}: interrupted.", file=sys.stderr)
        return 130
    except Exception as err:
        if debug or not is_user_error(err):
            raise
        print(f"neurodecode {name}: error: {_message(err)}".replace(" : ", ": "), file=sys.stderr)
        return 2
    finally:  # --debug holds for this command only (main may be called again in the same process)
        if before is None:
            os.environ.pop("NEURODECODE_DEBUG", None)
        else:
            os.environ["NEURODECODE_DEBUG"] = before


def _dispatch(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    if argv[0] in ("-V", "--version"):
        from neurodecode._version import __version__

        print(f"neurodecode {__version__}")
        return 0
    cmd, rest = argv[0], argv[1:]
    if cmd in LIGHTNING_COMMANDS:
        if any(a in ("-h", "--help") for a in rest):
            print(lightning_help(cmd))
            return 0
        rest = ["--help" if a == "--help-all" else a for a in rest]
        from neurodecode.cli.checks import precheck_lightning

        rest = precheck_lightning(cmd, rest)  # bad paths fail here, before torch and Lightning are imported
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
