"""Interpolated transports as one fixed-tap product per call, all slices at once.

An interpolated transport of ``m`` slices is a block-diagonal linear map on the pixels,
the same for every channel and batch element:

.. math::
    Y = S\\,X, \\qquad S = \\mathrm{diag}(S_1, \\dots, S_m), \\quad
    (S_i)_{q, s} = \\sum_k w_i[q, k]\\,[\\,s_i(q, k) = s\\,],

with ``X`` the input laid out as ``[m * N_in, L]`` (pixels as rows, batch and channels
as columns). Every row of ``S`` has the same number ``K`` of taps (4 bilinear, 16 bicubic,
36 cubic6), so the product is one ``torch.nn.functional.embedding_bag`` call (``mode="sum"``
with per-sample weights): for every output row, the weighted sum of ``K`` input rows of
``L`` contiguous values, in one kernel, without materialising ``K`` gathered copies. The
backward pass is the same call with the transposed tables (``S^T``, padded to a fixed
number of taps with zero weights): no ``scatter_add``, deterministic on every device.
On the CPU both tables are compacted first (:func:`product_tables`): their zero-weight taps
(the padding of ``S^T``, and all but one tap of a row that lands on a pixel, as every row of an
exact angle does) are dropped, and every row gets its own number of taps (``embedding_bag``'s
``offsets``). The C8 rotation row's readout at an odd multiple of 45 degrees keeps 8624 of the
15680 forward and of the 39200 padded backward taps, at an even one 3920.

Why not a sparse CSR product (``torch.sparse_csr_tensor @ dense``, this module's previous
kernel): torch's CPU path zero-fills and copies its output around the MKL kernel, and
``python -m benchmarks.resample_kernels --threads 1`` measured it 3.4x (bilinear), 3.0-3.5x
(bicubic) and 2.4-2.7x (cubic6) slower than ``embedding_bag`` for the same forward + backward
products on our 2-core CPU, in two runs (``benchmarks/README.md``).

In float16 / bfloat16 (and under ``torch.autocast``) the product runs in float32 and the
result is cast back: the weights of a high-order kernel do not survive half precision.

:func:`resample_fields` lays fields ``[batch, m, C, N]`` out as the product's ``[m * N, batch * C]``
and back. With ``reduce`` it pools the ``m`` slices in that pixel-major layout (a reduction over
its outermost axis) and transposes only the pooled ``[N_out, batch, C]`` back: for a readout
followed by the max over :math:`V` (the predictor's), this saves the full-size transposition
each way and the strided max. Fields whose channels are innermost in memory (a channels-last
state, :func:`~flow_escnn.nn._kernels.conv2d`) are already pixel-major: laying them out moves only
the batch axis, whole runs of ``C`` values (the full transposition of the C8 rotation row's
``[8, 5, 32, 784]`` took 5.1-5.6x as long, ``python -m benchmarks.step_kernels``), their fiber
permutations, which then permute the innermost axis, applied in the same pass (one gather), and the
result goes back to channels-last the same way. Repeating the tables per batch element, to read the
channels-last map in place as ``[batch * m * N, C]``, was timed as well: as fast in the step, with
tables ``batch`` times larger, so it was not kept. So was folding regular fibers' permutations into the
tables (rows ``(slice, pixel, channel in the field)`` of ``batch * fields`` values, one product for both):
bit-identical and 1.2-1.3x faster for the rotation row's readout alone (7.8-8.1 against 6.3-6.5 ms, forward + backward),
but 5% slower in its training step (487 against 514 ms, one A/B of 9 rounds), so it was not kept either.
"""
from __future__ import annotations

from typing import Any, NamedTuple, Optional, Tuple, Union

import torch
import torch.nn.functional as F

from flow_escnn.flows._gather import permute_rows
from flow_escnn.flows._reduce import reduce_over

__all__ = ["block_table", "compact_table", "Products", "product_tables", "sparse_resample", "resample_fields"]

#: ``(index [R, K], weights [R, K])``: row ``r`` of ``S`` has the entries ``weights[r, k]`` at the
#: columns ``index[r, k]`` (duplicate columns add up; zero weights are padding); or, compacted
#: (:func:`compact_table`), ``(index [nnz], weights [nnz], offsets [R])``: row ``r``'s entries from ``offsets[r]``.
Table = Tuple[torch.Tensor, ...]


class Products(NamedTuple):
    """The two products of one resampling: ``forward`` (``S``) and ``adjoint`` (``S^T``, its backward)."""

    forward: Table
    adjoint: Table


def compact_table(table: Table) -> Table:
    """``(index, weights, offsets)``: the table's nonzero entries only, each row with its own number of taps."""
    index, weights = table[:2]
    keep = weights != 0
    counts = keep.sum(1)
    offsets = torch.cumsum(counts, 0) - counts
    return index[keep], weights[keep], offsets


def product_tables(tables: Tuple[torch.Tensor, ...], n_in: int, n_out: int, dtype: torch.dtype) -> Products:
    """The :class:`Products` of ``m`` interpolation tables ``index, weights [m, N_out, K]`` and their transposed
    ``t_index, t_weights [m, N_in, K']`` (:func:`block_table`), the weights in ``dtype`` (the product's: float32 for
    half precision), compacted on the CPU (:func:`compact_table`; elsewhere that would wait for the device), unless
    ``torch.compile`` traces it."""
    index, weights, t_index, t_weights = tables
    compute = dtype if dtype in (torch.float32, torch.float64) else torch.float32
    fwd = block_table(index, weights.to(compute), n_in)
    adj = block_table(t_index, t_weights.to(compute), n_out)
    if index.device.type == "cpu" and not torch.compiler.is_compiling():  # (compiled: shapes that depend on values)
        fwd, adj = compact_table(fwd), compact_table(adj)
    return Products(fwd, adj)


def block_table(index: torch.Tensor, weights: torch.Tensor, n_in: int) -> Table:
    """The block-diagonal matrix of ``m`` tables ``index, weights [m, R, K]`` over ``n_in`` source pixels each.

    Returns:
        ``(index, weights)`` of shape ``[m * R, K]``, the indices offset by ``i * n_in`` in block ``i``.
    """
    m, rows, k = index.shape
    dtype = torch.int32 if m * n_in < 2**31 else torch.int64  # embedding_bag takes either
    offset = torch.arange(m, device=index.device, dtype=dtype).view(m, 1, 1) * n_in
    return (index.to(dtype) + offset).reshape(m * rows, k), weights.reshape(m * rows, k)


def _product(table: Table, x: torch.Tensor) -> torch.Tensor:
    index, weights = table[:2]
    offsets = table[2] if len(table) > 2 else None
    compute = x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float32
    with torch.autocast(x.device.type, enabled=False):
        y = F.embedding_bag(index, x.to(compute), offsets, per_sample_weights=weights.to(compute), mode="sum")
    return y.to(x.dtype)


class _SparseResample(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, products: Products) -> torch.Tensor:  # type: ignore[override]
        ctx.adjoint = products.adjoint
        # detached: embedding_bag on a tensor that requires grad takes its autograd kernel (bag bookkeeping for a
        # backward this Function replaces), more than twice the forward-only kernel's time for the rotation row
        return _product(products.forward, x.detach())

    @staticmethod
    def backward(ctx: Any, gy: torch.Tensor) -> Tuple[Optional[torch.Tensor], ...]:  # type: ignore[override]
        return (_product(ctx.adjoint, gy), None)


def sparse_resample(x: torch.Tensor, table: Table, transposed: Table) -> torch.Tensor:
    """``S @ x`` for ``x [m * N_in, L]``, with ``S^T @ g`` as its backward.

    Args:
        x: ``[m * N_in, L]`` (rows: slice-major pixels).
        table: :func:`block_table` of the tables (``m * N_out`` rows), or its :func:`compact_table`.
        transposed: :func:`block_table` of the transposed tables (``m * N_in`` rows), or its :func:`compact_table`.

    Returns:
        ``[m * N_out, L]``.
    """
    if not torch.is_grad_enabled() or not x.requires_grad:
        return _product(table, x)
    return _SparseResample.apply(x, Products(table, transposed))


def resample_fields(
    x: torch.Tensor, tables: Union[Tuple[torch.Tensor, ...], Products], n_out: int,
    perm: Optional[Tuple[torch.Tensor, torch.Tensor]] = None, reduce: Optional[str] = None,
) -> torch.Tensor:
    """Transport fields ``x [batch, m, C, N]`` by ``m`` interpolation tables (the same for every channel).

    Args:
        x: ``[batch, m, C, N]``.
        tables: ``index, weights [m, N_out, K]`` and the transposed ``t_index, t_weights [m, N, K']``, or their
            :func:`product_tables` (built once by a caller that reuses them).
        n_out: ``N_out``.
        perm: ``(perm, inverse)``, each ``[m, C]``: slice ``i``'s fiber permutation (its output channel ``j`` is
            input channel ``perm[i, j]``) and its inverse (applied first: they commute with the spatial resampling).
        reduce: ``None``, or ``"max"`` / ``"mean"`` over the ``m`` slices (:func:`~flow_escnn.flows._reduce.reduce_over`).

    Returns:
        ``[batch, m, C, N_out]``, or ``[batch, C, N_out]`` with ``reduce``.
    """
    batch, m, c, n = x.shape
    products = tables if isinstance(tables, Products) else product_tables(tables, n, n_out, x.dtype)
    if c > 1 and x.stride(2) == 1:
        return _resample_channels_last(x, products, n_out, perm, reduce)
    xs = x.reshape(batch, m * c, n)
    if perm is not None:  # as rows of [batch, m * C, N]
        offset = torch.arange(m, device=x.device).view(m, 1) * c
        xs = permute_rows(xs, *((p + offset).reshape(-1) for p in perm))
    rows = xs.view(batch, m, c, n).permute(1, 3, 0, 2).reshape(m * n, batch * c)
    out = sparse_resample(rows, *products)
    if reduce is not None:
        return reduce_over(out.view(m, n_out * batch * c), 0, reduce).view(n_out, batch, c).permute(1, 2, 0)
    return out.view(m, n_out, batch, c).permute(2, 0, 3, 1)


def _pixel_major(x: torch.Tensor, index: Optional[torch.Tensor]) -> torch.Tensor:
    """Channels-last fields ``x [batch, m, C, N]`` as rows ``[m * N, batch * C]``, the channels of slice ``i`` read in
    the order ``index[i]`` (one gather; ``None``: a copy)."""
    batch, m, c, n = x.shape
    v = x.transpose(2, 3).permute(1, 2, 0, 3)  # [m, N, batch, C], a view
    out = v.contiguous() if index is None else torch.gather(v, 3, index.view(m, 1, 1, c).expand(m, n, batch, c))
    return out.view(m * n, batch * c)


class _PixelMajor(torch.autograd.Function):
    """:func:`_pixel_major` (the fiber permutations applied on the way); backward: the inverse move, by the inverse
    permutations, into the channels-last layout again (so the gradient adds to the convolution's without a copy)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, index: Optional[torch.Tensor],  # type: ignore[override]
                inverse: Optional[torch.Tensor]) -> torch.Tensor:
        ctx.shape, ctx.inverse = x.shape, inverse
        return _pixel_major(x, index)

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> Tuple[Optional[torch.Tensor], ...]:  # type: ignore[override]
        batch, m, c, n = ctx.shape
        g = g.reshape(m, n, batch, c)
        if ctx.inverse is not None:  # on the contiguous gradient: a gather from a strided view is several times slower
            g = torch.gather(g, 3, ctx.inverse.view(m, 1, 1, c).expand(m, n, batch, c))
        return g.permute(2, 0, 1, 3).contiguous().transpose(2, 3), None, None


def _resample_channels_last(
    x: torch.Tensor, products: Products, n_out: int,
    perm: Optional[Tuple[torch.Tensor, torch.Tensor]], reduce: Optional[str],
) -> torch.Tensor:
    """:func:`resample_fields` of fields whose channels are innermost in memory (``x.stride(2) == 1``): laid out as
    ``[m * N, batch * C]`` by moving the batch axis only (whole runs of ``C`` values, the fiber permutations applied
    on the way, :class:`_PixelMajor`), and returned channels-last."""
    batch, m, c, n = x.shape
    index, inverse = (None, None) if perm is None else perm  # per slice, on the innermost axis
    grad = torch.is_grad_enabled() and x.requires_grad
    rows = _PixelMajor.apply(x, index, inverse) if grad else _pixel_major(x, index)
    out = sparse_resample(rows, *products)
    if reduce is not None:
        pooled = reduce_over(out.view(m, n_out * batch * c), 0, reduce).view(n_out, batch, c)
        return pooled.transpose(0, 1).contiguous().transpose(1, 2)
    return out.view(m, n_out, batch, c).permute(2, 0, 1, 3).contiguous().transpose(2, 3)
