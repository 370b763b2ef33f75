"""Transport of escnn fields by grid elements (flow_escnn.flows._transport).

The oracle is escnn itself: ``GeometricTensor(x, ft).transform(g).tensor``. escnn's fiber
matrices carry ~1e-16 round-off (e.g. its regular representation is built through a change
of basis), so agreement with the oracle is asserted to 1e-12 in float64; where the values
are only permuted, agreement is *exact* against the same oracle built from escnn's pieces
with rho(g) rounded to its exact 0/+-1 entries.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from flow_escnn._compat import enn, gspaces
from flow_escnn.flows import FlowGenerator, GridElement, TransportPlan, flow_sequence, transport
from flow_escnn.flows._transport import GatherTransport
from tests.oracles import quarter_turns, roll

C4 = gspaces.rot2dOnR2(4)
C8 = gspaces.rot2dOnR2(8)
D4 = gspaces.flipRot2dOnR2(4)

TOL = 1e-12


# ----------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------
def oracle(x: torch.Tensor, ft, g) -> torch.Tensor:
    """escnn's own action of fiber element g (rotation/reflection about the grid centre)."""
    return enn.GeometricTensor(x, ft).transform(g).tensor


def exact_oracle(x: torch.Tensor, ft, g) -> torch.Tensor:
    """escnn's transform with rho(g) rounded to exact integers (valid for multiples of 90 degrees)."""
    rho = np.asarray(ft.representation(g), dtype=np.float64)
    assert np.abs(rho - np.round(rho)).max() < 1e-9
    y = torch.einsum("oc,bchw->bohw", torch.as_tensor(np.round(rho), dtype=x.dtype), x)
    z = ft.gspace._interpolate_transform_basespace(y.numpy(), g)
    return torch.from_numpy(np.ascontiguousarray(z))


def coords(n: int):
    i, j = torch.meshgrid(torch.arange(n, dtype=torch.float64), torch.arange(n, dtype=torch.float64), indexing="ij")
    return j - (n - 1) / 2, (n - 1) / 2 - i


def ellipse(n: int, sx: float, sy: float, theta: float = 0.0) -> torch.Tensor:
    """Centred anisotropic Gaussian, its long axis rotated counter-clockwise by theta."""
    x, y = coords(n)
    c, s = math.cos(theta), math.sin(theta)
    xr, yr = c * x + s * y, -s * x + c * y
    return torch.exp(-(xr**2) / (2 * sx**2) - yr**2 / (2 * sy**2))


def naive_transport(x: torch.Tensor, ft, e: GridElement) -> torch.Tensor:
    """Pixel-by-pixel reference: y(p) = rho(g) x(A^-1 (p - u)), bilinear, periodic (slow, tiny grids only)."""
    gs = ft.gspace
    a = np.asarray(gs.basespace_action(e.g), dtype=np.float64).reshape(2, 2)
    rho = torch.as_tensor(np.asarray(ft.representation(e.g), dtype=np.float64))
    b, c, h, w = x.shape
    out = torch.zeros_like(x)
    for i in range(h):
        for j in range(w):
            p = np.array([j - (w - 1) / 2, (h - 1) / 2 - i])
            s = np.linalg.solve(a, p - e.translation)
            col, row = s[0] + (w - 1) / 2, (h - 1) / 2 - s[1]
            c0, r0 = math.floor(col), math.floor(row)
            fc, fr = col - c0, row - r0
            out[:, :, i, j] = (
                (1 - fr) * (1 - fc) * x[:, :, r0 % h, c0 % w]
                + (1 - fr) * fc * x[:, :, r0 % h, (c0 + 1) % w]
                + fr * (1 - fc) * x[:, :, (r0 + 1) % h, c0 % w]
                + fr * fc * x[:, :, (r0 + 1) % h, (c0 + 1) % w]
            )
    return torch.einsum("oc,bchw->bohw", rho, out)


def field_types(gs):
    """name -> (FieldType, whether every rho(g) of a 90-degree multiple is a permutation)."""
    if gs is C4:
        irrep = gs.irrep(1)
        quotients = {"quotient": [gs.quotient_repr(2)]}
    else:
        irrep = gs.irrep(1, 1)
        quotients = {"quotient-rot": [gs.quotient_repr((None, 2))], "quotient-flip": [gs.quotient_repr((0, 1))]}
    reps = {
        "trivial": ([gs.trivial_repr], True),
        "regular": ([gs.regular_repr, gs.regular_repr], True),
        **{k: (v, True) for k, v in quotients.items()},
        "irrep": ([irrep], False),
        "mixed": ([gs.trivial_repr, irrep, gs.regular_repr], False),
    }
    return {k: (enn.FieldType(gs, r), perm) for k, (r, perm) in reps.items()}


CASES = [
    pytest.param(gs, name, n, id=f"{gname}-{name}-{n}x{n}")
    for gs, gname in ((C4, "C4"), (D4, "D4"))
    for name in field_types(gs)
    for n in (5, 6)
]


# ----------------------------------------------------------------------------------------------
# agreement with escnn's oracle, exact cases
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("gs,name,n", CASES)
def test_matches_escnn_oracle_for_every_group_element(gs, name, n, rng):
    ft, is_perm = field_types(gs)[name]
    x = torch.randn(2, ft.size, n, n, dtype=torch.float64, generator=rng)
    for g in gs.fibergroup.elements:
        plan = TransportPlan(ft, [GridElement(gs, g)], (n, n))
        assert plan.exact
        # rho(g) of a 90-degree multiple is a signed permutation; the plan gathers iff no sign flips
        signs_free = bool(np.all(np.round(np.asarray(ft.representation(g))) >= 0))
        assert plan.fiber_is_permutation == signs_free
        if is_perm:
            assert signs_free
        y = plan(x.unsqueeze(1)).squeeze(1)
        assert (y - oracle(x, ft, g)).abs().max().item() <= TOL, g
        if is_perm:
            # values are only moved around: bit-exact
            assert torch.equal(y, exact_oracle(x, ft, g)), g
            assert torch.equal(torch.sort(y.flatten()).values, torch.sort(x.flatten()).values)
        else:
            assert (y - exact_oracle(x, ft, g)).abs().max().item() <= TOL, g


@pytest.mark.parametrize("gs,name,n", [c for c in CASES if c.values[1] in ("regular", "mixed")])
def test_roto_translation_is_rotation_then_roll(gs, name, n, rng):
    """(u, g) = (u, e)(0, g): rotate/reflect about the centre first, then translate."""
    ft, _ = field_types(gs)[name]
    x = torch.randn(1, ft.size, n, n, dtype=torch.float64, generator=rng)
    for g in gs.fibergroup.elements:
        for u in ((1, 0), (-2, 3)):
            y = transport(x, ft, GridElement(gs, g, u))
            assert (y - roll(oracle(x, ft, g), *u)).abs().max().item() <= TOL, (g, u)
            seq = transport(transport(x, ft, GridElement(gs, g)), ft, GridElement(gs, None, u))
            if name == "regular":
                assert torch.equal(y, seq), (g, u)
            else:
                assert (y - seq).abs().max().item() <= TOL, (g, u)


def test_float32_exact_path_is_bit_exact(rng):
    ft = enn.FieldType(C4, [C4.trivial_repr, C4.regular_repr])
    x = torch.randn(2, ft.size, 6, 6, generator=rng)
    for g in C4.fibergroup.elements:
        y = transport(x, ft, GridElement(C4, g, (1, -2)))
        assert y.dtype == torch.float32
        assert torch.equal(y, roll(exact_oracle(x, ft, g), 1, -2))


# ----------------------------------------------------------------------------------------------
# the coordinate convention
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(5, 5), (6, 6), (5, 7), (4, 6)])
def test_integer_translation_is_torch_roll(shape, rng):
    ft = enn.FieldType(C4, [C4.regular_repr])
    x = torch.randn(2, ft.size, *shape, dtype=torch.float64, generator=rng)
    for vx, vy in [(1, 0), (0, 1), (-1, 2), (3, -4), (9, -11), (0, 0)]:
        y = transport(x, ft, GridElement(C4, None, (vx, vy)))
        assert torch.equal(y, roll(x, vx, vy)), (vx, vy)


def test_translation_and_rotation_directions():
    """x along the last axis, y up, rotations counter-clockwise about the grid centre."""
    ft = enn.FieldType(C4, [C4.trivial_repr])
    x = torch.zeros(1, 1, 5, 5, dtype=torch.float64)
    x[0, 0, 2, 3] = 1.0  # the point (x, y) = (1, 0)
    moved = transport(x, ft, GridElement(C4, None, (1, 2)))  # -> (2, 2): row 0, column 4
    assert moved[0, 0, 0, 4] == 1 and moved.sum() == 1
    turned = transport(x, ft, GridElement(C4, C4.fibergroup.element(1)))  # +90 deg -> (0, 1): row 1, column 2
    assert turned[0, 0, 1, 2] == 1 and turned.sum() == 1
    assert torch.equal(turned, quarter_turns(x, 1))
    # the D4 flip is x -> -x: a mirror along the last axis
    flipped = transport(x, enn.FieldType(D4, [D4.trivial_repr]), GridElement(D4, D4.fibergroup.element((1, 0))))
    assert torch.equal(flipped, torch.flip(x, dims=(-1,)))


def test_non_square_grid(rng):
    ft = enn.FieldType(D4, [D4.trivial_repr])
    x = torch.randn(1, 1, 4, 6, dtype=torch.float64, generator=rng)
    r180 = D4.fibergroup.element((0, 2))
    assert torch.equal(transport(x, ft, GridElement(D4, r180)), torch.flip(x, dims=(-2, -1)))
    assert torch.equal(transport(x, ft, GridElement(D4, D4.fibergroup.element((1, 0)))), torch.flip(x, dims=(-1,)))
    for g in (D4.fibergroup.element((0, 1)), D4.fibergroup.element((1, 1))):
        with pytest.raises(ValueError, match=r"needs a square grid; got H=4, W=6"):
            transport(x, ft, GridElement(D4, g))


@pytest.mark.parametrize("gs", [C4, D4], ids=["C4", "D4"])
@pytest.mark.parametrize("n", [5, 6])
def test_transport_is_a_group_action(gs, n, rng):
    """transport(a @ b) == transport(a) o transport(b), exactly, for integral elements."""
    ft = enn.FieldType(gs, [gs.regular_repr, gs.trivial_repr])
    x = torch.randn(1, ft.size, n, n, dtype=torch.float64, generator=rng)
    elems = list(gs.fibergroup.elements)
    npr = np.random.default_rng(3)
    for _ in range(6):
        a = GridElement(gs, elems[npr.integers(len(elems))], tuple(npr.integers(-3, 4, size=2)))
        b = GridElement(gs, elems[npr.integers(len(elems))], tuple(npr.integers(-3, 4, size=2)))
        assert torch.equal(transport(x, ft, a @ b), transport(transport(x, ft, b), ft, a)), (a, b)
        assert torch.equal(transport(transport(x, ft, a), ft, a.inverse()), x)


# ----------------------------------------------------------------------------------------------
# batched plans
# ----------------------------------------------------------------------------------------------
def test_batched_plan_exact_matches_per_slice_oracle(rng):
    ft = enn.FieldType(D4, [D4.regular_repr, D4.irrep(1, 1)])
    gs, n = D4, 6
    elems = [
        GridElement(gs, None, (0, 0)),
        GridElement(gs, gs.fibergroup.element((0, 1)), (1, -1)),
        GridElement(gs, gs.fibergroup.element((1, 0)), (0, 2)),
        GridElement(gs, gs.fibergroup.element((1, 3)), (-2, 0)),
        GridElement(gs, gs.fibergroup.element((0, 2)), (0, 0)),
    ]
    plan = TransportPlan(ft, elems, (n, n), interpolation="bilinear")
    assert plan.exact and not plan.fiber_is_permutation
    x = torch.randn(3, len(elems), ft.size, n, n, dtype=torch.float64, generator=rng)
    y = plan(x)
    for m, e in enumerate(elems):
        ref = roll(oracle(x[:, m], ft, e.g), *(int(v) for v in e.translation))
        assert (y[:, m] - ref).abs().max().item() <= TOL, e
        assert (y[:, m] - transport(x[:, m], ft, e, interpolation="bilinear")).abs().max().item() <= TOL, e
    # arbitrary leading dims
    x2 = torch.randn(2, 3, len(elems), ft.size, n, n, dtype=torch.float64, generator=rng)
    assert torch.equal(plan(x2), plan(x2.reshape(6, *x2.shape[2:])).reshape(x2.shape))


def test_batched_plan_bilinear_matches_per_slice_reference(rng):
    """Mixed plan (exact and interpolated slices) against a pixel-by-pixel reference."""
    gs, n = C8, 5
    ft = enn.FieldType(gs, [gs.regular_repr, gs.irrep(1)])
    elems = [
        GridElement(gs, None, (0, 0)),
        GridElement(gs, gs.fibergroup.element(2), (1, 0)),  # exact
        GridElement(gs, gs.fibergroup.element(1)),  # 45 degrees
        GridElement(gs, gs.fibergroup.element(3), (1, -1)),
        GridElement(gs, None, (0.5, 0.25)),  # fractional translation
    ]
    plan = TransportPlan(ft, elems, (n, n), interpolation="bilinear")
    assert not plan.exact
    x = torch.randn(2, len(elems), ft.size, n, n, dtype=torch.float64, generator=rng)
    y = plan(x)
    for m, e in enumerate(elems):
        assert (y[:, m] - naive_transport(x[:, m], ft, e)).abs().max().item() <= TOL, e
        assert (y[:, m] - transport(x[:, m], ft, e, interpolation="bilinear")).abs().max().item() <= TOL, e
    # the exact slices of a mixed plan stay exact permutations
    exact_only = TransportPlan(ft, elems[:2], (n, n))
    assert exact_only.exact
    assert (y[:, :2] - exact_only(x[:, :2])).abs().max().item() <= TOL


def test_fractional_translation_is_neighbour_average(rng):
    ft = enn.FieldType(C4, [C4.trivial_repr])
    x = torch.randn(1, 1, 5, 6, dtype=torch.float64, generator=rng)
    y = transport(x, ft, GridElement(C4, None, (0.5, 0)), interpolation="bilinear")
    assert torch.allclose(y, 0.5 * (x + roll(x, 1, 0)), atol=1e-14, rtol=0)
    y = transport(x, ft, GridElement(C4, None, (0, -0.25)), interpolation="bilinear")
    assert torch.allclose(y, 0.75 * x + 0.25 * roll(x, 0, -1), atol=1e-14, rtol=0)


# ----------------------------------------------------------------------------------------------
# bilinear (approximate) rotations
# ----------------------------------------------------------------------------------------------
# Measured (escnn 1.0.11, float64) on the centred ellipse sigma = (1.8, 1.2) px, inside the
# inscribed disc, relative to max|x|, worst over 45/135/225/315 degrees:
#   vs escnn's oracle (order-2 spline, zero padding):   7x7: 0.052   8x8: 0.091
#   vs the analytically rotated ellipse:                7x7: 0.066   8x8: 0.104
#   vs the ellipse rotated the WRONG way (sanity):      7x7: 0.237   8x8: 0.300
# Even grids are worse: the centre lies between pixels, so every sample is interpolated.
BILINEAR_BOUNDS = {7: 0.08, 8: 0.13}
WRONG_WAY_AT_LEAST = 0.2


@pytest.mark.parametrize("n", [7, 8])
@pytest.mark.parametrize("rep", ["trivial", "regular"])
def test_bilinear_45_degrees_close_to_oracle_on_smooth_field(n, rep):
    ft = enn.FieldType(C8, [C8.trivial_repr] if rep == "trivial" else [C8.regular_repr])
    coef = torch.linspace(0.5, 1.5, ft.size, dtype=torch.float64).view(1, -1, 1, 1)
    x = coef * ellipse(n, 1.8, 1.2)[None, None]
    amp = x.abs().max()
    xx, yy = coords(n)
    disc = (xx**2 + yy**2) <= ((n - 1) / 2) ** 2
    for k in (1, 3, 5, 7):
        g = C8.fibergroup.element(k)
        plan = TransportPlan(ft, [GridElement(C8, g)], (n, n))
        assert not plan.exact
        y = plan(x.unsqueeze(1)).squeeze(1)
        rho = torch.as_tensor(np.asarray(ft.representation(g), dtype=np.float64))
        truth = torch.einsum("oc,bchw->bohw", rho, coef * ellipse(n, 1.8, 1.2, k * math.pi / 4)[None, None])
        wrong = torch.einsum("oc,bchw->bohw", rho, coef * ellipse(n, 1.8, 1.2, -k * math.pi / 4)[None, None])
        err_oracle = ((y - oracle(x, ft, g)).abs() * disc).max() / amp
        err_truth = ((y - truth).abs() * disc).max() / amp
        err_wrong = ((y - wrong).abs() * disc).max() / amp
        assert err_oracle <= BILINEAR_BOUNDS[n], (k, err_oracle)
        assert err_truth <= BILINEAR_BOUNDS[n] + 0.02, (k, err_truth)
        assert err_wrong >= WRONG_WAY_AT_LEAST, (k, err_wrong)


# Measured: 8 x 45 degrees vs the original, relative to max|x| (whole grid): 7x7: 0.248, 8x8: 0.394;
# 4 x 45 degrees vs the exact 180-degree transport: 7x7: 0.190, 8x8: 0.252 (the resampling blur compounds).
ROUND_TRIP_BOUNDS = {7: (0.30, 0.23), 8: (0.45, 0.30)}


@pytest.mark.parametrize("n", [7, 8])
def test_bilinear_eight_45_degree_steps_return_close_to_start(n):
    ft = enn.FieldType(C8, [C8.regular_repr])
    coef = torch.linspace(0.5, 1.5, ft.size, dtype=torch.float64).view(1, -1, 1, 1)
    x = coef * ellipse(n, 1.8, 1.2)[None, None]
    amp = x.abs().max()
    step = TransportPlan(ft, [GridElement(C8, C8.fibergroup.element(1))], (n, n))
    y, trajectory = x.unsqueeze(1), []
    for _ in range(8):
        y = step(y)
        trajectory.append(y.squeeze(1))
    full_turn, half_turn = ROUND_TRIP_BOUNDS[n]
    assert (trajectory[-1] - x).abs().max() / amp <= full_turn
    exact_180 = transport(x, ft, GridElement(C8, C8.fibergroup.element(4)))
    assert (trajectory[3] - exact_180).abs().max() / amp <= half_turn
    # and it did move in between: after 90 degrees it is the exact 90-degree rotation, not the start
    exact_90 = transport(x, ft, GridElement(C8, C8.fibergroup.element(2)))
    assert (trajectory[1] - exact_90).abs().max() < (trajectory[1] - x).abs().max()


# ----------------------------------------------------------------------------------------------
# gradients
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "gs,reps,elements",
    [
        pytest.param(C4, "regular", [((0, 1), (1, 0)), ((0, 3), (0, -1))], id="exact-permutation"),
        pytest.param(C4, "irrep", [((0, 1), (1, 0)), ((0, 2), (0, 0))], id="exact-dense"),
        pytest.param(C8, "regular", [((0, 1), (0, 0)), ((0, 0), (0.5, 0.25))], id="bilinear"),
        pytest.param(C8, "regular", [((0, 1), (0, 0)), ((0, 0), (0.5, 0.25))], id="bicubic"),
    ],
)
def test_gradcheck(gs, reps, elements, request):
    rep = gs.regular_repr if reps == "regular" else gs.irrep(1)
    ft = enn.FieldType(gs, [rep])
    elems = [GridElement(gs, gs.fibergroup.element(k[1]), u) for k, u in elements]
    interpolation = "bicubic" if request.node.callspec.id.endswith("bicubic") else "bilinear"
    plan = TransportPlan(ft, elems, (4, 4), interpolation=interpolation)
    x = torch.randn(1, len(elems), ft.size, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    x.requires_grad_(True)
    assert torch.autograd.gradcheck(plan, (x,), eps=1e-6, atol=1e-8)


def test_interpolated_plan_shares_tables_of_equal_elements(rng):
    """Slices with equal elements share one interpolation table (a co-moving plan over T*V elements
    holds few distinct ones), and the shared plan transports every slice, window and row selection
    exactly as one-element plans do, forward and backward."""
    ft = enn.FieldType(C8, [C8.regular_repr])
    ks = [1, 3, 1, 0, 3, 5, 1]
    elems = [GridElement(C8, C8.fibergroup.element(k)) for k in ks]
    plan = TransportPlan(ft, elems, (7, 7), interpolation="bicubic", pad=1)
    assert plan.num_slices == 7 and plan.index.shape[0] == len(set(ks)) == plan.t_index.shape[0]
    assert plan.table_rows.tolist() == [0, 1, 0, 2, 1, 3, 0]
    x = torch.randn(2, len(elems), ft.size, 7, 7, dtype=torch.float64, generator=rng, requires_grad=True)
    g = torch.randn(2, len(elems), ft.size, 9, 9, dtype=torch.float64, generator=rng)
    single = [TransportPlan(ft, [e], (7, 7), interpolation="bicubic", pad=1) for e in elems]
    want = torch.cat([p(x[:, m : m + 1]) for m, p in enumerate(single)], 1)
    assert torch.equal(plan(x), want)
    assert torch.equal(plan(x[:, 2:5], start=2), want[:, 2:5])
    rows = torch.tensor([[5, 0], [2, 2]])
    assert torch.equal(plan(x[:, :1].unsqueeze(1), rows=rows), torch.stack(
        [torch.cat([single[r](x[:, :1]) for r in row.tolist()], 1) for row in rows], 1))
    # backward: the transposed tables of a single plan are padded to fewer taps (another summation order)
    grad, grad_want = torch.autograd.grad(plan(x), x, g)[0], torch.autograd.grad(want, x, g)[0]
    assert float((grad - grad_want).abs().max()) <= 1e-12
    # control: the same comparison flags tables assigned to the wrong slices
    wrong = GatherTransport(plan.index.long(), plan.weights, plan.perm, None, ft.size, (7, 7), pad=1,
                            table_rows=plan.table_rows.roll(1))
    assert not torch.allclose(wrong(x), want)
    with pytest.raises(ValueError, match="table_rows must be 7 rows of 0..3"):
        GatherTransport(plan.index.long(), plan.weights, plan.perm, None, ft.size, (7, 7), pad=1,
                        table_rows=torch.tensor([0, 1, 4, 0, 0, 0, 0]))


@pytest.mark.parametrize("interpolation", ["bilinear", "bicubic", "cubic6"])
def test_interpolated_transport_backward_is_deterministic(interpolation, rng, deterministic_grads):
    """The interpolated backward (a product with the transposed tables, no scatter_add) runs under
    torch.use_deterministic_algorithms, repeats bit for bit, and is the adjoint of the forward."""
    ft = enn.FieldType(C8, [C8.regular_repr])
    plan = TransportPlan(ft, [GridElement(C8, C8.fibergroup.element(k)) for k in (1, 3)], (7, 7),
                         interpolation=interpolation, pad=1)
    x = torch.randn(2, 2, ft.size, 7, 7, dtype=torch.float64, generator=rng, requires_grad=True)
    g = torch.randn(2, 2, ft.size, 9, 9, dtype=torch.float64, generator=rng)
    a, b = deterministic_grads(plan, x, g)
    assert torch.equal(a, b)
    # adjoint: <S x, g> = <x, S^T g> for an independent x
    z = torch.randn(x.shape, dtype=torch.float64, generator=rng)
    assert abs(float((plan(z) * g).sum() - (z * a).sum())) <= 1e-10 * float(g.abs().sum())


def test_exact_transport_gradient_is_inverse_transport(rng):
    """For an orthogonal (permutation) action the adjoint is the inverse: grad = transport(w, e^-1)."""
    ft = enn.FieldType(D4, [D4.regular_repr])
    e = GridElement(D4, D4.fibergroup.element((1, 1)), (2, -1))
    x = torch.randn(2, ft.size, 5, 5, dtype=torch.float64, generator=rng, requires_grad=True)
    w = torch.randn(2, ft.size, 5, 5, dtype=torch.float64, generator=rng)
    (grad,) = torch.autograd.grad((transport(x, ft, e) * w).sum(), x)
    assert torch.equal(grad, transport(w, ft, e.inverse()))


# ----------------------------------------------------------------------------------------------
# flow_sequence
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("velocity", [((1, -1), 0), ((0, 0), 1), ((1, 0), 1)], ids=["T", "R", "RT"])
@pytest.mark.parametrize("start", [0, 2])
def test_flow_sequence_frame_by_frame(velocity, start, rng):
    ft = enn.FieldType(C4, [C4.regular_repr])
    mu = FlowGenerator(C4, *velocity)
    x = torch.randn(2, 4, ft.size, 5, 5, dtype=torch.float64, generator=rng)
    y = flow_sequence(x, ft, mu, start=start)
    for t in range(4):
        assert torch.equal(y[:, t], transport(x[:, t], ft, mu.psi(start + t)))
    if start == 0:
        assert torch.equal(y[:, 0], x[:, 0])  # frame 0 is untouched
    if velocity[1] == 0:  # pure translation: frame t moves by t * v
        for t in range(4):
            assert torch.equal(y[:, t], roll(x[:, t], (start + t) * velocity[0][0], (start + t) * velocity[0][1]))


# ----------------------------------------------------------------------------------------------
# bad input
# ----------------------------------------------------------------------------------------------
def test_bad_input_messages(rng):
    ft = enn.FieldType(C4, [C4.regular_repr])
    x = torch.randn(2, 4, ft.size, 5, 5, generator=rng)
    mu = FlowGenerator(C4, (1, 0))
    with pytest.raises(ValueError, match="T=0"):
        flow_sequence(x[:, :0], ft, mu)
    with pytest.raises(ValueError, match=r"sequence \[B, T, C, H, W\]"):
        flow_sequence(x[:, 0], ft, mu)
    with pytest.raises(ValueError, match=r"transport expects a tensor \[B, C, H, W\]"):
        transport(x, ft, mu.element())
    plan = TransportPlan(ft, [mu.element()] * 4, (5, 5))
    with pytest.raises(ValueError, match=r"expected a tensor \[..., M=4, C=4, H=5, W=5\]"):
        plan(x[:, :3])
    with pytest.raises(ValueError, match="at least one element"):
        TransportPlan(ft, [], (5, 5))
    with pytest.raises(TypeError, match="must be GridElement"):
        TransportPlan(ft, [(1, 0)], (5, 5))
    with pytest.raises(ValueError, match="is on gspace"):
        TransportPlan(ft, [GridElement(C8)], (5, 5))
    with pytest.raises(ValueError, match="interpolation must be one of"):
        TransportPlan(enn.FieldType(C8, [C8.trivial_repr]), [GridElement(C8, C8.fibergroup.element(1))], (5, 5), "nearest")
    with pytest.raises(ValueError, match="grid_shape H must be a positive integer"):
        TransportPlan(ft, [mu.element()], (0, 5))


# ----------------------------------------------------------------------------------------------
# higher-order interpolation
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("interpolation", ["bilinear", "bicubic", "cubic6"])
def test_interpolation_weights_interpolate_and_sum_to_one(interpolation):
    from flow_escnn.flows._tables import interpolation_kernel, spatial_table

    radius, kernel = interpolation_kernel(interpolation)
    taps = np.arange(1 - radius, radius + 1)
    for frac in np.linspace(0, 1, 11):
        assert abs(kernel(frac - taps).sum() - 1) < 1e-12
    assert kernel(np.array([0.0]))[0] == 1 and np.all(kernel(np.array([-1.0, 1.0, 2.0, -2.0])) == 0)
    element = GridElement(C8, C8.fibergroup.element(1), (0, 0))
    idx, wts, exact = spatial_table(element, 9, 9, interpolation)
    assert not exact and idx.shape == wts.shape == (81, (2 * radius) ** 2)
    assert np.allclose(wts.sum(1), 1, atol=1e-12)


def test_bicubic_reproduces_quadratics_where_bilinear_cannot():
    """Keys' kernel (a = -1/2) is exact on quadratic polynomials: rotating one by 45 degrees by the
    transport equals the analytically rotated polynomial at pixels whose taps do not wrap. The
    bilinear control, exact only on linear functions, must miss by far more."""
    n = 21
    c = (n - 1) / 2
    i, j = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    x, y = j - c, c - i

    def quad(px, py):
        return 0.3 + 0.2 * px - 0.1 * py + 0.05 * px**2 - 0.03 * px * py + 0.02 * py**2

    ft = enn.FieldType(C8, [C8.trivial_repr])
    element = GridElement(C8, C8.fibergroup.element(1), (0, 0))
    theta = -math.pi / 4  # the source of output pixel p is R(-45 deg) p
    expected = quad(math.cos(theta) * x - math.sin(theta) * y, math.sin(theta) * x + math.cos(theta) * y)
    inner = torch.from_numpy(x**2 + y**2 <= (c - 3) ** 2)  # taps of these pixels stay on the grid
    f = torch.from_numpy(quad(x, y))[None, None, None]
    errors = {}
    for interpolation in ("bicubic", "bilinear"):
        out = TransportPlan(ft, [element], (n, n), interpolation=interpolation).double()(f)[0, 0, 0]
        errors[interpolation] = float((out - torch.from_numpy(expected)).abs()[inner].max())
    assert errors["bicubic"] < 1e-10
    assert errors["bilinear"] > 1e-3


def test_cubic6_reproduces_cubics_where_bicubic_cannot():
    """Keys' six-point kernel is fourth-order: exact on cubic polynomials (rotated by 45 degrees, pixels whose
    36 taps stay on the grid); bicubic, exact only up to quadratics, is the control."""
    n = 21
    c = (n - 1) / 2
    i, j = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    x, y = j - c, c - i

    def cubic(px, py):
        return 0.3 + 0.2 * px - 0.05 * px**2 + 0.02 * px * py + 0.004 * px**3 - 0.003 * px * py**2 + 0.002 * py**3

    ft = enn.FieldType(C8, [C8.trivial_repr])
    element = GridElement(C8, C8.fibergroup.element(1), (0, 0))
    theta = -math.pi / 4
    expected = torch.from_numpy(cubic(math.cos(theta) * x - math.sin(theta) * y, math.sin(theta) * x + math.cos(theta) * y))
    inner = torch.from_numpy(x**2 + y**2 <= (c - 4) ** 2)
    f = torch.from_numpy(cubic(x, y))[None, None, None]
    errors = {i: float((TransportPlan(ft, [element], (n, n), interpolation=i).double()(f)[0, 0, 0] - expected)
                       .abs()[inner].max()) for i in ("cubic6", "bicubic")}
    assert errors["cubic6"] < 1e-10
    assert errors["bicubic"] > 1e-4


@pytest.mark.parametrize("interpolation, bound", [("cubic6", 0.005), ("bicubic", 0.01), ("bilinear", None)])
def test_rotation_flow_error_of_a_fernn_at_45_degrees(interpolation, bound):
    """The measured bound of ``benchmarks/rotation_accuracy.py``: a C8 FERNN, analytic blobs
    rotating 45 degrees per frame, co-moving mode, errors at frames with an exact output
    transport. cubic6 (the default) measures 0.0013 and bicubic 0.0049 worst over 9 frames
    (escnn's own static error at 45 degrees: 0.024); bilinear (the control) 0.034."""
    from benchmarks.rotation_accuracy import flow_errors

    worst = max(flow_errors(interpolation, "comoving", 9).values())
    if bound is not None:
        assert worst <= bound
    else:
        assert worst > 0.01  # the same bound flags bilinear


@pytest.mark.parametrize("interpolation", ["bilinear", "cubic6", None])
@pytest.mark.parametrize("reps", ["regular", "irrep"])
def test_transport_with_reduce_is_the_reduced_transport(interpolation, reps, rng):
    """``plan(x, reduce=...)`` equals pooling ``plan(x)`` over the slice axis (interpolated permutation
    fibers pool inside the resampling's layout; dense fibers and exact plans pool after): max bit for bit,
    gradients too; mean to 1e-12. Control: pooling over the wrong slices is flagged. Bad calls are refused."""
    from flow_escnn.nn._pooling import reduce_velocities

    ft = enn.FieldType(C8, [C8.regular_repr] * 2 if reps == "regular" else [C8.irrep(1)] * 2)
    ks = (1, 3, 0, 2, 5, 1) if interpolation else (0, 2, 4, 6, 2, 0)
    plan = TransportPlan(ft, [GridElement(C8, C8.fibergroup.element(k)) for k in ks], (7, 7),
                         interpolation=interpolation or "bicubic", pad=1)
    assert plan.exact == (interpolation is None)
    x = torch.randn(2, 3, ft.size, 7, 7, dtype=torch.float64, generator=rng, requires_grad=True)
    for kwargs in ({"start": 2}, {"rows": torch.tensor([4, 0, 1])}):
        for mode in ("max", "mean"):
            got, want = plan(x, reduce=mode, **kwargs), reduce_velocities(plan(x, **kwargs), mode)
            g = torch.randn(want.shape, dtype=torch.float64, generator=rng)
            grad, grad_want = (torch.autograd.grad(y, x, g)[0] for y in (got, want))
            if mode == "max":
                assert torch.equal(got, want) and torch.equal(grad, grad_want)
            else:
                assert float((got - want).detach().abs().max()) <= 1e-12 and float((grad - grad_want).abs().max()) <= 1e-12
            other = reduce_velocities(plan(x, rows=torch.tensor([4, 0, 2])), mode)
            assert float((got - other).detach().abs().max()) > 1e-3  # control
    one = TransportPlan(ft, [GridElement(C8, C8.fibergroup.element(ks[0]))], (7, 7),
                        interpolation=interpolation or "bicubic", pad=1)  # a single slice, no selection
    assert torch.equal(one(x[:, :1], reduce="max"), one(x[:, :1])[:, 0])
    with pytest.raises(ValueError, match="reduce must be one of"):
        plan(x, start=2, reduce="sum")
    with pytest.raises(ValueError, match="pass 1-D rows"):
        plan(x[:, :1].unsqueeze(1), rows=torch.tensor([[0, 1], [2, 3]]), reduce="max")


# ----------------------------------------------------------------------------------------------
# compacted product tables (flows._resample.product_tables)
# ----------------------------------------------------------------------------------------------
def test_compacted_products_are_the_padded_ones(rng):
    """The C8 45-degree tables of 5 slices (exact rows among them, and S^T padded with zero weights), compacted to
    their nonzero taps with per-row offsets: the padded products' values and backward, to float64 rounding.
    Control: the same comparison flags a compaction that drops one nonzero tap."""
    from flow_escnn.flows._resample import block_table, compact_table, product_tables, sparse_resample

    field = enn.FieldType(C8, [C8.regular_repr])
    plan = TransportPlan(field, [GridElement(C8, C8.fibergroup.element(k % 8)) for k in (-2, -1, 0, 1, 2)], (9, 9),
                         interpolation="bilinear")
    tables = plan.interpolation_tables()
    n = 81
    padded = (block_table(tables[0], tables[1], n), block_table(tables[2], tables[3], n))
    fwd, adj = product_tables(tables, n, n, torch.float64)
    assert fwd[0].numel() < padded[0][0].numel() and adj[0].numel() < padded[1][0].numel()
    x = torch.randn(5 * n, 6, generator=rng, dtype=torch.float64, requires_grad=True)
    g = torch.randn(5 * n, 6, generator=rng, dtype=torch.float64)

    def run(table, transposed):
        y = sparse_resample(x, table, transposed)
        return y, torch.autograd.grad(y, x, g)[0]

    want = run(*padded)
    got = run(fwd, adj)
    assert max(float((a - b).detach().abs().max()) for a, b in zip(got, want)) < 1e-13
    # control: one nonzero tap dropped from each table
    def drop(table):
        index, weights, offsets = compact_table(table)
        return index, torch.cat([weights[:-1], weights.new_zeros(1)]), offsets

    bad = run(drop(padded[0]), drop(padded[1]))
    assert max(float((a - b).detach().abs().max()) for a, b in zip(bad, want)) > 1e-3


def test_interpolated_transport_caches_its_products_per_selection(rng):
    """A co-moving table read by rows (one period of time steps): each selection's products are built once and
    reused, the results those of freshly built (uncached) products. Control: the rows of another step differ."""
    from flow_escnn.flows import _transport as tr

    field = enn.FieldType(C8, [C8.regular_repr])
    plan = TransportPlan(field, [GridElement(C8, C8.fibergroup.element(k % 8)) for k in range(8)], (7, 7),
                         interpolation="bilinear")
    x = torch.randn(2, 3, 8, 7, 7, generator=rng, dtype=torch.float64)
    rows = [torch.tensor([t, (t + 1) % 8, (t + 3) % 8]) for t in range(8)]
    first = [plan(x, rows=r) for r in rows]
    cache = plan.__dict__["_product_cache"]
    assert len(cache) == 8
    built = {k: id(v) for k, v in cache.items()}
    again = [plan(x, rows=r) for r in rows]
    assert {k: id(v) for k, v in cache.items()} == built  # nothing rebuilt
    fresh = []
    for r in rows:
        plan.__dict__["_product_cache"] = {}
        fresh.append(plan(x, rows=r))
    assert all(torch.equal(a, b) and torch.equal(a, c) for a, b, c in zip(first, again, fresh))
    assert tr.PRODUCT_CACHE_SIZE >= 8
    assert float((first[1] - first[2]).abs().max()) > 1e-3
