"""Volume translation flows: content of a voxel grid moving by whole voxels per frame along x, y and z.

A kind of :data:`~flow_escnn.flows.kinds.VOLUME_FLOW_KINDS` (``dimension = 3``): its data velocities
are the rows ``(vx, vy, vz)`` (voxels per frame in escnn's voxel convention, x along the last array
axis, y up the rows, z towards the front: :mod:`flow_escnn.flows._volume`), and the model's V is
``FlowSet.translations(gspace, R)`` on a 3D gspace, the :math:`(2R+1)^3` velocities of
:math:`[-R, R]^3`. The planar data generators, configs and CLI do not take it yet (they read
:data:`~flow_escnn.flows.kinds.FLOW_KINDS`, the planar kinds).
"""
from __future__ import annotations

from typing import Any, Dict, List, Sequence, Tuple

from flow_escnn.flows._flowset import FlowSet
from flow_escnn.flows._volume import is_volume_gspace
from flow_escnn.flows.kinds.base import FlowKind, read_int_lists, read_radius, whole_pixels

__all__ = ["KIND", "VolumeTranslationKind", "TRANSLATION3D"]

Row3 = Tuple[int, int, int]


class VolumeTranslationKind(FlowKind):
    """Velocities ``(vx, vy, vz)`` in voxels per frame; the model's V is ``FlowSet.translations(gs_3d, R)``.

    Example:
        >>> from escnn import gspaces
        >>> kind = VolumeTranslationKind()
        >>> rows = kind.parse("1:0:0,0:0:-2")
        >>> rows
        [(1, 0, 0), (0, 0, -2)]
        >>> params, notes = kind.default_params(rows)
        >>> params, len(kind.model_flows(gspaces.rot2dOnR3(4), **params))  # [-2, 2]^3
        ({'flow_radius': 2}, 125)
    """

    name = "translation3d"
    dimension = 3
    translates = True
    rotates = False
    syntax = "'R' (all integer velocities in [-R, R]^3) or a list 'vx:vy:vz,...' (e.g. '1:0:0,0:0:-1')"
    default_sets = ("1", "2")
    default_data = "2"
    heatmap = False
    order = 10
    params = ("flow_radius",)

    def _parse(self, s: str, text: str) -> List[Any]:
        if "," in s or ":" in s:
            return read_int_lists(s, self, text, ("vx", "vy", "vz"))
        r = read_radius(s, self, text)
        span = range(-r, r + 1)
        return [(vx, vy, vz) for vx in span for vy in span for vz in span]

    def check(self, velocity: Any) -> Row3:  # type: ignore[override]
        """A data velocity as a row ``(vx, vy, vz)`` of whole voxels per frame; ``ValueError`` otherwise.

        Accepts a triple, or a :class:`~flow_escnn.flows._volume.VolumeGenerator` without rotation.
        """
        if hasattr(velocity, "rotation") and hasattr(velocity, "velocity"):  # a VolumeGenerator
            if any(velocity.rotation):
                raise ValueError(f"flow={self.name!r} got a rotating velocity {velocity!r}; volume rotations are not "
                                 "a data kind yet")
            velocity = velocity.translation
        if isinstance(velocity, (str, bytes)) or not hasattr(velocity, "__iter__"):
            raise ValueError(self.hint(velocity))
        t = tuple(velocity)
        if len(t) != 3:
            raise ValueError(self.hint(velocity))
        return tuple(whole_pixels(v, a) for v, a in zip(t, ("vx", "vy", "vz")))  # type: ignore[return-value]

    def hint(self, v: Any) -> str:
        return f"a velocity for flow={self.name!r} is (vx, vy, vz) with integer voxels per frame, got {v!r}"

    def model_flows(self, gspace: Any, flow_radius: int = 0, **params: Any) -> FlowSet:
        self.check_params(params)
        if not is_volume_gspace(gspace):
            raise ValueError(f"flow={self.name!r} moves volumes: it needs a 3D gspace (e.g. escnn.gspaces.octaOnR3()), "
                             f"got {gspace!r}")
        return FlowSet.translations(gspace, flow_radius)

    def default_params(self, rows: Sequence[Any], steps_per_turn: int = 1) -> Tuple[Dict[str, Any], List[str]]:
        """The smallest radius whose V covers the rows (``steps_per_turn`` is unused: no rotations)."""
        return {"flow_radius": int(max(max(abs(v) for v in r[:3]) for r in rows))}, []

    def key(self, row: Any) -> str:
        return "(" + ",".join(str(int(v)) for v in row[:3]) + ")"

    def speed(self, row: Any) -> float:
        return float(max(abs(v) for v in row[:3]))

    @property
    def speed_label(self) -> str:
        return "speed: max(|vx|, |vy|, |vz|) [voxels/frame]"


TRANSLATION3D = VolumeTranslationKind()

#: The registry record (:mod:`flow_escnn.flows.kinds`).
KIND = TRANSLATION3D
