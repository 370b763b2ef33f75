"""Shared, generic pytest fixtures (keep this file minimal; topic-specific helpers live in the test modules)."""
from __future__ import annotations

import os

import pytest
import torch

# One intra-op thread for the tests run in this process (unless OMP_NUM_THREADS says otherwise; the
# tests that start processes set it for theirs): their tensors are tiny, and on a shared 2-core
# machine a second thread waiting for a busy core makes every small op slow (measured on 2 cores:
# tests/test_engine.py + test_nn_sequence.py + test_checks.py 25-32 s with one thread, 33-96 s with two).
# The default command (scripts/test.sh) runs one pytest-xdist worker per core, each with this one thread.
if "OMP_NUM_THREADS" not in os.environ:
    torch.set_num_threads(1)


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
