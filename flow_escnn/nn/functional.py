"""Plain-torch helpers of the recurrence engine: padded convolution, dtype check, checkpoint segments,
input-term batches."""
from __future__ import annotations

import math
from typing import Callable, Optional, Tuple

import torch
import torch.nn.functional as F

from flow_escnn.flows.gather import CircularPad, circular_pad

__all__ = ["conv_same", "check_dtype", "segment_length", "INPUT_BATCH_BYTES", "frames_per_batch", "InputBatches"]

#: Upper bound on the output bytes of one batch of input terms (:class:`InputBatches`).
INPUT_BATCH_BYTES = 16 * 2**20


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


def frames_per_batch(chunk: Optional[int], frame_bytes: int) -> int:
    """``chunk`` checked, or (``None``) the most frames whose input terms fit in :data:`INPUT_BATCH_BYTES` (>= 1)."""
    if chunk is None:
        return max(1, INPUT_BATCH_BYTES // max(1, int(frame_bytes)))
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
        raise ValueError(f"chunk must be a positive number of frames or None, got {chunk!r}")
    return chunk


class InputBatches:
    """The input terms of ``given`` frames, computed ``chunk`` frames at a time when first asked for.

    ``compute(i, k)`` returns the terms of frames ``i .. i+k-1`` stacked on axis 1. Only the
    batch of the frame asked for last is kept, so ask in increasing order (asking again for a
    frame of that batch returns the same tensor; an earlier frame recomputes its batch). Why batches rather than all frames at once: in the
    co-moving mode the input terms of all frames are a ``[B, T, V, G, H, W]`` tensor (and so is
    its gradient), which grows with the sequence; batched, a step holds at most
    :data:`INPUT_BATCH_BYTES` of them (the C8 rotation step of ``benchmarks/bench_fernn.py``:
    peak 305 instead of 328 MiB). Its speed did not change measurably on our CPU
    (``benchmarks/README.md``, "Input batches").
    """

    def __init__(self, compute: Callable[[int, int], torch.Tensor], given: int, chunk: int) -> None:
        self.compute, self.given, self.chunk = compute, int(given), int(chunk)
        self.start: int = 0
        self.batch: Tuple[torch.Tensor, ...] = ()

    def __call__(self, i: int) -> torch.Tensor:
        if not self.start <= i < self.start + len(self.batch):
            self.start, self.batch = i, self.compute(i, min(self.chunk, self.given - i)).unbind(1)
        return self.batch[i - self.start]
