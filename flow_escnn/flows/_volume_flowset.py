"""VolumeFlowSet: the ordered set :math:`V` of volume flow generators a 3D FERNN is lifted over.

The same algebra as :class:`~flow_escnn.flows._flowset.FlowSet` (of which it is a subclass:
``FlowSet(gspace_3d, ...)``, ``FlowSet.translations(gspace_3d, R)`` and ``FlowSet.rotations(gspace_3d, K)``
build one), on the generators :class:`~flow_escnn.flows._volume.VolumeGenerator` of a 3D gspace:

* **Static action.** A fiber element :math:`g` conjugates flows,
  :math:`g\\,\\psi_t(\\nu)\\,g^{-1} = \\psi_t(g\\cdot\\nu)`, with
  :math:`g\\cdot(u, \\kappa) = (A(g)\\,u,\\; \\det A(g)\\, A(g)\\,\\kappa)` for the velocity :math:`u` and the
  quarter-turn (axis-angle) vector :math:`\\kappa` (a pseudo-vector: a reflection reverses the turn).
  :meth:`~flow_escnn.flows._flowset.FlowSet.action_permutation` gives the permutation of the V axis that
  relabels a lifted state.
* **Flow shift.** :math:`\\nu\\ominus\\mu`, the generator of :math:`g_\\mu^{-1} g_\\nu`, for commuting
  :math:`g_\\mu, g_\\nu` (:meth:`VolumeFlowSet.shift_indices`).

Velocities are the 6-tuples ``(vx, vy, vz, kx, ky, kz)``; a triple ``(vx, vy, vz)`` is a pure translation.
"""
from __future__ import annotations

from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

from flow_escnn.flows._flowset import MAX_FLOWS, FlowSet, non_negative_int
from flow_escnn.flows._volume import (
    AXES,
    VolumeElement,
    VolumeGenerator,
    fiber_table,
    gspace_recipe,
    rebuild_gspace,
    axis_rotation,
    volume_shape,
)

__all__ = ["VolumeFlowSet"]

Velocity6 = Tuple[int, int, int, int, int, int]


def _rebuild_flowset(recipe: Tuple[Any, ...], velocities: List[Velocity6]) -> "VolumeFlowSet":
    return VolumeFlowSet(rebuild_gspace(recipe), velocities)


class VolumeFlowSet(FlowSet):
    """An ordered, duplicate-free set :math:`V` of volume flow generators on one 3D gspace.

    Args:
        gspace: a 3D escnn gspace acting on the voxel grid exactly
            (:func:`~flow_escnn.flows._volume.check_volume_gspace`).
        generators: :class:`~flow_escnn.flows._volume.VolumeGenerator` s or velocity tuples
            ``(vx, vy, vz)`` / ``(vx, vy, vz, kx, ky, kz)``; their order is the order of the V axis.

    Raises:
        ValueError: on an empty set, duplicates, or generators of another gspace.

    Example:
        >>> from escnn import gspaces
        >>> V = FlowSet.translations(gspaces.rot2dOnR3(4), 1)  # a VolumeFlowSet: the 27 velocities of [-1, 1]^3
        >>> type(V).__name__, len(V), V.velocities[:2]
        ('VolumeFlowSet', 27, [(-1, -1, -1, 0, 0, 0), (-1, -1, 0, 0, 0, 0)])
        >>> V.is_closed_under()  # closed under the quarter turns about z (and under octaOnR3's 24 rotations)
        True
    """

    __slots__ = ()

    def __init__(self, gspace: Any, generators: Iterable[Any]) -> None:
        fiber_table(gspace)  # checks the gspace
        if generators is None or isinstance(generators, (str, bytes)) or not hasattr(generators, "__iter__"):
            raise TypeError(
                "generators must be an iterable of velocities (vx, vy, vz) / (vx, vy, vz, kx, ky, kz) or "
                f"VolumeGenerators, got {type(generators).__name__} {generators!r}"
            )
        gens: List[VolumeGenerator] = []
        for v in generators:
            gens.append(self.as_generator(gspace, v))
            if len(gens) > MAX_FLOWS:
                raise ValueError(
                    f"a FlowSet holds at most {MAX_FLOWS} velocities (every one is a slice of the hidden state); "
                    "on a D x H x W torus only D*H*W translation flows are distinct"
                )
        if not gens:
            raise ValueError("a FlowSet needs at least one generator (use FlowSet.identity(gspace) for none)")
        index: Dict[VolumeGenerator, int] = {}
        for i, g in enumerate(gens):
            if g in index:
                raise ValueError(f"duplicate generator {g} at positions {index[g]} and {i}")
            index[g] = i
        self._gspace = gspace
        self._gens = tuple(gens)  # type: ignore[assignment]
        self._index = index  # type: ignore[assignment]

    @staticmethod
    def as_generator(gspace: Any, v: Any) -> VolumeGenerator:  # type: ignore[override]
        """``v`` as a :class:`~flow_escnn.flows._volume.VolumeGenerator` on ``gspace``: a generator (of that
        gspace) as is, ``(vx, vy, vz)`` as a translation, ``(vx, vy, vz, kx, ky, kz)`` as the generator it names."""
        if isinstance(v, VolumeGenerator):
            if v.gspace != gspace:
                raise ValueError(f"generator {v} belongs to gspace {v.gspace.name}, not {gspace.name}")
            return v
        if isinstance(v, (str, bytes)) or not hasattr(v, "__iter__"):
            raise TypeError(
                f"a volume velocity is a tuple (vx, vy, vz) or (vx, vy, vz, kx, ky, kz) of integers or a "
                f"VolumeGenerator, got {type(v).__name__} {v!r}"
            )
        t = tuple(v)
        if len(t) == 3:
            return VolumeGenerator(gspace, t)
        if len(t) == 6:
            return VolumeGenerator(gspace, t[:3], t[3:])
        raise ValueError(
            f"a volume velocity is (vx, vy, vz) (voxels per frame) or (vx, vy, vz, kx, ky, kz) (and quarter turns per "
            f"frame about x, y, z), got {v!r}"
        )

    # -- constructors -------------------------------------------------------------------------------------------
    @classmethod
    def translations(cls, gspace: Any, radius: int) -> "VolumeFlowSet":  # type: ignore[override]
        """All integer velocities with :math:`\\max(|v_x|, |v_y|, |v_z|) \\le` ``radius``: :math:`(2r+1)^3` of
        them, ordered lexicographically by ``(vx, vy, vz)``.

        Raises:
            TypeError: for a ``radius`` that is not a number.
            ValueError: for a negative or fractional ``radius``, or one with too many velocities.
        """
        r = non_negative_int(radius, "radius")
        if (2 * r + 1) ** 3 > MAX_FLOWS:
            raise ValueError(
                f"radius {r} gives {(2 * r + 1) ** 3} velocities, more than a FlowSet holds ({MAX_FLOWS}); on a "
                "D x H x W torus only D*H*W translation flows are distinct"
            )
        span = range(-r, r + 1)
        return cls(gspace, [(vx, vy, vz) for vx in span for vy in span for vz in span])

    @classmethod
    def rotations(cls, gspace: Any, steps: Any, axes: Optional[str] = None) -> "VolumeFlowSet":  # type: ignore[override]
        """Rotation flows about the grid centre by ``k`` quarter turns per frame about each axis of ``axes``.

        Args:
            gspace: the 3D gspace.
            steps: quarter turns per frame, a list (e.g. ``[-1, 0, 1]``) or an integer ``K`` for ``-K..K``
                (``K <= 1``: a turn has four quarters).
            axes: the coordinate axes, e.g. ``"xyz"`` or ``"z"``; default: every axis about which the
                gspace has all the rotations asked for (``"xyz"`` on ``octaOnR3``, ``"z"`` on ``rot2dOnR3(4)``).

        The identity (``k = 0``) appears once, first where it occurs; the half turn ``k = 2`` is the same
        about :math:`a` and :math:`-a`.

        Raises:
            ValueError: for steps that wrap around, an unknown axis, or rotations the gspace lacks.

        Example:
            >>> from escnn import gspaces
            >>> FlowSet.rotations(gspaces.rot2dOnR3(4), 1).velocities  # on octaOnR3(): 7, about x, y and z
            [(0, 0, 0, 0, 0, -1), (0, 0, 0, 0, 0, 0), (0, 0, 0, 0, 0, 1)]
        """
        ks = _quarter_steps(steps)
        chosen = _axes(gspace, axes, ks)
        return cls(gspace, _unique((0, 0, 0) + _along(a, k) for a in chosen for k in ks))

    @classmethod
    def screws(cls, gspace: Any, radius: int, steps: Any, axes: Optional[str] = None) -> "VolumeFlowSet":
        """Screw flows: every velocity :math:`v\\,e_a` along an axis (:math:`|v| \\le` ``radius``) with every
        rotation of ``steps`` about that axis (the translations and rotations that commute).

        Example:
            >>> from escnn import gspaces
            >>> len(VolumeFlowSet.screws(gspaces.rot2dOnR3(4), 1, 1))  # vz in -1..1 times k in -1..1 about z
            9
        """
        r = non_negative_int(radius, "radius")
        ks = _quarter_steps(steps)
        chosen = _axes(gspace, axes, ks)
        return cls(gspace, _unique(_along(a, v) + _along(a, k) for a in chosen for k in ks for v in range(-r, r + 1)))

    @classmethod
    def roto_translations(cls, gspace: Any, radius: int, steps: Any = None) -> "VolumeFlowSet":  # type: ignore[override]
        """Refused in 3D: a translation commutes with a rotation only along its axis (use :meth:`screws`).

        Raises:
            ValueError: always, naming the alternatives.
        """
        raise ValueError(
            "in 3D a velocity commutes with a rotation only along the rotation axis, so the product set of "
            "translations and rotations has no generators for most pairs: use FlowSet.translations(gs, R), "
            "FlowSet.rotations(gs, K) or VolumeFlowSet.screws(gs, R, K)"
        )

    # -- group action -------------------------------------------------------------------------------------------
    def act(self, g: Any, velocity: Any) -> VolumeGenerator:  # type: ignore[override]
        """:math:`g\\cdot\\nu`, the generator of :math:`g\\,g_\\nu\\,g^{-1}` (``g`` a fiber element)."""
        h = VolumeElement(self._gspace, g)
        nu = self.as_generator(self._gspace, velocity)
        return VolumeGenerator.from_element(nu.element().conjugate(h))

    # -- flow shift ---------------------------------------------------------------------------------------------
    def difference(self, velocity: Any, mu: Any) -> Optional[VolumeGenerator]:  # type: ignore[override]
        """:math:`\\nu \\ominus \\mu`, the generator of :math:`g_\\mu^{-1} g_\\nu`; None when they do not commute
        or the difference is not a volume generator."""
        gn = self.as_generator(self._gspace, velocity).element()
        gm = self.as_generator(self._gspace, mu).element()
        if not gm.commutes_with(gn):
            return None
        try:
            return VolumeGenerator.from_element(gm.inverse() @ gn)
        except ValueError:
            return None

    def _key(self, g: VolumeGenerator, shape: Optional[Tuple[int, int, int]]) -> Velocity6:
        v = g.velocity
        if shape is None:
            return v
        d, h, w = shape
        return (v[0] % w, v[1] % h, v[2] % d) + v[3:]  # type: ignore[return-value]

    def shift_indices(self, mu: Any, periodic_grid: Optional[Tuple[int, int, int]] = None) -> np.ndarray:  # type: ignore[override]
        """Source indices of the V-shift by ``mu``: ``src[i] = index(V[i] - mu)``, or -1 (no exact prediction).

        Args:
            mu: the input flow.
            periodic_grid: ``(D, H, W)`` of a periodic grid: velocities are then matched modulo the torus.

        Raises:
            ValueError: when two generators of V coincide on the given torus.
        """
        shape = None if periodic_grid is None else volume_shape(periodic_grid, "periodic_grid")
        lookup: Dict[Velocity6, int] = {}
        for i, nu in enumerate(self._gens):
            key = self._key(nu, shape)  # type: ignore[arg-type]
            if key in lookup:
                raise ValueError(
                    f"flows {self._gens[lookup[key]].velocity} and {nu.velocity} of V coincide on the periodic grid "
                    f"{periodic_grid}; use a smaller radius or a larger grid"
                )
            lookup[key] = i
        src = np.full(len(self), -1, dtype=np.int64)
        for i, nu in enumerate(self._gens):
            diff = self.difference(nu, mu)
            if diff is not None and self._key(diff, shape) in lookup:
                src[i] = lookup[self._key(diff, shape)]
        return src

    def check_distinct_on(self, grid_shape: Tuple[int, int, int]) -> None:  # type: ignore[override]
        """Raise ``ValueError`` when two velocities of V are the same flow on the ``D x H x W`` torus."""
        shape = volume_shape(grid_shape)
        seen: Dict[Velocity6, Velocity6] = {}
        for g in self._gens:
            key = self._key(g, shape)  # type: ignore[arg-type]
            if key in seen:
                d, h, w = shape
                raise ValueError(
                    f"V has {len(self)} velocities but {seen[key]} and {g.velocity} are the same flow on a {d}x{h}x{w} "
                    f"torus: use a translation radius below {min(shape) / 2:g} or a larger grid"
                )
            seen[key] = g.velocity

    # -- pickling -------------------------------------------------------------------------------------------------
    def __reduce__(self) -> Tuple[Any, Tuple[Any, ...]]:
        return (_rebuild_flowset, (gspace_recipe(self._gspace), self.velocities))

    def __repr__(self) -> str:
        vs = self.velocities
        shown = ", ".join("(" + ", ".join(str(c) for c in v) + ")" for v in vs[:4]) + (", ..." if len(vs) > 4 else "")
        return f"VolumeFlowSet({self._gspace.fibergroup}, |V|={len(vs)}: [{shown}])"


def _along(axis: str, value: int) -> Tuple[int, int, int]:
    i = AXES.index(axis)
    return tuple(value if j == i else 0 for j in range(3))  # type: ignore[return-value]


def _unique(velocities: Iterable[Sequence[int]]) -> List[Velocity6]:
    """Canonical velocities in first-occurrence order (a half turn about -a is the one about a)."""
    out: Dict[Velocity6, None] = {}
    for v in velocities:
        k = tuple(v[3:])
        canon = next(((0, 0, 0)[:i] + (2,) + (0, 0, 0)[i + 1:] for i in range(3) if k[i] % 4 == 2), k)
        out.setdefault(tuple(v[:3]) + tuple(canon), None)  # type: ignore[arg-type]
    return list(out)


def _quarter_steps(steps: Any) -> List[int]:
    if isinstance(steps, (int, np.integer)) and not isinstance(steps, bool):
        k = non_negative_int(steps, "the number of quarter-turn steps K (for the steps -K..K)")
        if k > 1:
            raise ValueError(
                f"K={k} gives the steps -{k}..{k} quarter turns per frame, but a turn has four quarters, so some of "
                "them are the same rotation: use K <= 1, or pass the list of steps (e.g. [-1, 0, 1, 2])"
            )
        return list(range(-k, k + 1))
    if isinstance(steps, (str, bytes)) or not hasattr(steps, "__iter__"):
        raise TypeError(
            f"steps must be a list of quarter turns per frame, e.g. [-1, 0, 1], or an integer K for the steps -K..K, "
            f"got {type(steps).__name__} {steps!r}"
        )
    return list(steps)


def _axes(gspace: Any, axes: Optional[str], steps: List[int]) -> str:
    table = fiber_table(gspace)
    if axes is not None:
        if not isinstance(axes, str) or not axes or any(a not in AXES for a in axes) or len(set(axes)) != len(axes):
            raise ValueError(f"axes must be a string of distinct coordinate axes out of 'xyz', e.g. 'z', got {axes!r}")
        return axes
    chosen = "".join(a for a in AXES if all(axis_rotation(a, k) in table for k in steps))
    if not chosen:
        raise ValueError(
            f"gspace {gspace.name} has none of the rotations {steps} (quarter turns) about any coordinate axis; use "
            "octaOnR3() for quarter turns about x, y and z, or rot2dOnR3(4) about z"
        )
    return chosen
