"""The GRU-style flow cell kind: reset, update and candidate gates on the transported state.

With :math:`a_\\bullet = U_\\bullet * f_t` and :math:`b_\\bullet = W_\\bullet * \\tilde h_{t-1}(\\nu)`,
:math:`\\tilde h_{t-1}(\\nu) = \\psi_1(\\nu)\\cdot h_{t-1}(\\nu)`,

.. math::
    r = \\mathrm{sig}(a_r + b_r),\\; z = \\mathrm{sig}(a_z + b_z),\\;
    n = \\tanh(a_n + r \\odot b_n),\\;
    h_t(\\nu) = (1 - z)\\odot n + z \\odot \\tilde h_{t-1}(\\nu).
"""
from __future__ import annotations

import torch

from flow_escnn.nn.cell_kinds.registry import CellKind
from flow_escnn.nn._cells import FlowCellBase, State
from flow_escnn.nn._sequence import FlowRNN

__all__ = ["gru_update", "FlowGRUCell", "FlowGRU", "KIND"]


def gru_update(b: torch.Tensor, a: torch.Tensor, moved: State, nonlinearity: str) -> State:
    """GRU update from the transported :math:`\\tilde h` (``moved[0]``)."""
    h = moved[0]
    ar, az, an = a.chunk(3, dim=2)
    br, bz, bn = b.chunk(3, dim=2)
    r = torch.sigmoid(ar + br)
    z = torch.sigmoid(az + bz)
    n = torch.tanh(an + r * bn)
    return ((1 - z) * n + z * h,)


class FlowGRUCell(FlowCellBase):
    """GRU-style flow cell (reset, update and candidate gates; see the module docstring)."""

    kind = "gru"
    gates = 3
    update = staticmethod(gru_update)


class FlowGRU(FlowRNN):
    """A stack of :class:`FlowGRUCell` (same interface as :class:`FERNN`)."""

    cell_class = FlowGRUCell


#: The registry record (:mod:`flow_escnn.nn.cell_kinds`).
KIND = CellKind(FlowGRU, "GRU-style gated cell (sigmoid / tanh gates, permutation fields)")
