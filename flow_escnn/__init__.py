"""flow_escnn: flow-equivariant recurrent networks (FERNN) on top of escnn.

Layout (data flows one way): :mod:`flow_escnn.flows` (group side: grid elements,
flow generators, flow sets, transport) -> :mod:`flow_escnn.lifted` (fields lifted
over V) -> :mod:`flow_escnn.nn` (layers) -> :mod:`flow_escnn.models`; the
commuting-diagram checks in :mod:`flow_escnn.checks` only call models.
"""
from flow_escnn._compat import EscnnImportError, import_escnn

import_escnn()  # fail loudly, with the fix, before anything else touches escnn

from flow_escnn.flows import (  # noqa: E402
    FlowGenerator,
    FlowSet,
    GridElement,
    TransportPlan,
    flow_sequence,
    transport,
)
from flow_escnn.lifted import LiftedFieldType, LiftedTensor  # noqa: E402
from flow_escnn.sequences import SequenceFieldType, SequenceTensor  # noqa: E402

from flow_escnn import checks, models, nn  # noqa: E402  (subpackages, so `flow_escnn.nn.FERNN` works)

__version__ = "0.1.0"

__all__ = [
    "EscnnImportError",
    "FlowGenerator",
    "FlowSet",
    "GridElement",
    "LiftedFieldType",
    "LiftedTensor",
    "SequenceFieldType",
    "SequenceTensor",
    "TransportPlan",
    "flow_sequence",
    "transport",
    "__version__",
    "checks",
    "models",
    "nn",
]
