"""The flow kinds, one file each, and their registry :data:`FLOW_KINDS`.

Adding a kind is adding one file here that defines a
:class:`~flow_escnn.flows.kinds.base.FlowKind` subclass and ``KIND = YourKind()`` (plus its
tests): the modules of this package are found and imported here, so the data generators, the
configs, the CLI (``--flow``) and the plots know it without another edit (see
``docs/architecture.rst``).

A kind serves one base space (:attr:`FlowKind.dimension <flow_escnn.flows.kinds.base.FlowKind.dimension>`):
:data:`FLOW_KINDS` holds the planar kinds (what the data generators, the configs and the CLI take),
:data:`VOLUME_FLOW_KINDS` the volume (3D) kinds, :data:`ALL_FLOW_KINDS` both.
"""
from __future__ import annotations

from typing import Dict, Union

from flow_escnn._registry import discover
from flow_escnn._validate import one_of
from flow_escnn.flows.kinds.base import (
    MODEL_PARAMS,
    FlowKind,
    degrees_to_steps,
    parse_steps,
    rotation_velocities,
    steps_to_degrees,
    translation_velocities,
)
from flow_escnn.flows.kinds.roto_translation import ROTO_TRANSLATION
from flow_escnn.flows.kinds.rotation import ROTATION
from flow_escnn.flows.kinds.translation import TRANSLATION
from flow_escnn.flows.kinds.translation3d import TRANSLATION3D

__all__ = [
    "FlowKind",
    "FLOW_KINDS",
    "VOLUME_FLOW_KINDS",
    "ALL_FLOW_KINDS",
    "MODEL_PARAMS",
    "flow_kind",
    "TRANSLATION",
    "ROTATION",
    "ROTO_TRANSLATION",
    "TRANSLATION3D",
    "degrees_to_steps",
    "steps_to_degrees",
    "parse_steps",
    "translation_velocities",
    "rotation_velocities",
]



#: Every flow kind of every base space, by name (in the order of their ``order``, then name).
ALL_FLOW_KINDS: Dict[str, FlowKind] = dict(
    sorted(discover(__name__, __path__, FlowKind, skip=("base",)).items(), key=lambda kv: (kv[1].order, kv[0]))
)
#: The planar flow kinds (``dimension == 2``), by name: the CLI's ``--flow`` choices, the data and the configs.
FLOW_KINDS: Dict[str, FlowKind] = {n: k for n, k in ALL_FLOW_KINDS.items() if k.dimension == 2}
#: The volume flow kinds (``dimension == 3``), by name: flows on escnn's 3D gspaces.
VOLUME_FLOW_KINDS: Dict[str, FlowKind] = {n: k for n, k in ALL_FLOW_KINDS.items() if k.dimension == 3}


def flow_kind(kind: Union[str, FlowKind], dimension: int = 2) -> FlowKind:
    """The :class:`FlowKind` named ``kind`` serving ``dimension`` (2: :data:`FLOW_KINDS`, 3:
    :data:`VOLUME_FLOW_KINDS`; a kind is returned as is); ``ValueError`` naming the known ones.

    Example:
        >>> from flow_escnn.flows.kinds import flow_kind
        >>> k = flow_kind("rotation")
        >>> k.params, k.parse("20")[:2]  # -20..20 degrees per frame in steps of 10
        (('flow_steps',), [(0, 0, -20.0), (0, 0, -10.0)])
    """
    if isinstance(kind, FlowKind):
        return kind
    kinds = {2: FLOW_KINDS, 3: VOLUME_FLOW_KINDS}.get(dimension) if not isinstance(dimension, bool) else None
    if kinds is None:
        raise ValueError(f"dimension must be 2 (planar flows) or 3 (volume flows), got {dimension!r}")
    try:
        other = kind in ALL_FLOW_KINDS and kind not in kinds
    except TypeError:  # unhashable: one_of below says what was wrong
        other = False
    if other:
        raise ValueError(f"flow {kind!r} serves {ALL_FLOW_KINDS[kind].dimension}D gspaces; the {dimension}D flows are "
                         f"{tuple(kinds)} (pass dimension={ALL_FLOW_KINDS[kind].dimension} for it)")
    return kinds[one_of(kind, tuple(kinds), "flow")]
