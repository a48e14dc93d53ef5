"""Pictures of a run: the series they are drawn from, and the PNG and HTML files themselves."""

from __future__ import annotations

import struct
import subprocess
import sys
from pathlib import Path

import pytest
from sink_history import History
from sink_run import write_run

from leyline import SeedStage
from services.cli import main
from services.sink import TelemetryStore
from services.sink.plot import draw
from services.sink.timeline import build_timeline

S = SeedStage


@pytest.fixture
def run(store: TelemetryStore, history: History) -> TelemetryStore:
    write_run(store, history)
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


def test_the_optional_extras_load_only_when_asked_for() -> None:
    """`import leyline`, `import bus` and the CLI itself work without the plot and export extras."""
    probe = (
        "import sys, leyline, bus, services.sink, services.cli;"
        "services.cli.build_parser();"
        "print(sorted(m for m in ('matplotlib', 'tensorboard', 'prometheus_client', 'jsonschema')"
        " if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120
    )
    assert result.stdout.strip() == "[]"


def test_report_plot_without_matplotlib_names_the_extra(
    run: TelemetryStore,
    db_path: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.delitem(sys.modules, "services.sink.plot", raising=False)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if not installed
    assert main(["report", "--db", str(db_path), "--plot", str(tmp_path / "run.png")]) == 2
    assert "needs matplotlib: pip install 'esper-leyline[plot]'" in capsys.readouterr().err
    assert not (tmp_path / "run.png").exists()


def test_report_plot_into_a_missing_folder_is_a_clear_error(
    run: TelemetryStore, db_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "no-such-folder" / "run.png"
    assert main(["report", "--db", str(db_path), "--plot", str(target)]) == 2
    assert f"cannot write {target}" in capsys.readouterr().err
