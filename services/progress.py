"""Live progress of a run, read from the sink's database (WAL: reading never blocks the sink)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import msgspec

_LATEST_EPOCHS = """
SELECT sender, epoch, json_extract(message, '$.payload.val_accuracy')
FROM events
WHERE id IN (SELECT MAX(id) FROM events WHERE event_type = 'EPOCH_COMPLETED' GROUP BY sender)
"""
_LATEST_STAGES = """
SELECT sender, slot_id, to_stage
FROM stage_history
WHERE id IN (SELECT MAX(id) FROM stage_history GROUP BY sender, slot_id)
ORDER BY sender, slot_id
"""


class WorkerProgress(msgspec.Struct, frozen=True):
    """Where one worker is: its last completed epoch, its accuracy, its seed slots' stages."""

    worker: str
    epoch: int
    val_accuracy: float
    stages: tuple[tuple[str, str], ...] = ()

    def line(self, total_epochs: int) -> str:
        slots = "  ".join(f"{slot}={stage}" for slot, stage in self.stages) or "no seeds yet"
        return (
            f"{self.worker:<8} epoch {self.epoch:>3}/{total_epochs:<3} "
            f"val acc {self.val_accuracy:5.1f}%  {slots}"
        )


def read_progress(db: Path) -> list[WorkerProgress]:
    """The latest progress of every worker the sink has heard from (empty before the first)."""
    if not db.is_file():
        return []
    try:
        connection = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True, timeout=1.0)
    except sqlite3.Error:
        return []
    try:
        epochs = connection.execute(_LATEST_EPOCHS).fetchall()
        stages: dict[str, list[tuple[str, str]]] = {}
        for sender, slot, stage in connection.execute(_LATEST_STAGES):
            stages.setdefault(sender, []).append((slot, stage))
    except sqlite3.Error:  # the sink has not created its tables yet
        return []
    finally:
        connection.close()
    return [
        WorkerProgress(sender, epoch or 0, accuracy or 0.0, tuple(stages.get(sender, ())))
        for sender, epoch, accuracy in sorted(epochs)
    ]
