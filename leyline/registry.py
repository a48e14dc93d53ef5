"""Every wire type by its versioned tag, and the codec built from them.

A tag reads `"<Name>.v<major>"`. Decoding refuses, with one error type (`ContractError`)
carrying a reason and the path of the offending field: bytes that are not msgpack, an unknown
tag, a major version this reader does not support, and values that break the contract.
Within one major only additive, defaulted fields are allowed; an older major stays readable
through an upgrade function registered beside the current type.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Generic, NamedTuple, TypeVar

import msgspec

from leyline.budgets import DEFAULT_BUDGETS
from leyline.errors import BudgetError, ContractError, RejectReason

__all__ = [
    "Entry",
    "MessageDecoder",
    "MessageEncoder",
    "Registry",
    "Upgrade",
    "parse_tag",
    "tag_of",
]

T = TypeVar("T", bound=msgspec.Struct)
_TAG = re.compile(r"^(?P<name>[A-Za-z][A-Za-z0-9_]*)\.v(?P<major>[0-9]+)$")
_PATH = re.compile(r" - at `(?P<path>\$[^`]*)`$")
#: msgspec names a missing field in its message and the object holding it as the path.
_MISSING = re.compile(r"Object missing required field `(?P<field>[^`]+)`")
_MSGPACK_MAP_MARKERS = frozenset({0xDE, 0xDF, *range(0x80, 0x90)})
#: Bytes that are not readable msgpack; msgspec lets bad UTF-8 and deep nesting escape as these.
_UNREADABLE = (msgspec.DecodeError, UnicodeDecodeError, RecursionError)


def parse_tag(tag: str) -> tuple[str, int]:
    """Split `"<Name>.v<major>"` into name and major; ValueError if it is not one."""
    match = _TAG.fullmatch(tag)
    if match is None:
        raise ValueError(f"not a versioned tag: {tag!r}")
    return match["name"], int(match["major"])


def tag_of(cls: type[msgspec.Struct]) -> str:
    """The tag a registered Struct type carries on the wire."""
    tag = cls.__struct_config__.tag
    if not isinstance(tag, str):
        raise TypeError(f"{cls.__name__} has no string tag")
    return tag


@dataclass(frozen=True)
class Upgrade(Generic[T]):
    """How to read an older major: its Struct type and the function that lifts it."""

    legacy: type[msgspec.Struct]
    lift: Callable[[Any], T]


@dataclass(frozen=True)
class Entry:
    cls: type[msgspec.Struct]
    budget: int
    upgrades: tuple[Upgrade[Any], ...] = ()

    @property
    def array_like(self) -> bool:
        return bool(self.cls.__struct_config__.array_like)


class Registry:
    """The set of wire types, their size budgets and their upgrades from older majors."""

    def __init__(self) -> None:
        self._entries: dict[str, Entry] = {}

    def register(
        self,
        cls: type[msgspec.Struct],
        *,
        budget: int = DEFAULT_BUDGETS.max_payload_bytes,
        upgrades: Iterable[Upgrade[Any]] = (),
    ) -> None:
        tag = tag_of(cls)
        parse_tag(tag)
        if tag in self._entries:
            raise ValueError(f"{tag} is already registered")
        self._entries[tag] = Entry(cls, budget, tuple(upgrades))

    def entries(self) -> dict[str, Entry]:
        """Every registered tag and its entry, sorted by tag."""
        return dict(sorted(self._entries.items()))

    def entry(self, cls: type[msgspec.Struct]) -> Entry:
        return self._entries[tag_of(cls)]

    def majors(self) -> dict[str, set[int]]:
        """Per message name, the majors this registry can read (current and upgradable)."""
        found: dict[str, set[int]] = {}
        for entry in self._entries.values():
            for cls in (entry.cls, *(u.legacy for u in entry.upgrades)):
                name, major = parse_tag(tag_of(cls))
                found.setdefault(name, set()).add(major)
        return found

    def encoder(self) -> MessageEncoder:
        return MessageEncoder(self)

    def decoder(self, accept: Iterable[type[msgspec.Struct]] | None = None) -> MessageDecoder:
        """A decoder for `accept` (default: every registered type) and their older majors."""
        classes = list(accept) if accept is not None else [e.cls for e in self._entries.values()]
        return MessageDecoder(self, [self.entry(cls) for cls in classes])


class MessageEncoder:
    """Encodes registered messages to msgpack, refusing any that exceed their budget."""

    def __init__(self, registry: Registry) -> None:
        self._budgets = {e.cls: e.budget for e in registry.entries().values()}
        self._encoder = msgspec.msgpack.Encoder()
        #: msgspec's own `encode_into`, for a caller that checks `budget` itself (a
        #: publisher's batch of one type checks each message's size against one number).
        self.unchecked_into = self._encoder.encode_into

    def encode(self, message: msgspec.Struct) -> bytes:
        data = self._encoder.encode(message)
        budget = self._budgets.get(type(message))
        if budget is None or len(data) > budget:  # inline: this is every publish's path
            self._check(message, len(data))
        return data

    def encode_into(self, message: msgspec.Struct, buffer: bytearray, offset: int = 0) -> int:
        """Encode into `buffer` at `offset` (-1: append), reusing its memory; returns the
        encoded length. A message refused (over budget, unregistered, unencodable) leaves
        `buffer` cut back to where it would have started."""
        start = len(buffer) if offset < 0 else offset
        try:
            self._encoder.encode_into(message, buffer, start)
        except BaseException:
            del buffer[start:]
            raise
        size = len(buffer) - start
        budget = self._budgets.get(type(message))
        if budget is None or size > budget:  # inline: a publisher's batch appends this way
            del buffer[start:]
            self._check(message, size)
        return size

    def budget(self, cls: type[msgspec.Struct]) -> int | None:
        """The most bytes one `cls` may encode to; None for a type that is not registered."""
        return self._budgets.get(cls)

    def check(self, message: msgspec.Struct, size: int) -> None:
        """Raise `BudgetError` when `size` is over `message`'s budget, TypeError when its
        type is not registered."""
        self._check(message, size)

    def _check(self, message: msgspec.Struct, size: int) -> None:
        cls = type(message)
        budget = self._budgets.get(cls)
        if budget is None:
            raise TypeError(f"{cls.__name__} is not a registered wire type")
        if size > budget:
            raise BudgetError(tag_of(cls), size, budget)


class _MapTag(msgspec.Struct):
    type: str


class Refused(NamedTuple):
    """One message of a batch that failed to decode: why, and its bytes."""

    error: ContractError
    payload: bytes


class MessageDecoder:
    """Decodes bytes into one of the accepted message types, or raises `ContractError`."""

    def __init__(self, registry: Registry, entries: list[Entry]) -> None:
        self._known = registry.majors()
        self._accepted = {tag_of(e.cls) for e in entries}
        self._lifts: dict[type[msgspec.Struct], Callable[[Any], Any]] = {}
        maps: list[type[msgspec.Struct]] = []
        arrays: list[type[msgspec.Struct]] = []
        for entry in entries:
            for upgrade in entry.upgrades:
                self._lifts[upgrade.legacy] = upgrade.lift
                self._accepted.add(tag_of(upgrade.legacy))
            for cls in (entry.cls, *(u.legacy for u in entry.upgrades)):
                (arrays if cls.__struct_config__.array_like else maps).append(cls)
        self._map = _union_decoder(maps)
        self._array = _union_decoder(arrays)
        # msgspec cannot mix array-like and map-like Structs in one union: a channel that
        # carries both kinds decodes a batch message by message.
        self._many = None if maps and arrays else _union_decoder(maps + arrays, many=True)
        # A batch of current majors only (the common one) decodes with nothing to lift.
        current = [e.cls for e in entries]
        self._current = self._many
        if self._lifts and self._many is not None:
            self._current = _union_decoder(current, many=True)
        self.max_size = max((e.budget for e in entries), default=0)

    def decode(self, data: bytes | memoryview) -> Any:
        """The typed message, upgraded to its current major when it was an older one."""
        if len(data) > self.max_size:
            raise ContractError(
                RejectReason.OVERSIZE, f"{len(data)} bytes, largest accepted {self.max_size}"
            )
        if not data:
            raise ContractError(RejectReason.MALFORMED, "empty payload")
        decoder = self._map if data[0] in _MSGPACK_MAP_MARKERS else self._array
        try:
            if decoder is None:
                raise msgspec.ValidationError("no accepted type has this shape")
            message = decoder.decode(data)
        except msgspec.ValidationError as exc:  # a subclass of DecodeError: catch it first
            raise self._explain(data, exc) from None
        except _UNREADABLE as exc:
            raise ContractError(RejectReason.MALFORMED, str(exc)) from None
        lift = self._lifts.get(type(message))
        return message if lift is None else lift(message)

    def decode_many(self, data: bytes | memoryview) -> tuple[list[Any], bool]:
        """A msgpack array of messages, each checked as `decode` checks one; returns them
        and whether every one decoded.

        Each item is the typed message or a `Refused` (the error and that message's bytes):
        one bad message does not cost the rest. A whole valid batch is one typed decode
        (after one pass that reads each message's extent for its size check), of the current
        majors first so that nothing needs lifting; only a batch holding a bad one is decoded
        message by message. Raises `ContractError(MALFORMED)` when `data` is not an array of
        msgpack values at all.
        """
        try:
            items = _RAWS.decode(data)
        except _UNREADABLE as exc:
            raise ContractError(RejectReason.MALFORMED, f"batch: {exc}") from None
        if items and self._many is not None and max(map(len, items)) <= self.max_size:
            assert self._current is not None
            for decoder in (self._current, self._many) if self._lifts else (self._many,):
                try:
                    messages: list[Any] = decoder.decode(data)
                except (msgspec.ValidationError, *_UNREADABLE):
                    continue
                if decoder is not self._current:
                    messages = [self._lift(message) for message in messages]
                return messages, True
        decoded = [self._decode_or_error(item) for item in items]
        return decoded, not any(isinstance(item, Refused) for item in decoded)

    def _lift(self, message: Any) -> Any:
        lift = self._lifts.get(type(message))
        return message if lift is None else lift(message)

    def _decode_or_error(self, data: msgspec.Raw) -> Any:
        try:
            return self.decode(memoryview(data))
        except ContractError as error:
            return Refused(error, bytes(data))

    def _explain(self, data: bytes | memoryview, exc: msgspec.ValidationError) -> ContractError:
        try:
            tag = _peek_tag(data)
        except _UNREADABLE as unreadable:
            return ContractError(RejectReason.MALFORMED, str(unreadable))
        if tag is None:
            return ContractError(RejectReason.UNKNOWN_TAG, "message carries no tag")
        if tag not in self._accepted:
            try:
                name, major = parse_tag(tag)
            except ValueError:
                return ContractError(RejectReason.UNKNOWN_TAG, f"unknown tag {tag[:64]!r}")
            if name in self._known and major not in self._known[name]:
                readable = ", ".join(f"v{m}" for m in sorted(self._known[name]))
                return ContractError(
                    RejectReason.UNSUPPORTED_VERSION,
                    f"{name} v{major} is not supported (reads {readable})",
                )
            return ContractError(RejectReason.UNKNOWN_TAG, f"{tag!r} is not accepted here")
        message = str(exc)
        match = _PATH.search(message)
        path = match["path"] if match else "$"
        detail = message[: match.start()] if match else message
        missing = _MISSING.fullmatch(detail)
        if missing:
            path = f"{path}.{missing['field']}"
        return ContractError(RejectReason.INVALID_VALUE, f"{tag}: {detail}", path)


def _union_decoder(
    classes: list[type[msgspec.Struct]], many: bool = False
) -> msgspec.msgpack.Decoder[Any] | None:
    """A decoder for any of `classes` (`many`: for an array of them)."""
    if not classes:
        return None
    union: Any = classes[0]
    for cls in classes[1:]:
        union = union | cls
    return msgspec.msgpack.Decoder(list[union] if many else union)


#: Reads a batch's messages as raw extents: their sizes, and each alone when one is bad.
_RAWS = msgspec.msgpack.Decoder(list[msgspec.Raw])


def _peek_tag(data: bytes | memoryview) -> str | None:
    """The tag of a message that failed to decode, read leniently (errors only).

    None when the message has no string tag; raises one of `_UNREADABLE` for bytes that are
    not msgpack at all.
    """
    if data[0] in _MSGPACK_MAP_MARKERS:
        try:
            return msgspec.msgpack.decode(data, type=_MapTag).type
        except msgspec.ValidationError:
            return None
    head = msgspec.msgpack.decode(data)
    if isinstance(head, list) and head and isinstance(head[0], str):
        return head[0]
    return None
