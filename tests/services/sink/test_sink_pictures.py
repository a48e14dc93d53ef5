"""Pictures of a run: the series they are drawn from, and the PNG and HTML files themselves."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from sink_history import History

from leyline import (
    AckOutcome,
    SeedStage,
    SeedStateReport,
    TelemetryEvent,
    TelemetryEventType,
)
from leyline.reports import SeedMetrics
from leyline.telemetry import SeedStageChanged
from services.cli import main
from services.sink import StoredMessage, TelemetryStore
from services.sink.plot import draw
from services.sink.timeline import build_timeline

S = SeedStage


def _stage(
    history: History, worker: str, epoch: int, before: SeedStage, after: SeedStage, slot: str
) -> StoredMessage:
    seed = f"{worker}-{slot}"
    payload = SeedStageChanged(seed_id=seed, from_stage=before, to_stage=after)
    event = TelemetryEvent(
        event_type=TelemetryEventType.SEED_STAGE_CHANGED,
        payload=payload,
        seed_id=seed,
        slot_id=slot,
        epoch=epoch,
    )
    return history.event(worker, event)


def _seed_report(history: History, worker: str, stage: SeedStage, alpha: float) -> StoredMessage:
    metrics = SeedMetrics(current_alpha=alpha, total_improvement=alpha * 4)
    report = SeedStateReport(
        seed_id=f"{worker}-block2_post", slot_id="block2_post", stage=stage, metrics=metrics
    )
    return history.stored("rep", worker, worker, report)


@pytest.fixture
def run(store: TelemetryStore, history: History) -> TelemetryStore:
    """w1: four epochs (epoch 2 reported twice), a seed that blends in, a refused cull; w2 idle."""
    germinate = history.germinate_command("w1-block2_post")
    cull = history.cull_command("w1-block3_post")
    store.write_batch(
        [
            history.epoch("w1", 1, 40.0),
            history.command("w1", germinate),
            history.ack("w1", germinate, AckOutcome.APPLIED),
            _stage(history, "w1", 1, S.DORMANT, S.GERMINATED, "block2_post"),
            _seed_report(history, "w1", S.GERMINATED, 0.0),
            history.epoch("w1", 2, 50.0),
            history.epoch("w1", 2, 55.0),  # trained again after a restart: this one stands
            _stage(history, "w1", 2, S.GERMINATED, S.TRAINING, "block2_post"),
            _stage(history, "w1", 2, S.DORMANT, S.FOSSILIZED, "block3_post"),  # illegal
            history.command("w1", cull),
            history.ack("w1", cull, AckOutcome.REJECTED, reason="ILLEGAL_TRANSITION"),
            history.command("w1", cull),  # resent: still one decision
            history.epoch("w1", 3, 60.0),
            _stage(history, "w1", 3, S.TRAINING, S.BLENDING, "block2_post"),
            _seed_report(history, "w1", S.BLENDING, 0.5),
            history.epoch("w1", 4, 62.0),
            history.command("w2", history.germinate_command("w2-block2_post")),  # no answer
            history.epoch("w2", 1, 30.0),
        ]
    )
    return store


def test_timeline_places_everything_on_the_worker_epoch_axis(run: TelemetryStore) -> None:
    timeline = build_timeline(run)
    w1, w2 = timeline.workers
    assert (w1.worker, w2.worker) == ("w1", "w2")
    assert [(p.epoch, p.val_accuracy) for p in w1.epochs] == [
        (1, 40.0),
        (2, 55.0),
        (3, 60.0),
        (4, 62.0),
    ]
    assert w1.slots == ["block2_post", "block3_post"]
    assert [(c.slot, c.epoch, c.to_stage, c.illegal is not None) for c in w1.stages] == [
        ("block2_post", 1, S.GERMINATED, False),
        ("block2_post", 2, S.TRAINING, False),
        ("block3_post", 2, S.FOSSILIZED, True),
        ("block2_post", 3, S.BLENDING, False),
    ]
    assert [(c.command_type, c.epoch, c.outcome) for c in w1.commands] == [
        ("GERMINATE", 1, "APPLIED"),
        ("CULL", 2, "REJECTED"),
    ]
    assert [(c.command_type, c.epoch, c.outcome) for c in w2.commands] == [("GERMINATE", 0, None)]
    assert [(s.epoch, s.stage, s.alpha, s.improvement) for s in w1.seeds] == [
        (1, S.GERMINATED, 0.0, 0.0),
        (3, S.BLENDING, 0.5, 2.0),
    ]
    assert timeline.started_ns == w1.epochs[0].sent_ns


def test_figure_has_a_panel_and_a_band_per_slot_and_a_marker_per_command(
    run: TelemetryStore,
) -> None:
    figure = draw(build_timeline(run))
    axes = figure.axes
    # w1: accuracy + two slot strips; w2: accuracy, no slots; then the decisions.
    assert len(axes) == 5
    w1_accuracy, w1_block2, w1_block3, w2_accuracy, decisions = axes
    assert w1_accuracy.get_title(loc="left").startswith("w1")
    assert w2_accuracy.get_title(loc="left").startswith("w2")
    assert [line.get_ydata().tolist() for line in w1_accuracy.get_lines()[:1]] == [
        [40.0, 55.0, 60.0, 62.0]
    ]
    # Bands: dormant, germinated, training, blending (to the end) on block2; dormant, fossilized.
    assert _band_spans(w1_block2) == [(0, 1), (1, 2), (2, 3), (3, 5)]
    assert _band_spans(w1_block3) == [(0, 2), (2, 5)]
    assert [t.get_text() for t in w1_block2.get_yticklabels()] == ["block2_post"]
    assert len(w1_accuracy.collections) == 2  # the germinate and the (resent once) cull
    assert len(decisions.collections) == 3
    assert [t.get_text() for t in decisions.get_yticklabels()] == ["w1", "w2"]


def _band_spans(strip: object) -> list[tuple[int, int]]:
    spans = []
    for collection in strip.collections:  # type: ignore[attr-defined]
        for path in collection.get_paths():
            xs = path.vertices[:, 0]
            spans.append((round(xs.min()), round(xs.max())))
    return sorted(spans)


def test_report_plot_writes_a_png(run: TelemetryStore, db_path: Path, tmp_path: Path) -> None:
    picture = tmp_path / "run.png"
    assert main(["report", "--db", str(db_path), "--plot", str(picture)]) == 0
    data = picture.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    assert width == 11 * 110 and height > 600  # 11 inches at 110 dpi, panels stacked


def test_report_plot_writes_a_self_contained_html_page(
    run: TelemetryStore, db_path: Path, tmp_path: Path
) -> None:
    page = tmp_path / "run.html"
    assert main(["report", "--db", str(db_path), "--plot", str(page)]) == 0
    text = page.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>") and text.rstrip().endswith("</html>")
    assert text.count("<svg") == 1 and "<?xml" not in text
    assert "<script" not in text
    assert "w1: accuracy" in text and "block3_post" in text  # text stays text: searchable
