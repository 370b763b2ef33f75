"""The recurrent cell kinds, one file each, and their registry :data:`CELL_KINDS`.

Adding a cell kind is adding one file here (see ``docs/architecture.rst``): its update, its
cell, its sequence layer and ``KIND = CellKind(...)``
(:class:`~flow_escnn.nn.cell_kinds.registry.CellKind`). The modules of this package are found
and imported here, in name order, so the registry, the models' ``cell=`` choices, the CLI and
the engine parity tests know the new kind without another edit.
"""
from __future__ import annotations

from typing import Any, Dict, Tuple

from flow_escnn._registry import discover
from flow_escnn._validate import one_of
from flow_escnn.nn.cell_kinds.registry import CellKind

__all__ = ["CellKind", "CELL_KINDS", "CELLS", "cell_kind", "sequence_layer"]


#: Every cell kind, by name (``"fernn"`` first, then by name).
CELL_KINDS: Dict[str, CellKind] = dict(
    sorted(discover(__name__, __path__, CellKind, skip=("registry",)).items(), key=lambda kv: (kv[0] != "fernn", kv[0]))
)

#: The ``cell=`` choices of the FERNN / G-RNN models (the kinds that are not models of their own).
CELLS: Tuple[str, ...] = tuple(name for name, kind in CELL_KINDS.items() if kind.model is None)


def cell_kind(name: str) -> CellKind:
    """The :class:`CellKind` called ``name`` (``ValueError`` naming the kinds otherwise).

    Example:
        >>> from flow_escnn.nn import CELLS, cell_kind
        >>> CELLS
        ('fernn', 'gru', 'lstm')
        >>> cell_kind("lstm").state_size, cell_kind("gru").gates, cell_kind("grnn_plus").model
        (2, 3, 'grnn_plus')
    """
    return CELL_KINDS[one_of(name, tuple(CELL_KINDS), "cell")]


def sequence_layer(cell: str, in_type: Any, hidden_type: Any, flows: Any, kernel_size: int = 3, **kwargs: Any) -> Any:
    """The sequence layer of cell kind ``cell`` with these arguments
    (``CELL_KINDS[cell].layer(in_type, hidden_type, flows, kernel_size, **kwargs)``).

    Raises:
        ValueError: naming the cell kinds, for an unknown ``cell``.
    """
    return cell_kind(cell).layer(in_type, hidden_type, flows, kernel_size, **kwargs)
