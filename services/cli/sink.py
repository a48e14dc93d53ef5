"""`leyline sink`: store every telemetry event, command and ack in SQLite."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import structlog

from services.cli._service import add_service_parser, load_service, make_node
from services.config import SinkConfig
from services.sink.daemon import AUDITED, SinkDaemon
from services.sink.store import TelemetryStore


def add_parser(subparsers: Any) -> None:
    parser = add_service_parser(subparsers, "sink", "run the telemetry sink", SinkConfig)
    parser.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    config, bus = load_service(SinkConfig, "sink", args)
    node = make_node(
        "sink",
        bus,
        subscribe=[(channel, None) for channel in AUDITED],
        subscribe_bind=[config.intake],
        subscribe_connect=list(config.relays),
        state_dir=Path(config.db).parent,
    )
    log = structlog.get_logger("leyline.sink")
    with TelemetryStore(config.db) as store:
        daemon = SinkDaemon(
            node, store, batch_size=config.batch_size, flush_interval_s=config.flush_interval_s
        )
        log.info("sink listening", intake=config.intake, db=config.db)
        try:
            daemon.run()
        finally:
            node.close()
        log.info("sink stopped", stored=daemon.stored, duplicates=daemon.duplicates)
    return 0
