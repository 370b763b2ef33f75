"""Shared, generic pytest fixtures (keep this file minimal; topic-specific helpers live in the test modules)."""
from __future__ import annotations

import pytest
import torch


@pytest.fixture
def rng() -> torch.Generator:
    """A freshly seeded CPU torch generator (seed 0): pass it as ``generator=`` to ``torch.randn`` etc."""
    return torch.Generator().manual_seed(0)


@pytest.fixture
def deterministic_grads():
    """``grads(fn, x, g)``: the gradient of ``fn(x)`` against ``g``, computed twice under
    ``torch.use_deterministic_algorithms(True)`` (the previous setting restored)."""

    def grads(fn, x: torch.Tensor, g: torch.Tensor):
        prev = torch.are_deterministic_algorithms_enabled()
        torch.use_deterministic_algorithms(True)
        try:
            return [torch.autograd.grad(fn(x), x, g)[0] for _ in range(2)]
        finally:
            torch.use_deterministic_algorithms(prev)

    return grads
