"""Sequence layers: stacked flow cells run over time, in the stationary or co-moving frame.

Two execution modes compute the same function (exactly so for grid-exact flows):

* ``mode="hidden"`` (stationary frame): every step transports the state by
  :math:`\\psi_1(\\nu)`, as in the recurrence of :mod:`flow_escnn.nn._cells`.
* ``mode="comoving"``: run the recurrence in each slice's co-moving frame,
  :math:`k_t(\\nu) = \\psi_t(\\nu)^{-1} h_t(\\nu)`, which obeys

  .. math::
      k_t(\\nu) = \\sigma\\big(W * k_{t-1}(\\nu) + U * [\\psi_t(\\nu)^{-1}\\cdot f_t]\\big),

  because :math:`\\psi_t(\\nu)^{-1}\\psi_1(\\nu) = \\psi_{t-1}(\\nu)^{-1}` and :math:`U, W`
  commute with the transport. Only the input frame is transported (one gather per
  step for all :math:`\\nu`, of its few channels) and the output is transported back,
  :math:`h_t(\\nu) = \\psi_t(\\nu) k_t(\\nu)`. Flows on a finite torus are periodic,
  so these tables are built for one period and reused (:meth:`FlowRNN.comoving_tables`).
  Stacked layers chain in the co-moving frame directly. For interpolated (non-90-degree) rotations each output is then
  resampled twice in total instead of once per step, so the interpolation error does
  not compound over time. An initial state enters as :math:`k_{-1} = \\psi_1(\\nu) h_{-1}`.
* ``mode="auto"`` (default) picks ``"hidden"`` when every :math:`\\psi_1(\\nu)` is exact on
  the grid and ``"comoving"`` otherwise.

``checkpoint=True`` splits the sequence into segments of :math:`\\lceil\\sqrt{T}\\rceil`
steps and recomputes each segment's intermediates in the backward pass
(``torch.utils.checkpoint``): only the states at segment borders (and the outputs) are
kept, trading about one extra forward pass for activation memory.

Every layer here is a thin shell around the recurrence engine (:mod:`flow_escnn.nn._engine`):
it validates its input, compiles (and caches) the transport tables for the grid, expands
its steerable filters once per call and runs the engine's time-major loop, so
``forward_with_state(x, return_sequence=False)`` keeps memory independent of the
sequence length.
"""
from __future__ import annotations

import copy
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Type, Union

import torch

from flow_escnn._compat import enn
from flow_escnn._validate import one_of, positive_int
from flow_escnn.flows._flowset import FlowSet
from flow_escnn.lifted import LiftedFieldType, LiftedTensor
from flow_escnn.nn._cells import FlowCellBase, State
from flow_escnn.nn._engine import FRAMES, Recurrence, Weights
from flow_escnn.nn._frozen import ExportedFlowRNN, check_grid
from flow_escnn.nn._spec import records_init
from flow_escnn.sequences import SequenceFieldType, SequenceTensor, geometric_tensor_refusal

__all__ = ["FlowRNN", "MODES"]

#: ``mode=`` of the sequence layers: one of the engine's frames, or ``"auto"`` (pick by the grid).
MODES = ("auto", *FRAMES)

StateLike = Union[LiftedTensor, Tuple[LiftedTensor, ...], torch.Tensor]
#: what the sequence layers take: a plain ``[B, T, C, H, W]``, a SequenceTensor, or a lifted sequence.
InputLike = Union[torch.Tensor, SequenceTensor, LiftedTensor]


@records_init
class FlowRNN(torch.nn.Module):
    """A stack of flow cells of one kind run over a sequence (base of FERNN / FlowGRU / FlowLSTM).

    Args:
        in_type: escnn ``FieldType`` of the input frames.
        hidden_type: escnn ``FieldType`` of each V slice of every layer's state.
        flows: the flow set :math:`V` (shared by all layers).
        kernel_size: odd kernel size of every :math:`U, W`.
        num_layers: number of stacked cells; layer :math:`l>0` reads layer :math:`l-1`'s lifted output.
        mode: ``"auto"``, ``"hidden"`` or ``"comoving"`` (see the module docstring).
        checkpoint: recompute segments of about :math:`\\sqrt{T}` steps in the backward pass to
            save activation memory.
        **cell_kwargs: passed to every cell (``bias``, ``padding_mode``, ``interpolation``,
            and ``nonlinearity`` for FERNN).

    Attributes:
        in_type: the escnn ``FieldType`` of an input frame (the constructor argument, as for escnn's
            ``R2Conv``); the layer takes sequences of it (:attr:`input_types`). Its output has the
            lifted type :attr:`out_type`.

    Shapes:
        ``forward(x)``: ``x`` is a :class:`~flow_escnn.sequences.SequenceTensor` of ``in_type``, a plain
        ``torch.Tensor`` ``[B, T, C_in, H, W]`` whose channels follow ``in_type``, or a
        :class:`LiftedTensor` ``[B, T, V, C_in, H, W]`` over the same flows; returns the last layer's
        hidden sequence as a :class:`LiftedTensor` ``[B, T, |V|, C_hidden, H, W]`` with V ordered like
        ``flows.velocities`` (:meth:`evaluate_output_shape`). An escnn ``GeometricTensor`` (frames, no
        time axis) is refused with how to wrap it.

    A sequence module, not an escnn ``EquivariantModule`` (whose ``in_type`` would have to be the
    input's type, and whose contract is frames): chain it with escnn modules in
    :class:`~flow_escnn.nn.FlowSequential`, not in escnn's ``SequentialModule`` (which refuses it with
    escnn's bare assertion; docs/architecture.rst, "Tensor types").

    Example:
        >>> import torch
        >>> from flow_escnn import FlowSet, SequenceTensor
        >>> from flow_escnn.nn import FERNN
        >>> from escnn import gspaces, nn as enn
        >>> gs = gspaces.rot2dOnR2(4)
        >>> t_in, t_h = enn.FieldType(gs, [gs.trivial_repr]), enn.FieldType(gs, [gs.regular_repr])
        >>> layer = FERNN(t_in, t_h, FlowSet.translations(gs, 1))
        >>> h = layer(SequenceTensor(torch.rand(2, 3, 1, 6, 6), t_in))
        >>> h.type == layer.out_type, tuple(h.shape) == layer.evaluate_output_shape((2, 3, 1, 6, 6))
        (True, True)
    """

    #: the cell of one layer (set by each cell kind's layer, :mod:`flow_escnn.nn.cell_kinds`)
    cell_class: Type[FlowCellBase] = FlowCellBase
    #: ``load_state_dict`` pre-hooks that rename the keys of older checkpoints of a subclass.
    state_dict_upgrades: Tuple[Callable[..., None], ...] = ()

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
        positive_int(num_layers, "num_layers")
        one_of(mode, MODES, "mode")
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
        self._programs: Dict[Tuple[Any, ...], Recurrence] = {}
        self._register_load_state_dict_pre_hook(_tolerate_missing_extra_state)
        for hook in self.state_dict_upgrades:
            self._register_load_state_dict_pre_hook(hook)

    # -- what the parameters mean travels with them ---------------------------------------------------
    def layer_facts(self) -> Dict[str, Any]:
        """What gives the parameters their meaning: cell kind, gspace, field types, V, depth, interpolation."""
        return {
            "kind": self.kind,
            "gspace": self.flows.gspace.name,
            "in_type": [r.name for r in self.in_type.representations],
            "hidden_type": [r.name for r in self.hidden_type.representations],
            "flows": [[x if isinstance(x, int) else str(x) for x in v] for v in self.flows.velocities],  # "45/2" degrees
            "num_layers": self.num_layers,
            "interpolation": self.cells[0].interpolation,
        }

    def get_extra_state(self) -> Dict[str, Any]:
        """Stored in the ``state_dict`` (``_extra_state``): see :meth:`layer_facts`."""
        return self.layer_facts()

    def set_extra_state(self, state: Any) -> None:
        """Refuse a ``state_dict`` written by a layer whose parameters mean something else.

        Raises:
            ValueError: naming every fact that differs, with both values.
        """
        if state is None:  # written before these facts were stored
            return
        mine = self.layer_facts()
        differ = {k: (state[k], v) for k, v in mine.items() if k in state and state[k] != v}
        if differ:
            detail = "; ".join(f"{k}: saved {a!r}, this layer {b!r}" for k, (a, b) in differ.items())
            raise ValueError(
                f"this state_dict was saved from a {type(self).__name__} that differs from this one ({detail}); "
                "build the layer with the saved settings before loading"
                + ("; to run these weights over another V use flow_escnn.models.with_flows(model, flows) or "
                   "transfer_weights(src, dst)" if "flows" in differ else "")
            )

    def init_input_from(self, conv: Any, layer: int = 0) -> "FlowRNN":
        """Initialise layer ``layer``'s input convolution :math:`U` from an escnn ``R2Conv`` (copies its
        basis coefficients and bias); returns ``self``.

        The convolution must have :math:`U`'s input and output types and kernel size (for the
        plain FERNN cell: ``in_type`` and ``hidden_type``), so both use the same steerable
        basis. With :math:`W = 0` the layer then computes ``relu(conv(f_t))`` frame by frame.

        Raises:
            TypeError: when ``conv`` is not an escnn ``R2Conv``.
            ValueError: when its types, kernel size or basis differ from :math:`U`'s.
        """
        u = self.cells[layer].U
        if not isinstance(conv, enn.R2Conv):
            raise TypeError(f"init_input_from copies an escnn R2Conv, got {type(conv).__name__}")
        mine = (u.in_type, u.out_type, u.kernel_size)
        theirs = (conv.in_type, conv.out_type, conv.kernel_size)
        if mine != theirs or u.conv.weights.shape != conv.weights.shape:
            raise ValueError(
                f"layer {layer}'s input convolution maps {u.in_type} -> {u.out_type} with {u.kernel_size}x{u.kernel_size} "
                f"filters ({u.conv.weights.numel()} basis coefficients) but the given R2Conv maps {conv.in_type} -> "
                f"{conv.out_type} with {conv.kernel_size}x{conv.kernel_size} ({conv.weights.numel()}); build the flow "
                "layer with the convolution's in_type, out_type and kernel_size"
            )
        with torch.no_grad():
            u.conv.weights.copy_(conv.weights)
            if u.conv.bias is not None and conv.bias is not None:
                u.conv.bias.copy_(conv.bias)
            elif u.conv.bias is not None:
                u.conv.bias.zero_()
        return self

    @property
    def num_layers(self) -> int:
        return len(self.cells)

    @property
    def kind(self) -> str:
        """The cell kind (``"fernn"``, ``"gru"``, ``"lstm"``, ``"grnn_plus"``)."""
        return self.cells[0].kind

    @property
    def out_type(self) -> LiftedFieldType:
        """The lifted type of the output sequence."""
        return self.cells[-1].lifted_type

    @property
    def input_types(self) -> Tuple[SequenceFieldType, LiftedFieldType]:
        """The types of the sequences this layer takes: ``in_type`` over time, or lifted over its V."""
        return SequenceFieldType(self.in_type), LiftedFieldType(self.in_type, self.flows)

    def evaluate_output_shape(self, input_shape: Sequence[int]) -> Tuple[int, ...]:
        """The output shape ``[B, T, |V|, C_hidden, H, W]`` for an input of ``input_shape``
        (``[B, T, C_in, H, W]`` or lifted ``[B, T, V, C_in, H, W]``).

        Raises:
            ValueError: when the rank, the channels or V do not match this layer.
        """
        shape = tuple(int(n) for n in input_shape)
        v = len(self.flows)
        c = self.in_type.size
        nd, axes = self._spatial()
        if not ((len(shape) == 3 + nd and shape[2] == c) or (len(shape) == 4 + nd and shape[2:4] == (v, c))):
            hint = " (a single frame? add the time axis)" if len(shape) == 2 + nd else ""
            raise ValueError(
                f"{type(self).__name__} takes [B, T, C={c}, {axes}] or lifted [B, T, V={v}, C={c}, {axes}], "
                f"got input shape {shape}{hint}"
            )
        return (shape[0], shape[1], v, self.hidden_type.size, *shape[-nd:])

    def _spatial(self) -> Tuple[int, str]:
        """The number of spatial axes (2, or 3 on a 3D gspace) and their names."""
        nd = self.cells[0].spatial_dims
        return nd, ("D, H, W" if nd == 3 else "H, W")

    def resolve_mode(self, grid: Tuple[int, int], device: Union[str, torch.device] = "cpu") -> str:
        """The mode actually used on a ``grid`` (``"auto"`` resolved)."""
        stationary_only = [c for c in self.cells
                           if c.mix is not None or c.step_transport(grid, torch.device(device)) is None]
        if self.mode == "comoving" and stationary_only:
            what = ("V-mixing (velocity_mixing > 0)" if stationary_only[0].mix is not None
                    else "a learned per-velocity kernel")
            raise ValueError(f"{what} is defined in the stationary frame: use mode='hidden' or 'auto'")
        if self.mode != "auto":
            return self.mode
        if stationary_only:
            return "hidden"
        return "hidden" if self.cells[0].exact_on(grid, torch.device(device)) else "comoving"

    # -- the engine ---------------------------------------------------------------------------------------
    def weights(self) -> Weights:
        """Every layer's expanded (differentiable) weights, under the engine's names (``l{i}_...``)."""
        out: Weights = {}
        for l, cell in enumerate(self.cells):
            out.update(cell.weights(f"l{l}_"))
        return out

    def comoving_tables(self, grid: Tuple[int, int], t_len: int) -> int:
        """How many time steps the co-moving transport tables cover on ``grid`` for length ``t_len``.

        Flows on a finite torus are periodic (:meth:`FlowSet.period`), so the tables for
        :math:`\\psi_t(\\nu)^{\\pm 1}` are built for one period :math:`P` and indexed by
        :math:`t \\bmod P`: memory and set-up stay bounded for any sequence length. Falls back
        to ``t_len`` steps when :math:`P > t_len` (or no period exists).
        """
        p = self.flows.period(grid)
        return p if p is not None and p <= t_len else t_len

    def recurrence(self, grid: Tuple[int, int], device: Union[str, torch.device], steps: int,
                   view: Optional[Tuple[int, int, int, int]] = None) -> Recurrence:
        """The engine program for ``steps`` time steps on ``grid`` (cached; tables only, no weights).

        ``view``: ``(top, left, h, w)``, the window of the grid that the input frames show (a world
        map larger than the view; see :class:`~flow_escnn.nn._engine.Recurrence`).
        """
        device = torch.device(device)
        mode = self.resolve_mode(grid, device)
        if view is not None and mode != "hidden":
            raise ValueError(
                f"a view window needs the stationary frame, but this layer runs in mode {mode!r} on a {grid} map "
                "(flows that are not grid-exact run co-moving): use grid-exact flows (integer translations, quarter "
                "turns) for a world map"
            )
        n = self.comoving_tables(grid, steps) if mode == "comoving" else 1
        key = (tuple(grid), str(device), mode, n, None if view is None else tuple(view))
        program = self._programs.get(key)
        if program is None:
            self.flows.check_distinct_on(grid)
            first, last = self.cells[0], self.cells[-1]
            to_c = from_c = None
            if mode == "comoving":
                flows = self.flows
                to_c = first.plan("inv_psi_t", lambda: [g.psi(-t) for t in range(n) for g in flows], first.in_type,
                                  grid, device, extra=n, pad=first.layer_spec().pad)
                from_c = last.plan("psi_t", lambda: [g.psi(t) for t in range(n) for g in flows], last.hidden_type,
                                   grid, device, extra=n)
            program = Recurrence(
                [c.layer_spec() for c in self.cells], len(self.flows), grid, mode,
                [c.step_transport(grid, device) for c in self.cells], to_c, from_c, period=n, view=view,
            )
            self._programs[key] = program
        return program

    def export(self, grid_shape: Tuple[int, int], max_steps: Optional[int] = None) -> ExportedFlowRNN:
        """A plain-PyTorch twin for inputs on a ``grid_shape`` grid: the same engine program with
        frozen weights (see :mod:`flow_escnn.nn._frozen`).

        Args:
            grid_shape: ``(H, W)`` of the inputs, ``(D, H, W)`` on a 3D gspace (transports are per-grid
                gather tables).
            max_steps: longest sequence the twin accepts; required in co-moving mode when the
                flows have no period on that grid.
        """
        grid = check_grid(grid_shape, self.cells[0].spatial_dims)
        program, limit = self.export_program(grid, max_steps)
        with torch.no_grad():
            weights = self.weights()
        return ExportedFlowRNN(program, weights, self.in_type.size, max_steps=limit).train(self.training)

    def export_program(self, grid: Tuple[int, int], max_steps: Optional[int] = None,
                       view: Optional[Tuple[int, int, int, int]] = None) -> Tuple[Recurrence, Optional[int]]:
        """A private copy of the compiled program for exports, and the longest sequence it serves
        (``None``: any length; hidden mode, or co-moving tables for one whole flow period);
        ``view`` as in :meth:`recurrence`."""
        device = _device_of(self)
        limit: Optional[int] = None
        steps = 1
        if self.resolve_mode(grid, device) == "comoving":
            period = self.flows.period(grid)
            if period is not None:
                steps = period
            elif max_steps is None or isinstance(max_steps, bool) or not isinstance(max_steps, int) or max_steps < 1:
                raise ValueError(
                    f"{type(self).__name__} runs in co-moving mode on a {grid[0]}x{grid[1]} grid and its flows have "
                    f"no period there, so its transport tables depend on the frame index: pass "
                    f"max_steps=<longest sequence length> (got {max_steps!r})"
                )
            else:
                steps = limit = max_steps
        return copy.deepcopy(self.recurrence(grid, device, steps, view=view)), limit

    # -- forward ----------------------------------------------------------------------------------------
    def forward(self, x: InputLike, h0: Optional[Sequence[StateLike]] = None) -> LiftedTensor:
        """Run the stack over the sequence; returns the last layer's hidden sequence (see class doc)."""
        seq, _ = self.forward_with_state(x, h0)
        return seq

    def forward_with_state(
        self,
        x: InputLike,
        h0: Optional[Sequence[StateLike]] = None,
        return_sequence: bool = True,
        weights: Optional[Weights] = None,
    ) -> Tuple[Optional[LiftedTensor], List[Union[LiftedTensor, Tuple[LiftedTensor, ...]]]]:
        """Run the stack and also return every layer's final state.

        Args:
            x: input sequence (see class doc).
            h0: optional initial state per layer (``None`` entries or ``None`` for zeros); each a
                :class:`LiftedTensor` ``[B, V, C, H, W]`` (a pair ``(h, c)`` for FlowLSTM).
            return_sequence: when False, only the final states are kept (memory stays bounded for
                long inference runs: nothing of size ``T`` is stored) and the first output is None.
            weights: the expanded weights from :meth:`weights`, for a caller that reuses them
                (so nothing is expanded twice); expanded here when None.

        Returns:
            ``(sequence or None, [final state of each layer])``, final states in the stationary frame.
        """
        raw = self.check_input(x)
        b, t_len = raw.shape[0], raw.shape[1]
        grid = tuple(raw.shape[-self.cells[0].spatial_dims:])
        h0_raw = self._check_h0(h0, b, grid, raw)
        program = self.recurrence(grid, raw.device, t_len)
        seq, states = program.run_sequence(
            raw, self.weights() if weights is None else weights, h0_raw, return_sequence, self.checkpoint
        )
        out = None if seq is None else LiftedTensor(seq, self.out_type)
        packed = [
            tuple(LiftedTensor(s, self.out_type) for s in st) if len(st) > 1 else LiftedTensor(st[0], self.out_type)
            for st in states
        ]
        return out, packed

    # -- validation ---------------------------------------------------------------------------------------------
    def check_input(self, x: InputLike) -> torch.Tensor:
        """The raw tensor of an input ``[B, T, C_in, H, W]`` (plain, a SequenceTensor, or lifted), checked
        against ``in_type`` / V.

        Raises:
            TypeError: for a ``GeometricTensor`` (frames: the message says how to wrap them), a non-tensor or
                a non-floating dtype.
            ValueError: for a type, shape, channel count or V that does not match, or T=0.
        """
        nd, axes = self._spatial()
        if isinstance(x, SequenceTensor):
            if x.type.field_type != self.in_type:
                raise ValueError(
                    f"input of type {x.type!r} does not match this layer's in_type {self.in_type} "
                    f"(expected {SequenceFieldType(self.in_type)!r})"
                )
            raw = x.tensor
        elif isinstance(x, enn.GeometricTensor):
            raise geometric_tensor_refusal(type(self).__name__, x)
        elif isinstance(x, LiftedTensor):
            if x.type.flows != self.flows or x.type.field_type != self.in_type:
                raise ValueError(
                    f"lifted input of type {x.type} does not match this layer (in_type {self.in_type}, {self.flows})"
                )
            if not x.is_sequence:
                raise ValueError(f"expected a lifted sequence [B, T, V, C, {axes}], got shape {tuple(x.shape)}")
            raw = x.tensor
        elif isinstance(x, torch.Tensor):
            if x.dim() != 3 + nd or x.shape[2] != self.in_type.size:
                raise ValueError(
                    f"expected an input sequence [B, T, C={self.in_type.size}, {axes}] whose channels follow in_type, "
                    f"got shape {tuple(x.shape)}" + (" (a single frame? add the time axis)" if x.dim() == 2 + nd else "")
                )
            raw = x
        else:
            raise TypeError(
                f"expected a torch.Tensor [B, T, C, {axes}], a SequenceTensor or a LiftedTensor, got {type(x).__name__}"
            )
        if raw.shape[1] == 0:
            raise ValueError("the input sequence has T=0 frames; give at least one frame")
        if not raw.is_floating_point():
            raise TypeError(f"expected a floating point input, got dtype {raw.dtype}")
        return raw

    def _check_h0(self, h0: Optional[Sequence[StateLike]], b: int, grid: Tuple[int, int],
                  like: torch.Tensor) -> Optional[List[State]]:
        if h0 is None:
            return None
        if isinstance(h0, (LiftedTensor, torch.Tensor)):
            raise TypeError("h0 must be a list with one initial state (or None) per layer")
        h0 = list(h0)
        if len(h0) != self.num_layers:
            raise ValueError(f"h0 has {len(h0)} entries but the stack has {self.num_layers} layers")
        return [
            cell.zero_state(b, grid, like) if s is None else cell.unpack_state(s, b, grid, like)
            for s, cell in zip(h0, self.cells)
        ]


def _tolerate_missing_extra_state(state_dict: Dict[str, Any], prefix: str, *args: Any) -> None:
    """State dicts written before :meth:`FlowRNN.get_extra_state` existed load unchecked."""
    state_dict.setdefault(prefix + "_extra_state", None)


def _device_of(module: torch.nn.Module) -> torch.device:
    for p in module.parameters():
        return p.device
    return torch.device("cpu")
