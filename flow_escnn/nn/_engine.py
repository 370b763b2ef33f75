"""The recurrence engine: one compiled program and one step loop for every flow recurrence.

Every recurrent model of flow_escnn (the sequence layers :class:`~flow_escnn.nn.FERNN`,
:class:`~flow_escnn.nn.FlowGRU`, :class:`~flow_escnn.nn.FlowLSTM`, the G-RNN and the G-RNN+,
the predictor's encoder *and* its autoregressive continuation, the classifier's encoder,
and every ``export()``) runs through :class:`Recurrence`, in two phases:

1. **Compile** (once per grid, device and mode; cached by the layers): transport tables
   for :math:`\\psi_1(\\nu)` with the circular padding of the recurrent convolution folded
   into the same gather, or, in the co-moving frame, the tables of
   :math:`\\psi_t(\\nu)^{-1}` / :math:`\\psi_t(\\nu)` over one flow period. The result is a
   plain ``torch.nn.Module`` holding integer tables and a few ints: no escnn object.
2. **Run**: :meth:`Recurrence.run` takes the input sequence and the *already expanded*
   weights (a dict of tensors, see :class:`LayerSpec`) and loops over time. Everything in
   the loop is plain torch: ``conv2d`` on dense filters, gathers whose backward passes are
   gathers (:mod:`flow_escnn.flows._gather`), and the cell updates of
   :mod:`flow_escnn.nn.cell_kinds`. It is what autocast, ``torch.compile`` and checkpointing see.

``forward()`` of a layer = compile + expand the filters (differentiable) + run;
``export()`` = compile + expand once with frozen weights (:mod:`flow_escnn.nn._export`) + the
same run, so an export cannot drift from its model.

One step, hidden (stationary-frame) mode, layer :math:`l`:

.. math::
    \\tilde s_{t-1}(\\nu) = M\\big(\\psi_1(\\nu)\\cdot s_{t-1}(\\nu)\\big),\\quad
    s_t(\\nu) = \\mathrm{update}\\big(W * \\tilde h_{t-1}(\\nu),\\; U * x_t,\\; \\tilde s_{t-1}(\\nu)\\big),

with :math:`M` the optional V-mixing and :math:`x_t` the frame (layer 0) or the layer below's
:math:`h_t`. In the co-moving mode, :math:`k_t(\\nu) = \\psi_t(\\nu)^{-1} h_t(\\nu)` is updated
with no state transport and the *input frame* is transported instead,
:math:`U * (\\psi_t(\\nu)^{-1} f_t)`, which equals :math:`\\psi_t(\\nu)^{-1}(U * f_t)` for exact
flows (so both modes compute the same function) and costs a transport of the few input
channels rather than of all gate channels. Where that input is a thin CPU one, the FERNN update adds
:math:`U * f` into the recurrent term's memory itself (:meth:`Recurrence.defers_input`), so the term is
never stored on its own. From the zero state, on an input without a :math:`V` axis, the co-moving first
update sees the same input in every slice (:math:`\\psi_0(\\nu)` is the identity) and the same zero state, so
:math:`k_0(\\nu)` is one map for all :math:`\\nu`: it is computed once (``[B, 1, C, H, W]``), and the next step
convolves that one slice and writes :math:`W * k_0` out for every :math:`\\nu` (:data:`UNIFORM_START`). A layer
with a learned transport (the G-RNN+,
``LayerSpec.learned_transport``) replaces the
transport by a learned depthwise kernel per velocity applied after :math:`W`:
:math:`h_t(\\nu) = \\sigma(K_\\nu \\circledast [W * h_{t-1}](\\nu) + U * f_t)`.

Readouts for next-frame prediction: the state's guess of frame :math:`s` is
:math:`\\tilde h_s = \\psi_1(\\nu) h_{s-1}(\\nu)` (:math:`=\\psi_s(\\nu) k_{s-1}(\\nu)` co-moving),
which the hidden mode computes anyway at step :math:`s`; :meth:`Recurrence.run` hands it
to a ``predict`` callback and, past the given frames, feeds the callback's frame back as
the input (the predictor's autoregressive continuation is the same step).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple, Union

import math

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint as _checkpoint

from flow_escnn._validate import one_of
from flow_escnn.flows._gather import CircularPad
from flow_escnn.flows._layout import is_channels_last
from flow_escnn.flows._reduce import reduce_over, sum_over
from flow_escnn.flows._transport import GatherTransport
from flow_escnn.nn._fused import Fold, FoldedTransport, WindowAddActivate, read_window
from flow_escnn.nn._kernels import (
    InputBatches, ThinTerm, channels_last_2d, check_dtype, conv, conv_same, frames_per_batch, segment_length,
)
from flow_escnn.nn._nonlinearity import FIELD_NONLINEARITIES, apply_nonlinearity, field_nonlinearity

__all__ = ["LayerSpec", "Recurrence", "RunResult", "Weights", "FRAMES", "Act", "check_view"]

State = Tuple[torch.Tensor, ...]
Weights = Dict[str, Optional[torch.Tensor]]
#: Co-moving FERNN runs on thin CPU inputs convolve layer 0's input inside the update (:meth:`Recurrence.defers_input`).
DEFER_INPUT = True
#: A co-moving run from the zero state on an input without a V axis runs its first update on one slice (every slice
#: holds the same state then) and writes the next update's recurrent term out for all V from one slice's
#: convolution (:meth:`Recurrence.run`).
UNIFORM_START = True
#: The frames the engine runs a recurrence in: stationary (the state is transported, ``"hidden"``) or co-moving.
FRAMES = ("hidden", "comoving")


class RunResult(NamedTuple):
    """What :meth:`Recurrence.run` returns: per-step outputs, predictions and the final states."""

    outputs: List[torch.Tensor]
    predictions: List[torch.Tensor]
    states: List[State]


@dataclass(frozen=True)
class LayerSpec:
    """Static facts of one layer of a :class:`Recurrence` (plain data, built by the cell's ``spec()``).

    ``update(b, a, moved, nonlinearity) -> new_state`` is the cell kind's equation (plain torch,
    :mod:`flow_escnn.nn.cell_kinds`): it maps the recurrent term :math:`b = W * \\tilde h_{t-1}`
    (``[B, V, gates*C, H, W]``, a view of a fresh convolution output), the input term
    :math:`a = U * f_t` (``[B, 1 or V, gates*C, H, W]``, broadcast over :math:`V`) and the
    transported state :math:`\\tilde s_{t-1}` to the new state. ``learned_transport``: the
    layer's learned per-velocity kernel (``kernel`` below) takes the place of :math:`\\psi_1(\\nu)`.

    The layer's weights live in the ``weights`` dict passed to :meth:`~flow_escnn.nn._engine.Recurrence.run` under
    ``f"{prefix}u_weight"``, ``u_bias`` (optional), ``w_weight``, ``mixing`` (optional ``[V, V]``)
    and ``kernel`` (``learned_transport`` only: ``[V*C, 1, k, k]``), with ``prefix = f"l{index}_"``.
    """

    kind: str
    update: Callable[..., State]
    gates: int
    state_size: int
    learned_transport: bool
    in_channels: int
    hidden_channels: int
    kernel_size: int
    padding_mode: str = "circular"
    nonlinearity: str = "relu"
    mixing: bool = False
    velocity_kernel_size: int = 0  # learned_transport: size of the learned per-velocity kernel
    fields: Tuple[int, ...] = ()  # field nonlinearities: the hidden field of every hidden channel
    add_activate: bool = False  # the update is sigma(b + a) (one gate): a view window's a may be added in place

    @property
    def num_fields(self) -> int:
        return max(self.fields) + 1 if self.fields else 0

    @property
    def gate_channels(self) -> int:
        extra = self.num_fields if self.nonlinearity == "gated" else 0
        return self.gates * self.hidden_channels + extra

    @property
    def pad(self) -> int:
        """Padding that the transports write (circular mode) for the recurrent convolution."""
        return self.kernel_size // 2 if self.padding_mode == "circular" else 0


def _crop(s: torch.Tensor, p: int, grid: Sequence[int]) -> torch.Tensor:
    """The interior of a tensor whose last ``len(grid)`` axes are circularly padded by ``p`` (as is when unpadded)."""
    if s.shape[-1] == grid[-1]:
        return s
    return s[(..., *(slice(p, p + n) for n in grid))]


def _channels_last(s: torch.Tensor) -> torch.Tensor:
    """A planar state ``[B, V, C, H, W]`` with its channels innermost in memory (``channels_last`` per ``B*V`` map)."""
    b, v, c, h, w = s.shape
    return s.reshape(b * v, c, h, w).contiguous(memory_format=torch.channels_last).view(b, v, c, h, w)


def _zeros(shape: Sequence[int], dtype: torch.dtype, device: torch.device, channels_last: bool) -> torch.Tensor:
    """A zero state ``[B, V, C, *grid]``, allocated channels-last (planar) when asked."""
    if not channels_last:
        return torch.zeros(*shape, dtype=dtype, device=device)
    b, v, *rest = shape
    out = torch.empty(b * v, *rest, dtype=dtype, device=device, memory_format=torch.channels_last)
    return out.zero_().view(*shape)


class _BroadcastSlices(torch.autograd.Function):
    """A recurrent term ``[B, 1, C, *grid]`` of a V-uniform state written out for all ``V`` slices, as a fresh
    ``[B * V, C, *grid]`` in its layout (the update adds into it in place); backward: the sum over the slices."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, v: int) -> torch.Tensor:  # type: ignore[override]
        b, _, c, *grid = x.shape
        cl = len(grid) == 2 and is_channels_last(x)
        out = torch.empty(b * v, c, *grid, dtype=x.dtype, device=x.device,
                          memory_format=torch.channels_last if cl else torch.contiguous_format)
        out.view(b, v, c, *grid).copy_(x.expand(b, v, c, *grid))
        ctx.shape = (b, v, c, *grid)
        return out

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> Tuple[Optional[torch.Tensor], ...]:  # type: ignore[override]
        return sum_over(g.view(ctx.shape), [1]), None


def _first_slice(u: Union[torch.Tensor, ThinTerm], batch: int) -> Union[torch.Tensor, ThinTerm]:
    """The input term ``u`` (``[B, V, G, *grid]``, or a :class:`~flow_escnn.nn._kernels.ThinTerm` over ``B * V``
    maps) of its first slice only."""
    if isinstance(u, ThinTerm):
        return u._replace(x=u.x.view(batch, -1, *u.x.shape[1:])[:, 0])
    return u[:, :1]


class _Moved(NamedTuple):
    conv_input: Optional[torch.Tensor]  # [B*V, C, H(+2p), W(+2p)]: what W convolves; None: the zero initial state
    state: State  # transported state tensors [B, V, C, H, W] (views), for the gated updates
    readout: Optional[torch.Tensor]  # psi_1(nu) h_{t-1}(nu), stationary frame; circularly padded or not; None unless asked


Predict = Callable[[int, torch.Tensor], Optional[torch.Tensor]]
#: ``act(t, s)``: a state tensor ``[B, V, C, H, W]`` of time ``t - 1`` carried into frame ``t`` by the self-motion
#: of step ``t`` (:class:`~flow_escnn.flows._action.ActionTransport`), before the flow transport. An ``act`` that
#: also has ``act.permutation(t, shape, device)`` (the step as per-sample permutations,
#: :class:`~flow_escnn.flows._action.SelfMotion`, or None where it is none) has its self-motion folded into the
#: flow transport's gather (:meth:`Recurrence.transport`).
Act = Callable[[int, torch.Tensor], torch.Tensor]


def check_view(view: Any, grid_shape: Tuple[int, int]) -> Tuple[int, int, int, int]:
    """``(top, left, h, w)`` as ints if the window lies inside the ``grid_shape`` grid."""
    try:
        top, left, h, w = (int(v) for v in view)
    except (TypeError, ValueError):
        raise ValueError(f"view must be (top, left, h, w), got {view!r}") from None
    gh, gw = grid_shape
    if h < 1 or w < 1 or top < 0 or left < 0 or top + h > gh or left + w > gw:
        raise ValueError(f"the view window {view} does not fit in the {gh}x{gw} map")
    return top, left, h, w


class Recurrence(torch.nn.Module):
    """A compiled flow recurrence on one grid (plain torch; see the module docstring).

    Args:
        layers: one :class:`LayerSpec` per stacked layer.
        num_flows: :math:`|V|`.
        grid_shape: ``(H, W)``, or ``(D, H, W)`` for volumes: every tensor then carries the three
            spatial axes where a plane has two, and the convolutions are ``conv3d``.
        mode: ``"hidden"`` or ``"comoving"``.
        step: per layer, the transport by :math:`\\psi_1(\\nu)` of the hidden fields (padded by
            the layer's :attr:`LayerSpec.pad`), ``None`` for layers with a learned transport.
        to_comoving: co-moving mode: :math:`\\psi_t(\\nu)^{-1}` of the input frames for
            ``t = 0..P-1`` (row ``t*V + nu``), padded by layer 0's pad.
        from_comoving: co-moving mode: :math:`\\psi_t(\\nu)` of the last layer's hidden fields.
        period: ``P``, the number of time steps the co-moving tables hold (indexed by ``t mod P``).
        view: ``(top, left, h, w)``: the input frames are views of this window of the grid (a world
            map larger than the view, :mod:`flow_escnn.models._world`): layer 0 convolves them on the
            view's own grid (zero padding) and writes :math:`U * f_t` into the window, zeros elsewhere.
            Stationary frame only.
    """

    def __init__(
        self,
        layers: Sequence[LayerSpec],
        num_flows: int,
        grid_shape: Tuple[int, int],
        mode: str,
        step: Sequence[Optional[GatherTransport]],
        to_comoving: Optional[GatherTransport] = None,
        from_comoving: Optional[GatherTransport] = None,
        period: int = 1,
        view: Optional[Tuple[int, int, int, int]] = None,
    ) -> None:
        super().__init__()
        one_of(mode, FRAMES, "mode")
        if mode == "comoving" and (to_comoving is None or from_comoving is None):
            raise ValueError("the co-moving mode needs the to_comoving and from_comoving tables")
        self.layers = list(layers)
        self.num_flows = int(num_flows)
        self.grid_shape = tuple(int(n) for n in grid_shape)
        if len(self.grid_shape) not in (2, 3):
            raise ValueError(f"grid_shape must be (H, W) or (D, H, W), got {grid_shape!r}")
        self.nd = len(self.grid_shape)
        self.mode = mode
        self.comoving = mode == "comoving"
        self.step_transports = torch.nn.ModuleList([t if t is not None else torch.nn.Identity() for t in step])
        self.to_comoving = to_comoving
        self.from_comoving = from_comoving
        self.period = int(period)
        if view is not None and self.nd != 2:
            raise ValueError("a view window (a world map larger than the view) is planar; volumes have none")
        if self.nd != 2 and any(s.learned_transport for s in self.layers):
            raise ValueError("a learned per-velocity kernel (the G-RNN+) is planar; volumes take the exact transports")
        self.view = None if view is None else check_view(view, self.grid_shape)
        if self.view is not None:
            top, left, vh, vw = self.view
            mask = torch.zeros(1, 1, 1, *self.grid_shape, dtype=torch.bool)
            mask[..., top : top + vh, left : left + vw] = True
            self.register_buffer("view_mask", mask, persistent=False)
        if self.view is not None and self.comoving:
            raise ValueError("a view window needs the stationary frame (mode 'hidden'): the map is transported, not the "
                             "views")
        for l, s in enumerate(self.layers):
            if s.nonlinearity in FIELD_NONLINEARITIES:
                self.register_buffer(f"fields{l}", torch.tensor(s.fields, dtype=torch.long), persistent=False)
        self._planar_layout = self.nd == 2 and self.view is None and all(
            not s.learned_transport and not s.mixing and s.nonlinearity not in FIELD_NONLINEARITIES for s in self.layers)
        # the stationary frame transports every step: exact (pixel-row) tables only
        transports = [self.to_comoving, self.from_comoving] if self.comoving else list(step)
        self._planar_layout = self._planar_layout and all(
            isinstance(t, GatherTransport) and t.rho is None and (self.comoving or t.exact) for t in transports)
        pads = {s.kernel_size // 2 for s in self.layers} | {s.velocity_kernel_size // 2 for s in self.layers}
        self.pads = torch.nn.ModuleDict({str(p): CircularPad(self.grid_shape, p) for p in sorted(pads) if p})

    @property
    def device(self) -> torch.device:
        """The device of the tables."""
        return next((b.device for b in self.buffers()), torch.device("cpu"))

    def pad(self, x: torch.Tensor, p: int) -> torch.Tensor:
        """Circular padding by ``p`` with this grid's tables."""
        return self.pads[str(p)](x) if p else x

    def channels_last(self, dtype: torch.dtype, device: torch.device) -> bool:
        """Whether the states of a run (with no self-motion) in this dtype and on this device are kept channels-last.

        Planar runs on the CPU (:func:`~flow_escnn.nn._kernels.channels_last_2d`) whose states are only convolved,
        updated pointwise (no field nonlinearity, no V-mixing, no learned transport), circularly padded and
        transported by permutation fibers: by exact tables in the stationary frame (whole pixel rows,
        :func:`~flow_escnn.flows._gather.gather_pixel_rows`), by interpolated or exact ones co-moving (the
        resampling's pixel-major layout is then one move of the batch axis away). All of these read the layout
        in place, and the convolutions run faster in it than ``[N, C, H, W]`` (``benchmarks/README.md``,
        "Channels-last states"). The values are the same sums in another order. A view window or self-motion
        (:mod:`flow_escnn.models._world`) keeps the plain layout.
        """
        return self._planar_layout and channels_last_2d(device, dtype)

    def extra_repr(self) -> str:
        kinds = ",".join(s.kind for s in self.layers)
        per = f", period={self.period}" if self.comoving else ""
        view = f", view={self.view}" if self.view is not None else ""
        return f"layers=[{kinds}], |V|={self.num_flows}, grid={self.grid_shape}, mode={self.mode!r}{per}{view}"

    # -- pieces of one step ---------------------------------------------------------------------------
    def _rows(self, t0: int, n: int, device: torch.device) -> torch.Tensor:
        """Table rows ``[n, V]`` of times ``t0 .. t0+n-1`` (modulo the period)."""
        times = torch.arange(t0, t0 + n, device=device) % self.period
        return times[:, None] * self.num_flows + torch.arange(self.num_flows, device=device)

    def input_terms(self, l: int, x: torch.Tensor, weights: Weights, t0: int, window: bool = False,
                    channels_last: bool = False, defer: bool = False) -> Union[torch.Tensor, ThinTerm]:
        """:math:`U * x` of layer ``l`` for ``x [B, n, (V,) C_in, *grid]`` (frames ``t0 ..``); ``[B, n, 1|V, G, *grid]``.

        Layer 0 in the co-moving mode convolves :math:`\\psi_t(\\nu)^{-1} x_t` for every :math:`\\nu`; with
        ``defer=True`` a thin input's convolution is returned as a :class:`~flow_escnn.nn._kernels.ThinTerm` over the
        ``B * n * V`` maps instead, for the update to add into the recurrent term (:meth:`defers_input`). With a
        view window, layer 0's term is written into the window, zeros elsewhere, or with ``window=True`` returned
        as it is, on the window's grid (:meth:`update` writes it). ``channels_last``: the terms in that layout
        (the run's states are, :meth:`channels_last`).
        """
        spec, nd = self.layers[l], self.nd
        uw, ub = weights[f"l{l}_u_weight"], weights.get(f"l{l}_u_bias")
        if x.dim() == 3 + nd:
            x = x.unsqueeze(2)
        b, n, v = x.shape[0], x.shape[1], x.shape[2]
        grid = tuple(x.shape[-nd:])
        if l == 0 and self.comoving:
            xp = self.to_comoving(x, rows=self._rows(t0, n, x.device))  # [B, n, V, C, *(grid + 2p)]
            v = self.num_flows
            flat = xp.reshape(b * n * v, *xp.shape[-nd - 1:])
            padding = 0 if spec.pad else uw.shape[-1] // 2
            if defer and ThinTerm.applies(flat, uw):
                return ThinTerm(flat, uw, ub, padding)
            out = conv(flat, uw, ub, padding=padding, channels_last=channels_last)
        elif l == 0 and self.view is not None:  # the view's own grid, zero padding; then written into the window
            out = conv_same(x.reshape(b * n * v, *x.shape[-3:]), uw, ub, "zeros")
            if not window:
                out = self._write_window(out)
            grid = tuple(out.shape[-2:])
        else:
            pad = self.pads[str(spec.kernel_size // 2)] if spec.pad else None
            out = conv_same(x.reshape(b * n * v, *x.shape[-nd - 1:]), uw, ub, spec.padding_mode, pad, channels_last)
        return out.view(b, n, v, out.shape[1], *grid)

    def defers_input(self, x: torch.Tensor, weights: Weights) -> bool:
        """Whether a run on ``x [B, T, C_in, *grid]`` hands layer 0's input terms to its update unconvolved
        (:class:`~flow_escnn.nn._kernels.ThinTerm`): co-moving (one term per map of the recurrent term), a FERNN
        update :math:`\\sigma(b + a)` with a pointwise nonlinearity, and a thin CPU input
        (:meth:`ThinTerm.applies <flow_escnn.nn._kernels.ThinTerm.applies>`). The update then convolves the input
        into the recurrent term's memory, and the term is never written on its own."""
        spec = self.layers[0]
        return (DEFER_INPUT and self.comoving and spec.add_activate and spec.nonlinearity not in FIELD_NONLINEARITIES
                and not spec.learned_transport and not spec.mixing and x.dim() == 3 + self.nd and self.nd == 2
                and x.shape[1] > 0 and ThinTerm.applies(x[:, 0], weights["l0_u_weight"]))

    def _write_window(self, u: torch.Tensor) -> torch.Tensor:
        """A term on the view window's grid ``[..., h, w]`` written into the window of the map, zeros elsewhere."""
        top, left, vh, vw = self.view  # type: ignore[misc]
        gh, gw = self.grid_shape
        return F.pad(u, (left, gw - vw - left, top, gh - vh - top))

    def _window_slices(self, p: int) -> Tuple[slice, slice]:
        """The view window's rows and columns in the map padded by ``p`` on each side."""
        top, left, vh, vw = self.view  # type: ignore[misc]
        return slice(top + p, top + p + vh), slice(left + p, left + p + vw)

    def _positions(self, key: str, p: int, device: torch.device) -> Tuple[torch.Tensor, ...]:
        """Cached positions in the grid padded by ``p``: ``"rings"`` the ring layers of the circular padding
        (:func:`~flow_escnn.flows._gather.ring_layers`), ``"window"`` the view window."""
        cache = self.__dict__.setdefault("_position_cache", {})
        k = (key, p, str(device))
        if k not in cache:
            if key == "rings":
                pad = self.pads[str(p)] if p else None
                if pad is None or pad.ring is None:
                    cache[k] = ()
                else:
                    sizes = [getattr(pad, f"ring{i}_source").numel() for i in range(pad.num_rings)]
                    cache[k] = tuple(r.to(device) for r in pad.ring.split(sizes))
            else:
                ys, xs = self._window_slices(p)
                wp = self.grid_shape[1] + 2 * p
                rows = torch.arange(ys.start, ys.stop, device=device)
                cache[k] = ((rows[:, None] * wp + torch.arange(xs.start, xs.stop, device=device)).reshape(-1),)
        return cache[k]

    def _fold(self, l: int, h: torch.Tensor, t: int, act: Optional[Act]) -> Optional[Fold]:
        """The tables of the self-motion of step ``t`` and layer ``l``'s flow transport as one gather
        (:class:`Fold`), where both are permutations (an exact transport with permutation fibers, and an
        ``act`` with tables, or none with a view window, whose readout the gather then writes); else None."""
        spec, tr = self.layers[l], self.step_transports[l]
        if spec.learned_transport or self.comoving or self.nd != 2:
            return None
        if not isinstance(tr, GatherTransport) or not tr.exact or tr.rho is not None:
            return None
        if act is None:
            if self.view is None:
                return None
            motion: Any = (None, None, None, None)
        else:
            tables = getattr(act, "permutation", None)
            motion = tables(t, tuple(h.shape), h.device) if tables is not None else None
            if motion is None:
                return None
        pixels, pixels_inverse, rows_in, _ = motion
        b, v, c = h.shape[:3]
        n, p_out = math.prod(h.shape[3:]), tr.index.shape[1]
        index, dev = tr.index, h.device
        if pixels is None:
            pix = index.unsqueeze(0).expand(b, v, p_out)
        else:  # the flow reads pixel index[v, q] of the moved map, which reads pixels[b, .] of the map
            pix = pixels.gather(1, index.reshape(1, -1).expand(b, -1)).view(b, v, p_out)
        channels = torch.arange(c, device=dev)
        flow_rows = torch.arange(v, device=dev)[:, None] * c + (tr.perm if tr.perm is not None else channels)
        fixed = rows_in is None and tr.perm is None
        if rows_in is None:
            rows = flow_rows.unsqueeze(0).expand(b, v, c)
            shift = fixed
        else:
            rows = rows_in.gather(1, flow_rows.reshape(1, -1).expand(b, -1)).view(b, v, c)
            shift = bool((rows - channels == rows[..., :1]).all())
        key = rows[..., :1] * n + pix if shift else None
        window, slices, p = None, None, tr.pad
        if self.view is not None:
            window = self._positions("window", p, dev)[0]
            slices = self._window_slices(p)
        return Fold(rows, pix, key, shift, tr.inverse, pixels_inverse, fixed, self._positions("rings", p, dev),
                     window, slices, h.shape[-1] + 2 * p, (b, v, c, n, p_out))

    def transport(self, l: int, state: State, weights: Weights, t: int, need_readout: bool,
                  pool: Optional[str] = None, act: Optional[Act] = None, readout_only: bool = False) -> _Moved:
        """:math:`\\tilde s_{t-1} = M(\\psi_1(\\nu)\\, a_t^{-1} s_{t-1})` (hidden; :math:`a_t^{-1}` the self-motion
        ``act`` of step ``t``, when given) or :math:`k_{t-1}` padded (co-moving); the readout (``None`` unless
        ``need_readout``) pooled over :math:`V` by ``pool`` (``"max"`` / ``"mean"``) when given.

        Where the self-motion and the flow transport are both permutations (:meth:`_fold`) they run as one
        gather (one pass each way, no intermediate map), and with a view window the readout is the window of
        :math:`\\tilde h` (``[B, V, C, h, w]``), written by the same gather; ``readout_only``: the step only
        reads (past the last update), so only the window is gathered.
        """
        spec = self.layers[l]
        fold = self._fold(l, state[0], t, act)
        if fold is not None:
            return self._folded(l, state, weights, fold, need_readout, pool, readout_only)
        if act is not None:
            state = tuple(act(t, s) for s in state)
        h = state[0]
        b, v, c = h.shape[:3]
        grid = tuple(h.shape[3:])
        p = spec.pad
        readout = None
        if spec.learned_transport or self.comoving:
            moved = [self.pad(s, p) if i == 0 else s for i, s in enumerate(state)]
            if need_readout:
                if self.comoving:
                    readout = self.from_comoving(h, rows=self._rows(t, 1, h.device)[0], reduce=pool)
                else:
                    readout = self._velocity_kernel(l, h, weights)
        else:
            tr = self.step_transports[l]
            if (need_readout and pool == "max" and self.view is None and isinstance(tr, GatherTransport)
                    and tr.pools_rows(h)):  # one gather for both
                y, readout = tr.pooled_rows(h)
                moved = [y] + [tr(s) for s in state[1:]]
            else:
                moved = [tr(h)] + [tr(s) for s in state[1:]]
            mix = weights.get(f"l{l}_mixing")
            if mix is not None:
                moved = [torch.einsum("ij,bj...->bi...", mix.to(s.dtype), s) for s in moved]
        conv_input = moved[0].reshape(b * v, c, *moved[0].shape[3:])
        views = tuple(_crop(s, p, grid) for s in moved)
        if need_readout and readout is None and not self.comoving and not spec.learned_transport:
            readout = self._readout(moved[0], pool)  # psi_1(nu) h padded by the layer's pad (readers may pool it padded)
        elif readout is not None and spec.learned_transport:
            readout = self._readout(readout, pool)
        return _Moved(conv_input, views, readout)

    def _folded(self, l: int, state: State, weights: Weights, fold: Fold, need_readout: bool, pool: Optional[str],
                readout_only: bool) -> _Moved:
        """:meth:`transport` by one folded gather per state tensor (:class:`FoldedTransport`)."""
        p = self.layers[l].pad
        grid = tuple(state[0].shape[3:])
        b, v, c = state[0].shape[:3]
        padded = tuple(n + 2 * p for n in grid)
        mix = weights.get(f"l{l}_mixing")
        kind = "none"
        if need_readout and fold.window is not None and mix is None:
            kind = "max" if pool == "max" else "window"
        window = None if self.view is None else (self.view[2], self.view[3])
        if kind != "none" and readout_only:  # nothing but the readout is read
            readout = FoldedTransport.apply(state[0], fold, kind, True)
            return _Moved(None, state, self._pooled(readout, kind, pool, b, v, c, window))
        moved, readout = [], None
        for i, s in enumerate(state):
            if i == 0 and kind != "none":
                y, readout = FoldedTransport.apply(s, fold, kind, False)
                readout = self._pooled(readout, kind, pool, b, v, c, window)
            else:
                y = FoldedTransport.apply(s, fold, "none", False)
            moved.append(y.view(b, v, c, *padded))
        if mix is not None:
            moved = [torch.einsum("ij,bj...->bi...", mix.to(s.dtype), s) for s in moved]
        if need_readout and readout is None:
            readout = self._readout(moved[0], pool)
        return _Moved(moved[0].reshape(b * v, c, *padded), tuple(_crop(s, p, grid) for s in moved), readout)

    @staticmethod
    def _pooled(readout: torch.Tensor, kind: str, pool: Optional[str], b: int, v: int, c: int,
                window: Any) -> torch.Tensor:
        """A readout of :class:`FoldedTransport` shaped ``[B, (V,) C, h, w]``, pooled over :math:`V` by ``pool``."""
        if kind == "max":
            return readout.view(b, c, *window)
        readout = readout.view(b, v, c, *window)
        return reduce_over(readout, 1, pool) if pool is not None else readout

    def _readout(self, z: torch.Tensor, pool: Optional[str]) -> torch.Tensor:
        """The guess read from a transported map ``z [B, V, C, H(+2p), W(+2p)]``: its view window, when the program
        has one, then pooled over :math:`V` by ``pool`` (only when read: a pooling nobody reads is a pass over V)."""
        if self.view is not None:
            z = read_window(z, *self._window_slices((z.shape[-1] - self.grid_shape[1]) // 2))
        return reduce_over(z, 1, pool) if pool is not None else z

    def _velocity_kernel(self, l: int, x: torch.Tensor, weights: Weights) -> torch.Tensor:
        """G-RNN+: :math:`K_\\nu \\circledast x(\\nu)` (depthwise, circular) for ``x [B, V, C, H, W]``."""
        b, v, c, h, w = x.shape
        k = weights[f"l{l}_kernel"]
        y = F.conv2d(self.pad(x.reshape(b, v * c, h, w), k.shape[-1] // 2), k.to(x.dtype), groups=v * c)
        return y.view(b, v, c, h, w)

    def update(self, l: int, moved: _Moved, u: torch.Tensor, weights: Weights) -> State:
        """The cell update of layer ``l`` from the transported state and the input term ``u``."""
        spec = self.layers[l]
        ww = weights[f"l{l}_w_weight"]
        b, v = moved.state[0].shape[:2]
        grid = tuple(moved.state[0].shape[3:])
        if moved.conv_input is None:  # the zero initial state: W * 0 = 0, written fresh (the updates write into it)
            s0 = moved.state[0]
            bt = _zeros((b, v, ww.shape[0], *grid), s0.dtype, s0.device, is_channels_last(s0))  # the run's layout
        else:
            bt = conv(moved.conv_input, ww, padding=0 if spec.pad else ww.shape[-1] // 2)
            slices = u.x.shape[0] // b if isinstance(u, ThinTerm) else u.shape[1]
            if v == 1 and slices > 1 and self.comoving:  # a V-uniform state (run(): the first update's), one slice
                bt, v = _BroadcastSlices.apply(bt.view(b, 1, bt.shape[1], *grid), slices), slices
            bt = bt.view(b, v, bt.shape[1], *grid)
            if spec.learned_transport:
                bt = self._velocity_kernel(l, bt, weights)
        if not isinstance(u, ThinTerm) and tuple(u.shape[3:]) != grid:  # a view window's term (input_terms(window=True))
            if spec.add_activate and spec.nonlinearity not in FIELD_NONLINEARITIES:
                return (self._window_update(bt, u, spec.nonlinearity),)
            u = self._write_window(u)
        if spec.nonlinearity in FIELD_NONLINEARITIES:
            return (field_nonlinearity(bt + u.to(bt.dtype), getattr(self, f"fields{l}"), spec.num_fields,
                                       spec.nonlinearity),)
        return spec.update(bt, u, moved.state, spec.nonlinearity)

    def _window_update(self, bt: torch.Tensor, u: torch.Tensor, nonlinearity: str) -> torch.Tensor:
        """The FERNN update :math:`\\sigma(b + \\mathrm{write}(a))` with ``a`` on the view window only
        (:class:`WindowAddActivate`), in the memory of ``b`` (a fresh convolution output)."""
        u = u.to(bt.dtype)
        if torch.is_grad_enabled() and (bt.requires_grad or u.requires_grad):
            base = bt._base if bt._base is not None else bt
            return WindowAddActivate.apply(base, u, tuple(bt.shape), self.view, nonlinearity).view(bt.shape)
        top, left, vh, vw = self.view  # type: ignore[misc]
        bt[..., top : top + vh, left : left + vw].add_(u)
        return apply_nonlinearity(bt, nonlinearity, inplace=True)

    def zero_state(self, batch: int, dtype: torch.dtype, device: torch.device,
                   channels_last: bool = False) -> List[State]:
        return [
            tuple(_zeros((batch, self.num_flows, s.hidden_channels, *self.grid_shape), dtype, device, channels_last)
                  for _ in range(s.state_size))
            for s in self.layers
        ]

    def to_frame(self, states: List[State], t: int, stationary: bool) -> List[State]:
        """Co-moving states of time ``t`` to the stationary frame (``stationary=True``: :math:`\\psi_t k`)
        or stationary initial states into the co-moving frame (:math:`k_{-1} = \\psi_1 h_{-1}`)."""
        if not self.comoving:
            return states
        if stationary:
            rows = self._rows(t, 1, states[0][0].device)[0]
            return [tuple(self.from_comoving(s, rows=rows) for s in st) for st in states]
        return [tuple(self._step_unpadded(l, s) for s in st) for l, st in enumerate(states)]

    def _step_unpadded(self, l: int, s: torch.Tensor) -> torch.Tensor:
        y, p = self.step_transports[l](s), self.layers[l].pad
        return _crop(y, p, self.grid_shape) if p else y

    # -- the loop ---------------------------------------------------------------------------------------
    def run(
        self,
        x: torch.Tensor,
        weights: Weights,
        h0: Optional[List[State]] = None,
        *,
        keep_outputs: bool = True,
        output_map: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
        predict: Optional[Predict] = None,
        predict_from: int = 0,
        extra_steps: int = 0,
        checkpoint: bool = False,
        chunk: Optional[int] = None,
        readout_pool: Optional[str] = None,
        act: Optional[Act] = None,
        carry_past_inputs: bool = False,
    ) -> RunResult:
        """Run the recurrence over ``x [B, T, (V,) C_in, H, W]``.

        Args:
            x: the input frames (a lifted input carries its own V axis).
            weights: expanded weights (see :class:`LayerSpec`).
            h0: initial states per layer in the stationary frame (``None``: zeros).
            keep_outputs: collect the last layer's :math:`h_t` (stationary frame) of every step.
            output_map: applied to each kept output (e.g. a per-step readout), when given.
            predict: ``predict(s, guess)`` is called with the guess :math:`\\tilde h_s` of frame ``s``
                (``[B, V, C, H, W]``, stationary frame; in the hidden mode with circular padding it
                comes circularly padded, ``[B, V, C, H+2p, W+2p]``, as the step computed it; with a view
                window, the window only, ``[B, V, C, h, w]``) for ``predict_from <= s <= T + extra_steps``;
                its return values are collected, and for ``s >= T`` the returned frame
                ``[B, C_in, H, W]`` is the input of step ``s`` (a pair ``(value, frame)``: ``value`` is
                collected and ``frame`` is the input).
            predict_from: first frame to predict (``>= 1``).
            extra_steps: steps run past the given frames on predicted inputs.
            checkpoint: recompute segments of about :math:`\\sqrt{T}` steps in the backward pass.
            chunk: given frames per batch of layer-0 input terms (:meth:`input_terms`), convolved
                just before the steps that use them; ``None``: as many as keep the batch's output
                under :data:`~flow_escnn.nn._kernels.INPUT_BATCH_BYTES` (:class:`~flow_escnn.nn._kernels.InputBatches`).
            readout_pool: ``"max"`` / ``"mean"``: the guesses handed to ``predict`` come pooled over :math:`V`
                (``[B, C, H(+2p), W(+2p)]``, or ``[B, C, h, w]`` with a view window; co-moving interpolated
                readouts pool inside their resampling, a folded transport's window readout inside its gather).
            act: self-motion (:data:`Act`): ``act(t, s)`` carries every layer's state into frame ``t``
                before the flow transport of step ``t`` (stationary frame only; folded into the transport's
                gather where it has permutation tables). A zero initial state is not moved (zeros stay zeros).
            carry_past_inputs: past the given frames, only transport the states (self-motion and
                :math:`\\psi_1(\\nu)`; no input, no cell update), so the state is carried, not rewritten,
                while ``predict`` reads it; with a view window, also outside the window on the given
                frames (the cells update where a view is written, the rest of the map is carried).
                Stationary frame only.

        Returns:
            :class:`RunResult`: outputs, predictions, final states (stationary frame; the
            states after the last update).
        """
        check_dtype(x, weights["l0_u_weight"])
        if (act is not None or carry_past_inputs) and self.comoving:
            raise ValueError("self-motion (act) and carrying states need the stationary frame (mode 'hidden')")
        b, t_in = x.shape[0], x.shape[1]
        n_updates = t_in + extra_steps
        last_predict = n_updates if predict is not None else -1
        if predict is not None and predict_from < 1:
            raise ValueError("predict_from must be >= 1 (frame 0 has no earlier state to predict it from)")
        states: Optional[List[State]] = None if h0 is None else self.to_frame(h0, -1, stationary=False)
        cl = self.channels_last(weights["l0_w_weight"].dtype, x.device) and act is None
        if states is not None and cl:
            states = [tuple(_channels_last(s) for s in st) for st in states]
        total = max(n_updates, last_predict + 1)
        grad = torch.is_grad_enabled()
        seg = segment_length(total) if (checkpoint and grad) else total
        v = x.shape[2] if x.dim() == 4 + self.nd else (self.num_flows if self.comoving else 1)
        hw = math.prod(self.grid_shape) if self.view is not None else math.prod(x.shape[-self.nd:])
        per_batch = frames_per_batch(chunk, b * v * weights["l0_u_weight"].shape[0] * hw * x.element_size())
        if cl:
            per_batch = 1  # a channels-last batch's gradient would be stacked frame by frame into the wrong layout
        defer = self.defers_input(x, weights)
        # co-moving from the zero state on an input without a V axis: every slice of the first update sees the same
        # input (psi_0 is the identity) and the same zero state, so the first update runs on one slice and the
        # states stay [B, 1, C, *grid] until the next update's recurrent term is written out for all V (update())
        uniform = (UNIFORM_START and self.comoving and states is None and x.dim() == 3 + self.nd
                   and self.num_flows > 1)
        outputs: List[torch.Tensor] = []
        predictions: List[torch.Tensor] = []

        def segment(
            t0: int, n: int, flat: Sequence[torch.Tensor]
        ) -> Tuple[List[torch.Tensor], List[torch.Tensor], List[torch.Tensor]]:
            given = min(n, max(0, t_in - t0))
            input_term = InputBatches(lambda i, k: self.input_terms(0, x[:, t0 + i : t0 + i + k], weights, t0 + i,
                                                                    window=True, channels_last=cl), given, per_batch)
            if flat:
                st = self._unflatten(flat)
            else:  # zero initial state, in the dtype the convolutions produce (autocast)
                st = self.zero_state(b, input_term(0).dtype if given and not defer else x.dtype, x.device, cl)
            outs, preds = [], []
            last = len(self.layers) - 1
            for i in range(n):
                t = t0 + i
                want = predict is not None and predict_from <= t <= last_predict
                layers = range(len(self.layers)) if t < n_updates else [last]
                first = i == 0 and not flat and not want
                if first:
                    # the zero initial state: its transports (self-motion included) are zero and W * 0 = 0 (update()
                    # writes zeros for it), so neither the transports nor the recurrent convolutions of step 0 run
                    moved = {l: _Moved(None, tuple(s[:, :1] for s in st[l]) if uniform else st[l], None) for l in layers}
                else:
                    moved = {l: self.transport(l, st[l], weights, t, want and l == last, readout_pool, act,
                                               readout_only=t >= n_updates)
                             for l in layers}
                guess = None
                if want:
                    guess = predict(t, moved[last].readout)
                    if isinstance(guess, tuple):  # (what is collected, the input of the step)
                        preds.append(guess[0])
                        guess = guess[1]
                    else:
                        preds.append(guess)
                if t >= n_updates:
                    continue
                if carry_past_inputs and t >= t_in:  # the states are carried, not updated
                    st = [moved[l].state for l in range(len(self.layers))]
                    continue
                if defer:  # one frame's term, convolved by the update (defers_input)
                    u = self.input_terms(0, x[:, t : t + 1] if t < t_in else guess.unsqueeze(1), weights, t, defer=True)
                else:
                    u = (input_term(i) if t < t_in else
                         self.input_terms(0, guess.unsqueeze(1), weights, t, window=True, channels_last=cl).squeeze(1))
                if first and uniform:
                    u = _first_slice(u, b)
                new: List[State] = []
                for l in range(len(self.layers)):
                    if l > 0:
                        u = self.input_terms(l, new[-1][0].unsqueeze(1), weights, t, channels_last=cl).squeeze(1)
                    updated = self.update(l, moved[l], u, weights)
                    if carry_past_inputs and self.view is not None:  # only the window is updated; the rest carried
                        updated = tuple(torch.where(self.view_mask, s, m) for s, m in zip(updated, moved[l].state))
                    new.append(updated)
                st = new
                if keep_outputs:
                    out = st[-1][0]
                    if self.comoving:
                        out = self.from_comoving(out, rows=self._rows(t, 1, out.device)[0])
                    outs.append(output_map(out) if output_map is not None else out)
            return [s for layer in st for s in layer], outs, preds

        flat: List[torch.Tensor] = [] if states is None else [s for layer in states for s in layer]
        for t0 in range(0, total, seg):
            n = min(seg, total - t0)
            if checkpoint and grad and seg < total:
                flat, outs, preds = _checkpoint(segment, t0, n, flat, use_reentrant=False)
            else:
                flat, outs, preds = segment(t0, n, flat)
            outputs.extend(outs)
            predictions.extend(preds)
        final = self.to_frame(self._unflatten(flat), n_updates - 1, stationary=True)
        if cl:  # handed back in the plain layout
            final = [tuple(s.contiguous() for s in st) for st in final]
        return RunResult(outputs, predictions, final)

    def run_sequence(
        self,
        x: torch.Tensor,
        weights: Weights,
        h0: Optional[List[State]] = None,
        return_sequence: bool = True,
        checkpoint: bool = False,
    ) -> Tuple[Optional[torch.Tensor], List[State]]:
        """:meth:`run` for a sequence layer: ``(last layer's [B, T, V, C, H, W] or None, final states)``."""
        res = self.run(x, weights, h0, keep_outputs=return_sequence, checkpoint=checkpoint)
        return (torch.stack(res.outputs, dim=1) if return_sequence else None), res.states

    def _unflatten(self, flat: Sequence[torch.Tensor]) -> List[State]:
        out, i = [], 0
        for spec in self.layers:
            out.append(tuple(flat[i : i + spec.state_size]))
            i += spec.state_size
        return out
