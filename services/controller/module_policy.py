"""Your own policy: any `nn.Module` from (features, masks) to actions, behind `ControlPolicy`."""

from __future__ import annotations

import torch
from torch import nn

from leyline.features import DEFAULT_BOUNDS, FeatureBounds
from leyline.signals import TENSOR_SCHEMA_SIZE
from services.config import ConfigError
from services.controller.columns import COLUMN_COUNT, Column, ObservationBatch
from services.controller.layout import ActionLayout
from services.controller.policy import ControlPolicy, DecisionReason, PolicyOutput


class PolicyError(ConfigError):
    """A policy cannot be loaded, or gave what no policy may give; the message names it."""


def _describe(value: object) -> str:
    if isinstance(value, torch.Tensor):
        return f"{str(value.dtype).removeprefix('torch.')} tensor {list(value.shape)}"
    return type(value).__name__


class ModulePolicy(ControlPolicy):
    """Adapts a user's module: `module(features, masks)` gives actions or scores.

    `features` is [B, TENSOR_SCHEMA_SIZE] float32 (normalised as `bounds` say), `masks` is
    [B, A] bool (True = legal). The module returns either actions, an integer tensor [B] of
    action indices (confidence 1), or scores, a floating tensor [B, A]: the legal argmax is
    the action and its softmax probability among the legal actions the confidence. Every
    output's dtype and shape is checked (metadata only: no device sync); an index out of
    range becomes WAIT with the reason `illegal_proposal`, as a masked action does.
    """

    def __init__(
        self,
        module: nn.Module,
        layout: ActionLayout,
        name: str,
        bounds: FeatureBounds = DEFAULT_BOUNDS,
    ) -> None:
        super().__init__(layout, bounds)
        self.module = module
        self.name = name

    def forward(self, batch: ObservationBatch, masks: torch.Tensor) -> PolicyOutput:
        out = self.module(batch.features, masks)
        count, width = masks.shape
        if (
            isinstance(out, torch.Tensor)
            and out.shape == (count, width)
            and out.dtype.is_floating_point
        ):
            scores = out.masked_fill(~masks, float("-inf"))
            confidence, actions = torch.softmax(scores, dim=1).max(dim=1)
            return PolicyOutput(actions, confidence, self._learned(actions, None))
        if not (
            isinstance(out, torch.Tensor)
            and out.shape == (count,)
            and not out.dtype.is_floating_point
            and not out.dtype.is_complex
            and out.dtype is not torch.bool
        ):
            raise PolicyError(
                f"policy {self.name!r} returned {_describe(out)}; expected actions "
                f"(an integer tensor [{count}]) or scores (a float tensor [{count}, {width}])"
            )
        actions = out.long()
        in_range = (actions >= 0) & (actions < width)
        actions = torch.where(in_range, actions, self.layout.wait)
        confidence = torch.ones(count, dtype=torch.float32, device=actions.device)
        return PolicyOutput(actions, confidence, self._learned(actions, in_range))

    @staticmethod
    def _learned(actions: torch.Tensor, in_range: torch.Tensor | None) -> torch.Tensor:
        reasons = torch.full_like(actions, DecisionReason.LEARNED)
        if in_range is None:
            return reasons
        return torch.where(in_range, reasons, DecisionReason.ILLEGAL_PROPOSAL)


def probe_policy(policy: ControlPolicy, name: str, rows: int = 2) -> None:
    """Run `policy` once on a batch of `rows` neutral observations, all actions legal, and
    check it answers with one action per row: a bad policy fails at start-up, not mid-run.

    The rows' memory is reserved for the probe and forgotten after it.
    """
    actions = len(policy.layout)
    features = torch.zeros((rows, TENSOR_SCHEMA_SIZE), dtype=torch.float32)
    columns = torch.zeros((rows, COLUMN_COUNT), dtype=torch.float64)
    columns[:, Column.ROW] = torch.arange(rows, dtype=torch.float64)
    masks = torch.ones((rows, actions), dtype=torch.bool)
    policy.reserve(rows)
    try:
        with torch.inference_mode():
            out = policy(ObservationBatch(features, columns), masks)
    except PolicyError:
        raise
    except Exception as error:
        raise PolicyError(
            f"policy {name!r} failed on a probe batch: {type(error).__name__}: {error}"
        ) from None
    finally:
        policy.forget(torch.arange(rows))
    if not (isinstance(out, tuple) and len(out) == len(PolicyOutput._fields)):
        raise PolicyError(f"policy {name!r} returned {_describe(out)}; expected a PolicyOutput")
    for field, tensor in zip(PolicyOutput._fields, out, strict=True):
        if not (isinstance(tensor, torch.Tensor) and tensor.shape == (rows,)):
            raise PolicyError(
                f"policy {name!r} returned {field} as {_describe(tensor)}; expected [{rows}]"
            )
    chosen, _, reasons = out
    if chosen.dtype.is_floating_point:
        raise PolicyError(f"policy {name!r} returned {_describe(chosen)} actions; expected int")
    # Every action is legal here, so an illegal proposal can only be an index out of range.
    wrong = (chosen < 0) | (chosen >= actions) | (reasons == DecisionReason.ILLEGAL_PROPOSAL)
    if bool(wrong.any()):
        raise PolicyError(
            f"policy {name!r} proposed actions outside 0..{actions - 1} with every action legal"
        )
