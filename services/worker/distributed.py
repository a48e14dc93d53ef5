"""Data-parallel training under `torchrun`: one rank speaks on the bus, every rank moves alike.

    dist.init_process_group("gloo")            # or "nccl", one GPU per rank
    ranks = RankSync()
    seeds = Seeds("w1", module, optimizer=optimizer)
    model = ReplicatedModule(module, seeds)     # DDP, rebuilt when the seeds change
    node = worker_node("w1", ...) if ranks.speaker else None
    agent = Agent(node, seeds, ranks=ranks)
    ...loss = F.cross_entropy(model(x), y); loss.backward(); optimizer.step(); agent.step()
    agent.end_epoch(...)

Rank 0 alone has a node: it hears the controller, acknowledges and publishes. At every safe
point `RankSync.share` broadcasts the commands rank 0 has due, encoded with the contracts'
codec, and every rank applies exactly those, in order, at the same step; `agree` makes the
epoch's metrics identical on every rank (the mean over ranks), so the lifecycle's gates and
auto-advances decide the same everywhere. Seeds are initialised from (seed, germination
number) alone, so every rank grows the same weights; DDP then keeps them in step.
"""

from __future__ import annotations

from typing import Any

import msgspec
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from leyline import AdaptationCommand
from leyline.wire import decode, encode
from services.worker.ledger import Pending, RefusedCommand
from services.worker.seeds import Seeds

__all__ = ["RankSync", "ReplicatedModule"]

_COMMAND, _REFUSED = "command", "refused"
_refused = msgspec.msgpack.Decoder(RefusedCommand)


class RankSync:
    """How the ranks of one process group agree on Leyline's decisions (see `Ranks`)."""

    def __init__(self, group: dist.ProcessGroup | None = None, source: int = 0) -> None:
        self.group = group
        self.source = source
        self.rank = dist.get_rank(group)
        self.world = dist.get_world_size(group)

    @property
    def speaker(self) -> bool:
        return self.rank == self.source

    def share(self, commands: list[Pending]) -> list[Pending]:
        """Rank 0's due commands on every rank, in order (the others pass what they have)."""
        payload: list[Any] = [[_encoded(c) for c in commands] if self.speaker else None]
        dist.broadcast_object_list(payload, src=self.source, group=self.group)
        return [_decoded(kind, data) for kind, data in payload[0]]

    def agree(self, metrics: dict[str, float]) -> dict[str, float]:
        """The mean of each metric over the ranks, bit-identical on every rank."""
        names = sorted(metrics)
        values = torch.tensor([metrics[name] for name in names], dtype=torch.float64)
        if dist.get_backend(self.group) == dist.Backend.NCCL:
            values = values.cuda()
        dist.all_reduce(values, group=self.group)
        values /= self.world
        dist.broadcast(values, src=self.source, group=self.group)
        return dict(zip(names, values.tolist(), strict=True))


def _encoded(command: Pending) -> tuple[str, bytes]:
    if isinstance(command, RefusedCommand):
        return _REFUSED, msgspec.msgpack.encode(command)
    return _COMMAND, encode(command)


def _decoded(kind: str, data: bytes) -> Pending:
    if kind == _REFUSED:
        return _refused.decode(data)
    command = decode(data)
    assert isinstance(command, AdaptationCommand)  # rank 0 encoded one
    return command


class ReplicatedModule:
    """`module` under DistributedDataParallel, rebuilt on every rank before the first forward
    after the seeds changed its trainable parameters (a seed in or out, paused or resumed).

    The change happens at a safe point, on every rank alike, so every rank rebuilds at the
    same step. `find_unused_parameters` is on: a seed that is germinated, embargoed or
    paused holds parameters the forward pass does not use.
    """

    def __init__(self, module: nn.Module, seeds: Seeds, **ddp_options: Any) -> None:
        self.module = module
        self.options = {"find_unused_parameters": True, **ddp_options}
        self.rebuilds = 0
        self._wrapped: DistributedDataParallel | None = None
        seeds.listeners.append(self._stale)

    def _stale(self) -> None:
        self._wrapped = None

    @property
    def wrapped(self) -> DistributedDataParallel:
        """The current wrapper (built now if the parameter set changed since the last one)."""
        if self._wrapped is None:
            self._wrapped = DistributedDataParallel(self.module, **self.options)
            self.rebuilds += 1
        return self._wrapped

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.wrapped(*args, **kwargs)
