"""The store: WAL, one transaction per batch, idempotency, and the guarded stage history."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest
from sink_history import History

from leyline import AckOutcome, FastTrainingSignals, SeedStage
from services.sink import (
    SCHEMA_VERSION,
    BatchResult,
    LossReason,
    StoredMessage,
    StoreError,
    TelemetryStore,
    query_events,
)

S = SeedStage
REPO = Path(__file__).resolve().parents[3]


def _count(path: Path, table: str) -> int:
    with sqlite3.connect(path) as db:
        count: int = db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
    return count


def _lifecycle(history: History, worker: str = "w1", seed: str = "s1") -> list[StoredMessage]:
    return [
        history.stage(worker, seed, S.DORMANT, S.GERMINATED),
        history.stage(worker, seed, S.GERMINATED, S.TRAINING),
        history.stage(worker, seed, S.TRAINING, S.BLENDING),
    ]


def test_store_runs_in_wal_mode_with_normal_sync(store: TelemetryStore, db_path: Path) -> None:
    with sqlite3.connect(db_path) as other:
        assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store.connection.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL


def test_new_file_carries_the_schema_version(store: TelemetryStore, db_path: Path) -> None:
    with sqlite3.connect(db_path) as other:
        assert other.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def test_store_refuses_a_file_from_a_newer_schema(db_path: Path) -> None:
    TelemetryStore(db_path).close()
    with sqlite3.connect(db_path) as other:
        other.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    with pytest.raises(StoreError, match="newer"):
        TelemetryStore(db_path)


def test_opening_without_create_refuses_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="no sink database"):
        TelemetryStore(tmp_path / "absent.db", create=False)
    assert not (tmp_path / "absent.db").exists()


def test_opening_without_create_refuses_a_file_that_is_not_sqlite(tmp_path: Path) -> None:
    path = tmp_path / "notes.db"
    path.write_text("not a database, just text that is long enough to have a header" * 4)
    with pytest.raises(StoreError, match="not a database"):
        TelemetryStore(path, create=False)


def test_same_batch_twice_is_stored_once(store: TelemetryStore, history: History) -> None:
    command = history.germinate_command()
    batch = [
        history.epoch("w1", 1, 40.0),
        *_lifecycle(history),
        history.command("w1", command),
        history.ack("w1", command, AckOutcome.APPLIED),
    ]
    assert store.write_batch(batch) == BatchResult(stored=6, duplicates=0, illegal=0)
    assert store.write_batch(batch) == BatchResult(stored=0, duplicates=6, illegal=0)
    assert _count(store.path, "events") == 4
    assert _count(store.path, "commands") == 1
    assert _count(store.path, "acks") == 1
    assert _count(store.path, "stage_history") == 3


def test_repeat_inside_one_batch_counts_as_duplicate(
    store: TelemetryStore, history: History
) -> None:
    epoch = history.epoch("w1", 1, 40.0)
    change = history.stage("w1", "s1", S.DORMANT, S.GERMINATED)
    assert store.write_batch([epoch, change, epoch, change]) == BatchResult(2, 2, 0)


def test_error_inside_batch_rolls_back_every_row(store: TelemetryStore, history: History) -> None:
    written = [*_lifecycle(history), history.epoch("w1", 1, 40.0)]

    def failing_source() -> Iterator[StoredMessage]:
        yield from written
        raise ConnectionError("the bus went away mid-batch")

    with pytest.raises(ConnectionError):
        store.write_batch(failing_source())
    for table in ("events", "stage_history"):
        assert _count(store.path, table) == 0
    # The guard forgot the rolled-back changes: the same history now stores as legal.
    assert store.write_batch(written) == BatchResult(stored=4, duplicates=0, illegal=0)


def test_process_killed_before_commit_stores_nothing(db_path: Path, history: History) -> None:
    TelemetryStore(db_path).close()
    child = textwrap.dedent(
        f"""
        import os, sys
        sys.path[:0] = [{str(REPO)!r}, {str(Path(__file__).parent)!r}]
        from sink_history import History
        from leyline import SeedStage as S
        from services.sink import TelemetryStore

        history = History()
        def source():
            for epoch in range(300):
                yield history.epoch("w1", epoch, 50.0)
            yield history.stage("w1", "s1", S.DORMANT, S.GERMINATED)
            os._exit(9)  # the sink dies with the stage change written, before COMMIT

        TelemetryStore({str(db_path)!r}).write_batch(source())
        """
    )
    done = subprocess.run([sys.executable, "-c", child], capture_output=True, timeout=60)
    assert done.returncode == 9, done.stderr.decode()
    with TelemetryStore(db_path) as reopened:
        assert query_events(reopened) == []
        assert reopened.max_sequence("w1", "tel.w1.") is None


def test_readers_see_a_batch_only_once_committed(
    store: TelemetryStore, history: History, db_path: Path
) -> None:
    seen_mid_batch: list[int] = []

    def source() -> Iterator[StoredMessage]:
        yield history.stage("w1", "s1", S.DORMANT, S.GERMINATED)
        yield history.stage("w1", "s1", S.GERMINATED, S.TRAINING)
        with TelemetryStore(db_path, create=False) as reader:
            seen_mid_batch.append(len(query_events(reader)))
        yield history.epoch("w1", 1, 40.0)

    store.write_batch(source())
    assert seen_mid_batch == [0]
    with TelemetryStore(db_path, create=False) as reader:
        assert len(query_events(reader)) == 3


def test_unstorable_message_fails_the_whole_batch(store: TelemetryStore, history: History) -> None:
    signals = history.stored("sig", "w1", "w1", FastTrainingSignals.empty())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="FastTrainingSignals"):
        store.write_batch([history.epoch("w1", 1, 40.0), signals])
    assert _count(store.path, "events") == 0


def test_illegal_stage_change_is_stored_flagged_and_counted(
    store: TelemetryStore, history: History
) -> None:
    skip = history.stage("w1", "s1", S.GERMINATED, S.FOSSILIZED)
    result = store.write_batch([history.stage("w1", "s1", S.DORMANT, S.GERMINATED), skip])
    assert result == BatchResult(stored=2, duplicates=0, illegal=1)
    flagged = [row for row in query_events(store) if row.illegal]
    assert [row.sequence for row in flagged] == [skip.sequence]
    assert "GERMINATED -> FOSSILIZED is not a legal transition" in (flagged[0].illegal or "")
    history_rows = store.connection.execute(
        "SELECT from_stage, to_stage, illegal IS NOT NULL FROM stage_history ORDER BY id"
    ).fetchall()
    assert history_rows == [("DORMANT", "GERMINATED", 0), ("GERMINATED", "FOSSILIZED", 1)]


def test_report_from_a_stage_the_slot_is_not_in_is_flagged(
    store: TelemetryStore, history: History
) -> None:
    store.write_batch(_lifecycle(history))  # the slot is now BLENDING
    result = store.write_batch([history.stage("w1", "s1", S.TRAINING, S.BLENDING)])
    assert result.illegal == 1
    assert "but the slot is in BLENDING" in (query_events(store)[-1].illegal or "")


def test_stage_changes_are_guarded_per_sender_and_slot(
    store: TelemetryStore, history: History
) -> None:
    batch = [
        history.stage("w1", "s1", S.DORMANT, S.GERMINATED, slot="block2_post"),
        history.stage("w2", "s9", S.DORMANT, S.GERMINATED, slot="block2_post"),
        history.stage("w1", "s2", S.DORMANT, S.GERMINATED, slot="block3_post"),
    ]
    assert store.write_batch(batch).illegal == 0


def test_guard_resumes_from_the_stored_history_after_reopen(
    db_path: Path, history: History
) -> None:
    with TelemetryStore(db_path) as store:
        store.write_batch(_lifecycle(history))
    with TelemetryStore(db_path) as store:
        legal = store.write_batch([history.stage("w1", "s1", S.BLENDING, S.SHADOWING)])
        illegal = store.write_batch([history.stage("w1", "s1", S.SHADOWING, S.FOSSILIZED)])
    assert (legal.illegal, illegal.illegal) == (0, 1)


def test_commands_to_two_workers_with_one_sequence_are_both_kept(
    store: TelemetryStore, history: History
) -> None:
    first = history.command("w1", history.germinate_command("a"))
    second = StoredMessage(
        "cmd", "controller", first.sequence, first.sent_ns, "cmd.w2.", history.cull_command("b")
    )
    assert store.write_batch([first, second]).stored == 2
    workers = store.connection.execute("SELECT worker FROM commands ORDER BY worker").fetchall()
    assert workers == [("w1",), ("w2",)]


def test_restarted_sender_starting_over_at_one_is_not_a_duplicate(
    store: TelemetryStore, history: History
) -> None:
    before = history.epoch("w1", 1, 40.0)
    after = msgspec.structs.replace(history.epoch("w1", 1, 41.0), sequence=1, incarnation=2)
    assert store.write_batch([before, after]) == BatchResult(stored=2, duplicates=0, illegal=0)
    assert store.write_batch([after]).duplicates == 1


def test_sequences_and_max_sequence_follow_one_stream_across_tables(
    store: TelemetryStore, history: History
) -> None:
    assert store.max_sequence("w1", "tel.w1.") is None
    assert store.sequences("w1", "tel.w1.") == []
    first, change, third = (
        history.epoch("w1", 1, 40.0),
        history.stage("w1", "s1", S.DORMANT, S.GERMINATED),
        history.epoch("w1", 2, 41.0),
    )
    restarted = msgspec.structs.replace(first, incarnation=7)
    batch = [
        third,
        first,
        change,
        restarted,
        history.epoch("w2", 1, 30.0),
        history.ack("w1", history.germinate_command(), AckOutcome.APPLIED),
    ]
    store.write_batch(batch)
    assert store.sequences("w1", "tel.w1.") == [1, 2, 3]
    assert store.max_sequence("w1", "tel.w1.") == 3
    assert store.sequences("w1", "tel.w1.", incarnation=7) == [1]
    assert store.max_sequence("w1", "ack.w1.") == 1
    assert store.max_sequence("w2", "tel.w2.") == 1


def test_record_loss_keeps_each_gap_once(store: TelemetryStore) -> None:
    gap = ("w1", "tel", 10, 12, LossReason.BEYOND_WINDOW)
    assert store.record_loss(*gap, topic="tel.w1.") == 3
    assert store.record_loss(*gap, topic="tel.w1.") == 0
    assert store.record_loss(*gap, topic="tel.w1.", incarnation=2) == 3
    rows = store.connection.execute(
        "SELECT sender, channel, first_missing_sequence, last_missing_sequence, reason, topic,"
        " incarnation FROM losses ORDER BY id"
    ).fetchall()
    assert rows == [(*gap, "tel.w1.", 0), (*gap, "tel.w1.", 2)]


def test_record_loss_refuses_an_inverted_range(store: TelemetryStore) -> None:
    with pytest.raises(ValueError, match="before"):
        store.record_loss("w1", "tel", 12, 10, LossReason.REPLAY_TIMEOUT)


def test_stored_event_decodes_back_to_the_message_received(
    store: TelemetryStore, history: History
) -> None:
    sent = [history.epoch("w1", 3, 42.5), history.culled("w1", "s1")]
    store.write_batch(sent)
    assert [row.event() for row in query_events(store)] == [record.message for record in sent]
