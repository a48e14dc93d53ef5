"""A real sink database file per test, and a history builder."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sink_history import History

from services.sink import TelemetryStore


@pytest.fixture
def history() -> History:
    return History()


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "leyline-data" / "sink.db"


@pytest.fixture
def store(db_path: Path) -> Iterator[TelemetryStore]:
    with TelemetryStore(db_path) as opened:
        yield opened
