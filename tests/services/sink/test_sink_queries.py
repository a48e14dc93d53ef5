"""Event queries: every filter, their combination, order and limit."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import msgspec
import pytest
from sink_history import START, History

from leyline import AckReason, SeedStage, TelemetryEventType
from leyline.telemetry import ContractViolation
from services.sink import EventRow, TelemetryStore, query_events

S = SeedStage


@pytest.fixture
def filled(store: TelemetryStore, history: History) -> TelemetryStore:
    """Six events at START + 1..6 s: epochs from w1 and w2, and seed s1's start on w1."""
    store.write_batch(
        [
            history.epoch("w1", 1, 40.0),
            history.epoch("w2", 1, 30.0),
            history.germinated("w1", "s1"),
            history.stage("w1", "s1", S.DORMANT, S.GERMINATED),
            history.epoch("w1", 2, 45.0),
            history.culled("w2", "s7"),
        ]
    )
    return store


def _summary(rows: list[EventRow]) -> list[tuple[str, int]]:
    return [(row.sender, row.sequence) for row in rows]


def test_no_filter_returns_every_event_oldest_first(filled: TelemetryStore) -> None:
    rows = query_events(filled)
    assert _summary(rows) == [("w1", 1), ("w2", 1), ("w1", 2), ("w1", 3), ("w1", 4), ("w2", 2)]
    assert [row.sent_at for row in rows] == [START + timedelta(seconds=s) for s in range(1, 7)]


def test_worker_filter_keeps_that_senders_events(filled: TelemetryStore) -> None:
    assert _summary(query_events(filled, worker="w2")) == [("w2", 1), ("w2", 2)]


def test_seed_filter_matches_the_event_field_or_the_payload(filled: TelemetryStore) -> None:
    assert [row.event_type for row in query_events(filled, seed="s1")] == [
        "SEED_GERMINATED",
        "SEED_STAGE_CHANGED",
    ]
    assert [row.event_type for row in query_events(filled, seed="s7")] == ["SEED_CULLED"]


def test_type_filter_takes_a_member_or_any_case_name(filled: TelemetryStore) -> None:
    by_member = query_events(filled, event_type=TelemetryEventType.EPOCH_COMPLETED)
    by_name = query_events(filled, event_type="epoch_completed")
    assert _summary(by_member) == _summary(by_name) == [("w1", 1), ("w2", 1), ("w1", 4)]


def test_unknown_type_name_is_refused_with_the_choices(filled: TelemetryStore) -> None:
    with pytest.raises(ValueError, match="unknown event type 'SPROUTED'; one of SEED_GERMINATED"):
        query_events(filled, event_type="SPROUTED")


def test_since_is_inclusive_and_until_exclusive(filled: TelemetryStore) -> None:
    rows = query_events(
        filled, since=START + timedelta(seconds=2), until=START + timedelta(seconds=4)
    )
    assert _summary(rows) == [("w2", 1), ("w1", 2)]


def test_naive_times_are_taken_as_utc(filled: TelemetryStore) -> None:
    naive = (START + timedelta(seconds=6)).replace(tzinfo=None)
    assert _summary(query_events(filled, since=naive)) == [("w2", 2)]


def test_filters_combine(filled: TelemetryStore) -> None:
    rows = query_events(
        filled, worker="w1", event_type="EPOCH_COMPLETED", since=START + timedelta(seconds=2)
    )
    assert _summary(rows) == [("w1", 4)]


def test_limit_keeps_the_oldest_rows(filled: TelemetryStore) -> None:
    assert _summary(query_events(filled, limit=2)) == [("w1", 1), ("w2", 1)]
    assert len(query_events(filled, limit=None)) == 6


def test_bounds_past_sqlite_integers_select_as_far_as_they_reach(filled: TelemetryStore) -> None:
    far = datetime(9999, 12, 31, tzinfo=UTC)
    assert query_events(filled, since=far) == []
    assert len(query_events(filled, until=far, limit=2**64)) == 6
    assert len(query_events(filled, since=datetime(1, 1, 1, tzinfo=UTC))) == 6


def test_rows_carry_typed_columns(filled: TelemetryStore) -> None:
    row = query_events(filled, event_type="SEED_STAGE_CHANGED")[0]
    assert (row.channel, row.seed_id, row.slot_id, row.epoch, row.severity, row.illegal) == (
        "tel",
        "s1",
        "block2_post",
        None,
        "info",
        None,
    )
    epoch = query_events(filled, worker="w1", event_type="EPOCH_COMPLETED")[-1]
    assert epoch.epoch == 2


def test_a_row_stored_as_v1_reads_back_lifted_to_v2() -> None:
    stored = {
        "type": "TelemetryEvent.v1",
        "event_type": int(TelemetryEventType.CONTRACT_VIOLATION),
        "payload": {"kind": "ContractViolation", "reason": "stale", "sender": "c", "topic": "t"},
    }
    row = EventRow(
        "w1", "tel", 1, START, "CONTRACT_VIOLATION", None, None, None, "INFO", None,
        msgspec.Raw(msgspec.json.encode(stored)),
    )  # fmt: skip
    event = row.event()
    assert isinstance(event.payload, ContractViolation)
    assert event.payload.reason is AckReason.STALE
