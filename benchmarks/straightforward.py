"""The straightforward FERNN the benchmark compares flow_escnn against.

This is the recurrence of Keller (2025) written the obvious way (the way the
reference code does it), *not* using any of flow_escnn's machinery:

* every time step calls two escnn ``R2Conv`` modules (``U`` on the input frame,
  ``W`` on the lifted state folded into the batch) in training mode, so escnn
  re-expands both steerable filters at every step;
* the state is transported slice by slice in a Python loop over ``V``:
  ``torch.roll`` for translation flows, ``F.grid_sample`` (bilinear) followed by a
  fiber-channel permutation done by indexing for rotation flows.

It computes the same function as ``flow_escnn.nn.FERNN(..., mode="hidden")``:

.. math::
    h_t(\\nu) = \\mathrm{relu}\\big(W * [\\psi_1(\\nu)\\cdot h_{t-1}(\\nu)] + U * f_t\\big),
    \\qquad h_{-1} = 0,

on the periodic grid, with flow_escnn's coordinate convention (x along the last axis,
y up, rotations about the grid centre). For rotations the periodic wrap-around of
flow_escnn's bilinear transport is reproduced by circularly padding the state before
``grid_sample`` (``padding_mode="zeros"`` only ever sees the padded border, which the
sample points never reach), so the two agree to float rounding; for translations the
hidden states agree to rounding exactly (checked in ``tests/test_benchmarks_smoke.py``).
"""
from __future__ import annotations

import math
from typing import Any, List, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from escnn import nn as enn

__all__ = ["StraightforwardFERNN", "StraightforwardPredictor"]


class StraightforwardFERNN(torch.nn.Module):
    """Naive FERNN layer: Python loop over V, escnn ``R2Conv`` re-expanded every step.

    Args:
        in_type: escnn ``FieldType`` of the input frames.
        hidden_type: escnn ``FieldType`` of each V slice (pointwise-capable: trivial/regular).
        velocities: ``[(vx, vy, k), ...]``: pure translations ``(vx, vy, 0)`` (pixels/frame)
            or pure rotations ``(0, 0, k)`` (``k`` steps of ``2*pi/N`` per frame).
        grid_shape: ``(H, W)`` of the frames (needed to precompute the rotation grids).
        kernel_size: odd kernel size of ``U`` and ``W``.
        bias: learn a bias in ``U`` (``W`` has none), as flow_escnn's FERNN.

    Shapes:
        ``forward(x)``: ``x`` is ``[B, T, C_in, H, W]``; returns ``[B, T, |V|, C_hidden, H, W]``.
    """

    def __init__(
        self,
        in_type: Any,
        hidden_type: Any,
        velocities: Sequence[Tuple[int, int, int]],
        grid_shape: Tuple[int, int],
        kernel_size: int = 3,
        bias: bool = True,
    ) -> None:
        super().__init__()
        self.in_type = in_type
        self.hidden_type = hidden_type
        self.velocities = [tuple(int(c) for c in v) for v in velocities]
        self.grid_shape = (int(grid_shape[0]), int(grid_shape[1]))
        p = kernel_size // 2
        self.U = enn.R2Conv(in_type, hidden_type, kernel_size, padding=p, padding_mode="circular", bias=bias)
        self.W = enn.R2Conv(hidden_type, hidden_type, kernel_size, padding=p, padding_mode="circular", bias=False)
        gs = hidden_type.gspace
        n = int(getattr(gs, "rotations_order", 1) or 1)
        self._n = max(n, 1)
        self._rot: List[Any] = []  # per velocity: None (translation) or (pad, grid index, perm index)
        grids, perms = [], []
        for vx, vy, k in self.velocities:
            if k % self._n == 0:
                self._rot.append(None)
                continue
            if (vx, vy) != (0, 0):
                raise NotImplementedError("the straightforward model supports pure translations or pure rotations")
            pad, grid = _rotation_grid(2 * math.pi * k / self._n, *self.grid_shape)
            g = gs.fibergroup.element(k % self._n)
            rho = np.asarray(hidden_type.representation(g))
            perm = np.argmax(np.round(rho), axis=1)  # rho[o, perm[o]] == 1 for permutation fields
            if not np.allclose(rho[np.arange(len(perm)), perm], 1.0) or not np.allclose(np.abs(rho).sum(1), 1.0):
                raise ValueError("rotation flows need permutation (trivial/regular) hidden fields")
            self._rot.append((pad, len(grids), len(perms)))
            grids.append(grid)
            perms.append(torch.as_tensor(perm, dtype=torch.long))
        # buffers so that .to(device) moves them (non-persistent: not part of any state_dict)
        for i, g in enumerate(grids):
            self.register_buffer(f"_grid{i}", g, persistent=False)
        for i, p_ in enumerate(perms):
            self.register_buffer(f"_perm{i}", p_, persistent=False)

    # -- the per-slice transport (Python loop over V) ------------------------------------------------
    def transport(self, h: torch.Tensor) -> torch.Tensor:
        """:math:`\\psi_1(\\nu)\\cdot h(\\nu)` for every slice of ``h [B, V, C, H, W]``."""
        out = []
        for i, (vx, vy, _k) in enumerate(self.velocities):
            s = h[:, i]
            rot = self._rot[i]
            if rot is None:
                s = torch.roll(s, shifts=(-vy, vx), dims=(-2, -1))
            else:
                pad, gi, pi = rot
                grid = getattr(self, f"_grid{gi}").expand(s.shape[0], -1, -1, -1)
                s = F.grid_sample(
                    F.pad(s, (pad, pad, pad, pad), mode="circular"), grid,
                    mode="bilinear", padding_mode="zeros", align_corners=True,
                )
                s = s[:, getattr(self, f"_perm{pi}")]  # fiber permutation by indexing
            out.append(s)
        return torch.stack(out, dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t_len = x.shape[0], x.shape[1]
        h_, w_ = x.shape[-2:]
        v, c = len(self.velocities), self.hidden_type.size
        h = x.new_zeros(b, v, c, h_, w_)
        outs = []
        for t in range(t_len):
            # escnn R2Conv in training mode: the filters are expanded from the basis at every call
            u = self.U(enn.GeometricTensor(x[:, t], self.in_type)).tensor
            moved = self.transport(h)
            w = self.W(enn.GeometricTensor(moved.reshape(b * v, c, h_, w_), self.hidden_type)).tensor
            h = torch.relu(w.reshape(b, v, c, h_, w_) + u.unsqueeze(1))
            outs.append(h)
        return torch.stack(outs, dim=1)

    @torch.no_grad()
    def load_from_fernn(self, fernn: Any) -> "StraightforwardFERNN":
        """Copy ``U``/``W`` weights from a one-layer ``flow_escnn.nn.FERNN`` with the same types."""
        cell = fernn.cells[0]
        for mine, theirs in ((self.U, cell.U.conv), (self.W, cell.W.conv)):
            mine.weights.copy_(theirs.weights)
            if mine.bias is not None:
                mine.bias.copy_(theirs.bias)
        return self


class StraightforwardPredictor(torch.nn.Module):
    """Naive next-frame predictor with the convention of ``flow_escnn.models.NextFramePredictor``.

    Encoder: :class:`StraightforwardFERNN`'s step (Python loop over V, escnn convs re-expanded
    every call). Frame ``s >= T_in`` is decoded from the max over V of the transported state
    :math:`\\psi_1(\\nu) h_{s-1}(\\nu)` by escnn ``R2Conv`` layers (circular padding, ReLU between),
    and fed back as the next input.

    Shapes:
        ``forward(x [B, T_in, C, H, W], num_predictions)`` -> ``[B, num_predictions, C, H, W]``.
    """

    def __init__(self, in_type: Any, hidden_type: Any, velocities: Sequence[Tuple[int, int, int]],
                 grid_shape: Tuple[int, int], decoder_layers: int = 2, kernel_size: int = 3) -> None:
        super().__init__()
        self.encoder = StraightforwardFERNN(in_type, hidden_type, velocities, grid_shape, kernel_size)
        types_ = [hidden_type] * (decoder_layers + 1) + [in_type]
        p = kernel_size // 2
        self.decoder = torch.nn.ModuleList(
            [enn.R2Conv(a, b, kernel_size, padding=p, padding_mode="circular") for a, b in zip(types_[:-1], types_[1:])]
        )

    def step(self, h: torch.Tensor, f: torch.Tensor, moved: torch.Tensor) -> torch.Tensor:
        enc = self.encoder
        b, v, c, hh, ww = h.shape
        u = enc.U(enn.GeometricTensor(f, enc.in_type)).tensor
        w = enc.W(enn.GeometricTensor(moved.reshape(b * v, c, hh, ww), enc.hidden_type)).tensor
        return torch.relu(w.reshape(b, v, c, hh, ww) + u.unsqueeze(1))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        for i, conv in enumerate(self.decoder):
            z = conv(enn.GeometricTensor(z, conv.in_type)).tensor
            if i < len(self.decoder) - 1:
                z = torch.relu(z)
        return z

    def forward(self, x: torch.Tensor, num_predictions: int = 1) -> torch.Tensor:
        enc = self.encoder
        b, t_in = x.shape[0], x.shape[1]
        h = x.new_zeros(b, len(enc.velocities), enc.hidden_type.size, *x.shape[-2:])
        for t in range(t_in):
            h = self.step(h, x[:, t], enc.transport(h))
        preds = []
        for j in range(num_predictions):
            moved = enc.transport(h)
            preds.append(self.decode(moved.max(dim=1).values))
            if j < num_predictions - 1:
                h = self.step(h, preds[-1], moved)
        return torch.stack(preds, dim=1)

    @torch.no_grad()
    def load_from_predictor(self, model: Any) -> "StraightforwardPredictor":
        """Copy the weights of a one-layer ``NextFramePredictor`` (fernn cell) with the same types."""
        self.encoder.load_from_fernn(model.encoder)
        for mine, theirs in zip(self.decoder, model.decoder):
            mine.weights.copy_(theirs.conv.weights)
            if mine.bias is not None:
                mine.bias.copy_(theirs.conv.bias)
        return self


def _rotation_grid(angle: float, h: int, w: int) -> Tuple[int, torch.Tensor]:
    """Circular pad and ``grid_sample`` grid ``[1, H, W, 2]`` rotating by ``angle`` about the centre.

    Output pixel ``(i, j)`` has planar coordinates ``x = j - (W-1)/2, y = (H-1)/2 - i`` and
    samples the input at ``R(-angle) (x, y)``; the grid addresses the circularly padded input
    (``align_corners=True``, so normalised -1/+1 are the centres of the corner pixels).
    """
    i, j = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    cx, cy = (w - 1) / 2.0, (h - 1) / 2.0
    x, y = j - cx, cy - i
    ca, sa = math.cos(angle), math.sin(angle)
    sx, sy = ca * x + sa * y, -sa * x + ca * y  # R(angle)^{-1} (x, y)
    col, row = sx + cx, cy - sy
    pad = int(max(0.0, math.ceil(max(-col.min(), -row.min(), col.max() - (w - 1), row.max() - (h - 1))))) + 1
    pad = min(pad, h - 1, w - 1)  # torch's circular pad needs pad < size; a 28x28 grid needs 7
    wp, hp = w + 2 * pad, h + 2 * pad
    gx = 2.0 * (col + pad) / (wp - 1) - 1.0
    gy = 2.0 * (row + pad) / (hp - 1) - 1.0
    grid = torch.from_numpy(np.stack([gx, gy], axis=-1)[None].astype(np.float32))
    return pad, grid
