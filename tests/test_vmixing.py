"""V-mixing (flow_escnn.nn._vmixing): exact static G-equivariance, flow equivariance away
from the border of V, identity at initialisation, export, and its mode restriction."""
from __future__ import annotations

import pytest
import torch

from flow_escnn import FlowGenerator, FlowSet, flow_sequence
from flow_escnn._compat import enn, gspaces
from flow_escnn.checks import check_static_equivariance
from flow_escnn.nn import FERNN, FlowGRU, VelocityMixing

C4 = gspaces.rot2dOnR2(4)
D4 = gspaces.flipRot2dOnR2(4)
F64 = torch.float64


def _model(cls, gs, flows, mixing=1, **kw):
    torch.manual_seed(0)
    it = enn.FieldType(gs, [gs.trivial_repr])
    ht = enn.FieldType(gs, [gs.regular_repr])
    m = cls(it, ht, flows, velocity_mixing=mixing, **kw).to(F64).eval()
    if mixing:
        with torch.no_grad():
            for cell in m.cells:
                cell.mix.weight.copy_(torch.tensor([0.7, -0.4, 0.3][: cell.mix.weight.numel()], dtype=F64))
    return m, it


def _x(t=3, side=6):
    return torch.rand(2, t, 1, side, side, dtype=F64, generator=torch.Generator().manual_seed(1))


def test_orbits_and_identity_initialisation():
    flows = FlowSet.translations(C4, 1)
    mix = VelocityMixing(flows, 1)
    assert mix.weight.numel() == 3  # offsets 0, axis neighbours, diagonal neighbours (C4 orbits)
    assert torch.equal(mix.matrix(), torch.eye(9, dtype=mix.matrix().dtype))
    torch.manual_seed(0)
    it = enn.FieldType(C4, [C4.trivial_repr])
    ht = enn.FieldType(C4, [C4.regular_repr])
    plain = FERNN(it, ht, flows).to(F64)
    mixed = FERNN(it, ht, flows, velocity_mixing=1).to(F64)
    missing, unexpected = mixed.load_state_dict(plain.state_dict(), strict=False)
    assert missing == ["cells.0.mix.weight"] and not unexpected
    x = _x()
    assert torch.equal(mixed(x).tensor, plain(x).tensor)


@pytest.mark.parametrize("gs", [C4, D4], ids=["C4", "D4"])
@pytest.mark.parametrize("cls", [FERNN, FlowGRU], ids=["FERNN", "GRU"])
def test_static_equivariance_is_exact(cls, gs):
    model, it = _model(cls, gs, FlowSet.translations(gs, 1), num_layers=2)
    report = check_static_equivariance(model, _x(), it)
    assert report.passed and report.max_abs_error <= 1e-10, report.summary()


def test_flow_equivariance_exact_inside_v_and_broken_only_at_its_border():
    flows = FlowSet.translations(C4, 2)
    model, it = _model(FERNN, C4, flows)
    mu = FlowGenerator(C4, (1, 0))
    x = _x(t=2)
    with torch.no_grad():
        h = model(x)
        h2 = model(flow_sequence(x, it, mu))
    pred, valid = h.transform_flow(mu)
    err = (h2.tensor[:, 1] - pred.tensor[:, 1]).abs().amax(dim=(0, 2, 3, 4))  # frame t = 1, per slice
    # exact where every neighbour nu + delta and nu + delta - mu lies in V (|delta| <= 1)
    inner = [flows.index(v) for v in flows.velocities if max(abs(v[0]), abs(v[1]), abs(v[0] - 1)) <= 1]
    border = [i for i in range(len(flows)) if bool(valid[i]) and i not in inner]
    assert len(inner) == 6 and border
    assert err[inner].max().item() <= 1e-10
    assert err[border].max().item() > 1e-6  # the documented border effect: mixing is really active
    err0 = (h2.tensor[:, 0] - pred.tensor[:, 0])[:, valid].abs().max().item()
    assert err0 <= 1e-10  # frame 0 has no recurrent term yet


def test_export_twin_and_gradients():
    model, _ = _model(FERNN, C4, FlowSet.translations(C4, 1), num_layers=2)
    x = _x()
    twin = model.export((6, 6))
    with torch.no_grad():
        assert (twin(x) - model(x).tensor).abs().max().item() <= 1e-10
    model.train()
    model(x).tensor.square().sum().backward()
    assert all(c.mix.weight.grad is not None and c.mix.weight.grad.abs().sum() > 0 for c in model.cells)


def test_mode_restrictions_and_bad_radius():
    flows = FlowSet.rotations(gspaces.rot2dOnR2(8), [-1, 0, 1])
    gs8 = flows.gspace
    it = enn.FieldType(gs8, [gs8.trivial_repr])
    ht = enn.FieldType(gs8, [gs8.regular_repr])
    auto = FERNN(it, ht, flows, velocity_mixing=1)
    assert auto.resolve_mode((7, 7)) == "hidden"  # interpolated flows would pick comoving without mixing
    with pytest.raises(ValueError, match="stationary frame"):
        FERNN(it, ht, flows, velocity_mixing=1, mode="comoving").resolve_mode((7, 7))
    with pytest.raises(ValueError, match="radius must be a positive integer"):
        VelocityMixing(flows, 0)
