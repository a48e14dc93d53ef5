"""Real-process tests: a failed test's report carries the tail of every service log it started."""

from __future__ import annotations

from collections.abc import Generator

import pytest


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """A failed test's report gets the log tails of every service its fixtures started."""
    report = yield
    if report.failed:
        for value in getattr(item, "funcargs", {}).values():
            tails = getattr(value, "log_tails", None)
            if callable(tails):
                report.sections.append(("service logs", tails()))
    return report
