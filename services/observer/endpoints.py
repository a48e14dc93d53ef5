"""Where a tool meets a run's bus: the stack writes `bus.json`, `leyline topic/record/play` read it.

A tool connects to publishers that bind, as any subscriber would: the controller's command
publisher, and each worker's publisher, which in a stack also binds an address of its own for
tools (`worker.publish`). A publisher sends nothing to a connection that has not subscribed,
and a tool's connection ends with the tool (the binding side drops what it queued for it), so
tools come and go without the run noticing.
"""

from __future__ import annotations

from pathlib import Path

import msgspec

from services.config import ConfigError

BUS_MAP_FILE = "bus.json"
#: The identity a stack's tools authenticate as (its key is created with the stack's).
TOOL_IDENTITY = "tool"


class BusMap(msgspec.Struct, frozen=True, kw_only=True):
    """A run's endpoints as a tool needs them."""

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
            f"{data_dir}`, or name the publishers with --connect"
        ) from None
    except msgspec.DecodeError as error:
        raise ConfigError(f"invalid {path}: {error}") from None
