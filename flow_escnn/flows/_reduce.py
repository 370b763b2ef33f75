"""Reductions over a slice axis (the flow axis :math:`V`) with the gradient of ``torch.max``.

:func:`max_over` returns ``x.amax(dim)`` and sends the gradient to the *first* maximal
slice, as ``x.max(dim).values`` does (bit for bit: same values, same gradient; ties such as
ReLU zeros get it at one index rather than shared, which a ReLU's zero gradient there makes
irrelevant). Why not ``max(dim)``: its index search over a non-innermost axis is slow on the
CPU (5.2 ms forward for ``[8, 5, 32, 28, 28]`` over axis 1 on our 2-core CPU, one thread).
Here ``amax`` finds the values (0.1 ms) and :math:`|V| - 1` vectorised comparisons the first
index (1.1 ms), kept as uint8 (an eighth of ``max``'s int64 indices) for the backward's
scatter. ``python -m benchmarks.step_kernels``: ``max`` 2.1-2.3x slower, forward + backward.

Channels-last planar fields (:func:`~flow_escnn.flows._layout.is_channels_last`) are reduced through
their contiguous view ``[..., H, W, C]``: torch's reduction over an outer axis of the strided
``[..., C, H, W]`` view took 6.5-7.5x (``amax``) and 4.1-4.3x (``sum``) as long for
``[8, 25, 32, 30, 30]`` over axis 1 (``python -m benchmarks.step_kernels --threads 1``, two runs, our
2-core CPU). :func:`sum_over` is that sum, for the gradients of broadcast terms.
"""
from __future__ import annotations

from typing import Any, Callable, Tuple

import torch

from flow_escnn._validate import one_of
from flow_escnn.flows._layout import is_channels_last

__all__ = ["REDUCTIONS", "first_max", "max_over", "reduce_over", "sum_over"]

#: Reductions of :func:`reduce_over`.
REDUCTIONS = ("max", "mean")


def first_max(x: torch.Tensor, dim: int = 1) -> Tuple[torch.Tensor, torch.Tensor]:
    """``x.amax(dim)`` and the index of the first maximal slice along ``dim`` (``uint8`` for up to 256 slices; module
    docstring): the number of leading slices that are not maximal."""
    values = x.amax(dim)
    v = x.shape[dim]
    not_yet = x.select(dim, 0) != values
    index = not_yet.to(torch.uint8 if v <= 256 else torch.int64)
    for i in range(1, v - 1):
        not_yet &= x.select(dim, i) != values
        index += not_yet
    return values, index


class _MaxOver(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, dim: int) -> torch.Tensor:  # type: ignore[override]
        values, index = first_max(x, dim)
        ctx.save_for_backward(index)
        ctx.v, ctx.dim = x.shape[dim], dim
        return values

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> Any:  # type: ignore[override]
        (index,) = ctx.saved_tensors
        d = ctx.dim
        out = grad.new_zeros(*grad.shape[:d], ctx.v, *grad.shape[d:])
        return out.scatter_(d, index.long().unsqueeze(d), grad.unsqueeze(d)), None


def _through_layout(x: torch.Tensor, dims: Any, reduce: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """``reduce(x)`` over the axes ``dims`` (non-negative), of channels-last planar fields through their contiguous
    view ``[..., H, W, C]`` when every axis lies before the fields' own (module docstring)."""
    if all(d < x.dim() - 3 for d in dims) and is_channels_last(x):
        return reduce(x.movedim(-3, -1)).movedim(-1, -3)
    return reduce(x)


def max_over(x: torch.Tensor, dim: int) -> torch.Tensor:
    """``x.max(dim).values`` with its gradient, faster on the CPU (module docstring)."""
    dim = dim % x.dim()
    if x.shape[dim] == 1:
        return x.squeeze(dim)
    return _through_layout(x, [dim], lambda t: _MaxOver.apply(t, dim))


def reduce_over(x: torch.Tensor, dim: int, mode: str) -> torch.Tensor:
    """``"max"`` (:func:`max_over`) or ``"mean"`` over axis ``dim``."""
    if one_of(mode, REDUCTIONS, "reduce") == "max":
        return max_over(x, dim)
    dim = dim % x.dim()
    return _through_layout(x, [dim], lambda t: t.mean(dim))


def sum_over(x: torch.Tensor, dims: Any) -> torch.Tensor:
    """``x.sum(dims, keepdim=True)``, through the contiguous view of channels-last planar fields (module docstring)."""
    dims = [d % x.dim() for d in dims]
    return _through_layout(x, dims, lambda t: t.sum(dims, keepdim=True))
