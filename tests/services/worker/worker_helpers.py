"""Shared helpers for the worker tests (a unique module name: test dirs have no __init__)."""

from __future__ import annotations

import torch
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


class TwoSlotNet(nn.Module):
    """A user's own model: two conv blocks, a slot after each, a linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.first = nn.Conv2d(1, 4, 3, padding=1)
        self.after_first = SeedSlot("after_first", 4)
        self.second = nn.Conv2d(4, 8, 3, padding=1)
        self.after_second = SeedSlot("after_second", 8)
        self.head = nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.after_first(torch.relu(self.first(x)))
        x = self.after_second(torch.relu(self.second(x)))
        out: torch.Tensor = self.head(x.mean(dim=(2, 3)))
        return out
