"""Shared, generic pytest fixtures (keep this file minimal; topic-specific helpers live in the test modules)."""
from __future__ import annotations

import pytest
import torch


@pytest.fixture
def rng() -> torch.Generator:
    """A freshly seeded CPU torch generator (seed 0): pass it as ``generator=`` to ``torch.randn`` etc."""
    return torch.Generator().manual_seed(0)
