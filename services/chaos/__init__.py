"""Fault injection and the delivery-guarantee checker: `leyline chaos` and tests/faults."""

from services.chaos.checker import Counts, RunFiles, Verdict, check, summary
from services.chaos.faults import FaultInjector
from services.chaos.launcher import ChaosStack
from services.chaos.memory import MemoryWatch, rss_kib
from services.chaos.run import ChaosResult, ChaosSettings, build_stack, judge, run_chaos
from services.chaos.schedule import Fault, FaultKind, random_schedule

__all__ = [
    "ChaosResult",
    "ChaosSettings",
    "ChaosStack",
    "Counts",
    "Fault",
    "FaultInjector",
    "FaultKind",
    "MemoryWatch",
    "RunFiles",
    "Verdict",
    "build_stack",
    "check",
    "judge",
    "random_schedule",
    "rss_kib",
    "run_chaos",
    "summary",
]
