"""Flow generators: one-step elements :math:`g_\\nu` whose powers form a flow.

A generator (a *velocity*) :math:`\\nu = (u, k)` pairs an integer translation
:math:`u = (v_x, v_y)` (pixels per frame) with a rotation of :math:`k` steps of
:math:`2\\pi/N` per frame about the grid centre (on SO(2) / O(2): :math:`k` degrees per
frame, any rational number; see :func:`~flow_escnn.flows._planar.steps_per_turn`). It
names the one-step element :math:`g_\\nu = (u, r^k) \\in \\mathbb{Z}^2 \\rtimes G` and the discrete flow

.. math::
    \\psi_t(\\nu) = g_\\nu^{\\,t}, \\qquad \\psi_s(\\nu)\\,\\psi_t(\\nu) = \\psi_{s+t}(\\nu),

the time-``t`` map of the one-parameter subgroup :math:`\\exp(t\\nu)`. For a pure
translation :math:`\\psi_t(\\nu) = (t u, e)`; for a pure rotation :math:`(0, r^{tk})`;
a mixed generator composes by the semidirect law of
:class:`~flow_escnn.flows._element.GridElement`.

:func:`flow_parts` is the same :math:`\\psi_t(\\nu)` in closed form and floating point, for
data velocities at *any* angle (the data generators draw them); a test checks it against
:meth:`FlowGenerator.psi` where both apply.
"""
from __future__ import annotations

import functools
import math
from fractions import Fraction
from typing import Any, Dict, Optional, Sequence, Tuple, Union

import torch

from flow_escnn._validate import grid_shape as check_grid_shape
from flow_escnn.flows._element import GridElement
from flow_escnn.flows._planar import (
    as_steps,
    is_continuous,
    rotation_element,
    rotation_steps,
    steps_per_turn,
    whole_number,
)

__all__ = ["FlowGenerator", "flow_parts"]


def flow_parts(velocities: torch.Tensor, num_frames: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """:math:`\\psi_t(\\nu) = (u_t, R_\\omega^{\\,t})` for ``t = 0 .. T-1`` of data velocities at any angle.

    With :math:`\\nu = (u, R_\\omega)`, the semidirect law gives

    .. math::
        u_t = \\sum_{s<t} R_\\omega^{\\,s} u, \\qquad \\theta_t = t\\,\\omega,

    in float64 (angles reduced modulo 360 degrees before the trigonometry).

    Args:
        velocities: ``[..., 3]`` rows ``(vx, vy, degrees_per_frame)`` (x right, y up).
        num_frames: ``T``.

    Returns:
        ``(u_t [..., T, 2], theta_t [..., T])``: the translation part in pixels and the rotation
        angle in degrees.
    """
    v = velocities.to(torch.float64)
    t = torch.arange(int(num_frames), dtype=torch.float64)
    theta = t * v[..., 2:3]  # [..., T]
    rad = torch.remainder(theta, 360.0) * (math.pi / 180.0)
    c, s = torch.cos(rad), torch.sin(rad)
    ux, uy = v[..., 0:1], v[..., 1:2]
    steps = torch.stack([c * ux - s * uy, s * ux + c * uy], -1)  # R^s u, [..., T, 2]
    return torch.cumsum(steps, dim=-2) - steps, theta  # exclusive prefix sum: sum_{s<t} R^s u


def _as_int(value: Any, what: str) -> int:
    return whole_number(value, what, "flows move by whole pixels per frame so that transport is exact; for other "
                                     "speeds resample the data")


class FlowGenerator:
    """A velocity :math:`\\nu = (v_x, v_y, k)` on a gspace (immutable, hashable).

    Args:
        gspace: a planar escnn gspace with a finite fiber group.
        translation: integer pixels per frame ``(vx, vy)``; x along the last array axis,
            y up (so ``(1, 0)`` moves content one column right per frame).
        rotation: integer rotation steps of ``2*pi/N`` per frame (counter-clockwise); on SO(2) /
            O(2) degrees per frame (an int, a ``Fraction``, or a float read as its decimal).

    Raises:
        ValueError: on non-integer translations or (finite groups) rotation steps.

    Example:
        >>> import flow_escnn
        >>> from escnn import gspaces
        >>> nu = flow_escnn.FlowGenerator(gspaces.rot2dOnR2(4), (1, 0), 1)  # one pixel right, then a quarter turn
        >>> nu.psi(2)  # psi_2 = g_nu g_nu = (u + r u, r^2)
        GridElement(u=(1, 1), g=2[2pi/4])
        >>> nu.psi(4).is_identity  # four quarter turns: back where it started
        True
    """

    __slots__ = ("_gspace", "_vx", "_vy", "_k")

    def __init__(self, gspace: Any, translation: Sequence[int] = (0, 0), rotation: int = 0) -> None:
        n = steps_per_turn(gspace)
        if len(tuple(translation)) != 2:
            raise ValueError(f"translation must be a pair (vx, vy), got {translation!r}")
        self._gspace = gspace
        self._vx = _as_int(translation[0], "translation vx")
        self._vy = _as_int(translation[1], "translation vy")
        k = as_steps(gspace, rotation, "rotation (in steps of 2*pi/N; degrees on SO(2)/O(2))")
        if n == 1 and k != 0:
            raise ValueError(f"gspace {gspace} has no rotations, but rotation={rotation} steps was requested")
        self._k = k

    @classmethod
    def from_angle(cls, gspace: Any, angle: float, translation: Sequence[int] = (0, 0)) -> "FlowGenerator":
        """Build a generator from an angular velocity in radians per frame.

        Raises:
            TypeError: when ``angle`` is not a real number.
            ValueError: when ``angle`` is not finite, or not a multiple of ``2*pi/N`` (within 1e-9 rad); on
                SO(2) / O(2) any finite angle is taken (as the nearest fraction of a degree with denominator up
                to 10**6).
        """
        not_real = f"angle must be a real number of radians per frame, got {type(angle).__name__} {angle!r}"
        if isinstance(angle, (bool, str, bytes)):
            raise TypeError(not_real)
        try:
            angle = float(angle)
        except (TypeError, ValueError):
            raise TypeError(not_real) from None
        if not math.isfinite(angle):
            raise ValueError(f"angle must be a finite number of radians per frame, got {angle!r}")
        if is_continuous(gspace):
            return cls(gspace, translation, Fraction(math.degrees(angle)).limit_denominator(10**6))
        n = steps_per_turn(gspace)
        steps = angle * n / (2 * math.pi)
        if abs(steps - round(steps)) > 1e-9 * max(1.0, n):
            raise ValueError(
                f"angle {angle} rad ({math.degrees(angle):.6g} deg) is not a multiple of 2*pi/{n} "
                f"({360 / n:.6g} deg) on gspace {gspace}; pick a multiple or a gspace whose N it divides"
            )
        return cls(gspace, translation, int(round(steps)))

    @classmethod
    def from_element(cls, element: GridElement) -> "FlowGenerator":
        """The generator whose one-step element is ``element``.

        Raises:
            ValueError: when ``element`` has a non-integer translation or a reflection.
        """
        k = rotation_steps(element.gspace, element.g)
        n = steps_per_turn(element.gspace)
        if k > n // 2:  # represent rotations by the smallest angle, in (-pi, pi]
            k -= n
        return cls(element.gspace, tuple(float(v) for v in element.translation), k)

    # -- accessors ----------------------------------------------------------------------------
    @property
    def gspace(self) -> Any:
        return self._gspace

    @property
    def translation(self) -> Tuple[int, int]:
        return (self._vx, self._vy)

    @property
    def rotation(self) -> Union[int, Fraction]:
        """Rotation steps of ``2*pi/N`` per frame (degrees on SO(2) / O(2))."""
        return self._k

    @property
    def angle(self) -> float:
        """Angular velocity in radians per frame."""
        return float(2 * math.pi * Fraction(self._k) / steps_per_turn(self._gspace))

    @property
    def velocity(self) -> Tuple[int, int, Union[int, Fraction]]:
        """``(vx, vy, k)``."""
        return (self._vx, self._vy, self._k)

    @property
    def is_identity(self) -> bool:
        return self.element().is_identity

    def element(self) -> GridElement:
        """The one-step element :math:`g_\\nu = (u, r^k)`."""
        return GridElement(self._gspace, rotation_element(self._gspace, self._k), (self._vx, self._vy))

    def period(self, grid_shape: Tuple[int, int]) -> Optional[int]:
        """Smallest :math:`p \\ge 1` with :math:`\\psi_p(\\nu)` the identity map of the ``H x W`` torus.

        With :math:`r^k` of order :math:`o`, :math:`g_\\nu^{o}` is a pure translation (zero when
        :math:`o > 1`, since :math:`\\sum_{s<o} r^{sk} = 0`), so
        :math:`p = o \\cdot \\mathrm{lcm}(W/\\gcd(u_x, W),\\, H/\\gcd(u_y, H))` for its translation
        :math:`u`. Then :math:`\\psi_{t+p}(\\nu) = \\psi_t(\\nu)` on the torus, which lets per-time
        transport tables be reused periodically. None if that translation is not integral.

        Raises:
            ValueError: unless ``grid_shape`` is a pair of positive integers.
        """
        return _cached_period(self, *check_grid_shape(grid_shape))

    def _period(self, h: int, w: int) -> Optional[int]:
        turns = Fraction(self._k) / steps_per_turn(self._gspace)
        order = (turns - math.floor(turns)).denominator  # r^k has order q for k/N = p/q of a turn
        exact = (self.element() ** order).exact_translation
        if exact is None:
            return None
        ux, uy = exact
        px = w // math.gcd(ux % w, w)
        py = h // math.gcd(uy % h, h)
        return order * (px * py // math.gcd(px, py))

    def psi(self, t: int) -> GridElement:
        """:math:`\\psi_t(\\nu) = g_\\nu^t` (``t`` may be negative)."""
        return self.element() ** t

    # -- value semantics -----------------------------------------------------------------------
    def _canonical(self) -> Tuple[int, int, Union[int, Fraction]]:
        return (self._vx, self._vy, self._k % steps_per_turn(self._gspace))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, FlowGenerator):
            return NotImplemented
        return self._gspace == other._gspace and self._canonical() == other._canonical()

    def __hash__(self) -> int:
        return hash(self._canonical())

    # -- pickling: through the construction spec (escnn's gspaces hold local functions) -----------
    def __reduce__(self) -> Tuple[Any, Tuple[Any]]:
        from flow_escnn.flows._spec import decode, encode  # the codec imports this module

        return (decode, (encode(self),))

    def __copy__(self) -> "FlowGenerator":
        return self  # immutable

    def __deepcopy__(self, memo: Dict[int, Any]) -> "FlowGenerator":
        return self

    def __repr__(self) -> str:
        parts = []
        if (self._vx, self._vy) != (0, 0) or self._k == 0:
            parts.append(f"v=({self._vx}, {self._vy})")
        if self._k:
            parts.append(f"k={self._k} ({math.degrees(self.angle):.4g} deg/frame)")
        return f"FlowGenerator({', '.join(parts)})"


@functools.lru_cache(maxsize=4096)
def _cached_period(generator: FlowGenerator, h: int, w: int) -> Optional[int]:
    """:meth:`FlowGenerator.period`, cached (generators are immutable values): a co-moving layer asks for the period of
    its flows on every forward pass, and composing the elements took milliseconds."""
    return generator._period(h, w)
