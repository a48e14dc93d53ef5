"""Run on a worker's host: publish through the proxy as `claimed`, holding `key`'s key.

Usage: forge.py KEYS_DIR PROXY_FRONTEND KEY CLAIMED COUNT. Prints how many it sent once the
proxy had forwarded it a subscription (so each was offered to the proxy, not dropped unseen).
"""

from __future__ import annotations

import sys
import time

from bus import Channel, Publisher
from bus.security import Curve
from leyline import SeedStage, TelemetryEvent, TelemetryEventType
from leyline.telemetry import SeedStageChanged

#: What every forged event says, so the test can look for it at the sink.
FORGED = "forged through the proxy"


def main(keys: str, frontend: str, key: str, claimed: str, count: int) -> int:
    publisher = Publisher(
        f"proxy@{frontend}", claimed, bind=False, security=Curve.from_directory(keys, key)
    )
    if not publisher.wait_for_subscribers(f"tel.{claimed}.".encode(), timeout_s=30.0):
        print("no subscription reached the forger", file=sys.stderr)
        return 1
    event = TelemetryEvent(
        event_type=TelemetryEventType.SEED_STAGE_CHANGED,
        payload=SeedStageChanged(
            seed_id="forged", from_stage=SeedStage.DORMANT, to_stage=SeedStage.GERMINATED
        ),
        message=FORGED,
    )
    for _ in range(count):
        publisher.publish(Channel.TEL, event, claimed)
        publisher.service()
        time.sleep(0.02)
    time.sleep(1.0)  # let the last ones leave before the socket closes
    publisher.close()
    print(f"sent {count}")
    return 0


if __name__ == "__main__":
    keys, frontend, key, claimed, count = sys.argv[1:]
    sys.exit(main(keys, frontend, key, claimed, int(count)))
