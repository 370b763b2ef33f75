"""Baselines: G-RNN (= FERNN over the identity flow), G-RNN+ and the 3D-CNN classifier."""
from __future__ import annotations

import pytest
import torch

from flow_escnn._compat import enn, gspaces
from flow_escnn.flows import FlowGenerator, FlowSet, flow_sequence
from flow_escnn.lifted import LiftedTensor
from flow_escnn.nn import FERNN
from flow_escnn.nn import GRNN, Conv3DClassifier, GRNNPlus
from flow_escnn.nn._export import export, find_escnn_objects
from tests.oracles import quarter_turns

C4 = gspaces.rot2dOnR2(4)
IN = enn.FieldType(C4, [C4.trivial_repr])
HID = enn.FieldType(C4, [C4.regular_repr])
B, T = 2, 4


def _x(h: int = 6, seed: int = 0, t: int = T) -> torch.Tensor:
    return torch.randn(B, t, 1, h, h, generator=torch.Generator().manual_seed(seed))


# -- G-RNN -----------------------------------------------------------------------------------------
def test_grnn_is_exactly_a_fernn_over_the_identity_flow():
    torch.manual_seed(0)
    g = GRNN(IN, HID, num_layers=2)
    f = FERNN(IN, HID, FlowSet.identity(C4), num_layers=2)
    f.load_state_dict(g.state_dict())
    assert isinstance(g, FERNN) and g.flows == FlowSet.identity(C4)
    y = g(_x())
    assert isinstance(y, LiftedTensor) and y.shape == (B, T, 1, HID.size, 6, 6)
    assert torch.equal(y.tensor, f(_x()).tensor)


def test_grnn_is_rotation_equivariant_but_not_flow_equivariant():
    torch.manual_seed(0)
    g = GRNN(IN, HID).eval()
    x = _x()
    with torch.no_grad():
        y = g(x).tensor[:, :, 0]
        y_rot = g(quarter_turns(x, 1)).tensor[:, :, 0]
        expected = enn.GeometricTensor(y.reshape(-1, HID.size, 6, 6), HID).transform(C4.fibergroup.element(1))
        assert (y_rot - expected.tensor.reshape(y.shape)).abs().max() <= 1e-5
        mu = FlowGenerator(C4, (1, 0))
        y_flow = g(flow_sequence(x, IN, mu)).tensor[:, :, 0]
        assert (y_flow - flow_sequence(y, HID, mu)).abs().max() > 1e-2  # memory is left behind


def test_grnn_rejects_flows_argument():
    with pytest.raises(ValueError, match="identity"):
        GRNN(IN, HID, flows=FlowSet.translations(C4, 1))
    with pytest.raises(TypeError, match="FieldType"):
        GRNN("trivial", HID)


# -- G-RNN+ ----------------------------------------------------------------------------------------
def test_grnn_plus_shift_init_equals_fernn_and_identity_init_equals_grnn():
    torch.manual_seed(0)
    flows = FlowSet.translations(C4, 2)
    f = FERNN(IN, HID, flows, num_layers=2)
    plus = GRNNPlus(IN, HID, flows, num_layers=2, init="shift")
    for l in range(2):
        plus.cells[l].U.load_state_dict(f.cells[l].U.state_dict())
        plus.cells[l].W.load_state_dict(f.cells[l].W.state_dict())
    x = _x(7)
    with torch.no_grad():
        assert (plus(x).tensor - f(x).tensor).abs().max() <= 1e-5
        g = GRNN(IN, HID)
        ident = GRNNPlus(IN, HID, flows, init="identity", kernel_sharing="shared")
        ident.cells[0].U.load_state_dict(g.cells[0].U.state_dict())
        ident.cells[0].W.load_state_dict(g.cells[0].W.state_dict())
        y = ident(x).tensor
        assert (y - g(x).tensor).abs().max() <= 1e-5  # every V slice is the G-RNN
        assert (y[:, :, 3] - y[:, :, 0]).abs().max() == 0


def test_grnn_plus_shapes_parameters_and_gradients():
    flows = FlowSet.translations(C4, 1)
    plus = GRNNPlus(IN, HID, flows, velocity_kernel_size=5, kernel_sharing="channel")
    shared = GRNNPlus(IN, HID, flows, velocity_kernel_size=3, kernel_sharing="shared")
    assert plus.cells[0].K.shape == (9, HID.size, 5, 5) and shared.cells[0].K.shape == (9, 1, 3, 3)
    n_grnn = sum(p.numel() for p in GRNN(IN, HID).parameters())
    assert sum(p.numel() for p in plus.parameters()) == n_grnn + 9 * HID.size * 25
    y = plus(_x(5))
    assert y.shape == (B, T, 9, HID.size, 5, 5)
    y.tensor.square().mean().backward()
    for name, p in plus.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


def test_grnn_plus_is_not_flow_equivariant_once_kernels_move():
    """After perturbing K_nu the FERNN theorem no longer holds (the baseline's point)."""
    torch.manual_seed(0)
    flows = FlowSet.translations(C4, 2)
    plus = GRNNPlus(IN, HID, flows).eval()
    x = _x(5)
    mu = (1, 0)
    mu_gen = FlowGenerator(C4, mu)

    def err() -> float:
        with torch.no_grad():
            y = plus(x)
            y2 = plus(flow_sequence(x, IN, mu_gen)).tensor
        pred, _ = y.transform_flow(mu, periodic_velocities=True)
        return float((y2 - pred.tensor).abs().max())

    assert err() <= 1e-5  # at the shift initialisation it is the FERNN
    with torch.no_grad():
        plus.cells[0].K.add_(0.1 * torch.randn_like(plus.cells[0].K))
    assert err() > 1e-3


def test_grnn_plus_export_matches_and_is_plain_torch():
    torch.manual_seed(0)
    plus = GRNNPlus(IN, HID, FlowSet.translations(C4, 1), num_layers=2).eval()
    with torch.no_grad():
        plus.cells[1].K.add_(0.1 * torch.randn_like(plus.cells[1].K))
    twin = export(plus, grid_shape=(6, 6))
    assert find_escnn_objects(twin) == []
    x = _x(6)
    with torch.no_grad():
        ref = plus(x).tensor
        assert (twin(x) - ref).abs().max() == 0.0  # the same engine program and weights


def test_grnn_plus_loads_checkpoints_of_its_former_layout():
    """G-RNN+ state dicts written before it ran on the engine (U.l / W.l / K.l keys) still load."""
    torch.manual_seed(0)
    plus = GRNNPlus(IN, HID, FlowSet.translations(C4, 1), num_layers=2)
    with torch.no_grad():
        plus.cells[1].K.add_(0.1)
    old = {}
    for key, value in plus.state_dict().items():
        if key == "_extra_state":
            continue  # the old layout had none
        _, layer, head, *rest = key.split(".")  # cells.{l}.{U|W|K}...
        old[".".join([head, layer, *rest])] = value
    assert "K.1" in old and "U.0.conv.weights" in old
    fresh = GRNNPlus(IN, HID, FlowSet.translations(C4, 1), num_layers=2)
    fresh.load_state_dict(old)
    x = _x(6)
    with torch.no_grad():
        assert torch.equal(fresh(x).tensor, plus(x).tensor)


@pytest.mark.parametrize(
    "kwargs, exc, msg",
    [
        (dict(flows=FlowSet.rotations(C4, [0, 1])), ValueError, "init='identity'"),
        (dict(flows=FlowSet.translations(C4, 3)), ValueError, "larger velocity_kernel_size"),
        (dict(flows=FlowSet.translations(C4, 1), kernel_sharing="group"), ValueError, "channel"),
        (dict(flows=FlowSet.translations(C4, 1), init="random"), ValueError, "shift"),
        (dict(flows=FlowSet.translations(C4, 1), velocity_kernel_size=4), ValueError, "odd"),
        (dict(flows=[(0, 0)]), TypeError, "FlowSet"),
    ],
)
def test_grnn_plus_bad_arguments(kwargs, exc, msg):
    with pytest.raises(exc, match=msg):
        GRNNPlus(IN, HID, **kwargs)


def test_grnn_plus_bad_input():
    plus = GRNNPlus(IN, HID, FlowSet.translations(C4, 1))
    with pytest.raises(ValueError, match="add the time axis"):
        plus(torch.zeros(B, 1, 5, 5))
    with pytest.raises(ValueError, match="C=1"):
        plus(torch.zeros(B, T, 3, 5, 5))


# -- 3D-CNN ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("padding_mode", ["zeros", "circular"])
def test_conv3d_classifier_shapes_and_gradients(padding_mode):
    model = Conv3DClassifier(2, 5, channels=(4, 6), padding_mode=padding_mode)
    x = torch.randn(B, 6, 2, 8, 8)
    logits = model(x)
    assert logits.shape == (B, 5)
    logits.sum().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_conv3d_classifier_circular_padding_is_translation_invariant():
    torch.manual_seed(0)
    x = torch.randn(B, 5, 1, 8, 8, dtype=torch.float64)
    shifted = torch.roll(x, (3, -2), (-2, -1))
    circ = Conv3DClassifier(1, 3, channels=(4,), padding_mode="circular").double()
    zero = Conv3DClassifier(1, 3, channels=(4,), padding_mode="zeros").double()
    zero.load_state_dict(circ.state_dict())
    assert (circ(shifted) - circ(x)).abs().max() <= 1e-12
    assert (zero(shifted) - zero(x)).abs().max() > 1e-6  # control


@pytest.mark.parametrize(
    "args, kwargs, msg",
    [
        ((0, 3), {}, "in_channels"),
        ((1, 0), {}, "num_classes"),
        ((1, 3), dict(channels=()), "channels"),
        ((1, 3), dict(kernel_size=2), "odd"),
        ((1, 3), dict(padding_mode="reflect"), "padding_mode"),
    ],
)
def test_conv3d_classifier_bad_arguments(args, kwargs, msg):
    with pytest.raises(ValueError, match=msg):
        Conv3DClassifier(*args, **kwargs)


def test_conv3d_classifier_bad_input():
    with pytest.raises(ValueError, match=r"\[B, T, C=1, H, W\]"):
        Conv3DClassifier(1, 3)(torch.zeros(B, 3, 8, 8))
