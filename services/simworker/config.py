"""`leyline simulate` settings: how many simulated workers, how they are spread, their pace."""

from __future__ import annotations

from typing import Annotated

import msgspec

from services.config import Address, FilePath, PositiveInt, Seconds

_Id = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_\-]{1,32}$")]


def _help(text: str) -> msgspec.Meta:
    return msgspec.Meta(description=text)


class SimulateConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Simulated workers `<prefix><first>`..: the real protocol, no training, many per process."""

    workers: Annotated[PositiveInt, _help("simulated workers in all")] = 16
    per_process: Annotated[
        int, msgspec.Meta(ge=1, le=256, description="workers per OS process at most")
    ] = 64
    prefix: Annotated[_Id, _help("worker ids are this prefix and a number")] = "sim"
    first: Annotated[PositiveInt, _help("number of the first worker")] = 1
    commands: Annotated[Address, _help("connect to the controller's commands")] = (
        "controller@tcp://127.0.0.1:5550"
    )
    intake: Annotated[
        tuple[Address, ...],
        msgspec.Meta(min_length=1, description="each publisher connects to each of these"),
    ] = ("controller@tcp://127.0.0.1:5551", "sink@tcp://127.0.0.1:5552")
    epochs: Annotated[PositiveInt, _help("epochs each worker simulates")] = 20
    epoch_s: Annotated[Seconds, _help("seconds between two epochs (every worker at once)")] = 1.0
    start_at: Annotated[
        float | None, _help("unix time of the first epoch (default: once all are connected)")
    ] = None
    connect_timeout_s: Annotated[Seconds, _help("longest wait for the peers to hear us")] = 60.0
    settle_s: Annotated[Seconds, _help("pumping after the last epoch, for the last acks")] = 3.0
    data_dir: Annotated[FilePath, _help("each worker's incarnation is kept here")] = "leyline-data"
    seed: Annotated[int, msgspec.Meta(ge=0, description="fixes every simulated curve")] = 0
    results: Annotated[FilePath | None, _help("write what every worker saw here, as JSON")] = None
    nice: Annotated[
        int,
        msgspec.Meta(
            ge=0,
            le=19,
            description="niceness added to the simulated workers' processes: a load generator "
            "on the services' host yields the CPU to them",
        ),
    ] = 10
