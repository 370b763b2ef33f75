"""A sequential container for flow models: per-frame escnn modules, flow layers and V pooling,
with types checked at construction.

:class:`FlowSequential` is escnn's ``SequentialModule`` for sequences. It chains

* :class:`~flow_escnn.nn.PerFrame` escnn modules (convolutions, nonlinearities, group pooling,
  decoders) on sequences or lifted sequences; a bare escnn ``EquivariantModule`` is wrapped in one
  (per V slice when the sequence at that point is lifted),
* flow layers (:class:`~flow_escnn.nn.FERNN`, ``FlowGRU``, ``FlowLSTM``, the G-RNN(+), with their
  optional V-mixing), which lift a sequence (or continue a lifted one over the same :math:`V`),
* :class:`~flow_escnn.nn.VelocityPool`, which pools a lifted sequence back to a sequence,

and checks at construction that each module's output type is the next one's input type
(:class:`~flow_escnn.sequences.SequenceFieldType` or :class:`~flow_escnn.lifted.LiftedFieldType`),
naming both when not. It knows its types, so ``export()``, ``evaluate_output_shape`` and
:meth:`FlowSequential.check_equivariance` need no extra arguments.

escnn's own ``SequentialModule`` holds frame-level ``EquivariantModule`` objects only (a
``GeometricTensor [B, C, H, W]`` in and out). The sequence modules are not ``EquivariantModule``
objects, so it refuses them with escnn's bare ``assert isinstance(module, EquivariantModule)``,
which flow_escnn cannot reword without patching escnn. Subclassing would not help: escnn compares
``FieldType`` objects with ``==`` (False for sequence and lifted types), reads the channels at index 1
of a shape (T for a sequence) and exports without a grid (docs/architecture.rst, "Tensor types", gives
the details; tests/test_escnn_sequential.py pins them). Replace ``enn.SequentialModule`` by
``FlowSequential``: it takes the same modules, escnn's included.
"""
from __future__ import annotations

from typing import Any, List, Optional, Sequence, Tuple, Union

import torch

from flow_escnn._compat import enn
from flow_escnn.checks._diagrams import check_equivariance
from flow_escnn.lifted import LiftedFieldType, LiftedTensor
from flow_escnn.nn._per_frame import PerFrame
from flow_escnn.nn._pooling import VelocityPool
from flow_escnn.nn._sequence import FlowRNN
from flow_escnn.sequences import SequenceFieldType, SequenceTensor, geometric_tensor_refusal

__all__ = ["FlowSequential"]

TypeLike = Union[SequenceFieldType, LiftedFieldType]


def _as_piece(module: Any, given: Optional[TypeLike]) -> Any:
    """``module``, or a bare escnn module wrapped in :class:`PerFrame` (per V slice after a lifted type)."""
    if isinstance(module, enn.EquivariantModule):
        return PerFrame(module, flows=given.flows if isinstance(given, LiftedFieldType) else None)
    return module


def _step_types(module: Any, given: Optional[TypeLike]) -> Tuple[List[TypeLike], TypeLike]:
    """``(accepted input types, output type)`` of one module, for the input type ``given``."""
    if isinstance(module, PerFrame):
        return [module.in_type], module.out_type
    if isinstance(module, FlowRNN):
        return list(module.input_types), module.out_type
    if isinstance(module, VelocityPool):
        if isinstance(given, LiftedFieldType):
            module.check_field_type(given.field_type)  # "max" only on fields that permute channels
            return [given], SequenceFieldType(given.field_type)
        return [], SequenceFieldType  # type: ignore[return-value]
    raise TypeError(
        f"FlowSequential chains escnn EquivariantModules (run frame by frame: wrap escnn modules in "
        f"flow_escnn.nn.PerFrame, or pass them as they are), flow layers (FERNN, FlowGRU, FlowLSTM, GRNN, "
        f"GRNNPlus) and VelocityPool; got {type(module).__name__}"
        + (" (a plain torch module: use its escnn counterpart, e.g. escnn.nn.ReLU(field_type))"
           if isinstance(module, torch.nn.Module) else "")
    )


class FlowSequential(torch.nn.Module):
    """A chain of flow-model pieces with checked types (see the module docstring).

    Args:
        *modules: the pieces, in order; the first must not be a :class:`VelocityPool`. A bare escnn
            ``EquivariantModule`` is wrapped in :class:`PerFrame` (``flows=`` the lifted input's V
            when it follows a flow layer).

    Attributes:
        in_type, out_type: the types of the input and output sequences.

    Shapes:
        ``forward(x)``: ``x`` is what the first piece takes: a
        :class:`~flow_escnn.sequences.SequenceTensor` of ``in_type`` or a plain ``[B, T, C, H, W]`` (a
        :class:`~flow_escnn.lifted.LiftedTensor` / ``[B, T, V, C, H, W]`` when ``in_type`` is lifted); the
        output is always typed: a ``SequenceTensor`` or a ``LiftedTensor`` of ``out_type``
        (:meth:`evaluate_output_shape`). An escnn ``GeometricTensor`` is refused with how to wrap it.

    Raises:
        TypeError: for a piece of an unsupported kind.
        ValueError: when a piece's input type is not the previous piece's output type (names both), or a
            ``VelocityPool("max")`` pools fields whose representations do not permute channels (irreps).

    Example:
        >>> import torch
        >>> from flow_escnn import FlowSet
        >>> from flow_escnn.nn import FERNN, FlowSequential, VelocityPool
        >>> from escnn import gspaces, nn as enn
        >>> gs = gspaces.rot2dOnR2(4)
        >>> t_in, t_h = enn.FieldType(gs, [gs.trivial_repr]), enn.FieldType(gs, 2 * [gs.regular_repr])
        >>> model = FlowSequential(FERNN(t_in, t_h, FlowSet.translations(gs, 1)), VelocityPool("max"),
        ...                        enn.GroupPooling(t_h))  # escnn modules run frame by frame
        >>> y = model(torch.rand(2, 3, 1, 6, 6))
        >>> y
        SequenceTensor(shape=(2, 3, 2, 6, 6) [B, T, C, H, W], SequenceFieldType(C=2, ...))
        >>> model.evaluate_output_shape((2, 3, 1, 6, 6))
        (2, 3, 2, 6, 6)
    """

    def __init__(self, *modules: torch.nn.Module) -> None:
        super().__init__()
        if not modules:
            raise ValueError("FlowSequential needs at least one module")
        types: List[TypeLike] = []
        current: Optional[TypeLike] = None
        modules = list(modules)
        for i, m in enumerate(modules):
            m = modules[i] = _as_piece(m, current)
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
        if isinstance(x, enn.GeometricTensor):
            raise geometric_tensor_refusal("FlowSequential", x)
        y: Any = x
        for m in self.layers:
            y = m(y)  # every piece returns a typed tensor (VelocityPool: given the LiftedTensor of the piece before)
        return y

    def evaluate_output_shape(self, input_shape: Sequence[int]) -> Tuple[int, ...]:
        """The output shape for an input of ``input_shape`` (``[B, T, C, H, W]`` or lifted), piece by piece.

        Raises:
            ValueError: naming the piece whose input shape does not fit.
        """
        shape = tuple(int(n) for n in input_shape)
        for i, m in enumerate(self.layers):
            try:
                shape = m.evaluate_output_shape(shape)
            except ValueError as exc:
                raise ValueError(f"module {i} ({type(m).__name__}) of this FlowSequential: {exc}") from None
        return shape

    def export(self, grid_shape: Optional[Tuple[int, int]] = None, max_steps: Optional[int] = None) -> torch.nn.Sequential:
        """A plain-PyTorch ``Sequential`` of the pieces' exports (flow layers need ``grid_shape``)."""
        out = []
        for m in self.layers:
            if isinstance(m, FlowRNN):
                if grid_shape is None:
                    raise ValueError("FlowSequential.export needs grid_shape=(H, W) ((D, H, W) for volumes) for its flow "
                                     "layers' tables")
                out.append(m.export(grid_shape, max_steps))
            elif isinstance(m, PerFrame):
                out.append(m.export())
            else:
                out.append(VelocityPool(m.mode, m.spatial_dims))
        return torch.nn.Sequential(*out).train(self.training)

    def check_equivariance(self, x: torch.Tensor, flows: Any = None, elements: Any = None, **kwargs: Any) -> Any:
        """:func:`flow_escnn.checks.check_equivariance` of this model, with its own types."""
        out = self.out_type.field_type if isinstance(self.out_type, SequenceFieldType) else None
        return check_equivariance(self, x, self.in_type.field_type, flows, elements=elements, out_type=out, **kwargs)
