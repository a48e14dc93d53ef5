"""A service lifts its open-file limit: 1,024 workers are over 2,000 connections to a controller."""

from __future__ import annotations

import resource
import subprocess
import sys

import pytest

from services.cli._service import raise_open_file_limit

_CHILD = """
import resource
from services.cli._service import raise_open_file_limit
hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
print(raise_open_file_limit(), resource.getrlimit(resource.RLIMIT_NOFILE)[0], hard)
"""


def test_a_low_soft_open_file_limit_is_raised_to_the_hard_one() -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard <= 256:
        pytest.skip("the hard limit here leaves nothing to raise")
    out = subprocess.run(
        [sys.executable, "-c", _CHILD], capture_output=True, text=True, check=True
    ).stdout.split()
    returned, soft, child_hard = (int(v) for v in out)
    assert returned == soft > 256
    assert soft == child_hard or child_hard == resource.RLIM_INFINITY


def test_raising_the_limit_again_changes_nothing() -> None:
    before = resource.getrlimit(resource.RLIMIT_NOFILE)
    raise_open_file_limit()
    first = resource.getrlimit(resource.RLIMIT_NOFILE)
    raise_open_file_limit()
    assert resource.getrlimit(resource.RLIMIT_NOFILE) == first
    assert first[0] >= before[0]
