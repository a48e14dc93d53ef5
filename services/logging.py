"""Structured logs for every service: JSON lines for machines, readable lines on a terminal.

Callers bind their context once with `structlog.contextvars.bind_contextvars(service=...,
worker=...)`; every later line carries it. Nothing here is meant for a hot path: services log
state changes and summaries, never one line per message.
"""

from __future__ import annotations

import logging
import sys
from typing import TextIO

import structlog

#: Level names accepted by `configure_logging`, lowest first.
LEVELS = ("debug", "info", "warning", "error", "critical")


def configure_logging(
    level: str = "info", json: bool | None = None, stream: TextIO | None = None
) -> None:
    """Send log lines at `level` or above to `stream` (stdout); calling it again replaces all.

    `json=None` picks JSON lines unless the stream is a terminal, where lines are rendered for
    people (with colours). Timestamps are ISO 8601 in UTC.
    """
    if level.lower() not in LEVELS:
        raise ValueError(f"unknown log level {level!r}; use one of {', '.join(LEVELS)}")
    out = sys.stdout if stream is None else stream
    terminal = out.isatty()
    as_json = not terminal if json is None else json
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer()
        if as_json
        else structlog.dev.ConsoleRenderer(colors=terminal)
    )
    processors: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
    ]
    if as_json:
        processors.append(structlog.processors.format_exc_info)
    processors.append(renderer)
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=structlog.PrintLoggerFactory(out),
        # Uncached, so a later call (a test, a CLI flag) takes effect on loggers made earlier;
        # the cost is a few microseconds per line, and lines are never per message.
        cache_logger_on_first_use=False,
    )
