"""Many workers on two hosts publish only through `leyline proxy` on a third, to a controller
and a sink on hosts of their own, CURVE on both sides of the proxy.

The closed loop runs through it (signals and acks reach the controller only via the proxy),
and identity stays bound to each original sender: a worker's key publishing under another
worker's name is refused by the proxy (counted in `leyline_proxy_refused_total`) and nothing
it sent reaches the sink.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from forge import FORGED
from host_stack import PROXY, PROXY_FRONTEND_PORT, PROXY_METRICS_PORT, ROOT, HostStack

from services.chaos.netns import Network

pytestmark = [pytest.mark.multihost, pytest.mark.slow]

EPOCHS = 16
#: Four workers, two on each worker host.
PLACEMENT = {"w1": "a", "w2": "a", "w3": "b", "w4": "b"}
FORGED_COUNT = 20
START_TIMEOUT_S = 180.0


@pytest.fixture
def stack(proxy_hosts: Network, tmp_path: Path) -> Iterator[HostStack]:
    built = HostStack(proxy_hosts, tmp_path, EPOCHS, len(PLACEMENT), PLACEMENT)
    built.through_proxy(PROXY)
    yield built
    built.close()


def test_workers_on_two_hosts_run_the_closed_loop_through_the_proxy_and_cannot_forge(
    stack: HostStack,
) -> None:
    def commanded_on_every_host() -> bool:
        """The loop closed for each host: commands reached workers there (which of a host's
        workers plateaus, and so is commanded, is their training's business)."""
        hosts = {host: False for host in PLACEMENT.values()}
        for worker, host in PLACEMENT.items():
            hosts[host] = hosts[host] or stack.journaled(worker) > 0
        return all(hosts.values())

    stack.start()
    stack.wait_until(commanded_on_every_host, START_TIMEOUT_S, "a command to each host's workers")
    # w1's key, on w1's host, claiming to be w3 (a worker of the other host).
    frontend = f"tcp://{stack.host(PROXY).address}:{PROXY_FRONTEND_PORT}"
    keys = stack.plan["sink"][1]["LEYLINE_BUS_KEYS_DIR"]
    forger = [sys.executable, str(ROOT / "tests" / "multihost" / "forge.py"), keys, frontend]
    done = stack.host("w1").run(
        [*forger, "w1", "w3", str(FORGED_COUNT)], env={"PYTHONPATH": str(ROOT)}, timeout_s=60.0
    )
    assert done.returncode == 0, done.stderr
    refused = stack.metric(PROXY, PROXY_METRICS_PORT, "leyline_proxy_refused_total")
    relayed = stack.metric(PROXY, PROXY_METRICS_PORT, "leyline_proxy_messages_total")
    verdict = stack.verdict_of_a_clean_run(stack.run_to_the_end(240.0))

    print(f"proxy: relayed {relayed:.0f}, refused {refused:.0f}, counts {verdict.counts}")
    assert refused >= FORGED_COUNT  # the forged events, and the forger's heartbeats
    assert stack.query("SELECT COUNT(*) FROM events WHERE message LIKE ?", f"%{FORGED}%") == [(0,)]
    assert stack.epochs_stored() == dict.fromkeys(stack.workers, EPOCHS)
    assert commanded_on_every_host()
    for listener in ("controller", "sink"):
        assert stack.refused(listener, "forged_sender") == {}
