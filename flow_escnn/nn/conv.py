"""Steerable convolution with periodic padding and an expand-once API.

:class:`SteerableConv` *composes* escnn's ``R2Conv`` (it does not subclass it) and adds
what a recurrent layer needs:

* ``expand()`` returns the dense filter and bias once, and ``apply()`` convolves with
  them, so a recurrence expands its steerable filter once per sequence, not once per
  time step;
* periodic (``"circular"``) padding by default, the setting under which translations
  of the torus commute exactly with the convolution;
* a ``state_dict`` that does not depend on train/eval mode (escnn's ``R2Conv`` adds
  ``filter``/``expanded_bias`` buffers in eval mode; here the inner ``R2Conv`` is kept
  in its training state and the filter is expanded explicitly instead);
* ``export()`` to a plain ``torch.nn.Conv2d`` that keeps ``padding_mode`` (escnn's own
  ``R2Conv.export()`` silently turns circular padding into zero padding).
"""
from __future__ import annotations

from typing import Any, Optional, Tuple

import torch
import torch.nn.functional as F

from flow_escnn._compat import enn

__all__ = ["SteerableConv", "PADDING_MODES"]

PADDING_MODES = ("circular", "zeros")


class SteerableConv(enn.EquivariantModule):
    """A G-steerable 2D convolution ``in_type -> out_type`` (stride 1, 'same' output size).

    .. math::
        [\\kappa \\star f](x) = \\sum_{y} \\kappa(y)\\, f(x + y), \\qquad
        \\kappa(g y) = \\rho_{\\text{out}}(g)\\,\\kappa(y)\\,\\rho_{\\text{in}}(g)^{-1},

    so :math:`\\kappa \\star (g\\cdot f) = g\\cdot(\\kappa \\star f)` for rotations/reflections
    that map the kernel grid onto itself, and for every translation of a periodic grid.

    Args:
        in_type: input ``FieldType``.
        out_type: output ``FieldType`` (same gspace).
        kernel_size: odd kernel size.
        bias: whether to learn a bias (escnn puts it on trivial fields only).
        padding_mode: ``"circular"`` (exact on the torus) or ``"zeros"``.
        **r2conv_kwargs: passed to ``escnn.nn.R2Conv`` (e.g. ``frequencies_cutoff``, ``initialize``).
    """

    def __init__(
        self,
        in_type: Any,
        out_type: Any,
        kernel_size: int = 3,
        bias: bool = True,
        padding_mode: str = "circular",
        **r2conv_kwargs: Any,
    ) -> None:
        super().__init__()
        if not isinstance(kernel_size, int) or kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be a positive odd integer, got {kernel_size!r}")
        if padding_mode not in PADDING_MODES:
            raise ValueError(f"padding_mode must be one of {PADDING_MODES}, got {padding_mode!r}")
        if in_type.gspace != out_type.gspace:
            raise ValueError(f"in_type is on {in_type.gspace} but out_type on {out_type.gspace}")
        for key in ("padding", "stride", "padding_mode", "dilation", "groups"):
            if key in r2conv_kwargs:
                raise ValueError(f"SteerableConv fixes {key!r} (stride 1, same size); do not pass it")
        self.in_type = in_type
        self.out_type = out_type
        self.kernel_size = kernel_size
        self.padding_mode = padding_mode
        self.conv = enn.R2Conv(in_type, out_type, kernel_size, padding=0, bias=bias, **r2conv_kwargs)

    # -- train/eval: keep the inner R2Conv's state_dict mode-independent --------------------------
    def train(self, mode: bool = True) -> "SteerableConv":
        self.training = mode
        self.conv.train(True)  # escnn would register 'filter' buffers in eval mode; we expand explicitly
        return self

    # -- expand once, apply many times ---------------------------------------------------------------
    def expand(self) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """The dense filter ``[C_out, C_in, k, k]`` and bias ``[C_out]`` (or None), differentiable."""
        return self.conv.expand_parameters()

    def apply_expanded(self, x: torch.Tensor, filt: torch.Tensor, bias: Optional[torch.Tensor]) -> torch.Tensor:
        """Convolve a plain tensor ``[N, C_in, H, W]`` with an already expanded filter."""
        return periodic_conv2d(x, filt, bias, self.padding_mode)

    def forward(self, input: Any) -> Any:  # noqa: A002 - escnn's signature
        """Per-frame forward on a ``GeometricTensor [N, C_in, H, W]``."""
        if not isinstance(input, enn.GeometricTensor) or input.type != self.in_type:
            got = input.type if isinstance(input, enn.GeometricTensor) else type(input).__name__
            raise ValueError(f"SteerableConv expects a GeometricTensor of type {self.in_type}, got {got}")
        filt, bias = self.expand()
        return enn.GeometricTensor(self.apply_expanded(input.tensor, filt, bias), self.out_type)

    def evaluate_output_shape(self, input_shape: Tuple[int, ...]) -> Tuple[int, ...]:
        if len(input_shape) != 4 or input_shape[1] != self.in_type.size:
            raise ValueError(f"expected an input shape [N, {self.in_type.size}, H, W], got {input_shape}")
        return (input_shape[0], self.out_type.size, input_shape[2], input_shape[3])

    def export(self) -> torch.nn.Conv2d:
        """A plain ``torch.nn.Conv2d`` with the expanded weights and the same padding mode."""
        with torch.no_grad():
            filt, bias = self.expand()
        conv = torch.nn.Conv2d(
            self.in_type.size,
            self.out_type.size,
            self.kernel_size,
            padding=self.kernel_size // 2,
            padding_mode=self.padding_mode,
            bias=bias is not None,
        ).to(device=filt.device, dtype=filt.dtype)
        with torch.no_grad():
            conv.weight.copy_(filt)
            if bias is not None:
                conv.bias.copy_(bias)
        return conv


def periodic_conv2d(x: torch.Tensor, filt: torch.Tensor, bias: Optional[torch.Tensor], padding_mode: str) -> torch.Tensor:
    """'Same'-size stride-1 convolution with circular or zero padding (plain torch)."""
    p = filt.shape[-1] // 2
    if padding_mode == "circular" and p > 0:
        return F.conv2d(F.pad(x, (p, p, p, p), mode="circular"), filt, bias)
    return F.conv2d(x, filt, bias, padding=p)
