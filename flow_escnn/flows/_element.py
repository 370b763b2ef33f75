"""Elements of the planar roto-translation group acting on grid fields.

A :class:`GridElement` is a pair :math:`(u, g)` of a translation :math:`u \\in \\mathbb{R}^2`
(pixels) and an element :math:`g` of the gspace's fiber group :math:`G`, i.e. an element
of :math:`\\mathbb{R}^2 \\rtimes G` with the semidirect-product law

.. math::
    (u_1, g_1)(u_2, g_2) = (u_1 + A(g_1)\\, u_2,\\; g_1 g_2), \\qquad
    (u, g)^{-1} = (-A(g)^{-1} u,\\; g^{-1}),

where :math:`A(g)` is ``gspace.basespace_action(g)``. It acts on a field
:math:`f : \\mathbb{R}^2 \\to \\mathbb{R}^c` of escnn type with representation :math:`\\rho` by

.. math::
    [(u, g) \\cdot f](x) = \\rho(g)\\, f\\big(A(g)^{-1} (x - u)\\big),

with :math:`x` measured from the grid centre (see :mod:`flow_escnn.flows._planar`).
Integer translations and signed-permutation :math:`A(g)` (multiples of 90 degrees,
the reflections) map the grid onto itself and are transported exactly; everything
else is interpolated (:mod:`flow_escnn.flows._transport`).
"""
from __future__ import annotations

import math
from typing import Any, Dict, Optional, Sequence, Tuple

import numpy as np

from flow_escnn._validate import positive_int
from flow_escnn.flows._planar import check_planar_gspace, spatial_matrix

__all__ = ["GridElement"]

_TOL = 1e-9


def _exact_ints(translation: Sequence[Any]) -> Optional[Tuple[int, int]]:
    """The translation as Python ints if every entry is integral (ints of any size, floats within
    ``_TOL`` of an integer, and every finite float of magnitude >= 2**53, which is an integer: the
    spacing of float64 there is at least 2), else None."""
    out = []
    for v in translation:
        if isinstance(v, (int, np.integer)) and not isinstance(v, bool):
            out.append(int(v))
            continue
        f = float(v)
        if not math.isfinite(f):
            return None
        if abs(f) >= 2.0**53:
            out.append(int(f))  # exact
        elif abs(f - round(f)) < _TOL:
            out.append(int(round(f)))
        else:
            return None
    return (out[0], out[1])


def _integer_matrix(a: np.ndarray) -> Optional[Tuple[Tuple[int, int], Tuple[int, int]]]:
    """``A`` as nested Python ints if it is a signed permutation (a grid-exact rotation/reflection)."""
    r = np.round(a)
    if np.all(np.abs(a - r) < _TOL) and np.all((r == 0) | (np.abs(r) == 1)) and np.all(np.abs(r).sum(0) == 1):
        return ((int(r[0, 0]), int(r[0, 1])), (int(r[1, 0]), int(r[1, 1])))
    return None


def _clean(v: np.ndarray) -> np.ndarray:
    r = np.round(v)
    return np.where(np.abs(v - r) < _TOL, r, v) + 0.0  # + 0.0 turns -0.0 into 0.0


class GridElement:
    """An element :math:`(u, g)` of :math:`\\mathbb{R}^2 \\rtimes G` (immutable).

    Args:
        gspace: a planar escnn gspace with a finite fiber group.
        g: an element of ``gspace.fibergroup`` (default: identity).
        translation: ``(ux, uy)`` in pixels, x along the last array axis, y up.

    Example:
        >>> import flow_escnn
        >>> from escnn import gspaces
        >>> e = flow_escnn.GridElement(gspaces.rot2dOnR2(4), translation=(2, -1))
        >>> (e @ e).translation, e.inverse().translation
        (array([ 4., -2.]), array([-2.,  1.]))
    """

    __slots__ = ("_gspace", "_g", "_u", "_a", "_exact")

    def __init__(self, gspace: Any, g: Any = None, translation: Sequence[float] = (0.0, 0.0)) -> None:
        check_planar_gspace(gspace)
        if g is None:
            g = gspace.fibergroup.identity
        elif getattr(g, "group", None) != gspace.fibergroup:
            raise ValueError(f"{g!r} is not an element of {gspace}'s fiber group {gspace.fibergroup}")
        u = np.asarray(translation, dtype=np.float64).reshape(-1)
        if u.shape != (2,) or not np.all(np.isfinite(u)):
            raise ValueError(f"translation must be two finite numbers (ux, uy), got {translation!r}")
        self._gspace = gspace
        self._g = g
        self._a = spatial_matrix(gspace, g)  # computed once: escnn's basespace_action is slow (~100 us)
        self._a.setflags(write=False)
        # integral translations are also kept as exact Python ints (any size): float64 holds integers
        # exactly only up to 2**53, and a flow's psi_t(nu) reaches t * |v| pixels
        self._exact = _exact_ints(translation)
        self._u = np.array(self._exact, dtype=np.float64) if self._exact is not None else _clean(u)
        self._u.setflags(write=False)

    # -- accessors -------------------------------------------------------------------------
    @property
    def gspace(self) -> Any:
        return self._gspace

    @property
    def g(self) -> Any:
        """The fiber-group part :math:`g`."""
        return self._g

    @property
    def translation(self) -> np.ndarray:
        """The translation part :math:`u` (read-only float64 array ``[ux, uy]``)."""
        return self._u

    @property
    def exact_translation(self) -> Optional[Tuple[int, int]]:
        """:math:`u` as exact Python integers when it is integral (any size), else None."""
        return self._exact

    def translation_mod(self, h: int, w: int) -> np.ndarray:
        """:math:`u` reduced exactly modulo the ``H x W`` torus (``u_x mod W``, ``u_y mod H``) for a
        grid-exact element (the same map of the torus), else :attr:`translation` (reducing it would
        change the map when :math:`A(g)` does not preserve the lattice).

        Raises:
            ValueError: unless ``h`` and ``w`` are positive integers.
        """
        h, w = positive_int(h, "h (torus height)"), positive_int(w, "w (torus width)")
        if self._exact is None or _integer_matrix(self._a) is None:
            return self._u
        return np.array([self._exact[0] % w, self._exact[1] % h], dtype=np.float64)

    @property
    def matrix(self) -> np.ndarray:
        """:math:`A(g)`, the 2x2 action of :math:`g` on planar coordinates (read-only)."""
        return self._a

    @property
    def is_integral(self) -> bool:
        """Whether :math:`u` is integral and :math:`A(g)` a signed permutation (grid-exact)."""
        a = self.matrix
        return bool(
            np.all(self._u == np.round(self._u))
            and np.all((a == 0) | (np.abs(a) == 1))
            and np.all(np.abs(a).sum(0) == 1)
        )

    @property
    def is_identity(self) -> bool:
        return bool(self._g == self._gspace.fibergroup.identity and np.all(self._u == 0))

    # -- group law --------------------------------------------------------------------------
    @classmethod
    def identity(cls, gspace: Any) -> "GridElement":
        return cls(gspace)

    def __matmul__(self, other: "GridElement") -> "GridElement":
        """Group product ``self @ other`` = :math:`(u_1 + A(g_1) u_2, g_1 g_2)`."""
        if not isinstance(other, GridElement):
            return NotImplemented
        if other._gspace != self._gspace:
            raise ValueError(f"cannot compose elements of different gspaces {self._gspace} and {other._gspace}")
        a = _integer_matrix(self._a)
        if a is not None and self._exact is not None and other._exact is not None:
            (ux, uy), (vx, vy) = self._exact, other._exact
            u: Any = (ux + a[0][0] * vx + a[0][1] * vy, uy + a[1][0] * vx + a[1][1] * vy)
        else:
            u = self._u + self.matrix @ other._u
        return GridElement(self._gspace, self._g @ other._g, u)

    def inverse(self) -> "GridElement":
        """:math:`(u, g)^{-1} = (-A(g)^{-1} u, g^{-1})`."""
        a = _integer_matrix(self._a)
        if a is not None and self._exact is not None:  # a signed permutation: A^{-1} = A^T
            ux, uy = self._exact
            return GridElement(self._gspace, ~self._g, (-(a[0][0] * ux + a[1][0] * uy), -(a[0][1] * ux + a[1][1] * uy)))
        return GridElement(self._gspace, ~self._g, -np.linalg.solve(self.matrix, self._u))

    def __invert__(self) -> "GridElement":
        return self.inverse()

    def __pow__(self, t: int) -> "GridElement":
        """:math:`(u, g)^t` for any integer ``t`` (negative powers use the inverse)."""
        if isinstance(t, bool) or int(t) != t:
            raise ValueError(f"powers of a group element need an integer exponent, got {t!r}")
        t = int(t)
        base = self if t >= 0 else self.inverse()
        result = GridElement.identity(self._gspace)
        power = base
        n = abs(t)
        while n:  # square-and-multiply; exact for the integral case
            if n & 1:
                result = result @ power
            power = power @ power
            n >>= 1
        return result

    def conjugate(self, h: "GridElement") -> "GridElement":
        """:math:`h\\, (u, g)\\, h^{-1}`."""
        return h @ self @ h.inverse()

    def commutes_with(self, other: "GridElement") -> bool:
        return (self @ other) == (other @ self)

    # -- action on points -------------------------------------------------------------------
    def act_on_points(self, points: np.ndarray) -> np.ndarray:
        """Apply :math:`x \\mapsto A(g) x + u` to centred planar points of shape ``[..., 2]``."""
        return np.asarray(points, dtype=np.float64) @ self.matrix.T + self._u

    # -- value semantics --------------------------------------------------------------------
    def __eq__(self, other: object) -> bool:
        if not isinstance(other, GridElement):
            return NotImplemented
        if self._gspace != other._gspace or self._g != other._g:
            return False
        if self._exact is not None and other._exact is not None:
            return self._exact == other._exact
        return bool(np.allclose(self._u, other._u, atol=_TOL, rtol=0.0))

    def __hash__(self) -> int:
        if self._exact is not None:
            return hash((self._g, self._exact))
        return hash((self._g, tuple(np.round(self._u, 6).tolist())))

    # -- pickling: through the construction spec (escnn's gspaces hold local functions) -----------
    def __reduce__(self) -> Tuple[Any, Tuple[Any]]:
        from flow_escnn.flows._spec import decode, encode  # the codec imports this module

        return (decode, (encode(self),))

    def __copy__(self) -> "GridElement":
        return self  # immutable

    def __deepcopy__(self, memo: Dict[int, Any]) -> "GridElement":
        return self

    def __repr__(self) -> str:
        ux, uy = (float(v) for v in self._u)
        fmt = lambda v: str(int(v)) if v == int(v) and abs(v) < 1e15 else f"{v:.4g}"  # noqa: E731
        return f"GridElement(u=({fmt(ux)}, {fmt(uy)}), g={self._g})"

