"""Sequence layers: stacked flow cells run over time, in the stationary or co-moving frame.

Two execution modes compute the same function (exactly so for grid-exact flows):

* ``mode="hidden"`` (stationary frame): every step transports the state by
  :math:`\\psi_1(\\nu)`, as in the recurrence of :mod:`flow_escnn.nn.cells`.
* ``mode="comoving"``: run the recurrence in each slice's co-moving frame,
  :math:`k_t(\\nu) = \\psi_t(\\nu)^{-1} h_t(\\nu)`, which obeys

  .. math::
      k_t(\\nu) = \\sigma\\big(W * k_{t-1}(\\nu) + \\psi_t(\\nu)^{-1}\\cdot[U * f_t]\\big),

  because :math:`\\psi_t(\\nu)^{-1}\\psi_1(\\nu) = \\psi_{t-1}(\\nu)^{-1}` and :math:`W`
  commutes with the transport. Only the input term is transported (one gather per
  step for all :math:`\\nu`) and the output is transported back,
  :math:`h_t(\\nu) = \\psi_t(\\nu) k_t(\\nu)`. Flows on a finite torus are periodic,
  so these tables are built for one period and reused (:meth:`FlowRNN.comoving_tables`). Stacked layers chain in the co-moving
  frame directly. For interpolated (non-90-degree) rotations each output is then
  resampled twice in total instead of once per step, so the interpolation error does
  not compound over time. An initial state enters as :math:`k_{-1} = \\psi_1(\\nu) h_{-1}`.
* ``mode="auto"`` (default) picks ``"hidden"`` when every :math:`\\psi_1(\\nu)` is exact on
  the grid and ``"comoving"`` otherwise.

``checkpoint=True`` splits the sequence into segments of :math:`\\lceil\\sqrt{T}\\rceil`
steps and recomputes each segment's intermediates in the backward pass
(``torch.utils.checkpoint``): only the states at segment borders (and the outputs) are
kept, trading about one extra forward pass for activation memory.

The loop is time-major (all layers advance one frame at a time) and steerable filters
are expanded once per call, so ``forward_with_state(x, return_sequence=False)`` keeps
memory independent of the sequence length.
"""
from __future__ import annotations

import math
from typing import Any, List, Optional, Sequence, Tuple, Type, Union

import torch
from torch.utils.checkpoint import checkpoint as _checkpoint

from flow_escnn.flows.flowset import FlowSet
from flow_escnn.lifted import LiftedFieldType, LiftedTensor
from flow_escnn.nn.cells import FERNNCell, FlowCellBase, FlowGRUCell, FlowLSTMCell, State

__all__ = ["FlowRNN", "FERNN", "FlowGRU", "FlowLSTM", "MODES", "SEQUENCE_LAYERS"]

MODES = ("auto", "hidden", "comoving")

StateLike = Union[LiftedTensor, Tuple[LiftedTensor, ...], torch.Tensor]
Filters = Tuple[Tuple[torch.Tensor, Optional[torch.Tensor]], torch.Tensor]  # ((U filter, U bias), W filter)


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
        mixing = any(c.mix is not None for c in self.cells)
        if self.mode == "comoving" and mixing:
            raise ValueError(
                "V-mixing (velocity_mixing > 0) is defined in the stationary frame: use mode='hidden' or 'auto'"
            )
        if self.mode != "auto":
            return self.mode
        if mixing:
            return "hidden"
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
        filters: Optional[List[Filters]] = None,
    ) -> Tuple[Optional[LiftedTensor], List[Union[LiftedTensor, Tuple[LiftedTensor, ...]]]]:
        """Run the stack and also return every layer's final state.

        Args:
            x: input sequence (see class doc).
            h0: optional initial state per layer (``None`` entries or ``None`` for zeros); each a
                :class:`LiftedTensor` ``[B, V, C, H, W]`` (a pair ``(h, c)`` for FlowLSTM).
            return_sequence: when False, only the final states are kept (memory stays bounded for
                long inference runs: nothing of size ``T`` is stored) and the first output is None.
            filters: the layers' expanded filters from :meth:`expanded_filters`, for a caller that
                keeps stepping the cells afterwards (so nothing is expanded twice); expanded here
                when None.

        Returns:
            ``(sequence or None, [final state of each layer])``, final states in the stationary frame.
        """
        raw = self._check_input(x)
        b, t_len = raw.shape[0], raw.shape[1]
        grid = (raw.shape[-2], raw.shape[-1])
        run = _Run(self, grid, raw.device, t_len, self.resolve_mode(grid, raw.device), return_sequence, filters)
        states: List[State] = []
        for l, (h, cell) in enumerate(zip(self._check_h0(h0, b, grid, raw), self.cells)):
            if h is None:
                states.append(cell.zero_state(b, grid, raw))
            elif run.comoving:
                states.append(tuple(run.step_plans[l](s) for s in h))  # k_{-1} = psi_1(nu) h_{-1}
            else:
                states.append(h)

        frames = raw.unbind(1)
        seg = _segment_length(t_len) if (self.checkpoint and torch.is_grad_enabled()) else t_len
        outs: List[torch.Tensor] = []
        for t0 in range(0, t_len, seg):
            n = min(seg, t_len - t0)
            flat = [s for st in states for s in st]
            if seg < t_len:
                res = _checkpoint(run.segment, t0, n, *frames[t0 : t0 + n], *flat, use_reentrant=False)
            else:
                res = run.segment(t0, n, *frames[t0 : t0 + n], *flat)
            states = run.unflatten(res[: len(flat)])
            outs.extend(res[len(flat) :])
        if run.comoving:  # final states back to the stationary frame: psi_{T-1}(nu) k_{T-1}(nu)
            states = [tuple(run.from_comoving(s, t_len - 1) for s in st) for st in states]
        seq = LiftedTensor(torch.stack(outs, dim=1), self.out_type) if return_sequence else None
        packed = [
            tuple(LiftedTensor(s, self.out_type) for s in st) if len(st) > 1 else LiftedTensor(st[0], self.out_type)
            for st in states
        ]
        return seq, packed

    def expanded_filters(self) -> List[Filters]:
        """Every layer's ``((U filter, U bias), W filter)``, expanded once (differentiable)."""
        return [(c.U.expand(), c.W.expand()[0]) for c in self.cells]

    def comoving_tables(self, grid: Tuple[int, int], t_len: int) -> int:
        """How many time steps the co-moving transport tables cover on ``grid`` for length ``t_len``.

        Flows on a finite torus are periodic (:meth:`FlowSet.period`), so the tables for
        :math:`\\psi_t(\\nu)^{\\pm 1}` are built for one period :math:`P` and indexed by
        :math:`t \\bmod P`: memory and set-up stay bounded for any sequence length. Falls back
        to ``t_len`` steps when :math:`P > t_len` (or no period exists).
        """
        p = self.flows.period(grid)
        return p if p is not None and p <= t_len else t_len

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


def _segment_length(t_len: int) -> int:
    """Checkpoint segment length: about sqrt(T) steps, so stored states and recomputation balance."""
    return max(1, math.ceil(math.sqrt(t_len)))


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


class _Run:
    """Everything one forward pass needs, built once: expanded filters and transport plans.

    ``segment(t0, n, *frames, *flat_states)`` runs steps ``t0 .. t0+n-1`` through all layers
    (time-major, so nothing of size T is needed besides the outputs) and returns the new flat
    states followed by the ``n`` outputs; it is what ``torch.utils.checkpoint`` wraps.
    """

    def __init__(
        self,
        model: FlowRNN,
        grid: Tuple[int, int],
        device: torch.device,
        t_len: int,
        mode: str,
        keep: bool,
        filters: Optional[List[Filters]] = None,
    ) -> None:
        self.cells = list(model.cells)
        self.comoving = mode == "comoving"
        self.keep = keep
        self.v = len(model.flows)
        self.filters = model.expanded_filters() if filters is None else filters  # once per sequence
        self.step_plans = [c.step_plan(grid, device) for c in self.cells]
        self.sizes = [c.state_size for c in self.cells]
        if self.comoving:
            first, last = self.cells[0], self.cells[-1]
            self.period = model.comoving_tables(grid, t_len)
            steps, flows = self.period, model.flows
            self.to_plan = first.plan(
                "inv_psi_t", lambda: [g.psi(-t) for t in range(steps) for g in flows], first.gate_type, grid, device, extra=steps
            )
            self.from_plan = last.plan(
                "psi_t", lambda: [g.psi(t) for t in range(steps) for g in flows], last.hidden_type, grid, device, extra=steps
            )

    def to_comoving(self, u: torch.Tensor, t: int) -> torch.Tensor:
        """:math:`\\psi_t(\\nu)^{-1}\\cdot u` for every :math:`\\nu`; ``u`` is ``[B, 1 or V, G*C, H, W]``."""
        u = u.expand(u.shape[0], self.v, *u.shape[2:])
        return self.to_plan(u, (t % self.period) * self.v)

    def from_comoving(self, k: torch.Tensor, t: int) -> torch.Tensor:
        """:math:`\\psi_t(\\nu)\\cdot k(\\nu)` for every :math:`\\nu`; ``k`` is ``[B, V, C, H, W]``."""
        return self.from_plan(k, (t % self.period) * self.v)

    def unflatten(self, flat: Sequence[torch.Tensor]) -> List[State]:
        out, i = [], 0
        for n in self.sizes:
            out.append(tuple(flat[i : i + n]))
            i += n
        return out

    def segment(self, t0: int, n: int, *tensors: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        frames, states = tensors[:n], self.unflatten(tensors[n:])
        outs: List[torch.Tensor] = []
        for i in range(n):
            t = t0 + i
            inp = frames[i]
            for l, (cell, ((ufilt, ubias), wfilt)) in enumerate(zip(self.cells, self.filters)):
                u = cell.input_term(inp, ufilt, ubias)
                if u.dim() == 4:
                    u = u.unsqueeze(1)  # one frame, broadcast over V
                if self.comoving and l == 0:
                    u = self.to_comoving(u, t)
                plan = _identity if self.comoving else self.step_plans[l]
                states[l] = cell.step(states[l], u, wfilt, plan)
                inp = cell.output(states[l])
            if self.keep:
                outs.append(self.from_comoving(inp, t) if self.comoving else inp)
        return tuple(s for st in states for s in st) + tuple(outs)


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


#: The sequence layer for each cell name (``cell=`` in the models and the experiments).
SEQUENCE_LAYERS = {"fernn": FERNN, "gru": FlowGRU, "lstm": FlowLSTM}
