"""Neural network layers: steerable convolutions, flow cells, sequence layers."""
from flow_escnn.nn.cells import FERNNCell, FlowCellBase, FlowGRUCell, FlowLSTMCell
from flow_escnn.nn.conv import SteerableConv
from flow_escnn.nn.nonlinearity import NONLINEARITIES
from flow_escnn.nn.sequence import FERNN, FlowGRU, FlowLSTM, FlowRNN

__all__ = [
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
]

# pooling, baselines and plain-PyTorch export
from flow_escnn.nn.baselines import GRNN, Conv3DClassifier, ExportedGRNNPlus, GRNNPlus  # noqa: E402
from flow_escnn.nn.export import (  # noqa: E402
    ExportedFlowCell,
    ExportedFlowRNN,
    ExportedTransport,
    export,
    export_flow_rnn,
    find_escnn_objects,
)
from flow_escnn.nn.pooling import (  # noqa: E402
    GroupPool,
    SpatialPool,
    VelocityPool,
    group_pooled_type,
    pool_group,
    pool_space,
    pool_velocities,
)

__all__ += [
    "VelocityPool",
    "GroupPool",
    "SpatialPool",
    "pool_velocities",
    "pool_group",
    "pool_space",
    "group_pooled_type",
    "GRNN",
    "GRNNPlus",
    "ExportedGRNNPlus",
    "Conv3DClassifier",
    "export",
    "export_flow_rnn",
    "find_escnn_objects",
    "ExportedTransport",
    "ExportedFlowCell",
    "ExportedFlowRNN",
]
