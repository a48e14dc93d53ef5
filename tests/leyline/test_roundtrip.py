"""Every registered contract survives encode/decode unchanged, or is refused for its size."""

from __future__ import annotations

import msgspec
import pytest
from contract_strategies import for_struct
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import leyline.wire
from leyline import BudgetError
from leyline.wire import REGISTRY

_TAGS = sorted(REGISTRY.entries())


@pytest.mark.parametrize("tag", _TAGS)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_every_contract_round_trips_through_the_codec(tag: str, data: st.DataObject) -> None:
    entry = REGISTRY.entries()[tag]
    message = data.draw(for_struct(entry.cls))
    raw_size = len(msgspec.msgpack.encode(message))
    if raw_size > entry.budget:
        with pytest.raises(BudgetError):
            leyline.wire.encode(message)
        return
    encoded = leyline.wire.encode(message)
    wire = msgspec.msgpack.decode(encoded)
    assert (wire[0] if isinstance(wire, list) else wire["type"]) == tag
    decoded = leyline.wire.decode(encoded)
    assert type(decoded) is entry.cls
    assert decoded == message
