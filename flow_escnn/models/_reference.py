"""Parameter-free reference predictors that give a next-frame MSE table its scale."""
from __future__ import annotations

import torch

from flow_escnn._validate import one_of

__all__ = ["ReferencePredictor"]


class ReferencePredictor(torch.nn.Module):
    """A parameter-free reference: ``"zeros"`` predicts empty frames, ``"last"`` repeats the last input frame.

    Gives the MSE scale of a table (a model worse than ``"zeros"`` has learned nothing useful).

    Shapes:
        ``forward(x, P)``: ``[B, T, C, H, W]`` -> ``[B, P, C, H, W]``, like
        :class:`~flow_escnn.models.NextFramePredictor`.
    """

    KINDS = ("zeros", "last")

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = one_of(kind, self.KINDS, "kind")

    def forward(self, x: torch.Tensor, num_predictions: int = 1) -> torch.Tensor:
        last = x[:, -1:]
        out = torch.zeros_like(last) if self.kind == "zeros" else last
        return out.expand(-1, num_predictions, *x.shape[2:])
