"""Sink ingest: TelemetryEvents through `TelemetryStore.write_batch`, beside plain SQLite.

Ours is `write_batch` on batches of `BATCH` records of a realistic stream (mostly epoch
results, with seed lifecycles whose stage changes the store judges): the row conversion
(typed columns and msgspec JSON of the whole message), INSERT OR IGNORE, the stage judge
(the stage history is a view of these rows), the loss-row reconciliation check, one durable
transaction per batch. The ceiling is `executemany` of the very same rows, built beforehand
as tuples, into an identical `events` table (same indexes, WAL, synchronous=NORMAL) with the
same one commit per batch. Every batch holds new messages, so neither side measures the
cheap duplicate path. Both files live in a temporary directory on this machine's disk; the
figures depend on that disk's fsync cost at each WAL checkpoint. The same is then measured
under load (`LOAD`: 1,024-record batches from 64 workers, so 64 streams and their seed
lives interleave in every batch).
"""

from __future__ import annotations

import itertools
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from bench._harness import measure, progress, ratio
from leyline import SeedStage, Severity, TelemetryEvent, TelemetryEventType
from leyline.telemetry import (
    EpochCompleted,
    GradientAnomaly,
    PlateauDetected,
    SeedFossilized,
    SeedGerminated,
    SeedStageChanged,
)
from services.sink import StoredMessage, TelemetryStore
from services.sink.rows import event_row

#: Records per transaction, the sink's default batch.
BATCH = 256
#: Batches built per candidate: more than the harness's calibration and repeats can use.
BATCHES = 160
WORKERS = 8
#: Under load: (records per batch, workers, batches built). A batch this large takes one
#: harness loop per call, so fewer batches cover calibration and repeats.
LOAD = (1024, 64, 60)

_LIFE = (
    SeedStage.DORMANT,
    SeedStage.GERMINATED,
    SeedStage.TRAINING,
    SeedStage.BLENDING,
    SeedStage.SHADOWING,
    SeedStage.PROBATIONARY,
    SeedStage.FOSSILIZED,
)
_PLAIN_INSERT = (
    "INSERT INTO events (sender, channel, topic, incarnation, sequence, sent_ns, event_type,"
    " seed_id, slot_id, epoch, severity, illegal, message)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


def run() -> dict[str, Any]:
    """The sink's default batch from 8 workers, then the same under load (`LOAD`)."""
    figures = _case(BATCH, WORKERS, BATCHES)
    figures["load"] = _case(*LOAD)
    return figures


def _case(batch: int, workers: int, batches: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="leyline-bench-sink-") as folder:
        ours_batches = _batches(_stream(workers), batch, batches)
        plain_batches = [
            [_plain_row(r) for r in rows] for rows in _batches(_stream(workers), batch, batches)
        ]
        total = sum(len(rows) for rows in plain_batches)
        stage_changes = sum(row[6] == "SEED_STAGE_CHANGED" for b in plain_batches for row in b)
        progress(
            f"sink: {total} events from {workers} workers in batches of {batch}, "
            f"{stage_changes} stage changes"
        )
        with (
            TelemetryStore(Path(folder) / "ours.db") as ours,
            TelemetryStore(Path(folder) / "plain.db") as plain,
        ):
            ours_time, plain_time = measure(
                _one_at_a_time(ours_batches, ours.write_batch),
                _one_at_a_time(plain_batches, lambda rows: _plain_batch(plain, rows)),
            )
            if ours.sequences("w0", "tel.w0.", 1)[:3] != [1, 2, 3]:
                raise AssertionError("write_batch did not store the stream")
    ours_rate = batch * ours_time.per_s
    plain_rate = batch * plain_time.per_s
    progress(
        f"sink ingest {ours_rate:,.0f} records/s, plain SQLite {plain_rate:,.0f} records/s, "
        f"ratio {ratio(plain_time, ours_time):.2f}"
    )
    return {
        "batch": batch,
        "workers": workers,
        "stage_change_share": round(stage_changes / total, 3),
        "records_per_s": round(ours_rate),
        "batch_us": round(ours_time.best_us, 1),
        "batch_median_us": round(ours_time.median_ns / 1e3, 1),
        "ceiling_records_per_s": round(plain_rate),
        "ceiling_batch_us": round(plain_time.best_us, 1),
        "ceiling_batch_median_us": round(plain_time.median_ns / 1e3, 1),
        "ratio": ratio(plain_time, ours_time),
    }


def _one_at_a_time(batches: list[Any], write: Callable[[Any], object]) -> Callable[[], object]:
    """A candidate that writes the next unused batch each call, so every row is new."""
    pending = iter(batches)

    def candidate() -> object:
        batch = next(pending, None)
        if batch is None:
            raise RuntimeError(f"the benchmark used more than the {len(batches)} batches built")
        return write(batch)

    return candidate


def _plain_batch(store: TelemetryStore, rows: list[tuple[object, ...]]) -> None:
    connection = store.connection
    connection.execute("BEGIN IMMEDIATE")
    connection.executemany(_PLAIN_INSERT, rows)
    connection.execute("COMMIT")


def _plain_row(record: StoredMessage) -> tuple[object, ...]:
    """Exactly the row `write_batch` builds, with nothing to judge (no stage is illegal)."""
    event = record.message
    if not isinstance(event, TelemetryEvent):
        raise TypeError(f"the stream holds only telemetry, not {type(event).__name__}")
    return event_row(record, event)


def _batches(stream: Iterator[StoredMessage], size: int, count: int) -> list[list[StoredMessage]]:
    return [list(itertools.islice(stream, size)) for _ in range(count)]


def _stream(workers: int) -> Iterator[StoredMessage]:
    """Workers in turn: each epoch a result, a plateau or gradient note now and then, and
    every tenth epoch a whole seed life (germinate, six legal stage changes, fossilize)."""
    sequences = dict.fromkeys(range(workers), 0)
    for epoch in itertools.count(1):
        for worker in range(workers):
            for event in _epoch_events(worker, epoch):
                sequences[worker] += 1
                sender = f"w{worker}"
                yield StoredMessage(
                    "tel",
                    sender,
                    sequences[worker],
                    1_767_268_800_000_000_000 + epoch * 1_000_000_000 + worker,
                    f"tel.{sender}.",
                    event,
                    incarnation=1,
                )


def _epoch_events(worker: int, epoch: int) -> Iterator[TelemetryEvent]:
    accuracy = min(99.0, 20.0 + epoch * 0.7 + worker)
    yield TelemetryEvent(
        event_type=TelemetryEventType.EPOCH_COMPLETED,
        payload=EpochCompleted(
            train_loss=2.3 / epoch,
            val_loss=2.4 / epoch,
            train_accuracy=accuracy,
            val_accuracy=accuracy - 1.5,
            duration_ms=17.25,
        ),
        epoch=epoch,
    )
    if epoch % 4 == 0:
        yield TelemetryEvent(
            event_type=TelemetryEventType.PLATEAU_DETECTED,
            payload=PlateauDetected(plateau_epochs=3),
            epoch=epoch,
            severity=Severity.WARNING,
        )
    if epoch % 10 != 0:
        return
    seed, slot = f"w{worker}_seed_{epoch // 10}", f"slot_{epoch // 10}"
    yield TelemetryEvent(
        event_type=TelemetryEventType.SEED_GERMINATED,
        payload=SeedGerminated(seed_id=seed, blueprint_id="attention", params=2000),
        seed_id=seed,
        slot_id=slot,
        epoch=epoch,
    )
    for before, after in itertools.pairwise(_LIFE):
        yield TelemetryEvent(
            event_type=TelemetryEventType.SEED_STAGE_CHANGED,
            payload=SeedStageChanged(seed_id=seed, from_stage=before, to_stage=after),
            seed_id=seed,
            slot_id=slot,
            epoch=epoch,
        )
    yield TelemetryEvent(
        event_type=TelemetryEventType.GRADIENT_ANOMALY,
        payload=GradientAnomaly(
            seed_id=seed, gradient_norm=120.0, has_vanishing=False, has_exploding=True
        ),
        seed_id=seed,
        epoch=epoch,
        severity=Severity.ERROR,
    )
    yield TelemetryEvent(
        event_type=TelemetryEventType.SEED_FOSSILIZED,
        payload=SeedFossilized(
            seed_id=seed,
            blueprint_id="attention",
            improvement=2.5,
            params_added=2000,
            epochs_total=10,
            epochs_in_stage=1,
        ),
        seed_id=seed,
        slot_id=slot,
        epoch=epoch,
    )
