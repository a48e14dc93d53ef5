"""A columnar block into the batcher: unknown slots counted, busy slots skipped, the rest queued."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

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


_frames = st.lists(
    st.tuples(
        st.sampled_from(["w1", "w2", "w3", "w4"]),
        st.lists(st.tuples(st.integers(0, 2), st.integers(0, 5)), min_size=1, max_size=3),
    ),
    max_size=6,
)


@settings(max_examples=100, deadline=None)
@given(
    blocks=st.lists(_frames, max_size=6),
    busy=st.sets(st.tuples(st.sampled_from(["w1", "w2", "w3"]), st.sampled_from(["a", "b"]))),
)
def test_the_intake_queues_what_keys_one_by_one_would(
    blocks: list[list[tuple[str, list[tuple[int, int]]]]], busy: set[tuple[str, str]]
) -> None:
    """Frames of one to three rows, senders and pairs new and seen, unknown slot indices
    and busy slots: the same queue as the block's known, free rows submitted by key."""
    slots = ("a", "b")
    batcher, reference = SignalBatcher(4, 0.0), SignalBatcher(4, 0.0)
    intake = SignalIntake(slots, busy, batcher)
    unknown = 0
    for turn, frames in enumerate(blocks):
        rows = [(w, slot, epoch) for w, frame in frames for slot, epoch in frame]
        features = np.arange(len(rows) * 27, dtype=np.float32).reshape(-1, 27) + turn
        groups, start = [], 0
        for worker, frame in frames:
            groups.append(RowGroup(worker, "", start, list(range(len(frame)))))
            start += len(frame)
        block = SignalColumns(
            features,
            np.array([e for *_, e in rows], np.int64),
            np.array([s for _, s, _ in rows], np.int64),
            groups,
        )
        assert intake(block) == [s for _, s, _ in rows if s >= len(slots)]
        unknown += sum(s >= len(slots) for _, s, _ in rows)
        keep = [
            i for i, (w, s, _) in enumerate(rows) if s < len(slots) and (w, slots[s]) not in busy
        ]
        reference.submit_rows(
            [(rows[i][0], slots[rows[i][1]]) for i in keep],
            np.array([rows[i][2] for i in keep], np.int64),
            features[keep],
            now=0.0,
        )
        taken, expected = batcher.take(force=True), reference.take(force=True)
        assert [(p.worker_id, p.slot_id, p.epoch) for p in taken] == [
            (p.worker_id, p.slot_id, p.epoch) for p in expected
        ]
        for mine, theirs in zip(taken, expected, strict=True):
            assert np.array_equal(batcher.features[mine.row], reference.features[theirs.row])
    assert intake.unknown == unknown
    assert (batcher.accepted, batcher.stale) == (reference.accepted, reference.stale)
