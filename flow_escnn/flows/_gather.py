"""Plain-torch executors of transport tables, with gather-only (deterministic) backward passes.

A transport of ``M`` field slices is a linear map on each slice,

.. math::
    y_m[c, q] = \\sum_{c'} \\rho_m[c, c'] \\sum_{k} w_m[q, k]\\, x_m[c', s_m(q, k)],

with output pixels :math:`q` on the grid, optionally *circularly padded* by ``pad``
pixels (so one gather writes exactly the tensor the next ``padding=0`` convolution reads),
source pixels :math:`s_m(q, k)`, tap weights :math:`w_m` and a fiber map :math:`\\rho_m`.
The exact executor here is a ``torch.autograd.Function`` whose backward is again a gather
(never a ``scatter_add``, so it is deterministic on every device and as fast as the
forward); interpolated transports are fixed-tap products (:mod:`flow_escnn.flows._resample`):

* :func:`permute_pixels` (exact transports: integer translations, rotations by multiples
  of 90 degrees, reflections, their fiber permutations, plus padding). Forward: one
  ``gather`` over the flattened (channel, pixel) axis, the fiber permutation folded into the
  index. Backward: one gather with the *inverse* permutation (reading each source's interior
  copy), plus the border copies of the padding added layer by layer (:func:`ring_layers`;
  within a layer no target repeats, so the indexed additions are deterministic).
* :func:`~flow_escnn.flows._resample.sparse_resample` (interpolated transports, ``K`` taps):
  one ``embedding_bag`` product for all slices; backward: the product with the transposed
  tables. Their fiber permutations move whole channel rows (:func:`permute_rows`).

Index tables are materialised over the channels (``[..., C*N_out]`` rather than a
``[..., N_out]`` row broadcast over ``C``): on a CPU a gather whose index broadcasts over a
middle axis runs about three times slower.

Dense fiber matrices (irreps fields) are applied with ``einsum`` (autograd's own backward
is a matrix product, deterministic).
"""
from __future__ import annotations

import itertools
import math
from typing import Any, List, NamedTuple, Optional, Sequence, Tuple

import torch

from flow_escnn.flows._layout import gathers_rows
from flow_escnn.flows._reduce import first_max

__all__ = [
    "pad_index",
    "interior_index",
    "ring_layers",
    "circular_pad",
    "CircularPad",
    "permute_pixels",
    "permute_columns",
    "PixelRows",
    "pixel_rows",
    "cached",
    "cached_rows",
    "gather_pixel_rows",
    "permute_rows",
    "inverse_permutation",
]


def _grid(shape: Sequence[int]) -> Tuple[int, ...]:
    return tuple(int(n) for n in shape)


def _flat(axes: Sequence[torch.Tensor], sizes: Sequence[int]) -> torch.Tensor:
    """Row-major flat positions of the product of per-axis coordinates ``axes`` on a grid of ``sizes``."""
    flat = axes[0]
    for a, n in zip(axes[1:], sizes[1:]):
        flat = flat[..., None] * n + a
    return flat.reshape(-1)


def pad_index(shape: Sequence[int], pad: int, device: Optional[torch.device] = None) -> torch.Tensor:
    """``[prod(n + 2p)]``: the unpadded grid position each position of the circularly padded grid shows.

    ``shape`` is the grid, ``(H, W)`` or ``(D, H, W)`` (any rank), flattened row-major.
    """
    shape = _grid(shape)
    return _flat([torch.arange(-pad, n + pad, device=device) % n for n in shape], shape)


def interior_index(shape: Sequence[int], pad: int, device: Optional[torch.device] = None) -> torch.Tensor:
    """``[prod(n)]``: the position of every unpadded grid position in the padded grid (row-major)."""
    shape = _grid(shape)
    return _flat([torch.arange(pad, n + pad, device=device) for n in shape], [n + 2 * pad for n in shape])


def ring_layers(
    shape: Sequence[int], pad: int, channels: int = 1, device: Optional[torch.device] = None
) -> List[torch.Tensor]:
    """The border ("ring") of the circularly padded grid, split into layers of distinct positions.

    Every ring position shows an unpadded position a second, third, ... time; layer ``l``
    holds the ring positions that are the ``(l+1)``-th extra copy of their source, so within a
    layer no source repeats (an indexed addition over one layer has no colliding targets,
    which keeps it deterministic on every device). Positions are flat over ``channels``
    copies of the padded grid: ``c*prod(n+2p) + q``. Built from Python integers only; any rank.
    """
    shape = _grid(shape)
    padded = [n + 2 * pad for n in shape]
    seen: dict = {}
    layers: List[List[int]] = []
    for q, pos in enumerate(itertools.product(*(range(n) for n in padded))):
        if all(pad <= r < pad + n for r, n in zip(pos, shape)):
            continue
        shown = 0
        for r, n in zip(pos, shape):
            shown = shown * n + (r - pad) % n
        rank = seen.get(shown, 0)
        seen[shown] = rank + 1
        while len(layers) <= rank:
            layers.append([])
        layers[rank].append(q)
    offsets = torch.arange(channels)[:, None] * math.prod(padded)
    return [(offsets + torch.tensor(layer, dtype=torch.long)[None, :]).reshape(-1).to(device) for layer in layers]


class _PermutePixels(torch.autograd.Function):
    """``y[..., q] = x[..., index[..., q]]``; backward: a gather with the inverse, then the ring.

    ``x`` and the index are flattened over (channel, pixel). The adjoint of "permute, then pad
    circularly" reads every source's *interior* copy with one gather (``inverse``, which points
    into the padded output) and adds the ring copies layer by layer (:func:`ring_layers`):
    ``ring`` holds the ring positions of all layers, concatenated, and ``targets`` per layer
    the sources of its positions (``index`` there).
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, x: torch.Tensor, index: torch.Tensor, inverse: torch.Tensor, ring: Optional[torch.Tensor],
        *targets: torch.Tensor,
    ) -> torch.Tensor:
        ctx.save_for_backward(inverse, ring, *targets)
        return _take(x, index)

    @staticmethod
    def backward(ctx: Any, gy: torch.Tensor) -> Tuple[Optional[torch.Tensor], ...]:  # type: ignore[override]
        inverse, ring, *targets = ctx.saved_tensors
        g = _take(gy, inverse)
        if ring is not None:
            values = _take(gy, ring)
            start = 0
            for t in targets:
                n = t.shape[-1]
                v = values[..., start : start + n]
                start += n
                if t.dim() == 1:
                    g = g.view(-1, g.shape[-1]).index_add_(1, t, v.reshape(-1, n)).view(g.shape)
                else:
                    g = g.scatter_add_(-1, t.expand(*v.shape), v)
        return (g, None, None, None) + (None,) * len(targets)


def _take(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    if index.dim() == 1:  # one table for every slice; index_select is far faster on a 2-D view
        return x.reshape(-1, x.shape[-1]).index_select(1, index).view(*x.shape[:-1], index.numel())
    return torch.gather(x, -1, index.expand(*x.shape[:-1], index.shape[-1]))


def permute_pixels(
    x: torch.Tensor,
    index: torch.Tensor,
    inverse: torch.Tensor,
    ring: Optional[torch.Tensor] = None,
    targets: Sequence[torch.Tensor] = (),
) -> torch.Tensor:
    """An exact transport (a permutation of pixels and channels), optionally followed by circular padding.

    Args:
        x: ``[..., C*H*W]`` (flattened over channels and pixels), or ``[..., H*W]`` with 1-D tables.
        index: ``[C*(H+2p)*(W+2p)]`` shared by all slices, or a tensor broadcastable to
            ``[..., C*(H+2p)*(W+2p)]`` (one row per slice): the source of every output entry.
        inverse: for every source entry, the flat position of its *interior* copy in the output
            (same layout as ``index`` with ``C*H*W`` columns).
        ring: the :func:`ring_layers` positions of all layers, concatenated (``None`` without padding).
        targets: per layer, ``index`` at its ring positions.

    Returns:
        ``[..., C*(H+2p)*(W+2p)]``.
    """
    if not torch.is_grad_enabled() or not x.requires_grad:
        return _take(x, index)
    return _PermutePixels.apply(x, index, inverse, ring, *targets)


class _PermuteRows(torch.autograd.Function):
    """``y[..., i, :] = x[..., index[i], :]`` for a permutation ``index``; backward: the same with its inverse."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, index: torch.Tensor, inverse: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(inverse)
        return x.index_select(-2, index)

    @staticmethod
    def backward(ctx: Any, gy: torch.Tensor) -> Tuple[Optional[torch.Tensor], ...]:  # type: ignore[override]
        (inverse,) = ctx.saved_tensors
        return gy.index_select(-2, inverse), None, None


def permute_rows(x: torch.Tensor, index: torch.Tensor, inverse: torch.Tensor) -> torch.Tensor:
    """Rows of ``x [..., R, L]`` in the order of the permutation ``index [R]`` (``inverse``: its inverse).

    Copies whole rows (e.g. the channels of a field, each a contiguous run of pixels), so it
    runs at memory speed; the backward is the inverse permutation, not an ``index_add``.
    """
    if not torch.is_grad_enabled() or not x.requires_grad:
        return x.index_select(-2, index)
    return _PermuteRows.apply(x, index, inverse)


class _PermuteColumns(torch.autograd.Function):
    """``y[..., j] = x[..., index[..., j]]`` for permutations ``index`` (broadcast to ``x``); backward: the same
    with their inverses."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, index: torch.Tensor, inverse: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(inverse)
        return x.gather(-1, index.expand(x.shape))

    @staticmethod
    def backward(ctx: Any, gy: torch.Tensor) -> Tuple[Optional[torch.Tensor], ...]:  # type: ignore[override]
        (inverse,) = ctx.saved_tensors
        return gy.gather(-1, inverse.expand(gy.shape)), None, None


def permute_columns(x: torch.Tensor, index: torch.Tensor, inverse: torch.Tensor) -> torch.Tensor:
    """The last axis of ``x`` in the order of the permutations ``index`` (``inverse``: theirs), each broadcast over
    ``x``'s other axes: the channels of a channels-last map, a permutation per slice (``index [1, m, 1, C]`` for
    ``x [B, m, N, C]``). One gather each way, the backward the inverse permutation, not a ``scatter_add``."""
    if not torch.is_grad_enabled() or not x.requires_grad:
        return x.gather(-1, index.expand(x.shape))
    return _PermuteColumns.apply(x, index, inverse)


class PixelRows(NamedTuple):
    """Row tables of an exact, circularly padded transport of channels-last maps ``[L, S, C, *grid]`` (``N`` pixels,
    ``P`` padded): as rows of ``C`` values, output row ``r`` reads input row ``index[r]``; input row ``i`` has its
    interior copy at output row ``inverse[i]``; the ring (border) output rows ``ring_out`` read ``ring_in``."""

    index: torch.Tensor  # [L*S*P]
    inverse: torch.Tensor  # [L*S*N]
    ring_out: torch.Tensor  # [L*S*K]
    ring_in: torch.Tensor  # [L*S*K]
    sizes: Tuple[int, int, int, int]  # L, S, N, P


def pixel_rows(pixels: torch.Tensor, inverse: torch.Tensor, ring: torch.Tensor, lead: int) -> PixelRows:
    """:class:`PixelRows` for ``lead`` maps of ``S`` slices: ``pixels [S, P]`` the source pixel of every padded output
    pixel (a permutation with the padding folded in), ``inverse [S, N]`` every pixel's interior copy, ``ring [K]``
    the padded positions outside the interior."""
    slices, p = pixels.shape
    n = inverse.shape[1]
    o = torch.arange(lead * slices, device=pixels.device).view(lead, slices, 1)
    pixels, inverse = pixels.to(o.dtype), inverse.to(o.dtype)
    return PixelRows((o * n + pixels).reshape(-1), (o * p + inverse).reshape(-1),
                     (o * p + ring.to(o.dtype).view(1, 1, -1)).reshape(-1),
                     (o * n + pixels.index_select(1, ring.to(o.dtype)).unsqueeze(0)).reshape(-1), (lead, slices, n, p))


class _GatherRows(torch.autograd.Function):
    """Output rows ``x[index]`` of the rows of ``x [L*S*N, C]`` (and with ``pool`` their max over the ``S`` slices,
    ``[L, P*C]``); backward: the interior rows gathered back by ``inverse``, the ring rows and the pooled gradient
    (at the first maximal slice) added: index additions, sequential and deterministic on the CPU, the only device
    that runs this. No full-size zero map, and none over the slices for the pooled readout."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, rows: PixelRows, pool: bool) -> Any:  # type: ignore[override]
        ctx.set_materialize_grads(False)
        ctx.rows, ctx.channels = rows, x.shape[1]
        y, values, ctx.first = _select_rows(x, rows, pool)
        return (y, values) if pool else y

    @staticmethod
    def backward(ctx: Any, gy: Optional[torch.Tensor], gp: Optional[torch.Tensor] = None) -> Any:  # type: ignore[override]
        rows, c = ctx.rows, ctx.channels
        lead, slices, n, p = rows.sizes
        if gy is None and gp is None:
            return None, None, None
        if gy is None:
            g = gp.new_zeros(lead * slices * n, c)  # type: ignore[union-attr]
        else:
            gy = gy.contiguous()
            g = gy.index_select(0, rows.inverse)
            if rows.ring_out.numel():
                g.index_add_(0, rows.ring_in, gy.index_select(0, rows.ring_out))
        if gp is not None:  # entry (l, q, c) of the pooled map came from slice first[l, q, c]
            first = ctx.first.view(lead, 1, p, c).long()
            src = rows.index.view(lead, slices, p, 1).expand(lead, slices, p, c).gather(1, first)
            target = src * c + torch.arange(c, device=src.device)
            g.view(-1).index_add_(0, target.view(-1), gp.reshape(-1))
        return g, None, None


def _select_rows(x: torch.Tensor, rows: PixelRows, pool: bool) -> Tuple[torch.Tensor, Any, Any]:
    """The output rows of :class:`_GatherRows` and, with ``pool``, their max over the slices and its first index."""
    y = x.index_select(0, rows.index)
    if not pool:
        return y, None, None
    lead, slices = rows.sizes[:2]
    return (y, *first_max(y.view(lead, slices, -1)))


#: How many row tables (batch sizes, devices) a padding or transport keeps.
ROW_CACHE_SIZE = 4


def cached(owner: Any, name: str, key: Any, build: Any, size: int) -> Any:
    """``build()`` cached on ``owner`` (its ``__dict__[name]``, no buffer) under ``key``, the last ``size`` kept."""
    cache = owner.__dict__.setdefault(name, {})
    if key not in cache:
        if len(cache) >= size:
            cache.pop(next(iter(cache)))
        cache[key] = build()
    return cache[key]


def cached_rows(owner: Any, key: Any, build: Any) -> PixelRows:
    """``build()`` cached on ``owner`` under ``key`` (the last :data:`ROW_CACHE_SIZE` kept)."""
    return cached(owner, "_row_cache", key, build, ROW_CACHE_SIZE)


def gather_pixel_rows(
    x: torch.Tensor, rows: PixelRows, out_grid: Sequence[int],
    perm: Optional[torch.Tensor] = None, perm_inverse: Optional[torch.Tensor] = None, pool: bool = False,
) -> Any:
    """Exact transport of channels-last fields ``x [L, S, C, H, W]`` by the row tables ``rows``
    (:func:`pixel_rows`), then the fiber permutations ``perm [S, C]`` (``y[o] = x[perm[s, o]]``; ``perm_inverse``:
    theirs).

    One ``index_select`` of whole pixel rows (``C`` contiguous values each) instead of one index per value
    (:func:`permute_pixels`); the backward gathers and adds rows (:class:`_GatherRows`). ``pool`` (no ``perm``):
    also the max over the ``S`` slices, computed in the gather's output layout and routed back by the same
    backward (the predictor's readout of a translation FERNN, without a separate pass over the pooled slices).

    Returns:
        ``[L, S, C, *out_grid]``, channels-last; with ``pool`` also ``[L, C, *out_grid]``.
    """
    lead, slices, c = x.shape[:3]
    flat = x.movedim(2, -1).reshape(-1, c)
    if pool and perm is not None:
        raise ValueError("gather_pixel_rows pools over the slices only without a fiber permutation")
    if torch.is_grad_enabled() and flat.requires_grad:
        out = _GatherRows.apply(flat, rows, pool)
        y, pooled = out if pool else (out, None)
    else:
        y, pooled, _ = _select_rows(flat, rows, pool)
    y = y.view(lead, slices, -1, c)
    if perm is not None:
        y = permute_columns(y, perm.view(1, slices, 1, c), perm_inverse.view(1, slices, 1, c))
    y = y.view(lead, slices, *out_grid, c).movedim(-1, 2)
    if pooled is None:
        return y
    return y, pooled.view(lead, *out_grid, c).movedim(-1, 1)


def inverse_permutation(perm: torch.Tensor) -> torch.Tensor:
    """Row-wise inverse of permutations ``perm [..., N]``."""
    inv = torch.empty_like(perm)
    inv.scatter_(-1, perm, torch.arange(perm.shape[-1], device=perm.device).expand_as(perm).contiguous())
    return inv


class CircularPad(torch.nn.Module):
    """Circular padding of ``[..., *grid]`` by ``pad`` positions per side, as one ``index_select``
    (backward: a gather and the ring additions), with its tables held as buffers for one grid.

    Same values as ``F.pad(x, (pad,) * 2 * len(grid), mode="circular")`` for a grid ``(H, W)`` or
    ``(D, H, W)``, in one kernel forward and a few small ones backward (``F.pad`` runs about fifteen
    small ops each way).

    Args:
        grid_shape: the unpadded grid, ``(H, W)`` or ``(D, H, W)``.
        pad: positions added on every side of every axis (at most the axis' size).
    """

    def __init__(self, grid_shape: Sequence[int], pad: int) -> None:
        super().__init__()
        grid = _grid(grid_shape)
        if any(pad > n for n in grid):
            raise ValueError(f"circular padding by {pad} needs a grid of at least {pad} per axis, got "
                             f"{'x'.join(str(n) for n in grid)}")
        self.grid_shape, self.pad = grid, int(pad)
        self.register_buffer("index", pad_index(grid, pad), persistent=False)
        self.register_buffer("inverse", interior_index(grid, pad), persistent=False)
        rings = ring_layers(grid, pad)
        self.num_rings = len(rings)
        self.register_buffer("ring", torch.cat(rings) if rings else None, persistent=False)
        for i, ring in enumerate(rings):
            self.register_buffer(f"ring{i}_source", self.index[ring], persistent=False)

    def extra_repr(self) -> str:
        return f"grid={self.grid_shape}, pad={self.pad}"

    def rows(self, lead: int, device: torch.device) -> PixelRows:
        """The :class:`PixelRows` of this padding for ``lead`` channels-last maps (cached per size and device)."""
        def build() -> PixelRows:
            ring = self.ring if self.ring is not None else self.index[:0]
            return pixel_rows(self.index.view(1, -1).to(device), self.inverse.view(1, -1).to(device), ring.to(device),
                              lead)

        return cached_rows(self, (lead, str(device)), build)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        grid, p, nd = self.grid_shape, self.pad, len(self.grid_shape)
        if p == 0:
            return x
        if tuple(x.shape[-nd:]) != grid:
            raise ValueError(f"this padding is built for a {'x'.join(str(n) for n in grid)} grid, got "
                             f"{tuple(x.shape[-nd:])}")
        padded = tuple(n + 2 * p for n in grid)
        if gathers_rows(x, nd):  # whole pixel rows
            lead = x.shape[:-3]
            y = gather_pixel_rows(x.reshape(-1, 1, *x.shape[-3:]), self.rows(math.prod(lead), x.device), padded)
            return y.reshape(*lead, x.shape[-3], *padded)
        targets = [getattr(self, f"ring{i}_source") for i in range(self.num_rings)]
        lead = x.shape[: x.dim() - nd]
        out = permute_pixels(x.reshape(*lead, math.prod(grid)), self.index, self.inverse, self.ring, targets)
        return out.view(*lead, *padded)


def circular_pad(x: torch.Tensor, pad: int, dims: int = 2) -> torch.Tensor:
    """Functional :class:`CircularPad` over the last ``dims`` axes (builds the tables on every call; layers
    hold a module)."""
    if pad == 0:
        return x
    return CircularPad(tuple(x.shape[-dims:]), pad).to(x.device)(x)
