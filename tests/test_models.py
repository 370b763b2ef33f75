"""Next-frame predictor and sequence classifier: shapes, exact flow/static equivariance, controls.

Flows of the expected outputs are applied with :func:`flow_escnn.flows.flow_sequence`
(``start`` = the frame index of output 0); rotations with ``torch.rot90`` on trivial fields (``tests/oracles.py``).
Float64 models are deep copies (escnn shares basis-expansion modules between convolutions
with the same configuration, so ``.double()`` on a shared one would leak into other tests).
"""
from __future__ import annotations

import copy

import pytest
import torch

from flow_escnn._compat import enn, gspaces
from flow_escnn.flows import FlowGenerator, FlowSet, flow_sequence
from flow_escnn.models import CELLS, NextFramePredictor, SequenceClassifier
from tests.oracles import quarter_turns

C4 = gspaces.rot2dOnR2(4)
IN = enn.FieldType(C4, [C4.trivial_repr])
HID = enn.FieldType(C4, [C4.regular_repr] * 2)
B, T_IN, P = 2, 4, 3
TORUS = FlowSet.translations(C4, 2)  # covers Z_5 x Z_5
MUS = [(1, 0), (2, -1), (-1, 2)]


def _randomize(model: torch.nn.Module, seed: int = 0, scale: float = 0.3) -> torch.nn.Module:
    """Redraw every parameter (steerable-basis coefficients stay equivariant for any value).

    escnn's default initialisation plus ReLU often leaves a freshly built predictor's output
    (nearly) all zeros, which would make the equivariance checks vacuous.
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return model


def _double(model: torch.nn.Module) -> torch.nn.Module:
    return _randomize(copy.deepcopy(model).double().eval())


def _x(h: int = 5, t: int = T_IN, dtype=torch.float64, seed: int = 0) -> torch.Tensor:
    return torch.randn(B, t, 1, h, h, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _flow_error(model, x: torch.Tensor, mu, start: int, **kw) -> float:
    """max |model(psi(mu) x) - psi_{start + j}(mu) model(x)_j|."""
    g = FlowGenerator(C4, mu)
    with torch.no_grad():
        y = model(x, **kw)
        y2 = model(flow_sequence(x, IN, g), **kw)
    assert y.abs().amax(dim=(0, 2, 3, 4)).min() > 1e-3, "vacuous check: some predicted frame is all zeros"
    return float((y2 - flow_sequence(y, IN, g, start=start)).abs().max())


# -- predictor -------------------------------------------------------------------------------------
def test_predictor_shapes_and_one_step_outputs():
    torch.manual_seed(0)
    model = NextFramePredictor(IN, HID, FlowSet.translations(C4, 1), decoder_layers=1)
    x = _x(6, dtype=torch.float32)
    y = model(x, P)
    assert y.shape == (B, P, 1, 6, 6)
    full = model(x, P, include_one_step=True)
    assert full.shape == (B, T_IN - 1 + P, 1, 6, 6)
    assert (full[:, T_IN - 1:] - y).abs().max() <= 1e-6
    assert (model.one_step_predictions(x) - full[:, : T_IN - 1]).abs().max() <= 1e-6
    y.square().mean().backward()
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("cell", CELLS)
def test_predictor_is_exactly_flow_equivariant_on_the_torus(cell):
    """Output j (frame T_in + j) transforms by psi_{T_in + j}(mu), to float64 rounding (every cell= choice, two layers)."""
    torch.manual_seed(0)
    model = _double(NextFramePredictor(IN, HID, TORUS, cell=cell, num_layers=2))
    x = _x()
    for mu in MUS:
        assert _flow_error(model, x, mu, start=T_IN, num_predictions=P) <= 1e-10
    assert _flow_error(model, x, (0, 0), start=T_IN, num_predictions=P) == 0.0
    # one-step-ahead predictions: output j is frame j + 1
    assert _flow_error(model, x, (1, 1), start=1, num_predictions=P, include_one_step=True) <= 1e-10


def test_predictor_equivariance_controls_fail():
    """The reference's lagged convention and a G-RNN predictor fail the same check."""
    torch.manual_seed(0)
    model = _double(NextFramePredictor(IN, HID, TORUS))
    x = _x()
    assert _flow_error(model, x, (1, 0), start=T_IN - 1, num_predictions=P) > 1e-2  # lagged by one step
    grnn = _double(NextFramePredictor(IN, HID, FlowSet.identity(C4)))
    assert _flow_error(grnn, x, (1, 0), start=T_IN, num_predictions=P) > 1e-2


def test_predictor_with_truncated_v_is_only_approximately_equivariant():
    """V radius 2 on an 8x8 torus does not cover it: an error from V's border (measured)."""
    torch.manual_seed(0)
    model = _double(NextFramePredictor(IN, HID, TORUS))
    x = _x(8)
    with torch.no_grad():
        scale = float(model(x, num_predictions=P).abs().max())
    err = _flow_error(model, x, (1, 0), start=T_IN, num_predictions=P)
    assert 1e-8 < err < 10 * scale


def test_predictor_never_sees_the_frame_it_predicts():
    torch.manual_seed(0)
    model = _double(NextFramePredictor(IN, HID, TORUS))
    x = _x()
    with torch.no_grad():
        y = model(x, P, include_one_step=True)  # output j is frame j + 1
        for k in range(1, T_IN):
            x2 = x.clone()
            x2[:, k:] += 1.0  # perturb frames k.. only
            y2 = model(x2, P, include_one_step=True)
            assert (y2[:, : k] - y[:, : k]).abs().max() == 0  # predictions of frames 1..k unchanged
            assert (y2[:, k:] - y[:, k:]).abs().max() > 0


def test_predictor_is_rotation_equivariant_float32():
    torch.manual_seed(0)
    model = _randomize(NextFramePredictor(IN, HID, FlowSet.translations(C4, 1), cell="gru").eval())
    assert model.static_equivariant
    x = _x(6, dtype=torch.float32)
    with torch.no_grad():
        y = model(x, P)
        for k in (1, 2, 3):
            y_rot = model(quarter_turns(x, k), P)
            assert (y_rot - quarter_turns(y, k)).abs().max() <= 1e-5
    lopsided = _randomize(NextFramePredictor(IN, HID, FlowSet(C4, [(0, 0), (1, 0)])).eval())
    assert not lopsided.static_equivariant
    with torch.no_grad():
        y = lopsided(x, P)
        assert (lopsided(quarter_turns(x, 1), P) - quarter_turns(y, 1)).abs().max() > 1e-4


@pytest.mark.parametrize(
    "kwargs, call, exc, msg",
    [
        (dict(cell="rnn"), None, ValueError, "cell must be one of"),
        (dict(pool="sum"), None, ValueError, "pool must be one of"),
        (dict(decoder_layers=-1), None, ValueError, "decoder_layers"),
        (dict(decoder_type=enn.FieldType(C4, [C4.irrep(1)])), None, ValueError, "pointwise"),
        ({}, lambda m: m(torch.zeros(B, 1, 5, 5)), ValueError, "add the time axis"),
        ({}, lambda m: m(torch.zeros(B, T_IN, 2, 5, 5)), ValueError, "C=1"),
        ({}, lambda m: m(torch.zeros(B, T_IN, 1, 5, 5), 0), ValueError, "num_predictions"),
        ({}, lambda m: m([1.0]), TypeError, "torch.Tensor"),
        ({}, lambda m: m.one_step_predictions(torch.zeros(B, 1, 1, 5, 5)), ValueError, "T_in >= 2"),
    ],
)
def test_predictor_bad_arguments(kwargs, call, exc, msg):
    with pytest.raises(exc, match=msg):
        model = NextFramePredictor(IN, HID, FlowSet.translations(C4, 1), **kwargs)
        call(model)


# -- classifier ------------------------------------------------------------------------------------
@pytest.mark.parametrize("readout, cell", [("last", "fernn"), ("mean", "lstm")])
def test_classifier_is_flow_and_rotation_invariant(readout, cell):
    torch.manual_seed(0)
    model = _randomize(SequenceClassifier(IN, HID, TORUS, 4, cell=cell, readout=readout))
    m64 = _double(model)
    x = _x()
    with torch.no_grad():
        logits = m64(x)
        assert logits.shape == (B, 4)
        for mu in MUS:
            moved = flow_sequence(x, IN, FlowGenerator(C4, mu))
            assert (m64(moved) - logits).abs().max() <= 1e-10
        x32 = x.float()
        ref = model.eval()(x32)
        for k in (1, 2, 3):
            assert (model(quarter_turns(x32, k)) - ref).abs().max() <= 1e-5


def test_classifier_invariance_controls_fail():
    torch.manual_seed(0)
    grnn = _double(SequenceClassifier(IN, HID, FlowSet.identity(C4), 4))
    x = _x()
    with torch.no_grad():
        moved = flow_sequence(x, IN, FlowGenerator(C4, (1, 0)))
        assert (grnn(moved) - grnn(x)).abs().max() > 1e-4


def test_classifier_features_and_gradients():
    model = SequenceClassifier(IN, HID, FlowSet.translations(C4, 1), 3, group_pool="norm", spatial_pool="max")
    x = _x(6, dtype=torch.float32)
    assert model.features(x).shape == (B, 2) and model.num_classes == 3  # one feature per regular field
    model(x).sum().backward()
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize(
    "kwargs, exc, msg",
    [
        (dict(num_classes=0), ValueError, "num_classes"),
        (dict(cell="rnn"), ValueError, "cell"),
        (dict(velocity_pool="sum"), ValueError, "velocity_pool"),
        (dict(group_pool="sum"), ValueError, "group_pool"),
        (dict(spatial_pool="sum"), ValueError, "spatial_pool"),
        (dict(readout="first"), ValueError, "readout"),
    ],
)
def test_classifier_bad_arguments(kwargs, exc, msg):
    args = dict(num_classes=3)
    args.update(kwargs)
    with pytest.raises(exc, match=msg):
        SequenceClassifier(IN, HID, FlowSet.translations(C4, 1), **args)


def test_classifier_bad_input():
    model = SequenceClassifier(IN, HID, FlowSet.translations(C4, 1), 3)
    with pytest.raises(ValueError, match=r"\[B, T, C=1, H, W\]"):
        model(torch.zeros(B, 1, 5, 5))
    with pytest.raises(TypeError, match="torch.Tensor"):
        model("frames")


@pytest.mark.parametrize("activation", ["clamp", "sigmoid"])
def test_predictor_output_activation_bounds_predictions_and_keeps_equivariance(activation):
    from flow_escnn.checks import check_flow_equivariance

    gs = gspaces.rot2dOnR2(4)
    it = enn.FieldType(gs, [gs.trivial_repr])
    torch.manual_seed(0)
    model = NextFramePredictor(
        it, enn.FieldType(gs, [gs.regular_repr]), FlowSet.translations(gs, 2), output_activation=activation
    ).double().eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.5)  # outputs partly outside [0, 1], so the activation matters
        model.decoder[-1].conv.bias.fill_(0.5)  # and partly inside, so the check is not vacuous
    x = torch.randn(2, 3, 1, 5, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        y = model(x, 4)
    assert y.min() >= 0.0 and y.max() <= 1.0
    assert ((y > 0) & (y < 1)).any(), "vacuous: every prediction saturated"
    report = check_flow_equivariance(
        lambda s: model(s, 4), x, it, [(1, 0), (-1, 2)], out_type=it, time_offset=3, periodic_velocities=False
    )
    assert report.passed, report.summary()
    with torch.no_grad():
        assert torch.equal(model.export((5, 5))(x, 4), y)
    with pytest.raises(ValueError, match="output_activation must be one of"):
        NextFramePredictor(it, enn.FieldType(gs, [gs.regular_repr]), FlowSet.translations(gs, 1), output_activation="tanh")


def test_predictor_expands_every_filter_once_per_call(monkeypatch):
    from flow_escnn.nn import SteerableConv

    calls = []
    original = SteerableConv.expand

    def counting(self):
        calls.append(id(self))
        return original(self)

    monkeypatch.setattr(SteerableConv, "expand", counting)
    model = NextFramePredictor(IN, enn.FieldType(C4, [C4.regular_repr]), FlowSet.translations(C4, 1), num_layers=2)
    x = torch.rand(1, 4, 1, 6, 6, generator=torch.Generator().manual_seed(0))
    calls.clear()
    model(x, 5)
    convs = [m for m in model.modules() if isinstance(m, SteerableConv)]
    assert sorted(calls) == sorted(id(c) for c in convs)  # each conv exactly once, for any horizon
