"""Lifted field types and tensors: fields indexed by a flow generator :math:`\\nu \\in V`.

A FERNN hidden state is a function :math:`h(\\nu, x)` of a velocity :math:`\\nu \\in V`
and a pixel :math:`x`, with fibers of an escnn ``FieldType``. It is stored as
``[B, V, C, H, W]`` (one frame) or ``[B, T, V, C, H, W]`` (a sequence), with the V axis
ordered like ``flows.velocities``; on a 3D gspace every ``H, W`` reads ``D, H, W``.

Group actions on a lifted tensor (see :mod:`flow_escnn.flows._flowset`):

.. math::
    (g\\cdot h)_t(\\nu) &= g\\cdot h_t(g^{-1}\\cdot\\nu)
        &&\\text{static } g \\in G \\text{ (space + fiber + V permutation)},\\\\
    (\\mu\\cdot h)_t(\\nu) &= \\psi_t(\\mu)\\cdot h_t(\\nu \\ominus \\mu)
        &&\\text{flow } \\mu \\text{ (per-slice transport + V shift)}.
"""
from __future__ import annotations

from typing import Any, Sequence, Tuple

import torch

from flow_escnn._compat import enn
from flow_escnn.flows._flowset import FlowSet, VelocityLike
from flow_escnn.flows._plans import fiber_element, transport_plan
from flow_escnn.flows._transport import GatherTransport
from flow_escnn.flows._tables import DEFAULT_INTERPOLATION
from flow_escnn.sequences import FieldTypeOver, TypedTensor

__all__ = ["LiftedFieldType", "LiftedTensor"]


class LiftedFieldType(FieldTypeOver):
    """A field type lifted over a flow set: the pair (``field_type``, ``flows``).

    Args:
        field_type: the escnn ``FieldType`` of each V slice.
        flows: the flow set V, on the same gspace.
    """

    __slots__ = ("_flows",)

    def __init__(self, field_type: Any, flows: FlowSet) -> None:
        super().__init__(field_type)
        if not isinstance(flows, FlowSet):
            raise TypeError(f"flows must be a FlowSet, got {type(flows).__name__}")
        if flows.gspace != field_type.gspace:
            raise ValueError(f"flows live on {flows.gspace} but field_type on {field_type.gspace}")
        self._flows = flows

    @property
    def flows(self) -> FlowSet:
        return self._flows

    def __len__(self) -> int:
        return len(self._flows)

    def _constructor_args(self) -> Tuple[Any, ...]:
        return (self._flows,)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, LiftedFieldType):
            return NotImplemented
        return self._field_type == other._field_type and self._flows == other._flows

    def __hash__(self) -> int:
        return hash((self._field_type, self._flows))

    def __repr__(self) -> str:
        return f"LiftedFieldType(C={self.size}, {self._field_type!r}, {self._flows!r})"

    def static_plan(
        self, g: Any, grid_shape: Tuple[int, ...], interpolation: str = DEFAULT_INTERPOLATION
    ) -> Tuple[GatherTransport, torch.Tensor]:
        """Plan and V-source indices for the static action of fiber element ``g``.

        Returns:
            ``(plan, src)`` with ``(g.h)[nu_i] = plan(h[src[i]])``.

        Raises:
            ValueError: when V is not closed under ``g``.
        """
        src = self._flows.action_permutation(~g)
        plan = transport_plan(
            self._field_type, [fiber_element(self.gspace, g)] * len(self._flows), grid_shape, interpolation
        )
        return plan, torch.as_tensor(src, dtype=torch.long)


class LiftedTensor(TypedTensor):
    """A tensor ``[B, V, C, H, W]`` or ``[B, T, V, C, H, W]`` with a :class:`LiftedFieldType`.

    What the flow layers return (a FERNN's hidden sequence and states). Arithmetic, ``.to``
    and ``.detach`` as escnn's ``GeometricTensor`` (:class:`~flow_escnn.sequences.TypedTensor`):
    tensors of one lifted type add, others are refused; pooling over V
    (:class:`~flow_escnn.nn.VelocityPool`) gives a :class:`~flow_escnn.sequences.SequenceTensor`
    (an escnn ``GeometricTensor`` for a single frame).

    Args:
        tensor: the data.
        type: its lifted type; ``tensor.shape[-4:-2]`` must be ``(len(type), type.size)``.

    Raises:
        ValueError: on a rank other than 5 or 6, or V / C sizes that do not match ``type``.

    Example:
        >>> import torch
        >>> from flow_escnn import FlowSet, LiftedFieldType, LiftedTensor
        >>> from escnn import gspaces, nn as enn
        >>> gs = gspaces.rot2dOnR2(4)
        >>> lt = LiftedFieldType(enn.FieldType(gs, [gs.regular_repr]), FlowSet.translations(gs, 1))
        >>> h = LiftedTensor(torch.ones(2, 3, 9, 4, 6, 6), lt)  # [B, T, V, C, H, W]
        >>> (h + h).type == lt, (h - 0.5 * h).tensor.mean().item()
        (True, 0.5)
        >>> h.frame(-1).shape
        torch.Size([2, 9, 4, 6, 6])
    """

    __slots__ = ()

    def __init__(self, tensor: torch.Tensor, type: LiftedFieldType) -> None:  # noqa: A002 - escnn's name
        if not isinstance(tensor, torch.Tensor):
            raise TypeError(f"tensor must be a torch.Tensor, got {tensor.__class__.__name__}")
        if not isinstance(type, LiftedFieldType):
            raise TypeError(f"type must be a LiftedFieldType, got {type.__class__.__name__}")
        nd = type.spatial_dims
        axes = "D, H, W" if nd == 3 else "H, W"
        if tensor.dim() not in (3 + nd, 4 + nd):
            raise ValueError(
                f"a LiftedTensor is [B, V, C, {axes}] or [B, T, V, C, {axes}]; got rank {tensor.dim()} "
                f"shape {tuple(tensor.shape)}"
            )
        v, c = tensor.shape[-nd - 2], tensor.shape[-nd - 1]
        if (v, c) != (len(type), type.size):
            raise ValueError(
                f"tensor has V={v}, C={c} at dims {-nd - 2}, {-nd - 1} but its type expects V={len(type)}, "
                f"C={type.size} (shape {tuple(tensor.shape)})"
            )
        self.tensor = tensor
        self.type = type

    # -- shape helpers --------------------------------------------------------------------------
    @property
    def is_sequence(self) -> bool:
        return self.tensor.dim() == 4 + self.type.spatial_dims

    @property
    def flows(self) -> FlowSet:
        return self.type.flows

    def __repr__(self) -> str:
        axes = "D, H, W" if self.type.spatial_dims == 3 else "H, W"
        layout = f"[B, T, V, C, {axes}]" if self.is_sequence else f"[B, V, C, {axes}]"
        return f"LiftedTensor(shape={tuple(self.tensor.shape)} {layout}, {self.type!r})"

    # -- folding to escnn ------------------------------------------------------------------------
    def fold(self) -> Any:
        """All leading axes (B, T, V) folded into escnn's batch: a ``GeometricTensor [N, C, H, W]``."""
        nd = self.type.spatial_dims
        return enn.GeometricTensor(self.tensor.reshape(-1, *self.tensor.shape[-nd - 1:]), self.type.field_type)

    @classmethod
    def unfold(cls, x: Any, type: LiftedFieldType, leading: Sequence[int]) -> "LiftedTensor":  # noqa: A002
        """Inverse of :meth:`fold`: ``x [N, C, H, W]`` back to ``[*leading, V, C, H, W]``.

        Args:
            x: a ``GeometricTensor`` (its type must equal ``type.field_type``) or a plain tensor.
            type: the lifted type.
            leading: ``(B,)`` or ``(B, T)``.
        """
        if isinstance(x, enn.GeometricTensor):
            if x.type != type.field_type:
                raise ValueError(f"GeometricTensor of type {x.type} cannot unfold into {type}")
            x = x.tensor
        return cls(x.reshape(*leading, len(type), *x.shape[1:]), type)

    def frame(self, t: int) -> "LiftedTensor":
        """Frame ``t`` of a sequence, as a ``[B, V, C, H, W]`` lifted tensor.

        ``t`` indexes the T frames as a Python sequence does: ``0 .. T-1``, or ``-T .. -1`` from the end.

        Raises:
            TypeError: when ``t`` is not an integer.
            IndexError: when ``t`` is outside ``-T .. T-1`` (the message gives the range).
        """
        self._require_sequence("frame")
        return LiftedTensor(self._frame_tensor(t), self.type)

    def velocity_slice(self, velocity: VelocityLike) -> torch.Tensor:
        """The slice :math:`h(\\nu)`: ``[B, C, H, W]`` or ``[B, T, C, H, W]``."""
        return self.tensor.select(-self.type.spatial_dims - 2, self.flows.index(velocity))

    # -- group actions ---------------------------------------------------------------------------
    def transform(self, g: Any, interpolation: str = DEFAULT_INTERPOLATION) -> "LiftedTensor":
        """Static action :math:`(g\\cdot h)(\\nu) = g\\cdot h(g^{-1}\\cdot\\nu)` of a fiber element.

        Exact for rotations by multiples of 90 degrees and reflections on a square grid.

        Raises:
            ValueError: when V is not closed under ``g``.
        """
        plan, src = self.type.static_plan(g, self.grid_shape, interpolation)
        plan = plan.to(self.tensor.device)
        permuted = self.tensor.index_select(-self.type.spatial_dims - 2, src.to(self.tensor.device))
        return LiftedTensor(plan(permuted), self.type)

    def transform_flow(
        self, mu: VelocityLike, start: int = 0, interpolation: str = DEFAULT_INTERPOLATION, periodic_velocities: bool = False
    ) -> Tuple["LiftedTensor", torch.Tensor]:
        """Flow action :math:`h'_t(\\nu) = \\psi_{\\text{start}+t}(\\mu)\\cdot h_t(\\nu\\ominus\\mu)`.

        For a single frame ``[B, V, C, H, W]``, ``start`` is its time index ``t``.

        Returns:
            ``(transformed, valid)``: ``valid`` is a bool tensor ``[V]``, False where
            :math:`\\nu\\ominus\\mu` is outside V or does not commute with :math:`\\mu`
            (see :meth:`FlowSet.shift_indices`); those slices are filled with zeros and
            carry no prediction. With ``periodic_velocities=True`` velocities are matched modulo
            the grid (:meth:`FlowSet.shift_indices` with ``periodic_grid``), which is exact on the torus.
        """
        flows = self.flows
        mu_gen = FlowSet.as_generator(flows.gspace, mu)
        src = torch.as_tensor(
            flows.shift_indices(mu_gen, self.grid_shape if periodic_velocities else None), device=self.tensor.device
        )
        valid = src >= 0
        x = self.tensor if self.is_sequence else self.tensor.unsqueeze(1)
        t_len = x.shape[1]
        if t_len == 0:
            raise ValueError("cannot transform a lifted sequence with T=0 frames")
        shifted = x.index_select(2, src.clamp(min=0))
        elements = [mu_gen.psi(start + t) for t in range(t_len) for _ in range(len(flows))]
        plan = transport_plan(self.type.field_type, elements, self.grid_shape, interpolation).to(x.device)
        b, _, v, c = x.shape[:4]
        fibre = tuple(x.shape[3:])
        out = plan(shifted.reshape(b, t_len * v, *fibre)).reshape(b, t_len, v, *fibre)
        mask = valid.view(1, 1, v, *(1,) * len(fibre))
        out = torch.where(mask, out, torch.zeros((), dtype=out.dtype, device=out.device))
        if not self.is_sequence:
            out = out.squeeze(1)
        return LiftedTensor(out, self.type), valid

    def _require_sequence(self, what: str) -> None:
        if not self.is_sequence:
            raise ValueError(f"{what} needs a sequence [B, T, V, C, H, W], got shape {tuple(self.tensor.shape)}")
