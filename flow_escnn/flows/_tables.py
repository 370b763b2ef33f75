"""Gather tables of a grid element: where each output pixel reads, with which weights.

The numpy side of :mod:`flow_escnn.flows._transport` (built once, at construction): for an
element :math:`(u, g)` of :math:`\\mathbb{Z}^2 \\rtimes G` acting on an ``H x W`` torus, the
source of output pixel :math:`x` is :math:`A(g)^{-1}(x - u)`. It is a single pixel when the
element maps the grid onto itself (integer translations, signed-permutation :math:`A(g)`),
else the taps of the interpolation kernel (4 bilinear, 16 bicubic, 36 cubic6) with their weights.
The transposed table serves the gather-only backward pass; :func:`as_permutation` finds fiber actions that are channel
permutations.
"""
from __future__ import annotations

from typing import Callable, Optional, Tuple

import numpy as np

from flow_escnn._validate import one_of
from flow_escnn.flows._element import GridElement

__all__ = [
    "INTERPOLATIONS", "DEFAULT_INTERPOLATION", "interpolation_kernel", "grid_points", "spatial_table", "transpose_table",
    "as_permutation",
]

#: Interpolations of the non-exact transports (see :func:`interpolation_kernel`).
INTERPOLATIONS = ("bilinear", "bicubic", "cubic6")
#: The default, the most accurate method that costs what bilinear does: as a fixed-tap product
#: (:mod:`flow_escnn.flows._resample`) cubic6's 36 taps measured 0.94-1.03x the bilinear training step
#: (``benchmarks/README.md``), and it is about 3.4x more accurate than bicubic and 25x more than
#: bilinear on band-limited images. It was bicubic before; models saved then keep bicubic
#: (:func:`flow_escnn.models.load_model` rebuilds them with the interpolation their layers recorded).
DEFAULT_INTERPOLATION = "cubic6"
_INT_TOL = 1e-6
#: Largest unreduced translation resampled: float64 rounds |u| ~ 2**32 pixels by about _INT_TOL.
_MAX_SHIFT = 2.0**32
_PERM_TOL = 1e-9


def grid_points(h: int, w: int) -> np.ndarray:
    """Centred planar coordinates ``[H*W, 2]`` of the pixels, row-major."""
    i, j = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    return np.stack([j - (w - 1) / 2.0, (h - 1) / 2.0 - i], axis=-1).reshape(-1, 2).astype(np.float64)


def interpolation_kernel(interpolation: str) -> Tuple[int, Callable[[np.ndarray], np.ndarray]]:
    """The separable 1-D kernel of an interpolation: its radius ``r`` (``2r`` taps per axis) and
    its function of the distance :math:`t` to a tap.

    * ``"bilinear"``: :math:`\\max(0, 1 - |t|)` (4 taps).
    * ``"bicubic"``: Keys' cubic convolution with :math:`a = -1/2` (16 taps), third-order
      accurate; on band-limited images its error is several times smaller than bilinear's
      (numbers in ``docs/theory.rst``).
    * ``"cubic6"``: Keys' six-point cubic convolution (36 taps), fourth-order accurate
      (reproduces cubic polynomials); about 3.4x more accurate than bicubic on band-limited
      images at 10 and 45 degrees, for 2.25x the taps. Its pieces, for :math:`s = |t|`:
      :math:`\\tfrac43 s^3 - \\tfrac73 s^2 + 1` on [0, 1),
      :math:`-\\tfrac{7}{12} s^3 + 3 s^2 - \\tfrac{59}{12} s + \\tfrac52` on [1, 2),
      :math:`\\tfrac{1}{12} s^3 - \\tfrac23 s^2 + \\tfrac74 s - \\tfrac32` on [2, 3).

    All interpolate (weight 1 at the tap itself) and sum to 1 over the taps.
    """
    one_of(interpolation, INTERPOLATIONS, "interpolation")
    if interpolation == "bilinear":
        return 1, lambda t: np.maximum(0.0, 1.0 - np.abs(t))
    if interpolation == "cubic6":
        def keys6(t: np.ndarray) -> np.ndarray:
            s = np.abs(t)
            # the pieces factored by their roots, so that the kernel is exactly 0 at the other taps
            near = (s - 1) * ((4 / 3 * s - 1) * s - 1)
            mid = -(s - 1) * (s - 2) * (7 * s - 15) / 12
            far = (s - 2) * (s - 3) ** 2 / 12
            return np.where(s < 1, near, np.where(s < 2, mid, np.where(s < 3, far, 0.0)))

        return 3, keys6

    def keys(t: np.ndarray, a: float = -0.5) -> np.ndarray:
        t = np.abs(t)
        near = ((a + 2) * t - (a + 3)) * t * t + 1
        far = ((a * t - 5 * a) * t + 8 * a) * t - 4 * a
        return np.where(t <= 1, near, np.where(t < 2, far, 0.0))

    return 2, keys


def spatial_table(e: GridElement, h: int, w: int, interpolation: str) -> Tuple[np.ndarray, np.ndarray, bool]:
    """Source pixel indices ``[H*W, K]`` and weights ``[H*W, K]`` for one element.

    ``K == 1`` when the element maps the grid onto itself exactly, else the taps of
    ``interpolation`` (:func:`interpolation_kernel`: 4 bilinear, 16 bicubic, 36 cubic6), wrapping around the torus.
    """
    a = e.matrix
    swaps_axes = abs(a[0, 1]) > 0 or abs(a[1, 0]) > 0
    if swaps_axes and h != w:
        raise ValueError(
            f"{e} rotates the grid by an angle other than 0/180 degrees, which needs a square grid; "
            f"got H={h}, W={w}"
        )
    u = e.translation_mod(h, w)  # exact modulo the torus when the element maps the grid onto itself
    if np.max(np.abs(u)) >= _MAX_SHIFT:
        raise ValueError(
            f"{e} moves by {np.max(np.abs(u)):.4g} pixels and is not a whole-pixel shift with a 90-degree-multiple "
            "rotation or reflection, so its translation is not reduced modulo the torus, and float64 cannot place "
            f"its source points to within {_INT_TOL:g} pixel beyond {_MAX_SHIFT:.4g} pixels: use a translation "
            "below that (reduce it modulo the grid yourself where that keeps the map)"
        )
    pts = grid_points(h, w)
    src = np.linalg.solve(a, (pts - u).T).T  # A^{-1}(x - u)
    col = src[:, 0] + (w - 1) / 2.0
    row = (h - 1) / 2.0 - src[:, 1]
    rcol, rrow = np.round(col), np.round(row)
    if np.all(np.abs(col - rcol) < _INT_TOL) and np.all(np.abs(row - rrow) < _INT_TOL):
        idx = (np.mod(rrow.astype(np.int64), h) * w + np.mod(rcol.astype(np.int64), w))[:, None]
        return idx, np.ones_like(idx, dtype=np.float64), True
    radius, kernel = interpolation_kernel(interpolation)
    c0, r0 = np.floor(col).astype(np.int64), np.floor(row).astype(np.int64)
    idx, wts = [], []
    for dr in range(1 - radius, radius + 1):
        wr = kernel(row - (r0 + dr))
        for dc in range(1 - radius, radius + 1):
            idx.append(np.mod(r0 + dr, h) * w + np.mod(c0 + dc, w))
            wts.append(wr * kernel(col - (c0 + dc)))
    return np.stack(idx, -1), np.stack(wts, -1), False


def transpose_table(idx: np.ndarray, wts: np.ndarray, n_in: int) -> Tuple[np.ndarray, np.ndarray]:
    """For every source pixel, the ``(output pixel, weight)`` pairs that read it: ``[N_in, K']`` each."""
    n_out, k = idx.shape
    q = np.repeat(np.arange(n_out), k)
    s, ww = idx.reshape(-1), wts.reshape(-1)
    keep = ww != 0
    q, s, ww = q[keep], s[keep], ww[keep]
    order = np.argsort(s, kind="stable")
    q, s, ww = q[order], s[order], ww[order]
    counts = np.bincount(s, minlength=n_in)
    k2 = max(1, int(counts.max(initial=0)))
    rank = np.arange(len(s)) - (np.cumsum(counts) - counts)[s]
    t_idx = np.zeros((n_in, k2), dtype=np.int64)
    t_wts = np.zeros((n_in, k2), dtype=np.float64)
    t_idx[s, rank] = q
    t_wts[s, rank] = ww
    return t_idx, t_wts


def as_permutation(rho: np.ndarray) -> Optional[np.ndarray]:
    """``perm`` with ``rho[o, perm[o]] == 1`` if ``rho`` is a permutation matrix, else None."""
    r = np.round(rho)
    if np.max(np.abs(rho - r)) > _PERM_TOL or not np.all((r == 0) | (r == 1)):
        return None
    if not (np.all(r.sum(0) == 1) and np.all(r.sum(1) == 1)):
        return None
    return np.argmax(r, axis=1)
