"""Sequence tracking per (sender, topic): next, gaps, duplicates, late arrivals, restarts."""

from __future__ import annotations

from bus import Gap
from bus.sequence import WINDOW, Order, SequenceTracker

T = b"sig.w1."


def _tracker(*sequences: int, incarnation: int = 1) -> SequenceTracker:
    tracker = SequenceTracker()
    for sequence in sequences:
        tracker.observe("w1", T, incarnation, sequence)
    tracker.take_gaps()
    return tracker


def _gap(first: int, last: int, *, incarnation: int = 1, initial: bool = False) -> Gap:
    return Gap(
        sender="w1", topic=T, incarnation=incarnation, first=first, last=last, initial=initial
    )


def test_first_then_next_in_order() -> None:
    tracker = SequenceTracker()
    assert tracker.observe("w1", T, 1, 1) is Order.FIRST
    assert [tracker.observe("w1", T, 1, s) for s in (2, 3, 4)] == [Order.NEXT] * 3
    assert tracker.last("w1", T) == 4
    assert tracker.take_gaps() == []


def test_late_joiner_records_an_initial_gap() -> None:
    tracker = SequenceTracker()
    assert tracker.observe("w1", T, 1, 50) is Order.FIRST
    assert tracker.take_gaps() == [_gap(1, 49, initial=True)]


def test_jump_is_a_gap_and_delivered() -> None:
    tracker = _tracker(1, 2)
    assert tracker.observe("w1", T, 1, 6) is Order.GAP
    [gap] = tracker.take_gaps()
    assert (gap.first, gap.last, gap.size, gap.initial) == (3, 5, 3, False)
    assert tracker.take_gaps() == []


def test_repeat_is_a_duplicate() -> None:
    tracker = _tracker(1, 2, 3)
    assert tracker.observe("w1", T, 1, 3) is Order.DUPLICATE
    assert tracker.observe("w1", T, 1, 1) is Order.DUPLICATE
    assert tracker.last("w1", T) == 3


def test_missing_one_that_arrives_late_is_out_of_order() -> None:
    tracker = _tracker(1, 2, 5)
    assert tracker.observe("w1", T, 1, 3) is Order.OUT_OF_ORDER
    assert tracker.observe("w1", T, 1, 4) is Order.OUT_OF_ORDER
    assert tracker.last("w1", T) == 5


def test_window_edge_remembers_exactly_window_sequences() -> None:
    tracker = _tracker(*range(1, WINDOW + 2))
    newest = WINDOW + 1
    assert tracker.observe("w1", T, 1, newest - (WINDOW - 1)) is Order.DUPLICATE
    # One further back has left the window: it can no longer be told from a late arrival.
    assert tracker.observe("w1", T, 1, newest - WINDOW) is Order.OUT_OF_ORDER


def test_gap_of_a_whole_window_forgets_everything_before() -> None:
    tracker = _tracker(1, 2)
    assert tracker.observe("w1", T, 1, 2 + WINDOW) is Order.GAP
    assert tracker.observe("w1", T, 1, 2) is Order.OUT_OF_ORDER
    assert tracker.observe("w1", T, 1, 2 + WINDOW) is Order.DUPLICATE


def test_hostile_huge_jump_is_a_gap_not_a_crash() -> None:
    tracker = _tracker(1)
    assert tracker.observe("w1", T, 1, 2**63 - 1) is Order.GAP
    assert tracker.take_gaps()[0].size == 2**63 - 3
    assert tracker.observe("w1", T, 1, 2**63 - 1) is Order.DUPLICATE


def test_new_incarnation_is_a_restart_from_one() -> None:
    tracker = _tracker(1, 2, 3, incarnation=10)
    assert tracker.observe("w1", T, 11, 1) is Order.RESTART
    assert tracker.observe("w1", T, 11, 2) is Order.NEXT
    assert tracker.take_gaps() == []


def test_restart_that_lost_its_first_messages_records_an_initial_gap() -> None:
    tracker = _tracker(1, 2, incarnation=10)
    assert tracker.observe("w1", T, 11, 4) is Order.RESTART
    assert tracker.take_gaps() == [_gap(1, 3, incarnation=11, initial=True)]


def test_message_from_an_earlier_incarnation_is_stale() -> None:
    tracker = _tracker(1, incarnation=10)
    tracker.observe("w1", T, 11, 1)
    assert tracker.observe("w1", T, 10, 2) is Order.STALE_INCARNATION
    assert tracker.observe("w1", T, 11, 2) is Order.NEXT


def test_streams_are_independent_per_sender_and_topic() -> None:
    tracker = SequenceTracker()
    assert tracker.observe("w1", T, 1, 1) is Order.FIRST
    assert tracker.observe("w2", T, 1, 1) is Order.FIRST
    assert tracker.observe("w1", b"sig.w2.", 1, 1) is Order.FIRST
    assert tracker.observe("w1", T, 1, 2) is Order.NEXT


def test_heartbeat_reveals_a_tail_gap_once() -> None:
    tracker = _tracker(1, 2, 3)
    assert tracker.advance("w1", T, 1, 7) == _gap(4, 7)
    assert tracker.last("w1", T) == 7
    assert tracker.advance("w1", T, 1, 7) is None
    assert tracker.take_gaps() == [_gap(4, 7)]
    # The lost ones, should they ever turn up, are late; the next one is in order.
    assert tracker.observe("w1", T, 1, 5) is Order.OUT_OF_ORDER
    assert tracker.observe("w1", T, 1, 8) is Order.NEXT


def test_heartbeat_without_news_or_from_an_older_incarnation_changes_nothing() -> None:
    tracker = _tracker(1, 2, 3, incarnation=5)
    assert tracker.advance("w1", T, 5, 3) is None
    assert tracker.advance("w1", T, 5, 2) is None
    assert tracker.advance("w1", T, 4, 9) is None
    assert tracker.take_gaps() == []
    assert tracker.last("w1", T) == 3


def test_heartbeat_of_an_unseen_stream_starts_it_with_an_initial_gap() -> None:
    tracker = SequenceTracker()
    assert tracker.advance("w1", T, 1, 9) == _gap(1, 9, initial=True)
    assert tracker.observe("w1", T, 1, 10) is Order.NEXT
    assert tracker.observe("w1", T, 1, 9) is Order.OUT_OF_ORDER


def test_heartbeat_of_a_new_incarnation_restarts_the_stream() -> None:
    tracker = _tracker(1, 2, 3, incarnation=5)
    assert tracker.advance("w1", T, 6, 2) == _gap(1, 2, incarnation=6, initial=True)
    assert tracker.observe("w1", T, 6, 3) is Order.NEXT
    assert tracker.observe("w1", T, 5, 4) is Order.STALE_INCARNATION


def test_hostile_heartbeat_with_a_huge_last_sequence_is_cheap() -> None:
    tracker = _tracker(1)
    # A 2**32-bit shift would allocate half a gigabyte; the window simply empties instead.
    assert tracker.advance("w1", T, 1, 2**32 - 1) == _gap(2, 2**32 - 1)
    assert tracker.observe("w1", T, 1, 2**32) is Order.NEXT
    assert tracker.observe("w1", T, 1, 1) is Order.OUT_OF_ORDER
