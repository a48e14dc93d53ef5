"""What the distribution declares: one version, and a core that needs neither torch nor sklearn.

The contracts and the bus install and run without the training stack: torch and scikit-learn
are the `worker` and `controller` extras, and `dev` (what `make test` installs) pulls both.
"""

from __future__ import annotations

import email.parser
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path
from typing import Any

import pytest
from setuptools import build_meta

import leyline

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "sklearn")
#: Run first in a child interpreter: importing either heavy package then fails at once.
BLOCK_HEAVY = "import sys\nfor name in {heavy!r}:\n    sys.modules[name] = None\n"


def pyproject() -> dict[str, Any]:
    with (ROOT / "pyproject.toml").open("rb") as file:
        return tomllib.load(file)


def run_without_heavy(program: str) -> subprocess.CompletedProcess[str]:
    source = BLOCK_HEAVY.format(heavy=HEAVY) + textwrap.dedent(program)
    return subprocess.run(
        [sys.executable, "-c", source],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT), "PATH": ""},
        timeout=120,
        check=False,
    )


def test_the_version_has_one_source_the_package_constant() -> None:
    config = pyproject()
    assert "version" not in config["project"] and "version" in config["project"]["dynamic"]
    dynamic = config["tool"]["setuptools"]["dynamic"]
    assert dynamic["version"] == {"attr": "leyline.LEYLINE_VERSION"}


@pytest.fixture(scope="module")
def metadata(tmp_path_factory: pytest.TempPathFactory) -> email.message.Message:
    """The wheel's METADATA, as setuptools builds it from pyproject.toml."""
    out = tmp_path_factory.mktemp("metadata")
    info = build_meta.prepare_metadata_for_build_wheel(str(out))
    text = (out / info / "METADATA").read_text(encoding="utf-8")
    return email.parser.Parser().parsestr(text)


def _requirements(metadata: email.message.Message) -> list[str]:
    return [str(line) for line in metadata.get_all("Requires-Dist") or []]


def test_the_built_version_is_the_package_constant(metadata: email.message.Message) -> None:
    assert metadata["Version"] == leyline.LEYLINE_VERSION


def test_the_core_requirements_exclude_torch_and_sklearn(metadata: email.message.Message) -> None:
    core = [line for line in _requirements(metadata) if "extra ==" not in line]
    assert core and not [line for line in core if line.startswith(("torch", "scikit-learn"))]


def test_the_worker_and_controller_extras_bring_them(metadata: email.message.Message) -> None:
    def extra(name: str) -> set[str]:
        marker = f'extra == "{name}"'
        return {line.split(";")[0].split("=")[0].rstrip("<>=!~ ") for line in
                _requirements(metadata) if marker in line}  # fmt: skip

    assert {"torch", "scikit-learn"} <= extra("worker")
    assert "torch" in extra("controller")
    dev = next(line for line in extra("dev") if line.startswith("esper-leyline["))
    assert {"worker", "controller"} <= set(dev.removeprefix("esper-leyline[")[:-1].split(","))


def test_contracts_and_bus_import_and_carry_a_message_without_torch_or_sklearn() -> None:
    ran = run_without_heavy(
        """
        import time
        import leyline, bus
        from bus import Channel
        from bus.testing import InProcessBus

        with InProcessBus() as hub:
            publisher = hub.publisher("w1")
            subscriber = hub.subscriber([(Channel.ACK, None)])
            hub.connect(publisher, subscriber)
            received = []
            subscriber.on(Channel.ACK, received.append)
            publisher.publish(Channel.ACK, leyline.WorkerHello(worker_id="w1"))
            deadline = time.monotonic() + 10.0
            while not received and time.monotonic() < deadline:
                subscriber.poll()
        print(received[0].message.worker_id)
        print(sorted(name for name, mod in sys.modules.items()
                     if mod is not None and name.split(".")[0] in ("torch", "sklearn")))
        """
    )
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.splitlines() == ["w1", "[]"]


def test_the_cli_runs_without_torch_and_names_the_extra_a_command_needs() -> None:
    ran = run_without_heavy(
        """
        from services.cli import main
        assert main(["schema", "check"]) == 0
        sys.exit(main(["worker", "--worker-id", "w1"]))
        """
    )
    assert ran.returncode == 2, ran.stderr
    assert "schema compatible" in ran.stdout
    assert "pip install 'esper-leyline[worker]'" in ran.stderr
