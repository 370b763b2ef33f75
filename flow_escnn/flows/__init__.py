"""The group side of flow_escnn: grid elements, flow generators, flow sets, transport.

Planar gspaces use :class:`GridElement`, :class:`FlowGenerator`, :class:`FlowSet` and
:class:`TransportPlan`; the 3D gspaces whose group maps the voxel grid onto itself (``octaOnR3`` and
its subgroups) their volume counterparts :class:`VolumeElement`, :class:`VolumeGenerator`,
:class:`VolumeFlowSet` (what ``FlowSet`` builds on a 3D gspace) and :class:`VolumeTransportPlan`.
:class:`AxisRotationPlan` / :func:`rotate_volume` rotate voxel fields about a coordinate axis by any
angle (interpolated in the plane perpendicular to it; ``rot3dOnR3``, ``rot2dOnR3``).

Nothing in this subpackage builds a neural network layer.
"""
from flow_escnn.flows._axis_rotation import AxisRotationPlan, rotate_volume
from flow_escnn.flows._element import GridElement
from flow_escnn.flows._flowset import FlowSet
from flow_escnn.flows._generator import FlowGenerator
from flow_escnn.flows._planar import rotation_element, rotation_order, spatial_matrix
from flow_escnn.flows._functional import flow_sequence, transport
from flow_escnn.flows._transport import TransportPlan
from flow_escnn.flows._volume import VolumeElement, VolumeGenerator
from flow_escnn.flows._volume_flowset import VolumeFlowSet
from flow_escnn.flows._volume_transport import VolumeTransportPlan, volume_flow_sequence, volume_transport

__all__ = [
    "GridElement",
    "FlowGenerator",
    "FlowSet",
    "TransportPlan",
    "transport",
    "flow_sequence",
    "rotation_element",
    "rotation_order",
    "spatial_matrix",
    "VolumeElement",
    "VolumeGenerator",
    "VolumeFlowSet",
    "VolumeTransportPlan",
    "volume_transport",
    "volume_flow_sequence",
    "AxisRotationPlan",
    "rotate_volume",
]
