"""Sequence layers: stacked flow cells run over time, in the stationary or co-moving frame.

Two execution modes compute the same function (exactly so for grid-exact flows):

* ``mode="hidden"`` (stationary frame): every step transports the state by
  :math:`\\psi_1(\\nu)`, as in the recurrence of :mod:`flow_escnn.nn.cells`.
* ``mode="comoving"``: run the recurrence in each slice's co-moving frame,
  :math:`k_t(\\nu) = \\psi_t(\\nu)^{-1} h_t(\\nu)`, which obeys

  .. math::
      k_t(\\nu) = \\sigma\\big(W * k_{t-1}(\\nu) + \\psi_t(\\nu)^{-1}\\cdot[U * f_t]\\big),

  because :math:`\\psi_t(\\nu)^{-1}\\psi_1(\\nu) = \\psi_{t-1}(\\nu)^{-1}` and :math:`W`
  commutes with the transport. Only the input term is transported (once, for all
  :math:`t` and :math:`\\nu` in one gather) and the output is transported back,
  :math:`h_t(\\nu) = \\psi_t(\\nu) k_t(\\nu)`. Stacked layers chain in the co-moving
  frame directly. For interpolated (non-90-degree) rotations each output is then
  resampled twice in total instead of once per step, so the interpolation error does
  not compound over time. An initial state enters as :math:`k_{-1} = \\psi_1(\\nu) h_{-1}`.
* ``mode="auto"`` (default) picks ``"hidden"`` when every :math:`\\psi_1(\\nu)` is exact on
  the grid and ``"comoving"`` otherwise.

``checkpoint=True`` recomputes each step's intermediates in the backward pass
(``torch.utils.checkpoint``), trading compute for activation memory.
"""
from __future__ import annotations

from typing import Any, List, Optional, Sequence, Tuple, Type, Union

import torch
from torch.utils.checkpoint import checkpoint as _checkpoint

from flow_escnn.flows.flowset import FlowSet
from flow_escnn.lifted import LiftedFieldType, LiftedTensor
from flow_escnn.nn.cells import FERNNCell, FlowCellBase, FlowGRUCell, FlowLSTMCell, State

__all__ = ["FlowRNN", "FERNN", "FlowGRU", "FlowLSTM", "MODES"]

MODES = ("auto", "hidden", "comoving")

StateLike = Union[LiftedTensor, Tuple[LiftedTensor, ...], torch.Tensor]


class FlowRNN(torch.nn.Module):
    """A stack of flow cells of one kind run over a sequence (base of FERNN / FlowGRU / FlowLSTM).

    Args:
        in_type: escnn ``FieldType`` of the input frames.
        hidden_type: escnn ``FieldType`` of each V slice of every layer's state.
        flows: the flow set :math:`V` (shared by all layers).
        kernel_size: odd kernel size of every :math:`U, W`.
        num_layers: number of stacked cells; layer :math:`l>0` reads layer :math:`l-1`'s lifted output.
        mode: ``"auto"``, ``"hidden"`` or ``"comoving"`` (see the module docstring).
        checkpoint: recompute each step in the backward pass to save activation memory.
        **cell_kwargs: passed to every cell (``bias``, ``padding_mode``, ``interpolation``,
            and ``nonlinearity`` for FERNN).

    Shapes:
        ``forward(x)``: ``x`` is ``[B, T, C_in, H, W]`` (a ``torch.Tensor`` whose channels follow
        ``in_type``) or a :class:`LiftedTensor` ``[B, T, V, C_in, H, W]`` over the same flows;
        returns the last layer's hidden sequence as a :class:`LiftedTensor`
        ``[B, T, |V|, C_hidden, H, W]`` with V ordered like ``flows.velocities``.
    """

    cell_class: Type[FlowCellBase] = FERNNCell

    def __init__(
        self,
        in_type: Any,
        hidden_type: Any,
        flows: FlowSet,
        kernel_size: int = 3,
        num_layers: int = 1,
        mode: str = "auto",
        checkpoint: bool = False,
        **cell_kwargs: Any,
    ) -> None:
        super().__init__()
        if isinstance(num_layers, bool) or not isinstance(num_layers, int) or num_layers < 1:
            raise ValueError(f"num_layers must be a positive integer, got {num_layers!r}")
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        self.in_type = in_type
        self.hidden_type = hidden_type
        self.flows = flows
        self.mode = mode
        self.checkpoint = bool(checkpoint)
        self.cells = torch.nn.ModuleList(
            [
                self.cell_class(in_type if l == 0 else hidden_type, hidden_type, flows, kernel_size, **cell_kwargs)
                for l in range(num_layers)
            ]
        )

    @property
    def num_layers(self) -> int:
        return len(self.cells)

    @property
    def out_type(self) -> LiftedFieldType:
        """The lifted type of the output sequence."""
        return self.cells[-1].lifted_type

    def resolve_mode(self, grid: Tuple[int, int], device: Union[str, torch.device] = "cpu") -> str:
        """The mode actually used on a ``grid`` (``"auto"`` resolved)."""
        if self.mode != "auto":
            return self.mode
        return "hidden" if self.cells[0].step_plan(grid, torch.device(device)).exact else "comoving"

    def export(self, grid_shape: Tuple[int, int], max_steps: Optional[int] = None) -> torch.nn.Module:
        """A plain-PyTorch twin for inputs on a ``grid_shape`` grid (see :mod:`flow_escnn.nn.export`).

        Args:
            grid_shape: ``(H, W)`` of the inputs (transports are per-grid gather tables).
            max_steps: longest sequence the twin accepts; required in co-moving mode.
        """
        from flow_escnn.nn.export import export_flow_rnn  # export imports this module

        return export_flow_rnn(self, grid_shape, max_steps)

    # -- forward ----------------------------------------------------------------------------------------
    def forward(self, x: Union[torch.Tensor, LiftedTensor], h0: Optional[Sequence[StateLike]] = None) -> LiftedTensor:
        """Run the stack over the sequence; returns the last layer's hidden sequence (see class doc)."""
        seq, _ = self.forward_with_state(x, h0)
        return seq

    def forward_with_state(
        self,
        x: Union[torch.Tensor, LiftedTensor],
        h0: Optional[Sequence[StateLike]] = None,
        return_sequence: bool = True,
    ) -> Tuple[Optional[LiftedTensor], List[Union[LiftedTensor, Tuple[LiftedTensor, ...]]]]:
        """Run the stack and also return every layer's final state.

        Args:
            x: input sequence (see class doc).
            h0: optional initial state per layer (``None`` entries or ``None`` for zeros); each a
                :class:`LiftedTensor` ``[B, V, C, H, W]`` (a pair ``(h, c)`` for FlowLSTM).
            return_sequence: when False, only the final states are kept (memory stays bounded for
                long inference runs: nothing of size ``T`` is stored) and the first output is None.

        Returns:
            ``(sequence or None, [final state of each layer])``, final states in the stationary frame.
        """
        raw = self._check_input(x)
        b, t_len = raw.shape[0], raw.shape[1]
        grid = (raw.shape[-2], raw.shape[-1])
        device = raw.device
        mode = self.resolve_mode(grid, device)
        states0 = self._check_h0(h0, b, grid, raw)

        inp = raw
        finals: List[State] = []
        last_layer = self.num_layers - 1
        for l, cell in enumerate(self.cells):
            ufilt, ubias = cell.U.expand()
            wfilt, _ = cell.W.expand()
            u = cell.input_term(inp, ufilt, ubias)  # [B, T, (V,) G*C, H, W]
            if u.dim() == 5:
                u = u.unsqueeze(2)  # broadcast over V
            step_plan = cell.step_plan(grid, device)
            if mode == "comoving" and l == 0:
                u = self._to_comoving(cell, u, t_len, grid, device)
            state = states0[l] if states0[l] is not None else cell.zero_state(b, grid, raw)
            if mode == "comoving" and states0[l] is not None:
                state = tuple(step_plan(s) for s in state)  # k_{-1} = psi_1(nu) h_{-1}
            identity = _IdentityPlan()
            plan = identity if mode == "comoving" else step_plan
            keep = return_sequence or l < last_layer
            outs: List[torch.Tensor] = []
            for t in range(t_len):
                if self.checkpoint and torch.is_grad_enabled():
                    state = _checkpoint(_StepFn(cell, plan), u[:, t], wfilt, *state, use_reentrant=False)
                else:
                    state = cell.step(state, u[:, t], wfilt, plan)
                if keep:
                    outs.append(cell.output(state))
            finals.append(state)
            if keep:
                inp = torch.stack(outs, dim=1)  # [B, T, V, C, H, W]
        if mode == "comoving":
            if return_sequence:
                inp = self._from_comoving(inp, t_len, grid, device)
            last_plan = self.cells[0].plan(
                "psi_t", lambda: self.flows.elements(t_len - 1), self.hidden_type, grid, device, extra=t_len - 1
            )
            finals = [tuple(last_plan(s) for s in st) for st in finals]
        seq = LiftedTensor(inp, self.out_type) if return_sequence else None
        packed = [
            tuple(LiftedTensor(s, self.out_type) for s in st) if len(st) > 1 else LiftedTensor(st[0], self.out_type)
            for st in finals
        ]
        return seq, packed

    # -- co-moving frame transports ---------------------------------------------------------------------------
    def _to_comoving(self, cell: FlowCellBase, u: torch.Tensor, t_len: int, grid: Tuple[int, int], device: torch.device) -> torch.Tensor:
        """:math:`\\psi_t(\\nu)^{-1}\\cdot u_t` for all ``t, nu`` in one gather: ``[B, T, V, G*C, H, W]``."""
        v = len(self.flows)
        plan = cell.plan(
            "inv_psi_t",
            lambda: [g.psi(-t) for t in range(t_len) for g in self.flows],
            cell.gate_type,
            grid,
            device,
            extra=t_len,
        )
        b = u.shape[0]
        u = u.expand(b, t_len, v, *u.shape[3:]).reshape(b, t_len * v, *u.shape[3:])
        return plan(u).reshape(b, t_len, v, *u.shape[2:])

    def _from_comoving(self, k: torch.Tensor, t_len: int, grid: Tuple[int, int], device: torch.device) -> torch.Tensor:
        """:math:`h_t(\\nu) = \\psi_t(\\nu)\\cdot k_t(\\nu)` for all ``t, nu`` in one gather."""
        v = len(self.flows)
        plan = self.cells[-1].plan(
            "psi_t_all",
            lambda: [g.psi(t) for t in range(t_len) for g in self.flows],
            self.hidden_type,
            grid,
            device,
            extra=t_len,
        )
        b = k.shape[0]
        return plan(k.reshape(b, t_len * v, *k.shape[3:])).reshape(k.shape)

    # -- validation ---------------------------------------------------------------------------------------------
    def _check_input(self, x: Union[torch.Tensor, LiftedTensor]) -> torch.Tensor:
        if isinstance(x, LiftedTensor):
            if x.type.flows != self.flows or x.type.field_type != self.in_type:
                raise ValueError(
                    f"lifted input of type {x.type} does not match this layer (in_type {self.in_type}, {self.flows})"
                )
            if not x.is_sequence:
                raise ValueError(f"expected a lifted sequence [B, T, V, C, H, W], got shape {tuple(x.shape)}")
            raw = x.tensor
        elif isinstance(x, torch.Tensor):
            if x.dim() != 5 or x.shape[2] != self.in_type.size:
                raise ValueError(
                    f"expected an input sequence [B, T, C={self.in_type.size}, H, W] whose channels follow in_type, "
                    f"got shape {tuple(x.shape)}" + (" (a single frame? add the time axis)" if x.dim() == 4 else "")
                )
            raw = x
        else:
            raise TypeError(f"expected a torch.Tensor [B, T, C, H, W] or a LiftedTensor, got {type(x).__name__}")
        if raw.shape[1] == 0:
            raise ValueError("the input sequence has T=0 frames; give at least one frame")
        if not raw.is_floating_point():
            raise TypeError(f"expected a floating point input, got dtype {raw.dtype}")
        return raw

    def _check_h0(self, h0: Optional[Sequence[StateLike]], b: int, grid: Tuple[int, int], like: torch.Tensor) -> List[Optional[State]]:
        if h0 is None:
            return [None] * self.num_layers
        if isinstance(h0, (LiftedTensor, torch.Tensor)):
            raise TypeError("h0 must be a list with one initial state (or None) per layer")
        h0 = list(h0)
        if len(h0) != self.num_layers:
            raise ValueError(f"h0 has {len(h0)} entries but the stack has {self.num_layers} layers")
        return [None if s is None else cell._unpack_state(s, b, grid, like) for s, cell in zip(h0, self.cells)]


class _IdentityPlan:
    """Stands in for the step transport in the co-moving frame (no transport)."""

    exact = True

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return x


class _StepFn:
    """Picklable step closure for ``torch.utils.checkpoint`` (state passed as varargs)."""

    def __init__(self, cell: FlowCellBase, plan: Any) -> None:
        self.cell = cell
        self.plan = plan

    def __call__(self, u: torch.Tensor, wfilt: torch.Tensor, *state: torch.Tensor) -> State:
        return self.cell.step(tuple(state), u, wfilt, self.plan)


class FERNN(FlowRNN):
    """Flow-equivariant RNN (Keller 2025): a stack of :class:`~flow_escnn.nn.cells.FERNNCell`.

    ``FERNN(in_type, hidden_type, flows, kernel_size=3, ...)`` called on ``[B, T, C_in, H, W]``
    returns a :class:`~flow_escnn.lifted.LiftedTensor` ``[B, T, |V|, C_hidden, H, W]``.
    Circular padding by default, so translation flows are exact on the torus. With
    ``FlowSet.identity(gspace)`` it is exactly a G-RNN.
    """

    cell_class = FERNNCell


class FlowGRU(FlowRNN):
    """A stack of :class:`~flow_escnn.nn.cells.FlowGRUCell` (same interface as :class:`FERNN`)."""

    cell_class = FlowGRUCell


class FlowLSTM(FlowRNN):
    """A stack of :class:`~flow_escnn.nn.cells.FlowLSTMCell`; final states are ``(h, c)`` pairs."""

    cell_class = FlowLSTMCell
