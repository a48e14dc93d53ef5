"""The `leyline` command: one subcommand module per job, each adding its own parser."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from services.config import ConfigError

#: Subcommand modules, each with `add_parser(subparsers)` that sets `handler` on its parser.
_COMMANDS = (
    "services.cli.schema",
    "services.cli.keys",
    "services.cli.proxy",
    "services.cli.events",
    "services.cli.report",
    "services.cli.export",
    "services.cli.sink",
    "services.cli.controller",
    "services.cli.worker",
    "services.cli.simulate",
    "services.cli.up",
    "services.cli.chaos",
    "services.cli.topic",
    "services.cli.record",
    "services.cli.play",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="leyline", description="Typed, enforced event bus for morphogenetic training."
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in _COMMANDS:
        importlib.import_module(name).add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the arguments and run the chosen subcommand; its return value is the exit code."""
    args = build_parser().parse_args(argv)
    try:
        code: int = args.handler(args)
    except ConfigError as error:
        print(f"leyline {args.command}: {error}", file=sys.stderr)
        return 2
    return code


if __name__ == "__main__":
    sys.exit(main())
