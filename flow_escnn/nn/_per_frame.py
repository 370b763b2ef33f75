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
from flow_escnn.sequences import SequenceFieldType, SequenceTensor, geometric_tensor_refusal

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

    Shapes:
        ``forward(x)``: ``x`` is a :class:`~flow_escnn.sequences.SequenceTensor` of ``in_type`` or a plain
        tensor ``[B, T, C, H, W]`` (``flows=None``), a :class:`~flow_escnn.lifted.LiftedTensor` or a plain
        tensor ``[B, T, V, C, H, W]`` (``flows`` given); the output is always typed (``out_type``). An escnn
        ``GeometricTensor`` (frames, no time axis) is refused with how to wrap it.

    Raises:
        TypeError: when ``module`` is not an escnn ``EquivariantModule`` or ``flows`` not a FlowSet.

    Example:
        >>> import torch
        >>> from flow_escnn.nn import PerFrame
        >>> from escnn import gspaces, nn as enn
        >>> gs = gspaces.rot2dOnR2(4)
        >>> t_in, t_out = enn.FieldType(gs, [gs.trivial_repr]), enn.FieldType(gs, [gs.regular_repr])
        >>> conv = PerFrame(enn.R2Conv(t_in, t_out, 3, padding=1))
        >>> y = conv(torch.rand(2, 5, 1, 8, 8))  # [B, T, C, H, W]
        >>> y.type == conv.out_type, tuple(y.shape), conv.evaluate_output_shape((2, 5, 1, 8, 8))
        (True, (2, 5, 4, 8, 8), (2, 5, 4, 8, 8))
    """

    def __init__(self, module: Any, flows: Optional[FlowSet] = None) -> None:
        super().__init__()
        if not isinstance(module, enn.EquivariantModule):
            raise TypeError(
                f"PerFrame wraps an escnn EquivariantModule (a frame-level module), got {type(module).__name__}; "
                "flow layers, VelocityPool and PerFrame already run over sequences: chain them in FlowSequential"
            )
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
        k = self.in_type.spatial_dims + 1  # a frame: [C, H, W], or [C, D, H, W] on a 3D gspace
        lead = raw.shape[:-k]
        y = self.module(enn.GeometricTensor(raw.reshape(-1, *raw.shape[-k:]), self.module.in_type)).tensor
        y = y.reshape(*lead, *y.shape[-k:])
        return SequenceTensor(y, self.out_type) if self.flows is None else LiftedTensor(y, self.out_type)

    def evaluate_output_shape(self, input_shape: Tuple[int, ...]) -> Tuple[int, ...]:
        """The output shape for an input of ``input_shape`` (``[B, T, C, H, W]``, or ``[B, T, V, C, H, W]``
        with ``flows``): the wrapped module's frame shape, leading axes kept.

        Raises:
            ValueError: when the rank, channels or V do not match ``in_type``.
        """
        shape = tuple(int(n) for n in input_shape)
        _check_shape(shape, self.in_type)
        k = self.in_type.spatial_dims + 1
        lead, frame = shape[:-k], shape[-k:]
        out = self.module.evaluate_output_shape((1, *frame))
        return (*lead, *out[1:])

    def export(self, grid_shape: Any = None, max_steps: Any = None) -> "ExportedPerFrame":
        """A plain-PyTorch twin (:func:`~flow_escnn.nn._conv.export_escnn`: circular padding kept; the
        arguments of the generic :func:`~flow_escnn.nn._export.export` are accepted and unused)."""
        return ExportedPerFrame(export_escnn(self.module), self.in_type.spatial_dims).train(self.training)


class ExportedPerFrame(torch.nn.Module):
    """Plain-PyTorch twin of :class:`PerFrame`: ``[..., C, H, W]`` (``[..., C, D, H, W]``: ``spatial_dims=3``)
    through the exported module per frame."""

    def __init__(self, module: torch.nn.Module, spatial_dims: int = 2) -> None:
        super().__init__()
        self.module = module
        self.spatial_dims = int(spatial_dims)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = self.spatial_dims + 1
        lead = x.shape[:-k]
        y = self.module(x.reshape(-1, *x.shape[-k:]))
        return y.reshape(*lead, *y.shape[-k:])


def _check_shape(shape: Tuple[int, ...], expected: Any) -> None:
    """Raise ``ValueError`` unless ``shape`` is a sequence (lifted sequence) of ``expected``'s channels (and V)."""
    nd = expected.spatial_dims
    axes = "D, H, W" if nd == 3 else "H, W"
    lifted = not isinstance(expected, SequenceFieldType)
    rank = 3 + nd + lifted
    if len(shape) != rank or shape[-nd - 1] != expected.size or (lifted and shape[2] != len(expected)):
        layout = f"[B, T, V={len(expected)}, C, {axes}]" if lifted else f"[B, T, C, {axes}]"
        hint = " (a single frame? add the time axis)" if len(shape) == rank - 1 else ""
        raise ValueError(f"expected {layout} with C={expected.size} for {expected}, got shape {shape}{hint}")


def _raw(x: SequenceLike, expected: Any) -> torch.Tensor:
    """The tensor of ``x`` after checking its type (typed inputs) or its shape (plain tensors)."""
    if isinstance(x, (SequenceTensor, LiftedTensor)):
        if x.type != expected:
            raise ValueError(f"input of type {x.type} does not match the expected {expected}")
        return x.tensor
    if isinstance(x, enn.GeometricTensor):
        if isinstance(expected, LiftedFieldType):
            raise TypeError(
                f"PerFrame(flows=...) runs over lifted sequences [B, T, V={len(expected)}, C, H, W] of {expected!r} "
                f"but got an escnn GeometricTensor of shape {tuple(x.shape)} (frames, no time or V axis): give it the "
                "output of a flow layer (a LiftedTensor), or use PerFrame(module) without flows on a sequence"
            )
        raise geometric_tensor_refusal("PerFrame", x)
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"expected a tensor, a SequenceTensor or a LiftedTensor, got {type(x).__name__}")
    _check_shape(tuple(x.shape), expected)
    return x
