"""A columnar block into the batcher: unknown slots counted, busy slots skipped, the rest queued."""

from __future__ import annotations

import numpy as np

from bus.columnar import RowGroup, SignalColumns
from services.controller import SignalBatcher
from services.controller.intake import SignalIntake


def _block(rows: list[tuple[str, int, int]]) -> SignalColumns:
    """One frame per row: (sender, slot index, epoch); row i's features are all i."""
    features = np.repeat(np.arange(len(rows), dtype=np.float32)[:, None], 27, axis=1)
    epoch = np.array([e for _, _, e in rows], np.int64)
    slot = np.array([s for _, s, _ in rows], np.int64)
    groups = [RowGroup(w, "", i, [i]) for i, (w, _, _) in enumerate(rows)]
    return SignalColumns(features, epoch, slot, groups)


def test_a_block_queues_its_known_free_slots_with_their_features() -> None:
    batcher = SignalBatcher(8, 0.0)
    busy = {("w2", "b")}
    intake = SignalIntake(("a", "b"), busy, batcher)
    unknown = intake(_block([("w1", 0, 3), ("w1", 5, 3), ("w2", 1, 4), ("w2", 0, 4), ("w3", 2, 1)]))
    assert unknown == [5, 2] and intake.unknown == 2
    taken = batcher.take(force=True)
    assert [(p.worker_id, p.slot_id, p.epoch) for p in taken] == [("w1", "a", 3), ("w2", "a", 4)]
    assert [batcher.features[p.row][0] for p in taken] == [0.0, 3.0]
    busy.clear()  # the ack came: the slot is decided again
    assert intake(_block([("w2", 1, 5)])) == []
    assert [(p.slot_id, p.epoch) for p in batcher.take(force=True)] == [("b", 5)]


def test_a_block_of_only_busy_or_unknown_slots_queues_nothing() -> None:
    batcher = SignalBatcher(8, 0.0)
    intake = SignalIntake(("a",), {("w1", "a")}, batcher)
    assert intake(_block([("w1", 0, 1), ("w1", 1, 1)])) == [1]
    assert len(batcher) == 0 and batcher.accepted == 0
    assert intake(_block([])) == []
