"""Fast signals received as columns: a drain's `sig` frames decoded straight into numpy rows.

The per-message pipeline turns every fast signal into a typed object and an `Envelope`, and
a consumer that wants a model input then walks those objects again. `ColumnReceiver` takes
the frames of one drain instead and writes their feature blocks, epochs and slots into
preallocated rows, with the same checks:

- every frame is admitted by `Pipeline.admit` (topic, header, identity, incarnation), the
  code the per-message path runs;
- a frame whose body is the fixed layout (every message a `FastTrainingSignals.v2` record
  of `RECORD_BYTES` with one-byte epoch and slot, behind the batch's array header) joins one
  `b"".join` of bodies; one compiled pass (`leyline.kernels.take_records`) checks every
  record of the drain against the record's template (tag, version, field types) and takes
  its features, epoch and slot into the rows;
- in frame order, each such frame's run of sequences is recorded in one step
  (`SequenceTracker.observe_run`) and its age taken once.

Anything else goes through the rest of the per-message path (`Pipeline.produce`) for that
frame, so it is refused by name and counted exactly as there, and its valid messages still
join the columns in order: a frame of another layout (an older major to lift, an epoch past
127, a bad message inside), a stream's first frame, a gap or repeat, a sender's restart, a
stale frame, a channel with a guard, and drains of fewer than `min_rows` rows (where numpy's
fixed cost per call exceeds the per-message cost). The values of the features are not the
bus's to check (the contract checks them for a batch: `leyline.features.RowChecker`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from itertools import chain, repeat
from typing import Any

import msgspec
import numpy as np
import numpy.typing as npt

from bus.header import MAX_BATCH, array_prefix
from bus.pipeline import Admitted, Envelope, Pipeline
from bus.rejection import Rejection
from bus.topics import Channel
from leyline import FastTrainingSignals
from leyline.features import write_raw
from leyline.records import RECORD_BYTES, template_words
from leyline.signals import TENSOR_SCHEMA_SIZE

__all__ = [
    "DEFAULT_MAX_ROWS",
    "DEFAULT_MIN_ROWS",
    "RECORD_BYTES",
    "ColumnReceiver",
    "ColumnSink",
    "RowGroup",
    "SignalColumns",
]

#: Rows one block holds at most (a drain with more is delivered in several blocks).
DEFAULT_MAX_ROWS = 1024
#: Fewer rows than this in a drain go the per-message way (still delivered as columns).
DEFAULT_MIN_ROWS = 16

#: A plain reference: an enum member read through its class costs a descriptor call.
_SIG = Channel.SIG
#: The array header of each batch size, made once.
_PREFIXES = [array_prefix(count) for count in range(MAX_BATCH + 1)]


class RowGroup(msgspec.Struct, frozen=True, gc=False):
    """Consecutive rows of one block from one frame: their sender, scope and sequences."""

    sender: str
    scope: str
    start: int
    sequences: range | list[int]


class SignalColumns:
    """A block of valid fast signals as rows, in arrival order.

    `features` holds the raw (unnormalised) feature blocks [n, 27] float32, `epoch` and
    `slot_index` [n] int64; all three are views of the receiver's buffers, valid until the
    next block. `groups` says which frame each run of rows came from; `group_senders` and
    `group_starts` are the same groups' senders and first rows as flat columns, made where
    the block is assembled (the receiver collects them as it makes the groups), so that a
    consumer mapping rows to senders reads no `RowGroup` (a walk over a block's groups was
    ~35 us of the controller's intake at 128 frames).
    """

    __slots__ = ("epoch", "features", "group_senders", "group_starts", "groups", "slot_index")

    def __init__(
        self,
        features: npt.NDArray[np.float32],
        epoch: npt.NDArray[np.int64],
        slot_index: npt.NDArray[np.int64],
        groups: list[RowGroup],
        group_senders: list[str] | None = None,
        group_starts: list[int] | None = None,
    ) -> None:
        self.features = features
        self.epoch = epoch
        self.slot_index = slot_index
        self.groups = groups
        if group_senders is None or group_starts is None:
            group_senders = [group.sender for group in groups]
            group_starts = [group.start for group in groups]
        self.group_senders = group_senders
        self.group_starts: npt.NDArray[np.int64] = np.array(group_starts, np.int64)

    def __len__(self) -> int:
        return len(self.features)

    def senders(self) -> list[str]:
        """The sender of each row."""
        return list(chain.from_iterable(repeat(g.sender, len(g.sequences)) for g in self.groups))

    def sequences(self) -> list[int]:
        """The sequence of each row on its sender's topic."""
        return list(chain.from_iterable(g.sequences for g in self.groups))


ColumnSink = Callable[[SignalColumns], None]


#: A frame taken for the next block: the frame, its admission, and where its records lie in
#: the joined bodies when it has the fixed layout (else -1).
_Pending = tuple[bytes, Admitted, int]


class ColumnReceiver:
    """Turns the `sig` data frames of a drain into `SignalColumns` blocks (see the module).

    `add` each frame in arrival order and `flush` at the end of a drain and before any other
    frame is processed; a frame that would take the block past `max_rows` flushes it first.
    Each block goes to `deliver`, each refusal to `refuse`. The pipeline's sequence state,
    clock offsets and metrics end exactly as the per-message path leaves them.
    """

    def __init__(
        self,
        pipeline: Pipeline,
        deliver: Callable[[SignalColumns], object],
        refuse: Callable[[Rejection], object],
        max_rows: int | None = None,
        min_rows: int | None = None,
    ) -> None:
        max_rows = DEFAULT_MAX_ROWS if max_rows is None else max_rows
        min_rows = DEFAULT_MIN_ROWS if min_rows is None else min_rows
        if max_rows < 1:
            raise ValueError(f"max_rows must be at least 1, got {max_rows}")
        self.pipeline = pipeline
        self._admit = pipeline.admit
        self._deliver = deliver
        self._refuse = refuse
        self.max_rows = max_rows
        self.min_rows = min_rows
        # An empty block takes one frame of any count the header allows.
        capacity = max(max_rows, MAX_BATCH)
        self._features = np.empty((capacity, TENSOR_SCHEMA_SIZE), np.float32)
        self._epoch = np.empty(capacity, np.int64)
        self._slot = np.empty(capacity, np.int64)
        from leyline import kernels

        self._take = kernels.take_records
        mask, value = template_words()
        self._template = (kernels.tiled(mask), kernels.tiled(value))
        #: The feature rows as the record kernel writes them: each row's 108 bytes.
        self._bytes = self._features.view(np.uint8)
        self._bad = np.empty(capacity, np.int64)
        self._pending: list[_Pending] = []
        self._bodies: list[memoryview] = []
        self._rows = 0
        self._records = 0
        #: Frames taken whole as columns, and frames that went the per-message way.
        self.columnar_frames = 0
        self.fallback_frames = 0

    def add(self, frame: bytes, peer: str | None) -> None:
        """Admit one `sig` data frame for the next block (`Pipeline.admit`)."""
        admitted = self._admit(frame, False, peer)
        if isinstance(admitted, Rejection):
            self._refuse(admitted)
            return
        count = admitted.messages
        if self._rows and self._rows + count > self.max_rows:
            self.flush()
        first = -1
        if admitted.channel is _SIG and not admitted.control:
            start = admitted.body
            if count > 1:
                prefix = _PREFIXES[count]
                start = start + len(prefix) if frame.startswith(prefix, start) else -1
            if start >= 0 and len(frame) - start == count * RECORD_BYTES:
                first = self._records
                self._records += count
                self._bodies.append(memoryview(frame)[start:])
        self._pending.append((frame, admitted, first))
        self._rows += count

    def flush(self) -> None:
        """Deliver the block of the frames added since the last flush; refuse what fails."""
        pending, bodies = self._pending, self._bodies
        if not pending:
            return
        waiting = self._rows
        self._pending, self._bodies = [], []
        self._rows = self._records = 0
        pipeline = self.pipeline
        features, epoch, slot = self._features, self._epoch, self._slot
        bad_frames: set[int] = set()
        take_whole = waiting >= self.min_rows and pipeline.guard_of(_SIG) is None and bool(bodies)
        started = time.perf_counter_ns()
        records = 0
        if take_whole:
            # One compiled pass checks every record against the template and takes its
            # features, epoch and slot into the rows of its own index; rows that end up
            # elsewhere (a frame refused or taken per message) move below.
            joined = b"".join(bodies)
            records = len(joined) // RECORD_BYTES
            bad = self._take(joined, self._template, self._bytes, epoch, slot, self._bad)
            if bad:
                starts = np.array([first for _, _, first in pending if first >= 0])
                at = np.searchsorted(starts, self._bad[:bad], "right") - 1
                bad_frames = set(starts[at].tolist())
        observe_run, age_of = pipeline.tracker.observe_run, pipeline.clocks.age
        max_age = pipeline.max_signal_age_ns
        now = pipeline.now()  # one drain, received together: aged at one reading of the clock
        columnar = 0
        groups: list[RowGroup] = []
        senders: list[str] = []
        first_rows: list[int] = []
        rejections: list[Rejection] = []
        rows = 0
        #: The records' rows, copied aside once the block's rows stop lining up with them.
        staged: tuple[npt.NDArray[Any], ...] | None = None
        for frame, admitted, first in pending:
            whole = take_whole and first >= 0 and first not in bad_frames
            outcomes = None
            if whole:
                header = admitted.header
                count = admitted.messages
                if observe_run(
                    header.sender, admitted.topic, header.incarnation, header.sequence, count
                ):
                    if max_age is not None:
                        age = age_of(header.sender, header.incarnation, header.sent_ns, now)
                        if age > max_age:  # recorded in sequence, refused as stale
                            outcomes = pipeline.produce(admitted, frame, sequenced=True, age=age)
                    if outcomes is None:
                        if first != rows or staged is not None:
                            if staged is None:
                                staged = self._staged(records)
                            self._place(staged, first, count, rows)
                        first_sequence = header.sequence
                        senders.append(header.sender)
                        first_rows.append(rows)
                        groups.append(
                            RowGroup(
                                header.sender,
                                admitted.scope,
                                rows,
                                range(first_sequence, first_sequence + count),
                            )
                        )
                        rows += count
                        columnar += 1
                        continue
            self.fallback_frames += 1
            if outcomes is None:
                outcomes = pipeline.produce(admitted, frame)
            envelopes: list[Envelope[Any]] = []
            for outcome in outcomes:
                if isinstance(outcome, Rejection):
                    rejections.append(outcome)
                else:
                    envelopes.append(outcome)
            if envelopes:
                if staged is None and rows < records:
                    staged = self._staged(records)
                senders.append(envelopes[0].header.sender)
                first_rows.append(rows)
                rows = self._write_envelopes(envelopes, rows, groups)
        self.columnar_frames += columnar
        if records:
            elapsed = time.perf_counter_ns() - started
            pipeline.metrics.decode_latency.observe(elapsed // records, records)
        for rejection in rejections:
            self._refuse(rejection)
        if groups:
            self._deliver(
                SignalColumns(
                    features[:rows], epoch[:rows], slot[:rows], groups, senders, first_rows
                )
            )

    def _staged(self, records: int) -> tuple[npt.NDArray[Any], ...]:
        """Copies of the first `records` rows, as the record take wrote them."""
        return tuple(c[:records].copy() for c in (self._features, self._epoch, self._slot))

    def _place(self, staged: tuple[npt.NDArray[Any], ...], first: int, count: int, at: int) -> None:
        """The staged rows of records [first, first + count) into the rows from `at`."""
        columns: tuple[npt.NDArray[Any], ...] = (self._features, self._epoch, self._slot)
        for column, source in zip(columns, staged, strict=True):
            column[at : at + count] = source[first : first + count]

    def block_of(self, envelopes: list[Envelope[Any]]) -> SignalColumns:
        """A block of fast signals that came as envelopes (a replay), for the same sinks."""
        groups: list[RowGroup] = []
        rows = 0
        for envelope in envelopes:
            rows = self._write_envelopes([envelope], rows, groups)
        return SignalColumns(self._features[:rows], self._epoch[:rows], self._slot[:rows], groups)

    def _write_envelopes(
        self, envelopes: list[Envelope[Any]], at: int, groups: list[RowGroup]
    ) -> int:
        """The valid messages of a frame that went the per-message way, as rows from `at`."""
        signals: list[FastTrainingSignals] = [e.message for e in envelopes]
        stop = at + len(signals)
        write_raw(signals, self._features[at:stop])
        self._epoch[at:stop] = [s.epoch for s in signals]
        self._slot[at:stop] = [s.slot_index for s in signals]
        head = envelopes[0]
        sequences = [e.header.sequence for e in envelopes]
        groups.append(RowGroup(head.header.sender, head.scope, at, sequences))
        return stop
