"""Legal-action masks from the lifecycle state: what each slot may be told to do right now."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import torch

from leyline import SeedStage
from services.controller._host_passes import legal_masks
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


def stage_table(layout: ActionLayout) -> npt.NDArray[np.bool_]:
    """[stages, actions] bool: which actions each stage allows, before slot availability."""
    table = np.zeros((len(SeedStage), len(layout)), np.bool_)
    table[:, layout.wait] = True
    germinate = list(layout.germinate.values())
    for stage in SeedStage:
        if stage in EMPTY_STAGES:
            table[stage, germinate] = True
        if stage in FOSSILIZABLE_STAGES:
            table[stage, layout.fossilize] = True
        if stage in CULLABLE_STAGES:
            table[stage, layout.cull] = True
    return table


#: The columns a mask reads (stage, active seed, available slots), as plain ints: an enum
#: member costs the compiled call's dispatcher a slow type lookup (~40 us, measured).
MASK_READS = (int(Column.SEED_STAGE), int(Column.HAS_ACTIVE_SEED), int(Column.AVAILABLE_SLOTS))


class ActionMasker:
    """Computes [B, A] legal-action masks from the raw decision columns, on the host.

    WAIT is always legal. GERMINATE_* needs an empty slot (UNKNOWN or DORMANT, no active
    seed) with a free slot available; FOSSILIZE needs PROBATIONARY; CULL needs a seed in
    GERMINATED through PROBATIONARY. One table lookup per row: the table has a row per
    (stage, can germinate), so a batch is four array operations, not a rule per row (on
    the device, four tensor operations cost ~3x as much at B = 256: bench inference).
    """

    def __init__(self, layout: ActionLayout, device: torch.device | str | None = None) -> None:
        self.layout = layout
        self.device = torch.device("cpu") if device is None else torch.device(device)
        stages = stage_table(layout)
        cannot = stages.copy()
        cannot[:, list(layout.germinate.values())] = False
        #: [2 * stages, actions]: row 2 * stage + can germinate is that row's mask.
        self.table = np.ascontiguousarray(
            np.stack((cannot, stages), axis=1).reshape(2 * len(SeedStage), -1)
        )

    def to(self, device: torch.device | str) -> ActionMasker:
        """This masker, handing its masks to `device`."""
        return ActionMasker(self.layout, device)

    def legal(self, columns: npt.NDArray[np.float64]) -> npt.NDArray[np.bool_]:
        """The masks of host columns [B, COLUMN_COUNT] (`ColumnBuffer.host`), as an array:
        one compiled pass (`legal_masks`)."""
        masks = np.empty((len(columns), self.table.shape[1]), np.bool_)
        missing = legal_masks(
            np.ascontiguousarray(columns, np.float64), *MASK_READS, self.table, masks
        )
        if missing:
            raise unknown_stage(columns, missing)
        return masks

    def __call__(self, columns: torch.Tensor) -> torch.Tensor:
        """The masks of columns held as a tensor, on this masker's device."""
        masks = self.legal(columns.detach().cpu().numpy())
        return torch.from_numpy(masks).to(self.device)


def unknown_stage(columns: npt.NDArray[np.float64], missing: int) -> IndexError:
    """The error for a row whose stage has no mask (`legal_masks` returned `missing`)."""
    return IndexError(f"seed stage {columns[-1 - missing, Column.SEED_STAGE]} has no legal actions")
