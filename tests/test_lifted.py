"""Lifted field types and tensors: layout, static action (space + fiber + V permutation), flow action.

Expected values are built by hand: escnn's ``GeometricTensor.transform`` for space + fiber,
``torch.roll`` for translations, and V permutations / shifts computed from the velocity
tuples with escnn's ``basespace_action`` (not with FlowSet's own methods).
"""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from flow_escnn._compat import enn, gspaces
from flow_escnn.flows import FlowSet
from flow_escnn.lifted import LiftedFieldType, LiftedTensor
from tests.oracles import quarter_turns, roll

C4 = gspaces.rot2dOnR2(4)
D4 = gspaces.flipRot2dOnR2(4)

TOL = 1e-12


# ----------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------
def oracle(x: torch.Tensor, ft, g) -> torch.Tensor:
    """escnn's action of fiber element g on ``[..., C, H, W]`` (leading dims folded into the batch)."""
    lead = x.shape[:-3]
    y = enn.GeometricTensor(x.reshape(-1, *x.shape[-3:]), ft).transform(g).tensor
    return y.reshape(*lead, *y.shape[-3:])


def exact_oracle(x: torch.Tensor, ft, g) -> torch.Tensor:
    """escnn's transform with rho(g) rounded to exact integers (multiples of 90 degrees only)."""
    lead = x.shape[:-3]
    rho = torch.as_tensor(np.round(np.asarray(ft.representation(g), dtype=np.float64)), dtype=x.dtype)
    y = torch.einsum("oc,bchw->bohw", rho, x.reshape(-1, *x.shape[-3:]))
    z = torch.from_numpy(np.ascontiguousarray(ft.gspace._interpolate_transform_basespace(y.numpy(), g)))
    return z.reshape(*lead, *z.shape[-3:])


def velocity_lookup(flows: FlowSet):
    n = flows.gspace.rotations_order
    return {(vx, vy, k % n): i for i, (vx, vy, k) in enumerate(flows.velocities)}


def act_by_hand(gs, g, velocity):
    """g . (vx, vy, k): A(g) u and k reversed by reflections (k reduced modulo N)."""
    a = np.round(np.asarray(gs.basespace_action(g), dtype=np.float64).reshape(2, 2))
    vx, vy, k = velocity
    u = a @ np.array([vx, vy], dtype=np.float64)
    return (int(u[0]), int(u[1]), (int(np.linalg.det(a)) * k) % gs.rotations_order)


def manual_static(x: torch.Tensor, ltype: LiftedFieldType, g, spatial=oracle) -> torch.Tensor:
    """(g.h)(nu_i) = g . h(g^-1 . nu_i), with the V permutation computed by hand."""
    gs, flows = ltype.gspace, ltype.flows
    lookup = velocity_lookup(flows)
    out = torch.empty_like(x)
    for i, nu in enumerate(flows.velocities):
        j = lookup[act_by_hand(gs, ~g, nu)]
        out.select(-4, i).copy_(spatial(x.select(-4, j), ltype.field_type, g))
    return out


def lifted(gs, reps, flows, shape, rng, dtype=torch.float64):
    ltype = LiftedFieldType(enn.FieldType(gs, reps), flows)
    shape = tuple(shape[:-4]) + (len(flows), ltype.size) + tuple(shape[-2:])
    return LiftedTensor(torch.randn(*shape, dtype=dtype, generator=rng), ltype)


# ----------------------------------------------------------------------------------------------
# layout
# ----------------------------------------------------------------------------------------------
def test_lifted_field_type_basics():
    ft = enn.FieldType(C4, [C4.regular_repr, C4.trivial_repr])
    flows = FlowSet.translations(C4, 1)
    lt = LiftedFieldType(ft, flows)
    assert lt.size == 5 and len(lt) == 9 and lt.gspace == C4
    assert lt.field_type is ft and lt.flows is flows
    assert lt == LiftedFieldType(ft, FlowSet.translations(C4, 1))
    assert hash(lt) == hash(LiftedFieldType(ft, FlowSet.translations(C4, 1)))
    assert lt != LiftedFieldType(ft, FlowSet.translations(C4, 2))


@pytest.mark.parametrize("leading", [(2,), (2, 3)], ids=["frame", "sequence"])
def test_fold_unfold_roundtrip(leading, rng):
    x = lifted(C4, [C4.regular_repr], FlowSet.translations(C4, 1), (*leading, 0, 0, 5, 6), rng)
    assert x.is_sequence == (len(leading) == 2)
    assert x.grid_shape == (5, 6)
    folded = x.fold()
    assert isinstance(folded, enn.GeometricTensor)
    assert folded.type == x.type.field_type
    assert folded.tensor.shape == (int(np.prod(leading)) * 9, 4, 5, 6)
    # row-major folding: (b, [t,] v) -> flat index
    for idx in itertools.product(*(range(n) for n in leading), range(9)):
        flat = int(np.ravel_multi_index(idx, (*leading, 9)))
        assert torch.equal(folded.tensor[flat], x.tensor[idx])
    back = LiftedTensor.unfold(folded, x.type, leading)
    assert torch.equal(back.tensor, x.tensor) and back.type == x.type
    plain = LiftedTensor.unfold(folded.tensor, x.type, leading)
    assert torch.equal(plain.tensor, x.tensor)


def test_frame_and_velocity_slice(rng):
    flows = FlowSet.translations(C4, 1)
    x = lifted(C4, [C4.regular_repr], flows, (2, 3, 0, 0, 5, 5), rng)
    for t in range(3):
        f = x.frame(t)
        assert not f.is_sequence and f.type == x.type
        assert torch.equal(f.tensor, x.tensor[:, t])
    i = flows.velocities.index((1, -1, 0))
    assert i == 6
    assert torch.equal(x.velocity_slice((1, -1)), x.tensor[:, :, i])
    assert torch.equal(x.frame(1).velocity_slice((1, -1, 0)), x.tensor[:, 1, i])
    with pytest.raises(KeyError, match=r"velocity \(2, 0, 0\) is not in"):
        x.velocity_slice((2, 0))
    with pytest.raises(ValueError, match=r"frame needs a sequence \[B, T, V, C, H, W\]"):
        x.frame(0).frame(0)


# ----------------------------------------------------------------------------------------------
# static action
# ----------------------------------------------------------------------------------------------
STATIC_CASES = [
    pytest.param(C4, "regular", FlowSet.translations(C4, 1), (2, 0, 0, 5, 5), id="C4-T1-frame-5x5"),
    pytest.param(C4, "mixed", FlowSet.translations(C4, 1), (1, 2, 0, 0, 6, 6), id="C4-T1-seq-6x6"),
    pytest.param(C4, "regular", FlowSet.roto_translations(C4, 1, [0, 1]), (1, 0, 0, 5, 5), id="C4-RT-frame"),
    pytest.param(D4, "quotient", FlowSet.translations(D4, 1), (2, 0, 0, 5, 5), id="D4-T1-frame-5x5"),
    pytest.param(D4, "mixed", FlowSet.roto_translations(D4, 1, [-1, 0, 1]), (1, 2, 0, 0, 6, 6), id="D4-RT-seq-6x6"),
    pytest.param(D4, "regular", FlowSet.rotations(D4, [-1, 0, 1, 2]), (1, 0, 0, 5, 5), id="D4-R-frame"),
]


def _reps(gs, name):
    irrep = gs.irrep(1) if gs is C4 else gs.irrep(1, 1)
    quot = gs.quotient_repr(2) if gs is C4 else gs.quotient_repr((0, 1))
    return {
        "regular": [gs.regular_repr],
        "quotient": [quot],
        "mixed": [gs.trivial_repr, irrep, quot],
    }[name]


@pytest.mark.parametrize("gs,rep,flows,shape", STATIC_CASES)
def test_static_transform_matches_manual(gs, rep, flows, shape, rng):
    x = lifted(gs, _reps(gs, rep), flows, shape, rng)
    for g in gs.fibergroup.elements:
        y = x.transform(g)
        assert y.type == x.type and y.shape == x.shape
        assert (y.tensor - manual_static(x.tensor, x.type, g)).abs().max().item() <= TOL, g
        if rep != "mixed":  # permutation fibers: bit-exact
            assert torch.equal(y.tensor, manual_static(x.tensor, x.type, g, exact_oracle)), g


def test_static_transform_permutes_v_explicitly(rng):
    """A state living only on nu = (1, 0) moves, under +90 degrees, to nu = (0, 1) (and rotates)."""
    flows = FlowSet.translations(C4, 1)
    ltype = LiftedFieldType(enn.FieldType(C4, [C4.trivial_repr]), flows)
    t = torch.zeros(1, 9, 1, 5, 5, dtype=torch.float64)
    t[0, flows.index((1, 0)), 0] = torch.randn(5, 5, dtype=torch.float64, generator=rng)
    y = LiftedTensor(t, ltype).transform(C4.fibergroup.element(1)).tensor
    nonzero = [flows.velocities[i] for i in range(9) if y[0, i].abs().sum() > 0]
    assert nonzero == [(0, 1, 0)]
    assert torch.equal(y[0, flows.index((0, 1)), 0], quarter_turns(t[0, flows.index((1, 0)), 0], 1))


@pytest.mark.parametrize("gs", [C4, D4], ids=["C4", "D4"])
def test_static_transform_is_a_group_action(gs, rng):
    flows = FlowSet.translations(gs, 1) if gs is C4 else FlowSet.roto_translations(gs, 1, [0, 1, -1])
    x = lifted(gs, [gs.regular_repr], flows, (1, 0, 0, 5, 5), rng)
    elems = list(gs.fibergroup.elements)
    hs = elems if gs is C4 else [gs.fibergroup.element((0, 1)), gs.fibergroup.element((1, 0)), gs.fibergroup.element((1, 3))]
    by_g = {g: x.transform(g) for g in elems}
    for g, h in itertools.product(elems, hs):
        assert torch.equal(by_g[g].transform(h).tensor, by_g[h @ g].tensor), (g, h)
    for g in elems:
        assert torch.equal(by_g[g].transform(~g).tensor, x.tensor)


def test_static_transform_errors(rng):
    x = lifted(C4, [C4.regular_repr], FlowSet(C4, [(1, 0), (0, 0)]), (1, 0, 0, 5, 5), rng)
    with pytest.raises(ValueError, match=r"not closed under .*\(1, 0, 0\)"):
        x.transform(C4.fibergroup.element(1))
    assert torch.equal(x.transform(C4.fibergroup.identity).tensor, x.tensor)
    y = lifted(C4, [C4.regular_repr], FlowSet.translations(C4, 1), (1, 0, 0, 4, 6), rng)
    with pytest.raises(ValueError, match="square grid"):
        y.transform(C4.fibergroup.element(1))
    # 180 degrees is fine on a non-square grid
    r2 = C4.fibergroup.element(2)
    assert (y.transform(r2).tensor - manual_static(y.tensor, y.type, r2)).abs().max().item() <= TOL


# ----------------------------------------------------------------------------------------------
# flow action
# ----------------------------------------------------------------------------------------------
def manual_translation_flow(x6: torch.Tensor, flows: FlowSet, mu, start: int, periodic=None):
    """h'_t(nu) = roll_{(start+t) mu} h_t(nu - mu), zero where nu - mu is not in V."""
    lookup = velocity_lookup(flows)
    out = torch.zeros_like(x6)
    valid = []
    for i, (vx, vy, _) in enumerate(flows.velocities):
        dx, dy = vx - mu[0], vy - mu[1]
        if periodic is not None:
            h, w = periodic
            cands = [j for (ux, uy, _), j in lookup.items() if (ux - dx) % w == 0 and (uy - dy) % h == 0]
            j = cands[0] if cands else None
        else:
            j = lookup.get((dx, dy, 0))
        valid.append(j is not None)
        if j is not None:
            for t in range(x6.shape[1]):
                out[:, t, i] = roll(x6[:, t, j], *mu, start + t)
    return out, torch.tensor(valid)


@pytest.mark.parametrize("mu", [(1, 0), (-1, 1), (0, 0), (2, 2)])
@pytest.mark.parametrize("start", [0, 2])
def test_transform_flow_translation_matches_manual(mu, start, rng):
    flows = FlowSet.translations(C4, 1)
    x = lifted(C4, [C4.regular_repr], flows, (2, 3, 0, 0, 5, 6), rng)  # non-square is fine for translations
    y, valid = x.transform_flow(mu, start=start)
    ref, ref_valid = manual_translation_flow(x.tensor, flows, mu, start)
    assert valid.dtype == torch.bool and torch.equal(valid, ref_valid)
    assert torch.equal(y.tensor, ref)
    assert y.type == x.type
    # a single frame with start = its time index gives the same frame
    for t in range(3):
        yf, vf = x.frame(t).transform_flow(mu, start=start + t)
        assert torch.equal(yf.tensor, y.tensor[:, t]) and torch.equal(vf, valid)


def test_transform_flow_validity_mask_translation():
    flows = FlowSet.translations(C4, 1)
    x = LiftedTensor(torch.ones(1, 2, 9, 1, 3, 3), LiftedFieldType(enn.FieldType(C4, [C4.trivial_repr]), flows))
    y, valid = x.transform_flow((1, 0))
    assert [flows.velocities[i] for i in range(9) if not valid[i]] == [(-1, -1, 0), (-1, 0, 0), (-1, 1, 0)]
    assert (y.tensor[:, :, ~valid] == 0).all() and (y.tensor[:, :, valid] == 1).all()


def test_transform_flow_rotation_matches_manual(rng):
    flows = FlowSet.rotations(C4, [-1, 0, 1])
    x = lifted(C4, [C4.regular_repr], flows, (2, 3, 0, 0, 5, 5), rng)
    y, valid = x.transform_flow((0, 0, 1), start=1)
    # nu - mu: -1 -> -2 (not in V), 0 -> -1, 1 -> 0
    assert valid.tolist() == [False, True, True]
    assert (y.tensor[:, :, 0] == 0).all()
    for t in range(3):
        r = C4.fibergroup.element((1 + t) % 4)
        assert torch.equal(y.tensor[:, t, 1], exact_oracle(x.tensor[:, t, 0], x.type.field_type, r))
        assert torch.equal(y.tensor[:, t, 2], exact_oracle(x.tensor[:, t, 1], x.type.field_type, r))


def test_transform_flow_mixed_set_non_commuting_is_invalid(rng):
    flows = FlowSet(C4, [(0, 0, 0), (1, 0, 0), (0, 0, 1)])
    x = lifted(C4, [C4.regular_repr], flows, (1, 2, 0, 0, 5, 5), rng)
    y, valid = x.transform_flow((1, 0))
    # (0,0,0) - (1,0) = (-1,0) not in V; (1,0,0) - (1,0) = 0; (0,0,1) does not commute with (1,0)
    assert valid.tolist() == [False, True, False]
    assert (y.tensor[:, :, [0, 2]] == 0).all()
    for t in range(2):
        assert torch.equal(y.tensor[:, t, 1], roll(x.tensor[:, t, 0], t, 0))


def test_transform_flow_is_a_group_action_on_closed_sets(rng):
    """mu2 . (mu1 . h) == (mu1 + mu2) . h whenever every shift stays inside V."""
    rot = FlowSet.rotations(C4, [0, 1, 2, 3])  # the whole cyclic group: closed under every shift
    x = lifted(C4, [C4.regular_repr], rot, (1, 3, 0, 0, 5, 5), rng)
    a, va = x.transform_flow((0, 0, 1))
    ab, vb = a.transform_flow((0, 0, 2))
    direct, vd = x.transform_flow((0, 0, 3))
    assert va.all() and vb.all() and vd.all()
    assert torch.equal(ab.tensor, direct.tensor)
    # translations on a 5x5 torus with V = Z_5 x Z_5 (periodic velocity matching)
    tr = FlowSet.translations(C4, 2)
    x = lifted(C4, [C4.trivial_repr], tr, (1, 3, 0, 0, 5, 5), rng)
    a, va = x.transform_flow((1, 0), periodic_velocities=True)
    ab, vb = a.transform_flow((0, -1), periodic_velocities=True)
    direct, vd = x.transform_flow((1, -1), periodic_velocities=True)
    assert va.all() and vb.all() and vd.all()
    assert torch.equal(ab.tensor, direct.tensor)
    # without periodic matching the border of V carries no prediction
    _, v_plain = x.transform_flow((1, 0))
    assert int((~v_plain).sum()) == 5


def test_transform_flow_periodic_matches_manual(rng):
    tr = FlowSet.translations(C4, 2)
    x = lifted(C4, [C4.regular_repr], tr, (1, 2, 0, 0, 5, 5), rng)
    for mu in [(1, 0), (2, -1)]:
        y, valid = x.transform_flow(mu, periodic_velocities=True)
        ref, ref_valid = manual_translation_flow(x.tensor, tr, mu, 0, periodic=(5, 5))
        assert ref_valid.all() and torch.equal(valid, ref_valid)
        assert torch.equal(y.tensor, ref)


def test_transform_flow_errors(rng):
    x = lifted(C4, [C4.regular_repr], FlowSet.translations(C4, 1), (1, 3, 0, 0, 5, 5), rng)
    with pytest.raises(ValueError, match="T=0"):
        LiftedTensor(x.tensor[:, :0], x.type).transform_flow((1, 0))
    with pytest.raises(ValueError, match="must be an integer"):
        x.transform_flow((0.5, 0))
    with pytest.raises(ValueError, match="coincide on the periodic grid"):
        lifted(C4, [C4.trivial_repr], FlowSet.translations(C4, 1), (1, 0, 0, 2, 2), rng).transform_flow(
            (1, 0), periodic_velocities=True
        )


# ----------------------------------------------------------------------------------------------
# bad construction
# ----------------------------------------------------------------------------------------------
def test_construction_errors():
    ft = enn.FieldType(C4, [C4.regular_repr])
    flows = FlowSet.translations(C4, 1)
    ltype = LiftedFieldType(ft, flows)
    with pytest.raises(TypeError, match="field_type must be an escnn FieldType"):
        LiftedFieldType(C4.regular_repr, flows)
    with pytest.raises(TypeError, match="flows must be a FlowSet"):
        LiftedFieldType(ft, [(0, 0)])
    with pytest.raises(ValueError, match="flows live on .* but field_type on"):
        LiftedFieldType(ft, FlowSet.translations(D4, 1))
    with pytest.raises(TypeError, match="tensor must be a torch.Tensor"):
        LiftedTensor(np.zeros((1, 9, 4, 5, 5)), ltype)
    with pytest.raises(TypeError, match="type must be a LiftedFieldType"):
        LiftedTensor(torch.zeros(1, 9, 4, 5, 5), ft)
    with pytest.raises(ValueError, match=r"got rank 4"):
        LiftedTensor(torch.zeros(9, 4, 5, 5), ltype)
    with pytest.raises(ValueError, match=r"got rank 7"):
        LiftedTensor(torch.zeros(1, 1, 1, 9, 4, 5, 5), ltype)
    with pytest.raises(ValueError, match=r"V=8, C=4 at dims -4, -3 but its type expects V=9, C=4"):
        LiftedTensor(torch.zeros(1, 8, 4, 5, 5), ltype)
    with pytest.raises(ValueError, match=r"V=9, C=3 at dims -4, -3 but its type expects V=9, C=4"):
        LiftedTensor(torch.zeros(1, 2, 9, 3, 5, 5), ltype)
    other = enn.FieldType(C4, [C4.trivial_repr] * 4)
    with pytest.raises(ValueError, match="cannot unfold"):
        LiftedTensor.unfold(enn.GeometricTensor(torch.zeros(9, 4, 5, 5), other), ltype, (1,))
