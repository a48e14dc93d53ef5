"""The inference loop: pending signals to decisions and commands, a micro-batch at a time.

Synchronous and thread-free, for a controller's event loop: `submit` each signal as it
arrives, call `step(now)` whenever the loop wakes (at the latest at `deadline()`), and send
the commands of the decisions it returns (`Decisions.commands()`: encoded bytes, as columns).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from leyline import ContractError
from leyline.features import FeatureBounds
from leyline.signals import TENSOR_SCHEMA_SIZE
from leyline.tensors import BatchConverter, StagedBuffer
from services.controller._host_passes import check_proposals, stage_batch
from services.controller.batcher import SignalBatcher
from services.controller.columns import COLUMN_SOURCES, ColumnBuffer, ObservationBatch, pick_device
from services.controller.commands import CommandEncoder
from services.controller.decisions import Decisions
from services.controller.masks import MASK_READS, ActionMasker, unknown_stage
from services.controller.pending import PendingBatch, PendingSignal
from services.controller.policy import ControlPolicy, DecisionReason

#: The reason codes a policy may return (`DecisionReason`, numbered without gaps); any other
#: is refused as an illegal proposal.
_FIRST_REASON, _LAST_REASON = int(min(DecisionReason)), int(max(DecisionReason))
assert len(DecisionReason) == _LAST_REASON - _FIRST_REASON + 1
#: As a plain int: an enum member costs a compiled call's dispatcher a slow type lookup.
_REFUSED = int(DecisionReason.ILLEGAL_PROPOSAL)


class InferenceLoop:
    """Micro-batches the freshest signals and runs `policy` on `device` under inference mode.

    Per batch, one compiled pass (`_stage`) gathers the signals' raw feature rows from the
    batcher's table and checks them for the whole batch, writes the decision columns into
    the `ColumnBuffer`, the legal-action masks beside them and the normalised features into
    the `BatchConverter`'s buffer (each preallocated, pinned on CUDA, one transfer); a
    signal that breaks the contract is refused by name (`on_refused`, counted in `refused`)
    and the rest go on. The policy decides, and the results come back to the host in one
    transfer. There the policy's output is checked: an action
    out of range or not legal for its slot falls back to WAIT with the reason
    ILLEGAL_PROPOSAL (counted in `illegal`), as does one with a reason code that is not a
    `DecisionReason`; a confidence outside [0, 1] is clamped. The
    decisions stay arrays; the acting rows' commands are encoded when read
    (`Decisions.commands`, `CommandEncoder`).
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
        #: A batch's legal-action masks (`_stage` writes them on the host).
        self._masks = StagedBuffer((max_batch, len(self.layout)), torch.bool, self.device)
        #: A batch's raw rows and the indices of its refused rows (`_stage`).
        self._staged = np.empty((max_batch, TENSOR_SCHEMA_SIZE), np.float32)
        self._bad = np.empty(max_batch, np.int64)
        #: Actions the policy proposed that the loop refused (out of range or masked),
        #: decided as WAIT with the reason ILLEGAL_PROPOSAL instead.
        self.illegal = 0
        # Lookup table: an enum call per decision showed up at large batches (bench inference).
        self._members = tuple(self.layout.actions)
        self._encoder = CommandEncoder(self.layout, self.batcher.names.codes)
        self._host = self.device.type == "cpu"
        #: The policy and memory-row count last reserved for (`_reserve`).
        self._reserved: tuple[ControlPolicy, int] | None = None

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
        parts = []
        batcher = self.batcher
        while batcher.ready(now):
            parts.append(self.decide(batcher.take(force=True)))
        return Decisions.join(self._members, self._encoder, parts)

    def flush(self) -> Decisions:
        """Decide everything pending now, ready or not (shutdown, tests)."""
        parts = []
        batcher = self.batcher
        while len(batcher):
            parts.append(self.decide(batcher.take(force=True)))
        return Decisions.join(self._members, self._encoder, parts)

    def forget(self, worker_id: str) -> None:
        """Forget a restarted worker: its pending signals, decided epochs and policy memory."""
        self.batcher.forget(worker_id)
        rows = self.batcher.rows_of(worker_id)
        if rows:
            self.policy.forget(torch.tensor(rows, device=self.device))

    def decide(self, batch: PendingBatch) -> Decisions:
        """Run the policy on one batch (at most `max_batch`); its decisions, as arrays."""
        if not len(batch):
            return Decisions(self._members, self._encoder)
        missing = self._stage(batch.rows)
        if missing > 0:  # rows that break the contract: named, counted, left out
            batch = self._refuse(batch, missing)
            if not len(batch):
                return Decisions(self._members, self._encoder)
            missing = self._stage(batch.rows)
        count = len(batch)
        if missing:
            raise unknown_stage(self._columns.host_buffer()[:count], missing)
        self._reserve()
        with torch.inference_mode():
            features = self._converter.transfer(count)
            columns = self._columns.transfer(count)
            masks = self._masks.transfer(count)
            output = self.policy(ObservationBatch(features, columns), masks)
            if self._host:  # the tensors are the arrays: no copy
                actions = output.actions.numpy()
                confidence = output.confidence.numpy()
                reasons = output.reasons.numpy()
            else:  # one transfer back for the three results
                results = torch.stack(
                    (output.actions.double(), output.confidence.double(), output.reasons.double())
                ).cpu()
                actions, confidence, reasons = results.numpy()
        return self._checked(batch, actions, confidence, reasons, self._masks.array[:count])

    def _stage(self, rows: npt.NDArray[np.int64]) -> int:
        """The batch of memory `rows` into the host buffers in one compiled pass: raw rows
        from the batcher's table into the converter's buffer, checked, the decision columns
        and masks from them, the rows normalised in place (`stage_batch`, with each owner's
        rules). Through the owners' own calls this was five compiled passes and ~20 us of
        Python around them at B = 256, a fifth of an MLP forward (bench inference). Returns
        `stage_batch`'s count of refused rows, or its code for a stage with no mask."""
        return stage_batch(
            self.batcher.features, rows, *self._converter.rules, COLUMN_SOURCES, *MASK_READS,
            self._masker.table, self._staged, self._converter.host_rows(),
            self._columns.host_buffer(),
            self._masks.host(), self._bad,
        )  # fmt: skip

    def _reserve(self) -> None:
        """The policy's memory for every memory row, asked for only when the policy or the
        row count changed since the last batch (a policy's `reserve` that finds room still
        costs a few us of module attribute lookups: bench inference)."""
        wanted = (self.policy, len(self.batcher.rows))
        reserved = self._reserved
        if reserved is None or reserved[0] is not wanted[0] or reserved[1] != wanted[1]:
            self.policy.reserve(wanted[1])
            self._reserved = wanted

    def _checked(
        self,
        batch: PendingBatch,
        actions: npt.NDArray[Any],
        confidence: npt.NDArray[Any],
        reasons: npt.NDArray[Any],
        legal: npt.NDArray[np.bool_],
    ) -> Decisions:
        """The policy's output held to its contract, on the host: a proposal out of range or
        masked, or with an unknown reason code, becomes WAIT (ILLEGAL_PROPOSAL, counted),
        confidence is clamped to [0, 1] (NaN to 0), and the columns take the dtypes
        `Decisions` promises: one compiled pass (`check_proposals`)."""
        count = len(actions)
        chosen, why = np.empty(count, np.int64), np.empty(count, np.int64)
        sure = np.empty(count, np.float64)
        refused = check_proposals(
            np.ascontiguousarray(actions, np.int64), np.ascontiguousarray(reasons, np.int64),
            np.ascontiguousarray(confidence, np.float64), np.ascontiguousarray(legal),
            int(self.layout.wait), _REFUSED, _FIRST_REASON, _LAST_REASON,
            chosen, why, sure,
        )  # fmt: skip
        self.illegal += refused
        return Decisions(self._members, self._encoder, batch, chosen, sure, why)

    def _refuse(self, batch: PendingBatch, count: int) -> PendingBatch:
        """Name and report the `count` refused rows `_stage` found; the items kept, in order."""
        self._converter.refuse(self._staged[: len(batch)], self._bad[:count].astype(np.intp))
        refused = self._converter.refused
        self.refused += len(refused)
        if self._on_refused is not None:
            for index, error in refused:
                self._on_refused(batch[index], error)
        kept = np.ones(len(batch), np.bool_)
        kept[[index for index, _ in refused]] = False
        return batch.keep(np.flatnonzero(kept))
