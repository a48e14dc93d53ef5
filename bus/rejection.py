"""Rejections: what the pipeline refused, and a log that stays quiet under a flood."""

from __future__ import annotations

import time
from typing import Any

import msgspec
import structlog

from leyline import ContractError, RejectReason


class Rejection(msgspec.Struct, frozen=True, kw_only=True):
    """One refused message: why, from whom, on which topic, and a readable detail.

    `message` is the decoded message when the refusal came after decoding (sequence or
    guard), so a worker can still acknowledge a refused command.
    """

    reason: RejectReason
    sender: str
    topic: str
    detail: str
    path: str = "$"
    message: Any = None

    @classmethod
    def from_error(
        cls, error: ContractError, sender: str, topic: bytes, message: Any = None
    ) -> Rejection:
        return cls(
            reason=error.reason,
            sender=sender,
            topic=topic.decode("ascii", errors="replace")[:128],
            detail=error.detail[:512],
            path=error.path,
            message=message,
        )


class RateLimitedLog:
    """Logs at most `per_second` rejections per reason; the rest are counted as suppressed."""

    def __init__(self, per_second: float = 5.0, logger: Any = None) -> None:
        self._per_second = per_second
        self._log = logger or structlog.get_logger("leyline.bus")
        self._allowance: dict[RejectReason, tuple[float, float]] = {}
        self.suppressed = 0

    def log(self, rejection: Rejection) -> None:
        now = time.monotonic()
        tokens, last = self._allowance.get(rejection.reason, (self._per_second, now))
        tokens = min(self._per_second, tokens + (now - last) * self._per_second)
        if tokens < 1.0:
            self._allowance[rejection.reason] = (tokens, now)
            self.suppressed += 1
            return
        self._allowance[rejection.reason] = (tokens - 1.0, now)
        self._log.warning(
            "message rejected",
            reason=rejection.reason.name,
            sender=rejection.sender,
            topic=rejection.topic,
            path=rejection.path,
            detail=rejection.detail,
        )
