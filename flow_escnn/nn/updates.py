"""The update equations of every recurrent cell kind, written once as plain-torch functions.

Each update maps the already transported state :math:`\\tilde s_{t-1}(\\nu)` (for the
flow cells :math:`\\tilde s = \\psi_1(\\nu)\\cdot s`, see :mod:`flow_escnn.nn.cells`), the
recurrent term :math:`b = W * \\tilde h_{t-1}` and the input term :math:`a = U * f_t`
(``[B, 1 or V, G*C, H, W]``, broadcast over :math:`V`) to the new state:

.. math::
    \\text{fernn:}\\quad & h_t = \\sigma(a + b)\\\\
    \\text{gru:}\\quad & r = \\mathrm{sig}(a_r + b_r),\\ z = \\mathrm{sig}(a_z + b_z),\\
        n = \\tanh(a_n + r \\odot b_n),\\ h_t = (1 - z)\\odot n + z\\odot \\tilde h_{t-1}\\\\
    \\text{lstm:}\\quad & (i, f, g, o) = a + b,\\ c_t = \\mathrm{sig}(f)\\odot\\tilde c_{t-1}
        + \\mathrm{sig}(i)\\odot\\tanh(g),\\ h_t = \\mathrm{sig}(o)\\odot\\tanh(c_t)

:class:`LayerSpec` holds the static facts of one layer that the engine runs (kind, channels,
kernel, nonlinearity). The recurrence engine (:mod:`flow_escnn.nn.engine`) is the only caller; the cells, the
sequence layers, the models and every ``export()`` run through it. ``b`` is a view of a
fresh convolution output; the updates add out of place (an in-place op on a view would make
autograd record a ``CopySlices`` node, which copies the whole base in the backward pass) and
apply the nonlinearity in place on the fresh sum (every nonlinearity here saves its output,
so that is autograd-safe and saves one allocation and one memory pass).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, NamedTuple, Optional, Tuple

import torch

from flow_escnn.nn.nonlinearity import apply_nonlinearity, nonlinearity_backward

__all__ = ["CellKind", "CELL_KINDS", "LayerSpec", "fernn_update", "gru_update", "lstm_update", "field_nonlinearity"]

State = Tuple[torch.Tensor, ...]


class _AddActivate(torch.autograd.Function):
    """:math:`\\sigma(b + a)` written into ``b``'s own memory (a fresh convolution output that no
    other op reads); ``a`` broadcasts over ``b``'s velocity axis. Saves only the output."""

    @staticmethod
    def forward(ctx: Any, base: torch.Tensor, a: torch.Tensor, shape: Tuple[int, ...], name: str) -> torch.Tensor:  # type: ignore[override]
        apply_nonlinearity(base.view(shape).add_(a), name, inplace=True)
        ctx.mark_dirty(base)
        ctx.save_for_backward(base)
        ctx.name, ctx.shape, ctx.a_shape = name, shape, a.shape
        return base

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> Tuple[Optional[torch.Tensor], ...]:  # type: ignore[override]
        (out,) = ctx.saved_tensors
        g = nonlinearity_backward(grad, out, ctx.name)
        g5 = g.view(ctx.shape)
        dims = [i for i, (n, m) in enumerate(zip(ctx.a_shape, ctx.shape)) if n == 1 and m != 1]
        ga = g5.sum(dim=dims, keepdim=True) if dims else g5
        return g, ga, None, None


def fernn_update(b: torch.Tensor, a: torch.Tensor, moved: State, nonlinearity: str) -> State:
    """:math:`h_t = \\sigma(a + b)`, computed in place in ``b``'s base (a fresh convolution output)."""
    base = b._base if b._base is not None else b
    if torch.is_grad_enabled() and (b.requires_grad or a.requires_grad):
        if a.dtype != b.dtype:
            a = a.to(b.dtype)
        return (_AddActivate.apply(base, a, tuple(b.shape), nonlinearity).view(b.shape),)
    return (apply_nonlinearity(b.add_(a), nonlinearity, inplace=True),)


def field_nonlinearity(s: torch.Tensor, fields: torch.Tensor, num_fields: int, name: str) -> torch.Tensor:
    """A FERNN update's field nonlinearity (:mod:`flow_escnn.nn.nonlinearity`) of ``s = a + b``.

    Args:
        s: ``[B, V, G, H, W]``: the hidden channels ``C`` first, then (``"gated"``) one gate per field.
        fields: ``[C]`` long: the field of each hidden channel.
        num_fields: the number of hidden fields.
        name: ``"norm_squash"`` or ``"gated"``.
    """
    c = fields.shape[0]
    if name == "gated":
        return s[:, :, :c] * torch.sigmoid(s[:, :, c:]).index_select(2, fields)
    shape = (s.shape[0], s.shape[1], num_fields, s.shape[3], s.shape[4])
    squares = torch.zeros(shape, dtype=s.dtype, device=s.device).index_add_(2, fields, s * s)
    norms = (squares + 1e-12).sqrt()  # epsilon 1e-6: a finite gradient at x = 0
    return s / (1 + norms).index_select(2, fields)


def gru_update(b: torch.Tensor, a: torch.Tensor, moved: State, nonlinearity: str) -> State:
    """GRU update from the transported :math:`\\tilde h` (``moved[0]``)."""
    h = moved[0]
    ar, az, an = a.chunk(3, dim=2)
    br, bz, bn = b.chunk(3, dim=2)
    r = torch.sigmoid(ar + br)
    z = torch.sigmoid(az + bz)
    n = torch.tanh(an + r * bn)
    return ((1 - z) * n + z * h,)


def lstm_update(b: torch.Tensor, a: torch.Tensor, moved: State, nonlinearity: str) -> State:
    """LSTM update from the transported :math:`(\\tilde h, \\tilde c)`; returns :math:`(h_t, c_t)`."""
    c = moved[1]
    i, f, g, o = (b + a).chunk(4, dim=2)
    c_new = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    return (torch.sigmoid(o) * torch.tanh(c_new), c_new)


class CellKind(NamedTuple):
    """Static facts of a cell kind: gate count, state tensors, update function."""

    name: str
    gates: int
    state_size: int
    update: Callable[[torch.Tensor, torch.Tensor, State, str], State]


#: Every cell kind the engine runs, by name (``cell=`` in the models and the experiments;
#: ``"grnn_plus"`` is the FERNN update with a learned per-velocity kernel as its transport).
CELL_KINDS: Dict[str, CellKind] = {
    "fernn": CellKind("fernn", 1, 1, fernn_update),
    "gru": CellKind("gru", 3, 1, gru_update),
    "lstm": CellKind("lstm", 4, 2, lstm_update),
    "grnn_plus": CellKind("grnn_plus", 1, 1, fernn_update),
}


@dataclass(frozen=True)
class LayerSpec:
    """Static facts of one layer of a :class:`~flow_escnn.nn.engine.Recurrence` (plain data).

    The layer's weights live in the ``weights`` dict passed to :meth:`~flow_escnn.nn.engine.Recurrence.run` under
    ``f"{prefix}u_weight"``, ``u_bias`` (optional), ``w_weight``, ``mixing`` (optional ``[V, V]``)
    and ``kernel`` (``grnn_plus`` only: ``[V*C, 1, k, k]``), with ``prefix = f"l{index}_"``.
    """

    kind: str
    in_channels: int
    hidden_channels: int
    kernel_size: int
    padding_mode: str = "circular"
    nonlinearity: str = "relu"
    mixing: bool = False
    velocity_kernel_size: int = 0  # grnn_plus: size of the learned per-velocity kernel
    fields: Tuple[int, ...] = ()  # field nonlinearities: the hidden field of every hidden channel

    @property
    def num_fields(self) -> int:
        return max(self.fields) + 1 if self.fields else 0

    @property
    def gate_channels(self) -> int:
        extra = self.num_fields if self.nonlinearity == "gated" else 0
        return CELL_KINDS[self.kind].gates * self.hidden_channels + extra

    @property
    def state_size(self) -> int:
        return CELL_KINDS[self.kind].state_size

    @property
    def pad(self) -> int:
        """Padding that the transports write (circular mode) for the recurrent convolution."""
        return self.kernel_size // 2 if self.padding_mode == "circular" else 0
