"""A service's notion of time: its wall clock and its incarnation.

Incarnations order a sender's restarts (a subscriber refuses an earlier one as stale), so they
must grow across restarts even when the host's clock is stepped back. Each service keeps its
last incarnation in its data folder and takes the later of its clock and that plus one.

The clock is `time.time_ns`, shifted by `LEYLINE_CLOCK_OFFSET_S` seconds when that is set: a
test-only setting that simulates a host whose clock runs ahead or behind (network namespaces
share the kernel's clock, so a multi-host test cannot set one host's clock any other way).
Every send time, incarnation and age a service computes reads this one clock.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import structlog

#: Seconds added to every reading of the service's clock (tests only: simulated skew).
CLOCK_OFFSET_VARIABLE = "LEYLINE_CLOCK_OFFSET_S"

Clock = Callable[[], int]

_log = structlog.get_logger("leyline.clock")


def service_clock(env: Mapping[str, str] | None = None) -> Clock:
    """The wall clock in ns, shifted by `LEYLINE_CLOCK_OFFSET_S` (read once, here)."""
    text = (os.environ if env is None else env).get(CLOCK_OFFSET_VARIABLE, "").strip()
    if not text:
        return time.time_ns
    try:
        offset_ns = int(float(text) * 1e9)
    except ValueError:
        raise ValueError(f"{CLOCK_OFFSET_VARIABLE} = {text!r}: not a number of seconds") from None
    _log.warning("clock offset simulated", offset_s=offset_ns / 1e9)
    return lambda: time.time_ns() + offset_ns


def next_incarnation(path: Path, clock: Clock = time.time_ns) -> int:
    """This start's incarnation: later than the last one kept in `path`, then kept there.

    The file is written beside and renamed over, so a crash leaves the old value or the new
    one, never a torn one. An unreadable file is reported and the clock alone decides.
    """
    last = 0
    if path.is_file():
        try:
            last = int(path.read_text().strip())
        except ValueError:
            _log.warning("incarnation file unreadable, using the clock", path=str(path))
    incarnation = max(clock(), last + 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    with partial.open("w") as file:
        file.write(f"{incarnation}\n")
        file.flush()
        os.fsync(file.fileno())
    os.replace(partial, path)
    return incarnation
