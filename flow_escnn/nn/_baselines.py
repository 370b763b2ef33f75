"""Baselines of the paper: the G-RNN and a 3D-CNN classifier (the G-RNN+ is a cell kind of its own).

* :class:`GRNN` -- the group-equivariant RNN
  :math:`h_t = \\sigma(W * h_{t-1} + U * f_t)`. It *is* a :class:`~flow_escnn.nn.FERNN` over
  the trivial flow set ``FlowSet.identity(gspace)`` (:math:`V = \\{0\\}`, :math:`\\psi_1(0) = e`),
  so it is equivariant to static :math:`G` and to nothing that moves; its output keeps the
  lifted layout ``[B, T, 1, C, H, W]``.
* :class:`~flow_escnn.nn.GRNNPlus` -- the paper's G-RNN+, the cell kind ``"grnn_plus"``
  (:mod:`flow_escnn.nn.cell_kinds.grnn_plus`).
* :class:`Conv3DClassifier` -- a plain ``torch.nn.Conv3d`` stack over ``[B, T, C, H, W]``,
  global average pooling and a linear head (the action-recognition baseline).

The G-RNN is a sequence layer of the recurrence engine (:mod:`flow_escnn.nn._engine`), so the
predictor, the classifier and ``export()`` serve it like any other layer. No Python loop over
:math:`V` or the batch (only over time).
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F

from flow_escnn._compat import enn
from flow_escnn._validate import odd_positive_int, one_of, positive_int
from flow_escnn.flows._flowset import FlowSet
from flow_escnn.nn.cell_kinds.fernn import FERNN
from flow_escnn.nn._conv import PADDING_MODES
from flow_escnn.nn._spec import records_init

__all__ = ["GRNN", "Conv3DClassifier"]


@records_init
class GRNN(FERNN):
    """G-RNN: a :class:`~flow_escnn.nn.FERNN` over the identity flow set (exactly).

    .. math::
        h_t = \\sigma\\big(W * h_{t-1} + U * f_t\\big), \\qquad h_{-1} = 0,

    with :math:`U, W` G-steerable convolutions (circular padding by default: ``padding_mode="auto"``
    keeps the torus for :math:`V = \\{0\\}`). Equivariant to static :math:`G` and to static translations
    of the torus; *not* to flows: a moving input leaves its memory behind (paper, Fig. 2).

    Args:
        in_type: escnn ``FieldType`` of the input frames.
        hidden_type: escnn ``FieldType`` of the state (pointwise-nonlinearity fields).
        kernel_size: odd kernel size of :math:`U, W`.
        num_layers: stacked cells.
        mode: execution mode of :class:`~flow_escnn.nn.FlowRNN` (all modes coincide here).
        checkpoint: recompute steps in the backward pass.
        **cell_kwargs: ``bias``, ``padding_mode``, ``nonlinearity``, ...

    Shapes:
        ``[B, T, C_in, H, W]`` -> :class:`~flow_escnn.lifted.LiftedTensor` ``[B, T, 1, C, H, W]``.
    """

    def __init__(
        self,
        in_type: Any,
        hidden_type: Any,
        kernel_size: int = 3,
        num_layers: int = 1,
        mode: str = "auto",
        checkpoint: bool = False,
        **cell_kwargs: Any,
    ) -> None:
        if not isinstance(in_type, enn.FieldType):
            raise TypeError(f"in_type must be an escnn FieldType, got {type(in_type).__name__}")
        if "flows" in cell_kwargs:
            raise ValueError("GRNN fixes flows = FlowSet.identity(gspace); use FERNN for other flow sets")
        super().__init__(
            in_type,
            hidden_type,
            FlowSet.identity(in_type.gspace),
            kernel_size,
            num_layers=num_layers,
            mode=mode,
            checkpoint=checkpoint,
            **cell_kwargs,
        )


@records_init
class Conv3DClassifier(torch.nn.Module):
    """3D-CNN baseline: ``Conv3d`` + ReLU layers, global average pooling, a linear head.

    .. math::
        z = \\mathrm{mean}_{t,x}\\, \\phi_L \\circ \\dots \\circ \\phi_1(f), \\quad
        \\phi_l = \\mathrm{ReLU}(\\mathrm{Conv3d}_l), \\qquad \\text{logits} = A z + b.

    Space is padded with ``padding_mode`` (``"zeros"`` as usual for this baseline, or
    ``"circular"``, which makes it translation-equivariant on the torus before the global
    pooling, hence invariant to static torus translations); time is always zero-padded.
    Not equivariant to rotations or flows.

    Args:
        in_channels: channels ``C`` of the input frames.
        num_classes: number of classes.
        channels: output channels of each ``Conv3d`` layer.
        kernel_size: odd cubic kernel size.
        padding_mode: ``"zeros"`` or ``"circular"`` (spatial).

    Shapes:
        ``[B, T, C, H, W]`` -> logits ``[B, num_classes]``.
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        channels: Sequence[int] = (16, 32),
        kernel_size: int = 3,
        padding_mode: str = "zeros",
    ) -> None:
        super().__init__()
        positive_int(in_channels, "in_channels")
        positive_int(num_classes, "num_classes")
        chans = [positive_int(ch, "channels[i]") for ch in channels]
        if not chans:
            raise ValueError(f"channels must be a non-empty sequence of positive integers, got {channels!r}")
        odd_positive_int(kernel_size, "kernel_size")
        one_of(padding_mode, PADDING_MODES, "padding_mode")
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.padding = kernel_size // 2
        self.padding_mode = padding_mode
        self.convs = torch.nn.ModuleList()
        prev = in_channels
        for ch in chans:
            self.convs.append(torch.nn.Conv3d(prev, ch, kernel_size, padding=0))
            prev = ch
        self.head = torch.nn.Linear(prev, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 5 or x.shape[2] != self.in_channels:
            raise ValueError(
                "Conv3DClassifier expects a sequence [B, T, C={}, H, W], got shape {}".format(
                    self.in_channels, list(x.shape)
                )
            )
        y = x.transpose(1, 2)  # [B, C, T, H, W]
        p = self.padding
        for conv in self.convs:
            if p > 0:
                if self.padding_mode == "circular":
                    y = F.pad(y, [p, p, p, p, 0, 0], mode="circular")
                    y = F.pad(y, [0, 0, 0, 0, p, p])
                else:
                    y = F.pad(y, [p, p, p, p, p, p])
            y = torch.relu(conv(y))
        return self.head(y.mean(dim=(2, 3, 4)))
