"""Volumes: elements of :math:`\\mathbb{Z}^3 \\rtimes G` and the flow generators of escnn's 3D gspaces.

The 3D counterpart of :mod:`flow_escnn.flows._element` and :mod:`flow_escnn.flows._generator`,
for the escnn gspaces on :math:`\\mathbb{R}^3` whose fiber group :math:`G` is finite and maps
the voxel grid onto itself: every :math:`A(g)` (``gspace.basespace_action``) is a signed
permutation matrix. Those are ``octaOnR3`` (the 24 rotations of the cube), ``fullOctaOnR3``
(its 48 rotations and reflections), ``rot2dOnR3(n)`` / ``cylindricalOnR3(n)`` /
``conicalOnR3(n)`` / ``dihedralOnR3(n)`` / ``fullCylindricalOnR3(n)`` for ``n`` in 1, 2, 4,
``mirOnR3``, ``invOnR3`` and ``trivialOnR3`` (:func:`check_volume_gspace` says which).
Everything here is exact integer arithmetic: an element is a pair of an integer translation
and an integer 3x3 matrix, and its fiber element is looked up from that matrix (the action of a
subgroup of O(3) on :math:`\\mathbb{R}^3` is faithful).

Coordinate convention (escnn's voxel convention)
------------------------------------------------
A tensor ``[..., D, H, W]`` samples a field on a grid whose voxel ``(i, j, k)`` has the
coordinates

.. math::
    x = k - c_x, \\qquad y = c_y - j, \\qquad z = c_z - i, \\qquad
    c_x = \\tfrac{W-1}{2},\\; c_y = \\tfrac{H-1}{2},\\; c_z = \\tfrac{D-1}{2},

i.e. the array axes are ``(-z, -y, x)``: x along the last axis, y up the rows as in 2D, z
pointing towards the *front* of the volume (decreasing depth index). This is escnn's own
convention (``GSpace3D``'s note; ``escnn.gspaces.utils.linear_transform_array_nd`` treats the
array as ``[..., -Z, -Y, X]``), so the transports agree with ``GeometricTensor.transform`` and
with ``R3Conv``'s equivariance (both tested). Consequences, on a cube:

* a translation by ``(vx, vy, vz)`` voxels is
  ``torch.roll(t, shifts=(-vz, -vy, vx), dims=(-3, -2, -1))``;
* a rotation by +90 degrees (right-handed, counter-clockwise seen from the positive axis)
  about z is ``torch.rot90(t, 1, dims=(-2, -1))`` (as in 2D), about x
  ``torch.rot90(t, 1, dims=(-2, -3))``, about y ``torch.rot90(t, 1, dims=(-1, -3))``;
* rotations are about the grid centre :math:`(c_x, c_y, c_z)`.

A rotation flow turns by a whole number :math:`k` of quarter turns per frame about a
coordinate axis; it is written as the integer vector :math:`(k_x, k_y, k_z)` with at most one
non-zero entry (the axis-angle vector in quarter turns), canonically in :math:`\\{-1, 1, 2\\}`
(a half turn about :math:`-a` is the one about :math:`a`).
"""
from __future__ import annotations

import math
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from flow_escnn._compat import group as _group
from flow_escnn._compat import gspaces as _gspaces
from flow_escnn.flows._planar import whole_number

__all__ = [
    "VolumeElement",
    "VolumeGenerator",
    "check_volume_gspace",
    "is_volume_gspace",
    "volume_matrix",
    "axis_rotation",
    "rotation_vector",
    "quarter_turn_element",
    "volume_shape",
    "AXES",
]

#: The coordinate axes, in the order of a velocity's components.
AXES = ("x", "y", "z")

Matrix = Tuple[Tuple[int, int, int], Tuple[int, int, int], Tuple[int, int, int]]
Triple = Tuple[int, int, int]

_IDENTITY: Matrix = ((1, 0, 0), (0, 1, 0), (0, 0, 1))
_TOL = 1e-9
#: per gspace: {integer matrix: fiber element} (the gspace's action is faithful)
_TABLES: Dict[Any, Dict[Matrix, Any]] = {}

_SUPPORTED = (
    "octaOnR3(), fullOctaOnR3(), rot2dOnR3(n) / cylindricalOnR3(n) / conicalOnR3(n) / dihedralOnR3(n) / "
    "fullCylindricalOnR3(n) with n in (1, 2, 4), mirOnR3(), invOnR3() or trivialOnR3()"
)


# -- integer 3x3 algebra --------------------------------------------------------------------------------------
def _mul(a: Matrix, b: Matrix) -> Matrix:
    return tuple(tuple(sum(a[i][k] * b[k][j] for k in range(3)) for j in range(3)) for i in range(3))  # type: ignore[return-value]


def _apply(a: Matrix, v: Sequence[int]) -> Triple:
    return (a[0][0] * v[0] + a[0][1] * v[1] + a[0][2] * v[2],
            a[1][0] * v[0] + a[1][1] * v[1] + a[1][2] * v[2],
            a[2][0] * v[0] + a[2][1] * v[1] + a[2][2] * v[2])


def _transpose(a: Matrix) -> Matrix:
    return tuple(tuple(a[j][i] for j in range(3)) for i in range(3))  # type: ignore[return-value]


def _det(a: Matrix) -> int:
    return (a[0][0] * (a[1][1] * a[2][2] - a[1][2] * a[2][1]) - a[0][1] * (a[1][0] * a[2][2] - a[1][2] * a[2][0])
            + a[0][2] * (a[1][0] * a[2][1] - a[1][1] * a[2][0]))


def _signed_permutation(a: Any) -> Optional[Matrix]:
    """``a`` as nested Python ints if it is a 3x3 signed permutation matrix (entries within 1e-9), else None."""
    m = np.asarray(a, dtype=np.float64)
    if m.shape != (3, 3) or not np.all(np.isfinite(m)):
        return None
    r = np.round(m)
    if np.max(np.abs(m - r)) > _TOL or not np.all(np.abs(r) <= 1):
        return None
    if not (np.all(np.abs(r).sum(0) == 1) and np.all(np.abs(r).sum(1) == 1)):
        return None
    return tuple(tuple(int(v) for v in row) for row in r)  # type: ignore[return-value]


def axis_rotation(axis: str, quarter_turns: int) -> Matrix:
    """The matrix of the rotation by ``quarter_turns`` x 90 degrees about the coordinate ``axis``
    (right-handed: a quarter turn about z maps x to y, about x maps y to z, about y maps z to x).

    .. math::
        R_z = \\begin{pmatrix} 0 & -1 & 0 \\\\ 1 & 0 & 0 \\\\ 0 & 0 & 1 \\end{pmatrix}, \\quad
        R_a^{\\,k} \\text{ its } k\\text{-th power (the others by cycling } x \\to y \\to z).

    Raises:
        ValueError: for an axis other than ``"x"``, ``"y"``, ``"z"``, or a non-integer number of turns.

    Example:
        >>> axis_rotation("z", 1)
        ((0, -1, 0), (1, 0, 0), (0, 0, 1))
    """
    if axis not in AXES:
        raise ValueError(f"axis must be one of {AXES}, got {axis!r}")
    k = whole_number(quarter_turns, "quarter_turns", "rotation flows on the voxel grid turn by whole quarter turns") % 4
    a = AXES.index(axis)
    b, c = (a + 1) % 3, (a + 2) % 3
    cos, sin = ((1, 0), (0, 1), (-1, 0), (0, -1))[k]
    m = [[0] * 3 for _ in range(3)]
    m[a][a] = 1
    m[b][b], m[b][c], m[c][b], m[c][c] = cos, -sin, sin, cos
    return tuple(tuple(row) for row in m)  # type: ignore[return-value]


def rotation_vector(matrix: Any) -> Optional[Triple]:
    """The quarter-turn vector :math:`(k_x, k_y, k_z)` of a rotation about a coordinate axis (canonical:
    the non-zero entry in ``{-1, 1, 2}``), ``(0, 0, 0)`` for the identity, or None when ``matrix`` is not
    such a rotation (a reflection, a rotation about a diagonal, or not a signed permutation).

    Example:
        >>> rotation_vector(axis_rotation("x", -1)), rotation_vector(axis_rotation("y", 6))
        ((-1, 0, 0), (0, 2, 0))
    """
    a = _signed_permutation(matrix)
    if a is None or _det(a) != 1:
        return None
    if a == _IDENTITY:
        return (0, 0, 0)
    for i, axis in enumerate(AXES):
        for k in (1, 2, -1):
            if axis_rotation(axis, k) == a:
                out = [0, 0, 0]
                out[i] = k
                return tuple(out)  # type: ignore[return-value]
    return None


def _rotation_matrix(vector: Triple) -> Matrix:
    for i, k in enumerate(vector):
        if k:
            return axis_rotation(AXES[i], k)
    return _IDENTITY


def _canonical_rotation(rotation: Any) -> Triple:
    """A quarter-turn vector given as ``(kx, ky, kz)`` checked and reduced to its canonical form."""
    if isinstance(rotation, (str, bytes)) or not hasattr(rotation, "__iter__"):
        raise TypeError(f"rotation must be a triple (kx, ky, kz) of quarter turns per frame, got "
                        f"{type(rotation).__name__} {rotation!r}")
    ks = tuple(rotation)
    if len(ks) != 3:
        raise ValueError(f"rotation must be a triple (kx, ky, kz) of quarter turns per frame, got {rotation!r}")
    ks = tuple(whole_number(k, f"rotation k{a}", "rotation flows on the voxel grid turn by whole quarter turns "
                                                    "(multiples of 90 degrees) per frame") for k, a in zip(ks, AXES))
    if sum(1 for k in ks if k % 4) > 1:
        raise ValueError(
            f"rotation {rotation!r} turns about more than one coordinate axis; a rotation flow turns about one axis: "
            "give at most one non-zero entry (kx, 0, 0), (0, ky, 0) or (0, 0, kz)"
        )
    return rotation_vector(_rotation_matrix(tuple(k % 4 for k in ks)))  # type: ignore[return-value, arg-type]


# -- gspaces --------------------------------------------------------------------------------------------------
def is_volume_gspace(gspace: Any) -> bool:
    """Whether ``gspace`` is an escnn gspace on :math:`\\mathbb{R}^3` (any fiber group)."""
    return hasattr(gspace, "fibergroup") and getattr(gspace, "dimensionality", None) == 3


def fiber_table(gspace: Any) -> Dict[Matrix, Any]:
    """``{A(g): g}`` over the fiber group (checked once per gspace: :func:`check_volume_gspace`)."""
    table = _TABLES.get(gspace)
    if table is not None:
        return table
    if not is_volume_gspace(gspace):
        raise ValueError(
            f"expected an escnn gspace on R^3 (e.g. escnn.gspaces.octaOnR3()), got {gspace!r}; planar gspaces use "
            "GridElement / FlowGenerator"
        )
    G = gspace.fibergroup
    if G.continuous:
        raise ValueError(
            f"gspace {gspace.name} has the continuous fiber group {G}; volume flows are exact on the voxel grid and "
            f"need a finite group that maps it onto itself: {_SUPPORTED}"
        )
    table = {}
    for g in G.elements:
        a = _signed_permutation(gspace.basespace_action(g))
        if a is None:
            raise ValueError(
                f"gspace {gspace.name} has the element {g} whose action on R^3 is not a signed permutation, so it does "
                f"not map the voxel grid onto itself (e.g. a 45- or 120-degree-multiple rotation); use {_SUPPORTED}"
            )
        table[a] = g
    if len(table) != len(G.elements):  # the standard action of a subgroup of O(3) is faithful
        raise ValueError(f"gspace {gspace.name}: two fiber elements act alike on R^3")
    _TABLES[gspace] = table
    return table


def check_volume_gspace(gspace: Any) -> None:
    """Raise ``ValueError`` unless ``gspace`` is a 3D escnn gspace with a finite fiber group acting on the
    voxel grid exactly (every :math:`A(g)` a signed permutation).

    Example:
        >>> from escnn import gspaces
        >>> check_volume_gspace(gspaces.rot2dOnR3(4))  # quarter turns about z: fine (octaOnR3() too)
        >>> check_volume_gspace(gspaces.rot2dOnR3(8))
        Traceback (most recent call last):
        ...
        ValueError: gspace ... does not map the voxel grid onto itself ...
    """
    fiber_table(gspace)


def volume_matrix(gspace: Any, element: Any) -> Matrix:
    """:math:`A(g)` of a fiber element as an integer signed-permutation matrix (nested tuples).

    Raises:
        ValueError: when ``element`` is not an element of ``gspace.fibergroup`` or the gspace is not supported.
    """
    table = fiber_table(gspace)
    if getattr(element, "group", None) != gspace.fibergroup:
        raise ValueError(f"{element!r} is not an element of {gspace.name}'s fiber group {gspace.fibergroup}")
    a = _signed_permutation(gspace.basespace_action(element))
    if a is None or a not in table:
        raise ValueError(f"{element!r} does not act on R^3 as one of {gspace.name}'s signed permutations")
    return a


def quarter_turn_element(gspace: Any, axis: str, quarter_turns: int) -> Any:
    """The fiber element rotating by ``quarter_turns`` x 90 degrees about the coordinate ``axis``.

    Raises:
        ValueError: when the gspace's fiber group has no such rotation (e.g. a rotation about x on
            ``rot2dOnR3(4)``, which rotates about z only).

    Example:
        >>> from escnn import gspaces
        >>> gs = gspaces.rot2dOnR3(4)
        >>> quarter_turn_element(gs, "z", 1)
        1[2pi/4]
    """
    a = axis_rotation(axis, quarter_turns)
    table = fiber_table(gspace)
    if a not in table:
        raise ValueError(_missing_rotation(gspace, a))
    return table[a]


def _missing_rotation(gspace: Any, a: Matrix) -> str:
    vec = rotation_vector(a)
    have = sorted({rotation_vector(m) for m in fiber_table(gspace)} - {None, (0, 0, 0)})  # type: ignore[type-var]
    what = f"the rotation {vec} (quarter turns about x, y, z)" if vec is not None else f"the matrix {a}"
    return (f"gspace {gspace.name} has no element acting as {what}; its rotations about coordinate axes are "
            f"{have or 'none'}: use octaOnR3() for quarter turns about every axis")


def volume_shape(value: Any, what: str = "grid_shape") -> Triple:
    """``value`` as ``(D, H, W)`` ints if it is a triple of positive integers.

    Raises:
        ValueError: otherwise (naming ``what``).
    """
    try:
        d, h, w = value
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be a triple (D, H, W) of positive integers, got {value!r}") from None
    out = []
    for v, name in zip((d, h, w), "DHW"):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"{what} must be a triple (D, H, W) of positive integers, got {name}={v!r}")
        out.append(int(v))
    return tuple(out)  # type: ignore[return-value]


def _translation(translation: Any) -> Triple:
    if isinstance(translation, (str, bytes)) or not hasattr(translation, "__iter__"):
        raise TypeError(f"translation must be a triple (vx, vy, vz) of integer voxels, got "
                        f"{type(translation).__name__} {translation!r}")
    t = tuple(translation)
    if len(t) != 3:
        raise ValueError(f"translation must be a triple (vx, vy, vz) of integer voxels, got {translation!r}")
    advice = "volume flows move by whole voxels so that transport is exact; for other speeds resample the data"
    return tuple(whole_number(v, f"translation {a}", advice) for v, a in zip(t, "xyz"))  # type: ignore[return-value]


# -- pickling: escnn's gspaces hold local functions, so they are written as their subgroup id ----------------------
def gspace_recipe(gspace: Any) -> Tuple[Any, ...]:
    sg = tuple(gspace._sg_id)
    if sg and isinstance(sg[-1], _group.GroupElement):
        adj = sg[-1]
        if adj == adj.group.identity:
            sg = sg[:-1]
        else:
            flip, q = adj.value
            sg = sg[:-1] + (("__o3__", int(flip), [float(v) for v in np.asarray(q).reshape(-1)], adj.param),)
    return sg


def rebuild_gspace(recipe: Tuple[Any, ...]) -> Any:
    sg = tuple(recipe)
    if sg and isinstance(sg[-1], tuple) and sg[-1][:1] == ("__o3__",):
        _, flip, q, param = sg[-1]
        sg = sg[:-1] + (_group.o3_group().element((flip, np.asarray(q)), param),)
    return _gspaces.GSpace3D(sg if len(sg) > 1 else sg[0])


def _rebuild_element(recipe: Tuple[Any, ...], a: Matrix, u: Triple) -> "VolumeElement":
    return VolumeElement._make(rebuild_gspace(recipe), a, u)


def _rebuild_generator(recipe: Tuple[Any, ...], u: Triple, k: Triple) -> "VolumeGenerator":
    return VolumeGenerator(rebuild_gspace(recipe), u, k)


# -- elements -------------------------------------------------------------------------------------------------
class VolumeElement:
    """An element :math:`(u, g)` of :math:`\\mathbb{Z}^3 \\rtimes G` acting on voxel fields (immutable).

    The product, inverse and action are those of the planar :class:`~flow_escnn.flows._element.GridElement`,
    in 3D and in exact integers:

    .. math::
        (u_1, g_1)(u_2, g_2) = (u_1 + A(g_1)\\, u_2,\\; g_1 g_2), \\qquad
        [(u, g)\\cdot f](x) = \\rho(g)\\, f\\big(A(g)^{-1}(x - u)\\big),

    with :math:`A(g)` a signed permutation matrix and :math:`x` measured from the grid centre in
    the coordinates of this module's docstring (escnn's ``(-z, -y, x)`` voxel axes).

    Args:
        gspace: a 3D escnn gspace acting on the voxel grid exactly (:func:`check_volume_gspace`).
        g: an element of ``gspace.fibergroup`` (default: identity).
        translation: ``(ux, uy, uz)`` in whole voxels (any size: kept as Python ints).

    Raises:
        ValueError: for an unsupported gspace, a foreign fiber element or a non-integer translation.

    Example:
        >>> from escnn import gspaces
        >>> gs = gspaces.rot2dOnR3(4)  # C4 about z; octaOnR3() has quarter turns about x and y too
        >>> r = VolumeElement.from_matrix(gs, axis_rotation("z", 1), translation=(1, 0, 0))
        >>> (r @ r).exact_translation  # (1,0,0) + R_z (1,0,0) = (1,1,0)
        (1, 1, 0)
        >>> (r ** 4).is_identity, r.inverse().exact_translation  # -R_z^T (1,0,0)
        (True, (0, 1, 0))
    """

    __slots__ = ("_gspace", "_a", "_u")

    def __init__(self, gspace: Any, g: Any = None, translation: Sequence[int] = (0, 0, 0)) -> None:
        a = _IDENTITY if g is None else volume_matrix(gspace, g)
        fiber_table(gspace)
        self._gspace, self._a, self._u = gspace, a, _translation(translation)

    @classmethod
    def _make(cls, gspace: Any, a: Matrix, u: Triple) -> "VolumeElement":
        e = object.__new__(cls)
        e._gspace, e._a, e._u = gspace, a, u
        return e

    @classmethod
    def from_matrix(cls, gspace: Any, matrix: Any, translation: Sequence[int] = (0, 0, 0)) -> "VolumeElement":
        """The element :math:`(u, g)` with :math:`A(g)` = ``matrix`` (a signed permutation in the fiber group).

        Raises:
            ValueError: when no fiber element acts as ``matrix``.
        """
        a = _signed_permutation(matrix)
        if a is None:
            raise ValueError(f"matrix must be a 3x3 signed permutation matrix, got {np.asarray(matrix).tolist()!r}")
        if a not in fiber_table(gspace):
            raise ValueError(_missing_rotation(gspace, a))
        return cls._make(gspace, a, _translation(translation))

    @classmethod
    def identity(cls, gspace: Any) -> "VolumeElement":
        return cls(gspace)

    # -- accessors ----------------------------------------------------------------------------------------------
    @property
    def gspace(self) -> Any:
        return self._gspace

    @property
    def g(self) -> Any:
        """The fiber-group part :math:`g` (escnn's element)."""
        return fiber_table(self._gspace)[self._a]

    @property
    def translation(self) -> np.ndarray:
        """:math:`u` as a read-only float64 array ``[ux, uy, uz]`` (exact below 2**53; see :attr:`exact_translation`)."""
        u = np.array([float(v) for v in self._u], dtype=np.float64)
        u.setflags(write=False)
        return u

    @property
    def exact_translation(self) -> Triple:
        """:math:`u` as Python ints ``(ux, uy, uz)`` (exact at any size)."""
        return self._u

    @property
    def integer_matrix(self) -> Matrix:
        """:math:`A(g)` as nested Python ints."""
        return self._a

    @property
    def matrix(self) -> np.ndarray:
        """:math:`A(g)` as a read-only float64 3x3 array."""
        a = np.array(self._a, dtype=np.float64)
        a.setflags(write=False)
        return a

    def translation_mod(self, d: int, h: int, w: int) -> Triple:
        """:math:`u` reduced modulo the ``D x H x W`` torus: ``(ux mod W, uy mod H, uz mod D)`` (the same map
        of the torus, since :math:`A(g)` preserves the lattice)."""
        d, h, w = volume_shape((d, h, w))
        return (self._u[0] % w, self._u[1] % h, self._u[2] % d)

    @property
    def is_integral(self) -> bool:
        """Always True: every volume element maps the voxel grid onto itself."""
        return True

    @property
    def is_identity(self) -> bool:
        return self._a == _IDENTITY and self._u == (0, 0, 0)

    @property
    def rotation(self) -> Optional[Triple]:
        """The quarter-turn vector of :math:`A(g)` (:func:`rotation_vector`), None if it is not a rotation about
        a coordinate axis."""
        return rotation_vector(self._a)

    # -- group law ----------------------------------------------------------------------------------------------
    def _check_same(self, other: "VolumeElement") -> None:
        if other._gspace is not self._gspace and other._gspace != self._gspace:
            raise ValueError(f"cannot compose elements of different gspaces {self._gspace.name} and {other._gspace.name}")

    def __matmul__(self, other: "VolumeElement") -> "VolumeElement":
        """Group product :math:`(u_1 + A(g_1) u_2,\\; g_1 g_2)`."""
        if not isinstance(other, VolumeElement):
            return NotImplemented
        self._check_same(other)
        v = _apply(self._a, other._u)
        return VolumeElement._make(self._gspace, _mul(self._a, other._a),
                                   (self._u[0] + v[0], self._u[1] + v[1], self._u[2] + v[2]))

    def inverse(self) -> "VolumeElement":
        """:math:`(u, g)^{-1} = (-A(g)^{\\top} u,\\; g^{-1})` (:math:`A` orthogonal)."""
        at = _transpose(self._a)
        v = _apply(at, self._u)
        return VolumeElement._make(self._gspace, at, (-v[0], -v[1], -v[2]))

    def __invert__(self) -> "VolumeElement":
        return self.inverse()

    def __pow__(self, t: int) -> "VolumeElement":
        """:math:`(u, g)^t` for any integer ``t`` (square-and-multiply; negative powers use the inverse)."""
        if isinstance(t, bool) or int(t) != t:
            raise ValueError(f"powers of a group element need an integer exponent, got {t!r}")
        t = int(t)
        base = self if t >= 0 else self.inverse()
        result = VolumeElement._make(self._gspace, _IDENTITY, (0, 0, 0))
        n = abs(t)
        while n:
            if n & 1:
                result = result @ base
            base = base @ base
            n >>= 1
        return result

    def conjugate(self, h: "VolumeElement") -> "VolumeElement":
        """:math:`h\\,(u, g)\\,h^{-1}`."""
        return h @ self @ h.inverse()

    def commutes_with(self, other: "VolumeElement") -> bool:
        return (self @ other) == (other @ self)

    def act_on_points(self, points: np.ndarray) -> np.ndarray:
        """Apply :math:`x \\mapsto A(g) x + u` to centred points ``[..., 3]`` (``(x, y, z)``)."""
        return np.asarray(points, dtype=np.float64) @ self.matrix.T + self.translation

    # -- value semantics ----------------------------------------------------------------------------------------
    def __eq__(self, other: object) -> bool:
        if not isinstance(other, VolumeElement):
            return NotImplemented
        return self._a == other._a and self._u == other._u and (
            self._gspace is other._gspace or self._gspace == other._gspace)

    def __hash__(self) -> int:
        return hash((self._a, self._u))

    def __reduce__(self) -> Tuple[Any, Tuple[Any, ...]]:
        return (_rebuild_element, (gspace_recipe(self._gspace), self._a, self._u))

    def __copy__(self) -> "VolumeElement":
        return self

    def __deepcopy__(self, memo: Dict[int, Any]) -> "VolumeElement":
        return self

    def __repr__(self) -> str:
        rot = self.rotation
        g = f"rotation={rot}" if rot is not None else f"A={[list(r) for r in self._a]}"
        return f"VolumeElement(u={self._u}, {g})"


# -- generators -----------------------------------------------------------------------------------------------
class VolumeGenerator:
    """A volume flow generator :math:`\\nu = (u, r)` (immutable, hashable): an integer velocity and a
    rotation about a coordinate axis by whole quarter turns per frame, commuting with each other.

    It names the one-step element :math:`g_\\nu = (u, r) \\in \\mathbb{Z}^3 \\rtimes G` and the flow

    .. math::
        \\psi_t(\\nu) = g_\\nu^{\\,t} = (t\\,u,\\; r^t), \\qquad \\psi_s(\\nu)\\,\\psi_t(\\nu) = \\psi_{s+t}(\\nu),

    (:math:`r u = u` because the velocity lies along the rotation axis): a drift, a spin about the
    axis through the grid centre, or a screw motion along that axis.

    Args:
        gspace: a 3D escnn gspace acting on the voxel grid exactly (:func:`check_volume_gspace`).
        translation: integer voxels per frame ``(vx, vy, vz)``.
        rotation: quarter turns per frame about x, y, z, ``(kx, ky, kz)`` with at most one non-zero entry
            (right-handed, about the grid centre); ``(0, 0, 1)`` turns by +90 degrees about z per frame.

    Raises:
        ValueError: on non-integer entries, a rotation about two axes, a rotation the gspace lacks, or a
            velocity not along the rotation axis (then :math:`g_\\nu^t` would orbit a displaced axis; such
            generators do not commute with the pure flows the FERNN theorem pairs them with).

    Example:
        >>> from escnn import gspaces
        >>> gs = gspaces.rot2dOnR3(4)
        >>> nu = VolumeGenerator(gs, (0, 0, 2), (0, 0, 1))  # up 2 voxels along z, a quarter turn about z
        >>> nu.psi(3).exact_translation, nu.psi(4).rotation
        ((0, 0, 6), (0, 0, 0))
        >>> nu.velocity
        (0, 0, 2, 0, 0, 1)
    """

    __slots__ = ("_gspace", "_u", "_k")

    def __init__(self, gspace: Any, translation: Sequence[int] = (0, 0, 0), rotation: Sequence[int] = (0, 0, 0)) -> None:
        table = fiber_table(gspace)
        u = _translation(translation)
        k = _canonical_rotation(rotation)
        if k != (0, 0, 0):
            a = _rotation_matrix(k)
            if a not in table:
                raise ValueError(_missing_rotation(gspace, a))
            if _apply(a, u) != u:
                axis = AXES[next(i for i in range(3) if k[i])]
                raise ValueError(
                    f"velocity {u} is not along the rotation axis {axis} of rotation {k}: such a generator does not "
                    f"commute with its own translation part (its powers orbit a displaced axis). Give a velocity "
                    f"along {axis} (a screw motion), or separate generators for the drift and the spin"
                )
        self._gspace, self._u, self._k = gspace, u, k

    @classmethod
    def about(cls, gspace: Any, axis: str, quarter_turns: int, speed: int = 0) -> "VolumeGenerator":
        """The rotation by ``quarter_turns`` x 90 degrees per frame about ``axis``, moving ``speed`` voxels per
        frame along it.

        Example:
            >>> from escnn import gspaces
            >>> VolumeGenerator.about(gspaces.rot2dOnR3(4), "z", -1, speed=1).velocity
            (0, 0, 1, 0, 0, -1)
        """
        if axis not in AXES:
            raise ValueError(f"axis must be one of {AXES}, got {axis!r}")
        i = AXES.index(axis)
        unit = tuple(1 if j == i else 0 for j in range(3))
        s = whole_number(speed, "speed", "flows move by whole voxels per frame")
        q = whole_number(quarter_turns, "quarter_turns", "rotation flows turn by whole quarter turns per frame")
        return cls(gspace, tuple(s * e for e in unit), tuple(q * e for e in unit))

    @classmethod
    def from_element(cls, element: VolumeElement) -> "VolumeGenerator":
        """The generator whose one-step element is ``element``.

        Raises:
            ValueError: when :math:`A(g)` is not a rotation about a coordinate axis, or the translation is not
                along that axis.
        """
        k = element.rotation
        if k is None:
            raise ValueError(f"{element} is not a rotation about a coordinate axis (a reflection, or a rotation about "
                             "a diagonal); volume flow generators rotate about x, y or z")
        return cls(element.gspace, element.exact_translation, k)

    # -- accessors ----------------------------------------------------------------------------------------------
    @property
    def gspace(self) -> Any:
        return self._gspace

    @property
    def translation(self) -> Triple:
        """Voxels per frame ``(vx, vy, vz)``."""
        return self._u

    @property
    def rotation(self) -> Triple:
        """Quarter turns per frame ``(kx, ky, kz)`` (canonical: at most one non-zero, in ``{-1, 1, 2}``)."""
        return self._k

    @property
    def axis(self) -> Optional[str]:
        """The rotation axis (``"x"``, ``"y"``, ``"z"``), None for a pure translation."""
        return next((AXES[i] for i in range(3) if self._k[i]), None)

    @property
    def quarter_turns(self) -> int:
        """Signed quarter turns per frame about :attr:`axis` (0 for a pure translation)."""
        return next((k for k in self._k if k), 0)

    @property
    def angle(self) -> float:
        """Angular speed in radians per frame about :attr:`axis`."""
        return self.quarter_turns * math.pi / 2

    @property
    def velocity(self) -> Tuple[int, int, int, int, int, int]:
        """``(vx, vy, vz, kx, ky, kz)``."""
        return self._u + self._k  # type: ignore[return-value]

    @property
    def is_identity(self) -> bool:
        return self._u == (0, 0, 0) and self._k == (0, 0, 0)

    def element(self) -> VolumeElement:
        """The one-step element :math:`g_\\nu = (u, r)`."""
        return VolumeElement._make(self._gspace, _rotation_matrix(self._k), self._u)

    def psi(self, t: int) -> VolumeElement:
        """:math:`\\psi_t(\\nu) = g_\\nu^t = (t u, r^t)` (``t`` may be negative; exact at any size)."""
        if isinstance(t, bool) or int(t) != t:
            raise ValueError(f"psi_t needs an integer time t, got {t!r}")
        t = int(t)
        k = tuple(((v * t) % 4) for v in self._k)
        return VolumeElement._make(self._gspace, _rotation_matrix(k),  # type: ignore[arg-type]
                                   (self._u[0] * t, self._u[1] * t, self._u[2] * t))

    def period(self, grid_shape: Tuple[int, int, int]) -> int:
        """Smallest :math:`p \\ge 1` with :math:`\\psi_p(\\nu)` the identity map of the ``D x H x W`` torus:
        :math:`p = \\mathrm{lcm}(o, P)` for :math:`r` of order :math:`o` and :math:`P` the least common period
        of the translation components (:math:`n_a/\\gcd(u_a, n_a)` along an axis of size :math:`n_a`).

        Raises:
            ValueError: unless ``grid_shape`` is a triple of positive integers.
        """
        d, h, w = volume_shape(grid_shape)
        k = self.quarter_turns % 4
        order = 1 if k == 0 else (2 if k == 2 else 4)
        p = order
        for v, n in zip(self._u, (w, h, d)):
            q = n // math.gcd(v % n, n)
            p = p * q // math.gcd(p, q)
        return p

    # -- value semantics ----------------------------------------------------------------------------------------
    def __eq__(self, other: object) -> bool:
        if not isinstance(other, VolumeGenerator):
            return NotImplemented
        return self._u == other._u and self._k == other._k and (
            self._gspace is other._gspace or self._gspace == other._gspace)

    def __hash__(self) -> int:
        return hash(self._u + self._k)

    def __reduce__(self) -> Tuple[Any, Tuple[Any, ...]]:
        return (_rebuild_generator, (gspace_recipe(self._gspace), self._u, self._k))

    def __copy__(self) -> "VolumeGenerator":
        return self

    def __deepcopy__(self, memo: Dict[int, Any]) -> "VolumeGenerator":
        return self

    def __repr__(self) -> str:
        parts: List[str] = []
        if self._u != (0, 0, 0) or self._k == (0, 0, 0):
            parts.append(f"v={self._u}")
        if self._k != (0, 0, 0):
            parts.append(f"k={self.quarter_turns} about {self.axis} ({90 * self.quarter_turns} deg/frame)")
        return f"VolumeGenerator({', '.join(parts)})"
