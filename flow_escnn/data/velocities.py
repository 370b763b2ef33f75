"""Velocity sets for the flowing-digit and moving-KTH data.

A data velocity is a triple :math:`(v_x, v_y, \\omega)`: an integer translation in
pixels per frame (x along the last array axis, **y up**, as everywhere in
flow_escnn, see :mod:`flow_escnn.flows.gspace_utils`) and an angular velocity
:math:`\\omega` in **degrees** per frame (counter-clockwise, about the grid centre).
It names the flow generator :math:`\\nu = (u, R_\\omega)` with one-step element
:math:`g_\\nu = (u, R_\\omega) \\in \\mathbb{R}^2 \\rtimes SO(2)` and the flow
:math:`\\psi_t(\\nu) = g_\\nu^{\\,t}`, exactly as
:class:`~flow_escnn.flows.generator.FlowGenerator` does (which, unlike the data, only
allows angles that are whole steps of :math:`2\\pi/N`).

The helpers below order their sets like the :class:`~flow_escnn.flows.flowset.FlowSet`
constructors (lexicographic in ``(vx, vy)``; angles outermost for products), so a
data velocity set and a model's V line up index for index.
"""
from __future__ import annotations

import math
from numbers import Real
from typing import Any, Iterable, List, Tuple

import numpy as np

from flow_escnn.data._checks import non_negative_int
from flow_escnn.flows.generator import FlowGenerator

__all__ = [
    "FLOW_KINDS",
    "translation_velocities",
    "rotation_velocities",
    "roto_translation_velocities",
    "default_velocities",
    "velocity_array",
]

#: The flow kinds the data generators understand.
FLOW_KINDS = ("translation", "rotation", "both")


def translation_velocities(radius: int) -> List[Tuple[int, int]]:
    """All integer velocities :math:`(v_x, v_y)` with :math:`\\max(|v_x|, |v_y|) \\le r`.

    Args:
        radius: :math:`r \\ge 0`; ``1`` gives the paper's :math:`V_1^T` (9 velocities),
            ``2`` gives :math:`[-2, 2]^2` (25).

    Returns:
        The ``(2r+1)^2`` pairs, ordered lexicographically by ``(vx, vy)`` like
        :meth:`FlowSet.translations <flow_escnn.flows.flowset.FlowSet.translations>`.
    """
    r = non_negative_int(radius, "radius")
    return [(vx, vy) for vx in range(-r, r + 1) for vy in range(-r, r + 1)]


def rotation_velocities(max_degrees: float = 40.0, step: float = 10.0) -> List[float]:
    """Angular velocities :math:`\\{-m, -m+s, \\dots, m\\}` in degrees per frame.

    Args:
        max_degrees: :math:`m \\ge 0`, a multiple of ``step``.
        step: :math:`s > 0`.

    Returns:
        ``2m/s + 1`` angles in increasing order; the defaults give the paper's rotating
        MNIST set :math:`\\{-40, -30, \\dots, 40\\}`.

    Raises:
        ValueError: when ``max_degrees`` is negative or not a multiple of ``step``.
    """
    m, s = float(max_degrees), float(step)
    if not (math.isfinite(m) and math.isfinite(s)) or m < 0 or s <= 0:
        raise ValueError(f"need max_degrees >= 0 and step > 0, got max_degrees={max_degrees!r}, step={step!r}")
    n = m / s
    if abs(n - round(n)) > 1e-9:
        raise ValueError(f"max_degrees={max_degrees!r} is not a multiple of step={step!r}")
    n = int(round(n))
    return [float(k * s) for k in range(-n, n + 1)]


def roto_translation_velocities(
    radius: int, max_degrees: float = 40.0, step: float = 10.0
) -> List[Tuple[int, int, float]]:
    """Product of :func:`rotation_velocities` (outer) and :func:`translation_velocities` (inner).

    Returns:
        Triples ``(vx, vy, degrees_per_frame)``, ordered like
        :meth:`FlowSet.roto_translations <flow_escnn.flows.flowset.FlowSet.roto_translations>`.
    """
    return [(vx, vy, w) for w in rotation_velocities(max_degrees, step) for vx, vy in translation_velocities(radius)]


def default_velocities(flow: str) -> List[Any]:
    """The default velocity set of a flow kind.

    ``"translation"``: :math:`[-2, 2]^2` (the paper's translating MNIST);
    ``"rotation"``: :math:`\\{-40, \\dots, 40\\}` degrees in steps of 10 (the paper's
    rotating MNIST); ``"both"``: :math:`[-1, 1]^2 \\times \\{-40, \\dots, 40\\}` (no paper
    counterpart; a small default for experiments).
    """
    flow = _check_flow(flow)
    if flow == "translation":
        return list(translation_velocities(2))
    if flow == "rotation":
        return list(rotation_velocities(40.0, 10.0))
    return list(roto_translation_velocities(1, 40.0, 10.0))


def _check_flow(flow: str) -> str:
    if flow not in FLOW_KINDS:
        raise ValueError(f"flow must be one of {FLOW_KINDS}, got {flow!r}")
    return flow


def _as_int(value: Any, what: str) -> int:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be an integer number of pixels per frame, got {value!r}") from None
    if not math.isfinite(v) or v != int(v):
        raise ValueError(
            f"{what} must be an integer number of pixels per frame, got {value!r} "
            "(integer translations keep the data an exact flow on the pixel grid)"
        )
    return int(v)


def _one_velocity(v: Any, flow: str) -> Tuple[int, int, float]:
    if isinstance(v, FlowGenerator):
        (vx, vy), w = v.translation, math.degrees(v.angle)
    elif flow == "rotation" and isinstance(v, (Real, np.number)) and not isinstance(v, bool):
        vx, vy, w = 0, 0, float(v)
    else:
        try:
            t = tuple(v)
        except TypeError:
            raise ValueError(_format_hint(v, flow)) from None
        if flow == "translation" and len(t) == 2:
            vx, vy, w = t[0], t[1], 0.0
        elif len(t) == 3:
            vx, vy, w = t
        else:
            raise ValueError(_format_hint(v, flow))
    vx, vy = _as_int(vx, "vx"), _as_int(vy, "vy")
    try:
        w = float(w)
    except (TypeError, ValueError):
        raise ValueError(f"angular velocity must be a number of degrees per frame, got {w!r}") from None
    if not math.isfinite(w):
        raise ValueError(f"angular velocity must be finite, got {w!r}")
    if flow == "translation" and w != 0.0:
        raise ValueError(f"flow='translation' got a rotating velocity {v!r}; use flow='both'")
    if flow == "rotation" and (vx, vy) != (0, 0):
        raise ValueError(f"flow='rotation' got a translating velocity {v!r}; use flow='both'")
    return vx, vy, w


def _format_hint(v: Any, flow: str) -> str:
    fmt = {
        "translation": "(vx, vy) with integer pixels per frame",
        "rotation": "an angle in degrees per frame",
        "both": "(vx, vy, degrees_per_frame)",
    }[flow]
    if flow != "both":
        fmt += ", or (vx, vy, degrees_per_frame)"
    return f"a velocity for flow={flow!r} is {fmt} or a FlowGenerator, got {v!r}"


def velocity_array(velocities: Iterable[Any], flow: str) -> np.ndarray:
    """Validate a velocity set and return it as a float64 array ``[M, 3]`` of ``(vx, vy, deg)``.

    Args:
        velocities: for ``flow="translation"`` pairs ``(vx, vy)``; for ``"rotation"``
            angles in degrees per frame; for every kind triples ``(vx, vy, degrees)``
            (which must then match the kind) or a ``[M, 3]`` array of them.
            :class:`~flow_escnn.flows.generator.FlowGenerator` objects (e.g. a
            :class:`~flow_escnn.flows.flowset.FlowSet`) are accepted for every kind.
            Note: a 3-tuple here carries *degrees*, not the ``k`` rotation steps of a
            ``FlowSet`` velocity tuple.
        flow: ``"translation"``, ``"rotation"`` or ``"both"``.

    Returns:
        ``[M, 3]`` float64, rows in the given order.

    Raises:
        ValueError: on an empty set, duplicates, non-integer translations, or a velocity
            that does not match ``flow``.
    """
    flow = _check_flow(flow)
    if isinstance(velocities, (str, bytes)):
        raise ValueError(f"velocities must be a collection of velocities, got {velocities!r}")
    rows = [_one_velocity(v, flow) for v in velocities]
    if not rows:
        raise ValueError("the velocity set is empty")
    seen = {}
    for i, r in enumerate(rows):
        key = (r[0], r[1], round(r[2] % 360.0, 9) % 360.0)
        if key in seen:
            raise ValueError(f"duplicate velocity {r} at positions {seen[key]} and {i}")
        seen[key] = i
    return np.asarray(rows, dtype=np.float64).reshape(-1, 3)
