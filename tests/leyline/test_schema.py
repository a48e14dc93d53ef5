"""The schema lock: what it records, that it matches the code, each breaking change it catches."""

from __future__ import annotations

import enum
import json
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Annotated, Any

import msgspec
import pytest

import leyline
from leyline import AdaptationCommand, CommandType, FastTrainingSignals, SeedStage, new_id
from leyline.registry import Registry, Upgrade, tag_of
from leyline.reports import SeedMetrics, SeedStateReport
from leyline.schema import (
    BreakingChange,
    BreakingKind,
    check,
    export,
    lock,
    read_lock,
    render,
)
from leyline.telemetry import SeedTelemetry
from leyline.wire import REGISTRY, encode

K = BreakingKind


def lock_of(
    *classes: type[msgspec.Struct], upgrades: Iterable[Upgrade[Any]] = ()
) -> dict[str, Any]:
    registry = Registry()
    for cls in classes:
        registry.register(cls, upgrades=upgrades if cls is classes[0] else ())
    return lock(registry)


def found(
    old: Iterable[type[msgspec.Struct]], new: Iterable[type[msgspec.Struct]]
) -> set[tuple[str, str, BreakingKind]]:
    """The breaking changes from a lock of `old` to the code `new`, as (tag, field, kind)."""
    changes = check(lock_of(*new), lock_of(*old))
    return {(c.tag, c.field, c.kind) for c in changes}


def test_committed_lock_matches_the_current_contracts() -> None:
    """Fails when a contract changed without `leyline schema lock`: commit the new lock."""
    assert read_lock() == lock(), "the schema lock is stale: run `leyline schema lock`"


def test_current_contracts_are_compatible_with_the_committed_lock() -> None:
    assert check(lock(), read_lock()) == []


def readable_classes() -> list[type[msgspec.Struct]]:
    """Every registered type and every older major it still reads."""
    entries = REGISTRY.entries().values()
    return [cls for entry in entries for cls in (entry.cls, *(u.legacy for u in entry.upgrades))]


def test_lock_covers_every_registered_tag_and_every_older_major_still_read() -> None:
    document = lock()
    assert sorted(document["tags"]) == sorted(tag_of(cls) for cls in readable_classes())
    assert "AdaptationCommand.v1" in document["tags"]  # bumped to v2, still read
    for root in document["tags"].values():
        assert root["$ref"].removeprefix("#/$defs/") in document["$defs"]


def test_export_is_json_schema_with_docs_and_the_lock_drops_them() -> None:
    exported, locked = export(), lock()
    assert exported["$schema"].endswith("2020-12/schema")
    assert "description" in exported["$defs"]["SeedStateReport"]
    assert '"description"' not in render(locked)
    assert '"title"' not in render(locked)


def test_lock_renders_stably_with_sorted_keys() -> None:
    text = render(lock())
    assert text == render(lock()) and text.endswith("}\n")
    assert json.loads(text) == lock()
    top = list(json.loads(text))
    assert top == sorted(top)


def test_array_like_structs_record_their_field_names_in_wire_order() -> None:
    component = lock()["$defs"]["FastTrainingSignals"]
    assert component["x-fields"] == ["type", *FastTrainingSignals.__struct_fields__]
    assert len(component["x-fields"]) == len(component["prefixItems"])


def test_export_names_every_enum_value_and_the_lock_keeps_the_values() -> None:
    exported = export()["$defs"]["CommandType"]
    assert "enum" not in exported
    assert exported["oneOf"] == [{"const": c.value, "title": c.name} for c in CommandType]
    assert lock()["$defs"]["CommandType"] == {"enum": [c.value for c in CommandType]}


def test_export_describes_timestamps_as_json_strings_and_msgpack_timestamps() -> None:
    field = export()["$defs"]["AdaptationCommand"]["properties"]["timestamp"]
    assert (field["type"], field["format"], field["x-msgpack"]) == (
        "string",
        "date-time",
        "timestamp",
    )
    # What the wire really carries: a msgpack timestamp extension (fixext, type -1).
    when = datetime(2026, 12, 2, 14, 0, 0, 500, tzinfo=UTC)
    raw = encode(
        AdaptationCommand(
            command_id=new_id(), command_type=CommandType.REQUEST_STATE, timestamp=when
        )
    )
    assert bytes([0xD7, 0xFF]) in raw
    assert when.isoformat().encode() not in raw


def test_every_datetime_field_of_the_contracts_is_marked_in_the_lock() -> None:
    components = lock()["$defs"]
    marked = {
        (name, field)
        for name, component in components.items()
        for field, node in component.get("properties", {}).items()
        if node.get("x-msgpack") == "timestamp" and node.get("format") == "date-time"
    }
    named = {**vars(leyline), **{cls.__name__: cls for cls in readable_classes()}}
    datetimes = {
        (name, info.name)
        for name in components
        if isinstance(cls := named.get(name), type) and issubclass(cls, msgspec.Struct)
        for info in msgspec.structs.fields(cls)
        if info.type is datetime
    }
    assert marked == datetimes and len(marked) >= 8


def test_an_unchanged_registry_has_no_breaking_changes() -> None:
    assert check(lock(), lock()) == []


def test_breaking_change_reads_as_tag_field_kind_and_detail() -> None:
    change = BreakingChange("Probe.v1", "inner.x", K.REMOVED_FIELD, "no longer present")
    assert str(change) == "Probe.v1: inner.x: removed field: no longer present"
    assert (
        str(BreakingChange("Probe.v1", "", K.REMOVED_TAG, "gone")) == "Probe.v1: removed tag: gone"
    )


# A small test-local contract, and modified copies of it carrying the same tag.


class Mood(enum.IntEnum):
    CALM = 1
    BUSY = 2


class MoodChanged(enum.IntEnum):
    CALM = 1
    BUSY = 3


class MoodGrown(enum.IntEnum):
    CALM = 1
    BUSY = 2
    ANGRY = 3


class Inner(msgspec.Struct):
    x: int = 0
    y: float = 0.0


class InnerWithoutX(msgspec.Struct):
    y: float = 0.0


def probe(
    *drop: str, tag: str = "Probe.v1", name: str = "Probe", **fields: Any
) -> type[msgspec.Struct]:
    """The Probe contract with `drop` removed and `fields` (name=(type, default...)) changed."""
    base: dict[str, tuple[Any, ...]] = {
        "probe_id": (str,),
        "count": (int, 0),
        "ratio": (float, 0.5),
        "mood": (Mood, Mood.CALM),
        "inner": (Inner, msgspec.field(default_factory=Inner)),
        "note": (str | None, None),
        "labels": (list[str], msgspec.field(default_factory=list)),
    }
    base.update(fields)
    spec = [(n, *typ) for n, typ in base.items() if n not in drop]
    return msgspec.defstruct(name, spec, tag=tag, kw_only=True)


PROBE = probe()


@pytest.mark.parametrize(
    ("new", "field", "kind"),
    [
        (probe("ratio"), "ratio", K.REMOVED_FIELD),
        (probe("ratio", share=(float, 0.5)), "ratio", K.RENAMED_FIELD),
        (probe(count=(str, "0")), "count", K.RETYPED_FIELD),
        (probe(count=(Annotated[int, msgspec.Meta(le=10)], 0)), "count", K.RETYPED_FIELD),
        (
            probe(labels=(list[int], msgspec.field(default_factory=list))),
            "labels[]",
            K.RETYPED_FIELD,
        ),
        (probe(note=(str, "")), "note", K.RETYPED_FIELD),
        (probe(owner=(str,)), "owner", K.NEW_REQUIRED_FIELD),
        (probe(count=(int,)), "count", K.NEW_REQUIRED_FIELD),
        (probe(ratio=(float, 0.7)), "ratio", K.CHANGED_DEFAULT),
        (probe(mood=(MoodChanged, MoodChanged.CALM)), "mood", K.CHANGED_ENUM),
        (probe(mood=(MoodGrown, MoodGrown.CALM)), "mood", K.CHANGED_ENUM),
        (
            probe(inner=(InnerWithoutX, msgspec.field(default_factory=InnerWithoutX))),
            "inner.x",
            K.REMOVED_FIELD,
        ),
    ],
    ids=[
        "removed",
        "renamed",
        "retyped",
        "narrowed",
        "retyped-items",
        "no-longer-optional",
        "new-required",
        "became-required",
        "changed-default",
        "changed-enum-value",
        "added-enum-value",
        "nested-removed",
    ],
)
def test_each_breaking_change_is_named_with_tag_and_field(
    new: type[msgspec.Struct], field: str, kind: BreakingKind
) -> None:
    assert found([PROBE], [new]) == {("Probe.v1", field, kind)}


def test_retyping_a_timestamp_to_a_string_is_breaking() -> None:
    """A msgpack timestamp and a string are different wire types, though JSON spells both as
    strings."""
    stamped = probe(when=(datetime, msgspec.field(default_factory=lambda: datetime.now(UTC))))
    texted = probe(when=(str, msgspec.field(default_factory=str)))
    assert found([stamped], [texted]) == {("Probe.v1", "when", K.RETYPED_FIELD)}


def test_renaming_an_enum_member_is_not_breaking() -> None:
    """Names are not on the wire: only a changed value is."""
    renamed = enum.IntEnum("Mood", [("SERENE", 1), ("BUSY", 2)])  # type: ignore[misc]
    assert found([PROBE], [probe(mood=(renamed, renamed.SERENE))]) == set()


def test_a_removed_tag_is_breaking() -> None:
    other = probe(tag="Other.v1", name="Other")
    assert found([PROBE, other], [other]) == {("Probe.v1", "", K.REMOVED_TAG)}


def test_a_removed_tag_is_breaking_even_with_a_new_major_beside_it() -> None:
    v2 = probe(tag="Probe.v2", name="ProbeNext")
    assert found([PROBE], [v2]) == {("Probe.v1", "", K.REMOVED_TAG)}


def test_a_changed_tag_is_breaking() -> None:
    assert found([PROBE], [probe(tag="Probe.v2")]) == {("Probe.v1", "", K.CHANGED_TAG)}


def test_a_new_major_that_keeps_the_old_one_readable_passes() -> None:
    legacy = probe(name="ProbeV1")
    current = probe("ratio", tag="Probe.v2", share=(float, 0.5))
    upgrade = Upgrade(legacy, lambda old: current(probe_id=old.probe_id))
    assert check(lock_of(current, upgrades=[upgrade]), lock_of(PROBE)) == []


@pytest.mark.parametrize(
    "new",
    [
        [probe(added=(int, 0))],
        [probe(added=(str | None, None), more=(list[int], msgspec.field(default_factory=list)))],
        [PROBE, probe(tag="Probe.v2", name="ProbeNext")],
        [PROBE, probe(tag="Fresh.v1", name="Fresh")],
    ],
    ids=["defaulted-field", "two-defaulted-fields", "new-major-beside", "new-type"],
)
def test_additive_changes_pass(new: list[type[msgspec.Struct]]) -> None:
    assert check(lock_of(*new), lock_of(PROBE)) == []


def test_reordering_map_fields_passes() -> None:
    reordered = msgspec.defstruct(
        "Probe",
        [(n, t, d) for n, t, d in reversed([("a", int, 0), ("b", float, 0.0)])],
        tag="Probe.v1",
    )
    original = msgspec.defstruct("Probe", [("a", int, 0), ("b", float, 0.0)], tag="Probe.v1")
    assert found([original], [reordered]) == set()


def test_docstrings_are_not_part_of_the_contract() -> None:
    documented = msgspec.defstruct("Probe", [("a", int, 0)], tag="Probe.v1")
    documented.__doc__ = "Now with words."
    plain = msgspec.defstruct("Probe", [("a", int, 0)], tag="Probe.v1")
    assert found([plain], [documented]) == set()


def row(*fields: tuple[Any, ...], array_like: bool = True) -> type[msgspec.Struct]:
    return msgspec.defstruct("Row", list(fields), tag="Row.v1", array_like=array_like, kw_only=True)


ROW = row(("a", int), ("b", float), ("c", float))


@pytest.mark.parametrize(
    ("new", "expected"),
    [
        (row(("a", int), ("c", float), ("b", float)), {("Row.v1", "", K.CHANGED_LAYOUT)}),
        (
            row(("a", int), ("z", float, 0.0), ("b", float), ("c", float)),
            {("Row.v1", "", K.CHANGED_LAYOUT), ("Row.v1", "z", K.NEW_REQUIRED_FIELD)},
        ),
        (row(("a", int), ("b", float)), {("Row.v1", "c", K.REMOVED_FIELD)}),
        (
            row(("a", int), ("c", float)),
            {("Row.v1", "b", K.REMOVED_FIELD), ("Row.v1", "", K.CHANGED_LAYOUT)},
        ),
        (row(("a", int), ("q", float), ("c", float)), {("Row.v1", "b", K.RENAMED_FIELD)}),
        (
            row(("a", int), ("b", float), ("c", float), array_like=False),
            {("Row.v1", "", K.CHANGED_LAYOUT)},
        ),
        (
            row(("a", int), ("b", float), ("c", float), ("d", float)),
            {("Row.v1", "d", K.NEW_REQUIRED_FIELD)},
        ),
    ],
    ids=[
        "swapped",
        "inserted-in-the-middle",
        "removed-last",
        "removed-middle",
        "renamed",
        "to-map",
        "appended-required",
    ],
)
def test_array_layout_changes_are_breaking(
    new: type[msgspec.Struct], expected: set[tuple[str, str, BreakingKind]]
) -> None:
    assert found([ROW], [new]) == expected


def test_a_defaulted_field_appended_to_an_array_passes() -> None:
    assert found([ROW], [row(("a", int), ("b", float), ("c", float), ("d", float, 0.0))]) == set()


# The real contracts: a change nested two structs deep is found and named by its path.


def copy_struct(
    cls: type[msgspec.Struct], *, drop: str = "", replace: dict[str, Any] | None = None
) -> type[msgspec.Struct]:
    """A copy of `cls` (same name, tag and layout) without `drop`, with field types replaced."""
    config = cls.__struct_config__
    spec: list[tuple[Any, ...]] = []
    for info in msgspec.structs.fields(cls):
        if info.name == drop:
            continue
        kind = (replace or {}).get(info.name, info.type)
        if info.default is not msgspec.NODEFAULT:
            spec.append((info.name, kind, info.default))
        elif info.default_factory is not msgspec.NODEFAULT:
            spec.append((info.name, kind, msgspec.field(default_factory=info.default_factory)))
        else:
            spec.append((info.name, kind))
    return msgspec.defstruct(
        cls.__name__,
        spec,
        tag=config.tag,
        tag_field=config.tag_field,
        kw_only=True,
        array_like=config.array_like,
    )


def real_lock_with(*replaced: type[msgspec.Struct]) -> dict[str, Any]:
    by_tag = {tag_of(cls): cls for cls in replaced}
    registry = Registry()
    for tag, entry in REGISTRY.entries().items():
        registry.register(by_tag.get(tag, entry.cls), budget=entry.budget, upgrades=entry.upgrades)
    return lock(registry)


def test_a_field_removed_from_a_nested_struct_is_named_by_its_path() -> None:
    metrics = copy_struct(SeedMetrics, drop="alpha_ramp_step")
    report = copy_struct(SeedStateReport, replace={"metrics": metrics})
    changes = check(real_lock_with(report), lock())
    assert [str(c) for c in changes] == [
        "SeedStateReport.v1: metrics.alpha_ramp_step: removed field: no longer present"
    ]


def test_a_new_stage_breaks_every_tag_that_carries_a_stage() -> None:
    members = [(stage.name, stage.value) for stage in SeedStage] + [("PRUNED", 11)]
    grown = enum.IntEnum("SeedStage", members)  # type: ignore[misc]
    telemetry = copy_struct(SeedTelemetry, replace={"stage": grown})
    changes = check(real_lock_with(telemetry), lock())
    assert {(c.tag, c.field, c.kind) for c in changes} == {
        ("SeedTelemetry.v1", "stage", K.CHANGED_ENUM)
    }
    assert "added [11]" in changes[0].detail


def test_retyping_a_fast_signal_field_is_found_at_its_name() -> None:
    fast = copy_struct(FastTrainingSignals, replace={"epoch": float})
    changes = check(real_lock_with(fast), lock())
    assert {(c.tag, c.field, c.kind) for c in changes} == {
        ("FastTrainingSignals.v2", "epoch", K.RETYPED_FIELD)
    }
