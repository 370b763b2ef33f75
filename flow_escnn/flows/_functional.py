"""One-call transports: a batch of fields by one element, or a sequence by a flow (each builds a plan)."""
from __future__ import annotations

from typing import Any

import torch

from flow_escnn.flows._element import GridElement
from flow_escnn.flows._flowset import FlowSet, VelocityLike
from flow_escnn.flows._tables import DEFAULT_INTERPOLATION
from flow_escnn.flows._plans import spatial_dims, transport_plan

_AXES = {2: "H, W", 3: "D, H, W"}

__all__ = ["transport", "flow_sequence"]


def transport(
    x: torch.Tensor, field_type: Any, element: GridElement, interpolation: str = DEFAULT_INTERPOLATION
) -> torch.Tensor:
    """Transport a batch of fields ``[B, C, H, W]`` (``[B, C, D, H, W]`` on a 3D gspace, by a
    :class:`~flow_escnn.flows._volume.VolumeElement`) by one element (convenience; builds a plan).

    For repeated use build a :class:`TransportPlan` once instead.

    Example:
        An integer translation ``(vx, vy)`` is ``torch.roll`` by ``(-vy, vx)`` (x right, y up):

        >>> import torch, flow_escnn
        >>> from escnn import gspaces, nn as enn
        >>> gs = gspaces.rot2dOnR2(4)
        >>> x = torch.arange(16.).reshape(1, 1, 4, 4)
        >>> y = flow_escnn.transport(x, enn.FieldType(gs, [gs.trivial_repr]), flow_escnn.GridElement(gs, translation=(1, 2)))
        >>> torch.equal(y, torch.roll(x, shifts=(-2, 1), dims=(-2, -1)))
        True
    """
    nd = spatial_dims(field_type.gspace)
    if x.dim() != 2 + nd:
        raise ValueError(f"transport expects a tensor [B, C, {_AXES[nd]}], got shape {tuple(x.shape)}")
    plan = transport_plan(field_type, [element], tuple(x.shape[-nd:]), interpolation).to(x.device)
    return plan(x.unsqueeze(1)).squeeze(1)


def flow_sequence(
    x: torch.Tensor,
    field_type: Any,
    generator: VelocityLike,
    start: int = 0,
    interpolation: str = DEFAULT_INTERPOLATION,
) -> torch.Tensor:
    """Apply a flow frame by frame: :math:`x'_t = \\psi_{\\text{start}+t}(\\mu)\\cdot x_t`.

    Args:
        x: a sequence of fields ``[B, T, C, H, W]`` (``[B, T, C, D, H, W]`` on a 3D gspace) of type ``field_type``.
        field_type: the escnn ``FieldType`` of each frame.
        generator: the flow :math:`\\mu`: a :class:`~flow_escnn.flows._generator.FlowGenerator` of
            ``field_type``'s gspace, or a velocity ``(vx, vy)`` / ``(vx, vy, k)`` (:meth:`FlowSet.as_generator`).
        start: time index of frame 0 (frames are 0-indexed, so frame 0 is untouched by default).
        interpolation: resampling for non-grid-preserving flows.

    Returns:
        The transformed sequence, same shape.
    """
    nd = spatial_dims(field_type.gspace)
    if x.dim() != 3 + nd:
        raise ValueError(f"flow_sequence expects a sequence [B, T, C, {_AXES[nd]}], got shape {tuple(x.shape)}")
    if x.shape[1] == 0:
        raise ValueError("flow_sequence got a sequence with T=0 frames")
    mu = FlowSet.as_generator(field_type.gspace, generator)
    elements = [mu.psi(start + t) for t in range(x.shape[1])]
    plan = transport_plan(field_type, elements, tuple(x.shape[-nd:]), interpolation).to(x.device)
    return plan(x)
