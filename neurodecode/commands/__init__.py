"""Plain (non-Lightning) subcommands of ``neurodecode``.

Each module exposes ``HELP`` (one line for ``neurodecode --help``), optionally ``DESCRIPTION``,
``add_arguments(parser)`` and ``run(args) -> int``. Heavy imports go inside ``run``.
"""
