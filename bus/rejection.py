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
    guard); `payload` the raw payload when decoding itself refused it, so a receiver can still
    attribute (and answer) a refused command.
    """

    reason: RejectReason
    sender: str
    topic: str
    detail: str
    path: str = "$"
    message: Any = None
    payload: bytes = b""

    @classmethod
    def from_error(
        cls,
        error: ContractError,
        sender: str,
        topic: bytes,
        message: Any = None,
        payload: bytes = b"",
    ) -> Rejection:
        return cls(
            reason=error.reason,
            sender=sender,
            topic=topic.decode("ascii", errors="replace")[:128],
            detail=error.detail[:512],
            path=error.path,
            message=message,
            payload=payload,
        )


class TokenBucket:
    """Allows `rate` events a second, in bursts of up to `rate`; counts what it refuses."""

    def __init__(self, rate: float) -> None:
        self._rate = rate
        self._tokens = rate
        self._last = time.monotonic()
        self.refused = 0

    def take(self) -> bool:
        now = time.monotonic()
        self._tokens = min(self._rate, self._tokens + (now - self._last) * self._rate)
        self._last = now
        if self._tokens < 1.0:
            self.refused += 1
            return False
        self._tokens -= 1.0
        return True


class RateLimitedLog:
    """Logs at most `per_second` rejections per reason; the rest are counted as suppressed."""

    def __init__(self, per_second: float = 5.0, logger: Any = None) -> None:
        self._per_second = per_second
        self._log = logger or structlog.get_logger("leyline.bus")
        self._buckets: dict[RejectReason, TokenBucket] = {}

    @property
    def suppressed(self) -> int:
        return sum(bucket.refused for bucket in self._buckets.values())

    def log(self, rejection: Rejection) -> None:
        bucket = self._buckets.get(rejection.reason)
        if bucket is None:
            bucket = self._buckets[rejection.reason] = TokenBucket(self._per_second)
        if not bucket.take():
            return
        self._log.warning(
            "message rejected",
            reason=rejection.reason.name,
            sender=rejection.sender,
            topic=rejection.topic,
            path=rejection.path,
            detail=rejection.detail,
        )
