"""The machinery every flow-equivariant recurrent cell shares (:class:`FlowCellBase`).

The cell kinds themselves (FERNN, GRU- and LSTM-style, G-RNN+) are one file each in
:mod:`flow_escnn.nn.cell_kinds`.

Every cell lifts its state over a flow set :math:`V` and, before each update,
transports each slice by its own one-step flow :math:`\\psi_1(\\nu)`:

.. math::
    \\tilde h_{t-1}(\\nu) = \\psi_1(\\nu)\\cdot h_{t-1}(\\nu).

The update is then an ordinary G-equivariant recurrent update with steerable
convolutions :math:`U` (input) and :math:`W` (recurrent) shared over :math:`\\nu`;
:math:`U * f_t` is computed once per frame and broadcast over :math:`V`.

* FERNN (Keller 2025, :class:`~flow_escnn.nn.FERNNCell`):
  :math:`h_t(\\nu) = \\sigma\\big(W * \\tilde h_{t-1}(\\nu) + U * f_t\\big)`.
  Since :math:`W` commutes with exact transport, this equals the paper's
  :math:`\\sigma(\\psi_1(\\nu)\\cdot[W * h_{t-1}](\\nu) + U * f_t)`; transporting the state
  (``C`` channels) rather than :math:`W * h` is what lets the gated cells share one transport.
* GRU-style (:class:`~flow_escnn.nn.FlowGRUCell`): with :math:`a_\\bullet = U_\\bullet * f_t`,
  :math:`b_\\bullet = W_\\bullet * \\tilde h_{t-1}(\\nu)`,

  .. math::
      r = \\mathrm{sig}(a_r + b_r),\\; z = \\mathrm{sig}(a_z + b_z),\\;
      n = \\tanh(a_n + r \\odot b_n),\\;
      h_t(\\nu) = (1 - z)\\odot n + z \\odot \\tilde h_{t-1}(\\nu).

* LSTM-style (:class:`~flow_escnn.nn.FlowLSTMCell`): :math:`i, f, g, o` from :math:`a + b` as in an LSTM, both
  :math:`h` and the cell state :math:`c` transported:
  :math:`c_t(\\nu) = f\\odot \\psi_1(\\nu)\\cdot c_{t-1}(\\nu) + i \\odot g`,
  :math:`h_t(\\nu) = o \\odot \\tanh(c_t(\\nu))`.

**Flow equivariance** (proof sketch, for every cell). Let :math:`f'_t = \\psi_t(\\mu) f_t`
and suppose :math:`h'_{t-1}(\\nu) = \\psi_{t-1}(\\mu) h_{t-1}(\\nu\\ominus\\mu)` (true at
:math:`t=0` for a zero initial state). If :math:`g_\\mu` commutes with :math:`g_\\nu` then
:math:`g_\\nu\\,\\psi_{t-1}(\\mu) = \\psi_t(\\mu)\\, g_{\\nu\\ominus\\mu}`, hence
:math:`\\tilde h'_{t-1}(\\nu) = \\psi_t(\\mu)\\,\\tilde h_{t-1}(\\nu\\ominus\\mu)`. The input
term satisfies :math:`U * f'_t = \\psi_t(\\mu)(U * f_t)` and :math:`W` commutes with
:math:`\\psi_t(\\mu)`, so every gate pre-activation at :math:`\\nu` is
:math:`\\psi_t(\\mu)` applied to the one at :math:`\\nu\\ominus\\mu`. Pointwise
:math:`\\sigma, \\mathrm{sig}, \\tanh` and the elementwise products commute with a
transport that permutes pixels and fibers, so
:math:`h'_t(\\nu) = \\psi_t(\\mu) h_t(\\nu\\ominus\\mu)` (and likewise :math:`c`). All
steps are exact for integer translations and 90-degree rotations on a periodic grid
with permutation-type fields; the hidden fields must therefore support pointwise
nonlinearities (trivial, regular, quotient), which the cells check.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, Optional, Tuple, Union

import torch

from flow_escnn._compat import enn
from flow_escnn._validate import one_of
from flow_escnn.flows._flowset import FlowSet
from flow_escnn.flows._plans import spatial_dims, transport_plan
from flow_escnn.flows._transport import INTERPOLATIONS, GatherTransport
from flow_escnn.flows._tables import DEFAULT_INTERPOLATION
from flow_escnn.lifted import LiftedFieldType, LiftedTensor
from flow_escnn.nn._conv import AUTO_PADDING, SteerableConv, resolve_padding
from flow_escnn.nn._engine import LayerSpec, Recurrence, Weights
from flow_escnn.nn._nonlinearity import FIELD_NONLINEARITIES, check_cell_nonlinearity, non_pointwise
from flow_escnn.nn._spec import refuses_pickle
from flow_escnn.nn._vmixing import VelocityMixing

__all__ = ["FlowCellBase", "State"]

State = Tuple[torch.Tensor, ...]


@refuses_pickle
class FlowCellBase(torch.nn.Module):
    """Shared machinery of the flow cells (not used directly).

    A cell holds the parameters of one layer (:math:`U`, :math:`W`, optional V-mixing) and
    describes itself to the recurrence engine (:mod:`flow_escnn.nn._engine`): its
    :meth:`layer_spec`, its expanded :meth:`weights` and its step transport
    :meth:`step_transport`. A cell kind (:mod:`flow_escnn.nn.cell_kinds`) sets the class
    attributes ``kind``, ``update`` (its equation, run by the engine), ``gates``,
    ``state_size`` and, for a cell whose transport is learned, ``learned_transport``.

    Args:
        in_type: escnn ``FieldType`` of the input frames (or of each V slice of a lifted input).
        hidden_type: escnn ``FieldType`` of each V slice of the hidden state; must support
            pointwise nonlinearities, except in a FERNN cell with a field nonlinearity
            (``"norm_squash"`` / ``"gated"``, :mod:`flow_escnn.nn._nonlinearity`), which takes any
            fields (e.g. SO(2) irreps).
        flows: the flow set :math:`V`.
        kernel_size: odd kernel size of :math:`U` and :math:`W`.
        bias: learn a bias in :math:`U` (escnn biases only trivial fields); :math:`W` has none.
        padding_mode: ``"auto"`` (default: ``"zeros"`` for a :math:`V` of rotation flows, else
            ``"circular"``; :func:`~flow_escnn.nn._conv.resolve_padding`), ``"circular"`` (exact on the
            torus) or ``"zeros"``. The resolved mode is ``self.padding_mode``.
        interpolation: resampling used by non-grid flows (approximate, see
            :mod:`flow_escnn.flows._transport`).
        velocity_mixing: radius of an optional learned mixing of neighbouring velocity slices
            after the transport (:class:`~flow_escnn.nn._vmixing.VelocityMixing`; 0 = off, the
            paper's cell). Exactly G-equivariant; flow-equivariant away from the border of V
            (see that module); stationary-frame (``mode="hidden"``) only.
    """

    kind: str = ""
    #: ``update(b, a, moved_state, nonlinearity) -> new_state`` (plain torch, see :class:`~flow_escnn.nn._engine.LayerSpec`)
    update: Optional[Callable[..., State]] = None
    gates: int = 1  # gate pre-activations per hidden channel
    state_size: int = 1  # tensors in the state
    learned_transport: bool = False  # a learned per-velocity kernel takes the place of psi_1(nu)
    #: the update is :math:`\sigma(b + a)` with one gate (the FERNN's): the engine may add a view window's input
    #: term ``a`` to the window's rows of ``b`` in place (:class:`~flow_escnn.nn._fused.WindowAddActivate`)
    add_activate: bool = False
    takes_nonlinearity: bool = False  # whether ``nonlinearity=`` is this cell's own sigma
    #: the submodules whose parameters do not depend on V (shared over every velocity): what
    #: :func:`flow_escnn.models.transfer_weights` may copy to a cell over another V. Every other
    #: parameter of a cell (V-mixing weights, G-RNN+ per-velocity kernels) is indexed by or built from V.
    flow_free: Tuple[str, ...] = ("U", "W")

    def __init__(
        self,
        in_type: Any,
        hidden_type: Any,
        flows: FlowSet,
        kernel_size: int = 3,
        bias: bool = True,
        padding_mode: str = AUTO_PADDING,
        interpolation: str = DEFAULT_INTERPOLATION,
        *,
        nonlinearity: Optional[str] = None,
        velocity_mixing: int = 0,
    ) -> None:
        super().__init__()
        if nonlinearity is not None and not self.takes_nonlinearity:
            raise TypeError(
                f"{type(self).__name__} has no nonlinearity argument: its gates use sigmoid and tanh "
                "(only FERNN / FERNNCell take nonlinearity=...)"
            )
        for name, ft in (("in_type", in_type), ("hidden_type", hidden_type)):
            if not isinstance(ft, enn.FieldType):
                raise TypeError(f"{name} must be an escnn FieldType, got {type(ft).__name__}")
        if not isinstance(flows, FlowSet):
            raise TypeError(f"flows must be a FlowSet, got {type(flows).__name__}")
        if not (in_type.gspace == hidden_type.gspace == flows.gspace):
            raise ValueError(
                f"in_type ({in_type.gspace}), hidden_type ({hidden_type.gspace}) and flows ({flows.gspace}) "
                "must share one gspace"
            )
        one_of(interpolation, INTERPOLATIONS, "interpolation")
        self.spatial_dims = spatial_dims(in_type.gspace)
        if self.spatial_dims == 3 and self.learned_transport:
            raise ValueError(
                f"{type(self).__name__} learns a planar per-velocity kernel; on a 3D gspace use the exact transports "
                "(FERNN, FlowGRU, FlowLSTM; or the G-RNN, FlowSet.identity)"
            )
        if self.spatial_dims == 3 and velocity_mixing:
            raise ValueError(
                "V-mixing (velocity_mixing > 0) mixes neighbouring velocities of a planar flow set (one rotation step "
                "apart, on the plane's velocity lattice); on a 3D gspace use velocity_mixing=0"
            )
        if self.takes_nonlinearity:
            check_cell_nonlinearity("relu" if nonlinearity is None else nonlinearity, hidden_type)
        elif non_pointwise(hidden_type):
            raise ValueError(
                f"{type(self).__name__} applies sigmoid/tanh to every channel, which is equivariant only on trivial, "
                f"regular or quotient fields, but hidden_type has {non_pointwise(hidden_type)}: use FERNNCell / FERNN with "
                "nonlinearity='norm_squash' or 'gated' for such fields"
            )
        self.in_type = in_type
        self.hidden_type = hidden_type
        self.flows = flows
        self.lifted_type = LiftedFieldType(hidden_type, flows)
        self.interpolation = interpolation
        reps = list(hidden_type.representations) * self.gates
        if nonlinearity == "gated":  # one invariant gate per hidden field, after the fields
            reps += [hidden_type.gspace.trivial_repr] * len(hidden_type)
        gate_type = enn.FieldType(hidden_type.gspace, reps)
        self.gate_type = gate_type
        self.padding_mode = padding_mode = resolve_padding(padding_mode, flows)
        self.U = SteerableConv(in_type, gate_type, kernel_size, bias=bias, padding_mode=padding_mode)
        self.W = SteerableConv(hidden_type, gate_type, kernel_size, bias=False, padding_mode=padding_mode)
        self._plans: Dict[Tuple[Any, ...], GatherTransport] = {}
        # optional learned mixing of neighbouring velocities (flow_escnn.nn._vmixing), 0 = off
        self.mix: Optional[VelocityMixing] = VelocityMixing(flows, velocity_mixing) if velocity_mixing else None

    @property
    def nonlinearity_name(self) -> str:
        return "identity"

    # -- what the engine needs ---------------------------------------------------------------------------
    def layer_spec(self) -> LayerSpec:
        """The static facts of this layer for the recurrence engine."""
        return LayerSpec(
            kind=self.kind,
            update=type(self).update,
            gates=self.gates,
            state_size=self.state_size,
            learned_transport=self.learned_transport,
            in_channels=self.in_type.size,
            hidden_channels=self.hidden_type.size,
            kernel_size=self.U.kernel_size,
            padding_mode=self.U.padding_mode,
            nonlinearity=self.nonlinearity_name,
            mixing=self.mix is not None,
            fields=self._field_index() if self.nonlinearity_name in FIELD_NONLINEARITIES else (),
            add_activate=self.add_activate,
        )

    def _field_index(self) -> Tuple[int, ...]:
        """The hidden field of every hidden channel."""
        return tuple(f for f, r in enumerate(self.hidden_type.representations) for _ in range(r.size))

    def weights(self, prefix: str = "l0_") -> Weights:
        """The expanded (dense, differentiable) weights under the engine's names."""
        uw, ub = self.U.expand()
        out: Weights = {f"{prefix}u_weight": uw, f"{prefix}u_bias": ub, f"{prefix}w_weight": self.W.expand()[0]}
        if self.mix is not None:
            out[f"{prefix}mixing"] = self.mix.matrix()
        return out

    def plan(self, key: str, elements_fn: Any, field_type: Any, grid: Tuple[int, ...], device: torch.device,
             extra: Any = None, pad: int = 0) -> GatherTransport:
        """A cached transport plan (:func:`~flow_escnn.flows._plans.transport_plan`; not part of the
        ``state_dict``); ``elements_fn()`` lists its elements on a miss."""
        k = (key, extra, grid, str(device), id(field_type), pad)
        plan = self._plans.get(k)
        if plan is None:
            plan = transport_plan(field_type, elements_fn(), grid, self.interpolation, pad=pad).to(device)
            self._plans[k] = plan
        return plan

    def step_transport(self, grid: Tuple[int, ...], device: torch.device) -> Optional[GatherTransport]:
        """Transport by :math:`\\psi_1(\\nu)` for every :math:`\\nu \\in V`, padded for the recurrent convolution."""
        return self.plan("step", lambda: self.flows.elements(1), self.hidden_type, grid, device, pad=self.layer_spec().pad)

    def exact_on(self, grid: Tuple[int, ...], device: torch.device) -> bool:
        """Whether every :math:`\\psi_1(\\nu)` maps the ``grid`` onto itself (no interpolation)."""
        plan = self.step_transport(grid, device)
        return plan is None or plan.exact

    # -- public single-step API ----------------------------------------------------------------------------
    def forward(
        self, x: torch.Tensor, state: Optional[Union[LiftedTensor, Tuple[LiftedTensor, ...]]] = None
    ) -> Union[LiftedTensor, Tuple[LiftedTensor, ...]]:
        """One time step (stationary frame), run by the recurrence engine.

        Args:
            x: the frame :math:`f_t`, ``[B, C_in, H, W]`` (broadcast over V), or a lifted frame
                ``[B, V, C_in, H, W]`` (tensor or :class:`LiftedTensor`) from a lower layer.
            state: the previous state (``None`` for zeros): a :class:`LiftedTensor` ``[B, V, C, H, W]``,
                or a pair ``(h, c)`` for :class:`FlowLSTMCell`.

        Returns:
            The new state, in the same form.
        """
        if isinstance(x, LiftedTensor):
            x = x.tensor
        nd = self.spatial_dims
        axes = "D, H, W" if nd == 3 else "H, W"
        if not isinstance(x, torch.Tensor) or x.dim() not in (2 + nd, 3 + nd) or x.shape[-nd - 1] != self.in_type.size:
            raise ValueError(
                f"expected a frame [B, {self.in_type.size}, {axes}] or a lifted frame [B, V, {self.in_type.size}, {axes}], "
                f"got {tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}"
            )
        if not x.is_floating_point():
            raise TypeError(f"expected a floating point input frame, got dtype {x.dtype}")
        if x.dim() == 3 + nd and x.shape[1] != len(self.flows):
            raise ValueError(f"lifted input has V={x.shape[1]} slices but the cell has |V|={len(self.flows)}")
        grid = tuple(x.shape[-nd:])
        h0 = None if state is None else [self.unpack_state(state, x.shape[0], grid, x)]
        program = Recurrence([self.layer_spec()], len(self.flows), grid, "hidden", [self.step_transport(grid, x.device)])
        new = program.run(x.unsqueeze(1), self.weights(), h0, keep_outputs=False).states[0]
        packed = tuple(LiftedTensor(s, self.lifted_type) for s in new)
        return packed[0] if self.state_size == 1 else packed

    def zero_state(self, batch: int, grid: Tuple[int, ...], like: torch.Tensor) -> State:
        shape = (batch, len(self.flows), self.hidden_type.size, *grid)
        return tuple(like.new_zeros(shape) for _ in range(self.state_size))

    def unpack_state(self, state: Any, batch: int, grid: Tuple[int, ...], like: torch.Tensor) -> State:
        """A user-given state (None, a tensor / LiftedTensor, or the pair ``(h, c)``) as the cell's tuple."""
        if state is None:
            return self.zero_state(batch, grid, like)
        if isinstance(state, (LiftedTensor, torch.Tensor)):
            items: Tuple[Any, ...] = (state,)
        elif isinstance(state, (tuple, list)):
            items = tuple(state)
        else:
            raise TypeError(
                f"{type(self).__name__} expects its state as a LiftedTensor / tensor [B, V, C, H, W]"
                + (" or a pair (h, c)" if self.state_size == 2 else "")
                + f", got {type(state).__name__}"
            )
        if len(items) != self.state_size:
            raise ValueError(f"{type(self).__name__} expects a state of {self.state_size} tensor(s), got {len(items)}")
        out = []
        expected = (batch, len(self.flows), self.hidden_type.size, *grid)
        for s in items:
            t = s.tensor if isinstance(s, LiftedTensor) else s
            if not isinstance(t, torch.Tensor) or tuple(t.shape) != expected:
                raise ValueError(
                    f"state must be [B, V, C, H, W] = {expected}, got "
                    f"{tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__}"
                )
            if isinstance(s, LiftedTensor) and s.type != self.lifted_type:
                raise ValueError(f"state has lifted type {s.type} but this cell's state is {self.lifted_type}")
            if t.dtype != like.dtype or t.device != like.device:
                raise ValueError(
                    f"state has dtype {t.dtype} on {t.device} but the input has dtype {like.dtype} on {like.device}"
                )
            out.append(t)
        return tuple(out)
