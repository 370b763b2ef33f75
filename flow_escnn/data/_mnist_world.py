"""MNIST World: an agent moving and turning in a torus of flowing digits, seen through a window.

The data of the world-model experiments of FloWM (Lillemark et al., arXiv 2601.01075), generated
procedurally, seeded and offline (nothing is read from or written to files).

**The world.** An ``N x N`` torus (``world_size``), grayscale, holding ``K`` digits (``num_digits``).
Digit :math:`k` is centred on the grid, shifted to a random integer position :math:`o_k` and moves
at its own constant integer velocity :math:`v_k` drawn from a velocity set (default
:math:`\\{-1, 0, 1\\}^2`, as FloWM; all zero with ``static=True``); overlapping digits are summed,
then clamped (as FloWM):

.. math::
    \\mathrm{world}_t = \\operatorname{clip}_{[0,1]}\\Big(\\sum_k T(o_k + t\\,v_k)\\, d_k\\Big),
    \\qquad T(u)\\,f = \\texttt{torch.roll}(f, (-u_y, u_x)).

**The agent.** Its pose :math:`P_t = (p_t, R_t) \\in \\mathbb{R}^2 \\rtimes SO(2)` is a position on
the torus and a heading; its action :math:`a_t = (u_t, r_t)` (a move :math:`u_t \\in \\mathbb{Z}^2`
and a turn) is expressed in its previous frame:

.. math::
    P_t = P_{t-1}\\, a_t, \\qquad p_t = p_{t-1} + R_{t-1} u_t \\bmod N, \\qquad R_t = R_{t-1} r_t,

with :math:`a_0 = (0, 0, 0)` and :math:`P_0` the start pose (a random integer position, heading 0
unless ``random_heading``). Positions stay integers whenever the headings are multiples of 90
degrees; with other turn angles (e.g. 45 degrees) :math:`R_{t-1} u_t` is not an integer vector and
the position is kept exactly (float64), not rounded, so that :math:`P_t = P_{t-1} a_t` holds as a
group law, which is what :class:`~flow_escnn.flows._action.ActionTransport` assumes.

**The view.** A ``w x w`` window (``view_size``, ``N - w`` even) centred on the agent, in its frame,
i.e. the world pulled back by the pose, for view points :math:`x` about the view centre
(x right, y up, :mod:`flow_escnn.flows._planar`):

.. math::
    \\mathrm{view}_t(x) = \\mathrm{world}_t(P_t\\, x) = \\mathrm{world}_t(R_t x + p_t).

A position :math:`p` is a planar point of the world grid (origin at the grid centre), so the agent
at :math:`p = 0` with heading 0 sees the centred crop. For an integer position and a heading that
is a multiple of 90 degrees the view is an **exact** crop (a gather by integer index arithmetic;
equal to ``torch.rot90(torch.roll(world, (p_y, -p_x)), -q)[o:o+w, o:o+w]``, ``o = (N - w)/2``);
for other poses it is the world sampled **bilinearly** (periodic) at :math:`R_t x + p_t`, an
approximation (the world itself is always rendered exactly).

This matches the world model (:class:`~flow_escnn.models._world.WorldModel`): its map is the world in
the agent's frame, :math:`h_t(x) = \\mathrm{world}(P_t x) = h_{t-1}(a_t x)
= (a_t^{-1}\\cdot h_{t-1})(x)`, with the view window at the map's centre. Actions are stored as
float64 rows ``(ux, uy, degrees)``; the model reads ``(ux, uy, k)`` with ``k`` rotation steps of its
gspace, see :func:`actions_to_steps`.

**Actions** (``actions=``): ``"random_walk"`` draws each component of :math:`u_t` uniformly in
``{-max_step..max_step}``; ``"straight"`` keeps the previous move with probability ``keep`` and
otherwise draws a new one. Turns (``turns=``): ``None`` (never), or an angle :math:`\\alpha` with
``360 / alpha`` a whole number (90, 45, ...): each step turns by :math:`\\pm\\alpha` with
probability ``turn_probability``, so headings are multiples of :math:`\\alpha`. ``max_step=0``
gives no moves (turns still follow ``turns``); ``ego_motion=False`` gives all-zero actions.

**Splits** in the sense of FloWM are option combinations, listed in :data:`WORLD_SPLITS`:
dynamic (digits move), static (``static=True``), fully observed (``view_size=None``, i.e. the view
is the whole world) and no ego-motion (fully observed, ``ego_motion=False``, FloWM's
``smallworld_no_em``). Deviations from FloWM's files: frames are float (not H.264/uint8), the
context does not force full coverage of the world, each split of a digit source gives the digits of
its own split (FloWM validates on MNIST training digits), and moves default to ``max_step=2``
(FloWM: 10 on a 50-pixel world).

Determinism: the random choices of episode ``i`` (digits, positions, velocities, start pose,
actions) are a hash of ``(seed, stream, i)`` (:mod:`flow_escnn.data._hashrng`); they depend neither
on the number of episodes nor on the other episodes, and the draws of frame ``t`` do not depend on
``num_frames``, so a longer episode extends a shorter one.
"""
from __future__ import annotations

import math
from typing import Any, Dict, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F

from flow_escnn._validate import bounded_float, non_negative_int, one_of, optional_positive_int, positive_int
from flow_escnn.data._hashrng import hashed_uniform
from flow_escnn.data._sample_dataset import SampleDataset
from flow_escnn.data._world_render import (
    bilinear_views,
    exact_views,
    render_worlds,
    rotation_table,
    window_mask,
    window_outline,
)
from flow_escnn.data._digits import SPLITS, DigitSet, check_split
from flow_escnn.data._sources import DigitSourceLike, resolve_digit_source
from flow_escnn.data._velocities import translation_velocities, velocity_array

__all__ = [
    "ACTION_MODES",
    "WORLD_SPLITS",
    "WorldBatch",
    "WorldSample",
    "WorldInspection",
    "MNISTWorld",
    "generate_world_episodes",
    "inspection_episode",
    "draw_window",
    "actions_to_steps",
]

#: The action samplers of :func:`generate_world_episodes`.
ACTION_MODES: Tuple[str, ...] = ("random_walk", "straight")

#: FloWM's splits as option overrides of :func:`generate_world_episodes` / :class:`MNISTWorld`
#: (``view_size=None``: the view is the whole world). Read-only by convention: copy before changing.
WORLD_SPLITS: Dict[str, Dict[str, Any]] = {
    "dynamic": {"static": False, "ego_motion": True},
    "static": {"static": True, "ego_motion": True},
    "fully_observed": {"static": False, "ego_motion": True, "view_size": None},
    "no_ego_motion": {"static": False, "ego_motion": False, "view_size": None},
}

_CHUNK_ELEMENTS = 1 << 22  # world pixels (T * N * N per episode) rendered per chunk
_TOL = 1e-9


class WorldBatch(NamedTuple):
    """Episodes of MNIST World (``E`` episodes, ``T`` frames, ``K`` digits).

    Attributes:
        views: float32 ``[E, T, 1, w, w]`` in [0, 1].
        actions: float64 ``[E, T, 3]`` rows ``(ux, uy, degrees)``, the action *into* frame ``t``
            in the agent's previous frame; row 0 is zero.
        poses: float64 ``[E, T, 3]`` rows ``(x, y, heading degrees)``: position in planar world
            coordinates modulo ``N`` (in ``[0, N)``), heading in ``[0, 360)``.
        velocities: int64 ``[E, K, 2]`` digit velocities ``(vx, vy)`` (zero when static).
        worlds: float32 ``[E, T, 1, N, N]`` (``keep_worlds=True``) or ``None``.
        labels: int64 ``[E, K]`` digit classes (``-1`` for unlabelled images).
        digit_index: int64 ``[E, K]`` index of each digit in its image set.
        offsets: int64 ``[E, K, 2]`` digit positions ``(x, y)`` at frame 0.
    """

    views: torch.Tensor
    actions: torch.Tensor
    poses: torch.Tensor
    velocities: torch.Tensor
    worlds: Optional[torch.Tensor]
    labels: torch.Tensor
    digit_index: torch.Tensor
    offsets: torch.Tensor


class WorldSample(NamedTuple):
    """One item of :class:`MNISTWorld`: ``views [T, 1, w, w]`` and ``actions [T, 3]``."""

    views: torch.Tensor
    actions: torch.Tensor


class WorldInspection(NamedTuple):
    """One episode with its worlds, for pictures (:func:`inspection_episode`).

    Attributes:
        worlds: ``[T, 1, N, N]``.
        views: ``[T, 1, w, w]``.
        actions: ``[T, 3]`` ``(ux, uy, degrees)``.
        poses: ``[T, 3]`` ``(x, y, heading degrees)``.
        velocities: ``[K, 2]``.
        mask: bool ``[T, N, N]``, the world pixels inside the view window.
        overlay: float ``[T, 3, N, N]`` RGB worlds with the window outline (:func:`draw_window`).
    """

    worlds: torch.Tensor
    views: torch.Tensor
    actions: torch.Tensor
    poses: torch.Tensor
    velocities: torch.Tensor
    mask: torch.Tensor
    overlay: torch.Tensor


# -- argument checks ------------------------------------------------------------------------------------
def _flag(value: Any, what: str) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{what} must be True or False, got {type(value).__name__} {value!r}")
    return bool(value)


def _sizes(world_size: Any, view_size: Any) -> Tuple[int, int]:
    n = positive_int(world_size, "world_size")
    w = n if view_size is None else positive_int(view_size, "view_size")
    if w > n:
        raise ValueError(f"view_size ({w}) must be at most world_size ({n})")
    if (n - w) % 2:
        raise ValueError(
            f"world_size - view_size must be even so that the view is centred on a world pixel lattice point, "
            f"got {n} - {w} = {n - w}"
        )
    return n, w


def _headings(turns: Any) -> int:
    """Number of headings (``360 / turns``; 4 without turns) of a valid ``turns``."""
    if turns is None:
        return 4
    if isinstance(turns, (bool, str, bytes)) or not isinstance(turns, (int, float, np.integer, np.floating)):
        raise TypeError(f"turns must be None or an angle in degrees (e.g. 90 or 45), got {type(turns).__name__} "
                        f"{turns!r}")
    angle = bounded_float(turns, "turns", 0.0, 180.0, low_open=True)
    count = 360.0 / angle
    if abs(count - round(count)) > 1e-9:
        raise ValueError(f"turns must divide 360 degrees into whole steps (90, 60, 45, 22.5, ...), got {turns!r}")
    return int(round(count))


def _velocity_pairs(velocities: Any) -> np.ndarray:
    if velocities is None:
        velocities = translation_velocities(1)
    if isinstance(velocities, torch.Tensor):
        velocities = velocities.tolist()
    try:
        rows = velocity_array(velocities, "translation")
    except TypeError as exc:
        raise TypeError(f"velocities must be integer pairs (vx, vy): {exc}") from None
    return rows[:, :2].astype(np.int64)


def _digit_patches(images: np.ndarray, world_size: int, digit_size: Optional[int]) -> torch.Tensor:
    """Digits ``[M, h, w]`` as float32 patches, resized to ``digit_size`` first if given (as FlowingMNIST)."""
    x = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))
    if digit_size is not None and (digit_size, digit_size) != tuple(x.shape[-2:]):
        mode = "area" if digit_size <= min(x.shape[-2:]) else "bilinear"
        kwargs = {} if mode == "area" else {"align_corners": False}
        x = F.interpolate(x[:, None], size=(digit_size, digit_size), mode=mode, **kwargs)[:, 0].clamp_(0.0, 1.0)
    h, w = x.shape[-2:]
    if h > world_size or w > world_size:
        raise ValueError(f"digits of size {h}x{w} do not fit on a {world_size}x{world_size} world; "
                         f"pass digit_size <= {world_size} to resize them")
    return x


def _images(digits: Any) -> Tuple[np.ndarray, np.ndarray]:
    if isinstance(digits, DigitSet):
        images, labels = digits.images, digits.labels
    elif isinstance(digits, (np.ndarray, torch.Tensor)):
        images = digits.numpy() if isinstance(digits, torch.Tensor) else digits
        labels = np.full(images.shape[:1], -1, dtype=np.int64)
    else:
        raise TypeError(f"digits must be a DigitSet or images [M, h, w], got {type(digits).__name__}")
    images = np.asarray(images)
    if images.ndim != 3 or images.shape[0] == 0:
        raise ValueError(f"digits must be images [M, h, w] with M >= 1, got shape {images.shape}")
    return images, np.asarray(labels, dtype=np.int64)


# -- sampling -------------------------------------------------------------------------------------------
def _to_int(u: np.ndarray, high: int) -> np.ndarray:
    return np.minimum(np.floor(u * high).astype(np.int64), high - 1)


def _sample_actions(u: np.ndarray, mode: str, max_step: int, keep: float, turning: bool, turn_probability: float,
                    moving: bool) -> Tuple[np.ndarray, np.ndarray]:
    """Moves ``[E, T, 2]`` (int) and turns ``[E, T]`` (in heading steps) from the per-step uniforms ``[E, T, 5]``."""
    e, t = u.shape[:2]
    moves = np.zeros((e, t, 2), dtype=np.int64)
    turns = np.zeros((e, t), dtype=np.int64)
    if not moving or t < 2:
        return moves, turns
    if max_step > 0:
        fresh = _to_int(u[:, :, 0:2], 2 * max_step + 1) - max_step
        moves[:, 1:] = fresh[:, 1:]
        if mode == "straight":
            stay = u[:, :, 2] < keep
            for s in range(2, t):
                moves[:, s] = np.where(stay[:, s, None], moves[:, s - 1], fresh[:, s])
    if turning:
        sign = np.where(u[:, :, 4] < 0.5, -1, 1)
        turns[:, 1:] = np.where(u[:, 1:, 3] < turn_probability, sign[:, 1:], 0)
    return moves, turns


def _integrate_poses(start: np.ndarray, start_k: np.ndarray, moves: np.ndarray, turns: np.ndarray, n: int,
                     num_headings: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Positions float64 ``[E, T, 2]`` and heading steps int64 ``[E, T]`` of :math:`P_t = P_{t-1} a_t`."""
    e, t = turns.shape
    cos, sin = (v.numpy() for v in rotation_table(num_headings))
    pos = np.empty((e, t, 2), dtype=np.float64)
    k = np.empty((e, t), dtype=np.int64)
    pos[:, 0], k[:, 0] = start, start_k
    for s in range(1, t):
        c, si = cos[k[:, s - 1]], sin[k[:, s - 1]]
        ux, uy = moves[:, s, 0], moves[:, s, 1]
        step = np.stack([c * ux - si * uy, si * ux + c * uy], -1)
        pos[:, s] = np.remainder(pos[:, s - 1] + step, n)
        k[:, s] = np.remainder(k[:, s - 1] + turns[:, s], num_headings)
    return torch.from_numpy(pos), torch.from_numpy(k)


def _views(worlds: torch.Tensor, pos: torch.Tensor, k: torch.Tensor, num_headings: int, w: int) -> torch.Tensor:
    """Views ``[M, w, w]`` of worlds ``[M, N, N]`` at poses (exact where grid-aligned, bilinear elsewhere)."""
    m = worlds.shape[0]
    rounded = torch.round(pos)
    quarter = (4 * k) % num_headings == 0
    exact = quarter & ((pos - rounded).abs() < _TOL).all(dim=-1)
    if bool(exact.all()):  # the common case: no masked copies
        return exact_views(worlds, rounded.long(), (4 * k) // num_headings, w)
    out = torch.empty((m, w, w), dtype=worlds.dtype)
    if bool(exact.any()):
        q = (4 * k[exact]) // num_headings
        out[exact] = exact_views(worlds[exact], rounded[exact].long(), q, w)
    cos, sin = rotation_table(num_headings)
    rest = ~exact
    out[rest] = bilinear_views(worlds[rest], pos[rest], cos[k[rest]], sin[k[rest]], w)
    return out


def generate_world_episodes(
    digits: Union[DigitSet, np.ndarray],
    num_episodes: int,
    num_frames: int,
    world_size: int = 32,
    view_size: Optional[int] = 16,
    num_digits: int = 3,
    velocities: Optional[Sequence[Any]] = None,
    static: bool = False,
    ego_motion: bool = True,
    actions: str = "random_walk",
    max_step: int = 2,
    keep: float = 0.9,
    turns: Optional[float] = None,
    turn_probability: float = 0.2,
    random_heading: bool = False,
    digit_size: Optional[int] = None,
    seed: int = 0,
    stream: int = 0,
    keep_worlds: bool = False,
    *,
    indices: Optional[Sequence[int]] = None,
) -> WorldBatch:
    """Generate MNIST World episodes (vectorised over episodes; the module docstring has the model).

    Args:
        digits: a :class:`~flow_escnn.data._digits.DigitSet`, or images ``[M, h, w]`` in [0, 1].
        num_episodes: ``E``.
        num_frames: ``T`` (frame 0 is the start pose, action 0 is zero).
        world_size: ``N``, side of the world torus.
        view_size: ``w`` (``N - w`` even); ``None``: the whole world (fully observed).
        num_digits: ``K`` digits per world.
        velocities: integer pairs ``(vx, vy)`` digits draw their velocity from (default
            :math:`\\{-1, 0, 1\\}^2`).
        static: all digit velocities zero.
        ego_motion: ``False``: the agent never moves nor turns (all actions zero).
        actions: ``"random_walk"`` or ``"straight"``.
        max_step: moves have components in ``{-max_step..max_step}`` (0: no moves).
        keep: probability that ``"straight"`` keeps its previous move.
        turns: ``None`` (no turns) or the turn angle in degrees (``360 / turns`` whole, e.g. 90, 45).
        turn_probability: probability of a turn (either way, equally likely) per step.
        random_heading: start at a random multiple of the turn angle (of 90 degrees without turns).
        digit_size: resize the digits to this side first (they must fit on the world).
        seed: non-negative seed.
        stream: a second non-negative seed component (the datasets use the split index).
        keep_worlds: also return the worlds ``[E, T, 1, N, N]``.
        indices: generate these episode indices instead of ``0..E-1`` (``len(indices)`` must be
            ``num_episodes``); episode ``i`` is the same whatever else is generated with it.

    Returns:
        A :class:`WorldBatch`.

    Example:
        >>> from flow_escnn.data import SyntheticDigits, generate_world_episodes
        >>> digits = SyntheticDigits(num_train=20, num_val=5, num_test=5, size=8).load("train")
        >>> batch = generate_world_episodes(digits, num_episodes=2, num_frames=4, world_size=16,
        ...                                 view_size=8, turns=90, seed=1)
        >>> tuple(batch.views.shape), tuple(batch.actions.shape), tuple(batch.poses.shape)
        ((2, 4, 1, 8, 8), (2, 4, 3), (2, 4, 3))
        >>> batch.actions[:, 0].abs().sum().item()
        0.0
    """
    images, labels = _images(digits)
    e = positive_int(num_episodes, "num_episodes")
    t = positive_int(num_frames, "num_frames")
    n, w = _sizes(world_size, view_size)
    k = positive_int(num_digits, "num_digits")
    vset = _velocity_pairs(velocities)
    static, ego_motion = _flag(static, "static"), _flag(ego_motion, "ego_motion")
    mode = one_of(actions, ACTION_MODES, "actions")
    max_step = non_negative_int(max_step, "max_step")
    keep = bounded_float(keep, "keep", 0.0, 1.0)
    num_headings = _headings(turns)
    turn_probability = bounded_float(turn_probability, "turn_probability", 0.0, 1.0)
    random_heading = _flag(random_heading, "random_heading")
    digit_size = optional_positive_int(digit_size, "digit_size")
    seed, stream = non_negative_int(seed, "seed"), non_negative_int(stream, "stream")
    keep_worlds = _flag(keep_worlds, "keep_worlds")
    if indices is None:
        idx = np.arange(e, dtype=np.int64)
    else:
        idx = np.asarray([non_negative_int(i, "each of indices") for i in indices], dtype=np.int64).reshape(-1)
        if idx.size != e:
            raise ValueError(f"indices has {idx.size} entries but num_episodes is {e}")

    # draws: a header of 4K + 3 slots, then 5 per frame (so frame t's draws do not depend on T)
    head = 4 * k + 3
    u = hashed_uniform(seed, stream, idx, head + 5 * t)
    digit_idx = _to_int(u[:, :k], images.shape[0])
    vel_idx = _to_int(u[:, k : 2 * k], vset.shape[0])
    offsets = _to_int(u[:, 2 * k : 4 * k], n).reshape(e, k, 2)
    start = _to_int(u[:, 4 * k : 4 * k + 2], n).astype(np.float64)
    start_k = _to_int(u[:, 4 * k + 2], num_headings) if random_heading else np.zeros(e, dtype=np.int64)
    moves, steps = _sample_actions(u[:, head:].reshape(e, t, 5), mode, max_step, keep, turns is not None,
                                   turn_probability, ego_motion)
    pos, heading = _integrate_poses(start, start_k, moves, steps, n, num_headings)
    step_deg = 360.0 / num_headings
    action_rows = np.concatenate([moves.astype(np.float64), (steps * step_deg)[..., None]], -1)
    poses = torch.cat([pos, (heading.to(torch.float64) * step_deg)[..., None]], -1)

    vel = torch.from_numpy(vset[vel_idx])  # [E, K, 2]
    if static:
        vel = torch.zeros_like(vel)
    used, inverse = np.unique(digit_idx, return_inverse=True)
    patches = _digit_patches(images[used], n, digit_size)  # only the digits the episodes use
    local = torch.from_numpy(inverse.reshape(e, k))
    offs = torch.from_numpy(offsets)

    views = torch.empty((e, t, 1, w, w), dtype=torch.float32)
    worlds_out = torch.empty((e, t, 1, n, n), dtype=torch.float32) if keep_worlds else None
    chunk = max(1, _CHUNK_ELEMENTS // (t * n * n))
    for a in range(0, e, chunk):
        b = min(e, a + chunk)
        worlds = render_worlds(patches[local[a:b]], offs[a:b], vel[a:b], t, n)  # [c, T, N, N]
        flat = worlds.reshape(-1, n, n)
        views[a:b, :, 0] = _views(flat, pos[a:b].reshape(-1, 2), heading[a:b].reshape(-1), num_headings, w).view(
            b - a, t, w, w)
        if worlds_out is not None:
            worlds_out[a:b, :, 0] = worlds
    return WorldBatch(
        views=views,
        actions=torch.from_numpy(action_rows),
        poses=poses,
        velocities=vel,
        worlds=worlds_out,
        labels=torch.from_numpy(labels)[torch.from_numpy(digit_idx)],
        digit_index=torch.from_numpy(digit_idx),
        offsets=offs,
    )


# -- pictures -------------------------------------------------------------------------------------------
def _pose_rotation(degrees: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """cos, sin (float64) of headings in degrees, exact for multiples of 90."""
    rad = torch.remainder(degrees.to(torch.float64), 360.0) * (math.pi / 180.0)
    c, s = torch.cos(rad), torch.sin(rad)
    snap = lambda v: torch.where((v - v.round()).abs() < 1e-12, v.round(), v)  # noqa: E731
    return snap(c), snap(s)


def _check_pictures(worlds: Any, poses: Any, view_size: Any) -> Tuple[torch.Tensor, torch.Tensor, int]:
    if not isinstance(worlds, torch.Tensor) or not isinstance(poses, torch.Tensor):
        raise TypeError("worlds and poses must be tensors")
    if worlds.dim() == 4 and worlds.shape[1] == 1:
        worlds = worlds[:, 0]
    if worlds.dim() != 3 or worlds.shape[-1] != worlds.shape[-2]:
        raise ValueError(f"worlds must be [T, 1, N, N] or [T, N, N], got {list(worlds.shape)}")
    if poses.shape != (worlds.shape[0], 3):
        raise ValueError(f"poses must be [T={worlds.shape[0]}, 3] rows (x, y, degrees), got {list(poses.shape)}")
    _, w = _sizes(int(worlds.shape[-1]), view_size)
    return worlds, poses.to(torch.float64), w


def draw_window(worlds: torch.Tensor, poses: torch.Tensor, view_size: Optional[int],
                colour: Sequence[float] = (1.0, 0.0, 0.0)) -> torch.Tensor:
    """RGB worlds with the outline of the agent's view window drawn in ``colour``.

    The outline is the set of world pixels under the view's border pixels: exact for integer
    positions and headings that are multiples of 90 degrees, the rotated square rounded to pixels
    otherwise.

    Args:
        worlds: ``[T, 1, N, N]`` or ``[T, N, N]`` in [0, 1].
        poses: ``[T, 3]`` rows ``(x, y, heading degrees)`` (:attr:`WorldBatch.poses`).
        view_size: ``w`` (``None``: the whole world).
        colour: RGB in [0, 1].

    Returns:
        float32 ``[T, 3, N, N]`` in [0, 1].
    """
    worlds, poses, w = _check_pictures(worlds, poses, view_size)
    rgb = [bounded_float(v, "each colour component", 0.0, 1.0) for v in colour]
    if len(rgb) != 3:
        raise ValueError(f"colour must be an RGB triple, got {colour!r}")
    cos, sin = _pose_rotation(poses[:, 2])
    outline = window_outline(poses[:, :2], cos, sin, int(worlds.shape[-1]), w)
    out = worlds.to(torch.float32).clamp(0.0, 1.0)[:, None].repeat(1, 3, 1, 1)
    for ch, value in enumerate(rgb):
        out[:, ch][outline] = value
    return out


def inspection_episode(
    digits: Union[DigitSet, np.ndarray],
    index: int = 0,
    num_frames: int = 20,
    *,
    colour: Sequence[float] = (1.0, 0.0, 0.0),
    **options: Any,
) -> WorldInspection:
    """Episode ``index`` of :func:`generate_world_episodes` with its worlds, window mask and outline.

    Args:
        digits: as for :func:`generate_world_episodes`.
        index: the episode (the same episode a batch generated with the same options holds at ``index``).
        num_frames: ``T``.
        colour: RGB of the window outline.
        **options: the other keyword arguments of :func:`generate_world_episodes` (``seed``,
            ``stream``, ``world_size``, ``view_size``, ...).

    Returns:
        A :class:`WorldInspection`.
    """
    for name in ("num_episodes", "keep_worlds", "indices"):
        if name in options:
            raise TypeError(f"inspection_episode() sets {name} itself")
    i = non_negative_int(index, "index")
    batch = generate_world_episodes(digits, 1, num_frames, keep_worlds=True, indices=[i], **options)
    assert batch.worlds is not None
    worlds, poses = batch.worlds[0], batch.poses[0]
    n = int(worlds.shape[-1])
    w = int(batch.views.shape[-1])
    cos, sin = _pose_rotation(poses[:, 2])
    return WorldInspection(
        worlds=worlds,
        views=batch.views[0],
        actions=batch.actions[0],
        poses=poses,
        velocities=batch.velocities[0],
        mask=window_mask(poses[:, :2], cos, sin, n, w),
        overlay=draw_window(worlds, poses, w, colour),
    )


def actions_to_steps(actions: torch.Tensor, steps_per_turn: int) -> torch.Tensor:
    """Actions ``(ux, uy, degrees)`` as the model's ``(ux, uy, k)``, ``k`` rotation steps of ``360 / steps_per_turn``.

    Args:
        actions: ``[..., 3]`` (:attr:`WorldBatch.actions`).
        steps_per_turn: ``N`` of a ``rot2dOnR2(N)`` gspace, 360 for SO(2)
            (:func:`~flow_escnn.flows._planar.steps_per_turn`).

    Raises:
        ValueError: when a turn is not a whole number of steps of a finite group.
    """
    n = positive_int(steps_per_turn, "steps_per_turn")
    if not isinstance(actions, torch.Tensor) or actions.shape[-1:] != (3,):
        raise ValueError("actions must be a tensor [..., 3] of (ux, uy, degrees) rows")
    out = actions.to(torch.float64).clone()
    k = out[..., 2] * (n / 360.0)
    if not bool(((k - k.round()).abs() < 1e-6).all()):
        raise ValueError(f"the turns are not whole steps of 360/{n} degrees; use a gspace with more rotations")
    out[..., 2] = k.round()
    return out


# -- the dataset ----------------------------------------------------------------------------------------
class MNISTWorld(SampleDataset):
    """A fixed, seeded MNIST World dataset for one split (generated once, at construction).

    The views take ``E * T * w * w * 4`` bytes (e.g. 143 MB for 8,000 episodes of 70 frames at
    16x16). ``dataset[i]`` is a :class:`WorldSample` ``(views [T, 1, w, w], actions [T, 3])``;
    the same keyword arguments build every split, only ``split`` changes (digits from the source's
    split of that name, random stream ``SPLITS.index(split)``).

    Args:
        digits: a :class:`~flow_escnn.data._digits.DigitSource`, ``"mnist"``, ``"synthetic"`` or an
            idx folder (:func:`~flow_escnn.data._sources.resolve_digit_source`).
        split: ``"train"``, ``"val"`` or ``"test"``.
        num_episodes: ``E``.
        num_frames: ``T``.
        **options: the world options of :func:`generate_world_episodes` (``world_size``,
            ``view_size``, ``num_digits``, ``velocities``, ``static``, ``ego_motion``, ``actions``,
            ``max_step``, ``keep``, ``turns``, ``turn_probability``, ``random_heading``,
            ``digit_size``, ``seed``); a split of :data:`WORLD_SPLITS` is ``**WORLD_SPLITS[name]``.

    Attributes:
        views: float32 ``[E, T, 1, w, w]``.
        actions: float64 ``[E, T, 3]`` ``(ux, uy, degrees)``.
        poses: float64 ``[E, T, 3]`` ``(x, y, heading degrees)``.
        velocities: int64 ``[E, K, 2]``.
        labels: int64 ``[E, K]``.
        options: the options the episodes were generated with.
    """

    sample_type = WorldSample
    sample_fields = ("views", "actions")

    def __init__(self, digits: DigitSourceLike = "mnist", split: str = "train", *, num_episodes: int,
                 num_frames: int = 20, **options: Any) -> None:
        super().__init__()
        self.split = check_split(split)
        for name in ("stream", "keep_worlds", "indices"):
            if name in options:
                raise TypeError(f"MNISTWorld sets {name} itself")
        self.source = resolve_digit_source(digits)
        self.options: Dict[str, Any] = dict(options, stream=SPLITS.index(split))
        batch = generate_world_episodes(self.source.load(split), num_episodes, num_frames, **self.options)
        self.num_frames = int(num_frames)
        self.views = batch.views
        self.actions = batch.actions
        self.poses = batch.poses
        self.velocities = batch.velocities
        self.labels = batch.labels
        self.digit_index = batch.digit_index

    def inspect(self, index: int, colour: Sequence[float] = (1.0, 0.0, 0.0)) -> WorldInspection:
        """Episode ``index`` regenerated with its worlds (:func:`inspection_episode`)."""
        if not 0 <= non_negative_int(index, "index") < len(self):
            raise IndexError(f"index {index} is out of range for {len(self)} episodes")
        return inspection_episode(self.source.load(self.split), index, self.num_frames, colour=colour, **self.options)

    def describe(self) -> str:
        o = self.options
        world = o.get("world_size", 32)
        return (f"world={world}, K={self.velocities.shape[1]}, static={o.get('static', False)}, "
                f"ego_motion={o.get('ego_motion', True)}, actions={o.get('actions', 'random_walk')!r}, "
                f"turns={o.get('turns')}, source={self.source!r}")
