"""The command journal: per-worker numbering, one transaction per batch, durable across reopens."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import msgspec
import numpy as np
import pytest

from leyline import AckOutcome, AdaptationCommand, CommandType
from leyline.wire import decode
from services.controller import ActionLayout, DecisionReason
from services.controller.commands import CommandEncoder
from services.controller.journal import CommandJournal


def _cull(command_id: str, slot: str = "s") -> AdaptationCommand:
    return AdaptationCommand(
        command_id=command_id, command_type=CommandType.CULL, target_slot_id=slot
    )


@pytest.fixture
def journal(tmp_path: Path) -> Iterator[CommandJournal]:
    opened = CommandJournal(tmp_path / "journal.db")
    yield opened
    opened.close()


def test_a_batch_is_numbered_per_worker_in_the_order_given(journal: CommandJournal) -> None:
    entries = journal.issue_many(
        [("w1", "a", _cull("c1")), ("w2", "a", _cull("c2")), ("w1", "b", _cull("c3"))]
    )
    assert [(e.worker_id, e.command.sequence) for e in entries] == [
        ("w1", 1),
        ("w2", 1),
        ("w1", 2),
    ]
    assert len({e.issued_ns for e in entries}) == 1  # one clock read for the batch
    assert journal.entries() == [
        ("w1", 1, "c1", None),
        ("w1", 2, "c3", None),
        ("w2", 1, "c2", None),
    ]


def test_single_issues_and_batches_share_one_numbering(journal: CommandJournal) -> None:
    journal.issue("w1", "a", _cull("c1"))
    [entry] = journal.issue_many([("w1", "a", _cull("c2"))])
    assert journal.issue("w1", "a", _cull("c3")).command.sequence == 3
    assert entry.command.sequence == 2


def test_a_failing_batch_commits_nothing_and_numbering_goes_on(journal: CommandJournal) -> None:
    journal.issue("w1", "a", _cull("c1"))
    with pytest.raises(sqlite3.IntegrityError):  # the last row repeats a command id
        journal.issue_many([("w1", "a", _cull("c2")), ("w2", "a", _cull("c1"))])
    assert journal.entries() == [("w1", 1, "c1", None)]
    [entry] = journal.issue_many([("w1", "a", _cull("c2"))])
    assert entry.command.sequence == 2


def test_a_reopened_journal_continues_each_workers_numbering(tmp_path: Path) -> None:
    first = CommandJournal(tmp_path / "journal.db")
    first.issue_many([("w1", "a", _cull("c1")), ("w1", "a", _cull("c2"))])
    assert first.acknowledge("c1", AckOutcome.APPLIED)
    first.close()
    second = CommandJournal(tmp_path / "journal.db")
    try:
        [entry] = second.issue_many([("w1", "a", _cull("c3"))])
        assert entry.command.sequence == 3
        assert [e.command.command_id for e in second.unacked()] == ["c2", "c3"]
    finally:
        second.close()


def test_an_empty_batch_writes_nothing(journal: CommandJournal) -> None:
    assert journal.issue_many([]) == []
    assert journal.entries() == []


def _encoded(layout: ActionLayout, slots: list[str]) -> tuple[list[str], list[bytes]]:
    """A batch of unnumbered CULLs as the inference loop encodes them."""
    return CommandEncoder(layout).encode(
        slots,
        np.full(len(slots), layout.cull, np.int64),
        np.full(len(slots), DecisionReason.SEED_REGRESSING, np.int64),
        np.full(len(slots), 0.75),
    )


def test_an_encoded_batch_is_numbered_in_its_bytes_and_reads_back(tmp_path: Path) -> None:
    layout = ActionLayout("cnn")
    ids, payloads = _encoded(layout, ["a", "b", "a"])
    journal = CommandJournal(tmp_path / "journal.db")
    journal.issue("w2", "a", _cull("earlier"))
    entries = journal.issue_batch(["w1", "w2", "w1"], ["a", "b", "a"], ids, payloads)
    journal.close()

    assert [(e.worker_id, e.sequence) for e in entries] == [("w1", 1), ("w2", 2), ("w1", 2)]
    for entry, payload in zip(entries, payloads, strict=True):
        sent = decode(entry.payload)  # the bytes a worker gets, valid under the contract
        assert isinstance(sent, AdaptationCommand)
        assert (sent.command_id, sent.sequence) == (entry.command_id, entry.sequence)
        assert sent == msgspec.structs.replace(decode(payload), sequence=entry.sequence)
        assert entry.command == sent
    reopened = CommandJournal(tmp_path / "journal.db")
    try:
        assert reopened.unacked("w1") == [entries[0], entries[2]]
        [next_one] = reopened.issue_batch(["w1"], ["a"], *_encoded(layout, ["a"]))
        assert next_one.sequence == 3
    finally:
        reopened.close()


def test_a_failing_encoded_batch_commits_nothing(journal: CommandJournal) -> None:
    ids, payloads = _encoded(ActionLayout("cnn"), ["a", "a"])
    with pytest.raises(sqlite3.IntegrityError):  # one command id twice
        journal.issue_batch(["w1", "w2"], ["a", "a"], [ids[0], ids[0]], payloads)
    assert journal.entries() == []
    [entry] = journal.issue_batch(["w2"], ["a"], ids[1:], payloads[1:])
    assert entry.sequence == 1
