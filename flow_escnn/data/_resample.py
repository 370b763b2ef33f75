"""Batched resampling of images on a periodic grid (private to :mod:`flow_escnn.data`).

Conventions are those of :mod:`flow_escnn.flows._transport`: pixel ``(i, j)`` sits at the
planar point :math:`x = j - c_x`, :math:`y = c_y - i` (y up, origin at the grid centre),
the grid is a torus, and an element :math:`(w, R_\\theta)` maps an image :math:`f` to
:math:`f\\big(R_\\theta^{-1}(x - w)\\big)`.

* :func:`shift_periodic` and :func:`rot90_shift_periodic` are exact (pure gathers) and are
  used whenever a flow maps the grid onto itself (integer translations, rotations by
  multiples of 90 degrees);
* :func:`bilinear_periodic` handles every other angle with one bilinear resampling
  (``torch.nn.functional.grid_sample`` on a circularly padded image), which agrees with
  the bilinear rule of :class:`~flow_escnn.flows._transport.TransportPlan` to float
  rounding (checked in the tests).

The data do not go through a ``TransportPlan`` because they need a different element
per sample and frame and arbitrary angles: a plan needs an escnn gspace ``rot2dOnR2(N)``
whose construction is too costly for fine angle grids (about 3 s for ``N = 360``;
``N = 3600`` exhausts memory).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["shift_periodic", "rot90_shift_periodic", "bilinear_periodic"]


def _row_col_indices(shifts: torch.Tensor, h: int, w: int):
    """Row ``[..., H]`` and column ``[..., W]`` source indices of integer translations ``(sx, sy)``."""
    rows = (torch.arange(h).view(1, 1, h) + shifts[..., 1:2]).remainder(h)  # out row i reads row i + sy
    cols = (torch.arange(w).view(1, 1, w) - shifts[..., 0:1]).remainder(w)  # out col j reads col j - sx
    return rows, cols


def shift_periodic(images: torch.Tensor, shifts: torch.Tensor) -> torch.Tensor:
    """Integer translations on the torus, one per output copy (exact).

    Copy ``m`` of image ``n`` is ``torch.roll(images[n], shifts=(-sy, sx), dims=(-2, -1))``
    with ``(sx, sy) = shifts[n, m]`` (x right, y up).

    Args:
        images: ``[N, H, W]``.
        shifts: integer ``[N, M, 2]`` translations ``(sx, sy)`` in pixels.

    Returns:
        ``[N, M, H, W]``.
    """
    n, h, w = images.shape
    shifts = shifts.long()
    m = shifts.shape[1]
    rows, cols = _row_col_indices(shifts, h, w)
    batch = torch.arange(n).view(n, 1, 1, 1)
    return images[batch, rows.view(n, m, h, 1), cols.view(n, m, 1, w)]


def rot90_shift_periodic(images: torch.Tensor, quarter_turns: torch.Tensor, shifts: torch.Tensor) -> torch.Tensor:
    """Exact elements :math:`(w, R_{90 q})`, one per image: rotate by ``q`` quarter turns, then translate.

    Args:
        images: ``[E, H, W]``; must be square if any ``q`` is odd.
        quarter_turns: integer ``[E]`` counter-clockwise quarter turns ``q``.
        shifts: integer ``[E, 2]`` translations ``w = (sx, sy)``.

    Returns:
        ``[E, H, W]``: ``torch.roll(torch.rot90(images[e], q), shifts=(-sy, sx), dims=(-2, -1))``.
    """
    e, h, w = images.shape
    q = quarter_turns.long().remainder(4)
    if h != w and bool((q % 2 == 1).any()):
        raise ValueError(f"rotations by 90 or 270 degrees need a square grid, got {h}x{w}")
    out = torch.empty_like(images)
    for k in range(4):
        sel = q == k
        if bool(sel.any()):
            rotated = torch.rot90(images[sel], k, dims=(-2, -1))
            out[sel] = shift_periodic(rotated, shifts[sel].long()[:, None, :])[:, 0]
    return out


def bilinear_periodic(images: torch.Tensor, angles_deg: torch.Tensor, shifts: torch.Tensor) -> torch.Tensor:
    """Elements :math:`(w, R_\\theta)` by one bilinear resampling with periodic wrap-around.

    Output copy ``m`` of image ``n`` is :math:`f_n\\big(R_\\theta^{-1}(x - w)\\big)`, with
    :math:`f_n` bilinearly interpolated on the torus (its periodic extension). Since
    :math:`R^{-1}(x - w) = R^{-1}x - R^{-1}w` and :math:`f_n` is periodic, the constant
    :math:`R^{-1}w` is reduced modulo the grid; the source points then lie in a bounded
    window, and one ``grid_sample`` on a periodically padded image does the rest.

    Args:
        images: ``[N, H, W]`` (float).
        angles_deg: ``[N, M]`` angles :math:`\\theta` in degrees (counter-clockwise).
        shifts: ``[N, M, 2]`` translations :math:`w = (x, y)` in pixels (any real values).

    Returns:
        ``[N, M, H, W]`` in the dtype of ``images``.
    """
    n, h, w = images.shape
    m = angles_deg.shape[1]
    th = torch.remainder(angles_deg.to(torch.float64), 360.0) * (math.pi / 180.0)
    c, s = torch.cos(th), torch.sin(th)
    sx, sy = shifts[..., 0].to(torch.float64), shifts[..., 1].to(torch.float64)
    ox = torch.remainder(c * sx + s * sy + w / 2.0, w) - w / 2.0  # R^{-1} w, reduced into [-W/2, W/2)
    oy = torch.remainder(-s * sx + c * sy + h / 2.0, h) - h / 2.0
    cx, cy = (w - 1) / 2.0, (h - 1) / 2.0
    # source planar points: X = c x + s y - ox, Y = -s x + c y - oy, |X|, |Y| <= reach
    reach = math.hypot(cx, cy) + math.hypot(w / 2.0, h / 2.0)
    px, py = int(math.ceil(reach - cx)) + 1, int(math.ceil(reach - cy)) + 1
    rows = torch.arange(-py, h + py).remainder(h)
    cols = torch.arange(-px, w + px).remainder(w)
    padded = images[:, rows[:, None], cols[None, :]][:, None]  # periodic extension [N, 1, H+2py, W+2px]
    hp, wp = h + 2 * py, w + 2 * px
    # padded column index: X + cx + px; normalised (align_corners=True): 2 * index / (wp - 1) - 1
    kx, ky = 2.0 / (wp - 1), 2.0 / (hp - 1)
    x = torch.arange(w, dtype=torch.float64) - cx  # output planar coordinates
    y = cy - torch.arange(h, dtype=torch.float64)
    c4, s4 = c.reshape(n, m, 1, 1), s.reshape(n, m, 1, 1)
    gx_x = (kx * c4) * x.view(1, 1, 1, w) + (kx * (cx + px - ox)).view(n, m, 1, 1) - 1.0  # [N, M, 1, W]
    gy_x = (ky * s4) * x.view(1, 1, 1, w) + (ky * (cy + py + oy)).view(n, m, 1, 1) - 1.0
    gx_y = (kx * s4) * y.view(1, 1, h, 1)  # [N, M, H, 1]
    gy_y = (-ky * c4) * y.view(1, 1, h, 1)
    dtype = images.dtype
    grid = torch.empty((n, m, h, w, 2), dtype=dtype)
    torch.add(gx_x.to(dtype), gx_y.to(dtype), out=grid[..., 0])  # col = c x + s y - ox + cx + px
    torch.add(gy_x.to(dtype), gy_y.to(dtype), out=grid[..., 1])  # row = cy - Y + py = s x - c y + oy + cy + py
    grid = grid.view(n, m * h, w, 2)
    out = F.grid_sample(padded, grid, mode="bilinear", padding_mode="border", align_corners=True)
    return out.view(n, m, h, w)
