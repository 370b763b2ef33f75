"""Flow cells (FERNNCell, FlowGRUCell, FlowLSTMCell) and the pointwise nonlinearities.

The single-step API must compute exactly one step of the sequence layers, and one step
must satisfy the FERNN induction step written out by hand: if
``h'_{t-1}(nu) = roll(h_{t-1}(nu - mu), (t-1) mu)`` and ``f'_t = roll(f_t, t mu)`` then
``h'_t(nu) = roll(h_t(nu - mu), t mu)`` (package convention: a translation by ``(vx, vy)``
is ``torch.roll(shifts=(-vy, vx), dims=(-2, -1))``).
"""
from __future__ import annotations

import pytest
import torch

from flow_escnn import FlowSet
from flow_escnn._compat import enn, gspaces
from flow_escnn.lifted import LiftedTensor
from flow_escnn.nn import CELL_KINDS, CELLS, FERNN, NONLINEARITIES, FERNNCell, FlowGRUCell, FlowLSTM, FlowLSTMCell
from flow_escnn.nn._nonlinearity import check_pointwise, get_nonlinearity
from tests.oracles import roll

C4 = gspaces.rot2dOnR2(4)
C8 = gspaces.rot2dOnR2(8)
F64 = torch.float64
EXACT = 1e-10

# the cell= choices of the registry (grnn_plus, a model of its own, learns its transports: tests/test_engine.py)
PAIRS = [(CELL_KINDS[name].layer, CELL_KINDS[name].cell) for name in CELLS]
IDS = list(CELLS)


def ft(gs, *reprs):
    return enn.FieldType(gs, list(reprs))


def types():
    return ft(C4, C4.trivial_repr, C4.regular_repr), ft(C4, C4.regular_repr)


def as_tuple(state):
    return state if isinstance(state, tuple) else (state,)


def randn(rng, *shape):
    return torch.randn(*shape, generator=rng, dtype=F64)


@pytest.mark.parametrize("seq_cls,cell_cls", PAIRS, ids=IDS)
def test_cell_steps_equal_the_sequence_layer(seq_cls, cell_cls, rng):
    in_t, hid_t = types()
    flows = FlowSet.translations(C4, 1)
    torch.manual_seed(0)
    model = seq_cls(in_t, hid_t, flows, mode="hidden").double()
    cell = model.cells[0]
    assert isinstance(cell, cell_cls)
    x = randn(rng, 2, 3, in_t.size, 5, 6)
    with torch.no_grad():
        ref = model(x).tensor
        # state None == zeros
        state = cell(x[:, 0])
        assert all(isinstance(s, LiftedTensor) and s.type == cell.lifted_type for s in as_tuple(state))
        assert (as_tuple(state)[0].tensor - ref[:, 0]).abs().max().item() <= EXACT
        # a LiftedTensor state (or (h, c) pair) continues the recurrence
        for t in (1, 2):
            state = cell(x[:, t], state)
            assert (as_tuple(state)[0].tensor - ref[:, t]).abs().max().item() <= EXACT
        # explicit initial state == the sequence layer's h0
        h0 = tuple(LiftedTensor(randn(rng, 2, 9, hid_t.size, 5, 6), cell.lifted_type) for _ in as_tuple(state))
        h0_arg = h0 if len(h0) > 1 else h0[0]
        one = cell(x[:, 0], h0_arg)
        for mode in ("hidden", "comoving"):
            model.mode = mode
            seq = model(x[:, :1], h0=[h0_arg]).tensor
            assert (as_tuple(one)[0].tensor - seq[:, 0]).abs().max().item() <= EXACT
        # plain tensors are accepted for the state, too
        plain = cell(x[:, 0], tuple(s.tensor for s in h0) if len(h0) > 1 else h0[0].tensor)
        assert torch.equal(as_tuple(plain)[0].tensor, as_tuple(one)[0].tensor)


def test_cell_with_lifted_input_equals_second_layer(rng):
    in_t, hid_t = types()
    flows = FlowSet.rotations(C4, [-1, 0, 1])
    torch.manual_seed(0)
    model = FERNN(in_t, hid_t, flows, num_layers=2, mode="hidden").double()
    x = randn(rng, 2, 2, in_t.size, 5, 5)
    with torch.no_grad():
        ref = model(x).tensor
        h1 = model.cells[0](x[:, 0])
        h2 = model.cells[1](h1)  # lifted input as a LiftedTensor
        assert (h2.tensor - ref[:, 0]).abs().max().item() <= EXACT
        h1 = model.cells[0](x[:, 1], h1)
        h2 = model.cells[1](h1.tensor, h2)  # ... and as a plain [B, V, C, H, W] tensor
        assert (h2.tensor - ref[:, 1]).abs().max().item() <= EXACT


@pytest.mark.parametrize("cell_cls", [cell for _, cell in PAIRS], ids=IDS)
def test_one_step_induction_with_a_random_state(cell_cls, rng):
    """The induction step of the FERNN theorem, at t = 3, from a random (non-zero) state."""
    in_t, hid_t = types()
    flows = FlowSet.translations(C4, 1)
    vel = flows.velocities
    torch.manual_seed(0)
    cell = cell_cls(in_t, hid_t, flows).double()
    t, mu = 3, (1, -1)
    f = randn(rng, 2, in_t.size, 6, 6)
    state = tuple(randn(rng, 2, 9, hid_t.size, 6, 6) for _ in range(cell.state_size))
    src = {i: vel.index((vx - mu[0], vy - mu[1], 0)) for i, (vx, vy, _) in enumerate(vel)
           if (vx - mu[0], vy - mu[1], 0) in vel}
    assert len(src) == 4
    state_p = tuple(randn(rng, 2, 9, hid_t.size, 6, 6) for _ in range(cell.state_size))  # junk where no prediction
    for s, sp in zip(state, state_p):
        for i, j in src.items():
            sp[:, i] = roll(s[:, j], *mu, t - 1)
    with torch.no_grad():
        out = as_tuple(cell(f, state if cell.state_size > 1 else state[0]))
        out_p = as_tuple(cell(roll(f, *mu, t), state_p if cell.state_size > 1 else state_p[0]))
    for o, op in zip(out, out_p):
        err = max((op.tensor[:, i] - roll(o.tensor[:, j], *mu, t)).abs().max().item() for i, j in src.items())
        assert err <= EXACT, err
    # control: the same check with the previous-state shift off by one frame fails
    for s, sp in zip(state, state_p):
        for i, j in src.items():
            sp[:, i] = roll(s[:, j], *mu, t)
    with torch.no_grad():
        out_bad = as_tuple(cell(roll(f, *mu, t), state_p if cell.state_size > 1 else state_p[0]))
    err = max((out_bad[0].tensor[:, i] - roll(out[0].tensor[:, j], *mu, t)).abs().max().item() for i, j in src.items())
    assert err > 1e-2, err


def test_cell_state_dict_is_mode_independent():
    in_t, hid_t = types()
    torch.manual_seed(0)
    model = FlowLSTM(in_t, hid_t, FlowSet.translations(C4, 1), num_layers=2)
    fresh = list(model.state_dict())
    model.eval()
    evald = list(model.state_dict())
    model.train()
    assert fresh == evald == list(model.state_dict())
    assert not any(k.endswith(".filter") or k.endswith(".expanded_bias") for k in fresh)
    twin = FlowLSTM(in_t, hid_t, FlowSet.translations(C4, 1), num_layers=2).eval()
    twin.load_state_dict(model.state_dict())


# ----------------------------------------------------------------------------------------------
# nonlinearities
# ----------------------------------------------------------------------------------------------
def test_nonlinearities_are_pointwise_and_named():
    x = torch.linspace(-2, 2, 9, dtype=F64)
    assert set(NONLINEARITIES) == {"relu", "tanh", "sigmoid", "elu", "identity"}
    assert torch.equal(get_nonlinearity("relu")(x), x.clamp(min=0))
    assert torch.equal(get_nonlinearity("identity")(x), x)
    perm = torch.randperm(9)
    for name in NONLINEARITIES:  # pointwise: commutes with any permutation of entries
        fn = get_nonlinearity(name)
        assert torch.equal(fn(x)[perm], fn(x[perm]))
    with pytest.raises(ValueError, match=r"unknown nonlinearity 'gelu'; choose one of \['elu'"):
        get_nonlinearity("gelu")
    with pytest.raises(ValueError, match="unknown nonlinearity"):
        get_nonlinearity(None)  # type: ignore[arg-type]


def test_check_pointwise_accepts_permutation_fields_and_rejects_irreps():
    check_pointwise(ft(C4, C4.trivial_repr, C4.regular_repr, C4.quotient_repr(2)))
    with pytest.raises(ValueError, match=r"hidden_type contains representations \['irrep_1'\]"):
        check_pointwise(ft(C4, C4.regular_repr, C4.irrep(1)))
    with pytest.raises(ValueError, match="pointwise"):
        FERNNCell(ft(C4, C4.trivial_repr), ft(C4, C4.irrep(1)), FlowSet.identity(C4))
    # control: why irreps are rejected: relu does not commute with the rotation of an irrep(1) field
    rho = torch.as_tensor(C4.irrep(1)(C4.fibergroup.element(1)), dtype=F64)
    v = torch.tensor([1.0, -0.5], dtype=F64)
    assert not torch.allclose(torch.relu(rho @ v), rho @ torch.relu(v))


# ----------------------------------------------------------------------------------------------
# bad input
# ----------------------------------------------------------------------------------------------
def test_cell_bad_input(rng):
    in_t, hid_t = types()
    flows = FlowSet.translations(C4, 1)
    cell = FERNNCell(in_t, hid_t, flows).double()
    lstm = FlowLSTMCell(in_t, hid_t, flows).double()
    x = randn(rng, 2, in_t.size, 5, 5)
    with pytest.raises(ValueError, match=r"expected a frame \[B, 5, H, W\] or a lifted frame \[B, V, 5, H, W\]"):
        cell(randn(rng, 2, 3, 5, 5))
    with pytest.raises(ValueError, match=r"expected a frame"):
        cell(randn(rng, 2, 1, in_t.size, 5, 5, 1))
    with pytest.raises(ValueError, match="lifted input has V=4 slices but the cell has"):
        cell(randn(rng, 2, 4, in_t.size, 5, 5))
    with pytest.raises(TypeError, match="floating point"):
        cell(x.to(torch.int32))
    with pytest.raises(ValueError, match=r"state must be \[B, V, C, H, W\] = \(2, 9, 4, 5, 5\)"):
        cell(x, randn(rng, 2, 9, 4, 5, 6))
    with pytest.raises(ValueError, match=r"expects a state of 1 tensor\(s\), got 2"):
        cell(x, (randn(rng, 2, 9, 4, 5, 5),) * 2)
    with pytest.raises(ValueError, match=r"expects a state of 2 tensor\(s\), got 1"):
        lstm(x, randn(rng, 2, 9, 4, 5, 5))
    with pytest.raises(TypeError, match=r"expects its state as a LiftedTensor .* or a pair \(h, c\)"):
        lstm(x, "h")
    with pytest.raises(ValueError, match="dtype"):
        cell(x, randn(rng, 2, 9, 4, 5, 5).float())
    other_flows = FlowSet(C4, [(v, 0) for v in range(9)])
    other = LiftedTensor(randn(rng, 2, 9, 4, 5, 5), FERNNCell(in_t, hid_t, other_flows).lifted_type)
    with pytest.raises(ValueError, match="state has lifted type"):
        cell(x, other)
    with pytest.raises(ValueError, match="must share one gspace"):
        FERNNCell(in_t, ft(C8, C8.regular_repr), flows)
    with pytest.raises(ValueError, match="must share one gspace"):
        FlowGRUCell(ft(C8, C8.trivial_repr), hid_t, flows)
    with pytest.raises(TypeError, match="hidden_type must be an escnn FieldType"):
        FERNNCell(in_t, C4.regular_repr, flows)
    with pytest.raises(TypeError, match="flows must be a FlowSet"):
        FERNNCell(in_t, hid_t, [(0, 0)])
    with pytest.raises(ValueError, match="unknown nonlinearity 'softplus'"):
        FERNNCell(in_t, hid_t, flows, nonlinearity="softplus")
    with pytest.raises(ValueError, match="kernel_size must be a positive odd integer"):
        FlowGRUCell(in_t, hid_t, flows, kernel_size=2)
    with pytest.raises(ValueError, match="padding_mode must be one of"):
        FlowLSTMCell(in_t, hid_t, flows, padding_mode="reflect")
    with pytest.raises(TypeError, match="FlowGRUCell has no nonlinearity"):
        FlowGRUCell(in_t, hid_t, flows, nonlinearity="relu")


@pytest.mark.compile
@pytest.mark.parametrize("seq_cls", [layer for layer, _ in PAIRS], ids=IDS)
def test_engine_step_compiles_as_one_graph(seq_cls):
    """The engine's loop body (transport + update of every layer) is a pure tensor function:
    torch.compile traces it whole (fullgraph), forward and backward, custom gathers included."""
    gs = gspaces.rot2dOnR2(4)
    it = enn.FieldType(gs, [gs.trivial_repr])
    ht = enn.FieldType(gs, [gs.regular_repr])
    torch.manual_seed(0)
    model = seq_cls(it, ht, FlowSet.translations(gs, 1), num_layers=2)
    rec = model.recurrence((6, 6), "cpu", 4)
    weights = {k: v.detach().requires_grad_() for k, v in model.weights().items() if v is not None}
    states = [tuple(torch.randn(2, 9, 4, 6, 6, requires_grad=True) for _ in range(cell.state_size))
              for cell in model.cells]
    x = torch.randn(2, 1, 1, 6, 6)

    def step(x, weights, states):
        u = rec.input_terms(0, x, weights, 3)[:, 0]
        new = []
        for l in range(2):
            if l:
                u = rec.input_terms(l, new[-1][0].unsqueeze(1), weights, 3)[:, 0]
            new.append(rec.update(l, rec.transport(l, states[l], weights, 3, False), u, weights))
        return new

    compiled = torch.compile(step, backend="aot_eager", fullgraph=True)  # raises on a graph break
    out_c, out_e = compiled(x, weights, states), step(x, weights, states)
    for a, b in zip(out_c, out_e):
        for p, q in zip(a, b):
            torch.testing.assert_close(p, q, rtol=0, atol=1e-6)
    grads_c = torch.autograd.grad(sum(s.sum() for st in out_c for s in st), list(weights.values()))
    grads_e = torch.autograd.grad(sum(s.sum() for st in out_e for s in st), list(weights.values()))
    for p, q in zip(grads_c, grads_e):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-5)
