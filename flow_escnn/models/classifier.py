"""Sequence classification with a flow-equivariant encoder and invariant pooling.

.. math::
    z = P_{x}\\, P_G\\, P_V\\, h_{T-1} \\in \\mathbb{R}^{F}, \\qquad
    \\text{logits} = A z + b,

with :math:`h` the FERNN (or FlowGRU / FlowLSTM) hidden state, :math:`P_V` a max/mean over the
flow axis, :math:`P_G` a max/mean/norm over each field's fiber (one channel per field) and
:math:`P_x` a mean/max over the pixels; with ``readout="mean"`` the features of every frame
are averaged over time instead of taking the last frame.

What is exactly invariant
-------------------------
Exactly (to float rounding), with circular padding on an ``H x W`` torus:

* **static** :math:`g \\in G` that maps the grid onto itself (rotations by multiples of
  90 degrees on a square grid, reflections), when :math:`V` is closed under :math:`G`
  (``flows.is_closed_under()``): the state transforms by :math:`g` with a V permutation, which
  :math:`P_V`, :math:`P_G` and :math:`P_x` all remove;
* **flows** :math:`\\mu` with exact transport (integer translations; rotation steps that are
  multiples of 90 degrees) commuting with every generator of :math:`V`, when the V shift
  :math:`\\nu\\mapsto\\nu\\ominus\\mu` is a permutation of :math:`V`
  (``flows.shift_indices(mu, (H, W))`` has no ``-1``): :math:`\\mu = 0`; translations when
  :math:`V` covers :math:`\\mathbb{Z}_W\\times\\mathbb{Z}_H` (e.g. radius 2 on a 5x5 grid);
  rotation flows when :math:`V` holds all :math:`N` rotation steps.

Approximately: translation flows with a :math:`V` that does not cover the torus (slices near
the border of :math:`V` lose their partner; the error shrinks as :math:`V` grows), zero
padding, and interpolated rotations.
"""
from __future__ import annotations

from typing import Any, Optional, Tuple

import torch

from flow_escnn._compat import enn
from flow_escnn.flows.flowset import FlowSet
from flow_escnn.nn.export import ExportedFlowRNN, export_flow_rnn
from flow_escnn.nn.pooling import (
    GROUP_POOLS,
    SPATIAL_POOLS,
    VELOCITY_POOLS,
    GroupPool,
    group_pool_core,
    reduce_space,
    reduce_velocities,
)
from flow_escnn.nn.sequence import SEQUENCE_LAYERS, FlowRNN

__all__ = ["SequenceClassifier", "ExportedSequenceClassifier", "READOUTS"]

READOUTS = ("last", "mean")


class SequenceClassifier(torch.nn.Module):
    """Flow-equivariant encoder + invariant pooling (V, group, space) + linear head.

    See the module docstring for what is exactly invariant.

    Args:
        in_type: escnn ``FieldType`` of the frames.
        hidden_type: escnn ``FieldType`` of each V slice of the state.
        flows: the flow set :math:`V`.
        num_classes: number of logits.
        cell: ``"fernn"``, ``"gru"`` or ``"lstm"``.
        num_layers: stacked encoder layers.
        kernel_size: kernel size of :math:`U, W`.
        velocity_pool: ``"max"`` or ``"mean"`` over :math:`V`.
        group_pool: ``"max"``, ``"mean"`` or ``"norm"`` over each field's fiber.
        spatial_pool: ``"mean"`` or ``"max"`` over the pixels.
        readout: ``"last"`` (features of the final state) or ``"mean"`` (time-averaged features).
        mode: encoder execution mode.
        checkpoint: gradient checkpointing in the encoder.
        padding_mode: ``"circular"`` (exact on the torus) or ``"zeros"``.
        **cell_kwargs: passed to the cells (``bias``, ``nonlinearity``, ``interpolation``).

    Shapes:
        ``forward(x)``: ``[B, T, C_in, H, W]`` -> logits ``[B, num_classes]``;
        ``features(x)``: ``[B, F]`` with ``F`` the number of fields of ``hidden_type``.
    """

    def __init__(
        self,
        in_type: Any,
        hidden_type: Any,
        flows: FlowSet,
        num_classes: int,
        cell: str = "fernn",
        num_layers: int = 1,
        kernel_size: int = 3,
        velocity_pool: str = "max",
        group_pool: str = "max",
        spatial_pool: str = "mean",
        readout: str = "last",
        mode: str = "auto",
        checkpoint: bool = False,
        padding_mode: str = "circular",
        **cell_kwargs: Any,
    ) -> None:
        super().__init__()
        if cell not in SEQUENCE_LAYERS:
            raise ValueError(f"cell must be one of {sorted(SEQUENCE_LAYERS)}, got {cell!r}")
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
        if velocity_pool not in VELOCITY_POOLS:
            raise ValueError(f"velocity_pool must be one of {VELOCITY_POOLS}, got {velocity_pool!r}")
        if group_pool not in GROUP_POOLS:
            raise ValueError(f"group_pool must be one of {GROUP_POOLS}, got {group_pool!r}")
        if spatial_pool not in SPATIAL_POOLS:
            raise ValueError(f"spatial_pool must be one of {SPATIAL_POOLS}, got {spatial_pool!r}")
        if readout not in READOUTS:
            raise ValueError(f"readout must be one of {READOUTS}, got {readout!r}")
        if not isinstance(hidden_type, enn.FieldType):
            raise TypeError(f"hidden_type must be an escnn FieldType, got {type(hidden_type).__name__}")
        self.encoder: FlowRNN = SEQUENCE_LAYERS[cell](
            in_type,
            hidden_type,
            flows,
            kernel_size,
            num_layers=num_layers,
            mode=mode,
            checkpoint=checkpoint,
            padding_mode=padding_mode,
            **cell_kwargs,
        )
        self.in_type = in_type
        self.hidden_type = hidden_type
        self.flows = flows
        self.velocity_pool = velocity_pool
        self.spatial_pool = spatial_pool
        self.readout = readout
        self.group_pooling = GroupPool(hidden_type, group_pool)
        self.num_features = self.group_pooling.num_fields
        self.head = torch.nn.Linear(self.num_features, num_classes)

    @property
    def num_classes(self) -> int:
        return self.head.out_features

    def _pool(self, h: torch.Tensor) -> torch.Tensor:
        """``[..., V, C, H, W]`` -> invariant features ``[..., F]``."""
        return reduce_space(self.group_pooling(reduce_velocities(h, self.velocity_pool)), self.spatial_pool)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Invariant features ``[B, F]`` of a sequence ``[B, T, C_in, H, W]``."""
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"expected a torch.Tensor [B, T, C, H, W], got {type(x).__name__}")
        if self.readout == "mean":
            seq = self.encoder(x).tensor  # [B, T, V, C, H, W]
            return self._pool(seq).mean(dim=1)
        _, finals = self.encoder.forward_with_state(x, return_sequence=False)
        last = finals[-1]
        h = last[0] if isinstance(last, tuple) else last
        return self._pool(h.tensor)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``[B, num_classes]``."""
        return self.head(self.features(x))

    def export(
        self, grid_shape: Optional[Tuple[int, int]] = None, max_steps: Optional[int] = None
    ) -> "ExportedSequenceClassifier":
        """A plain-PyTorch twin (see :mod:`flow_escnn.nn.export`) for inputs on a ``grid_shape`` grid."""
        if grid_shape is None:
            raise ValueError("SequenceClassifier.export needs grid_shape=(H, W) (its transports are per-grid tables)")
        twin = ExportedSequenceClassifier(
            export_flow_rnn(self.encoder, grid_shape, max_steps),
            self.group_pooling,
            self.head,
            self.velocity_pool,
            self.spatial_pool,
            self.readout,
        )
        twin.train(self.training)
        return twin


class ExportedSequenceClassifier(torch.nn.Module):
    """Plain-PyTorch twin of :class:`SequenceClassifier` (TorchScript-able)."""

    def __init__(
        self,
        encoder: ExportedFlowRNN,
        group_pooling: GroupPool,
        head: torch.nn.Linear,
        velocity_pool: str,
        spatial_pool: str,
        readout: str,
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = torch.nn.Linear(head.in_features, head.out_features, bias=head.bias is not None).to(
            device=head.weight.device, dtype=head.weight.dtype
        )
        with torch.no_grad():
            self.head.weight.copy_(head.weight)
            if head.bias is not None:
                self.head.bias.copy_(head.bias)
        self.register_buffer("group_index", group_pooling.index.detach().clone())
        self.register_buffer("group_mask", group_pooling.mask.detach().clone())
        self.num_fields = group_pooling.num_fields
        self.max_field_size = group_pooling.max_field_size
        self.group_pool = group_pooling.mode
        self.velocity_pool = velocity_pool
        self.spatial_pool = spatial_pool
        self.readout = readout

    def _pool(self, h: torch.Tensor) -> torch.Tensor:
        z = reduce_velocities(h, self.velocity_pool)
        z = group_pool_core(z, self.group_index, self.group_mask, self.num_fields, self.max_field_size, self.group_pool)
        return reduce_space(z, self.spatial_pool)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        if self.readout == "mean":
            seq, _ = self.encoder.forward_with_state(x, None, True)
            assert seq is not None
            return self._pool(seq).mean(dim=1)
        _, finals = self.encoder.forward_with_state(x, None, False)
        return self._pool(finals[-1][0])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))
