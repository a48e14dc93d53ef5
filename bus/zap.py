"""ZAP answered outside the service's GIL: a C relay in this process, a helper process that judges.

libzmq asks about every CURVE client key of the ZAP handler bound at `inproc://zeromq.zap.01`
in the server socket's context. pyzmq's ThreadAuthenticator answers on a Python thread, which a
busy service starves of the GIL: each request and reply frame waits for a GIL hand-over, and
with the service's Python busy on a few threads most of 256 concurrent handshakes ran past
their limit (tests/bus/test_zap.py). Here the
context's ZAP endpoint is a ROUTER that `zmq.proxy_steerable` (C, GIL released) relays to a
helper process, one per service process. The helper answers every queued request per wake-up,
each ZAP domain from its own trust directory, reloaded when the directory changes (a key added
is let in, a key removed refused, without a restart), with the accepted key's identity as the
User-Id. It counts its verdicts, and exits when this process closes it or dies (its stdin, a
pipe from this process, reaches end of file); its ipc endpoints live in a private directory
that is removed with it.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import zmq
from zmq.utils import z85

from leyline import LeylineError

__all__ = ["ZAP_ENDPOINT", "HelperError", "Store", "ZapHandlers", "ZapRelay", "judge"]

#: Where libzmq sends the ZAP requests of a context's server sockets (RFC 27).
ZAP_ENDPOINT = "inproc://zeromq.zap.01"
#: How long the helper may take to start, or to answer a control request.
ANSWER_TIMEOUT_S = 30.0
_VERSION = b"1.0"
_CURVE = b"CURVE"
_STDIN = 0
_HELPER_MAIN = "from bus.security import TrustStore; from bus.zap import judge; judge(TrustStore)"


class Store(Protocol):
    """What the helper judges a domain by (`bus.security.TrustStore`)."""

    directory: Path

    def reload(self) -> None: ...

    def by_key(self, public_key: bytes) -> Any: ...


class HelperError(LeylineError):
    """The ZAP helper process did not start, or stopped answering."""


def _open(context: zmq.Context[Any], kind: int) -> zmq.Socket[bytes]:
    """A socket that never drops or blocks on a queue (ZAP traffic is bounded by handshakes)
    and never keeps its context from terminating."""
    sock: zmq.Socket[bytes] = context.socket(kind)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SNDHWM, 0)
    sock.setsockopt(zmq.RCVHWM, 0)
    return sock


class _Helper:
    """The helper process of this process, and the control socket that talks to it."""

    def __init__(self) -> None:
        self.directory = Path(tempfile.mkdtemp(prefix="leyline-zap-"))  # mode 0700
        self.endpoint = f"ipc://{self.directory}/zap"
        # The helper is a fresh interpreter: give it the modules this process imports.
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
        self.process = subprocess.Popen(
            [sys.executable, "-c", _HELPER_MAIN, str(self.directory)],
            stdin=subprocess.PIPE,
            env=env,
        )
        # A private context: a service destroying its own leaves the helper reachable.
        self._context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        self._control = _open(self._context, zmq.REQ)
        self._control.setsockopt(zmq.REQ_RELAXED, 1)
        self._control.setsockopt(zmq.REQ_CORRELATE, 1)
        self._control.connect(f"ipc://{self.directory}/control")
        self._lock = threading.Lock()
        self.verdicts = (0, 0)
        try:
            self.ask(b"count")
        except HelperError:
            self.close()
            raise

    def ask(self, *request: bytes) -> list[bytes]:
        """One control request and its reply; the counts come with every reply."""
        with self._lock:
            self._control.send_multipart(list(request))
            deadline = time.monotonic() + ANSWER_TIMEOUT_S
            while not self._control.poll(100):
                code = self.process.poll()
                if code is not None or time.monotonic() > deadline:
                    raise HelperError(
                        f"the ZAP helper (pid {self.process.pid}) did not answer: "
                        + (f"it exited with {code}" if code is not None else "it is stuck")
                    )
            accepted, denied, *reply = self._control.recv_multipart()
            self.verdicts = (int(accepted), int(denied))
            return reply

    def close(self) -> None:
        """Stop the helper (asked, then by end of file, then killed) and remove its files."""
        if self.process.poll() is None:
            with contextlib.suppress(HelperError, zmq.ZMQError):
                self.ask(b"stop")
        assert self.process.stdin is not None
        self.process.stdin.close()
        try:
            self.process.wait(ANSWER_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._control.close()
        self._context.term()
        shutil.rmtree(self.directory, ignore_errors=True)


class ZapRelay:
    """One context's ZAP endpoint, relayed in C (no GIL) to the helper process."""

    def __init__(self, context: zmq.Context[Any], helper: _Helper) -> None:
        self.helper = helper
        frontend = _open(context, zmq.ROUTER)
        backend = _open(context, zmq.DEALER)
        control = _open(context, zmq.PAIR)
        self._steer = _open(context, zmq.PAIR)
        try:
            frontend.bind(ZAP_ENDPOINT)
        except zmq.ZMQError:
            for sock in (frontend, backend, control, self._steer):
                sock.close()
            raise
        backend.connect(helper.endpoint)
        steering = f"inproc://leyline-zap-relay-{id(self):x}"
        self._steer.bind(steering)
        control.connect(steering)
        self._thread = threading.Thread(
            target=self._relay, args=(frontend, backend, control), name="leyline-zap", daemon=True
        )
        self._thread.start()

    @staticmethod
    def _relay(*sockets: zmq.Socket[bytes]) -> None:
        frontend, backend, control = sockets
        try:
            zmq.proxy_steerable(frontend, backend, None, control)
        except zmq.ContextTerminated:
            pass
        finally:
            for sock in sockets:
                sock.close()

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def close(self) -> None:
        """End the relay (its context may already be terminated)."""
        if self._thread.is_alive():
            with contextlib.suppress(zmq.ZMQError):
                self._steer.send(b"TERMINATE")
            self._thread.join()
        self._steer.close()


class ZapHandlers:
    """This process's ZAP: one relay per context, one helper process for all of them, each
    ZAP domain answered from its own trust directory.

    The helper starts with the first relay and stops with the last one (or at exit).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._helper: _Helper | None = None
        self._relays: dict[int, ZapRelay] = {}
        #: Domain -> the object it is named after, kept alive so that its id, and so the
        #: domain, is not reused for another trust store while the helper runs.
        self._domains: dict[str, object] = {}
        self._counted = (0, 0)
        self._pid = os.getpid()
        atexit.register(self.close_all)

    def relay(
        self, context: zmq.Context[Any], domain: str, owner: object, directory: Path
    ) -> ZapRelay:
        """The relay of `context`, started once, with `domain` answered from `directory`;
        it must run before any of the context's server sockets binds."""
        with self._lock:
            if self._helper is None:
                self._helper = _Helper()
            relay = self._relays.get(id(context))
            if relay is None or not relay.is_alive():
                relay = self._relays[id(context)] = ZapRelay(context, self._helper)
            if domain not in self._domains:
                error = self._helper.ask(b"trust", domain.encode(), str(directory).encode())
                if error:
                    raise HelperError(error[0].decode())
                self._domains[domain] = owner
            return relay

    def verdicts(self) -> tuple[int, int]:
        """(accepted, denied) handshakes so far, over every helper this process has run."""
        with self._lock:
            helper = self._helper
        if helper is None:
            return self._counted
        with contextlib.suppress(HelperError):
            helper.ask(b"count")
        accepted, denied = helper.verdicts
        return self._counted[0] + accepted, self._counted[1] + denied

    def stop(self, context: zmq.Context[Any]) -> None:
        """Stop `context`'s relay (before the context is terminated); the helper with the last."""
        with self._lock:
            relay = self._relays.pop(id(context), None)
        if relay is not None:
            relay.close()
        with self._lock:
            if not any(r.is_alive() for r in self._relays.values()):
                self._stop_helper()

    def close_all(self) -> None:
        """Stop every relay and the helper (at exit; a forked child leaves its parent's be)."""
        if os.getpid() != self._pid:
            return
        with self._lock:
            relays = list(self._relays.values())
            self._relays.clear()
        for relay in relays:
            relay.close()
        with self._lock:
            self._stop_helper()

    def _stop_helper(self) -> None:
        """The lock is held."""
        helper, self._helper = self._helper, None
        self._relays.clear()
        self._domains.clear()
        if helper is not None:
            helper.close()
            self._counted = (
                self._counted[0] + helper.verdicts[0],
                self._counted[1] + helper.verdicts[1],
            )


class _Judge:
    """The helper's verdicts: each ZAP domain's trust store, and the counts."""

    def __init__(self, store_of: Callable[[str], Store]) -> None:
        self._store_of = store_of
        self.stores: dict[bytes, tuple[Store, list[int]]] = {}
        self.accepted = 0
        self.denied = 0

    def refresh(self) -> None:
        """Read again each trust directory that changed (a file added, removed or renamed)."""
        for store, seen in self.stores.values():
            mtime = _mtime(store.directory)
            if mtime != seen[0]:
                seen[0] = mtime
                with contextlib.suppress(LeylineError):  # unreadable: judge by the last read
                    store.reload()

    def answer(self, frames: list[bytes]) -> list[bytes] | None:
        """The reply to one ZAP request (after its envelope); None when it is not one."""
        if b"" not in frames:
            return None
        split = frames.index(b"") + 1
        envelope, body = frames[:split], frames[split:]
        if len(body) < 6 or body[0] != _VERSION:
            return [*envelope, _VERSION, b"", b"500", b"not a ZAP 1.0 request", b"", b""]
        request_id, domain, mechanism, credentials = body[1], body[2], body[5], body[6:]
        found = self.stores.get(domain)
        peer = None
        if found is not None and mechanism == _CURVE and len(credentials) == 1:
            peer = found[0].by_key(z85.encode(credentials[0]))
        if peer is None:
            self.denied += 1
            return [*envelope, _VERSION, request_id, b"400", b"key not trusted", b"", b""]
        self.accepted += 1
        return [*envelope, _VERSION, request_id, b"200", b"OK", peer.identity.encode(), b""]

    def command(self, frames: list[bytes]) -> list[bytes]:
        """Answer a control request: `trust <domain> <directory>`, `count` or `stop`."""
        command, *arguments = frames
        reply = [str(self.accepted).encode(), str(self.denied).encode()]
        if command == b"trust" and len(arguments) == 2:
            domain, path = arguments
            try:
                self.stores[domain] = (self._store_of(path.decode()), [_mtime(path.decode())])
            except LeylineError as error:
                reply.append(str(error).encode())
        return reply


def _mtime(directory: str | Path) -> int:
    try:
        return os.stat(directory).st_mtime_ns
    except OSError:
        return -1


def judge(store_of: Callable[[str], Store]) -> None:
    """The helper process: answer ZAP requests, each domain from the store `store_of` reads
    from its directory, until told to stop or the parent is gone."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a ^C is the parent's to handle
    directory = sys.argv[1]
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    requests = _open(context, zmq.ROUTER)
    requests.bind(f"ipc://{directory}/zap")
    control = _open(context, zmq.REP)
    control.bind(f"ipc://{directory}/control")
    poller = zmq.Poller()
    for source in (requests, control, _STDIN):
        poller.register(source, zmq.POLLIN)
    verdicts = _Judge(store_of)
    while True:
        ready = dict(poller.poll())
        if _STDIN in ready and not os.read(_STDIN, 64):
            break  # the parent closed the pipe, or died
        if requests in ready:
            verdicts.refresh()
            while True:  # every queued request, one wake-up
                try:
                    reply = verdicts.answer(requests.recv_multipart(zmq.NOBLOCK))
                except zmq.Again:
                    break
                if reply is not None:
                    requests.send_multipart(reply)
        if control in ready:
            frames = control.recv_multipart()
            control.send_multipart(verdicts.command(frames))
            if frames[0] == b"stop":
                break
    requests.close()
    control.close()
    context.term()
    shutil.rmtree(directory, ignore_errors=True)
