"""A bus history builder: StoredMessages numbered and timed the way the bus delivers them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from leyline import (
    AckOutcome,
    AckReason,
    AdaptationCommand,
    CommandAck,
    CommandType,
    SeedStage,
    TelemetryEvent,
    TelemetryEventType,
    new_id,
)
from leyline.telemetry import (
    ContractViolation,
    EpochCompleted,
    SeedCulled,
    SeedFossilized,
    SeedGerminated,
    SeedStageChanged,
)
from services.sink import StorableMessage, StoredMessage

#: The time of the first message of every history; each later message is one second on.
START = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


class History:
    """Builds StoredMessages as the bus would deliver them: per-sender-per-channel sequences."""

    def __init__(self) -> None:
        self._sequences: dict[tuple[str, str], int] = {}
        self._clock = 0

    def stored(
        self, channel: str, sender: str, scope: str, message: StorableMessage
    ) -> StoredMessage:
        key = (sender, channel)
        self._sequences[key] = self._sequences.get(key, 0) + 1
        self._clock += 1
        sent = START + timedelta(seconds=self._clock)
        sent_ns = int(sent.timestamp()) * 1_000_000_000
        return StoredMessage(
            channel, sender, self._sequences[key], sent_ns, f"{channel}.{scope}.", message
        )

    def event(self, worker: str, event: TelemetryEvent) -> StoredMessage:
        return self.stored("tel", worker, worker, event)

    def epoch(self, worker: str, epoch: int, val_accuracy: float) -> StoredMessage:
        payload = EpochCompleted(
            train_loss=1.0,
            val_loss=1.1,
            train_accuracy=val_accuracy,
            val_accuracy=val_accuracy,
            duration_ms=12.0,
        )
        return self.event(
            worker,
            TelemetryEvent(
                event_type=TelemetryEventType.EPOCH_COMPLETED, payload=payload, epoch=epoch
            ),
        )

    def germinated(self, worker: str, seed: str, slot: str = "block2_post") -> StoredMessage:
        payload = SeedGerminated(seed_id=seed, blueprint_id="norm", params=100)
        return self.event(
            worker,
            TelemetryEvent(
                event_type=TelemetryEventType.SEED_GERMINATED, payload=payload, slot_id=slot
            ),
        )

    def stage(
        self,
        worker: str,
        seed: str,
        from_stage: SeedStage,
        to_stage: SeedStage,
        slot: str = "block2_post",
    ) -> StoredMessage:
        payload = SeedStageChanged(seed_id=seed, from_stage=from_stage, to_stage=to_stage)
        return self.event(
            worker,
            TelemetryEvent(
                event_type=TelemetryEventType.SEED_STAGE_CHANGED,
                payload=payload,
                seed_id=seed,
                slot_id=slot,
            ),
        )

    def fossilized(self, worker: str, seed: str) -> StoredMessage:
        payload = SeedFossilized(
            seed_id=seed,
            blueprint_id="norm",
            improvement=2.5,
            params_added=100,
            epochs_total=9,
            epochs_in_stage=1,
        )
        return self.event(
            worker, TelemetryEvent(event_type=TelemetryEventType.SEED_FOSSILIZED, payload=payload)
        )

    def culled(self, worker: str, seed: str) -> StoredMessage:
        payload = SeedCulled(
            seed_id=seed,
            blueprint_id="norm",
            reason="no improvement",
            improvement=-3.0,
            epochs_total=6,
            epochs_in_stage=5,
        )
        return self.event(
            worker, TelemetryEvent(event_type=TelemetryEventType.SEED_CULLED, payload=payload)
        )

    def violation(self, worker: str, reason: AckReason) -> StoredMessage:
        payload = ContractViolation(reason=reason, sender="controller", topic=f"cmd.{worker}.")
        return self.event(
            worker,
            TelemetryEvent(event_type=TelemetryEventType.CONTRACT_VIOLATION, payload=payload),
        )

    def command(self, worker: str, command: AdaptationCommand) -> StoredMessage:
        return self.stored("cmd", "controller", worker, command)

    def ack(
        self,
        worker: str,
        command: AdaptationCommand,
        outcome: AckOutcome,
        reason: AckReason = AckReason.NONE,
    ) -> StoredMessage:
        ack = CommandAck(
            command_id=command.command_id,
            worker_id=worker,
            outcome=outcome,
            command_type=command.command_type,
            reason=reason,
        )
        return self.stored("ack", worker, worker, ack)

    @staticmethod
    def germinate_command(seed: str = "s1") -> AdaptationCommand:
        return AdaptationCommand(
            command_id=new_id(),
            command_type=CommandType.GERMINATE,
            target_seed_id=seed,
            blueprint_id="norm",
        )

    @staticmethod
    def cull_command(seed: str = "s1") -> AdaptationCommand:
        return AdaptationCommand(
            command_id=new_id(), command_type=CommandType.CULL, target_seed_id=seed
        )
