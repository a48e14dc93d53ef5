"""The transformer host: a small causal character language model, a seed slot after every block."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from leyline.actions import SLOT_IDS
from services.worker.data_text import VOCAB_SIZE

HEADS = 4


class CausalSelfAttention(nn.Module):
    """Multi-head self-attention where position t sees positions 0..t only.

    Shared by the host's blocks and the `attention` seed, so both mask the future the same way.
    """

    def __init__(self, width: int, heads: int = HEADS) -> None:
        super().__init__()
        if width % heads:
            raise ValueError(f"width {width} is not divisible by {heads} heads")
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.out = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, width = x.shape
        q, k, v = self.qkv(x).split(width, dim=2)
        shape = (batch, length, self.heads, width // self.heads)
        q, k, v = (t.view(shape).transpose(1, 2) for t in (q, k, v))
        mixed = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        out: torch.Tensor = self.out(mixed.transpose(1, 2).reshape(batch, length, width))
        return out


class Block(nn.Module):
    """Pre-norm transformer block: x + attention(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, width: int, expansion: int = 4) -> None:
        super().__init__()
        self.attention_norm = nn.LayerNorm(width)
        self.attention = CausalSelfAttention(width)
        self.mlp_norm = nn.LayerNorm(width)
        self.mlp = nn.Sequential(
            nn.Linear(width, expansion * width), nn.GELU(), nn.Linear(expansion * width, width)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attention(self.attention_norm(x))
        out: torch.Tensor = x + self.mlp(self.mlp_norm(x))
        return out


class HostTransformer(nn.Module):
    """Token and position embeddings, one block per slot id, a final norm and the vocabulary head.

    Maps token ids B x T to next-token logits B x T x V. `slots` maps each id in `slot_ids` to
    a module applied to that block's output (B x T x width); any id left out is the identity.
    Seeds live inside the slots, so `host_parameters()` excludes them.
    """

    #: The injection points, in forward order: after every block.
    slot_ids: ClassVar[tuple[str, ...]] = SLOT_IDS["transformer"]

    def __init__(
        self, width: int = 64, context: int = 32, slots: Mapping[str, nn.Module] | None = None
    ) -> None:
        super().__init__()
        self.context = context
        self.tokens = nn.Embedding(VOCAB_SIZE, width)
        self.positions = nn.Embedding(context, width)
        self.blocks = nn.ModuleList([Block(width) for _ in self.slot_ids])
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, VOCAB_SIZE)
        given = dict(slots or {})
        unknown = set(given) - set(self.slot_ids)
        if unknown:
            raise ValueError(f"unknown slot ids {sorted(unknown)}; the host has {self.slot_ids}")
        self.slots = nn.ModuleDict({sid: given.get(sid, nn.Identity()) for sid in self.slot_ids})

    @staticmethod
    def slot_widths(width: int = 64) -> dict[str, int]:
        """The feature width at each slot (every block keeps the model width)."""
        return dict.fromkeys(HostTransformer.slot_ids, width)

    def host_parameters(self) -> Iterator[nn.Parameter]:
        """The host's own parameters: embeddings, blocks, norm and head, never a seed's."""
        for part in (self.tokens, self.positions, self.blocks, self.norm, self.head):
            yield from part.parameters()

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        length = tokens.shape[1]
        if length > self.context:
            raise ValueError(f"{length} tokens exceed the host's context of {self.context}")
        x = self.tokens(tokens) + self.positions(torch.arange(length, device=tokens.device))
        for slot_id, block in zip(self.slot_ids, self.blocks, strict=True):
            x = self.slots[slot_id](block(x))
        logits: torch.Tensor = self.head(self.norm(x))
        return logits
