"""Plain-PyTorch twins: same function as the escnn models (the same engine program with frozen
weights), no escnn object inside; pickled and reloaded they still compute it.

Also: state_dicts saved in train mode load in eval mode (and back) with identical outputs.
"""
from __future__ import annotations

import copy

import pytest
import torch

from flow_escnn._compat import enn, gspaces
from flow_escnn.flows import FlowSet, GridElement, TransportPlan
from flow_escnn.lifted import LiftedTensor
from flow_escnn.models import NextFramePredictor, SequenceClassifier
from flow_escnn.nn import CELL_KINDS, CELLS, FERNN, FlowGRU, FlowLSTM, SteerableConv
from flow_escnn.nn._baselines import GRNN
from flow_escnn.nn._export import export, export_conv, export_flow_rnn, find_escnn_objects

C4 = gspaces.rot2dOnR2(4)
C8 = gspaces.rot2dOnR2(8)
IN = enn.FieldType(C4, [C4.trivial_repr])
HID = enn.FieldType(C4, [C4.regular_repr])
B, T, H = 2, 4, 6
TOL = 1e-5

def _x(t: int = T, h: int = H, c: int = 1, seed: int = 0) -> torch.Tensor:
    return torch.randn(B, t, c, h, h, generator=torch.Generator().manual_seed(seed))


def _states(finals):
    """Flatten the original's final states (LiftedTensor or tuples of them) to tensors."""
    out = []
    for st in finals:
        items = st if isinstance(st, tuple) else (st,)
        out.append([s.tensor for s in items])
    return out


def _max_diff(a, b) -> float:
    return float((a - b).detach().abs().max())


# -- sequence layers ---------------------------------------------------------------------------------
@pytest.mark.parametrize("cls", [CELL_KINDS[name].layer for name in CELLS], ids=CELLS)
@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize("mode", ["hidden", "comoving"])
def test_flow_rnn_twin_matches(cls, num_layers, mode):
    torch.manual_seed(0)
    model = cls(IN, HID, FlowSet.translations(C4, 1), num_layers=num_layers, mode=mode).eval()
    twin = export(model, grid_shape=(H, H), max_steps=T)
    assert find_escnn_objects(twin) == []
    x = _x()
    with torch.no_grad():
        seq, finals = model.forward_with_state(x)
        seq2, finals2 = twin.forward_with_state(x)
        assert _max_diff(seq.tensor, seq2) <= TOL
        for st, st2 in zip(_states(finals), finals2):
            assert len(st) == len(st2)
            for a, b in zip(st, st2):
                assert _max_diff(a, b) <= TOL
        # shorter sequences reuse the co-moving tables' prefix; initial states are honoured
        h0 = [[s + 0.5 for s in st] for st in _states(finals)]
        h0_orig = [tuple(LiftedTensor(s, model.out_type) for s in st) for st in h0]
        h0_orig = [st if len(st) > 1 else st[0] for st in h0_orig]
        seq_a, _ = model.forward_with_state(x[:, :2], h0=h0_orig)
        seq_b, _ = twin.forward_with_state(x[:, :2], h0=h0)
        assert _max_diff(seq_a.tensor, seq_b) <= TOL


def test_grnn_twin_matches():
    torch.manual_seed(0)
    model = GRNN(IN, HID, num_layers=2).eval()
    twin = export(model, grid_shape=(H, H))
    with torch.no_grad():
        assert _max_diff(model(_x()).tensor, twin(_x())) <= TOL


@pytest.mark.parametrize("mode", ["auto", "hidden"])
def test_interpolated_rotation_flows_twin_matches(mode):
    """45-degree rotation flows on C8 use bilinear tables; co-moving ("auto") and hidden mode."""
    torch.manual_seed(0)
    in_type = enn.FieldType(C8, [C8.trivial_repr])
    hid = enn.FieldType(C8, [C8.regular_repr])
    model = FlowLSTM(in_type, hid, FlowSet.rotations(C8, [-1, 0, 1]), num_layers=2, mode=mode).eval()
    assert model.resolve_mode((7, 7)) == ("comoving" if mode == "auto" else "hidden")
    twin = export_flow_rnn(model, (7, 7), max_steps=5)
    assert twin.mode == model.resolve_mode((7, 7))
    x = _x(5, 7)
    with torch.no_grad():
        assert _max_diff(model(x).tensor, twin(x)) <= TOL
        assert _max_diff(model(x[:, :3]).tensor, twin(x[:, :3])) <= TOL


def test_transport_windows_for_dense_fibers_and_bilinear_space():
    ft = enn.FieldType(C8, [C8.irrep(1), C8.trivial_repr])  # rho(45 deg) is a dense 2x2 block
    r = C8.fibergroup.element(1)
    elements = [GridElement(C8, r), GridElement(C8, None, (1, -2)), GridElement(C8, r @ r, (0, 1))]
    plan = TransportPlan(ft, elements, (7, 7))
    assert not plan.exact and not plan.fiber_is_permutation
    x = torch.randn(2, 3, ft.size, 7, 7)
    assert _max_diff(plan(x[:, 1:], 0), plan(x)[:, 1:]) > 1e-3  # slice 0's table is not slice 1's
    with pytest.raises(ValueError, match=r"expected a tensor \[\.\.\., M=3, C=3, H=7, W=7\]"):
        plan(x[:, 1:])  # without a start, the slice count must match: no silent partial use
    assert _max_diff(plan(x[:, 1:], 1), plan(x)[:, 1:]) <= 1e-6
    rows = torch.tensor([[2, 0]])
    assert _max_diff(plan(x[:, None, [2, 0]], rows=rows)[:, 0], plan(x)[:, [2, 0]]) <= 1e-6


# -- circular padding --------------------------------------------------------------------------------
def test_export_keeps_circular_padding_unlike_escnn():
    torch.manual_seed(0)
    conv = SteerableConv(IN, HID, 3)
    ours = export(conv)
    assert isinstance(ours, torch.nn.Conv2d) and ours.padding_mode == "circular"
    r2 = enn.R2Conv(IN, HID, 3, padding=1, padding_mode="circular")
    r2.eval()
    x = torch.randn(2, 1, 6, 6)
    ref = r2(enn.GeometricTensor(x, IN)).tensor
    assert export_conv(r2).padding_mode == "circular"
    assert _max_diff(export(r2)(x), ref) <= TOL
    assert _max_diff(r2.export()(x), ref) > 1e-3  # control: escnn's own export drops circular padding
    # the border behaves periodically: rolling the input rolls the output
    y = ours(x)
    assert _max_diff(ours(torch.roll(x, (2, 3), (-2, -1))), torch.roll(y, (2, 3), (-2, -1))) <= TOL


def test_fernn_twin_is_translation_equivariant_on_the_torus():
    torch.manual_seed(0)
    twin = export(FERNN(IN, HID, FlowSet.translations(C4, 1)).eval(), grid_shape=(H, H))
    x = _x()
    with torch.no_grad():
        y = twin(x)
        assert _max_diff(twin(torch.roll(x, (1, 2), (-2, -1))), torch.roll(y, (1, 2), (-2, -1))) <= TOL


# -- models ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("cell, num_layers", [("fernn", 2), ("lstm", 1)])
def test_predictor_twin_matches(cell, num_layers):
    torch.manual_seed(0)
    model = NextFramePredictor(IN, HID, FlowSet.translations(C4, 1), cell=cell, num_layers=num_layers).eval()
    twin = export(model, grid_shape=(H, H))
    assert find_escnn_objects(twin) == []
    x = _x()
    with torch.no_grad():
        assert _max_diff(model(x, 3), twin(x, 3)) <= TOL
        assert _max_diff(model(x, 2, include_one_step=True), twin(x, 2, True)) <= TOL


@pytest.mark.parametrize("readout", ["last", "mean"])
def test_classifier_twin_matches(readout):
    torch.manual_seed(0)
    quot = enn.FieldType(C4, [C4.regular_repr, C4.trivial_repr])
    model = SequenceClassifier(IN, quot, FlowSet.translations(C4, 1), 3, cell="gru", readout=readout,
                               group_pool="mean").eval()
    twin = export(model, grid_shape=(H, H))
    assert find_escnn_objects(twin) == []
    with torch.no_grad():
        assert _max_diff(model(_x()), twin(_x())) <= TOL


def test_twins_pickle_save_and_load(tmp_path):
    torch.manual_seed(0)
    flows = FlowSet.translations(C4, 1)
    x = _x()
    cases = [
        (FlowGRU(IN, HID, flows, num_layers=2, mode="comoving").eval(), lambda m: m(x)),
        (NextFramePredictor(IN, HID, flows, cell="lstm").eval(), lambda m: m(x, 2, True)),
        (SequenceClassifier(IN, HID, flows, 3).eval(), lambda m: m(x)),
    ]
    for i, (model, call) in enumerate(cases):
        twin = export(model, grid_shape=(H, H), max_steps=T)
        path = tmp_path / f"twin{i}.pt"
        torch.save(twin, path)
        loaded = torch.load(path, weights_only=False)
        assert find_escnn_objects(loaded) == []
        with torch.no_grad():
            ref = call(model)
            ref = ref.tensor if hasattr(ref, "tensor") else ref
            assert _max_diff(call(loaded), ref) == 0.0
        # the frozen weights are a state_dict like any other: a fresh twin takes them
        fresh = export(model, grid_shape=(H, H), max_steps=T)
        with torch.no_grad():
            for p in fresh.parameters():
                p.add_(1.0)
        fresh.load_state_dict(loaded.state_dict())
        with torch.no_grad():
            assert _max_diff(call(fresh), ref) == 0.0


# -- escnn-free check --------------------------------------------------------------------------------
def test_find_escnn_objects_flags_the_originals():
    model = NextFramePredictor(IN, HID, FlowSet.translations(C4, 1))
    found = find_escnn_objects(model)
    assert found and any("FieldType" in f for f in found)
    assert find_escnn_objects(torch.nn.Linear(2, 3)) == []


def test_generic_export_dispatch_and_errors():
    lin = torch.nn.Linear(2, 3)
    copied = export(lin)
    assert copied is not lin and torch.equal(copied.weight, lin.weight)
    seq = enn.SequentialModule(enn.R2Conv(IN, HID, 3, padding=1, padding_mode="circular"), enn.ReLU(HID))
    plain = export(seq)
    assert isinstance(plain, torch.nn.Sequential) and plain[0].padding_mode == "circular"
    with pytest.raises(ValueError, match="grid_shape"):
        export(FERNN(IN, HID, FlowSet.translations(C4, 1)))
    with pytest.raises(ValueError, match="grid_shape"):
        export(NextFramePredictor(IN, HID, FlowSet.translations(C4, 1)))

    class Wrapper(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = SteerableConv(IN, HID)

    with pytest.raises(TypeError, match="no export"):
        export(Wrapper())


def test_twin_refuses_other_grids_and_handles_any_length_through_the_flow_period():
    in_type = enn.FieldType(C8, [C8.trivial_repr])
    hid = enn.FieldType(C8, [C8.regular_repr])
    torch.manual_seed(5)
    model = FERNN(in_type, hid, FlowSet.rotations(C8, [0, 1])).eval()
    assert model.resolve_mode((7, 7)) == "comoving" and model.flows.period((7, 7)) == 8
    twin = export(model, grid_shape=(7, 7))  # co-moving tables cover one period: no max_steps needed
    x = _x(19, 7)  # longer than two periods
    with torch.no_grad():
        assert _max_diff(twin(x), model(x).tensor) <= TOL
    with pytest.raises(ValueError, match="7x7 grid"):
        twin(_x(2, 5))
    with pytest.raises(ValueError, match="C=1"):
        twin(_x(2, 7, c=2))
    with pytest.raises(ValueError, match="grid_shape"):
        export(model, grid_shape=(0, 7), max_steps=3)


# -- state_dict round trips between train and eval mode ------------------------------------------------
def _builders():
    flows = FlowSet.translations(C4, 1)
    return [
        (lambda: FERNN(IN, HID, flows, num_layers=2), lambda m, x: m(x).tensor),
        (lambda: NextFramePredictor(IN, HID, flows), lambda m, x: m(x, 2)),
        (lambda: SequenceClassifier(IN, HID, flows, 3), lambda m, x: m(x)),
    ]


@pytest.mark.parametrize("index", [0, 1, 2])
def test_state_dict_round_trips_between_train_and_eval(index):
    build, call = _builders()[index]
    x = _x()
    torch.manual_seed(1)
    source = build()
    for save_mode, load_mode in ((True, False), (False, True)):
        source.train(save_mode)
        state = copy.deepcopy(source.state_dict())
        torch.manual_seed(2)
        target = build().train(load_mode)
        target.load_state_dict(state)  # strict: same keys in both modes
        assert set(target.state_dict()) == set(state)
        with torch.no_grad():
            assert torch.equal(call(target, x), call(source, x))


def test_flow_rnn_export_method_equals_export_function():
    torch.manual_seed(3)
    model = FERNN(IN, HID, FlowSet.translations(C4, 1), num_layers=2).eval()
    x = _x()
    twin = model.export((H, H))
    assert not find_escnn_objects(twin)
    with torch.no_grad():
        assert (twin(x) - model(x).tensor).abs().max().item() <= TOL
        assert torch.equal(twin(x), export_flow_rnn(model, (H, H))(x))
