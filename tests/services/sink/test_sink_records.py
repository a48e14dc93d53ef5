"""The record says lost only for what is lost, and illegal only for what was illegal."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from sink_history import History

from bus import Channel, Gap
from bus.replay import ReplayClient
from bus.testing import InProcessBus
from leyline import AckOutcome, AckReason, SeedStage, SeedTelemetry, WorkerHello
from services.sink import LossReason, StoredMessage, TelemetryStore, build_report, schema
from services.sink.repair import GapRepair
from services.sink.rows import INSERT_EVENT, INSERT_HELLO, event_row, hello_row
from services.sink.schema import SCHEMA_VERSION

S = SeedStage
TOP = 2**63 - 1


def _losses(store: TelemetryStore) -> list[tuple[int, int, str]]:
    return store.connection.execute(
        "SELECT first_missing_sequence, last_missing_sequence, reason FROM losses"
        " ORDER BY topic, first_missing_sequence"
    ).fetchall()


def _renumbered(record: StoredMessage, sequence: int, incarnation: int = 0) -> StoredMessage:
    return StoredMessage(
        record.channel,
        record.sender,
        sequence,
        record.sent_ns,
        record.topic,
        record.message,
        incarnation,
    )


def _illegal(store: TelemetryStore, worker: str = "w1") -> int:
    """The report's illegal stage changes of `worker` (0 when it has no row)."""
    rows = [w for w in build_report(store).workers if w.worker == worker]
    return rows[0].illegal_stage_changes if rows else 0


def test_the_report_adds_losses_past_2_to_the_63(store: TelemetryStore, history: History) -> None:
    # One message at the top sequence, on two streams: each gap below it is ~2**63 long.
    store.write_batch([_renumbered(history.epoch("w1", 1, 50.0), TOP)])
    for channel in ("tel", "ack"):
        store.record_loss(
            "w1", channel, 1, TOP - 1, LossReason.BEYOND_WINDOW, topic=f"{channel}.w1."
        )

    (w1,) = build_report(store).workers
    assert (w1.gaps, w1.messages_lost) == (2, 2 * (TOP - 1))


def test_a_message_stored_after_its_loss_row_shrinks_splits_and_removes_it(
    store: TelemetryStore, history: History
) -> None:
    epochs = [history.epoch("w2", epoch, 40.0 + epoch) for epoch in range(1, 21)]
    store.write_batch([*epochs[:16], epochs[19]])
    assert store.record_loss("w2", "tel", 17, 19, LossReason.REPLAY_TIMEOUT, topic="tel.w2.") == 3

    assert store.write_batch([epochs[17]]).recovered == 1  # the replay came after all
    assert _losses(store) == [(17, 17, "replay_timeout"), (19, 19, "replay_timeout")]
    (w2,) = build_report(store).workers
    assert (w2.gaps, w2.messages_lost) == (2, 2)

    store.write_batch([epochs[16], epochs[18]])
    assert _losses(store) == []
    (w2,) = build_report(store).workers
    assert (w2.gaps, w2.messages_lost) == (0, 0)


def test_a_loss_is_recorded_only_for_what_is_not_stored(
    store: TelemetryStore, history: History
) -> None:
    epochs = [history.epoch("w1", epoch, 40.0) for epoch in range(1, 6)]
    store.write_batch([epochs[0], epochs[2], epochs[4]])

    assert store.record_loss("w1", "tel", 1, 5, LossReason.BEYOND_WINDOW, topic="tel.w1.") == 2
    assert store.record_loss("w1", "tel", 2, 4, LossReason.REPLAY_TIMEOUT, topic="tel.w1.") == 0
    assert _losses(store) == [(2, 2, "beyond_window"), (4, 4, "beyond_window")]


def test_adjacent_loss_rows_are_one_gap(store: TelemetryStore, history: History) -> None:
    store.write_batch([_renumbered(history.epoch("w1", 1, 50.0), 20)])
    store.record_loss("w1", "tel", 5, 9, LossReason.BEYOND_WINDOW, topic="tel.w1.")
    store.record_loss("w1", "tel", 10, 12, LossReason.REPLAY_INCOMPLETE, topic="tel.w1.")

    (w1,) = build_report(store).workers
    assert (w1.gaps, w1.messages_lost) == (1, 8)


def test_a_worker_hello_is_stored_so_its_sequence_is_never_missing(
    store: TelemetryStore, history: History
) -> None:
    hello = StoredMessage("ack", "w1", 1, 0, "ack.w1.", WorkerHello(worker_id="w1"), 3)
    ack = history.ack("w1", history.cull_command(), AckOutcome.APPLIED)
    assert store.write_batch([hello, _renumbered(ack, 2, 3)]).stored == 2

    assert store.sequences("w1", "ack.w1.", 3) == [1, 2]
    assert store.missing("w1", "ack.w1.", 3, 1, 2) == []
    lost = store.record_loss(
        "w1", "ack", 1, 1, LossReason.REPLAY_TIMEOUT, topic="ack.w1.", incarnation=3
    )
    assert lost == 0
    assert _losses(store) == []


def test_a_version_1_file_gains_hellos_and_keeps_its_stage_history(
    db_path: Path, history: History
) -> None:
    change = history.stage("w1", "s1", S.DORMANT, S.GERMINATED)
    db_path.parent.mkdir(parents=True)
    with sqlite3.connect(db_path) as db:
        db.executescript(schema.MIGRATIONS[1])
        db.execute("PRAGMA user_version=1")
        db.execute(INSERT_EVENT, event_row(change, change.message))  # type: ignore[arg-type]
    with TelemetryStore(db_path, create=False) as store:
        assert store.connection.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert store.connection.execute(
            "SELECT sender, slot_id, seed_id, from_stage, to_stage, illegal FROM stage_history"
        ).fetchall() == [("w1", "block2_post", "s1", "DORMANT", "GERMINATED", None)]
        hello = StoredMessage("ack", "w1", 1, 0, "ack.w1.", WorkerHello(worker_id="w1"))
        assert store.write_batch([hello]).stored == 1


def test_a_version_2_file_gains_seed_telemetry_and_keeps_its_rows(
    db_path: Path, history: History
) -> None:
    hello = StoredMessage("ack", "w1", 1, 0, "ack.w1.", WorkerHello(worker_id="w1"))
    db_path.parent.mkdir(parents=True)
    with sqlite3.connect(db_path) as db:
        db.executescript(schema.MIGRATIONS[1])
        db.executescript(schema.MIGRATIONS[2])
        db.execute("PRAGMA user_version=2")
        db.execute(INSERT_HELLO, hello_row(hello, hello.message))  # type: ignore[arg-type]
    telemetry = SeedTelemetry(seed_id="s1", layer_id="block2_post", epoch=3, alpha=0.25)
    with TelemetryStore(db_path, create=False) as store:
        assert store.connection.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert store.sequences("w1", "ack.w1.") == [1]
        record = history.stored("rep", "w1", "w1", telemetry)
        assert store.write_batch([record, record]).stored == 1  # once, however often it comes
        assert store.connection.execute(
            "SELECT sender, seed_id, layer_id, epoch, stage, alpha FROM seed_telemetry"
        ).fetchall() == [("w1", "s1", "block2_post", 3, "DORMANT", 0.25)]
        assert store.max_sequence("w1", "rep.w1.") == 1


def test_a_restarted_worker_resumes_its_slots_from_its_checkpoint(
    store: TelemetryStore, history: History
) -> None:
    # Life 1 reached BLENDING; the checkpoint it restarts from had the seed in TRAINING.
    life1 = [
        history.stage("w1", "s1", S.DORMANT, S.GERMINATED),
        history.stage("w1", "s1", S.GERMINATED, S.TRAINING),
        history.stage("w1", "s1", S.TRAINING, S.BLENDING),
    ]
    life2 = [_renumbered(history.stage("w1", "s1", S.TRAINING, S.BLENDING), 1, incarnation=2)]

    assert store.write_batch(life1).illegal == 0
    assert store.write_batch(life2).illegal == 0
    assert _illegal(store) == 0


def test_a_change_after_a_gap_and_the_change_that_fills_it_are_not_illegal(
    store: TelemetryStore, history: History
) -> None:
    germinated, training, blending = (
        history.stage("w1", "s1", S.DORMANT, S.GERMINATED),
        history.stage("w1", "s1", S.GERMINATED, S.TRAINING),
        history.stage("w1", "s1", S.TRAINING, S.BLENDING),
    )
    assert store.write_batch([germinated, blending]).illegal == 0  # training is missing
    assert store.write_batch([training]).illegal == 0  # ... and is replayed late

    assert _illegal(store) == 0


def test_an_illegal_change_in_a_complete_stream_is_still_flagged(
    store: TelemetryStore, history: History
) -> None:
    batch = [
        history.stage("w1", "s1", S.DORMANT, S.GERMINATED),
        history.epoch("w1", 1, 40.0),
        history.stage("w1", "s1", S.TRAINING, S.BLENDING),  # the slot is in GERMINATED
        history.stage("w1", "s1", S.BLENDING, S.DORMANT),  # no such edge
    ]
    assert store.write_batch(batch).illegal == 2

    # Reopened, the judge stands where the committed history left it.
    store.close()
    with TelemetryStore(store.path) as reopened:
        later = history.stage("w1", "s1", S.BLENDING, S.SHADOWING)
        assert reopened.write_batch([later]).illegal == 1


def test_refused_commands_are_rejections_not_illegal_stage_changes(
    store: TelemetryStore, history: History
) -> None:
    store.write_batch(
        [
            history.violation("w1", AckReason.ILLEGAL_TRANSITION),
            history.violation("w1", AckReason.DUPLICATE),
        ]
    )
    (w1,) = build_report(store).workers
    assert w1.illegal_stage_changes == 0
    assert w1.rejections_by_reason == {"duplicate": 1, "illegal_transition": 1}


def test_a_gap_past_the_repair_backlog_is_recorded_lost_not_dropped(
    store: TelemetryStore,
) -> None:
    bus = InProcessBus()
    try:
        subscriber = bus.subscriber([(Channel.TEL, None)])
        repair = GapRepair(store, subscriber, ReplayClient(), max_pending=2)
        for first in (10, 20, 30):
            repair.add(Gap("w1", b"tel.w1.", 1, first, first + 4))
    finally:
        bus.close()

    assert repair.refused == 1
    assert _losses(store) == [(30, 34, "repair_backlog")]
    assert repair.lost == 5
