"""Commuting diagrams for world models: episodes of views and actions (:mod:`flow_escnn.models._world`).

A world model maps views ``[B, T, C, h, w]`` and actions ``[B, T + P, 3]`` (rows ``(ux, uy, k)``,
the action into each frame in the agent's previous frame, :mod:`flow_escnn.flows._action`) to
predicted views ``[B, P, C, h, w]``. :func:`check_world_equivariance` only calls it, on
transformed episodes, and compares the predictions with their transforms:

* ``"turn"`` (any view): rotate (or reflect) every view by a grid-exact fiber element :math:`g`
  about its centre and conjugate every action, :math:`a_t \\mapsto g\\,a_t\\,g^{-1}` (the same
  episode seen by an agent whose frame is turned by :math:`g`):
  :math:`\\hat f'_s = g\\cdot\\hat f_s`.
* ``"self_motion"`` (fully observed worlds, view = world): the agent moves by the actions while
  its static twin stands still and sees :math:`f_t`; the mover sees
  :math:`f'_t = P_t^{-1}\\cdot f_t` with :math:`P_t = a_0 a_1\\cdots a_t`, so
  :math:`\\hat f'_s = P_s^{-1}\\cdot\\hat f_s` (the twin's predictions with zero actions).
* ``"shift"`` (fully observed, moves without turns): roll every view by an integer :math:`g`:
  :math:`\\hat f'_s = g\\cdot\\hat f_s`.
* ``"flow"`` (fully observed, moves without turns): the objects get an extra flow :math:`\\mu`,
  :math:`f'_t = \\psi_t(\\mu) f_t`: :math:`\\hat f'_s = \\psi_s(\\mu)\\hat f_s` (exact when :math:`V`
  covers the torus, as for the FERNN).

When the view is a window of a larger world, a shifted world or an extra object flow changes
what enters the window, so only ``"turn"`` is a diagram of the views; the others are then
refused with the reason. Reports and tolerances are those of :mod:`flow_escnn.checks._report`.
"""
from __future__ import annotations

from typing import Any, Callable, List, Optional, Sequence, Tuple

import torch

from flow_escnn.checks._report import CheckRow, EquivarianceReport, default_tolerances
from flow_escnn.flows._action import action_element, check_actions
from flow_escnn.flows._element import GridElement
from flow_escnn.flows._flowset import FlowSet
from flow_escnn.flows._planar import lattice_candidates, rotation_steps, spatial_matrix, steps_per_turn
from flow_escnn.flows._transport import TransportPlan

__all__ = ["check_world_equivariance", "WORLD_CHECKS"]

#: The diagrams :func:`check_world_equivariance` knows (module docstring).
WORLD_CHECKS = ("turn", "self_motion", "shift", "flow")

WorldModelLike = Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor]


def _transform(x: torch.Tensor, field_type: Any, element: GridElement) -> torch.Tensor:
    """``element . x`` for frames ``[N, C, H, W]`` (exact gathers for grid-exact elements)."""
    plan = TransportPlan(field_type, [element], tuple(x.shape[-2:])).to(x.device)
    return plan(x.unsqueeze(1)).squeeze(1)


def _per_frame(x: torch.Tensor, field_type: Any, elements: Sequence[Sequence[GridElement]]) -> torch.Tensor:
    """``elements[b][t] . x[b, t]`` for ``x [B, T, C, H, W]``."""
    return torch.stack([torch.stack([_transform(x[b, t : t + 1], field_type, elements[b][t])[0]
                                     for t in range(x.shape[1])]) for b in range(x.shape[0])])


def _row_of(gspace: Any, element: GridElement) -> List[float]:
    ux, uy = (float(v) for v in element.translation)
    return [ux, uy, float(rotation_steps(gspace, element.g))]


def _rows(check: str, label: str, actual: torch.Tensor, expected: torch.Tensor, atol: float, rtol: float) -> List[CheckRow]:
    rows = []
    for t in range(actual.shape[1]):
        err = float((actual[:, t] - expected[:, t]).abs().max())
        ref = float(expected[:, t].abs().max())
        tol = atol + rtol * ref
        rel = err / ref if ref > 0 else (0.0 if err == 0 else float("inf"))
        rows.append(CheckRow(check, label, t, err, rel, ref, tol, 1, 1, True, err <= tol))
    return rows


def check_world_equivariance(
    model: WorldModelLike,
    views: torch.Tensor,
    actions: torch.Tensor,
    in_type: Any,
    num_predictions: int = 1,
    *,
    checks: Sequence[str] = ("turn",),
    elements: Optional[Sequence[Any]] = None,
    shifts: Sequence[Tuple[int, int]] = ((1, 0), (0, -1)),
    flows: Sequence[Tuple[int, int]] = ((1, 0),),
    fully_observed: Optional[bool] = None,
    atol: Optional[float] = None,
    rtol: Optional[float] = None,
    allow_training: bool = False,
) -> EquivarianceReport:
    """Check a world model's diagrams on one batch of episodes (module docstring).

    Args:
        model: ``model(views, actions, num_predictions) -> [B, P, C, h, w]``; an ``nn.Module`` must be in eval
            mode.
        views: ``[B, T, C, h, w]`` of type ``in_type``.
        actions: ``[B, >= T + P, 3]`` rows ``(ux, uy, k)`` (``k`` rotation steps of the gspace).
        in_type: escnn ``FieldType`` of the views.
        num_predictions: ``P``.
        checks: which of :data:`WORLD_CHECKS` to run.
        elements: fiber elements of ``"turn"`` (default: every grid-exact one but the identity).
        shifts: integer ``(gx, gy)`` of ``"shift"``.
        flows: integer object velocities :math:`\\mu` of ``"flow"``.
        fully_observed: whether the views are the whole world (default: ``model.fully_observed``, else False).
        atol, rtol: tolerances (default by dtype).
        allow_training: accept a module in training mode.

    Returns:
        An :class:`~flow_escnn.checks.EquivarianceReport` with one row per (check, transform, predicted frame).

    Raises:
        ValueError: on a check that does not apply (e.g. ``"self_motion"`` on a partial view), or bad inputs.
    """
    for name in checks:
        if name not in WORLD_CHECKS:
            raise ValueError(f"checks must be among {WORLD_CHECKS}, got {name!r}")
    if isinstance(model, torch.nn.Module) and model.training and not allow_training:
        raise ValueError("the model is in training mode (dropout, batch statistics): call model.eval(), or pass "
                         "allow_training=True")
    if not isinstance(views, torch.Tensor) or views.dim() != 5 or views.shape[2] != in_type.size:
        raise ValueError(f"views must be [B, T, C={in_type.size}, h, w] of type in_type")
    b, t_in = views.shape[0], views.shape[1]
    acts = check_actions(actions, b, t_in + num_predictions)[:, : t_in + num_predictions].to(views.device)
    a_tol, r_tol = default_tolerances(views.dtype, atol, rtol)
    observed = bool(getattr(model, "fully_observed", False)) if fully_observed is None else bool(fully_observed)
    gs = in_type.gspace
    turning = bool((acts[..., 2] != 0).any())
    for name in checks:
        if name != "turn" and not observed:
            raise ValueError(f"the {name!r} diagram holds for fully observed worlds (view = world); with a window of a "
                             "larger world new content enters it. Check 'turn' instead, or use a fully observed world")
        if name in ("shift", "flow") and turning:
            raise ValueError(f"the {name!r} diagram needs actions without turns (a turn does not commute with a "
                             "world-frame shift or flow)")
    with torch.no_grad():
        rows = _check_rows(model, views, acts, in_type, num_predictions, checks, elements, shifts, flows, a_tol, r_tol)
    notes = [f"quarter turns relabel V; the turn check conjugates actions; {steps_per_turn(gs)} steps per turn"]
    return EquivarianceReport(rows=rows, atol=a_tol, rtol=r_tol, dtype=str(views.dtype), output_kind="plain",
                              time_offset=t_in, notes=notes)


def _check_rows(model: WorldModelLike, views: torch.Tensor, acts: torch.Tensor, in_type: Any, num_predictions: int,
                checks: Sequence[str], elements: Optional[Sequence[Any]], shifts: Sequence[Tuple[int, int]],
                flows: Sequence[Tuple[int, int]], a_tol: float, r_tol: float) -> List[CheckRow]:
    gs = in_type.gspace
    b, t_in = views.shape[0], views.shape[1]
    base = model(views, acts.to(views.dtype), num_predictions)
    rows: List[CheckRow] = []
    if "turn" in checks:
        for g in (elements if elements is not None else _exact_elements(gs)):
            e = GridElement(gs, g)
            conj = [[_row_of(gs, e @ action_element(gs, r) @ e.inverse()) for r in acts[i].tolist()] for i in range(b)]
            v2 = _per_frame(views, in_type, [[e] * t_in for _ in range(b)])
            out = model(v2, torch.tensor(conj, dtype=views.dtype, device=views.device), num_predictions)
            expected = _per_frame(base, in_type, [[e] * num_predictions for _ in range(b)])
            rows += _rows("turn", f"g={g}", out, expected, a_tol, r_tol)
    if "self_motion" in checks:
        still = model(views, torch.zeros_like(acts, dtype=views.dtype), num_predictions)
        poses = []  # P_t = a_0 a_1 ... a_t per sample
        for i in range(b):
            p = GridElement.identity(gs)
            row = []
            for r in acts[i].tolist():
                p = p @ action_element(gs, r)
                row.append(p.inverse())
            poses.append(row)
        v2 = _per_frame(views, in_type, [pp[:t_in] for pp in poses])
        out = model(v2, acts.to(views.dtype), num_predictions)
        expected = _per_frame(still, in_type, [pp[t_in:] for pp in poses])
        rows += _rows("self_motion", "P_t^-1 views", out, expected, a_tol, r_tol)
    if "shift" in checks:
        for g in shifts:
            e = GridElement(gs, translation=g)
            v2 = _per_frame(views, in_type, [[e] * t_in for _ in range(b)])
            out = model(v2, acts.to(views.dtype), num_predictions)
            expected = _per_frame(base, in_type, [[e] * num_predictions for _ in range(b)])
            rows += _rows("shift", f"g={tuple(g)}", out, expected, a_tol, r_tol)
    if "flow" in checks:
        for mu in flows:
            gen = FlowSet.as_generator(gs, mu)
            v2 = _per_frame(views, in_type, [[gen.psi(t) for t in range(t_in)] for _ in range(b)])
            out = model(v2, acts.to(views.dtype), num_predictions)
            expected = _per_frame(base, in_type, [[gen.psi(t_in + s) for s in range(num_predictions)] for _ in range(b)])
            rows += _rows("flow", f"mu={tuple(mu)}", out, expected, a_tol, r_tol)
    return rows


def _exact_elements(gspace: Any) -> List[Any]:
    """The fiber elements (identity excluded) that map the pixel grid onto itself."""
    out = []
    for g in lattice_candidates(gspace):
        a = spatial_matrix(gspace, g)
        if (a == a.round()).all() and g != gspace.fibergroup.identity:
            out.append(g)
    return out
