"""The flow kinds, one file each, and their registry :data:`FLOW_KINDS`.

Adding a kind is adding one file here that defines a
:class:`~flow_escnn.flows.kinds.base.FlowKind` subclass and ``KIND = YourKind()`` (plus its
tests): the modules of this package are found and imported here, so the data generators, the
configs, the CLI (``--flow``) and the plots know it without another edit (see
``docs/architecture.rst``).
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

__all__ = [
    "FlowKind",
    "FLOW_KINDS",
    "MODEL_PARAMS",
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



#: Every flow kind, by name (in the order of their ``order``, then name).
FLOW_KINDS: Dict[str, FlowKind] = dict(
    sorted(discover(__name__, __path__, FlowKind, skip=("base",)).items(), key=lambda kv: (kv[1].order, kv[0]))
)


def flow_kind(kind: Union[str, FlowKind]) -> FlowKind:
    """The :class:`FlowKind` named ``kind`` (a kind is returned as is); ``ValueError`` naming the known ones.

    Example:
        >>> from flow_escnn.flows.kinds import flow_kind
        >>> k = flow_kind("rotation")
        >>> k.params, k.parse("20")[:2]  # -20..20 degrees per frame in steps of 10
        (('flow_steps',), [(0, 0, -20.0), (0, 0, -10.0)])
    """
    if isinstance(kind, FlowKind):
        return kind
    return FLOW_KINDS[one_of(kind, tuple(FLOW_KINDS), "flow")]
