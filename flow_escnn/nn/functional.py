"""Plain-torch helpers of the recurrence engine: padded convolution, dtype check, checkpoint segments."""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F

from flow_escnn.flows.gather import CircularPad, circular_pad

__all__ = ["conv_same", "check_dtype", "segment_length"]


def conv_same(
    x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], padding_mode: str,
    pad: Optional[CircularPad] = None,
) -> torch.Tensor:
    """'Same'-size stride-1 ``conv2d`` of ``[N, C, H, W]`` with circular (``pad``, a
    :class:`~flow_escnn.flows.gather.CircularPad` for the grid, or built here) or zero padding."""
    p = weight.shape[-1] // 2
    if padding_mode == "circular":
        return F.conv2d(pad(x) if pad is not None else circular_pad(x, p), weight, bias)
    return F.conv2d(x, weight, bias, padding=p)


def check_dtype(x: torch.Tensor, weight: torch.Tensor) -> None:
    """Refuse an input whose dtype differs from the weights' outside ``torch.autocast`` (with the fix)."""
    if x.dtype == weight.dtype or torch.is_autocast_enabled(x.device.type):
        return
    raise TypeError(
        f"the input has dtype {x.dtype} but the model's weights are {weight.dtype}: cast the input "
        f"(x.to({weight.dtype})), convert the model (model.to({x.dtype})), or run under "
        f"torch.autocast('{x.device.type}', dtype={x.dtype}) for mixed precision"
    )


def segment_length(t_len: int) -> int:
    """Checkpoint segment length: about :math:`\\sqrt{T}` steps, so stored states and recomputation balance."""
    return max(1, math.ceil(math.sqrt(t_len)))
