"""One story for the tensor types (issue 25 item 8; docs/architecture.rst, "Tensor types").

* ``SequenceTensor`` and ``LiftedTensor`` do escnn's ``GeometricTensor`` arithmetic (``+``, ``-``, in place,
  scalar ``*``, ``.to``, ``.detach``, ``.shape``, ``.size()``), and refuse mixed types with messages;
* the sequence modules (flow layers, ``PerFrame``, ``VelocityPool``, ``FlowSequential``) take plain tensors
  and typed ones, return typed ones, refuse a ``GeometricTensor`` with how to wrap it, and have
  ``evaluate_output_shape``;
* escnn's ``SequentialModule`` refuses them (escnn's own assertion), and ``FlowSequential`` takes the same
  escnn modules instead.
"""
from __future__ import annotations

import pytest
import torch

from flow_escnn import FlowSet, LiftedFieldType, LiftedTensor, SequenceFieldType, SequenceTensor
from flow_escnn._compat import enn, gspaces
from flow_escnn.nn import FERNN, FlowGRU, FlowSequential, PerFrame, SteerableConv, VelocityPool, pool_velocities
from flow_escnn.sequences import TypedTensor

C4 = gspaces.rot2dOnR2(4)
IN = enn.FieldType(C4, [C4.trivial_repr])
REG = enn.FieldType(C4, [C4.regular_repr])
REG2 = enn.FieldType(C4, 2 * [C4.regular_repr])
FLOWS = FlowSet.translations(C4, 1)


def _seq(ft=REG, shape=(2, 3), seed=0) -> SequenceTensor:
    g = torch.Generator().manual_seed(seed)
    return SequenceTensor(torch.randn(*shape, ft.size, 5, 5, generator=g), ft)


def _lifted(ft=REG, flows=FLOWS, lead=(2, 3), seed=0) -> LiftedTensor:
    g = torch.Generator().manual_seed(seed)
    return LiftedTensor(torch.randn(*lead, len(flows), ft.size, 5, 5, generator=g), LiftedFieldType(ft, flows))


# -- arithmetic, as escnn's GeometricTensor ------------------------------------------------------------
@pytest.mark.parametrize("make", [_seq, _lifted], ids=["sequence", "lifted"])
def test_same_type_arithmetic_matches_the_tensors(make):
    a, b = make(seed=0), make(seed=1)
    assert isinstance(a, TypedTensor)
    for got, want in [
        (a + b, a.tensor + b.tensor),
        (a - b, a.tensor - b.tensor),
        (a * 2.5, a.tensor * 2.5),
        (3 * a, 3 * a.tensor),
        (a * torch.tensor(0.5), a.tensor * 0.5),
        (torch.tensor([2.0]) * a, 2 * a.tensor),
    ]:
        assert type(got) is type(a) and got.type == a.type
        assert torch.equal(got.tensor, want)
    # in place, as GeometricTensor's __iadd__ / __isub__ / __imul__: the same object, its tensor updated
    c = make(seed=0)
    ref = c.tensor.clone()
    same = c
    c += b
    c -= b
    c *= 2.0
    assert c is same and torch.allclose(c.tensor, 2 * ref, atol=1e-5)
    # .to / .detach / .shape / .size() keep the type
    d = a.to(torch.float64)
    assert d.tensor.dtype == torch.float64 and d.type == a.type
    x = make().to(torch.float64)
    x.tensor.requires_grad_(True)
    assert not (x * 2.0).detach().tensor.requires_grad and (x * 2.0).detach().type == x.type
    assert a.shape == a.tensor.shape and a.size() == a.tensor.size()


def test_mismatched_types_are_refused_with_messages():
    a = _seq(REG)
    with pytest.raises(ValueError, match=r"cannot add SequenceTensors of different types: SequenceFieldType\(C=4.*C=8"):
        a + _seq(REG2)
    with pytest.raises(ValueError, match="cannot subtract SequenceTensors of different types"):
        a - _seq(REG2)
    with pytest.raises(ValueError, match="different types"):
        a += _seq(REG2)
    with pytest.raises(ValueError, match=r"shapes \(2, 3, 4, 5, 5\) and \(2, 4, 4, 5, 5\)"):
        a + _seq(REG, shape=(2, 4))
    with pytest.raises(TypeError, match="a SequenceTensor and a LiftedTensor"):
        a + _lifted()
    with pytest.raises(TypeError, match=r"both operands must be SequenceTensors of one type .*x\.tensor"):
        a + a.tensor
    with pytest.raises(TypeError, match="both operands must be LiftedTensors"):
        _lifted() - enn.GeometricTensor(torch.zeros(2, 4, 5, 5), REG)
    with pytest.raises(TypeError, match=r"only be multiplied by a scalar .*tensor of shape \(2, 3, 4, 5, 5\)"):
        a * a.tensor
    with pytest.raises(TypeError, match="scalar"):
        a * True
    other_v = _lifted(flows=FlowSet(C4, [(0, 0), (1, 0)]))  # same fibers, another V
    with pytest.raises(ValueError, match="cannot add LiftedTensors of different types"):
        _lifted() + other_v
    # control: the same type adds
    assert torch.equal((a + _seq(REG, seed=0)).tensor, 2 * a.tensor)


def test_a_field_type_is_wrapped_and_a_frame_is_a_geometric_tensor():
    x = SequenceTensor(torch.randn(2, 3, 4, 5, 5), REG)  # an escnn FieldType is the type of every frame
    assert x.type == SequenceFieldType(REG)
    f = x.frame(-1)
    assert isinstance(f, enn.GeometricTensor) and f.type == REG and torch.equal(f.tensor, x.tensor[:, 2])
    with pytest.raises(IndexError, match="valid are 0 .. 2"):
        x.frame(3)
    with pytest.raises(TypeError, match="SequenceFieldType or an escnn FieldType"):
        SequenceTensor(x.tensor, "regular")
    assert torch.equal(SequenceTensor.unfold(x.fold(), REG, (2, 3)).tensor, x.tensor)


# -- the sequence modules ------------------------------------------------------------------------------
def _modules():
    """(module, a plain input, its typed form, the output class)."""
    x = torch.randn(2, 3, 1, 5, 5)
    lifted_in = _lifted(REG)
    return [
        (FERNN(IN, REG, FLOWS), x, SequenceTensor(x, IN), LiftedTensor),
        (FlowGRU(IN, REG, FLOWS), x, SequenceTensor(x, IN), LiftedTensor),
        (PerFrame(SteerableConv(IN, REG, 3)), x, SequenceTensor(x, IN), SequenceTensor),
        (PerFrame(SteerableConv(REG, REG, 3), flows=FLOWS), lifted_in.tensor, lifted_in, LiftedTensor),
        (VelocityPool("max"), None, lifted_in, SequenceTensor),
        (FlowSequential(FERNN(IN, REG, FLOWS), VelocityPool()), x, SequenceTensor(x, IN), SequenceTensor),
    ]


@pytest.mark.parametrize("index", range(6))
def test_sequence_modules_take_plain_and_typed_input_and_return_typed_output(index):
    module, plain, typed, out_cls = _modules()[index]
    module.eval()
    with torch.no_grad():
        y = module(typed)
        assert isinstance(y, out_cls)
        assert tuple(y.shape) == module.evaluate_output_shape(typed.shape)
        if plain is not None:
            y_plain = module(plain)
            assert isinstance(y_plain, out_cls) and y_plain.type == y.type
            assert torch.equal(y_plain.tensor, y.tensor)
    if hasattr(module, "out_type"):
        assert y.type == module.out_type


@pytest.mark.parametrize("index", range(6))
def test_sequence_modules_refuse_a_geometric_tensor_saying_how_to_wrap_it(index):
    module = _modules()[index][0]
    frames = enn.GeometricTensor(torch.randn(2, 1, 5, 5), IN)
    with pytest.raises(TypeError, match=r"got an escnn GeometricTensor|no V axis") as info:
        module(frames)
    if isinstance(module, PerFrame) and module.flows is not None:
        assert "lifted sequences [B, T, V=9, C, H, W]" in str(info.value)
    elif not isinstance(module, VelocityPool):
        assert "SequenceTensor(x.tensor.unsqueeze(1), x.type)" in str(info.value)
        assert "FlowSequential" in str(info.value)
        # the advice works
        out = module(SequenceTensor(frames.tensor.unsqueeze(1), frames.type))
        assert out.shape[:2] == (2, 1)


def test_typed_inputs_of_the_wrong_type_are_refused():
    with pytest.raises(ValueError, match="does not match this layer's in_type"):
        FERNN(IN, REG, FLOWS)(_seq(REG))
    with pytest.raises(ValueError, match="does not match the expected"):
        PerFrame(SteerableConv(IN, REG, 3))(_seq(REG))
    with pytest.raises(ValueError, match=r"FERNN takes \[B, T, C=1, H, W\].*single frame\? add the time axis"):
        FERNN(IN, REG, FLOWS).evaluate_output_shape((2, 1, 5, 5))
    chain = FlowSequential(FERNN(IN, REG, FLOWS), PerFrame(SteerableConv(REG, REG, 3), flows=FLOWS))
    with pytest.raises(ValueError, match=r"module 0 \(FERNN\) of this FlowSequential: FERNN takes \[B, T, C=1"):
        chain.evaluate_output_shape((2, 3, 2, 5, 5))
    assert chain.evaluate_output_shape((2, 3, 1, 5, 5)) == (2, 3, 9, 4, 5, 5)  # control


def test_flow_layers_take_sequence_and_lifted_tensors_of_their_types_only():
    torch.manual_seed(0)
    first, second = FERNN(IN, REG, FLOWS).eval(), FERNN(REG, REG, FLOWS).eval()
    x = torch.randn(1, 4, 1, 5, 5)
    with torch.no_grad():
        h = first(SequenceTensor(x, IN))
        assert torch.equal(h.tensor, first(x).tensor)
        assert second(h).type == second.out_type  # a lifted sequence over the same V continues
        with pytest.raises(ValueError, match="does not match this layer"):
            first(h)  # lifted, but over REG: not this layer's input


# -- escnn's SequentialModule --------------------------------------------------------------------------
def test_escnn_sequential_module_refuses_sequence_modules_and_flow_sequential_takes_the_same_chain():
    conv = SteerableConv(IN, REG, 3)
    for piece in (FERNN(REG, REG, FLOWS), VelocityPool(), PerFrame(conv), FlowSequential(FERNN(IN, REG, FLOWS))):
        with pytest.raises(AssertionError):  # escnn's `assert isinstance(module, EquivariantModule)`
            enn.SequentialModule(conv, piece)
        assert not isinstance(piece, enn.EquivariantModule)
    # the same chain, escnn modules as they are: FlowSequential wraps them in PerFrame (per V slice if lifted)
    model = FlowSequential(conv, enn.ReLU(REG), FERNN(REG, REG2, FLOWS), enn.ReLU(REG2), VelocityPool(),
                           enn.GroupPooling(REG2)).eval()
    assert [type(m).__name__ for m in model.layers] == ["PerFrame", "PerFrame", "FERNN", "PerFrame", "VelocityPool",
                                                        "PerFrame"]
    assert model.layers[3].flows == FLOWS and model.layers[5].flows is None
    x = torch.randn(2, 3, 1, 5, 5)
    with torch.no_grad():
        y = model(x)
    assert isinstance(y, SequenceTensor) and y.type == SequenceFieldType(enn.FieldType(C4, 2 * [C4.trivial_repr]))
    assert tuple(y.shape) == model.evaluate_output_shape(x.shape) == (2, 3, 2, 5, 5)
    with pytest.raises(TypeError, match=r"ReLU \(a plain torch module: use its escnn counterpart"):
        FlowSequential(FERNN(IN, REG, FLOWS), torch.nn.ReLU())


def test_pool_velocities_typed_in_typed_out():
    h = _lifted(REG)
    assert isinstance(pool_velocities(h), SequenceTensor)
    assert isinstance(pool_velocities(h.frame(1)), enn.GeometricTensor)
    assert type(pool_velocities(h.tensor)) is torch.Tensor  # a plain tensor carries no type
