"""`leyline schema`: show the contracts, export their JSON Schema, write and check the lock."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from leyline.registry import parse_tag
from leyline.schema import DEFAULT_LOCK_PATH, check, export, lock, read_lock, render, write_lock
from leyline.wire import REGISTRY


def add_parser(subparsers: Any) -> None:
    schema = subparsers.add_parser("schema", help="inspect the wire contracts")
    actions = schema.add_subparsers(dest="schema_command", required=True, metavar="ACTION")
    show = actions.add_parser("show", help="a table of every contract and its tag")
    show.set_defaults(handler=_show)
    exported = actions.add_parser("export", help="the JSON Schema of every tag")
    exported.add_argument("--out", type=Path, help="write to this file instead of stdout")
    exported.set_defaults(handler=_export)
    locker = actions.add_parser("lock", help="rewrite the schema lock from the current contracts")
    locker.add_argument("--lock", type=Path, default=DEFAULT_LOCK_PATH, help="lock file path")
    locker.set_defaults(handler=_lock)
    checker = actions.add_parser("check", help="fail on a breaking change against the lock")
    checker.add_argument("--lock", type=Path, default=DEFAULT_LOCK_PATH, help="lock file path")
    checker.set_defaults(handler=_check)
    described = actions.add_parser("asyncapi", help="the bus as an AsyncAPI 3.0 document (JSON)")
    described.add_argument("--out", type=Path, help="write to this file instead of stdout")
    described.set_defaults(handler=_asyncapi)


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


def _export(args: argparse.Namespace) -> int:
    text = render(export())
    if args.out is None:
        sys.stdout.write(text)
    else:
        args.out.write_text(text, encoding="utf-8")
    return 0


def _asyncapi(args: argparse.Namespace) -> int:
    from services.asyncapi import asyncapi  # the services it describes load only when asked

    text = render(asyncapi())
    if args.out is None:
        sys.stdout.write(text)
    else:
        args.out.write_text(text, encoding="utf-8")
    return 0


def _lock(args: argparse.Namespace) -> int:
    document = write_lock(args.lock)
    print(f"wrote {len(document['tags'])} tags to {args.lock}")
    return 0


def _check(args: argparse.Namespace) -> int:
    """Exit 0 when every locked tag is still compatible, else 1 with one line per change."""
    try:
        locked = read_lock(args.lock)
    except (OSError, ValueError) as exc:
        print(f"cannot read the schema lock {args.lock}: {exc}", file=sys.stderr)
        return 1
    current = lock()
    changes = check(current, locked)
    if changes:
        for change in changes:
            print(change)
        print(
            f"schema check failed: {len(changes)} breaking change(s); bump the major of each "
            "tag named above, or run `leyline schema lock` to accept them on purpose",
            file=sys.stderr,
        )
        return 1
    print(f"schema compatible: {len(current['tags'])} tags")
    if current != locked:
        print("the lock is behind (additive changes): run `leyline schema lock` to update it")
    return 0
