"""`leyline play IN.mcap`: a recording published again onto a (fresh) bus, as its senders."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from bus import Channel
from bus.security import SecurityError
from services.cli._tool import add_bus_flags, bus_of


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "play", help="publish a recording again, each message as its sender"
    )
    parser.add_argument("recording", type=Path, help="the .mcap file `leyline record` wrote")
    pace = parser.add_mutually_exclusive_group()
    pace.add_argument("--speed", type=float, default=1.0, help="times the recorded pace")
    pace.add_argument("--fast", action="store_true", help="as fast as the bus takes it")
    parser.add_argument(
        "--sender", action="append", help="play only this sender's messages (repeatable)"
    )
    parser.add_argument(
        "--channel", action="append", choices=[c.value for c in Channel], help="only these"
    )
    parser.add_argument(
        "--intake",
        action="append",
        help="a subscriber to publish to, ID@tcp://HOST:PORT (default: the run's bus.json)",
    )
    parser.add_argument(
        "--answer-commands",
        action="store_true",
        help="hold each ack until the bus carries the command it answers (a live controller)",
    )
    parser.add_argument(
        "--wait-s", type=float, default=10.0, help="longest wait for subscribers before playing"
    )
    add_bus_flags(parser)
    parser.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    try:
        from services.observer.player import Player
        from services.observer.recording import read_recording
    except ImportError as error:
        print(f"leyline play: {error}: pip install 'esper-leyline[record]'", file=sys.stderr)
        return 2
    bus = bus_of(args)
    channels = {Channel(c) for c in args.channel} if args.channel else set(Channel)
    messages = [
        m
        for m in read_recording(args.recording)
        if m.channel in channels and (args.sender is None or m.header.sender in args.sender)
    ]
    if not messages:
        print("leyline play: nothing to play (check --sender and --channel)", file=sys.stderr)
        return 1
    try:
        player = Player(
            {m.header.sender for m in messages},
            args.intake or bus.intakes,
            keys_dir=bus.keys_dir,
            insecure=bus.insecure,
            commands=bus.publishers if args.answer_commands else (),
            tool_identity=args.id,
        )
    except SecurityError as error:
        print(f"leyline play: {error}", file=sys.stderr)
        return 2
    try:
        player.wait_for_subscribers(messages, args.wait_s)
        for topic in player.stats.unheard_topics:
            print(f"leyline play: no subscriber for {topic}", file=sys.stderr)
        stats = player.play(messages, None if args.fast else args.speed, args.answer_commands)
    finally:
        player.close()
    print(
        f"leyline play: {stats.published} messages from {len(player.publishers)} senders "
        f"published, {stats.dropped} dropped, {stats.unanswered} acks unanswered",
        flush=True,
    )
    return 0
