"""The identity step of the pipeline: a message's sender is its connection's authenticated key.

Who may publish what, by role:

| role | may publish |
|---|---|
| controller | `cmd` to any worker scope; `tel`, `rep` under its own identity |
| worker | `sig`, `ack`, `tel`, `rep` under its own identity only |
| sink | `tel` under its own identity |
| tool | nothing (it only subscribes) |
| proxy | whatever the original sender may, which it checked on its own intake |

Every role may send its own control messages (heartbeats, ready) on the control scope `*`.
So sequences, incarnations, heartbeats and hellos of a sender can only be moved by the holder
of its key.
"""

from __future__ import annotations

from bus.security import Peer, Role, TrustStore
from bus.topics import CONTROL_SCOPE, Channel
from leyline import ContractError, RejectReason

_OWN_SCOPE: dict[Role, frozenset[Channel]] = {
    Role.CONTROLLER: frozenset({Channel.TEL, Channel.REP}),
    Role.WORKER: frozenset({Channel.SIG, Channel.ACK, Channel.TEL, Channel.REP}),
    Role.SINK: frozenset({Channel.TEL}),
    Role.TOOL: frozenset(),
    Role.PROXY: frozenset(),
}


def may_publish(peer: Peer, channel: Channel, scope: str) -> bool:
    """Whether `peer` may publish on `<channel>.<scope>.` under its own identity."""
    if scope == CONTROL_SCOPE:
        return peer.role is not Role.TOOL
    if channel is Channel.CMD:
        return peer.role is Role.CONTROLLER
    return channel in _OWN_SCOPE[peer.role] and scope == peer.identity


class IdentityPolicy:
    """Checks each message against the identity its connection authenticated as."""

    def __init__(self, trust: TrustStore) -> None:
        self.trust = trust

    def check(self, peer: str, sender: str, channel: Channel, scope: str) -> ContractError | None:
        """None when `sender` may publish this topic over a connection authenticated as `peer`."""
        connection = self.trust.by_identity(peer)
        if connection is None:
            return ContractError(
                RejectReason.UNAUTHENTICATED, f"connection identity {peer!r} is not trusted"
            )
        if sender == peer:
            origin = connection
        elif connection.role is Role.PROXY:
            relayed = self.trust.by_identity(sender)
            if relayed is None:
                return ContractError(
                    RejectReason.FORGED_SENDER,
                    f"proxy {peer!r} relays unknown sender {sender[:64]!r}",
                    "$.header.sender",
                )
            origin = relayed
        else:
            return ContractError(
                RejectReason.FORGED_SENDER,
                f"header says {sender[:64]!r}, the connection authenticated as {peer!r}",
                "$.header.sender",
            )
        if not may_publish(origin, channel, scope):
            return ContractError(
                RejectReason.NOT_PERMITTED,
                f"{origin.identity!r} ({origin.role.value}) may not publish on "
                f"{channel.value}.{scope[:64]}.",
            )
        return None
