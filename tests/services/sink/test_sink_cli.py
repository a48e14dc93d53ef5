"""`leyline events` and `leyline report`: output and exit codes."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest
from sink_history import History

from leyline import AckOutcome, SeedStage, TelemetryEvent
from services.cli import main
from services.sink import RunReport, TelemetryStore

S = SeedStage


@pytest.fixture
def db(db_path: Path, history: History) -> str:
    command = history.germinate_command("s1")
    with TelemetryStore(db_path) as store:
        store.write_batch(
            [
                history.epoch("w1", 1, 40.0),
                history.command("w1", command),
                history.ack("w1", command, AckOutcome.APPLIED),
                history.germinated("w1", "s1"),
                history.stage("w1", "s1", S.DORMANT, S.GERMINATED),
                history.stage("w1", "s1", S.GERMINATED, S.FOSSILIZED),
                history.epoch("w2", 1, 30.0),
            ]
        )
    return str(db_path)


def test_events_prints_an_aligned_table(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["events", "--db", db]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == [
        "sent", "at", "sender", "seq", "event", "seed", "slot", "epoch", "severity", "illegal",
    ]  # fmt: skip
    assert len(lines) == 6
    assert lines[1].split() == [
        "2026-01-01T12:00:01.000+00:00", "w1", "1", "EPOCH_COMPLETED", "-", "-", "1", "info",
    ]  # fmt: skip
    assert "GERMINATED -> FOSSILIZED is not a legal transition" in lines[4]
    assert lines[1].index("w1") == lines[0].index("sender")


def test_events_json_lines_carry_the_stored_message(
    db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["events", "--db", db, "--format", "json", "--type", "epoch_completed"]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = [msgspec.json.decode(line) for line in lines]
    assert [(row["sender"], row["event_type"]) for row in rows] == [
        ("w1", "EPOCH_COMPLETED"),
        ("w2", "EPOCH_COMPLETED"),
    ]
    assert rows[0]["sent_at"] == "2026-01-01T12:00:01Z"
    event = msgspec.convert(rows[0]["message"], TelemetryEvent)
    assert event.payload.val_accuracy == 40.0  # type: ignore[union-attr]


def test_events_filters_by_worker_seed_time_and_limit(
    db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    def count(*flags: str) -> int:
        assert main(["events", "--db", db, "--format", "json", *flags]) == 0
        return len(capsys.readouterr().out.splitlines())

    assert count("--worker", "w2") == 1
    assert count("--seed", "s1") == 3
    assert count("--since", "2026-01-01T12:00:04", "--until", "2026-01-01T12:00:06Z") == 2
    assert count("--limit", "2") == 2


def test_events_on_a_missing_db_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nowhere.db"
    assert main(["events", "--db", str(missing)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == f"leyline events: error: no sink database at {missing}\n"
    assert not missing.exists()


@pytest.mark.parametrize(
    "flags",
    [["--type", "SPROUTED"], ["--since", "yesterday"], ["--limit", "0"], ["--format", "csv"]],
)
def test_events_refuses_bad_flags_with_exit_2(
    db: str, flags: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["events", "--db", db, *flags])
    assert exited.value.code == 2
    assert "error:" in capsys.readouterr().err


def test_report_json_is_one_machine_readable_object(
    db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["report", "--db", db, "--json"]) == 0
    out = capsys.readouterr().out
    assert len(out.splitlines()) == 1
    report = msgspec.json.decode(out, type=RunReport)
    w1 = report.workers[0]
    assert (w1.worker, w1.commands_issued, w1.commands_applied, w1.illegal_stage_changes) == (
        "w1",
        1,
        1,
        1,
    )
    assert [w.worker for w in report.workers] == ["w1", "w2"]


def test_report_text_lists_each_worker(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", "--db", db]) == 0
    rows = [line.split()[0] for line in capsys.readouterr().out.splitlines()[1:3]]
    assert rows == ["w1", "w2"]


def test_report_on_a_missing_db_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["report", "--db", str(tmp_path / "none.db")]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_default_db_is_under_leyline_data_in_the_working_directory(
    db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(Path(db).parents[1])
    assert main(["report", "--json"]) == 0
    assert '"worker":"w1"' in capsys.readouterr().out
    monkeypatch.chdir(tmp_path / "leyline-data")
    assert main(["events"]) == 2
