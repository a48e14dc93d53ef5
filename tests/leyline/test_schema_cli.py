"""`leyline schema show|export|lock|check`: outputs and exit codes, through the real CLI entry."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from leyline.registry import tag_of
from leyline.schema import DEFAULT_LOCK_PATH, lock, render
from leyline.wire import REGISTRY
from services.cli import main

#: Every tag the registry reads: each current major and each older one it upgrades.
READABLE = sorted(
    tag_of(cls)
    for entry in REGISTRY.entries().values()
    for cls in (entry.cls, *(upgrade.legacy for upgrade in entry.upgrades))
)
N_TAGS = len(READABLE)


def write(path: Path, document: dict[str, Any]) -> Path:
    path.write_text(render(document), encoding="utf-8")
    return path


def test_check_passes_against_the_committed_lock(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schema", "check"]) == 0
    assert capsys.readouterr().out.splitlines()[0] == f"schema compatible: {N_TAGS} tags"


def test_lock_writes_the_current_lock_and_check_then_passes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "schema.lock.json"
    assert main(["schema", "lock", "--lock", str(target)]) == 0
    assert target.read_text(encoding="utf-8") == render(lock())
    assert main(["schema", "check", "--lock", str(target)]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == f"schema compatible: {N_TAGS} tags"


def test_the_default_lock_path_is_inside_the_package() -> None:
    assert DEFAULT_LOCK_PATH.parent.name == "leyline"
    assert DEFAULT_LOCK_PATH.name == "schema.lock.json"


def test_check_fails_naming_each_breaking_change_on_its_own_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A lock that still has a field and a tag the code dropped: as if both had been removed."""
    locked = copy.deepcopy(lock())
    locked["$defs"]["SeedMetrics"]["properties"]["legacy_score"] = {"type": "number"}
    locked["$defs"]["SeedMetrics"]["required"].append("legacy_score")
    locked["tags"]["Retired.v1"] = locked["tags"]["SeedTelemetry.v1"]
    assert main(["schema", "check", "--lock", str(write(tmp_path / "old.json", locked))]) == 1
    captured = capsys.readouterr()
    assert sorted(captured.out.splitlines()) == [
        "Retired.v1: removed tag: no longer registered",
        "SeedStateReport.v1: metrics.legacy_score: removed field: no longer present",
    ]
    assert "2 breaking change(s)" in captured.err


def test_check_passes_but_says_when_the_lock_is_behind(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    locked = copy.deepcopy(lock())
    del locked["tags"]["SeedTelemetry.v1"]
    assert main(["schema", "check", "--lock", str(write(tmp_path / "old.json", locked))]) == 0
    out = capsys.readouterr().out
    assert f"schema compatible: {N_TAGS} tags" in out
    assert "leyline schema lock" in out


def test_check_without_a_lock_fails(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schema", "check", "--lock", str(tmp_path / "missing.json")]) == 1
    assert "cannot read the schema lock" in capsys.readouterr().err


def test_export_writes_the_json_schema_of_every_tag(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "schema.json"
    assert main(["schema", "export", "--out", str(out)]) == 0
    exported = json.loads(out.read_text(encoding="utf-8"))
    assert sorted(exported["tags"]) == READABLE
    assert main(["schema", "export"]) == 0
    assert json.loads(capsys.readouterr().out) == exported


def test_show_lists_every_tag(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schema", "show"]) == 0
    out = capsys.readouterr().out
    for tag in REGISTRY.entries():
        assert tag in out
