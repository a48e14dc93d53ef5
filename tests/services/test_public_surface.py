"""The public surface: each package's and topical module's `__all__` names what it exports.

`leyline` and `bus` are pinned name by name, so a change to what users import is deliberate;
every package and module of leyline, bus and services that has one is held to the same rules
(names exist, sorted and unique, no private name or module).
"""

from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType

import pytest

#: `leyline`: the contracts a peer speaks and handles.
LEYLINE = [
    "LEYLINE_VERSION",
    "AckOutcome",
    "AckReason",
    "AdaptationCommand",
    "BudgetError",
    "CommandAck",
    "CommandType",
    "ContractError",
    "FastTrainingSignals",
    "FieldReport",
    "Heartbeat",
    "LeylineError",
    "LifecycleError",
    "LifecycleGuard",
    "Message",
    "Ready",
    "RejectReason",
    "ReplayDone",
    "ReplayRequest",
    "RiskLevel",
    "SeedMetrics",
    "SeedStage",
    "SeedStateReport",
    "SeedTelemetry",
    "Severity",
    "TelemetryEvent",
    "TelemetryEventType",
    "TelemetryPayload",
    "TrainingMetrics",
    "TrainingSignals",
    "Verdict",
    "WorkerHello",
    "new_id",
]

#: `bus`: what a service wires together.
BUS = [
    "CHANNEL_CONTRACTS",
    "Channel",
    "Curve",
    "Envelope",
    "Gap",
    "MetricsServer",
    "NotReadyError",
    "Proxy",
    "Publisher",
    "Rejection",
    "ReplayClient",
    "Role",
    "SecurityError",
    "SemanticGuard",
    "SocketOptions",
    "Subscriber",
    "Subscription",
    "missing",
    "ready",
    "topic",
]


#: The topical public modules beside each root (docs/contracts.md and docs/bus.md list them).
TOPICAL = [
    *(f"leyline.{name}" for name in ("actions", "budgets", "features", "gates", "lifecycle")),
    *(f"leyline.{name}" for name in ("registry", "schema", "signals", "telemetry", "tensors")),
    "leyline.wire",
    *(f"bus.{name}" for name in ("metrics", "ready", "security", "sequence", "topics")),
]


def _modules() -> list[ModuleType]:
    found = []
    for root in ("leyline", "bus", "services"):
        package = importlib.import_module(root)
        found.append(package)
        for info in pkgutil.walk_packages(package.__path__, prefix=f"{root}."):
            if info.name.rsplit(".", 1)[-1] != "__main__":
                found.append(importlib.import_module(info.name))
    return found


#: Every package and module that declares its surface.
PACKAGES = [module for module in _modules() if hasattr(module, "__all__")]


def _sort_key(name: str) -> tuple[int, str]:
    """ruff's order (RUF022): SCREAMING_CASE, then CamelCase, then the rest."""
    if name.isupper():
        return (0, name)
    return (1, name) if name[0].isupper() else (2, name)


def test_leyline_exports_the_contracts() -> None:
    assert importlib.import_module("leyline").__all__ == LEYLINE


def test_bus_exports_what_services_wire_together() -> None:
    assert importlib.import_module("bus").__all__ == BUS


def test_the_packages_and_topical_modules_declare_their_surface() -> None:
    names = {package.__name__ for package in PACKAGES}
    assert {"leyline", "bus", "services.sink", "services.worker", "services.controller"} <= names
    assert set(TOPICAL) <= names


def test_each_root_name_is_defined_in_no_topical_module_under_another_name() -> None:
    for root in ("leyline", "bus"):
        package = importlib.import_module(root)
        for name in package.__all__:
            homes = [m for m in TOPICAL if m.startswith(f"{root}.") and name in _all_of(m)]
            for home in homes:
                assert getattr(importlib.import_module(home), name) is getattr(package, name)


def _all_of(module: str) -> list[str]:
    return list(importlib.import_module(module).__all__)


@pytest.mark.parametrize("package", PACKAGES, ids=lambda package: package.__name__)
def test_every_exported_name_exists_is_public_and_listed_once_in_order(
    package: ModuleType,
) -> None:
    names = list(package.__all__)
    assert len(names) == len(set(names)), "listed twice"
    assert names == sorted(names, key=_sort_key)
    for name in names:
        assert not name.startswith("_"), name
        value = getattr(package, name)  # raises when the name does not exist
        assert not isinstance(value, ModuleType), f"{name} is a module, not an API"
