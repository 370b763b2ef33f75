"""The G-RNN+ cell kind (the paper's ablation): a learned kernel per velocity in place of the transport.

:math:`h_t(\\nu) = \\sigma(K_\\nu \\circledast [W * h_{t-1}](\\nu) + U * f_t)`: the G-RNN lifted
over :math:`V` like a FERNN, but with a *learned* depthwise kernel :math:`K_\\nu` per velocity
in place of the fixed transport :math:`\\psi_1(\\nu)`. **Not flow-equivariant** (and after
training not even G-equivariant, since :math:`K_\\nu` is unconstrained): it has the FERNN's
capacity to move memory, without the guarantee. The engine runs it like any other cell (its
update is the FERNN's); its cell says ``learned_transport``, so the engine applies
:math:`K_\\nu` where the others transport. It is a model of its own
(``model="grnn_plus"``), not a ``cell=`` choice of the FERNN / G-RNN models.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Dict

import torch

from flow_escnn._validate import odd_positive_int, one_of
from flow_escnn.flows._flowset import FlowSet
from flow_escnn.nn.cell_kinds.fernn import fernn_update
from flow_escnn.nn.cell_kinds.registry import CellKind
from flow_escnn.nn._cells import FlowCellBase
from flow_escnn.nn._engine import LayerSpec, Weights
from flow_escnn.nn._nonlinearity import get_nonlinearity
from flow_escnn.nn._sequence import FlowRNN
from flow_escnn.nn._spec import records_init

__all__ = ["GRNNPlus", "GRNNPlusCell", "KERNEL_SHARING", "KERNEL_INITS", "shift_fits", "KIND"]

KERNEL_SHARING = ("channel", "shared")
KERNEL_INITS = ("shift", "identity", "auto")


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
        **kwargs: see :class:`~flow_escnn.nn._cells.FlowCellBase` (no V-mixing).
    """

    kind = "grnn_plus"
    update = staticmethod(fernn_update)
    learned_transport = True

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

    def layer_spec(self) -> LayerSpec:
        return dataclasses.replace(super().layer_spec(), velocity_kernel_size=self.velocity_kernel_size)

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
        readouts (:mod:`flow_escnn.nn._pooling`) apply.
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


#: The registry record (:mod:`flow_escnn.nn.cell_kinds`): a model of its own, for translation flows.
KIND = CellKind(GRNNPlus, "G-RNN+: learned per-velocity kernels in place of the transport (not flow-equivariant)",
                model="grnn_plus")
