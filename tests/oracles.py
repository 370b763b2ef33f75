"""The test suite's oracles for moving frames on the torus, written here with torch (never with
library code, so a convention error in the package cannot hide in its own oracle).

Package convention: x along the last axis, y *up*. A translation by ``(vx, vy)`` is
``torch.roll(t, shifts=(-vy, vx), dims=(-2, -1))``; ``k`` counter-clockwise quarter turns of
the plane are ``torch.rot90(t, k, dims=(-2, -1))``.
"""
from __future__ import annotations

from typing import Sequence

import torch


def roll(x: torch.Tensor, vx: int, vy: int, times: int = 1) -> torch.Tensor:
    """``x`` translated ``times`` times by ``(vx, vy)`` (x right, y up) on the torus of its last two axes."""
    return torch.roll(x, shifts=(-times * vy, times * vx), dims=(-2, -1))


def translate_sequence(x: torch.Tensor, mu: Sequence[int], start: int = 0) -> torch.Tensor:
    """``f'_t = roll(f_t, (start + t) mu)`` for a sequence ``[B, T, ...]``: the translation flow ``mu``."""
    return torch.stack([roll(x[:, t], mu[0], mu[1], start + t) for t in range(x.shape[1])], 1)


def quarter_turns(x: torch.Tensor, k: int) -> torch.Tensor:
    """``x`` turned by ``k`` counter-clockwise quarter turns about the centre of its last two axes."""
    return torch.rot90(x, k, dims=(-2, -1))
