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

The G-RNN and the G-RNN+ are sequence layers of the recurrence engine
(:mod:`flow_escnn.nn.engine`): the G-RNN+ is the cell kind ``"grnn_plus"``, whose transport
is its learned kernel, so the predictor, the classifier and ``export()`` serve it like any
other cell (``cell="grnn_plus"``). No Python loop over :math:`V` or the batch (only over time).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Dict, Sequence

import torch
import torch.nn.functional as F

from flow_escnn._compat import enn
from flow_escnn._validate import odd_positive_int, one_of, positive_int
from flow_escnn.flows.flowset import FlowSet
from flow_escnn.nn.cells import FlowCellBase
from flow_escnn.nn.conv import PADDING_MODES
from flow_escnn.nn.engine import LayerSpec, Weights
from flow_escnn.nn.nonlinearity import get_nonlinearity
from flow_escnn.nn.sequence import FERNN, FlowRNN
from flow_escnn.nn.spec import records_init

__all__ = ["GRNN", "GRNNPlus", "GRNNPlusCell", "Conv3DClassifier", "KERNEL_SHARING", "KERNEL_INITS", "shift_fits"]

KERNEL_SHARING = ("channel", "shared")
KERNEL_INITS = ("shift", "identity", "auto")


@records_init
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


def shift_fits(flows: FlowSet, velocity_kernel_size: int) -> bool:
    """Whether ``init="shift"`` can represent every :math:`\\psi_1(\\nu)` of ``flows`` in the kernel."""
    p = velocity_kernel_size // 2
    return all(k == 0 and max(abs(vx), abs(vy)) <= p for vx, vy, k in flows.velocities)


class GRNNPlusCell(FlowCellBase):
    """The G-RNN+ cell: :math:`h_t(\\nu) = \\sigma(K_\\nu \\circledast [W * h_{t-1}](\\nu) + U * f_t)`.

    :math:`K_\\nu` is a learned ``k x k`` depthwise kernel per velocity (periodic padding), in
    place of the transport :math:`\\psi_1(\\nu)`; see :class:`GRNNPlus`.

    Args:
        velocity_kernel_size: odd size ``k`` of :math:`K_\\nu` (5 in the paper).
        kernel_sharing: ``"channel"`` (one kernel per channel, ``[V, C, k, k]``) or ``"shared"`` (``[V, 1, k, k]``).
        init: ``"shift"`` (:math:`K_\\nu` = the delta that *is* :math:`\\psi_1(\\nu)`), ``"identity"``, or
            ``"auto"`` (shift when every :math:`\\psi_1(\\nu)` fits the kernel, else identity).
        nonlinearity: pointwise :math:`\\sigma`.
        **kwargs: see :class:`~flow_escnn.nn.cells.FlowCellBase` (no V-mixing).
    """

    kind = "grnn_plus"

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
        **kwargs: Any,
    ) -> None:
        one_of(kernel_sharing, KERNEL_SHARING, "kernel_sharing")
        one_of(init, KERNEL_INITS, "init")
        if not isinstance(flows, FlowSet):
            raise TypeError(f"flows must be a FlowSet, got {type(flows).__name__}")
        if init == "auto":
            init = "shift" if shift_fits(flows, velocity_kernel_size) else "identity"
        k = odd_positive_int(velocity_kernel_size, "velocity_kernel_size")
        if kwargs.get("velocity_mixing"):
            raise ValueError("G-RNN+ has no V-mixing (its learned kernels already mix space per velocity)")
        get_nonlinearity(nonlinearity)
        super().__init__(in_type, hidden_type, flows, kernel_size, **kwargs)
        self.nonlinearity = nonlinearity
        self.velocity_kernel_size = k
        self.kernel_sharing = kernel_sharing
        per = hidden_type.size if kernel_sharing == "channel" else 1
        base = _delta_kernels(flows, k, init).unsqueeze(1)  # [V, 1, k, k]
        self.K = torch.nn.Parameter(base.expand(len(flows), per, k, k).clone())

    @property
    def nonlinearity_name(self) -> str:
        return self.nonlinearity

    def spec(self) -> LayerSpec:
        return dataclasses.replace(super().spec(), velocity_kernel_size=self.velocity_kernel_size)

    def velocity_filter(self) -> torch.Tensor:
        """The depthwise filter ``[V*C, 1, k, k]`` (for ``F.conv2d(groups=V*C)``)."""
        v, c, k = len(self.flows), self.hidden_type.size, self.velocity_kernel_size
        return self.K.expand(v, c, k, k).reshape(v * c, 1, k, k)

    def weights(self, prefix: str = "l0_") -> Weights:
        out = super().weights(prefix)
        out[f"{prefix}kernel"] = self.velocity_filter()
        return out

    def step_transport(self, grid: Any, device: torch.device) -> None:
        """None: the learned kernel takes the place of the transport (stationary frame only)."""
        return None


def _upgrade_grnn_plus_state(state_dict: Dict[str, Any], prefix: str, *args: Any) -> None:
    """Rename the keys of G-RNN+ checkpoints written before it ran on the engine
    (``U.{l}.*``, ``W.{l}.*``, ``K.{l}`` -> ``cells.{l}.U.*``, ``cells.{l}.W.*``, ``cells.{l}.K``)."""
    for key in [k for k in state_dict if k.startswith(prefix)]:
        rest = key[len(prefix):]
        head, _, tail = rest.partition(".")
        if head in ("U", "W", "K"):
            layer, _, sub = tail.partition(".")
            if layer.isdigit():
                new = f"{prefix}cells.{layer}.{head}" + (f".{sub}" if sub else "")
                state_dict[new] = state_dict.pop(key)


@records_init
class GRNNPlus(FlowRNN):
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
        num_layers: stacked layers; layer :math:`l>0` reads layer :math:`l-1`'s lifted output.
        mode: ``"auto"`` or ``"hidden"`` (the learned kernel has no co-moving form).
        checkpoint: recompute segments in the backward pass.
        **cell_kwargs: keywords of :class:`GRNNPlusCell`: ``velocity_kernel_size`` (odd size ``k``
            of :math:`K_\\nu`, 5 as in the paper), ``kernel_sharing`` (``"channel"``: per-channel
            kernels, or ``"shared"``), ``init`` (``"shift"``, ``"identity"`` or ``"auto"``),
            ``nonlinearity`` (pointwise :math:`\\sigma`, ``"relu"``), ``bias``, ``padding_mode``
            (of :math:`U, W`; :math:`K_\\nu` is always periodic).

    Shapes:
        ``forward(x)``: ``[B, T, C_in, H, W]`` -> :class:`~flow_escnn.lifted.LiftedTensor`
        ``[B, T, |V|, C, H, W]``, the layout of :class:`~flow_escnn.nn.FERNN`, so the same
        readouts (:mod:`flow_escnn.nn.pooling`) apply.
    """

    cell_class = GRNNPlusCell
    state_dict_upgrades = (_upgrade_grnn_plus_state,)

    @property
    def velocity_kernel_size(self) -> int:
        """Size ``k`` of the learned kernels :math:`K_\\nu`."""
        return self.cells[0].velocity_kernel_size

    @property
    def kernel_sharing(self) -> str:
        """``"channel"`` or ``"shared"``."""
        return self.cells[0].kernel_sharing

    @property
    def nonlinearity(self) -> str:
        """The pointwise :math:`\\sigma`."""
        return self.cells[0].nonlinearity

    def velocity_filter(self, layer: int) -> torch.Tensor:
        """The depthwise filter ``[V*C, 1, k, k]`` of layer ``layer``."""
        return self.cells[layer].velocity_filter()


@records_init
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
        positive_int(in_channels, "in_channels")
        positive_int(num_classes, "num_classes")
        chans = [int(ch) for ch in channels]
        if not chans or any(ch < 1 for ch in chans):
            raise ValueError(f"channels must be a non-empty sequence of positive integers, got {channels!r}")
        odd_positive_int(kernel_size, "kernel_size")
        one_of(padding_mode, PADDING_MODES, "padding_mode")
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
