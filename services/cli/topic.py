"""`leyline topic list|echo|hz|info`: watch the live bus as a tool peer that publishes nothing."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from bus import Channel, Envelope
from services.cli._tool import add_bus_flags, bus_of, stop_on_signals
from services.observer.listener import listen, open_listener
from services.observer.messages import as_json, as_line, type_name
from services.observer.stats import BusStats
from services.sink.render import aligned_table


def add_parser(subparsers: Any) -> None:
    topic = subparsers.add_parser("topic", help="watch the live bus: publishers, messages, rates")
    actions = topic.add_subparsers(dest="topic_command", required=True, metavar="ACTION")
    listed = actions.add_parser("list", help="publishers and topics heard in a window")
    _window(listed, 6.0)
    listed.set_defaults(handler=_list)
    echo = actions.add_parser("echo", help="decoded messages, one a line")
    echo.add_argument("--channel", action="append", choices=[c.value for c in Channel])
    echo.add_argument("--scope", help="only this scope (a worker id, say)")
    echo.add_argument("--type", help="only this message type (CommandAck, ...)")
    echo.add_argument("--json", action="store_true", help="one JSON object a line")
    echo.add_argument("--count", type=int, help="stop after this many messages")
    _window(echo, None)
    echo.set_defaults(handler=_echo)
    hz = actions.add_parser("hz", help="rate, size and bandwidth per topic")
    hz.add_argument("--window", type=float, default=5.0, help="rolling window in seconds")
    hz.add_argument("--every", type=float, default=2.0, help="seconds between tables")
    _window(hz, None)
    hz.set_defaults(handler=_hz)
    info = actions.add_parser("info", help="per topic: publishers, types, gaps, rejections")
    _window(info, 6.0)
    info.set_defaults(handler=_info)


def _window(parser: argparse.ArgumentParser, default: float | None) -> None:
    until = "until interrupted" if default is None else f"{default:g}"
    parser.add_argument(
        "--duration", type=float, default=default, help=f"seconds to listen (default: {until})"
    )
    add_bus_flags(parser)


def _list(args: argparse.Namespace) -> int:
    stats, subscriber = _watch(args)
    publishers = stats.publishers(subscriber)
    subscriber.close()
    if not publishers:
        print(f"nothing heard in {args.duration:g} s", file=sys.stderr)
        return 1
    print(aligned_table(("publisher", "topics"), _publisher_rows(publishers)))
    return 0


def _publisher_rows(publishers: dict[str, list[str]]) -> list[tuple[str, str]]:
    return [
        (sender, " ".join(topics) or "(heartbeats only)") for sender, topics in publishers.items()
    ]


def _echo(args: argparse.Namespace) -> int:
    bus = bus_of(args)
    channels = [Channel(c) for c in args.channel] if args.channel else list(Channel)
    subscriber = open_listener(bus, args.id, channels)
    shown = 0
    stopping = stop_on_signals()

    def show(envelope: Envelope[Any]) -> None:
        nonlocal shown
        if args.scope is not None and envelope.scope != args.scope:
            return
        if args.type is not None and args.type not in (
            type_name(envelope.message),
            type(envelope.message).__struct_config__.tag,
        ):
            return
        if args.count is not None and shown >= args.count:
            return
        shown += 1
        print(as_json(envelope).decode() if args.json else as_line(envelope), flush=True)

    for channel in channels:
        subscriber.on(channel, show)
    done = args.count is not None
    listen(subscriber, args.duration, lambda: stopping() or (done and shown >= args.count))
    subscriber.close()
    return 0


def _hz(args: argparse.Namespace) -> int:
    subscriber = open_listener(bus_of(args), args.id)
    stats = BusStats(args.window)
    stats.watch(subscriber)
    stopping = stop_on_signals()
    next_table = time.monotonic() + args.every

    def table() -> None:
        nonlocal next_table
        if time.monotonic() < next_table:
            return
        next_table = time.monotonic() + args.every
        _print_rates(stats)

    listen(subscriber, args.duration, stopping, table)
    _print_rates(stats)
    subscriber.close()
    return 0


def _print_rates(stats: BusStats) -> None:
    rows = [
        (r.topic, str(r.messages), f"{r.hz:.1f}", f"{r.mean_bytes:.0f}", _bandwidth(r.bytes_per_s))
        for r in stats.rates()
    ]
    header = ("topic", "msgs", "rate (Hz)", "mean size (B)", "bandwidth")
    print(aligned_table(header, rows) + "\n", flush=True)


def _bandwidth(bytes_per_s: float) -> str:
    for unit, scale in (("MB/s", 1e6), ("kB/s", 1e3)):
        if bytes_per_s >= scale:
            return f"{bytes_per_s / scale:.1f} {unit}"
    return f"{bytes_per_s:.0f} B/s"


def _info(args: argparse.Namespace) -> int:
    stats, subscriber = _watch(args)
    metrics = subscriber.metrics
    subscriber.close()
    rows = [
        (
            t.topic,
            ",".join(sorted(t.publishers)) or "-",
            ",".join(f"{name}:{n}" for name, n in sorted(t.types.items())) or "-",
            str(t.messages),
            f"{t.gaps}/{t.missing}",
            ",".join(f"{reason}:{n}" for reason, n in sorted(t.rejected.items())) or "-",
        )
        for t in (stats.topics[name] for name in sorted(stats.topics))
    ]
    header = ("topic", "publishers", "types", "msgs", "gaps/missing", "rejected")
    print(aligned_table(header, rows))
    refused = {r.name.lower(): n for r, n in metrics.rejected.items() if n}
    print(
        f"\nsubscriber: {sum(metrics.delivered.values())} delivered, "
        f"{metrics.heartbeats} heartbeats, {metrics.gaps} gaps ({metrics.missing} missing), "
        f"{metrics.restarts} sender restarts, rejected: "
        + (", ".join(f"{k} {v}" for k, v in sorted(refused.items())) or "none")
    )
    return 0


def _watch(args: argparse.Namespace) -> tuple[BusStats, Any]:
    """Listen for `--duration` seconds, collecting per-topic statistics."""
    subscriber = open_listener(bus_of(args), args.id)
    stats = BusStats()
    stats.watch(subscriber)
    listen(subscriber, args.duration, stop_on_signals())
    return stats, subscriber
