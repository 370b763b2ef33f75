"""Plain-torch executors of transport tables, with gather-only (deterministic) backward passes.

A transport of ``M`` field slices is a linear map on each slice,

.. math::
    y_m[c, q] = \\sum_{c'} \\rho_m[c, c'] \\sum_{k} w_m[q, k]\\, x_m[c', s_m(q, k)],

with output pixels :math:`q` on the grid, optionally *circularly padded* by ``pad``
pixels (so one gather writes exactly the tensor the next ``padding=0`` convolution reads),
source pixels :math:`s_m(q, k)`, tap weights :math:`w_m` and a fiber map :math:`\\rho_m`.
Three executors cover every case, each a ``torch.autograd.Function`` whose backward is
again a gather (never a ``scatter_add``, so it is deterministic on every device and as
fast as the forward):

* :func:`permute_pixels` (exact transports: integer translations, rotations by multiples
  of 90 degrees, reflections, plus padding). Forward: one ``gather``. Backward: the
  adjoint of the circular padding (:func:`fold_circular`, a few slice additions on the
  border) followed by a gather with the *inverse* permutation.
* :func:`weighted_gather` (interpolated transports, ``K`` taps). Backward: the same
  operation with the transposed table (every source pixel lists the output pixels that
  read it, zero-weight slots padding the list), so it too is a gather.
* :func:`permute_channels` (fiber permutations, one per slice): an ``index_select`` over
  the flattened (slice, channel) axis; backward: the inverse permutation.

Dense fiber matrices (irreps fields) are applied with ``einsum`` (autograd's own backward
is a matrix product, deterministic).
"""
from __future__ import annotations

from typing import Any, Optional, Tuple

import torch

__all__ = [
    "pad_index",
    "interior_index",
    "fold_circular",
    "circular_pad",
    "permute_pixels",
    "weighted_gather",
    "permute_channels",
    "inverse_permutation",
]


def pad_index(h: int, w: int, pad: int, device: Optional[torch.device] = None) -> torch.Tensor:
    """``[(H+2p)*(W+2p)]``: the unpadded pixel each pixel of the circularly padded grid shows."""
    rows = torch.arange(-pad, h + pad, device=device) % h
    cols = torch.arange(-pad, w + pad, device=device) % w
    return (rows[:, None] * w + cols[None, :]).reshape(-1)


def interior_index(h: int, w: int, pad: int, device: Optional[torch.device] = None) -> torch.Tensor:
    """``[H*W]``: the position of every unpadded pixel in the padded grid (row-major)."""
    wp = w + 2 * pad
    rows = torch.arange(pad, h + pad, device=device)
    cols = torch.arange(pad, w + pad, device=device)
    return (rows[:, None] * wp + cols[None, :]).reshape(-1)


def fold_circular(g: torch.Tensor, h: int, w: int, pad: int) -> torch.Tensor:
    """Adjoint of circular padding: ``[..., (H+2p)*(W+2p)] -> [..., H*W]``.

    Every padded pixel's value is added to the pixel it shows (:func:`pad_index`); the
    interior is one copy and the border strips are a few small in-place additions.
    """
    if pad == 0:
        return g
    hp, wp = h + 2 * pad, w + 2 * pad
    lead = g.shape[:-1]
    g = g.reshape(*lead, hp, wp)
    p = pad
    out = g[..., p : p + h, p : p + w].clone()
    out[..., :, w - p :] += g[..., p : p + h, :p]
    out[..., :, :p] += g[..., p : p + h, p + w :]
    for strip, rows in ((g[..., :p, :], slice(h - p, h)), (g[..., p + h :, :], slice(0, p))):
        folded = strip[..., p : p + w].clone()
        folded[..., w - p :] += strip[..., :p]
        folded[..., :p] += strip[..., p + w :]
        out[..., rows, :] += folded
    return out.reshape(*lead, h * w)


class _PermutePixels(torch.autograd.Function):
    """``y[..., q] = x[..., index[..., q]]``; backward ``fold`` then the inverse permutation."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, x: torch.Tensor, index: torch.Tensor, inverse: Optional[torch.Tensor], h: int, w: int, pad: int
    ) -> torch.Tensor:
        ctx.save_for_backward(index, inverse)
        ctx.geometry = (h, w, pad)
        if index.dim() == 1:  # one table for every slice (pure padding)
            return x.index_select(-1, index)
        return torch.gather(x, -1, index.expand(*x.shape[:-1], index.shape[-1]))

    @staticmethod
    def backward(ctx: Any, gy: torch.Tensor) -> Tuple[Optional[torch.Tensor], ...]:  # type: ignore[override]
        index, inverse = ctx.saved_tensors
        h, w, pad = ctx.geometry
        g = fold_circular(gy, h, w, pad)
        if inverse is not None:
            # the inverse of the inverse is the unpadded forward map (for a double backward)
            forward = index.index_select(-1, interior_index(h, w, pad, index.device)) if pad else index
            g = permute_pixels(g, inverse, forward, h, w, 0)
        return g, None, None, None, None, None


def permute_pixels(
    x: torch.Tensor, index: torch.Tensor, inverse: Optional[torch.Tensor], h: int, w: int, pad: int = 0
) -> torch.Tensor:
    """An exact spatial transport (a pixel permutation), optionally followed by circular padding.

    Args:
        x: ``[..., H*W]``.
        index: ``[(H+2p)*(W+2p)]`` shared by all slices, or a tensor broadcastable to
            ``[..., (H+2p)*(W+2p)]`` (one row per slice, size-1 axes elsewhere): the source pixel
            of every output pixel.
        inverse: the inverse permutation of the unpadded map, same layout with ``H*W`` columns
            (``None`` when the unpadded map is the identity).
        h, w, pad: grid and padding.

    Returns:
        ``[..., (H+2p)*(W+2p)]``.
    """
    if not torch.is_grad_enabled() or not x.requires_grad:
        if index.dim() == 1:
            return x.index_select(-1, index)
        return torch.gather(x, -1, index.expand(*x.shape[:-1], index.shape[-1]))
    return _PermutePixels.apply(x, index, inverse, h, w, pad)


class _WeightedGather(torch.autograd.Function):
    """``y[..., q] = sum_k w[..., q, k] x[..., idx[..., q, k]]``; backward: the transposed table."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        x: torch.Tensor,
        index: torch.Tensor,
        weights: torch.Tensor,
        t_index: torch.Tensor,
        t_weights: torch.Tensor,
    ) -> torch.Tensor:
        ctx.save_for_backward(index, weights, t_index, t_weights)
        return _weighted_gather_core(x, index, weights)

    @staticmethod
    def backward(ctx: Any, gy: torch.Tensor) -> Tuple[Optional[torch.Tensor], ...]:  # type: ignore[override]
        index, weights, t_index, t_weights = ctx.saved_tensors
        return weighted_gather(gy, t_index, t_weights, index, weights), None, None, None, None


def _weighted_gather_core(x: torch.Tensor, index: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    n_out, k = index.shape[-2], index.shape[-1]
    lead = x.shape[:-1]
    flat = index.reshape(*index.shape[:-2], n_out * k)
    y = torch.gather(x, -1, flat.expand(*lead, n_out * k)).view(*lead, n_out, k)
    return (y * weights.to(dtype=x.dtype)).sum(-1)


def weighted_gather(
    x: torch.Tensor,
    index: torch.Tensor,
    weights: torch.Tensor,
    t_index: torch.Tensor,
    t_weights: torch.Tensor,
) -> torch.Tensor:
    """An interpolated spatial transport: ``K`` weighted taps per output pixel.

    Args:
        x: ``[..., N_in]``.
        index, weights: ``[..., N_out, K]`` (broadcastable over the leading axes of ``x``).
        t_index, t_weights: the transposed table ``[..., N_in, K']``: for every source pixel,
            the output pixels that read it and their weights (zero-weight slots pad the list).

    Returns:
        ``[..., N_out]``.
    """
    if not torch.is_grad_enabled() or not x.requires_grad:
        return _weighted_gather_core(x, index, weights)
    return _WeightedGather.apply(x, index, weights, t_index, t_weights)


class _PermuteChannels(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, flat: torch.Tensor, inverse: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(flat, inverse)
        return x.index_select(-2, flat)

    @staticmethod
    def backward(ctx: Any, gy: torch.Tensor) -> Tuple[Optional[torch.Tensor], ...]:  # type: ignore[override]
        flat, inverse = ctx.saved_tensors
        return permute_channels(gy, inverse, flat), None, None


def permute_channels(x: torch.Tensor, flat: torch.Tensor, inverse: torch.Tensor) -> torch.Tensor:
    """``y[..., j, :] = x[..., flat[j], :]`` over a flattened (slice, channel) axis ``-2``.

    Args:
        x: ``[..., S*C, N]``.
        flat: ``[S*C]`` permutation; ``inverse``: its inverse.
    """
    if not torch.is_grad_enabled() or not x.requires_grad:
        return x.index_select(-2, flat)
    return _PermuteChannels.apply(x, flat, inverse)


def inverse_permutation(perm: torch.Tensor) -> torch.Tensor:
    """Row-wise inverse of permutations ``perm [..., N]``."""
    inv = torch.empty_like(perm)
    inv.scatter_(-1, perm, torch.arange(perm.shape[-1], device=perm.device).expand_as(perm).contiguous())
    return inv


def circular_pad(x: torch.Tensor, pad: int) -> torch.Tensor:
    """Circular padding of ``[..., H, W]`` by ``pad`` pixels as one ``index_select`` (backward: a fold).

    Same values as ``F.pad(x, (pad,) * 4, mode="circular")``, in one kernel forward and a few
    small ones backward (``F.pad`` runs about fifteen small ops each way).
    """
    if pad == 0:
        return x
    h, w = x.shape[-2], x.shape[-1]
    if pad > h or pad > w:
        raise ValueError(f"circular padding by {pad} needs a grid of at least {pad}x{pad}, got {h}x{w}")
    index = pad_index(h, w, pad, x.device)
    flat = x.reshape(*x.shape[:-2], h * w)
    out = permute_pixels(flat, index, None, h, w, pad)
    return out.view(*x.shape[:-2], h + 2 * pad, w + 2 * pad)
