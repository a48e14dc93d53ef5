"""The inference loop: pending signals to decisions and commands, a micro-batch at a time.

Synchronous and thread-free, for a controller's event loop: `submit` each signal as it
arrives, call `step(now)` whenever the loop wakes (at the latest at `deadline()`), and send
the commands of the decisions it returns.
"""

from __future__ import annotations

import copy
import enum
import itertools
import secrets
import time
from collections.abc import Sequence
from datetime import UTC, datetime

import msgspec
import numpy as np
import torch

from leyline import (
    TENSOR_SCHEMA_SIZE,
    AdaptationCommand,
    BatchConverter,
    FastTrainingSignals,
    FeatureBounds,
    action_to_command,
    write_raw,
)
from services.controller.batcher import PendingSignal, SignalBatcher, SlotKey
from services.controller.columns import ColumnBuffer, ObservationBatch, pick_device
from services.controller.masks import ActionMasker
from services.controller.policy import ControlPolicy, DecisionReason


class Decision(msgspec.Struct, frozen=True, gc=False):
    """The policy's choice for one (worker, slot) at one epoch; WAIT carries no command.

    A msgspec Struct for its C constructor: one is built per decision (bench inference).
    """

    worker_id: str
    slot_id: str
    epoch: int
    action: enum.IntEnum
    confidence: float
    reason: DecisionReason
    command: AdaptationCommand | None


class CommandIds:
    """Command ids unique across processes and machines at the cost of a counter step.

    Each instance draws a 64-bit random prefix once; ids are `<prefix>-<n>` for n = 1, 2, ...
    A restarted controller draws a new prefix, so it never repeats an id it issued before.
    """

    __slots__ = ("_counter", "prefix")

    def __init__(self) -> None:
        self.prefix = secrets.token_hex(8)
        self._counter = itertools.count(1)

    def next(self) -> str:
        return f"{self.prefix}-{next(self._counter)}"


class InferenceLoop:
    """Micro-batches the freshest signals and runs `policy` on `device` under inference mode.

    Per batch: the signals are walked once into float64 raw rows (`write_raw`), from which a
    `BatchConverter` makes the normalised features and a `ColumnBuffer` the raw decision
    columns (each one preallocated buffer, pinned on CUDA, one transfer),
    legal-action masks are computed on the device, the policy decides, illegal choices fall
    back to WAIT, and the results come back to the host in one transfer.
    """

    def __init__(
        self,
        policy: ControlPolicy,
        *,
        max_batch: int = 64,
        max_wait_s: float = 0.002,
        device: torch.device | str | None = None,
    ) -> None:
        self.device = pick_device(device)
        self.policy = policy.to(self.device).eval()
        self.layout = policy.layout
        self.batcher = SignalBatcher(max_batch, max_wait_s)
        self._converter = BatchConverter(max_batch, self.device, policy.bounds)
        self._columns = ColumnBuffer(max_batch, self.device)
        # The raw rows of a batch, written once and read by both the converter and the columns.
        self._raw = np.empty((max_batch, TENSOR_SCHEMA_SIZE), np.float64)
        self._masker = ActionMasker(self.layout, self.device)
        self._rows: dict[SlotKey, int] = {}
        #: The memory rows of each worker, so forgetting one does not scan every row.
        self._worker_rows: dict[str, list[int]] = {}
        # Lookup tables: an enum call per decision showed up at large batches (bench inference).
        self._actions = tuple(self.layout.actions)
        self._reasons = {int(reason): reason for reason in DecisionReason}
        self._ids = CommandIds()
        # One validated command per (action, reason, slot), copied and stamped per decision.
        self._templates: dict[tuple[int, int, str], AdaptationCommand] = {}

    @property
    def max_batch(self) -> int:
        return self.batcher.max_batch

    @property
    def bounds(self) -> FeatureBounds:
        """The bounds the features are normalised with: the policy's own."""
        return self._converter.bounds

    def submit(
        self,
        worker_id: str,
        slot_id: str,
        signal: FastTrainingSignals,
        now: float | None = None,
    ) -> bool:
        """Queue the signal of one slot (freshest wins); False when it was stale."""
        return self.batcher.submit(worker_id, slot_id, signal, now)

    def deadline(self) -> float | None:
        """The latest time `step` should run to honour the maximum wait; None when idle."""
        return self.batcher.deadline()

    def step(self, now: float | None = None) -> list[Decision]:
        """Decide every batch that is ready at `now` (full, or waited long enough)."""
        now = time.monotonic() if now is None else now
        decisions: list[Decision] = []
        while batch := self.batcher.take(now):
            decisions.extend(self.decide(batch))
        return decisions

    def flush(self) -> list[Decision]:
        """Decide everything pending now, ready or not (shutdown, tests)."""
        decisions: list[Decision] = []
        while batch := self.batcher.take(force=True):
            decisions.extend(self.decide(batch))
        return decisions

    def forget(self, worker_id: str) -> None:
        """Forget a restarted worker: its pending signals, decided epochs and policy memory."""
        self.batcher.forget(worker_id)
        rows = self._worker_rows.get(worker_id)
        if rows:
            self.policy.forget(torch.tensor(rows, device=self.device))

    def decide(self, batch: Sequence[PendingSignal]) -> list[Decision]:
        """Run the policy on one batch (at most `max_batch`) and turn its actions into commands."""
        if not batch:
            return []
        signals = [item.signal for item in batch]
        table = self._rows  # a new (worker, slot) gets the next free memory row
        known = len(table)
        rows = [table.setdefault((item.worker_id, item.slot_id), len(table)) for item in batch]
        if len(table) > known:
            for item, row in zip(batch, rows, strict=True):
                if row >= known:
                    self._worker_rows.setdefault(item.worker_id, []).append(row)
        self.policy.reserve(len(self._rows))
        with torch.inference_mode():
            raw = write_raw(signals, self._raw)
            features = self._converter.convert_raw(raw)
            columns = self._columns.fill_raw(raw, rows)
            masks = self._masker(columns)
            actions, confidence, reasons = self.policy(ObservationBatch(features, columns), masks)
            legal = masks.gather(1, actions.unsqueeze(1)).squeeze(1)
            actions = torch.where(legal, actions, self.layout.wait)
            reasons = torch.where(legal, reasons, DecisionReason.ILLEGAL_PROPOSAL)
            results = torch.stack(
                (actions.double(), confidence.double().clamp(0.0, 1.0), reasons.double())
            ).tolist()
        timestamp = datetime.now(UTC)  # one timestamp for the whole batch
        wait, command = self.layout.wait, self._command
        actions_of, reasons_of = self._actions, self._reasons
        return [
            Decision(
                item.worker_id,
                item.slot_id,
                item.signal.epoch,
                actions_of[index],
                confidence,
                reasons_of[code],
                None
                if index == wait
                else command(index, code, item.slot_id, timestamp, confidence),
            )
            for item, index, confidence, code in zip(
                batch, map(int, results[0]), results[1], map(int, results[2]), strict=True
            )
        ]

    def _command(
        self, index: int, code: int, slot_id: str, timestamp: datetime, confidence: float
    ) -> AdaptationCommand:
        """The command of one decision: a copy of its cached template stamped with a fresh id.

        A copy plus `force_setattr` rather than `msgspec.structs.replace`: the template passed
        `__post_init__`, and id, timestamp and confidence take no part in its cross-field
        rules, so rerunning it (as `replace` does) would triple the cost (bench inference).
        """
        command_id = self._ids.next()
        template = self._templates.get((index, code, slot_id)) or self._template(
            index, code, slot_id, command_id
        )
        command = copy.copy(template)
        stamp = msgspec.structs.force_setattr
        stamp(command, "command_id", command_id)
        stamp(command, "timestamp", timestamp)
        stamp(command, "confidence", confidence)
        return command

    def _template(self, index: int, code: int, slot_id: str, command_id: str) -> AdaptationCommand:
        """The cached command of (action, reason, slot), first built for `command_id`."""
        command = action_to_command(
            self._actions[index],
            command_id=command_id,
            seed_id=None,
            slot_id=slot_id,
            reason=self._reasons[code].text,
        )
        assert command is not None  # only WAIT has none, and WAIT never gets here
        self._templates[index, code, slot_id] = command
        return command
