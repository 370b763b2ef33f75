"""The channels-last layout of planar fields: which tensors have it, and which of them the pixel-row kernels take.

A planar map ``[..., C, H, W]`` stored channels-last (``[..., H, W, C]`` in memory, torch's ``channels_last``
per map) has each pixel's channels as one contiguous row. The engine keeps its CPU states so
(:meth:`~flow_escnn.nn._engine.Recurrence.channels_last`); the flow kernels read such maps in place: exact transports
and circular padding as gathers of pixel rows (:func:`~flow_escnn.flows._gather.gather_pixel_rows`), interpolated
ones through the resampling's pixel-major layout (:mod:`flow_escnn.flows._resample`), reductions over a slice axis
through the contiguous view (:mod:`flow_escnn.flows._reduce`).
"""
from __future__ import annotations

import torch

__all__ = ["is_channels_last", "gathers_rows"]


def is_channels_last(x: torch.Tensor, nd: int = 2) -> bool:
    """Whether the fields ``x [..., C, H, W]`` (``nd = 2``) have more than one channel, stored innermost (the
    ``channels_last`` layout of each map), so that a pixel's channels are one contiguous row."""
    return nd == 2 and x.dim() >= 3 and x.shape[-3] > 1 and x.stride(-3) == 1 and x.stride(-1) == x.shape[-3]


def gathers_rows(x: torch.Tensor, nd: int = 2) -> bool:
    """Whether exact transports and paddings of ``x`` run as pixel-row gathers
    (:func:`~flow_escnn.flows._gather.gather_pixel_rows`): channels-last fields on the CPU, where the backward's index
    additions are sequential, so deterministic (the engine keeps states channels-last on the CPU only)."""
    return x.device.type == "cpu" and is_channels_last(x, nd)
