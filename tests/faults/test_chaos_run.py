"""A short randomised schedule of kills and pauses over the whole stack."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from services.chaos import ChaosSettings, FaultKind, run_chaos, summary
from services.cli import main

pytestmark = pytest.mark.slow


def test_random_schedule_of_kills_and_pauses_keeps_every_guarantee(tmp_path: Path) -> None:
    settings = ChaosSettings(faults=8, workers=2, seed=3, settle_s=3.0)

    result = run_chaos(settings, tmp_path / "run")

    assert result.verdict.passed, summary(result.verdict)
    assert len(result.faults) == 8
    assert {fault.kind for fault in result.faults} == {FaultKind.KILL, FaultKind.PAUSE}
    counts = json.loads(result.counts_json())
    assert counts["passed"] is True
    assert counts["commands_issued"] == (
        counts["commands_applied"] + counts["commands_pending"] + counts["commands_unapplied"]
    )


def test_chaos_command_refuses_a_folder_with_files(tmp_path: Path) -> None:
    (tmp_path / "old.db").write_bytes(b"")

    assert main(["chaos", "--faults", "1", "--data-dir", str(tmp_path)]) == 2
