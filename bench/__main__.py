"""Run benchmarks by name: progress on stderr, one JSON line of figures per benchmark on stdout."""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from collections.abc import Sequence

#: Every benchmark: its name on the command line and the module whose `run()` measures it.
BENCHMARKS: dict[str, str] = {
    "agent": "bench.agent",
    "bus": "bench.bus",
    "codec": "bench.codec",
    "convert": "bench.convert",
    "inference": "bench.inference",
    "sink": "bench.sink",
    "scale": "bench.scale",
    "stress": "bench.stress",
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("name", choices=[*BENCHMARKS, "all"], help="the benchmark to run")
    args = parser.parse_args(argv)
    names = list(BENCHMARKS) if args.name == "all" else [args.name]
    for name in names:
        figures = importlib.import_module(BENCHMARKS[name]).run()
        print(json.dumps({"benchmark": name, **figures}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
