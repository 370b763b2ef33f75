"""Velocity sets for the flowing-digit and moving-KTH data.

A data velocity is a triple :math:`(v_x, v_y, \\omega)`: an integer translation in
pixels per frame (x along the last array axis, **y up**, as everywhere in
flow_escnn, see :mod:`flow_escnn.flows._planar`) and an angular velocity
:math:`\\omega` in **degrees** per frame (counter-clockwise, about the grid centre).
It names the flow generator :math:`\\nu = (u, R_\\omega)` with one-step element
:math:`g_\\nu = (u, R_\\omega) \\in \\mathbb{R}^2 \\rtimes SO(2)` and the flow
:math:`\\psi_t(\\nu) = g_\\nu^{\\,t}`, exactly as
:class:`~flow_escnn.flows._generator.FlowGenerator` does (which, unlike the data, only
allows angles that are whole steps of :math:`2\\pi/N`; convert with
:func:`~flow_escnn.flows.kinds.degrees_to_steps`).

What each kind of flow accepts, and its defaults, is its
:class:`~flow_escnn.flows.kinds.FlowKind`'s business; these helpers only ask it. The sets are
ordered like the :class:`~flow_escnn.flows._flowset.FlowSet` constructors (lexicographic in
``(vx, vy)``; angles outermost for products), so a data velocity set and a model's V line
up index for index.
"""
from __future__ import annotations

from typing import Any, Iterable, List, Tuple, Union

import numpy as np

from flow_escnn.flows.kinds import (
    FlowKind,
    flow_kind,
    rotation_velocities,
    translation_velocities,
)

__all__ = [
    "translation_velocities",
    "rotation_velocities",
    "roto_translation_velocities",
    "default_velocities",
    "velocity_array",
]



def roto_translation_velocities(
    radius: int, max_degrees: float = 40.0, step: float = 10.0
) -> List[Tuple[int, int, float]]:
    """Product of :func:`rotation_velocities` (outer) and :func:`translation_velocities` (inner).

    Returns:
        Triples ``(vx, vy, degrees_per_frame)``, ordered like
        :meth:`FlowSet.roto_translations <flow_escnn.flows._flowset.FlowSet.roto_translations>`.
    """
    return [(vx, vy, w) for w in rotation_velocities(max_degrees, step) for vx, vy in translation_velocities(radius)]


def default_velocities(flow: Union[str, FlowKind]) -> List[Any]:
    """The default data velocity set of a flow kind (its ``default_data`` spec): ``[-2, 2]^2`` for
    translations (the paper's translating MNIST), ``{-40, ..., 40}`` degrees in steps of 10 for
    rotations (the paper's rotating MNIST), ``[-1, 1]^2 x {-40, ..., 40}`` for both (no paper
    counterpart; a small default for experiments)."""
    kind = flow_kind(flow)
    return kind.parse(kind.default_data)


def velocity_array(velocities: Iterable[Any], flow: Union[str, FlowKind]) -> np.ndarray:
    """Validate a velocity set and return it as a float64 array ``[M, 3]`` of ``(vx, vy, deg)``.

    Args:
        velocities: for ``flow="translation"`` pairs ``(vx, vy)``; for ``"rotation"``
            angles in degrees per frame; for every kind triples ``(vx, vy, degrees)``
            (which must then match the kind) or a ``[M, 3]`` array of them.
            :class:`~flow_escnn.flows._generator.FlowGenerator` objects (e.g. a
            :class:`~flow_escnn.flows._flowset.FlowSet`) are accepted for every kind.
            Note: a 3-tuple here carries *degrees*, not the ``k`` rotation steps of a
            ``FlowSet`` velocity tuple.
        flow: a flow kind or its name (``"translation"``, ``"rotation"``, ``"both"``).

    Returns:
        ``[M, 3]`` float64, rows in the given order.

    Raises:
        ValueError: on an empty set, duplicates, non-integer translations, or a velocity
            that does not match ``flow``.
    """
    kind = flow_kind(flow)
    if isinstance(velocities, (str, bytes)):
        raise ValueError(f"velocities must be a collection of velocities, got {velocities!r}")
    rows = [kind.check(v) for v in velocities]
    if not rows:
        raise ValueError("the velocity set is empty")
    seen = {}
    for i, r in enumerate(rows):
        key = (r[0], r[1], round(r[2] % 360.0, 9) % 360.0)
        if key in seen:
            raise ValueError(f"duplicate velocity {r} at positions {seen[key]} and {i}")
        seen[key] = i
    return np.asarray(rows, dtype=np.float64).reshape(-1, 3)
