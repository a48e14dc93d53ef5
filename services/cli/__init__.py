"""The `leyline` command: one subcommand module per job, each adding its own parser."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from typing import Any

from services.config import ConfigError

#: The optional dependencies (extras) a subcommand may import; without them it says so.
_OPTIONAL = frozenset({"torch", "sklearn"})
#: The extra each torch-bound subcommand comes with; the rest come with `worker`.
_EXTRA_OF = {"controller": "controller"}

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
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as missing:
            if missing.name not in _OPTIONAL:
                raise
            _add_unavailable(subparsers, name.rsplit(".", 1)[-1], missing.name)
        else:
            module.add_parser(subparsers)
    return parser


def _add_unavailable(subparsers: Any, command: str, dependency: str) -> None:
    """A subcommand whose optional dependency is not installed: it says which extra to add."""
    extra = _EXTRA_OF.get(command, "worker")
    hint = f"needs {dependency}: pip install 'esper-leyline[{extra}]'"
    parser = subparsers.add_parser(command, help=f"(unavailable: {hint})", add_help=False)

    def unavailable(args: argparse.Namespace) -> int:
        print(f"leyline {command} {hint}", file=sys.stderr)
        return 2

    parser.set_defaults(handler=unavailable, unavailable=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the arguments and run the chosen subcommand; its return value is the exit code."""
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown and not getattr(args, "unavailable", False):
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    try:
        code: int = args.handler(args)
    except ConfigError as error:
        print(f"leyline {args.command}: {error}", file=sys.stderr)
        return 2
    return code


if __name__ == "__main__":
    sys.exit(main())
