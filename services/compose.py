"""The compose file's services as data, so tests can run each one's exact command as a process.

Reads the configuration `docker-compose config` resolves (anchors, overrides, defaults); with no
`docker-compose` binary, a single file is read directly, where YAML itself resolves the anchors
and merge keys. Either way needs PyYAML (the `dev` extra).
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import msgspec

from leyline import LeylineError

#: The image's ENTRYPOINT, which every service's command is an argument list to.
ENTRYPOINT = ("leyline",)
LOOPBACK = "127.0.0.1"


class ComposeError(LeylineError):
    """The compose files cannot be resolved or read."""


class ComposeService(msgspec.Struct, frozen=True, kw_only=True):
    """One service: what it runs, with which environment, from which image, mounting what."""

    name: str
    image: str | None
    build: str | None
    command: tuple[str, ...]
    environment: dict[str, str]
    #: (volume, mount target) pairs; services mounting one volume share its files.
    volumes: tuple[tuple[str, str], ...]
    depends_on: tuple[str, ...]
    #: The dependencies that must have run to completion first (one-shot services).
    completed: tuple[str, ...] = ()


def _load_yaml(text: str) -> dict[str, Any]:
    try:
        import yaml
    except ImportError:
        raise ComposeError("reading compose files needs PyYAML (pip install pyyaml)") from None
    document = yaml.safe_load(text)
    if not isinstance(document, dict):
        raise ComposeError("a compose file must be a mapping")
    return document


def compose_config(files: Sequence[Path], binary: str = "docker-compose") -> dict[str, Any]:
    """The resolved compose configuration of `files` (later files override earlier ones)."""
    executable = shutil.which(binary)
    if executable is None:
        if len(files) != 1:
            raise ComposeError(f"merging {len(files)} compose files needs {binary}")
        return _load_yaml(files[0].read_text())
    argv = [executable]
    for path in files:
        argv += ["-f", str(path)]
    done = subprocess.run([*argv, "config"], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise ComposeError(f"{binary} config failed: {done.stderr.strip()}")
    return _load_yaml(done.stdout)


def _environment(raw: Mapping[str, object] | Sequence[str] | None) -> dict[str, str]:
    if raw is None:
        return {}
    if isinstance(raw, Mapping):
        return {key: "" if value is None else str(value) for key, value in raw.items()}
    return dict(item.partition("=")[::2] for item in raw)


def _volume(volume: str | Mapping[str, str]) -> tuple[str, str]:
    if isinstance(volume, Mapping):
        return volume["source"], volume["target"]
    source, target = volume.split(":")[:2]
    return source, target


def _service(name: str, raw: Mapping[str, Any]) -> ComposeService:
    build = raw.get("build")
    command = raw.get("command", ())
    depends = raw.get("depends_on", ())
    conditions = depends if isinstance(depends, Mapping) else {}
    return ComposeService(
        name=name,
        image=raw.get("image"),
        build=build.get("context") if isinstance(build, Mapping) else build,
        command=tuple(command.split() if isinstance(command, str) else command),
        environment=_environment(raw.get("environment")),
        volumes=tuple(_volume(v) for v in raw.get("volumes", ())),
        depends_on=tuple(depends),
        completed=tuple(
            name
            for name, condition in conditions.items()
            if condition.get("condition") == "service_completed_successfully"
        ),
    )


def compose_services(
    files: Sequence[Path], binary: str = "docker-compose"
) -> dict[str, ComposeService]:
    """Every service of the resolved configuration of `files`, by name."""
    services = compose_config(files, binary).get("services") or {}
    return {name: _service(name, raw) for name, raw in services.items()}


def local_process(
    service: ComposeService,
    peers: Sequence[str],
    data_root: Path,
    entrypoint: Sequence[str] = ENTRYPOINT,
) -> tuple[list[str], dict[str, str]]:
    """The argv and environment that run `service` as a process on this machine.

    Addresses naming a peer service or every interface become loopback (so do bare host
    settings, such as a replay host naming the service itself), and paths under a volume's
    mount move under `data_root/<volume>` (so services sharing a volume share its files).
    Command arguments move the same way. The environment holds only the service's own
    variables; merge it over `os.environ`.
    """
    hosts = {f"//{peer}:" for peer in peers} | {"//0.0.0.0:"}

    def local(value: str) -> str:
        for host in hosts:
            value = value.replace(host, f"//{LOOPBACK}:")
        for volume, target in service.volumes:
            if value == target or value.startswith(target.rstrip("/") + "/"):
                value = str(data_root / volume) + value[len(target.rstrip("/")) :]
        return value

    def setting(value: str) -> str:
        return LOOPBACK if value in peers or value == "0.0.0.0" else local(value)

    environment = {key: setting(value) for key, value in service.environment.items()}
    return [*entrypoint, *(local(arg) for arg in service.command)], environment
