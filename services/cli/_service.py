"""What the service subcommands share: config flags, logging, and the node on the bus."""

from __future__ import annotations

import argparse
import resource
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import msgspec
import structlog
import zmq

from bus import Channel, SemanticGuard
from bus.security import Curve, SecurityError
from services.addresses import replay_addresses
from services.clock import next_incarnation, service_clock
from services.config import (
    BusConfig,
    ConfigError,
    add_config_file_flag,
    add_config_flags,
    config_from_args,
)
from services.logging import configure_logging
from services.node import Node

ConfigT = TypeVar("ConfigT", bound=msgspec.Struct)
#: Open files asked for when the hard limit is unlimited.
MAX_OPEN_FILES = 65_536


def add_service_parser(
    subparsers: Any, name: str, help_text: str, cls: type[msgspec.Struct]
) -> argparse.ArgumentParser:
    """A subcommand with `--config`, `--log-level`, its own settings and the bus settings."""
    parser: argparse.ArgumentParser = subparsers.add_parser(name, help=help_text)
    add_config_file_flag(parser)
    parser.add_argument("--log-level", default="info", help="debug, info, warning or error")
    add_config_flags(parser, cls, name)
    add_config_flags(parser, BusConfig, "bus")
    return parser


def raise_open_file_limit() -> int:
    """Lift this process's soft limit on open files to its hard limit; returns the new one.

    Every peer is a connection, so a controller driven by 1,024 workers holds over 2,000
    sockets (intake and commands), past the common default soft limit of 1,024, where libzmq
    would refuse further connections (EMFILE).
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        wanted = MAX_OPEN_FILES if hard == resource.RLIM_INFINITY else hard
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, wanted), hard))
        soft = max(soft, wanted)
    return soft


def load_service(
    cls: type[ConfigT], section: str, args: argparse.Namespace
) -> tuple[ConfigT, BusConfig]:
    """The service's settings and the bus settings, logging configured and context bound."""
    config = config_from_args(cls, section, args)
    bus = config_from_args(BusConfig, "bus", args)
    configure_logging(args.log_level)
    structlog.contextvars.bind_contextvars(service=section)
    # Every peer and every replay request is a socket: let this process's ZeroMQ context
    # (libzmq caps it at 1,023 sockets by default) open as many as it may open files.
    zmq.Context.instance().set(zmq.MAX_SOCKETS, raise_open_file_limit())
    return config, bus


def node_security(node_id: str, bus: BusConfig) -> Curve | None:
    """CURVE with `node_id`'s key from the key directory, or None when told to run insecure.

    A missing key is a configuration error naming what to do, not a silent fall-back.
    """
    log = structlog.get_logger("leyline.security")
    if bus.insecure:
        log.warning(
            "running INSECURE: plaintext, and every peer is believed; use only for debugging"
        )
        return None
    try:
        security = Curve.from_directory(bus.keys_dir, node_id)
    except SecurityError as error:
        raise ConfigError(f"invalid config: bus.keys_dir = {bus.keys_dir}: {error}") from None
    log.info("CURVE on", identity=security.identity, trusted=len(security.trust.peers()))
    return security


def make_node(
    node_id: str,
    bus: BusConfig,
    *,
    subscribe: Iterable[tuple[Channel, str | None]],
    publish_bind: Sequence[str] = (),
    publish_connect: Sequence[str] = (),
    subscribe_bind: Sequence[str] = (),
    subscribe_connect: Sequence[str] = (),
    guards: Mapping[Channel, SemanticGuard] | None = None,
    state_dir: Path,
    replay_store: Path | None = None,
    curve: Curve | None = None,
    publisher_thread: bool = True,
) -> Node:
    """A node configured by the bus settings; stops cleanly on SIGINT and SIGTERM.

    With `replay_store` its replay window is durable: a restarted node can still replay what
    its earlier incarnation sent, so a crash never turns undelivered messages into silent loss.
    Its incarnation is kept in `state_dir`, so a restart is a later one whatever the clock does.
    `curve` is the node's key when the caller already holds it (many nodes of one process
    sharing one trust store); else it is loaded from `bus.keys_dir`. Without
    `publisher_thread` the caller services the publisher itself (`Node.pump`) and flushes
    what it publishes.
    """
    replay_address, replay_advertise = replay_addresses(bus, [*publish_connect, *subscribe_connect])
    clock = service_clock()
    node = Node(
        node_id,
        security=curve or node_security(node_id, bus),
        subscribe=subscribe,
        publish_bind=publish_bind,
        publish_connect=publish_connect,
        subscribe_bind=subscribe_bind,
        subscribe_connect=subscribe_connect,
        guards=guards,
        options=bus.socket_options(),
        heartbeat_s=bus.heartbeat_s,
        stale_after_s=bus.stale_after_s,
        max_signal_age_s=bus.max_signal_age_s,
        metrics_port=bus.metrics_port,
        replay_window=bus.replay_window,
        replay_address=replay_address,
        replay_advertise=replay_advertise,
        replay_store=replay_store,
        incarnation=next_incarnation(state_dir / "incarnations" / node_id, clock),
        clock=clock,
        publisher_thread=publisher_thread,
    )
    node.handle_signals()
    return node
