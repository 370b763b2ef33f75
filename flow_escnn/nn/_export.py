"""Export to plain PyTorch: frozen engine programs, with no escnn object inside.

:func:`export` turns a trained model into a ``torch.nn.Module`` that computes the same
function from dense tensors only. For the recurrent layers and models this is *the same
engine program* the model runs (:mod:`flow_escnn.nn._engine`, :mod:`flow_escnn.nn._frozen`):
the transport tables of one grid plus the expanded weights copied once, so a twin cannot
drift from its model. Plain convolutions become ``torch.nn.Conv2d`` with the padding mode
kept (escnn's own ``R2Conv.export()`` silently replaces circular padding by zero padding,
which breaks exact translation equivariance on the torus).

The twins are plain ``torch.nn.Module`` objects: they can be moved, fine-tuned, pickled
(``torch.save(twin)``; loading needs flow_escnn importable, since the classes live here),
compiled with ``torch.compile``, and their ``state_dict`` saved. TorchScript
(``torch.jit.script``) is deprecated by PyTorch and not supported.
"""
from __future__ import annotations

import copy
import types
from typing import Any, List, Optional, Tuple

import torch

from flow_escnn._compat import enn
from flow_escnn.flows._element import GridElement
from flow_escnn.flows._flowset import FlowSet
from flow_escnn.flows._generator import FlowGenerator
from flow_escnn.lifted import LiftedFieldType, LiftedTensor
from flow_escnn.nn._conv import export_conv, export_escnn
from flow_escnn.nn._frozen import ExportedFlowRNN, check_grid
from flow_escnn.nn._sequence import FlowRNN

__all__ = ["export", "export_flow_rnn", "export_conv", "export_escnn", "find_escnn_objects"]

GridShape = Tuple[int, int]


# -- sequence layers --------------------------------------------------------------------------------
def export_flow_rnn(model: FlowRNN, grid_shape: GridShape, max_steps: Optional[int] = None) -> ExportedFlowRNN:
    """The plain-torch twin of a FERNN / FlowGRU / FlowLSTM / G-RNN / G-RNN+ stack on an ``H x W`` grid.

    Same as ``model.export(grid_shape, max_steps)``: the twin runs the model's own engine
    program in the mode the model resolves on that grid (co-moving for e.g. 45-degree
    rotations on C8, with their interpolation tables).

    Args:
        model: the sequence layer.
        grid_shape: ``(H, W)`` of the inputs the twin will see (``(D, H, W)`` on a 3D gspace).
        max_steps: longest sequence the twin accepts in co-moving mode when the flows have no
            period on the grid; ignored otherwise.

    Raises:
        ValueError: on a bad grid, or a co-moving model that needs ``max_steps``.
    """
    if not isinstance(model, FlowRNN):
        raise TypeError(f"export_flow_rnn expects a FlowRNN (FERNN, FlowGRU, FlowLSTM), got {type(model).__name__}")
    return model.export(check_grid(grid_shape, model.cells[0].spatial_dims), max_steps)


# -- generic entry point ------------------------------------------------------------------------------
_FORBIDDEN_TYPES = (FlowSet, LiftedFieldType, LiftedTensor, GridElement, FlowGenerator)


def _is_escnn_object(obj: Any) -> bool:
    mod = getattr(type(obj), "__module__", "") or ""
    return mod == "escnn" or mod.startswith("escnn.") or isinstance(obj, _FORBIDDEN_TYPES)


def find_escnn_objects(module: torch.nn.Module, max_depth: int = 8) -> List[str]:
    """Paths of every escnn object (or flow_escnn type/plan object) reachable from ``module``.

    Walks every submodule and, recursively, its attributes (including lists, tuples, dicts
    and plain objects' ``__dict__``). An empty list means the module is plain PyTorch.
    """
    found: List[str] = []
    seen = set()

    def walk(obj: Any, path: str, depth: int) -> None:
        if id(obj) in seen or depth > max_depth:
            return
        seen.add(id(obj))
        if _is_escnn_object(obj):
            found.append(f"{path}: {type(obj).__module__}.{type(obj).__name__}")
            return
        if isinstance(obj, (torch.Tensor, str, bytes, int, float, bool, type(None), torch.device, torch.dtype)):
            return
        if isinstance(obj, (types.FunctionType, types.BuiltinFunctionType, types.MethodType, type)):
            return
        if isinstance(obj, dict):
            for k, val in obj.items():
                walk(val, f"{path}[{k!r}]", depth + 1)
            return
        if isinstance(obj, (list, tuple, set, frozenset)):
            for i, val in enumerate(obj):
                walk(val, f"{path}[{i}]", depth + 1)
            return
        attrs = getattr(obj, "__dict__", None)
        if isinstance(attrs, dict):
            for k, val in attrs.items():
                walk(val, f"{path}.{k}" if path else k, depth + 1)

    walk(module, "", 0)
    return found


def export(
    module: torch.nn.Module, grid_shape: Optional[GridShape] = None, max_steps: Optional[int] = None
) -> torch.nn.Module:
    """A plain-PyTorch module computing the same function as ``module`` (no escnn inside).

    Dispatch:

    * :class:`~flow_escnn.nn.FlowRNN` (FERNN, FlowGRU, FlowLSTM, G-RNN, G-RNN+) -> :func:`export_flow_rnn`
      (needs ``grid_shape``; ``max_steps`` in co-moving mode without a flow period);
    * escnn modules -> :func:`~flow_escnn.nn._conv.export_escnn` (``R2Conv`` / ``SteerableConv`` to a
      ``Conv2d`` with the same padding mode, ``SequentialModule`` child by child, others by
      their ``export()``);
    * modules with their own ``export(grid_shape=..., max_steps=...)`` (the models of
      :mod:`flow_escnn.models`, :class:`~flow_escnn.nn.FlowSequential`, :class:`~flow_escnn.nn.PerFrame`)
      -> that method;
    * plain torch modules -> a deep copy.

    The result is checked with :func:`find_escnn_objects`.

    Args:
        module: the model.
        grid_shape: ``(H, W)`` of future inputs (needed by anything with flow transports).
        max_steps: longest sequence for co-moving twins.

    Raises:
        ValueError: when ``grid_shape`` is needed but missing.
        TypeError: for a module that cannot be exported.
    """
    out = _export(module, grid_shape, max_steps)
    left = find_escnn_objects(out)
    if left:
        raise TypeError(f"the export of {type(module).__name__} still holds escnn objects: {left[:5]}")
    return out


def _export(module: Any, grid_shape: Optional[GridShape], max_steps: Optional[int]) -> torch.nn.Module:
    if isinstance(module, FlowRNN):
        if grid_shape is None:
            raise ValueError(
                f"exporting a {type(module).__name__} needs grid_shape=(H, W): its flow transports are "
                "precomputed gather tables for one grid"
            )
        return export_flow_rnn(module, grid_shape, max_steps)
    if isinstance(module, enn.EquivariantModule):
        return export_escnn(module)
    own = getattr(module, "export", None)
    if callable(own):
        return own(grid_shape=grid_shape, max_steps=max_steps)
    if isinstance(module, torch.nn.Module):
        if find_escnn_objects(module):
            raise TypeError(
                f"cannot export a {type(module).__name__} that contains escnn objects but has no export() method; "
                "export its escnn submodules with flow_escnn.nn._export.export and rebuild it from the results"
            )
        return copy.deepcopy(module)
    raise TypeError(f"export expects a torch.nn.Module, got {type(module).__name__}")
