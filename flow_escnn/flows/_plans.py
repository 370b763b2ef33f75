"""Transport plans by the dimension of the gspace: one entry point for planes and volumes.

The layers, the lifted tensors and the checks transport fields without asking which plane or
volume they live on: :func:`transport_plan` builds a :class:`~flow_escnn.flows._transport.TransportPlan`
for a planar gspace (exact gathers, or interpolated resampling) and a
:class:`~flow_escnn.flows._volume_transport.VolumeTransportPlan` for a 3D one (exact gathers; every
volume element maps the voxel grid onto itself). Both execute through the same
:class:`~flow_escnn.flows._transport.GatherTransport`. :func:`fiber_element` is the element
:math:`(0, g)` of either kind.
"""
from __future__ import annotations

from typing import Any, Sequence, Tuple

from flow_escnn.flows._element import GridElement
from flow_escnn.flows._tables import DEFAULT_INTERPOLATION
from flow_escnn.flows._transport import GatherTransport, TransportPlan
from flow_escnn.flows._volume import VolumeElement, is_volume_gspace
from flow_escnn.flows._volume_transport import VolumeTransportPlan

__all__ = ["transport_plan", "fiber_element", "spatial_dims"]


def spatial_dims(gspace: Any) -> int:
    """The number of spatial axes of fields on ``gspace``: 2 (``[..., H, W]``) or 3 (``[..., D, H, W]``).

    Example:
        >>> from escnn import gspaces
        >>> spatial_dims(gspaces.rot2dOnR2(4)), spatial_dims(gspaces.rot2dOnR3(4))
        (2, 3)
    """
    return 3 if is_volume_gspace(gspace) else 2


def transport_plan(
    field_type: Any, elements: Sequence[Any], grid_shape: Tuple[int, ...], interpolation: str = DEFAULT_INTERPOLATION,
    pad: int = 0,
) -> GatherTransport:
    """The transport plan of ``elements`` for fields of ``field_type`` on ``grid_shape``.

    Args:
        field_type: the escnn ``FieldType`` of every slice.
        elements: :class:`~flow_escnn.flows._element.GridElement` s (planar gspace) or
            :class:`~flow_escnn.flows._volume.VolumeElement` s (3D gspace), one per slice.
        grid_shape: ``(H, W)`` or ``(D, H, W)``.
        interpolation: resampling of planar elements that do not map the grid onto itself (volume
            elements always do).
        pad: circular padding of the output.

    Example:
        >>> import torch
        >>> from escnn import gspaces, nn as enn
        >>> from flow_escnn.flows import FlowSet
        >>> gs = gspaces.rot2dOnR3(4)
        >>> plan = transport_plan(enn.FieldType(gs, [gs.trivial_repr]), FlowSet.translations(gs, 1).elements(1), (4, 4, 4))
        >>> type(plan).__name__, plan(torch.zeros(2, 27, 1, 4, 4, 4)).shape
        ('VolumeTransportPlan', torch.Size([2, 27, 1, 4, 4, 4]))
    """
    if is_volume_gspace(field_type.gspace):
        return VolumeTransportPlan(field_type, elements, grid_shape, pad=pad)
    return TransportPlan(field_type, elements, grid_shape, interpolation, pad=pad)


def fiber_element(gspace: Any, g: Any) -> Any:
    """The element :math:`(0, g)` of the gspace's group (a ``GridElement`` or a ``VolumeElement``)."""
    return VolumeElement(gspace, g) if is_volume_gspace(gspace) else GridElement(gspace, g)
