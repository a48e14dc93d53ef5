"""The run report, figure by figure, on a constructed history."""

from __future__ import annotations

import pytest
from sink_history import History

from leyline import AckOutcome, AckReason, SeedStage
from services.sink import (
    LossReason,
    RunReport,
    TelemetryStore,
    WorkerSummary,
    build_report,
    report_as_text,
)

S = SeedStage


@pytest.fixture
def run(store: TelemetryStore, history: History) -> TelemetryStore:
    """w1: three epochs, s1 fossilized, s2 culled, one illegal edge, commands, a gap; w2: idle."""
    germinate_s1 = history.germinate_command("s1")
    germinate_s2 = history.germinate_command("s2")
    cull_s2 = history.cull_command("s2")
    refused = history.cull_command("s9")
    store.write_batch(
        [
            history.epoch("w1", 1, 40.0),
            history.command("w1", germinate_s1),
            history.ack("w1", germinate_s1, AckOutcome.APPLIED),
            history.germinated("w1", "s1"),
            history.stage("w1", "s1", S.DORMANT, S.GERMINATED),
            history.stage("w1", "s1", S.GERMINATED, S.PROBATIONARY),  # illegal skip
            history.stage("w1", "s1", S.PROBATIONARY, S.FOSSILIZED),
            history.fossilized("w1", "s1"),
            history.epoch("w1", 2, 52.5),
            history.command("w1", germinate_s2),
            history.ack("w1", germinate_s2, AckOutcome.APPLIED),
            history.germinated("w1", "s2", slot="block3_post"),
            history.command("w1", cull_s2),
            history.ack("w1", cull_s2, AckOutcome.APPLIED),
            history.culled("w1", "s2"),
            history.command("w1", refused),
            history.ack("w1", refused, AckOutcome.REJECTED, reason=AckReason.UNKNOWN_TARGET),
            # The controller resends an unacked command; the worker answers it as a duplicate.
            history.command("w1", refused),
            history.ack("w1", refused, AckOutcome.DUPLICATE),
            history.violation("w1", AckReason.INVALID_VALUE),
            history.violation("w1", AckReason.UNKNOWN_TARGET),
            history.epoch("w1", 3, 61.0),
            history.epoch("w2", 1, 30.0),
        ]
    )
    store.record_loss("w1", "tel", 40, 44, LossReason.BEYOND_WINDOW)
    store.record_loss("w1", "tel", 50, 50, LossReason.BEYOND_WINDOW)
    return store


def test_report_sums_up_each_worker(run: TelemetryStore) -> None:
    report = build_report(run)
    assert report == RunReport(
        events=13,
        commands=5,
        acks=5,
        field_reports=0,
        workers=[
            WorkerSummary(
                worker="w1",
                epochs=3,
                accuracy_start=40.0,
                accuracy_end=61.0,
                seeds_germinated=2,
                seeds_fossilized=1,
                seeds_culled=1,
                commands_issued=4,
                commands_applied=3,
                commands_rejected=1,
                rejections_by_reason={"invalid_value": 1, "unknown_target": 2},
                gaps=2,
                messages_lost=6,
                illegal_stage_changes=1,
            ),
            WorkerSummary(worker="w2", epochs=1, accuracy_start=30.0, accuracy_end=30.0),
        ],
    )


def test_report_of_an_empty_store_has_no_workers(store: TelemetryStore) -> None:
    assert build_report(store) == RunReport(
        events=0, commands=0, acks=0, field_reports=0, workers=[]
    )


def test_report_text_shows_the_table_reasons_and_totals(run: TelemetryStore) -> None:
    lines = report_as_text(build_report(run)).splitlines()
    assert lines[0].split() == [
        "worker", "epochs", "acc", "start", "acc", "end", "germinated", "fossilized", "culled",
        "commands", "applied", "rejected", "gaps", "lost", "illegal",
    ]  # fmt: skip
    assert lines[1].split() == [
        "w1", "3", "40.00%", "61.00%", "2", "1", "1", "4", "3", "1", "2", "6", "1",
    ]  # fmt: skip
    assert lines[2].split() == ["w2", "1", "30.00%", "30.00%", *["0"] * 9]
    assert ["w1", "unknown_target", "2"] in [line.split() for line in lines]
    assert lines[-1] == "stored: 13 events, 5 commands, 5 acks, 0 field reports"
