"""Flowing volumes: procedural 3D objects moved by exact volume flows on a voxel torus.

The 3D counterpart of :mod:`flow_escnn.data._flowing_mnist`. Every sequence holds ``K``
objects (default 2) on a ``D x H x W`` torus (default ``16 x 16 x 16``). Object :math:`k` is
built centred on the grid, :math:`o_k`, placed at frame 0 by an integer translation
:math:`p_k`, and moved by its own flow :math:`\\nu_k`, drawn uniformly from the velocity set:

.. math::
    f^{(k)}_0 = T(p_k)\\, o_k, \\qquad
    f^{(k)}_t = \\psi_t(\\nu_k) \\cdot f^{(k)}_0, \\qquad
    \\text{frame}_t = \\operatorname{clip}_{[0,1]}\\Big(\\sum_k f^{(k)}_t\\Big).

Velocities are the 6-tuples ``(vx, vy, vz, kx, ky, kz)`` of
:class:`~flow_escnn.flows._volume.VolumeGenerator`: whole voxels per frame along x, y, z and
whole quarter turns per frame about at most one coordinate axis (a velocity with a rotation
lies along its axis: a spin, or a screw). :math:`\\psi_t(\\nu) = g_\\nu^{\\,t} = (t\\,u, r^t)`,
and the voxel convention is escnn's (:mod:`flow_escnn.flows._volume`): the array axes are
``(-z, -y, x)``, rotations are right-handed about the grid centre. So, on the torus,

* a translation ``(vx, vy, vz)`` moves an object **exactly** as
  ``torch.roll(f0, shifts=(-t*vz, -t*vy, t*vx), dims=(-3, -2, -1))``;
* ``kz = 1`` turns it as ``torch.rot90(f0, t, dims=(-2, -1))``, ``kx = 1`` as
  ``torch.rot90(f0, t, dims=(-2, -3))``, ``ky = 1`` as ``torch.rot90(f0, t, dims=(-1, -3))``
  (about z this needs ``H == W``, about x ``D == H``, about y ``D == W``).

The frames are made by :class:`~flow_escnn.flows._volume_transport.VolumeTransportPlan` (what
:func:`~flow_escnn.flows._volume_transport.volume_flow_sequence` runs) on the smallest escnn gspace
holding the flow (``trivialOnR3`` for translations, the quarter turns about the flow's axis
otherwise), so each :math:`f^{(k)}_t` is a permutation of the voxels of :math:`f^{(k)}_0`: the
motion is exact by construction, and for one object (or objects sharing a velocity) the whole
frame ``t`` is :math:`\\psi_t(\\nu)` of frame 0 bit for bit.

Placement: for a pure translation, :math:`p_k` is uniform over the torus; for a rotating
velocity the object stays centred in the plane of the rotation (it spins in place about the
grid centre) and only its offset along the rotation axis is random.

Objects (``shapes``):

* ``"blobs"``: 2 to 4 Gaussian bumps, the maximum of
  :math:`a_b \\exp\\!\\big(-\\lVert x - c_b \\rVert^2 / (2\\sigma_b^2)\\big)` with
  :math:`\\sigma_b \\sim U(1.5, 2.5)` voxels, :math:`a_b \\sim U(0.6, 1)` and centres
  :math:`c_b` within :math:`\\pm 0.2 \\min(D, H, W)` of the grid centre (distances taken on the
  torus, so the bumps are smooth across the border);
* ``"digits"``: a digit image of a :class:`~flow_escnn.data._digits.DigitSource` (default
  :class:`~flow_escnn.data._synthetic.SyntheticDigits`), resized to ``min(H, W)`` when larger
  than the grid, in the ``(y, x)`` plane, extruded along z into a centred slab 2 to 4 voxels
  thick.

Determinism: every random choice of sequence ``i`` (velocities, offsets, shape parameters,
digits) is a hash of ``(seed, split, i)`` (SplitMix64, :mod:`flow_escnn.data._hashrng`, in a
stream of its own), and each object is built alone, so sequence ``i`` depends neither on
``num_sequences`` nor on the other sequences (``start`` generates a slice of the same list).
"""
from __future__ import annotations

import functools
import math
from typing import Any, Dict, List, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from flow_escnn._compat import enn, group, gspaces
from flow_escnn._validate import non_negative_int, one_of, positive_int
from flow_escnn.data._digits import SPLITS, DigitSet, DigitSource, check_split
from flow_escnn.data._flowing_mnist import centred_canvas
from flow_escnn.data._hashrng import hashed_uniform
from flow_escnn.data._sample_dataset import SampleDataset
from flow_escnn.data._sources import DigitSourceLike, resolve_digit_source
from flow_escnn.data._synthetic import SyntheticDigits
from flow_escnn.flows._volume import AXES, VolumeGenerator, volume_shape
from flow_escnn.flows._volume_transport import VolumeTransportPlan
from flow_escnn.flows.kinds import flow_kind

__all__ = ["VolumeBatch", "VolumeSample", "FlowingVolumes", "generate_volume_sequences", "volume_velocities"]

#: The object shapes :func:`generate_volume_sequences` draws.
SHAPES = ("blobs", "digits")

Velocity6 = Tuple[int, int, int, int, int, int]
Grid3 = Tuple[int, int, int]

_MAX_BUMPS = 4
_BUMP_SLOTS = 5  # centre x, y, z, sigma, amplitude
_SLOTS = 6 + _MAX_BUMPS * _BUMP_SLOTS  # velocity, offset x/y/z, digit or bump count, thickness, bumps
_STREAM = 0x3D << 8  # this generator's hash stream (plus the split index)
_CHUNK_ELEMENTS = 1 << 22  # voxels (rows * T * D * H * W) transported per gather
#: the sizes a rotation about each axis exchanges, as indices into (D, H, W)
_ROTATION_PLANE = {"x": (0, 1), "y": (0, 2), "z": (1, 2)}


class VolumeBatch(NamedTuple):
    """A batch of flowing-volume sequences (``N`` sequences, ``K`` objects, ``T`` frames).

    Attributes:
        frames: float32 ``[N, T, 1, D, H, W]`` in :math:`[0, 1]`.
        velocities: int64 ``[N, K, 6]``, per object ``(vx, vy, vz, kx, ky, kz)``.
        velocity_index: int64 ``[N, K]``, row of the velocity set each object got.
        labels: int64 ``[N, K]``, digit classes (``shapes="digits"``), else ``-1``.
        offsets: int64 ``[N, K, 3]``, frame-0 placements :math:`p_k = (x, y, z)` in voxels.
    """

    frames: torch.Tensor
    velocities: torch.Tensor
    velocity_index: torch.Tensor
    labels: torch.Tensor
    offsets: torch.Tensor


class VolumeSample(NamedTuple):
    """One item of :class:`FlowingVolumes` (batched by the default ``DataLoader`` collate).

    Attributes:
        frames: ``[T, 1, D, H, W]``.
        velocities: ``[K, 6]`` per object ``(vx, vy, vz, kx, ky, kz)``.
        velocity_index: ``[K]`` rows of the dataset's velocity set.
        labels: ``[K]`` digit classes, ``-1`` for blobs.
    """

    frames: torch.Tensor
    velocities: torch.Tensor
    velocity_index: torch.Tensor
    labels: torch.Tensor


# -- velocities -----------------------------------------------------------------------------------------------
def _whole(value: Any, what: str, velocity: Any) -> int:
    """An integer entry of a velocity (ints, or floats that are whole numbers); ``ValueError`` otherwise."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return int(value)
    number = math.nan
    if not isinstance(value, (bool, str, bytes)):
        try:
            number = float(value)
        except (TypeError, ValueError):
            pass
    if not math.isfinite(number) or number != int(number):
        raise ValueError(
            f"velocity {velocity!r}: {what} must be an integer, got {value!r} (volume flows move by whole voxels and "
            "turn by whole quarter turns per frame, so that the motion is an exact permutation of the voxels)"
        )
    return int(number)


def _axis(velocity: Sequence[int]) -> Optional[str]:
    """The rotation axis of a checked 6-tuple (None for a pure translation)."""
    return next((AXES[i] for i in range(3) if velocity[3 + i]), None)


@functools.lru_cache(maxsize=None)
def _axis_gspace(axis: Optional[str]) -> Any:
    """The smallest gspace holding the flows about ``axis``: trivialOnR3 (None), or the quarter turns about it.

    ``rot2dOnR3(4)`` turns about z; conjugated by the rotation taking the axis onto z it turns about x or y
    (cheap to build, unlike ``octaOnR3``).
    """
    if axis is None:
        return gspaces.trivialOnR3()
    if axis == "z":
        return gspaces.rot2dOnR3(4)
    s = math.sqrt(0.5)  # quaternions (x, y, z, w): -90 degrees about y takes x to z, +90 about x takes y to z
    quaternion = (0.0, -s, 0.0, s) if axis == "x" else (s, 0.0, 0.0, s)
    return gspaces.rot2dOnR3(4, adjoint=group.o3_group().element((0, np.array(quaternion)), "Q"))


@functools.lru_cache(maxsize=None)
def _axis_field_type(axis: Optional[str]) -> Any:
    gs = _axis_gspace(axis)
    return enn.FieldType(gs, [gs.trivial_repr])


def _generator(velocity: Any) -> VolumeGenerator:
    """One velocity as a checked generator on the gspace of its axis (``ValueError`` naming the velocity)."""
    if isinstance(velocity, VolumeGenerator):
        velocity = velocity.velocity
    if isinstance(velocity, (str, bytes)) or not hasattr(velocity, "__iter__"):
        raise ValueError(
            f"a volume velocity is (vx, vy, vz) or (vx, vy, vz, kx, ky, kz) of integers, got "
            f"{type(velocity).__name__} {velocity!r}"
        )
    entries = tuple(velocity)
    if len(entries) not in (3, 6):
        raise ValueError(
            f"a volume velocity is (vx, vy, vz) (voxels per frame) or (vx, vy, vz, kx, ky, kz) (and quarter turns per "
            f"frame about x, y, z), got {len(entries)} entries: {velocity!r}"
        )
    names = ("vx", "vy", "vz", "kx", "ky", "kz")
    ints = tuple(_whole(v, n, velocity) for v, n in zip(entries, names)) + (0, 0, 0)[: 6 - len(entries)]
    turning = [AXES[i] for i in range(3) if ints[3 + i] % 4]
    if len(turning) > 1:
        raise ValueError(
            f"velocity {velocity!r} turns about {len(turning)} axes ({', '.join(turning)}); a volume flow turns about "
            "one coordinate axis: give at most one non-zero kx, ky, kz"
        )
    try:
        return VolumeGenerator(_axis_gspace(turning[0] if turning else None), ints[:3], ints[3:])
    except ValueError as exc:
        raise ValueError(f"velocity {velocity!r}: {exc}") from None


def volume_velocities(velocities: Any = None) -> List[Velocity6]:
    """Check a volume velocity set and return it as canonical 6-tuples ``(vx, vy, vz, kx, ky, kz)``.

    Args:
        velocities: ``None`` (the 27 translations of :math:`[-1, 1]^3`); a string in the syntax of the
            flow kind ``translation3d`` (``"R"`` for :math:`[-R, R]^3`, or ``"vx:vy:vz,..."``); or a
            collection of triples ``(vx, vy, vz)``, 6-tuples ``(vx, vy, vz, kx, ky, kz)`` (whole quarter turns
            per frame about one axis, velocity along it),
            :class:`~flow_escnn.flows._volume.VolumeGenerator` s (a
            :class:`~flow_escnn.flows._volume_flowset.VolumeFlowSet`), or an integer array ``[M, 3]`` /
            ``[M, 6]``. Turns are reduced to ``{-1, 1, 2}`` (``kz = 3`` is ``kz = -1``).

    Returns:
        The velocities in the given order (lexicographic in ``(vx, vy, vz)`` for the defaults, as
        :meth:`FlowSet.translations <flow_escnn.flows._volume_flowset.VolumeFlowSet.translations>`, so a
        model's V lines up index for index).

    Raises:
        ValueError: on an empty set, duplicates, non-integer entries, a rotation about two axes, or a
            velocity with a rotation that does not lie along its axis.

    Example:
        >>> len(volume_velocities()), volume_velocities("1:0:0,0:0:-2")
        (27, [(1, 0, 0, 0, 0, 0), (0, 0, -2, 0, 0, 0)])
        >>> volume_velocities([(0, 0, 0, 0, 0, 1), (0, 0, 1, 0, 0, 3)])  # a spin and a screw about z
        [(0, 0, 0, 0, 0, 1), (0, 0, 1, 0, 0, -1)]
    """
    if velocities is None:
        velocities = "1"
    if isinstance(velocities, str):
        velocities = flow_kind("translation3d", dimension=3).parse(velocities)
    elif isinstance(velocities, bytes):
        raise ValueError(f"velocities must be a string or a collection of velocities, got {velocities!r}")
    elif isinstance(velocities, (np.ndarray, torch.Tensor)):
        velocities = velocities.tolist()
    if not hasattr(velocities, "__iter__"):
        raise ValueError(f"velocities must be a string or a collection of velocities, got {velocities!r}")
    rows = [_generator(v).velocity for v in velocities]
    if not rows:
        raise ValueError("the velocity set is empty")
    seen: Dict[Velocity6, int] = {}
    for i, r in enumerate(rows):
        if r in seen:
            raise ValueError(f"duplicate velocity {r} at positions {seen[r]} and {i}")
        seen[r] = i
    return rows


def _grid(grid_size: Union[int, Sequence[int]]) -> Grid3:
    if isinstance(grid_size, (int, np.integer)) and not isinstance(grid_size, bool):
        side = positive_int(grid_size, "grid_size")
        return (side, side, side)
    try:
        return volume_shape(grid_size, "grid_size")
    except ValueError:
        raise ValueError(
            f"grid_size must be a positive integer (a cube) or a triple (D, H, W) of positive integers, got {grid_size!r}"
        ) from None


def _check_grid(velocities: Sequence[Velocity6], grid: Grid3) -> None:
    """Rotations exchange two axes of the grid: those must have the same size."""
    for v in velocities:
        axis = _axis(v)
        if axis is None:
            continue
        a, b = _ROTATION_PLANE[axis]
        if grid[a] != grid[b]:
            need = {"x": "D == H", "y": "D == W", "z": "H == W"}[axis]
            raise ValueError(
                f"velocity {v} turns about {axis}, which maps the grid onto itself only if {need}; got grid_size "
                f"(D, H, W) = {grid}: use a cube, or velocities without rotations about {axis}"
            )


# -- objects --------------------------------------------------------------------------------------------------
def _coordinates(grid: Grid3) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Centred coordinates x ``[1, 1, W]``, y ``[1, H, 1]``, z ``[D, 1, 1]`` (escnn's voxel convention)."""
    d, h, w = grid
    x = (np.arange(w) - (w - 1) / 2.0).reshape(1, 1, w)
    y = ((h - 1) / 2.0 - np.arange(h)).reshape(1, h, 1)
    z = ((d - 1) / 2.0 - np.arange(d)).reshape(d, 1, 1)
    return x, y, z


def _on_torus(delta: np.ndarray, n: int) -> np.ndarray:
    """The shortest signed distance on a circle of ``n`` voxels."""
    return np.remainder(delta + n / 2.0, n) - n / 2.0


def _blob(u: np.ndarray, grid: Grid3, coords: Tuple[np.ndarray, np.ndarray, np.ndarray]) -> np.ndarray:
    """A centred object of 2 to 4 Gaussian bumps from the slots ``u`` (float32 ``[D, H, W]`` in [0, 1])."""
    d, h, w = grid
    x, y, z = coords
    count = 2 + min(int(u[4] * 3), 2)
    spread = 0.2 * min(grid)
    out = np.zeros(grid, dtype=np.float64)
    for b in range(count):
        cx, cy, cz, s, a = u[6 + _BUMP_SLOTS * b: 6 + _BUMP_SLOTS * (b + 1)]
        sigma, amplitude = 1.5 + s, 0.6 + 0.4 * a
        r2 = (_on_torus(x - (2 * cx - 1) * spread, w) ** 2 + _on_torus(y - (2 * cy - 1) * spread, h) ** 2
              + _on_torus(z - (2 * cz - 1) * spread, d) ** 2)
        np.maximum(out, amplitude * np.exp(-r2 / (2.0 * sigma * sigma)), out=out)
    return out.astype(np.float32)


def _slab(image: np.ndarray, u: np.ndarray, grid: Grid3) -> np.ndarray:
    """A digit image extruded along z into a centred slab 2 to 4 voxels thick (float32 ``[D, H, W]``)."""
    d, h, w = grid
    size = min(h, w) if (image.shape[0] > h or image.shape[1] > w) else None
    plane = centred_canvas(image[None], (h, w), size)[0].numpy()
    thick = min(2 + min(int(u[5] * 3), 2), d)
    front = (d - thick) // 2
    out = np.zeros(grid, dtype=np.float32)
    out[front: front + thick] = plane
    return out


def _digit_images(digits: Any, split: str) -> Tuple[np.ndarray, np.ndarray]:
    if digits is None:
        digits = SyntheticDigits()
    if isinstance(digits, DigitSet):
        images, labels = digits.images, digits.labels
    elif isinstance(digits, np.ndarray):
        images = digits
        labels = np.full(images.shape[:1], -1, dtype=np.int64)
    else:
        images, labels = resolve_digit_source(digits).load(split)
    images = np.asarray(images, dtype=np.float32)
    if images.ndim != 3 or images.shape[0] == 0 or min(images.shape[1:]) < 1:
        raise ValueError(f"digits must be images [M, h, w] with M >= 1, got shape {images.shape}")
    return images, np.asarray(labels, dtype=np.int64)


# -- generation -----------------------------------------------------------------------------------------------
def generate_volume_sequences(
    num_sequences: int,
    num_frames: int = 10,
    grid_size: Union[int, Sequence[int]] = 16,
    velocities: Any = None,
    num_objects: int = 2,
    shapes: str = "blobs",
    digits: Union[DigitSourceLike, DigitSet, np.ndarray] = None,
    split: str = "train",
    seed: int = 0,
    start: int = 0,
) -> VolumeBatch:
    """Generate flowing-volume sequences (see the module docstring for the model).

    Args:
        num_sequences: ``N``.
        num_frames: ``T`` (frame 0 is the placement, unmoved).
        grid_size: ``S`` for an ``S x S x S`` cube, or ``(D, H, W)``.
        velocities: the velocity set, as :func:`volume_velocities` takes it (default: the 27 translations of
            :math:`[-1, 1]^3`).
        num_objects: ``K`` objects per sequence.
        shapes: ``"blobs"`` (Gaussian bumps) or ``"digits"`` (extruded digit images).
        digits: for ``shapes="digits"``: a :class:`~flow_escnn.data._digits.DigitSource` (or what
            :func:`~flow_escnn.data._sources.resolve_digit_source` takes; the ``split`` of it is used), a
            :class:`~flow_escnn.data._digits.DigitSet`, or images ``[M, h, w]`` in [0, 1]; default a
            :class:`~flow_escnn.data._synthetic.SyntheticDigits`. Ignored for blobs.
        split: ``"train"``, ``"val"`` or ``"test"``; a part of every sequence's random key.
        seed: non-negative integer seed.
        start: index of the first sequence: ``start=s`` gives sequences ``s .. s+N-1`` of the same list.

    Returns:
        A :class:`VolumeBatch`.

    Raises:
        ValueError: on a bad size, shape, split or seed, on a bad velocity set (:func:`volume_velocities`),
            or on a rotation whose plane is not square on the grid.

    Example:
        >>> import torch
        >>> b = generate_volume_sequences(3, num_frames=4, grid_size=8, num_objects=1, seed=1)
        >>> tuple(b.frames.shape), tuple(b.velocities.shape), b.velocities.dtype
        ((3, 4, 1, 8, 8, 8), (3, 1, 6), torch.int64)
        >>> vx, vy, vz = b.velocities[0, 0, :3].tolist()
        >>> torch.equal(b.frames[0, 3], torch.roll(b.frames[0, 0], (-3 * vz, -3 * vy, 3 * vx), dims=(-3, -2, -1)))
        True
    """
    n = positive_int(num_sequences, "num_sequences")
    T = positive_int(num_frames, "num_frames")
    K = positive_int(num_objects, "num_objects")
    one_of(shapes, SHAPES, "shapes")
    check_split(split)
    seed = non_negative_int(seed, "seed")
    start = non_negative_int(start, "start")
    grid = _grid(grid_size)
    vset = volume_velocities(velocities)
    _check_grid(vset, grid)
    d, h, w = grid
    M = len(vset)

    if shapes == "digits":
        images, image_labels = _digit_images(digits, split)
    u = hashed_uniform(seed, _STREAM + SPLITS.index(split), np.arange(start, start + n), K * _SLOTS).reshape(n, K, _SLOTS)
    vel_idx = np.minimum(np.floor(u[..., 0] * M).astype(np.int64), M - 1)  # [n, K]
    vel = np.asarray(vset, dtype=np.int64)[vel_idx]  # [n, K, 6]
    offsets = np.minimum(np.floor(u[..., 1:4] * np.array([w, h, d])).astype(np.int64), np.array([w, h, d]) - 1)
    spinning = vel[..., 3:] != 0  # [n, K, 3]: the rotation axis, if any
    offsets = np.where(spinning.any(-1, keepdims=True) & ~spinning, 0, offsets)  # centred across the axis
    labels = np.full((n, K), -1, dtype=np.int64)

    # each object alone (same shapes, same code path whatever N is), then placed by T(p) (a roll)
    coords = _coordinates(grid)
    placed = torch.empty((n, K, d, h, w), dtype=torch.float32)
    for i in range(n):
        for k in range(K):
            if shapes == "digits":
                j = min(int(u[i, k, 4] * images.shape[0]), images.shape[0] - 1)
                labels[i, k] = image_labels[j]
                obj = _slab(images[j], u[i, k], grid)
            else:
                obj = _blob(u[i, k], grid, coords)
            px, py, pz = (int(c) for c in offsets[i, k])
            placed[i, k] = torch.roll(torch.from_numpy(obj), shifts=(-pz, -py, px), dims=(0, 1, 2))

    # frame t of every object with velocity nu: psi_t(nu) . placed (one gather per velocity and chunk)
    frames = torch.zeros((n, T, 1, d, h, w), dtype=torch.float32)
    chunk = max(1, _CHUNK_ELEMENTS // (T * d * h * w))
    for v in np.unique(vel_idx).tolist():
        nu = _generator(vset[v])
        plan = VolumeTransportPlan(_axis_field_type(_axis(vset[v])), [nu.psi(t) for t in range(T)], grid)
        for k in range(K):
            rows = torch.from_numpy(np.flatnonzero(vel_idx[:, k] == v))
            for a in range(0, rows.numel(), chunk):
                r = rows[a: a + chunk]
                x = placed[r, k].view(-1, 1, 1, d, h, w).expand(-1, T, 1, d, h, w)
                frames[r] += plan(x)  # rows are distinct: each sequence adds its own layer once
    frames.clamp_(0.0, 1.0)
    return VolumeBatch(
        frames=frames,
        velocities=torch.from_numpy(vel),
        velocity_index=torch.from_numpy(vel_idx),
        labels=torch.from_numpy(labels),
        offsets=torch.from_numpy(offsets),
    )


class FlowingVolumes(SampleDataset):
    """A fixed, seeded dataset of flowing-volume sequences for one split.

    All sequences are generated once, at construction (``N * T * D * H * W * 4`` bytes of frames, e.g.
    164 MB for 1,000 sequences of 10 frames at 16^3), so every epoch sees the same data and
    ``dataset[i]`` depends only on ``i`` (and the arguments). For fresh combinations, build a new
    training set with another ``seed``.

    Args:
        split: ``"train"``, ``"val"`` or ``"test"`` (each split draws from its own random stream and,
            for digits, from the digit source's split of the same name).
        num_sequences: number of sequences ``N``.
        num_frames: frames per sequence ``T``.
        grid_size: ``S`` (an ``S^3`` cube) or ``(D, H, W)``.
        velocities: the velocity set of the ``"train"`` and ``"val"`` splits (and of ``"test"`` unless
            ``test_velocities`` is given), as :func:`volume_velocities` takes it; default the 27
            translations of :math:`[-1, 1]^3`.
        test_velocities: the velocity set of the ``"test"`` split only (velocity generalisation).
        num_objects: objects per sequence ``K``.
        shapes: ``"blobs"`` or ``"digits"``.
        digits: the digit source for ``shapes="digits"`` (default
            :class:`~flow_escnn.data._synthetic.SyntheticDigits`; ``"mnist"`` etc. as
            :func:`~flow_escnn.data._sources.resolve_digit_source` takes them).
        seed: non-negative seed.

    Attributes:
        frames: ``[N, T, 1, D, H, W]`` float32 in [0, 1].
        velocities: ``[N, K, 6]`` int64 per object ``(vx, vy, vz, kx, ky, kz)``.
        velocity_index: ``[N, K]`` rows of :attr:`velocity_set`.
        labels: ``[N, K]`` digit classes (``-1`` for blobs).
        offsets: ``[N, K, 3]`` frame-0 placements ``(x, y, z)``.
        velocity_set: ``[M, 6]`` int64 numpy array, the set the velocities were drawn from.

    Example:
        >>> ds = FlowingVolumes("val", num_sequences=4, num_frames=3, grid_size=8, seed=2)
        >>> len(ds), tuple(ds[0].frames.shape), tuple(ds[0].velocities.shape)
        (4, (3, 1, 8, 8, 8), (2, 6))
        >>> ds
        FlowingVolumes(split='val', N=4, T=3, grid=8x8x8, shapes='blobs', K=2, |V|=27)
    """

    sample_type = VolumeSample
    sample_fields = ("frames", "velocities", "velocity_index", "labels")

    def __init__(
        self,
        split: str = "train",
        *,
        num_sequences: int,
        num_frames: int = 10,
        grid_size: Union[int, Sequence[int]] = 16,
        velocities: Any = None,
        test_velocities: Any = None,
        num_objects: int = 2,
        shapes: str = "blobs",
        digits: DigitSourceLike = None,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.split = check_split(split)
        self.shapes = one_of(shapes, SHAPES, "shapes")
        vels = test_velocities if (split == "test" and test_velocities is not None) else velocities
        self.velocity_set = np.asarray(volume_velocities(vels), dtype=np.int64).reshape(-1, 6)
        self.source: Optional[DigitSource] = None
        if shapes == "digits":
            self.source = SyntheticDigits() if digits is None else resolve_digit_source(digits)
        batch = generate_volume_sequences(
            num_sequences,
            num_frames=num_frames,
            grid_size=grid_size,
            velocities=[tuple(r) for r in self.velocity_set.tolist()],
            num_objects=num_objects,
            shapes=shapes,
            digits=self.source,
            split=split,
            seed=seed,
        )
        self.frames = batch.frames
        self.velocities = batch.velocities
        self.velocity_index = batch.velocity_index
        self.labels = batch.labels
        self.offsets = batch.offsets

    def describe(self) -> str:
        text = f"shapes={self.shapes!r}, K={self.velocities.shape[1]}, |V|={len(self.velocity_set)}"
        return text + (f", source={self.source!r}" if self.source is not None else "")

    def __repr__(self) -> str:
        n, t, _, d, h, w = self.frames.shape
        return f"{type(self).__name__}(split={self.split!r}, N={n}, T={t}, grid={d}x{h}x{w}, {self.describe()})"
