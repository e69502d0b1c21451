"""``neurodecode sys-info``."""

from __future__ import annotations

import argparse
import json

HELP = ("Print versions of Python and the libraries, the devices seen, whether the CPU computes bfloat16 natively "
        "(and so the precision of CPU runs that state none) and which optional packages are installed.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def run(args: argparse.Namespace) -> int:
    from neurodecode._sys_info import sys_info

    info = sys_info(show=not args.json)
    if args.json:
        print(json.dumps(info, indent=2))
    return 0
