"""`leyline export tensorboard`: event files that TensorBoard's own reader loads back."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from sink_history import History
from sink_run import write_run
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from services.cli import main
from services.sink import TelemetryStore


@pytest.fixture
def exported(store: TelemetryStore, history: History, db_path: Path, tmp_path: Path) -> Path:
    write_run(store, history)
    directory = tmp_path / "runs" / "leyline"
    assert main(["export", "tensorboard", str(directory), "--db", str(db_path)]) == 0
    return directory


def _load(folder: Path) -> EventAccumulator:
    events = EventAccumulator(str(folder), size_guidance={"scalars": 0, "tensors": 0})
    events.Reload()
    return events


def _scalars(events: EventAccumulator, tag: str) -> list[tuple[int, float]]:
    return [(event.step, event.value) for event in events.Scalars(tag)]


def _texts(events: EventAccumulator, tag: str) -> list[tuple[int, str]]:
    return [
        (event.step, event.tensor_proto.string_val[0].decode())
        for event in events.Tensors(f"{tag}/text_summary")
    ]


def test_export_writes_one_run_folder_per_worker(exported: Path) -> None:
    assert sorted(folder.name for folder in exported.iterdir()) == ["w1", "w2"]


def test_epoch_scalars_are_stepped_by_epoch_at_the_send_time(exported: Path) -> None:
    w1 = _load(exported / "w1")
    assert _scalars(w1, "accuracy/val") == [(1, 40.0), (2, 55.0), (3, 60.0), (4, 62.0)]
    assert _scalars(w1, "accuracy/train") == [(1, 40.0), (2, 55.0), (3, 60.0), (4, 62.0)]
    assert [value for _, value in _scalars(w1, "loss/train")] == pytest.approx([1.0] * 4)
    assert [value for _, value in _scalars(w1, "loss/val")] == pytest.approx([1.1] * 4)
    walls = [event.wall_time for event in w1.Scalars("accuracy/val")]
    assert walls == sorted(walls) and walls[0] > 1.7e9  # bus send times, in seconds
    assert _scalars(_load(exported / "w2"), "accuracy/val") == [(1, 30.0)]


def test_seed_alpha_and_improvement_are_scalars_per_seed(exported: Path) -> None:
    w1 = _load(exported / "w1")
    # From the state reports at stage changes (1, 3) and the per-epoch SeedTelemetry (2, 4).
    assert _scalars(w1, "seed/w1-block2_post/alpha") == [(1, 0.0), (2, 0.0), (3, 0.5), (4, 0.75)]
    assert _scalars(w1, "seed/w1-block2_post/improvement") == [(1, 0.0), (3, 2.0)]


def test_seed_telemetry_is_a_curve_per_seed_and_epoch(exported: Path) -> None:
    w1 = _load(exported / "w1")
    seed = "seed/w1-block2_post"
    assert _scalars(w1, f"{seed}/accuracy") == [(2, 52.0), (4, 54.0)]
    assert _scalars(w1, f"{seed}/accuracy_delta") == [(2, 2.0), (4, 4.0)]
    assert _scalars(w1, f"{seed}/gradient_norm") == [(2, 1.0), (4, 2.0)]
    health = _scalars(w1, f"{seed}/gradient_health")
    assert [step for step, _ in health] == [2, 4]
    assert [value for _, value in health] == pytest.approx([0.9, 0.9])


def test_commands_and_stage_changes_are_texts_per_epoch(exported: Path) -> None:
    w1 = _load(exported / "w1")
    assert _texts(w1, "commands") == [
        (1, "- `GERMINATE` w1-block2_post: **APPLIED**"),
        (2, "- `CULL` w1-block3_post: **REJECTED**"),
    ]
    stages = dict(_texts(w1, "stages"))
    assert sorted(stages) == [1, 2, 3]
    assert stages[1] == "- block2_post (w1-block2_post): DORMANT -> GERMINATED"
    assert stages[2].splitlines()[0] == "- block2_post (w1-block2_post): GERMINATED -> TRAINING"
    assert (
        stages[2]
        .splitlines()[1]
        .startswith("- block3_post (w1-block3_post): DORMANT -> FOSSILIZED (illegal: ")
    )
    assert _texts(_load(exported / "w2"), "commands") == [
        (0, "- `GERMINATE` w2-block2_post: **no answer**")
    ]


def test_export_refuses_to_mix_with_an_earlier_export(
    exported: Path, db_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["export", "tensorboard", str(exported), "--db", str(db_path)]) == 2
    assert "already holds TensorBoard events" in capsys.readouterr().err
    assert len(list((exported / "w1").glob("events.out.tfevents.*"))) == 1


def test_export_without_tensorboard_names_the_extra(
    store: TelemetryStore,
    db_path: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for loaded in ("services.sink.tensorboard", "torch.utils.tensorboard"):
        monkeypatch.delitem(sys.modules, loaded, raising=False)
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # as if not installed
    assert main(["export", "tensorboard", str(tmp_path / "out"), "--db", str(db_path)]) == 2
    error = capsys.readouterr().err
    assert "needs tensorboard: pip install 'esper-leyline[tensorboard]'" in error
