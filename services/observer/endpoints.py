"""Where a tool meets a run's bus: the stack writes `bus.json`, `leyline topic/record/play` read it.

Worker publishers connect to the bus's subscribers (controller, sink), so nothing of theirs is
there for a tool to connect to. The stack gives tools taps instead: addresses a tool's
subscriber binds (the first one free), which every worker publisher also connects to (pinning
the `tool` key), so `TAPS` tools can watch at once. With no tool bound a connection just
waits: a publisher sends nothing to a peer that has not subscribed, so idle taps cost nothing.
A publisher retries a missing peer at most every 5 s (bus/sockets.py), so a tool hears every
worker within 5 s of binding. The controller's command publisher binds, so a tool connects to
it like the workers do.
"""

from __future__ import annotations

from pathlib import Path

import msgspec

from services.config import ConfigError

BUS_MAP_FILE = "bus.json"
#: The identity a stack's tools authenticate as (its key is created with the stack's).
TOOL_IDENTITY = "tool"
#: Tools that can watch one stack at the same time (`leyline record` and two `topic`s, say).
TAPS = 3


class BusMap(msgspec.Struct, frozen=True, kw_only=True):
    """A run's endpoints as a tool needs them."""

    #: A tool's subscriber binds the first free one; every worker publisher connects to each.
    taps: tuple[str, ...]
    #: Publishers that bind, named by the identity whose key a connect pins.
    publishers: tuple[str, ...]
    #: Where the services' subscribers bind: what `leyline play` publishes to.
    intakes: tuple[str, ...]
    keys_dir: str
    insecure: bool = False


def write_bus_map(data_dir: str | Path, bus: BusMap) -> Path:
    path = Path(data_dir) / BUS_MAP_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(msgspec.json.format(msgspec.json.encode(bus)) + b"\n")
    return path


def read_bus_map(data_dir: str | Path) -> BusMap:
    """The endpoints `leyline up` wrote in `data_dir`, or a ConfigError saying what to do."""
    path = Path(data_dir) / BUS_MAP_FILE
    try:
        return msgspec.json.decode(path.read_bytes(), type=BusMap)
    except FileNotFoundError:
        raise ConfigError(
            f"no {BUS_MAP_FILE} in {data_dir}: start the run with `leyline up --data-dir "
            f"{data_dir}`, or name the endpoints with --tap and --connect"
        ) from None
    except msgspec.DecodeError as error:
        raise ConfigError(f"invalid {path}: {error}") from None
