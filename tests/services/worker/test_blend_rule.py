"""The blend rule, the isolated (straight-through) pass and the alpha ramp."""

from __future__ import annotations

import itertools

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from services.worker import blend, blend_alpha, isolated


@settings(max_examples=100, deadline=None)
@given(alpha=st.floats(-2.0, 3.0, allow_nan=False))
def test_blend_is_host_plus_clamped_alpha_times_difference(alpha: float) -> None:
    host, seed = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    clamped = min(1.0, max(0.0, alpha))
    expected = host + clamped * (seed - host)
    assert torch.allclose(blend(host, seed, alpha), expected, atol=1e-6)


def test_blend_endpoints_are_host_and_seed() -> None:
    host, seed = torch.randn(4, 8), torch.randn(4, 8)
    assert torch.equal(blend(host, seed, 0.0), host)
    assert torch.allclose(blend(host, seed, 1.0), seed)


def test_isolated_forward_is_the_host_but_the_seed_gets_the_gradient() -> None:
    host = torch.randn(3, 5, requires_grad=True)
    weight = torch.randn(5, 5, requires_grad=True)
    seed = host.detach() @ weight
    out = isolated(host, seed)
    assert torch.equal(out, host)
    target = torch.randn(3, 5)
    (out * target).sum().backward()  # type: ignore[no-untyped-call]
    assert host.grad is not None and torch.equal(host.grad, target)
    assert weight.grad is not None
    assert torch.allclose(weight.grad, host.detach().T @ target)


def test_alpha_ramp_runs_from_zero_to_one_monotonically() -> None:
    total = 5
    ramp = [blend_alpha(step, total) for step in range(-2, total + 3)]
    assert ramp[:3] == [0.0, 0.0, 0.0]
    assert ramp[-3:] == [1.0, 1.0, 1.0]
    assert all(a < b for a, b in itertools.pairwise(ramp[2 : total + 3]))  # steps 0..total
    assert abs(blend_alpha(1, 2) - 0.5) < 1e-12  # the sigmoid is centred on the midpoint


@settings(max_examples=100, deadline=None)
@given(total=st.integers(1, 50), step=st.integers(-5, 60))
def test_alpha_ramp_stays_in_unit_range_and_never_falls(total: int, step: int) -> None:
    alpha = blend_alpha(step, total)
    assert 0.0 <= alpha <= 1.0
    assert blend_alpha(step + 1, total) >= alpha
