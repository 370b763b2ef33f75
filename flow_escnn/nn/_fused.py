"""The world step's fused kernels: self-motion, flow transport, padding and window readout as one gather.

A world model's state moves twice per step: by the agent's self-motion :math:`a_t^{-1}` (per sample,
:class:`~flow_escnn.flows._action.SelfMotion` tables) and by each slice's flow :math:`\\psi_1(\\nu)` (the
engine's step transport, circularly padded for the recurrent convolution); the view window is then read
from it. When both are permutations, their composition is a permutation, so
:meth:`~flow_escnn.nn._engine.Recurrence.transport` runs all of it as one gather per state tensor
(:class:`FoldedTransport`, tables composed per sample by :class:`Fold`), with a gather-only backward
(one gather by the composed inverse, then the window's and the ring's copies added, each a set of
distinct targets: deterministic, in the order of the separate passes' backward). :class:`ReadWindow`
reads a window of a map; :class:`WindowAddActivate` adds a window's input term to its rows only and
sums its gradient over :math:`V` there. Everything here is plain torch, executed by the engine
(:mod:`flow_escnn.nn._engine`), and tested against the two-pass step (``tests/test_engine.py``,
``tests/test_world.py``): the same values, and the same gradients bit for bit except the window input
term's sum over :math:`V` (another summation order: ~1e-16 relative in float64).
"""
from __future__ import annotations

from typing import Any, NamedTuple, Optional, Tuple

import torch
import torch.nn.functional as F

from flow_escnn.flows._gather import inverse_permutation
from flow_escnn.flows._reduce import first_max
from flow_escnn.nn._nonlinearity import apply_nonlinearity, nonlinearity_backward

__all__ = ["Fold", "fold_gather", "scatter_into", "fold_adjoint", "FoldedTransport", "ReadWindow",
           "read_window", "WindowAddActivate"]


class Fold(NamedTuple):
    """Per-sample tables of :math:`\\psi_1(\\nu)\\, a_t^{-1}` (the self-motion, then the flow transport with its
    circular padding) on maps ``[B, V, C, N]`` (``N`` pixels, ``P`` padded pixels): output ``(b, v, c, q)`` reads
    input row ``R[b, v, c]`` (of the flattened ``(V, C)`` axes) at pixel ``pix[b, v, q]``.

    ``shift``: ``R[b, v, c] = R[b, v, 0] + c`` (no channel relabelling): the gather then reads an overlapping
    strided view of the input with an index broadcast over the channels, ``key = R[b, v, 0] * N + pix``, rather
    than a materialised ``[B, V, C, P]`` index."""

    rows: torch.Tensor  # [B, V, C]
    pix: torch.Tensor  # [B, V, P]
    key: Optional[torch.Tensor]  # [B, V, P] (shift only)
    shift: bool
    inverse: torch.Tensor  # [V, N]: the flow transport's interior copy (in P) of every pixel
    pixels_inverse: Optional[torch.Tensor]  # [B, N]: the self-motion's inverse pixel permutation (None: no move)
    fixed: bool  # R[b, v, c] = v * C + c: no slice or channel is relabelled
    rings: Tuple[torch.Tensor, ...]  # the ring (border) positions in P, one tensor per layer of distinct sources
    window: Optional[torch.Tensor]  # the view window's positions in P (the readout), or None
    window_slices: Optional[Tuple[slice, slice]]  # the same window as (rows, columns) of the padded grid
    width: int  # the padded grid's width
    sizes: Tuple[int, int, int, int, int]  # B, V, C, N, P


def fold_gather(x: torch.Tensor, fold: Fold, positions: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``y[b, v, c, q] = x[b, R[b, v, c], pix[b, v, q]]`` for ``x [B, V, C, N]`` (contiguous); ``[B, V, C, P]``, or
    ``[B, V, C, len(positions)]`` for the output ``positions`` only."""
    b, v, c, n, _ = fold.sizes
    if fold.shift:
        key = fold.key if positions is None else fold.key.index_select(2, positions)
        # row c of the view starts c*N further on: element (b, ., c, k) is x[b, c*N + k]
        lifted = x.as_strided((b, v, c, (v * c - c + 1) * n), (v * c * n, 0, n, 1), x.storage_offset())
        return torch.gather(lifted, 3, key[:, :, None, :].expand(b, v, c, key.shape[-1]))
    pix = fold.pix if positions is None else fold.pix.index_select(2, positions)
    index = (fold.rows[..., None] * n + pix[:, :, None, :]).view(b, -1)
    return torch.gather(x.view(b, -1), 1, index).view(b, v, c, -1)


def scatter_into(gx: torch.Tensor, fold: Fold, positions: torch.Tensor, values: torch.Tensor) -> None:
    """``gx[b, R[b, v, c], pix[b, v, q]] += values[b, v, c, k]`` for ``q = positions[k]`` (distinct targets)."""
    b, v, c, n, _ = fold.sizes
    pix = fold.pix.index_select(2, positions)[:, :, None, :]
    if fold.fixed:  # every row stays in place: the pixel index broadcasts over the channels
        gx.view(b, v, c, n).scatter_add_(3, pix.expand(b, v, c, pix.shape[-1]), values.reshape(b, v, c, -1))
        return
    targets = fold.rows[..., None] * n + pix
    gx.view(b, -1).scatter_add_(1, targets.view(b, -1), values.reshape(b, -1))


def fold_adjoint(gy: Optional[torch.Tensor], g_read: Optional[torch.Tensor], fold: Fold,
                  first: Optional[torch.Tensor] = None) -> torch.Tensor:
    """The adjoint of :func:`fold_gather` and of its window readout ``g_read`` (``[B, V, C, h*w]``, or with
    ``first`` the readout pooled by the max over :math:`V`, ``[B, C, h*w]``, whose gradient goes to the first
    maximal slice ``first``): one gather by the inverse permutation (each input entry reads its interior
    copy), then the readout's and the ring's copies added, each a set of distinct targets (deterministic): the
    same additions in the same order as the separate transports' and readout's backward passes."""
    b, v, c, n, p = fold.sizes
    if gy is None:
        gx = torch.zeros(b, v, c, n, dtype=g_read.dtype, device=g_read.device)  # type: ignore[union-attr]
    else:
        gy = gy.reshape(b, v, c, p).contiguous()
        inv = fold.inverse.unsqueeze(0).expand(b, v, n)
        if fold.pixels_inverse is not None:  # interior copy of input pixel m: the flow's copy of a^{-1}-pixel
            inv = inv.gather(2, fold.pixels_inverse[:, None, :].expand(b, v, n))
        if fold.shift:
            out_slice = inverse_permutation(torch.div(fold.rows[..., 0], c, rounding_mode="floor"))  # [B, V]
            key = out_slice[..., None] * (c * p) + inv.gather(1, out_slice[..., None].expand(b, v, n))
            lifted = gy.as_strided((b, v, c, (v * c - c + 1) * p), (v * c * p, 0, p, 1), gy.storage_offset())
            gx = torch.gather(lifted, 3, key[:, :, None, :].expand(b, v, c, n))
        else:
            rows_inv = inverse_permutation(fold.rows.reshape(b, v * c)).view(b, v, c)
            out_slice = torch.div(rows_inv[..., 0], c, rounding_mode="floor")
            inv = inv.gather(1, out_slice[..., None].expand(b, v, n))
            gx = torch.gather(gy.view(b, -1), 1, (rows_inv[..., None] * p + inv[:, :, None, :]).view(b, -1))
            gx = gx.view(b, v, c, n)
    if g_read is not None and first is None:
        scatter_into(gx, fold, fold.window, g_read)  # type: ignore[arg-type]
    elif g_read is not None:  # the pooled readout: entry (b, c, q) came from slice first[b, c, q]
        slices = first.reshape(b, c, -1).long()  # type: ignore[union-attr]
        rows = fold.rows.transpose(1, 2).gather(2, slices)  # [B, C, h*w]
        pix = fold.pix.index_select(2, fold.window).gather(1, slices)  # type: ignore[arg-type]
        gx.view(b, -1).scatter_add_(1, (rows * n + pix).view(b, -1), g_read.reshape(b, -1))
    if gy is not None:
        flat = gy.view(b * v * c, p)
        for ring in fold.rings:
            scatter_into(gx, fold, ring, flat.index_select(1, ring).view(b, v, c, -1))
    return gx


class FoldedTransport(torch.autograd.Function):
    """:math:`\\psi_1(\\nu)\\, a_t^{-1} h` padded, as one gather (:func:`fold_gather`), and its view window:
    ``readout`` ``"none"``, ``"window"`` (``[B, V, C, h*w]``) or ``"max"`` (pooled over :math:`V`, ``[B, C, h*w]``);
    ``only``: the readout alone (no map is gathered). Backward: :func:`fold_adjoint` (gathers and additions
    over distinct targets; no full-size zero map for the window, none over :math:`V` for the pooled readout)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, fold: Fold, readout: str, only: bool) -> Any:  # type: ignore[override]
        """The forward pass (the class docstring says what it computes)."""
        ctx.set_materialize_grads(False)
        ctx.fold, ctx.readout, ctx.only, ctx.shape, ctx.first = fold, readout, only, x.shape, None
        b, v, c, n, _ = fold.sizes
        x = x.reshape(b, v, c, n).contiguous()
        outs = []
        if only:
            window = fold_gather(x, fold, fold.window)
        else:
            y = fold_gather(x, fold)
            outs.append(y)
            if readout != "none":  # a contiguous copy: the pool over V runs several times faster on it
                rows, cols = fold.window_slices  # type: ignore[misc]
                window = y.view(b, v, c, -1, fold.width)[..., rows, cols].reshape(b, v, c, -1)
        if readout == "window":
            outs.append(window)
        elif readout == "max":
            values, ctx.first = first_max(window)
            outs.append(values.reshape(b, c, -1))
        return outs[0] if len(outs) == 1 else tuple(outs)

    @staticmethod
    def backward(ctx: Any, *grads: Optional[torch.Tensor]) -> Tuple[Optional[torch.Tensor], ...]:  # type: ignore[override]
        """The backward pass (the class docstring says what it computes)."""
        if ctx.only:
            gy, g_read = None, grads[0]
        else:
            gy, g_read = grads[0], (grads[1] if ctx.readout != "none" else None)
        if gy is None and g_read is None:
            return None, None, None, None
        return fold_adjoint(gy, g_read, ctx.fold, ctx.first).view(ctx.shape), None, None, None


class ReadWindow(torch.autograd.Function):
    """``z[..., rows, cols]`` as a contiguous copy; backward: one zero map with the window's gradient in it
    (autograd's two slice backwards would fill two zero tensors, and a strided window slows the pool over V)."""

    @staticmethod
    def forward(ctx: Any, z: torch.Tensor, rows: slice, cols: slice) -> torch.Tensor:  # type: ignore[override]
        """The forward pass (the class docstring says what it computes)."""
        ctx.shape, ctx.rows, ctx.cols = z.shape, rows, cols
        return z[..., rows, cols].contiguous()

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> Tuple[Optional[torch.Tensor], None, None]:  # type: ignore[override]
        """The backward pass (the class docstring says what it computes)."""
        out = g.new_zeros(ctx.shape)
        out[..., ctx.rows, ctx.cols] = g
        return out, None, None


def read_window(z: torch.Tensor, rows: slice, cols: slice) -> torch.Tensor:
    """The window ``z[..., rows, cols]`` of maps ``z [..., H, W]``, contiguous (backward: :class:`ReadWindow`)."""
    if torch.is_grad_enabled() and z.requires_grad:
        return ReadWindow.apply(z, rows, cols)
    return z[..., rows, cols].contiguous()


class WindowAddActivate(torch.autograd.Function):
    """The FERNN update with the input term of a view window: :math:`\\sigma(b + \\mathrm{write}(a))`, ``a`` added
    to the window only (``a [B, 1, G, h, w]`` broadcast over :math:`V`), in ``b``'s own memory (a fresh convolution
    output that no other op reads, as :func:`~flow_escnn.nn.cell_kinds.fernn.fernn_update`); backward sums the
    gradient of ``a`` over :math:`V` on the window only. Saves only the output."""

    @staticmethod
    def forward(ctx: Any, base: torch.Tensor, a: torch.Tensor, shape: Tuple[int, ...],  # type: ignore[override]
                window: Tuple[int, int, int, int], name: str) -> torch.Tensor:
        """The forward pass (the class docstring says what it computes)."""
        top, left, vh, vw = window
        w = shape[-1]
        # the window's rows across the whole map (a written with zeros beside them): one run of whole rows per
        # channel, which adds several times faster than the window's short runs, to the same values
        band = F.pad(a, (left, w - vw - left)).reshape(*a.shape[:-2], vh * w)
        base.view(*shape[:-2], -1)[..., top * w : (top + vh) * w].add_(band)
        apply_nonlinearity(base, name, inplace=True)
        ctx.mark_dirty(base)
        ctx.save_for_backward(base)
        ctx.name, ctx.shape, ctx.window, ctx.a_shape = name, shape, window, a.shape
        return base

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> Tuple[Optional[torch.Tensor], ...]:  # type: ignore[override]
        """The backward pass (the class docstring says what it computes)."""
        (out,) = ctx.saved_tensors
        top, left, vh, vw = ctx.window
        g = nonlinearity_backward(grad, out, ctx.name)
        shape, w = ctx.shape, ctx.shape[-1]
        band = g.view(*shape[:-2], -1)[..., top * w : (top + vh) * w]
        dims = [i for i, (n, m) in enumerate(zip(ctx.a_shape[:-2], shape[:-2])) if n == 1 and m != 1]
        if dims:  # the sum over V of the window's rows only (not of the whole map)
            band = band.sum(dim=dims, keepdim=True)
        ga = band.reshape(*band.shape[:-1], vh, w)[..., left : left + vw]
        return g, ga, None, None, None
