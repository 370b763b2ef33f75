"""The :class:`CellKind` record: one per recurrent cell kind, the source of every list of cells.

A cell kind is one file in :mod:`flow_escnn.nn.cell_kinds` holding its update equation, its
cell (a :class:`~flow_escnn.nn._cells.FlowCellBase` subclass that names the update, the gate
count and the state size) and its sequence layer (a :class:`~flow_escnn.nn._sequence.FlowRNN`
subclass), and a module-level ``KIND = CellKind(layer, summary, ...)``. Everything else is
derived from the records: the engine reads the update from the layer's
:class:`~flow_escnn.nn._engine.LayerSpec`, the models' ``cell=`` / ``model=`` choices, the
CLI's ``--cell`` / ``--model`` choices and the configs' validation from
:data:`~flow_escnn.nn.cell_kinds.CELL_KINDS`.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Optional, Type

__all__ = ["CellKind"]


@dataclasses.dataclass(frozen=True)
class CellKind:
    """What the package knows about one cell kind.

    Args:
        layer: the sequence layer (a :class:`~flow_escnn.nn._sequence.FlowRNN` subclass); its
            ``cell_class`` holds the update, the gate count and the state size.
        summary: one line for the docs and ``--help``.
        model: the name of the model this kind *is* (``"grnn_plus"``: a model of its own, over
            translation flows), or None for a ``cell=`` choice of the FERNN / G-RNN models.
    """

    layer: Type[Any]
    summary: str
    model: Optional[str] = None

    @property
    def cell(self) -> Type[Any]:
        """The cell class (one layer of :attr:`layer`)."""
        return self.layer.cell_class

    @property
    def name(self) -> str:
        """The name ``cell=`` takes (the cell's ``kind``)."""
        return str(self.cell.kind)

    @property
    def gates(self) -> int:
        """Gate pre-activations per hidden channel (1 plain, 3 GRU, 4 LSTM)."""
        return int(self.cell.gates)

    @property
    def state_size(self) -> int:
        """Tensors in the state (2 for an LSTM's ``(h, c)``)."""
        return int(self.cell.state_size)

    @property
    def takes_nonlinearity(self) -> bool:
        """Whether ``nonlinearity=`` is the cell's own :math:`\\sigma` (else it has fixed gates)."""
        return bool(self.cell.takes_nonlinearity)

    @property
    def field_nonlinearities(self) -> bool:
        """Whether the cell runs on any fields (irreps) with ``norm_squash`` / ``gated``; the others
        act channel by channel and need permutation fields (trivial, regular, quotient)."""
        return self.takes_nonlinearity and not self.cell.learned_transport

    def __repr__(self) -> str:
        return f"CellKind({self.name!r})"
