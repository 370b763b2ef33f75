"""Rotation flows: a centred digit spinning about the grid centre by an angle per frame."""
from __future__ import annotations

from numbers import Real
from typing import Any, List, Sequence, Tuple

import numpy as np

from flow_escnn.flows._flowset import FlowSet
from flow_escnn.flows.kinds.base import FlowKind, read_angles, read_float

__all__ = ["KIND", "RotationKind", "ROTATION"]


class RotationKind(FlowKind):
    """Angular velocities in degrees per frame; the model's V is ``FlowSet.rotations(gs, steps)``."""

    name = "rotation"
    translates = False
    rotates = True
    syntax = ("'M' or 'M/S' (-M..M degrees per frame in steps of S, default 10) or a list 'a,b,...' of degrees "
              "(one angle: '30,')")
    default_sets = ("20", "40")
    default_data = "40"
    order = 1
    params = ("flow_steps",)

    def _parse(self, s: str, text: str) -> List[Any]:
        if ":" in s:
            raise self.bad(text, "rotation velocities are angles; use flow 'both' for translations")
        if "," in s:
            return [(0, 0, read_float(a, self, text)) for a in s.split(",") if a]
        return [(0, 0, w) for w in read_angles(s, self, text)]

    def _row(self, v: Any) -> Tuple[Any, Any, Any]:
        if isinstance(v, (Real, np.number)) and not isinstance(v, bool):
            return 0, 0, float(v)
        return super()._row(v)

    def hint(self, v: Any) -> str:
        return (f"a velocity for flow={self.name!r} is an angle in degrees per frame, or (vx, vy, degrees_per_frame), "
                f"or a FlowGenerator, got {v!r}")

    def model_flows(self, gspace: Any, flow_steps: Sequence[int] = (0,), **params: Any) -> FlowSet:
        self.check_params(params)
        return FlowSet.rotations(gspace, list(flow_steps))


ROTATION = RotationKind()

#: The registry record (:mod:`flow_escnn.flows.kinds`).
KIND = ROTATION
