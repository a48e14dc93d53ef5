"""`leyline up` starts a new run each time, keeping the last one's files aside."""

from __future__ import annotations

from pathlib import Path

from services.stack import archive_previous_run


def test_a_new_run_moves_the_last_runs_files_aside(tmp_path: Path) -> None:
    (tmp_path / "sink.db").write_bytes(b"events")
    (tmp_path / "controller-journal.db").write_bytes(b"journal")
    (tmp_path / "controller-journal.db-wal").write_bytes(b"wal")
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "w1.pt").write_bytes(b"weights")
    (tmp_path / "notes.txt").write_text("the user's own file stays")

    archive = archive_previous_run(tmp_path)

    assert archive is not None and archive.parent == tmp_path / "previous-runs"
    assert sorted(p.name for p in archive.iterdir()) == [
        "checkpoints",
        "controller-journal.db",
        "controller-journal.db-wal",
        "sink.db",
    ]
    assert (archive / "checkpoints" / "w1.pt").read_bytes() == b"weights"
    assert not (tmp_path / "sink.db").exists() and not (tmp_path / "checkpoints").exists()
    assert (tmp_path / "notes.txt").exists()
    # Nothing left to move: the next call finds no previous run.
    assert archive_previous_run(tmp_path) is None


def test_an_empty_or_missing_folder_has_no_previous_run(tmp_path: Path) -> None:
    assert archive_previous_run(tmp_path / "not-there") is None
    assert archive_previous_run(tmp_path) is None
