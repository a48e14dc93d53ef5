"""The policy's actions (spec section 3): layout per topology, caching, and their commands."""

from __future__ import annotations

import enum

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from leyline import AdaptationCommand, CommandType, RiskLevel, SeedStage, new_id
from leyline.actions import (
    DEFAULT_CATALOG,
    BlueprintCatalog,
    BlueprintSpec,
    action_to_command,
    blueprint_of,
    is_germinate,
)

# Spec section 3's snapshot table, written out by hand.
SPEC_LAYOUT = {
    "cnn": [
        "WAIT",
        "GERMINATE_NORM",
        "GERMINATE_ATTENTION",
        "GERMINATE_DEPTHWISE",
        "GERMINATE_CONV_ENHANCE",
        "FOSSILIZE",
        "CULL",
    ],
    "transformer": [
        "WAIT",
        "GERMINATE_NORM",
        "GERMINATE_LORA",
        "GERMINATE_ATTENTION",
        "GERMINATE_MLP",
        "FOSSILIZE",
        "CULL",
    ],
}


@pytest.mark.parametrize(("topology", "members"), SPEC_LAYOUT.items())
def test_default_catalogue_gives_the_spec_layout(topology: str, members: list[str]) -> None:
    actions = DEFAULT_CATALOG.actions(topology)
    assert [(a.name, a.value) for a in actions] == [(m, i) for i, m in enumerate(members)]
    assert actions.__name__ == topology.title() + "Action"


blueprint_names = st.from_regex(r"[a-z0-9_]{1,12}", fullmatch=True)
catalogues = st.lists(
    st.tuples(blueprint_names, st.sampled_from(["cnn", "transformer"]), st.integers(0, 10**7)),
    min_size=1,
    max_size=8,
    unique_by=lambda entry: (entry[0], entry[1]),
)


@settings(max_examples=150, deadline=None)
@given(entries=catalogues)
def test_layout_is_wait_germinates_by_param_estimate_fossilize_cull(
    entries: list[tuple[str, str, int]],
) -> None:
    catalog = BlueprintCatalog(
        BlueprintSpec(name=n, topology=t, param_estimate=p) for n, t, p in entries
    )
    for topology in catalog.topologies():
        mine = sorted((p, n) for n, t, p in entries if t == topology)
        actions = list(catalog.actions(topology))
        count = len(mine)
        assert actions[0].name == "WAIT" and actions[0].value == 0
        assert [a.name for a in actions[1 : count + 1]] == [
            f"GERMINATE_{n.upper()}" for _, n in mine
        ]
        assert (actions[count + 1].name, actions[count + 1].value) == ("FOSSILIZE", count + 1)
        assert (actions[count + 2].name, actions[count + 2].value) == ("CULL", count + 2)
        for action in actions:
            germinates = 1 <= action.value <= count
            assert is_germinate(action) is germinates
            assert blueprint_of(action) == (mine[action.value - 1][1] if germinates else None)


@pytest.mark.parametrize("topology", ["cnn", "transformer"])
def test_helpers_agree_with_the_default_catalogue(topology: str) -> None:
    names = [spec.name for spec in DEFAULT_CATALOG.blueprints(topology)]
    for action in DEFAULT_CATALOG.actions(topology):
        expected = names[action.value - 1] if 1 <= action.value <= len(names) else None
        assert blueprint_of(action) == expected
        assert is_germinate(action) is (expected is not None)


def test_blueprints_list_ascending_by_param_estimate() -> None:
    estimates = [spec.param_estimate for spec in DEFAULT_CATALOG.blueprints("cnn")]
    assert estimates == [100, 2_000, 4_800, 74_000]


def test_action_enum_is_cached_per_topology() -> None:
    catalog = BlueprintCatalog()
    assert catalog.actions("cnn") is catalog.actions("cnn")


def test_register_rebuilds_only_its_topology() -> None:
    catalog = BlueprintCatalog()
    cnn, transformer = catalog.actions("cnn"), catalog.actions("transformer")
    catalog.register(BlueprintSpec(name="bottleneck", topology="cnn", param_estimate=3_000))
    rebuilt = catalog.actions("cnn")
    assert rebuilt is not cnn
    assert [a.name for a in rebuilt][3] == "GERMINATE_BOTTLENECK"
    assert (rebuilt["FOSSILIZE"].value, rebuilt["CULL"].value) == (6, 7)
    assert catalog.actions("transformer") is transformer


def test_unregister_rebuilds_without_the_blueprint() -> None:
    catalog = BlueprintCatalog()
    before = catalog.actions("cnn")
    catalog.unregister("cnn", "attention")
    after = catalog.actions("cnn")
    assert after is not before
    assert [a.name for a in after] == [
        "WAIT",
        "GERMINATE_NORM",
        "GERMINATE_DEPTHWISE",
        "GERMINATE_CONV_ENHANCE",
        "FOSSILIZE",
        "CULL",
    ]


def test_a_topology_without_blueprints_has_no_actions() -> None:
    catalog = BlueprintCatalog()
    catalog.unregister("cnn", "norm")
    for name in ("attention", "depthwise", "conv_enhance"):
        catalog.unregister("cnn", name)
    with pytest.raises(KeyError, match="cnn"):
        catalog.actions("cnn")


@pytest.mark.parametrize("name", ["Conv", "conv-enhance", "", "big conv", "straße"])
def test_a_blueprint_name_that_would_not_survive_the_action_name_is_refused(name: str) -> None:
    with pytest.raises(ValueError, match="blueprint name"):
        BlueprintSpec(name=name, topology="cnn", param_estimate=1)


CNN = DEFAULT_CATALOG.actions("cnn")


def test_wait_sends_no_command() -> None:
    assert (
        action_to_command(CNN["WAIT"], command_id=new_id(), seed_id="seed_1", slot_id="block2_post")
        is None
    )


# Spec table 2.3 (WAIT aside: the design sends nothing for it).
@pytest.mark.parametrize(
    ("member", "command_type", "target_stage", "risk", "blueprint"),
    [
        ("GERMINATE_NORM", CommandType.GERMINATE, SeedStage.GERMINATED, RiskLevel.YELLOW, "norm"),
        (
            "GERMINATE_CONV_ENHANCE",
            CommandType.GERMINATE,
            SeedStage.GERMINATED,
            RiskLevel.YELLOW,
            "conv_enhance",
        ),
        ("FOSSILIZE", CommandType.ADVANCE_STAGE, SeedStage.FOSSILIZED, RiskLevel.YELLOW, None),
        ("CULL", CommandType.CULL, SeedStage.CULLED, RiskLevel.ORANGE, None),
    ],
)
def test_action_maps_to_the_spec_command(
    member: str,
    command_type: CommandType,
    target_stage: SeedStage,
    risk: RiskLevel,
    blueprint: str | None,
) -> None:
    command = action_to_command(
        CNN[member],
        command_id=new_id(),
        seed_id="seed_1",
        slot_id="block2_post",
        reason="plateau",
        confidence=0.6,
    )
    assert isinstance(command, AdaptationCommand)
    assert command.command_type is command_type
    assert command.target_stage is target_stage
    assert command.risk_level is risk
    assert command.blueprint_id == blueprint
    assert (command.target_seed_id, command.target_slot_id) == ("seed_1", "block2_post")
    assert (command.reason, command.confidence) == ("plateau", 0.6)
    assert command.alpha_value is None and command.learning_rate is None


def test_every_germinate_action_of_every_topology_names_its_blueprint() -> None:
    for topology in DEFAULT_CATALOG.topologies():
        for action in DEFAULT_CATALOG.actions(topology):
            command = action_to_command(action, command_id=new_id(), seed_id=None, slot_id="slot")
            if is_germinate(action):
                assert command is not None
                assert command.blueprint_id == blueprint_of(action)


def test_a_long_reason_is_cut_to_the_wire_limit() -> None:
    command = action_to_command(
        CNN["CULL"], command_id=new_id(), seed_id="s", slot_id=None, reason="x" * 200
    )
    assert command is not None and command.reason == "x" * 64


def test_an_action_of_a_foreign_enum_is_refused() -> None:
    Other = enum.IntEnum("Other", [("JUMP", 1)])
    with pytest.raises(ValueError, match="JUMP"):
        action_to_command(Other["JUMP"], command_id=new_id(), seed_id="s", slot_id=None)
