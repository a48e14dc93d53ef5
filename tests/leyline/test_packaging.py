"""What the distribution declares: one version, read from the package itself."""

from __future__ import annotations

import tomllib
from pathlib import Path

import leyline

ROOT = Path(__file__).resolve().parents[2]


def pyproject() -> dict[str, object]:
    with (ROOT / "pyproject.toml").open("rb") as file:
        return tomllib.load(file)


def test_the_version_has_one_source_the_package_constant() -> None:
    config = pyproject()
    project = config["project"]
    assert isinstance(project, dict)
    assert "version" not in project and "version" in project["dynamic"]
    tool = config["tool"]
    assert isinstance(tool, dict)
    assert tool["setuptools"]["dynamic"]["version"] == {"attr": "leyline.LEYLINE_VERSION"}
    assert leyline.LEYLINE_VERSION.count(".") == 2
