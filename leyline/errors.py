"""The one error hierarchy of the contracts package."""

from __future__ import annotations

import enum


class RejectReason(enum.IntEnum):
    """Why a message was refused; locked wire values, shared by the codec and the bus."""

    MALFORMED = 1
    FRAME_COUNT = 2
    OVERSIZE = 3
    BAD_HEADER = 4
    UNKNOWN_TAG = 5
    UNSUPPORTED_VERSION = 6
    INVALID_VALUE = 7
    DUPLICATE = 8
    OUT_OF_ORDER = 9
    STALE = 10
    ILLEGAL_TRANSITION = 11
    UNKNOWN_TARGET = 12
    OVER_BUDGET = 13
    HANDLER_ERROR = 14
    BAD_TOPIC = 15
    #: The connection's key is not (or no longer) in the trust directory.
    UNAUTHENTICATED = 16
    #: The header names a sender other than the connection's authenticated identity.
    FORGED_SENDER = 17
    #: The sender's role may not publish on that channel or scope.
    NOT_PERMITTED = 18
    #: An incarnation later than the receiver's clock plus the allowed clock skew.
    FUTURE_INCARNATION = 19
    #: A handshake libzmq refused: another security mechanism, or no valid ZMTP greeting.
    HANDSHAKE_FAILED = 20
    CONNECTION_DROPPED = 24
    TOO_MANY_SUBSCRIPTIONS = 25


class LeylineError(Exception):
    """Base of every error raised by leyline."""


class ContractError(LeylineError):
    """A message does not satisfy its contract: carries the reason and the offending field."""

    def __init__(self, reason: RejectReason, detail: str, path: str = "$") -> None:
        super().__init__(f"{reason.name.lower()}: {detail} (at {path})")
        self.reason = reason
        self.detail = detail
        self.path = path


class BudgetError(ContractError):
    """An encoded message is larger than its declared budget."""

    def __init__(self, tag: str, size: int, budget: int) -> None:
        super().__init__(
            RejectReason.OVER_BUDGET, f"{tag} encodes to {size} bytes, budget {budget}"
        )
        self.size = size
        self.budget = budget


class LifecycleError(LeylineError):
    """An illegal seed stage transition was attempted."""
