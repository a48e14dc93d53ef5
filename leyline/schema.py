"""The schema lock: JSON Schema of every wire tag, and the check that refuses breaking changes.

Within one major only additive, defaulted fields are allowed. `check` compares the current
contracts against the committed lock and names every change that is not, per tag and field
path, recursing into nested structs and payload unions. The rules are FULL compatibility
(old readers read new writers and new readers read old writers), so besides removing,
renaming, retyping and requiring fields these are breaking too:

- **adding** an enum value or a union member: an old reader refuses the new value;
- changing a default, or a field becoming required or optional: writers with
  `omit_defaults` leave defaulted values out, so the reader's default is part of the contract;
- changing a numeric or length bound: one side refuses what the other accepts;
- reordering array-like fields, or switching a struct between map and array layout.

A new tag (a new type, or a new major beside the old one) is never breaking; removing or
re-tagging a locked one always is. Older majors kept readable through an `Upgrade` stay in
the lock under their own tag, so bumping a major while keeping the old one readable passes.

The export says what msgspec's JSON Schema leaves out:

- **enum names**: an enum is `oneOf` a `const` per member, titled with the member's name.
  That is JSON Schema's own way to name enum values (`const` and `title` are standard
  keywords since draft 6; json-schema-org/json-schema-spec#57 settled on it instead of a
  names keyword, and react-jsonschema-form documents it as the compliant replacement for its
  `enumNames`), so every conforming validator accepts exactly the values `enum` would and
  annotation readers (form renderers, documentation generators) show the names, while vendor
  keys (`x-enumNames`, `x-enum-varnames`, `tsEnumNames`) are each read by one tool family
  only. The lock keeps the values only, as `enum`: a name is not on the wire, so renaming a
  member is not a change to the contract.
- **timestamps**: a datetime is `"format": "date-time"` (an RFC 3339 string in JSON) with
  `"x-msgpack": "timestamp"`: on the msgpack wire it is a timestamp extension value (type -1).
  Both stay in the lock, so retyping a datetime to a string is caught.
- **array layouts**: `x-fields` names the items of an array-like struct in wire order.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import msgspec

from leyline.registry import Registry, tag_of
from leyline.wire import REGISTRY

__all__ = [
    "DEFAULT_LOCK_PATH",
    "BreakingChange",
    "BreakingKind",
    "Schema",
    "check",
    "export",
    "lock",
    "read_lock",
    "render",
    "write_lock",
]

#: Where the committed lock lives, shipped with the package.
DEFAULT_LOCK_PATH = Path(__file__).with_name("schema.lock.json")

Schema = dict[str, Any]

_DRAFT = "https://json-schema.org/draft/2020-12/schema"
_REF_PREFIX = "#/$defs/"
#: Field names of an array-like struct, in wire order (JSON Schema's prefixItems has none).
_FIELDS_KEY = "x-fields"
#: How a value travels on the msgpack wire, where that is not how JSON carries it.
_MSGPACK_KEY = "x-msgpack"
_TIMESTAMP: Schema = {
    "format": "date-time",
    _MSGPACK_KEY: "timestamp",
    "description": "a time: an RFC 3339 string in JSON, a timestamp extension value (type -1)"
    " in msgpack",
}
#: Keywords that document a schema without constraining it.
_DOC_KEYWORDS = frozenset({"title", "description"})
#: Keywords whose value is a mapping keyed by names (fields, components, tags).
_NAMING_KEYWORDS = frozenset({"$defs", "tags", "properties", "mapping"})
#: Keywords whose value is data, never a schema.
_VALUE_KEYWORDS = frozenset({"default", "enum", "const", _FIELDS_KEY})


class BreakingKind(enum.Enum):
    """What kind of incompatible change was found."""

    REMOVED_TAG = "removed tag"
    CHANGED_TAG = "changed tag"
    REMOVED_FIELD = "removed field"
    RENAMED_FIELD = "renamed field"
    RETYPED_FIELD = "retyped field"
    NEW_REQUIRED_FIELD = "new required field"
    CHANGED_DEFAULT = "changed default"
    CHANGED_ENUM = "changed enum"
    CHANGED_LAYOUT = "changed layout"


class BreakingChange(msgspec.Struct, frozen=True):
    """One incompatible change: the tag, the field path inside it ("" for the tag), and why."""

    tag: str
    field: str
    kind: BreakingKind
    detail: str

    def __str__(self) -> str:
        where = f"{self.tag}: {self.field}" if self.field else self.tag
        return f"{where}: {self.kind.value}: {self.detail}"


def export(registry: Registry = REGISTRY) -> Schema:
    """The JSON Schema of every readable tag (current and upgradable majors), with docs."""
    classes = {tag_of(cls): cls for cls in _readable_classes(registry)}
    ordered = sorted(classes.items())
    roots, components = msgspec.json.schema_components(
        [cls for _, cls in ordered], ref_template=_REF_PREFIX + "{name}"
    )
    infos = list(_type_infos([cls for _, cls in ordered]))
    _name_array_fields(components, infos)
    _name_enum_values(components, infos)
    _describe_timestamps(components, infos)
    return {
        "$schema": _DRAFT,
        "$defs": components,
        "tags": {tag: root for (tag, _), root in zip(ordered, roots, strict=True)},
    }


def lock(registry: Registry = REGISTRY) -> Schema:
    """The lock document: `export` without the documentation, so docstring edits do not drift.

    Without their titles, an enum's `oneOf` members are bare values: the lock lists them as
    `enum`, the compact form of the same constraint.
    """
    document: Schema = _strip_docs(export(registry))
    for component in document["$defs"].values():
        members = component.get("oneOf")
        if members and all(set(member) == {"const"} for member in members):
            del component["oneOf"]
            component["enum"] = [member["const"] for member in members]
    return document


def render(document: Schema) -> str:
    """Stable text for a schema document: sorted keys, two-space indent, final newline."""
    return json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def read_lock(path: Path = DEFAULT_LOCK_PATH) -> Schema:
    document: Schema = json.loads(path.read_text(encoding="utf-8"))
    return document


def write_lock(path: Path = DEFAULT_LOCK_PATH, registry: Registry = REGISTRY) -> Schema:
    """Write the current lock to `path` and return it."""
    document = lock(registry)
    path.write_text(render(document), encoding="utf-8")
    return document


def check(current: Schema, locked: Schema) -> list[BreakingChange]:
    """Every change from `locked` to `current` that breaks a reader or writer of a locked tag."""
    changes: list[BreakingChange] = []
    now_tags: dict[str, Schema] = current.get("tags", {})
    for tag, old_root in sorted(locked.get("tags", {}).items()):
        new_root = now_tags.get(tag)
        if new_root is None:
            changes.append(_missing_tag(tag, old_root, locked, current))
            continue
        _Comparison(tag, locked.get("$defs", {}), current.get("$defs", {}), changes).schema(
            old_root, new_root, ""
        )
    return changes


def _readable_classes(registry: Registry) -> Iterator[type[msgspec.Struct]]:
    for entry in registry.entries().values():
        yield entry.cls
        for upgrade in entry.upgrades:
            yield upgrade.legacy


def _by_component(infos: Iterable[Any]) -> dict[str, Any]:
    """Type infos by every name msgspec may give their component (qualified on a clash)."""
    found: dict[str, Any] = {}
    for info in infos:
        cls = info.cls
        found[f"{cls.__module__}.{cls.__qualname__}"] = info
        found.setdefault(cls.__name__, info)
    return found


def _name_array_fields(components: Schema, infos: list[msgspec.inspect.Type]) -> None:
    """Record the field names of each array-like struct component under `x-fields`."""
    mi = msgspec.inspect
    arrays = _by_component(i for i in infos if isinstance(i, mi.StructType) and i.array_like)
    for name, component in components.items():
        found = arrays.get(name)
        if found is not None and component.get("type") == "array":
            tag_field = [found.tag_field] if found.tag_field is not None else []
            component[_FIELDS_KEY] = [*tag_field, *(f.encode_name for f in found.fields)]


def _name_enum_values(components: Schema, infos: list[msgspec.inspect.Type]) -> None:
    """Turn each enum component's `enum` into `oneOf` a `const` per member, titled by name."""
    enums = _by_component(i for i in infos if isinstance(i, msgspec.inspect.EnumType))
    for name, component in components.items():
        found = enums.get(name)
        if found is not None and "enum" in component:
            del component["enum"]
            component["oneOf"] = [
                {"const": member.value, "title": member.name} for member in found.cls
            ]


def _describe_timestamps(components: Schema, infos: list[msgspec.inspect.Type]) -> None:
    """Mark every datetime field as a date-time string in JSON, a timestamp in msgpack."""
    mi = msgspec.inspect
    structs = _by_component(i for i in infos if isinstance(i, mi.StructType))
    for name, component in components.items():
        found = structs.get(name)
        if found is None:
            continue
        if found.array_like:
            offset = 0 if found.tag_field is None else 1
            items = component["prefixItems"][offset:]
            slots = {f.encode_name: item for f, item in zip(found.fields, items, strict=True)}
        else:
            slots = component.get("properties", {})
        for info in found.fields:
            if _is_datetime(info.type):
                slots[info.encode_name].update(_TIMESTAMP)


def _is_datetime(info: msgspec.inspect.Type) -> bool:
    while isinstance(info, msgspec.inspect.Metadata):
        info = info.type
    return isinstance(info, msgspec.inspect.DateTimeType)


def _type_infos(roots: list[type[msgspec.Struct]]) -> Iterator[msgspec.inspect.Type]:
    """Every struct and enum type reachable from `roots`, each once."""
    mi = msgspec.inspect
    seen: set[type] = set()
    pending: list[mi.Type] = list(mi.multi_type_info(roots))
    while pending:
        info = pending.pop()
        if isinstance(info, mi.StructType | mi.EnumType):
            if info.cls in seen:
                continue
            seen.add(info.cls)
            yield info
            if isinstance(info, mi.StructType):
                pending.extend(f.type for f in info.fields)
        elif isinstance(info, mi.Metadata):
            pending.append(info.type)
        elif isinstance(info, mi.CollectionType):
            pending.append(info.item_type)
        elif isinstance(info, mi.TupleType):
            pending.extend(info.item_types)
        elif isinstance(info, mi.UnionType):
            pending.extend(info.types)
        elif isinstance(info, mi.DictType):
            pending.extend((info.key_type, info.value_type))


def _strip_docs(node: Any, *, naming: bool = False) -> Any:
    """Drop documentation keywords; `naming` marks a mapping keyed by names, not keywords."""
    if isinstance(node, list):
        return [_strip_docs(item) for item in node]
    if not isinstance(node, dict):
        return node
    stripped: Schema = {}
    for key, value in node.items():
        if naming:
            stripped[key] = _strip_docs(value)
        elif key in _VALUE_KEYWORDS:
            stripped[key] = value
        elif key not in _DOC_KEYWORDS:
            stripped[key] = _strip_docs(value, naming=key in _NAMING_KEYWORDS)
    return stripped


def _missing_tag(tag: str, old_root: Schema, locked: Schema, current: Schema) -> BreakingChange:
    """A locked tag is gone: re-tagged when its struct now carries another tag, else removed."""
    component = old_root.get("$ref", "")
    for new_tag, new_root in sorted(current.get("tags", {}).items()):
        if component and new_root.get("$ref") == component and new_tag not in locked["tags"]:
            return BreakingChange(tag, "", BreakingKind.CHANGED_TAG, f"now tagged {new_tag!r}")
    return BreakingChange(tag, "", BreakingKind.REMOVED_TAG, "no longer registered")


class _Struct(msgspec.Struct):
    """A struct schema in one shape for both layouts: fields in wire order, which are required."""

    fields: dict[str, Schema]
    required: set[str]
    array_like: bool


def _as_struct(node: Schema) -> _Struct | None:
    if node.get("type") == "object" and "properties" in node:
        return _Struct(node["properties"], set(node.get("required", ())), array_like=False)
    if node.get("type") == "array" and _FIELDS_KEY in node:
        names: list[str] = node[_FIELDS_KEY]
        required = set(names[: node.get("minItems", len(names))])
        return _Struct(dict(zip(names, node["prefixItems"], strict=True)), required, True)
    return None


def _brief(node: Schema) -> str:
    return json.dumps(node, sort_keys=True, separators=(",", ":"))[:160]


class _Comparison:
    """Walks one tag's locked and current schemas side by side, collecting breaking changes."""

    def __init__(
        self, tag: str, old_defs: Schema, new_defs: Schema, out: list[BreakingChange]
    ) -> None:
        self._tag = tag
        self._old_defs = old_defs
        self._new_defs = new_defs
        self._out = out
        self._active: set[tuple[str, str]] = set()

    def _report(self, path: str, kind: BreakingKind, detail: str) -> None:
        self._out.append(BreakingChange(self._tag, path, kind, detail))

    def _resolve(self, node: Schema, defs: Schema) -> tuple[Schema, str]:
        ref = node.get("$ref")
        if ref is None:
            return node, ""
        name = ref.removeprefix(_REF_PREFIX)
        return defs.get(name, {}), name

    def schema(self, old: Schema, new: Schema, path: str) -> None:
        old_node, old_name = self._resolve(old, self._old_defs)
        new_node, new_name = self._resolve(new, self._new_defs)
        pair = (old_name, new_name)
        if pair == ("", ""):
            self._compare(old_node, new_node, path)
        elif pair not in self._active:  # else a recursive type, compared further up already
            self._active.add(pair)
            self._compare(old_node, new_node, path)
            self._active.discard(pair)

    def _compare(self, old: Schema, new: Schema, path: str) -> None:
        old_struct, new_struct = _as_struct(old), _as_struct(new)
        if old_struct is not None and new_struct is not None:
            self._struct(old_struct, new_struct, path)
        elif old_struct is not None or new_struct is not None:
            self._report(path, BreakingKind.RETYPED_FIELD, f"{_brief(old)} -> {_brief(new)}")
        elif "enum" in old and "enum" in new:
            self._enum(old, new, path)
        elif "anyOf" in old and "anyOf" in new:
            self._union(old["anyOf"], new["anyOf"], path)
        else:
            self._leaf(old, new, path)

    def _struct(self, old: _Struct, new: _Struct, path: str) -> None:
        if old.array_like is not new.array_like:
            layouts = ("map", "array") if new.array_like else ("array", "map")
            self._report(path, BreakingKind.CHANGED_LAYOUT, "{} -> {}".format(*layouts))
            return
        removed = [name for name in old.fields if name not in new.fields]
        added = [name for name in new.fields if name not in old.fields]
        renamed = dict(zip(removed, added, strict=False))
        for old_name, new_name in renamed.items():
            self._report(_join(path, old_name), BreakingKind.RENAMED_FIELD, f"now {new_name!r}")
        for name in removed[len(renamed) :]:
            self._report(_join(path, name), BreakingKind.REMOVED_FIELD, "no longer present")
        for name in added[len(renamed) :]:
            if name in new.required:
                self._report(_join(path, name), BreakingKind.NEW_REQUIRED_FIELD, "has no default")
        for name, old_field in old.fields.items():
            if name in new.fields:
                self._field(name, old_field, new.fields[name], old, new, path)
        if old.array_like:
            self._layout(old, new, renamed, path)

    def _field(
        self, name: str, old_field: Schema, new_field: Schema, old: _Struct, new: _Struct, at: str
    ) -> None:
        path = _join(at, name)
        reported = len(self._out)
        self.schema(_without(old_field, "default"), _without(new_field, "default"), path)
        retyped = len(self._out) > reported  # a new type brings a new default: say it once
        was, now = old_field.get("default"), new_field.get("default")
        if name in new.required and name not in old.required:
            self._report(path, BreakingKind.NEW_REQUIRED_FIELD, "was optional, now required")
        elif name in old.required and name not in new.required:
            self._report(path, BreakingKind.CHANGED_DEFAULT, "was required, now has a default")
        elif was != now and not retyped:
            self._report(path, BreakingKind.CHANGED_DEFAULT, f"{was!r} -> {now!r}")

    def _layout(self, old: _Struct, new: _Struct, renamed: dict[str, str], path: str) -> None:
        """Array-like fields travel by position: every kept field must keep its index."""
        new_order = list(new.fields)
        moved = [
            name
            for index, name in enumerate(old.fields)
            if renamed.get(name, name) in new.fields
            and new_order.index(renamed.get(name, name)) != index
        ]
        if moved:
            self._report(path, BreakingKind.CHANGED_LAYOUT, "fields moved: " + ", ".join(moved))

    def _enum(self, old: Schema, new: Schema, path: str) -> None:
        old_values, new_values = old["enum"], new["enum"]
        gone = [v for v in old_values if v not in new_values]
        extra = [v for v in new_values if v not in old_values]
        if gone or extra:
            name = new.get("title") or old.get("title") or "enum"
            parts = [f"removed {gone!r}"] * bool(gone) + [f"added {extra!r}"] * bool(extra)
            self._report(path, BreakingKind.CHANGED_ENUM, f"{name}: " + ", ".join(parts))

    def _union(self, old: list[Schema], new: list[Schema], path: str) -> None:
        old_members = dict(self._members(old, self._old_defs))
        new_members = dict(self._members(new, self._new_defs))
        for key, member in old_members.items():
            if key in new_members:
                self.schema(member, new_members[key], path)
            else:
                self._report(path, BreakingKind.RETYPED_FIELD, f"union lost {key}")
        for key in new_members.keys() - old_members.keys():
            self._report(path, BreakingKind.RETYPED_FIELD, f"union gained {key}")

    def _members(self, members: list[Schema], defs: Schema) -> Iterator[tuple[str, Schema]]:
        """Union members keyed by what tells them apart on the wire: tag, or JSON type."""
        for member in members:
            node, name = self._resolve(member, defs)
            struct = _as_struct(node)
            if struct is None:
                yield ("enum" if "enum" in node else str(node.get("type", name))), member
                continue
            tags = [f["enum"][0] for f in struct.fields.values() if len(f.get("enum", ())) == 1]
            yield (f"struct {tags[0]!r}" if tags else f"struct {name}"), member

    def _leaf(self, old: Schema, new: Schema, path: str) -> None:
        for key in ("items", "additionalProperties", "propertyNames"):
            if isinstance(old.get(key), dict) and isinstance(new.get(key), dict):
                self.schema(old[key], new[key], f"{path}[]")
        old_items, new_items = old.get("prefixItems", []), new.get("prefixItems", [])
        for index, (old_item, new_item) in enumerate(zip(old_items, new_items, strict=False)):
            self.schema(old_item, new_item, f"{path}[{index}]")
        if _shallow(old) != _shallow(new):
            self._report(path, BreakingKind.RETYPED_FIELD, f"{_brief(old)} -> {_brief(new)}")


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _without(node: Schema, key: str) -> Schema:
    return {k: v for k, v in node.items() if k != key}


def _shallow(node: Schema) -> Schema:
    """The node's own constraints: nested schemas are compared on their own, docs not at all."""
    return {key: _own(key, value) for key, value in node.items() if key not in _DOC_KEYWORDS}


def _own(key: str, value: Any) -> Any:
    if isinstance(value, dict):
        return "<schema>"
    return len(value) if key == "prefixItems" else value
