"""Legal-action masks from the lifecycle state: what each slot may be told to do right now."""

from __future__ import annotations

import torch

from leyline import SeedStage
from services.controller.columns import Column
from services.controller.layout import ActionLayout

#: Stages in which a slot holds no seed, so a GERMINATE may fill it.
EMPTY_STAGES = frozenset({SeedStage.UNKNOWN, SeedStage.DORMANT})
#: Stages from which CULL is a legal edge of the lifecycle.
CULLABLE_STAGES = frozenset(
    {
        SeedStage.GERMINATED,
        SeedStage.TRAINING,
        SeedStage.BLENDING,
        SeedStage.SHADOWING,
        SeedStage.PROBATIONARY,
    }
)
#: The only stage the controller may fossilize from.
FOSSILIZABLE_STAGES = frozenset({SeedStage.PROBATIONARY})


def stage_table(layout: ActionLayout, device: torch.device | str | None = None) -> torch.Tensor:
    """[stages, actions] bool: which actions each stage allows, before slot availability."""
    table = torch.zeros((len(SeedStage), len(layout)), dtype=torch.bool)
    table[:, layout.wait] = True
    germinate = list(layout.germinate.values())
    for stage in SeedStage:
        if stage in EMPTY_STAGES:
            table[stage, germinate] = True
        if stage in FOSSILIZABLE_STAGES:
            table[stage, layout.fossilize] = True
        if stage in CULLABLE_STAGES:
            table[stage, layout.cull] = True
    return table.to(device)


class ActionMasker:
    """Computes [B, A] legal-action masks from the raw decision columns, on their device.

    WAIT is always legal. GERMINATE_* needs an empty slot (UNKNOWN or DORMANT, no active
    seed) with a free slot available; FOSSILIZE needs PROBATIONARY; CULL needs a seed in
    GERMINATED through PROBATIONARY.

    A mask depends on the stage and on whether the slot can take a seed alone, so it is one
    row of a [stages x 2, A] table, picked by `2 * stage + can_germinate`: a third of the
    time of masking the stage's row afterwards (bench inference, B = 256).
    """

    def __init__(self, layout: ActionLayout, device: torch.device | str | None = None) -> None:
        self.layout = layout
        table = stage_table(layout)
        germinate = torch.zeros(len(layout), dtype=torch.bool)
        germinate[list(layout.germinate.values())] = True
        # Row 2s: stage s, no seed may be placed; row 2s + 1: stage s, one may.
        self._table = torch.stack((table & ~germinate, table), dim=1).reshape(-1, len(layout))
        self._table = self._table.to(device)

    def to(self, device: torch.device | str) -> ActionMasker:
        """This masker with its lookup tables on `device`."""
        return ActionMasker(self.layout, device)

    def __call__(self, columns: torch.Tensor) -> torch.Tensor:
        can_germinate = (columns[:, Column.HAS_ACTIVE_SEED] == 0) & (
            columns[:, Column.AVAILABLE_SLOTS] > 0
        )
        # float64 stage values are whole numbers: the sum is exact.
        return self._table[(columns[:, Column.SEED_STAGE] * 2 + can_germinate).long()]
