"""Frozen programs: an engine program plus copies of the expanded weights, in plain PyTorch.

An ``export()`` of flow_escnn is never a second implementation: it is the same compiled
:class:`~flow_escnn.nn._engine.Recurrence` (transport tables for one grid) that the model runs,
with the weights the model would expand (steerable bases times coefficients, symmetrised)
copied once into a ``ParameterDict``. The twin therefore computes exactly what the model
computes, holds no escnn object, can be fine-tuned as ordinary parameters, moved with
``.to()`` and compiled with ``torch.compile``. Its tables belong to one ``(H, W)`` grid (``(D, H, W)`` for volumes).
"""
from __future__ import annotations

from typing import Any, List, Optional, Tuple

import torch

from flow_escnn._validate import grid_shape as validate_grid_shape
from flow_escnn.flows._volume import volume_shape
from flow_escnn.nn._engine import Recurrence, Weights

__all__ = ["Frozen", "ExportedFlowRNN", "check_grid", "check_exported_input"]

GridShape = Tuple[int, ...]


def check_grid(grid_shape: Any, dims: int = 2) -> GridShape:
    """``(H, W)`` (``dims=2``) or ``(D, H, W)`` (``dims=3``) as ints, or ``ValueError`` naming what is expected
    (:func:`flow_escnn._validate.grid_shape`, :func:`flow_escnn.flows._volume.volume_shape`)."""
    return volume_shape(grid_shape) if dims == 3 else validate_grid_shape(grid_shape)


def check_exported_input(
    x: Any, recurrence: Recurrence, in_channels: int, max_steps: Optional[int], extra_steps: int = 0
) -> None:
    """Raise ``ValueError`` unless ``x`` is ``[B, T, (V,) C_in, H, W]`` on the export grid with
    ``T + extra_steps <= max_steps`` (when the co-moving tables are not periodic)."""
    grid = tuple(recurrence.grid_shape)
    nd = len(grid)
    axes = "D, H, W" if nd == 3 else "H, W"
    v = recurrence.num_flows
    if not isinstance(x, torch.Tensor) or x.dim() not in (3 + nd, 4 + nd):
        got = list(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"expected an input sequence [B, T, C={in_channels}, {axes}], got {got}")
    if x.shape[-nd - 1] != in_channels:
        raise ValueError(f"expected C={in_channels} input channels (dim {-nd - 1}), got shape {list(x.shape)}")
    if x.dim() == 4 + nd and x.shape[2] != v:
        raise ValueError(f"lifted input has V={x.shape[2]} slices, the model |V|={v}")
    if tuple(x.shape[-nd:]) != grid:
        raise ValueError(
            f"this exported model was built for a {'x'.join(map(str, grid))} grid, got "
            f"{'x'.join(map(str, x.shape[-nd:]))}; export again with grid_shape=({axes})"
        )
    if x.shape[1] == 0:
        raise ValueError("the input sequence has T=0 frames; give at least one frame")
    if max_steps is not None and x.shape[1] + extra_steps > max_steps:
        raise ValueError(
            f"this co-moving export holds tables for {max_steps} frames, got {x.shape[1] + extra_steps}; "
            "export again with a larger max_steps"
        )


class Frozen(torch.nn.Module):
    """Base of the exported twins: frozen weights under the engine's names.

    Args:
        weights: the expanded weights (tensors are detached and copied; ``None`` entries dropped).
    """

    def __init__(self, weights: Weights) -> None:
        super().__init__()
        self.weights = torch.nn.ParameterDict(
            {k: torch.nn.Parameter(v.detach().clone()) for k, v in weights.items() if v is not None}
        )

    def frozen_weights(self) -> Weights:
        """The weights as the dict the engine reads."""
        return dict(self.weights.items())


class ExportedFlowRNN(Frozen):
    """Plain-torch twin of a :class:`~flow_escnn.nn.FlowRNN` (built by its ``export()``).

    Args:
        recurrence: the compiled program (tables for one grid).
        weights: the expanded weights.
        in_channels: input channels per frame (per V slice for a lifted input).
        max_steps: the longest sequence the co-moving tables cover, or ``None`` (any length: hidden
            mode, or tables for a whole flow period).

    Shapes:
        ``forward(x)``: ``x`` is ``[B, T, C_in, H, W]`` (or a lifted ``[B, T, V, C_in, H, W]``);
        returns the last layer's hidden sequence ``[B, T, V, C, H, W]``.
    """

    def __init__(self, recurrence: Recurrence, weights: Weights, in_channels: int, max_steps: Optional[int] = None) -> None:
        super().__init__(weights)
        self.recurrence = recurrence
        self.in_channels = int(in_channels)
        self.max_steps = max_steps

    @property
    def mode(self) -> str:
        return self.recurrence.mode

    @property
    def num_layers(self) -> int:
        return len(self.recurrence.layers)

    def extra_repr(self) -> str:
        return "" if self.max_steps is None else f"max_steps={self.max_steps}"

    def check_input(self, x: torch.Tensor) -> None:
        """Raise ``ValueError`` unless ``x`` is ``[B, T, (V,) C_in, H, W]`` on the export grid."""
        check_exported_input(x, self.recurrence, self.in_channels, self.max_steps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        seq, _ = self.forward_with_state(x)
        return seq

    def forward_with_state(
        self, x: torch.Tensor, h0: Optional[List[List[torch.Tensor]]] = None, return_sequence: bool = True
    ) -> Tuple[Optional[torch.Tensor], List[List[torch.Tensor]]]:
        """Like :meth:`flow_escnn.nn.FlowRNN.forward_with_state` with plain tensors.

        Args:
            x: the input sequence.
            h0: ``None`` or one initial state per layer, each a list of ``[B, V, C, H, W]`` tensors
                (``[h]``, or ``[h, c]`` for LSTM cells), in the stationary frame.
            return_sequence: also return the last layer's sequence.
        """
        self.check_input(x)
        states = None
        if h0 is not None:
            if len(h0) != self.num_layers:
                raise ValueError(f"h0 has {len(h0)} entries but the model has {self.num_layers} layers")
            states = []
            for l, (st, spec) in enumerate(zip(h0, self.recurrence.layers)):
                if len(st) != spec.state_size:
                    raise ValueError(f"layer {l} expects a state of {spec.state_size} tensor(s), got {len(st)}")
                states.append(tuple(st))
        seq, finals = self.recurrence.run_sequence(x, self.frozen_weights(), states, return_sequence)
        return seq, [list(st) for st in finals]
