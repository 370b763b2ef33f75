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

with :math:`x` measured from the grid centre (see :mod:`flow_escnn.flows.gspace_utils`).
Integer translations and signed-permutation :math:`A(g)` (multiples of 90 degrees,
the reflections) map the grid onto itself and are transported exactly; everything
else is interpolated (:mod:`flow_escnn.flows.transport`).
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from flow_escnn.flows.gspace_utils import check_planar_gspace, spatial_matrix

__all__ = ["GridElement"]

_TOL = 1e-9


def _clean(v: np.ndarray) -> np.ndarray:
    r = np.round(v)
    return np.where(np.abs(v - r) < _TOL, r, v) + 0.0  # + 0.0 turns -0.0 into 0.0


class GridElement:
    """An element :math:`(u, g)` of :math:`\\mathbb{R}^2 \\rtimes G` (immutable).

    Args:
        gspace: a planar escnn gspace with a finite fiber group.
        g: an element of ``gspace.fibergroup`` (default: identity).
        translation: ``(ux, uy)`` in pixels, x along the last array axis, y up.
    """

    __slots__ = ("_gspace", "_g", "_u", "_a")

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
        self._u = _clean(u)
        self._u.setflags(write=False)
        self._a = spatial_matrix(gspace, g)  # computed once: escnn's basespace_action is slow (~100 us)
        self._a.setflags(write=False)

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
        return GridElement(self._gspace, self._g @ other._g, self._u + self.matrix @ other._u)

    def inverse(self) -> "GridElement":
        """:math:`(u, g)^{-1} = (-A(g)^{-1} u, g^{-1})`."""
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
        return (
            self._gspace == other._gspace
            and self._g == other._g
            and bool(np.allclose(self._u, other._u, atol=_TOL, rtol=0.0))
        )

    def __hash__(self) -> int:
        return hash((self._g, tuple(np.round(self._u, 6).tolist())))

    def __repr__(self) -> str:
        ux, uy = (float(v) for v in self._u)
        fmt = lambda v: str(int(v)) if v == int(v) else f"{v:.4g}"  # noqa: E731
        return f"GridElement(u=({fmt(ux)}, {fmt(uy)}), g={self._g})"

