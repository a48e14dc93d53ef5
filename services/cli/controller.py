"""`leyline controller`: decide seed commands from the workers' fast signals."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import structlog

from bus import Channel
from services.cli._service import add_service_parser, load_service, make_node
from services.config import ControllerConfig
from services.controller.inference import InferenceLoop
from services.controller.journal import CommandJournal
from services.controller.loading import load_policy
from services.controller.policy import ControlPolicy
from services.controller.process import Controller
from services.guards import TransitionGuard


def add_parser(subparsers: Any) -> None:
    parser = add_service_parser(subparsers, "controller", "run the controller", ControllerConfig)
    parser.set_defaults(handler=_run)


def build_policy(config: ControllerConfig) -> ControlPolicy:
    """The configured policy (see `services.controller.loading`); a bad one is a PolicyError."""
    return load_policy(config.policy, config.topology, config.checkpoint)


def _run(args: argparse.Namespace) -> int:
    config, bus = load_service(ControllerConfig, "controller", args)
    policy = build_policy(config)  # before any socket: a bad policy is a one-line error
    node = make_node(
        "controller",
        bus,
        subscribe=[(Channel.SIG, None), (Channel.ACK, None), (Channel.REP, None)],
        publish_bind=[config.commands],
        publish_connect=[config.sink],
        subscribe_bind=[config.intake],
        subscribe_connect=list(config.relays),
        guards={Channel.REP: TransitionGuard()},
        state_dir=Path(config.journal).parent,
        replay_store=Path(config.journal).parent / "outbox" / "controller.db",
    )
    device = None if config.device == "auto" else config.device
    loop = InferenceLoop(
        policy,
        max_batch=config.max_batch,
        max_wait_s=config.max_wait_s,
        device=device,
    )
    journal = CommandJournal(config.journal)
    controller = Controller(
        node, loop, journal, topology=config.topology, ack_timeout_s=config.ack_timeout_s
    )
    log = structlog.get_logger("leyline.controller")
    log.info("controller running", device=str(loop.device), policy=config.policy)
    try:
        controller.run()
    finally:
        node.close()
        journal.close()
    log.info(
        "controller stopped",
        decided=controller.decided,
        issued=controller.issued,
        applied=controller.applied,
        rejected=controller.rejected,
        resent=controller.resent,
    )
    return 0
