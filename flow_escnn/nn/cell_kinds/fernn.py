"""The FERNN cell kind (Keller 2025): :math:`h_t(\\nu) = \\sigma\\big(W * \\psi_1(\\nu) h_{t-1}(\\nu) + U * f_t\\big)`.

Its update (written once here, run by :mod:`flow_escnn.nn._engine`), its cell
:class:`FERNNCell` and its sequence layer :class:`FERNN`. Since :math:`W` commutes with exact
transport, transporting the state before :math:`W` equals the paper's
:math:`\\sigma(\\psi_1(\\nu)\\cdot[W * h_{t-1}](\\nu) + U * f_t)`. The update computes the sum in
place in the convolution's fresh output: ``b`` is a view of it; an in-place op on a view would
make autograd record a ``CopySlices`` node (copying the whole base in the backward pass), so
:class:`_AddActivate` writes into the base and saves only its output.
"""
from __future__ import annotations

from typing import Any, Optional, Tuple, Union

import torch

from flow_escnn.flows._flowset import FlowSet
from flow_escnn.flows._reduce import sum_over
from flow_escnn.nn.cell_kinds.registry import CellKind
from flow_escnn.nn._cells import FlowCellBase, State
from flow_escnn.nn._kernels import ThinTerm, add_thin_conv_, thin_conv_grads
from flow_escnn.nn._nonlinearity import apply_nonlinearity, nonlinearity_backward
from flow_escnn.nn._sequence import FlowRNN

__all__ = ["fernn_update", "FERNNCell", "FERNN", "KIND"]


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
        ga = sum_over(g5, dims) if dims else g5
        return g, ga, None, None


class _AddConvActivate(torch.autograd.Function):
    """:math:`\\sigma(b + U * x)` for a thin input (:class:`~flow_escnn.nn._kernels.ThinTerm`), the convolution
    added straight into ``b``'s memory (:func:`~flow_escnn.nn._kernels.add_thin_conv_`): the term is never written on
    its own. Saves the output and the term's columns; backward: the nonlinearity's, then the convolution's
    (:func:`~flow_escnn.nn._kernels.thin_conv_grads`)."""

    @staticmethod
    def forward(ctx: Any, base: torch.Tensor, x: torch.Tensor, weight: torch.Tensor,  # type: ignore[override]
                bias: Optional[torch.Tensor], padding: int, name: str) -> torch.Tensor:
        cols = add_thin_conv_(base, ThinTerm(x, weight, bias, padding))
        apply_nonlinearity(base, name, inplace=True)
        ctx.mark_dirty(base)
        ctx.save_for_backward(base, cols, weight)
        ctx.meta = (name, tuple(x.shape), padding, bias is not None)
        return base

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> Tuple[Optional[torch.Tensor], ...]:  # type: ignore[override]
        out, cols, weight = ctx.saved_tensors
        name, x_shape, padding, has_bias = ctx.meta
        g = nonlinearity_backward(grad, out, name)
        needs = ctx.needs_input_grad
        gx, gw, gb = thin_conv_grads(g, cols, weight, x_shape, padding, needs[1], needs[2], has_bias and needs[3])
        return g, gx, gw, gb, None, None


def fernn_update(b: torch.Tensor, a: Union[torch.Tensor, ThinTerm], moved: State, nonlinearity: str) -> State:
    """:math:`h_t = \\sigma(a + b)`, computed in place in ``b``'s base (a fresh convolution output); a thin input's
    term not yet convolved (:class:`~flow_escnn.nn._kernels.ThinTerm`, one per map of ``b``) is convolved into it."""
    base = b._base if b._base is not None else b
    if isinstance(a, ThinTerm):
        flat = base if base.dim() == a.x.dim() else base.view(a.x.shape[0], *base.shape[-3:])  # the term's [B*V] maps
        if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (b, a.x, a.weight, a.bias)):
            return (_AddConvActivate.apply(flat, a.x, a.weight, a.bias, a.padding, nonlinearity).view(b.shape),)
        add_thin_conv_(flat, a)
        return (apply_nonlinearity(flat, nonlinearity, inplace=True).view(b.shape),)
    if torch.is_grad_enabled() and (b.requires_grad or a.requires_grad):
        if a.dtype != b.dtype:
            a = a.to(b.dtype)
        return (_AddActivate.apply(base, a, tuple(b.shape), nonlinearity).view(b.shape),)
    return (apply_nonlinearity(b.add_(a), nonlinearity, inplace=True),)


class FERNNCell(FlowCellBase):
    """The FERNN cell :math:`h_t(\\nu) = \\sigma(W * \\psi_1(\\nu) h_{t-1}(\\nu) + U * f_t)`.

    Args:
        nonlinearity: a pointwise :math:`\\sigma`: ``"relu"`` (default, as in the paper),
            ``"tanh"``, ``"sigmoid"``, ``"elu"`` or ``"identity"`` (trivial, regular or quotient
            fields only), or a field nonlinearity for any fields: ``"norm_squash"`` or ``"gated"``
            (:mod:`flow_escnn.nn._nonlinearity`; with ``"gated"`` :math:`U` and :math:`W` also
            compute one invariant gate per hidden field).
        **kwargs: see :class:`FlowCellBase`.
    """

    kind = "fernn"
    update = staticmethod(fernn_update)
    add_activate = True
    takes_nonlinearity = True

    def __init__(self, in_type: Any, hidden_type: Any, flows: FlowSet, kernel_size: int = 3, nonlinearity: str = "relu",
                 **kwargs: Any) -> None:
        super().__init__(in_type, hidden_type, flows, kernel_size, nonlinearity=nonlinearity, **kwargs)
        self.nonlinearity = nonlinearity

    @property
    def nonlinearity_name(self) -> str:
        return self.nonlinearity


class FERNN(FlowRNN):
    """Flow-equivariant RNN (Keller 2025): a stack of :class:`FERNNCell`.

    ``FERNN(in_type, hidden_type, flows, kernel_size=3, ...)`` called on ``[B, T, C_in, H, W]``
    returns a :class:`~flow_escnn.lifted.LiftedTensor` ``[B, T, |V|, C_hidden, H, W]``.
    Padding by the flow kind by default (``padding_mode="auto"``): circular, so translation flows are
    exact on the torus; zeros for a :math:`V` of rotation flows, whose 90-degree flows stay exact on a
    square grid. With
    ``FlowSet.identity(gspace)`` it is exactly a G-RNN.

    Example:
        >>> import torch, flow_escnn
        >>> from escnn import gspaces, nn as enn
        >>> gs = gspaces.rot2dOnR2(4)
        >>> model = flow_escnn.nn.FERNN(enn.FieldType(gs, [gs.trivial_repr]), enn.FieldType(gs, [gs.regular_repr]),
        ...                             flow_escnn.FlowSet.translations(gs, 1)).eval()
        >>> h = model(torch.rand(2, 3, 1, 8, 8))  # [B, T, C, H, W]
        >>> type(h).__name__, tuple(h.shape)  # [B, T, |V|, C, H, W]
        ('LiftedTensor', (2, 3, 9, 4, 8, 8))
    """

    cell_class = FERNNCell


#: The registry record (:mod:`flow_escnn.nn.cell_kinds`).
KIND = CellKind(FERNN, "plain FERNN cell: sigma(W * psi_1(nu) h + U * f), any pointwise or field nonlinearity")
