"""The checker fails runs that break a guarantee (fast: synthetic records, no processes)."""

from __future__ import annotations

from pathlib import Path

import torch

from leyline import AckOutcome, AdaptationCommand, CommandType, TelemetryEvent, TelemetryEventType
from leyline.telemetry import CommandExecuted
from services.chaos import RunFiles, check
from services.controller.journal import CommandJournal
from services.sink.losses import LossReason
from services.sink.rows import StoredMessage
from services.sink.store import TelemetryStore

WINDOW = 100


def _executed(command_sequence: int, kind: str = "CULL") -> TelemetryEvent:
    return TelemetryEvent(
        event_type=TelemetryEventType.COMMAND_EXECUTED,
        payload=CommandExecuted(
            command_id=f"c{command_sequence}", command_type=kind, sequence=command_sequence
        ),
    )


def _run(
    tmp_path: Path,
    executions: list[tuple[int, int, int]],
    *,
    applied: int = 3,
    losses: tuple[tuple[int, int, str], ...] = (),
    queries: frozenset[int] = frozenset(),
) -> RunFiles:
    """Three journaled, acked commands for w1; `executions` as (incarnation, seq, command)."""
    files = RunFiles.of(tmp_path, WINDOW)
    journal = CommandJournal(files.journal)
    for number in range(1, 4):
        command = AdaptationCommand(
            command_id=f"c{number}", command_type=CommandType.CULL, target_slot_id="s"
        )
        journal.issue("w1", "s", command)
        journal.acknowledge(f"c{number}", AckOutcome.APPLIED)
    journal.close()
    files.checkpoints.mkdir(parents=True)
    torch.save({"commands": {"last_applied": applied}}, files.checkpoints / "w1.pt")
    with TelemetryStore(files.sink_db) as store:
        store.write_batch(
            StoredMessage(
                "tel",
                "w1",
                seq,
                0,
                "tel.w1.",
                _executed(command, "REQUEST_STATE" if command in queries else "CULL"),
                incarnation,
            )
            for incarnation, seq, command in executions
        )
        for first, last, reason in losses:
            store.record_loss("w1", "tel", first, last, reason, topic="tel.w1.", incarnation=1)
    return files


def test_a_clean_run_passes(tmp_path: Path) -> None:
    verdict = check(_run(tmp_path, [(1, 1, 1), (1, 2, 2), (2, 1, 3)]))

    assert verdict.passed, verdict.failures
    assert verdict.counts.commands_applied == 3
    assert verdict.counts.events_stored == 3


def test_a_command_applied_again_after_a_restart_is_a_duplicate(tmp_path: Path) -> None:
    verdict = check(_run(tmp_path, [(1, 1, 1), (1, 2, 2), (2, 1, 2), (2, 2, 3)]))

    assert verdict.counts.commands_duplicated == 1
    assert any("more than once" in failure for failure in verdict.failures)


def test_commands_applied_out_of_order_fail(tmp_path: Path) -> None:
    verdict = check(_run(tmp_path, [(1, 1, 2), (1, 2, 1), (1, 3, 3)]))

    assert any("out of order" in failure for failure in verdict.failures)


def test_an_acked_command_the_checkpoint_never_applied_is_lost(tmp_path: Path) -> None:
    verdict = check(_run(tmp_path, [(1, 1, 1), (1, 2, 2)], applied=2))

    assert verdict.counts.commands_lost == 1


def test_a_hole_in_a_stream_fails_and_an_explicit_loss_beyond_the_window_does_not(
    tmp_path: Path,
) -> None:
    holes = check(_run(tmp_path / "a", [(1, 1, 1), (1, 3, 2), (2, 1, 3)]))
    assert holes.counts.events_unaccounted == 1

    # 2 + 2 x WINDOW sent, the window held the last WINDOW: 3..2 + WINDOW were gone for good.
    tail = [(1, seq, 0) for seq in range(3 + WINDOW, 2 + 2 * WINDOW)]
    beyond = [(1, 1, 1), (1, 2, 2), *tail, (1, 2 + 2 * WINDOW, 3)]
    covered = check(_run(tmp_path / "b", beyond, losses=((3, 2 + WINDOW, "beyond_window"),)))
    assert covered.passed, covered.failures
    assert covered.counts.events_lost == WINDOW


def test_a_loss_row_for_a_gap_the_window_still_held_fails(tmp_path: Path) -> None:
    verdict = check(
        _run(tmp_path, [(1, 1, 1), (1, 3, 2), (1, 4, 3)], losses=((2, 2, "replay_timeout"),))
    )

    assert any("still held it" in failure for failure in verdict.failures)


def test_a_loss_row_near_2_to_the_63_long_is_counted_without_spelling_it_out(
    tmp_path: Path,
) -> None:
    top = 2**63 - 1
    files = _run(tmp_path, [(1, 1, 1), (1, 2, 2), (1, 3, 3)])
    with TelemetryStore(files.sink_db) as store:
        store.write_batch([StoredMessage("tel", "w1", top, 0, "tel.w1.", _executed(0), 1)])
        store.record_loss(
            "w1", "tel", 4, top - WINDOW, LossReason.BEYOND_WINDOW, topic="tel.w1.", incarnation=1
        )

    verdict = check(files)

    assert verdict.counts.events_sent == top
    assert verdict.counts.events_lost == top - WINDOW - 3
    assert verdict.counts.events_unaccounted == WINDOW - 1
    assert verdict.failures == [
        f"tel.w1. incarnation 1: {WINDOW - 1} sequences neither stored nor recorded lost: "
        f"[{top - WINDOW + 1}..{top - 1}]"
    ]


def test_a_state_query_answered_again_after_a_crash_is_no_duplicate(tmp_path: Path) -> None:
    answered_twice = [(1, 1, 1), (1, 2, 2), (2, 1, 2), (2, 2, 3)]
    verdict = check(_run(tmp_path, answered_twice, queries=frozenset({2})))

    assert verdict.passed, verdict.failures
    assert verdict.counts.commands_duplicated == 0


def test_a_state_query_past_the_checkpoint_is_neither_rolled_back_nor_lost(
    tmp_path: Path,
) -> None:
    verdict = check(
        _run(tmp_path, [(1, 1, 1), (1, 2, 2), (1, 3, 3)], applied=2, queries=frozenset({3}))
    )

    assert verdict.passed, verdict.failures
    assert (verdict.counts.commands_applied, verdict.counts.commands_lost) == (3, 0)
