"""Constrained number and string types shared by the contracts.

msgspec checks these at decode time. A float bounded on both sides also refuses NaN (every
comparison with NaN is false) and the infinities, which is how "finite" is enforced.
"""

from __future__ import annotations

import sys
import uuid
from datetime import UTC, datetime
from typing import Annotated

import msgspec

_MAX = sys.float_info.max

Finite = Annotated[float, msgspec.Meta(ge=-_MAX, le=_MAX)]
NonNegative = Annotated[float, msgspec.Meta(ge=0.0, le=_MAX)]
Unit = Annotated[float, msgspec.Meta(ge=0.0, le=1.0)]
Percent = Annotated[float, msgspec.Meta(ge=0.0, le=100.0)]
Positive = Annotated[float, msgspec.Meta(gt=0.0, le=_MAX)]
Count = Annotated[int, msgspec.Meta(ge=0, le=2**32 - 1)]
Flag = Annotated[int, msgspec.Meta(ge=0, le=1)]
#: Sequence numbers and incarnations (nanosecond clocks): 63-bit, msgspec's integer limit.
Serial = Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]
Ident = Annotated[str, msgspec.Meta(max_length=128)]
Text = Annotated[str, msgspec.Meta(max_length=1024)]


def new_id() -> str:
    """A fresh UUID4 string: the default of every generated id."""
    return str(uuid.uuid4())


def utc_now() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)
