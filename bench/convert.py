"""Convert: received `sig` frames to one normalised CPU tensor, beside a copy of their bytes.

The input is B fast signals as the bus receives them: wire frames (bytes already received,
the same bytes for every candidate), in two mixes: full publisher batches (64 signals a
frame, one sender each) and wide fan-in (2 signals a frame, one frame per worker: B/2
workers of two slots). Candidates:

- **columnar**: every frame through `bus.columnar.ColumnReceiver` (admitted by the pipeline,
  the drain's records checked and copied into rows by one compiled pass, sequences and ages
  per frame), then `BatchConverter.convert_rows` (value checks and normalisation into the
  host buffer, one compiled pass);
- **per message**: every frame through `Pipeline.frame` (one typed object and envelope per
  signal), then `BatchConverter.convert` of the decoded signals;
- **ceiling**: the frames' bytes joined and copied into one preallocated numpy buffer: the
  least any receive of these bytes into a buffer must do.

Each call starts from the same sequence state (every stream one frame behind, so each frame
continues its stream); the rewinding is timed on its own and taken out of both candidates.
A breakdown at the largest batch shows where the columnar path's time goes.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt

from bench._harness import Timing, measure, progress
from bench._samples import fast_signals
from bus.columnar import ColumnReceiver, SignalColumns
from bus.header import Header, array_prefix, count_of, encode_frame
from bus.pipeline import Envelope, Pipeline
from bus.rejection import Rejection
from bus.topics import Channel, topic
from leyline import kernels
from leyline.features import FeatureNormaliser, RowChecker
from leyline.records import RECORD_BYTES, template_words
from leyline.signals import TENSOR_SCHEMA_SIZE
from leyline.tensors import BatchConverter, to_tensor
from leyline.wire import encode

BATCH_SIZES = (256, 1024)
#: Signals a frame: the publisher's full batch, and one worker's two slots.
MIXES = (64, 2)
_NOW = 1_000_000_000_000
_INCARNATION = 7


def run() -> dict[str, Any]:
    largest = max(BATCH_SIZES)
    converter = BatchConverter(largest, device="cpu")
    batches: dict[str, Any] = {}
    for size in BATCH_SIZES:
        for per_frame in MIXES:
            frames = _frames(size, per_frame)
            batches[f"{size}x{per_frame}"] = _measure_mix(frames, size, per_frame, converter)
    one = fast_signals()
    (single,) = measure(lambda: to_tensor(one, "cpu"))
    progress(f"to_tensor (one signal)  {single.best_us:.1f} us")
    return {
        "batches": batches,
        "to_tensor_us": round(single.best_us, 2),
        "breakdown_1024x64": _breakdown(_frames(largest, 64), converter),
    }


def _frames(size: int, per_frame: int) -> list[bytes]:
    """`size` signals as wire frames of `per_frame` each, one sender per frame, each frame
    the second of its stream (sequence `per_frame + 1` on)."""
    frames = []
    for index in range(size // per_frame):
        sender = f"w{index:04d}"
        payloads = [
            encode(fast_signals(epoch=(index + n) % 25, slot_index=n % 2)) for n in range(per_frame)
        ]
        header = Header(2, sender, _INCARNATION, per_frame + 1, _NOW)
        body = payloads[0] if per_frame == 1 else array_prefix(per_frame) + b"".join(payloads)
        frames.append(encode_frame(topic(Channel.SIG, sender), header, body, per_frame))
    return frames


def _pipeline(frames: list[bytes]) -> tuple[Pipeline, Callable[[], None]]:
    """A pipeline that has seen each stream's first frame, and a rewind to that state."""
    pipeline = Pipeline([Channel.SIG], max_signal_age_ns=30 * 10**9, clock=lambda: _NOW)
    for frame in frames:
        pipeline.frame(frame)
    streams = list(pipeline.tracker._streams.values())  # the bench's rewind
    # One frame back: each stream's last sequence is the one before its frame's first.
    marks = [
        (stream, stream.last - count_of(frame), stream.seen)
        for stream, frame in zip(streams, frames, strict=True)
    ]

    def rewind() -> None:
        for stream, last, seen in marks:
            stream.last, stream.seen = last, seen

    rewind()
    return pipeline, rewind


def _measure_mix(
    frames: list[bytes], size: int, per_frame: int, converter: BatchConverter
) -> dict[str, Any]:
    columnar_pipeline, rewind_columnar = _pipeline(frames)
    blocks: list[SignalColumns] = []
    receiver = ColumnReceiver(columnar_pipeline, blocks.append, _refused, max_rows=size)
    message_pipeline, rewind_messages = _pipeline(frames)
    buffer = np.empty(sum(map(len, frames)), np.uint8)

    def columnar() -> object:
        rewind_columnar()
        for frame in frames:
            receiver.add(frame, None)
        receiver.flush()
        block = blocks.pop()
        assert len(block) == size and not blocks
        return converter.convert_rows(block.features)

    def per_message() -> object:
        rewind_messages()
        process = message_pipeline.frame
        signals = [
            outcome.message
            for frame in frames
            for outcome in process(frame)
            if isinstance(outcome, Envelope)
        ]
        assert len(signals) == size
        return converter.convert(signals)

    ours, messages, rewind, ceiling = measure(
        columnar,
        per_message,
        rewind_columnar,
        functools.partial(_copy_frames, frames, buffer),
    )
    columnar_us = _less(ours, rewind)
    messages_us = _less(messages, rewind)
    figures = {
        "frames": len(frames),
        "columnar_us": round(columnar_us, 2),
        "per_message_us": round(messages_us, 2),
        "rewind_us": round(rewind.best_us, 2),
        "ceiling_us": round(ceiling.best_us, 2),
        "ceiling_bytes": len(buffer),
        "ratio": round(ceiling.best_us / columnar_us, 4),
        "per_message_ratio": round(ceiling.best_us / messages_us, 4),
        "signals_per_s": round(size / columnar_us * 1e6),
    }
    progress(
        f"B={size:5d} ({len(frames):4d} frames of {per_frame:2d})  columnar {columnar_us:8.1f} us"
        f"  per message {messages_us:8.1f} us  copy {ceiling.best_us:6.2f} us  "
        f"ratio {figures['ratio']:.4f} (per message {figures['per_message_ratio']:.4f})"
    )
    return figures


def _refused(rejection: Rejection) -> None:
    raise AssertionError(f"the bench's frames are valid: {rejection}")


def _less(timing: Timing, rewind: Timing) -> float:
    """A candidate's best time without the rewind it starts with (us)."""
    return (timing.best_ns - rewind.best_ns) / 1e3


def _copy_frames(frames: list[bytes], out: npt.NDArray[np.uint8]) -> None:
    """The ceiling: every frame's bytes, back to back, into the preallocated `out`."""
    joined = b"".join(frames)
    out[: len(joined)] = np.frombuffer(joined, np.uint8)


def _breakdown(frames: list[bytes], converter: BatchConverter) -> dict[str, float]:
    """Where the columnar path's time goes: admitting the frames, the drain's block (join,
    the record kernel, sequences and ages), the record kernel alone, and the converter's one
    pass (value check and normalisation, `FeatureNormaliser.check_into`)."""
    pipeline, rewind = _pipeline(frames)
    blocks: list[SignalColumns] = []
    receiver = ColumnReceiver(pipeline, blocks.append, _refused, max_rows=len(frames) * 64)
    rewind()
    for frame in frames:
        receiver.add(frame, None)
    receiver.flush()
    rows = blocks.pop().features.copy()
    out = np.empty_like(rows)
    checker = RowChecker(len(rows))
    normaliser = FeatureNormaliser(converter.bounds)
    joined = b"".join(memoryview(frame)[len(frame) - 64 * RECORD_BYTES :] for frame in frames)
    mask, value = template_words()
    template = (kernels.tiled(mask), kernels.tiled(value))
    features = np.empty((len(rows), TENSOR_SCHEMA_SIZE), np.float32)
    epoch, slot, bad = (np.empty(len(rows), np.int64) for _ in range(3))

    def admit() -> object:
        rewind()
        return [pipeline.admit(frame) for frame in frames]

    def block_of() -> object:
        rewind()
        for frame in frames:
            receiver.add(frame, None)
        receiver.flush()
        return blocks.pop()

    def take() -> object:
        return kernels.take_records(joined, template, features.view(np.uint8), epoch, slot, bad)

    admitted, blocked, rewound, taken, converted = measure(
        admit, block_of, rewind, take, lambda: normaliser.check_into(rows, out, checker)
    )
    admit_us = _less(admitted, rewound)
    block_us = _less(blocked, rewound)
    progress(
        f"B={len(rows)} breakdown ({len(frames)} frames): admit {admit_us:.1f} us, block "
        f"(admit + join + record kernel + sequences + ages) {block_us:.1f} us, of which the "
        f"record kernel {taken.best_us:.1f} us; value check + normalisation (one pass) "
        f"{converted.best_us:.1f} us"
    )
    return {
        "admit_us": round(admit_us, 1),
        "block_us": round(block_us, 1),
        "records_us": round(taken.best_us, 1),
        "check_normalise_us": round(converted.best_us, 1),
    }
