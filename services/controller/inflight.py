"""The controller's unacknowledged commands, indexed by id and by the slot they address.

The controller asks "has this slot a command in flight?" once per decision and once per
arriving signal. Answering by a scan of every command in flight made a tick of D decisions
with F commands in flight cost D x F; a count per (worker, slot) answers in one lookup.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Set

from services.controller.journal import JournalEntry
from services.controller.pending import SlotKey


class InFlight:
    """A journaled command not yet acknowledged, and when to send it again."""

    __slots__ = ("attempts", "entry", "resend_at")

    def __init__(self, entry: JournalEntry, resend_at: float) -> None:
        self.entry = entry
        self.attempts = 1
        self.resend_at = resend_at


class InFlightTable(Mapping[str, InFlight]):
    """Command id to `InFlight`, in the order added, with the number in flight per slot."""

    def __init__(self) -> None:
        self._flights: dict[str, InFlight] = {}
        self._per_slot: dict[SlotKey, int] = {}
        #: Per worker, its flights: a hello looks at one worker's, not at every command's.
        self._per_worker: dict[str, dict[str, InFlight]] = {}

    def add(self, flight: InFlight) -> None:
        """Track `flight` (a command id already tracked is replaced, not counted twice)."""
        command_id = flight.entry.command_id
        self.pop(command_id)
        self._flights[command_id] = flight
        key = (flight.entry.worker_id, flight.entry.slot_id)
        self._per_slot[key] = self._per_slot.get(key, 0) + 1
        self._per_worker.setdefault(flight.entry.worker_id, {})[command_id] = flight

    def pop(self, command_id: str) -> InFlight | None:
        """Stop tracking a command; the `InFlight` it had, None when it had none."""
        flight = self._flights.pop(command_id, None)
        if flight is not None:
            key = (flight.entry.worker_id, flight.entry.slot_id)
            left = self._per_slot[key] - 1
            if left:
                self._per_slot[key] = left
            else:
                del self._per_slot[key]
            flights = self._per_worker[flight.entry.worker_id]
            del flights[command_id]
            if not flights:
                del self._per_worker[flight.entry.worker_id]
        return flight

    def busy(self, worker_id: str, slot_id: str) -> bool:
        """Whether a command to this (worker, slot) awaits its ack: one dict lookup."""
        return (worker_id, slot_id) in self._per_slot

    @property
    def busy_slots(self) -> Set[SlotKey]:
        """The (worker, slot)s with a command awaiting its ack: a live view, for a whole
        block's check at once (`isdisjoint`)."""
        return self._per_slot.keys()

    def of_worker(self, worker_id: str) -> list[InFlight]:
        """The commands in flight to one worker, in the order added."""
        return list(self._per_worker.get(worker_id, {}).values())

    def __getitem__(self, command_id: str) -> InFlight:
        return self._flights[command_id]

    def __iter__(self) -> Iterator[str]:
        return iter(self._flights)

    def __len__(self) -> int:
        return len(self._flights)
