"""A recorded run played into fresh services yields what the run yielded.

One `leyline up` stack (sink, controller, two workers, CURVE on) runs 30 epochs while `leyline
record` records its bus. Then, on fresh buses (new key directories, new ports):

- the workers' traffic (signals, hellos, acks, reports) is played into a fresh controller,
  which must issue the same commands: per worker the same sequence of types, targets,
  parameters, reasons and confidences. Command ids are excluded: each controller draws a
  random id prefix (so a restart never repeats one); the player answers the fresh controller's
  commands with the recorded acks under the live ids (`--answer-commands`). Timestamps are
  excluded: they are the controller's wall clock.
- everything is played into a fresh sink, whose `leyline report` text must equal the
  original sink's, less the sink's own events (it stores the peers it saw go silent and the
  rejections it made directly, never on the bus, so no recording holds them). The report has
  no wall-clock field (accuracies are ordered by send time, which the player's new headers
  keep in the recorded order).
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import pytest
from jsonschema import Draft202012Validator
from mcap.reader import make_reader
from service_processes import ENTRYPOINT, ServiceProcesses, query, stop_process, wait_until

from leyline import AdaptationCommand
from leyline.wire import REGISTRY
from services.observer.recording import read_recording, recording_summary
from services.sink import TelemetryStore, build_report, report_as_text
from services.stack import Stack, StackPlan, plan_stack

pytestmark = pytest.mark.slow

WORKERS = 2
EPOCHS = 30
RUN_DEADLINE_S = 240.0


@dataclass(frozen=True)
class RecordedRun:
    plan: StackPlan
    recording: Path
    logs: Path

    def log_tails(self) -> str:
        from service_processes import log_tails

        return log_tails(self.logs) + "\n" + log_tails(Path(self.plan.data_dir) / "logs")


def _env(plan: StackPlan, name: str) -> dict[str, str]:
    return next(env for service, _, env in plan.services if service == name)


@pytest.fixture(scope="module")
def recorded_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RecordedRun]:
    root = tmp_path_factory.mktemp("recorded-run")
    plan = plan_stack(WORKERS, EPOCHS, str(root / "run"))
    recording = root / "run.mcap"
    tools = ServiceProcesses(root / "tool-logs")
    recorder = tools.start(
        "record", [*ENTRYPOINT, "record", str(recording), "--data-dir", plan.data_dir], {}
    )
    log = tools.logs / "record.log"
    wait_until(lambda: "recording into" in log.read_text() or None, 30, "the recorder")
    stack = Stack(plan)
    stack.start()
    try:
        deadline = time.monotonic() + RUN_DEADLINE_S
        for process in stack.workers().values():
            process.wait(max(0.0, deadline - time.monotonic()))
        stack.stop()
        assert stop_process(recorder) == 0
        yield RecordedRun(plan, recording, tools.logs)
    finally:
        stack.stop()
        tools.close()


def _play(run: RecordedRun, target: StackPlan, *args: str) -> str:
    done = subprocess.run(
        [*ENTRYPOINT, "play", str(run.recording), "--data-dir", target.data_dir, *args],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def _commands(journal: Path) -> dict[str, list[dict[str, Any]]]:
    """Per worker, its commands in sequence order without their id and timestamp."""
    decoder = REGISTRY.decoder([AdaptationCommand])
    found: dict[str, list[dict[str, Any]]] = {}
    for worker, payload in query(
        journal, "SELECT worker, payload FROM commands ORDER BY worker, sequence"
    ):
        command = msgspec.to_builtins(decoder.decode(payload))
        del command["command_id"], command["timestamp"]
        found.setdefault(worker, []).append(command)
    return found


def test_the_recording_holds_every_channel_without_loss(recorded_run: RecordedRun) -> None:
    summary = recording_summary(recorded_run.recording)
    assert summary["gaps"] == "0" and summary["rejected"] == "{}"
    channels = {(m.header.sender, m.channel.value) for m in read_recording(recorded_run.recording)}
    for worker in ("w1", "w2"):
        assert {(worker, c) for c in ("sig", "ack", "tel")} <= channels
    assert {("controller", "cmd"), ("controller", "tel")} <= channels
    assert any(sender.startswith("w") and channel == "rep" for sender, channel in channels)


def test_every_recorded_message_matches_its_channels_json_schema(
    recorded_run: RecordedRun,
) -> None:
    """What Foxglove and other MCAP readers rely on: json messages valid under their schema."""
    checked: dict[str, int] = {}
    with recorded_run.recording.open("rb") as file:
        validators: dict[int, Draft202012Validator] = {}
        for schema, channel, message in make_reader(file).iter_messages():
            assert schema is not None and schema.encoding == "jsonschema"
            assert channel.message_encoding == "json"
            validator = validators.get(schema.id)
            if validator is None:
                document = json.loads(schema.data)
                Draft202012Validator.check_schema(document)
                validator = validators[schema.id] = Draft202012Validator(document)
            validator.validate(json.loads(message.data))
            checked[schema.name] = checked.get(schema.name, 0) + 1
    assert {"FastTrainingSignals.v1", "AdaptationCommand.v2", "CommandAck.v1"} <= set(checked)


def test_a_fresh_controller_fed_the_workers_traffic_issues_the_same_commands(
    recorded_run: RecordedRun, tmp_path: Path
) -> None:
    original = _commands(Path(recorded_run.plan.data_dir) / "controller-journal.db")
    assert original, "the recorded run issued no command"
    fresh = plan_stack(WORKERS, EPOCHS, str(tmp_path / "fresh"))
    services = ServiceProcesses(tmp_path / "logs")
    try:
        services.start_service("controller", "controller", _env(fresh, "controller"))
        intake = _env(fresh, "controller")["LEYLINE_CONTROLLER_INTAKE"]
        printed = _play(
            recorded_run,
            fresh,
            "--intake", f"controller@{intake}",
            "--sender", "w1", "--sender", "w2",
            "--channel", "sig", "--channel", "ack", "--channel", "rep",
            "--answer-commands",
            "--speed", "2",
        )  # fmt: skip
        assert "0 dropped, 0 acks unanswered" in printed
        assert services.stop("controller") == {"controller": 0}
    finally:
        services.close()
    replayed = _commands(Path(fresh.data_dir) / "controller-journal.db")
    assert replayed == original


def test_a_fresh_sink_fed_the_whole_recording_reports_the_same_run(
    recorded_run: RecordedRun, tmp_path: Path
) -> None:
    fresh = plan_stack(WORKERS, EPOCHS, str(tmp_path / "fresh"))
    services = ServiceProcesses(tmp_path / "logs")
    try:
        services.start_service("sink", "sink", _env(fresh, "sink"))
        intake = _env(fresh, "sink")["LEYLINE_SINK_INTAKE"]
        printed = _play(recorded_run, fresh, "--intake", f"sink@{intake}", "--fast")
        assert " 0 dropped" in printed
        assert services.stop("sink") == {"sink": 0}
    finally:
        services.close()
    # The sink's own events (peers it saw go silent, rejections it made) go into its store
    # directly, never onto the bus: no recording holds them, so the expected report leaves
    # them out (a copy of the original database without them).
    original_db = tmp_path / "original.db"
    with sqlite3.connect(recorded_run.plan.sink_db) as source, sqlite3.connect(original_db) as copy:
        source.backup(copy)
        copy.execute("DELETE FROM events WHERE sender = 'sink'")
    with TelemetryStore(original_db, create=False) as store:
        expected = report_as_text(build_report(store))
    with TelemetryStore(fresh.sink_db, create=False) as store:
        assert report_as_text(build_report(store)) == expected
    # The per-epoch seed telemetry too (stored since schema v3), seed by seed and epoch by epoch.
    seeds = "SELECT sender, seed_id, epoch, stage, alpha, gradient_norm FROM seed_telemetry"
    original = sorted(query(recorded_run.plan.sink_db, seeds))
    assert original, "the recorded run stored no seed telemetry"
    assert sorted(query(fresh.sink_db, seeds)) == original
