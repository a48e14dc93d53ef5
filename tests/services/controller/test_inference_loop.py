"""The inference loop end to end: submit, micro-batch, decide, and the commands it makes."""

from __future__ import annotations

import math
import struct

import pytest
import torch
from controller_signals import SignalFactory
from reference_heuristic import reference_legal_actions

from leyline import (
    CommandType,
    ContractError,
    FastTrainingSignals,
    RejectReason,
    RiskLevel,
    SeedStage,
)
from leyline.features import FeatureBounds
from leyline.signals import TensorSchema
from leyline.tensors import BatchConverter
from services.controller import (
    ActionLayout,
    ActionMasker,
    ColumnBuffer,
    ControlPolicy,
    DecisionReason,
    HeuristicPolicy,
    InferenceLoop,
    MlpPolicy,
    ObservationBatch,
    PolicyOutput,
)


class AlwaysCull(ControlPolicy):
    """A policy that ignores its masks: the loop must still never emit an illegal action."""

    def forward(self, batch: ObservationBatch, masks: torch.Tensor) -> PolicyOutput:
        rows = batch.columns.shape[0]
        actions = torch.full((rows,), self.layout.cull, device=masks.device)
        confidence = torch.ones(rows, device=masks.device)
        return PolicyOutput(actions, confidence, torch.full_like(actions, DecisionReason.LEARNED))


class Unruly(ControlPolicy):
    """Row by row: an action past the layout, a negative one, an unknown reason, a masked
    action, and a legal WAIT with a confidence out of range and a NaN one."""

    def forward(self, batch: ObservationBatch, masks: torch.Tensor) -> PolicyOutput:
        wait, cull = self.layout.wait, self.layout.cull
        actions = torch.tensor([len(self.layout), -1, wait, cull, wait, wait])
        reasons = torch.full_like(actions, DecisionReason.LEARNED)
        reasons[2] = 99
        confidence = torch.tensor([0.5, 0.5, 0.5, 0.5, 7.0, math.nan])
        return PolicyOutput(actions, confidence, reasons)


def _loop(layout: ActionLayout, **options: object) -> InferenceLoop:
    return InferenceLoop(HeuristicPolicy(layout), **options)  # type: ignore[arg-type]


def test_runs_on_cuda_when_present_else_on_the_cpu(layout: ActionLayout) -> None:
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert _loop(layout).device.type == expected


def test_device_can_be_chosen(layout: ActionLayout) -> None:
    loop = _loop(layout, device="cpu")
    assert loop.device == torch.device("cpu")
    assert loop.policy.position.device == torch.device("cpu")


def test_wait_sends_no_command(layout: ActionLayout, signal: SignalFactory) -> None:
    loop = _loop(layout, device="cpu")
    loop.submit("w1", "block2_post", signal(epoch=2), now=0.0)
    [decision] = loop.flush()
    assert decision.action.name == "WAIT"
    assert decision.reason is DecisionReason.WARMING_UP
    assert decision.command is None


def test_a_germination_becomes_a_germinate_command(
    layout: ActionLayout, signal: SignalFactory
) -> None:
    loop = _loop(layout, device="cpu")
    loop.submit("w1", "block2_post", signal(epoch=8, plateau_epochs=4), now=0.0)
    [decision] = loop.flush()
    command = decision.command
    assert command is not None
    assert (decision.worker_id, decision.slot_id, decision.epoch) == ("w1", "block2_post", 8)
    assert command.command_type is CommandType.GERMINATE
    assert command.blueprint_id == "conv_enhance"
    assert command.target_slot_id == "block2_post"
    assert command.target_stage is SeedStage.GERMINATED
    assert command.risk_level is RiskLevel.YELLOW
    assert command.reason == "plateau"
    assert command.confidence == decision.confidence == 0.8


def test_fossilize_and_cull_become_their_commands(
    layout: ActionLayout, signal: SignalFactory
) -> None:
    loop = _loop(layout, device="cpu")
    probation = {"epoch": 12, "seed_stage": SeedStage.PROBATIONARY}
    loop.submit("w1", "s", signal(**probation, seed_improvement=1.0), now=0.0)
    loop.submit("w2", "s", signal(**probation, seed_improvement=0.0), now=0.0)
    fossilize, cull = loop.flush()
    assert fossilize.command is not None and cull.command is not None
    assert fossilize.command.command_type is CommandType.ADVANCE_STAGE
    assert fossilize.command.target_stage is SeedStage.FOSSILIZED
    assert cull.command.command_type is CommandType.CULL
    assert cull.command.target_stage is SeedStage.CULLED
    assert cull.command.risk_level is RiskLevel.ORANGE


def test_the_freshest_signal_of_a_slot_is_decided_once(
    layout: ActionLayout, signal: SignalFactory
) -> None:
    loop = _loop(layout, device="cpu")
    loop.submit("w1", "s", signal(epoch=6, plateau_epochs=0), now=0.0)
    loop.submit("w1", "s", signal(epoch=7, plateau_epochs=3), now=0.001)
    loop.submit("w1", "s", signal(epoch=5, plateau_epochs=0), now=0.002)
    [decision] = loop.flush()
    assert decision.epoch == 7
    assert decision.action.name == "GERMINATE_CONV_ENHANCE"


def test_a_partial_batch_is_decided_when_the_wait_runs_out(
    layout: ActionLayout, signal: SignalFactory
) -> None:
    loop = _loop(layout, device="cpu", max_batch=8, max_wait_s=0.010)
    loop.submit("w1", "s", signal(epoch=1), now=5.000)
    loop.submit("w2", "s", signal(epoch=1), now=5.008)
    assert loop.step(now=5.009) == []
    assert loop.deadline() == 5.010
    assert [d.worker_id for d in loop.step(now=5.010)] == ["w1", "w2"]
    assert loop.deadline() is None


def test_full_batches_are_decided_at_once_and_the_rest_waits(
    layout: ActionLayout, signal: SignalFactory
) -> None:
    loop = _loop(layout, device="cpu", max_batch=4, max_wait_s=1.0)
    for worker in range(10):
        loop.submit(f"w{worker}", "s", signal(epoch=1), now=0.0)
    assert len(loop.step(now=0.0)) == 8
    assert loop.step(now=0.5) == []
    assert [d.worker_id for d in loop.step(now=1.0)] == ["w8", "w9"]


def test_memory_is_kept_per_worker_and_slot(layout: ActionLayout, signal: SignalFactory) -> None:
    loop = _loop(layout, device="cpu")
    plateau = {"epoch": 8, "plateau_epochs": 5}
    for worker, slot in (("w1", "a"), ("w1", "b"), ("w2", "a")):
        loop.submit(worker, slot, signal(**plateau), now=0.0)
    assert {d.action.name for d in loop.flush()} == {"GERMINATE_CONV_ENHANCE"}
    loop.submit("w1", "a", signal(**{**plateau, "epoch": 9}), now=1.0)
    loop.submit("w2", "b", signal(**{**plateau, "epoch": 9}), now=1.0)
    assert [d.action.name for d in loop.flush()] == [
        "GERMINATE_ATTENTION",
        "GERMINATE_CONV_ENHANCE",
    ]


class Reserving(AlwaysCull):
    """Records each `reserve` the loop asks for."""

    def __init__(self, layout: ActionLayout) -> None:
        super().__init__(layout)
        self.reserved: list[int] = []

    def reserve(self, rows: int) -> None:
        self.reserved.append(rows)


def test_the_policy_reserves_every_new_row_and_a_new_policy_again(
    layout: ActionLayout, signal: SignalFactory
) -> None:
    first = Reserving(layout)
    loop = InferenceLoop(first, device="cpu")
    for epoch, worker in ((8, "w1"), (9, "w1"), (10, "w2")):
        loop.submit(worker, "a", signal(epoch=epoch), now=0.0)
        loop.flush()
    assert first.reserved == [1, 2]  # the second batch needed no new row
    second = Reserving(layout)
    loop.policy = second
    loop.submit("w1", "a", signal(epoch=11), now=0.0)
    loop.flush()
    assert second.reserved == [2]


def test_forget_resets_a_restarted_workers_memory(
    layout: ActionLayout, signal: SignalFactory
) -> None:
    loop = _loop(layout, device="cpu")
    loop.submit("w1", "s", signal(epoch=8, plateau_epochs=5), now=0.0)
    loop.flush()
    loop.forget("w1")
    loop.submit("w1", "s", signal(epoch=6, plateau_epochs=5), now=1.0)
    [decision] = loop.flush()
    assert decision.action.name == "GERMINATE_CONV_ENHANCE"


def test_an_illegal_choice_of_any_policy_falls_back_to_wait(
    layout: ActionLayout, signal: SignalFactory
) -> None:
    loop = InferenceLoop(AlwaysCull(layout), device="cpu")
    loop.submit("w1", "s", signal(epoch=9), now=0.0)
    loop.submit("w2", "s", signal(epoch=9, seed_stage=SeedStage.TRAINING), now=0.0)
    empty, live = loop.flush()
    assert (empty.action.name, empty.reason, empty.command) == (
        "WAIT",
        DecisionReason.ILLEGAL_PROPOSAL,
        None,
    )
    assert live.action.name == "CULL"


def test_a_proposal_out_of_range_masked_or_with_an_unknown_reason_is_refused_and_counted(
    layout: ActionLayout, signal: SignalFactory
) -> None:
    loop = InferenceLoop(Unruly(layout), device="cpu")
    for worker in range(6):  # no live seed: CULL is masked for every row
        loop.submit(f"w{worker}", "s", signal(epoch=9), now=0.0)

    decisions = loop.flush()

    assert loop.illegal == 4
    assert [(d.action.name, d.reason) for d in decisions[:4]] == [
        ("WAIT", DecisionReason.ILLEGAL_PROPOSAL)
    ] * 4
    assert [(d.reason, d.confidence) for d in decisions[4:]] == [
        (DecisionReason.LEARNED, 1.0),
        (DecisionReason.LEARNED, 0.0),
    ]
    assert len(decisions.commands()) == 0


def test_the_mlp_policy_runs_in_the_loop_with_its_own_bounds(
    layout: ActionLayout, signal: SignalFactory
) -> None:
    bounds = FeatureBounds(max_epochs=75)
    loop = InferenceLoop(MlpPolicy(layout, bounds), device="cpu", max_batch=16)
    stages = list(SeedStage)
    for index, stage in enumerate(stages):
        loop.submit(f"w{index}", "s", signal(epoch=index, seed_stage=stage), now=0.0)
    decisions = loop.flush()
    assert loop.bounds == bounds
    assert len(decisions) == len(stages)
    for decision, stage in zip(decisions, stages, strict=True):
        assert decision.reason is DecisionReason.LEARNED
        legal = reference_legal_actions(layout, signal(epoch=0, seed_stage=stage))
        assert decision.action in legal


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_the_cuda_loop_decides_like_the_cpu_loop(
    layout: ActionLayout, signal: SignalFactory
) -> None:
    loops = [_loop(layout, device=device, max_batch=32) for device in ("cpu", "cuda")]
    stages = list(SeedStage)
    decided: list[list[tuple[str, float, DecisionReason]]] = [[], []]
    for epoch in range(4, 16):
        for loop, out in zip(loops, decided, strict=True):
            for slot in range(20):
                stage = stages[(slot + epoch) % len(stages)]
                sig = signal(
                    epoch=epoch,
                    plateau_epochs=slot % 5,
                    seed_stage=stage,
                    seed_epochs_in_stage=slot % 7,
                    seed_improvement=(slot % 9) - 4.0,
                    val_accuracy=float(epoch + slot),
                )
                loop.submit(f"w{slot}", "s", sig, now=float(epoch))
            out.extend((d.action.name, d.confidence, d.reason) for d in loop.flush())
    assert decided[0] == decided[1]


def test_command_ids_are_unique_within_and_across_loops(
    layout: ActionLayout, signal: SignalFactory
) -> None:
    ids: list[str] = []
    prefixes = set()
    for _restart in range(2):
        loop = _loop(layout, device="cpu", max_batch=4)
        for epoch in (8, 9, 10):
            for worker in range(6):
                loop.submit(f"w{worker}", "s", signal(epoch=epoch, plateau_epochs=5), now=0.0)
            batch = [d.command for d in loop.flush() if d.command is not None]
            assert batch
            ids.extend(command.command_id for command in batch)
            prefixes |= {command.command_id.rsplit("-", 1)[0] for command in batch}
    assert len(set(ids)) == len(ids)
    assert len(prefixes) == 2  # a restarted controller draws a new prefix


def test_the_commands_of_one_batch_share_one_timestamp(
    layout: ActionLayout, signal: SignalFactory
) -> None:
    loop = _loop(layout, device="cpu", max_batch=8)
    for worker in range(8):
        loop.submit(f"w{worker}", "s", signal(epoch=8, plateau_epochs=5), now=0.0)
    commands = [d.command for d in loop.flush() if d.command is not None]
    assert len(commands) == 8
    assert len({command.timestamp for command in commands}) == 1


def test_commanded_decisions_are_the_rows_with_a_command_in_batch_order(
    layout: ActionLayout, signal: SignalFactory
) -> None:
    loop = _loop(layout, device="cpu")
    loop.submit("w1", "s", signal(epoch=2), now=0.0)  # warming up: WAIT
    loop.submit("w2", "s", signal(epoch=8, plateau_epochs=4), now=0.0)
    loop.submit("w3", "s", signal(epoch=3), now=0.0)  # WAIT
    loop.submit("w4", "s", signal(epoch=12, seed_stage=SeedStage.PROBATIONARY), now=0.0)

    decisions = loop.flush()

    assert [d.worker_id for d in decisions] == ["w1", "w2", "w3", "w4"]
    assert decisions[1:3] == [decisions[1], decisions[2]]
    assert decisions[-1].worker_id == "w4"
    commanded = decisions.commanded()
    assert [d.worker_id for d in commanded] == ["w2", "w4"]
    assert all(d.command is not None for d in commanded)
    ids = [d.command.command_id for d in commanded if d.command is not None]
    assert len(set(ids)) == 2
    assert len({d.command.timestamp for d in commanded if d.command is not None}) == 1


def test_a_signal_with_a_bad_value_is_refused_by_name_and_the_batch_is_decided(
    layout: ActionLayout, signal: SignalFactory
) -> None:
    loop = _loop(layout, device="cpu")
    refused: list[tuple[str, ContractError]] = []
    loop.on_refused(lambda item, error: refused.append((item.worker_id, error)))
    good = signal(epoch=8, plateau_epochs=4)
    block = bytearray(good.features)
    struct.pack_into("<f", block, 4 * TensorSchema.VAL_ACCURACY, math.nan)
    bad = FastTrainingSignals(good.epoch, bytes(block), good.slot_index)
    for worker, sig in (("w1", good), ("w2", bad), ("w3", good)):
        loop.submit(worker, "s", sig, now=0.0)

    decisions = loop.flush()

    assert [d.worker_id for d in decisions] == ["w1", "w3"]
    assert {d.action.name for d in decisions} == {"GERMINATE_CONV_ENHANCE"}
    assert loop.refused == 1
    [(worker, error)] = refused
    assert worker == "w2"
    assert error.reason is RejectReason.INVALID_VALUE
    assert error.path == f"$.features[{int(TensorSchema.VAL_ACCURACY)}]"


def test_signals_as_rows_are_decided_as_the_same_signals_as_objects(
    layout: ActionLayout, signal: SignalFactory
) -> None:
    """A columnar receive's rows (`submit_rows`), mixed with objects, one with a bad value:
    the same decisions, commands aside, and the same refusal by name."""
    good = [signal(epoch=8, plateau_epochs=4), signal(epoch=3), signal(epoch=9, plateau_epochs=6)]
    block = bytearray(good[1].features)
    struct.pack_into("<f", block, 4 * TensorSchema.SEED_ALPHA, math.inf)
    bad = FastTrainingSignals(3, bytes(block), 0)
    arrivals = [("w1", good[0]), ("w2", bad), ("w3", good[2]), ("w4", good[1])]

    def decided(loop: InferenceLoop) -> list[tuple[str, str, int, str]]:
        return [(d.worker_id, d.slot_id, d.epoch, d.action.name) for d in loop.flush()]

    objects = _loop(layout, device="cpu")
    for worker, sig in arrivals:
        objects.submit(worker, "s", sig, now=0.0)
    rows = _loop(layout, device="cpu")
    refused: list[ContractError] = []
    rows.on_refused(lambda item, error: refused.append(error))
    rows.submit("w4", "s", good[1], now=0.0)  # an object beside the rows
    features = torch.tensor(
        [list(struct.unpack("<27f", s.features)) for _, s in arrivals[:3]]
    ).numpy()
    keys = [(worker, "s") for worker, _ in arrivals[:3]]
    assert rows.submit_rows(keys, [s.epoch for _, s in arrivals[:3]], features, now=0.0) == 3

    expected = decided(objects)
    assert sorted(decided(rows)) == sorted(expected)
    assert [w for w, *_ in expected] == ["w1", "w3", "w4"]
    assert rows.refused == objects.refused == 1
    assert refused[0].path == f"$.features[{int(TensorSchema.SEED_ALPHA)}]"


class Recording(ControlPolicy):
    """WAITs everywhere, keeping a copy of the inputs the loop staged for it."""

    seen: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]

    def forward(self, batch: ObservationBatch, masks: torch.Tensor) -> PolicyOutput:
        self.seen.append((batch.features.clone(), batch.columns.clone(), masks.clone()))
        actions = torch.full((len(masks),), self.layout.wait, dtype=torch.int64)
        return PolicyOutput(actions, torch.ones(len(masks)), torch.full_like(actions, 11))


def test_the_staged_batch_is_what_each_owner_makes_of_it(
    layout: ActionLayout, signal: SignalFactory
) -> None:
    """One compiled pass stages a batch (`stage_batch`); the policy sees exactly what the
    converter, the column buffer and the masker make of the same signals one by one, and
    a refused row in the middle leaves the rest in order."""
    policy = Recording(layout, FeatureBounds(max_epochs=30))
    policy.seen = []
    loop = InferenceLoop(policy, max_batch=64, max_wait_s=1.0, device="cpu")
    signals = [
        signal(
            epoch=3 + i,
            seed_stage=stage,
            plateau_epochs=i % 5,
            seed_improvement=(i % 7) - 3.5,
            available_slots=i % 2,
            val_accuracy=40.0 + i / 3,
        )
        for i, stage in enumerate(list(SeedStage) * 4)
    ]
    block = bytearray(signals[5].features)
    struct.pack_into("<f", block, 4 * TensorSchema.PLATEAU_EPOCHS, 1.5)  # not a whole count
    signals[5] = FastTrainingSignals(signals[5].epoch, bytes(block), signals[5].slot_index)
    for i, sig in enumerate(signals):
        loop.submit(f"w{i}", "s", sig, now=0.0)

    decisions = loop.flush()

    kept = [sig for i, sig in enumerate(signals) if i != 5]
    rows = [i for i in range(len(signals)) if i != 5]
    assert [d.worker_id for d in decisions] == [f"w{i}" for i in rows]
    assert loop.refused == 1
    [(features, columns, masks)] = policy.seen
    converter = BatchConverter(64, "cpu", policy.bounds)
    expected_columns = ColumnBuffer(64, "cpu").fill(kept, rows)
    assert torch.equal(features, converter.convert(kept))
    assert torch.equal(columns, expected_columns)
    assert torch.equal(masks, ActionMasker(layout)(expected_columns))
