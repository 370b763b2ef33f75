"""flow_escnn: flow-equivariant recurrent networks on top of escnn."""
from flow_escnn._compat import EscnnImportError, import_escnn

import_escnn()  # fail loudly, with the fix, before anything else touches escnn

from flow_escnn.flows import FlowGenerator, FlowSet, GridElement, TransportPlan, transport  # noqa: E402

__version__ = "0.1.0"

__all__ = [
    "EscnnImportError",
    "FlowGenerator",
    "FlowSet",
    "GridElement",
    "TransportPlan",
    "transport",
    "__version__",
]
