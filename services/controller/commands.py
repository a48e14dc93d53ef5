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
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import msgspec
import numpy as np
import numpy.typing as npt

from leyline import AdaptationCommand, CommandType
from leyline.actions import action_to_command
from leyline.wire import encode
from services.controller.layout import ActionLayout
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
    """

    __slots__ = ("_issued", "prefix")

    def __init__(self) -> None:
        self.prefix = secrets.token_hex(8)
        self._issued = 0

    def take(self, count: int) -> list[str]:
        """The next `count` ids at once: a batch's ids without a call per id."""
        first, prefix = self._issued + 1, self.prefix
        self._issued += count
        return [f"{prefix}-{n}" for n in range(first, first + count)]


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


@dataclass(slots=True)
class CommandBatch:
    """The commands of one decided batch as columns, one per row whose action is not WAIT.

    `rows` indexes the decisions they came from; `payloads` are the encoded, unnumbered
    commands (`numbered` adds the journal's sequence). `command(i)` builds the object for
    a reader that wants one, decoded from the bytes as a worker would decode them.
    """

    rows: list[int]
    worker_ids: list[str]
    slot_ids: list[str]
    epochs: list[int]
    actions: list[int]
    reasons: list[int]
    confidence: list[float]
    command_ids: list[str]
    payloads: list[bytes]

    def __len__(self) -> int:
        return len(self.rows)

    def command(self, index: int) -> AdaptationCommand:
        """The `index`-th command as an object (validated by decoding its bytes)."""
        return _DECODE(self.payloads[index])

    def take(self, keep: Sequence[int]) -> CommandBatch:
        """The commands at positions `keep` (in that order): e.g. those not held back."""
        columns = [[column[i] for i in keep] for column in self._columns()]
        return CommandBatch(*columns)

    def _columns(self) -> tuple[list, ...]:  # type: ignore[type-arg]  # one list per column
        return (
            self.rows,
            self.worker_ids,
            self.slot_ids,
            self.epochs,
            self.actions,
            self.reasons,
            self.confidence,
            self.command_ids,
            self.payloads,
        )


_DECODE = msgspec.msgpack.Decoder(AdaptationCommand).decode

#: A template's fixed parts: (head, middle, after, tail) around the id, the timestamp and,
#: unless the confidence is 1.0 (the default, so not encoded), the confidence's 8 bytes.
Template = tuple[bytes, bytes, bytes, bytes]


class CommandEncoder:
    """Encodes a batch's commands from its columns: templates, counter ids, one clock read.

    A template is keyed by one integer per row, computed for the batch at once from the
    (slot, action, reason, confidence is 1.0) columns; slots get their code on first use.
    """

    def __init__(self, layout: ActionLayout) -> None:
        self._actions: tuple[enum.IntEnum, ...] = tuple(layout.actions)
        self.wait = layout.wait
        self._ids = CommandIds()
        self._slots: dict[str, int] = {}
        self._slot_names: list[str] = []
        self._templates: dict[int, Template] = {}

    def encode(
        self,
        slot_ids: Sequence[str],
        actions: npt.NDArray[np.int64],
        reasons: npt.NDArray[np.int64],
        confidence: npt.NDArray[np.float64],
    ) -> tuple[list[str], list[bytes]]:
        """The ids and unnumbered bytes of one command per row (none may be WAIT).

        `reasons` are `DecisionReason` codes and `confidence` is in [0, 1]. Every per-row
        step is a `map` or `zip` in C: each row's template found by its code, the batch's
        timestamp folded into each template used once, the confidences' 8-byte encodings
        cut from one conversion of the column.
        """
        count = len(actions)
        ids = self._ids.take(count)
        if not count:
            return ids, []
        ones = confidence == 1.0
        codes: list[int] = self._codes(slot_ids, actions, reasons, ones).tolist()
        used = set(codes)
        templates = self._templates
        for code in used.difference(templates):
            self._template(code)
        stamp = _ENCODE(datetime.now(UTC))  # one clock read for the whole batch
        heads = {code: templates[code][0] for code in used}
        middles = {code: templates[code][1] + stamp + templates[code][2] for code in used}
        tails = {code: templates[code][3] for code in used}
        values: list[bytes] = np.frombuffer(confidence.astype(">f8"), "V8").tolist()
        for row in np.flatnonzero(ones).tolist():
            values[row] = b""  # the default confidence is not encoded
        rows = zip(
            map(heads.__getitem__, codes),
            map(_ENCODE, ids),
            map(middles.__getitem__, codes),
            values,
            map(tails.__getitem__, codes),
            strict=True,
        )
        return ids, list(map(b"".join, rows))

    def _codes(
        self,
        slot_ids: Sequence[str],
        actions: npt.NDArray[np.int64],
        reasons: npt.NDArray[np.int64],
        ones: npt.NDArray[np.bool_],
    ) -> npt.NDArray[np.int64]:
        """Each row's template code: ((slot x actions + action) x reasons + reason) x 2 + one."""
        slots = self._slots
        for slot_id in set(slot_ids).difference(slots):
            slots[slot_id] = len(self._slot_names)
            self._slot_names.append(slot_id)
        slot = np.fromiter(map(slots.__getitem__, slot_ids), np.int64, len(slot_ids))
        return ((slot * len(self._actions) + actions) * _REASON_CODES + reasons) * 2 + ones

    def _template(self, code: int) -> Template:
        """Encode, check and cut the command of one template code."""
        rest, one = divmod(code, 2)
        rest, reason = divmod(rest, _REASON_CODES)
        slot, action = divmod(rest, len(self._actions))
        member = self._actions[action]
        confidence = 1.0 if one else _SENTINEL_CONFIDENCE
        command = action_to_command(
            member, command_id=_SENTINEL_ID, seed_id=None, slot_id=self._slot_names[slot],
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
        template = self._templates[code] = (head, middle, after, tail)
        return template


def _cut(data: bytes, marker: bytes) -> tuple[bytes, bytes]:
    """The bytes before and after the one occurrence of `marker`."""
    before, found, after = data.partition(marker)
    if not found or marker in after:
        raise ValueError(f"template marker {marker!r} not found exactly once")
    return before, after
