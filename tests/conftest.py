"""Every test closes what it opened: a publisher or subscriber left open outlives its test.

A leaked worker node kept reconnecting under its id to the ports the next test bound and
broke that test's readiness, minutes of hang far from the leak. So each test's own
publishers and subscribers (made in the test or its function-scoped fixtures) must be
closed by the end of its teardown; one that is not is closed here and fails the test that
made it, named by its sender or address.
"""

from __future__ import annotations

import functools
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from bus import Publisher, Subscriber

pytest_plugins = ["pytester"]


@pytest.fixture(autouse=True)
def _closes_what_it_opens(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    made: weakref.WeakSet[Publisher | Subscriber] = weakref.WeakSet()
    for kind in (Publisher, Subscriber):
        monkeypatch.setattr(kind, "__init__", _tracked(kind.__init__, made))
    yield
    left = [item for item in list(made) if not item.closed]
    for item in left:
        item.close()
    if left:
        pytest.fail(f"left open by this test: {', '.join(map(_name, left))}", pytrace=False)


def _tracked(init: Callable[..., None], made: weakref.WeakSet[Any]) -> Callable[..., None]:
    @functools.wraps(init)
    def tracking(self: Publisher | Subscriber, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        made.add(self)

    return tracking


def _name(item: Publisher | Subscriber) -> str:
    if isinstance(item, Publisher):
        return f"the publisher of {item.sender_id!r} at {item.address or 'no address'}"
    topics = b", ".join(item._prefixes).decode()
    return f"a subscriber of {topics} at {', '.join(item.addresses) or 'no address'}"
