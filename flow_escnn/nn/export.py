"""Export to plain PyTorch: twins of the flow layers with no escnn object inside.

:func:`export` turns a trained model into a ``torch.nn.Module`` that computes the same
function from dense tensors only: steerable filters expanded into ``torch.nn.Conv2d``
(``padding_mode`` kept: escnn's own ``R2Conv.export()`` silently replaces circular
padding by zero padding, which breaks exact translation equivariance on the torus), and
every transport :math:`\\psi_t(\\nu)` replaced by its precomputed gather tables (pixel
indices, bilinear weights for interpolated rotations, fiber permutations or matrices)
copied from the model's :class:`~flow_escnn.flows.TransportPlan`.

What the twins compute
----------------------
:class:`ExportedFlowRNN` reproduces :class:`~flow_escnn.nn.FlowRNN` (FERNN, FlowGRU,
FlowLSTM, any number of layers) in the execution mode the model resolves on the export
grid:

* ``"hidden"``: :math:`h_t(\\nu) = \\mathrm{update}(\\psi_1(\\nu)\\cdot h_{t-1}(\\nu),\\; U * f_t)`
  with one gather per step;
* ``"comoving"``: :math:`k_t(\\nu) = \\mathrm{update}(k_{t-1}(\\nu),\\; \\psi_t(\\nu)^{-1}\\cdot U * f_t)`,
  :math:`h_t(\\nu) = \\psi_t(\\nu)\\cdot k_t(\\nu)`. Its tables depend on the sequence length, so
  they are precomputed for one period of the flows on the torus (indexed by
  :math:`t \\bmod P`, any length works), or, for flows without a period there, for up to
  ``max_steps`` frames.

The tables are specific to one grid ``(H, W)`` (and ``max_steps``): the twin refuses
other shapes with a message saying how to re-export.

TorchScript
-----------
The twins are written for :func:`torch.jit.script`: a scripted twin can be saved with
``torch.jit.save`` and loaded (``torch.jit.load``) without flow_escnn or escnn installed.
Pickling the unscripted twin (``torch.save(module)``) instead needs flow_escnn importable,
because the classes live here.
"""
from __future__ import annotations

import copy
import types
from typing import Any, List, Optional, Sequence, Tuple

import torch

from flow_escnn._compat import enn
from flow_escnn.flows.element import GridElement
from flow_escnn.flows.flowset import FlowSet
from flow_escnn.flows.generator import FlowGenerator
from flow_escnn.flows.transport import GatherTransport, TransportPlan
from flow_escnn.lifted import LiftedFieldType, LiftedTensor
from flow_escnn.nn.cells import FERNNCell, FlowCellBase, FlowGRUCell, FlowLSTMCell
from flow_escnn.nn.conv import SteerableConv, dense_conv2d
from flow_escnn.nn.nonlinearity import apply_nonlinearity
from flow_escnn.nn.sequence import FlowRNN

__all__ = [
    "ExportedTransport",
    "ExportedFlowCell",
    "ExportedFlowRNN",
    "export",
    "export_flow_rnn",
    "export_cell",
    "export_conv",
    "find_escnn_objects",
]

GridShape = Tuple[int, int]



# -- transport --------------------------------------------------------------------------------------
#: The exported models execute transports with the same plain-torch executor the layers use
#: (:class:`flow_escnn.flows.transport.GatherTransport`), holding copies of the plans' tables.
ExportedTransport = GatherTransport


# -- convolutions -----------------------------------------------------------------------------------
def _export_r2conv(conv: Any) -> torch.nn.Conv2d:
    """escnn ``R2Conv`` -> ``Conv2d`` keeping ``padding_mode`` (escnn's export drops it)."""
    was_training = conv.training
    conv.train(True)
    try:
        with torch.no_grad():
            filt, bias = conv.expand_parameters()
    finally:
        conv.train(was_training)
    return dense_conv2d(filt, bias, conv.padding, conv.padding_mode, conv.stride, conv.dilation, conv.groups)


def export_conv(conv: Any) -> torch.nn.Conv2d:
    """A :class:`~flow_escnn.nn.SteerableConv` or escnn ``R2Conv`` as a plain ``torch.nn.Conv2d``.

    The padding mode is preserved (circular stays circular).
    """
    if isinstance(conv, SteerableConv):
        out = conv.export()
        if out.padding_mode != conv.padding_mode:  # guard against a regression in SteerableConv.export
            raise RuntimeError(f"SteerableConv.export lost padding_mode {conv.padding_mode!r}")
        return out
    if isinstance(conv, enn.R2Conv):
        return _export_r2conv(conv)
    raise TypeError(f"export_conv expects a SteerableConv or an escnn R2Conv, got {type(conv).__name__}")


# -- cells ------------------------------------------------------------------------------------------
_KNOWN_NONLINEARITIES = ("relu", "tanh", "sigmoid", "elu", "identity")


class ExportedFlowCell(torch.nn.Module):
    """Plain-torch twin of a flow cell: ``Conv2d`` for :math:`U, W` and its step transport.

    ``kind`` is ``"fernn"``, ``"gru"`` or ``"lstm"``; :meth:`update` is the cell's update from an
    already transported state (see :mod:`flow_escnn.nn.cells` for the equations).
    """

    def __init__(
        self,
        kind: str,
        U: torch.nn.Conv2d,
        W: torch.nn.Conv2d,
        step_transport: ExportedTransport,
        hidden_channels: int,
        nonlinearity: str = "relu",
        mixing: Optional[torch.Tensor] = None,
    ) -> None:
        super().__init__()
        if kind not in ("fernn", "gru", "lstm"):
            raise ValueError(f"kind must be 'fernn', 'gru' or 'lstm', got {kind!r}")
        if nonlinearity not in _KNOWN_NONLINEARITIES:
            raise ValueError(f"cannot export the nonlinearity {nonlinearity!r}; known: {_KNOWN_NONLINEARITIES}")
        self.kind = kind
        self.nonlinearity = nonlinearity
        self.U = U
        self.W = W
        self.step_transport = step_transport
        # V-mixing matrix [V, V] applied after the transport (flow_escnn.nn.vmixing); empty = off
        self.has_mixing = mixing is not None
        self.register_buffer("mixing", mixing.detach().clone() if mixing is not None else torch.zeros(0, 0))
        self.hidden_channels = int(hidden_channels)
        self.gate_channels = int(U.out_channels)
        self.in_channels = int(U.in_channels)
        self.state_size = 2 if kind == "lstm" else 1

    def input_term(self, x: torch.Tensor) -> torch.Tensor:
        """:math:`U * x` for ``x [..., C_in, H, W]``."""
        lead = x.shape[:-3]
        h, w = x.shape[-2], x.shape[-1]
        out = self.U(x.reshape(-1, x.shape[-3], h, w))
        shape: List[int] = list(lead) + [self.gate_channels, h, w]
        return out.reshape(shape)

    def recurrent_term(self, h: torch.Tensor) -> torch.Tensor:
        """:math:`W * h` for a lifted ``h [B, V, C, H, W]``."""
        b, v, c, hh, ww = h.shape
        return self.W(h.reshape(b * v, c, hh, ww)).reshape(b, v, self.gate_channels, hh, ww)

    def update(self, state: List[torch.Tensor], u: torch.Tensor) -> List[torch.Tensor]:
        """One update from a transported state; ``u`` is ``[B, 1 or V, G*C, H, W]``."""
        h = state[0]
        if self.kind == "fernn":
            return [apply_nonlinearity(self.recurrent_term(h) + u, self.nonlinearity)]
        if self.kind == "gru":
            b = self.recurrent_term(h)
            ar, az, an = u.chunk(3, dim=2)
            br, bz, bn = b.chunk(3, dim=2)
            r = torch.sigmoid(ar + br)
            z = torch.sigmoid(az + bz)
            n = torch.tanh(an + r * bn)
            return [(1 - z) * n + z * h]
        c = state[1]
        pre = self.recurrent_term(h) + u
        i, f, g, o = pre.chunk(4, dim=2)
        c_new = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h_new = torch.sigmoid(o) * torch.tanh(c_new)
        return [h_new, c_new]

    def transport(self, state: List[torch.Tensor]) -> List[torch.Tensor]:
        """:math:`\\psi_1(\\nu)\\cdot s(\\nu)` for every tensor of the state (then V-mixing, if any)."""
        moved = [self.step_transport(s) for s in state]
        if self.has_mixing:
            moved = [torch.einsum("ij,bjchw->bichw", self.mixing.to(s.dtype), s) for s in moved]
        return moved

    def forward(self, state: List[torch.Tensor], u: torch.Tensor) -> List[torch.Tensor]:
        """Transport by :math:`\\psi_1(\\nu)`, then update (the hidden-mode step)."""
        return self.update(self.transport(state), u)


def _cell_kind(cell: FlowCellBase) -> str:
    if isinstance(cell, FERNNCell):
        return "fernn"
    if isinstance(cell, FlowGRUCell):
        return "gru"
    if isinstance(cell, FlowLSTMCell):
        return "lstm"
    raise TypeError(
        f"cannot export a {type(cell).__name__}: only FERNNCell, FlowGRUCell and FlowLSTMCell have plain-torch twins"
    )


def export_cell(cell: FlowCellBase, grid_shape: GridShape) -> ExportedFlowCell:
    """The plain-torch twin of one flow cell on a ``grid_shape`` grid."""
    kind = _cell_kind(cell)
    device = _device_of(cell)
    step = ExportedTransport.from_plan(cell.step_plan(tuple(grid_shape), device))
    nonlinearity = getattr(cell, "nonlinearity", "relu") if kind == "fernn" else "identity"
    mixing = cell.mix.matrix().detach() if cell.mix is not None else None
    return ExportedFlowCell(
        kind, export_conv(cell.U), export_conv(cell.W), step, cell.hidden_type.size, nonlinearity, mixing
    ).to(device)


# -- sequence layers --------------------------------------------------------------------------------
class ExportedFlowRNN(torch.nn.Module):
    """Plain-torch twin of a :class:`~flow_escnn.nn.FlowRNN` (built by :func:`export_flow_rnn`).

    Shapes:
        ``forward(x)``: ``x`` is ``[B, T, C_in, H, W]`` (or a lifted ``[B, T, V, C_in, H, W]`` as a
        plain tensor); returns the last layer's hidden sequence ``[B, T, V, C, H, W]`` (the tensor
        of the original's :class:`~flow_escnn.lifted.LiftedTensor`).
    """

    def __init__(
        self,
        cells: Sequence[ExportedFlowCell],
        to_comoving: ExportedTransport,
        from_comoving: ExportedTransport,
        mode: str,
        num_flows: int,
        max_steps: int,
        periodic: bool = False,
    ) -> None:
        super().__init__()
        if mode not in ("hidden", "comoving"):
            raise ValueError(f"mode must be 'hidden' or 'comoving', got {mode!r}")
        self.cells = torch.nn.ModuleList(list(cells))
        self.to_comoving = to_comoving
        self.from_comoving = from_comoving
        self.mode = mode
        self.comoving = mode == "comoving"
        self.num_flows = int(num_flows)
        self.max_steps = int(max_steps)  # length of the co-moving tables (one period when periodic)
        self.periodic = bool(periodic)
        first = self.cells[0].step_transport
        self.height = first.height
        self.width = first.width
        self.in_channels = self.cells[0].in_channels
        self.hidden_channels = self.cells[-1].hidden_channels
        self.num_layers = len(self.cells)

    def extra_repr(self) -> str:
        steps = ""
        if self.comoving:
            steps = f", period={self.max_steps}" if self.periodic else f", max_steps={self.max_steps}"
        return f"mode={self.mode!r}, |V|={self.num_flows}, grid=({self.height}, {self.width}){steps}"

    def check_input(self, x: torch.Tensor) -> None:
        """Raise ``ValueError`` unless ``x`` is ``[B, T, (V,) C_in, H, W]`` on the export grid (and T <= max_steps)."""
        if x.dim() != 5 and x.dim() != 6:
            raise ValueError(
                "expected an input sequence [B, T, C={}, H, W], got shape {}".format(self.in_channels, list(x.shape))
            )
        if x.shape[-3] != self.in_channels:
            raise ValueError(
                "expected C={} input channels (dim -3), got shape {}".format(self.in_channels, list(x.shape))
            )
        if x.dim() == 6 and x.shape[2] != self.num_flows:
            raise ValueError("lifted input has V={} slices, the model |V|={}".format(x.shape[2], self.num_flows))
        if x.shape[-2] != self.height or x.shape[-1] != self.width:
            raise ValueError(
                "this exported model was built for a {}x{} grid, got {}x{}; export again with grid_shape=(H, W)".format(
                    self.height, self.width, x.shape[-2], x.shape[-1]
                )
            )
        if x.shape[1] == 0:
            raise ValueError("the input sequence has T=0 frames; give at least one frame")
        if self.comoving and not self.periodic and x.shape[1] > self.max_steps:
            raise ValueError(
                "this co-moving export holds tables for {} frames, got T={}; "
                "export again with a larger max_steps".format(self.max_steps, x.shape[1])
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        seq, _ = self.forward_with_state(x, None, True)
        assert seq is not None  # for TorchScript's type refinement (always true here)
        return seq

    def forward_with_state(
        self, x: torch.Tensor, h0: Optional[List[List[torch.Tensor]]] = None, return_sequence: bool = True
    ) -> Tuple[Optional[torch.Tensor], List[List[torch.Tensor]]]:
        """Like :meth:`flow_escnn.nn.FlowRNN.forward_with_state` with plain tensors.

        Args:
            x: the input sequence.
            h0: ``None`` or one initial state per layer, each a list of ``[B, V, C, H, W]`` tensors
                (``[h]``, or ``[h, c]`` for LSTM cells), in the stationary frame.
            return_sequence: also return the last layer's sequence.

        Returns:
            ``(sequence or None, [final state of each layer as a list of tensors])``.
        """
        self.check_input(x)
        b = x.shape[0]
        t_len = x.shape[1]
        v = self.num_flows
        if h0 is not None and len(h0) != self.num_layers:
            raise ValueError("h0 has {} entries but the model has {} layers".format(len(h0), self.num_layers))
        inp = x
        finals: List[List[torch.Tensor]] = []
        l = 0
        for cell in self.cells:
            u = cell.input_term(inp)
            if u.dim() == 5:
                u = u.unsqueeze(2)
            if self.comoving and l == 0:
                u = self._to_comoving_frame(u, t_len)
            if h0 is not None:
                state = h0[l]
                if len(state) != cell.state_size:
                    raise ValueError("layer {} expects a state of {} tensor(s)".format(l, cell.state_size))
                if self.comoving:
                    state = cell.transport(state)
            else:
                z = x.new_zeros([b, v, cell.hidden_channels, self.height, self.width])
                state = [z for _ in range(cell.state_size)]
            keep = return_sequence or l < self.num_layers - 1
            outs: List[torch.Tensor] = []
            for t in range(t_len):
                if not self.comoving:
                    state = cell.transport(state)
                state = cell.update(state, u[:, t])
                if keep:
                    outs.append(state[0])
            finals.append(state)
            if keep:
                inp = torch.stack(outs, dim=1)
            l += 1
        if self.comoving:
            if return_sequence:
                inp = self._from_comoving_frame(inp, t_len)
            finals = [[self.from_comoving(s, ((t_len - 1) % self.max_steps) * v) for s in st] for st in finals]
        seq: Optional[torch.Tensor] = None
        if return_sequence:
            seq = inp
        return seq, finals

    def _to_comoving_frame(self, u: torch.Tensor, t_len: int) -> torch.Tensor:
        """:math:`\\psi_t(\\nu)^{-1}\\cdot u_t` for all ``t, nu``: ``[B, T, V, G*C, H, W]``."""
        b, v = u.shape[0], self.num_flows
        g, h, w = u.shape[3], u.shape[4], u.shape[5]
        steps: List[torch.Tensor] = []
        for t in range(t_len):
            ut = u[:, t].expand(b, v, g, h, w)
            steps.append(self.to_comoving(ut, (t % self.max_steps) * v))
        return torch.stack(steps, dim=1)

    def _from_comoving_frame(self, k: torch.Tensor, t_len: int) -> torch.Tensor:
        """:math:`h_t(\\nu) = \\psi_t(\\nu)\\cdot k_t(\\nu)` for all ``t, nu``."""
        v = self.num_flows
        steps: List[torch.Tensor] = []
        for t in range(t_len):
            steps.append(self.from_comoving(k[:, t], (t % self.max_steps) * v))
        return torch.stack(steps, dim=1)


def _device_of(module: torch.nn.Module) -> torch.device:
    for p in module.parameters():
        return p.device
    return torch.device("cpu")


def _check_grid(grid_shape: Any) -> GridShape:
    try:
        h, w = (int(s) for s in grid_shape)
    except (TypeError, ValueError):
        raise ValueError(f"grid_shape must be a pair (H, W) of positive integers, got {grid_shape!r}") from None
    if h < 1 or w < 1:
        raise ValueError(f"grid_shape must be a pair (H, W) of positive integers, got {grid_shape!r}")
    return (h, w)


def export_flow_rnn(model: FlowRNN, grid_shape: GridShape, max_steps: Optional[int] = None) -> ExportedFlowRNN:
    """The plain-torch twin of a FERNN / FlowGRU / FlowLSTM stack on an ``H x W`` grid.

    The twin runs in the mode the model resolves on that grid (``model.resolve_mode``): hidden
    mode for grid-exact flows, co-moving mode otherwise (e.g. 45-degree rotations on C8, with
    their bilinear tables copied).

    Args:
        model: the sequence layer.
        grid_shape: ``(H, W)`` of the inputs the twin will see.
        max_steps: longest sequence the twin accepts in co-moving mode (its tables depend on
            the frame index); required when the mode is co-moving, ignored otherwise.

    Returns:
        An :class:`ExportedFlowRNN` on the model's device and dtype.

    Raises:
        ValueError: on a bad grid, or a co-moving model without ``max_steps``.
        TypeError: for cells without a twin.
    """
    if not isinstance(model, FlowRNN):
        raise TypeError(f"export_flow_rnn expects a FlowRNN (FERNN, FlowGRU, FlowLSTM), got {type(model).__name__}")
    grid = _check_grid(grid_shape)
    device = _device_of(model)
    mode = model.resolve_mode(grid, device)
    cells = [export_cell(c, grid) for c in model.cells]
    first = model.cells[0]
    v = len(model.flows)
    if mode == "comoving":
        period = model.flows.period(grid)
        if period is not None:
            n = period  # tables for one period of the flows, indexed by t mod period: any length works
        elif max_steps is None or isinstance(max_steps, bool) or int(max_steps) < 1:
            raise ValueError(
                f"{type(model).__name__} runs in co-moving mode on a {grid[0]}x{grid[1]} grid and its flows have "
                f"no period there, so its transport tables depend on the frame index: pass "
                f"max_steps=<longest sequence length> (got {max_steps!r})"
            )
        else:
            n = int(max_steps)
        to_plan = TransportPlan(
            first.gate_type, [g.psi(-t) for t in range(n) for g in model.flows], grid, first.interpolation
        ).to(device)
        last = model.cells[-1]
        from_plan = TransportPlan(
            model.hidden_type, [g.psi(t) for t in range(n) for g in model.flows], grid, last.interpolation
        ).to(device)
        to_c, from_c = ExportedTransport.from_plan(to_plan), ExportedTransport.from_plan(from_plan)
    else:
        n, period = 0, None
        to_c = ExportedTransport.empty(first.gate_type.size, grid)
        from_c = ExportedTransport.empty(model.hidden_type.size, grid)
    twin = ExportedFlowRNN(cells, to_c, from_c, mode, v, n, periodic=mode == "comoving" and period is not None)
    twin = twin.to(device)
    twin.train(model.training)
    return twin


# -- generic entry point ------------------------------------------------------------------------------
_FORBIDDEN_TYPES = (FlowSet, LiftedFieldType, LiftedTensor, TransportPlan, GridElement, FlowGenerator)


def _is_escnn_object(obj: Any) -> bool:
    mod = getattr(type(obj), "__module__", "") or ""
    return mod == "escnn" or mod.startswith("escnn.") or isinstance(obj, _FORBIDDEN_TYPES)


def find_escnn_objects(module: torch.nn.Module, max_depth: int = 8) -> List[str]:
    """Paths of every escnn object (or flow_escnn type/plan object) reachable from ``module``.

    Walks every submodule and, recursively, its attributes (including lists, tuples, dicts
    and plain objects' ``__dict__``). An empty list means the module is plain PyTorch.
    """
    found: List[str] = []
    seen = set()

    def walk(obj: Any, path: str, depth: int) -> None:
        if id(obj) in seen or depth > max_depth:
            return
        seen.add(id(obj))
        if _is_escnn_object(obj):
            found.append(f"{path}: {type(obj).__module__}.{type(obj).__name__}")
            return
        if isinstance(obj, (torch.Tensor, str, bytes, int, float, bool, type(None), torch.device, torch.dtype)):
            return
        if isinstance(obj, (types.FunctionType, types.BuiltinFunctionType, types.MethodType, type)):
            return
        if isinstance(obj, dict):
            for k, val in obj.items():
                walk(val, f"{path}[{k!r}]", depth + 1)
            return
        if isinstance(obj, (list, tuple, set, frozenset)):
            for i, val in enumerate(obj):
                walk(val, f"{path}[{i}]", depth + 1)
            return
        attrs = getattr(obj, "__dict__", None)
        if isinstance(attrs, dict):
            for k, val in attrs.items():
                walk(val, f"{path}.{k}" if path else k, depth + 1)

    walk(module, "", 0)
    return found


def export(
    module: torch.nn.Module, grid_shape: Optional[GridShape] = None, max_steps: Optional[int] = None
) -> torch.nn.Module:
    """A plain-PyTorch module computing the same function as ``module`` (no escnn inside).

    Dispatch:

    * :class:`~flow_escnn.nn.FlowRNN` (FERNN, FlowGRU, FlowLSTM, G-RNN) -> :func:`export_flow_rnn`
      (needs ``grid_shape``; ``max_steps`` in co-moving mode);
    * :class:`~flow_escnn.nn.SteerableConv` / escnn ``R2Conv`` -> ``torch.nn.Conv2d`` with the same
      padding mode;
    * escnn ``SequentialModule`` -> ``torch.nn.Sequential`` of exported children;
    * modules with their own ``export(grid_shape=..., max_steps=...)`` (the models of
      :mod:`flow_escnn.models`, :class:`~flow_escnn.nn.GRNNPlus`) -> that method;
    * other escnn modules -> their ``export()``; plain torch modules -> a deep copy.

    The result is checked with :func:`find_escnn_objects`.

    Args:
        module: the model.
        grid_shape: ``(H, W)`` of future inputs (needed by anything with flow transports).
        max_steps: longest sequence for co-moving twins.

    Raises:
        ValueError: when ``grid_shape`` is needed but missing.
        TypeError: for a module that cannot be exported.
    """
    out = _export(module, grid_shape, max_steps)
    left = find_escnn_objects(out)
    if left:
        raise TypeError(f"the export of {type(module).__name__} still holds escnn objects: {left[:5]}")
    return out


def _export(module: Any, grid_shape: Optional[GridShape], max_steps: Optional[int]) -> torch.nn.Module:
    if isinstance(module, FlowRNN):
        if grid_shape is None:
            raise ValueError(
                f"exporting a {type(module).__name__} needs grid_shape=(H, W): its flow transports are "
                "precomputed gather tables for one grid"
            )
        return export_flow_rnn(module, grid_shape, max_steps)
    if isinstance(module, (SteerableConv, enn.R2Conv)):
        return export_conv(module)
    if isinstance(module, enn.SequentialModule):
        return torch.nn.Sequential(*[_export(m, grid_shape, max_steps) for m in module.children()])
    own = getattr(module, "export", None)
    if callable(own) and not isinstance(module, enn.EquivariantModule):
        return own(grid_shape=grid_shape, max_steps=max_steps)
    if isinstance(module, enn.EquivariantModule):
        return module.export()
    if isinstance(module, torch.nn.Module):
        if find_escnn_objects(module):
            raise TypeError(
                f"cannot export a {type(module).__name__} that contains escnn objects but has no export() method; "
                "export its escnn submodules with flow_escnn.nn.export.export and rebuild it from the results"
            )
        return copy.deepcopy(module)
    raise TypeError(f"export expects a torch.nn.Module, got {type(module).__name__}")
