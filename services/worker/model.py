"""The worker's model: host CNN, seed slots, one lifecycle guard, the optimiser, and commands."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec
import torch
from torch import nn

from leyline import (
    AckOutcome,
    AckReason,
    AdaptationCommand,
    CommandType,
    LifecycleGuard,
    SeedStage,
    SeedStateReport,
    TelemetryEvent,
    TrainingSignals,
    Verdict,
)
from services.guards import CommandGuard
from services.worker import events
from services.worker.blueprints import UnknownBlueprintError, build_seed
from services.worker.config import LifecycleConfig, TrainingConfig
from services.worker.host import HostCNN
from services.worker.outcome import CommandOutcome
from services.worker.records import state_report
from services.worker.slot import SeedSlot, SlotChange

#: The spatial size of the shape probe every new seed must preserve (spec 8: 1 x C x 8 x 8).
PROBE_SIZE = 8
_HOST_GROUP = ""

Handler = Callable[[AdaptationCommand, SeedSlot, Verdict], CommandOutcome]


class WorkerModel:
    """Everything one worker trains and commands: the host, its slots and their seeds.

    `apply_command` checks each command with the command guard, carries out the legal ones and
    returns a `CommandOutcome` either way; it never raises, whatever the command. The
    optimiser has one parameter group for the host and one per seed (tagged with its
    `slot_id`), so a seed's learning rate is its own and its state is dropped when the slot
    is reset.
    """

    def __init__(
        self,
        worker_id: str,
        training: TrainingConfig | None = None,
        lifecycle: LifecycleConfig | None = None,
        guard: LifecycleGuard | None = None,
    ) -> None:
        self.worker_id = worker_id
        self.training = training or TrainingConfig()
        self.lifecycle = lifecycle or LifecycleConfig()
        self.guard = guard or LifecycleGuard()
        self.commands = CommandGuard(self.guard, worker_id, self._slot_of)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.training.seed)
            self.host = HostCNN(self.training.channels)
        host_ids = frozenset(id(p) for p in self.host.host_parameters())
        widths = HostCNN.slot_channels(self.training.channels)
        self.slots: dict[str, SeedSlot] = {
            sid: SeedSlot(worker_id, sid, widths[sid], self.guard, self.lifecycle, host_ids)
            for sid in HostCNN.slot_ids
        }
        self.host.slots.update(self.slots)
        self.optimizer = self._new_optimizer()
        self.germinations = 0
        self.epoch = 0
        self.val_accuracy = 0.0
        self.signals: TrainingSignals | None = None
        self._handlers: dict[CommandType, Handler] = {
            CommandType.GERMINATE: self._germinate,
            CommandType.ADVANCE_STAGE: self._advance,
            CommandType.CULL: self._cull,
            CommandType.SET_ALPHA: self._set_alpha,
            CommandType.SET_LEARNING_RATE: self._set_learning_rate,
            CommandType.PAUSE_SEED: self._pause,
            CommandType.RESUME_SEED: self._resume,
        }

    # -- optimiser -------------------------------------------------------------------------

    def _new_optimizer(self) -> torch.optim.Optimizer:
        t = self.training
        group: dict[str, Any] = {
            "params": list(self.host.host_parameters()),
            "lr": t.learning_rate,
            "slot_id": _HOST_GROUP,
        }
        if t.optimizer == "sgd":
            return torch.optim.SGD([group], lr=t.learning_rate, momentum=t.momentum)
        return torch.optim.Adam([group], lr=t.learning_rate)

    def _seed_group(self, slot_id: str) -> dict[str, Any] | None:
        return next((g for g in self.optimizer.param_groups if g["slot_id"] == slot_id), None)

    def _add_seed_group(self, slot: SeedSlot) -> None:
        params = slot.seed_parameters()
        lr = self.training.seed_learning_rate
        self.optimizer.add_param_group({"params": params, "lr": lr, "slot_id": slot.slot_id})

    def _drop_seed_group(self, slot_id: str) -> None:
        """Forget a reset slot's parameter group and the optimiser state of its parameters."""
        groups = self.optimizer.param_groups
        for index, group in enumerate(groups):
            if group["slot_id"] == slot_id:
                for param in group["params"]:
                    self.optimizer.state.pop(param, None)
                del groups[index]
                return

    def seed_learning_rate(self, slot_id: str) -> float | None:
        group = self._seed_group(slot_id)
        return None if group is None else float(group["lr"])

    # -- the epoch clock -------------------------------------------------------------------

    def _settle(self, slot: SeedSlot, change: SlotChange) -> SlotChange:
        if change.released:
            self._drop_seed_group(slot.slot_id)
        return change

    def _tick(
        self, step: Callable[[SeedSlot], SlotChange]
    ) -> tuple[list[TelemetryEvent], list[SeedStateReport]]:
        out: list[TelemetryEvent] = []
        reports: list[SeedStateReport] = []
        for slot in self.slots.values():
            change = self._settle(slot, step(slot))
            out.extend(change.events)
            if change.moved:
                reports.append(state_report(slot))
        return out, reports

    def begin_epoch(self, epoch: int) -> tuple[list[TelemetryEvent], list[SeedStateReport]]:
        """Before an epoch's training: germinated seeds start TRAINING, blending steps on.
        Returns the events and the reports of slots whose stage changed."""
        return self._tick(lambda slot: slot.begin_epoch(epoch))

    def end_epoch(
        self, epoch: int, val_accuracy: float
    ) -> tuple[list[TelemetryEvent], list[SeedStateReport]]:
        """After validation: metrics and auto-advance for every slot, as `begin_epoch`."""
        self.epoch, self.val_accuracy = epoch, val_accuracy
        return self._tick(lambda slot: slot.end_epoch(epoch, val_accuracy))

    def reports(self) -> list[SeedStateReport]:
        return [state_report(slot) for slot in self.slots.values()]

    # -- commands --------------------------------------------------------------------------

    def apply_command(self, command: AdaptationCommand) -> CommandOutcome:
        """Check `command` with the guard and carry it out if legal; the outcome says which.

        Anything that goes wrong while carrying it out is a rejection (`apply_failed`) with
        the error as its detail: no command can stop the worker.
        """
        try:
            return self._carry_out(command)
        except Exception as exc:
            detail = f"{type(exc).__name__}: {exc}"
            return self._rejected(command, None, AckReason.APPLY_FAILED, detail)

    def _carry_out(self, command: AdaptationCommand) -> CommandOutcome:
        if command.command_type is CommandType.REQUEST_STATE:
            return self._outcome(command, None, SlotChange(), reports=self.reports())
        slot_id, verdict = self.commands.check(command)
        slot = None if slot_id is None else self.slots[slot_id]
        if not verdict.allowed:
            assert verdict.reason is not None  # a refusal always names its reason
            return self._rejected(command, slot, AckReason[verdict.reason.name], verdict.detail)
        assert slot is not None  # an allowed slot command names its slot
        if command.command_type is not CommandType.GERMINATE:
            slot.commands_received.append(command.command_id)
        return self._handlers[command.command_type](command, slot, verdict)

    def _slot_of(self, command: AdaptationCommand) -> str | None:
        slot = self.resolve(command)
        return None if isinstance(slot, str) else slot.slot_id

    def resolve(self, command: AdaptationCommand) -> SeedSlot | str:
        """The slot a command names (slot id first, else seed id), or why there is none."""
        slot_id, seed_id = command.target_slot_id, command.target_seed_id
        germinate = command.command_type is CommandType.GERMINATE
        if slot_id is not None:
            slot = self.slots.get(slot_id)
            if slot is None:
                return f"{self.worker_id} has no slot {slot_id!r} (slots: {', '.join(self.slots)})"
            if seed_id and not germinate and slot.seed_id != seed_id:
                held = slot.seed_id or "no seed"
                return f"{self.worker_id}/{slot_id} holds {held}, not {seed_id}"
            return slot
        if germinate:
            free = [s for s in self.slots.values() if s.stage is SeedStage.DORMANT]
            return free[0] if free else next(iter(self.slots.values()))
        for slot in self.slots.values():
            if slot.seed_id == seed_id:
                return slot
        return f"{self.worker_id} has no seed {seed_id!r}"

    def _germinate(self, command: AdaptationCommand, slot: SeedSlot, _: Verdict) -> CommandOutcome:
        blueprint = command.blueprint_id or ""
        number = self.germinations + 1
        try:
            module = self._build_seed(blueprint, slot.channels, number)
        except UnknownBlueprintError as exc:
            return self._rejected(command, slot, AckReason.UNKNOWN_BLUEPRINT, str(exc.args[0]))
        probe = torch.zeros(1, slot.channels, PROBE_SIZE, PROBE_SIZE)
        with torch.no_grad():
            shape = tuple(module(probe).shape)
        if shape != tuple(probe.shape):
            detail = f"{blueprint} maps {tuple(probe.shape)} to {shape}; a seed must keep shape"
            return self._rejected(command, slot, AckReason.SHAPE_MISMATCH, detail)
        module.train(self.host.training)
        seed_id = f"{self.worker_id}-{slot.slot_id}-{number}"
        change = slot.germinate(
            seed_id,
            blueprint,
            module,
            epoch=self.epoch,
            baseline_accuracy=self.val_accuracy,
            signals=self.signals,
        )
        if not change.moved:
            return self._gate_failed(command, slot, change)
        self.germinations = number
        slot.commands_received.append(command.command_id)
        self._add_seed_group(slot)
        return self._outcome(command, slot, change)

    def _build_seed(self, blueprint: str, channels: int, number: int) -> nn.Module:
        """A seed initialised from (training seed, germination number) alone, so a resumed
        worker grows exactly the seed an uninterrupted one would have."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.training.seed * 1_000_003 + number)
            return build_seed(blueprint, channels)

    def _advance(
        self, command: AdaptationCommand, slot: SeedSlot, verdict: Verdict
    ) -> CommandOutcome:
        assert verdict.to_stage is not None  # an allowed advance always has a target
        seed_id = slot.seed_id
        change = self._settle(
            slot, slot.advance(verdict.to_stage, epoch=self.epoch, reason=command.reason)
        )
        if not change.moved:
            return self._gate_failed(command, slot, change)
        return self._outcome(command, slot, change, seed_id=seed_id)

    def _cull(self, command: AdaptationCommand, slot: SeedSlot, _: Verdict) -> CommandOutcome:
        change = slot.cull(command.reason or "culled by command", epoch=self.epoch)
        return self._outcome(command, slot, change)

    def _set_alpha(self, command: AdaptationCommand, slot: SeedSlot, _: Verdict) -> CommandOutcome:
        assert command.alpha_value is not None  # the contract requires it for SET_ALPHA
        slot.set_alpha(command.alpha_value)
        return self._outcome(command, slot, SlotChange())

    def _set_learning_rate(
        self, command: AdaptationCommand, slot: SeedSlot, _: Verdict
    ) -> CommandOutcome:
        group = self._seed_group(slot.slot_id)
        assert group is not None and command.learning_rate is not None  # a live seed has one
        group["lr"] = command.learning_rate
        return self._outcome(command, slot, SlotChange())

    def _pause(self, command: AdaptationCommand, slot: SeedSlot, _: Verdict) -> CommandOutcome:
        slot.pause()
        return self._outcome(command, slot, SlotChange())

    def _resume(self, command: AdaptationCommand, slot: SeedSlot, _: Verdict) -> CommandOutcome:
        slot.resume()
        return self._outcome(command, slot, SlotChange())

    # -- outcomes --------------------------------------------------------------------------

    def _outcome(
        self,
        command: AdaptationCommand,
        slot: SeedSlot | None,
        change: SlotChange,
        *,
        seed_id: str | None = None,
        reports: list[SeedStateReport] | None = None,
    ) -> CommandOutcome:
        slot_id = None if slot is None else slot.slot_id
        seed_id = seed_id or (None if slot is None else slot.seed_id or None)
        stage_after = None if slot is None else slot.stage
        executed = events.command_executed(command, slot_id, seed_id, stage_after, self.epoch)
        if reports is None:
            reports = [state_report(slot)] if change.moved and slot is not None else []
        return CommandOutcome(
            command_id=command.command_id,
            command_type=command.command_type,
            worker_id=self.worker_id,
            outcome=AckOutcome.APPLIED,
            epoch=self.epoch,
            slot_id=slot_id,
            seed_id=seed_id,
            stage_after=stage_after,
            events=[*change.events, executed],
            field_report=change.field_report,
            reports=reports,
        )

    def _rejected(
        self,
        command: AdaptationCommand,
        slot: SeedSlot | None,
        reason: AckReason,
        detail: str,
    ) -> CommandOutcome:
        slot_id = None if slot is None else slot.slot_id
        seed_id = None if slot is None else slot.seed_id or None
        failed = events.command_failed(command, slot_id, seed_id, reason, detail, self.epoch)
        return CommandOutcome(
            command_id=command.command_id,
            command_type=command.command_type,
            worker_id=self.worker_id,
            outcome=AckOutcome.REJECTED,
            epoch=self.epoch,
            reason=reason,
            detail=detail,
            slot_id=slot_id,
            seed_id=seed_id,
            stage_after=None if slot is None else slot.stage,
            events=[failed],
        )

    def _gate_failed(
        self, command: AdaptationCommand, slot: SeedSlot, change: SlotChange
    ) -> CommandOutcome:
        gate = change.gate
        assert gate is not None  # only a gate stops an allowed move
        m = slot.metrics
        detail = (
            f"G{int(gate.gate)} {gate.message} ({slot.stage.name}: "
            f"{m.epochs_in_current_stage} epochs in stage, "
            f"{m.improvement_since_stage_start:+.2f} pp in stage, "
            f"{m.total_improvement:+.2f} pp total, alpha {m.current_alpha:.2f})"
        )
        return self._rejected(command, slot, AckReason.GATE_FAILED, detail)

    # -- checkpoint ------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Model, optimiser, every slot's lifecycle, the guard and the counters: all a resumed
        worker needs to continue exactly where this one stands."""
        return {
            "worker_id": self.worker_id,
            "germinations": self.germinations,
            "epoch": self.epoch,
            "val_accuracy": self.val_accuracy,
            "signals": msgspec.to_builtins(self.signals),
            "guard": self.guard.snapshot().get(self.worker_id, {}),
            "slots": {sid: slot.lifecycle_state() for sid, slot in self.slots.items()},
            "module": self.host.state_dict(),
            "optimizer": self.optimizer.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a `state_dict`: seeds are rebuilt first so their weights have somewhere to go."""
        if state["worker_id"] != self.worker_id:
            raise ValueError(f"checkpoint of worker {state['worker_id']}, not {self.worker_id}")
        for sid, slot in self.slots.items():
            slot.restore_lifecycle(state["slots"][sid])
        self.guard.forget(self.worker_id)
        for sid, stage in state["guard"].items():
            self.guard.record(self.worker_id, sid, SeedStage(stage))
        self.host.load_state_dict(state["module"])
        self.optimizer = self._new_optimizer()
        for group in state["optimizer"]["param_groups"][1:]:
            self._add_seed_group(self.slots[group["slot_id"]])
        self.optimizer.load_state_dict(state["optimizer"])
        self.germinations = state["germinations"]
        self.epoch = state["epoch"]
        self.val_accuracy = state["val_accuracy"]
        signals = state["signals"]
        self.signals = None if signals is None else msgspec.convert(signals, TrainingSignals)
