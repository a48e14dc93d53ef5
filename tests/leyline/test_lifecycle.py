"""The seed lifecycle against the spec (section 1): every stage pair, predicates, next stage."""

from __future__ import annotations

import itertools

import pytest

from leyline import SeedStage
from leyline.lifecycle import (
    VALID_TRANSITIONS,
    is_active_stage,
    is_failure_stage,
    is_live_stage,
    is_terminal_stage,
    is_valid_transition,
    next_stage,
)

# Written from the spec's table 1.2, by name, independently of leyline.lifecycle.
SPEC_TRANSITIONS: dict[str, list[str]] = {
    "UNKNOWN": ["DORMANT"],
    "DORMANT": ["GERMINATED"],
    "GERMINATED": ["TRAINING", "CULLED"],
    "TRAINING": ["BLENDING", "CULLED"],
    "BLENDING": ["SHADOWING", "CULLED"],
    "SHADOWING": ["PROBATIONARY", "CULLED"],
    "PROBATIONARY": ["FOSSILIZED", "CULLED"],
    "FOSSILIZED": [],
    "CULLED": ["EMBARGOED"],
    "EMBARGOED": ["RESETTING"],
    "RESETTING": ["DORMANT"],
}
SPEC_VALUES = {
    "UNKNOWN": 0,
    "DORMANT": 1,
    "GERMINATED": 2,
    "TRAINING": 3,
    "BLENDING": 4,
    "SHADOWING": 5,
    "PROBATIONARY": 6,
    "FOSSILIZED": 7,
    "CULLED": 8,
    "EMBARGOED": 9,
    "RESETTING": 10,
}
ALL_PAIRS = list(itertools.product(SPEC_VALUES, SPEC_VALUES))


def test_stages_have_the_spec_wire_values() -> None:
    assert {stage.name: stage.value for stage in SeedStage} == SPEC_VALUES


@pytest.mark.parametrize(("source", "target"), ALL_PAIRS)
def test_transition_is_legal_exactly_when_the_spec_lists_it(source: str, target: str) -> None:
    expected = target in SPEC_TRANSITIONS[source]
    assert is_valid_transition(SeedStage[source], SeedStage[target]) is expected


def test_transition_map_has_11_keys_and_15_edges_in_spec_order() -> None:
    as_names = {s.name: [t.name for t in targets] for s, targets in VALID_TRANSITIONS.items()}
    assert as_names == SPEC_TRANSITIONS
    assert sum(len(targets) for targets in VALID_TRANSITIONS.values()) == 15


@pytest.mark.parametrize("stage", list(SeedStage))
def test_stage_predicates_match_the_spec(stage: SeedStage) -> None:
    name = stage.name
    assert is_terminal_stage(stage) is (name == "FOSSILIZED")
    active = {"TRAINING", "BLENDING", "SHADOWING", "PROBATIONARY", "FOSSILIZED"}
    assert is_active_stage(stage) is (name in active)
    assert is_failure_stage(stage) is (name in {"CULLED", "EMBARGOED", "RESETTING"})
    live = {"GERMINATED", "TRAINING", "BLENDING", "SHADOWING", "PROBATIONARY"}
    assert is_live_stage(stage) is (name in live)


def test_culled_is_not_terminal() -> None:
    assert not is_terminal_stage(SeedStage.CULLED)


# An untargeted advance takes the first listed successor that is not a failure stage.
SPEC_NEXT: dict[str, str | None] = {
    "UNKNOWN": "DORMANT",
    "DORMANT": "GERMINATED",
    "GERMINATED": "TRAINING",
    "TRAINING": "BLENDING",
    "BLENDING": "SHADOWING",
    "SHADOWING": "PROBATIONARY",
    "PROBATIONARY": "FOSSILIZED",
    "FOSSILIZED": None,
    "CULLED": None,
    "EMBARGOED": None,
    "RESETTING": "DORMANT",
}


@pytest.mark.parametrize(("stage", "expected"), SPEC_NEXT.items())
def test_next_stage_is_the_first_non_failure_successor(stage: str, expected: str | None) -> None:
    found = next_stage(SeedStage[stage])
    assert (found.name if found is not None else None) == expected
