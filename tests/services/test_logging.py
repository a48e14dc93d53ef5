"""Service logs: JSON lines off a terminal, readable lines on one, context and level honoured."""

from __future__ import annotations

import io
import json
import os
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
import structlog

from services.logging import configure_logging


@pytest.fixture(autouse=True)
def fresh_structlog() -> Iterator[None]:
    structlog.contextvars.clear_contextvars()
    yield
    structlog.contextvars.clear_contextvars()
    structlog.reset_defaults()


def json_lines(text: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in text.splitlines()]


def test_lines_are_json_with_level_utc_timestamp_and_bound_context(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging(json=True)
    structlog.contextvars.bind_contextvars(service="worker", worker="w2")
    structlog.get_logger().info("epoch done", epoch=3)
    (line,) = json_lines(capsys.readouterr().out)
    assert line["event"] == "epoch done"
    assert (line["level"], line["epoch"], line["service"], line["worker"]) == (
        "info",
        3,
        "worker",
        "w2",
    )
    stamp = str(line["timestamp"])
    assert stamp.endswith("Z")
    assert datetime.fromisoformat(stamp).utcoffset() == UTC.utcoffset(None)


def test_stdout_that_is_not_a_terminal_gets_json(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging()
    structlog.get_logger().warning("disk low", free_mb=12)
    (line,) = json_lines(capsys.readouterr().out)
    assert (line["event"], line["level"], line["free_mb"]) == ("disk low", "warning", 12)


def test_a_terminal_gets_readable_lines_not_json() -> None:
    controller, terminal = os.openpty()
    try:
        with os.fdopen(terminal, "w", closefd=False) as stream:
            configure_logging(stream=stream)
            structlog.get_logger().info("controller ready", device="cpu")
            stream.flush()
        text = os.read(controller, 4096).decode()
    finally:
        os.close(controller)
        os.close(terminal)
    assert "controller ready" in text
    assert "device" in text
    assert "cpu" in text
    with pytest.raises(json.JSONDecodeError):
        json.loads(text)


def test_forced_console_rendering_off_a_terminal_has_no_colour_codes() -> None:
    stream = io.StringIO()
    configure_logging(json=False, stream=stream)
    structlog.contextvars.bind_contextvars(service="sink")
    structlog.get_logger().info("stored", rows=5)
    text = stream.getvalue()
    assert "stored" in text
    assert "rows=5" in text
    assert "service=sink" in text
    assert "\x1b[" not in text


def test_lines_below_the_level_are_dropped(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(level="warning", json=True)
    log = structlog.get_logger()
    log.debug("hidden")
    log.info("hidden too")
    log.warning("shown")
    log.error("shown too")
    assert [line["event"] for line in json_lines(capsys.readouterr().out)] == [
        "shown",
        "shown too",
    ]


def test_configuring_again_replaces_rather_than_duplicates(
    capsys: pytest.CaptureFixture[str],
) -> None:
    log = structlog.get_logger("made early")
    configure_logging(level="info", json=True)
    configure_logging(level="info", json=True)
    log.info("once")
    assert len(json_lines(capsys.readouterr().out)) == 1
    configure_logging(level="error", json=True)
    log.info("now filtered")
    assert capsys.readouterr().out == ""


def test_exceptions_are_rendered_into_the_json_line(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(json=True)
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        structlog.get_logger().exception("handler failed")
    (line,) = json_lines(capsys.readouterr().out)
    assert "RuntimeError: boom" in str(line["exception"])


def test_an_unknown_level_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown log level 'verbose'"):
        configure_logging(level="verbose")
