"""`FastTrainingSignals.v2` as a fixed record: the byte layout of its msgpack encoding.

A v2 signal whose epoch and slot are positive fixints (< 128) encodes as `RECORD_BYTES`
bytes: array(4), the tag, the epoch, bin8(108) and the feature block, the slot. The bus takes
a drain's records as columns by this layout (`bus.columnar`), the record kernel checks and
copies them by it (`leyline.kernels.take_records`); the contract owns it, so a contract change
that moves a byte fails here, at import, and not in a receive.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from leyline.signals import FEATURE_BLOCK, FastTrainingSignals
from leyline.wire import encode

__all__ = [
    "EPOCH_AT",
    "FEATURES_AT",
    "FEATURE_BYTES",
    "RECORD_BYTES",
    "RECORD_WORDS",
    "SLOT_AT",
    "TEMPLATE",
    "template_words",
]

TEMPLATE = encode(FastTrainingSignals.empty())
RECORD_BYTES = len(TEMPLATE)
#: The 64-bit words of a record (the template is compared a word at a time).
RECORD_WORDS = RECORD_BYTES // 8
EPOCH_AT = 1 + 1 + len(str(FastTrainingSignals.__struct_config__.tag))
FEATURES_AT = EPOCH_AT + 3
FEATURE_BYTES = FEATURE_BLOCK.size
SLOT_AT = FEATURES_AT + FEATURE_BYTES
if (
    SLOT_AT + 1 != RECORD_BYTES
    or RECORD_BYTES % 8
    or TEMPLATE[EPOCH_AT + 1 : FEATURES_AT] != bytes((0xC4, FEATURE_BYTES))
):  # the layout above is msgpack's for this contract; a contract change must revisit it
    raise ImportError(f"FastTrainingSignals no longer encodes as the fixed record: {TEMPLATE!r}")


def template_words() -> tuple[npt.NDArray[np.uint64], npt.NDArray[np.uint64]]:
    """The record's fixed bits, as the mask and value of its 64-bit words.

    Fixed: the array header, the tag, the bin8 header; the epoch's and the slot's top bit
    (clear: a positive fixint). The features are free.
    """
    mask = np.zeros(RECORD_BYTES, np.uint8)
    mask[:EPOCH_AT] = 0xFF
    mask[EPOCH_AT] = 0x80
    mask[EPOCH_AT + 1 : FEATURES_AT] = 0xFF
    mask[SLOT_AT] = 0x80
    value = np.frombuffer(TEMPLATE, np.uint8) & mask
    return mask.view("<u8").copy(), value.view("<u8").copy()
