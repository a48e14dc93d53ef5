"""The seed slots of one module: the guard over them, the commands that move them, and the
optimiser's parameter groups kept in step with the seeds they grow.

`Seeds` finds every `SeedSlot` in a module (a user's own network or the built-in host), binds
each to one worker and one `LifecycleGuard`, and carries out commands: `apply_command` checks
each with the `CommandGuard`, carries out the legal ones and returns a `CommandOutcome`
either way; it never raises, whatever the command. A germinated seed's parameters join the
optimiser as their own group (tagged with the `slot_id`, with the seed learning rate), and
leave it, with their optimiser state, when the slot is reset; listeners hear every change of
the trainable parameter set, so a wrapper such as DistributedDataParallel can be rebuilt.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
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
from leyline.actions import SLOT_IDS
from services.guards import CommandGuard
from services.worker import events
from services.worker.blueprints import TOPOLOGY, UnknownBlueprintError, build_seed, probe_shape
from services.worker.config import LifecycleConfig
from services.worker.outcome import CommandOutcome
from services.worker.records import state_report
from services.worker.slot import SeedSlot, SlotChange

Handler = Callable[[AdaptationCommand, SeedSlot, Verdict], CommandOutcome]
#: The optimiser the seeds' parameter groups go to, or how to find the current one.
OptimizerSource = torch.optim.Optimizer | Callable[[], torch.optim.Optimizer | None] | None


class Seeds:
    """Every seed slot of `module`, driven through the lifecycle by commands.

    `optimizer` is the user's optimiser (or a function returning the current one, for
    frameworks that build it themselves); `seed_learning_rate` is a new seed's rate (default:
    the optimiser's first group's). `seed` fixes each seed's initial weights by germination
    number alone, so a resumed run grows exactly the seed an uninterrupted one would have.
    """

    def __init__(
        self,
        worker_id: str,
        module: nn.Module,
        *,
        topology: str = TOPOLOGY,
        optimizer: OptimizerSource = None,
        seed_learning_rate: float | None = None,
        lifecycle: LifecycleConfig | None = None,
        guard: LifecycleGuard | None = None,
        seed: int = 0,
    ) -> None:
        self.worker_id = worker_id
        self.module = module
        self.topology = topology
        self.lifecycle = lifecycle or LifecycleConfig()
        self.guard = guard or LifecycleGuard()
        self.seed = seed
        self.seed_learning_rate_default = seed_learning_rate
        self._optimizer = optimizer
        self.commands = CommandGuard(self.guard, worker_id, self._slot_of)
        found = [m for m in module.modules() if isinstance(m, SeedSlot)]
        if not found:
            raise ValueError(f"{type(module).__name__} holds no SeedSlot")
        host_ids = frozenset(id(p) for p in module.parameters())
        self.slots: dict[str, SeedSlot] = {}
        for slot in found:
            if slot.slot_id in self.slots:
                raise ValueError(f"two slots named {slot.slot_id!r} in {type(module).__name__}")
            slot.bind(worker_id, self.guard, self.lifecycle, host_ids, topology)
            self.slots[slot.slot_id] = slot
        self._host_ids = host_ids
        #: The controller names a slot by its topology's id for the slot's position (spec 7:
        #: `SLOT_IDS[topology][i]` is the i-th slot), so the i-th slot answers to it as well.
        self._positional = {
            known: own
            for known, own in zip(SLOT_IDS.get(topology, ()), self.slots, strict=False)
            if known not in self.slots
        }
        #: Called after every change of the trainable parameter set (a seed in or out, paused
        #: or resumed), e.g. to rebuild a DistributedDataParallel wrapper.
        self.listeners: list[Callable[[], None]] = []
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

    # -- parameters and the optimiser ------------------------------------------------------

    def host_parameters(self) -> Iterator[nn.Parameter]:
        """The module's own parameters, never a seed's."""
        return (p for p in self.module.parameters() if id(p) in self._host_ids)

    def seed_parameters(self) -> list[nn.Parameter]:
        return [p for slot in self.slots.values() for p in slot.seed_parameters()]

    @property
    def optimizer(self) -> torch.optim.Optimizer | None:
        source = self._optimizer
        if source is None or isinstance(source, torch.optim.Optimizer):
            return source
        return source()

    @optimizer.setter
    def optimizer(self, optimizer: OptimizerSource) -> None:
        self._optimizer = optimizer

    def seed_param_groups(self) -> list[dict[str, Any]]:
        """A parameter group per live seed, for an optimiser built after seeds exist."""
        return [self._group(slot) for slot in self.slots.values() if slot.seed is not None]

    def _group(self, slot: SeedSlot) -> dict[str, Any]:
        lr = self.seed_learning_rate_default
        optimizer = self.optimizer
        if lr is None:
            lr = float(optimizer.param_groups[0]["lr"]) if optimizer is not None else 1e-3
        return {"params": slot.seed_parameters(), "lr": lr, "slot_id": slot.slot_id}

    def _seed_group(self, slot_id: str) -> dict[str, Any] | None:
        optimizer = self.optimizer
        if optimizer is None:
            return None
        return next((g for g in optimizer.param_groups if g.get("slot_id") == slot_id), None)

    def _add_seed_group(self, slot: SeedSlot) -> None:
        optimizer = self.optimizer
        if optimizer is not None:
            optimizer.add_param_group(self._group(slot))

    def _drop_seed_group(self, slot_id: str) -> None:
        """Forget a reset slot's parameter group and the optimiser state of its parameters."""
        optimizer = self.optimizer
        if optimizer is None:
            return
        groups = optimizer.param_groups
        for index, group in enumerate(groups):
            if group.get("slot_id") == slot_id:
                for param in group["params"]:
                    optimizer.state.pop(param, None)
                del groups[index]
                return

    def seed_learning_rate(self, slot_id: str) -> float | None:
        group = self._seed_group(slot_id)
        return None if group is None else float(group["lr"])

    def _changed(self) -> None:
        for listener in self.listeners:
            listener()

    # -- the epoch clock -------------------------------------------------------------------

    def _settle(self, slot: SeedSlot, change: SlotChange) -> SlotChange:
        if change.released:
            self._drop_seed_group(slot.slot_id)
            self._changed()
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

    def record_gradients(self) -> None:
        """Fold this step's seed gradients into each slot's health (after backward)."""
        for slot in self.slots.values():
            slot.record_gradients()

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
            slot = self.slots.get(self._positional.get(slot_id, slot_id))
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
        probe = torch.zeros(probe_shape(self.topology, slot.channels))
        with torch.no_grad():
            shape = tuple(module(probe).shape)
        if shape != tuple(probe.shape):
            detail = f"{blueprint} maps {tuple(probe.shape)} to {shape}; a seed must keep shape"
            return self._rejected(command, slot, AckReason.SHAPE_MISMATCH, detail)
        module.to(_device_of(self.module))
        module.train(self.module.training)
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
        self._changed()
        return self._outcome(command, slot, change)

    def _build_seed(self, blueprint: str, channels: int, number: int) -> nn.Module:
        """A seed initialised from (seed, germination number) alone."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed * 1_000_003 + number)
            return build_seed(blueprint, channels, self.topology)

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
        assert command.learning_rate is not None  # the contract requires it
        if group is None:
            detail = f"{self.worker_id} trains its seeds with no optimiser Leyline can reach"
            return self._rejected(command, slot, AckReason.APPLY_FAILED, detail)
        group["lr"] = command.learning_rate
        return self._outcome(command, slot, SlotChange())

    def _pause(self, command: AdaptationCommand, slot: SeedSlot, _: Verdict) -> CommandOutcome:
        slot.pause()
        self._changed()
        return self._outcome(command, slot, SlotChange())

    def _resume(self, command: AdaptationCommand, slot: SeedSlot, _: Verdict) -> CommandOutcome:
        slot.resume()
        self._changed()
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
        """Every slot's lifecycle, the guard, the counters and which slots have an optimiser
        group, in order. Weights are the module's (`module.state_dict()`, seeds included)."""
        optimizer = self.optimizer
        groups = [] if optimizer is None else [g.get("slot_id") for g in optimizer.param_groups]
        return {
            "worker_id": self.worker_id,
            "germinations": self.germinations,
            "epoch": self.epoch,
            "val_accuracy": self.val_accuracy,
            "signals": msgspec.to_builtins(self.signals),
            "guard": self.guard.snapshot().get(self.worker_id, {}),
            "slots": {sid: slot.lifecycle_state() for sid, slot in self.slots.items()},
            "seed_groups": [sid for sid in groups if sid in self.slots],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a `state_dict`: each saved seed is rebuilt empty (load the module's weights
        next) and gets its optimiser group back in the saved order (load the optimiser last)."""
        if state["worker_id"] != self.worker_id:
            raise ValueError(f"checkpoint of worker {state['worker_id']}, not {self.worker_id}")
        for slot_id in self.slots:
            self._drop_seed_group(slot_id)
        for sid, slot in self.slots.items():
            slot.restore_lifecycle(state["slots"][sid])
            if slot.seed is not None:
                slot.seed.to(_device_of(self.module))
        self.guard.forget(self.worker_id)
        for sid, stage in state["guard"].items():
            self.guard.record(self.worker_id, sid, SeedStage(stage))
        for slot_id in state["seed_groups"]:
            self._add_seed_group(self.slots[slot_id])
        self.germinations = state["germinations"]
        self.epoch = state["epoch"]
        self.val_accuracy = state["val_accuracy"]
        signals = state["signals"]
        self.signals = None if signals is None else msgspec.convert(signals, TrainingSignals)
        self._changed()


def _device_of(module: nn.Module) -> torch.device:
    """Where the host's parameters live, so a new seed trains beside them."""
    first = next(module.parameters(), None)
    return torch.device("cpu") if first is None else first.device
