"""Benchmark: the kernel of an interpolated transport, ``embedding_bag`` (the library's) against a
sparse CSR product of the same matrix, forward and backward, for each interpolation.

Run from the repository root::

    python -m benchmarks.resample_kernels --threads 1

The shapes are those of one readout transport of ``benchmarks/bench_fernn.py``'s rotation row
(5 slices of a 28x28 grid, batch 8 x 32 channels as columns). Both kernels compute the same
products (checked here to 1e-5); times are medians of round-robin rounds. The last line is
machine readable::

    RATIOS csr_vs_embedding_bag_bilinear=<x> csr_vs_embedding_bag_bicubic=<x> csr_vs_embedding_bag_cubic6=<x>
"""
from __future__ import annotations

import os
import sys
import warnings
from typing import Dict, Optional, Sequence, Tuple

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from flow_escnn._compat import import_escnn  # noqa: E402
from flow_escnn.flows._element import GridElement  # noqa: E402
from flow_escnn.flows._resample import block_table, sparse_resample  # noqa: E402
from flow_escnn.flows._tables import INTERPOLATIONS  # noqa: E402
from flow_escnn.flows._transport import TransportPlan  # noqa: E402

from benchmarks.meters import kernel_main, time_ratio  # noqa: E402

_escnn, _group, gspaces, enn = import_escnn()

__all__ = ["run", "main"]


def _csr(index: torch.Tensor, weights: torch.Tensor, n_in: int) -> torch.Tensor:
    rows, k = index.shape
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        return torch.sparse_csr_tensor(torch.arange(0, rows * k + 1, k, dtype=index.dtype), index.reshape(-1),
                                       weights.reshape(-1),
                                       size=(rows, n_in), check_invariants=False)


def run(slices: int = 5, grid: int = 28, columns: int = 256, repeats: int = 21) -> Dict[str, float]:
    """``{interpolation: CSR time / embedding_bag time}`` for forward + backward of one transport."""
    gs = gspaces.rot2dOnR2(8)
    field = enn.FieldType(gs, [gs.trivial_repr])
    n = grid * grid
    ratios: Dict[str, float] = {}
    for interpolation in INTERPOLATIONS:
        # the library's own tables (padded to a fixed number of taps, and transposed) for the slices
        plan = TransportPlan(field, [GridElement(gs, gs.fibergroup.element(k % 8)) for k in range(1, slices + 1)],
                             (grid, grid), interpolation=interpolation)
        index, weights, t_index, t_weights = plan.interpolation_tables()
        fwd = block_table(index, weights.float(), n)
        bwd = block_table(t_index, t_weights.float(), n)
        s, s_t = _csr(*fwd, slices * n), _csr(*bwd, slices * n)
        x = torch.randn(slices * n, columns, requires_grad=True)
        g = torch.randn(slices * n, columns)

        def bag(x=x, fwd=fwd, bwd=bwd, g=g) -> torch.Tensor:
            return torch.autograd.grad(sparse_resample(x, fwd, bwd), x, g)[0]

        def csr(s=s, s_t=s_t, x=x, g=g) -> Tuple[torch.Tensor, torch.Tensor]:
            y = s @ x.detach()
            return y, s_t @ g

        y_csr, g_csr = csr()
        with torch.no_grad():
            y_bag = sparse_resample(x, fwd, bwd)
        if (y_bag - y_csr).abs().max() > 1e-5 or (bag() - g_csr).abs().max() > 1e-5:
            raise RuntimeError(f"{interpolation}: the two kernels disagree; this benchmark is broken")
        ratios[interpolation] = time_ratio(csr, bag, repeats)
    return ratios


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, float]:
    return kernel_main(__doc__.split("\n")[0], lambda repeats: run(repeats=repeats), "csr_vs_embedding_bag_", 21, argv)


if __name__ == "__main__":
    main()
