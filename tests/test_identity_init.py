"""The identity initialisation of a recurrent convolution (:meth:`flow_escnn.nn.SteerableConv.init_identity_`)
and its config switch (``identity_init``), from the math.

* The filter becomes :math:`g\\,\\delta_{y,0} I + \\epsilon\\,\\kappa_0 / \\max|\\kappa_0|` (planes and volumes,
  trivial and regular fields), still in the steerable basis.
* What it is for: with gain 1, no noise and the identity nonlinearity, a FERNN slice :math:`\\nu` is the
  integral of the input along its own flow, :math:`h_t(\\nu) = \\sum_{s \\le t} \\psi_{t-s}(\\nu)(U * f_s)`. For
  an input moving with velocity :math:`v` the slice :math:`\\nu = v` is then exactly :math:`(t+1)(U * f_t)`;
  the other slices (and a randomly initialised W) are not (controls).
"""
from __future__ import annotations

import math

import pytest
import torch

from flow_escnn import FlowSet
from flow_escnn._compat import enn, gspaces
from flow_escnn.models import PredictorConfig
from flow_escnn.models._factory import build_predictor
from flow_escnn.nn import FERNN, SteerableConv
from tests.oracles import translate_sequence

F64 = torch.float64


def _centre(filt: torch.Tensor) -> torch.Tensor:
    c = filt.shape[-1] // 2
    return filt[(slice(None), slice(None)) + (c,) * (filt.dim() - 2)]


@pytest.mark.parametrize("gs, regular", [
    (gspaces.trivialOnR2(), False), (gspaces.rot2dOnR2(4), True), (gspaces.flipRot2dOnR2(4), True),
    (gspaces.rot2dOnR3(4), True), (gspaces.trivialOnR3(), False),
])
@pytest.mark.parametrize("noise", [0.0, 0.1])
def test_the_filter_is_gain_times_identity_plus_scaled_noise(gs, regular, noise):
    torch.manual_seed(0)
    ft = enn.FieldType(gs, [gs.regular_repr if regular else gs.trivial_repr] * 2)
    conv = SteerableConv(ft, ft, 3, bias=False)
    f0, _ = conv.expand()
    f0 = f0.detach()
    conv.init_identity_(0.7, noise=noise)
    got = conv.expand()[0].detach()
    want = noise * f0 / f0.abs().max()
    _centre(want).add_(0.7 * torch.eye(ft.size))
    assert float((got - want).abs().max()) < 1e-5
    # control: the same comparison flags the filter before the init
    assert float((f0 - want).abs().max()) > 0.1


def test_a_frozen_layer_is_initialised_and_stays_frozen():
    gs = gspaces.rot2dOnR2(4)
    ft = enn.FieldType(gs, [gs.regular_repr])
    conv = SteerableConv(ft, ft, 3).requires_grad_(False)
    conv.init_identity_(1.0, noise=0.0)
    assert not conv.conv.weights.requires_grad
    assert torch.allclose(_centre(conv.expand()[0]), torch.eye(4), atol=1e-5)


def test_refuses_what_it_cannot_do():
    gs = gspaces.rot2dOnR2(4)
    a, b = enn.FieldType(gs, [gs.regular_repr]), enn.FieldType(gs, [gs.regular_repr] * 2)
    with pytest.raises(ValueError, match="same field type .* maps 4 to 8 channels"):
        SteerableConv(a, b, 3).init_identity_(1.0)
    for gain in (0.0, -1.0, math.inf, math.nan, True):
        with pytest.raises(ValueError, match="gain must be a finite number > 0"):
            SteerableConv(a, a, 3).init_identity_(gain)
    with pytest.raises(ValueError, match="noise must be a finite number >= 0"):
        SteerableConv(a, a, 3).init_identity_(1.0, noise=-0.1)


def _slices_vs_integral(identity: bool):
    """Max error of slice v, and the smallest error of the other slices, against (t+1) (U * f_t)."""
    gs = gspaces.trivialOnR2()
    ft = enn.FieldType(gs, [gs.trivial_repr])
    hid = enn.FieldType(gs, [gs.trivial_repr] * 3)
    flows = FlowSet.translations(gs, 1)
    torch.manual_seed(1)
    layer = FERNN(ft, hid, flows, nonlinearity="identity").double()
    if identity:
        layer.cells[0].W.init_identity_(1.0, noise=0.0)
    v = (1, -1)
    x = translate_sequence(torch.rand(2, 1, 1, 7, 7, dtype=F64).expand(2, 5, 1, 7, 7), v)
    with torch.no_grad():
        h = layer(x).tensor  # [B, T, V, C, H, W]
    u = layer.cells[0].U
    with torch.no_grad():
        ux = torch.stack([u(enn.GeometricTensor(x[:, t], ft)).tensor for t in range(x.shape[1])], 1)
    want = ux * torch.arange(1, x.shape[1] + 1, dtype=F64).view(1, -1, 1, 1, 1)
    k = flows.velocities.index((*v, 0))  # (vx, vy, rotation step)
    err = float((h[:, :, k] - want).abs().max())
    others = min(float((h[:, :, j] - want).abs().max()) for j in range(len(flows)) if j != k)
    return err, others


def test_each_slice_starts_as_the_integral_along_its_own_flow():
    err, others = _slices_vs_integral(identity=True)
    assert err <= 1e-10
    assert others > 1e-2  # control: the slices of the other velocities are not
    err_random, _ = _slices_vs_integral(identity=False)
    assert err_random > 1e-2  # control: a randomly initialised W is not an integrator


def test_config_switch_builds_the_same_init_and_refuses_gated_cells():
    kw = dict(flow_radius=1, hidden_channels=2, decoder_layers=1)
    c = PredictorConfig(identity_init=0.8, **kw)
    model = build_predictor(c.resolve())
    filt = model.encoder.cells[0].W.expand()[0].detach()
    assert float((_centre(filt).diagonal() - 0.8).abs().max()) <= 0.1 + 1e-5  # gain + a tenth of the random filter
    plain = build_predictor(PredictorConfig(**kw).resolve())
    assert float((_centre(plain.encoder.cells[0].W.expand()[0].detach()).diagonal() - 0.8).abs().max()) > 0.1  # control
    with pytest.raises(ValueError, match="identity_init .* cell 'gru' computes 3 gates"):
        PredictorConfig(identity_init=0.8, cell="gru", **kw).resolve()
    from flow_escnn.models import ClassifierConfig

    with pytest.raises(ValueError, match="model 'conv3d' has none"):
        ClassifierConfig(model="conv3d", identity_init=0.8, flow_radius=1).resolve()
    message = r"identity_init \(a gain; 0: escnn's random init\) must be a finite number >= 0"
    for bad in (-1.0, math.nan, math.inf):
        with pytest.raises(ValueError, match=message):
            PredictorConfig(identity_init=bad, **kw).resolve()


def test_the_default_is_the_tasks_where_the_cell_takes_it():
    from flow_escnn.experiments._volumes import VolumeExperimentConfig

    assert PredictorConfig(flow_radius=1).resolve().identity_init == 0.0
    assert PredictorConfig(flow_radius=1, identity_init=0.5).resolve().identity_init == 0.5
    assert VolumeExperimentConfig().resolve().identity_init == VolumeExperimentConfig.DEFAULT_IDENTITY_INIT > 0
    assert VolumeExperimentConfig(identity_init=0.0).resolve().identity_init == 0.0  # escnn's init, asked for
    assert VolumeExperimentConfig(cell="gru").resolve().identity_init == 0.0  # a gated W: nothing to start
