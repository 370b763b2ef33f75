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
