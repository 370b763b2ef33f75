"""Planar gspaces as the flows see them: the grid's coordinates and the fiber group as rotation steps.

Planar gspaces with a finite fiber group (``trivialOnR2``, ``flip2dOnR2``,
``rot2dOnR2(N)``, ``flipRot2dOnR2(N)`` with ``N >= 1``) and the continuous ones
(``rot2dOnR2(-1)``: SO(2), ``flipRot2dOnR2(-1)``: O(2)) are supported. A flow's rotation is
measured in *steps*: :func:`steps_per_turn` of them make a full turn, ``N`` for a finite
group (a step is ``2*pi/N``) and 360 for SO(2)/O(2), whose steps are degrees and may be any
rational number (``fractions.Fraction``; a float is read as the decimal it prints as).

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

import math
from fractions import Fraction
from numbers import Rational
from typing import Any, Union

import numpy as np

from flow_escnn._compat import group as _group

__all__ = [
    "check_planar_gspace",
    "is_continuous",
    "whole_number",
    "steps_per_turn",
    "rotation_order",
    "rotation_element",
    "rotation_steps",
    "spatial_matrix",
    "is_reflection",
    "lattice_candidates",
]

_INT_TOL = 1e-9


def check_planar_gspace(gspace: Any) -> None:
    """Raise ``ValueError`` unless ``gspace`` is a 2D escnn gspace with a finite fiber group, SO(2) or O(2)."""
    if not hasattr(gspace, "fibergroup") or getattr(gspace, "dimensionality", None) != 2:
        raise ValueError(
            f"expected a planar escnn gspace (e.g. escnn.gspaces.rot2dOnR2(4)), got {gspace!r}"
        )
    G = gspace.fibergroup
    if G.continuous and not isinstance(G, (_group.SO2, _group.O2)):
        raise ValueError(
            f"gspace {gspace} has the continuous fiber group {G}; flows support finite groups, SO(2) and O(2): "
            "use rot2dOnR2(N) / flipRot2dOnR2(N) with N >= 1, or N = -1"
        )


def is_continuous(gspace: Any) -> bool:
    """Whether the fiber group is SO(2) or O(2) (rotations by any angle)."""
    check_planar_gspace(gspace)
    return bool(gspace.fibergroup.continuous)


def steps_per_turn(gspace: Any) -> int:
    """Rotation steps in a full turn: ``N`` for a finite group (1 without rotations), 360 for SO(2)/O(2)."""
    return 360 if is_continuous(gspace) else rotation_order(gspace)


def rotation_order(gspace: Any) -> int:
    """Number ``N`` of rotations in a finite fiber group (1 for trivial and flip-only gspaces).

    Raises:
        ValueError: for SO(2) / O(2), which have infinitely many (use :func:`steps_per_turn`).
    """
    check_planar_gspace(gspace)
    if gspace.fibergroup.continuous:
        raise ValueError(f"gspace {gspace} has infinitely many rotations ({gspace.fibergroup}); it has no order N")
    n = getattr(gspace, "rotations_order", 1)
    return int(n) if n is not None and n > 0 else 1


Steps = Union[int, Fraction]


def whole_number(value: Any, what: str, advice: str = "") -> int:
    """``value`` as an exact ``int`` (ints of any size, or floats that are whole numbers).

    Raises:
        TypeError: for bools, strings and bytes.
        ValueError: for anything else that is not a whole number (``advice`` is appended).
    """
    if isinstance(value, (bool, str, bytes)):
        raise TypeError(f"{what} must be an integer, got {type(value).__name__} {value!r}")
    if isinstance(value, (int, np.integer)):
        return int(value)  # exact, any size
    try:
        as_float = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be an integer, got {value!r}") from None
    if not math.isfinite(as_float) or as_float != int(as_float):
        raise ValueError(f"{what} must be an integer, got {value!r}" + (f": {advice}" if advice else ""))
    return int(as_float)


def as_steps(gspace: Any, k: Any, what: str = "rotation") -> Steps:
    """``k`` as an exact step count: an ``int`` for a finite group, a ``Fraction`` of degrees for SO(2)/O(2).

    Raises:
        TypeError: for a non-number.
        ValueError: for a non-integer step of a finite group, or a non-finite angle.
    """
    if isinstance(k, (bool, str, bytes)):
        raise TypeError(f"{what} must be a number of rotation steps, got {type(k).__name__} {k!r}")
    if is_continuous(gspace):
        if isinstance(k, (int, np.integer, Rational)):
            f = Fraction(int(k)) if isinstance(k, (int, np.integer)) else Fraction(k)
        else:
            try:
                value = float(k)
            except (TypeError, ValueError):
                raise TypeError(f"{what} must be a number of degrees, got {type(k).__name__} {k!r}") from None
            if not math.isfinite(value):
                raise ValueError(f"{what} must be a finite number of degrees, got {k!r}")
            f = Fraction(repr(value))  # 22.5 -> 45/2, 0.1 -> 1/10
        return int(f) if f.denominator == 1 else f
    return whole_number(k, what, "on a finite group flows rotate by whole 2*pi/N steps so that 90-degree multiples "
                                 "are exact; use a larger N, or rot2dOnR2(-1) (SO(2)) for any angle")


def rotation_element(gspace: Any, k: Any) -> Any:
    """The fiber-group element rotating by ``k`` steps (``k * 2*pi/N``; degrees for SO(2)/O(2)).

    Raises:
        ValueError: when ``k`` is not an integer (finite groups).
    """
    G = gspace.fibergroup
    if is_continuous(gspace):
        turns = Fraction(as_steps(gspace, k)) / 360
        turns -= math.floor(turns)
        angle = 2 * math.pi * float(turns)
        return G.element(angle) if isinstance(G, _group.SO2) else G.element((0, angle))
    if isinstance(k, bool) or int(k) != k:
        raise ValueError(f"rotation steps must be an integer number of 2*pi/N steps, got {k!r}")
    k = int(k)
    n = rotation_order(gspace)
    if isinstance(G, _group.CyclicGroup):
        return G.element(k % n)
    if isinstance(G, _group.DihedralGroup):
        return G.element((0, k % n))
    # flip-only gspace (fiber group C2 of reflections) or anything else with N == 1
    if k % n != 0:
        raise ValueError(f"gspace {gspace} has no rotations; rotation step {k} is not allowed")
    return G.identity


def rotation_steps(gspace: Any, element: Any) -> Steps:
    """Inverse of :func:`rotation_element`: the step count ``k`` in ``[0, N)`` (``[0, 360)`` degrees for
    SO(2)/O(2), the nearest fraction with denominator up to 10**6).

    Raises:
        ValueError: when ``element`` contains a reflection.
    """
    G = gspace.fibergroup
    if is_reflection(gspace, element):
        # flip2dOnR2's fiber group is a CyclicGroup of order 2 whose generator is the flip,
        # so the group type alone cannot tell a reflection from a rotation
        raise ValueError(f"{element} contains a reflection; flow generators are rotations only")
    if G.continuous:
        a = spatial_matrix(gspace, element)
        degrees = Fraction(math.degrees(math.atan2(a[1, 0], a[0, 0]))).limit_denominator(10**6) % 360
        return int(degrees) if degrees.denominator == 1 else degrees
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


def lattice_candidates(gspace: Any) -> list:
    """Fiber elements that may map the pixel lattice onto itself: all of a finite group; for SO(2) /
    O(2) the rotations by multiples of 90 degrees (and their reflections). Filter by :func:`spatial_matrix`."""
    G = gspace.fibergroup
    if not G.continuous:
        return list(G.elements)
    angles = [k * math.pi / 2 for k in range(4)]
    if isinstance(G, _group.SO2):
        return [G.element(a) for a in angles]
    return [G.element((f, a)) for f in (0, 1) for a in angles]


def is_reflection(gspace: Any, element: Any) -> bool:
    """Whether ``element`` reverses orientation (determinant -1 on the plane)."""
    return bool(np.linalg.det(spatial_matrix(gspace, element)) < 0)
