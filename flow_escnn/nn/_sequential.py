"""A sequential container for flow models: per-frame escnn modules, flow layers and V pooling,
with types checked at construction.

:class:`FlowSequential` chains

* :class:`~flow_escnn.nn.PerFrame` escnn modules (convolutions, nonlinearities, group pooling,
  decoders) on sequences or lifted sequences,
* flow layers (:class:`~flow_escnn.nn.FERNN`, ``FlowGRU``, ``FlowLSTM``, the G-RNN(+), with their
  optional V-mixing), which lift a sequence (or continue a lifted one over the same :math:`V`),
* :class:`~flow_escnn.nn.VelocityPool`, which pools a lifted sequence back to a sequence,

and checks at construction that each module's output type is the next one's input type
(:class:`~flow_escnn.sequences.SequenceFieldType` or :class:`~flow_escnn.lifted.LiftedFieldType`),
naming both when not. It knows its types, so ``export()``, ``evaluate_output_shape`` and
:meth:`FlowSequential.check_equivariance` need no extra arguments.
"""
from __future__ import annotations

from typing import Any, List, Optional, Sequence, Tuple, Union

import torch

from flow_escnn.checks._diagrams import check_equivariance
from flow_escnn.lifted import LiftedFieldType, LiftedTensor
from flow_escnn.nn._per_frame import PerFrame
from flow_escnn.nn._pooling import VelocityPool
from flow_escnn.nn._sequence import FlowRNN
from flow_escnn.sequences import SequenceFieldType, SequenceTensor

__all__ = ["FlowSequential"]

TypeLike = Union[SequenceFieldType, LiftedFieldType]


def _step_types(module: Any, given: Optional[TypeLike]) -> Tuple[List[TypeLike], TypeLike]:
    """``(accepted input types, output type)`` of one module, for the input type ``given``."""
    if isinstance(module, PerFrame):
        return [module.in_type], module.out_type
    if isinstance(module, FlowRNN):
        return [SequenceFieldType(module.in_type), LiftedFieldType(module.in_type, module.flows)], module.out_type
    if isinstance(module, VelocityPool):
        if isinstance(given, LiftedFieldType):
            module.check_field_type(given.field_type)  # "max" only on fields that permute channels
            return [given], SequenceFieldType(given.field_type)
        return [], SequenceFieldType  # type: ignore[return-value]
    raise TypeError(
        f"FlowSequential chains PerFrame, flow layers (FERNN, FlowGRU, FlowLSTM, GRNN, GRNNPlus) and VelocityPool; "
        f"got {type(module).__name__}: wrap escnn modules in flow_escnn.nn.PerFrame"
    )


class FlowSequential(torch.nn.Module):
    """A chain of flow-model pieces with checked types (see the module docstring).

    Args:
        *modules: the pieces, in order; the first must not be a :class:`VelocityPool`.

    Attributes:
        in_type, out_type: the types of the input and output sequences.

    Raises:
        TypeError: for a piece of an unsupported kind.
        ValueError: when a piece's input type is not the previous piece's output type (names both), or a
            ``VelocityPool("max")`` pools fields whose representations do not permute channels (irreps).
    """

    def __init__(self, *modules: torch.nn.Module) -> None:
        super().__init__()
        if not modules:
            raise ValueError("FlowSequential needs at least one module")
        types: List[TypeLike] = []
        current: Optional[TypeLike] = None
        for i, m in enumerate(modules):
            accepted, out = _step_types(m, current)
            if current is None:
                if not accepted:
                    raise ValueError("a VelocityPool cannot come first: it needs a lifted input")
                current = accepted[0]
                types.append(current)
            elif current not in accepted:
                expected = " or ".join(repr(t) for t in accepted) or "a lifted sequence (LiftedFieldType)"
                raise ValueError(
                    f"module {i} ({type(m).__name__}) expects {expected} but module {i - 1} "
                    f"({type(modules[i - 1]).__name__}) produces {current!r}"
                )
            current = out
            types.append(current)
        self.layers = torch.nn.ModuleList(modules)
        self._types = types
        self.in_type: TypeLike = types[0]
        self.out_type: TypeLike = types[-1]

    def __len__(self) -> int:
        return len(self.layers)

    def __getitem__(self, i: int) -> torch.nn.Module:
        return self.layers[i]

    def forward(self, x: Union[torch.Tensor, SequenceTensor, LiftedTensor]) -> Union[SequenceTensor, LiftedTensor]:
        """Run the chain on ``x`` (a tensor ``[B, T, C, H, W]`` / ``[B, T, V, C, H, W]`` or a typed one)."""
        y: Any = x
        for m, out_type in zip(self.layers, self._types[1:]):
            if isinstance(y, SequenceTensor) and not isinstance(m, PerFrame):
                y = y.tensor  # the flow layers take plain sequences and LiftedTensors
            y = m(y)
            if isinstance(y, torch.Tensor):  # V pooling returns a plain tensor: give it its type
                y = SequenceTensor(y, out_type) if isinstance(out_type, SequenceFieldType) else LiftedTensor(y, out_type)
        return y

    def evaluate_output_shape(self, input_shape: Sequence[int]) -> Tuple[int, ...]:
        """The output shape for an input of ``input_shape`` (``[B, T, C, H, W]`` or lifted)."""
        shape = tuple(input_shape)
        for m in self.layers:
            if isinstance(m, PerFrame):
                shape = m.evaluate_output_shape(shape)
            elif isinstance(m, FlowRNN):
                shape = (shape[0], shape[1], len(m.flows), m.hidden_type.size, shape[-2], shape[-1])
            else:  # VelocityPool
                shape = shape[:2] + shape[3:]
        return shape

    def export(self, grid_shape: Optional[Tuple[int, int]] = None, max_steps: Optional[int] = None) -> torch.nn.Sequential:
        """A plain-PyTorch ``Sequential`` of the pieces' exports (flow layers need ``grid_shape``)."""
        out = []
        for m in self.layers:
            if isinstance(m, FlowRNN):
                if grid_shape is None:
                    raise ValueError("FlowSequential.export needs grid_shape=(H, W) for its flow layers' tables")
                out.append(m.export(grid_shape, max_steps))
            elif isinstance(m, PerFrame):
                out.append(m.export())
            else:
                out.append(VelocityPool(m.mode))
        return torch.nn.Sequential(*out).train(self.training)

    def check_equivariance(self, x: torch.Tensor, flows: Any = None, elements: Any = None, **kwargs: Any) -> Any:
        """:func:`flow_escnn.checks.check_equivariance` of this model, with its own types."""
        out = self.out_type.field_type if isinstance(self.out_type, SequenceFieldType) else None
        return check_equivariance(self, x, self.in_type.field_type, flows, elements=elements, out_type=out, **kwargs)
