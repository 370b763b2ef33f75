"""SteerableConv: periodic padding, exact symmetrised filters, export, state_dict, expand-once API.

Expected values are built independently of the code under test: translations with
``torch.roll`` (package convention: a translation by ``(vx, vy)`` is
``torch.roll(shifts=(-vy, vx), dims=(-2, -1))``), rotations/reflections with escnn's
``GeometricTensor.transform`` oracle, and filter symmetries with explicit index
permutations computed from escnn's ``basespace_action``. Every check is paired with a
control on which the *same* check must fail.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from flow_escnn._compat import enn, gspaces, group
from flow_escnn.nn import SteerableConv
from tests.oracles import roll

C4 = gspaces.rot2dOnR2(4)
C8 = gspaces.rot2dOnR2(8)
D4 = gspaces.flipRot2dOnR2(4)
TRIVIAL = gspaces.trivialOnR2()


def ft(gs, *reprs):
    return enn.FieldType(gs, list(reprs))


def escnn_transform(x: torch.Tensor, field_type, g) -> torch.Tensor:
    """escnn's own oracle for the action of a fiber element on a field tensor [N, C, H, W]."""
    return enn.GeometricTensor(x, field_type).transform(g).tensor


def grid_exact(gs, g) -> bool:
    a = np.asarray(gs.basespace_action(g), dtype=np.float64)
    return bool(np.allclose(a, np.round(a), atol=1e-9))


def kernel_constraint_error(filt: torch.Tensor, in_type, out_type) -> float:
    """max over grid-exact g of |rho_out(g) k(A(g)^-1 y) rho_in(g)^-1 - k(y)| (explicit tap loop)."""
    gs = in_type.gspace
    k = filt.shape[-1]
    c0 = k // 2
    worst = 0.0
    for g in gs.fibergroup.elements:
        if not grid_exact(gs, g):
            continue
        a = np.round(np.asarray(gs.basespace_action(g), dtype=np.float64)).astype(int)
        a_inv = np.round(np.linalg.inv(a)).astype(int)
        ro = torch.as_tensor(np.asarray(out_type.representation(g)), dtype=filt.dtype)
        ri_inv = torch.as_tensor(np.asarray(in_type.representation(~g)), dtype=filt.dtype)
        rebuilt = torch.empty_like(filt)
        for r in range(k):
            for c in range(k):
                sx, sy = a_inv @ np.array([c - c0, c0 - r])  # tap offset (x right, y up)
                rebuilt[:, :, r, c] = ro @ filt[:, :, c0 - sy, c0 + sx] @ ri_inv
        worst = max(worst, (rebuilt - filt).abs().max().item())
    return worst


# ----------------------------------------------------------------------------------------------
# translations: circular padding commutes exactly with torch.roll
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shift", [(1, 0), (0, -1), (2, 3), (-3, 1)])
def test_circular_padding_commutes_with_roll_and_zero_padding_does_not(shift, rng):
    in_t, out_t = ft(C4, C4.trivial_repr, C4.regular_repr), ft(C4, C4.regular_repr, C4.trivial_repr)
    x = torch.randn(2, in_t.size, 6, 7, generator=rng, dtype=torch.float64)
    errs = {}
    for mode in ("circular", "zeros"):
        conv = SteerableConv(in_t, out_t, 3, padding_mode=mode).double()
        with torch.no_grad():
            y = conv(enn.GeometricTensor(x, in_t)).tensor
            y_shift = conv(enn.GeometricTensor(roll(x, *shift), in_t)).tensor
        errs[mode] = (y_shift - roll(y, *shift)).abs().max().item()
    assert errs["circular"] <= 1e-12, errs
    assert errs["zeros"] > 1e-2, errs  # control: zero padding breaks the torus symmetry, same check flags it


# ----------------------------------------------------------------------------------------------
# exact rotations / reflections: symmetrised filter
# ----------------------------------------------------------------------------------------------
STATIC_CASES = [
    ("C4-regular", C4, lambda gs: (ft(gs, gs.trivial_repr, gs.regular_repr),
                                   ft(gs, gs.regular_repr, gs.regular_repr, gs.trivial_repr))),
    ("C4-irreps", C4, lambda gs: (ft(gs, *gs.irreps), ft(gs, gs.regular_repr, *gs.irreps))),
    ("D4-regular", D4, lambda gs: (ft(gs, gs.trivial_repr, gs.regular_repr), ft(gs, gs.regular_repr, gs.trivial_repr))),
    ("C8-regular", C8, lambda gs: (ft(gs, gs.regular_repr), ft(gs, gs.regular_repr))),
]


@pytest.mark.parametrize("name,gs,types", STATIC_CASES, ids=[c[0] for c in STATIC_CASES])
def test_expanded_filter_is_exactly_equivariant_after_symmetrisation(name, gs, types):
    in_t, out_t = types(gs)
    torch.manual_seed(0)
    raw = SteerableConv(in_t, out_t, 5, symmetrize=False).double()
    sym = SteerableConv(in_t, out_t, 5).double()
    sym.load_state_dict(raw.state_dict())
    with torch.no_grad():
        f_raw, b_raw = raw.expand()
        f_sym, b_sym = sym.expand()
    e_raw = kernel_constraint_error(f_raw, in_t, out_t)
    e_sym = kernel_constraint_error(f_sym, in_t, out_t)
    # escnn samples its basis at float32 points: the raw float64 filter is only ~1e-7 equivariant
    assert 1e-10 < e_raw < 1e-5, e_raw
    assert e_sym <= 1e-13, e_sym
    # the projection does not change the function space: a no-op up to float32 rounding
    assert (f_sym - f_raw).abs().max().item() <= 1e-5 * f_raw.abs().max().item()
    if b_raw is not None:
        assert (b_sym - b_raw).abs().max().item() <= 1e-6
    # ...and in float32, the dtype escnn computed the basis in
    raw32, sym32 = raw.float(), sym.float()
    with torch.no_grad():
        f32_raw, _ = raw32.expand()
        f32_sym, _ = sym32.expand()
    assert (f32_sym - f32_raw).abs().max().item() <= 1e-5 * f32_raw.abs().max().item()


@pytest.mark.parametrize("gs", [C4, D4], ids=["C4", "D4"])
def test_static_conv_equivariance_float64_exact_vs_escnn_oracle(gs, rng):
    """kappa * (g.f) == g.(kappa * f) for every element of C4 / D4, float64 <= 1e-12."""
    in_t = ft(gs, gs.trivial_repr, gs.regular_repr)
    out_t = ft(gs, gs.regular_repr, gs.regular_repr)
    x = torch.randn(2, in_t.size, 7, 7, generator=rng, dtype=torch.float64)
    torch.manual_seed(1)
    errs = {}
    for symmetrize in (True, False):
        conv = SteerableConv(in_t, out_t, 3, symmetrize=symmetrize).double()
        worst = 0.0
        with torch.no_grad():
            y = conv(enn.GeometricTensor(x, in_t)).tensor
            for g in gs.fibergroup.elements:
                yg = conv(enn.GeometricTensor(escnn_transform(x, in_t, g), in_t)).tensor
                worst = max(worst, (yg - escnn_transform(y, out_t, g)).abs().max().item())
        errs[symmetrize] = worst
    assert errs[True] <= 1e-12, errs
    assert errs[False] > 1e-10, errs  # escnn's raw filter: float32 basis, the same check resolves it


def test_static_check_flags_an_unconstrained_filter(rng):
    """Control: a random dense filter is not C4-equivariant, and the same check flags it."""
    in_t = ft(C4, C4.regular_repr)
    out_t = ft(C4, C4.regular_repr)
    conv = SteerableConv(in_t, out_t, 3).double()
    x = torch.randn(2, in_t.size, 7, 7, generator=rng, dtype=torch.float64)
    filt = torch.randn(out_t.size, in_t.size, 3, 3, generator=rng, dtype=torch.float64)
    g = C4.fibergroup.element(1)
    y = conv.apply_expanded(x, filt, None)
    yg = conv.apply_expanded(escnn_transform(x, in_t, g), filt, None)
    assert (yg - escnn_transform(y, out_t, g)).abs().max().item() > 1e-1
    # ...and its projection is equivariant (the symmetriser is a genuine projection)
    fs, _ = conv.symmetrize_filter(filt)
    y = conv.apply_expanded(x, fs, None)
    yg = conv.apply_expanded(escnn_transform(x, in_t, g), fs, None)
    assert (yg - escnn_transform(y, out_t, g)).abs().max().item() <= 1e-12


def test_symmetriser_is_an_idempotent_differentiable_projection(rng):
    in_t = ft(D4, D4.regular_repr, D4.trivial_repr)
    out_t = ft(D4, D4.regular_repr)
    conv = SteerableConv(in_t, out_t, 3).double()
    filt = torch.randn(out_t.size, in_t.size, 3, 3, generator=rng, dtype=torch.float64, requires_grad=True)
    once, _ = conv.symmetrize_filter(filt)
    twice, _ = conv.symmetrize_filter(once)
    assert (once - twice).abs().max().item() <= 1e-14
    assert (once - filt).abs().max().item() > 1e-1  # it does change a non-equivariant filter
    assert kernel_constraint_error(once.detach(), in_t, out_t) <= 1e-14
    # gradient: a linear projection is self-adjoint here (orthogonal group action), so d<P f, w>/df = P w
    w = torch.randn_like(once)
    (once * w).sum().backward()
    pw, _ = conv.symmetrize_filter(w)
    assert (filt.grad - pw).abs().max().item() <= 1e-13
    # gradients also reach the escnn weights through expand()
    conv.zero_grad()
    f, _ = conv.expand()
    f.square().sum().backward()
    assert conv.conv.weights.grad is not None and conv.conv.weights.grad.abs().sum() > 0
    assert len(conv.grid_group) == 8


def test_symmetriser_dense_path_for_non_permutation_representations(rng):
    """irrep0 + irrep2 of C4 mixed by a 0.3 rad change of basis: rho(r) is a reflection matrix at an
    angle, not a signed permutation, so the symmetriser must use its dense-matrix branch."""
    c4 = C4.fibergroup
    theta = 0.3
    q = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    rep = group.directsum([c4.irrep(0), c4.irrep(2)], change_of_basis=q, name="irrep0_irrep2_mixed")
    assert not np.allclose(np.abs(rep(c4.element(1))), np.round(np.abs(rep(c4.element(1)))))
    in_t = ft(C4, rep, C4.trivial_repr)
    out_t = ft(C4, C4.regular_repr, rep)
    torch.manual_seed(0)
    raw = SteerableConv(in_t, out_t, 3, symmetrize=False).double()
    sym = SteerableConv(in_t, out_t, 3).double()
    sym.load_state_dict(raw.state_dict())
    assert not sym._sym_gather  # the dense branch is the one under test
    with torch.no_grad():
        f_raw, b_raw = raw.expand()
        f_sym, b_sym = sym.expand()
    assert kernel_constraint_error(f_raw, in_t, out_t) > 1e-10
    assert kernel_constraint_error(f_sym, in_t, out_t) <= 1e-13
    assert (f_sym - f_raw).abs().max().item() <= 1e-5 * f_raw.abs().max().item()
    assert (b_sym - b_raw).abs().max().item() <= 1e-6


def test_symmetriser_inactive_without_grid_symmetry():
    conv = SteerableConv(ft(TRIVIAL, TRIVIAL.trivial_repr), ft(TRIVIAL, TRIVIAL.trivial_repr), 3)
    filt, bias = conv.conv.expand_parameters()
    f2, b2 = conv.expand()
    assert torch.equal(filt, f2) and torch.equal(bias, b2)
    assert len(conv.grid_group) == 1


def test_symmetrize_filter_rejects_wrong_shape():
    conv = SteerableConv(ft(C4, C4.regular_repr), ft(C4, C4.regular_repr), 3)
    with pytest.raises(ValueError, match=r"expected a filter \[4, 4, 3, 3\]"):
        conv.symmetrize_filter(torch.zeros(4, 4, 5, 5))


@pytest.mark.filterwarnings("ignore:the matrix subclass:PendingDeprecationWarning")
def test_escnn_null_space_is_exact_and_accepts_np_matrix():
    """escnn's null() hands an np.matrix to sklearn's randomized_svd (random, and refused by recent
    scikit-learn); flow_escnn._compat swaps in scipy's exact SVD at import."""
    from escnn.group import _numerical as num

    a = np.matrix([[1.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 1.0, 1.0], [2.0, 2.0, 0.0]])  # null space: (1, -1, 0)
    basis = num.null(a, False)
    assert basis.shape == (3, 1)
    np.testing.assert_allclose(np.abs(basis[:, 0]), [2**-0.5, 2**-0.5, 0.0], atol=1e-12)
    np.testing.assert_array_equal(num.null(a, False), basis)  # deterministic
    if num.randomized_svd is not None:
        assert getattr(num.randomized_svd, "_flow_escnn_exact_svd", False)


def test_dihedral_conv_builds_with_recent_scikit_learn():
    """Regression: escnn 1.0.11 passes np.matrix to sklearn's randomized_svd, which sklearn >= 1.6-ish
    rejects (TypeError: np.matrix is not supported); SteerableConv must still build D4 bases."""
    in_t = ft(D4, D4.regular_repr, *D4.irreps)
    out_t = ft(D4, D4.quotient_repr((0, 2)), D4.regular_repr)
    conv = SteerableConv(in_t, out_t, 3)
    assert conv.expand()[0].shape == (out_t.size, in_t.size, 3, 3)


# ----------------------------------------------------------------------------------------------
# export, state_dict, composition
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("padding_mode", ["circular", "zeros"])
def test_export_matches_forward_and_keeps_padding_mode(padding_mode, rng):
    in_t, out_t = ft(C4, C4.trivial_repr, C4.regular_repr), ft(C4, C4.regular_repr, C4.trivial_repr)
    conv = SteerableConv(in_t, out_t, 5, padding_mode=padding_mode)
    conv.eval()
    exported = conv.export()
    assert isinstance(exported, torch.nn.Conv2d)
    assert exported.padding_mode == padding_mode and exported.padding == (2, 2)
    x = torch.randn(2, in_t.size, 6, 8, generator=rng)
    with torch.no_grad():
        ref = conv(enn.GeometricTensor(x, in_t)).tensor
        out = exported(x)
    assert (out - ref).abs().max().item() <= 1e-6
    if padding_mode == "circular":
        # escnn's own export drops circular padding: the difference is visible at the border
        escnn_export = conv.conv.export()
        with torch.no_grad():
            border = escnn_export(torch.nn.functional.pad(x, (2, 2, 2, 2)))
        assert (border - ref).abs().max().item() > 1e-3


def test_state_dict_is_mode_independent_and_cross_loads(rng):
    in_t, out_t = ft(C4, C4.regular_repr, C4.trivial_repr), ft(C4, C4.regular_repr, C4.trivial_repr)
    x = enn.GeometricTensor(torch.randn(2, in_t.size, 5, 5, generator=rng), in_t)
    torch.manual_seed(0)
    a = SteerableConv(in_t, out_t, 3)
    torch.manual_seed(1)
    b = SteerableConv(in_t, out_t, 3)
    sd_fresh = {k: v.clone() for k, v in a.state_dict().items()}  # never switched mode
    a.train()
    sd_train = {k: v.clone() for k, v in a.state_dict().items()}
    a.eval()
    sd_eval = {k: v.clone() for k, v in a.state_dict().items()}
    assert list(sd_fresh) == list(sd_train) == list(sd_eval)
    assert not any(k.endswith("filter") or k.endswith("expanded_bias") for k in sd_eval)
    with torch.no_grad():
        ref = a(x).tensor
    # train-mode dict into an eval-mode module, eval-mode dict into a train-mode module, fresh into eval
    for mode, sd in ((False, sd_train), (True, sd_eval), (False, sd_fresh)):
        b.train(mode)
        b.load_state_dict(sd)
        with torch.no_grad():
            assert torch.equal(b(x).tensor, ref)
    assert a.conv.training  # the inner R2Conv never enters eval mode (no cached 'filter' buffer)
    # control: a bare escnn R2Conv changes its state_dict keys with the mode...
    r = enn.R2Conv(in_t, out_t, 3)
    r.train()
    keys_train = set(r.state_dict())
    r.eval()
    keys_eval = set(r.state_dict())
    assert keys_eval - keys_train == {"filter", "expanded_bias"}
    # ...and a legacy checkpoint that carries those derived buffers still loads strictly
    legacy = dict(sd_train, **{"conv." + k: v for k, v in r.state_dict().items() if k in ("filter", "expanded_bias")})
    b.load_state_dict(legacy)
    with torch.no_grad():
        assert torch.equal(b(x).tensor, ref)


def test_casting_one_conv_does_not_touch_another_built_from_the_same_basis(rng):
    """Regression: escnn shares sampled basis modules between R2Convs with the same representations,
    so .double() on one network used to convert the other's basis (then: 'expected scalar type
    Double but found Float'). SteerableConv owns private copies."""
    t = ft(C4, C4.regular_repr, C4.trivial_repr)
    a = SteerableConv(t, t, 3)
    b = SteerableConv(t, t, 3)
    a.double()
    basis_b = [buf for name, buf in b.named_buffers() if name.endswith("sampled_basis")]
    assert basis_b and all(buf.dtype == torch.float32 for buf in basis_b)
    x = torch.randn(1, t.size, 5, 5, generator=rng)
    with torch.no_grad():
        assert b(enn.GeometricTensor(x, t)).tensor.dtype == torch.float32
        assert a(enn.GeometricTensor(x.double(), t)).tensor.dtype == torch.float64
    # control: two bare escnn R2Convs do share the module
    r1, r2 = enn.R2Conv(t, t, 3), enn.R2Conv(t, t, 3)
    shared = [n for n, m in r1.named_modules() if any(m is m2 for m2 in r2.modules()) and n]
    assert shared


def test_a_bare_r2conv_cast_elsewhere_does_not_leak_into_a_new_conv(rng):
    """Regression: a bare escnn ``R2Conv(...).double()`` casts escnn's globally cached basis module in
    place; a SteerableConv built afterwards from the same basis used to copy the double tensors and
    fail on float input ('expected scalar type Float but found Double')."""
    t = ft(C4, C4.regular_repr, C4.trivial_repr)
    bare = enn.R2Conv(t, t, 3).double()  # casts the shared cache
    try:
        fresh = SteerableConv(t, t, 3)
        basis = [buf for name, buf in fresh.named_buffers() if name.endswith("sampled_basis")]
        assert basis and all(buf.dtype == torch.float32 for buf in basis)
        x = torch.randn(1, t.size, 5, 5, generator=rng)
        with torch.no_grad():
            assert fresh(enn.GeometricTensor(x, t)).tensor.dtype == torch.float32
    finally:  # give escnn's shared cache back as escnn built it: later bare R2Convs (other test files) expect float32
        bare.float()


def test_uses_r2conv_by_composition():
    conv = SteerableConv(ft(C4, C4.trivial_repr), ft(C4, C4.regular_repr), 3)
    assert isinstance(conv.conv, enn.R2Conv)
    assert not isinstance(conv, enn.R2Conv)
    assert isinstance(conv, enn.EquivariantModule)
    assert conv.evaluate_output_shape((2, 1, 5, 6)) == (2, 4, 5, 6)


def test_deepcopy_keeps_the_function_and_owns_its_basis(rng):
    import copy

    t = ft(D4, D4.regular_repr)
    conv = SteerableConv(t, t, 3).double()
    x = enn.GeometricTensor(torch.randn(1, t.size, 5, 5, generator=rng, dtype=torch.float64), t)
    twin = copy.deepcopy(conv)
    with torch.no_grad():
        assert torch.equal(twin(x).tensor, conv(x).tensor)
    twin.float()
    assert all(b.dtype == torch.float64 for n, b in conv.named_buffers() if n.endswith("sampled_basis"))


def test_expand_once_apply_many(rng):
    in_t, out_t = ft(C4, C4.regular_repr), ft(C4, C4.regular_repr)
    conv = SteerableConv(in_t, out_t, 3)
    x = torch.randn(3, in_t.size, 5, 5, generator=rng)
    filt, bias = conv.expand()
    with torch.no_grad():
        ref = conv(enn.GeometricTensor(x, in_t)).tensor
    assert torch.allclose(conv.apply_expanded(x, filt, bias), ref, atol=1e-6)


# ----------------------------------------------------------------------------------------------
# bad input
# ----------------------------------------------------------------------------------------------
def test_conv_bad_arguments():
    t4, r4 = ft(C4, C4.trivial_repr), ft(C4, C4.regular_repr)
    with pytest.raises(ValueError, match="kernel_size must be a positive odd integer"):
        SteerableConv(t4, r4, 4)
    with pytest.raises(ValueError, match="kernel_size must be a positive odd integer"):
        SteerableConv(t4, r4, 0)
    with pytest.raises(ValueError, match="padding_mode must be one of"):
        SteerableConv(t4, r4, 3, padding_mode="reflect")
    with pytest.raises(ValueError, match="in_type is on .* but out_type on"):
        SteerableConv(t4, ft(C8, C8.regular_repr), 3)
    with pytest.raises(ValueError, match="SteerableConv fixes 'padding'"):
        SteerableConv(t4, r4, 3, padding=1)
    with pytest.raises(TypeError, match="in_type must be an escnn FieldType"):
        SteerableConv(C4.trivial_repr, r4, 3)
    conv = SteerableConv(t4, r4, 3)
    with pytest.raises(ValueError, match="expects a GeometricTensor of type"):
        conv(torch.zeros(1, 1, 5, 5))
    with pytest.raises(ValueError, match="expects a GeometricTensor of type"):
        conv(enn.GeometricTensor(torch.zeros(1, 4, 5, 5), r4))
    with pytest.raises(ValueError, match="expected an input shape"):
        conv.evaluate_output_shape((1, 3, 5, 5))
