"""The flow kinds, one file each, and their registry.

Adding a kind = one file here defining a :class:`~flow_escnn.flows.kinds.base.FlowKind`
subclass and its instance, one line in :data:`FLOW_KINDS` below, and its tests; the data
generators, the CLI (``--flow``) and the plots then ask it (see ``docs/architecture.rst``).
"""
from __future__ import annotations

from typing import Dict, Union

from flow_escnn.flows.kinds.base import (
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

__all__ = [
    "FlowKind",
    "FLOW_KINDS",
    "flow_kind",
    "TRANSLATION",
    "ROTATION",
    "ROTO_TRANSLATION",
    "degrees_to_steps",
    "steps_to_degrees",
    "parse_steps",
    "translation_velocities",
    "rotation_velocities",
]

#: Every flow kind, by name.
FLOW_KINDS: Dict[str, FlowKind] = {k.name: k for k in (TRANSLATION, ROTATION, ROTO_TRANSLATION)}


def flow_kind(kind: Union[str, FlowKind]) -> FlowKind:
    """The :class:`FlowKind` named ``kind`` (a kind is returned as is); ``ValueError`` naming the known ones."""
    if isinstance(kind, FlowKind):
        return kind
    try:
        return FLOW_KINDS[kind]
    except (KeyError, TypeError):
        raise ValueError(f"flow must be one of {tuple(FLOW_KINDS)}, got {kind!r}") from None
