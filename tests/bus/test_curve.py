"""The CURVE matrix: who can connect, who can publish what, and who is believed.

Real tcp sockets on loopback. The binding side is the CURVE server (ZAP against the trust
directory), the connecting side pins the server's key, and every delivered message's sender is
its connection's authenticated identity.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import zmq
from bus_loops import ANY_PORT, handshake, pump_until
from bus_samples import fast_signals, frames, stage_changed

from bus import Channel, Envelope, Proxy, Publisher, Rejection, Subscriber
from bus.security import Curve, SecurityError, TrustStore, load_key_pair, secret_key_path
from bus.testing import capture_rejections
from leyline import AdaptationCommand, CommandType, RejectReason, SeedStage, new_id

CurveOf = Callable[[str], Curve]
Context = zmq.Context[zmq.Socket[bytes]]
QUIET_S = 0.5  # how long a refused peer gets to (fail to) deliver before we look


def _command() -> AdaptationCommand:
    return AdaptationCommand(
        command_id=new_id(), command_type=CommandType.REQUEST_STATE, sequence=1
    )


def _impostor(impostor_dir: Path, key_dir: Path, identity: str) -> Curve:
    """A key nobody trusts, claiming `identity`, that knows the real servers' public keys."""
    keys = load_key_pair(secret_key_path(impostor_dir, identity))
    return Curve(keys, TrustStore(key_dir / "trust"))


@pytest.fixture
def intake(context: Context, curve: CurveOf) -> Iterator[Subscriber]:
    """The sink's intake: a CURVE server taking every channel."""
    subscriber = Subscriber(
        ANY_PORT,
        [(channel, None) for channel in Channel],
        bind=True,
        context=context,
        security=curve("sink"),
    )
    yield subscriber
    subscriber.close()


def _collect(subscriber: Subscriber) -> list[Envelope]:
    received: list[Envelope] = []
    for channel in subscriber.channels:
        subscriber.on(channel, received.append)
    return received


def _publisher(context: Context, address: str, sender: str, security: Curve) -> Publisher:
    return Publisher(address, sender, bind=False, context=context, security=security)


def test_a_trusted_key_is_delivered_under_its_own_identity(
    context: Context, curve: CurveOf, intake: Subscriber
) -> None:
    w1 = _publisher(context, f"sink@{intake.addresses[0]}", "w1", curve("w1"))
    received = _collect(intake)
    handshake(intake, w1)
    w1.publish(Channel.SIG, fast_signals(3), "w1")
    assert pump_until(lambda: any(not e.is_control for e in received), intake)
    assert [e.header.sender for e in received if not e.is_control] == ["w1"]
    assert intake.metrics.rejected_total == 0
    w1.close()


def test_an_unknown_key_never_connects_and_is_counted(
    context: Context, curve: CurveOf, intake: Subscriber, key_dir: Path, impostor_dir: Path
) -> None:
    stranger = _publisher(
        context, f"sink@{intake.addresses[0]}", "w1", _impostor(impostor_dir, key_dir, "w1")
    )
    genuine = _publisher(context, f"sink@{intake.addresses[0]}", "w2", curve("w2"))
    received = _collect(intake)
    handshake(intake, genuine)
    for epoch in range(50):
        stranger.publish(Channel.SIG, fast_signals(epoch % 30), "w1")
    genuine.publish(Channel.SIG, fast_signals(1), "w2")
    assert pump_until(
        lambda: any(e.header.sender == "w2" and not e.is_control for e in received), intake
    )
    pump_until(lambda: False, intake, timeout_s=QUIET_S)
    assert {e.header.sender for e in received} == {"w2"}
    assert pump_until(lambda: intake.metrics.rejected[RejectReason.UNAUTHENTICATED] >= 1, intake)
    verdicts = {name: value for name, _, value in curve("sink").samples()}
    assert verdicts["leyline_auth_denied_total"] >= 1
    assert verdicts["leyline_auth_accepted_total"] >= 1
    stranger.close()
    genuine.close()


def test_a_null_mechanism_peer_gets_nothing_in_and_nothing_out(
    context: Context, curve: CurveOf, intake: Subscriber
) -> None:
    plain = context.socket(zmq.XPUB)
    plain.setsockopt(zmq.LINGER, 0)
    plain.connect(intake.addresses[0])
    genuine = _publisher(context, f"sink@{intake.addresses[0]}", "w1", curve("w1"))
    received = _collect(intake)
    handshake(intake, genuine)
    forged = frames(Channel.SIG, "w2", fast_signals(1), sender="w2")
    for _ in range(20):
        try:
            plain.send_multipart(forged, zmq.NOBLOCK)
        except zmq.Again:
            break  # no handshake, no pipe: nothing can even be queued
    genuine.publish(Channel.SIG, fast_signals(2), "w1")
    assert pump_until(
        lambda: any(e.header.sender == "w1" and not e.is_control for e in received), intake
    )
    pump_until(lambda: False, intake, timeout_s=QUIET_S)
    assert {e.header.sender for e in received} == {"w1"}
    assert pump_until(lambda: intake.metrics.rejected[RejectReason.HANDSHAKE_FAILED] >= 1, intake)
    plain.close()
    genuine.close()


def test_garbage_handshake_bytes_do_not_disturb_genuine_peers(
    context: Context, curve: CurveOf, intake: Subscriber
) -> None:
    host, port = intake.addresses[0].removeprefix("tcp://").rsplit(":", 1)
    attackers = []
    for _ in range(5):
        raw = socket.create_connection((host, int(port)))
        raw.sendall(os.urandom(4096))
        attackers.append(raw)
    genuine = _publisher(context, f"sink@{intake.addresses[0]}", "w1", curve("w1"))
    received = _collect(intake)
    handshake(intake, genuine)
    genuine.publish(Channel.SIG, fast_signals(4), "w1")
    assert pump_until(lambda: any(not e.is_control for e in received), intake)
    # libzmq drops a connection whose greeting is garbage with no handshake event (only a
    # disconnect, like a peer leaving), so nothing is counted, and nothing became a message.
    assert intake.metrics.rejected_total == 0
    for raw in attackers:
        raw.close()
    genuine.close()


def test_a_worker_key_may_not_publish_commands(
    context: Context, curve: CurveOf, intake: Subscriber
) -> None:
    w1 = _publisher(context, f"sink@{intake.addresses[0]}", "w1", curve("w1"))
    received = _collect(intake)
    handshake(intake, w1)
    with capture_rejections(intake) as rejected:
        w1.publish(Channel.CMD, _command(), "w2")
        assert pump_until(lambda: bool(rejected), intake)
    assert [r.reason for r in rejected] == [RejectReason.NOT_PERMITTED]
    assert not [e for e in received if not e.is_control]
    assert intake.metrics.rejected[RejectReason.NOT_PERMITTED] == 1
    w1.close()


def test_a_forged_sender_or_scope_is_refused_by_name(
    context: Context, curve: CurveOf, intake: Subscriber
) -> None:
    address = f"sink@{intake.addresses[0]}"
    forger = _publisher(context, address, "w2", curve("w1"))  # w1's key, w2 in the header
    honest = _publisher(context, address, "w1", curve("w1"))
    received = _collect(intake)
    handshake(intake, honest)
    with capture_rejections(intake) as rejected:
        forger.publish(Channel.SIG, fast_signals(5), "w2")
        honest.publish(Channel.SIG, fast_signals(6), "w2")  # right sender, someone else's scope
        honest.publish(Channel.TEL, stage_changed(SeedStage.DORMANT, SeedStage.GERMINATED), "w2")
        assert pump_until(lambda: len([r for r in rejected if r.sender != "?"]) >= 3, intake)
    reasons = sorted(r.reason for r in rejected if r.topic.startswith(("sig.", "tel.")))
    assert RejectReason.FORGED_SENDER in reasons
    assert reasons.count(RejectReason.NOT_PERMITTED) == 2
    assert not [e for e in received if not e.is_control]
    forger.close()
    honest.close()


def test_an_impostor_on_the_controllers_port_is_never_heard(
    curve: CurveOf, key_dir: Path, impostor_dir: Path
) -> None:
    worker_context: Context = zmq.Context()
    impostor_context: Context = zmq.Context()
    controller_context: Context = zmq.Context()
    try:
        controller = Publisher(
            ANY_PORT, "controller", context=controller_context, security=curve("controller")
        )
        port = controller.address
        worker = Subscriber(
            f"controller@{port}",
            [(Channel.CMD, "w1")],
            context=worker_context,
            security=curve("w1"),
        )
        received = _collect(worker)
        handshake(worker, controller)
        controller.publish(Channel.CMD, _command(), "w1")
        assert pump_until(lambda: bool(received), worker)
        controller.close()
        Curve.stop_handlers(controller_context)
        # An impostor takes the freed port, with its own key under the controller's name.
        impostor = Publisher(
            port,
            "controller",
            context=impostor_context,
            security=Curve(
                load_key_pair(secret_key_path(impostor_dir, "controller")),
                TrustStore(key_dir / "trust"),
            ),
        )
        heard, counted = len(received), worker.metrics.received[Channel.CMD]
        stop = threading.Event()

        def flood() -> None:
            while not stop.is_set():
                impostor.service()
                impostor.publish(Channel.CMD, _command(), "w1")
                stop.wait(0.005)

        thread = threading.Thread(target=flood)
        thread.start()
        pump_until(lambda: False, worker, timeout_s=2.0)
        stop.set()
        thread.join()
        assert len(received) == heard
        assert worker.metrics.received[Channel.CMD] == counted  # not even a heartbeat got in
        impostor.close()
        worker.close()
    finally:
        for ctx in (worker_context, impostor_context, controller_context):
            Curve.stop_handlers(ctx)
            ctx.destroy(linger=0)


def test_a_subscriber_without_a_key_reads_nothing(context: Context, curve: CurveOf) -> None:
    controller = Publisher(ANY_PORT, "controller", context=context, security=curve("controller"))
    eavesdropper = context.socket(zmq.SUB)
    eavesdropper.setsockopt(zmq.SUBSCRIBE, b"")
    eavesdropper.connect(controller.address)
    worker = Subscriber(
        f"controller@{controller.address}",
        [(Channel.CMD, "w1")],
        context=context,
        security=curve("w1"),
    )
    received = _collect(worker)
    handshake(worker, controller)
    for _ in range(10):
        controller.publish(Channel.CMD, _command(), "w1")
    assert pump_until(lambda: len(received) >= 10, worker, publishers=(controller,))
    assert not eavesdropper.poll(int(QUIET_S * 1000))
    eavesdropper.close()
    worker.close()
    controller.close()


def test_a_connect_address_must_name_the_key_it_pins(context: Context, curve: CurveOf) -> None:
    with pytest.raises(SecurityError, match="names no server identity"):
        Subscriber(
            "tcp://127.0.0.1:5999", [(Channel.CMD, "w1")], context=context, security=curve("w1")
        )


def test_the_proxy_relays_authenticated_senders_and_refuses_forged_ones(
    context: Context, curve: CurveOf
) -> None:
    proxy = Proxy(ANY_PORT, ANY_PORT, context=context, security=curve("proxy"))
    stop = threading.Event()
    thread = threading.Thread(target=proxy.run, args=(stop.is_set,), daemon=True)
    thread.start()
    try:
        honest = _publisher(context, f"proxy@{proxy.frontend}", "w1", curve("w1"))
        forger = _publisher(context, f"proxy@{proxy.frontend}", "w1", curve("w2"))
        sink = Subscriber(
            f"proxy@{proxy.backend}", [(Channel.SIG, None)], context=context, security=curve("sink")
        )
        received = _collect(sink)
        handshake(sink, honest)
        forger.publish(Channel.SIG, fast_signals(7), "w1")
        honest.publish(Channel.SIG, fast_signals(8), "w1")
        assert pump_until(lambda: any(not e.is_control for e in received), sink)
        pump_until(lambda: False, sink, timeout_s=QUIET_S)
        data = [e for e in received if not e.is_control]
        assert [e.message.epoch for e in data] == [8]
        assert proxy.metrics.refused >= 1
        assert sink.metrics.rejected_total == 0
        for endpoint in (honest, forger, sink):
            endpoint.close()
    finally:
        stop.set()
        thread.join(timeout=5)
        proxy.close()


def test_rejections_carry_no_message_of_a_refused_identity(
    context: Context, curve: CurveOf, intake: Subscriber
) -> None:
    """A refusal at the identity step happens before decoding: nothing of it is handed on."""
    forger = _publisher(context, f"sink@{intake.addresses[0]}", "w2", curve("w1"))
    honest = _publisher(context, f"sink@{intake.addresses[0]}", "w1", curve("w1"))
    handshake(intake, honest)
    captured: list[Rejection] = []
    intake.on_rejection(captured.append)
    forger.publish(Channel.SIG, fast_signals(9), "w2")
    assert pump_until(lambda: any(r.reason is RejectReason.FORGED_SENDER for r in captured), intake)
    forged = [r for r in captured if r.reason is RejectReason.FORGED_SENDER]
    assert all(r.message is None for r in forged)
    assert {r.sender for r in forged} == {"w1"}  # the key that sent it, not the claimed w2
    forger.close()
    honest.close()


def test_an_incarnation_from_the_future_cannot_freeze_a_senders_streams(
    context: Context, curve: CurveOf, intake: Subscriber
) -> None:
    """A life of 2^63-1 would make every later genuine message STALE: it is refused instead."""
    address = f"sink@{intake.addresses[0]}"
    future = Publisher(
        address, "w1", bind=False, context=context, security=curve("w1"), incarnation=2**63 - 1
    )
    received = _collect(intake)
    with capture_rejections(intake) as rejected:
        future.publish(Channel.TEL, stage_changed(SeedStage.DORMANT, SeedStage.GERMINATED), "w1")
        assert pump_until(
            lambda: any(r.reason is RejectReason.FUTURE_INCARNATION for r in rejected),
            intake,
            publishers=(future,),
        )
    future.close()
    genuine = _publisher(context, address, "w1", curve("w1"))
    handshake(intake, genuine)
    genuine.publish(Channel.TEL, stage_changed(SeedStage.DORMANT, SeedStage.GERMINATED), "w1")
    assert pump_until(lambda: any(not e.is_control for e in received), intake)
    assert [e.header.incarnation for e in received if not e.is_control] == [genuine.incarnation]
    genuine.close()


def test_each_server_is_answered_from_its_own_trust_store(
    context: Context, curve: CurveOf, key_dir: Path, impostor_dir: Path
) -> None:
    """Two trust stores in one process (one ZAP handler per context): each server socket is
    judged by the store of the Curve that made it a server, never by another's."""
    ours = Subscriber(
        ANY_PORT, [(Channel.SIG, None)], bind=True, context=context, security=curve("sink")
    )
    theirs = Subscriber(
        ANY_PORT,
        [(Channel.SIG, None)],
        bind=True,
        context=context,
        security=Curve.from_directory(impostor_dir, "sink"),
    )
    to_ours = _publisher(context, f"sink@{ours.addresses[0]}", "w1", curve("w1"))
    w1_to_theirs = Curve(
        load_key_pair(secret_key_path(key_dir, "w1")), TrustStore(impostor_dir / "trust")
    )
    to_theirs = _publisher(context, f"sink@{theirs.addresses[0]}", "w1", w1_to_theirs)
    received_ours, received_theirs = _collect(ours), _collect(theirs)
    handshake(ours, to_ours)
    to_ours.publish(Channel.SIG, fast_signals(1), "w1")
    to_theirs.publish(Channel.SIG, fast_signals(1), "w1")
    assert pump_until(lambda: any(not e.is_control for e in received_ours), ours)
    assert pump_until(lambda: theirs.metrics.rejected[RejectReason.UNAUTHENTICATED] >= 1, theirs)
    assert not received_theirs
    for endpoint in (to_ours, to_theirs, ours, theirs):
        endpoint.close()
