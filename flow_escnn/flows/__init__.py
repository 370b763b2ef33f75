"""The group side of flow_escnn: grid elements, flow generators, flow sets, transport.

Nothing in this subpackage builds a neural network layer.
"""
from flow_escnn.flows.element import GridElement
from flow_escnn.flows.flowset import FlowSet
from flow_escnn.flows.generator import FlowGenerator
from flow_escnn.flows.planar import rotation_element, rotation_order, spatial_matrix
from flow_escnn.flows.functional import flow_sequence, transport
from flow_escnn.flows.transport import TransportPlan

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
