"""`leyline schema`: show the contracts."""

from __future__ import annotations

import argparse
from typing import Any

from leyline import REGISTRY, parse_tag


def add_parser(subparsers: Any) -> None:
    schema = subparsers.add_parser("schema", help="inspect the wire contracts")
    actions = schema.add_subparsers(dest="schema_command", required=True, metavar="ACTION")
    show = actions.add_parser("show", help="a table of every contract and its tag")
    show.set_defaults(handler=_show)


def _show(args: argparse.Namespace) -> int:
    rows = []
    for tag, entry in REGISTRY.entries().items():
        name, major = parse_tag(tag)
        fields = len(entry.cls.__struct_fields__)
        layout = "array" if entry.array_like else "map"
        rows.append((name, f"v{major}", tag, str(fields), layout, str(entry.budget)))
    header = ("contract", "major", "tag", "fields", "layout", "budget (B)")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))
    return 0
