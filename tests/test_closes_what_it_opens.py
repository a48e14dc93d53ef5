"""The suite's own guard: a test that leaves a publisher or subscriber open fails, named."""

from __future__ import annotations

from pathlib import Path

import pytest

_LEAKY = """
from bus import Channel, Publisher, Subscriber

def test_leaves_a_publisher_open():
    Publisher("tcp://127.0.0.1:*", "leaky-worker")

def test_leaves_a_subscriber_open():
    Subscriber("tcp://127.0.0.1:1", [(Channel.CMD, "leaky-worker")])

def test_closes_both():
    publisher = Publisher("tcp://127.0.0.1:*", "tidy-worker")
    subscriber = Subscriber(publisher.address, [(Channel.CMD, "tidy-worker")])
    subscriber.close()
    publisher.close()
"""


def test_a_test_that_leaves_a_socket_open_fails_and_names_it(pytester: pytest.Pytester) -> None:
    pytester.makeconftest((Path(__file__).parent / "conftest.py").read_text())
    pytester.makepyfile(test_leaky=_LEAKY)

    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")

    result.assert_outcomes(passed=3, errors=2)
    result.stdout.fnmatch_lines(
        [
            "*left open by this test: the publisher of 'leaky-worker' at tcp://127.0.0.1:*",
            "*left open by this test: a subscriber of cmd.leaky-worker.* at tcp://127.0.0.1:1",
        ]
    )
