"""Any escnn module, applied to every frame of a sequence (and to every V slice of a lifted one).

:class:`PerFrame` wraps an escnn ``EquivariantModule`` (``R2Conv``, ``ReLU``,
``GroupPooling``, ``NormNonLinearity``, ``PointwiseMaxPool``, a ``SequentialModule``, ...) and
folds the time (and velocity) axes into escnn's batch:

.. math::
    \\mathrm{PerFrame}(m)(f)_t = m(f_t), \\qquad \\mathrm{PerFrame}(m)(h)_t(\\nu) = m(h_t(\\nu)).

A :math:`G`-equivariant ``m`` then commutes with the static action on sequences and lifted
sequences (which transforms every frame and slice alike and permutes :math:`V`), and with a
flow whenever ``m`` commutes with :math:`\\psi_t(\\mu)` (translations for circularly padded
convolutions and pointwise maps, 90-degree rotations for escnn's equivariant layers).
"""
from __future__ import annotations

from typing import Any, Optional, Tuple, Union

import torch

from flow_escnn._compat import enn
from flow_escnn.flows._flowset import FlowSet
from flow_escnn.lifted import LiftedFieldType, LiftedTensor
from flow_escnn.nn._conv import export_escnn
from flow_escnn.nn._spec import refuses_pickle
from flow_escnn.sequences import SequenceFieldType, SequenceTensor

__all__ = ["PerFrame", "ExportedPerFrame"]

SequenceLike = Union[torch.Tensor, SequenceTensor, LiftedTensor]


@refuses_pickle
class PerFrame(torch.nn.Module):
    """An escnn module applied frame by frame (and slice by slice over :math:`V`).

    Args:
        module: an escnn ``EquivariantModule`` with ``in_type`` / ``out_type``.
        flows: ``None`` for sequences ``[B, T, C, H, W]``; a :class:`~flow_escnn.flows.FlowSet` for
            lifted sequences ``[B, T, V, C, H, W]`` over it.

    Attributes:
        in_type, out_type: :class:`~flow_escnn.sequences.SequenceFieldType` or
            :class:`~flow_escnn.lifted.LiftedFieldType` of the input and output.
    """

    def __init__(self, module: Any, flows: Optional[FlowSet] = None) -> None:
        super().__init__()
        if not isinstance(module, enn.EquivariantModule):
            raise TypeError(f"PerFrame wraps an escnn EquivariantModule, got {type(module).__name__}")
        if flows is not None and not isinstance(flows, FlowSet):
            raise TypeError(f"flows must be a FlowSet or None, got {type(flows).__name__}")
        self.module = module
        self.flows = flows
        if flows is None:
            self.in_type: Any = SequenceFieldType(module.in_type)
            self.out_type: Any = SequenceFieldType(module.out_type)
        else:
            self.in_type = LiftedFieldType(module.in_type, flows)
            self.out_type = LiftedFieldType(module.out_type, flows)

    def extra_repr(self) -> str:
        return "per frame" if self.flows is None else f"per frame and velocity (|V|={len(self.flows)})"

    def forward(self, x: SequenceLike) -> Union[SequenceTensor, LiftedTensor]:
        raw = _raw(x, self.in_type)
        lead = raw.shape[:-3]
        y = self.module(enn.GeometricTensor(raw.reshape(-1, *raw.shape[-3:]), self.module.in_type)).tensor
        y = y.reshape(*lead, *y.shape[-3:])
        return SequenceTensor(y, self.out_type) if self.flows is None else LiftedTensor(y, self.out_type)

    def evaluate_output_shape(self, input_shape: Tuple[int, ...]) -> Tuple[int, ...]:
        lead, frame = tuple(input_shape[:-3]), tuple(input_shape[-3:])
        out = self.module.evaluate_output_shape((1, *frame))
        return (*lead, *out[1:])

    def export(self, grid_shape: Any = None, max_steps: Any = None) -> "ExportedPerFrame":
        """A plain-PyTorch twin (:func:`~flow_escnn.nn._conv.export_escnn`: circular padding kept; the
        arguments of the generic :func:`~flow_escnn.nn._export.export` are accepted and unused)."""
        return ExportedPerFrame(export_escnn(self.module)).train(self.training)


class ExportedPerFrame(torch.nn.Module):
    """Plain-PyTorch twin of :class:`PerFrame`: ``[..., C, H, W]`` through the exported module per frame."""

    def __init__(self, module: torch.nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-3]
        y = self.module(x.reshape(-1, *x.shape[-3:]))
        return y.reshape(*lead, *y.shape[-3:])


def _raw(x: SequenceLike, expected: Any) -> torch.Tensor:
    """The tensor of ``x`` after checking its type (typed inputs) or its shape (plain tensors)."""
    if isinstance(x, (SequenceTensor, LiftedTensor)):
        if x.type != expected:
            raise ValueError(f"input of type {x.type} does not match the expected {expected}")
        return x.tensor
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"expected a tensor, a SequenceTensor or a LiftedTensor, got {type(x).__name__}")
    rank = 5 if isinstance(expected, SequenceFieldType) else 6
    if x.dim() != rank or x.shape[-3] != expected.size or (rank == 6 and x.shape[2] != len(expected)):
        layout = "[B, T, C, H, W]" if rank == 5 else f"[B, T, V={len(expected)}, C, H, W]"
        raise ValueError(f"expected {layout} with C={expected.size} for {expected}, got shape {tuple(x.shape)}")
    return x
