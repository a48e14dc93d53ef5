"""The raw decision columns: exact float64 copies of the feature block's float32 values."""

from __future__ import annotations

import math

import numpy as np
import pytest
from controller_signals import SignalFactory

from leyline import SeedStage
from services.controller import Column, ColumnBuffer


def _float32_after(value: float, toward: float) -> float:
    return float(np.nextafter(np.float32(value), np.float32(toward)))


def test_columns_hold_the_raw_values_exactly(signal: SignalFactory) -> None:
    below = _float32_after(-2.0, -math.inf)  # the rules compare with -2.0: one step matters
    sig = signal(
        epoch=2**24 + 2,
        plateau_epochs=3,
        val_accuracy=_float32_after(50.0, 0.0),
        seed_stage=SeedStage.SHADOWING,
        seed_epochs_in_stage=5,
        seed_improvement=below,
        available_slots=2,
    )
    [row] = ColumnBuffer(4, "cpu").fill([sig], [7]).tolist()
    assert row[Column.ROW] == 7
    assert row[Column.EPOCH] == 2**24 + 2
    assert row[Column.VAL_ACCURACY] == _float32_after(50.0, 0.0)
    assert row[Column.SEED_IMPROVEMENT] == below
    assert row[Column.SEED_STAGE] == SeedStage.SHADOWING
    assert row[Column.HAS_ACTIVE_SEED] == 1
    assert row[Column.AVAILABLE_SLOTS] == 2


def test_a_batch_larger_than_the_buffer_is_refused(signal: SignalFactory) -> None:
    with pytest.raises(ValueError, match="exceeds max_batch 2"):
        ColumnBuffer(2, "cpu").fill([signal()] * 3, [0, 1, 2])
