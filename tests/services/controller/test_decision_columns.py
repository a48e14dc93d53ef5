"""The raw decision columns: exact float64 copies of the values the rules compare."""

from __future__ import annotations

import math

import pytest
from controller_signals import SignalFactory

from leyline import SeedStage
from services.controller import Column, ColumnBuffer


def test_columns_hold_the_raw_values_exactly(signal: SignalFactory) -> None:
    below = math.nextafter(-2.0, -math.inf)
    sig = signal(
        epoch=2**32 - 1,
        plateau_epochs=3,
        val_accuracy=math.nextafter(50.0, 0.0),
        seed_stage=SeedStage.SHADOWING,
        seed_epochs_in_stage=5,
        seed_improvement=below,
        available_slots=2,
    )
    [row] = ColumnBuffer(4, "cpu").fill([sig], [7]).tolist()
    assert row[Column.ROW] == 7
    assert row[Column.EPOCH] == 2**32 - 1
    assert row[Column.VAL_ACCURACY] == math.nextafter(50.0, 0.0)
    assert row[Column.SEED_IMPROVEMENT] == below
    assert row[Column.SEED_STAGE] == SeedStage.SHADOWING
    assert row[Column.HAS_ACTIVE_SEED] == 1
    assert row[Column.AVAILABLE_SLOTS] == 2


def test_a_batch_larger_than_the_buffer_is_refused(signal: SignalFactory) -> None:
    with pytest.raises(ValueError, match="exceeds max_batch 2"):
        ColumnBuffer(2, "cpu").fill([signal()] * 3, [0, 1, 2])
