"""A run as a picture: per worker accuracy, slot lifecycles and commands; the decisions in time.

Needs matplotlib (the `plot` extra); nothing else in the sink imports this module. A `.html`
file gets the figure as inline SVG in a page of its own, anything else a PNG. Figures are made
without pyplot: no global state, no window, no display needed.
"""

from __future__ import annotations

import html
import io
from pathlib import Path
from typing import Any

import matplotlib
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

from leyline import SeedStage
from services.sink.timeline import CommandMark, RunTimeline, WorkerTimeline

#: One colour per lifecycle stage: growing stages cool, settled green, failed warm.
STAGE_COLOURS: dict[SeedStage, str] = {
    SeedStage.UNKNOWN: "#ffffff",
    SeedStage.DORMANT: "#e5e5e5",
    SeedStage.GERMINATED: "#a6d854",
    SeedStage.TRAINING: "#66c2a5",
    SeedStage.BLENDING: "#8da0cb",
    SeedStage.SHADOWING: "#b58bd6",
    SeedStage.PROBATIONARY: "#ffd92f",
    SeedStage.FOSSILIZED: "#1b7837",
    SeedStage.CULLED: "#d7301f",
    SeedStage.EMBARGOED: "#8c510a",
    SeedStage.RESETTING: "#969696",
}
#: One marker per command type; an unknown type gets a plain dot.
COMMAND_MARKERS = {
    "GERMINATE": "^",
    "ADVANCE_STAGE": ">",
    "CULL": "X",
    "SET_ALPHA": "s",
    "SET_LEARNING_RATE": "D",
    "PAUSE_SEED": "v",
    "RESUME_SEED": "P",
    "REQUEST_STATE": "o",
}
#: Edge colour of a command marker by what the worker answered (None: no answer stored).
OUTCOME_COLOURS = {"APPLIED": "#1b7837", "REJECTED": "#d7301f", None: "#7f7f7f"}

_ACCURACY_HEIGHT = 3.0
_STRIP_HEIGHT = 0.45
_DECISIONS_HEIGHT = 2.2
#: Commands of one kind sent this close together are one decision in the timeline.
_BURST_NS = 500_000_000


def draw(timeline: RunTimeline) -> Figure:
    """The whole run in one figure: a panel per worker, then the decisions over time."""
    workers = timeline.workers
    heights: list[float] = []
    for worker in workers:
        heights += [_ACCURACY_HEIGHT] + [_STRIP_HEIGHT] * len(worker.slots)
    heights.append(_DECISIONS_HEIGHT)
    figure = Figure(figsize=(11, 1.2 + 0.9 * sum(heights)), layout="constrained")
    grid = figure.add_gridspec(len(heights), 1, height_ratios=heights)
    row = 0
    for worker in workers:
        accuracy = figure.add_subplot(grid[row])
        strips = [
            figure.add_subplot(grid[row + 1 + i], sharex=accuracy) for i in range(len(worker.slots))
        ]
        _draw_worker(worker, accuracy, strips)
        row += 1 + len(strips)
    _draw_decisions(timeline, figure.add_subplot(grid[row]))
    figure.legend(handles=_legend(), loc="outside upper center", ncols=7, fontsize="small")
    return figure


def save(timeline: RunTimeline, path: Path) -> None:
    """Write the picture of `timeline` to `path`: HTML for a `.html` name, else PNG."""
    figure = draw(timeline)
    if path.suffix.lower() in (".html", ".htm"):
        svg = io.StringIO()
        with matplotlib.rc_context({"svg.fonttype": "none"}):  # text as text: searchable
            figure.savefig(svg, format="svg")
        path.write_text(_page(path.stem, svg.getvalue()), encoding="utf-8")
    else:
        figure.savefig(path, format="png", dpi=110)


def _draw_worker(worker: WorkerTimeline, accuracy: Any, strips: list[Any]) -> None:
    epochs = [point.epoch for point in worker.epochs]
    val = [p.val_accuracy for p in worker.epochs]
    accuracy.plot(epochs, val, color="#1f77b4", lw=1.8, marker="o", ms=2.5)
    accuracy.plot(
        epochs, [p.train_accuracy for p in worker.epochs], color="#1f77b4", lw=1, ls=":", alpha=0.7
    )
    accuracy.set_title(f"{worker.worker}: accuracy (%) per epoch", loc="left", fontsize="medium")
    accuracy.set_ylabel("accuracy %")
    accuracy.grid(alpha=0.3)
    for command in worker.commands:
        accuracy.axvline(command.epoch, color="#bbbbbb", lw=0.8, ls="--", zorder=0)
        accuracy.scatter(
            command.epoch,
            _accuracy_near(worker, command.epoch),
            marker=COMMAND_MARKERS.get(command.command_type, "o"),
            s=70,
            facecolor="white",
            edgecolor=OUTCOME_COLOURS.get(command.outcome, OUTCOME_COLOURS[None]),
            linewidth=1.8,
            zorder=3,
            clip_on=False,  # a command before the first epoch sits on the axis edge
        )
    end = max(epochs, default=0) + 1
    for slot, strip in zip(worker.slots, strips, strict=True):
        changes = [change for change in worker.stages if change.slot == slot]
        start, stage = 0, SeedStage.DORMANT
        for change in changes:
            _band(strip, start, change.epoch, stage)
            start, stage = change.epoch, change.to_stage
            if change.illegal is not None:
                strip.plot(change.epoch, 0.5, marker="x", color="black", ms=9, mew=2)
        _band(strip, start, end, stage)
        strip.set_yticks([0.5], [slot], fontsize="small")
        strip.set_ylim(0, 1)
        strip.tick_params(axis="x", labelbottom=strip is strips[-1])
    accuracy.tick_params(axis="x", labelbottom=not strips)
    (strips[-1] if strips else accuracy).set_xlabel("epoch")
    accuracy.set_xlim(0, end)
    accuracy.xaxis.set_major_locator(MaxNLocator(integer=True))


def _accuracy_near(worker: WorkerTimeline, epoch: int) -> float:
    """Validation accuracy at `epoch`, or at the nearest reported one (0 before any)."""
    nearest = min(worker.epochs, key=lambda point: abs(point.epoch - epoch), default=None)
    return nearest.val_accuracy if nearest is not None else 0.0


def _band(strip: Any, start: int, end: int, stage: SeedStage) -> None:
    if end > start:
        strip.broken_barh([(start, end - start)], (0, 1), color=STAGE_COLOURS[stage], lw=0)


def _draw_decisions(timeline: RunTimeline, axes: Any) -> None:
    """Each burst of like commands as one labelled marker at the second it was sent."""
    names = [worker.worker for worker in timeline.workers]
    for row, worker in enumerate(timeline.workers):
        for first, count in _bursts(worker.commands):
            seconds = (first.sent_ns - timeline.started_ns) / 1e9
            axes.scatter(
                seconds,
                row,
                marker=COMMAND_MARKERS.get(first.command_type, "o"),
                s=70,
                facecolor="white",
                edgecolor=OUTCOME_COLOURS.get(first.outcome, OUTCOME_COLOURS[None]),
                linewidth=1.8,
            )
            times = f" x{count}" if count > 1 else ""
            label = f"{first.command_type.lower()}{times}\n{first.reason}".rstrip()
            axes.annotate(
                label, (seconds, row), xytext=(7, 4), textcoords="offset points", fontsize="x-small"
            )
    axes.set_yticks(range(len(names)), names)
    axes.set_ylim(len(names) - 0.3, -0.7)  # the first worker on top, as in the panels above
    sent = [c.sent_ns for worker in timeline.workers for c in worker.commands]
    last = (max(sent, default=timeline.started_ns) - timeline.started_ns) / 1e9
    axes.set_xlim(0, max(last * 1.15, 1.0))  # room for the last label
    axes.set_xlabel("seconds since the run started")
    axes.set_title("controller decisions (commands sent)", loc="left", fontsize="medium")
    axes.grid(axis="x", alpha=0.3)


def _bursts(commands: list[CommandMark]) -> list[tuple[CommandMark, int]]:
    """Runs of commands alike in type, reason and outcome sent within `_BURST_NS` of the first."""
    bursts: list[tuple[CommandMark, int]] = []
    for command in commands:
        if bursts:
            first, count = bursts[-1]
            alike = (first.command_type, first.reason, first.outcome) == (
                command.command_type,
                command.reason,
                command.outcome,
            )
            if alike and command.sent_ns - first.sent_ns <= _BURST_NS:
                bursts[-1] = (first, count + 1)
                continue
        bursts.append((command, 1))
    return bursts


def _legend() -> list[Any]:
    stages = [
        Patch(color=colour, label=stage.name.lower())
        for stage, colour in STAGE_COLOURS.items()
        if stage is not SeedStage.UNKNOWN
    ]
    lines = [
        Line2D([], [], color="#1f77b4", lw=1.8, label="val accuracy"),
        Line2D([], [], color="#1f77b4", lw=1, ls=":", label="train accuracy"),
        Line2D([], [], ls="", marker="x", color="black", mew=2, label="illegal change"),
    ]
    commands = [
        Line2D([], [], ls="", marker=marker, mfc="white", mec="black", label=kind.lower())
        for kind, marker in COMMAND_MARKERS.items()
    ]
    outcomes = [
        Line2D([], [], ls="", marker="o", mfc="white", mec=colour, mew=1.8, label=label)
        for label, colour in zip(
            ("applied", "rejected", "no answer"), OUTCOME_COLOURS.values(), strict=True
        )
    ]
    return [*lines, *stages, *commands, *outcomes]


def _page(title: str, svg: str) -> str:
    """A self-contained HTML page around the figure: no scripts, nothing fetched."""
    svg = svg[svg.index("<svg") :]  # drop the XML prolog and doctype, invalid inside HTML
    name = html.escape(title)
    return (
        f'<!DOCTYPE html>\n<html lang="en">\n<head><meta charset="utf-8">'
        f"<title>{name}: leyline run</title></head>\n"
        f'<body style="margin:1em;font-family:sans-serif">\n<h1>{name}</h1>\n{svg}\n'
        "</body>\n</html>\n"
    )
