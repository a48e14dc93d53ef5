"""The commands of a decision batch, encoded straight from its columns to wire bytes.

Building an `AdaptationCommand` per decision and encoding it (a copy of a template, four
stamps, an encode: ~0.5 us, and again in the journal and at publish) was most of the
loop's own time at B = 256. Here the bytes of a command are a template encoded once per
(action, reason, slot, confidence is 1.0), validated once by the contract's own
constructor, with the parts that vary patched in per row: a counter id, the batch's one
timestamp, the confidence. The bytes are exactly what `leyline.wire.encode` writes for the
same command (a test holds them equal); the journal patches the sequence in last
(`numbered`), as the contract encodes it last.
"""

from __future__ import annotations

import enum
import functools
import secrets
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any, NamedTuple

import msgspec
import numpy as np
import numpy.typing as npt

from leyline import AdaptationCommand, CommandType
from leyline.actions import action_to_command
from leyline.wire import encode
from services.controller import _command_bytes
from services.controller.layout import ActionLayout
from services.controller.pending import PendingBatch, RowNames, SlotCodes
from services.controller.policy import DecisionReason

_REASON_TEXT = {int(reason): reason.text for reason in DecisionReason}
#: Reason codes a template code leaves room for: every `DecisionReason` and 0.
_REASON_CODES = max(_REASON_TEXT) + 1
_ENCODE = msgspec.msgpack.Encoder().encode
#: Stand-ins encoded into a template where each row's own value goes; none can occur in
#: the fixed parts (their encodings are found and cut out).
_SENTINEL_ID = "@@command-id@@"
_SENTINEL_TIME = datetime(2001, 2, 3, 4, 5, 6, 789012, tzinfo=UTC)
_SENTINEL_CONFIDENCE = 0.123456789
#: The longest id `CommandIds` issues (16 hex digits, a dash, a 20-digit counter) and the
#: largest sequence: a template's fullest command is checked against the size budget once.
_LONGEST_ID = "f" * 16 + "-" + "9" * 20
_LARGEST_SEQUENCE = 2**32 - 1
_SEQUENCE_KEY = _ENCODE("sequence")
#: A msgpack fixmap header byte to the header of a map with one entry more.
_ONE_MORE = {header: bytes((header + 1,)) for header in range(0x80, 0x8F)}


class CommandIds:
    """Command ids unique across processes and machines at the cost of a counter step.

    Each instance draws a 64-bit random prefix once; ids are `<prefix>-<n>` for n = 1, 2, ...
    A restarted controller draws a new prefix, so it never repeats an id it issued before.
    Held as integers (`reserve`) until an id is read as text (`text`).
    """

    __slots__ = ("_issued", "prefix")

    def __init__(self) -> None:
        #: What every id begins with: 16 hex digits and a dash.
        self.prefix = secrets.token_hex(8) + "-"
        self._issued = 0

    def reserve(self, count: int) -> int:
        """The first of the next `count` counter values (the others follow it)."""
        first = self._issued + 1
        self._issued += count
        return first

    def text(self, numbers: Iterable[int]) -> list[str]:
        """The ids of counter values, as text."""
        prefix = self.prefix
        return [f"{prefix}{n}" for n in numbers]


@functools.cache
def command_type(action: enum.IntEnum) -> CommandType:
    """The type of the command that carries out `action` (not WAIT): for telemetry."""
    command = action_to_command(action, command_id=_SENTINEL_ID, seed_id=None, slot_id="slot")
    if command is None:
        raise ValueError(f"{action.name} carries no command")
    return command.command_type


def numbered(payload: bytes, sequence: int) -> bytes:
    """An unnumbered command's bytes (sequence 0, so omitted) with `sequence` added.

    The contract declares `sequence` last and encodes as a map, so numbering is one more
    entry in the map header and the key and value appended: no decode, no re-encode.
    """
    return b"".join((_ONE_MORE[payload[0]], payload[1:], _SEQUENCE_KEY, _ENCODE(sequence)))


class CommandBatch:
    """The commands of one decided batch as columns, one per row whose action is not WAIT.

    Held as the encoder left them: the payloads in one buffer (command i is
    `buffer[starts[i]:ends[i]]`: encoded, unnumbered; `numbered` adds the journal's
    sequence) and integer ids. `rows` indexes the decisions they came from; the other
    columns are picked from the decisions' and the batch's when first read, the text ones
    (`worker_ids`, `slot_ids`, `command_ids`, `payloads`) as lists for the journal and the
    bus. `command(i)` builds the object for a reader that wants one, decoded from the bytes
    as a worker would decode them.
    """

    __slots__ = ("_first", "_ids", "_made", "_positions", "_source", "buffer", "ends", "rows",
                 "starts")  # fmt: skip

    def __init__(
        self,
        source: _Source,
        rows: _Ints,
        ids: CommandIds,
        first: int,
        buffer: bytes,
        starts: _Ints,
        ends: _Ints,
        positions: _Ints | None = None,
    ) -> None:
        self._source = source
        self.rows = rows
        self._ids = ids
        #: The counter of the encoded batch's first id, and which of that batch's commands
        #: these are (None: all of them, in order).
        self._first = first
        self._positions = positions
        self.buffer = buffer
        self.starts = starts
        self.ends = ends
        self._made: dict[str, object] = {}

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def epochs(self) -> _Ints:
        picked: _Ints = self._once("epochs", lambda: self._source.epochs[self.rows])
        return picked

    @property
    def actions(self) -> _Ints:
        picked: _Ints = self._once("actions", lambda: self._source.actions[self.rows])
        return picked

    @property
    def reasons(self) -> _Ints:
        picked: _Ints = self._once("reasons", lambda: self._source.reasons[self.rows])
        return picked

    @property
    def confidence(self) -> npt.NDArray[np.float64]:
        picked: npt.NDArray[np.float64] = self._once(
            "confidence", lambda: self._source.confidence[self.rows]
        )
        return picked

    @property
    def worker_ids(self) -> list[str]:
        batch = self._source.batch
        names: list[str] = self._once("workers", lambda: batch.worker_ids(self._memory_rows()))
        return names

    @property
    def slot_ids(self) -> list[str]:
        batch = self._source.batch
        names: list[str] = self._once("slots", lambda: batch.slot_ids(self._memory_rows()))
        return names

    @property
    def numbers(self) -> _Ints:
        """Each command's id counter (`CommandIds`)."""
        if self._positions is None:
            return np.arange(self._first, self._first + len(self), dtype=np.int64)
        numbers: _Ints = self._first + self._positions
        return numbers

    @property
    def command_ids(self) -> list[str]:
        ids: list[str] = self._once("ids", lambda: self._ids.text(self.numbers.tolist()))
        return ids

    @property
    def payloads(self) -> list[bytes]:
        payloads: list[bytes] = self._once("payloads", self._cut)
        return payloads

    def command(self, index: int) -> AdaptationCommand:
        """The `index`-th command as an object (validated by decoding its bytes)."""
        return _DECODE(self.buffer[self.starts[index] : self.ends[index]])

    def take(self, keep: Sequence[int]) -> CommandBatch:
        """The commands at positions `keep` (in that order): e.g. those not held back."""
        index = np.asarray(keep, np.intp)
        positions = index if self._positions is None else self._positions[index]
        return CommandBatch(
            self._source, self.rows[index], self._ids, self._first, self.buffer,
            self.starts[index], self.ends[index], positions,
        )  # fmt: skip

    def _memory_rows(self) -> _Ints:
        rows: _Ints = self._source.batch.rows[self.rows]
        return rows

    def _once(self, name: str, make: Callable[[], Any]) -> Any:
        """The column `name`, made by `make` on its first read."""
        made = self._made.get(name)
        if made is None:
            made = self._made[name] = make()
        return made

    def _cut(self) -> list[bytes]:
        buffer = self.buffer
        pairs = zip(self.starts.tolist(), self.ends.tolist(), strict=True)
        return [buffer[start:end] for start, end in pairs]


_DECODE = msgspec.msgpack.Decoder(AdaptationCommand).decode
_Ints = npt.NDArray[np.int64]


class _Source(NamedTuple):
    """What a batch's commands were made from: the decided rows' columns and the batch."""

    epochs: _Ints
    actions: _Ints
    reasons: _Ints
    confidence: npt.NDArray[np.float64]
    batch: PendingBatch


#: Columns of a template's row in `CommandEncoder`'s part table (`_command_bytes`).
_PARTS = 5


class CommandEncoder:
    """Encodes a batch's commands from its columns: templates, counter ids, one clock read.

    A template is keyed by one integer per row, ((slot x actions + action) x reasons +
    reason) x 2 + (confidence is 1.0), slots coded by `slots`; templates are made on first
    use, and the batch's bytes written in one compiled pass (`_command_bytes`).
    """

    def __init__(self, layout: ActionLayout, slots: SlotCodes | None = None) -> None:
        self._actions: tuple[enum.IntEnum, ...] = tuple(layout.actions)
        self.wait = layout.wait
        self._ids = CommandIds()
        self._prefix = np.frombuffer(self._ids.prefix.encode(), np.uint8)
        self._slots = SlotCodes() if slots is None else slots
        self._parts = np.full((0, _PARTS), -1, np.int64)
        self._bytes = np.empty(0, np.uint8)
        self._longest = 0
        self._out = np.empty(0, np.uint8)

    def encode(
        self,
        slot_ids: Sequence[str],
        actions: _Ints,
        reasons: _Ints,
        confidence: npt.NDArray[np.float64],
    ) -> tuple[list[str], list[bytes]]:
        """The ids and unnumbered bytes of one command per row (none may be WAIT), for a
        caller with slot names: `commands`' encoding."""
        commands = self._commands(actions, reasons, confidence, self._slots.codes(slot_ids))
        if len(commands) != len(actions):
            raise ValueError("a WAIT carries no command")
        return commands.command_ids, commands.payloads

    def commands(
        self,
        batch: PendingBatch,
        actions: _Ints,
        reasons: _Ints,
        confidence: npt.NDArray[np.float64],
    ) -> CommandBatch:
        """The commands of the decided rows of `batch` whose action is not WAIT.

        `reasons` are `DecisionReason` codes and `confidence` is in [0, 1].
        """
        return self._commands(actions, reasons, confidence, batch.slot_codes(), batch)

    def _commands(
        self,
        actions: _Ints,
        reasons: _Ints,
        confidence: npt.NDArray[np.float64],
        slot_codes: _Ints,
        batch: PendingBatch | None = None,
    ) -> CommandBatch:
        """Encode every non-WAIT row in one compiled pass (`_command_bytes.encode_batch`)."""
        rows = len(actions)
        actions = np.ascontiguousarray(actions, np.int64)
        reasons = np.ascontiguousarray(reasons, np.int64)
        bits = np.ascontiguousarray(confidence, np.float64).view(np.uint64)
        stamp = np.frombuffer(_ENCODE(datetime.now(UTC)), np.uint8)  # one clock read a batch
        acting, starts, ends = (
            np.empty(rows, np.int64),
            np.empty(rows, np.int64),
            np.empty(rows, np.int64),
        )
        first = self._ids.reserve(0)
        while True:
            room = rows * (self._longest + len(stamp) + 2 + len(self._prefix) + 20 + 8)
            if len(self._out) < room:
                self._out = np.empty(2 * room, np.uint8)
            count = _command_bytes.encode_batch(
                actions, reasons, bits, slot_codes, self.wait, len(self._actions),
                _REASON_CODES, self._parts, self._bytes, self._prefix, first, stamp,
                self._out, acting, starts, ends,
            )  # fmt: skip
            if count >= 0:
                break
            self._template(-1 - count)  # a code seen for the first time: then again
        self._ids.reserve(count)
        buffer = self._out[: ends[count - 1]].tobytes() if count else b""
        if batch is None:
            batch = PendingBatch.empty(RowNames())
        source = _Source(batch.epochs, actions, reasons, confidence, batch)
        return CommandBatch(
            source, acting[:count], self._ids, first, buffer, starts[:count], ends[:count]
        )

    def _template(self, code: int) -> None:
        """Encode, check and cut the command of one template code, into the part table."""
        rest, one = divmod(code, 2)
        rest, reason = divmod(rest, _REASON_CODES)
        slot, action = divmod(rest, len(self._actions))
        if action == self.wait or action >= len(self._actions) or reason not in _REASON_TEXT:
            raise ValueError(f"no command for action {action}, reason {reason}")
        member = self._actions[action]
        confidence = 1.0 if one else _SENTINEL_CONFIDENCE
        command = action_to_command(
            member, command_id=_SENTINEL_ID, seed_id=None, slot_id=self._slots.names[slot],
            reason=_REASON_TEXT[reason], confidence=confidence,
        )  # fmt: skip
        if command is None:
            raise ValueError(f"{member.name} carries no command")
        # The fullest form of this command, through the budget-checked encoder: every row
        # made from the template is at most this long.
        encode(
            msgspec.structs.replace(
                command, command_id=_LONGEST_ID, confidence=0.5, sequence=_LARGEST_SEQUENCE
            )
        )
        data = _ENCODE(msgspec.structs.replace(command, timestamp=_SENTINEL_TIME))
        head, rest_bytes = _cut(data, _ENCODE(_SENTINEL_ID))
        middle, after = _cut(rest_bytes, _ENCODE(_SENTINEL_TIME))
        tail = b""
        if not one:
            # The float's marker byte stays in the fixed part; its 8 bytes are the row's.
            value = _ENCODE(_SENTINEL_CONFIDENCE)
            after, tail = _cut(after, value)
            after += value[:1]
        if code >= len(self._parts):
            grown = np.full((2 * code + 2, _PARTS), -1, np.int64)
            grown[: len(self._parts)] = self._parts
            self._parts = grown
        at = len(self._bytes)
        bounds = np.cumsum([at, len(head), len(middle), len(after), len(tail)])
        self._parts[code] = bounds
        self._bytes = np.concatenate(
            (self._bytes, np.frombuffer(head + middle + after + tail, np.uint8))
        )
        self._longest = max(self._longest, len(head + middle + after + tail))


def _cut(data: bytes, marker: bytes) -> tuple[bytes, bytes]:
    """The bytes before and after the one occurrence of `marker`."""
    before, found, after = data.partition(marker)
    if not found or marker in after:
        raise ValueError(f"template marker {marker!r} not found exactly once")
    return before, after
