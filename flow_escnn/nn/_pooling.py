"""Pooling over the flow axis :math:`V`, over the fiber group, and over space.

A FERNN hidden state :math:`h(\\nu, x)` is lifted over a flow set :math:`V`
(:class:`~flow_escnn.lifted.LiftedTensor`, ``[B, V, C, H, W]`` or ``[B, T, V, C, H, W]``).
Readouts remove the axes a task should not depend on, in this order:

1. **Velocity pooling** :math:`P_V h(x) = \\max_{\\nu\\in V} h(\\nu, x)` (or the mean)
   gives a field of ``hidden_type`` without V: a lifted sequence ``[B, T, V, C, H, W]`` becomes a
   :class:`~flow_escnn.sequences.SequenceTensor` ``[B, T, C, H, W]``, a lifted frame
   ``[B, V, C, H, W]`` an escnn ``GeometricTensor`` ``[B, C, H, W]``; typed in, typed out (a plain
   tensor, which carries no type, gives a plain tensor).
2. **Group pooling** reduces every field to one invariant channel: the max (or mean) over
   the channels of a permutation field (trivial, regular, quotient), or the norm of any
   orthogonal field.
3. **Spatial pooling** (mean or max over ``H, W``) gives invariant features ``[B, F]``.

Invariance of the velocity pooling
-----------------------------------
Both group actions on a lifted state (:mod:`flow_escnn.lifted`) are "transport every
slice the same way, then permute or shift :math:`V`":

.. math::
    (g\\cdot h)(\\nu) = g\\cdot h(g^{-1}\\nu), \\qquad
    (\\mu\\cdot h)_t(\\nu) = \\psi_t(\\mu)\\cdot h_t(\\nu\\ominus\\mu).

A max or mean over :math:`V` is invariant under any *permutation* of :math:`V`, and it
commutes with a transport applied to every slice alike when that transport permutes
pixels and fiber channels (exact transports; the mean also commutes with bilinear
transport, which is linear, the max does not). Hence

* **static** :math:`g`: :math:`P_V(g\\cdot h) = g\\cdot P_V h` exactly whenever :math:`V` is
  closed under :math:`G` (:meth:`~flow_escnn.flows.FlowSet.is_closed_under`), so that
  :math:`\\nu\\mapsto g^{-1}\\nu` permutes :math:`V`;
* **flow** :math:`\\mu`: :math:`P_V(\\mu\\cdot h)_t = \\psi_t(\\mu)\\cdot P_V h_t` exactly only when
  the shift :math:`\\nu\\mapsto\\nu\\ominus\\mu` is a permutation of :math:`V`, i.e.
  ``FlowSet.shift_indices(mu, periodic_grid)`` has no ``-1``. That holds for
  :math:`\\mu = 0`, for translation flows when :math:`V` covers the torus
  (:math:`V = \\mathbb{Z}_W\\times\\mathbb{Z}_H`, e.g. ``FlowSet.translations(gs, 2)`` on a 5x5
  grid, matched with ``periodic_grid=(5, 5)``), and for rotation flows when :math:`V`
  contains all :math:`N` rotation steps. Otherwise slices whose :math:`\\nu\\ominus\\mu`
  falls outside :math:`V` are replaced by other data and the pooled field is only
  approximately transformed (an error at the border of :math:`V`).

Group and spatial pooling are invariant under exact fiber permutations (and orthogonal
fiber maps for ``"norm"``), and under pixel permutations (torus translations, rotations
by multiples of 90 degrees on a square grid) respectively.

All modules here hold only ``torch`` buffers and Python numbers, so they are already
plain PyTorch (and :func:`torch.jit.script`-able where they take plain tensors). Group and
spatial pooling are readout heads on plain tensors (``x.tensor``): for typed group pooling inside a
model use escnn's ``GroupPooling`` / ``NormPool`` in :class:`~flow_escnn.nn.PerFrame`.
"""
from __future__ import annotations

from typing import Any, List, Optional, Sequence, Tuple, Union

import torch

from flow_escnn._compat import enn
from flow_escnn._validate import one_of
from flow_escnn.flows._reduce import REDUCTIONS, reduce_over
from flow_escnn.lifted import LiftedTensor
from flow_escnn.nn._nonlinearity import non_pointwise
from flow_escnn.sequences import SequenceTensor, TypedTensor

__all__ = [
    "VELOCITY_POOLS",
    "GROUP_POOLS",
    "SPATIAL_POOLS",
    "pool_velocities",
    "check_velocity_pool",
    "pool_group",
    "pool_space",
    "reduce_velocities",
    "group_pool_core",
    "reduce_space",
    "group_pooled_type",
    "VelocityPool",
    "GroupPool",
    "SpatialPool",
]

VELOCITY_POOLS = REDUCTIONS
GROUP_POOLS = ("max", "mean", "norm")
SPATIAL_POOLS = ("mean", "max")


def _check_mode(mode: str, allowed: Tuple[str, ...], what: str) -> str:
    return one_of(mode, allowed, what)


# -- velocity pooling ------------------------------------------------------------------------------
def reduce_velocities(x: torch.Tensor, mode: str, spatial_dims: int = 2) -> torch.Tensor:
    """Max or mean over the V axis of a plain tensor, dim ``-4`` (``-5`` for volumes: ``spatial_dims=3``)
    (TorchScript-compatible core)."""
    d = -2 - spatial_dims
    if x.shape[d] == 1:  # a single velocity (the G-RNN): pooling is the identity
        return x.squeeze(d)
    if torch.jit.is_scripting():
        return x.max(dim=d).values if mode == "max" else x.mean(dim=d)
    return _reduce_over_v(x, mode, d)


@torch.jit.unused
def _reduce_over_v(x: torch.Tensor, mode: str, d: int) -> torch.Tensor:
    return reduce_over(x, x.dim() + d, mode)  # max: max(dim)'s values and gradient, faster on the CPU


def check_velocity_pool(mode: str, field_type: Any, what: str = "pool", instead: Optional[str] = None) -> None:
    """Raise ``ValueError`` for ``mode="max"`` on fields that are not permutation representations.

    The max over :math:`V` is taken channel by channel, which commutes with :math:`\\rho(g)` only
    when it permutes channels (trivial, regular, quotient fields); the mean is linear and
    commutes with every :math:`\\rho(g)`.

    Args:
        mode: the pooling mode.
        field_type: the escnn ``FieldType`` of the pooled slices.
        what: the name of the mode argument, for the message.
        instead: what to use instead, for the message (default ``{what}='mean'``).
    """
    _check_mode(mode, VELOCITY_POOLS, what)
    bad = non_pointwise(field_type)
    if mode == "max" and bad:
        raise ValueError(
            f"{what}='max' takes the maximum over V channel by channel, which is not equivariant on the fields "
            f"{bad} of {field_type}: use {instead or what + '=' + repr('mean')}, or fields whose representations "
            "permute channels (trivial, regular, quotient; e.g. gspace.regular_repr), on which the max is exact"
        )


def pool_velocities(
    x: Union[LiftedTensor, torch.Tensor], mode: str = "max", spatial_dims: int = 2
) -> Union[SequenceTensor, Any, torch.Tensor]:
    """Pool a lifted tensor over its flow axis :math:`V`.

    .. math::
        (P_V h)(x) = \\max_{\\nu\\in V} h(\\nu, x) \\quad\\text{or}\\quad
        \\frac{1}{|V|}\\sum_{\\nu\\in V} h(\\nu, x).

    Args:
        x: a :class:`~flow_escnn.lifted.LiftedTensor`, or a plain tensor ``[B, V, C, H, W]``
            / ``[B, T, V, C, H, W]``.
        mode: ``"max"`` (as in the paper) or ``"mean"``.
        spatial_dims: of a plain tensor (which carries no type): 2, or 3 for volumes ``[B, (T,) V, C, D, H, W]``.
            A :class:`~flow_escnn.lifted.LiftedTensor` knows its own (its gspace's).

    Returns:
        Typed in, typed out: for a :class:`~flow_escnn.lifted.LiftedTensor` sequence a
        :class:`~flow_escnn.sequences.SequenceTensor` ``[B, T, C, H, W]``, for a lifted frame an escnn
        ``GeometricTensor`` ``[B, C, H, W]``, both of the slices' field type; for a plain tensor
        (which carries no type) a plain tensor ``[B, (T,) C, H, W]``.

    Raises:
        ValueError: on an unknown mode, a tensor of rank other than 5 or 6, or ``"max"`` on a
            :class:`~flow_escnn.lifted.LiftedTensor` of fields that do not permute channels
            (:func:`check_velocity_pool`).
        TypeError: for an input without a V axis (a ``SequenceTensor``, a ``GeometricTensor``) or not a tensor.

    Example:
        >>> import torch
        >>> from flow_escnn import FlowSet, LiftedFieldType, LiftedTensor
        >>> from escnn import gspaces, nn as enn
        >>> gs = gspaces.rot2dOnR2(4)
        >>> lt = LiftedFieldType(enn.FieldType(gs, [gs.regular_repr]), FlowSet.translations(gs, 1))
        >>> h = LiftedTensor(torch.rand(2, 3, 9, 4, 6, 6), lt)
        >>> pooled = pool_velocities(h)
        >>> type(pooled).__name__, tuple(pooled.shape), pooled.type.field_type == lt.field_type
        ('SequenceTensor', (2, 3, 4, 6, 6), True)
        >>> type(pool_velocities(h.frame(0))).__name__  # a lifted frame pools to escnn's type
        'GeometricTensor'
    """
    _check_mode(mode, VELOCITY_POOLS, "velocity pooling mode")
    if isinstance(x, LiftedTensor):
        check_velocity_pool(mode, x.type.field_type, "mode", "mode='mean' (VelocityPool('mean'))")
        pooled = reduce_velocities(x.tensor, mode, x.type.spatial_dims)
        if x.is_sequence:
            return SequenceTensor(pooled, x.type.field_type)
        return enn.GeometricTensor(pooled, x.type.field_type)
    if isinstance(x, (enn.GeometricTensor, TypedTensor)):
        raise TypeError(
            f"velocity pooling takes a LiftedTensor [B, (T,) V, C, H, W] (or its raw tensor), got a "
            f"{type(x).__name__} of shape {tuple(x.shape)}, which has no V axis: it is already pooled"
        )
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"expected a LiftedTensor or a torch.Tensor, got {type(x).__name__}")
    if spatial_dims not in (2, 3):
        raise ValueError(f"spatial_dims must be 2 (planes) or 3 (volumes), got {spatial_dims!r}")
    axes = "D, H, W" if spatial_dims == 3 else "H, W"
    if x.dim() not in (3 + spatial_dims, 4 + spatial_dims):
        raise ValueError(
            f"velocity pooling expects a lifted tensor [B, V, C, {axes}] or [B, T, V, C, {axes}], "
            f"got shape {tuple(x.shape)}" + ("" if spatial_dims == 3 else " (a volume? pass spatial_dims=3)")
        )
    return reduce_velocities(x, mode, spatial_dims)


class VelocityPool(torch.nn.Module):
    """Module form of :func:`pool_velocities` (see the module docstring for its invariance).

    Typed in, typed out: a :class:`~flow_escnn.lifted.LiftedTensor` sequence pools to a
    :class:`~flow_escnn.sequences.SequenceTensor` of the slices' field type (a lifted frame to an escnn
    ``GeometricTensor``); a plain tensor, which carries no type, pools to a plain tensor (what the
    plain-PyTorch exports run).

    ``"max"`` is equivariant only on fields whose representations permute channels (trivial,
    regular, quotient); it is refused on others (e.g. SO(2) irreps) as soon as the field type is
    known: in a :class:`~flow_escnn.nn.FlowSequential` at construction (:meth:`check_field_type`),
    otherwise when the input is a :class:`~flow_escnn.lifted.LiftedTensor` (a plain tensor carries
    no type and is pooled as given).

    Args:
        mode: ``"max"`` or ``"mean"``.
        spatial_dims: the spatial axes of plain-tensor inputs and shapes: 2, or 3 for volumes; ``None``
            (default): 2, until :meth:`check_field_type` sees the field type (a
            :class:`~flow_escnn.nn.FlowSequential` does at construction), which sets it from the gspace.
            Typed inputs carry their own.

    Shapes:
        ``[B, (T,) V, C, H, W]`` (tensor or :class:`~flow_escnn.lifted.LiftedTensor`) ->
        ``[B, (T,) C, H, W]`` (see :meth:`evaluate_output_shape`); volumes ``[B, (T,) V, C, D, H, W]`` alike.

    Example:
        >>> import torch
        >>> from flow_escnn import FlowSet
        >>> from flow_escnn.nn import FERNN, VelocityPool
        >>> from escnn import gspaces, nn as enn
        >>> gs = gspaces.rot2dOnR2(4)
        >>> fernn = FERNN(enn.FieldType(gs, [gs.trivial_repr]), enn.FieldType(gs, [gs.regular_repr]),
        ...               FlowSet.translations(gs, 1))
        >>> y = VelocityPool("max")(fernn(torch.rand(2, 3, 1, 6, 6)))
        >>> y
        SequenceTensor(shape=(2, 3, 4, 6, 6) [B, T, C, H, W], SequenceFieldType(C=4, ...))
        >>> VelocityPool().evaluate_output_shape((2, 3, 9, 4, 6, 6))
        (2, 3, 4, 6, 6)
    """

    def __init__(self, mode: str = "max", spatial_dims: Optional[int] = None) -> None:
        super().__init__()
        self.mode = _check_mode(mode, VELOCITY_POOLS, "velocity pooling mode")
        if spatial_dims not in (None, 2, 3):
            raise ValueError(f"spatial_dims must be 2 (planes), 3 (volumes) or None, got {spatial_dims!r}")
        self.spatial_dims = spatial_dims

    def check_field_type(self, field_type: Any) -> None:
        """Raise ``ValueError`` when this pooling is not equivariant on slices of ``field_type`` (or its rank
        differs from a given ``spatial_dims``); set ``spatial_dims`` from its gspace when not given."""
        check_velocity_pool(self.mode, field_type, "VelocityPool mode", "VelocityPool('mean')")
        dims = 3 if getattr(field_type.gspace, "dimensionality", 2) == 3 else 2
        if self.spatial_dims is not None and self.spatial_dims != dims:
            raise ValueError(f"this VelocityPool was built for spatial_dims={self.spatial_dims} but the field type "
                             f"lives on {field_type.gspace} ({dims} spatial axes)")
        self.spatial_dims = dims

    def forward(self, x: Union[LiftedTensor, torch.Tensor]) -> Union[SequenceTensor, Any, torch.Tensor]:
        return pool_velocities(x, self.mode, self.spatial_dims or 2)

    def evaluate_output_shape(self, input_shape: Sequence[int]) -> Tuple[int, ...]:
        """The output shape for a lifted input of ``input_shape`` (``[B, (T,) V, C, H, W]``): V removed.

        Raises:
            ValueError: for a shape of rank other than 5 or 6.
        """
        shape = tuple(int(n) for n in input_shape)
        nd = self.spatial_dims or 2
        axes = "D, H, W" if nd == 3 else "H, W"
        if len(shape) not in (3 + nd, 4 + nd):
            raise ValueError(
                f"VelocityPool pools a lifted [B, V, C, {axes}] or [B, T, V, C, {axes}]; got input shape {shape}"
            )
        return shape[: -2 - nd] + shape[-1 - nd:]

    def extra_repr(self) -> str:
        return f"mode={self.mode!r}" + (f", spatial_dims={self.spatial_dims}" if self.spatial_dims == 3 else "")


# -- group pooling ----------------------------------------------------------------------------------
def _field_layout(field_type: Any, mode: str) -> Tuple[torch.Tensor, torch.Tensor, int, int]:
    """Gather index ``[F*M]``, mask ``[F, M]``, number of fields ``F`` and max field size ``M``."""
    if not isinstance(field_type, enn.FieldType):
        raise TypeError(f"field_type must be an escnn FieldType, got {type(field_type).__name__}")
    sizes = [int(r.size) for r in field_type.representations]
    if mode in ("max", "mean"):
        bad = non_pointwise(field_type)
        if bad:
            raise ValueError(
                f"group pooling mode {mode!r} is invariant only for permutation fields (trivial, regular, "
                f"quotient), but the field type contains {bad}; use mode='norm' for those fields"
            )
    m = max(sizes)
    index: List[List[int]] = []
    mask: List[List[float]] = []
    start = 0
    for s in sizes:
        chans = list(range(start, start + s))
        # pad with the field's own first channel: harmless for max, masked out for mean / norm
        index.append(chans + [start] * (m - s))
        mask.append([1.0] * s + [0.0] * (m - s))
        start += s
    idx = torch.tensor(index, dtype=torch.long).reshape(-1)
    return idx, torch.tensor(mask, dtype=torch.float64), len(sizes), m


def group_pooled_type(field_type: Any) -> Any:
    """The escnn type of the group-pooled output: one trivial field per field of ``field_type``."""
    if not isinstance(field_type, enn.FieldType):
        raise TypeError(f"field_type must be an escnn FieldType, got {type(field_type).__name__}")
    gs = field_type.gspace
    return enn.FieldType(gs, [gs.trivial_repr] * len(field_type.representations))


class GroupPool(torch.nn.Module):
    """Pool every field of a ``FieldType`` to one invariant channel.

    For a field :math:`f_i` with representation :math:`\\rho_i`:

    * ``"max"`` / ``"mean"``: :math:`\\max_c f_{i,c}` or the mean over its channels; invariant
      when :math:`\\rho_i(g)` is a permutation matrix (trivial, regular, quotient fields),
      i.e. the same as escnn's ``GroupPooling`` on regular fields (max over the group axis);
    * ``"norm"``: :math:`\\lVert f_i \\rVert_2`; invariant for any orthogonal :math:`\\rho_i`
      (escnn's ``NormPool``).

    The channel layout is stored as index buffers: the module keeps no escnn object and
    also works on leading axes (``[..., C, H, W]`` -> ``[..., F, H, W]``).

    Args:
        field_type: the escnn ``FieldType`` of the input channels.
        mode: ``"max"``, ``"mean"`` or ``"norm"``.

    Raises:
        ValueError: for ``"max"``/``"mean"`` on non-permutation fields.
    """

    def __init__(self, field_type: Any, mode: str = "max") -> None:
        super().__init__()
        self.mode = _check_mode(mode, GROUP_POOLS, "group pooling mode")
        idx, mask, f, m = _field_layout(field_type, mode)
        self.in_channels = int(field_type.size)
        self.num_fields = f
        self.max_field_size = m
        self.register_buffer("index", idx)
        self.register_buffer("mask", mask)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() < 3 or x.shape[-3] != self.in_channels:
            raise ValueError(
                "GroupPool expects a tensor [..., C={}, H, W], got shape {}".format(self.in_channels, list(x.shape))
            )
        return group_pool_core(x, self.index, self.mask, self.num_fields, self.max_field_size, self.mode)

    def extra_repr(self) -> str:
        return f"mode={self.mode!r}, in_channels={self.in_channels}, num_fields={self.num_fields}"


def group_pool_core(
    x: torch.Tensor, index: torch.Tensor, mask: torch.Tensor, f: int, m: int, mode: str
) -> torch.Tensor:
    """Gather ``[..., F*M, H, W]``, reduce each field's ``M`` slots (TorchScript-compatible core)."""
    lead = x.shape[:-3]
    h, w = x.shape[-2], x.shape[-1]
    shape: List[int] = list(lead) + [f, m, h, w]
    y = x.index_select(-3, index).reshape(shape)
    if mode == "max":
        return y.amax(dim=-3)
    wts = mask.to(dtype=y.dtype).view(f, m, 1, 1)
    if mode == "mean":
        return (y * wts).sum(dim=-3) / wts.sum(dim=-3)
    return torch.linalg.vector_norm(y * wts, dim=-3)


def pool_group(x: torch.Tensor, field_type: Any, mode: str = "max") -> torch.Tensor:
    """Functional :class:`GroupPool` (builds the index on every call; use the module in loops).

    Args:
        x: a tensor ``[..., C, H, W]`` whose channels follow ``field_type``.
        field_type: the escnn ``FieldType``.
        mode: ``"max"``, ``"mean"`` or ``"norm"``.

    Returns:
        ``[..., F, H, W]`` with one invariant channel per field.
    """
    return GroupPool(field_type, mode).to(x.device)(x)


# -- spatial pooling --------------------------------------------------------------------------------
def reduce_space(x: torch.Tensor, mode: str) -> torch.Tensor:
    """Mean or max over the last two axes (TorchScript-compatible core)."""
    if mode == "max":
        return x.amax(dim=(-2, -1))
    return x.mean(dim=(-2, -1))


def pool_space(x: torch.Tensor, mode: str = "mean") -> torch.Tensor:
    """Global pooling over ``H, W``: ``[..., H, W] -> [...]``.

    Invariant under any permutation of the pixels: translations of the torus and rotations
    by multiples of 90 degrees of a square grid (exactly), and approximately so under
    interpolated transports.

    Args:
        x: a tensor with at least 2 dims.
        mode: ``"mean"`` or ``"max"``.
    """
    _check_mode(mode, SPATIAL_POOLS, "spatial pooling mode")
    if not isinstance(x, torch.Tensor) or x.dim() < 3:
        raise ValueError(
            "spatial pooling expects a tensor [..., H, W] with leading axes, got "
            f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}"
        )
    return reduce_space(x, mode)


class SpatialPool(torch.nn.Module):
    """Module form of :func:`pool_space`: ``[..., H, W] -> [...]``.

    Args:
        mode: ``"mean"`` or ``"max"``.
    """

    def __init__(self, mode: str = "mean") -> None:
        super().__init__()
        self.mode = _check_mode(mode, SPATIAL_POOLS, "spatial pooling mode")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() < 3:
            raise ValueError("SpatialPool expects a tensor [..., H, W], got shape {}".format(list(x.shape)))
        return reduce_space(x, self.mode)

    def extra_repr(self) -> str:
        return f"mode={self.mode!r}"
