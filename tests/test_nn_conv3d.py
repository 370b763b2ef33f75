"""SteerableConv on escnn's 3D gspaces (issue 24): R3Conv inside, exact symmetrised filters on the voxel grid,
circular / zero 'same' padding, export to ``torch.nn.Conv3d`` keeping ``padding_mode``.

Voxel convention (escnn's, :mod:`flow_escnn.flows._volume`): a tensor ``[..., D, H, W]`` has the array axes
``(-z, -y, x)``, voxel ``(i, j, k)`` at ``x = k - (W-1)/2, y = (H-1)/2 - j, z = (D-1)/2 - i``. Expected values
come from code independent of the module under test: the exact transports of
:func:`~flow_escnn.flows._volume_transport.volume_transport` / ``VolumeTransportPlan`` (themselves anchored here
on ``torch.rot90`` / ``torch.roll``), a voxel permutation written out below from ``gspace.basespace_action``
(:func:`rotate_voxels`), and an explicit tap loop for the kernel constraint. Every check is paired with a
control on which the same check fails (escnn's raw float32-sampled filter, a random Conv3d filter, escnn's own
``R3Conv.export()``).
"""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from flow_escnn._compat import enn, gspaces
from flow_escnn.flows._volume import VolumeElement, fiber_table, quarter_turn_element
from flow_escnn.flows._volume_transport import VolumeTransportPlan, volume_transport
from flow_escnn.nn import SteerableConv
from flow_escnn.nn._conv import dense_conv, export_conv, export_escnn, periodic_conv

F64 = torch.float64
EXACT = 1e-10


@pytest.fixture(scope="module")
def octa():
    """octaOnR3 (about 1-4 s to build) and its trivial / regular field types, built once for the module."""
    gs = gspaces.octaOnR3()
    return gs, enn.FieldType(gs, [gs.trivial_repr]), enn.FieldType(gs, [gs.regular_repr])


@pytest.fixture(scope="module")
def octa_convs(octa):
    """Symmetrised float64 convolutions on octaOnR3, built once: {(in, out, padding_mode): conv}."""
    _, triv, reg = octa
    torch.manual_seed(0)
    out = {}
    for name_in, t_in in (("triv", triv), ("reg", reg)):
        for pm in ("circular", "zeros"):
            out[(name_in, "reg", pm)] = SteerableConv(t_in, reg, 3, padding_mode=pm).to(F64)
    return out


def rotate_voxels(x: torch.Tensor, field_type, g) -> torch.Tensor:
    """``[g.f](p) = rho(g) f(A(g)^-1 p)`` on a ``[B, C, D, H, W]`` volume, for ``A(g)`` a signed permutation,
    written out from ``basespace_action`` and the voxel convention (doubled coordinates: exact for even sizes)."""
    gs = field_type.gspace
    a = np.rint(np.asarray(gs.basespace_action(g), dtype=np.float64)).astype(np.int64)
    d, h, w = x.shape[-3:]
    i, j, k = np.meshgrid(np.arange(d), np.arange(h), np.arange(w), indexing="ij")
    p2 = np.stack([2 * k - (w - 1), (h - 1) - 2 * j, (d - 1) - 2 * i]).reshape(3, -1)  # 2 * (x, y, z)
    s2 = a.T @ p2  # 2 * A^-1 p
    si, sj, sk = ((d - 1) - s2[2]) // 2, ((h - 1) - s2[1]) // 2, (s2[0] + (w - 1)) // 2
    src = torch.from_numpy((si * h + sj) * w + sk)
    moved = x.reshape(*x.shape[:2], -1)[:, :, src].reshape(x.shape)
    rho = torch.as_tensor(np.asarray(field_type.representation(g)), dtype=x.dtype)
    return torch.einsum("oc,bc...->bo...", rho, moved)


def transport_all(x: torch.Tensor, field_type, elements) -> torch.Tensor:
    """``[B, C, D, H, W]`` -> ``[B, M, C, D, H, W]``: slice m is ``elements[m] . x`` (one exact gather)."""
    plan = VolumeTransportPlan(field_type, elements, tuple(x.shape[-3:]))
    return plan(x.unsqueeze(1).expand(-1, len(elements), *x.shape[1:]).contiguous())


def equivariance_error(fn, x, in_type, out_type, elements) -> float:
    """max over the elements e of ``|fn(e.x) - e.fn(x)|`` (all elements in one batch)."""
    b, m = x.shape[0], len(elements)
    gx = transport_all(x, in_type, elements)
    lhs = fn(gx.reshape(b * m, *x.shape[1:])).reshape(b, m, out_type.size, *x.shape[2:])
    rhs = transport_all(fn(x), out_type, elements)
    return (lhs - rhs).abs().max().item()


def octa_elements(gs):
    return [VolumeElement(gs, g) for g in gs.fibergroup.elements]


def conv_fn(conv: SteerableConv, filt=None, bias=None):
    if filt is None:
        with torch.no_grad():
            filt, bias = conv.expand()
    return lambda t: conv.apply_expanded(t, filt, bias)


# -- the transports used as oracles, anchored on torch --------------------------------------------------------
def test_oracles_agree_with_torch_rot90_and_roll(octa):
    gs, triv, reg = octa
    x = torch.randn(2, 1, 4, 4, 4, dtype=F64, generator=torch.Generator().manual_seed(1))
    for axis, dims in (("z", (-2, -1)), ("x", (-2, -3)), ("y", (-1, -3))):
        g = quarter_turn_element(gs, axis, 1)
        want = torch.rot90(x, 1, dims=dims)
        assert torch.equal(volume_transport(x, triv, VolumeElement(gs, g)), want)
        assert torch.equal(rotate_voxels(x, triv, g), want)
    e = VolumeElement(gs, translation=(1, -2, 3))
    assert torch.equal(volume_transport(x, triv, e), torch.roll(x, shifts=(-3, 2, 1), dims=(-3, -2, -1)))
    xr = torch.randn(1, 24, 4, 4, 4, dtype=F64)
    for g in gs.fibergroup.elements:  # regular fields: the two oracles agree (fibre permutation included; escnn's
        # regular matrices are permutations up to ~1e-16, which the transport rounds away)
        diff = volume_transport(xr, reg, VolumeElement(gs, g)) - rotate_voxels(xr, reg, g)
        assert diff.abs().max().item() < 1e-12


# -- construction ----------------------------------------------------------------------------------------------
def test_3d_conv_wraps_r3conv_and_expands_cubic_filters(octa, octa_convs):
    gs, triv, reg = octa
    conv = octa_convs[("triv", "reg", "circular")]
    assert conv.dimensionality == 3 and isinstance(conv.conv, enn.R3Conv)
    filt, bias = conv.expand()
    assert filt.shape == (24, 1, 3, 3, 3) and filt.dtype == F64 and bias.shape == (24,)
    assert len(conv.grid_group) == 24
    assert conv.evaluate_output_shape((2, 1, 5, 6, 7)) == (2, 24, 5, 6, 7)
    c2 = SteerableConv(enn.FieldType(gspaces.rot2dOnR2(4), [gspaces.rot2dOnR2(4).trivial_repr]),
                       enn.FieldType(gspaces.rot2dOnR2(4), [gspaces.rot2dOnR2(4).regular_repr]), 3)
    assert c2.dimensionality == 2 and isinstance(c2.conv, enn.R2Conv)


def test_grid_groups_of_3d_gspaces():
    """H = the fiber elements acting on R^3 as signed permutations (finite groups: the elements; continuous
    ones: found through the gspace's restriction from O(3))."""
    from flow_escnn.nn._conv import _grid_candidates, _grid_matrix

    def grid_group(gs):
        return [g for g in _grid_candidates(gs) if _grid_matrix(gs, g, 3) is not None]

    full = gspaces.fullOctaOnR3()
    assert len(grid_group(full)) == 48
    assert {tuple(map(tuple, _grid_matrix(full, g, 3))) for g in grid_group(full)} == set(fiber_table(full))
    assert len(grid_group(gspaces.rot2dOnR3(4))) == 4
    assert len(grid_group(gspaces.rot2dOnR3(8))) == 4  # the C4 subgroup of C8
    so3 = grid_group(gspaces.rot3dOnR3())
    assert len(so3) == 24 and all(round(np.linalg.det(_grid_matrix(gspaces.rot3dOnR3(), g, 3))) == 1 for g in so3)
    assert len(grid_group(gspaces.flipRot3dOnR3())) == 48
    assert len(grid_group(gspaces.trivialOnR3())) == 1


def test_symmetrised_filter_satisfies_the_constraint_tap_by_tap(octa, octa_convs):
    """Explicit tap loop: rho_out(g) k(A(g)^-1 y) rho_in(g)^-1 == k(y), tap (i, j, l) at y = (l-c, c-j, c-i)."""
    gs, triv, reg = octa
    conv = octa_convs[("triv", "reg", "circular")]
    with torch.no_grad():
        filt, _ = conv.expand()
        raw, _ = conv.conv.expand_parameters()
    c0 = 1

    def worst(f):
        err = 0.0
        for g in gs.fibergroup.elements:
            a_inv = np.rint(np.asarray(gs.basespace_action(g), dtype=np.float64)).astype(int).T
            ro = torch.as_tensor(np.asarray(reg.representation(g)), dtype=F64)
            rebuilt = torch.empty_like(f)
            for i in range(3):
                for j in range(3):
                    for m in range(3):
                        sx, sy, sz = a_inv @ np.array([m - c0, c0 - j, c0 - i])
                        rebuilt[:, :, i, j, m] = ro @ f[:, :, c0 - sz, c0 - sy, c0 + sx]  # rho_in trivial
            err = max(err, (rebuilt - f).abs().max().item())
        return err

    assert worst(filt) < 1e-15
    raw_err = worst(raw.to(F64))
    assert 1e-10 < raw_err < 1e-5, raw_err  # escnn's float32 grid sampling
    assert (filt - raw.to(F64)).abs().max().item() < 1e-6  # the projection moves entries by float32 rounding only
    once, b1 = conv.symmetrize_filter(filt)
    assert (once - filt).abs().max().item() < 1e-15  # idempotent


# -- exact equivariance ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("padding_mode", ["circular", "zeros"])
@pytest.mark.parametrize("field_in", ["triv", "reg"])
def test_octa_rotations_are_exact(octa, octa_convs, field_in, padding_mode):
    """All 24 rotations of the cube, float64: circular and zero padding both commute with them on a cube."""
    gs, triv, reg = octa
    t_in = triv if field_in == "triv" else reg
    conv = octa_convs[(field_in, "reg", padding_mode)]
    x = torch.randn(1, t_in.size, 5, 5, 5, dtype=F64, generator=torch.Generator().manual_seed(2))
    err = equivariance_error(conv_fn(conv), x, t_in, reg, octa_elements(gs))
    assert err <= EXACT, err


def test_octa_translations_are_exact_with_circular_padding(octa, octa_convs):
    gs, triv, reg = octa
    conv = octa_convs[("reg", "reg", "circular")]
    x = torch.randn(1, 24, 4, 5, 6, dtype=F64, generator=torch.Generator().manual_seed(3))  # any box for shifts
    shifts = [(1, 0, 0), (0, -2, 0), (0, 0, 3), (2, 1, -1), (5, 7, -9)]
    elements = [VolumeElement(gs, translation=s) for s in shifts]
    assert equivariance_error(conv_fn(conv), x, reg, reg, elements) <= EXACT
    # the same through torch.roll and the GeometricTensor forward
    y = conv(enn.GeometricTensor(x, reg)).tensor
    for vx, vy, vz in shifts:
        dims, sh = (-3, -2, -1), (-vz, -vy, vx)
        y_shift = conv(enn.GeometricTensor(torch.roll(x, sh, dims), reg)).tensor
        assert (y_shift - torch.roll(y, sh, dims)).abs().max().item() <= EXACT


@pytest.mark.parametrize("padding_mode", ["circular", "zeros"])
def test_rot2d_on_r3_quarter_turns_about_z_are_exact(padding_mode):
    """rot2dOnR3(4): quarter turns about z; a box with H == W and another depth."""
    gs = gspaces.rot2dOnR3(4)
    t_in = enn.FieldType(gs, [gs.trivial_repr, gs.regular_repr])
    t_out = enn.FieldType(gs, [gs.regular_repr] * 2)
    torch.manual_seed(4)
    conv = SteerableConv(t_in, t_out, 3, padding_mode=padding_mode).to(F64)
    assert len(conv.grid_group) == 4
    x = torch.randn(2, t_in.size, 4, 6, 6, dtype=F64, generator=torch.Generator().manual_seed(5))
    elements = [VolumeElement(gs, g) for g in gs.fibergroup.elements]
    assert equivariance_error(conv_fn(conv), x, t_in, t_out, elements) <= EXACT
    # (escnn's raw filter is exact here too, ~4e-15: quarter turns about z map its float32 sample points onto
    # each other exactly.) Control: a random filter fails the same check
    w = torch.randn(t_out.size, t_in.size, 3, 3, 3, dtype=F64, generator=torch.Generator().manual_seed(13))
    rand = equivariance_error(lambda t: periodic_conv(t, w, None, padding_mode), x, t_in, t_out, elements)
    assert rand > 1e-2, rand


def test_continuous_so3_uses_its_cube_rotations_and_dense_irreps():
    """rot3dOnR3 (SO(3)) with irreps fields: the symmetriser takes the 24 rotations of the cube inside SO(3) and
    applies the Wigner matrices densely; exact under those 24 (oracle: :func:`rotate_voxels`)."""
    gs = gspaces.rot3dOnR3()
    G = gs.fibergroup
    t_in = enn.FieldType(gs, [G.irrep(0), G.irrep(1)])
    t_out = enn.FieldType(gs, [G.irrep(2)])
    torch.manual_seed(6)
    conv = SteerableConv(t_in, t_out, 3).to(F64)
    assert len(conv.grid_group) == 24 and not conv._sym_gather
    raw = SteerableConv(t_in, t_out, 3, symmetrize=False).to(F64)
    raw.load_state_dict(conv.state_dict())
    x = torch.randn(1, t_in.size, 5, 5, 5, dtype=F64, generator=torch.Generator().manual_seed(7))

    def err(c):
        fn = conv_fn(c)
        y = fn(x)
        return max((fn(rotate_voxels(x, t_in, g)) - rotate_voxels(y, t_out, g)).abs().max().item()
                   for g in c.grid_group)

    assert err(conv) <= EXACT
    assert EXACT < err(raw) < 1e-5


# -- controls: the same checks flag non-exact filters ----------------------------------------------------------
def test_controls_raw_escnn_filter_and_random_filter_fail(octa, octa_convs):
    gs, triv, reg = octa
    elements = octa_elements(gs)
    x = torch.randn(1, 24, 5, 5, 5, dtype=F64, generator=torch.Generator().manual_seed(8))
    errs = {}
    for pm in ("circular", "zeros"):
        sym = octa_convs[("reg", "reg", pm)]
        raw = SteerableConv(reg, reg, 3, padding_mode=pm, symmetrize=False).to(F64)
        raw.load_state_dict(sym.state_dict())  # the same weights, escnn's raw expansion
        errs[pm] = equivariance_error(conv_fn(raw), x, reg, reg, elements)
    # observed (float64): 1.6e-7 (circular), 1.3e-7 (zeros); symmetrised: 9e-15. escnn samples its basis in float32
    assert all(EXACT < e < 1e-5 for e in errs.values()), errs
    w = torch.randn(24, 24, 3, 3, 3, dtype=F64, generator=torch.Generator().manual_seed(9))
    rand = equivariance_error(lambda t: periodic_conv(t, w, None, "circular"), x, reg, reg, elements)
    assert rand > 1e-2, rand


# -- forward, export -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("padding_mode", ["circular", "zeros"])
def test_export_is_a_conv3d_with_the_same_padding_and_outputs(octa, octa_convs, padding_mode):
    gs, triv, reg = octa
    conv = octa_convs[("triv", "reg", padding_mode)]
    x = torch.randn(2, 1, 5, 6, 7, dtype=F64, generator=torch.Generator().manual_seed(10))
    y = conv(enn.GeometricTensor(x, triv))
    assert isinstance(y, enn.GeometricTensor) and y.type == reg and y.tensor.shape == (2, 24, 5, 6, 7)
    dense = conv.export()
    assert isinstance(dense, torch.nn.Conv3d) and dense.padding_mode == padding_mode
    assert dense.padding == (1, 1, 1) and dense.weight.dtype == F64
    assert (dense(x) - y.tensor).abs().max().item() <= 1e-12
    assert isinstance(export_conv(conv), torch.nn.Conv3d) and isinstance(export_escnn(conv), torch.nn.Conv3d)


def test_export_of_a_bare_r3conv_keeps_circular_padding_unlike_escnn(octa):
    gs, triv, reg = octa
    torch.manual_seed(11)
    # float32: a bare R3Conv shares escnn's basis cache, which another bare R3Conv may have cast; cast it back
    r3 = enn.R3Conv(triv, reg, 3, padding=1, padding_mode="circular").float()
    x = torch.randn(1, 1, 5, 5, 5)
    ours = export_conv(r3)
    assert isinstance(ours, torch.nn.Conv3d) and ours.padding_mode == "circular"
    with torch.no_grad():
        want = r3(enn.GeometricTensor(x, triv)).tensor
        assert (ours(x) - want).abs().max().item() < 1e-5
        assert (export_escnn(enn.SequentialModule(r3))(x) - want).abs().max().item() < 1e-5
        theirs = r3.export()  # control: escnn's own export falls back to zero padding
        assert theirs.padding_mode == "zeros" and (theirs(x) - want).abs().max().item() > 1e-3


def test_3d_basis_is_private_and_state_dict_mode_independent(octa):
    gs, triv, reg = octa
    a = SteerableConv(triv, reg, 3)
    b = SteerableConv(triv, reg, 3).to(F64)  # same representations: escnn would share the basis module
    assert a.expand()[0].dtype == torch.float32 and b.expand()[0].dtype == F64
    keys = set(a.state_dict())
    a.eval()
    assert set(a.state_dict()) == keys and a.conv.training


# -- shapes and errors -----------------------------------------------------------------------------------------
def test_shape_errors_name_the_expected_layout(octa, octa_convs):
    gs, triv, reg = octa
    conv = octa_convs[("triv", "reg", "circular")]
    filt, bias = conv.expand()
    with pytest.raises(ValueError, match="expects a GeometricTensor of type"):
        conv(enn.GeometricTensor(torch.zeros(1, 24, 5, 5, 5, dtype=F64), reg))
    points = enn.GeometricTensor(torch.zeros(4, 1, dtype=F64), triv, coords=torch.zeros(4, 3, dtype=F64))
    with pytest.raises(ValueError, match=r"SteerableConv \(3D\) expects a GeometricTensor \[N, C_in, D, H, W\]"):
        conv(points)  # a point cloud, not a voxel grid
    with pytest.raises(ValueError, match=r"expected an input shape \[N, 1, D, H, W\]"):
        conv.evaluate_output_shape((1, 1, 5, 5))
    with pytest.raises(ValueError, match=r"expected a filter \[24, 1, 3, 3, 3\]"):
        conv.symmetrize_filter(torch.zeros(24, 1, 3, 3))
    with pytest.raises(ValueError, match=r"3D filter \(24, 1, 3, 3, 3\) convolves inputs \[N, 1, D, H, W\]"):
        conv.apply_expanded(torch.zeros(1, 1, 5, 5, dtype=F64), filt, bias)
    with pytest.raises(ValueError, match=r"convolves inputs \[N, 1, D, H, W\], got shape \(1, 2, 5, 5, 5\)"):
        conv.apply_expanded(torch.zeros(1, 2, 5, 5, 5, dtype=F64), filt, bias)
    with pytest.raises(ValueError, match=r"periodic_conv expects a filter"):
        periodic_conv(torch.zeros(1, 1, 5), torch.zeros(1, 1, 3), None, "circular")
    with pytest.raises(ValueError, match="dense_conv expects a filter"):
        dense_conv(torch.zeros(1, 1, 3), None, 1, "circular")
    with pytest.raises(TypeError, match="SteerableConv or an escnn R2Conv / R3Conv"):
        export_conv(torch.nn.Conv3d(1, 1, 3))


def test_rank_generic_helpers_match_torch():
    g = torch.Generator().manual_seed(12)
    x3, w3, b = torch.randn(2, 3, 4, 5, 6, generator=g), torch.randn(2, 3, 3, 3, 3, generator=g), torch.randn(2)
    want = torch.nn.functional.conv3d(torch.nn.functional.pad(x3, (1,) * 6, mode="circular"), w3, b)
    assert torch.equal(periodic_conv(x3, w3, b, "circular"), want)
    assert torch.equal(periodic_conv(x3, w3, b, "zeros"), torch.nn.functional.conv3d(x3, w3, b, padding=1))
    assert torch.allclose(dense_conv(w3, b, 1, "circular")(x3), want, atol=1e-6)
    x2, w2 = torch.randn(2, 3, 5, 6, generator=g), torch.randn(2, 3, 3, 3, generator=g)
    want2 = torch.nn.functional.conv2d(torch.nn.functional.pad(x2, (1,) * 4, mode="circular"), w2, b)
    assert torch.equal(periodic_conv(x2, w2, b, "circular"), want2)
    c2 = dense_conv(w2, b, 1, "circular")
    assert isinstance(c2, torch.nn.Conv2d) and torch.allclose(c2(x2), want2, atol=1e-6)


# -- escnn's octahedral / icosahedral irrep caches are quiet --------------------------------------------------
@pytest.mark.subprocess
def test_octahedral_irrep_cache_prints_nothing():
    code = "import flow_escnn\nfrom escnn import gspaces\ngspaces.octaOnR3()\nprint('built')\n"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "built" in proc.stdout
    assert "[Memory]" not in proc.stdout + proc.stderr, proc.stdout + proc.stderr
    import escnn.group.groups.ico as ico
    import escnn.group.groups.octa as octa_module

    assert octa_module._build_octa_irrep_picklable._verbose == 0 and ico._build_ico_irrep_picklable._verbose == 0
