"""The group side of flow_escnn: grid elements, flow generators, flow sets, transport.

Nothing in this subpackage builds a neural network layer.
"""
from flow_escnn.flows._element import GridElement
from flow_escnn.flows._flowset import FlowSet
from flow_escnn.flows._generator import FlowGenerator
from flow_escnn.flows._planar import rotation_element, rotation_order, spatial_matrix
from flow_escnn.flows._functional import flow_sequence, transport
from flow_escnn.flows._transport import TransportPlan

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
]
