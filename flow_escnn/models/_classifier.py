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
Exactly (to float rounding), with circular padding on an ``H x W`` torus (for the rotations and
reflections below also with zero padding on a square grid: the ``padding_mode="auto"`` default pads
with zeros for a :math:`V` of rotation flows):

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
the border of :math:`V` lose their partner; the error shrinks as :math:`V` grows), translations
with zero padding, and interpolated rotations.
"""
from __future__ import annotations

import copy
from typing import Any, Optional, Tuple

import torch
import torch.nn.functional as F

from flow_escnn._compat import enn
from flow_escnn._validate import one_of, positive_int
from flow_escnn.flows._flowset import FlowSet
from flow_escnn.models._program import ProgramCache
from flow_escnn.nn._conv import AUTO_PADDING
from flow_escnn.nn._engine import Recurrence, Weights
from flow_escnn.nn._frozen import Frozen, check_exported_input, check_grid
from flow_escnn.nn.cell_kinds import sequence_layer
from flow_escnn.nn._pooling import (
    GROUP_POOLS,
    SPATIAL_POOLS,
    check_velocity_pool,
    GroupPool,
    reduce_space,
    reduce_velocities,
)
from flow_escnn.nn._sequence import FlowRNN
from flow_escnn.nn._spec import records_init

__all__ = ["SequenceClassifier", "ExportedSequenceClassifier", "ClassifierProgram", "READOUTS"]

READOUTS = ("last", "mean")


class ClassifierProgram(torch.nn.Module):
    """The classifier as plain torch: encoder program, the three poolings and the linear head.

    ``features(weights, x)`` / ``forward(weights, x)`` are what both :class:`SequenceClassifier`
    and :class:`ExportedSequenceClassifier` run.
    """

    def __init__(
        self, recurrence: Recurrence, group_pooling: GroupPool, velocity_pool: str, spatial_pool: str, readout: str,
        checkpoint: bool = False,
    ) -> None:
        super().__init__()
        self.recurrence = recurrence
        self.group_pooling = group_pooling
        self.velocity_pool = velocity_pool
        self.spatial_pool = spatial_pool
        self.readout = readout
        self.checkpoint = bool(checkpoint)

    def pool(self, h: torch.Tensor) -> torch.Tensor:
        """``[..., V, C, H, W]`` -> invariant features ``[..., F]``."""
        return reduce_space(self.group_pooling(reduce_velocities(h, self.velocity_pool)), self.spatial_pool)

    def features(self, weights: Weights, x: torch.Tensor) -> torch.Tensor:
        if self.readout == "mean":  # per-step features, averaged: the lifted sequence is never stored
            res = self.recurrence.run(x, weights, keep_outputs=True, output_map=self.pool, checkpoint=self.checkpoint)
            return torch.stack(res.outputs, dim=1).mean(dim=1)
        res = self.recurrence.run(x, weights, keep_outputs=False, checkpoint=self.checkpoint)
        return self.pool(res.states[-1][0])

    def forward(self, weights: Weights, x: torch.Tensor) -> torch.Tensor:
        return F.linear(self.features(weights, x), weights["head_weight"], weights.get("head_bias"))


@records_init
class SequenceClassifier(torch.nn.Module):
    """Flow-equivariant encoder + invariant pooling (V, group, space) + linear head.

    See the module docstring for what is exactly invariant.

    Args:
        in_type: escnn ``FieldType`` of the frames.
        hidden_type: escnn ``FieldType`` of each V slice of the state.
        flows: the flow set :math:`V`.
        num_classes: number of logits.
        cell: ``"fernn"``, ``"gru"``, ``"lstm"`` or ``"grnn_plus"`` (not invariant: the G-RNN+ baseline).
        num_layers: stacked encoder layers.
        kernel_size: kernel size of :math:`U, W`.
        velocity_pool: ``"max"`` or ``"mean"`` over :math:`V`.
        group_pool: ``"max"``, ``"mean"`` or ``"norm"`` over each field's fiber.
        spatial_pool: ``"mean"`` or ``"max"`` over the pixels.
        readout: ``"last"`` (features of the final state) or ``"mean"`` (time-averaged features).
        mode: encoder execution mode.
        checkpoint: gradient checkpointing in the encoder.
        padding_mode: ``"auto"`` (default: ``"zeros"`` for a :math:`V` of rotation flows, else
            ``"circular"``; :func:`~flow_escnn.nn._conv.resolve_padding`), ``"circular"`` (exact on the
            torus) or ``"zeros"``.
        **cell_kwargs: passed to the cells (``bias``, ``nonlinearity``, ``interpolation``,
            ``velocity_kernel_size`` for G-RNN+).

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
        padding_mode: str = AUTO_PADDING,
        **cell_kwargs: Any,
    ) -> None:
        super().__init__()
        positive_int(num_classes, "num_classes")
        one_of(group_pool, GROUP_POOLS, "group_pool")
        one_of(spatial_pool, SPATIAL_POOLS, "spatial_pool")
        one_of(readout, READOUTS, "readout")
        if not isinstance(hidden_type, enn.FieldType):
            raise TypeError(f"hidden_type must be an escnn FieldType, got {type(hidden_type).__name__}")
        check_velocity_pool(velocity_pool, hidden_type, "velocity_pool")
        if getattr(hidden_type.gspace, "dimensionality", 2) == 3:
            raise ValueError(
                "SequenceClassifier pools planes (its group and spatial pooling read [..., C, H, W]); for volumes run a "
                "FERNN / FlowGRU / FlowLSTM on the 3D gspace and pool its output (flow_escnn.nn.pool_velocities, then "
                "mean over the D, H, W axes), or use NextFramePredictor, which takes volumes"
            )
        self.encoder: FlowRNN = sequence_layer(
            cell, in_type, hidden_type, flows, kernel_size, num_layers=num_layers, mode=mode, checkpoint=checkpoint,
            padding_mode=padding_mode, **cell_kwargs,
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
        self.checkpoint = bool(checkpoint)
        self._programs = ProgramCache()

    @property
    def num_classes(self) -> int:
        return self.head.out_features

    def weights(self) -> Weights:
        """Encoder weights (expanded once, differentiable) and the head."""
        out = self.encoder.weights()
        out["head_weight"], out["head_bias"] = self.head.weight, self.head.bias
        return out

    def _program(self, x: torch.Tensor) -> Tuple[ClassifierProgram, Any]:
        """``(program, run)`` for ``x``'s grid, device and length (:class:`~flow_escnn.models._program.ProgramCache`)."""
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"expected a torch.Tensor [B, T, C, H, W], got {type(x).__name__}")
        self.encoder.check_input(x)
        recurrence = self.encoder.recurrence((x.shape[-2], x.shape[-1]), x.device, x.shape[1])
        return self._programs.get(recurrence, lambda: ClassifierProgram(
            recurrence, self.group_pooling, self.velocity_pool, self.spatial_pool, self.readout, self.checkpoint))

    def compile_engine(self, **options: Any) -> "SequenceClassifier":
        """Run the plain-torch program (recurrence, poolings, head) through ``torch.compile`` from now on
        (the filter expansion stays eager); see :meth:`NextFramePredictor.compile_engine
        <flow_escnn.models.NextFramePredictor.compile_engine>`. Returns ``self``."""
        self._programs.use_torch_compile(**options)
        return self

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Invariant features ``[B, F]`` of a sequence ``[B, T, C_in, H, W]``."""
        return self._program(x)[0].features(self.encoder.weights(), x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``[B, num_classes]``."""
        return self._program(x)[1](self.weights(), x)

    def export(
        self, grid_shape: Optional[Tuple[int, int]] = None, max_steps: Optional[int] = None
    ) -> "ExportedSequenceClassifier":
        """A plain-PyTorch twin (the same program with frozen weights) for inputs on a ``grid_shape`` grid."""
        if grid_shape is None:
            raise ValueError("SequenceClassifier.export needs grid_shape=(H, W) (its transports are per-grid tables)")
        recurrence, limit = self.encoder.export_program(check_grid(grid_shape), max_steps)
        program = ClassifierProgram(recurrence, copy.deepcopy(self.group_pooling), self.velocity_pool,
                                    self.spatial_pool, self.readout)
        with torch.no_grad():
            weights = self.weights()
        return ExportedSequenceClassifier(program, weights, self.in_type.size, limit).train(self.training)


class ExportedSequenceClassifier(Frozen):
    """Plain-PyTorch twin of :class:`SequenceClassifier` (same ``forward`` and ``features``)."""

    def __init__(self, program: ClassifierProgram, weights: Weights, in_channels: int, max_steps: Optional[int]) -> None:
        super().__init__(weights)
        self.program = program
        self.in_channels = int(in_channels)
        self.max_steps = max_steps

    def features(self, x: torch.Tensor) -> torch.Tensor:
        check_exported_input(x, self.program.recurrence, self.in_channels, self.max_steps)
        return self.program.features(self.frozen_weights(), x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_exported_input(x, self.program.recurrence, self.in_channels, self.max_steps)
        return self.program(self.frozen_weights(), x)
