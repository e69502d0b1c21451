"""The ``neurodecode`` command line: the console script, the LightningCLI subclass, one module per
plain subcommand (``HELP``, ``add_arguments(parser)``, ``run(args) -> int``)."""

from neurodecode.cli.main import main

__all__ = ["main"]
