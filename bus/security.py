"""CurveZMQ on every link: key files, the trust directory, ZAP, and which side proves what.

Every key pair is a pair of pyzmq certificate files (`zmq.auth` format): `<identity>.key`
holds the public key and `<identity>.key_secret` both keys, each with metadata naming the
identity and the role it stands for. A key directory holds `trust/` (the public certificates
of every peer allowed on the bus) and `secret/` (this machine's secret certificates, mode 0600).

On each link the binding side is the CURVE server: libzmq asks this process's ZAP handler
(bus/zap.py: a helper process, so a busy service's GIL never delays a handshake) about every
client key, and only keys in the trust directory connect; the identity of an
accepted key travels with each of its messages as the ZAP User-Id. The connecting side pins
the server's public key, so an impostor bound on a freed port cannot complete a handshake.
"""

from __future__ import annotations

import enum
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import zmq
import zmq.auth

from bus.zap import ZapHandlers, ZapRelay
from leyline import LeylineError

__all__ = [
    "RELOAD_INTERVAL_S",
    "SECRET_DIR",
    "TRUST_DIR",
    "ZAP_DOMAIN",
    "Curve",
    "KeyPair",
    "Peer",
    "Role",
    "SecurityError",
    "TrustStore",
    "ensure_keys",
    "generate_key",
    "load_key_pair",
    "read_certificate",
    "secret_key_path",
    "split_peer",
    "trust_dir",
]

#: The prefix of every Leyline server socket's ZAP domain (one per trust store).
ZAP_DOMAIN = "leyline"
TRUST_DIR = "trust"
SECRET_DIR = "secret"
#: How often an unknown client key may make the trust directory be read again.
RELOAD_INTERVAL_S = 1.0


class Role(enum.StrEnum):
    """What an identity may do on the bus (see `bus.identity` for the publishing rules)."""

    CONTROLLER = "controller"
    SINK = "sink"
    WORKER = "worker"
    #: Observes the bus (topic echo, record): subscribes, publishes nothing.
    TOOL = "tool"
    #: Relays other identities' messages after checking them itself (`leyline proxy`).
    PROXY = "proxy"


class SecurityError(LeylineError):
    """A key, certificate or trust directory is missing, unreadable or inconsistent."""


@dataclass(frozen=True, slots=True)
class Peer:
    """One trusted public key and the identity and role it stands for."""

    identity: str
    role: Role
    public_key: bytes  # z85, 40 bytes


@dataclass(frozen=True, slots=True)
class KeyPair:
    """This process's own key pair (z85) and the identity it proves."""

    identity: str
    role: Role
    public_key: bytes
    secret_key: bytes


def _read_metadata(path: Path) -> dict[str, str]:
    """The `metadata` section of a zmq.auth certificate file (ZPL: `    key = "value"`)."""
    found: dict[str, str] = {}
    section = ""
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if not line.startswith((" ", "\t")):
            section = line.strip()
            continue
        if section == "metadata" and "=" in line:
            key, _, value = line.partition("=")
            found[key.strip()] = value.strip().strip('"')
    return found


def _peer_of(path: Path) -> tuple[Peer, bytes | None]:
    try:
        public, secret = zmq.auth.load_certificate(path)
        metadata = _read_metadata(path)
    except (OSError, ValueError) as error:
        raise SecurityError(f"cannot read certificate {path}: {error}") from None
    identity = metadata.get("identity", "")
    try:
        role = Role(metadata.get("role", ""))
    except ValueError:
        raise SecurityError(
            f"certificate {path} names no valid role (one of {', '.join(Role)})"
        ) from None
    if not identity:
        raise SecurityError(f"certificate {path} names no identity")
    return Peer(identity, role, public), secret


def read_certificate(path: str | Path) -> Peer:
    """The identity, role and public key a certificate file (public or secret) stands for."""
    peer, _ = _peer_of(Path(path))
    return peer


def generate_key(directory: str | Path, identity: str, role: Role) -> KeyPair:
    """Create `identity`'s key pair: public certificate in trust/, secret one in secret/."""
    root = Path(directory)
    trust, secret = root / TRUST_DIR, root / SECRET_DIR
    trust.mkdir(parents=True, exist_ok=True)
    secret.mkdir(parents=True, exist_ok=True)
    os.chmod(secret, 0o700)
    if (secret / f"{identity}.key_secret").exists() or (trust / f"{identity}.key").exists():
        raise SecurityError(f"a key for {identity!r} already exists in {root}")
    metadata = {"identity": identity, "role": role.value}
    public_file, secret_file = zmq.auth.create_certificates(str(secret), identity, metadata)
    os.chmod(secret_file, 0o600)
    os.remove(public_file)  # pyzmq writes metadata into the secret file only
    keys = load_key_pair(secret_file)
    lines = [
        "#   ZeroMQ CURVE Public Certificate (Leyline)",
        "#   Exchange securely; this key stands for the identity and role below.",
        "metadata",
        *(f'    {key} = "{value}"' for key, value in metadata.items()),
        "curve",
        f'    public-key = "{keys.public_key.decode()}"',
    ]
    (trust / f"{identity}.key").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return load_key_pair(secret_file)


def load_key_pair(path: str | Path) -> KeyPair:
    """This process's key pair from its secret certificate file."""
    peer, secret = _peer_of(Path(path))
    if secret is None:
        raise SecurityError(f"{path} holds no secret key (a .key_secret file is needed)")
    return KeyPair(peer.identity, peer.role, peer.public_key, secret)


def secret_key_path(directory: str | Path, identity: str) -> Path:
    return Path(directory) / SECRET_DIR / f"{identity}.key_secret"


def trust_dir(directory: str | Path) -> Path:
    return Path(directory) / TRUST_DIR


class TrustStore:
    """The public keys allowed on the bus, read from a directory of certificates.

    An unknown key makes the directory be read again, at most once a second, so a worker
    added with `leyline keys generate` is let in without restarting the servers. The ZAP
    helper (bus/zap.py) also reads it again whenever the directory changes, so a key removed
    from it is refused at its next handshake.
    """

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self._lock = threading.Lock()
        self._by_key: dict[bytes, Peer] = {}
        self._by_identity: dict[str, Peer] = {}
        self._next_reload = 0.0
        self.reload()

    def reload(self) -> None:
        """Read every `*.key` certificate; two keys claiming one identity are refused."""
        if not self.directory.is_dir():
            raise SecurityError(f"trust directory {self.directory} does not exist")
        by_key: dict[bytes, Peer] = {}
        by_identity: dict[str, Peer] = {}
        for path in sorted(self.directory.glob("*.key")):
            peer, _ = _peer_of(path)
            if peer.identity in by_identity:
                raise SecurityError(f"two trusted keys claim identity {peer.identity!r}")
            by_key[peer.public_key] = peer
            by_identity[peer.identity] = peer
        with self._lock:
            self._by_key, self._by_identity = by_key, by_identity
            self._next_reload = time.monotonic() + RELOAD_INTERVAL_S

    def peers(self) -> list[Peer]:
        with self._lock:
            return sorted(self._by_identity.values(), key=lambda p: p.identity)

    def by_key(self, public_key: bytes) -> Peer | None:
        """The peer a z85 public key stands for; None when it is not trusted."""
        with self._lock:
            peer = self._by_key.get(public_key)
            due = peer is None and time.monotonic() >= self._next_reload
        if due:
            try:
                self.reload()
            except SecurityError:
                return None
            with self._lock:
                peer = self._by_key.get(public_key)
        return peer

    def by_identity(self, identity: str) -> Peer | None:
        with self._lock:
            return self._by_identity.get(identity)

    def require(self, identity: str) -> Peer:
        """The trusted key of `identity`, to pin when connecting to it."""
        peer = self.by_identity(identity)
        if peer is None:
            self.reload()
            peer = self.by_identity(identity)
        if peer is None:
            raise SecurityError(f"no trusted key for {identity!r} in {self.directory}")
        return peer


class Curve:
    """How this process's sockets authenticate: its key pair, the trust store, one ZAP handler.

    `serve(socket)` makes a binding socket a CURVE server; `pin(socket, identity)` makes a
    connecting one a client that only completes a handshake with `identity`'s key.
    """

    #: This process's ZAP (bus/zap.py): a relay per context, one helper process judging.
    _zap: ClassVar[ZapHandlers] = ZapHandlers()

    def __init__(self, keys: KeyPair, trust: TrustStore) -> None:
        self.keys = keys
        self.trust = trust

    @classmethod
    def from_directory(cls, directory: str | Path, identity: str) -> Curve:
        """`identity`'s secret key and the trust directory of a key directory."""
        path = secret_key_path(directory, identity)
        if not path.is_file():
            raise SecurityError(
                f"no key for {identity!r} at {path}: create one with "
                f"`leyline keys generate {identity} --role ROLE --dir {directory}`, "
                "or run without authentication with --insecure"
            )
        keys = load_key_pair(path)
        if keys.identity != identity:
            raise SecurityError(f"{path} is the key of {keys.identity!r}, not {identity!r}")
        return cls(keys, TrustStore(trust_dir(directory)))

    @property
    def identity(self) -> str:
        return self.keys.identity

    def authenticator(self, context: zmq.Context[Any]) -> ZapRelay:
        """The ZAP handler of `context`, started once; it must run before any server binds."""
        return self._zap.relay(context, self.domain, self.trust, self.trust.directory)

    @property
    def domain(self) -> str:
        """This trust store's ZAP domain (local to the process: it never goes on the wire)."""
        return f"{ZAP_DOMAIN}-{id(self.trust):x}"

    def serve(self, sock: zmq.Socket[Any]) -> None:
        """Make `sock` a CURVE server whose clients ZAP checks against the trust store."""
        self.authenticator(sock.context)
        sock.setsockopt(zmq.ZAP_DOMAIN, self.domain.encode())
        sock.curve_secretkey = self.keys.secret_key
        sock.curve_publickey = self.keys.public_key
        sock.curve_server = True

    def pin(self, sock: zmq.Socket[Any], identity: str) -> None:
        """Make `sock` a CURVE client that only talks to the holder of `identity`'s key."""
        sock.curve_secretkey = self.keys.secret_key
        sock.curve_publickey = self.keys.public_key
        sock.curve_serverkey = self.trust.require(identity).public_key

    def samples(self) -> Iterator[tuple[str, dict[str, str], float]]:
        """ZAP's verdicts on this process's server sockets, for /metrics."""
        accepted, denied = self._zap.verdicts()
        yield "leyline_auth_accepted_total", {}, accepted
        yield "leyline_auth_denied_total", {}, denied

    @classmethod
    def stop_handlers(cls, context: zmq.Context[Any]) -> None:
        """Stop `context`'s ZAP handler (before the context is terminated)."""
        cls._zap.stop(context)


def split_peer(address: str) -> tuple[str | None, str]:
    """`"controller@tcp://host:5550"` -> ("controller", "tcp://host:5550"); no `@` -> None."""
    head, at, rest = address.partition("@")
    if at and "://" not in head:
        return head, rest
    return None, address


def ensure_keys(directory: str | Path, wanted: dict[str, Role]) -> list[str]:
    """Create the keys of `wanted` identities that `directory` lacks; returns those created."""
    created = []
    for identity, role in wanted.items():
        if not secret_key_path(directory, identity).exists():
            generate_key(directory, identity, role)
            created.append(identity)
    return created
