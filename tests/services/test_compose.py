"""The compose files: valid for compose v1, one image, distinct workers, loadable settings."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bus import MetricsServer
from services.compose import ComposeService, compose_config, compose_services, local_process
from services.config import (
    SECTIONS,
    BusConfig,
    ControllerConfig,
    SinkConfig,
    WorkerConfig,
    load_config,
)

ROOT = Path(__file__).resolve().parents[2]
BASE = ROOT / "docker-compose.yml"
GPU = ROOT / "docker-compose.gpu.yml"
SERVICES = {"keys", "sink", "controller", "worker-1", "worker-2"}

pytest.importorskip("yaml", reason="reading compose files needs PyYAML")
needs_compose = pytest.mark.skipif(
    shutil.which("docker-compose") is None,
    reason="docker-compose (Debian package docker-compose, compose v1) is not installed",
)


@pytest.fixture(scope="module")
def services() -> dict[str, ComposeService]:
    return compose_services([BASE])


def section_of(service: ComposeService) -> str:
    return service.command[0]


@needs_compose
@pytest.mark.parametrize("files", [[BASE], [BASE, GPU]], ids=["base", "gpu"])
def test_docker_compose_accepts_the_files(files: list[Path]) -> None:
    argv = ["docker-compose"] + [arg for path in files for arg in ("-f", str(path))]
    done = subprocess.run([*argv, "config", "-q"], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr


def test_the_stack_is_a_sink_a_controller_and_two_workers(
    services: dict[str, ComposeService],
) -> None:
    assert set(services) == SERVICES
    assert {name: s.command for name, s in services.items()} == {
        "keys": ("keys", "init", "--workers", "2", "--dir", "/keys"),
        "sink": ("sink",),
        "controller": ("controller",),
        "worker-1": ("worker",),
        "worker-2": ("worker",),
    }


def test_every_service_runs_from_one_image_and_build(
    services: dict[str, ComposeService],
) -> None:
    assert len({(s.image, s.build) for s in services.values()}) == 1
    assert next(iter(services.values())).build is not None


def test_the_workers_differ_only_in_identity(services: dict[str, ComposeService]) -> None:
    one, two = services["worker-1"].environment, services["worker-2"].environment
    ids = {load_config(WorkerConfig, "worker", env=env).id for env in (one, two)}
    assert len(ids) == 2
    differing = {key for key in one.keys() | two.keys() if one.get(key) != two.get(key)}
    assert differing == {
        "LEYLINE_WORKER_ID",
        "LEYLINE_WORKER_SEED",
        "LEYLINE_BUS_METRICS_PORT",
        "LEYLINE_BUS_REPLAY_ADVERTISE",
    }


def test_every_replay_window_is_announced_by_service_name_on_every_interface(
    services: dict[str, ComposeService], tmp_path: Path
) -> None:
    for name, service in services.items():
        if section_of(service) not in SECTIONS:
            continue  # a one-shot tool, not a node on the bus
        bus = load_config(BusConfig, "bus", env=service.environment)
        assert (bus.replay_bind, bus.replay_advertise) == ("0.0.0.0", name)
        local = load_config(
            BusConfig, "bus", env=local_process(service, list(services), tmp_path)[1]
        )
        assert (local.replay_bind, local.replay_advertise) == ("127.0.0.1", "127.0.0.1")


def test_every_service_shares_the_one_key_volume(services: dict[str, ComposeService]) -> None:
    """The keys service writes the stack's keys; every other service reads them at /keys."""
    assert ("keys", "/keys") in services["keys"].volumes
    for name, service in services.items():
        if name != "keys":
            assert ("keys", "/keys") in service.volumes, name
            assert service.environment["LEYLINE_BUS_KEYS_DIR"] == "/keys", name
    assert services["sink"].completed == ("keys",)


def test_every_service_environment_is_valid_configuration(
    services: dict[str, ComposeService],
) -> None:
    for service in services.values():
        if service.command[0] == "keys":
            continue
        load_config(BusConfig, "bus", env=service.environment)
        section = section_of(service)
        load_config(SECTIONS[section], section, env=service.environment)


def test_workers_connect_where_the_controller_and_sink_bind(
    services: dict[str, ComposeService], tmp_path: Path
) -> None:
    def settings(name: str) -> dict[str, str]:
        return local_process(services[name], list(services), tmp_path)[1]

    sink = load_config(SinkConfig, "sink", env=settings("sink"))
    controller = load_config(ControllerConfig, "controller", env=settings("controller"))
    worker = load_config(WorkerConfig, "worker", env=settings("worker-1"))
    assert worker.commands == f"controller@{controller.commands}"
    assert worker.intake == (f"controller@{controller.intake}", f"sink@{sink.intake}")
    assert controller.sink == f"sink@{sink.intake}"


def test_local_processes_get_loopback_hosts_and_their_own_data_dirs(
    services: dict[str, ComposeService], tmp_path: Path
) -> None:
    argv, env = local_process(services["worker-2"], list(services), tmp_path)
    assert argv == ["leyline", "worker"]
    assert env["LEYLINE_WORKER_COMMANDS"] == "controller@tcp://127.0.0.1:5550"
    assert env["LEYLINE_WORKER_INTAKE"] == (
        '["controller@tcp://127.0.0.1:5551","sink@tcp://127.0.0.1:5552"]'
    )
    assert env["LEYLINE_WORKER_DATA_DIR"] == str(tmp_path / "worker-2-data")
    assert env["LEYLINE_BUS_KEYS_DIR"] == str(tmp_path / "keys")
    _, sink_env = local_process(services["sink"], list(services), tmp_path)
    assert sink_env["LEYLINE_SINK_DB"] == str(tmp_path / "sink-data" / "sink.db")


def test_metrics_ports_are_distinct_so_services_can_share_one_host(
    services: dict[str, ComposeService],
) -> None:
    ports = [s.environment["LEYLINE_BUS_METRICS_PORT"] for n, s in services.items() if n != "keys"]
    assert len(set(ports)) == len(ports)


@needs_compose
def test_the_gpu_override_gives_only_the_controller_one_gpu() -> None:
    resolved = compose_config([BASE, GPU])["services"]
    (device,) = resolved["controller"]["deploy"]["resources"]["reservations"]["devices"]
    assert (device["driver"], device["count"], device["capabilities"]) == ("nvidia", 1, ["gpu"])
    env = resolved["controller"]["environment"]
    assert load_config(ControllerConfig, "controller", env=env).device == "cuda"
    assert all("deploy" not in resolved[name] for name in SERVICES - {"controller"})


def healthcheck(test: list[str], port: int | None) -> int:
    """Run a compose healthcheck command here, against `port` (None: a port nobody serves)."""
    assert test[:2] == ["CMD", "python"]
    if port is None:
        server = MetricsServer([], {}, 0)
        port = server.port
        server.close()
    env = {**os.environ, "LEYLINE_BUS_METRICS_PORT": str(port)}
    return subprocess.run([sys.executable, *test[2:]], env=env, check=False).returncode


def test_the_healthcheck_passes_when_metrics_are_served_and_fails_when_not() -> None:
    resolved = compose_config([BASE])["services"]
    tests = {str(resolved[name]["healthcheck"]["test"]) for name in SERVICES - {"keys"}}
    assert len(tests) == 1
    test = resolved["sink"]["healthcheck"]["test"]
    server = MetricsServer([], {"service": "sink"}, 0)
    try:
        assert healthcheck(test, server.port) == 0
    finally:
        server.close()
    assert healthcheck(test, None) != 0


@needs_compose
def test_reading_the_file_directly_agrees_with_docker_compose(
    services: dict[str, ComposeService],
) -> None:
    direct = compose_services([BASE], binary="no-such-docker-compose")
    assert {n: (s.command, s.environment, s.volumes) for n, s in direct.items()} == {
        n: (s.command, s.environment, s.volumes) for n, s in services.items()
    }
