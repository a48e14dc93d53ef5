"""Freshest-wins conflation and the micro-batching clock, with time driven by the test."""

from __future__ import annotations

import numpy as np
import pytest
from controller_signals import SignalFactory, make_signal
from hypothesis import given, settings
from hypothesis import strategies as st
from reference_batcher import ReferenceBatcher

from leyline import FastTrainingSignals
from services.controller import SignalBatcher


def test_a_newer_epoch_replaces_the_pending_one_in_place(signal: SignalFactory) -> None:
    batcher = SignalBatcher(max_batch=8, max_wait_s=1.0)
    batcher.submit("w1", "s", signal(epoch=3), now=0.0)
    batcher.submit("w2", "s", signal(epoch=3), now=0.5)
    assert batcher.submit("w1", "s", signal(epoch=4), now=0.9)
    batch = batcher.take(now=1.0)
    assert [(p.worker_id, p.signal.epoch, p.arrived) for p in batch] == [
        ("w1", 4, 0.0),
        ("w2", 3, 0.5),
    ]
    assert (batcher.accepted, batcher.conflated, batcher.stale) == (3, 1, 0)


def test_an_older_epoch_than_the_pending_one_is_dropped(signal: SignalFactory) -> None:
    batcher = SignalBatcher(max_batch=8, max_wait_s=0.0)
    batcher.submit("w1", "s", signal(epoch=5), now=0.0)
    assert not batcher.submit("w1", "s", signal(epoch=4), now=0.0)
    assert [p.signal.epoch for p in batcher.take(now=0.0)] == [5]
    assert batcher.stale == 1


def test_an_epoch_already_decided_is_dropped(signal: SignalFactory) -> None:
    batcher = SignalBatcher(max_batch=8, max_wait_s=0.0)
    batcher.submit("w1", "s", signal(epoch=5), now=0.0)
    batcher.take(now=0.0)
    assert not batcher.submit("w1", "s", signal(epoch=5), now=1.0)
    assert batcher.submit("w1", "s", signal(epoch=6), now=1.0)


def test_slots_of_one_worker_are_kept_apart(signal: SignalFactory) -> None:
    batcher = SignalBatcher(max_batch=8, max_wait_s=0.0)
    batcher.submit("w1", "a", signal(epoch=1), now=0.0)
    batcher.submit("w1", "b", signal(epoch=1), now=0.0)
    assert len(batcher) == 2


def test_a_full_batch_is_ready_without_waiting(signal: SignalFactory) -> None:
    batcher = SignalBatcher(max_batch=3, max_wait_s=10.0)
    for worker in ("w1", "w2", "w3", "w4"):
        batcher.submit(worker, "s", signal(epoch=1), now=0.0)
    batch = batcher.take(now=0.0)
    assert [p.worker_id for p in batch] == ["w1", "w2", "w3"]
    assert batcher.take(now=0.0) == []
    assert len(batcher) == 1


def test_a_partial_batch_waits_for_the_oldest_signals_deadline(signal: SignalFactory) -> None:
    batcher = SignalBatcher(max_batch=4, max_wait_s=0.005)
    batcher.submit("w1", "s", signal(epoch=1), now=100.0)
    batcher.submit("w2", "s", signal(epoch=1), now=100.004)
    assert batcher.deadline() == pytest.approx(100.005)
    assert batcher.take(now=100.0049) == []
    assert [p.worker_id for p in batcher.take(now=100.005)] == ["w1", "w2"]
    assert batcher.deadline() is None


def test_take_can_be_forced_before_the_deadline(signal: SignalFactory) -> None:
    batcher = SignalBatcher(max_batch=4, max_wait_s=60.0)
    batcher.submit("w1", "s", signal(epoch=1), now=0.0)
    assert len(batcher.take(now=0.0, force=True)) == 1


def test_forget_lets_a_restarted_worker_begin_at_epoch_zero(signal: SignalFactory) -> None:
    batcher = SignalBatcher(max_batch=8, max_wait_s=0.0)
    batcher.submit("w1", "s", signal(epoch=9), now=0.0)
    batcher.take(now=0.0)
    batcher.submit("w1", "s", signal(epoch=10), now=0.0)
    batcher.submit("w2", "s", signal(epoch=10), now=0.0)
    batcher.forget("w1")
    assert [p.worker_id for p in batcher.take(now=0.0)] == ["w2"]
    assert batcher.submit("w1", "s", signal(epoch=0), now=0.0)


@pytest.mark.parametrize(("max_batch", "max_wait_s"), [(0, 1.0), (1, -0.1)])
def test_rejects_impossible_limits(max_batch: int, max_wait_s: float) -> None:
    with pytest.raises(ValueError):
        SignalBatcher(max_batch, max_wait_s)


def test_a_block_submit_applies_the_rules_signal_by_signal(signal: SignalFactory) -> None:
    batcher = SignalBatcher(max_batch=8, max_wait_s=0.0)
    batcher.submit("w1", "s", signal(epoch=2), now=0.0)
    batcher.take(now=0.0)  # w1's epoch 2 is decided
    keys = [("w1", "s"), ("w2", "s"), ("w1", "s"), ("w2", "s"), ("w2", "s")]
    epochs = [2, 7, 3, 6, 8]  # stale (decided), new, new, older than pending, newer
    accepted = batcher.submit_many(keys, [signal(epoch=e) for e in epochs], now=1.0)
    assert accepted == 3
    assert (batcher.accepted, batcher.conflated, batcher.stale) == (4, 1, 2)
    assert [(p.worker_id, p.signal.epoch, p.arrived) for p in batcher.take(now=1.0)] == [
        ("w2", 8, 1.0),
        ("w1", 3, 1.0),
    ]


def test_each_slot_keeps_its_memory_row_across_batches_and_forget(signal: SignalFactory) -> None:
    batcher = SignalBatcher(max_batch=8, max_wait_s=0.0)
    batcher.submit_many([("w1", "a"), ("w2", "a")], [signal(epoch=1), signal(epoch=1)], 0.0)
    assert [p.row for p in batcher.take(now=0.0)] == [0, 1]
    batcher.forget("w1")
    batcher.submit_many([("w2", "a"), ("w1", "a"), ("w1", "b")], [signal(epoch=2)] * 3, 0.0)
    assert [p.row for p in batcher.take(now=0.0)] == [1, 0, 2]


_arrivals = st.lists(
    st.lists(
        st.tuples(st.sampled_from(["w1", "w2"]), st.sampled_from(["a", "b"]), st.integers(0, 6)),
        max_size=8,
    ),
    max_size=6,
)


@settings(max_examples=60, deadline=None)
@given(blocks=_arrivals, forget_after=st.integers(0, 6))
def test_a_block_submit_equals_one_submit_after_another(
    blocks: list[list[tuple[str, str, int]]], forget_after: int
) -> None:
    """Blocks of arrivals, a take after each (and a forget once): both forms end the same."""
    one, block = SignalBatcher(3, 0.0), SignalBatcher(3, 0.0)
    for turn, arrivals in enumerate(blocks):
        signals = [make_signal(epoch=epoch) for _, _, epoch in arrivals]
        taken_one = [
            one.submit(w, s, sig, now=float(turn))
            for (w, s, _), sig in zip(arrivals, signals, strict=True)
        ]
        keys = [(w, s) for w, s, _ in arrivals]
        assert block.submit_many(keys, signals, now=float(turn)) == sum(taken_one)
        assert one.take(now=float(turn)) == block.take(now=float(turn))
        if turn == forget_after:
            one.forget("w1")
            block.forget("w1")
    counters = ("accepted", "conflated", "stale", "rows")
    assert [getattr(one, name) for name in counters] == [getattr(block, name) for name in counters]


def _features(signal: FastTrainingSignals) -> np.ndarray:
    return np.frombuffer(signal.features, "<f4")


@settings(max_examples=60, deadline=None)
@given(blocks=_arrivals, forget_after=st.integers(0, 6))
def test_rows_conflate_as_objects_do(
    blocks: list[list[tuple[str, str, int]]], forget_after: int
) -> None:
    """The same arrivals as rows of a columnar receive: the same pending and decided state,
    and each taken slot's row of the feature table holds its signal's features."""
    _rows_against_objects(blocks, forget_after, 3)


#: Blocks as a steady receive hands them over: each slot at most once a block, so with a
#: batch that takes them all, most blocks go `submit_rows`' whole-block way.
_distinct_arrivals = st.lists(
    st.lists(
        st.tuples(st.sampled_from(["w1", "w2"]), st.sampled_from(["a", "b"]), st.integers(0, 6)),
        max_size=4,
        unique_by=lambda arrival: arrival[:2],
    ),
    max_size=8,
)


@settings(max_examples=100, deadline=None)
@given(blocks=_distinct_arrivals, forget_after=st.integers(0, 8), batch=st.integers(1, 4))
def test_rows_of_distinct_slots_conflate_as_objects_do(
    blocks: list[list[tuple[str, str, int]]], forget_after: int, batch: int
) -> None:
    """Blocks of distinct slots (the whole-block path when none is pending), stale ones
    among them: the same state as objects one after another."""
    _rows_against_objects(blocks, forget_after, batch)


def _rows_against_objects(
    blocks: list[list[tuple[str, str, int]]], forget_after: int, batch: int
) -> None:
    objects, rows = SignalBatcher(batch, 0.0), SignalBatcher(batch, 0.0)
    for turn, arrivals in enumerate(blocks):
        signals = [
            make_signal(epoch=epoch, global_step=n) for n, (*_, epoch) in enumerate(arrivals)
        ]
        keys = [(w, s) for w, s, _ in arrivals]
        features = np.array([_features(s) for s in signals], np.float32).reshape(-1, 27)
        accepted = objects.submit_many(keys, signals, now=float(turn))
        epochs = np.array([s.epoch for s in signals], np.int64)
        assert rows.submit_rows(keys, epochs, features, now=float(turn)) == (accepted)
        expected = objects.take(now=float(turn))
        taken = rows.take(now=float(turn))
        assert [(p.worker_id, p.slot_id, p.epoch, p.arrived, p.row) for p in taken] == [
            (p.worker_id, p.slot_id, p.epoch, p.arrived, p.row) for p in expected
        ]
        for pending, item in zip(expected, taken, strict=True):
            assert item.signal is None and pending.signal is not None
            assert np.array_equal(rows.features[item.row], _features(pending.signal))
        if turn == forget_after:
            objects.forget("w1")
            rows.forget("w1")
    assert (objects.accepted, objects.conflated, objects.stale) == (
        rows.accepted,
        rows.conflated,
        rows.stale,
    )


_arrival = st.tuples(
    st.sampled_from(["w1", "w2", "w3"]), st.sampled_from(["a", "b"]), st.integers(0, 8)
)
_steps = st.lists(
    st.one_of(
        st.tuples(st.just("rows"), st.lists(_arrival, max_size=10)),
        st.tuples(st.just("objects"), st.lists(_arrival, max_size=4)),
        st.tuples(st.just("one"), st.lists(_arrival, max_size=3)),
        st.tuples(st.just("take"), st.booleans()),
        st.tuples(st.just("forget"), st.sampled_from(["w1", "w2", "w3"])),
        st.tuples(st.just("wait"), st.floats(0.0, 2.0)),
    ),
    max_size=30,
)


@settings(max_examples=200, deadline=None)
@given(steps=_steps, max_batch=st.integers(1, 5), max_wait_s=st.sampled_from([0.0, 0.5, 1.0]))
def test_the_array_batcher_agrees_with_the_rules_written_plainly(
    steps: list[tuple], max_batch: int, max_wait_s: float
) -> None:
    """Any interleaving of row blocks, object blocks, single submits, takes (forced or
    not), forgets and waits: the same accepted counts, batches (worker, slot, epoch,
    arrival, memory row), features of what is taken, deadline, pending count and counters
    as the plain rules."""
    batcher, reference = (
        SignalBatcher(max_batch, max_wait_s),
        ReferenceBatcher(max_batch, max_wait_s),
    )
    now, serial = 0.0, 0
    for step in steps:
        kind = step[0]
        if kind in ("rows", "objects", "one"):
            arrivals = step[1]
            signals = []
            for _, _, epoch in arrivals:
                serial += 1
                signals.append(make_signal(epoch=epoch, global_step=serial))
            keys = [(w, s) for w, s, _ in arrivals]
            features = np.array([_features(s) for s in signals], np.float32).reshape(-1, 27)
            expected = [
                reference.submit(key, sig.epoch, row, now)
                for key, sig, row in zip(keys, signals, features, strict=True)
            ]
            if kind == "rows":
                epochs = np.array([s.epoch for s in signals], np.int64)
                assert batcher.submit_rows(keys, epochs, features, now=now) == sum(expected)
            elif kind == "one":
                one_by_one = [
                    batcher.submit(w, s, sig, now=now)
                    for (w, s), sig in zip(keys, signals, strict=True)
                ]
                assert one_by_one == expected
            else:
                assert batcher.submit_many(keys, signals, now=now) == sum(expected)
        elif kind == "take":
            taken = batcher.take(now=now, force=step[1])
            want = reference.take(now, step[1])
            assert [(p.worker_id, p.slot_id, p.epoch, p.arrived, p.row) for p in taken] == want
            for worker, slot, *_ in want:
                row = batcher.rows[worker, slot]
                assert np.array_equal(batcher.features[row], reference.features[worker, slot])
        elif kind == "forget":
            batcher.forget(step[1])
            reference.forget(step[1])
        else:
            now += step[1]
        assert len(batcher) == len(reference.pending)
        assert batcher.deadline() == reference.deadline()
    assert (batcher.accepted, batcher.conflated, batcher.stale) == (
        reference.accepted, reference.conflated, reference.stale,
    )  # fmt: skip
    assert batcher.rows == reference.rows


def test_a_full_queue_is_compacted_then_grown_and_keeps_every_pending_signal() -> None:
    """Rounds of re-queued slots fill the queue with ended entries (compacted in the pass),
    then a block longer than the queue grows it; by row and by pair alike, every pending
    signal is taken once, oldest first, as the plain rules take them."""
    by_row, by_pair = SignalBatcher(50, 0.0), SignalBatcher(50, 0.0)
    reference = ReferenceBatcher(50, 0.0)
    for worker in range(400):  # memory rows 0-799, in order, in all three
        for slot in "ab":
            by_row.row(f"w{worker}", slot)
            by_pair.row(f"w{worker}", slot)
            reference.rows[(f"w{worker}", slot)] = len(reference.rows)
    pairs = np.arange(800, dtype=np.int64).reshape(400, 2)
    no_skip = np.zeros(800, np.bool_)
    out = np.empty(800, np.int64)
    for turn, count in enumerate([100] * 12 + [700]):  # 12 x 100 entries pass 256; then 700
        rows = np.arange(count, dtype=np.int64)
        epochs = np.full(count, turn + 1, np.int64)
        features = np.full((count, 27), turn, np.float32)
        assert by_row.submit_block(rows, epochs, features, now=0.0) == count
        senders, starts = np.arange(count // 2, dtype=np.int64), np.arange(0, count, 2)
        slots = np.tile(np.array([0, 1], np.int64), count // 2)
        assert (
            by_pair.submit_paired(pairs, senders, starts, slots, no_skip, epochs, features, out)
            == count
        )
        assert np.array_equal(out[:count], rows)
        for row in range(count):
            reference.submit((f"w{row // 2}", "ab"[row % 2]), turn + 1, features[row], 0.0)
        want = reference.take(0.0, True)
        for batcher in (by_row, by_pair):
            taken = batcher.take(force=True)
            assert [(p.worker_id, p.slot_id, p.epoch) for p in taken] == [
                (worker, slot, epoch) for worker, slot, epoch, _, _ in want
            ]
    for batcher in (by_row, by_pair):
        assert len(batcher) == len(reference.pending)
        assert (batcher.accepted, batcher.conflated, batcher.stale) == (
            reference.accepted, reference.conflated, reference.stale,
        )  # fmt: skip


def test_a_pair_without_a_memory_row_queues_nothing() -> None:
    """Sender 0's slot 1 has no memory row yet: nothing of the block is queued, and `rows`
    says which rows were found. A row whose mark is set is passed over, not counted."""
    batcher = SignalBatcher(8, 0.0)
    batcher.row("w0", "a")
    pairs = np.array([[0, -1]], np.int64)
    sender, start = np.zeros(1, np.int64), np.zeros(1, np.int64)
    epochs, features = np.ones(2, np.int64), np.zeros((2, 27), np.float32)
    skip, rows = np.zeros(1, np.bool_), np.empty(2, np.int64)
    slots = np.array([0, 1], np.int64)
    assert batcher.submit_paired(pairs, sender, start, slots, skip, epochs, features, rows) == -1
    assert rows.tolist() == [0, -1] and len(batcher) == 0 and batcher.accepted == 0
    skip[0] = True
    slot_a = np.array([0], np.int64)
    assert (
        batcher.submit_paired(pairs, sender, start, slot_a, skip, epochs[:1], features[:1], rows)
        == 0
    )
    assert (len(batcher), batcher.accepted, batcher.stale) == (0, 0, 0)
    skip[0] = False  # the ack came: the same row is queued
    assert (
        batcher.submit_paired(pairs, sender, start, slot_a, skip, epochs[:1], features[:1], rows)
        == 1
    )
    assert [(p.worker_id, p.slot_id, p.epoch) for p in batcher.take(force=True)] == [("w0", "a", 1)]
