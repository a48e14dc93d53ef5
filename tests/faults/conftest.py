"""A chaos stack per test in its own folder, stopped at the end, with log tails on failure."""

from __future__ import annotations

from collections.abc import Generator, Iterator
from pathlib import Path

import pytest
from fault_stack import FaultHarness

from services.chaos import ChaosSettings

#: Short timers so that every fault resolves within seconds.
SETTINGS = ChaosSettings(workers=1, settle_s=3.0, heartbeat_s=0.25, stale_after_s=1.5)


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[FaultHarness]:
    run = FaultHarness(tmp_path / "run", SETTINGS)
    yield run
    run.close()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """A failed test's report gets the log tails of the services its harness started."""
    report = yield
    if report.failed:
        for value in getattr(item, "funcargs", {}).values():
            if isinstance(value, FaultHarness):
                report.sections.append(("service logs", value.log_tails()))
    return report
