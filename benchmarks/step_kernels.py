"""Benchmark: kernels of the recurrence step against the plain torch call they replace.

Run from the repository root::

    python -m benchmarks.step_kernels --threads 1

* ``thin_conv``: :func:`flow_escnn.nn._kernels.conv2d`'s thin-input path (GEMMs on the tap-major shifted
  copies, taken on the CPU for inputs with at most :data:`~flow_escnn.nn._kernels.IM2COL_MAX_CHANNELS`
  channels) against ``torch.nn.functional.conv2d``, forward + weight gradient, on the layer-0 input
  convolutions of ``benchmarks/bench_fernn.py``'s rotation row (``[40, 1, 30, 30]`` and ``[160, 1, 30, 30]``
  into 32 channels, 3x3), and on 2 and 4 input channels (the crossover: the path is forced there, the
  threshold raised while it is timed).
* ``thin_volume_conv``: :func:`flow_escnn.nn._kernels.conv3d` (channels-last for float volumes with
  2 to 8 input channels on the CPU) against ``torch.nn.functional.conv3d``, forward + backward
  (input and weight gradients), 3x3x3 on ``18^3`` inputs: 2 -> 2 and 4 -> 4 channels over 108
  volumes (4 is the volume FERNN's recurrent convolution: batch 4 x 27 velocities), 8 -> 8 over 54
  (at the default ``batch`` 8; the volume count scales with it).
* ``max_over_v``: :func:`flow_escnn.nn._pooling.reduce_velocities` (``"max"``) against
  ``x.max(dim=-4).values``, forward + backward, on one readout of that row (``[8, 5, 32, 28, 28]``).
* ``pooled_readout``: that row's readout, a bilinear C8 transport of 5 slices followed by the max
  over them, as two calls (``reduce_velocities(plan(h, start=s), "max")``) against one
  (``plan(h, start=s, reduce="max")``, pooled inside the resampling's layout), forward + backward.
* ``channels_last``, the pieces of the engine's channels-last states
  (:meth:`~flow_escnn.nn._engine.Recurrence.channels_last`): the rotation row's recurrent
  convolution (``[40, 32, 28, 28]``, 3x3, forward + backward, the output gradient in the input's
  layout) on plain against channels-last maps (``conv2d_vs_channels_last``); the reduction over V of
  the translation row's padded state (``[8, 25, 32, 30, 30]``, channels-last) on its strided view
  against the contiguous one (:func:`~flow_escnn.flows._reduce.reduce_over`,
  :func:`~flow_escnn.flows._reduce.sum_over`; forward), ``amax`` and ``sum``; and the resampling's
  pixel-major layout ``[m * N, batch * C]`` of the rotation row's state reached from the plain layout
  (the full transposition) against the batch move from channels-last (``transpose_vs_batch_move``).
* ``thin_output``: :func:`flow_escnn.nn._kernels.conv2d` of filters with few output channels (channels
  contracted first, then the shifted taps added, at most
  :data:`~flow_escnn.nn._kernels.THIN_OUTPUT_MAX_CHANNELS`) against ``torch.nn.functional.conv2d``, forward +
  backward (input and weight gradients), on a decoder's last layer: the pooled ``[8, 32, 28, 28]`` readout
  (channels-last, as the engine hands it over) into 1 and 2 channels, 3x3, and into 4 (the crossover).

Both sides compute the same values (checked here); times are medians of alternating rounds. The
last line is machine readable (``<plain>_vs_<library>``, above 1 where the library is faster)::

    RATIOS conv2d_vs_im2col_c1_n40=<x> ... conv3d_vs_channels_last_c4_n108=<x> ... transpose_vs_batch_move=<x> \\
        conv2d_vs_thin_output_c32_o1=<x> conv2d_vs_thin_output_c32_o2=<x> conv2d_vs_thin_output_c32_o4=<x>
"""
from __future__ import annotations

import os
import sys
from typing import Dict, Optional, Sequence
from unittest import mock

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from flow_escnn._compat import import_escnn  # noqa: E402
from flow_escnn.flows._element import GridElement  # noqa: E402
from flow_escnn.flows._reduce import reduce_over, sum_over  # noqa: E402
from flow_escnn.flows._transport import TransportPlan  # noqa: E402
from flow_escnn.nn import _kernels  # noqa: E402
from flow_escnn.nn._kernels import conv2d, conv3d  # noqa: E402
from flow_escnn.nn._pooling import reduce_velocities  # noqa: E402

from benchmarks.meters import kernel_main, time_ratio  # noqa: E402

_escnn, _group, gspaces, enn = import_escnn()

__all__ = ["run", "main"]


def run(batch: int = 8, slices: int = 5, channels: int = 32, grid: int = 28, repeats: int = 11) -> Dict[str, float]:
    """``{name: plain time / library time}``; raises RuntimeError when the two sides disagree."""
    g = torch.Generator().manual_seed(0)
    ratios: Dict[str, float] = {}
    for c_in, n in ((1, batch * slices), (1, 4 * batch * slices), (2, batch * slices), (4, batch * slices)):
        x = torch.randn(n, c_in, grid + 2, grid + 2, generator=g)
        w = torch.randn(channels, c_in, 3, 3, generator=g, requires_grad=True)
        b = torch.randn(channels, generator=g, requires_grad=True)
        gy = torch.randn(n, channels, grid, grid, generator=g)
        def thin(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
            """conv2d with its thin-input path taken for this many channels (the threshold raised, then restored)."""
            with mock.patch.object(_kernels, "IM2COL_MAX_CHANNELS", max(_kernels.IM2COL_MAX_CHANNELS, x.shape[1])):
                return conv2d(x, w, b)

        if (thin(x, w, b) - F.conv2d(x, w, b)).abs().max() > 1e-3:
            raise RuntimeError(f"conv2d disagrees with F.conv2d for {c_in} input channels; this benchmark is broken")
        ratios[f"conv2d_vs_im2col_c{c_in}_n{n}"] = time_ratio(
            lambda x=x, w=w, b=b, gy=gy: torch.autograd.grad(F.conv2d(x, w, b), (w, b), gy),
            lambda x=x, w=w, b=b, gy=gy: torch.autograd.grad(thin(x, w, b), (w, b), gy), repeats)
    side = min(grid, 16)  # the volume FERNN's 16^3 torus, padded by one voxel
    for c_in, n in ((2, (27 * batch) // 2), (4, (27 * batch) // 2), (8, (27 * batch) // 4)):
        x = torch.randn(n, c_in, side + 2, side + 2, side + 2, generator=g, requires_grad=True)
        w = torch.randn(c_in, c_in, 3, 3, 3, generator=g, requires_grad=True)
        gy = torch.randn(n, c_in, side, side, side, generator=g)
        if (conv3d(x, w) - F.conv3d(x, w)).abs().max() > 1e-3:
            raise RuntimeError(f"conv3d disagrees with F.conv3d for {c_in} input channels; this benchmark is broken")
        ratios[f"conv3d_vs_channels_last_c{c_in}_n{n}"] = time_ratio(
            lambda x=x, w=w, gy=gy: torch.autograd.grad(F.conv3d(x, w), (x, w), gy),
            lambda x=x, w=w, gy=gy: torch.autograd.grad(conv3d(x, w), (x, w), gy), repeats)
    h = torch.randn(batch, slices, channels, grid, grid, generator=g, requires_grad=True)
    gh = torch.randn(batch, channels, grid, grid, generator=g)
    if not torch.equal(reduce_velocities(h, "max"), h.max(dim=-4).values):
        raise RuntimeError("reduce_velocities disagrees with max(dim=-4); this benchmark is broken")
    ratios["max_vs_max_over_v"] = time_ratio(lambda: torch.autograd.grad(h.max(dim=-4).values, h, gh),
                                         lambda: torch.autograd.grad(reduce_velocities(h, "max"), h, gh), repeats)
    gs = gspaces.rot2dOnR2(8)
    field = enn.FieldType(gs, [gs.regular_repr] * max(1, channels // 8))
    hr = torch.randn(batch, slices, field.size, grid, grid, generator=g, requires_grad=True)
    ghr = torch.randn(batch, field.size, grid, grid, generator=g)
    plan = TransportPlan(field, [GridElement(gs, gs.fibergroup.element(k % 8)) for k in range(1, slices + 1)],
                         (grid, grid), interpolation="bilinear")
    if not torch.equal(plan(hr, start=0, reduce="max"), reduce_velocities(plan(hr, start=0), "max")):
        raise RuntimeError("the pooled readout disagrees with transport + max; this benchmark is broken")
    ratios["unpooled_vs_pooled_readout"] = time_ratio(
        lambda: torch.autograd.grad(reduce_velocities(plan(hr, start=0), "max"), hr, ghr),
        lambda: torch.autograd.grad(plan(hr, start=0, reduce="max"), hr, ghr), repeats)
    x = torch.randn(batch * slices, channels, grid, grid, generator=g)
    w = torch.randn(channels, channels, 3, 3, generator=g, requires_grad=True)
    gy = torch.randn(batch * slices, channels, grid, grid, generator=g)
    xl, gyl = (t.contiguous(memory_format=torch.channels_last) for t in (x, gy))
    x.requires_grad_(), xl.requires_grad_()
    if (F.conv2d(x, w, padding=1) - F.conv2d(xl, w, padding=1)).abs().max() > 1e-3:
        raise RuntimeError("the channels-last convolution disagrees with the plain one; this benchmark is broken")
    ratios[f"conv2d_vs_channels_last_c{channels}_n{batch * slices}"] = time_ratio(
        lambda: torch.autograd.grad(F.conv2d(x, w, padding=1), (x, w), gy),
        lambda: torch.autograd.grad(F.conv2d(xl, w, padding=1), (xl, w), gyl), repeats)
    v = 25 if slices > 2 else slices  # the translation row's |V| (the smoke test's tiny sizes keep theirs)
    hs = torch.randn(batch * v, channels, grid + 2, grid + 2, generator=g).contiguous(memory_format=torch.channels_last)
    hs = hs.view(batch, v, channels, grid + 2, grid + 2)
    if not torch.equal(hs.sum(1, keepdim=True), sum_over(hs, [1])) or not torch.equal(hs.amax(1), reduce_over(hs, 1, "max")):
        raise RuntimeError("the reductions over the contiguous view disagree; this benchmark is broken")
    ratios[f"strided_vs_contiguous_amax_v{v}"] = time_ratio(
        lambda: hs.amax(1), lambda: hs.movedim(-3, -1).amax(1).movedim(-1, -3), repeats)
    ratios[f"strided_vs_contiguous_sum_v{v}"] = time_ratio(lambda: hs.sum(1, keepdim=True), lambda: sum_over(hs, [1]),
                                                           repeats)
    hp = torch.randn(batch, slices, channels, grid * grid, generator=g)
    hl = hp.transpose(2, 3).contiguous().transpose(2, 3)  # the same fields, channels innermost
    if not torch.equal(hp.permute(1, 3, 0, 2).contiguous(), hl.permute(1, 3, 0, 2).contiguous()):
        raise RuntimeError("the two layouts disagree; this benchmark is broken")
    ratios["transpose_vs_batch_move"] = time_ratio(lambda: hp.permute(1, 3, 0, 2).contiguous(),
                                                   lambda: hl.permute(1, 3, 0, 2).contiguous(), repeats)
    x = torch.randn(batch, channels, grid, grid, generator=g).contiguous(memory_format=torch.channels_last)
    x.requires_grad_()
    for c_out in (1, 2, 4):
        w = torch.randn(c_out, channels, 3, 3, generator=g, requires_grad=True)
        gy = torch.randn(batch, c_out, grid, grid, generator=g)
        if (conv2d(x, w, padding=1) - F.conv2d(x, w, padding=1)).abs().max() > 1e-3:
            raise RuntimeError(f"conv2d disagrees with F.conv2d into {c_out} channels; this benchmark is broken")
        ratios[f"conv2d_vs_thin_output_c{channels}_o{c_out}"] = time_ratio(
            lambda w=w, gy=gy: torch.autograd.grad(F.conv2d(x, w, padding=1), (x, w), gy),
            lambda w=w, gy=gy: torch.autograd.grad(conv2d(x, w, padding=1), (x, w), gy), repeats)
    return ratios


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, float]:
    return kernel_main(__doc__.split("\n")[0], lambda repeats: run(repeats=repeats), "", 11, argv)


if __name__ == "__main__":
    main()
