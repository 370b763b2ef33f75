"""escnn's ``SequentialModule`` and the sequence modules (issue 25 item 8, last point; docs/architecture.rst,
"Tensor types", "FlowSequential, not escnn's SequentialModule").

The sequence modules are not escnn ``EquivariantModule`` subclasses, and escnn's ``SequentialModule`` refuses
them with its own message-less ``assert isinstance(module, EquivariantModule)``. These tests pin the facts that
decision rests on, each with a control, so that a change in escnn (or in our classes) that invalidates it fails
here:

* the refusal is escnn's bare assertion, raised in escnn's file, for every kind of sequence module, while escnn
  modules pass (control);
* subclassing would not make ``SequentialModule`` work: escnn compares types with ``FieldType.__eq__``, which is
  False for anything but a ``FieldType`` (a flow layer's ``in_type`` is its frame ``FieldType``), and its
  ``evaluate_output_shape`` reads the channels at index 1, which is T for a sequence ``[B, T, C, H, W]``;
* ``FlowSequential`` takes the refused chain as it is (escnn modules included) and computes exactly the chain
  run by hand; a different model (control) gives a different output, a wrong order is refused with a message.
"""
from __future__ import annotations

import traceback
from pathlib import Path

import pytest
import torch

from flow_escnn import FlowSet, LiftedFieldType, SequenceFieldType, SequenceTensor
from flow_escnn._compat import enn, gspaces
from flow_escnn.nn import FERNN, FlowGRU, FlowSequential, PerFrame, SteerableConv, VelocityPool

C4 = gspaces.rot2dOnR2(4)
IN = enn.FieldType(C4, [C4.trivial_repr])
REG = enn.FieldType(C4, [C4.regular_repr])
FLOWS = FlowSet.translations(C4, 1)
ESCNN_SEQUENTIAL = Path(enn.SequentialModule.__init__.__code__.co_filename).resolve()


def _sequence_modules():
    return {
        "FERNN": FERNN(IN, REG, FLOWS),
        "FlowGRU": FlowGRU(IN, REG, FLOWS),
        "VelocityPool": VelocityPool("max"),
        "PerFrame": PerFrame(SteerableConv(IN, REG, 3)),
        "FlowSequential": FlowSequential(FERNN(IN, REG, FLOWS), VelocityPool("max")),
    }


def _escnn_refusal(*modules) -> AssertionError:
    with pytest.raises(AssertionError) as info:
        enn.SequentialModule(*modules)
    return info.value


# -- the refusal is escnn's own -----------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", list(_sequence_modules()))
def test_escnn_sequential_refuses_each_sequence_module_with_its_own_bare_assertion(kind):
    piece = _sequence_modules()[kind]
    assert not isinstance(piece, enn.EquivariantModule)
    for modules in ((piece,), (SteerableConv(IN, IN, 3), piece)):
        exc = _escnn_refusal(*modules)
        assert exc.args == ()  # no message: nothing of ours runs before escnn's assert
        last = traceback.extract_tb(exc.__traceback__)[-1]
        assert Path(last.filename).resolve() == ESCNN_SEQUENTIAL
        assert last.line == "assert isinstance(module, EquivariantModule)"


def test_escnn_sequential_takes_escnn_modules_control():
    conv, relu = SteerableConv(IN, REG, 3), enn.ReLU(REG)
    seq = enn.SequentialModule(conv, relu)  # the control: escnn modules pass the same assertion
    assert seq.in_type == IN and seq.out_type == REG
    # and the escnn chain is a frame module, which PerFrame (or FlowSequential) runs over sequences
    x = torch.randn(2, 3, 1, 5, 5)
    with torch.no_grad():
        y = PerFrame(seq)(x)
        assert torch.equal(y.tensor, relu(conv(SequenceTensor(x, IN).fold())).tensor.reshape(2, 3, 4, 5, 5))


# -- why subclassing EquivariantModule would not make SequentialModule work ------------------------------------
def test_escnn_field_type_equality_is_false_for_sequence_and_lifted_types():
    """escnn's chain checks ``module.in_type == previous.out_type`` and ``input.type == self.in_type``; a flow
    layer's ``in_type`` is its frame ``FieldType``, whose ``__eq__`` answers False (not NotImplemented) for our
    types, so neither a ``SequenceTensor`` nor a lifted output could ever pass, in either order."""
    layer = FERNN(IN, REG, FLOWS)
    assert isinstance(layer.in_type, enn.FieldType)
    seq, lifted = SequenceFieldType(IN), LiftedFieldType(IN, FLOWS)
    for ours in (seq, lifted):
        assert IN.__eq__(ours) is False  # escnn's answer, so Python never asks our type
        assert (layer.in_type == ours) is False and (ours == layer.in_type) is False
    # control: escnn's equality holds between equal frame types, and our types compare among themselves
    assert layer.in_type == enn.FieldType(C4, [C4.trivial_repr])
    assert seq == SequenceFieldType(enn.FieldType(C4, [C4.trivial_repr])) and layer.input_types == (seq, lifted)


def test_escnn_sequential_evaluate_output_shape_reads_the_channels_at_index_1():
    """escnn asserts ``input_shape[1] == in_type.size``: for a sequence ``[B, T, C, H, W]`` index 1 is T."""
    seq = enn.SequentialModule(SteerableConv(IN, REG, 3), enn.ReLU(REG))
    assert seq.evaluate_output_shape((2, 1, 5, 5)) == (2, 4, 5, 5)  # control: a frame shape
    with pytest.raises(AssertionError):
        seq.evaluate_output_shape((2, 3, 1, 5, 5))  # a sequence of T=3 frames of C=1
    # FlowSequential reads sequences
    assert FlowSequential(seq).evaluate_output_shape((2, 3, 1, 5, 5)) == (2, 3, 4, 5, 5)


# -- FlowSequential takes the refused chain ----------------------------------------------------------------------
def _refused_chain(seed):
    torch.manual_seed(seed)
    fernn = FERNN(IN, REG, FLOWS)
    with torch.no_grad():
        for p in fernn.parameters():
            p.normal_(0.0, 0.5)
    return fernn, VelocityPool("max"), enn.GroupPooling(REG)


def test_flow_sequential_takes_the_chain_escnn_refuses_and_computes_it_exactly():
    fernn, pool, group_pool = _refused_chain(0)
    _escnn_refusal(fernn, pool, group_pool)
    model = FlowSequential(fernn, pool, group_pool).eval()
    x = torch.randn(2, 4, 1, 5, 5, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        pooled = pool(fernn(SequenceTensor(x, IN)))
        by_hand = group_pool(pooled.fold()).tensor.reshape(2, 4, 1, 5, 5)
        for given in (x, SequenceTensor(x, IN)):
            y = model(given)
            assert isinstance(y, SequenceTensor) and y.type == SequenceFieldType(enn.FieldType(C4, [C4.trivial_repr]))
            assert torch.equal(y.tensor, by_hand)
        # control: the equality is not vacuous, another model's output differs
        other = FlowSequential(*_refused_chain(2)).eval()
        assert not torch.equal(other(x).tensor, by_hand)
    assert model.evaluate_output_shape(x.shape) == tuple(by_hand.shape)


def test_flow_sequential_refuses_an_order_that_does_not_chain_with_a_message():
    fernn, pool, group_pool = _refused_chain(0)
    with pytest.raises(ValueError, match="VelocityPool cannot come first"):
        FlowSequential(pool, fernn)
    with pytest.raises(ValueError, match=r"module 1 \(PerFrame\) expects .* but module 0 \(FERNN\) produces"):
        FlowSequential(FERNN(IN, REG, FLOWS), PerFrame(group_pool), pool)


def test_escnn_export_and_check_equivariance_assume_frame_modules():
    """escnn's ``SequentialModule.export()`` calls ``module.export()`` without arguments (a flow layer needs its
    grid), and ``EquivariantModule.check_equivariance`` builds a ``GeometricTensor`` of ``in_type``, which must be
    an escnn ``FieldType``."""
    layer = FERNN(IN, REG, FLOWS)
    with pytest.raises(TypeError, match="grid_shape"):
        layer.export()
    assert layer.export((5, 5)) is not None  # control: with the grid it exports
    with pytest.raises(AssertionError):
        enn.GeometricTensor(torch.zeros(1, 1, 5, 5), SequenceFieldType(IN))
    assert enn.GeometricTensor(torch.zeros(1, 1, 5, 5), IN).type == IN  # control
    model = FlowSequential(layer, VelocityPool("max"))  # FlowSequential passes the grid and runs our checks
    assert model.export((5, 5)) is not None
