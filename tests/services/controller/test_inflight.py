"""The in-flight table answers "is this slot busy?" from its per-slot count, kept exact."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from leyline import AdaptationCommand, CommandType
from leyline.wire import encode
from services.controller.inflight import InFlight, InFlightTable
from services.controller.journal import JournalEntry


def flight(command_id: str, worker: str = "w1", slot: str = "a") -> InFlight:
    command = AdaptationCommand(
        command_id=command_id, command_type=CommandType.CULL, target_slot_id=slot
    )
    entry = JournalEntry(worker, slot, command_id, 1, encode(command), issued_ns=0)
    return InFlight(entry, resend_at=0.0)


def test_a_slot_is_busy_while_any_of_its_commands_is_in_flight() -> None:
    table = InFlightTable()
    table.add(flight("c1"))
    table.add(flight("c2"))
    table.add(flight("c3", slot="b"))

    assert table.busy("w1", "a") and table.busy("w1", "b")
    assert not table.busy("w2", "a")
    table.pop("c1")
    assert table.busy("w1", "a")
    table.pop("c2")
    assert not table.busy("w1", "a")
    assert list(table) == ["c3"]


def test_popping_an_unknown_or_settled_command_changes_nothing() -> None:
    table = InFlightTable()
    table.add(flight("c1"))

    assert table.pop("nope") is None
    assert table.pop("c1") is not None
    assert table.pop("c1") is None
    assert table == {}
    assert not table.busy("w1", "a")


def test_adding_a_tracked_command_again_replaces_it() -> None:
    table = InFlightTable()
    table.add(flight("c1"))
    again = flight("c1")
    table.add(again)

    assert table["c1"] is again
    table.pop("c1")
    assert not table.busy("w1", "a")


operations = st.lists(
    st.tuples(
        st.booleans(),
        st.integers(0, 7),
        st.sampled_from(["w1", "w2"]),
        st.sampled_from(["a", "b"]),
    ),
    max_size=40,
)


@settings(max_examples=100, deadline=None)
@given(operations)
def test_busy_always_equals_a_scan_of_every_command_in_flight(
    ops: list[tuple[bool, int, str, str]],
) -> None:
    table = InFlightTable()
    for add, number, worker, slot in ops:
        if add:
            table.add(flight(f"c{number}", worker, slot))
        else:
            table.pop(f"c{number}")
        for w in ("w1", "w2"):
            for s in ("a", "b"):
                scanned = any(
                    f.entry.worker_id == w and f.entry.slot_id == s for f in table.values()
                )
                assert table.busy(w, s) == scanned
    assert [f.entry.worker_id for f in table.values()].count("w1") == len(table.of_worker("w1"))
