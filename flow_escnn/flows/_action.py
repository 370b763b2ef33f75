"""Self-motion: the lifted map of an agent transported by the inverse of each sample's own action.

An agent keeps a map of the world in its own frame, lifted over a flow set :math:`V`:
:math:`h(\\nu) : \\mathbb{Z}^2 \\to \\mathbb{R}^C` for each velocity :math:`\\nu`. When it acts by
:math:`a = (u, r) \\in \\mathbb{Z}^2 \\rtimes G` (a move :math:`u` and a turn :math:`r`, both in its
previous frame), the world moves by :math:`a^{-1}` relative to it, and an object that moved at
:math:`\\nu` in the old frame moves at :math:`r^{-1}\\cdot\\nu` in the new one. So the map becomes

.. math::
    [a^{-1}\\cdot h](\\nu') \\;=\\; a^{-1}\\cdot h(r\\cdot\\nu'),\\qquad
    (a^{-1}\\cdot f)(x) \\;=\\; \\rho(r)^{-1} f(r x + u),

a transport of space (about the grid centre), of the fibers, and a permutation of :math:`V` (the
same action of :math:`G` on :math:`V` as the static checks use,
:meth:`~flow_escnn.flows._flowset.FlowSet.action_permutation`). :class:`ActionTransport` applies it
to a batch in which every sample has its own action:

* **exact** actions, integer moves and turns by multiples of 90 degrees on a square torus, are
  one batched gather (no loop over samples): a per-sample pixel index from integer arithmetic,
  the fiber and :math:`V` permutations folded into the same index where the fiber action permutes
  channels, a per-sample fiber matrix otherwise; its backward is the gather by the inverse index;
* other turns (e.g. 45 degrees on ``rot2dOnR2(8)``) go through the interpolated transports of
  :class:`~flow_escnn.flows._transport.TransportPlan`, one table per distinct action (cached),
  applied to the samples that share it. They need :math:`V` closed under the turn (a 45-degree
  turn does not map the integer translations to integer translations; refused with the reason).

Actions are rows ``(ux, uy, k)``: pixels per frame in the agent's frame (x right, y up, as
everywhere in flow_escnn) and ``k`` rotation steps of the gspace (``360/N`` degrees; degrees on
SO(2)). ``(0, 0, 0)`` is standing still.
"""
from __future__ import annotations

from fractions import Fraction
from typing import Any, Dict, List, NamedTuple, Optional, Tuple, Union

import numpy as np
import torch

from flow_escnn._validate import grid_shape as validate_grid_shape
from flow_escnn._validate import one_of
from flow_escnn.flows._element import GridElement
from flow_escnn.flows._flowset import FlowSet
from flow_escnn.flows._gather import inverse_permutation
from flow_escnn.flows._planar import is_continuous, rotation_element, steps_per_turn
from flow_escnn.flows._tables import DEFAULT_INTERPOLATION, INTERPOLATIONS, as_permutation
from flow_escnn.flows._transport import TransportPlan

__all__ = ["ActionTransport", "QuarterTurns", "Episode", "SelfMotion", "action_element", "check_actions"]


def action_element(gspace: Any, action: Any) -> GridElement:
    """The group element :math:`a = (u, r^k)` of an action row ``(ux, uy, k)``."""
    ux, uy, k = (float(v) for v in action)
    if is_continuous(gspace):
        steps: Any = Fraction(k).limit_denominator(10**6)
    else:
        if k != int(k):
            raise ValueError(f"an action turns by whole steps of 360/N degrees on {gspace}, got k={k!r}")
        steps = int(k)
    return GridElement(gspace, rotation_element(gspace, steps), (ux, uy))


def check_actions(actions: Any, batch: int, steps: int) -> torch.Tensor:
    """``actions`` as a float64 tensor ``[B, T, 3]`` of rows ``(ux, uy, k)`` with integer moves.

    Raises:
        TypeError, ValueError: naming what is wrong (shape, non-finite or fractional moves).
    """
    if not isinstance(actions, torch.Tensor):
        raise TypeError(f"actions must be a tensor [B, T, 3] of (ux, uy, k) rows, got {type(actions).__name__}")
    if actions.dim() != 3 or actions.shape[-1] != 3 or actions.shape[0] != batch or actions.shape[1] < steps:
        raise ValueError(
            f"actions must be [B={batch}, T>={steps}, 3] rows (ux, uy, k), one per frame, got {list(actions.shape)}"
        )
    a = actions.detach().to(torch.float64)
    if not bool(torch.isfinite(a).all()):
        raise ValueError("actions hold NaN or infinite values")
    moves = a[..., :2]
    if not bool((moves == moves.round()).all()):
        raise ValueError("actions move by whole pixels (ux, uy integers), so that self-motion is exact on the grid")
    return a


class _PermuteAlong(torch.autograd.Function):
    """``y = x.gather(dim, index)`` where ``index`` is a per-sample permutation ``[B, N]`` of axis ``dim``
    broadcast over the other axes (an expanded view: no full-size index is built); backward: the gather
    by the inverse permutation (no scatter)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, dim: int, index: torch.Tensor, inverse: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.dim = dim
        ctx.save_for_backward(inverse)
        return x.gather(dim, _along(index, x, dim))

    @staticmethod
    def backward(ctx: Any, gy: torch.Tensor) -> Tuple[Optional[torch.Tensor], ...]:  # type: ignore[override]
        (inverse,) = ctx.saved_tensors
        return gy.gather(ctx.dim, _along(inverse, gy, ctx.dim)), None, None, None


def _along(index: torch.Tensor, x: torch.Tensor, dim: int) -> torch.Tensor:
    """``index [B, N]`` as a view broadcast to ``x``'s shape, ``N`` on axis ``dim`` (``x``: ``[B, ...]``)."""
    shape = [index.shape[0]] + [1] * (x.dim() - 1)
    shape[dim] = index.shape[1]
    return index.reshape(shape).expand(x.shape)


def _permute_along(x: torch.Tensor, dim: int, index: torch.Tensor, inverse: torch.Tensor) -> torch.Tensor:
    """Per-sample permutation ``index [B, N]`` of axis ``dim`` of ``x [B, ...]`` (``inverse``: its inverse)."""
    if torch.is_grad_enabled() and x.requires_grad:
        return _PermuteAlong.apply(x, dim, index, inverse)
    return x.gather(dim, _along(index, x, dim))


class ActionTransport(torch.nn.Module):
    """Transport lifted maps ``[B, V, C, H, W]`` by the inverse of each sample's action (module docstring).

    Args:
        field_type: escnn ``FieldType`` of each :math:`V` slice (its gspace is the actions' gspace).
        flows: the flow set :math:`V` of the map.
        grid_shape: ``(H, W)`` of the map (a torus; square for turns).
        interpolation: resampling of the turns that are not multiples of 90 degrees.
    """

    def __init__(self, field_type: Any, flows: FlowSet, grid_shape: Tuple[int, int],
                 interpolation: str = DEFAULT_INTERPOLATION) -> None:
        super().__init__()
        if not isinstance(flows, FlowSet):
            raise TypeError(f"flows must be a FlowSet, got {type(flows).__name__}")
        if field_type.gspace != flows.gspace:
            raise ValueError(f"field_type ({field_type.gspace}) and flows ({flows.gspace}) must share one gspace")
        self.field_type = field_type
        self.flows = flows
        self.grid_shape = validate_grid_shape(grid_shape)
        self.interpolation = one_of(interpolation, INTERPOLATIONS, "interpolation")
        h, w = self.grid_shape
        self.channels = field_type.size
        self.steps_per_turn = steps_per_turn(field_type.gspace)
        # the quarter turns r^q (q = 0..3) as gspace elements, where the gspace has them
        quarters: Dict[int, Any] = {}
        for q in range(4):
            k = Fraction(self.steps_per_turn * q, 4)
            if k.denominator == 1 or is_continuous(field_type.gspace):
                try:
                    quarters[q] = rotation_element(field_type.gspace, int(k) if k.denominator == 1 else k)
                except ValueError:
                    continue
        self._vperm: Dict[Any, Union[List[int], str]] = {}  # fiber element -> V permutation, or why there is none
        fibers, vperms, vwhy = [], [], []
        for q in range(4):
            if q not in quarters:
                fibers.append(np.full((self.channels, self.channels), np.nan))
                vperms.append([-1] * len(flows))
                vwhy.append(f"the gspace has no {90 * q}-degree turn")
                continue
            rho = np.asarray(field_type.representation(quarters[q]), dtype=np.float64).reshape(self.channels,
                                                                                               self.channels)
            fibers.append(np.linalg.inv(rho))
            try:
                vperms.append(flows.action_permutation(quarters[q]))
                vwhy.append("")
            except ValueError as exc:
                vperms.append([-1] * len(flows))
                vwhy.append(str(exc))
        self.quarters = QuarterTurns(self.grid_shape, np.stack(fibers), np.asarray(vperms), vwhy)
        self._plans: Dict[Tuple[float, float, float], TransportPlan] = {}

    def extra_repr(self) -> str:
        return f"|V|={len(self.flows)}, C={self.channels}, grid={self.grid_shape}, interpolation={self.interpolation!r}"

    def _vperm_of(self, g: Any, what: str) -> List[int]:
        """``perm[nu'] = index(r . nu')``: the slice of the old map that becomes slice ``nu'``."""
        if g not in self._vperm:
            try:
                self._vperm[g] = self.flows.action_permutation(g)
            except ValueError as exc:
                self._vperm[g] = str(exc)
        perm = self._vperm[g]
        if isinstance(perm, str):
            raise ValueError(f"a turn by {what} relabels the velocities of V, but {perm}. {_CLOSED_V}")
        return perm

    # -- the transport -------------------------------------------------------------------------------
    def forward(self, h: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """:math:`a_b^{-1}\\cdot h_b` for every sample ``b``.

        Args:
            h: lifted maps ``[B, V, C, H, W]``.
            actions: ``[B, 3]`` rows ``(ux, uy, k)`` (see the module docstring).

        Returns:
            ``[B, V, C, H, W]``.
        """
        b, v, c, hh, ww = h.shape
        if (v, c, hh, ww) != (len(self.flows), self.channels, *self.grid_shape):
            raise ValueError(
                f"expected maps [B, V={len(self.flows)}, C={self.channels}, H, W={self.grid_shape}], got {list(h.shape)}"
            )
        if tuple(actions.shape) != (b, 3):
            raise ValueError(f"expected one action (ux, uy, k) per sample, [B={b}, 3], got {list(actions.shape)}")
        quarters = self.quarters.of_steps(actions[:, 2], self.steps_per_turn)
        if quarters is None:
            return self._interpolated(h, actions.detach().to("cpu", torch.float64))
        return self.quarters(h, actions, quarters)

    def _interpolated(self, h: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        """Turns that are not quarter turns: one interpolated plan per distinct action."""
        out = torch.empty_like(h)
        rows = [tuple(r) for r in a.tolist()]
        for key in dict.fromkeys(rows):
            idx = torch.tensor([i for i, r in enumerate(rows) if r == key], dtype=torch.long, device=h.device)
            element = action_element(self.field_type.gspace, key)
            plan = self._plans.get(key)
            if plan is None:
                plan = TransportPlan(self.field_type, [element.inverse()], self.grid_shape, self.interpolation)
                plan = self._plans[key] = plan.to(h.device)
            perm = self._vperm_of(element.g, f"{key[2]} steps")
            sub = h.index_select(0, idx)[:, perm]  # [n, V, C, H, W]: slice nu' reads r . nu'
            moved = plan(sub.reshape(-1, 1, *sub.shape[-3:])).reshape(sub.shape)
            out = out.index_copy(0, idx, moved)
        return out

    def exact_for(self, actions: torch.Tensor) -> bool:
        """Whether every action in ``actions [..., 3]`` is transported exactly (integer moves, quarter turns)."""
        a = actions.detach().to("cpu", torch.float64).reshape(-1, 3)
        return self.quarters.of_steps(a[:, 2], self.steps_per_turn) is not None and bool(
            (a[:, :2] == a[:, :2].round()).all())


_CLOSED_V = ("Use a V that the turn maps to itself (translations are closed under quarter turns; only V = {0} under "
             "other turns), or quarter turns")


class QuarterTurns(torch.nn.Module):
    """The exact part of :class:`ActionTransport` as plain torch (tensors only, so an exported model can
    hold it): integer moves and quarter turns of lifted maps on a torus, one batched gather.

    Args:
        grid_shape: ``(H, W)``.
        fibers: ``[4, C, C]``: :math:`\\rho(r^q)^{-1}` for ``q`` quarter turns (NaN where the gspace has none).
        vperms: ``[4, V]``: the slice of the old map that becomes slice ``nu'`` (-1 where V is not closed).
        why: per ``q``, why a turn is unavailable ("" where it is).
    """

    def __init__(self, grid_shape: Tuple[int, int], fibers: np.ndarray, vperms: np.ndarray, why: List[str]) -> None:
        super().__init__()
        h, w = grid_shape
        self.grid_shape = (int(h), int(w))
        self.why = list(why)
        i, j = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
        self.register_buffer("x", torch.from_numpy(j - (w - 1) / 2.0).reshape(-1), persistent=False)
        self.register_buffer("y", torch.from_numpy((h - 1) / 2.0 - i).reshape(-1), persistent=False)
        self.register_buffer("fibers", torch.from_numpy(np.nan_to_num(fibers, nan=0.0)), persistent=False)
        perms = [as_permutation(f) if not np.isnan(f).any() else None for f in fibers]
        c = fibers.shape[-1]
        self.permutation_fibers = all(p is not None for p, why_q in zip(perms, why) if not why_q)
        self.register_buffer("cperms", torch.from_numpy(np.stack([p if p is not None else np.arange(c)
                                                                  for p in perms])), persistent=False)
        self.register_buffer("vperms", torch.from_numpy(np.asarray(vperms, dtype=np.int64)), persistent=False)
        # no turn relabels nothing: then only the pixels move
        self.still_identity = bool((self.vperms[0] == torch.arange(self.vperms.shape[1])).all()
                                   and (self.cperms[0] == torch.arange(c)).all())

    def extra_repr(self) -> str:
        return f"grid={self.grid_shape}, |V|={self.vperms.shape[1]}, C={self.fibers.shape[-1]}"

    @staticmethod
    def of_steps(steps: torch.Tensor, steps_per_turn: int) -> Optional[torch.Tensor]:
        """The quarter turns ``q`` (long ``[B]``) of rotation ``steps``, or None if one is not a quarter turn."""
        turns = steps.detach().to(torch.float64) * (4.0 / steps_per_turn)
        q = torch.round(turns)
        if not bool(((turns - q).abs() < 1e-9).all()):
            return None
        return q.long() % 4

    def forward(self, h: torch.Tensor, actions: torch.Tensor, quarters: torch.Tensor) -> torch.Tensor:
        """:math:`a_b^{-1}\\cdot h_b` for actions ``[B, 3]`` whose turns are ``quarters`` ``[B]``."""
        return self.episode(actions[:, None], quarters[:, None], h.shape, h.device)(0, h)

    def episode(self, actions: torch.Tensor, quarters: torch.Tensor, shape: Tuple[int, ...],
                device: torch.device) -> "Episode":
        """The :class:`Episode` ``move``: ``move(t, h)`` is :math:`a_{b,t}^{-1}\\cdot h_b` for maps ``h`` of ``shape``
        ``[B, V, C, H, W]``, with the tables of all the steps of actions ``[B, T, 3]`` (turns ``quarters [B, T]``)
        checked and built at once."""
        b, v, c, hh, ww = shape
        t_steps = actions.shape[1]
        q = quarters.to(device)
        a = actions.detach().to(device=device, dtype=torch.float64)
        if not bool((a[..., :2] == a[..., :2].round()).all()):
            raise ValueError("actions move by whole pixels (ux, uy integers), so that self-motion is exact on the grid")
        moving = a.abs().reshape(b, t_steps, 3).any(-1).any(0).tolist()  # per step: does some sample act
        if bool((q % 2 == 1).any()) and hh != ww:
            raise ValueError(f"quarter turns need a square map, got {hh}x{ww}")
        for qq in torch.unique(q).tolist():
            if self.why[qq]:
                raise ValueError(f"a turn by {90 * qq} degrees relabels the velocities of V, but {self.why[qq]}. "
                                 f"{_CLOSED_V}")
        qt = q.t()  # [T, B]: one contiguous table per step
        cos = torch.tensor([1.0, 0.0, -1.0, 0.0], dtype=torch.float64, device=device)[qt][..., None]
        sin = torch.tensor([0.0, 1.0, 0.0, -1.0], dtype=torch.float64, device=device)[qt][..., None]
        # a^{-1} f (x) = rho(r)^-1 f(r x + u): the source of each output pixel
        at = a.transpose(0, 1)
        sx = cos * self.x - sin * self.y + at[..., 0:1]
        sy = sin * self.x + cos * self.y + at[..., 1:2]
        col = torch.round(sx + (ww - 1) / 2.0).long() % ww
        row = torch.round((hh - 1) / 2.0 - sy).long() % hh
        pix = (row * ww + col).contiguous()  # [T, B, HW]
        pix_inv = inverse_permutation(pix)
        turned = ((qt != 0).any(-1) | (not self.still_identity)).tolist()  # per step
        fibers = None
        if self.permutation_fibers:  # V and channel relabelling together ([B, V*C]); q = 0 is the identity
            rows = (self.vperms[qt][..., :, None] * c + self.cperms[qt][..., None, :]).reshape(t_steps, b, v * c)
        else:
            rows = self.vperms[qt]  # [T, B, V]
            fibers = self.fibers[qt]  # [T, B, C, C]
        return Episode(shape, moving, turned, pix, pix_inv, rows, inverse_permutation(rows), fibers)


class SelfMotion(NamedTuple):
    """One step of an exact self-motion of maps ``[B, V, C, *grid]`` as per-sample permutations
    (:meth:`Episode.permutation`): ``y[b, r, p] = h[b, rows[b, r], pixels[b, p]]`` over the rows ``r`` of the
    flattened ``(V, C)`` axes and the pixels ``p`` of the flattened grid."""

    pixels: Optional[torch.Tensor]  # [B, H*W] the source pixel of every pixel; None: no sample moves
    pixels_inverse: Optional[torch.Tensor]  # [B, H*W]
    rows: Optional[torch.Tensor]  # [B, V*C] the source (velocity, channel) row of every row; None: none relabelled
    rows_inverse: Optional[torch.Tensor]  # [B, V*C]


class Episode:
    """The self-motion of every step of an episode (:meth:`QuarterTurns.episode`), its tables built once.

    ``episode(t, h)`` is :math:`a_{b,t}^{-1}\\cdot h_b` for maps ``h [B, V, C, H, W]``: three per-sample
    permutations, each along its own axis with a small index (pixels, then the ``(V, C)`` rows, then, where
    the fibers are not permutations, the fiber matrices); the backward passes are the gathers by the inverse
    permutations. ``episode.permutation(t)`` hands out the same step as tables (:class:`SelfMotion`), so a
    caller can fold it into a gather of its own (the engine folds it into the flow transport,
    :meth:`flow_escnn.nn._engine.Recurrence.transport`).
    """

    def __init__(self, shape: Tuple[int, ...], moving: List[bool], turned: List[bool], pix: torch.Tensor,
                 pix_inv: torch.Tensor, rows: torch.Tensor, rows_inv: torch.Tensor,
                 fibers: Optional[torch.Tensor]) -> None:
        self.shape = tuple(int(n) for n in shape)
        self.moving, self.turned = moving, turned
        self.pix, self.pix_inv = pix, pix_inv  # [T, B, H*W]
        self.rows, self.rows_inv = rows, rows_inv  # [T, B, V*C] (permutation fibers) or [T, B, V]
        self.fibers = fibers  # None (permutation fibers) or [T, B, C, C]

    def permutation(self, t: int) -> Optional[SelfMotion]:
        """Step ``t`` as per-sample permutations of pixels and ``(V, C)`` rows; None when its fibers are dense
        matrices (a turn of irreps fields), which are no permutation."""
        if not self.moving[t]:
            return SelfMotion(None, None, None, None)
        if self.turned[t] and self.fibers is not None:
            return None
        if not self.turned[t]:
            return SelfMotion(self.pix[t], self.pix_inv[t], None, None)
        return SelfMotion(self.pix[t], self.pix_inv[t], self.rows[t], self.rows_inv[t])

    def __call__(self, t: int, h: torch.Tensor) -> torch.Tensor:
        if not self.moving[t]:
            return h
        b, v, c, hh, ww = self.shape
        n = hh * ww
        moved = _permute_along(h.reshape(b, v * c, n), 2, self.pix[t], self.pix_inv[t])
        if self.fibers is None:
            if self.turned[t]:
                moved = _permute_along(moved, 1, self.rows[t], self.rows_inv[t])
            return moved.view(b, v, c, hh, ww)
        moved = moved.view(b, v, c * n)
        if self.turned[t]:
            moved = _permute_along(moved, 1, self.rows[t], self.rows_inv[t])
        out = torch.einsum("bij,bvjn->bvin", self.fibers[t].to(h.dtype), moved.view(b, v, c, n))
        return out.reshape(b, v, c, hh, ww)
