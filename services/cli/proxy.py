"""`leyline proxy`: run an XSUB/XPUB proxy, optionally serving its counters."""

from __future__ import annotations

import argparse
import signal
import sys
from typing import Any

import structlog

from bus import MetricsServer, Proxy
from bus.security import Curve, SecurityError


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser("proxy", help="forward many publishers to many subscribers")
    parser.add_argument(
        "--frontend", default="tcp://127.0.0.1:5559", help="publishers connect here"
    )
    parser.add_argument(
        "--backend", default="tcp://127.0.0.1:5560", help="subscribers connect here"
    )
    parser.add_argument("--metrics-port", type=int, default=None, help="serve /metrics here")
    parser.add_argument("--id", default="proxy", help="the proxy's identity (a proxy-role key)")
    parser.add_argument("--keys-dir", default="leyline-data/keys", help="CURVE key directory")
    parser.add_argument(
        "--insecure", action="store_true", help="plaintext, unauthenticated: debugging only"
    )
    parser.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    log = structlog.get_logger("leyline.proxy")
    security = None
    if args.insecure:
        log.warning("running INSECURE: plaintext, and every peer is believed")
    else:
        try:
            security = Curve.from_directory(args.keys_dir, args.id)
        except SecurityError as error:
            print(f"leyline proxy: {error}", file=sys.stderr)
            return 2
    proxy = Proxy(args.frontend, args.backend, security=security)
    server = None
    if args.metrics_port is not None:
        server = MetricsServer([proxy.metrics.samples], {"service": "proxy"}, args.metrics_port)
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    log.info("proxy running", frontend=proxy.frontend, backend=proxy.backend)
    proxy.run(lambda: stopping)
    proxy.close()
    if server is not None:
        server.close()
    m = proxy.metrics
    log.info("proxy stopped", messages=m.messages, bytes=m.bytes, dropped=m.dropped)
    return 0
