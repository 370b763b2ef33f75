"""Interpolated transports as one sparse matrix product per call, all slices at once.

An interpolated transport of ``m`` slices is a block-diagonal linear map on the pixels,
the same for every channel and batch element:

.. math::
    Y = S\\,X, \\qquad S = \\mathrm{diag}(S_1, \\dots, S_m), \\quad
    (S_i)_{q, s} = \\sum_k w_i[q, k]\\,[\\,s_i(q, k) = s\\,],

with ``X`` the input laid out as ``[m * N_in, L * C]`` (pixels as rows, batch and channels
as columns). ``S`` has ``K`` entries per row (4 bilinear, 16 bicubic taps), stored as
CSR, so the product costs ``K`` multiply-adds per output value in one kernel, instead of
materialising ``K`` gathered copies of the input. The backward pass is the product with
``S^T``, precomputed from the transposed tables: no ``scatter_add``, deterministic.

Sparse CSR products have no float16 / bfloat16 kernels on CPU: in those dtypes (and under
``torch.autocast``) the product runs in float32 and the result is cast back.
"""
from __future__ import annotations

import warnings
from typing import Any, Optional, Tuple

import torch

__all__ = ["block_csr", "sparse_resample"]

Csr = Tuple[torch.Tensor, torch.Tensor, torch.Tensor, Tuple[int, int]]


def block_csr(index: torch.Tensor, weights: torch.Tensor, n_in: int) -> Csr:
    """The block-diagonal CSR matrix of ``m`` tables ``index, weights [m, R, K]`` over ``n_in`` source pixels.

    Returns:
        ``(crow_indices, col_indices, values, (m * R, m * n_in))``; zero-weight taps are kept
        (a fixed ``K`` per row), which costs nothing in the product.
    """
    m, rows, k = index.shape
    offset = torch.arange(m, device=index.device).view(m, 1, 1) * n_in
    col = (index + offset).reshape(-1)
    crow = torch.arange(0, m * rows * k + 1, k, device=index.device)
    return crow, col, weights.reshape(-1), (m * rows, m * n_in)


def _product(matrix: Csr, x: torch.Tensor) -> torch.Tensor:
    crow, col, val, shape = matrix
    compute = x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float32
    with torch.autocast(x.device.type, enabled=False), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")  # torch's notice
        s = torch.sparse_csr_tensor(crow, col, val.to(compute), size=shape, device=x.device, check_invariants=False)
        return (s @ x.to(compute)).to(x.dtype)


class _SparseResample(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, *tables: Any) -> torch.Tensor:  # type: ignore[override]
        forward_csr, backward_csr = tables[:4], tables[4:]
        ctx.backward_csr = backward_csr
        return _product(forward_csr, x)  # type: ignore[arg-type]

    @staticmethod
    def backward(ctx: Any, gy: torch.Tensor) -> Tuple[Optional[torch.Tensor], ...]:  # type: ignore[override]
        return (_product(ctx.backward_csr, gy),) + (None,) * 8


def sparse_resample(x: torch.Tensor, forward_csr: Csr, backward_csr: Csr) -> torch.Tensor:
    """``S @ x`` for ``x [m * N_in, L]``, with ``S^T @ g`` as its backward.

    Args:
        x: ``[m * N_in, L]`` (rows: slice-major pixels).
        forward_csr: :func:`block_csr` of the tables, shape ``(m * N_out, m * N_in)``.
        backward_csr: :func:`block_csr` of the transposed tables, shape ``(m * N_in, m * N_out)``.

    Returns:
        ``[m * N_out, L]``.
    """
    if not torch.is_grad_enabled() or not x.requires_grad:
        return _product(forward_csr, x)
    return _SparseResample.apply(x, *forward_csr, *backward_csr)
