"""Neural network layers: steerable convolutions, flow cells, sequence layers, pooling,
baselines and plain-PyTorch export."""
from flow_escnn.nn.baselines import GRNN, Conv3DClassifier, ExportedGRNNPlus, GRNNPlus
from flow_escnn.nn.cells import FERNNCell, FlowCellBase, FlowGRUCell, FlowLSTMCell
from flow_escnn.nn.conv import SteerableConv
from flow_escnn.nn.export import (
    ExportedFlowCell,
    ExportedFlowRNN,
    ExportedTransport,
    export,
    export_flow_rnn,
    find_escnn_objects,
)
from flow_escnn.nn.nonlinearity import NONLINEARITIES
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
    "NONLINEARITIES",
    "VelocityMixing",
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
    "ExportedGRNNPlus",
    "Conv3DClassifier",
    # export
    "export",
    "export_flow_rnn",
    "find_escnn_objects",
    "ExportedTransport",
    "ExportedFlowCell",
    "ExportedFlowRNN",
]
