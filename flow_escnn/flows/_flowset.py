"""FlowSet: the ordered finite set :math:`V` of flow generators a FERNN is lifted over.

Two pieces of algebra on :math:`V` drive every commuting diagram in the package:

* **Static action.** A fiber-group element :math:`g` (rotation/reflection about the
  grid centre) conjugates flows, :math:`g\\,\\psi_t(\\nu)\\,g^{-1} = \\psi_t(g\\cdot\\nu)`
  with :math:`g\\cdot\\nu` the generator of :math:`g\\,g_\\nu\\,g^{-1}` (for a translation
  velocity: :math:`A(g)\\,u`; for a rotation: unchanged, or reversed by a reflection).
  It acts on a lifted state by :math:`(g\\cdot h)(\\nu) = g\\cdot h(g^{-1}\\cdot\\nu)`,
  exact only if :math:`V` is closed under :math:`G` (:meth:`FlowSet.action_permutation`).
* **Flow shift.** An input flow :math:`\\mu` acts on a lifted state by
  :math:`h'_t(\\nu) = \\psi_t(\\mu)\\cdot h_t(\\nu \\ominus \\mu)` with
  :math:`\\nu \\ominus \\mu` the generator of :math:`g_\\mu^{-1} g_\\nu`
  (:math:`u_\\nu - u_\\mu` for translations, :math:`k_\\nu - k_\\mu` for rotations).
  The FERNN theorem needs :math:`g_\\mu` to commute with :math:`g_\\nu`; pairs that
  do not, or whose difference leaves :math:`V`, have no prediction
  (:meth:`FlowSet.shift_indices`).
"""
from __future__ import annotations

import math
from typing import Any, Dict, Iterable, Iterator, List, Optional, Tuple, Union

import numpy as np

from flow_escnn._validate import grid_shape as check_grid_shape
from flow_escnn.flows._element import GridElement
from flow_escnn.flows._generator import FlowGenerator
from flow_escnn.flows._planar import check_planar_gspace, steps_per_turn

__all__ = ["FlowSet", "VelocityLike", "MAX_FLOWS"]

#: The most velocities a FlowSet holds (each is a slice of the hidden state).
MAX_FLOWS = 1 << 16

VelocityLike = Union[FlowGenerator, Tuple[int, int], Tuple[int, int, int]]
#: Rotation steps: a list of steps per frame, or an integer ``K`` for ``-K..K``.
StepsLike = Union[int, Iterable[Any]]


class FlowSet:
    """An ordered, duplicate-free set :math:`V` of flow generators on one gspace.

    Args:
        gspace: a planar escnn gspace with a finite fiber group.
        generators: the generators, as :class:`FlowGenerator` or velocity tuples
            ``(vx, vy)`` / ``(vx, vy, k)``; their order is the order of the V axis.

    Raises:
        ValueError: on an empty set, duplicates, or generators of another gspace.

    Example:
        >>> import flow_escnn
        >>> from escnn import gspaces
        >>> V = flow_escnn.FlowSet.translations(gspaces.rot2dOnR2(4), radius=1)
        >>> len(V), V.velocities[:2], V.index((1, 0, 0))
        (9, [(-1, -1, 0), (-1, 0, 0)], 7)
        >>> flow_escnn.FlowSet.rotations(gspaces.rot2dOnR2(4), [-1, 0, 1]).velocities
        [(0, 0, -1), (0, 0, 0), (0, 0, 1)]
    """

    __slots__ = ("_gspace", "_gens", "_index")

    def __new__(cls, gspace: Any = None, generators: Any = None) -> "FlowSet":
        if cls is FlowSet and _is_volume(gspace):  # a 3D gspace: its flows are volume flows
            return super().__new__(_volume_flowset())
        return super().__new__(cls)

    def __init__(self, gspace: Any, generators: Iterable[VelocityLike]) -> None:
        check_planar_gspace(gspace)
        if generators is None or isinstance(generators, (str, bytes)) or not hasattr(generators, "__iter__"):
            raise TypeError(
                "generators must be an iterable of velocities (vx, vy) / (vx, vy, k) or FlowGenerators, "
                f"got {type(generators).__name__} {generators!r}"
            )
        gens_list = []
        for v in generators:
            gens_list.append(self.as_generator(gspace, v))
            if len(gens_list) > MAX_FLOWS:
                raise ValueError(
                    f"a FlowSet holds at most {MAX_FLOWS} velocities (every one is a slice of the hidden state); "
                    "on an H x W torus only H*W translation flows are distinct"
                )
        gens = tuple(gens_list)
        if not gens:
            raise ValueError("a FlowSet needs at least one generator (use FlowSet.identity(gspace) for none)")
        index: Dict[FlowGenerator, int] = {}
        for i, g in enumerate(gens):
            if g in index:
                raise ValueError(f"duplicate generator {g} at positions {index[g]} and {i}")
            index[g] = i
        self._gspace = gspace
        self._gens = gens
        self._index = index

    @staticmethod
    def as_generator(gspace: Any, v: VelocityLike) -> FlowGenerator:
        """``v`` as a :class:`FlowGenerator` on ``gspace``: a generator (of that gspace) as is, a tuple
        ``(vx, vy)`` or ``(vx, vy, k)`` (integer pixels and rotation steps) as the generator it names (on a 3D
        gspace: :meth:`VolumeFlowSet.as_generator <flow_escnn.flows._volume_flowset.VolumeFlowSet.as_generator>`)."""
        if _is_volume(gspace):
            return _volume_flowset().as_generator(gspace, v)
        if isinstance(v, FlowGenerator):
            if v.gspace != gspace:
                raise ValueError(f"generator {v} belongs to gspace {v.gspace}, not {gspace}")
            return v
        if isinstance(v, (str, bytes)) or not hasattr(v, "__iter__"):
            raise TypeError(
                f"a velocity is a tuple (vx, vy) or (vx, vy, k) of integers or a FlowGenerator, got "
                f"{type(v).__name__} {v!r}"
            )
        t = tuple(v)
        if len(t) == 2:
            return FlowGenerator(gspace, t, 0)
        if len(t) == 3:
            return FlowGenerator(gspace, t[:2], t[2])
        raise ValueError(f"a velocity is (vx, vy) or (vx, vy, k), got {v!r}")

    # -- constructors -----------------------------------------------------------------------
    @classmethod
    def identity(cls, gspace: Any) -> "FlowSet":
        """:math:`V = \\{0\\}`: a FERNN over it is exactly a G-RNN."""
        return cls(gspace, [(0, 0, 0)])

    @classmethod
    def translations(cls, gspace: Any, radius: int) -> "FlowSet":
        """All integer velocities with :math:`\\max(|v_x|, |v_y|) \\le` ``radius``.

        Ordered lexicographically by ``(vx, vy)``; ``radius=0`` is the identity flow alone,
        ``radius=1`` the paper's :math:`V_1^T` (9 flows), ``radius=2`` :math:`V_2^T` (25). The
        constructors share their call shapes: ``translations(gs, R)``, ``rotations(gs, K)`` (or a list
        of steps) and ``roto_translations(gs, R, K)``, positionally or by keyword.

        Raises:
            TypeError: for a ``radius`` that is not a number (a string, a list).
            ValueError: for a negative or fractional ``radius``, or one with too many velocities.

        On a 3D gspace this is :meth:`VolumeFlowSet.translations
        <flow_escnn.flows._volume_flowset.VolumeFlowSet.translations>`: the :math:`(2r+1)^3` velocities.
        """
        if _is_volume(gspace):
            return _volume_flowset().translations(gspace, radius)
        r = non_negative_int(radius, "radius")
        if (2 * r + 1) ** 2 > MAX_FLOWS:
            raise ValueError(
                f"radius {r} gives {(2 * r + 1) ** 2} velocities, more than a FlowSet holds ({MAX_FLOWS}); on an "
                "H x W torus only H*W translation flows are distinct (radius < min(H, W) / 2 covers them)"
            )
        return cls(gspace, [(vx, vy, 0) for vx in range(-r, r + 1) for vy in range(-r, r + 1)])

    @classmethod
    def rotations(cls, gspace: Any, steps: StepsLike) -> "FlowSet":
        """Rotation flows about the grid centre by ``k * 2*pi/N`` per frame, ``k`` in ``steps``.

        ``steps`` is a list of steps, or an integer ``K`` for ``-K..K`` (like the ``radius`` of
        :meth:`translations` and the CLI's ``--flow-steps K``): ``rotations(gs, 1)`` is
        ``rotations(gs, [-1, 0, 1])``. On SO(2) / O(2) (``rot2dOnR2(-1)``, ``flipRot2dOnR2(-1)``)
        a step is one degree per frame: pass the angles, e.g. ``[-10, 0, 10]`` or ``[-22.5, 0, 22.5]``.

        Raises:
            TypeError: for ``steps`` that are neither a list nor an integer (a string, a float).
            ValueError: for a negative ``K``, one whose steps ``-K..K`` wrap around (``2K + 1 > N``), or a gspace
                without rotations.

        Example:
            >>> from escnn import gspaces
            >>> FlowSet.rotations(gspaces.rot2dOnR2(8), 1) == FlowSet.rotations(gspaces.rot2dOnR2(8), [-1, 0, 1])
            True
        """
        if _is_volume(gspace):  # quarter turns about the coordinate axes
            return _volume_flowset().rotations(gspace, steps)
        if steps_per_turn(gspace) == 1:
            raise ValueError(f"gspace {gspace} has no rotations; use rot2dOnR2(N) or flipRot2dOnR2(N)")
        return cls(gspace, [(0, 0, k) for k in _steps(steps, gspace)])

    @classmethod
    def roto_translations(cls, gspace: Any, radius: int, steps: Optional[StepsLike] = None) -> "FlowSet":
        """Product set: every translation of :meth:`translations` with every rotation step.

        ``radius`` as in :meth:`translations`, ``steps`` as in :meth:`rotations` (a list, or ``K`` for
        ``-K..K``): ``roto_translations(gs, 1, 1)`` is ``roto_translations(gs, 1, [-1, 0, 1])``.

        Note: a mixed generator :math:`(u, r^k)` with :math:`u \\ne 0, k \\ne 0` does not
        commute with pure flows, so a FERNN over this set is exactly equivariant only to
        the input flows that commute with all of V (see :meth:`exact_for`); the checks
        measure the rest.

        Raises:
            TypeError: when ``steps`` is missing or neither a list nor an integer.
            ValueError: for a negative ``radius`` or ``K``, or a ``K`` whose steps wrap around (``2K + 1 > N``).

        Example:
            >>> from escnn import gspaces
            >>> len(FlowSet.roto_translations(gspaces.rot2dOnR2(4), 1, 1))  # 9 translations x 3 rotation steps
            27
        """
        if _is_volume(gspace):  # refused, naming the commuting alternatives
            return _volume_flowset().roto_translations(gspace, radius, steps)
        r = non_negative_int(radius, "radius")
        if steps is None:
            raise TypeError(
                "roto_translations needs the rotation steps too: roto_translations(gspace, radius, steps) with "
                "steps a list like [-1, 0, 1] or an integer K for -K..K (translations(gspace, radius) has no rotations)"
            )
        ks = _steps(steps, gspace)
        return cls(
            gspace,
            [(vx, vy, k) for k in ks for vx in range(-r, r + 1) for vy in range(-r, r + 1)],
        )

    # -- container protocol -------------------------------------------------------------------
    @property
    def gspace(self) -> Any:
        return self._gspace

    @property
    def generators(self) -> Tuple[FlowGenerator, ...]:
        return self._gens

    @property
    def velocities(self) -> List[Tuple[int, int, int]]:
        """``[(vx, vy, k), ...]`` in V-axis order."""
        return [g.velocity for g in self._gens]

    def __len__(self) -> int:
        return len(self._gens)

    def __iter__(self) -> Iterator[FlowGenerator]:
        return iter(self._gens)

    def __getitem__(self, i: int) -> FlowGenerator:
        return self._gens[i]

    def __contains__(self, v: object) -> bool:
        try:
            return self.as_generator(self._gspace, v) in self._index  # type: ignore[arg-type]
        except (TypeError, ValueError):
            return False

    def index(self, velocity: VelocityLike) -> int:
        """Position of ``velocity`` on the V axis.

        Raises:
            KeyError: when the velocity is not in the set (the message lists the set).
        """
        g = self.as_generator(self._gspace, velocity)
        try:
            return self._index[g]
        except KeyError:
            raise KeyError(f"velocity {g.velocity} is not in {self!r}; velocities are {self.velocities}") from None

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, FlowSet):
            return NotImplemented
        return self._gspace == other._gspace and self._gens == other._gens

    def __hash__(self) -> int:
        return hash(self._gens)

    # -- pickling: through the construction spec (escnn's gspaces hold local functions) -----------
    def __reduce__(self) -> Tuple[Any, Tuple[Any]]:
        from flow_escnn.flows._spec import decode, encode  # the codec imports this module

        return (decode, (encode(self),))

    def __copy__(self) -> "FlowSet":
        return self  # immutable

    def __deepcopy__(self, memo: Dict[int, Any]) -> "FlowSet":
        return self

    def __repr__(self) -> str:
        vs = self.velocities
        shown = ", ".join("(" + ", ".join(str(c) for c in v) + ")" for v in vs[:6]) + (", ..." if len(vs) > 6 else "")
        return f"FlowSet({self._gspace.name}, |V|={len(vs)}: [{shown}])"

    def period(self, grid_shape: Tuple[int, int]) -> Optional[int]:
        """Least common period of all flows of V on the ``H x W`` torus (see :meth:`FlowGenerator.period`)."""
        p = 1
        for g in self._gens:
            q = g.period(grid_shape)
            if q is None:
                return None
            p = p * q // math.gcd(p, q)
        return p

    # -- group action -------------------------------------------------------------------------
    def elements(self, t: int) -> List[GridElement]:
        """:math:`[\\psi_t(\\nu) \\text{ for } \\nu \\in V]`."""
        return [g.psi(t) for g in self._gens]

    def act(self, g: Any, velocity: VelocityLike) -> FlowGenerator:
        """:math:`g\\cdot\\nu`, the generator of :math:`g\\,g_\\nu\\,g^{-1}` (``g`` a fiber element).

        Raises:
            ValueError: when the conjugate is not a valid generator (e.g. a 45-degree
                rotation of an integer translation).
        """
        h = GridElement(self._gspace, g)
        nu = self.as_generator(self._gspace, velocity)
        conj = nu.element().conjugate(h)
        try:
            return FlowGenerator.from_element(conj)
        except ValueError as exc:
            raise ValueError(f"{g} maps {nu} to {conj}, which is not a grid flow generator: {exc}") from None

    def action_permutation(self, g: Any) -> List[int]:
        """``perm`` with ``perm[i] = index(g . V[i])``.

        Raises:
            ValueError: when V is not closed under ``g`` (names the offending velocity).
        """
        perm = []
        for nu in self._gens:
            image = self.act(g, nu)
            if image not in self._index:
                raise ValueError(
                    f"{self!r} is not closed under {g}: it maps {nu.velocity} to {image.velocity}, which is not "
                    "in V. Use a G-symmetric set (e.g. FlowSet.translations with a square radius for C4/D4) "
                    "or transform by a subgroup that preserves V."
                )
            perm.append(self._index[image])
        return perm

    def is_closed_under(self, g: Optional[Any] = None) -> bool:
        """Whether :math:`g\\cdot V = V` (for every fiber element when ``g`` is None)."""
        elems = _fiber_elements(self._gspace) if g is None else [g]
        try:
            for e in elems:
                self.action_permutation(e)
        except ValueError:
            return False
        return True

    def check_closed(self) -> None:
        """Raise ``ValueError`` unless V is closed under the whole fiber group."""
        for e in _fiber_elements(self._gspace):
            self.action_permutation(e)

    # -- flow shift ---------------------------------------------------------------------------
    def difference(self, velocity: VelocityLike, mu: VelocityLike) -> Optional[FlowGenerator]:
        """:math:`\\nu \\ominus \\mu`, the generator of :math:`g_\\mu^{-1} g_\\nu`, or None.

        None when :math:`g_\\mu` and :math:`g_\\nu` do not commute (no exact prediction)
        or the difference is not a grid generator.
        """
        nu = self.as_generator(self._gspace, velocity)
        m = self.as_generator(self._gspace, mu)
        gm, gn = m.element(), nu.element()
        if not gm.commutes_with(gn):
            return None
        try:
            return FlowGenerator.from_element(gm.inverse() @ gn)
        except ValueError:
            return None

    def shift_indices(self, mu: VelocityLike, periodic_grid: Optional[Tuple[int, int]] = None) -> np.ndarray:
        """Source indices of the V-shift by ``mu``: ``src[i] = index(V[i] - mu)``, or -1.

        -1 marks slices with no exact prediction (difference outside V, or not commuting).

        Args:
            mu: the input flow.
            periodic_grid: ``(H, W)`` of a periodic grid. On an ``H x W`` torus the flows of
                velocities ``(vx, vy)`` and ``(vx + W, vy + H)`` are the same map, so velocities are
                matched modulo the grid; a V that covers :math:`\\mathbb{Z}_W \\times \\mathbb{Z}_H`
                (e.g. radius 2 on a 5x5 grid) is then closed under every translation flow and
                pooling over V is exactly flow-invariant.

        Raises:
            ValueError: when two generators of V coincide on the given torus.
        """
        def key(g: FlowGenerator) -> Tuple[int, int, int]:
            vx, vy, k = g.velocity
            k %= steps_per_turn(self._gspace)
            if periodic_grid is None:
                return (vx, vy, k)
            return (vx % w, vy % h, k)

        if periodic_grid is not None:
            h, w = check_grid_shape(periodic_grid, "periodic_grid")

        lookup: Dict[Tuple[int, int, int], int] = {}
        for i, nu in enumerate(self._gens):
            kk = key(nu)
            if kk in lookup:
                raise ValueError(
                    f"flows {self._gens[lookup[kk]].velocity} and {nu.velocity} of V coincide on the periodic grid "
                    f"{periodic_grid}; use a smaller radius or a larger grid"
                )
            lookup[kk] = i
        src = np.full(len(self), -1, dtype=np.int64)
        for i, nu in enumerate(self._gens):
            d = self.difference(nu, mu)
            if d is not None and key(d) in lookup:
                src[i] = lookup[key(d)]
        return src

    def check_distinct_on(self, grid_shape: Tuple[int, int]) -> None:
        """Raise ``ValueError`` when two velocities of V are the same flow on the ``H x W`` torus.

        Translations by ``(vx, vy)`` and ``(vx + W, vy + H)`` are the same map of the torus, so
        such a V computes aliased (duplicate) slices; the message gives the number of distinct flows.
        """
        h, w = check_grid_shape(grid_shape)
        n = steps_per_turn(self._gspace)
        keys = {}
        for g in self._gens:
            vx, vy, k = g.velocity
            key = (vx % w, vy % h, k % n)
            if key in keys:
                distinct = len({(a % w, b % h, c % n) for a, b, c in self.velocities})
                raise ValueError(
                    f"V has {len(self)} velocities but only {distinct} distinct flows on a {h}x{w} torus: "
                    f"{keys[key]} and {g.velocity} are the same flow there. Use velocities within "
                    f"(-{w}/2, {w}/2] x (-{h}/2, {h}/2] (e.g. a translation radius below {min(h, w) / 2:g}) or a larger grid"
                )
            keys[key] = g.velocity

    def exact_for(self, mu: VelocityLike) -> bool:
        """Whether input flow ``mu`` commutes with every generator of V (the theorem's condition)."""
        gm = self.as_generator(self._gspace, mu).element()
        return all(gm.commutes_with(nu.element()) for nu in self._gens)


def _is_volume(gspace: Any) -> bool:
    """Whether ``gspace`` is on R^3 (its flow sets are :class:`~flow_escnn.flows._volume_flowset.VolumeFlowSet`)."""
    return getattr(gspace, "dimensionality", None) == 3


def _volume_flowset() -> Any:
    from flow_escnn.flows._volume_flowset import VolumeFlowSet  # imports this module

    return VolumeFlowSet


def _fiber_elements(gspace: Any) -> List[Any]:
    """Every fiber element of a finite group; for SO(2) / O(2) escnn's finite test sample of it (a V closed
    under those rotations by irrational-looking angles is closed under all: only rotation flows are)."""
    G = gspace.fibergroup
    return list(G.testing_elements()) if G.continuous else list(G.elements)


def non_negative_int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer, float, np.floating)):
        raise TypeError(f"{what} must be a non-negative integer, got {type(value).__name__} {value!r}")
    if not float(value).is_integer() or value < 0:
        raise ValueError(f"{what} must be a non-negative integer, got {value!r}")
    return int(value)


def _steps(steps: Any, gspace: Any) -> List[Any]:
    """The rotation steps of ``steps``: a list as given, an integer ``K`` as ``-K..K``."""
    if isinstance(steps, (int, np.integer)) and not isinstance(steps, bool):
        k = non_negative_int(steps, "the number of rotation steps K (for the steps -K..K)")
        n = steps_per_turn(gspace)
        if 2 * k + 1 > n:
            raise ValueError(
                f"K={k} gives the steps -{k}..{k}, but {gspace} has {n} rotation steps in a turn, so some of them are "
                f"the same rotation: use K <= {(n - 1) // 2}, or pass the list of steps"
            )
        return list(range(-k, k + 1))
    if isinstance(steps, (str, bytes)) or not hasattr(steps, "__iter__"):
        raise TypeError(
            f"steps must be a list of rotation steps per frame, e.g. [-1, 0, 1], or an integer K for the steps -K..K, "
            f"got {type(steps).__name__} {steps!r}"
        )
    return list(steps)
