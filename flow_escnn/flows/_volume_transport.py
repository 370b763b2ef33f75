"""Exact transport of voxel fields by volume elements: one gather per call.

Given elements :math:`(u_m, g_m) \\in \\mathbb{Z}^3 \\rtimes G`, :math:`m = 1..M`, and a tensor
``x`` of shape ``[..., M, C, D, H, W]`` whose slice ``m`` is a field of type ``field_type``,
:class:`VolumeTransportPlan` computes, slice by slice, on the ``D x H x W`` torus,

.. math::
    y_m(x) = \\rho(g_m)\\, x_m\\big(A(g_m)^{-1}(x - u_m)\\big)

in the coordinates of :mod:`flow_escnn.flows._volume` (escnn's ``(-z, -y, x)`` voxel axes, origin at
the grid centre). Every such map permutes voxels (integer translations wrap around the torus;
:math:`A(g)` is a signed permutation), so the transport is exact: bit-for-bit a permutation of
the input values when :math:`\\rho(g)` is a permutation matrix (trivial, regular and quotient
fields: the channel permutation is folded into the same gather), else that gather followed by
the dense ``C x C`` matrix :math:`\\rho(g)` (irreps fields: exact up to float rounding).

The tables are built once, in integer arithmetic, and executed by the executor of the planar
transports, :class:`~flow_escnn.flows._transport.GatherTransport`, on the ``(D, H, W)`` grid (a
voxel permutation is a permutation of the ``D*H*W`` flat positions), so the lifted state of a
FERNN, ``[B, |V|, C, D, H, W]`` transported by :math:`\\psi_t(\\nu)` slice by slice, is one
``gather`` with a gather-only backward. As in the plane, the output can be circularly padded by
``pad`` voxels per side in the same gather (what the recurrence engine's next ``padding=0``
convolution reads). Rotations that exchange two axes need those axes to
have the same size (a cube for the octahedral group; ``H == W`` for rotations about z).
Rotations about a coordinate axis by other angles (on ``rot3dOnR3``, ``rot2dOnR3(-1)``, ...) are
interpolated: :class:`~flow_escnn.flows._axis_rotation.AxisRotationPlan`.
"""
from __future__ import annotations

from typing import Any, Dict, Optional, Sequence, Tuple

import numpy as np
import torch

from flow_escnn.flows._gather import pad_index
from flow_escnn.flows._tables import as_permutation
from flow_escnn.flows._transport import GatherTransport
from flow_escnn.flows._volume import AXES, Matrix, Triple, VolumeElement, volume_shape

__all__ = ["VolumeTransportPlan", "volume_table", "volume_transport", "volume_flow_sequence", "mismatched_axes"]


def volume_table(element: VolumeElement, grid_shape: Tuple[int, int, int]) -> np.ndarray:
    """The source voxel of every output voxel, ``[D*H*W]`` flat indices (row-major over ``D, H, W``).

    For the output voxel at centred point :math:`p`, the source is :math:`A^{\\top}(p - u)` (:math:`A`
    orthogonal), computed in doubled integer coordinates (so even sizes, whose centre is a half-integer,
    stay exact) and wrapped around the torus.

    Raises:
        ValueError: when :math:`A(g)` maps an axis onto an axis of another size.

    Example:
        >>> from escnn import gspaces
        >>> e = VolumeElement(gspaces.trivialOnR3(), translation=(1, 0, 0))  # one voxel along x
        >>> volume_table(e, (1, 1, 3)).tolist()  # out[k] = in[k - 1], wrapping around
        [2, 0, 1]
    """
    d, h, w = volume_shape(grid_shape)
    return _table(element.integer_matrix, element.translation_mod(d, h, w), (d, h, w))


def mismatched_axes(a: Matrix, shape: Sequence[int]) -> Optional[Tuple[int, int]]:
    """``(i, j)``: the first axis ``j`` (0, 1, 2 for x, y, z) that the signed permutation ``a`` maps onto an axis
    ``i`` of another size of the ``(D, H, W)`` grid ``shape`` (so ``a`` does not map that grid onto itself), or None.

    Example:
        >>> from flow_escnn.flows._volume import axis_rotation
        >>> mismatched_axes(axis_rotation("z", 1), (4, 5, 5)), mismatched_axes(axis_rotation("x", 1), (4, 5, 5))
        (None, (1, 2))
    """
    d, h, w = shape
    sizes = (w, h, d)  # along x, y, z
    for i in range(3):
        for j in range(3):
            if a[i][j] and sizes[i] != sizes[j]:
                return i, j
    return None


def _table(a: Matrix, u: Triple, shape: Triple) -> np.ndarray:
    d, h, w = shape
    bad = mismatched_axes(a, shape)
    if bad is not None:
        i, j = bad
        raise ValueError(
            f"the rotation {[list(r) for r in a]} maps the {AXES[j]} axis onto the {AXES[i]} axis, which needs "
            f"them of equal size; got (D, H, W) = {shape} (x: W, y: H, z: D). Use a cube, or H == W for "
            "rotations about z"
        )
    i, j, k = np.meshgrid(np.arange(d), np.arange(h), np.arange(w), indexing="ij")
    # doubled centred coordinates of the output voxels: 2x = 2k - (W-1), 2y = (H-1) - 2j, 2z = (D-1) - 2i
    p = np.stack([2 * k - (w - 1), (h - 1) - 2 * j, (d - 1) - 2 * i], axis=0).reshape(3, -1).astype(np.int64)
    at = np.array(a, dtype=np.int64).T
    s = at @ (p - 2 * np.array(u, dtype=np.int64)[:, None])  # 2 * A^T (x - u)
    src_k = ((s[0] + (w - 1)) // 2) % w
    src_j = (((h - 1) - s[1]) // 2) % h
    src_i = (((d - 1) - s[2]) // 2) % d
    return (src_i * h + src_j) * w + src_k


class VolumeTransportPlan(GatherTransport):
    """Precomputed exact transport of ``M`` voxel-field slices by ``M`` volume elements.

    .. math::
        y_m = (u_m, g_m)\\cdot x_m, \\qquad [(u, g)\\cdot f](x) = \\rho(g)\\, f\\big(A(g)^{-1}(x - u)\\big).

    Args:
        field_type: the escnn ``FieldType`` of each slice, on the elements' 3D gspace.
        elements: the ``M`` elements :math:`(u_m, g_m)` (e.g. ``V.elements(t)``: the lifted state's
            :math:`\\psi_t(\\nu)` for every :math:`\\nu \\in V`).
        grid_shape: ``(D, H, W)``.
        pad: circularly pad the output by this many voxels per side (at most the smallest axis).

    Shapes:
        ``forward(x)``: ``x`` is ``[..., M, C, D, H, W]``; returns ``[..., M, C, D+2p, H+2p, W+2p]``.
        ``forward(x, start=s)`` transports ``x [..., m, C, D, H, W]`` by rows ``s .. s+m-1``;
        ``forward(x, rows=r)`` by the rows ``r`` (a long tensor of any shape ``S``) for ``x`` of shape
        ``[..., *S, C, D, H, W]``; ``reduce="max"`` / ``"mean"`` pools the output over its slice axis
        (as :class:`~flow_escnn.flows._transport.GatherTransport`).

    Raises:
        TypeError: for elements that are not :class:`~flow_escnn.flows._volume.VolumeElement`.
        ValueError: for an empty list, elements of another gspace, or a grid a rotation does not map onto itself.

    Example:
        A quarter turn about z per frame moves a scalar field like ``torch.rot90`` over ``(H, W)`` (a
        regular field has its channels permuted in the same gather):

        >>> import torch
        >>> from escnn import gspaces, nn as enn
        >>> from flow_escnn.flows import FlowSet
        >>> gs = gspaces.rot2dOnR3(4)
        >>> ft = enn.FieldType(gs, [gs.trivial_repr])
        >>> V = FlowSet.rotations(gs, 1)                     # -90, 0, +90 degrees per frame about z
        >>> plan = VolumeTransportPlan(ft, V.elements(1), (4, 4, 4))
        >>> x = torch.randn(2, len(V), 1, 4, 4, 4, dtype=torch.float64)
        >>> z = V.index((0, 0, 0, 0, 0, 1))                  # +90 degrees about z per frame
        >>> torch.equal(plan(x)[:, z], torch.rot90(x[:, z], 1, dims=(-2, -1)))
        True
    """

    def __init__(self, field_type: Any, elements: Sequence[VolumeElement], grid_shape: Tuple[int, int, int],
                 pad: int = 0) -> None:
        elements = list(elements)
        if not elements:
            raise ValueError("a VolumeTransportPlan needs at least one element")
        gs = field_type.gspace
        for e in elements:
            if not isinstance(e, VolumeElement):
                raise TypeError(f"elements must be VolumeElement, got {type(e).__name__} (planar GridElements go to "
                                "TransportPlan)")
            if e.gspace is not gs and e.gspace != gs:
                raise ValueError(f"element {e} is on gspace {e.gspace.name}, the field type on {gs.name}")
        d, h, w = volume_shape(grid_shape)
        if isinstance(pad, bool) or not isinstance(pad, int) or pad < 0 or pad > min(d, h, w):
            raise ValueError(f"pad must be an integer in [0, min(D, H, W)] = [0, {min(d, h, w)}], got {pad!r}")
        spatial: Dict[Tuple[Matrix, Triple], np.ndarray] = {}
        fiber: Dict[Matrix, np.ndarray] = {}
        rows = []
        for e in elements:
            key = (e.integer_matrix, e.translation_mod(d, h, w))
            if key not in spatial:
                spatial[key] = _table(key[0], key[1], (d, h, w))
            if e.integer_matrix not in fiber:
                fiber[e.integer_matrix] = np.asarray(field_type.representation(e.g), dtype=np.float64)
            rows.append(spatial[key])
        perms = {a: as_permutation(r) for a, r in fiber.items()}
        perm: Optional[torch.Tensor] = None
        rho: Optional[torch.Tensor] = None
        if all(p is not None for p in perms.values()):
            perm = torch.from_numpy(np.stack([perms[e.integer_matrix] for e in elements]).astype(np.int64))
        else:
            rho = torch.from_numpy(np.stack([fiber[e.integer_matrix] for e in elements]))
        padmap = pad_index((d, h, w), pad).numpy()
        table = np.stack(rows)[:, padmap]
        super().__init__(torch.from_numpy(table), None, perm, rho, int(field_type.size), (d, h, w), pad)

    @property
    def volume_shape(self) -> Tuple[int, int, int]:
        """``(D, H, W)`` (the unpadded grid)."""
        return self.grid  # type: ignore[return-value]


def volume_transport(x: torch.Tensor, field_type: Any, element: VolumeElement) -> torch.Tensor:
    """Transport a batch of voxel fields ``[B, C, D, H, W]`` by one element (builds a plan; for repeated use
    build a :class:`VolumeTransportPlan` once).

    Example:
        An integer translation ``(vx, vy, vz)`` is ``torch.roll`` by ``(-vz, -vy, vx)`` over ``(D, H, W)``:

        >>> import torch
        >>> from escnn import gspaces, nn as enn
        >>> gs = gspaces.rot2dOnR3(4)
        >>> x = torch.randn(1, 1, 3, 4, 5)
        >>> y = volume_transport(x, enn.FieldType(gs, [gs.trivial_repr]), VolumeElement(gs, translation=(1, 2, 3)))
        >>> torch.equal(y, torch.roll(x, shifts=(-3, -2, 1), dims=(-3, -2, -1)))
        True
    """
    if x.dim() != 5:
        raise ValueError(f"volume_transport expects a tensor [B, C, D, H, W], got shape {tuple(x.shape)}")
    plan = VolumeTransportPlan(field_type, [element], tuple(x.shape[-3:])).to(x.device)
    return plan(x.unsqueeze(1)).squeeze(1)


def volume_flow_sequence(x: torch.Tensor, field_type: Any, generator: Any, start: int = 0) -> torch.Tensor:
    """Apply a volume flow frame by frame: :math:`x'_t = \\psi_{\\text{start}+t}(\\mu)\\cdot x_t`.

    Args:
        x: a sequence of voxel fields ``[B, T, C, D, H, W]`` of type ``field_type``.
        field_type: the escnn ``FieldType`` of each frame (on a 3D gspace).
        generator: the flow :math:`\\mu`: a :class:`~flow_escnn.flows._volume.VolumeGenerator`, or a velocity
            ``(vx, vy, vz)`` / ``(vx, vy, vz, kx, ky, kz)``.
        start: time index of frame 0 (frame 0 is untouched by default).

    Returns:
        The transformed sequence, same shape.
    """
    from flow_escnn.flows._volume_flowset import VolumeFlowSet

    if x.dim() != 6:
        raise ValueError(f"volume_flow_sequence expects a sequence [B, T, C, D, H, W], got shape {tuple(x.shape)}")
    if x.shape[1] == 0:
        raise ValueError("volume_flow_sequence got a sequence with T=0 frames")
    mu = VolumeFlowSet.as_generator(field_type.gspace, generator)
    plan = VolumeTransportPlan(field_type, [mu.psi(start + t) for t in range(x.shape[1])], tuple(x.shape[-3:]))
    return plan.to(x.device)(x)
