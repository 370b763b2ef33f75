"""Roto-translation flows (``"both"``): each velocity translates *and* rotates; the content orbits."""
from __future__ import annotations

from typing import Any, List, Sequence

from flow_escnn.flows._flowset import FlowSet
from flow_escnn.flows.kinds.base import FlowKind, read_angles, read_float, read_int, read_radius, translation_velocities

__all__ = ["KIND", "RotoTranslationKind", "ROTO_TRANSLATION"]


class RotoTranslationKind(FlowKind):
    """Velocities ``(vx, vy, degrees)``; the model's V is ``FlowSet.roto_translations(gs, R, steps)``."""

    name = "both"
    translates = True
    rotates = True
    syntax = "'R@M' or 'R@M/S' (translations [-R, R]^2 times angles -M..M step S) or a list 'vx:vy:deg,...'"
    default_sets = ("1@20", "2@40")
    default_data = "1@40"
    order = 2
    params = ("flow_radius", "flow_steps")

    def _parse(self, s: str, text: str) -> List[Any]:
        explicit = "," in s or ":" in s
        if "@" in s and not explicit:
            r, _, m = s.partition("@")
            pairs = translation_velocities(read_radius(r, self, text))
            return [(vx, vy, w) for w in read_angles(m, self, text) for vx, vy in pairs]
        if explicit and "@" not in s:
            rows = []
            for item in (p for p in s.split(",") if p):
                parts = item.split(":")
                if len(parts) != 3:
                    raise self.bad(text, f"{item!r} is not 'vx:vy:deg'")
                rows.append((read_int(parts[0], self, text), read_int(parts[1], self, text),
                             read_float(parts[2], self, text)))
            return rows
        raise self.bad(text)

    def model_flows(self, gspace: Any, flow_radius: int = 0, flow_steps: Sequence[int] = (0,),
                    **params: Any) -> FlowSet:
        self.check_params(params)
        return FlowSet.roto_translations(gspace, flow_radius, list(flow_steps))


ROTO_TRANSLATION = RotoTranslationKind()

#: The registry record (:mod:`flow_escnn.flows.kinds`).
KIND = ROTO_TRANSLATION
