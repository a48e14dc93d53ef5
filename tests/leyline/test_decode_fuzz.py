"""Whatever arrives, decoding either yields a registered message or raises ContractError."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import leyline.wire
from leyline import ContractError, RejectReason
from leyline.wire import REGISTRY

_TYPES = tuple(entry.cls for entry in REGISTRY.entries().values())
_TAGS = sorted(REGISTRY.entries())
_FIELDS = sorted({name for cls in _TYPES for name in cls.__struct_fields__})
_FUZZ = settings(max_examples=200, deadline=None)
#: Structured values cost more to draw; fewer of them still reach every decode branch.
_SHAPED = settings(max_examples=80, deadline=None)


def assert_decodes_or_refuses(data: bytes) -> None:
    try:
        message = leyline.wire.decode(data)
    except ContractError as error:
        assert isinstance(error.reason, RejectReason)
        assert error.path.startswith("$")
        assert str(error)
    else:
        assert isinstance(message, _TYPES)


scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats()
    | st.text(max_size=20)
    | st.binary(max_size=20)
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=8), inner, max_size=6)
    ),
    max_leaves=20,
)
tags = st.sampled_from(_TAGS) | st.sampled_from(
    ["AdaptationCommand.v2", "FastTrainingSignals.v0", "Nope.v1", "nope", ""]
)
tagged_maps = st.builds(
    lambda tag, fields: {"type": tag, **fields},
    tags,
    st.dictionaries(st.sampled_from(_FIELDS), values, max_size=8),
)
tagged_arrays = st.builds(lambda tag, items: [tag, *items], tags, st.lists(values, max_size=24))


@_FUZZ
@given(data=st.binary(max_size=600))
def test_arbitrary_bytes_are_refused_with_a_reason(data: bytes) -> None:
    assert_decodes_or_refuses(data)


@_FUZZ
@given(value=values)
def test_arbitrary_msgpack_values_are_refused_with_a_reason(value: Any) -> None:
    assert_decodes_or_refuses(msgspec.msgpack.encode(value))


@_SHAPED
@given(value=tagged_maps | tagged_arrays)
def test_tagged_shapes_with_arbitrary_fields_are_refused_with_a_reason(value: Any) -> None:
    assert_decodes_or_refuses(msgspec.msgpack.encode(value))


@_SHAPED
@given(value=tagged_maps | tagged_arrays, cut=st.integers(1, 64))
def test_truncated_messages_are_refused_with_a_reason(value: Any, cut: int) -> None:
    data = msgspec.msgpack.encode(value)
    assert_decodes_or_refuses(data[: max(0, len(data) - cut)])


@pytest.mark.parametrize(
    "data",
    [
        b"\x91" * 5_000 + b"\xc0",
        b"\x81\xa1x" * 5_000 + b"\xc0",
        b"\x82\xa4type\xb4AdaptationCommand.v2\xa1x" + b"\x91" * 5_000 + b"\xc0",
    ],
    ids=["nested-arrays", "nested-maps", "nested-unknown-field"],
)
def test_deeply_nested_input_is_malformed_not_a_crash(data: bytes) -> None:
    with pytest.raises(ContractError) as caught:
        leyline.wire.decode(data)
    assert caught.value.reason is RejectReason.MALFORMED
