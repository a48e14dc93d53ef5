"""The training worker: a PyTorch host CNN with seed slots, driven through the seed lifecycle."""

from services.worker.blending import blend, blend_alpha, isolated
from services.worker.blueprints import SEED_FACTORIES, UnknownBlueprintError, build_seed
from services.worker.config import LifecycleConfig, TrainingConfig
from services.worker.data import DigitsSplit, load_digits_split, shuffled_batches
from services.worker.host import HostCNN
from services.worker.model import WorkerModel
from services.worker.outcome import CommandOutcome
from services.worker.slot import SeedSlot, SlotChange
from services.worker.trainer import EpochReport, Trainer

__all__ = [
    "SEED_FACTORIES",
    "CommandOutcome",
    "DigitsSplit",
    "EpochReport",
    "HostCNN",
    "LifecycleConfig",
    "SeedSlot",
    "SlotChange",
    "Trainer",
    "TrainingConfig",
    "UnknownBlueprintError",
    "WorkerModel",
    "blend",
    "blend_alpha",
    "build_seed",
    "isolated",
    "load_digits_split",
    "shuffled_batches",
]
