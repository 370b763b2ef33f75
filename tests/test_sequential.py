"""Composing with escnn: sequence types, PerFrame, FlowSequential (types checked at construction,
export parity, commuting diagrams of a mixed chain with a failing control) and weight transfer."""
from __future__ import annotations

import copy

import pytest
import torch

from flow_escnn import FlowGenerator, FlowSet, LiftedTensor, SequenceFieldType, SequenceTensor, flow_sequence
from flow_escnn._compat import enn, gspaces
from flow_escnn.nn import FERNN, FlowLSTM, FlowSequential, PerFrame, SteerableConv, VelocityPool, find_escnn_objects

C4 = gspaces.rot2dOnR2(4)
IN = enn.FieldType(C4, [C4.trivial_repr])
REG = enn.FieldType(C4, [C4.regular_repr])
REG2 = enn.FieldType(C4, 2 * [C4.regular_repr])
F64 = torch.float64


def _conv(a, b, padding_mode="circular"):
    """flow_escnn's SteerableConv: an escnn module whose filters are exactly equivariant (escnn's own
    R2Conv is equivariant to about 1e-7 even in float64, see docs/troubleshooting.rst)."""
    return SteerableConv(a, b, 3, padding_mode=padding_mode)


def _chain(flows, padding_mode="circular"):
    """conv per frame -> FERNN -> conv per frame and velocity -> FlowLSTM (lifted in) -> max over V -> conv."""
    torch.manual_seed(0)
    return FlowSequential(
        PerFrame(enn.SequentialModule(_conv(IN, REG, padding_mode), enn.ReLU(REG))),
        FERNN(REG, REG2, flows),
        PerFrame(enn.SequentialModule(_conv(REG2, REG), enn.ReLU(REG)), flows=flows),
        FlowLSTM(REG, REG, flows),
        VelocityPool("max"),
        PerFrame(_conv(REG, IN)),
    )


def _randomize(model, scale=0.5):
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return model


def test_sequence_tensor_type_fold_and_actions():
    st = SequenceFieldType(REG)
    x = torch.randn(2, 3, 4, 5, 5, dtype=F64)
    s = SequenceTensor(x, st)
    assert SequenceTensor.unfold(s.fold(), st, (2, 3)).tensor.equal(x)
    mu = FlowGenerator(C4, (1, 0))
    assert s.transform_flow((1, 0), start=2).tensor.equal(flow_sequence(x, REG, mu, start=2))
    r = C4.fibergroup.element(1)
    expected = torch.stack([enn.GeometricTensor(x[:, t], REG).transform(r).tensor for t in range(3)], 1)
    assert (s.transform(r).tensor - expected).abs().max() <= 1e-12
    with pytest.raises(ValueError, match=r"\[B, T, C=4, H, W\]"):
        SequenceTensor(x[:, :, :3], st)


def test_types_are_checked_at_construction_naming_both():
    flows = FlowSet.translations(C4, 1)
    with pytest.raises(ValueError, match=r"module 1 \(FERNN\) expects SequenceFieldType\(C=1.* "
                                         r"but module 0 \(PerFrame\) produces SequenceFieldType\(C=4"):
        FlowSequential(PerFrame(_conv(IN, REG)), FERNN(IN, REG, flows))
    with pytest.raises(ValueError, match="module 2 .*expects LiftedFieldType.*produces SequenceFieldType"):
        FlowSequential(FERNN(IN, REG, flows), VelocityPool(), PerFrame(_conv(REG, REG), flows=flows))
    with pytest.raises(ValueError, match="VelocityPool cannot come first"):
        FlowSequential(VelocityPool(), PerFrame(_conv(REG, REG)))
    with pytest.raises(TypeError, match="wrap escnn modules in flow_escnn.nn.PerFrame"):
        FlowSequential(FERNN(IN, REG, flows), torch.nn.ReLU())
    with pytest.raises(TypeError, match="escnn EquivariantModule"):
        PerFrame(torch.nn.Conv2d(1, 1, 3))
    model = _chain(flows)
    assert model.in_type == SequenceFieldType(IN) and model.out_type == SequenceFieldType(IN)


def test_forward_types_shapes_and_bad_input():
    flows = FlowSet.translations(C4, 1)
    model = _chain(flows).eval()
    x = torch.randn(2, 3, 1, 6, 6)
    y = model(x)
    assert isinstance(y, SequenceTensor) and y.type == model.out_type and y.shape == (2, 3, 1, 6, 6)
    assert model.evaluate_output_shape(x.shape) == tuple(y.shape)
    assert torch.equal(model(SequenceTensor(x, SequenceFieldType(IN))).tensor, y.tensor)
    lifted = model.layers[1](model.layers[0](x).tensor)
    assert isinstance(lifted, LiftedTensor) and model.layers[2](lifted).type == model.layers[2].out_type
    with pytest.raises(ValueError, match="does not match the expected"):
        model(SequenceTensor(torch.randn(2, 3, 4, 6, 6), SequenceFieldType(REG)))
    with pytest.raises(ValueError, match=r"expected \[B, T, C, H, W\] with C=1"):
        model(torch.randn(2, 3, 2, 6, 6))


def test_export_state_dict_and_escnn_free():
    flows = FlowSet.translations(C4, 1)
    model = _randomize(copy.deepcopy(_chain(flows)).to(F64)).eval()
    twin = model.export(grid_shape=(6, 6))
    assert find_escnn_objects(twin) == []
    x = torch.randn(2, 4, 1, 6, 6, dtype=F64)
    with torch.no_grad():
        ref = model(x).tensor
        assert ref.abs().max() > 1e-3
        assert (twin(x) - ref).abs().max() <= 1e-12
    fresh = _chain(flows).to(F64).eval()
    fresh.load_state_dict(model.state_dict())
    with torch.no_grad():
        assert torch.equal(fresh(x).tensor, ref)
    with pytest.raises(ValueError, match="needs grid_shape"):
        model.export()


def test_mixed_chain_commutes_with_flows_and_rotations_and_a_zero_padded_control_fails():
    flows = FlowSet.translations(C4, 2)  # covers the 5x5 torus: pooling over V is exactly invariant
    model = _randomize(copy.deepcopy(_chain(flows)).to(F64)).eval()
    x = torch.rand(2, 4, 1, 5, 5, dtype=F64)
    report = model.check_equivariance(x, [(1, 0), (0, 2)], periodic_velocities=True)
    assert report.passed and report.max_rel_error <= 1e-10, report.summary()
    control = _randomize(copy.deepcopy(_chain(flows, padding_mode="zeros")).to(F64)).eval()
    bad = control.check_equivariance(x, [(1, 0)], static=False, combined=False, periodic_velocities=True)
    assert not bad.passed and bad.max_rel_error > 1e-3


def test_init_input_from_an_r2conv():
    torch.manual_seed(1)
    # deepcopy first: .to() on an escnn R2Conv converts escnn's globally shared basis (troubleshooting)
    conv = copy.deepcopy(enn.R2Conv(IN, REG, 3, padding=1, padding_mode="circular")).to(F64)
    fernn = FERNN(IN, REG, FlowSet.translations(C4, 1)).to(F64).init_input_from(conv)
    x = torch.randn(1, 3, 1, 6, 6, dtype=F64)
    with torch.no_grad():
        fernn.cells[0].W.conv.weights.zero_()
        h = fernn(x).tensor  # W = 0: relu(conv(f_t)) on every slice
        per_frame = torch.relu(conv(enn.GeometricTensor(x.reshape(3, 1, 6, 6), IN)).tensor)
    assert (h - per_frame.reshape(1, 3, 1, 4, 6, 6)).abs().max() <= 1e-6  # escnn's float32-sampled basis
    with pytest.raises(ValueError, match="build the flow layer with the convolution's in_type, out_type and kernel_size"):
        FERNN(IN, REG2, FlowSet.translations(C4, 1)).init_input_from(conv)
    with pytest.raises(TypeError, match="copies an escnn R2Conv"):
        fernn.init_input_from(torch.nn.Conv2d(1, 4, 3))
