"""What flow_escnn needs to know about an escnn 2D gspace.

Only planar gspaces whose fiber group is finite (``trivialOnR2``, ``flip2dOnR2``,
``rot2dOnR2(N)``, ``flipRot2dOnR2(N)`` with ``N >= 1``) are supported: a flow's
rotation is one step of ``2*pi/N``, and its fiber action must be a finite matrix.

Coordinate convention (the one place it is written down)
---------------------------------------------------------
A tensor ``[..., H, W]`` samples a field on a grid whose point ``(i, j)`` (row,
column) has the planar coordinates

.. math::
    x = j - c_x, \\qquad y = c_y - i, \\qquad c_x = (W-1)/2,\\; c_y = (H-1)/2,

i.e. *x runs along the last array axis and y points up*, the origin at the grid
centre. This is escnn's own convention (``escnn.gspaces.utils.linear_transform_array_nd``
treats the array as ``[..., -Y, X]``), so a rotation built from
``gspace.basespace_action`` agrees exactly with ``GeometricTensor.transform``.
Consequences:

* a translation by ``(vx, vy)`` pixels is ``torch.roll(t, shifts=(-vy, vx), dims=(-2, -1))``;
* a rotation by ``+90`` degrees is ``torch.rot90(t, 1, dims=(-2, -1))`` (counter-clockwise
  as displayed with row 0 on top);
* rotations are always about the grid centre ``(c_x, c_y)``.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from flow_escnn._compat import group as _group

__all__ = [
    "check_planar_gspace",
    "rotation_order",
    "rotation_element",
    "rotation_steps",
    "spatial_matrix",
    "is_reflection",
]

_INT_TOL = 1e-9


def check_planar_gspace(gspace: Any) -> None:
    """Raise ``ValueError`` unless ``gspace`` is a 2D escnn gspace with a finite fiber group."""
    if not hasattr(gspace, "fibergroup") or getattr(gspace, "dimensionality", None) != 2:
        raise ValueError(
            f"expected a planar escnn gspace (e.g. escnn.gspaces.rot2dOnR2(4)), got {gspace!r}"
        )
    if gspace.fibergroup.continuous:
        raise ValueError(
            f"gspace {gspace} has a continuous fiber group ({gspace.fibergroup}); flows need a finite one: "
            "use rot2dOnR2(N) / flipRot2dOnR2(N) with N >= 1"
        )


def rotation_order(gspace: Any) -> int:
    """Number ``N`` of rotations in the fiber group (1 for trivial and flip-only gspaces)."""
    check_planar_gspace(gspace)
    n = getattr(gspace, "rotations_order", 1)
    return int(n) if n is not None and n > 0 else 1


def rotation_element(gspace: Any, k: int) -> Any:
    """The fiber-group element rotating by ``k * 2*pi/N`` (escnn ``GroupElement``).

    Raises:
        ValueError: when ``k`` is not an integer.
    """
    if isinstance(k, bool) or int(k) != k:
        raise ValueError(f"rotation steps must be an integer number of 2*pi/N steps, got {k!r}")
    k = int(k)
    G = gspace.fibergroup
    n = rotation_order(gspace)
    if isinstance(G, _group.CyclicGroup):
        return G.element(k % n)
    if isinstance(G, _group.DihedralGroup):
        return G.element((0, k % n))
    # flip-only gspace (fiber group C2 of reflections) or anything else with N == 1
    if k % n != 0:
        raise ValueError(f"gspace {gspace} has no rotations; rotation step {k} is not allowed")
    return G.identity


def rotation_steps(gspace: Any, element: Any) -> int:
    """Inverse of :func:`rotation_element`: the step count ``k`` in ``[0, N)``.

    Raises:
        ValueError: when ``element`` contains a reflection.
    """
    G = gspace.fibergroup
    if is_reflection(gspace, element):
        # flip2dOnR2's fiber group is a CyclicGroup of order 2 whose generator is the flip,
        # so the group type alone cannot tell a reflection from a rotation
        raise ValueError(f"{element} contains a reflection; flow generators are rotations only")
    if isinstance(G, _group.CyclicGroup):
        return int(element.to("int")) % rotation_order(gspace)
    if isinstance(G, _group.DihedralGroup):
        flip, k = element.to("int")
        if flip:
            raise ValueError(f"{element} contains a reflection; flow generators are rotations only")
        return int(k)
    if element == G.identity:
        return 0
    raise ValueError(f"{element} contains a reflection; flow generators are rotations only")


def spatial_matrix(gspace: Any, element: Any) -> np.ndarray:
    """The 2x2 matrix by which ``element`` acts on planar coordinates ``(x, y)``.

    Entries within ``1e-9`` of an integer are rounded to it, so that rotations by
    multiples of 90 degrees and the reflections are exact signed permutations.
    """
    a = np.asarray(gspace.basespace_action(element), dtype=np.float64).reshape(2, 2)
    r = np.round(a)
    return np.where(np.abs(a - r) < _INT_TOL, r, a)


def is_reflection(gspace: Any, element: Any) -> bool:
    """Whether ``element`` reverses orientation (determinant -1 on the plane)."""
    return bool(np.linalg.det(spatial_matrix(gspace, element)) < 0)
