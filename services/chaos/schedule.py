"""Fault schedules: what to break, for how long, and how long to wait before the next one."""

from __future__ import annotations

import enum
import random
from collections.abc import Sequence

import msgspec


class FaultKind(enum.StrEnum):
    """How a service is broken."""

    #: SIGKILL, stay down for `hold_s`, then start again with the same settings.
    KILL = "kill"
    #: SIGSTOP for `hold_s`, then SIGCONT: a process that is alive but silent.
    PAUSE = "pause"
    #: Its host's cable unplugged for `hold_s`, then plugged back: a process alive and busy
    #: that nothing reaches (only when each service runs on a namespace host of its own).
    PARTITION = "partition"


class Fault(msgspec.Struct, frozen=True):
    """One fault: `kind` done to `service`, held for `hold_s`, then `quiet_s` of calm."""

    kind: FaultKind
    service: str
    hold_s: float
    quiet_s: float

    def __str__(self) -> str:
        return f"{self.kind.value} {self.service} for {self.hold_s:.1f}s"


#: How often each (kind, role) is drawn; workers are the most numerous, so the most hit.
_WEIGHTS: dict[tuple[FaultKind, str], float] = {
    (FaultKind.KILL, "worker"): 4.0,
    (FaultKind.KILL, "controller"): 2.0,
    (FaultKind.KILL, "sink"): 2.0,
    (FaultKind.PAUSE, "worker"): 1.5,
    (FaultKind.PAUSE, "controller"): 0.5,
    (FaultKind.PAUSE, "sink"): 0.5,
    (FaultKind.PARTITION, "worker"): 1.5,
    (FaultKind.PARTITION, "controller"): 0.5,
    (FaultKind.PARTITION, "sink"): 0.5,
}
#: The kinds a local stack can suffer (a partition needs hosts of their own).
LOCAL_KINDS = (FaultKind.KILL, FaultKind.PAUSE)


def random_schedule(
    count: int,
    workers: Sequence[str],
    rng: random.Random,
    *,
    kinds: Sequence[FaultKind] = LOCAL_KINDS,
    hold_s: tuple[float, float] = (0.2, 2.5),
    partition_s: tuple[float, float] = (5.0, 30.0),
    quiet_s: tuple[float, float] = (1.0, 4.0),
) -> list[Fault]:
    """`count` faults of `kinds` drawn from `rng`: the same seed gives the same schedule.

    A partition is held for `partition_s` (longer than a peer takes to go stale and a
    connection's heartbeat to time out, so links really drop), the others for `hold_s`.
    """
    choices = [choice for choice in _WEIGHTS if choice[0] in kinds]
    if not choices:
        raise ValueError("no fault kind to draw from")
    weights = [_WEIGHTS[choice] for choice in choices]
    faults = []
    for _ in range(count):
        kind, role = rng.choices(choices, weights)[0]
        service = rng.choice(list(workers)) if role == "worker" else role
        held = partition_s if kind is FaultKind.PARTITION else hold_s
        faults.append(
            Fault(
                kind,
                service,
                round(rng.uniform(*held), 2),
                round(rng.uniform(*quiet_s), 2),
            )
        )
    return faults
