"""Codec: encode and decode of every registered message, beside bare msgspec as the ceiling.

Ours is `leyline.wire.encode` / `leyline.wire.decode`: the versioned tag, the size budget, the union
decoder over every registered type, value constraints and cross-field checks. The ceiling
is msgspec msgpack on a bare Struct with the same fields and defaults: no tag, no
constraints, no enums, no budget check, decoded as its one known type.

`wire` is the receive side of the bus without sockets: `Pipeline.frame` (topic, header,
size, tag, typed decode with constraints, sequence, Envelope) on one wire frame, alone and as
a batch of `BATCH` signals, against the one-frame ceiling a user would hand-roll: slice the
topic off a frame and decode the payload with msgspec's typed decoder of the same Struct.
"""

from __future__ import annotations

import enum
import functools
import operator
import types
import typing
from collections.abc import Callable
from datetime import datetime
from typing import Any

import msgspec

import leyline.wire
from bench._harness import measure, progress, ratio
from bench._samples import fast_signals, messages
from bus import Channel
from bus.header import WIRE_VERSION, Header, array_prefix, encode_frame
from bus.pipeline import Pipeline
from leyline.budgets import DEFAULT_BUDGETS
from leyline.registry import tag_of
from leyline.signals import FastTrainingSignals
from leyline.wire import REGISTRY, encode

#: Signals in the batched frame of the `wire` figures (the publisher's largest batch).
BATCH = 64
_TOPIC = b"sig.w1."


def run() -> dict[str, Any]:
    samples = {type(message): message for message in messages()}
    figures: dict[str, Any] = {}
    unmeasured = []
    for tag, entry in REGISTRY.entries().items():
        sample = samples.get(entry.cls)
        if sample is None:
            progress(f"{tag}: no sample in bench/_samples.py, not measured")
            unmeasured.append(tag)
            continue
        figures[tag] = _measure_message(sample)
        row = figures[tag]
        progress(
            f"{tag:26s} {row['bytes']:5d} B  encode {row['encode_ns']:8.0f} ns "
            f"(ratio {row['encode_ratio']:.2f})  decode {row['decode_ns']:8.0f} ns "
            f"(ratio {row['decode_ratio']:.2f})"
        )
    worst_us = max(max(r["encode_ns"], r["decode_ns"]) for r in figures.values()) / 1e3
    budget_us = DEFAULT_BUDGETS.serialization_budget_us
    progress(f"slowest encode or decode {worst_us:.1f} us, budget {budget_us:.0f} us")
    wire = _measure_wire()
    progress(
        f"wire frame {wire['frame_ns']:6.0f} ns (ratio {wire['frame_ratio']:.2f}), "
        f"per message of a batch of {BATCH} {wire['batch_per_message_ns']:6.0f} ns "
        f"(ratio {wire['batch_ratio']:.2f})"
    )
    return {
        "messages": figures,
        "wire": wire,
        "worst_us": round(worst_us, 2),
        "serialization_budget_us": budget_us,
        "within_budget": worst_us <= budget_us,
        "unmeasured": unmeasured,
    }


def _measure_message(sample: msgspec.Struct) -> dict[str, Any]:
    encode: typing.Callable[[Any], bytes] = leyline.wire.encode
    data = encode(sample)
    if leyline.wire.decode(data) != sample:
        raise AssertionError(f"{tag_of(type(sample))} does not round-trip")
    bare_type = _bare_struct(type(sample), sample)
    bare = _bare_instance(sample, bare_type)
    bare_encoder = msgspec.msgpack.Encoder()
    bare_decoder = msgspec.msgpack.Decoder(bare_type)
    bare_data = bare_encoder.encode(bare)
    if bare_decoder.decode(bare_data) != bare:
        raise AssertionError(f"bare {type(sample).__name__} does not round-trip")
    ours_enc, bare_enc, ours_dec, bare_dec = measure(
        lambda: encode(sample),
        lambda: bare_encoder.encode(bare),
        lambda: leyline.wire.decode(data),
        lambda: bare_decoder.decode(bare_data),
    )
    return {
        "bytes": len(data),
        "ceiling_bytes": len(bare_data),
        "encode_ns": round(ours_enc.best_ns, 1),
        "encode_ops_s": round(ours_enc.per_s),
        "ceiling_encode_ns": round(bare_enc.best_ns, 1),
        "encode_ratio": ratio(bare_enc, ours_enc),
        "decode_ns": round(ours_dec.best_ns, 1),
        "decode_ops_s": round(ours_dec.per_s),
        "ceiling_decode_ns": round(bare_dec.best_ns, 1),
        "decode_ratio": ratio(bare_dec, ours_dec),
    }


def _bare_struct(cls: type[msgspec.Struct], value: msgspec.Struct | None) -> Any:
    """`cls` without tag or constraints; unions of Structs narrowed to what `value` holds."""
    hints = typing.get_type_hints(cls)
    config = cls.__struct_config__
    fields: list[tuple[str, Any] | tuple[str, Any, Any]] = []
    for info in msgspec.structs.fields(cls):
        plain = _plain(hints[info.name], getattr(value, info.name, None))
        if info.default is not msgspec.NODEFAULT:
            default = info.default.value if isinstance(info.default, enum.Enum) else info.default
            fields.append((info.name, plain, default))
        elif info.default_factory is not msgspec.NODEFAULT:
            fields.append((info.name, plain, msgspec.field(default_factory=info.default_factory)))
        else:
            fields.append((info.name, plain))
    return msgspec.defstruct(
        f"Bare{cls.__name__}",
        fields,
        kw_only=True,
        array_like=config.array_like,
        omit_defaults=config.omit_defaults,
        frozen=config.frozen,
        gc=config.gc,
    )


def _plain(annotation: Any, value: Any) -> Any:
    """The annotation with enums as int and nested Structs bare (constraints already gone)."""
    if isinstance(annotation, type) and issubclass(annotation, msgspec.Struct):
        return _bare_struct(annotation, value)
    if isinstance(annotation, type) and issubclass(annotation, int) and annotation is not bool:
        return int
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if isinstance(value, msgspec.Struct):
            bare = _bare_struct(type(value), value)
            return bare | None if type(None) in args else bare
        return functools.reduce(operator.or_, (_plain(arg, None) for arg in args))
    if origin is not None:
        return origin[tuple(_plain(arg, None) for arg in args)]
    return annotation


def _bare_instance(sample: msgspec.Struct, bare_type: Any) -> Any:
    data = msgspec.to_builtins(sample, builtin_types=(datetime,))
    if isinstance(data, list):
        data = data[1:]  # an array-like message leads with its tag
    return msgspec.convert(data, bare_type)


def _measure_wire() -> dict[str, Any]:
    """Our pipeline on one frame and on a batch, against a typed decode of one frame."""
    payload = encode(fast_signals())
    frame = _TOPIC + payload
    typed = msgspec.msgpack.Decoder(FastTrainingSignals).decode
    skip = len(_TOPIC)
    sequence = iter(range(1, 2**62, BATCH))

    def ours(count: int) -> Callable[[], object]:
        # A new sequence each call: the sequence step sees a stream in order, as it would.
        pipeline = Pipeline([Channel.SIG])
        body = payload if count == 1 else array_prefix(count) + payload * count

        def process() -> object:
            header = Header(WIRE_VERSION, "w1", 1, next(sequence), 1)
            return pipeline.frame(encode_frame(_TOPIC, header, body, count), False, None)

        return process

    def frame_only() -> object:
        return encode_frame(_TOPIC, Header(WIRE_VERSION, "w1", 1, next(sequence), 1), payload)

    one, many, ceiling, building = measure(
        ours(1), ours(BATCH), lambda: typed(memoryview(frame)[skip:]), frame_only
    )
    # Building each frame is the harness's, not the pipeline's: taken out of both of ours.
    frame_ns = one.best_ns - building.best_ns
    batch_ns = (many.best_ns - building.best_ns) / BATCH
    return {
        "frame_ns": round(frame_ns, 1),
        "batch_per_message_ns": round(batch_ns, 1),
        "ceiling_ns": round(ceiling.best_ns, 1),
        "frame_ratio": round(ceiling.best_ns / frame_ns, 3),
        "batch_ratio": round(ceiling.best_ns / batch_ns, 3),
        "batch": BATCH,
    }
