"""`leyline worker`: train a host network with seed slots under the controller's commands."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import structlog
import torch

from bus import Channel
from services.cli._service import add_service_parser, load_service, make_node
from services.config import BusConfig, WorkerConfig
from services.worker.config import LifecycleConfig, TrainingConfig
from services.worker.model import WorkerModel
from services.worker.process import Checkpoint, Worker
from services.worker.trainer import Trainer


def add_parser(subparsers: Any) -> None:
    parser = add_service_parser(subparsers, "worker", "run a training worker", WorkerConfig)
    parser.set_defaults(handler=_run)


def build_model(config: WorkerConfig) -> WorkerModel:
    """The worker's model from its settings."""
    training = TrainingConfig(
        seed=config.seed,
        topology=config.topology,
        batch_size=config.batch_size,
        learning_rate=config.lr,
        seed_learning_rate=config.seed_lr,
    )
    lifecycle = LifecycleConfig(
        max_epochs=config.max_epochs_preset, embargo_epochs=config.embargo_epochs
    )
    return WorkerModel(config.id, training, lifecycle)


def build_worker(config: WorkerConfig, bus: BusConfig) -> Worker:
    """The worker as `leyline worker` runs it: its model, its node and its checkpoint.

    No semantic guard on `cmd`: the worker judges each command at its turn, after it has
    deduplicated it, so a resend is answered from its ledger and never counted a violation.
    """
    model = build_model(config)
    node = make_node(
        config.id,
        bus,
        subscribe=[(Channel.CMD, config.id)],
        publish_bind=[] if config.publish is None else [config.publish],
        publish_connect=list(config.intake),
        subscribe_connect=[config.commands],
        state_dir=Path(config.data_dir),
        replay_store=Path(config.data_dir) / "outbox" / f"{config.id}.db",
    )
    checkpoint = Checkpoint(Path(config.data_dir) / "checkpoints" / f"{config.id}.pt")
    return Worker(node, Trainer(model), checkpoint, epochs=config.epochs)


def _run(args: argparse.Namespace) -> int:
    config, bus = load_service(WorkerConfig, "worker", args)
    structlog.contextvars.bind_contextvars(worker=config.id)
    torch.set_num_threads(config.threads)
    worker = build_worker(config, bus)
    log = structlog.get_logger("leyline.worker")
    try:
        worker.connect()
        log.info("worker training", epochs=config.epochs, resumed_at=worker.trainer.epoch)
        worker.run()
    finally:
        worker.close()
    log.info("worker done", epoch=worker.trainer.epoch, last_applied=worker.ledger.last_applied)
    return 0
