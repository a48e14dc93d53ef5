"""The semantic guards of the seed lifecycle: commands judged by stage, reported moves recorded.

Both are bus `SemanticGuard`s (and the worker runs `CommandGuard.check` itself); they live with
the services because they apply the contracts' rules, which the transport knows nothing of.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import structlog

from bus import Envelope
from bus.sequence import MAX_STREAMS
from leyline import (
    AdaptationCommand,
    CommandType,
    ContractError,
    LifecycleGuard,
    RejectReason,
    SeedStage,
    SeedStateReport,
    TelemetryEvent,
    Verdict,
)
from leyline.telemetry import SeedStageChanged

_log = structlog.get_logger("leyline.bus")


def _refusal(verdict: Verdict) -> ContractError | None:
    if verdict.allowed:
        return None
    return ContractError(verdict.reason or RejectReason.ILLEGAL_TRANSITION, verdict.detail)


class CommandGuard:
    """A worker's judgement of one command against the stages of its own slots.

    The worker runs `check` at apply time, in journal-sequence order and after it has
    deduplicated the command by id and sequence: a resend is answered from the worker's
    ledger and never judged again, and a command that waited for a predecessor is judged
    against the stages at its turn. `resolve_slot` names the slot a command addresses (None
    when it addresses nothing the worker has). The guard only judges; the worker records
    transitions when it carries them out.
    """

    def __init__(
        self,
        lifecycle: LifecycleGuard,
        worker_id: str,
        resolve_slot: Callable[[AdaptationCommand], str | None],
    ) -> None:
        self._lifecycle = lifecycle
        self._worker = worker_id
        self._resolve = resolve_slot

    def check(self, command: AdaptationCommand) -> tuple[str | None, Verdict]:
        """The slot `command` addresses (None for none) and whether carrying it out is legal."""
        if command.command_type is CommandType.REQUEST_STATE:
            # A state query addresses the worker as a whole, never one slot.
            return None, Verdict(True, SeedStage.UNKNOWN, None)
        slot = self._resolve(command)
        if slot is None:
            detail = (
                f"{self._worker} has no slot for seed {command.target_seed_id!r} "
                f"/ slot {command.target_slot_id!r}"
            )
            return None, Verdict(
                False, SeedStage.UNKNOWN, None, RejectReason.UNKNOWN_TARGET, detail
            )
        return slot, self._lifecycle.check_command(self._worker, slot, command)

    def __call__(self, envelope: Envelope[Any]) -> ContractError | None:
        """The same judgement as a bus `SemanticGuard`, for a subscriber that has no ledger."""
        command = envelope.message
        if not isinstance(command, AdaptationCommand):
            return None
        return _refusal(self.check(command)[1])


class TransitionGuard:
    """Checks the stage changes workers report (events and state reports) and records them.

    Its view of a worker's slots is only as good as the reports it saw. A hole in a sender's
    stream (a sequence skipped, or a new incarnation) means reports were missed for good,
    as across a partition longer than a connection survives, and a subscriber keeps no
    replay of them; judged against that stale view every later report of the slot would be
    refused. So at a hole the guard forgets the sender's stages (counted in `resyncs`) and
    takes them afresh from its reports, which the worker's own guard already judged.
    """

    def __init__(self, lifecycle: LifecycleGuard | None = None) -> None:
        self.lifecycle = lifecycle or LifecycleGuard()
        #: (sender, topic) -> the (incarnation, sequence) last judged.
        self._streams: dict[tuple[str, bytes], tuple[int, int]] = {}
        #: Times a hole in a sender's stream made the guard forget its stages.
        self.resyncs = 0

    def __call__(self, envelope: Envelope[Any]) -> ContractError | None:
        self._follow(envelope)
        message = envelope.message
        worker = envelope.header.sender
        if isinstance(message, TelemetryEvent) and isinstance(message.payload, SeedStageChanged):
            slot = message.slot_id or message.payload.seed_id
            change = message.payload
            return self._judge(worker, slot, change.from_stage, change.to_stage)
        if isinstance(message, SeedStateReport) and message.previous_stage != message.stage:
            return self._judge(worker, message.slot_id, message.previous_stage, message.stage)
        return None

    def _follow(self, envelope: Envelope[Any]) -> None:
        """Forget the sender's stages when this message comes after a hole in its stream."""
        header = envelope.header
        key = (header.sender, envelope.topic)
        last = self._streams.get(key)
        if last is None and len(self._streams) >= MAX_STREAMS:
            del self._streams[next(iter(self._streams))]  # bounded under many senders
        self._streams[key] = (header.incarnation, header.sequence)
        if last is None:
            return
        incarnation, sequence = last
        if header.incarnation != incarnation or header.sequence > sequence + 1:
            self.lifecycle.forget(header.sender)
            self.resyncs += 1
            _log.info("stage view resynced", sender=header.sender, after=sequence)

    def _judge(
        self, worker: str, slot: str, from_stage: SeedStage, to_stage: SeedStage
    ) -> ContractError | None:
        if to_stage is not SeedStage.UNKNOWN and self.lifecycle.stage(worker, slot) is to_stage:
            # A repeat of the move already recorded (a state report answering REQUEST_STATE,
            # an event sent again): the slot stays where it is, no transition to judge.
            return None
        verdict = self.lifecycle.check_reported(worker, slot, from_stage, to_stage)
        if verdict.allowed:
            self.lifecycle.record(worker, slot, to_stage)
        return _refusal(verdict)
