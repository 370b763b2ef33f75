"""The LSTM-style flow cell kind: both :math:`h` and the cell state :math:`c` are transported.

:math:`i, f, g, o` come from :math:`a + b` as in an LSTM:
:math:`c_t(\\nu) = \\mathrm{sig}(f)\\odot \\psi_1(\\nu)\\cdot c_{t-1}(\\nu) + \\mathrm{sig}(i) \\odot \\tanh(g)`,
:math:`h_t(\\nu) = \\mathrm{sig}(o) \\odot \\tanh(c_t(\\nu))`.
"""
from __future__ import annotations

import torch

from flow_escnn.nn.cell_kinds.registry import CellKind
from flow_escnn.nn._cells import FlowCellBase, State
from flow_escnn.nn._sequence import FlowRNN

__all__ = ["lstm_update", "FlowLSTMCell", "FlowLSTM", "KIND"]


def lstm_update(b: torch.Tensor, a: torch.Tensor, moved: State, nonlinearity: str) -> State:
    """LSTM update from the transported :math:`(\\tilde h, \\tilde c)`; returns :math:`(h_t, c_t)`."""
    c = moved[1]
    i, f, g, o = (b + a).chunk(4, dim=2)
    c_new = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    return (torch.sigmoid(o) * torch.tanh(c_new), c_new)


class FlowLSTMCell(FlowCellBase):
    """LSTM-style flow cell; its state is the pair :math:`(h, c)`, both transported."""

    kind = "lstm"
    gates = 4
    state_size = 2
    update = staticmethod(lstm_update)


class FlowLSTM(FlowRNN):
    """A stack of :class:`FlowLSTMCell`; final states are ``(h, c)`` pairs."""

    cell_class = FlowLSTMCell


#: The registry record (:mod:`flow_escnn.nn.cell_kinds`).
KIND = CellKind(FlowLSTM, "LSTM-style gated cell; its state is the pair (h, c), both transported")
