"""The sequence layer of every cell kind: the one table behind ``cell=`` in the models and the CLI."""
from __future__ import annotations

from typing import Any, Dict, Type

from flow_escnn._validate import one_of

from flow_escnn.nn.baselines import GRNNPlus
from flow_escnn.flows.flowset import FlowSet
from flow_escnn.nn.sequence import FERNN, FlowGRU, FlowLSTM, FlowRNN

__all__ = ["SEQUENCE_LAYERS", "sequence_layer"]

#: cell kind -> sequence layer class (all run on :mod:`flow_escnn.nn.engine`).
SEQUENCE_LAYERS: Dict[str, Type[FlowRNN]] = {"fernn": FERNN, "gru": FlowGRU, "lstm": FlowLSTM, "grnn_plus": GRNNPlus}


def sequence_layer(cell: str, in_type: Any, hidden_type: Any, flows: FlowSet, kernel_size: int = 3,
                   **kwargs: Any) -> FlowRNN:
    """The sequence layer of cell kind ``cell`` (a key of :data:`SEQUENCE_LAYERS`) with these arguments.

    Raises:
        ValueError: naming the cell kinds, for an unknown ``cell``.
    """
    one_of(cell, sorted(SEQUENCE_LAYERS), "cell")
    return SEQUENCE_LAYERS[cell](in_type, hidden_type, flows, kernel_size, **kwargs)
