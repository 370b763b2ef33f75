"""Group algebra of flows: GridElement, FlowGenerator, FlowSet (no tensors involved).

Expected values are computed independently from escnn's ``basespace_action`` (numpy)
wherever possible, not from the code under test.
"""
from __future__ import annotations

import itertools
import math
import re

import numpy as np
import pytest

from flow_escnn._compat import gspaces
from flow_escnn.flows import FlowGenerator, FlowSet, GridElement
from flow_escnn.flows._planar import rotation_element

C4 = gspaces.rot2dOnR2(4)
C8 = gspaces.rot2dOnR2(8)
D4 = gspaces.flipRot2dOnR2(4)
TRIVIAL = gspaces.trivialOnR2()
FLIP = gspaces.flip2dOnR2()


def A(gs, g) -> np.ndarray:
    """escnn's action of fiber element g on planar (x, y), straight from escnn."""
    return np.asarray(gs.basespace_action(g), dtype=np.float64).reshape(2, 2)


def det_sign(gs, g) -> int:
    return int(np.sign(np.linalg.det(A(gs, g))))


def assert_element(e: GridElement, g, u) -> None:
    assert e.g == g, (e, g)
    np.testing.assert_allclose(e.translation, np.asarray(u, dtype=np.float64), atol=1e-9, rtol=0)


# ----------------------------------------------------------------------------------------------
# GridElement: semidirect-product law
# ----------------------------------------------------------------------------------------------
def _sample_elements(gs, rng: np.random.Generator, n: int):
    elems = list(gs.fibergroup.elements)
    return [
        GridElement(gs, elems[rng.integers(len(elems))], tuple(rng.integers(-3, 4, size=2)))
        for _ in range(n)
    ]


@pytest.mark.parametrize("gs", [C4, C8, D4], ids=["C4", "C8", "D4"])
def test_grid_element_product_matches_semidirect_law(gs):
    rng = np.random.default_rng(0)
    for a, b in zip(_sample_elements(gs, rng, 6), _sample_elements(gs, rng, 6)):
        ab = a @ b
        assert_element(ab, a.g @ b.g, a.translation + A(gs, a.g) @ b.translation)


@pytest.mark.parametrize("gs", [C4, C8, D4], ids=["C4", "C8", "D4"])
def test_grid_element_associative_identity_inverse(gs):
    rng = np.random.default_rng(1)
    a, b, c = _sample_elements(gs, rng, 3)
    e = GridElement.identity(gs)
    assert (a @ b) @ c == a @ (b @ c)
    assert a @ e == a and e @ a == a
    assert (a @ a.inverse()).is_identity and (a.inverse() @ a).is_identity
    assert ~a == a.inverse()
    # (u, g)^-1 = (-A(g)^-1 u, g^-1), written out
    assert_element(a.inverse(), ~a.g, -np.linalg.solve(A(gs, a.g), a.translation))


def test_grid_element_point_action_and_integrality():
    r = rotation_element(C4, 1)
    e = GridElement(C4, r, (2, -1))
    # x -> A x + u with A the +90 degree rotation: (1, 0) -> (0, 1) -> + (2, -1)
    np.testing.assert_array_equal(e.act_on_points([[1.0, 0.0]]), [[2.0, 0.0]])
    assert e.is_integral
    assert not GridElement(C4, r, (0.5, 0)).is_integral
    assert not GridElement(C8, rotation_element(C8, 1)).is_integral
    assert GridElement(C8, rotation_element(C8, 2)).is_integral


# ----------------------------------------------------------------------------------------------
# FlowGenerator: psi_s psi_t = psi_{s+t}
# ----------------------------------------------------------------------------------------------
GENERATORS = [
    pytest.param(C4, (1, 0), 0, id="C4-translation"),
    pytest.param(C4, (-2, 3), 0, id="C4-translation-2"),
    pytest.param(C4, (0, 0), 1, id="C4-rotation"),
    pytest.param(C4, (0, 0), -1, id="C4-rotation-neg"),
    pytest.param(C8, (0, 0), 3, id="C8-rotation"),
    pytest.param(C4, (1, 2), 1, id="C4-roto-translation"),
    pytest.param(C8, (1, 0), 1, id="C8-roto-translation"),
    pytest.param(D4, (2, -1), 3, id="D4-roto-translation"),
]


@pytest.mark.parametrize("gs,u,k", GENERATORS)
def test_psi_group_law(gs, u, k):
    nu = FlowGenerator(gs, u, k)
    ts = (-3, -1, 0, 2, 3)
    for s, t in itertools.product(ts, ts):
        assert nu.psi(s) @ nu.psi(t) == nu.psi(s + t), (s, t)
    assert nu.psi(0).is_identity
    assert nu.psi(1) == nu.element()
    for t in ts:
        assert nu.psi(t).inverse() == nu.psi(-t)
        assert (nu.psi(t) @ nu.psi(-t)).is_identity


@pytest.mark.parametrize("gs,u,k", GENERATORS)
def test_psi_explicit_values(gs, u, k):
    """psi_t built by hand: t-fold product of (u, r^k), computed with escnn's matrices only."""
    nu = FlowGenerator(gs, u, k)
    r = rotation_element(gs, k)
    for t in range(-3, 4):
        step_g, step_u = (r, np.asarray(u, float)) if t >= 0 else (~r, -np.linalg.solve(A(gs, r), u))
        g, pos = gs.fibergroup.identity, np.zeros(2)
        for _ in range(abs(t)):
            pos = pos + A(gs, g) @ step_u
            g = g @ step_g
        assert_element(nu.psi(t), g, pos)


def test_psi_pure_flows_closed_forms():
    tr = FlowGenerator(C4, (2, -1))
    for t in range(-3, 4):
        assert_element(tr.psi(t), C4.fibergroup.identity, (2 * t, -t))
    rot = FlowGenerator(C8, rotation=3)
    for t in range(-3, 4):
        assert_element(rot.psi(t), C8.fibergroup.element((3 * t) % 8), (0, 0))
    # mixed: psi_2 = (u + A(r) u, r^2)
    rt = FlowGenerator(C4, (1, 0), 1)
    assert_element(rt.psi(2), C4.fibergroup.element(2), (1, 1))


def test_translation_flows_commute_rotation_and_translation_do_not():
    a, b = FlowGenerator(C4, (1, 0)).element(), FlowGenerator(C4, (-1, 2)).element()
    r1, r2 = FlowGenerator(C4, rotation=1).element(), FlowGenerator(C4, rotation=2).element()
    assert a.commutes_with(b)
    assert r1.commutes_with(r2)
    assert not a.commutes_with(r1)


def test_generator_accessors_and_equality():
    nu = FlowGenerator(C8, (1, -2), 3)
    assert nu.translation == (1, -2) and nu.rotation == 3 and nu.velocity == (1, -2, 3)
    assert nu.angle == pytest.approx(3 * math.pi / 4)
    # rotations are equal modulo N, and hash consistently
    assert FlowGenerator(C4, rotation=-1) == FlowGenerator(C4, rotation=3)
    assert hash(FlowGenerator(C4, rotation=-1)) == hash(FlowGenerator(C4, rotation=3))
    assert FlowGenerator(C4, (1, 0)) != FlowGenerator(C4, (0, 1))
    assert FlowGenerator(C4).is_identity and not nu.is_identity


def test_from_angle():
    assert FlowGenerator.from_angle(C4, math.pi / 2).rotation == 1
    assert FlowGenerator.from_angle(C8, -math.pi / 4).rotation == -1
    assert FlowGenerator.from_angle(C8, math.pi, translation=(1, 1)).velocity == (1, 1, 4)
    assert FlowGenerator.from_angle(TRIVIAL, 0.0).is_identity


def test_from_element_roundtrip_and_reflections_rejected():
    for k in range(-3, 5):
        nu = FlowGenerator(C8, (1, -1), k)
        back = FlowGenerator.from_element(nu.element())
        assert back == nu
        assert -4 < back.rotation <= 4  # smallest angle in (-pi, pi]
    flip_d4 = D4.fibergroup.element((1, 0))
    with pytest.raises(ValueError, match="reflection"):
        FlowGenerator.from_element(GridElement(D4, flip_d4))
    # flip2dOnR2's fiber group is a *cyclic* group of order 2 whose generator is the flip
    flip = next(g for g in FLIP.fibergroup.elements if g != FLIP.fibergroup.identity)
    with pytest.raises(ValueError, match="reflection"):
        FlowGenerator.from_element(GridElement(FLIP, flip, (1, 0)))
    with pytest.raises(ValueError, match="must be an integer"):
        FlowGenerator.from_element(GridElement(C4, translation=(0.5, 0)))


# ----------------------------------------------------------------------------------------------
# Conjugation: g psi_t(nu) g^-1 = psi_t(g . nu)
# ----------------------------------------------------------------------------------------------
def _expected_action(gs, g, velocity):
    """g . (vx, vy, k) by hand: A(g) u, and k reversed by a reflection."""
    vx, vy, k = velocity
    u = A(gs, g) @ np.array([vx, vy], dtype=float)
    n = gs.rotations_order
    k = (det_sign(gs, g) * k) % n
    return (int(round(u[0])), int(round(u[1])), k)


@pytest.mark.parametrize("gs", [C4, D4], ids=["C4", "D4"])
def test_conjugation_by_fiber_elements(gs):
    flows = FlowSet(gs, [(1, 0), (-1, 1), (0, 0, 1), (0, 0, 2), (1, 1, 1), (-1, 0, -1)])
    for g in gs.fibergroup.elements:
        h = GridElement(gs, g)
        for nu in flows:
            image = flows.act(g, nu)
            vx, vy, k = image.velocity
            assert (vx, vy, k % 4) == _expected_action(gs, g, nu.velocity), (g, nu)
            for t in (-2, 0, 1, 3):
                assert h @ nu.psi(t) @ h.inverse() == image.psi(t), (g, nu, t)
                assert nu.psi(t).conjugate(h) == image.psi(t)


def test_conjugation_by_reflection_explicit():
    flows = FlowSet.roto_translations(D4, 1, [-1, 0, 1])
    flip = D4.fibergroup.element((1, 0))
    assert det_sign(D4, flip) == -1
    ax = A(D4, flip)
    for nu in flows:
        vx, vy, k = flows.act(flip, nu).velocity
        np.testing.assert_array_equal([vx, vy], np.round(ax) @ np.array(nu.translation, float))
        assert k % 4 == (-nu.rotation) % 4  # a reflection reverses the sense of rotation
    # explicit: the D4 flip is x -> -x in escnn's convention
    np.testing.assert_allclose(ax, [[-1, 0], [0, 1]], atol=1e-12)
    assert flows.act(flip, (1, 1, 1)).velocity == (-1, 1, -1)


def test_act_off_grid_rejected():
    flows = FlowSet.translations(C8, 1)
    r45 = C8.fibergroup.element(1)
    with pytest.raises(ValueError, match="not a grid flow generator"):
        flows.act(r45, (1, 0))
    assert not flows.is_closed_under(r45)
    assert flows.is_closed_under(C8.fibergroup.element(2))


# ----------------------------------------------------------------------------------------------
# FlowSet: construction, order, lookup
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("radius,size", [(0, 1), (1, 9), (2, 25)])
def test_translations_sizes_and_order(radius, size):
    flows = FlowSet.translations(C4, radius)
    assert len(flows) == size
    expected = sorted((vx, vy, 0) for vx in range(-radius, radius + 1) for vy in range(-radius, radius + 1))
    assert flows.velocities == expected  # lexicographic in (vx, vy)
    for i, v in enumerate(expected):
        assert flows.index(v) == i and flows.index(v[:2]) == i
        assert v in flows and v[:2] in flows and FlowGenerator(C4, v[:2]) in flows
        assert flows[i].velocity == v
    assert [g.velocity for g in flows] == expected
    assert (radius + 1, 0) not in flows
    assert (0, 0, 1) not in flows
    assert "junk" not in flows and (1.5, 0) not in flows


def test_identity_and_radius_zero():
    assert FlowSet.identity(C4).velocities == [(0, 0, 0)]
    assert FlowSet.translations(C4, 0) == FlowSet.identity(C4)


def test_index_unknown_velocity_lists_the_set():
    flows = FlowSet.translations(C4, 1)
    with pytest.raises(KeyError, match=re.escape("velocity (2, 0, 0) is not in")):
        flows.index((2, 0))


def test_rotations_and_roto_translations():
    rot = FlowSet.rotations(C8, [-2, -1, 0, 1, 2])
    assert rot.velocities == [(0, 0, k) for k in (-2, -1, 0, 1, 2)]
    assert rot.index((0, 0, -1)) == 1
    assert rot.index((0, 0, 7)) == 1  # -1 == 7 (mod 8)
    rt = FlowSet.roto_translations(C4, 1, [0, 1])
    assert len(rt) == 18
    assert rt.velocities[:9] == [(vx, vy, 0) for vx in (-1, 0, 1) for vy in (-1, 0, 1)]
    assert rt.velocities[9:] == [(vx, vy, 1) for vx in (-1, 0, 1) for vy in (-1, 0, 1)]


def test_explicit_list_mixed_forms():
    flows = FlowSet(C4, [(0, 0), (1, 0, 0), FlowGenerator(C4, (0, 0), 1), (2, -1, 3)])
    assert flows.velocities == [(0, 0, 0), (1, 0, 0), (0, 0, 1), (2, -1, 3)]
    assert flows.index((2, -1, -1)) == 3
    assert flows == FlowSet(C4, [(0, 0, 0), (1, 0), (0, 0, 1), (2, -1, -1)])
    assert flows != FlowSet(C4, [(1, 0), (0, 0), (0, 0, 1), (2, -1, 3)])  # order matters


@pytest.mark.parametrize(
    "gens,match",
    [
        ([(0, 0), (1, 0), (0, 0, 0)], "duplicate generator"),
        ([(0, 0, 1), (0, 0, 5)], "duplicate generator"),  # equal modulo N=4
        ([], "at least one generator"),
        ([(1, 2, 3, 4)], r"a velocity is \(vx, vy\) or \(vx, vy, k\)"),
    ],
)
def test_flowset_rejects_bad_lists(gens, match):
    with pytest.raises(ValueError, match=match):
        FlowSet(C4, gens)


def test_flowset_rejects_generator_of_other_gspace():
    with pytest.raises(ValueError, match="belongs to gspace"):
        FlowSet(C4, [FlowGenerator(C8, (1, 0))])


# ----------------------------------------------------------------------------------------------
# FlowSet: static action (permutation of V) and closure
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "gs,flows",
    [
        (C4, FlowSet.translations(C4, 1)),
        (D4, FlowSet.translations(D4, 1)),
        (D4, FlowSet.translations(D4, 2)),
        (D4, FlowSet.rotations(D4, [-1, 0, 1])),
        (C4, FlowSet.roto_translations(C4, 1, [0, 1, 2, 3])),
    ],
    ids=["C4-T1", "D4-T1", "D4-T2", "D4-R", "C4-RT"],
)
def test_action_permutation_is_a_permutation(gs, flows):
    flows.check_closed()
    assert flows.is_closed_under()
    elems = list(gs.fibergroup.elements)
    perms = {g: flows.action_permutation(g) for g in elems}
    for g, perm in perms.items():
        assert sorted(perm) == list(range(len(flows)))
        for i, nu in enumerate(flows):
            vx, vy, k = flows[perm[i]].velocity
            assert (vx, vy, k % gs.rotations_order) == _expected_action(gs, g, nu.velocity)
    # it is a group action: perm(g h) = perm(g) o perm(h)
    for g, h in itertools.product(elems, elems):
        assert perms[g @ h] == [perms[g][perms[h][i]] for i in range(len(flows))]


def test_not_closed_flowset_names_the_velocity():
    flows = FlowSet(C4, [(1, 0), (0, 0)])
    r90 = C4.fibergroup.element(1)
    with pytest.raises(ValueError, match=r"not closed under .*maps \(1, 0, 0\) to \(0, 1, 0\)"):
        flows.action_permutation(r90)
    with pytest.raises(ValueError, match=r"maps \(1, 0, 0\) to"):
        flows.check_closed()
    assert not flows.is_closed_under()
    assert not flows.is_closed_under(r90)
    assert flows.is_closed_under(C4.fibergroup.identity)
    # D4: the reflection alone also breaks it
    with pytest.raises(ValueError, match=r"maps \(1, 0, 0\) to \(-1, 0, 0\)"):
        FlowSet(D4, [(1, 0), (0, 0)]).action_permutation(D4.fibergroup.element((1, 0)))


# ----------------------------------------------------------------------------------------------
# FlowSet: flow shift (nu - mu) and exactness
# ----------------------------------------------------------------------------------------------
def test_shift_indices_translations():
    flows = FlowSet.translations(C4, 1)
    vel = flows.velocities
    for mu in [(1, 0), (0, -1), (1, 1), (0, 0), (2, 0)]:
        src = flows.shift_indices(mu)
        for i, (vx, vy, _) in enumerate(vel):
            d = (vx - mu[0], vy - mu[1], 0)
            assert src[i] == (vel.index(d) if d in vel else -1), (mu, vel[i])
    assert list(flows.shift_indices((0, 0))) == list(range(9))
    assert (flows.shift_indices((3, 0)) == -1).all()
    assert list(flows.shift_indices((1, 0))) == [-1, -1, -1, 0, 1, 2, 3, 4, 5]


def test_shift_indices_rotations():
    flows = FlowSet.rotations(C8, [-2, -1, 0, 1, 2])
    assert list(flows.shift_indices((0, 0, 1))) == [-1, 0, 1, 2, 3]
    assert list(flows.shift_indices((0, 0, -2))) == [2, 3, 4, -1, -1]
    # the full cyclic group: every shift stays inside V (wraps modulo N)
    full = FlowSet.rotations(C4, [0, 1, 2, 3])
    assert list(full.shift_indices((0, 0, 1))) == [3, 0, 1, 2]
    # a translation does not commute with a rotation about the centre: no prediction
    assert (flows.shift_indices((1, 0)) == -1).all()


def test_difference():
    flows = FlowSet.roto_translations(C4, 1, [0, 1])
    assert flows.difference((1, 1, 0), (1, 0)).velocity == (0, 1, 0)
    assert flows.difference((0, 0, 1), (0, 0, 1)).is_identity
    assert flows.difference((1, 0, 1), (1, 0)) is None  # does not commute


def test_exact_for_mixed_sets():
    tr = FlowSet.translations(C4, 1)
    assert tr.exact_for((2, -1)) and tr.exact_for((0, 0))
    assert not tr.exact_for((0, 0, 1))
    rot = FlowSet.rotations(C4, [-1, 0, 1])
    assert rot.exact_for((0, 0, 1)) and not rot.exact_for((1, 0))
    mixed = FlowSet(C4, [(0, 0, 0), (1, 0, 0), (0, 0, 1)])
    assert not mixed.exact_for((1, 0))
    assert not mixed.exact_for((0, 0, 1))
    assert mixed.exact_for((0, 0, 0))
    # a roto-translation generator commutes with its own powers only
    rt = FlowSet(C4, [(0, 0, 0), (1, 0, 1)])
    assert rt.exact_for((1, 0, 1)) and not rt.exact_for((1, 0, 0))
    assert list(mixed.shift_indices((1, 0))) == [-1, 0, -1]


# ----------------------------------------------------------------------------------------------
# Bad input
# ----------------------------------------------------------------------------------------------
def test_non_integer_translation_rejected():
    with pytest.raises(ValueError, match=r"translation vx must be an integer, got 1\.5"):
        FlowGenerator(C4, (1.5, 0))
    with pytest.raises(ValueError, match="translation vy must be an integer"):
        FlowSet(C4, [(0, 0.25)])
    with pytest.raises(ValueError, match="rotation .*must be an integer"):
        FlowGenerator(C4, (0, 0), 0.5)
    with pytest.raises(ValueError, match=r"pair \(vx, vy\)"):
        FlowGenerator(C4, (1, 2, 3))
    with pytest.raises(ValueError, match="non-negative integer"):
        FlowSet.translations(C4, 1.5)
    with pytest.raises(ValueError, match="non-negative integer"):
        FlowSet.translations(C4, -1)
    with pytest.raises(ValueError, match="integer exponent"):
        GridElement(C4) ** 1.5


def test_from_angle_not_a_multiple():
    with pytest.raises(ValueError, match=r"not a multiple of 2\*pi/8 \(45 deg\)"):
        FlowGenerator.from_angle(C8, math.radians(10))
    with pytest.raises(ValueError, match=r"not a multiple of 2\*pi/4"):
        FlowGenerator.from_angle(C4, math.pi / 4)


def test_rotation_on_trivial_gspace_rejected():
    with pytest.raises(ValueError, match="has no rotations"):
        FlowGenerator(TRIVIAL, (0, 0), 1)
    with pytest.raises(ValueError, match="has no rotations"):
        FlowSet.rotations(TRIVIAL, [0, 1])
    with pytest.raises(ValueError, match="has no rotations"):
        FlowSet(TRIVIAL, [(0, 0, 1)])
    with pytest.raises(ValueError, match=r"not a multiple of 2\*pi/1"):
        FlowGenerator.from_angle(TRIVIAL, math.pi / 2)
    # translations are fine on the trivial gspace
    assert len(FlowSet.translations(TRIVIAL, 1)) == 9


@pytest.mark.parametrize("gs", [gspaces.rot2dOnR2(-1), gspaces.flipRot2dOnR2(-1)], ids=["SO2", "O2"])
def test_continuous_gspaces_take_translations_and_any_rotation(gs):
    """SO(2) / O(2): integer translations stay exact, rotations are degrees (tests/test_continuous.py)."""
    flows = FlowSet.translations(gs, 1)
    assert len(flows) == 9 and flows.period((5, 5)) == 5
    assert GridElement(gs, translation=(1, 0)).is_integral
    assert not GridElement(gs, gs.fibergroup.element(0.3) if gs.fibergroup.name == "SO(2)"
                           else gs.fibergroup.element((0, 0.3))).is_integral
    with pytest.raises(ValueError, match="integer"):
        FlowGenerator(gs, (0.5, 0))


def test_not_a_gspace_rejected():
    with pytest.raises(ValueError, match="planar escnn gspace"):
        FlowSet("C4", [(0, 0)])
    with pytest.raises(ValueError, match="not an element of"):
        GridElement(C4, C8.fibergroup.element(1))
    with pytest.raises(ValueError, match="two finite numbers"):
        GridElement(C4, None, (1.0, float("nan")))


def test_shift_indices_periodic_grid():
    flows = FlowSet.translations(C4, 2)  # covers Z_5 x Z_5
    vel = flows.velocities
    assert (flows.shift_indices((1, 0)) == -1).sum() == 5  # the vx = -2 column falls off V
    wrap = lambda v: (v + 2) % 5 - 2  # noqa: E731 - representative in [-2, 2]
    for mu in [(1, 0), (-2, 1), (3, 4)]:
        src = flows.shift_indices(mu, periodic_grid=(5, 5))
        expected = [vel.index((wrap(vx - mu[0]), wrap(vy - mu[1]), 0)) for vx, vy, _ in vel]
        assert list(src) == expected, mu
    # (H, W) order: a 5-row, 3-column torus identifies vx modulo 3 and vy modulo 5
    small = FlowSet.translations(C4, 1)
    assert (small.shift_indices((1, 0), periodic_grid=(5, 3)) >= 0).all()
    src = small.shift_indices((0, 1), periodic_grid=(5, 3))
    assert [small[i].velocity for i in np.flatnonzero(src < 0)] == [(-1, -1, 0), (0, -1, 0), (1, -1, 0)]


def test_shift_indices_periodic_grid_rejects_aliased_set():
    with pytest.raises(ValueError, match=r"coincide on the periodic grid \(2, 2\)"):
        FlowSet.translations(C4, 1).shift_indices((1, 0), periodic_grid=(2, 2))


def test_period_is_the_least_time_that_maps_the_torus_to_itself_and_is_cached_per_grid():
    """``FlowGenerator.period`` (cached per generator and grid): the least ``p >= 1`` whose ``psi_p`` has the
    identity rotation and a translation that is zero modulo the grid, found here by trying every ``p``. The same
    generators on a transposed grid have other periods (a cache keyed without the grid would repeat the first)."""
    def least(g, h, w):
        for p in range(1, 1000):
            e = g.psi(p)
            if np.allclose(e.matrix, np.eye(2)) and not e.translation_mod(h, w).any():
                return p

    gens = [FlowGenerator(C8, (1, 0), 1), FlowGenerator(C4, (2, 1)), FlowGenerator(C4, (1, 0)), FlowGenerator(C4, (1, 0), 2),
            FlowGenerator(C8, rotation=3), FlowGenerator(C8, rotation=11)]  # k = 3 and 11: one generator on C8
    for _ in range(2):  # the second pass reads the cache
        for g in gens:
            for h, w in ((5, 3), (3, 5), (4, 6)):
                assert g.period((h, w)) == least(g, h, w), (g, h, w)
    assert FlowGenerator(C4, (1, 0)).period((5, 3)) == 3 and FlowGenerator(C4, (1, 0)).period((3, 5)) == 5  # control
