"""The sequence layer of every cell kind: the one table behind ``cell=`` in the models and the CLI."""
from __future__ import annotations

from typing import Dict, Type

from flow_escnn.nn.baselines import GRNNPlus
from flow_escnn.nn.sequence import FERNN, FlowGRU, FlowLSTM, FlowRNN

__all__ = ["SEQUENCE_LAYERS"]

#: cell kind -> sequence layer class (all run on :mod:`flow_escnn.nn.engine`).
SEQUENCE_LAYERS: Dict[str, Type[FlowRNN]] = {"fernn": FERNN, "gru": FlowGRU, "lstm": FlowLSTM, "grnn_plus": GRNNPlus}
