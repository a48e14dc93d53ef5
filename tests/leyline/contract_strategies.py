"""Hypothesis strategies for valid instances of every registered contract.

Built from msgspec's own type information, so each value respects the declared constraints
(`leyline/_types.py`) and a newly registered contract is covered without writing a strategy.
Cross-field rules that live in `__post_init__` get a small fix-up per type.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import msgspec
import msgspec.inspect as mi
from hypothesis import strategies as st

from leyline import AdaptationCommand, CommandType, FastTrainingSignals, TelemetryEvent
from leyline.commands import MAX_LEARNING_RATE
from leyline.signals import FastTrainingSignalsV1
from leyline.telemetry import PAYLOAD_FOR_EVENT

#: Short, mostly ASCII text keeps messages inside their budgets without hiding unicode.
_ALPHABET = st.characters(codec="utf-8", max_codepoint=0x3FF)
_MAX_TEXT = 12
_MAX_ITEMS = 3


def _text(max_length: int | None, min_length: int) -> st.SearchStrategy[str]:
    upper = _MAX_TEXT if max_length is None else min(max_length, _MAX_TEXT)
    return st.text(_ALPHABET, min_size=min_length, max_size=max(upper, min_length))


def _int(info: mi.IntType) -> st.SearchStrategy[int]:
    low = info.ge if info.ge is not None else (info.gt + 1 if info.gt is not None else -(2**63))
    high = info.le if info.le is not None else (info.lt - 1 if info.lt is not None else 2**64 - 1)
    return st.integers(low, high)


def _float(info: mi.FloatType) -> st.SearchStrategy[float]:
    return st.floats(
        min_value=info.ge if info.ge is not None else info.gt,
        max_value=info.le if info.le is not None else info.lt,
        exclude_min=info.gt is not None,
        exclude_max=info.lt is not None,
        allow_nan=False,
        allow_infinity=False,
    )


def for_type(info: mi.Type) -> st.SearchStrategy[Any]:
    """Valid values of one msgspec type."""
    if isinstance(info, mi.BoolType):
        return st.booleans()
    if isinstance(info, mi.IntType):
        return _int(info)
    if isinstance(info, mi.FloatType):
        return _float(info)
    if isinstance(info, mi.StrType):
        return _text(info.max_length, info.min_length or 0)
    if isinstance(info, mi.NoneType):
        return st.none()
    if isinstance(info, mi.DateTimeType):
        return st.datetimes(timezones=st.just(UTC), min_value=datetime(1970, 1, 1))
    if isinstance(info, mi.EnumType):
        return st.sampled_from(list(info.cls))
    if isinstance(info, mi.LiteralType):
        return st.sampled_from(info.values)
    if isinstance(info, mi.UnionType):
        return st.one_of([for_type(t) for t in info.types])
    if isinstance(info, mi.ListType):
        return st.lists(for_type(info.item_type), max_size=_cap(info.max_length))
    if isinstance(info, mi.TupleType):
        return st.tuples(*(for_type(t) for t in info.item_types))
    if isinstance(info, mi.DictType):
        return st.dictionaries(
            for_type(info.key_type), for_type(info.value_type), max_size=_cap(info.max_length)
        )
    if isinstance(info, mi.StructType):
        return for_struct(info.cls)
    raise NotImplementedError(f"no strategy for {info!r}")


def _cap(max_length: int | None) -> int:
    return _MAX_ITEMS if max_length is None else min(max_length, _MAX_ITEMS)


def _fields(cls: type[msgspec.Struct]) -> st.SearchStrategy[dict[str, Any]]:
    info = mi.type_info(cls)
    assert isinstance(info, mi.StructType)
    return st.fixed_dictionaries({f.name: for_type(f.type) for f in info.fields})


def _valid_command(fields: dict[str, Any]) -> AdaptationCommand:
    """Fill what `AdaptationCommand.__post_init__` requires for the drawn command type."""
    kind = fields["command_type"]
    if kind is CommandType.GERMINATE and not fields["blueprint_id"]:
        fields["blueprint_id"] = "norm"
    if kind is CommandType.SET_ALPHA and fields["alpha_value"] is None:
        fields["alpha_value"] = 0.5
    if kind is CommandType.SET_LEARNING_RATE and fields["learning_rate"] is None:
        fields["learning_rate"] = 1e-3
    if fields["learning_rate"] is not None:  # the type allows more than the bound does
        fields["learning_rate"] = min(fields["learning_rate"], MAX_LEARNING_RATE)
    if not (fields["target_seed_id"] or fields["target_slot_id"]):
        fields["target_slot_id"] = "block2_post"
    return AdaptationCommand(**fields)


def _telemetry_events() -> st.SearchStrategy[TelemetryEvent]:
    """An event whose payload is the type its event_type prescribes."""
    return st.sampled_from(list(PAYLOAD_FOR_EVENT)).flatmap(
        lambda kind: st.builds(
            lambda fields, payload: TelemetryEvent(**{**fields, "payload": payload}),
            _fields(TelemetryEvent).map(lambda f: {**f, "event_type": kind}),
            for_struct(PAYLOAD_FOR_EVENT[kind]),
        )
    )


_SPECIAL: dict[type, Callable[[], st.SearchStrategy[Any]]] = {
    AdaptationCommand: lambda: _fields(AdaptationCommand).map(_valid_command),
    TelemetryEvent: _telemetry_events,
    # A feature block is valid when its values are: drawn as v1's named fields, then packed.
    FastTrainingSignals: lambda: for_struct(FastTrainingSignalsV1).map(FastTrainingSignalsV1.lift),
}


def for_struct(cls: type[msgspec.Struct]) -> st.SearchStrategy[Any]:
    """Valid instances of a Struct, cross-field rules included."""
    special = _SPECIAL.get(cls)
    if special is not None:
        return special()
    return _fields(cls).map(lambda fields: cls(**fields))
