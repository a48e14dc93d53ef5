"""Commands encoded from columns are the contract's own bytes, valid and numbered in place."""

from __future__ import annotations

import msgspec
import numpy as np
import pytest
from controller_signals import SignalFactory
from hypothesis import given, settings
from hypothesis import strategies as st

from leyline import AdaptationCommand, SeedStage
from leyline.actions import action_to_command
from leyline.wire import decode, encode
from services.controller import ActionLayout, DecisionReason, HeuristicPolicy, InferenceLoop
from services.controller.commands import CommandEncoder, command_type, numbered

_SLOTS = ("block2_post", "block3_post", "a-slot-with-a-rather-longer-name-than-most")
_CONFIDENCES = (1.0, 0.0, 0.6, 0.123456789, 5e-324, np.nextafter(1.0, 0.0))


def _expected(layout: ActionLayout, action: int, reason: int, slot: str, confidence: float,
              sent: AdaptationCommand) -> AdaptationCommand:  # fmt: skip
    """The command the old way: the contract's constructor, with the id and time sent."""
    command = action_to_command(
        layout.actions(action), command_id=sent.command_id, seed_id=None, slot_id=slot,
        reason=DecisionReason(reason).text, confidence=confidence,
    )  # fmt: skip
    assert command is not None
    return msgspec.structs.replace(command, timestamp=sent.timestamp)


def test_every_action_reason_slot_and_confidence_encodes_as_the_contract_does(
    layout: ActionLayout,
) -> None:
    encoder = CommandEncoder(layout)
    rows = [
        (action, int(reason), slot, confidence)
        for action in range(len(layout))
        if action != layout.wait
        for reason in DecisionReason
        for slot in _SLOTS
        for confidence in _CONFIDENCES
    ]
    actions, reasons, slots, confidence = zip(*rows, strict=True)
    ids, payloads = encoder.encode(
        slots,
        np.array(actions, np.int64),
        np.array(reasons, np.int64),
        np.array(confidence, np.float64),
    )

    assert len(set(ids)) == len(rows)
    for (action, reason, slot, sure), command_id, payload in zip(rows, ids, payloads, strict=True):
        sent = decode(payload)  # validated as a worker validates it
        assert isinstance(sent, AdaptationCommand)
        assert sent.command_id == command_id
        assert sent == _expected(layout, action, reason, slot, sure, sent)
        assert payload == encode(sent)  # byte for byte, defaults omitted alike


@pytest.mark.parametrize("sequence", [1, 127, 128, 255, 256, 65_535, 65_536, 2**32 - 1])
def test_numbering_adds_the_sequence_as_encoding_the_numbered_command_would(
    sequence: int, layout: ActionLayout
) -> None:
    encoder = CommandEncoder(layout)
    _, (payload,) = encoder.encode(
        ["block2_post"],
        np.array([layout.cull], np.int64),
        np.array([DecisionReason.SEED_REGRESSING], np.int64),
        np.array([0.25]),
    )
    unnumbered = decode(payload)
    assert isinstance(unnumbered, AdaptationCommand) and unnumbered.sequence == 0

    data = numbered(payload, sequence)

    assert data == encode(msgspec.structs.replace(unnumbered, sequence=sequence))
    assert decode(data) == msgspec.structs.replace(unnumbered, sequence=sequence)


def test_a_batch_shares_one_timestamp_and_ids_count_up(layout: ActionLayout) -> None:
    encoder = CommandEncoder(layout)
    ids, payloads = encoder.encode(
        ["block2_post"] * 3,
        np.full(3, layout.fossilize, np.int64),
        np.full(3, DecisionReason.SEED_IMPROVED, np.int64),
        np.array([1.0, 0.5, 1.0]),
    )
    later, _ = encoder.encode(
        ["block2_post"],
        np.array([layout.fossilize], np.int64),
        np.array([DecisionReason.SEED_IMPROVED], np.int64),
        np.array([1.0]),
    )
    commands = [decode(p) for p in payloads]
    assert len({c.timestamp for c in commands if isinstance(c, AdaptationCommand)}) == 1
    prefix = ids[0].rsplit("-", 1)[0]
    assert [*ids, *later] == [f"{prefix}-{n}" for n in (1, 2, 3, 4)]


def test_command_types_follow_the_actions(layout: ActionLayout) -> None:
    assert command_type(layout.actions(layout.cull)).name == "CULL"
    assert command_type(layout.actions(layout.fossilize)).name == "ADVANCE_STAGE"
    assert command_type(layout.actions(layout.germinate["norm"])).name == "GERMINATE"
    with pytest.raises(ValueError, match="WAIT carries no command"):
        command_type(layout.actions(layout.wait))


def test_decisions_give_their_commands_as_columns_aligned_with_the_objects(
    layout: ActionLayout, signal: SignalFactory
) -> None:
    loop = InferenceLoop(HeuristicPolicy(layout), device="cpu")
    loop.submit("w1", "s1", signal(epoch=2), now=0.0)  # warming up: WAIT
    loop.submit("w2", "s2", signal(epoch=8, plateau_epochs=4), now=0.0)
    loop.submit("w3", "s3", signal(epoch=12, seed_stage=SeedStage.PROBATIONARY), now=0.0)
    decisions = loop.flush()

    commands = decisions.commands()

    assert commands is decisions.commands()  # made once: the same ids on every read
    assert commands.rows.tolist() == [1, 2]
    assert (commands.worker_ids, commands.slot_ids, commands.epochs.tolist()) == (
        ["w2", "w3"], ["s2", "s3"], [8, 12],
    )  # fmt: skip
    objects = [d.command for d in decisions.commanded()]
    assert objects == [commands.command(0), commands.command(1)]
    assert [c.command_id for c in objects if c is not None] == commands.command_ids
    assert [encode(c) for c in objects if c is not None] == commands.payloads


def test_a_batch_keeps_the_commands_asked_for_with_every_column(
    layout: ActionLayout, signal: SignalFactory
) -> None:
    loop = InferenceLoop(HeuristicPolicy(layout), device="cpu")
    for worker in ("w1", "w2", "w3"):
        loop.submit(worker, "s", signal(epoch=8, plateau_epochs=4), now=0.0)
    commands = loop.flush().commands()

    kept = commands.take([2, 0])

    assert kept.rows.tolist() == [2, 0]
    assert kept.worker_ids == ["w3", "w1"]
    assert kept.payloads == [commands.payloads[2], commands.payloads[0]]
    assert [kept.command(i).command_id for i in range(2)] == kept.command_ids


@settings(max_examples=40, deadline=None)
@given(issued=st.one_of(st.integers(0, 2_000), st.integers(0, 2**63 - 1_000)),
       confidence=st.lists(st.sampled_from(_CONFIDENCES), min_size=1, max_size=300))  # fmt: skip
def test_ids_count_up_across_digit_carries_in_the_contracts_bytes(
    issued: int, confidence: list[float]
) -> None:
    """The compiled pass writes each id's digits by carrying from the last: across 9 -> 10,
    99 -> 100, ..., and past the 31-byte fixstr limit, the ids and bytes are the contract's."""
    layout = ActionLayout("cnn")
    encoder = CommandEncoder(layout)
    encoder._ids._issued = issued  # as if that many commands had been issued before
    count = len(confidence)
    ids, payloads = encoder.encode(
        ["block2_post"] * count,
        np.full(count, layout.cull, np.int64),
        np.full(count, DecisionReason.SEED_REGRESSING, np.int64),
        np.array(confidence, np.float64),
    )
    prefix = encoder._ids.prefix
    assert ids == [f"{prefix}{n}" for n in range(issued + 1, issued + 1 + count)]
    for command_id, payload, sure in zip(ids, payloads, confidence, strict=True):
        sent = decode(payload)
        assert isinstance(sent, AdaptationCommand)
        assert (sent.command_id, sent.confidence) == (command_id, sure)
        assert payload == encode(sent)


def test_a_step_of_several_batches_gives_their_commands_as_one_batch_in_order(
    layout: ActionLayout, signal: SignalFactory
) -> None:
    loop = InferenceLoop(HeuristicPolicy(layout), max_batch=2, device="cpu")
    workers = [f"w{n}" for n in range(5)]
    for n, worker in enumerate(workers):  # acting rows in every batch of two, and a WAIT
        epoch = 2 if n == 3 else 8
        loop.submit(worker, "s1", signal(epoch=epoch, plateau_epochs=4), now=0.0)
    loop.submit("w9", "s1", signal(epoch=9, seed_stage=SeedStage.PROBATIONARY), now=0.0)

    decisions = loop.flush()  # three batches of two
    commands = decisions.commands()

    acting = [row for row in range(len(decisions)) if decisions.actions[row] != layout.wait]
    assert len(decisions) == 6 and acting == [0, 1, 2, 4, 5]
    assert commands.rows.tolist() == acting
    assert commands.worker_ids == ["w0", "w1", "w2", "w4", "w9"]
    assert commands.epochs.tolist() == [8, 8, 8, 8, 9]
    prefix = commands.command_ids[0].rsplit("-", 1)[0]
    assert commands.command_ids == [f"{prefix}-{n}" for n in range(1, 6)]
    objects = [d.command for d in decisions.commanded()]
    assert [c.command_id for c in objects if c is not None] == commands.command_ids
    assert [encode(c) for c in objects if c is not None] == commands.payloads
    assert [commands.command(i) for i in range(5)] == objects
