"""Volume flows (issue 24, part 2): the flow algebra on escnn's 3D gspaces and its exact transport.

The oracles are written here, by hand, from escnn's voxel convention (array axes ``(-z, -y, x)``):
``torch.roll`` for translations, ``torch.rot90`` for quarter turns about each coordinate axis and
escnn's own representation matrices for the fiber. Each comparison has a control that the same
check flags (a wrong rotation direction, zero padding instead of the torus, an untouched fiber, a
missing V relabelling). escnn itself ties the conventions: the transport equals
``GeometricTensor.transform`` on every element of the octahedral groups, and ``R3Conv`` commutes
with it. Everything runs in float64; the permutation paths are compared bit for bit.
"""
from __future__ import annotations

import itertools
import pickle

import numpy as np
import pytest
import torch

from flow_escnn._compat import enn, gspaces
from flow_escnn._compat import group as _group
from flow_escnn.flows import (
    FlowSet,
    VolumeElement,
    VolumeFlowSet,
    VolumeGenerator,
    VolumeTransportPlan,
    volume_flow_sequence,
    volume_transport,
)
from flow_escnn.flows._volume import axis_rotation, check_volume_gspace, rotation_vector
from flow_escnn.flows._volume_transport import volume_table
from flow_escnn.flows.kinds import ALL_FLOW_KINDS, FLOW_KINDS, TRANSLATION3D, VOLUME_FLOW_KINDS, flow_kind
from tests.oracles import fiber, volume_roll, volume_turn

OCTA = gspaces.octaOnR3()
TOL = 1e-10
REGULAR = enn.FieldType(OCTA, [OCTA.regular_repr])  # rho(g): permutations (the one-gather path)
IRREPS = enn.FieldType(OCTA, [OCTA.irrep(1), OCTA.irrep(2), OCTA.trivial_repr])  # rho(g): dense matrices
FIELDS = {"regular": REGULAR, "irreps": IRREPS}

# -- the oracles (tests/oracles.py: torch.roll, torch.rot90 and escnn's matrices) ------------------------------------
roll, turn = volume_roll, volume_turn


def zero_padded_roll(x: torch.Tensor, u) -> torch.Tensor:
    """The control: a shift that drops what leaves the grid (zero padding) instead of wrapping it around."""
    y = roll(x, u).clone()
    for dim, s in zip((-1, -2, -3), (int(u[0]), -int(u[1]), -int(u[2]))):
        n = x.shape[dim]
        if s > 0:
            y.narrow(dim, 0, min(s, n)).zero_()
        elif s < 0:
            y.narrow(dim, max(n + s, 0), min(-s, n)).zero_()
    return y


def close(a: torch.Tensor, b: torch.Tensor) -> bool:
    return bool((a - b).abs().max() <= TOL)


def randn(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))


# -- translations ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("v", [(1, 0, 0), (0, -2, 1), (3, 1, -1), (0, 0, 7)])
def test_integer_translation_flows_are_torch_roll(v):
    """psi_t(nu) = (t v, e) on a 4x5x6 torus (no cube needed) is torch.roll by t v, frame by frame."""
    x = randn(2, 5, REGULAR.size, 4, 5, 6)
    y = volume_flow_sequence(x, REGULAR, v)
    for t in range(5):
        expected = roll(x[:, t], tuple(t * c for c in v))
        assert torch.equal(y[:, t], expected) and close(y[:, t], expected)
    # control: the same check flags a zero-padded shift (the torus matters)
    assert not close(y[:, 2], zero_padded_roll(x[:, 2], tuple(2 * c for c in v)))


def test_the_lifted_state_is_transported_slice_by_slice_in_one_plan():
    """[B, |V|, C, D, H, W] by psi_t(nu) for the 27 translation flows of [-1, 1]^3: each slice rolled by t*nu."""
    V = FlowSet.translations(OCTA, 1)
    x = randn(2, len(V), REGULAR.size, 4, 4, 4)
    for t in (1, 3, -2):
        y = VolumeTransportPlan(REGULAR, V.elements(t), (4, 4, 4))(x)
        expected = torch.stack([roll(x[:, i], tuple(t * c for c in nu.translation)) for i, nu in enumerate(V)], 1)
        assert torch.equal(y, expected)


# -- rotations --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("field", sorted(FIELDS))
@pytest.mark.parametrize("k", [1, -1, 2])
@pytest.mark.parametrize("axis", ["x", "y", "z"])
def test_quarter_turn_flows_about_each_axis_are_rot90_with_the_fiber(axis, k, field):
    """psi_t(nu) for k quarter turns per frame about an axis = rho(r^t) after torch.rot90 by t k, on a regular
    field (channel permutations: bit for bit) and on irreps (escnn's dense matrices: to 1e-10)."""
    ft = FIELDS[field]
    nu = VolumeGenerator.about(OCTA, axis, k)
    x = randn(2, 6, ft.size, 4, 4, 4, seed=1)
    y = volume_flow_sequence(x, ft, nu)
    for t in range(6):
        expected = fiber(ft, nu.psi(t).g, turn(x[:, t], axis, k * t))
        assert close(y[:, t], expected)
        if field == "regular":  # a permutation of the values: bit for bit
            assert torch.equal(y[:, t], fiber(ft, nu.psi(t).g, turn(x[:, t], axis, k * t), exact=True))
    # controls the same check flags: the wrong direction (a half turn is its own inverse), and the fiber left alone
    if k != 2:
        assert not close(y[:, 1], fiber(ft, nu.psi(1).g, turn(x[:, 1], axis, -k)))
    assert not close(y[:, 1], turn(x[:, 1], axis, k))


def test_regular_fields_are_permuted_exactly():
    """On permutation fibers the transport only moves values: the output holds exactly the input's values."""
    nu = VolumeGenerator.about(OCTA, "y", 1, speed=1)
    x = randn(1, 1, REGULAR.size, 4, 4, 4, seed=2)
    y = volume_flow_sequence(x.expand(1, 3, *x.shape[2:]).contiguous(), REGULAR, nu)
    for t in range(3):
        assert torch.equal(torch.sort(y[0, t].reshape(-1)).values, torch.sort(x.reshape(-1)).values)
    plan = VolumeTransportPlan(REGULAR, [nu.psi(1)], (4, 4, 4))
    assert plan.fiber_is_permutation and plan.rho is None
    assert VolumeTransportPlan(IRREPS, [nu.psi(1)], (4, 4, 4)).rho is not None


@pytest.mark.parametrize("axis", ["x", "y", "z"])
def test_screw_flows_are_a_roll_along_the_axis_and_a_turn_about_it(axis):
    nu = VolumeGenerator.about(OCTA, axis, 1, speed=2)
    x = randn(1, 5, IRREPS.size, 4, 4, 4, seed=3)
    y = volume_flow_sequence(x, IRREPS, nu)
    for t in range(5):
        u = tuple(2 * t if a == axis else 0 for a in "xyz")
        assert close(y[:, t], fiber(IRREPS, nu.psi(t).g, roll(turn(x[:, t], axis, t), u)))
    assert not close(y[:, 1], fiber(IRREPS, nu.psi(1).g, roll(turn(x[:, 1], axis, 1), (0, 0, 0))))


def test_rotations_about_z_on_a_box_with_a_square_cross_section():
    """rot2dOnR3(4): quarter turns about z need H == W only (D free)."""
    gs = gspaces.rot2dOnR3(4)
    ft = enn.FieldType(gs, [gs.regular_repr])
    nu = VolumeGenerator.about(gs, "z", 1)
    x = randn(2, 3, ft.size, 3, 4, 4, seed=4)
    y = volume_flow_sequence(x, ft, nu)
    for t in range(3):
        assert close(y[:, t], fiber(ft, nu.psi(t).g, turn(x[:, t], "z", t)))
    with pytest.raises(ValueError, match="maps the . axis onto the . axis, which needs them of equal size"):
        VolumeTransportPlan(REGULAR, [VolumeGenerator.about(OCTA, "y", 1).element()], (3, 4, 4))


# -- the group law ------------------------------------------------------------------------------------------------
GENERATORS = [((1, -2, 3), (0, 0, 0)), ((0, 0, 0), (1, 0, 0)), ((0, 0, 0), (0, 2, 0)), ((0, 0, -1), (0, 0, -1))]


@pytest.mark.parametrize("u, k", GENERATORS)
def test_group_law_psi_s_psi_t_is_psi_s_plus_t(u, k):
    nu = VolumeGenerator(OCTA, u, k)
    g = nu.element()
    for s, t in itertools.product(range(-3, 4), repeat=2):
        assert nu.psi(s) @ nu.psi(t) == nu.psi(s + t)
        assert nu.psi(t) == g ** t  # the closed form against square-and-multiply
    assert (g ** 5).inverse() == g ** -5 and (g @ g.inverse()).is_identity
    # as transports, exactly
    x = randn(1, 1, REGULAR.size, 4, 4, 4, seed=5)
    for s, t in [(1, 2), (3, -1), (-2, -2)]:
        ps, pt, pst = (VolumeTransportPlan(REGULAR, [nu.psi(n)], (4, 4, 4)) for n in (s, t, s + t))
        assert torch.equal(ps(pt(x)), pst(x))


def test_psi_reaches_any_size_exactly():
    nu = VolumeGenerator(OCTA, (3, 0, 0), (2, 0, 0))
    big = 10**30 + 1
    assert nu.psi(big).exact_translation == (3 * big, 0, 0) and nu.psi(big).rotation == (2, 0, 0)


def test_period_is_the_least_identity_time_on_the_torus():
    nu = VolumeGenerator.about(OCTA, "z", 1, speed=2)  # order 4, vz = 2 on D = 6: lcm(4, 3) = 12
    shape = (6, 4, 4)
    assert nu.period(shape) == 12
    x = randn(1, 1, REGULAR.size, *shape, seed=6)
    moved = [torch.equal(VolumeTransportPlan(REGULAR, [nu.psi(p)], shape)(x), x) for p in range(1, 13)]
    assert moved == [False] * 11 + [True]
    assert VolumeGenerator(OCTA, (1, 2, 0)).period((5, 4, 6)) == 6 and FlowSet.translations(OCTA, 1).period((4, 4, 4)) == 4


# -- the G action on V --------------------------------------------------------------------------------------------
SETS = {
    "translations": lambda gs: FlowSet.translations(gs, 1),
    "rotations": lambda gs: FlowSet.rotations(gs, 1),
    "screws": lambda gs: VolumeFlowSet.screws(gs, 1, [-1, 0, 1, 2]),
}


@pytest.mark.parametrize("name, make", [(n, gspaces.octaOnR3) for n in sorted(SETS)]
                         + [("screws", gspaces.fullOctaOnR3)], ids=[*sorted(SETS), "screws-fullOcta"])
def test_the_g_action_on_v_is_a_homomorphism(name, make):
    """pi_{gh} = pi_g o pi_h with escnn's product gh: for all pairs on octaOnR3; on fullOctaOnR3 (whose reflections
    reverse the turns: the quarter-turn vector is a pseudo-vector) for every g and h in the generators R_x, R_z and
    the inversion, which implies all pairs (pi_{g s1 s2} = pi_{g s1} pi_{s2} = pi_g pi_{s1} pi_{s2})."""
    gs = make()
    V = SETS[name](gs)
    G = list(gs.fibergroup.elements)
    perms = {i: np.array(V.action_permutation(g)) for i, g in enumerate(G)}
    index = {VolumeElement(gs, g).integer_matrix: i for i, g in enumerate(G)}  # A(g) names g (faithful)
    hs = list(enumerate(G))
    if len(G) > 24:
        gens = (axis_rotation("x", 1), axis_rotation("z", 1), ((-1, 0, 0), (0, -1, 0), (0, 0, -1)))
        hs = [(index[a], G[index[a]]) for a in gens]
    wrong_order = 0
    for (i, g), (j, h) in itertools.product(enumerate(G), hs):
        gh = perms[index[VolumeElement(gs, g @ h).integer_matrix]]
        assert np.array_equal(gh, perms[i][perms[j]])  # (gh).nu = g.(h.nu)
        wrong_order += not np.array_equal(gh, perms[j][perms[i]])
    assert np.array_equal(perms[index[VolumeElement(gs).integer_matrix]], np.arange(len(V)))
    assert wrong_order > 0  # control: the other composition order is flagged (G is not abelian)


def test_conjugation_moves_the_flow_g_psi_t_g_inverse_is_psi_t_of_g_nu():
    V = VolumeFlowSet.screws(OCTA, 2, [-1, 0, 1, 2])
    for g in OCTA.fibergroup.elements:
        h = VolumeElement(OCTA, g)
        for nu in V:
            assert nu.psi(3).conjugate(h) == V.act(g, nu).psi(3)
    # the action on a translation is A(g) u, on a rotation the pseudo-vector det(A) A k
    r = VolumeElement.from_matrix(OCTA, axis_rotation("x", 1))
    assert V.act(r.g, (0, 1, 0)).velocity == (0, 0, 1, 0, 0, 0)
    assert V.act(r.g, (0, 0, 0, 0, 1, 0)).velocity == (0, 0, 0, 0, 0, 1)


def test_the_lifted_diagram_static_action_commutes_with_the_flows():
    """P_t(g . X) = g . (P_t X): g moves slice nu to slice g.nu and transports it by g (the engine's V relabelling)."""
    V = FlowSet.translations(OCTA, 1)
    x = randn(1, len(V), REGULAR.size, 4, 4, 4, seed=7)
    flows = VolumeTransportPlan(REGULAR, V.elements(2), (4, 4, 4))

    def act(g, state, relabel=True):
        perm = V.action_permutation(g) if relabel else list(range(len(V)))
        out = torch.empty_like(state)
        out[:, perm] = VolumeTransportPlan(REGULAR, [VolumeElement(OCTA, g)] * len(V), (4, 4, 4))(state)
        return out

    misses = 0
    for g in OCTA.fibergroup.elements:
        assert torch.equal(flows(act(g, x)), act(g, flows(x)))
        misses += not torch.equal(flows(act(g, x, relabel=False)), act(g, flows(x), relabel=False))
    assert misses > 0  # control: without the V relabelling the diagram fails


def test_the_flow_shift_of_v():
    V = FlowSet.translations(OCTA, 1)
    src = V.shift_indices((1, 0, 0))
    for i, nu in enumerate(V):
        diff = (nu.translation[0] - 1, *nu.translation[1:])
        assert src[i] == (V.index(diff) if diff in V else -1)
    assert (V.shift_indices((1, 0, 0), periodic_grid=(3, 3, 3)) >= 0).all()  # V covers Z_3^3: a permutation
    with pytest.raises(ValueError, match="same flow on a 2x2x2 torus"):
        V.check_distinct_on((2, 2, 2))
    R = FlowSet.rotations(OCTA, 1)
    shift = R.shift_indices((0, 0, 0, 0, 0, 1))
    assert shift[R.index((0, 0, 0, 0, 0, 1))] == R.index((0, 0, 0))
    assert shift[R.index((0, 0, 0, 0, 0, -1))] == -1  # z^-2 is not in V
    assert shift[R.index((0, 0, 0, 1, 0, 0))] == -1  # about x and about z do not commute
    assert R.exact_for((0, 0, 3)) is False and V.exact_for((0, 0, 3)) is True


# -- escnn ties the conventions --------------------------------------------------------------------------------
@pytest.mark.parametrize("make", [gspaces.octaOnR3, gspaces.fullOctaOnR3, lambda: gspaces.cylindricalOnR3(4)],
                         ids=["octa", "fullOcta", "cylindrical4"])
def test_the_transport_is_escnns_transform_on_every_element(make):
    gs = make()
    irreps = [r for r in gs.fibergroup.irreps() if r.size > 1][:2]
    for ft in (enn.FieldType(gs, [gs.regular_repr]), enn.FieldType(gs, [gs.trivial_repr] + irreps)):
        x = randn(2, ft.size, 4, 4, 4, seed=8)
        for g in gs.fibergroup.elements:
            ours = volume_transport(x, ft, VolumeElement(gs, g))
            assert close(ours, enn.GeometricTensor(x, ft).transform(g).tensor), g
    # control: the inverse element is flagged (octahedral groups have elements that are not involutions)
    g = next(e for e in gs.fibergroup.elements if e != ~e)
    assert not close(volume_transport(x, ft, VolumeElement(gs, ~g)), enn.GeometricTensor(x, ft).transform(g).tensor)


def test_r3conv_commutes_with_the_transport():
    """escnn's static equivariance, with this transport as the group action: R3Conv (circular padding) commutes
    with (u, g) for all 24 rotations and a translation. escnn samples its kernel basis in float32, so the
    agreement is ~1e-8 relative, not 1e-10; the control (the output turned the other way) is off by O(1)."""
    fi, fo = enn.FieldType(OCTA, [OCTA.trivial_repr]), REGULAR
    conv = enn.R3Conv(fi, fo, kernel_size=3, padding=1, padding_mode="circular", initialize=False).double()
    torch.nn.init.normal_(conv.weights, generator=torch.Generator().manual_seed(0))
    conv.eval()
    x = randn(1, fi.size, 5, 5, 5, seed=9)
    worst, control = 0.0, 0.0
    with torch.no_grad():
        pairs = [(g, conv(enn.GeometricTensor(volume_transport(x, fi, VolumeElement(OCTA, g, (1, -2, 3))), fi)).tensor)
                 for g in OCTA.fibergroup.elements]
        y = conv(enn.GeometricTensor(x, fi)).tensor
    for g, lhs in pairs:
        rhs = volume_transport(y, fo, VolumeElement(OCTA, g, (1, -2, 3)))
        worst = max(worst, float((lhs - rhs).abs().max() / rhs.abs().max()))
        wrong = volume_transport(y, fo, VolumeElement(OCTA, ~g, (1, -2, 3)))
        control = max(control, float((lhs - wrong).abs().max() / rhs.abs().max()))
    conv.float()  # a bare R3Conv casts escnn's shared basis cache: give it back in float32 for later tests
    assert worst < 1e-6 and control > 1e-2


# -- the algebra's refusals and plumbing -----------------------------------------------------------------------------
def test_gspaces_and_generators_that_do_not_fit_the_grid_are_refused():
    with pytest.raises(ValueError, match="does not map the voxel grid onto itself"):
        check_volume_gspace(gspaces.rot2dOnR3(8))
    with pytest.raises(ValueError, match="continuous fiber group"):
        check_volume_gspace(gspaces.rot2dOnR3(-1))
    with pytest.raises(ValueError, match="expected an escnn gspace on R\\^3"):
        VolumeElement(gspaces.rot2dOnR2(4))
    with pytest.raises(ValueError, match="rotations about coordinate axes are"):
        VolumeGenerator(gspaces.rot2dOnR3(4), rotation=(1, 0, 0))
    with pytest.raises(ValueError, match="not along the rotation axis z"):
        VolumeGenerator(OCTA, (1, 0, 0), (0, 0, 1))
    with pytest.raises(ValueError, match="more than one coordinate axis"):
        VolumeGenerator(OCTA, rotation=(1, 1, 0))
    with pytest.raises(ValueError, match="whole voxels"):
        VolumeGenerator(OCTA, (0.5, 0, 0))
    with pytest.raises(ValueError, match="a volume velocity is"):
        FlowSet(OCTA, [(1, 0)])
    with pytest.raises(ValueError, match="use FlowSet.translations"):
        FlowSet.roto_translations(OCTA, 1, 1)
    with pytest.raises(TypeError, match="planar GridElements go to TransportPlan"):
        from flow_escnn.flows import GridElement

        VolumeTransportPlan(REGULAR, [GridElement(gspaces.rot2dOnR2(4))], (4, 4, 4))
    with pytest.raises(ValueError, match="not a rotation about a coordinate axis"):
        diagonal = VolumeElement.from_matrix(OCTA, ((0, 0, 1), (1, 0, 0), (0, 1, 0)))  # 120 degrees about (1,1,1)
        VolumeGenerator.from_element(diagonal)


def test_flowset_builds_volume_sets_on_3d_gspaces_and_planar_ones_unchanged():
    assert type(FlowSet(OCTA, [(1, 0, 0)])) is VolumeFlowSet and isinstance(FlowSet(OCTA, [(1, 0, 0)]), FlowSet)
    assert FlowSet.identity(OCTA).velocities == [(0, 0, 0, 0, 0, 0)]
    assert len(FlowSet.translations(OCTA, 2)) == 125 and FlowSet.translations(OCTA, 1).is_closed_under()
    assert FlowSet.rotations(gspaces.rot2dOnR3(4), 1).velocities == [(0, 0, 0, 0, 0, k) for k in (-1, 0, 1)]
    planar = FlowSet.translations(gspaces.rot2dOnR2(4), 1)
    assert type(planar) is FlowSet and planar.velocities[0] == (-1, -1, 0)
    assert FlowSet.as_generator(OCTA, (0, 0, 1)) == VolumeGenerator(OCTA, (0, 0, 1))


def test_rotation_vectors_and_matrices():
    for axis, k in itertools.product("xyz", range(-4, 5)):
        vec = rotation_vector(axis_rotation(axis, k))
        assert VolumeGenerator.about(OCTA, axis, k).rotation == vec
        assert np.array_equal(np.linalg.matrix_power(np.array(axis_rotation(axis, 1)), k % 4),
                              np.array(axis_rotation(axis, k)))
    assert axis_rotation("z", 1) == ((0, -1, 0), (1, 0, 0), (0, 0, 1))  # x -> y
    assert rotation_vector(((-1, 0, 0), (0, 1, 0), (0, 0, 1))) is None  # a reflection


def test_the_volume_table_is_the_inverse_map_of_the_voxels():
    """Output voxel p reads A^T (p - u): check against the points moved by act_on_points (3D coordinates)."""
    e = VolumeElement.from_matrix(OCTA, axis_rotation("x", 1), translation=(1, 0, -1))
    d = h = w = 4
    i, j, k = np.meshgrid(np.arange(d), np.arange(h), np.arange(w), indexing="ij")
    pts = np.stack([k - 1.5, 1.5 - j, 1.5 - i], -1).reshape(-1, 3)
    moved = e.act_on_points(pts)
    kk, jj, ii = (np.round(moved[:, 0] + 1.5) % w, np.round(1.5 - moved[:, 1]) % h, np.round(1.5 - moved[:, 2]) % d)
    target = ((ii * h + jj) * w + kk).astype(int)
    table = volume_table(e, (d, h, w))
    assert np.array_equal(table[target], np.arange(d * h * w))  # out[A p + u] = in[p]


def test_pickling_round_trips():
    V = VolumeFlowSet.screws(OCTA, 1, 1)
    for obj in (V, V[4], V[4].psi(3), VolumeElement(gspaces.rot2dOnR3(4), translation=(1, 2, 3))):
        assert pickle.loads(pickle.dumps(obj)) == obj


# -- the 3D flow kind ------------------------------------------------------------------------------------------
def test_the_volume_kind_is_registered_apart_from_the_planar_ones():
    assert VOLUME_FLOW_KINDS == {"translation3d": TRANSLATION3D} and TRANSLATION3D.dimension == 3
    assert "translation3d" in ALL_FLOW_KINDS and "translation3d" not in FLOW_KINDS
    assert all(k.dimension == 2 for k in FLOW_KINDS.values())
    assert flow_kind("translation3d", dimension=3) is TRANSLATION3D
    with pytest.raises(ValueError, match="serves 3D gspaces"):
        flow_kind("translation3d")
    with pytest.raises(ValueError, match="dimension must be 2"):
        flow_kind("translation", dimension=4)
    from flow_escnn.experiments._parser import build_parser

    train = build_parser()._subparsers._group_actions[0].choices["train"]  # noqa: SLF001
    choices = {a.dest: a.choices for a in train._actions if a.choices}
    assert "translation3d" not in choices["flow"]


def test_the_volume_kind_model_flows_cover_its_rows():
    rows = TRANSLATION3D.parse("1:0:0,0:-2:1")
    assert rows == [(1, 0, 0), (0, -2, 1)]
    params, notes = TRANSLATION3D.default_params(rows)
    assert params == {"flow_radius": 2} and not notes
    V = TRANSLATION3D.model_flows(OCTA, **params)
    assert {tuple(v[:3]) for v in V.velocities} >= set(rows)
    smaller = TRANSLATION3D.model_flows(OCTA, flow_radius=1)
    assert not {tuple(v[:3]) for v in smaller.velocities} >= set(rows)  # control
    assert len(TRANSLATION3D.parse("1")) == 27 and TRANSLATION3D.key((1, 0, -1)) == "(1,0,-1)"
    for spec, why in [("1:0", "is not 'vx:vy:vz'"), ("-1", "radius must be >= 0"), ("1.5:0:0", "not an integer")]:
        with pytest.raises(ValueError, match=why):
            TRANSLATION3D.parse(spec)
    with pytest.raises(ValueError, match="needs a 3D gspace"):
        TRANSLATION3D.model_flows(gspaces.rot2dOnR2(4), flow_radius=1)
    with pytest.raises(ValueError, match="rotating velocity"):
        TRANSLATION3D.check(VolumeGenerator.about(OCTA, "z", 1))


def test_a_3d_gspace_round_trips_through_the_construction_spec_as_3d():
    """save_model's spec codec rebuilds a 3D gspace as the same 3D gspace (never as a wrong 2D one), including
    one whose subgroup id carries an O(3) adjustment (rot2dOnR3 about another axis); planar ones as before."""
    from flow_escnn.flows._spec import decode, encode

    tilted = gspaces.rot2dOnR3(4, adjoint=_group.o3_group().element((0, np.array([np.sqrt(0.5), 0.0, 0.0, np.sqrt(0.5)]))))
    for gs in (gspaces.octaOnR3(), gspaces.rot2dOnR3(4), tilted):
        back = decode(encode(gs))
        assert back == gs and back.dimensionality == 3 and back.fibergroup == gs.fibergroup
    planar = gspaces.rot2dOnR2(4)
    assert decode(encode(planar)) == planar
