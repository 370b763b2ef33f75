"""Baselines of the paper: G-RNN, G-RNN+ (learned per-velocity kernels) and a 3D-CNN classifier.

* :class:`GRNN` -- the group-equivariant RNN
  :math:`h_t = \\sigma(W * h_{t-1} + U * f_t)`. It *is* a :class:`~flow_escnn.nn.FERNN` over
  the trivial flow set ``FlowSet.identity(gspace)`` (:math:`V = \\{0\\}`, :math:`\\psi_1(0) = e`),
  so it is equivariant to static :math:`G` and to nothing that moves; its output keeps the
  lifted layout ``[B, T, 1, C, H, W]``.
* :class:`GRNNPlus` -- the paper's G-RNN+: the G-RNN lifted over :math:`V` like a FERNN, but
  with a *learned* kernel :math:`K_\\nu` per velocity in place of the fixed transport
  :math:`\\psi_1(\\nu)`. **Not flow-equivariant** (and after training not even
  G-equivariant, since :math:`K_\\nu` is unconstrained): it has the FERNN's capacity to move
  memory, without the guarantee.
* :class:`Conv3DClassifier` -- a plain ``torch.nn.Conv3d`` stack over ``[B, T, C, H, W]``,
  global average pooling and a linear head (the action-recognition baseline).

All three are vectorised: no Python loop over :math:`V` or the batch (only over time in
the recurrences).
"""
from __future__ import annotations

from typing import Any, List, Optional, Sequence, Union

import torch
import torch.nn.functional as F

from flow_escnn._compat import enn
from flow_escnn.flows.flowset import FlowSet
from flow_escnn.lifted import LiftedFieldType, LiftedTensor
from flow_escnn.nn.conv import PADDING_MODES, SteerableConv
from flow_escnn.nn.nonlinearity import apply_nonlinearity, get_nonlinearity
from flow_escnn.nn.sequence import FERNN

__all__ = ["GRNN", "GRNNPlus", "ExportedGRNNPlus", "Conv3DClassifier", "KERNEL_SHARING", "KERNEL_INITS"]

KERNEL_SHARING = ("channel", "shared")
KERNEL_INITS = ("shift", "identity")


class GRNN(FERNN):
    """G-RNN: a :class:`~flow_escnn.nn.FERNN` over the identity flow set (exactly).

    .. math::
        h_t = \\sigma\\big(W * h_{t-1} + U * f_t\\big), \\qquad h_{-1} = 0,

    with :math:`U, W` G-steerable convolutions (circular padding by default). Equivariant to
    static :math:`G` and to static translations of the torus; *not* to flows: a moving input
    leaves its memory behind (paper, Fig. 2).

    Args:
        in_type: escnn ``FieldType`` of the input frames.
        hidden_type: escnn ``FieldType`` of the state (pointwise-nonlinearity fields).
        kernel_size: odd kernel size of :math:`U, W`.
        num_layers: stacked cells.
        mode: execution mode of :class:`~flow_escnn.nn.FlowRNN` (all modes coincide here).
        checkpoint: recompute steps in the backward pass.
        **cell_kwargs: ``bias``, ``padding_mode``, ``nonlinearity``, ...

    Shapes:
        ``[B, T, C_in, H, W]`` -> :class:`~flow_escnn.lifted.LiftedTensor` ``[B, T, 1, C, H, W]``.
    """

    def __init__(
        self,
        in_type: Any,
        hidden_type: Any,
        kernel_size: int = 3,
        num_layers: int = 1,
        mode: str = "auto",
        checkpoint: bool = False,
        **cell_kwargs: Any,
    ) -> None:
        if not isinstance(in_type, enn.FieldType):
            raise TypeError(f"in_type must be an escnn FieldType, got {type(in_type).__name__}")
        if "flows" in cell_kwargs:
            raise ValueError("GRNN fixes flows = FlowSet.identity(gspace); use FERNN for other flow sets")
        super().__init__(
            in_type,
            hidden_type,
            FlowSet.identity(in_type.gspace),
            kernel_size,
            num_layers=num_layers,
            mode=mode,
            checkpoint=checkpoint,
            **cell_kwargs,
        )


def _delta_kernels(flows: FlowSet, size: int, init: str) -> torch.Tensor:
    """``[V, size, size]``: for ``"shift"`` the cross-correlation kernel of :math:`\\psi_1(\\nu)`."""
    p = size // 2
    k = torch.zeros(len(flows), size, size)
    for i, (vx, vy, rot) in enumerate(flows.velocities):
        if init == "identity":
            k[i, p, p] = 1.0
            continue
        if rot != 0 or max(abs(vx), abs(vy)) > p:
            raise ValueError(
                f"init='shift' needs pure translations with max(|vx|, |vy|) <= {p} for a {size}x{size} kernel, "
                f"but V contains {(vx, vy, rot)}; use init='identity' or a larger velocity_kernel_size"
            )
        # psi_1(nu) moves content (vx, vy) pixels (x right, y up): out[i, j] = in[i + vy, j - vx]
        k[i, p + vy, p - vx] = 1.0
    return k


class GRNNPlus(torch.nn.Module):
    """G-RNN+ (Keller 2025): a lifted G-RNN with a learned depthwise kernel per velocity.

    .. math::
        h_t(\\nu) = \\sigma\\big(K_\\nu \\circledast [W * h_{t-1}](\\nu) + U * f_t\\big),
        \\qquad \\nu \\in V,\\; h_{-1} = 0,

    where :math:`U, W` are G-steerable convolutions shared over :math:`V` (as in the FERNN)
    and :math:`K_\\nu` is a learned ``k x k`` *depthwise* kernel applied with periodic
    (circular) padding. With ``kernel_sharing="channel"`` every channel has its own
    :math:`K_{\\nu,c}` (``[V, C, k, k]`` parameters per layer); with ``"shared"`` one
    :math:`K_\\nu` serves all channels (``[V, 1, k, k]``).

    Initialisation: ``init="shift"`` sets :math:`K_\\nu` to the one-pixel delta that *is* the
    transport :math:`\\psi_1(\\nu)` (pure translations with speed up to ``k // 2``), so at
    initialisation the model computes exactly the FERNN with the same :math:`U, W` (on the
    torus, where :math:`W` commutes with the shift); ``init="identity"`` starts from the
    G-RNN (every :math:`K_\\nu` the centre delta).

    .. warning::
        G-RNN+ is **not** flow-equivariant: once trained, :math:`K_\\nu` is an arbitrary
        kernel, neither a transport nor G-steerable, so neither the FERNN theorem nor static
        G-equivariance holds. It is the paper's ablation of the fixed flow transport.

    Args:
        in_type: escnn ``FieldType`` of the input frames.
        hidden_type: escnn ``FieldType`` of each V slice of the state.
        flows: the velocities :math:`V` (their order is the V axis; used for ``init="shift"``).
        kernel_size: odd kernel size of :math:`U, W`.
        velocity_kernel_size: odd size ``k`` of :math:`K_\\nu` (5 in the paper).
        kernel_sharing: ``"channel"`` (per-channel kernels) or ``"shared"``.
        init: ``"shift"`` or ``"identity"``.
        nonlinearity: pointwise :math:`\\sigma` (``"relu"`` default).
        num_layers: stacked layers; layer :math:`l>0` reads layer :math:`l-1`'s lifted output.
        bias: learn a bias in :math:`U`.
        padding_mode: padding of :math:`U, W` (``"circular"`` or ``"zeros"``); :math:`K_\\nu` is
            always periodic.

    Shapes:
        ``forward(x)``: ``[B, T, C_in, H, W]`` -> :class:`~flow_escnn.lifted.LiftedTensor`
        ``[B, T, |V|, C, H, W]``, the layout of :class:`~flow_escnn.nn.FERNN`, so the same
        readouts (:mod:`flow_escnn.nn.pooling`) apply.
    """

    def __init__(
        self,
        in_type: Any,
        hidden_type: Any,
        flows: FlowSet,
        kernel_size: int = 3,
        velocity_kernel_size: int = 5,
        kernel_sharing: str = "channel",
        init: str = "shift",
        nonlinearity: str = "relu",
        num_layers: int = 1,
        bias: bool = True,
        padding_mode: str = "circular",
    ) -> None:
        super().__init__()
        for name, ft in (("in_type", in_type), ("hidden_type", hidden_type)):
            if not isinstance(ft, enn.FieldType):
                raise TypeError(f"{name} must be an escnn FieldType, got {type(ft).__name__}")
        if not isinstance(flows, FlowSet):
            raise TypeError(f"flows must be a FlowSet, got {type(flows).__name__}")
        if kernel_sharing not in KERNEL_SHARING:
            raise ValueError(f"kernel_sharing must be one of {KERNEL_SHARING}, got {kernel_sharing!r}")
        if init not in KERNEL_INITS:
            raise ValueError(f"init must be one of {KERNEL_INITS}, got {init!r}")
        k = velocity_kernel_size
        if isinstance(k, bool) or not isinstance(k, int) or k < 1 or k % 2 == 0:
            raise ValueError(f"velocity_kernel_size must be a positive odd integer, got {k!r}")
        if isinstance(num_layers, bool) or not isinstance(num_layers, int) or num_layers < 1:
            raise ValueError(f"num_layers must be a positive integer, got {num_layers!r}")
        if padding_mode not in PADDING_MODES:
            raise ValueError(f"padding_mode must be one of {PADDING_MODES}, got {padding_mode!r}")
        self.in_type = in_type
        self.hidden_type = hidden_type
        self.flows = flows
        self.out_type = LiftedFieldType(hidden_type, flows)
        self.velocity_kernel_size = k
        self.kernel_sharing = kernel_sharing
        self.nonlinearity = nonlinearity
        self._sigma = get_nonlinearity(nonlinearity)
        c = hidden_type.size
        self.U = torch.nn.ModuleList(
            [
                SteerableConv(
                    in_type if l == 0 else hidden_type, hidden_type, kernel_size, bias=bias, padding_mode=padding_mode
                )
                for l in range(num_layers)
            ]
        )
        self.W = torch.nn.ModuleList(
            [
                SteerableConv(hidden_type, hidden_type, kernel_size, bias=False, padding_mode=padding_mode)
                for _ in range(num_layers)
            ]
        )
        base = _delta_kernels(flows, k, init).unsqueeze(1)  # [V, 1, k, k]
        per = c if kernel_sharing == "channel" else 1
        self.K = torch.nn.ParameterList(
            [torch.nn.Parameter(base.expand(len(flows), per, k, k).clone()) for _ in range(num_layers)]
        )

    @property
    def num_layers(self) -> int:
        return len(self.U)

    def velocity_filter(self, layer: int) -> torch.Tensor:
        """The depthwise filter ``[V*C, 1, k, k]`` of layer ``layer`` (for ``F.conv2d(groups=V*C)``)."""
        kv = self.K[layer]
        v, c, k = len(self.flows), self.hidden_type.size, self.velocity_kernel_size
        return kv.expand(v, c, k, k).reshape(v * c, 1, k, k)

    def forward(self, x: Union[torch.Tensor, LiftedTensor]) -> LiftedTensor:
        """Run the stack over ``x [B, T, C_in, H, W]``; returns ``[B, T, |V|, C, H, W]``."""
        raw = x.tensor if isinstance(x, LiftedTensor) else x
        if not isinstance(raw, torch.Tensor):
            raise TypeError(f"expected a torch.Tensor [B, T, C, H, W], got {type(x).__name__}")
        if raw.dim() != 5 or raw.shape[2] != self.in_type.size:
            raise ValueError(
                f"expected an input sequence [B, T, C={self.in_type.size}, H, W], got shape {tuple(raw.shape)}"
                + (" (a single frame? add the time axis)" if raw.dim() == 4 else "")
            )
        if raw.shape[1] == 0:
            raise ValueError("the input sequence has T=0 frames; give at least one frame")
        b, t_len, _, hh, ww = raw.shape
        v, c, p = len(self.flows), self.hidden_type.size, self.velocity_kernel_size // 2
        inp = raw
        for l in range(self.num_layers):
            ufilt, ubias = self.U[l].expand()
            wfilt, _ = self.W[l].expand()
            lead = inp.shape[:-3]
            u = self.U[l].apply_expanded(inp.reshape(-1, *inp.shape[-3:]), ufilt, ubias).reshape(*lead, c, hh, ww)
            if u.dim() == 5:
                u = u.unsqueeze(2)  # broadcast over V
            kfilt = self.velocity_filter(l)
            h = raw.new_zeros(b, v, c, hh, ww)
            outs: List[torch.Tensor] = []
            for t in range(t_len):
                a = self.W[l].apply_expanded(h.reshape(b * v, c, hh, ww), wfilt, None).reshape(b, v * c, hh, ww)
                if p > 0:
                    a = F.pad(a, (p, p, p, p), mode="circular")
                a = F.conv2d(a, kfilt, groups=v * c).reshape(b, v, c, hh, ww)
                h = self._sigma(a + u[:, t])
                outs.append(h)
            inp = torch.stack(outs, dim=1)
        return LiftedTensor(inp, self.out_type)

    def export(self, grid_shape: Optional[Any] = None, max_steps: Optional[int] = None) -> "ExportedGRNNPlus":
        """A plain-PyTorch twin (``Conv2d`` for :math:`U, W`, the kernels :math:`K_\\nu` copied).

        ``grid_shape`` and ``max_steps`` are accepted for the generic :func:`flow_escnn.nn.export.export`
        and ignored: G-RNN+ has no precomputed transports, so its twin runs on any grid.
        """
        twin = ExportedGRNNPlus(
            [u.export() for u in self.U],
            [w.export() for w in self.W],
            [self.velocity_filter(l).detach().clone() for l in range(self.num_layers)],
            len(self.flows),
            self.hidden_type.size,
            self.nonlinearity,
        )
        twin.train(self.training)
        return twin


class ExportedGRNNPlus(torch.nn.Module):
    """Plain-PyTorch twin of :class:`GRNNPlus`; ``forward`` returns the tensor ``[B, T, V, C, H, W]``.

    Each layer keeps ``Conv2d`` copies of :math:`U, W` and its kernels as a parameter
    ``[V*C, 1, k, k]`` (already expanded over channels). TorchScript-able; runs on any grid.
    """

    def __init__(
        self,
        U: Sequence[torch.nn.Conv2d],
        W: Sequence[torch.nn.Conv2d],
        K: Sequence[torch.Tensor],
        num_flows: int,
        hidden_channels: int,
        nonlinearity: str,
    ) -> None:
        super().__init__()
        if nonlinearity not in ("relu", "tanh", "sigmoid", "elu", "identity"):
            raise ValueError(f"cannot export the nonlinearity {nonlinearity!r}")
        self.layers = torch.nn.ModuleList(
            [_ExportedGRNNPlusLayer(u, w, k, num_flows, hidden_channels, nonlinearity) for u, w, k in zip(U, W, K)]
        )
        self.in_channels = int(U[0].in_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 5 or x.shape[2] != self.in_channels:
            raise ValueError(
                "expected an input sequence [B, T, C={}, H, W], got shape {}".format(self.in_channels, list(x.shape))
            )
        inp = x
        for layer in self.layers:
            inp = layer(inp)
        return inp


class _ExportedGRNNPlusLayer(torch.nn.Module):
    def __init__(
        self,
        U: torch.nn.Conv2d,
        W: torch.nn.Conv2d,
        K: torch.Tensor,
        num_flows: int,
        hidden_channels: int,
        nonlinearity: str,
    ) -> None:
        super().__init__()
        self.U = U
        self.W = W
        self.K = torch.nn.Parameter(K)
        self.num_flows = int(num_flows)
        self.hidden_channels = int(hidden_channels)
        self.nonlinearity = nonlinearity

    def forward(self, inp: torch.Tensor) -> torch.Tensor:
        b, t_len, hh, ww = inp.shape[0], inp.shape[1], inp.shape[-2], inp.shape[-1]
        v, c = self.num_flows, self.hidden_channels
        u = self.U(inp.reshape(-1, inp.shape[-3], hh, ww))
        shape: List[int] = list(inp.shape[:-3]) + [c, hh, ww]
        u = u.reshape(shape)
        if u.dim() == 5:
            u = u.unsqueeze(2)  # broadcast over V
        p = self.K.shape[-1] // 2
        h = inp.new_zeros([b, v, c, hh, ww])
        outs: List[torch.Tensor] = []
        for t in range(t_len):
            a = self.W(h.reshape(b * v, c, hh, ww)).reshape(b, v * c, hh, ww)
            if p > 0:
                a = F.pad(a, [p, p, p, p], mode="circular")
            a = F.conv2d(a, self.K, groups=v * c).reshape(b, v, c, hh, ww)
            h = apply_nonlinearity(a + u[:, t], self.nonlinearity)
            outs.append(h)
        return torch.stack(outs, dim=1)


class Conv3DClassifier(torch.nn.Module):
    """3D-CNN baseline: ``Conv3d`` + ReLU layers, global average pooling, a linear head.

    .. math::
        z = \\mathrm{mean}_{t,x}\\, \\phi_L \\circ \\dots \\circ \\phi_1(f), \\quad
        \\phi_l = \\mathrm{ReLU}(\\mathrm{Conv3d}_l), \\qquad \\text{logits} = A z + b.

    Space is padded with ``padding_mode`` (``"zeros"`` as usual for this baseline, or
    ``"circular"``, which makes it translation-equivariant on the torus before the global
    pooling, hence invariant to static torus translations); time is always zero-padded.
    Not equivariant to rotations or flows.

    Args:
        in_channels: channels ``C`` of the input frames.
        num_classes: number of classes.
        channels: output channels of each ``Conv3d`` layer.
        kernel_size: odd cubic kernel size.
        padding_mode: ``"zeros"`` or ``"circular"`` (spatial).

    Shapes:
        ``[B, T, C, H, W]`` -> logits ``[B, num_classes]``.
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        channels: Sequence[int] = (16, 32),
        kernel_size: int = 3,
        padding_mode: str = "zeros",
    ) -> None:
        super().__init__()
        for name, val in (("in_channels", in_channels), ("num_classes", num_classes)):
            if isinstance(val, bool) or not isinstance(val, int) or val < 1:
                raise ValueError(f"{name} must be a positive integer, got {val!r}")
        chans = [int(ch) for ch in channels]
        if not chans or any(ch < 1 for ch in chans):
            raise ValueError(f"channels must be a non-empty sequence of positive integers, got {channels!r}")
        if isinstance(kernel_size, bool) or not isinstance(kernel_size, int) or kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be a positive odd integer, got {kernel_size!r}")
        if padding_mode not in PADDING_MODES:
            raise ValueError(f"padding_mode must be one of {PADDING_MODES}, got {padding_mode!r}")
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.padding = kernel_size // 2
        self.padding_mode = padding_mode
        self.convs = torch.nn.ModuleList()
        prev = in_channels
        for ch in chans:
            self.convs.append(torch.nn.Conv3d(prev, ch, kernel_size, padding=0))
            prev = ch
        self.head = torch.nn.Linear(prev, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 5 or x.shape[2] != self.in_channels:
            raise ValueError(
                "Conv3DClassifier expects a sequence [B, T, C={}, H, W], got shape {}".format(
                    self.in_channels, list(x.shape)
                )
            )
        y = x.transpose(1, 2)  # [B, C, T, H, W]
        p = self.padding
        for conv in self.convs:
            if p > 0:
                if self.padding_mode == "circular":
                    y = F.pad(y, [p, p, p, p, 0, 0], mode="circular")
                    y = F.pad(y, [0, 0, 0, 0, p, p])
                else:
                    y = F.pad(y, [p, p, p, p, p, p])
            y = torch.relu(conv(y))
        return self.head(y.mean(dim=(2, 3, 4)))
