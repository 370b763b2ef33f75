"""Translation flows: a digit (or a whole frame) moving by whole pixels per frame."""
from __future__ import annotations

from typing import Any, List, Tuple

from flow_escnn.flows._flowset import FlowSet
from flow_escnn.flows.kinds.base import FlowKind, read_int_lists, read_radius, translation_velocities

__all__ = ["KIND", "TranslationKind", "TRANSLATION"]


class TranslationKind(FlowKind):
    """Velocities ``(vx, vy)`` in pixels per frame; the model's V is ``FlowSet.translations(gs, R)``."""

    name = "translation"
    translates = True
    rotates = False
    syntax = "'R' (all integer velocities in [-R, R]^2) or a list 'vx:vy,vx:vy,...' (e.g. '1:0,0:1')"
    default_sets = ("1", "2")
    default_data = "2"
    heatmap = True
    order = 0
    params = ("flow_radius",)

    def _parse(self, s: str, text: str) -> List[Any]:
        if "," in s or ":" in s:
            return [(vx, vy, 0.0) for vx, vy in read_int_lists(s, self, text, ("vx", "vy"))]
        return [(vx, vy, 0.0) for vx, vy in translation_velocities(read_radius(s, self, text))]

    def _row(self, v: Any) -> Tuple[Any, Any, Any]:
        if not hasattr(v, "angle"):
            try:
                t = tuple(v)
            except TypeError:
                raise ValueError(self.hint(v)) from None
            if len(t) == 2:
                return t[0], t[1], 0.0
        return super()._row(v)

    def hint(self, v: Any) -> str:
        return (f"a velocity for flow={self.name!r} is (vx, vy) with integer pixels per frame, or (vx, vy, "
                f"degrees_per_frame), or a FlowGenerator, got {v!r}")

    def model_flows(self, gspace: Any, flow_radius: int = 0, **params: Any) -> FlowSet:
        self.check_params(params)
        return FlowSet.translations(gspace, flow_radius)


TRANSLATION = TranslationKind()

#: The registry record (:mod:`flow_escnn.flows.kinds`).
KIND = TRANSLATION
