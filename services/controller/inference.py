"""The inference loop: pending signals to decisions and commands, a micro-batch at a time.

Synchronous and thread-free, for a controller's event loop: `submit` each signal as it
arrives, call `step(now)` whenever the loop wakes (at the latest at `deadline()`), and send
the commands of the decisions it returns (`Decisions.commanded()`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import numpy as np
import numpy.typing as npt
import torch

from leyline import ContractError, FastTrainingSignals
from leyline.features import FeatureBounds, write_raw
from leyline.signals import TENSOR_SCHEMA_SIZE
from leyline.tensors import BatchConverter
from services.controller.batcher import PendingSignal, SignalBatcher, pending_rows, pending_signals
from services.controller.columns import ColumnBuffer, ObservationBatch, pick_device
from services.controller.commands import CommandStamper
from services.controller.decisions import Decisions
from services.controller.masks import ActionMasker
from services.controller.policy import ControlPolicy, DecisionReason


class InferenceLoop:
    """Micro-batches the freshest signals and runs `policy` on `device` under inference mode.

    Per batch: the signals' feature blocks are joined into the `BatchConverter`'s host
    buffer and checked there for the whole batch; a signal that breaks the contract is
    refused by name (`on_refused`, counted in `refused`) and the rest go on. From the raw
    rows a `ColumnBuffer` takes the decision columns and the converter the normalised
    features (each one preallocated buffer, pinned on CUDA, one transfer), legal-action
    masks are computed on the device, the policy decides, illegal choices fall back to WAIT,
    the results come back to the host in one transfer, and only the rows that act get a
    command (`CommandStamper`).
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
        #: Queue the signal of one slot (freshest wins); False when it was stale. The
        #: batcher's own method, bound here: one call layer less per signal.
        self.submit = self.batcher.submit
        #: Queue a block of ((worker, slot), signal)s in one call: what a drained receive
        #: hands over (`SignalBatcher.submit_many`); how many were accepted.
        self.submit_many = self.batcher.submit_many
        #: Queue a block of signals that came as rows (`SignalBatcher.submit_rows`).
        self.submit_rows = self.batcher.submit_rows
        self._converter = BatchConverter(max_batch, self.device, policy.bounds)
        self._columns = ColumnBuffer(max_batch, self.device)
        self._on_refused: Callable[[PendingSignal, ContractError], None] | None = None
        #: Signals refused for a value that breaks the contract (never decided).
        self.refused = 0
        self._masker = ActionMasker(self.layout, self.device)
        # Lookup table: an enum call per decision showed up at large batches (bench inference).
        self._members = tuple(self.layout.actions)
        self._commands = CommandStamper(self.layout)

    def on_refused(self, handler: Callable[[PendingSignal, ContractError], None]) -> None:
        """Call `handler` with each signal refused for its values, and why."""
        self._on_refused = handler

    @property
    def max_batch(self) -> int:
        return self.batcher.max_batch

    @property
    def bounds(self) -> FeatureBounds:
        """The bounds the features are normalised with: the policy's own."""
        return self._converter.bounds

    def deadline(self) -> float | None:
        """The latest time `step` should run to honour the maximum wait; None when idle."""
        return self.batcher.deadline()

    def step(self, now: float | None = None) -> Decisions:
        """Decide every batch that is ready at `now` (full, or waited long enough)."""
        now = time.monotonic() if now is None else now
        decisions = Decisions(self._members)
        while batch := self.batcher.take(now):
            decisions.extend(self.decide(batch))
        return decisions

    def flush(self) -> Decisions:
        """Decide everything pending now, ready or not (shutdown, tests)."""
        decisions = Decisions(self._members)
        while batch := self.batcher.take(force=True):
            decisions.extend(self.decide(batch))
        return decisions

    def forget(self, worker_id: str) -> None:
        """Forget a restarted worker: its pending signals, decided epochs and policy memory."""
        self.batcher.forget(worker_id)
        rows = self.batcher.rows_of(worker_id)
        if rows:
            self.policy.forget(torch.tensor(rows, device=self.device))

    def decide(self, batch: Sequence[PendingSignal]) -> Decisions:
        """Run the policy on one batch (at most `max_batch`) and turn its actions into commands."""
        items = list(batch)
        if not items:
            return Decisions(self._members)
        signals = list(map(pending_signals, items))
        raw = self._rows_of(items, signals) if None in signals else self._converter.load(signals)
        if self._converter.refused:
            items = self._refuse(items)
            if not items:
                return Decisions(self._members)
        rows = list(map(pending_rows, items))  # each (worker, slot)'s row, from the batcher
        self.policy.reserve(len(self.batcher.rows))
        with torch.inference_mode():
            columns = self._columns.fill_raw(raw, rows)  # before `ship` normalises `raw`
            features = self._converter.ship(raw)
            masks = self._masker(columns)
            actions, confidence, reasons = self.policy(ObservationBatch(features, columns), masks)
            legal = masks.gather(1, actions.unsqueeze(1)).squeeze(1)
            actions = torch.where(legal, actions, self.layout.wait)
            reasons = torch.where(legal, reasons, DecisionReason.ILLEGAL_PROPOSAL)
            # One transfer back; the integer rows are read as integers on the host.
            results = (
                torch.stack(
                    (actions.double(), confidence.double().clamp(0.0, 1.0), reasons.double())
                )
                .cpu()
                .numpy()
            )
        chosen: list[int] = results[0].astype(np.int64).tolist()
        confidences: list[float] = results[1].tolist()
        why: list[int] = results[2].astype(np.int64).tolist()
        commands = self._commands.stamp(items, chosen, confidences, why)
        return Decisions(self._members, items, chosen, confidences, why, commands)

    def _rows_of(
        self, items: list[PendingSignal], signals: list[FastTrainingSignals | None]
    ) -> npt.NDArray[np.float32]:
        """A batch with signals that came as rows: every item's raw features from the
        batcher's table (those that came as objects written there first), checked."""
        batcher = self.batcher
        objects = [(item.row, signal) for item, signal in zip(items, signals, strict=True)
                   if signal is not None]  # fmt: skip
        if objects:
            batcher.reserve(len(batcher.rows))
            rows, blocks = zip(*objects, strict=True)
            staged = np.empty((len(objects), TENSOR_SCHEMA_SIZE), np.float32)
            batcher.features[list(rows)] = write_raw(blocks, staged)
        return self._converter.gather(batcher.features, list(map(pending_rows, items)))

    def _refuse(self, items: list[PendingSignal]) -> list[PendingSignal]:
        """Report the converter's refusals; the items that were kept, in order."""
        refused = self._converter.refused
        self.refused += len(refused)
        if self._on_refused is not None:
            for index, error in refused:
                self._on_refused(items[index], error)
        dropped = {index for index, _ in refused}
        return [item for index, item in enumerate(items) if index not in dropped]
