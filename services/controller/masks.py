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
    """

    def __init__(self, layout: ActionLayout, device: torch.device | str | None = None) -> None:
        self.layout = layout
        self._table = stage_table(layout, device)
        self._germinate = torch.zeros(len(layout), dtype=torch.bool)
        self._germinate[list(layout.germinate.values())] = True
        self._germinate = self._germinate.to(device)

    def to(self, device: torch.device | str) -> ActionMasker:
        """This masker with its lookup tables on `device`."""
        return ActionMasker(self.layout, device)

    def __call__(self, columns: torch.Tensor) -> torch.Tensor:
        stages = columns[:, Column.SEED_STAGE].long()
        masks = self._table[stages]
        can_germinate = (columns[:, Column.HAS_ACTIVE_SEED] == 0) & (
            columns[:, Column.AVAILABLE_SLOTS] > 0
        )
        # Germinate columns survive only where the slot can take a seed; others untouched.
        keep = can_germinate.unsqueeze(1) | ~self._germinate
        return masks & keep
