"""Transport of escnn fields by grid elements: exact gathers, or bilinear resampling.

Given elements :math:`(u_m, g_m)`, :math:`m = 1..M`, and a tensor ``x`` of shape
``[B, M, C, H, W]`` whose slice ``m`` is a field of type ``field_type``,
:class:`TransportPlan` computes, slice by slice,

.. math::
    y_m(x) = \\rho(g_m)\\, x_m\\big(A(g_m)^{-1}(x - u_m)\\big)

on the periodic grid (a torus), with the coordinate convention of
:mod:`flow_escnn.flows.gspace_utils`. Everything is precomputed once at
construction: per-slice spatial gather indices (and bilinear weights) and per-slice
fiber permutations (or matrices). The forward pass is one or two ``torch.gather``
calls on expanded index views, with no Python loop over slices or the batch, and it
is differentiable.

Exactness
---------
* **Exact** (bit-for-bit a permutation of the input values): integer translations,
  and :math:`A(g)` a signed permutation (rotations by multiples of 90 degrees,
  reflections). Rotations other than 180 degrees need a square grid.
* **Fiber** action: if :math:`\\rho(g)` is a permutation matrix (trivial, regular,
  quotient fields; entries within 1e-9 of 0/1) it is applied as a gather, exactly;
  otherwise as a dense ``C x C`` matrix product (exact up to float rounding).
* **Approximate**: any other angle or a fractional translation is resampled
  bilinearly with periodic wrap-around. It is *not* equivariant to within rounding;
  the error depends on the signal's smoothness. It is measured in the tests and the
  docs; the co-moving execution mode of the FERNN layers avoids compounding it.
  Source points that fall outside the grid wrap around (torus), so after a rotation
  by a non-multiple of 90 degrees only the inscribed disc is meaningful: content in
  the corners is sampled from the opposite side. Keep rotating content inside the
  disc (as Rotating MNIST does with centred digits).
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from flow_escnn.flows.element import GridElement

__all__ = [
    "GatherTransport",
    "TransportPlan",
    "transport",
    "flow_sequence",
    "INTERPOLATIONS",
    "FIBER_IDENTITY",
    "FIBER_PERMUTATION",
    "FIBER_DENSE",
]

INTERPOLATIONS = ("bilinear",)
_INT_TOL = 1e-6
_PERM_TOL = 1e-9


def _grid_points(h: int, w: int) -> np.ndarray:
    """Centred planar coordinates ``[H*W, 2]`` of the pixels, row-major."""
    i, j = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    return np.stack([j - (w - 1) / 2.0, (h - 1) / 2.0 - i], axis=-1).reshape(-1, 2).astype(np.float64)


def _spatial_table(e: GridElement, h: int, w: int, interpolation: str) -> Tuple[np.ndarray, np.ndarray, bool]:
    """Source pixel indices ``[H*W, K]`` and weights ``[H*W, K]`` for one element.

    ``K == 1`` when the element maps the grid onto itself exactly, else ``K == 4``.
    """
    a = e.matrix
    swaps_axes = abs(a[0, 1]) > 0 or abs(a[1, 0]) > 0
    if swaps_axes and h != w:
        raise ValueError(
            f"{e} rotates the grid by an angle other than 0/180 degrees, which needs a square grid; "
            f"got H={h}, W={w}"
        )
    pts = _grid_points(h, w)
    src = np.linalg.solve(a, (pts - e.translation).T).T  # A^{-1}(x - u)
    col = src[:, 0] + (w - 1) / 2.0
    row = (h - 1) / 2.0 - src[:, 1]
    rcol, rrow = np.round(col), np.round(row)
    if np.all(np.abs(col - rcol) < _INT_TOL) and np.all(np.abs(row - rrow) < _INT_TOL):
        idx = (np.mod(rrow.astype(np.int64), h) * w + np.mod(rcol.astype(np.int64), w))[:, None]
        return idx, np.ones_like(idx, dtype=np.float64), True
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"interpolation must be one of {INTERPOLATIONS}, got {interpolation!r}")
    c0, r0 = np.floor(col), np.floor(row)
    fc, fr = col - c0, row - r0
    c0, r0 = c0.astype(np.int64), r0.astype(np.int64)
    idx, wts = [], []
    for dr, wr in ((0, 1 - fr), (1, fr)):
        for dc, wc in ((0, 1 - fc), (1, fc)):
            idx.append(np.mod(r0 + dr, h) * w + np.mod(c0 + dc, w))
            wts.append(wr * wc)
    return np.stack(idx, -1), np.stack(wts, -1), False


def _fiber_matrix(field_type: Any, e: GridElement) -> np.ndarray:
    return np.asarray(field_type.representation(e.g), dtype=np.float64)


def _as_permutation(rho: np.ndarray) -> np.ndarray | None:
    """``perm`` with ``rho[o, perm[o]] == 1`` if ``rho`` is a permutation matrix, else None."""
    r = np.round(rho)
    if np.max(np.abs(rho - r)) > _PERM_TOL or not np.all((r == 0) | (r == 1)):
        return None
    if not (np.all(r.sum(0) == 1) and np.all(r.sum(1) == 1)):
        return None
    return np.argmax(r, axis=1)


FIBER_IDENTITY, FIBER_PERMUTATION, FIBER_DENSE = 0, 1, 2


class GatherTransport(torch.nn.Module):
    """Executes precomputed transport tables: plain torch, no escnn object, TorchScript-able.

    Slice ``m`` of the input is transported by element ``m`` of the tables:
    ``y[..., m, :, p] = fiber_m( sum_k wts[m, p, k] * x[..., m, :, idx[m, p, k]] )``, the fiber
    action being a channel permutation (``perm[m]``: ``y[o] = x[perm[m, o]]``) or a dense
    matrix (``rho[m]``). :class:`TransportPlan` builds the tables from group elements; the
    exported (plain-PyTorch) models hold copies made by :meth:`from_plan`.

    Args:
        idx: ``[M, H*W*K]`` source pixel indices (K taps per output pixel).
        wts: ``[M, H*W, K]`` interpolation weights (unused when ``K == 1``).
        perm: ``[M, C]`` fiber permutations (``fiber_mode == FIBER_PERMUTATION``), else any.
        rho: ``[M, C, C]`` fiber matrices (``fiber_mode == FIBER_DENSE``), else any.
        channels: ``C``.
        grid_shape: ``(H, W)``.
        spatial_identity: skip the spatial gather (every element fixes every pixel).
        fiber_mode: ``FIBER_IDENTITY``, ``FIBER_PERMUTATION`` or ``FIBER_DENSE``.
        persistent: whether the tables appear in the ``state_dict``.

    Shapes:
        ``forward(x)``: ``x`` is ``[..., M, C, H, W]``, all ``M`` slices; ``forward(x, start)``
        transports ``x [..., m, C, H, W]`` by elements ``start .. start+m-1`` (a window, so one
        long table can serve every time step of a sequence).
    """

    __jit_unused_properties__ = ["grid_shape", "fiber_identity", "fiber_is_permutation"]

    def __init__(
        self,
        idx: torch.Tensor,
        wts: torch.Tensor,
        perm: torch.Tensor,
        rho: torch.Tensor,
        channels: int,
        grid_shape: Tuple[int, int],
        spatial_identity: bool,
        fiber_mode: int,
        persistent: bool = True,
    ) -> None:
        super().__init__()
        h, w = int(grid_shape[0]), int(grid_shape[1])
        self.num_slices = int(idx.shape[0])
        self.channels = int(channels)
        self.height = h
        self.width = w
        self.taps = int(idx.shape[1]) // (h * w) if self.num_slices > 0 else 1
        self.spatial_identity = bool(spatial_identity)
        self.fiber_mode = int(fiber_mode)
        self.register_buffer("idx", idx.to(torch.long), persistent=persistent)
        self.register_buffer("wts", wts, persistent=persistent)
        self.register_buffer("perm", perm.to(torch.long), persistent=persistent)
        self.register_buffer("rho", rho, persistent=persistent)

    @property
    def grid_shape(self) -> Tuple[int, int]:
        return (self.height, self.width)

    @property
    def fiber_identity(self) -> bool:
        return self.fiber_mode == FIBER_IDENTITY

    @property
    def fiber_is_permutation(self) -> bool:
        return self.fiber_mode != FIBER_DENSE

    @classmethod
    def from_plan(cls, plan: "GatherTransport") -> "GatherTransport":
        """A plain copy of ``plan``'s tables (persistent buffers; e.g. for export)."""
        return cls(
            plan.idx.detach().clone(),
            plan.wts.detach().clone(),
            plan.perm.detach().clone(),
            plan.rho.detach().clone(),
            plan.channels,
            plan.grid_shape,
            plan.spatial_identity,
            plan.fiber_mode,
        )

    @classmethod
    def empty(cls, channels: int, grid_shape: Tuple[int, int]) -> "GatherTransport":
        """A placeholder with no slices (for a code path that is never taken)."""
        z = torch.zeros(0, 0, dtype=torch.long)
        return cls(z, torch.zeros(0, 0, 0, dtype=torch.float64), z, torch.zeros(0, 0, 0, dtype=torch.float64),
                   channels, grid_shape, False, FIBER_IDENTITY)

    def extra_repr(self) -> str:
        fiber = ("identity", "permutation", "dense")[self.fiber_mode]
        return (
            f"M={self.num_slices}, C={self.channels}, grid=({self.height}, {self.width}), "
            f"taps={self.taps}, fiber={fiber}"
        )

    def forward(self, x: torch.Tensor, start: Optional[int] = None) -> torch.Tensor:
        c, h, w = self.channels, self.height, self.width
        if x.dim() < 4 or x.shape[-3] != c or x.shape[-2] != h or x.shape[-1] != w:
            raise ValueError(
                "expected a tensor [..., M, C={}, H={}, W={}] for this transport, got {}".format(c, h, w, list(x.shape))
            )
        m = x.shape[-4]
        if start is None:
            if m != self.num_slices:
                raise ValueError(
                    "expected a tensor [..., M={}, C={}, H={}, W={}] for this transport (one slice per element), "
                    "got {}".format(self.num_slices, c, h, w, list(x.shape))
                )
            s0 = 0
        else:
            s0 = start
            if s0 < 0 or s0 + m > self.num_slices:
                raise ValueError(
                    "this transport holds {} slices but slices {}..{} were requested".format(
                        self.num_slices, s0, s0 + m - 1
                    )
                )
        lead = x.shape[:-4]
        y = x.reshape(-1, m, c, h * w)
        b = y.shape[0]
        if not self.spatial_identity:
            k = self.taps
            index = self.idx[s0 : s0 + m].view(1, m, 1, h * w * k).expand(b, m, c, h * w * k)
            y = torch.gather(y, 3, index)
            if k > 1:
                wts = self.wts[s0 : s0 + m].to(dtype=y.dtype).view(1, m, 1, h * w, k)
                y = (y.view(b, m, c, h * w, k) * wts).sum(-1)
        if self.fiber_mode == 1:  # FIBER_PERMUTATION (literal: TorchScript reads no module globals)
            y = torch.gather(y, 2, self.perm[s0 : s0 + m].view(1, m, c, 1).expand(b, m, c, h * w))
        elif self.fiber_mode == 2:  # FIBER_DENSE
            y = torch.einsum("moc,bmcp->bmop", self.rho[s0 : s0 + m].to(dtype=y.dtype), y)
        shape: List[int] = list(lead) + [m, c, h, w]
        return y.reshape(shape)


class TransportPlan(GatherTransport):
    """Precomputed transport of ``M`` field slices by ``M`` grid elements.

    Tables are built once (identical elements share their work) and executed by
    :class:`GatherTransport`; they are not part of any ``state_dict``.

    Args:
        field_type: the escnn ``FieldType`` of each slice (its gspace must match the elements').
        elements: the ``M`` elements :math:`(u_m, g_m)`.
        grid_shape: ``(H, W)``.
        interpolation: resampling for non-grid-preserving elements (``"bilinear"``).

    Shapes:
        ``forward(x)``: ``x`` is ``[..., M, C, H, W]``; returns the same shape (see
        :class:`GatherTransport` for windows).

    Attributes:
        exact: True when every element maps the grid onto itself (no interpolation).
    """

    def __init__(
        self,
        field_type: Any,
        elements: Sequence[GridElement],
        grid_shape: Tuple[int, int],
        interpolation: str = "bilinear",
    ) -> None:
        elements = list(elements)
        if not elements:
            raise ValueError("a TransportPlan needs at least one element")
        for e in elements:
            if not isinstance(e, GridElement):
                raise TypeError(f"elements must be GridElement, got {type(e).__name__}")
            if e.gspace != field_type.gspace:
                raise ValueError(f"element {e} is on gspace {e.gspace}, field type on {field_type.gspace}")
        try:
            h, w = (int(s) for s in grid_shape)
        except (TypeError, ValueError):
            raise ValueError(f"grid_shape must be a pair (H, W) of positive integers, got {grid_shape!r}") from None
        if h < 1 or w < 1:
            raise ValueError(f"grid_shape must be positive (H, W), got {grid_shape!r}")
        channels = int(field_type.size)

        # tables per distinct element (a plan over T*V elements often has few distinct ones)
        spatial: Dict[GridElement, Tuple[np.ndarray, np.ndarray, bool]] = {}
        fiber: Dict[Any, np.ndarray] = {}
        for e in elements:
            if e not in spatial:
                spatial[e] = _spatial_table(e, h, w, interpolation)
            if e.g not in fiber:
                fiber[e.g] = _fiber_matrix(field_type, e)
        tables = [spatial[e] for e in elements]
        exact = all(t[2] for t in tables)
        k = 1 if exact else 4
        idx = np.zeros((len(elements), h * w, k), dtype=np.int64)
        wts = np.zeros((len(elements), h * w, k), dtype=np.float64)
        for m, (ti, tw, _) in enumerate(tables):
            idx[m, :, : ti.shape[1]] = ti
            wts[m, :, : tw.shape[1]] = tw
        spatial_identity = exact and np.array_equal(idx[..., 0], np.broadcast_to(np.arange(h * w), idx.shape[:2]))

        perms_by_g = {g: _as_permutation(r) for g, r in fiber.items()}
        eye = np.arange(channels)
        if all(p is not None and np.array_equal(p, eye) for p in perms_by_g.values()):
            mode = FIBER_IDENTITY
        elif all(p is not None for p in perms_by_g.values()):
            mode = FIBER_PERMUTATION
        else:
            mode = FIBER_DENSE
        perm = np.zeros((len(elements), channels), dtype=np.int64)
        rho = np.zeros((len(elements), channels, channels) if mode == FIBER_DENSE else (0, 0, 0), dtype=np.float64)
        for m, e in enumerate(elements):
            if mode == FIBER_PERMUTATION:
                perm[m] = perms_by_g[e.g]
            elif mode == FIBER_DENSE:
                rho[m] = fiber[e.g]
        super().__init__(
            torch.from_numpy(idx.reshape(len(elements), h * w * k)),
            torch.from_numpy(wts),
            torch.from_numpy(perm),
            torch.from_numpy(rho),
            channels,
            (h, w),
            bool(spatial_identity),
            mode,
            persistent=False,
        )
        self.exact = exact


def transport(x: torch.Tensor, field_type: Any, element: GridElement, interpolation: str = "bilinear") -> torch.Tensor:
    """Transport a batch of fields ``[B, C, H, W]`` by one element (convenience; builds a plan).

    For repeated use build a :class:`TransportPlan` once instead.
    """
    if x.dim() != 4:
        raise ValueError(f"transport expects a tensor [B, C, H, W], got shape {tuple(x.shape)}")
    plan = TransportPlan(field_type, [element], tuple(x.shape[-2:]), interpolation).to(x.device)
    return plan(x.unsqueeze(1)).squeeze(1)


def flow_sequence(
    x: torch.Tensor,
    field_type: Any,
    generator: Any,
    start: int = 0,
    interpolation: str = "bilinear",
) -> torch.Tensor:
    """Apply a flow frame by frame: :math:`x'_t = \\psi_{\\text{start}+t}(\\mu)\\cdot x_t`.

    Args:
        x: a sequence of fields ``[B, T, C, H, W]`` of type ``field_type``.
        field_type: the escnn ``FieldType`` of each frame.
        generator: the flow :math:`\\mu` (a :class:`~flow_escnn.flows.generator.FlowGenerator`).
        start: time index of frame 0 (frames are 0-indexed, so frame 0 is untouched by default).
        interpolation: resampling for non-grid-preserving flows.

    Returns:
        The transformed sequence, same shape.
    """
    if x.dim() != 5:
        raise ValueError(f"flow_sequence expects a sequence [B, T, C, H, W], got shape {tuple(x.shape)}")
    if x.shape[1] == 0:
        raise ValueError("flow_sequence got a sequence with T=0 frames")
    elements = [generator.psi(start + t) for t in range(x.shape[1])]
    plan = TransportPlan(field_type, elements, tuple(x.shape[-2:]), interpolation).to(x.device)
    return plan(x)
