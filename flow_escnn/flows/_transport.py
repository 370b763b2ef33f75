"""Transport of escnn fields by grid elements: exact gathers, or interpolated resampling.

Given elements :math:`(u_m, g_m)`, :math:`m = 1..M`, and a tensor ``x`` of shape
``[B, M, C, H, W]`` whose slice ``m`` is a field of type ``field_type``,
:class:`TransportPlan` computes, slice by slice,

.. math::
    y_m(x) = \\rho(g_m)\\, x_m\\big(A(g_m)^{-1}(x - u_m)\\big)

on the periodic grid (a torus), with the coordinate convention of
:mod:`flow_escnn.flows._planar`. Everything is precomputed once at construction:
per-slice spatial gather tables (and interpolation weights, with their transposes for the
backward pass) and per-slice fiber permutations (or matrices). Optionally the output is
circularly padded by ``pad`` pixels in the same operation, so that a ``padding=0``
convolution can read it directly. No Python loop over slices or the batch, and backward
passes without ``scatter_add`` (:mod:`flow_escnn.flows._gather`, :mod:`flow_escnn.flows._resample`).
:func:`~flow_escnn.flows._functional.transport` and
:func:`~flow_escnn.flows._functional.flow_sequence` are one-call forms.

Exactness
---------
* **Exact** (bit-for-bit a permutation of the input values): integer translations,
  and :math:`A(g)` a signed permutation (rotations by multiples of 90 degrees,
  reflections). Rotations other than 180 degrees need a square grid.
* **Fiber** action: if :math:`\\rho(g)` is a permutation matrix (trivial, regular,
  quotient fields; entries within 1e-9 of 0/1) it is applied as a channel permutation,
  exactly; otherwise as a dense ``C x C`` matrix product (exact up to float rounding).
* **Approximate**: any other angle or a fractional translation is resampled with
  ``interpolation`` (:mod:`flow_escnn.flows._tables`: cubic6 by default, bicubic or bilinear) with
  periodic wrap-around, as one fixed-tap product for all slices
  (:mod:`flow_escnn.flows._resample`). It is *not* equivariant to within rounding; the
  error depends on the signal's smoothness. It is measured in the tests and the docs
  (``benchmarks/rotation_accuracy.py``); the co-moving execution mode of the FERNN layers
  avoids compounding it.
  Source points that fall outside the grid wrap around (torus), so after a rotation
  by a non-multiple of 90 degrees only the inscribed disc is meaningful: content in
  the corners is sampled from the opposite side. Keep rotating content inside the
  disc (as Rotating MNIST does with centred digits).
* **Volumes**: the same fixed-tap product runs on ``(D, H, W)`` grids (the flat ``(channel, position)``
  layout does not care about the rank): :class:`~flow_escnn.flows._axis_rotation.AxisRotationPlan`
  rotates voxel fields about a coordinate axis by any angle, with taps only in the plane perpendicular
  to the axis (only the inscribed cylinder is meaningful).
"""
from __future__ import annotations

import math
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from flow_escnn._validate import grid_shape as validate_grid_shape
from flow_escnn._validate import one_of
from flow_escnn.flows._element import GridElement
from flow_escnn.flows._tables import DEFAULT_INTERPOLATION, INTERPOLATIONS, as_permutation, spatial_table, transpose_table
from flow_escnn.flows._gather import (
    PixelRows, cached, cached_rows, gather_pixel_rows, interior_index, inverse_permutation, pad_index, permute_pixels,
    pixel_rows, ring_layers,
)
from flow_escnn.flows._layout import gathers_rows
from flow_escnn.flows._reduce import REDUCTIONS, reduce_over
from flow_escnn.flows._resample import Products, product_tables, resample_fields

__all__ = ["GatherTransport", "TransportPlan", "INTERPOLATIONS"]

#: Flat (channel-materialised) tables up to this many entries are built once at construction;
#: larger ones (long co-moving tables over many channels) are built per call for the rows used.
_FLAT_CACHE_LIMIT = 1 << 22
#: Interpolated transports keep the product tables of this many row selections (:meth:`GatherTransport._products`).
PRODUCT_CACHE_SIZE = 32


class GatherTransport(torch.nn.Module):
    """Executes precomputed transport tables (plain torch; no escnn object inside).

    Slice ``m`` of the input is transported by table row ``m``; see
    :mod:`flow_escnn.flows._gather` for the executors. :class:`TransportPlan` builds the
    tables from group elements.

    Args:
        index: exact tables: ``[M, N_out]`` source pixels; interpolated: ``[M, N_out, K]``.
            ``N_out = (H+2p)*(W+2p)``.
        weights: ``None`` (exact) or ``[M, N_out, K]`` interpolation weights (float64).
        perm: ``None`` or ``[M, C]`` fiber permutations (``y[o] = x[perm[m, o]]``).
        rho: ``None`` or ``[M, C, C]`` dense fiber matrices.
        channels: ``C``.
        grid_shape: ``(H, W)`` of the *input* (unpadded) grid, or ``(D, H, W)`` for volumes (exact tables,
            or interpolated ones: the fixed-tap product works on the flat ``(channel, position)`` layout,
            ``N = prod(grid)``, whatever the rank; :class:`~flow_escnn.flows._axis_rotation.AxisRotationPlan`
            builds such tables).
        pad: circular padding of the output.
        table_rows: interpolated tables only: ``None`` (row ``m`` of ``index`` / ``weights`` serves slice
            ``m``) or ``[M]`` long, the row of ``index`` / ``weights`` serving slice ``m``, so slices whose
            elements move pixels alike share one table (:class:`TransportPlan` passes it).

    Shapes:
        ``forward(x)``: ``x`` is ``[..., M, C, H, W]``; returns ``[..., M, C, H+2p, W+2p]``.
        ``forward(x, start=s)`` transports ``x [..., m, C, H, W]`` by rows ``s .. s+m-1``;
        ``forward(x, rows=r)`` by the rows ``r`` (a long tensor of any shape ``S``), for ``x``
        of shape ``[..., *S, C, H, W]`` (size-1 axes of ``x`` broadcast). On a volume grid
        ``(D, H, W)`` the spatial axes are ``D, H, W`` (each padded by ``p``).
    """

    def __init__(
        self,
        index: torch.Tensor,
        weights: Optional[torch.Tensor],
        perm: Optional[torch.Tensor],
        rho: Optional[torch.Tensor],
        channels: int,
        grid_shape: Tuple[int, int],
        pad: int = 0,
        table_rows: Optional[torch.Tensor] = None,
    ) -> None:
        super().__init__()
        grid = tuple(int(g) for g in grid_shape)
        if len(grid) not in (2, 3):
            raise ValueError(f"grid_shape must be (H, W) or (D, H, W), got {grid_shape!r}")
        self.grid = grid
        h, w = grid[-2], grid[-1]
        self.height, self.width, self.pad, self.channels = h, w, int(pad), int(channels)
        if table_rows is not None and weights is None:
            raise ValueError("table_rows shares interpolated tables; exact tables take one row per slice")
        self.num_slices = int(index.shape[0] if table_rows is None else table_rows.shape[0])
        n, n_out = math.prod(grid), math.prod(g + 2 * self.pad for g in grid)
        if index.shape[1] != n_out:
            raise ValueError(f"expected tables with {n_out} output pixels, got {tuple(index.shape)}")
        if perm is not None and bool((perm == torch.arange(self.channels)).all()):
            perm = None
        self.exact = weights is None
        self.spatial_identity = False
        if self.exact:
            unpadded = index[:, interior_index(grid, self.pad)]
            self.spatial_identity = bool((unpadded == torch.arange(n)).all()) and perm is None and rho is None
            self.register_buffer("index", index.contiguous(), persistent=False)
            # for every source pixel, the position of its interior copy in the padded output
            self.register_buffer("inverse", interior_index(grid, self.pad)[inverse_permutation(unpadded)], persistent=False)
        else:
            t_idx, t_wts = zip(*(transpose_table(i.numpy(), wt.numpy(), n) for i, wt in zip(index, weights)))
            k2 = max(t.shape[1] for t in t_idx)
            t_index = np.zeros((len(t_idx), n, k2), dtype=np.int32)  # pixel numbers: int32 halves the tables
            t_weights = np.zeros((len(t_idx), n, k2), dtype=np.float64)
            for m, (ti, tw) in enumerate(zip(t_idx, t_wts)):
                t_index[m, :, : ti.shape[1]], t_weights[m, :, : tw.shape[1]] = ti, tw
            self.register_buffer("index", index.to(torch.int32).contiguous(), persistent=False)
            self.register_buffer("weights", weights.contiguous(), persistent=False)
            self.register_buffer("t_index", torch.from_numpy(t_index), persistent=False)
            self.register_buffer("t_weights", torch.from_numpy(t_weights), persistent=False)
            rows = torch.arange(len(t_idx)) if table_rows is None else table_rows.to(torch.int64)
            if rows.shape != (self.num_slices,) or int(rows.min()) < 0 or int(rows.max()) >= len(t_idx):
                raise ValueError(f"table_rows must be {self.num_slices} rows of 0..{len(t_idx) - 1}, got {list(rows.shape)}")
            self.register_buffer("table_rows", rows, persistent=False)
        self.register_buffer("perm", perm, persistent=False)
        self.register_buffer("perm_inverse", None if perm is None else inverse_permutation(perm), persistent=False)
        self.register_buffer("rho", rho, persistent=False)
        self.register_buffer("pad_map", pad_index(grid, self.pad), persistent=False)
        self.register_buffer("interior", interior_index(grid, self.pad), persistent=False)
        pixel_ring = ring_layers(grid, self.pad)
        self.register_buffer("ring_pixels", torch.cat(pixel_ring) if pixel_ring else torch.zeros(0, dtype=torch.long),
                             persistent=False)
        rings = pixel_ring if self.spatial_identity else ring_layers(grid, self.pad, self.channels)
        self.num_rings = len(rings)
        self.ring_sizes = [int(r.numel()) for r in rings]
        self.register_buffer("ring", torch.cat(rings) if rings else None, persistent=False)
        for i, ring in enumerate(rings if self.spatial_identity else ()):
            self.register_buffer(f"ring{i}_source", self.pad_map[ring], persistent=False)
        # channel-materialised tables for all rows (the hot step transport), when small enough
        cached = self.num_slices * self.channels * self.index[0].numel() <= _FLAT_CACHE_LIMIT
        self._cached = cached and self.exact and not self.spatial_identity
        self._cached_names = []
        if self._cached:
            tables = self._flat_tables(None)
            if self.exact:
                for i, ring in enumerate(rings):
                    tables[f"ring{i}_source"] = tables["index"].index_select(-1, ring)
            for name, table in tables.items():
                self.register_buffer(f"flat_{name}", table, persistent=False)
            self._cached_names = list(tables)

    @property
    def grid_shape(self) -> Tuple[int, ...]:
        """The unpadded grid, ``(H, W)`` or ``(D, H, W)``."""
        return self.grid

    @property
    def padded_shape(self) -> Tuple[int, ...]:
        """The output grid, every axis padded by ``pad`` on both sides."""
        return tuple(g + 2 * self.pad for g in self.grid)

    @property
    def fiber_identity(self) -> bool:
        return self.perm is None and self.rho is None

    @property
    def fiber_is_permutation(self) -> bool:
        return self.rho is None

    def extra_repr(self) -> str:
        fiber = "identity" if self.fiber_identity else ("permutation" if self.fiber_is_permutation else "dense")
        taps = 1 if self.exact else self.index.shape[-1]
        return f"M={self.num_slices}, C={self.channels}, grid={self.grid}, pad={self.pad}, taps={taps}, fiber={fiber}"

    def _ring_layers(self) -> List[torch.Tensor]:
        return list(self.ring.split(self.ring_sizes)) if self.ring is not None else []

    def _select(self, t: Optional[torch.Tensor], sel: Any) -> Optional[torch.Tensor]:
        if t is None or sel is None:
            return t
        if isinstance(sel, slice):
            return t[sel]
        return t.index_select(0, sel.reshape(-1)).view(*sel.shape, *t.shape[1:])

    def _flat_tables(self, sel: Any) -> Dict[str, torch.Tensor]:
        """Exact tables of the selected rows flattened over (channel, pixel), fiber permutation folded in."""
        c, n = self.channels, math.prod(self.grid)
        n_out = self.pad_map.numel()

        def channels(perm: Optional[torch.Tensor], like: torch.Tensor) -> torch.Tensor:
            if perm is None:
                return torch.arange(c, device=like.device).expand(*like.shape[:-1], c)
            return perm

        def flat(ch: torch.Tensor, spatial: torch.Tensor, stride: int) -> torch.Tensor:
            lead = spatial.shape[: ch.dim() - 1]
            return (ch.unsqueeze(-1) * stride + spatial.reshape(*lead, 1, -1)).reshape(*lead, -1)

        index = self._select(self.index, sel)
        perm = self._select(self.perm, sel)
        ch = channels(perm, index[..., :1])
        inv = self._select(self.inverse, sel)
        ch_inv = channels(self._select(self.perm_inverse, sel), inv[..., :1])
        return {"index": flat(ch, index, n), "inverse": flat(ch_inv, inv, n_out)}

    def interpolation_tables(self, sel: Any = None) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """``index, weights [m, N_out, K]`` and the transposed ``t_index, t_weights [m, N, K']`` of the
        selected slices (all, a slice, or a long tensor of rows) of an interpolated transport."""
        if self.exact:
            raise ValueError("an exact transport has no interpolation tables")
        rows = self._select(self.table_rows, sel).reshape(-1)
        return tuple(t.index_select(0, rows) for t in (self.index, self.weights, self.t_index, self.t_weights))  # type: ignore[return-value]

    def _products(self, sel: Any, x: torch.Tensor) -> Products:
        """The :func:`~flow_escnn.flows._resample.product_tables` of the selected slices for ``x``'s dtype, cached on
        the CPU by the selected rows (a co-moving run cycles through one period of them; the last
        :data:`PRODUCT_CACHE_SIZE` kept)."""
        def build() -> Products:
            return product_tables(self.interpolation_tables(sel), math.prod(self.grid), self.pad_map.numel(), x.dtype)

        if self.index.device.type != "cpu" or torch.compiler.is_compiling():
            return build()
        rows = ((sel.start, sel.stop) if isinstance(sel, slice)
                else None if sel is None else tuple(sel.reshape(-1).tolist()))
        return cached(self, "_product_cache", (rows, x.dtype), build, PRODUCT_CACHE_SIZE)

    def _resample(self, x: torch.Tensor, sel: Any, lead: Tuple[int, ...], s_shape: Tuple[int, ...],
                  reduce: Optional[str] = None) -> torch.Tensor:
        """The interpolated transport of ``x [*lead, *S, C, *grid]`` by the selected rows (channel permutation,
        then one fixed-tap product for all slices: :func:`~flow_escnn.flows._resample.resample_fields`)."""
        c, n = self.channels, math.prod(self.grid)
        m, batch = math.prod(s_shape), math.prod(lead)  # plain Python ints (np.prod broke torch.compile graphs)
        perm = None
        if self.perm is not None:
            perm = tuple(self._select(p, sel).reshape(m, c) for p in (self.perm, self.perm_inverse))
        out = resample_fields(x.reshape(batch, m, c, n), self._products(sel, x), self.pad_map.numel(), perm, reduce)
        return out.reshape(*lead, *(() if reduce else s_shape), c, -1)  # C and N kept apart: a channels-last out stays

    def forward(self, x: torch.Tensor, start: Optional[int] = None, rows: Optional[torch.Tensor] = None,
                reduce: Optional[str] = None) -> torch.Tensor:
        """Transport ``x`` (shapes: class docstring); ``reduce="max"`` / ``"mean"`` pools the output over its
        (single) slice axis, for interpolated transports inside the resampling's layout (same values)."""
        if reduce is None:
            return self._transport(x, start, rows)
        one_of(reduce, REDUCTIONS, "reduce")
        if rows is not None and rows.dim() != 1:
            raise ValueError(f"reduce pools one slice axis: pass 1-D rows, got rows of shape {list(rows.shape)}")
        if self.exact or self.rho is not None:  # pooled after the transport
            return reduce_over(self._transport(x, start, rows), -2 - len(self.grid), reduce)
        return self._transport(x, start, rows, reduce)

    def _pixel_rows(self, sel: Any, m: int, lead: int, device: torch.device) -> PixelRows:
        """The :class:`~flow_escnn.flows._gather.PixelRows` of the selected slices (exact tables; cached for all
        slices)."""
        def build() -> PixelRows:
            if self.spatial_identity:
                pixels, inverse = self.pad_map.expand(m, -1), self.interior.expand(m, -1)
            else:
                pixels = self._select(self.index, sel).reshape(m, -1)
                inverse = self._select(self.inverse, sel).reshape(m, -1)
            return pixel_rows(pixels.to(device), inverse.to(device), self.ring_pixels.to(device), lead)

        if sel is not None:
            return build()
        return cached_rows(self, (lead, str(device)), build)

    def pooled_rows(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """The transport of channels-last fields ``x [B, M, C, H, W]`` (all slices; exact tables, no fiber
        permutation) and its max over the slices, ``[B, C, H+2p, W+2p]``, in one gather and one backward
        (:func:`~flow_escnn.flows._gather.gather_pixel_rows`)."""
        if not self.pools_rows(x):
            raise ValueError("pooled_rows takes channels-last fields [B, M, C, H, W] of an exact transport with "
                             "identity fibers")
        b, m, c = x.shape[:3]
        return gather_pixel_rows(x, self._pixel_rows(None, m, b, x.device), self.padded_shape, pool=True)

    def pools_rows(self, x: torch.Tensor) -> bool:
        """Whether :meth:`pooled_rows` takes ``x``."""
        moves = self.pad or not self.spatial_identity  # else the transport is the map itself
        return (self.exact and self.fiber_identity and bool(moves) and self.num_slices > 1 and x.dim() == 5
                and x.shape[1] == self.num_slices and tuple(x.shape[2:]) == (self.channels, *self.grid)
                and gathers_rows(x, len(self.grid)))

    def _transport(self, x: torch.Tensor, start: Optional[int] = None, rows: Optional[torch.Tensor] = None,
                   reduce: Optional[str] = None) -> torch.Tensor:
        c, p = self.channels, self.pad
        nd, grid = len(self.grid), self.grid
        if x.dim() < nd + 2 or tuple(x.shape[-nd - 1:]) != (c, *grid):
            raise ValueError(f"expected a tensor [..., M, C={c}, {self._axes()}] for this transport, got {list(x.shape)}")
        sel: Any = None
        if rows is not None:
            s_shape = tuple(rows.shape)
            sel = rows
        elif start is not None:
            m = x.shape[-nd - 2]
            if start < 0 or start + m > self.num_slices:
                raise ValueError(
                    f"this transport holds {self.num_slices} slices but slices {start}..{start + m - 1} were requested"
                )
            s_shape, sel = (m,), slice(start, start + m)
        else:
            if x.shape[-nd - 2] != self.num_slices:
                raise ValueError(
                    f"expected a tensor [..., M={self.num_slices}, C={c}, {self._axes()}] for this transport "
                    f"(one slice per table row), got {list(x.shape)}"
                )
            s_shape = (self.num_slices,)
        k = len(s_shape)
        lead = tuple(x.shape[: x.dim() - 1 - nd - k])
        x = x.expand(*lead, *s_shape, c, *grid)
        padded, n, n_out = self.padded_shape, math.prod(grid), self.pad_map.numel()
        if self.spatial_identity and not p:
            return x
        if self.exact and self.rho is None and gathers_rows(x, nd):  # channels-last fields: whole pixel rows
            m, n_lead = math.prod(s_shape), math.prod(lead)
            perm = [] if self.perm is None else [self._select(t, sel).reshape(m, c) for t in (self.perm, self.perm_inverse)]
            y = gather_pixel_rows(x.reshape(n_lead, m, c, *grid), self._pixel_rows(sel, m, n_lead, x.device), padded,
                                  *perm)
            return y.reshape(*lead, *s_shape, c, *padded)
        if self.spatial_identity:
            targets = [getattr(self, f"ring{i}_source") for i in range(self.num_rings)]
            xf = x.reshape(*lead, *s_shape, c, n)
            y = permute_pixels(xf, self.pad_map, self.interior, self.ring, targets) if p else x
            return y.reshape(*lead, *s_shape, c, *padded)
        if reduce is not None:  # interpolated, permutation fibers (forward): pooled in the product's layout
            return self._resample(x, sel, lead, s_shape, reduce).view(*lead, c, *padded)
        if not self.exact:
            y = self._resample(x, sel, lead, s_shape).view(*lead, *s_shape, c, n_out)
            if self.rho is not None:
                rho = self._select(self.rho, sel).to(dtype=y.dtype)
                y = torch.einsum("...oc,...cn->...on", rho, y)
            return y.reshape(*lead, *s_shape, c, *padded)
        if self._cached and (sel is None or isinstance(sel, slice)):
            tables = {name: getattr(self, f"flat_{name}") for name in self._cached_names}
            if sel is not None:
                tables = {name: t[sel] for name, t in tables.items()}
        else:
            tables = self._flat_tables(sel)
            for i, ring in enumerate(self._ring_layers()):
                tables[f"ring{i}_source"] = tables["index"].index_select(-1, ring)
        xf = x.reshape(*lead, *s_shape, c * n)
        targets = [tables[f"ring{i}_source"] for i in range(self.num_rings)]
        y = permute_pixels(xf, tables["index"], tables["inverse"], self.ring, targets)
        y = y.view(*lead, *s_shape, c, n_out)
        if self.rho is not None:
            rho = self._select(self.rho, sel).to(dtype=y.dtype)
            y = torch.einsum("...oc,...cn->...on", rho, y)
        return y.reshape(*lead, *s_shape, c, *padded)

    def _axes(self) -> str:
        return ", ".join(f"{a}={g}" for a, g in zip("DHW"[3 - len(self.grid):], self.grid))


class TransportPlan(GatherTransport):
    """Precomputed transport of ``M`` field slices by ``M`` grid elements.

    Tables are built once (identical elements share their work) and executed by
    :class:`GatherTransport`; they are not part of any ``state_dict``.

    Args:
        field_type: the escnn ``FieldType`` of each slice (its gspace must match the elements').
        elements: the ``M`` elements :math:`(u_m, g_m)`.
        grid_shape: ``(H, W)``.
        interpolation: resampling for non-grid-preserving elements (:data:`~flow_escnn.flows._tables.INTERPOLATIONS`).
        pad: circularly pad the output by this many pixels (in the same gather).

    Shapes:
        ``forward(x)``: ``x`` is ``[..., M, C, H, W]``; returns ``[..., M, C, H+2p, W+2p]`` (see
        :class:`GatherTransport` for windows and row selections).

    Attributes:
        exact: True when every element maps the grid onto itself (no interpolation).
    """

    def __init__(
        self,
        field_type: Any,
        elements: Sequence[GridElement],
        grid_shape: Tuple[int, int],
        interpolation: str = DEFAULT_INTERPOLATION,
        pad: int = 0,
    ) -> None:
        elements = list(elements)
        if not elements:
            raise ValueError("a TransportPlan needs at least one element")
        for e in elements:
            if not isinstance(e, GridElement):
                raise TypeError(f"elements must be GridElement, got {type(e).__name__}")
            if e.gspace != field_type.gspace:
                raise ValueError(f"element {e} is on gspace {e.gspace}, field type on {field_type.gspace}")
        one_of(interpolation, INTERPOLATIONS, "interpolation")
        h, w = validate_grid_shape(grid_shape)
        if isinstance(pad, bool) or not isinstance(pad, int) or pad < 0 or pad > min(h, w):
            raise ValueError(f"pad must be an integer in [0, min(H, W)] = [0, {min(h, w)}], got {pad!r}")
        channels = int(field_type.size)

        # tables per distinct element (a plan over T*V elements often has few distinct ones)
        spatial: Dict[GridElement, Tuple[np.ndarray, np.ndarray, bool]] = {}
        fiber: Dict[Any, np.ndarray] = {}
        for e in elements:
            if e not in spatial:
                spatial[e] = spatial_table(e, h, w, interpolation)
            if e.g not in fiber:
                fiber[e.g] = np.asarray(field_type.representation(e.g), dtype=np.float64)
        exact = all(spatial[e][2] for e in elements)
        if exact:  # exact tables: one row per slice (the channel-materialised executors index them so)
            tables, table_rows = [spatial[e] for e in elements], None
        else:  # interpolated: one table per distinct element, shared by its slices (a co-moving plan
            # over T*V elements holds few distinct rotations: C36 with |V| = 9 over 20 frames, 36 of 180)
            first = {e: i for i, e in enumerate(dict.fromkeys(elements))}
            tables = [spatial[e] for e in first]
            table_rows = torch.tensor([first[e] for e in elements], dtype=torch.int64)
        k = 1 if exact else max(t[0].shape[1] for t in tables)
        padmap = pad_index((h, w), pad).numpy()
        idx = np.zeros((len(tables), padmap.size, k), dtype=np.int64)
        wts = np.zeros((len(tables), padmap.size, k), dtype=np.float64)
        for m, (ti, tw, _) in enumerate(tables):
            idx[m, :, : ti.shape[1]] = ti[padmap]
            wts[m, :, : tw.shape[1]] = tw[padmap]

        perms_by_g = {g: as_permutation(r) for g, r in fiber.items()}
        perm: Optional[torch.Tensor] = None
        rho: Optional[torch.Tensor] = None
        if all(p is not None for p in perms_by_g.values()):
            perm = torch.from_numpy(np.stack([perms_by_g[e.g] for e in elements]).astype(np.int64))
        else:
            rho = torch.from_numpy(np.stack([fiber[e.g] for e in elements]))
        super().__init__(
            torch.from_numpy(idx[..., 0] if exact else idx),
            None if exact else torch.from_numpy(wts),
            perm,
            rho,
            channels,
            (h, w),
            pad,
            table_rows,
        )
