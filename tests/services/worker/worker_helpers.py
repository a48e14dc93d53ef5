"""Shared helpers for the worker tests (a unique module name: test dirs have no __init__)."""

from __future__ import annotations

from torch import nn

from leyline import AdaptationCommand, CommandType, Message, SeedStage, new_id
from leyline.wire import decode, encode
from services.worker import CommandOutcome, SeedSlot


def germinate(slot: SeedSlot, module: nn.Module | None = None, baseline: float = 50.0) -> None:
    """Put a small conv seed into `slot` (DORMANT -> GERMINATED)."""
    change = slot.germinate(
        "w1-block2_post-1",
        "conv_enhance",
        module or nn.Conv2d(slot.channels, slot.channels, 3, padding=1),
        epoch=0,
        baseline_accuracy=baseline,
    )
    assert change.moved and slot.stage is SeedStage.GERMINATED


def command(kind: CommandType, **fields: object) -> AdaptationCommand:
    return AdaptationCommand(command_id=new_id(), command_type=kind, **fields)  # type: ignore[arg-type]


def assert_wire_valid(outcome: CommandOutcome) -> None:
    """Everything an outcome carries survives the real codec (types, ranges, budgets)."""
    messages: list[Message] = [outcome.ack(sequence=1), *outcome.events, *outcome.reports]
    if outcome.field_report is not None:
        messages.append(outcome.field_report)
    for message in messages:
        assert decode(encode(message)) == message
