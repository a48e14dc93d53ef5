"""A tool's subscriber on a run's bus, connected to the publishers that bind.

A tool subscribes like any other peer and publishes nothing; under CURVE it proves its own
tool-role key, which may subscribe to everything and publish nowhere (`bus.identity`). It must
keep reading: a tool that falls a whole send queue (10,000 messages) behind makes its
publishers count drops.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

from bus import Channel, SocketOptions, Subscriber
from bus.security import Curve, SecurityError
from services.config import ConfigError
from services.observer.endpoints import BusMap

#: A tool often starts before the run it watches: retry a missing publisher every 0.2 s.
TOOL_SOCKET_OPTIONS = SocketOptions(reconnect_max_s=0.2)


def tool_security(bus: BusMap, identity: str) -> Curve | None:
    """CURVE with `identity`'s key from the run's key directory (None on an insecure run)."""
    if bus.insecure:
        return None
    try:
        return Curve.from_directory(bus.keys_dir, identity)
    except SecurityError as error:
        raise ConfigError(str(error)) from None


def open_listener(
    bus: BusMap, identity: str, channels: Iterable[Channel] = tuple(Channel)
) -> Subscriber:
    """A subscriber to every scope of `channels`, connected to the run's binding publishers.
    Signals are not aged: a tool shows what arrives, late or not."""
    subscriber = Subscriber(
        [],
        [(channel, None) for channel in channels],
        options=TOOL_SOCKET_OPTIONS,
        security=tool_security(bus, identity),
    )
    for address in bus.publishers:
        subscriber.attach(address, bind=False)
    return subscriber


def listen(
    subscriber: Subscriber,
    duration_s: float | None,
    should_stop: Callable[[], bool] = lambda: False,
    tick: Callable[[], None] = lambda: None,
) -> None:
    """Deliver to the subscriber's handlers for `duration_s` (None: until `should_stop`)."""
    deadline = None if duration_s is None else time.monotonic() + duration_s
    while not should_stop():
        if deadline is not None and time.monotonic() >= deadline:
            return
        subscriber.poll(0.05)
        tick()
