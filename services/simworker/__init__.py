"""Simulated workers: the real bus and worker protocol without training, many per process."""

from services.simworker.config import SimulateConfig
from services.simworker.group import WorkerGroup, run_group
from services.simworker.trainer import SimulatedTrainer
from services.simworker.worker import SimulatedWorker

__all__ = ["SimulateConfig", "SimulatedTrainer", "SimulatedWorker", "WorkerGroup", "run_group"]
