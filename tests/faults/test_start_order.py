"""Reversed start order: commands issued before their worker runs, and the sink started last."""

from __future__ import annotations

import pytest
from fault_stack import FaultHarness

from leyline import AdaptationCommand, CommandType, SeedStage, new_id
from leyline.actions import SLOT_IDS
from services.chaos import summary
from services.controller.journal import CommandJournal

pytestmark = pytest.mark.slow


def test_worker_started_after_its_commands_and_sink_started_last_miss_nothing(
    harness: FaultHarness,
) -> None:
    slot = SLOT_IDS["cnn"][0]
    owed = [
        AdaptationCommand(
            command_id=new_id(),
            command_type=CommandType.GERMINATE,
            target_slot_id=slot,
            blueprint_id="conv_enhance",
            target_stage=SeedStage.GERMINATED,
        ),
        AdaptationCommand(command_id=new_id(), command_type=CommandType.REQUEST_STATE),
        AdaptationCommand(command_id=new_id(), command_type=CommandType.CULL, target_slot_id=slot),
    ]
    journal = CommandJournal(harness.journal)
    for command in owed:
        journal.issue("w1", slot, command)
    journal.close()

    harness.start(["controller"])
    harness.injector.wait(1.5)  # it resends to nobody for a while
    harness.start(["w1"])
    harness.wait_applied("w1", len(owed))
    harness.start(["sink"])  # everything so far is only in the publishers' windows
    harness.wait_more_applied("w1", 2)

    verdict = harness.finish()

    assert verdict.passed, summary(verdict)
    assert verdict.counts.events_lost == 0
    assert verdict.counts.commands_unwitnessed == 0
    executed = harness.query(
        "SELECT json_extract(message, '$.payload.command_id') FROM events WHERE sender = 'w1'"
        " AND event_type IN ('COMMAND_EXECUTED', 'COMMAND_FAILED')"
        " ORDER BY incarnation, sequence LIMIT 3"
    )
    assert [row[0] for row in executed] == [command.command_id for command in owed]
