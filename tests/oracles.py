"""The test suite's oracles for moving frames on the torus, written here with torch (never with
library code, so a convention error in the package cannot hide in its own oracle).

Package convention: x along the last axis, y *up*. A translation by ``(vx, vy)`` is
``torch.roll(t, shifts=(-vy, vx), dims=(-2, -1))``; ``k`` counter-clockwise quarter turns of
the plane are ``torch.rot90(t, k, dims=(-2, -1))``. Volumes ``[..., D, H, W]`` follow escnn's voxel
axes ``(-z, -y, x)``: a translation by ``(ux, uy, uz)`` rolls by ``(-uz, -uy, ux)``, and
``torch.rot90(t, 1, dims)`` is +90 degrees about x, y or z for the dims of :data:`ROT90_DIMS`. Fiber
actions come from escnn's own representation matrices (:func:`fiber`).
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
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


#: torch.rot90(x, 1, dims) is +90 degrees (right-handed) about the axis, on [..., D, H, W] = (-z, -y, x):
#: about z, x -> y is (-2, -1) as in 2D; about x, y -> z is (-2, -3); about y, z -> x is (-1, -3).
ROT90_DIMS = {"x": (-2, -3), "y": (-1, -3), "z": (-2, -1)}


def volume_roll(x: torch.Tensor, u: Sequence[int]) -> torch.Tensor:
    """A volume ``[..., D, H, W]`` translated by ``u = (ux, uy, uz)`` voxels on the 3-torus."""
    return torch.roll(x, shifts=(-int(u[2]), -int(u[1]), int(u[0])), dims=(-3, -2, -1))


def volume_turn(x: torch.Tensor, axis: str, k: int) -> torch.Tensor:
    """A volume turned by ``k`` quarter turns about ``axis`` (``"x"``, ``"y"``, ``"z"``) through the grid centre."""
    return torch.rot90(x, int(k), dims=ROT90_DIMS[axis])


def fiber(ft: Any, g: Any, x: torch.Tensor, exact: bool = False) -> torch.Tensor:
    """``rho(g)`` of escnn's field type ``ft`` on the channel axis of a volume ``x [..., C, D, H, W]``; with
    ``exact`` its 0/1 entries rounded (escnn builds the regular representation through a change of basis:
    ~1e-16 off)."""
    rho = np.asarray(ft.representation(g), dtype=np.float64)
    if exact:
        assert np.abs(rho - np.round(rho)).max() < 1e-9
        rho = np.round(rho)
    return torch.einsum("oc,...cdhw->...odhw", torch.as_tensor(rho, dtype=x.dtype), x)
