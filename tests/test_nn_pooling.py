"""Pooling over V, over the fiber group and over space: values, invariances, errors.

Expected transforms are built independently with ``torch.roll`` / ``torch.rot90`` (``tests/oracles.py``) and
escnn's own ``GeometricTensor.transform`` and pooling modules.
"""
from __future__ import annotations

import pytest
import torch

from flow_escnn._compat import enn, gspaces
from flow_escnn.flows import FlowSet
from flow_escnn.lifted import LiftedFieldType, LiftedTensor
from flow_escnn.sequences import SequenceFieldType, SequenceTensor
from flow_escnn.nn._pooling import (
    GroupPool,
    SpatialPool,
    VelocityPool,
    group_pooled_type,
    pool_group,
    pool_space,
    pool_velocities,
)
from tests.oracles import quarter_turns, translate_sequence

C4 = gspaces.rot2dOnR2(4)
REG = enn.FieldType(C4, [C4.regular_repr] * 2)


def _lifted(flows: FlowSet, ft, shape, seed: int = 0, dtype=torch.float64) -> LiftedTensor:
    g = torch.Generator().manual_seed(seed)
    t = torch.randn(*shape[:-3], len(flows), ft.size, *shape[-2:], generator=g, dtype=dtype)
    return LiftedTensor(t, LiftedFieldType(ft, flows))


def _static(x: torch.Tensor, ft, g) -> torch.Tensor:
    """escnn's own action of g on fields [N, C, H, W] (any leading axes folded)."""
    lead = x.shape[:-3]
    y = enn.GeometricTensor(x.reshape(-1, *x.shape[-3:]), ft).transform(g).tensor
    return y.reshape(*lead, *y.shape[-3:])


# -- velocity pooling ------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["max", "mean"])
def test_velocity_pool_values_and_shapes(mode):
    flows = FlowSet.translations(C4, 1)
    h = _lifted(flows, REG, (2, 3, 0, 5, 5))
    ref = h.tensor.amax(2) if mode == "max" else h.tensor.mean(2)
    out = VelocityPool(mode)(h)
    assert isinstance(out, SequenceTensor) and out.type == SequenceFieldType(REG)  # typed in, typed out
    assert out.shape == (2, 3, REG.size, 5, 5)
    assert torch.equal(out.tensor, ref)
    frame = VelocityPool(mode)(h.frame(0))  # a lifted frame pools to escnn's GeometricTensor
    assert isinstance(frame, enn.GeometricTensor) and frame.type == REG and torch.equal(frame.tensor, ref[:, 0])
    plain = pool_velocities(h.tensor[:, 0], mode)  # a plain tensor carries no type: plain out
    assert type(plain) is torch.Tensor and torch.equal(plain, ref[:, 0])


@pytest.mark.parametrize("mode", ["max", "mean"])
def test_velocity_pool_static_equivariance_when_v_closed(mode):
    flows = FlowSet.translations(C4, 1)
    assert flows.is_closed_under()
    h = _lifted(flows, REG, (2, 0, 6, 6))
    for g in C4.fibergroup.elements:
        lhs = pool_velocities(h.transform(g), mode).tensor
        rhs = _static(pool_velocities(h, mode).tensor, REG, g)
        assert (lhs - rhs).abs().max() <= 1e-12


@pytest.mark.parametrize("mu", [(1, 0), (2, -1), (-2, 2)])
def test_velocity_pool_flow_invariance_when_v_covers_torus(mu):
    flows = FlowSet.translations(C4, 2)  # covers Z_5 x Z_5
    assert (flows.shift_indices(mu, (5, 5)) >= 0).all()
    h = _lifted(flows, REG, (2, 3, 0, 5, 5))
    moved, valid = h.transform_flow(mu, periodic_velocities=True)
    assert bool(valid.all())
    for mode in ("max", "mean"):
        lhs = pool_velocities(moved, mode).tensor
        pooled = pool_velocities(h, mode).tensor
        rhs = translate_sequence(pooled, mu)
        assert (lhs - rhs).abs().max() <= 1e-12


def test_velocity_pool_flow_not_invariant_when_v_truncated():
    """Control: a V that does not cover the torus loses slices at its border."""
    flows = FlowSet.translations(C4, 1)
    mu = (1, 0)
    assert (flows.shift_indices(mu, (5, 5)) < 0).any()
    h = _lifted(flows, REG, (2, 3, 0, 5, 5))
    moved, _ = h.transform_flow(mu)
    pooled = pool_velocities(h, "max").tensor
    rhs = translate_sequence(pooled, (1, 0))
    assert (pool_velocities(moved, "max").tensor - rhs).abs().max() > 1e-3


# -- group pooling ---------------------------------------------------------------------------------
def test_group_pool_matches_escnn_group_pooling_on_regular_fields():
    x = torch.randn(3, REG.size, 5, 5)  # escnn's pooling modules compute in float32
    ours = GroupPool(REG, "max")(x)
    theirs = enn.GroupPooling(REG)(enn.GeometricTensor(x, REG)).tensor
    assert ours.shape == (3, 2, 5, 5)
    assert torch.equal(ours, theirs)
    assert group_pooled_type(REG).size == 2


@pytest.mark.parametrize("mode", ["max", "mean", "norm"])
def test_group_pool_is_invariant_on_mixed_permutation_fields(mode):
    quot = C4.quotient_repr(2)  # C4 / C2, size 2
    ft = enn.FieldType(C4, [C4.trivial_repr, C4.regular_repr, quot, C4.regular_repr])
    x = torch.randn(2, 3, ft.size, 6, 6, dtype=torch.float64)  # leading axes are kept
    pool = GroupPool(ft, mode)
    y = pool(x)
    assert y.shape == (2, 3, 4, 6, 6)
    assert torch.allclose(y[:, :, 0], x[:, :, 0].abs() if mode == "norm" else x[:, :, 0])  # trivial field
    for g in C4.fibergroup.elements:
        rotated = _static(x, ft, g)
        expected = _static(y, group_pooled_type(ft), g)  # trivial fields: space only
        assert (pool(rotated) - expected).abs().max() <= 1e-12


def test_group_norm_pool_matches_escnn_norm_pool_on_irreps():
    ft = enn.FieldType(C4, [C4.irrep(1), C4.irrep(1)])
    x = torch.randn(2, ft.size, 5, 5)
    ours = pool_group(x, ft, "norm")
    theirs = enn.NormPool(ft)(enn.GeometricTensor(x, ft)).tensor
    assert ours.shape == (2, 2, 5, 5)
    assert torch.allclose(ours, theirs, atol=1e-6)


def test_group_max_pool_refuses_non_permutation_fields():
    ft = enn.FieldType(C4, [C4.irrep(1)])
    with pytest.raises(ValueError, match="norm"):
        GroupPool(ft, "max")


# -- spatial pooling -------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["mean", "max"])
def test_spatial_pool_invariant_to_torus_translations_and_rot90(mode):
    x = torch.randn(2, 4, 6, 6, dtype=torch.float64)
    y = SpatialPool(mode)(x)
    assert y.shape == (2, 4)
    assert torch.allclose(pool_space(torch.roll(x, (2, -3), (-2, -1)), mode), y, atol=1e-12)
    assert torch.allclose(pool_space(quarter_turns(x, 1), mode), y, atol=1e-12)


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated")
def test_pooling_modules_script():
    x = torch.randn(2, REG.size, 5, 5)
    for module in (GroupPool(REG, "mean"), SpatialPool("max")):
        assert torch.equal(torch.jit.script(module)(x), module(x))


# -- errors ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "call, exc, msg",
    [
        (lambda: pool_velocities(torch.zeros(2, 3, 4, 5)), ValueError, r"\[B, V, C, H, W\]"),
        (lambda: pool_velocities(torch.zeros(2, 3, 4, 5, 5), "median"), ValueError, "max"),
        (lambda: pool_velocities([1, 2]), TypeError, "LiftedTensor"),
        (lambda: VelocityPool()(SequenceTensor(torch.zeros(1, 2, 8, 5, 5), REG)), TypeError, "no V axis"),
        (lambda: VelocityPool()(enn.GeometricTensor(torch.zeros(1, 8, 5, 5), REG)), TypeError, "no V axis"),
        (lambda: VelocityPool().evaluate_output_shape((2, 8, 5, 5)), ValueError, r"\[B, T, V, C, H, W\]"),
        (lambda: VelocityPool("sum"), ValueError, "mean"),
        (lambda: GroupPool(REG, "median"), ValueError, "norm"),
        (lambda: GroupPool("regular", "max"), TypeError, "FieldType"),
        (lambda: GroupPool(REG)(torch.zeros(2, 3, 5, 5)), ValueError, "C=8"),
        (lambda: pool_space(torch.zeros(5, 5), "mean"), ValueError, r"\[\.\.\., H, W\]"),
        (lambda: SpatialPool("sum"), ValueError, "mean"),
    ],
)
def test_bad_inputs_raise_helpful_errors(call, exc, msg):
    with pytest.raises(exc, match=msg):
        call()
