"""Tools that watch a run's bus as a peer: topic statistics, MCAP recordings, playback.

`recording`, `recorder` and `player` need the optional `mcap` package
(`pip install 'esper-leyline[record]'`); the rest of leyline never imports them.
"""

from services.observer.endpoints import BUS_MAP_FILE, TOOL_IDENTITY, BusMap, read_bus_map
from services.observer.listener import listen, open_listener
from services.observer.stats import BusStats, Rate, TopicStats

__all__ = [
    "BUS_MAP_FILE",
    "TOOL_IDENTITY",
    "BusMap",
    "BusStats",
    "Rate",
    "TopicStats",
    "listen",
    "open_listener",
    "read_bus_map",
]
