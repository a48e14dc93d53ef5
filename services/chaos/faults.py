"""Doing a fault to a running stack, while the memory watch keeps sampling."""

from __future__ import annotations

import time
from collections.abc import Callable

from services.chaos.launcher import ChaosStack
from services.chaos.memory import MemoryWatch
from services.chaos.schedule import Fault, FaultKind

#: Seconds between memory samples while waiting.
SAMPLE_INTERVAL_S = 0.25


class FaultInjector:
    """Breaks services of `stack` one fault at a time and brings them back."""

    def __init__(self, stack: ChaosStack, memory: MemoryWatch | None = None) -> None:
        self.stack = stack
        self.memory = memory or MemoryWatch()
        self.done: list[Fault] = []

    def wait(self, seconds: float) -> None:
        """Let the stack run for `seconds`, sampling memory as it goes."""
        self.wait_until(lambda: False, seconds)

    def wait_until(self, condition: Callable[[], bool], timeout_s: float) -> bool:
        """Sample memory until `condition()` holds or `timeout_s` passes; True if it held."""
        deadline = time.monotonic() + timeout_s
        while True:
            self.memory.sample(self.stack.pids(), self.stack.settled)
            if condition():
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            time.sleep(min(SAMPLE_INTERVAL_S, remaining))

    def inject(self, fault: Fault) -> None:
        """Do `fault`, hold it, undo it (restart or continue), then keep calm for a while."""
        name = fault.service
        if fault.kind is FaultKind.KILL:
            self.stack.kill(name)
            self.wait(fault.hold_s)
            self.stack.launch(name)
        elif fault.kind is FaultKind.PARTITION:
            self.stack.cut(name)
            self.wait(fault.hold_s)
            self.stack.heal(name)
        else:
            self.stack.pause(name)
            self.wait(fault.hold_s)
            self.stack.resume(name)
        self.done.append(fault)
        self.wait(fault.quiet_s)
