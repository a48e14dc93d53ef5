"""The docs' code is real: every Python block compiles, and the runnable ones run as written.

A block fenced ```` ```python runnable ```` needs nothing but this checkout (no ports it does
not pick, no running service) and runs in a fresh interpreter; a plain ```` ```python ````
block (the tutorial's pieces of a user's program) is compiled only.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = sorted((ROOT / "docs").glob("*.md"))
_BLOCK = re.compile(r"^```python( runnable)?\n(.*?)^```$", re.MULTILINE | re.DOTALL)
#: A page per layer, each with an example that runs.
LAYER_PAGES = ("contracts.md", "bus.md", "services.md")


def _blocks(page: Path) -> list[tuple[bool, str]]:
    return [(bool(runnable), code) for runnable, code in _BLOCK.findall(page.read_text())]


BLOCKS = [(page, index, runnable, code) for page in DOCS for index, (runnable, code) in
          enumerate(_blocks(page))]  # fmt: skip


def _id(block: tuple[Path, int, bool, str]) -> str:
    return f"{block[0].name}[{block[1]}]"


@pytest.mark.parametrize("block", BLOCKS, ids=_id)
def test_every_python_block_compiles(block: tuple[Path, int, bool, str]) -> None:
    page, index, _, code = block
    compile(code, f"{page.name}[{index}]", "exec")


def test_every_layer_page_has_a_runnable_example() -> None:
    pages = {page.name: page for page in DOCS}
    for name in (*LAYER_PAGES, "tutorial-training-loop.md"):
        assert name in pages, f"docs/{name} is missing"
    for name in LAYER_PAGES:
        assert any(runnable for runnable, _ in _blocks(pages[name])), name


@pytest.mark.parametrize("block", [b for b in BLOCKS if b[2]], ids=_id)
def test_every_runnable_block_runs(block: tuple[Path, int, bool, str], tmp_path: Path) -> None:
    ran = subprocess.run(
        [sys.executable, "-c", block[3]],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={"PYTHONPATH": str(ROOT), "PATH": ""},
        timeout=120,
        check=False,
    )
    assert ran.returncode == 0, ran.stderr
