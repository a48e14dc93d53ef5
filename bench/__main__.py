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
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description=__doc__,
        epilog="Options after a benchmark's name go to that benchmark, as `python -m bench.NAME`.",
    )
    parser.add_argument("name", choices=[*BENCHMARKS, "all"], help="the benchmark to run")
    parser.add_argument("options", nargs=argparse.REMAINDER, help="the benchmark's own options")
    args = parser.parse_args(argv)
    options: list[str] = args.options
    if options:
        module = None if args.name == "all" else importlib.import_module(BENCHMARKS[args.name])
        if module is None or not hasattr(module, "main"):
            parser.error(f"{args.name} takes no options: {' '.join(options)}")
        return int(module.main(options))
    names = list(BENCHMARKS) if args.name == "all" else [args.name]
    for name in names:
        figures = importlib.import_module(BENCHMARKS[name]).run()
        print(json.dumps({"benchmark": name, **figures}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
