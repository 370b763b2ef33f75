"""Sequences of fields as a type: an escnn ``FieldType`` plus a time axis.

A :class:`SequenceTensor` ``[B, T, C, H, W]`` carries a :class:`SequenceFieldType` through a
model the way a ``GeometricTensor`` carries a ``FieldType`` (and a
:class:`~flow_escnn.lifted.LiftedTensor` a lifted type). The group acts frame by frame:

.. math::
    (g\\cdot f)_t = g\\cdot f_t \\quad\\text{static } g \\in G, \\qquad
    (\\mu\\cdot f)_t = \\psi_t(\\mu)\\cdot f_t \\quad\\text{flow } \\mu \\text{ (0-indexed frames)}.

Both typed tensors share :class:`TypedTensor`: the arithmetic of escnn's ``GeometricTensor``
(``+``, ``-``, ``+=``, ``-=`` between tensors of one type, ``*`` by a scalar, ``.to``, ``.shape``,
``.size()``) plus ``.detach()``, with the types checked (a mismatch raises, naming both).
"""
from __future__ import annotations

import numbers
import operator
from typing import Any, Dict, Sequence, Tuple, Union

import torch

from flow_escnn._compat import enn
from flow_escnn.flows._flowset import FlowSet, VelocityLike
from flow_escnn.flows._plans import fiber_element, spatial_dims, transport_plan
from flow_escnn.flows._spec import decode, encode
from flow_escnn.flows._tables import DEFAULT_INTERPOLATION

__all__ = [
    "FieldTypeOver",
    "SequenceFieldType",
    "SequenceTensor",
    "TypedTensor",
    "geometric_tensor_refusal",
    "rebuild_type",
]


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
    def spatial_dims(self) -> int:
        """2 for fields on a plane (``[..., H, W]``), 3 on a volume (``[..., D, H, W]``; a 3D gspace)."""
        return spatial_dims(self._field_type.gspace)

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


def geometric_tensor_refusal(who: str, x: Any) -> TypeError:
    """The error for an escnn ``GeometricTensor`` (frames ``[N, C, H, W]``) given to a sequence module.

    Sequence modules take sequences ``[B, T, C, H, W]``; a ``GeometricTensor`` has no time axis, so
    the message says how to wrap it, and where escnn's ``SequentialModule`` stands.

    Args:
        who: the refusing module or function, for the message.
        x: the ``GeometricTensor``.

    Example:
        >>> import torch
        >>> from flow_escnn.sequences import geometric_tensor_refusal
        >>> from escnn import gspaces, nn as enn
        >>> gs = gspaces.rot2dOnR2(4)
        >>> g = enn.GeometricTensor(torch.zeros(2, 1, 5, 5), enn.FieldType(gs, [gs.trivial_repr]))
        >>> print(geometric_tensor_refusal("FERNN", g))  # doctest: +ELLIPSIS
        FERNN runs over sequences [B, T, C, H, W] but got an escnn GeometricTensor of shape (2, 1, 5, 5)...
    """
    return TypeError(
        f"{who} runs over sequences [B, T, C, H, W] but got an escnn GeometricTensor of shape {tuple(x.shape)} "
        "(frames, no time axis). Wrap it: SequenceTensor(x.tensor.unsqueeze(1), x.type) is a one-frame sequence "
        "[B, 1, C, H, W]; SequenceTensor.unfold(x, x.type, (B, T)) regroups a batch of B*T frames. Sequence modules "
        "chain in flow_escnn.nn.FlowSequential (escnn's SequentialModule holds frame modules only)"
    )


def _is_scalar(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, numbers.Real):
        return True
    return isinstance(value, torch.Tensor) and value.numel() == 1


class TypedTensor:
    """Shared base of :class:`SequenceTensor` and :class:`~flow_escnn.lifted.LiftedTensor`: a tensor and its type.

    Mirrors escnn's ``GeometricTensor``: ``.tensor`` and ``.type``; ``.shape`` and ``.size()`` of the
    tensor; ``.to(...)`` (and ``.detach()``) keep the type; ``x + y``, ``x - y``, ``x += y`` and ``x -= y``
    need two tensors of the same class, type and shape; ``x * s``, ``s * x`` and ``x *= s`` take a
    scalar ``s`` (a number or a one-element tensor). Anything else raises, saying what to do
    (escnn asserts instead). For raw arithmetic use ``x.tensor``.

    Subclasses validate ``tensor`` against ``type`` in their constructor, ``cls(tensor, type)``.

    Example:
        >>> import torch
        >>> from flow_escnn import SequenceTensor
        >>> from escnn import gspaces, nn as enn
        >>> gs = gspaces.rot2dOnR2(4)
        >>> x = SequenceTensor(torch.ones(1, 2, 4, 3, 3), enn.FieldType(gs, [gs.regular_repr]))
        >>> y = 2 * x - x
        >>> y.type == x.type, torch.equal(y.tensor, x.tensor)
        (True, True)
    """

    __slots__ = ("tensor", "type")

    tensor: torch.Tensor
    type: Any

    def _frame_tensor(self, t: int) -> torch.Tensor:
        """``self.tensor[:, t]`` of a sequence tensor, ``t`` checked (TypeError, IndexError naming T)."""
        if isinstance(t, bool):
            raise TypeError(f"frame index must be an integer, got bool {t!r}")
        try:
            i = operator.index(t)
        except TypeError:
            raise TypeError(f"frame index must be an integer, got {type(t).__name__} {t!r}") from None
        n = int(self.tensor.shape[1])
        if not -n <= i < n:
            valid = f"valid are 0 .. {n - 1}, or -{n} .. -1 from the end" if n else "it has no frames"
            raise IndexError(f"frame index {i} is out of range for a sequence of T={n} frames: {valid}")
        return self.tensor[:, i]

    @property
    def shape(self) -> torch.Size:
        """Alias of ``self.tensor.shape``."""
        return self.tensor.shape

    def size(self) -> torch.Size:
        """Alias of ``self.tensor.size()``."""
        return self.tensor.size()

    @property
    def grid_shape(self) -> Tuple[int, ...]:
        """``(H, W)``, or ``(D, H, W)`` on a 3D gspace."""
        return tuple(int(n) for n in self.tensor.shape[-self.type.spatial_dims:])

    def to(self, *args: Any, **kwargs: Any) -> Any:
        """``self.tensor.to(*args, **kwargs)`` with the same type (as ``GeometricTensor.to``)."""
        return type(self)(self.tensor.to(*args, **kwargs), self.type)

    def detach(self) -> Any:
        """The tensor detached from the autograd graph, with the same type."""
        return type(self)(self.tensor.detach(), self.type)

    # -- arithmetic (escnn's GeometricTensor rules, checked with messages) -------------------------------
    def _same_type_tensor(self, other: Any, op: str) -> torch.Tensor:
        mine = type(self).__name__
        if not isinstance(other, TypedTensor):
            raise TypeError(
                f"cannot {op} a {mine} and a {type(other).__name__}: both operands must be {mine}s of one type "
                f"(wrap the other as {mine}(tensor, x.type), or work on the raw x.tensor)"
            )
        if type(other) is not type(self):
            raise TypeError(f"cannot {op} a {mine} and a {type(other).__name__}: they are different kinds of field")
        if other.type != self.type:
            raise ValueError(
                f"cannot {op} {mine}s of different types: {self.type!r} and {other.type!r}; only tensors of one "
                "type add (as for escnn's GeometricTensor): map one to the other's type with a module first"
            )
        if other.tensor.shape != self.tensor.shape:
            raise ValueError(
                f"cannot {op} {mine}s of shapes {tuple(self.tensor.shape)} and {tuple(other.tensor.shape)}: "
                "the shapes must be equal"
            )
        return other.tensor

    def _scalar(self, other: Any, op: str) -> Any:
        if not _is_scalar(other):
            what = f"a tensor of shape {tuple(other.shape)}" if isinstance(other, torch.Tensor) else type(other).__name__
            raise TypeError(
                f"a {type(self).__name__} can only be {op} a scalar (a number or a one-element tensor), as escnn's "
                f"GeometricTensor; got {what}. Use x.tensor for other products"
            )
        return other

    def __add__(self, other: Any) -> Any:
        return type(self)(self.tensor + self._same_type_tensor(other, "add"), self.type)

    def __sub__(self, other: Any) -> Any:
        return type(self)(self.tensor - self._same_type_tensor(other, "subtract"), self.type)

    def __iadd__(self, other: Any) -> Any:
        self.tensor += self._same_type_tensor(other, "add")
        return self

    def __isub__(self, other: Any) -> Any:
        self.tensor -= self._same_type_tensor(other, "subtract")
        return self

    def __mul__(self, other: Any) -> Any:
        return type(self)(self.tensor * self._scalar(other, "multiplied by"), self.type)

    __rmul__ = __mul__

    def __imul__(self, other: Any) -> Any:
        self.tensor *= self._scalar(other, "multiplied by")
        return self


class SequenceTensor(TypedTensor):
    """A tensor ``[B, T, C, H, W]`` with a :class:`SequenceFieldType`: escnn's ``GeometricTensor`` with time.

    Args:
        tensor: the data, ``[B, T, C, H, W]``.
        type: its :class:`SequenceFieldType`, or the escnn ``FieldType`` of each frame (wrapped).

    Arithmetic, ``.to`` and ``.detach`` as in :class:`TypedTensor`; :meth:`frame` gives one frame as
    an escnn ``GeometricTensor``, :meth:`fold` all of them.

    Raises:
        TypeError: when ``tensor`` is not a ``torch.Tensor`` or ``type`` is not a field type.
        ValueError: on a rank other than 5 or a channel count that does not match ``type``.

    Example:
        >>> import torch
        >>> from flow_escnn import SequenceTensor
        >>> from escnn import gspaces, nn as enn
        >>> gs = gspaces.rot2dOnR2(4)
        >>> x = SequenceTensor(torch.rand(2, 3, 1, 8, 8), enn.FieldType(gs, [gs.trivial_repr]))
        >>> x.type
        SequenceFieldType(C=1, [C4_on_R2[(None, 4)]: {irrep_0 (x1)}(1)])
        >>> x.frame(0).shape  # an escnn GeometricTensor [B, C, H, W]
        torch.Size([2, 1, 8, 8])
    """

    __slots__ = ()

    def __init__(self, tensor: torch.Tensor, type: Union[SequenceFieldType, Any]) -> None:  # noqa: A002
        if not isinstance(tensor, torch.Tensor):
            raise TypeError(f"tensor must be a torch.Tensor, got {tensor.__class__.__name__}")
        if isinstance(type, enn.FieldType):
            type = SequenceFieldType(type)
        if not isinstance(type, SequenceFieldType):
            raise TypeError(
                f"type must be a SequenceFieldType or an escnn FieldType, got {type.__class__.__name__}"
            )
        if tensor.dim() != 3 + type.spatial_dims or tensor.shape[2] != type.size:
            raise ValueError(
                f"a SequenceTensor is [B, T, C={type.size}, {_axes(type)}] for its type; got shape {tuple(tensor.shape)}"
            )
        self.tensor = tensor
        self.type = type

    def __repr__(self) -> str:
        return f"SequenceTensor(shape={tuple(self.tensor.shape)} [B, T, C, {_axes(self.type)}], {self.type!r})"

    # -- to and from escnn ------------------------------------------------------------------------
    def frame(self, t: int) -> Any:
        """Frame ``t`` (``0 .. T-1``, or negative from the end) as an escnn ``GeometricTensor [B, C, H, W]``.

        Raises:
            TypeError: when ``t`` is not an integer.
            IndexError: when ``t`` is outside ``-T .. T-1``.
        """
        return enn.GeometricTensor(self._frame_tensor(t), self.type.field_type)

    def fold(self) -> Any:
        """Batch and time folded into escnn's batch: a ``GeometricTensor [B*T, C, H, W]``."""
        return enn.GeometricTensor(self.tensor.reshape(-1, *self.tensor.shape[2:]), self.type.field_type)

    @classmethod
    def unfold(cls, x: Any, type: Any, leading: Sequence[int]) -> "SequenceTensor":  # noqa: A002
        """Inverse of :meth:`fold`: ``x [B*T, C, H, W]`` (a ``GeometricTensor`` or a tensor) back to ``[B, T, C, H, W]``.

        ``type`` is a :class:`SequenceFieldType` or the escnn ``FieldType`` of a frame.
        """
        if isinstance(type, enn.FieldType):
            type = SequenceFieldType(type)
        if isinstance(x, enn.GeometricTensor):
            if x.type != type.field_type:
                raise ValueError(f"GeometricTensor of type {x.type} cannot unfold into {type}")
            x = x.tensor
        return cls(x.reshape(*leading, *x.shape[1:]), type)

    # -- group actions ---------------------------------------------------------------------------
    def transform(self, g: Any, interpolation: str = DEFAULT_INTERPOLATION) -> "SequenceTensor":
        """Static action :math:`(g\\cdot f)_t = g\\cdot f_t` of a fiber element ``g``."""
        plan = transport_plan(self.type.field_type, [fiber_element(self.type.gspace, g)], self.grid_shape, interpolation)
        return SequenceTensor(plan.to(self.tensor.device)(self.tensor.unsqueeze(2)).squeeze(2), self.type)

    def transform_flow(
        self, mu: VelocityLike, start: int = 0, interpolation: str = DEFAULT_INTERPOLATION
    ) -> "SequenceTensor":
        """Flow action :math:`(\\mu\\cdot f)_t = \\psi_{\\text{start}+t}(\\mu)\\cdot f_t`."""
        gen = FlowSet(self.type.gspace, [mu]).generators[0]
        elements = [gen.psi(start + t) for t in range(self.tensor.shape[1])]
        plan = transport_plan(self.type.field_type, elements, self.grid_shape, interpolation).to(self.tensor.device)
        return SequenceTensor(plan(self.tensor), self.type)


def _axes(t: FieldTypeOver) -> str:
    return "D, H, W" if t.spatial_dims == 3 else "H, W"
