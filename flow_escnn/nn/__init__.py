"""Neural network layers: steerable convolutions, flow cells, sequence layers, pooling,
baselines, the recurrence engine and plain-PyTorch export."""
from flow_escnn.nn._baselines import GRNN, Conv3DClassifier
from flow_escnn.nn.cell_kinds import CELL_KINDS, CELLS, CellKind, cell_kind, sequence_layer
from flow_escnn.nn.cell_kinds.fernn import FERNN, FERNNCell
from flow_escnn.nn.cell_kinds.grnn_plus import GRNNPlus, GRNNPlusCell
from flow_escnn.nn.cell_kinds.gru import FlowGRU, FlowGRUCell
from flow_escnn.nn.cell_kinds.lstm import FlowLSTM, FlowLSTMCell
from flow_escnn.nn._cells import FlowCellBase
from flow_escnn.nn._conv import SteerableConv
from flow_escnn.nn._engine import LayerSpec, Recurrence
from flow_escnn.nn._export import export, export_flow_rnn, find_escnn_objects
from flow_escnn.nn._frozen import ExportedFlowRNN, Frozen
from flow_escnn.nn._nonlinearity import NONLINEARITIES
from flow_escnn.nn._per_frame import ExportedPerFrame, PerFrame
from flow_escnn.nn._pooling import (
    GroupPool,
    SpatialPool,
    VelocityPool,
    group_pooled_type,
    pool_group,
    pool_space,
    pool_velocities,
)
from flow_escnn.nn._sequence import FlowRNN
from flow_escnn.nn._sequential import FlowSequential
from flow_escnn.nn._vmixing import VelocityMixing

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
    "CELL_KINDS",
    "CELLS",
    "CellKind",
    "cell_kind",
    "sequence_layer",
    "NONLINEARITIES",
    "VelocityMixing",
    # composing with escnn
    "PerFrame",
    "ExportedPerFrame",
    "FlowSequential",
    # the engine
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
