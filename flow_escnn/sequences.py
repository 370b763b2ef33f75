"""Sequences of fields as a type: an escnn ``FieldType`` plus a time axis.

A :class:`SequenceTensor` ``[B, T, C, H, W]`` carries a :class:`SequenceFieldType` through a
model the way a ``GeometricTensor`` carries a ``FieldType`` (and a
:class:`~flow_escnn.lifted.LiftedTensor` a lifted type). The group acts frame by frame:

.. math::
    (g\\cdot f)_t = g\\cdot f_t \\quad\\text{static } g \\in G, \\qquad
    (\\mu\\cdot f)_t = \\psi_t(\\mu)\\cdot f_t \\quad\\text{flow } \\mu \\text{ (0-indexed frames)}.
"""
from __future__ import annotations

from typing import Any, Dict, Sequence, Tuple

import torch

from flow_escnn._compat import enn
from flow_escnn.flows._element import GridElement
from flow_escnn.flows._flowset import FlowSet, VelocityLike
from flow_escnn.flows._spec import decode, encode
from flow_escnn.flows._transport import TransportPlan
from flow_escnn.flows._tables import DEFAULT_INTERPOLATION

__all__ = ["FieldTypeOver", "SequenceFieldType", "SequenceTensor", "rebuild_type"]


class FieldTypeOver:
    """Shared base of the types that wrap an escnn ``FieldType`` per frame / per slice (immutable)."""

    __slots__ = ("_field_type",)

    def __init__(self, field_type: Any) -> None:
        if not isinstance(field_type, enn.FieldType):
            raise TypeError(f"field_type must be an escnn FieldType, got {type(field_type).__name__}")
        self._field_type = field_type

    @property
    def field_type(self) -> Any:
        return self._field_type

    @property
    def gspace(self) -> Any:
        return self._field_type.gspace

    @property
    def size(self) -> int:
        """Channels per frame (per V slice for a lifted type)."""
        return int(self._field_type.size)

    # -- pickling: the field type through its construction spec (escnn's hold local functions) ------
    def _constructor_args(self) -> Tuple[Any, ...]:
        """The constructor arguments after the field type."""
        return ()

    def __reduce__(self) -> Tuple[Any, Tuple[Any, ...]]:
        return (rebuild_type, (type(self), encode(self._field_type), *self._constructor_args()))

    def __copy__(self) -> "FieldTypeOver":
        return self  # immutable

    def __deepcopy__(self, memo: Dict[int, Any]) -> "FieldTypeOver":
        return self


def rebuild_type(cls: Any, field_type_spec: Any, *args: Any) -> FieldTypeOver:
    """``cls(field_type, *args)`` from :func:`~flow_escnn.flows._spec.encode`'s spec of the field type (unpickling)."""
    return cls(decode(field_type_spec), *args)


class SequenceFieldType(FieldTypeOver):
    """The type of a sequence of fields: an escnn ``FieldType`` per frame (immutable, hashable).

    Args:
        field_type: the escnn ``FieldType`` of every frame.
    """

    __slots__ = ()

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SequenceFieldType):
            return NotImplemented
        return self._field_type == other._field_type

    def __hash__(self) -> int:
        return hash(("sequence", self._field_type))

    def __repr__(self) -> str:
        return f"SequenceFieldType(C={self.size}, {self._field_type!r})"


class SequenceTensor:
    """A tensor ``[B, T, C, H, W]`` with a :class:`SequenceFieldType`.

    Raises:
        ValueError: on a rank other than 5 or a channel count that does not match ``type``.
    """

    __slots__ = ("tensor", "type")

    def __init__(self, tensor: torch.Tensor, type: SequenceFieldType) -> None:  # noqa: A002 - escnn's name
        if not isinstance(tensor, torch.Tensor):
            raise TypeError(f"tensor must be a torch.Tensor, got {tensor.__class__.__name__}")
        if not isinstance(type, SequenceFieldType):
            raise TypeError(f"type must be a SequenceFieldType, got {type.__class__.__name__}")
        if tensor.dim() != 5 or tensor.shape[2] != type.size:
            raise ValueError(
                f"a SequenceTensor is [B, T, C={type.size}, H, W] for its type; got shape {tuple(tensor.shape)}"
            )
        self.tensor = tensor
        self.type = type

    @property
    def shape(self) -> torch.Size:
        return self.tensor.shape

    @property
    def grid_shape(self) -> Tuple[int, int]:
        return (int(self.tensor.shape[-2]), int(self.tensor.shape[-1]))

    def __repr__(self) -> str:
        return f"SequenceTensor(shape={tuple(self.tensor.shape)} [B, T, C, H, W], {self.type!r})"

    # -- folding to escnn ------------------------------------------------------------------------
    def fold(self) -> Any:
        """Batch and time folded into escnn's batch: a ``GeometricTensor [B*T, C, H, W]``."""
        return enn.GeometricTensor(self.tensor.reshape(-1, *self.tensor.shape[-3:]), self.type.field_type)

    @classmethod
    def unfold(cls, x: Any, type: SequenceFieldType, leading: Sequence[int]) -> "SequenceTensor":  # noqa: A002
        """Inverse of :meth:`fold`: ``x [B*T, C, H, W]`` (a ``GeometricTensor`` or a tensor) back to ``[B, T, C, H, W]``."""
        if isinstance(x, enn.GeometricTensor):
            if x.type != type.field_type:
                raise ValueError(f"GeometricTensor of type {x.type} cannot unfold into {type}")
            x = x.tensor
        return cls(x.reshape(*leading, *x.shape[-3:]), type)

    # -- group actions ---------------------------------------------------------------------------
    def transform(self, g: Any, interpolation: str = DEFAULT_INTERPOLATION) -> "SequenceTensor":
        """Static action :math:`(g\\cdot f)_t = g\\cdot f_t` of a fiber element ``g``."""
        plan = TransportPlan(self.type.field_type, [GridElement(self.type.gspace, g)], self.grid_shape, interpolation)
        return SequenceTensor(plan.to(self.tensor.device)(self.tensor.unsqueeze(2)).squeeze(2), self.type)

    def transform_flow(
        self, mu: VelocityLike, start: int = 0, interpolation: str = DEFAULT_INTERPOLATION
    ) -> "SequenceTensor":
        """Flow action :math:`(\\mu\\cdot f)_t = \\psi_{\\text{start}+t}(\\mu)\\cdot f_t`."""
        gen = FlowSet(self.type.gspace, [mu]).generators[0]
        elements = [gen.psi(start + t) for t in range(self.tensor.shape[1])]
        plan = TransportPlan(self.type.field_type, elements, self.grid_shape, interpolation).to(self.tensor.device)
        return SequenceTensor(plan(self.tensor), self.type)

    def to(self, *args: Any, **kwargs: Any) -> "SequenceTensor":
        return SequenceTensor(self.tensor.to(*args, **kwargs), self.type)
