"""Neural network layers: steerable convolutions, flow cells, sequence layers, pooling,
baselines, the recurrence engine and plain-PyTorch export."""
from flow_escnn.nn.baselines import GRNN, Conv3DClassifier, GRNNPlus, GRNNPlusCell
from flow_escnn.nn.cells import FERNNCell, FlowCellBase, FlowGRUCell, FlowLSTMCell
from flow_escnn.nn.conv import SteerableConv
from flow_escnn.nn.engine import LayerSpec, Recurrence
from flow_escnn.nn.export import export, export_flow_rnn, find_escnn_objects
from flow_escnn.nn.frozen import ExportedFlowRNN, Frozen
from flow_escnn.nn.layers import SEQUENCE_LAYERS
from flow_escnn.nn.nonlinearity import NONLINEARITIES
from flow_escnn.nn.per_frame import ExportedPerFrame, PerFrame
from flow_escnn.nn.pooling import (
    GroupPool,
    SpatialPool,
    VelocityPool,
    group_pooled_type,
    pool_group,
    pool_space,
    pool_velocities,
)
from flow_escnn.nn.sequence import FERNN, FlowGRU, FlowLSTM, FlowRNN
from flow_escnn.nn.sequential import FlowSequential
from flow_escnn.nn.updates import CELL_KINDS
from flow_escnn.nn.vmixing import VelocityMixing

__all__ = [
    # layers
    "SteerableConv",
    "FlowCellBase",
    "FERNNCell",
    "FlowGRUCell",
    "FlowLSTMCell",
    "FlowRNN",
    "FERNN",
    "FlowGRU",
    "FlowLSTM",
    "SEQUENCE_LAYERS",
    "NONLINEARITIES",
    "VelocityMixing",
    # composing with escnn
    "PerFrame",
    "ExportedPerFrame",
    "FlowSequential",
    # the engine
    "CELL_KINDS",
    "LayerSpec",
    "Recurrence",
    # pooling
    "VelocityPool",
    "GroupPool",
    "SpatialPool",
    "pool_velocities",
    "pool_group",
    "pool_space",
    "group_pooled_type",
    # baselines
    "GRNN",
    "GRNNPlus",
    "GRNNPlusCell",
    "Conv3DClassifier",
    # export
    "export",
    "export_flow_rnn",
    "find_escnn_objects",
    "Frozen",
    "ExportedFlowRNN",
]
