"""Rotation of voxel fields about a coordinate axis by any angle: an interpolated transport.

The exact volume transports (:mod:`flow_escnn.flows._volume_transport`) move voxels by quarter turns
only. :class:`AxisRotationPlan` rotates fields of a 3D gspace about the x, y or z axis through the
grid centre by *any* angle (optionally shifted by whole voxels along that axis), slice by slice,

.. math::
    y_m(x) = \\rho(g_m)\\, x_m\\big(R_a(\\theta_m)^{-1}(x - s_m e_a)\\big),

in the voxel coordinates of :mod:`flow_escnn.flows._volume` (escnn's ``(-z, -y, x)`` array axes, origin
at the grid centre, right-handed rotations: +90 degrees about z maps x to y, about x maps y to z, about
y maps z to x). :math:`g_m` is the fiber element acting on :math:`\\mathbb{R}^3` as
:math:`R_a(\\theta_m)` (checked against ``gspace.basespace_action``), so the map is the one escnn's
``GeometricTensor.transform`` would apply with an exact resampler.

What is exact and what is interpolated
--------------------------------------
* **Along the axis** the coordinate is preserved (or shifted by whole voxels): no tap there, ever.
* **In the plane** perpendicular to the axis, a source point that falls on a voxel (angles that are
  multiples of 90 degrees) is read as a single tap, so quarter turns are ``torch.rot90`` bit for bit
  (a plan whose every angle is such runs the exact gather of
  :class:`~flow_escnn.flows._volume_transport.VolumeTransportPlan`). Any other angle is resampled with
  the separable kernel ``interpolation`` of :mod:`flow_escnn.flows._tables` over the two in-plane
  array axes (4 taps bilinear, 16 bicubic, 36 cubic6 -- the same counts as in 2D, whatever the
  depth), with periodic wrap-around: only the *inscribed cylinder* about the axis is meaningful
  (content in its corners is read from the opposite side of the torus), as only the inscribed disc
  is for the planar rotations.
* **Fiber**: :math:`\\rho(g)` is a channel permutation when it is one (trivial fields; regular fields of
  ``rot2dOnR3(N)`` at multiples of :math:`2\\pi/N`), else a dense ``C x C`` matrix (irreps of SO(2) /
  SO(3): exact up to float rounding).

The tables are executed by :class:`~flow_escnn.flows._transport.GatherTransport` on the ``(D, H, W)``
grid: one fixed-tap ``embedding_bag`` product for all slices, its backward the same product with the
transposed tables (no ``scatter_add``; :mod:`flow_escnn.flows._resample`).

Supported gspaces: those whose fiber group contains the rotation, found through escnn's own map from
O(3) onto the gspace's subgroup: ``rot3dOnR3()`` / ``flipRot3dOnR3()`` (any axis, any angle),
``rot2dOnR3(-1)`` / ``cylindricalOnR3(-1)`` / ``dihedralOnR3(-1)`` / ... (about z, any angle),
``rot2dOnR3(N)`` (about z, multiples of :math:`360/N` degrees), ``octaOnR3()`` (quarter turns).
Anything else is refused with the rotations the gspace has.

Accuracy (``python -m benchmarks.rotation_accuracy_3d``; ``tests/test_volume_axis_rotation.py``): on
band-limited volumes (Gaussian blobs, sigma 2 voxels) the default ``cubic6`` is within 1.5x of escnn's
own static error at the same angle (one ``R3Conv`` against an order-5 spline rotation of its output).
"""
from __future__ import annotations

import math
from numbers import Real
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from flow_escnn._compat import group as _group
from flow_escnn._validate import one_of
from flow_escnn.flows._gather import pad_index
from flow_escnn.flows._tables import DEFAULT_INTERPOLATION, INTERPOLATIONS, as_permutation, interpolation_kernel
from flow_escnn.flows._transport import GatherTransport
from flow_escnn.flows._volume import AXES, is_volume_gspace, volume_shape

__all__ = [
    "AxisRotationPlan",
    "rotate_volume",
    "axis_rotation_matrix",
    "axis_rotation_element",
    "axis_rotation_table",
]

_INT_TOL = 1e-6  # a source point this close to a voxel is read as that voxel (as the planar tables do)
_ACTION_TOL = 1e-9
#: the array axis (of ``[D, H, W]``) of each coordinate x, y, z, and its sign: x = k - c, y = c - j, z = c - i
_ARRAY_AXIS = (2, 1, 0)


def _angle(value: Any, what: str = "angle") -> float:
    """``value`` (degrees) as a finite float reduced to ``[0, 360)``; multiples of 90 stay exact."""
    if isinstance(value, (bool, str, bytes)) or not isinstance(value, (Real, np.integer, np.floating)):
        raise TypeError(f"{what} must be a real number of degrees, got {type(value).__name__} {value!r}")
    if not math.isfinite(float(value)):
        raise ValueError(f"{what} must be a finite number of degrees, got {value!r}")
    return float(value % 360) if isinstance(value, (int, np.integer)) else float(value) % 360.0


def _shift(value: Any, what: str = "shift") -> int:
    if isinstance(value, (bool, str, bytes)) or not isinstance(value, (int, np.integer)) and not (
            isinstance(value, (Real, np.floating)) and math.isfinite(float(value)) and float(value).is_integer()):
        raise ValueError(f"{what} must be a whole number of voxels along the axis, got {value!r}: the coordinate "
                         "along the rotation axis is moved exactly (no interpolation along it)")
    return int(value)


def _axis(axis: Any) -> int:
    if axis not in AXES:
        raise ValueError(f"axis must be one of {AXES}, got {axis!r}")
    return AXES.index(axis)


def _cos_sin(degrees: float) -> Tuple[float, float]:
    quarter, rest = divmod(degrees, 90.0)
    if rest == 0.0:  # exact for multiples of 90 degrees
        return ((1.0, 0.0), (0.0, 1.0), (-1.0, 0.0), (0.0, -1.0))[int(quarter) % 4]
    t = math.radians(degrees)
    return math.cos(t), math.sin(t)


def axis_rotation_matrix(axis: str, angle: float) -> np.ndarray:
    """:math:`R_a(\\theta)`, the right-handed rotation by ``angle`` degrees about the coordinate ``axis``
    (float64 ``3x3``; entries exactly 0 / +-1 for multiples of 90 degrees, and along the axis always).

    Example:
        >>> axis_rotation_matrix("z", 90).astype(int).tolist()  # maps x to y
        [[0, -1, 0], [1, 0, 0], [0, 0, 1]]
    """
    a = _axis(axis)
    cos, sin = _cos_sin(_angle(angle))
    b, c = (a + 1) % 3, (a + 2) % 3
    m = np.zeros((3, 3), dtype=np.float64)
    m[a, a] = 1.0
    m[b, b], m[b, c], m[c, b], m[c, c] = cos, -sin, sin, cos
    return m


def _rotations_of(gspace: Any) -> str:
    G = gspace.fibergroup
    return f"{gspace.name} (fiber group {G})"


def axis_rotation_element(gspace: Any, axis: str, angle: float) -> Any:
    """The element of ``gspace.fibergroup`` that rotates :math:`\\mathbb{R}^3` by ``angle`` degrees about ``axis``.

    Built as the O(3) element of the unit quaternion :math:`(\\sin\\frac\\theta2\\, e_a, \\cos\\frac\\theta2)`
    (escnn's ``'Q'`` parametrisation, scalar last) and mapped onto the gspace's fiber group by escnn's own
    restriction from O(3); its ``gspace.basespace_action`` is checked to equal :func:`axis_rotation_matrix`.

    Raises:
        ValueError: for a gspace that is not on :math:`\\mathbb{R}^3`, or whose fiber group lacks the rotation
            (``rot2dOnR3`` about x, ``rot2dOnR3(8)`` by 10 degrees, ``octaOnR3`` by 45 degrees, ...).

    Example:
        >>> from escnn import gspaces
        >>> axis_rotation_element(gspaces.rot2dOnR3(8), "z", 90)
        2[2pi/8]
    """
    if not is_volume_gspace(gspace):
        raise ValueError(f"expected an escnn gspace on R^3 (e.g. escnn.gspaces.rot3dOnR3()), got {gspace!r}; "
                         "planar rotations by any angle are TransportPlan's (rot2dOnR2(-1))")
    a = _axis(axis)
    degrees = _angle(angle)
    matrix = axis_rotation_matrix(axis, degrees)
    half = math.radians(degrees) / 2
    q = np.zeros(4, dtype=np.float64)
    q[a], q[3] = math.sin(half), math.cos(half)
    restriction = getattr(gspace, "_restriction", None)
    if restriction is None:
        raise ValueError(f"gspace {gspace.name} does not expose escnn's restriction from O(3)")
    try:
        g = restriction(_group.o3_group().element((0, q), "Q"))
    except Exception as err:  # escnn's restrictions raise on elements outside some subgroups
        g, cause = None, err
    else:
        cause = None
    if g is None:
        raise ValueError(
            f"gspace {_rotations_of(gspace)} has no element rotating by {angle!r} degrees about {axis}: use "
            "rot3dOnR3() (SO(3): any angle about any axis), rot2dOnR3(-1) (SO(2): any angle about z), "
            "rot2dOnR3(N) (multiples of 360/N degrees about z) or octaOnR3() (quarter turns)"
        ) from cause
    action = np.asarray(gspace.basespace_action(g), dtype=np.float64)
    if action.shape != (3, 3) or np.max(np.abs(action - matrix)) > _ACTION_TOL:
        raise ValueError(
            f"gspace {gspace.name}: the element {g} found for {angle!r} degrees about {axis} acts on R^3 as "
            f"{np.round(action, 6).tolist()}, not as the rotation {np.round(matrix, 6).tolist()}"
        )
    return g


def axis_rotation_table(axis: str, angle: float, grid_shape: Tuple[int, int, int],
                        interpolation: str = DEFAULT_INTERPOLATION,
                        shift: int = 0) -> Tuple[np.ndarray, np.ndarray, bool]:
    """Source voxels ``[D*H*W, K]`` and weights ``[D*H*W, K]`` of the rotation by ``angle`` degrees about
    ``axis`` (then ``shift`` whole voxels along it), on the ``D x H x W`` torus.

    The source of the output voxel at centred point :math:`p` is :math:`R^{\\top}(p - s\\,e_a)`. ``K == 1``
    (and ``exact`` True) when every source point is a voxel (multiples of 90 degrees); else the taps of
    ``interpolation`` over the two array axes of the plane perpendicular to the axis, wrapping around.

    Raises:
        ValueError: for a rotation that does not map the plane's two axes onto themselves (not a multiple
            of 180 degrees) when they differ in size (x: W, y: H, z: D).
    """
    one_of(interpolation, INTERPOLATIONS, "interpolation")
    d, h, w = volume_shape(grid_shape)
    a = _axis(axis)
    r = axis_rotation_matrix(axis, angle)
    sizes = (w, h, d)  # along x, y, z
    b, c = (a + 1) % 3, (a + 2) % 3
    if sizes[b] != sizes[c] and r[b, c] != 0.0:
        raise ValueError(
            f"a rotation by {angle!r} degrees about {axis} maps the {AXES[b]} axis off itself, which needs the plane "
            f"perpendicular to {axis} square: {AXES[b]} and {AXES[c]} of equal size; got (D, H, W) = {(d, h, w)} "
            "(x: W, y: H, z: D). Use a cube"
        )
    i, j, k = np.meshgrid(np.arange(d), np.arange(h), np.arange(w), indexing="ij")
    centre = ((w - 1) / 2.0, (h - 1) / 2.0, (d - 1) / 2.0)
    p = np.stack([k - centre[0], centre[1] - j, centre[2] - i], axis=-1).reshape(-1, 3).astype(np.float64)
    p[:, a] -= _shift(shift) % sizes[a]
    src = p @ r  # rows: R^T (p - s e_a)
    # fractional array indices (i, j, k) of the sources
    frac = np.stack([centre[2] - src[:, 2], centre[1] - src[:, 1], src[:, 0] + centre[0]], axis=-1)
    shape = (d, h, w)
    rounded = np.round(frac)
    if np.all(np.abs(frac - rounded) < _INT_TOL):
        ints = rounded.astype(np.int64)
        idx = np.ravel_multi_index(tuple(np.mod(ints[:, n], shape[n]) for n in range(3)), shape)
        return idx[:, None], np.ones((idx.size, 1), dtype=np.float64), True
    along = _ARRAY_AXIS[a]
    plane = sorted((_ARRAY_AXIS[b], _ARRAY_AXIS[c]))
    radius, kernel = interpolation_kernel(interpolation)
    base = np.floor(frac).astype(np.int64)
    fixed = np.mod(np.round(frac[:, along]).astype(np.int64), shape[along])
    idx, wts = [], []
    p0, p1 = plane
    for d0 in range(1 - radius, radius + 1):
        t0 = base[:, p0] + d0
        w0 = kernel(frac[:, p0] - t0)
        for d1 in range(1 - radius, radius + 1):
            t1 = base[:, p1] + d1
            axes = [None, None, None]
            axes[along], axes[p0], axes[p1] = fixed, np.mod(t0, shape[p0]), np.mod(t1, shape[p1])
            idx.append(np.ravel_multi_index(tuple(axes), shape))
            wts.append(w0 * kernel(frac[:, p1] - t1))
    return np.stack(idx, -1), np.stack(wts, -1), False


def _as_list(values: Any, what: str) -> List[Any]:
    if isinstance(values, (str, bytes)):
        raise TypeError(f"{what} must be a number or a sequence of numbers, got {values!r}")
    if isinstance(values, torch.Tensor):
        values = values.tolist()
    if isinstance(values, np.ndarray):
        values = values.tolist()
    if not hasattr(values, "__iter__"):
        return [values]
    return list(values)


class AxisRotationPlan(GatherTransport):
    """Precomputed transport of ``M`` voxel-field slices by rotations about one coordinate axis, by any angles.

    .. math::
        y_m(x) = \\rho(g_m)\\, x_m\\big(R_a(\\theta_m)^{-1}(x - s_m e_a)\\big)

    (module docstring: exact along the axis and for multiples of 90 degrees, interpolated in the plane
    otherwise, periodic: only the inscribed cylinder about the axis is meaningful).

    Args:
        field_type: the escnn ``FieldType`` of each slice, on a 3D gspace holding the rotations.
        axis: ``"x"``, ``"y"`` or ``"z"``.
        angles: ``M`` angles in degrees (right-handed about the positive axis; a single number for ``M = 1``).
        grid_shape: ``(D, H, W)``; the plane perpendicular to the axis must be square unless every angle
            is a multiple of 180 degrees.
        interpolation: one of :data:`~flow_escnn.flows._tables.INTERPOLATIONS` (default ``cubic6``).
        pad: circularly pad the output by this many voxels per side (in the same product).
        shifts: ``None`` or ``M`` whole numbers of voxels to move along the axis after rotating (a screw
            motion's translation; exact).

    Shapes:
        ``forward(x)``: ``x`` is ``[..., M, C, D, H, W]``; returns ``[..., M, C, D+2p, H+2p, W+2p]``; windows
        (``start``), row selections (``rows``) and ``reduce`` as :class:`~flow_escnn.flows._transport.GatherTransport`.

    Attributes:
        axis, angles, shifts, interpolation: as given (``angles`` reduced to ``[0, 360)``).
        elements: the ``M`` fiber elements :math:`g_m`.
        exact: True when every angle is a multiple of 90 degrees (an exact gather).

    Raises:
        TypeError: for angles that are not real numbers.
        ValueError: for an empty or non-finite angle, an axis other than x/y/z, a gspace without the rotation,
            a non-square plane, or a bad ``pad``.

    Example:
        >>> import torch
        >>> from escnn import gspaces, nn as enn
        >>> gs = gspaces.rot3dOnR3()
        >>> ft = enn.FieldType(gs, [gs.irrep(1)])          # a vector field
        >>> plan = AxisRotationPlan(ft, "x", [90, 10], (6, 6, 6))
        >>> x = torch.randn(2, 2, 3, 6, 6, 6, dtype=torch.float64)
        >>> y = plan(x)                                     # slice 0 by 90, slice 1 by 10 degrees about x
        >>> rho = torch.as_tensor(ft.representation(plan.elements[0]))
        >>> expected = torch.einsum("oc,bcdhw->bodhw", rho, torch.rot90(x[:, 0], 1, dims=(-2, -3)))
        >>> torch.allclose(y[:, 0], expected, atol=1e-12)
        True
    """

    def __init__(
        self,
        field_type: Any,
        axis: str,
        angles: Any,
        grid_shape: Tuple[int, int, int],
        interpolation: str = DEFAULT_INTERPOLATION,
        pad: int = 0,
        shifts: Optional[Sequence[int]] = None,
    ) -> None:
        gs = field_type.gspace
        a = _axis(axis)
        raw = _as_list(angles, "angles")
        if not raw:
            raise ValueError("an AxisRotationPlan needs at least one angle")
        degrees = [_angle(t, f"angles[{m}]") for m, t in enumerate(raw)]
        if shifts is None:
            steps = [0] * len(degrees)
        else:
            steps = [_shift(s, f"shifts[{m}]") for m, s in enumerate(_as_list(shifts, "shifts"))]
            if len(steps) != len(degrees):
                raise ValueError(f"got {len(degrees)} angles but {len(steps)} shifts")
        one_of(interpolation, INTERPOLATIONS, "interpolation")
        d, h, w = volume_shape(grid_shape)
        if isinstance(pad, bool) or not isinstance(pad, int) or pad < 0 or pad > min(d, h, w):
            raise ValueError(f"pad must be an integer in [0, min(D, H, W)] = [0, {min(d, h, w)}], got {pad!r}")
        size = (w, h, d)[a]
        elements: Dict[float, Any] = {}
        fiber: Dict[float, np.ndarray] = {}
        spatial: Dict[Tuple[float, int], Tuple[np.ndarray, np.ndarray, bool]] = {}
        for t, s in zip(degrees, steps):
            if t not in elements:
                elements[t] = axis_rotation_element(gs, axis, t)
                fiber[t] = np.asarray(field_type.representation(elements[t]), dtype=np.float64)
            key = (t, s % size)
            if key not in spatial:
                spatial[key] = axis_rotation_table(axis, t, (d, h, w), interpolation, key[1])
        keys = [(t, s % size) for t, s in zip(degrees, steps)]
        exact = all(spatial[k][2] for k in keys)
        if exact:  # one row per slice, executed by the exact gather
            tables, table_rows = [spatial[k] for k in keys], None
        else:  # one table per distinct (angle, shift), shared by its slices
            first = {k: i for i, k in enumerate(dict.fromkeys(keys))}
            tables = [spatial[k] for k in first]
            table_rows = torch.tensor([first[k] for k in keys], dtype=torch.int64)
        taps = 1 if exact else max(t[0].shape[1] for t in tables)
        padmap = pad_index((d, h, w), pad).numpy()
        idx = np.zeros((len(tables), padmap.size, taps), dtype=np.int64)
        wts = np.zeros((len(tables), padmap.size, taps), dtype=np.float64)
        for m, (ti, tw, _) in enumerate(tables):
            idx[m, :, : ti.shape[1]] = ti[padmap]
            wts[m, :, : tw.shape[1]] = tw[padmap]
        perms = {t: as_permutation(r) for t, r in fiber.items()}
        perm: Optional[torch.Tensor] = None
        rho: Optional[torch.Tensor] = None
        if all(p is not None for p in perms.values()):
            perm = torch.from_numpy(np.stack([perms[t] for t in degrees]).astype(np.int64))
        else:
            rho = torch.from_numpy(np.stack([fiber[t] for t in degrees]))
        super().__init__(
            torch.from_numpy(idx[..., 0] if exact else idx),
            None if exact else torch.from_numpy(wts),
            perm,
            rho,
            int(field_type.size),
            (d, h, w),
            pad,
            table_rows,
        )
        self.axis = axis
        self.angles = tuple(degrees)
        self.shifts = tuple(steps)
        self.interpolation = interpolation
        self.elements = tuple(elements[t] for t in degrees)

    @property
    def volume_shape(self) -> Tuple[int, int, int]:
        """``(D, H, W)`` (the unpadded grid)."""
        return self.grid  # type: ignore[return-value]

    def extra_repr(self) -> str:
        angles = ", ".join(f"{t:g}" for t in self.angles[:6]) + (", ..." if len(self.angles) > 6 else "")
        return f"axis={self.axis}, angles=[{angles}], interpolation={self.interpolation}, " + super().extra_repr()


def rotate_volume(x: torch.Tensor, field_type: Any, axis: str, angle: float,
                  interpolation: str = DEFAULT_INTERPOLATION, shift: int = 0) -> torch.Tensor:
    """Rotate a batch of voxel fields ``[B, C, D, H, W]`` by ``angle`` degrees about ``axis`` (then ``shift``
    voxels along it): builds an :class:`AxisRotationPlan` (for repeated use build the plan once).

    Example:
        A quarter turn about z is ``torch.rot90`` over ``(H, W)``; a scalar field on SO(3) turns by any angle:

        >>> import torch
        >>> from escnn import gspaces, nn as enn
        >>> gs = gspaces.rot3dOnR3()
        >>> ft = enn.FieldType(gs, [gs.trivial_repr])
        >>> x = torch.randn(1, 1, 5, 6, 6)
        >>> torch.equal(rotate_volume(x, ft, "z", 90), torch.rot90(x, 1, dims=(-2, -1)))
        True
        >>> rotate_volume(x, ft, "z", 10).shape
        torch.Size([1, 1, 5, 6, 6])
    """
    if not isinstance(x, torch.Tensor) or x.dim() != 5:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"rotate_volume expects a tensor [B, C, D, H, W], got {shape}")
    plan = AxisRotationPlan(field_type, axis, [angle], tuple(x.shape[-3:]), interpolation,
                            shifts=[shift]).to(x.device)
    return plan(x.unsqueeze(1)).squeeze(1)
