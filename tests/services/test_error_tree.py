"""One error tree: every exception class defined in leyline, bus or services is a LeylineError."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from collections.abc import Iterator
from types import ModuleType

import pytest

from leyline import LeylineError

PACKAGES = ("leyline", "bus", "services")


def _modules() -> Iterator[ModuleType]:
    for name in PACKAGES:
        package = importlib.import_module(name)
        yield package
        for info in pkgutil.walk_packages(package.__path__, prefix=f"{name}."):
            if info.name.rsplit(".", 1)[-1] != "__main__":
                yield importlib.import_module(info.name)


def _exception_classes() -> list[type[BaseException]]:
    found: dict[str, type[BaseException]] = {}
    for module in _modules():
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if issubclass(cls, BaseException) and cls.__module__ == module.__name__:
                found[f"{cls.__module__}.{cls.__qualname__}"] = cls
    return [found[name] for name in sorted(found)]


EXCEPTIONS = _exception_classes()


def test_the_walk_finds_the_service_errors() -> None:
    names = {cls.__name__ for cls in EXCEPTIONS}
    assert {"ConfigError", "StoreError", "UnknownBlueprintError", "SecurityError"} <= names


@pytest.mark.parametrize("cls", EXCEPTIONS, ids=lambda cls: f"{cls.__module__}.{cls.__name__}")
def test_every_error_derives_from_leyline_error(cls: type[BaseException]) -> None:
    assert issubclass(cls, LeylineError)


def test_an_unknown_blueprint_is_still_a_key_error() -> None:
    from services.worker.blueprints import UnknownBlueprintError, build_seed

    with pytest.raises(KeyError):
        build_seed("no-such-blueprint", 8)
    with pytest.raises(LeylineError):
        build_seed("no-such-blueprint", 8)
    assert issubclass(UnknownBlueprintError, KeyError)
