"""Rendering for :mod:`flow_escnn.data._mnist_world` (private): worlds, agent views, window drawings.

Coordinates are the package's (:mod:`flow_escnn.flows._planar`): pixel ``(i, j)`` of an ``N x N``
grid sits at the planar point :math:`x = j - c`, :math:`y = c - i`, :math:`c = (N - 1)/2` (x along
the last axis, y up, origin at the grid centre), and the grid is a torus. An agent pose
:math:`P = (p, R_\\theta)` maps a view point :math:`x` (about the view centre) to the world point
:math:`P x = R_\\theta x + p`, and the view is the world pulled back by the pose,
:math:`\\mathrm{view}(x) = \\mathrm{world}(P x)`.

* :func:`exact_views`: poses with an integer position and a heading that is a multiple of 90
  degrees map view pixels onto world pixels; the view is then a pure gather computed with integer
  arithmetic on doubled coordinates (exact, one batched gather, no loop over samples);
* :func:`bilinear_views`: any other pose, by periodic bilinear interpolation of the world at
  :math:`P x` (approximate: one resampling of the exactly rendered world);
* :func:`window_mask` / :func:`window_outline`: which world pixels the view covers, and the world
  pixels under the view's border (for pictures).
"""
from __future__ import annotations

import math
from typing import Tuple

import numpy as np
import torch


__all__ = [
    "render_worlds",
    "rotation_table",
    "exact_views",
    "bilinear_views",
    "window_mask",
    "window_outline",
]


def render_worlds(patches: torch.Tensor, offsets: torch.Tensor, velocities: torch.Tensor, num_frames: int,
                  world_size: int) -> torch.Tensor:
    """Worlds ``[n, T, N, N]``: digits moved by whole pixels, summed and clamped to [0, 1].

    Digit ``k`` of episode ``b`` at frame ``t`` is its ``h x w`` patch centred on the grid (top-left
    corner at ``((N - h) // 2, (N - w) // 2)``) and translated by ``offsets[b, k] + t *
    velocities[b, k]`` with wrap-around, i.e. ``torch.roll(centred, (-sy, sx))`` (x right, y up).
    The patches are added into the worlds (``index_add_``), so only ``K * T * h * w`` pixels are
    touched; the row and column indices are separable (built on ``[.., h]`` and ``[.., w]``).

    Args:
        patches: ``[n, K, h, w]`` digit images (``h, w <= N``).
        offsets: integer ``[n, K, 2]`` positions ``(x, y)`` at frame 0.
        velocities: integer ``[n, K, 2]`` velocities ``(vx, vy)`` in pixels per frame.
        num_frames: ``T``.
        world_size: ``N``.
    """
    n, k, h, w = patches.shape
    big, t = world_size, num_frames
    frames = torch.arange(t)
    shift = offsets.long()[:, :, None, :] + frames.view(1, 1, t, 1) * velocities.long()[:, :, None, :]  # [n, K, T, 2]
    top = ((big - h) // 2 - shift[..., 1]).remainder(big)  # world row of the patch's row 0
    left = ((big - w) // 2 + shift[..., 0]).remainder(big)
    rows = (top[..., None] + torch.arange(h)).remainder(big)  # [n, K, T, h]
    cols = (left[..., None] + torch.arange(w)).remainder(big)  # [n, K, T, w]
    base = ((torch.arange(n).view(n, 1, 1) * t + frames.view(1, 1, t)) * (big * big)).view(n, 1, t, 1)
    index = (base + rows * big)[..., :, None] + cols[..., None, :]  # [n, K, T, h, w]
    out = torch.zeros(n * t * big * big, dtype=patches.dtype)
    out.index_add_(0, index.reshape(-1), patches[:, :, None].expand(n, k, t, h, w).reshape(-1))
    return out.view(n, t, big, big).clamp_(0.0, 1.0)


def rotation_table(num_headings: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """``cos``, ``sin`` (float64 ``[n]``) of the headings ``360 k / n`` degrees; exact for quarter turns."""
    k = np.arange(num_headings)
    angle = 2.0 * math.pi * k / num_headings
    c, s = np.cos(angle), np.sin(angle)
    quarter = (4 * k) % num_headings == 0
    q = (4 * k) // num_headings
    c = np.where(quarter, np.array([1.0, 0.0, -1.0, 0.0])[q % 4], c)
    s = np.where(quarter, np.array([0.0, 1.0, 0.0, -1.0])[q % 4], s)
    return torch.from_numpy(c), torch.from_numpy(s)


def exact_views(worlds: torch.Tensor, positions: torch.Tensor, quarter_turns: torch.Tensor, view_size: int) -> torch.Tensor:
    """Exact views of grid-aligned poses (integer position :math:`p`, heading ``90 q`` degrees).

    View pixel ``(i, j)`` is the planar point :math:`x = (j - c_w, c_w - i)`, :math:`c_w = (w-1)/2`;
    its world point :math:`R_{90q}\\,x + p` is a world pixel because ``N - w`` is even. With
    ``o = (N - w) / 2``, ``f_i = o + i`` and ``b_i = o + w - 1 - i``, the world (row, column) of view
    pixel ``(i, j)`` is, modulo ``N``,

    ======  ==========================  ==========================
    ``q``   row                         column
    ======  ==========================  ==========================
    0       :math:`f_i - p_y`           :math:`f_j + p_x`
    1       :math:`b_j - p_y`           :math:`f_i + p_x`
    2       :math:`b_i - p_y`           :math:`b_j + p_x`
    3       :math:`f_j - p_y`           :math:`b_i + p_x`
    ======  ==========================  ==========================

    so a view is one advanced-indexing gather of separable row and column indices (integer
    arithmetic only; one gather per parity of ``q``, no loop over samples).

    Args:
        worlds: ``[M, N, N]``.
        positions: integer ``[M, 2]`` positions ``(px, py)``.
        quarter_turns: integer ``[M]`` headings in quarter turns.
        view_size: ``w``.

    Returns:
        ``[M, w, w]``, bit-for-bit copies of world pixels.
    """
    m, n, _ = worlds.shape
    w = view_size
    o = (n - w) // 2
    fwd = torch.arange(w) + o
    rev = fwd.flip(0)
    q = quarter_turns.long().remainder(4).view(m, 1)
    p = positions.long().remainder(n)
    row_rev = (q == 1) | (q == 2)
    col_rev = q >= 2
    rows = (torch.where(row_rev, rev, fwd) - p[:, 1:2]).remainder(n)  # [M, w]
    cols = (torch.where(col_rev, rev, fwd) + p[:, 0:1]).remainder(n)
    odd = (q[:, 0] % 2) == 1
    if not bool(odd.any()):  # the common case (no turns): one gather, no masked copies
        return worlds[torch.arange(m).view(m, 1, 1), rows[:, :, None], cols[:, None, :]]
    out = torch.empty((m, w, w), dtype=worlds.dtype)
    for sel, transpose in ((~odd, False), (odd, True)):
        if bool(sel.any()):
            b = sel.nonzero(as_tuple=True)[0].view(-1, 1, 1)
            r, c = rows[sel], cols[sel]
            if transpose:  # view (i, j) reads row r[j], column c[i]
                out[sel] = worlds[b, r[:, None, :], c[:, :, None]]
            else:
                out[sel] = worlds[b, r[:, :, None], c[:, None, :]]
    return out


def _world_points(positions: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, x: torch.Tensor, y: torch.Tensor):
    """World points :math:`R x + p` (float64) of view points ``x, y`` (broadcast against ``[M, 1, 1]``)."""
    m = positions.shape[0]
    c, s = cos.view(m, 1, 1), sin.view(m, 1, 1)
    px, py = positions[:, 0].view(m, 1, 1), positions[:, 1].view(m, 1, 1)
    return c * x - s * y + px, s * x + c * y + py


def bilinear_views(worlds: torch.Tensor, positions: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                   view_size: int) -> torch.Tensor:
    """Views of arbitrary poses by periodic bilinear interpolation (approximate).

    Args:
        worlds: ``[M, N, N]``.
        positions: float ``[M, 2]`` positions ``(px, py)``.
        cos, sin: float64 ``[M]`` of the headings.
        view_size: ``w``.

    Returns:
        ``[M, w, w]`` in the dtype of ``worlds``: :math:`\\mathrm{world}(R x + p)`, the world
        interpolated bilinearly on the torus.
    """
    m, n, _ = worlds.shape
    w = view_size
    cw, cn = (w - 1) / 2.0, (n - 1) / 2.0
    x = (torch.arange(w, dtype=torch.float64) - cw).view(1, 1, w)
    y = (cw - torch.arange(w, dtype=torch.float64)).view(1, w, 1)
    big_x, big_y = _world_points(positions.to(torch.float64), cos, sin, x, y)
    col, row = big_x + cn, cn - big_y  # fractional world indices [M, w, w]
    c0, r0 = torch.floor(col), torch.floor(row)
    fc, fr = (col - c0).to(worlds.dtype), (row - r0).to(worlds.dtype)
    c0, r0 = c0.long().remainder(n), r0.long().remainder(n)
    c1, r1 = (c0 + 1).remainder(n), (r0 + 1).remainder(n)
    flat = worlds.reshape(m, n * n)

    def at(r: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        return flat.gather(1, (r * n + c).reshape(m, w * w)).view(m, w, w)

    top = at(r0, c0) * (1 - fc) + at(r0, c1) * fc
    bottom = at(r1, c0) * (1 - fc) + at(r1, c1) * fc
    return top * (1 - fr) + bottom * fr


def window_mask(positions: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, world_size: int,
                view_size: int) -> torch.Tensor:
    """Boolean ``[M, N, N]``: world pixels whose centre lies in the view square of each pose.

    A world point :math:`X` is covered when :math:`R^{-1}(X - p + N z)` lies in the open square
    :math:`(-w/2, w/2)^2` for some :math:`z \\in \\{-1, 0, 1\\}^2` (the torus images); for grid-aligned
    poses these are exactly the pixels the view copies.
    """
    m, n = positions.shape[0], world_size
    cn, half = (n - 1) / 2.0, view_size / 2.0
    big_x = (torch.arange(n, dtype=torch.float64) - cn).view(1, 1, n)
    big_y = (cn - torch.arange(n, dtype=torch.float64)).view(1, n, 1)
    c, s = cos.view(m, 1, 1), sin.view(m, 1, 1)
    p = positions.to(torch.float64)
    dx0, dy0 = big_x - p[:, 0].view(m, 1, 1), big_y - p[:, 1].view(m, 1, 1)
    dx0 = torch.remainder(dx0 + n / 2.0, n) - n / 2.0  # nearest torus image first, then its neighbours
    dy0 = torch.remainder(dy0 + n / 2.0, n) - n / 2.0
    mask = torch.zeros((m, n, n), dtype=torch.bool)
    for zx in (-n, 0, n):
        for zy in (-n, 0, n):
            dx, dy = dx0 + zx, dy0 + zy
            u, v = c * dx + s * dy, -s * dx + c * dy  # R^{-1} d
            mask |= (u.abs() < half) & (v.abs() < half)
    return mask


def window_outline(positions: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, world_size: int,
                   view_size: int, oversample: int = 4) -> torch.Tensor:
    """Boolean ``[M, N, N]``: the world pixels under the view's border pixels.

    The border ring of the view (pixel centres at :math:`\\pm(w-1)/2`) is sampled every
    ``1 / oversample`` pixel, mapped by the pose and rounded to the nearest world pixel: exact for
    grid-aligned poses, an approximate (gap-free) outline of the rotated square otherwise.
    """
    m, n, w = positions.shape[0], world_size, view_size
    cw, cn = (w - 1) / 2.0, (n - 1) / 2.0
    steps = max(1, (w - 1) * oversample)
    along = torch.linspace(-cw, cw, steps + 1, dtype=torch.float64)
    edge = torch.full_like(along, cw)
    x = torch.cat([along, along, edge, -edge]).view(1, 1, -1)
    y = torch.cat([edge, -edge, along, along]).view(1, 1, -1)
    big_x, big_y = _world_points(positions.to(torch.float64), cos, sin, x, y)
    cols = torch.round(big_x + cn).long().remainder(n).view(m, -1)
    rows = torch.round(cn - big_y).long().remainder(n).view(m, -1)
    out = torch.zeros((m, n * n), dtype=torch.bool)
    out.scatter_(1, rows * n + cols, True)
    return out.view(m, n, n)
