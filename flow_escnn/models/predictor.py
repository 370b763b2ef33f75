"""Next-frame prediction with a flow-equivariant encoder and an equivariant decoder.

Convention (frames 0-indexed)
-----------------------------
The encoder reads :math:`f_0, \\dots, f_{T_{in}-1}` and ends in the state
:math:`h_{T_{in}-1}(\\nu)` (every layer). Frame :math:`s \\ge T_{in}` is predicted from the
*transported* state, i.e. the state's own guess of where its content will be one frame later:

.. math::
    \\tilde h_s(\\nu) = \\psi_1(\\nu)\\cdot h_{s-1}(\\nu), \\qquad
    \\hat f_s = \\mathrm{Dec}\\Big(P_V\\, \\tilde h_s\\Big),

with :math:`P_V` the max (or mean) over :math:`V` and :math:`\\mathrm{Dec}` a stack of
G-steerable convolutions with pointwise ReLU (circular padding) ending in ``in_type``.
The recurrence then continues *autoregressively* with the prediction as the input,
:math:`h_s(\\nu) = \\mathrm{update}(\\tilde h_s(\\nu),\\, U * \\hat f_s)` (the cell step whose
transport has already been applied), so no true frame :math:`f_s` is ever fed while it is
being predicted (no teacher-forcing leak) and no input frame is fed twice. (The reference
implementation fed :math:`f_{T_{in}-1}` a second time and decoded a state one step behind, so
its predictions were not equivariant even on the torus.) For
:func:`flow_escnn.checks.check_flow_equivariance` use ``time_offset = T_in`` (or ``1`` with
``include_one_step=True``).

Equivariance
------------
Let :math:`f'_t = \\psi_t(\\mu) f_t` for an input flow :math:`\\mu` commuting with :math:`V`
(e.g. translations). The FERNN theorem gives
:math:`h'_{T_{in}-1}(\\nu) = \\psi_{T_{in}-1}(\\mu)\\, h_{T_{in}-1}(\\nu\\ominus\\mu)`, hence
:math:`\\tilde h'_s(\\nu) = \\psi_1(\\nu)\\psi_{s-1}(\\mu) h_{s-1}(\\nu\\ominus\\mu)
= \\psi_s(\\mu)\\,\\tilde h_s(\\nu\\ominus\\mu)` (because
:math:`g_\\nu g_\\mu^{s-1} = g_\\mu^{s} g_{\\nu\\ominus\\mu}`). If :math:`P_V` is invariant under the
shift :math:`\\nu\\mapsto\\nu\\ominus\\mu` and :math:`\\mathrm{Dec}` commutes with
:math:`\\psi_s(\\mu)`,

.. math::
    \\hat f'_s = \\psi_s(\\mu)\\, \\hat f_s, \\qquad
    h'_s(\\nu) = \\psi_s(\\mu)\\, h_s(\\nu\\ominus\\mu),

and the induction continues. So **output index** :math:`j` (frame :math:`s = T_{in} + j`)
transforms by :math:`\\psi_{T_{in}+j}(\\mu)`. This is exact (to float rounding) on the torus
for integer translation flows when

* :math:`\\mu = 0`, or
* :math:`V` covers the torus, so the V shift is a permutation (e.g. a 5x5 grid with
  ``FlowSet.translations(gs, 2)``: ``flows.shift_indices(mu, (5, 5))`` has no ``-1``).

For a finite :math:`V` that does not cover the torus, slices whose :math:`\\nu\\ominus\\mu` falls
outside :math:`V` break the pooling invariance and the predictions are only approximately
equivariant (an error from the border of :math:`V`; the tests measure it).

**Static** :math:`G`: rotating (or reflecting) every input frame by :math:`g` (a grid-exact
element, square grid) rotates every prediction by :math:`g` when :math:`V` is closed under
:math:`G` (:attr:`NextFramePredictor.static_equivariant`).

Interpolated (non-90-degree) rotation flows: the encoder may run in co-moving mode, but
the autoregressive continuation transports the state in the stationary frame every step,
so bilinear resampling error compounds over the predicted frames.
"""
from __future__ import annotations

from typing import Any, List, Optional, Tuple

import torch

from flow_escnn._compat import enn
from flow_escnn.flows.flowset import FlowSet
from flow_escnn.nn.conv import SteerableConv
from flow_escnn.nn.export import ExportedFlowRNN, export_conv, export_flow_rnn
from flow_escnn.nn.nonlinearity import check_pointwise
from flow_escnn.nn.pooling import VELOCITY_POOLS, reduce_velocities
from flow_escnn.nn.sequence import SEQUENCE_LAYERS, FlowRNN

__all__ = [
    "NextFramePredictor",
    "ExportedNextFramePredictor",
    "CELLS",
    "OUTPUT_ACTIVATIONS",
    "output_activation",
    "build_decoder",
    "run_decoder",
]

CELLS = SEQUENCE_LAYERS  # cell name -> sequence layer
OUTPUT_ACTIVATIONS = ("identity", "clamp", "sigmoid")


def output_activation(z: torch.Tensor, name: str) -> torch.Tensor:
    """The pointwise map on the decoder's output: ``"identity"``, ``"clamp"`` to [0, 1] or ``"sigmoid"``.

    A pointwise map commutes with transports of permutation-type fields, so it keeps the
    predictions equivariant; ``"clamp"`` bounds what is fed back for frames in [0, 1].
    """
    if name == "clamp":
        return z.clamp(0.0, 1.0)
    if name == "sigmoid":
        return torch.sigmoid(z)
    return z


def build_decoder(
    hidden_type: Any, in_type: Any, layers: int, decoder_type: Any, kernel_size: int, bias: bool, padding_mode: str
) -> torch.nn.ModuleList:
    """The steerable decoder: ``layers`` convs ``-> decoder_type`` (each followed by ReLU), then one to ``in_type``."""
    types_ = [hidden_type] + [decoder_type] * layers + [in_type]
    return torch.nn.ModuleList(
        [SteerableConv(a, b, kernel_size, bias=bias, padding_mode=padding_mode) for a, b in zip(types_[:-1], types_[1:])]
    )


def run_decoder(
    z: torch.Tensor,
    decoder: torch.nn.ModuleList,
    filters: List[Tuple[torch.Tensor, Optional[torch.Tensor]]],
    activation: str,
) -> torch.Tensor:
    """Apply a :func:`build_decoder` stack to ``[N, C, H, W]`` with already expanded filters."""
    n = len(decoder)
    for i, (conv, (filt, bias)) in enumerate(zip(decoder, filters)):
        z = conv.apply_expanded(z, filt, bias)
        if i < n - 1:
            z = torch.relu(z)
    return output_activation(z, activation)

State = Tuple[torch.Tensor, ...]


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


def _as_tuple(state: Any) -> State:
    items = state if isinstance(state, tuple) else (state,)
    return tuple(s.tensor if hasattr(s, "tensor") else s for s in items)


class NextFramePredictor(torch.nn.Module):
    """Flow-equivariant next-frame predictor: FERNN encoder, V pooling, steerable decoder.

    See the module docstring for the prediction convention and its equivariance.

    Args:
        in_type: escnn ``FieldType`` of the frames (also the type of the predictions).
        hidden_type: escnn ``FieldType`` of each V slice of the state (pointwise fields).
        flows: the flow set :math:`V`.
        decoder_layers: number of hidden ``conv + ReLU`` layers of the decoder before the last
            conv to ``in_type`` (0: a single conv).
        pool: ``"max"`` (paper) or ``"mean"`` pooling over :math:`V`.
        cell: ``"fernn"``, ``"gru"`` or ``"lstm"``.
        num_layers: stacked encoder layers.
        kernel_size: kernel size of the encoder's :math:`U, W`.
        decoder_kernel_size: kernel size of the decoder convs.
        decoder_type: field type of the decoder's hidden layers (default ``hidden_type``).
        mode: encoder execution mode (``"auto"``, ``"hidden"``, ``"comoving"``).
        checkpoint: gradient checkpointing in the encoder.
        padding_mode: ``"circular"`` (exact on the torus) or ``"zeros"`` (encoder and decoder).
        bias: biases in :math:`U` and the decoder (escnn biases trivial fields only).
        output_activation: pointwise map on each prediction (:func:`output_activation`):
            ``"identity"`` (default), ``"clamp"`` to [0, 1] (bounds what is fed back; for frames in
            [0, 1]) or ``"sigmoid"``. Pointwise, so predictions stay equivariant.
        **cell_kwargs: passed to the cells (e.g. ``nonlinearity`` for FERNN, ``interpolation``).

    Shapes:
        ``forward(x, num_predictions)``: ``x [B, T_in, C, H, W]`` ->
        ``[B, num_predictions, C, H, W]`` (frames :math:`T_{in}, \\dots`); with
        ``include_one_step=True`` the one-step-ahead predictions of frames
        :math:`1, \\dots, T_{in}-1` come first (output index :math:`j` is frame :math:`j+1`).
    """

    def __init__(
        self,
        in_type: Any,
        hidden_type: Any,
        flows: FlowSet,
        decoder_layers: int = 2,
        pool: str = "max",
        cell: str = "fernn",
        num_layers: int = 1,
        kernel_size: int = 3,
        decoder_kernel_size: int = 3,
        decoder_type: Optional[Any] = None,
        mode: str = "auto",
        checkpoint: bool = False,
        padding_mode: str = "circular",
        bias: bool = True,
        output_activation: str = "identity",
        **cell_kwargs: Any,
    ) -> None:
        super().__init__()
        if output_activation not in OUTPUT_ACTIVATIONS:
            raise ValueError(f"output_activation must be one of {OUTPUT_ACTIVATIONS}, got {output_activation!r}")
        if output_activation != "identity":
            check_pointwise(in_type, "in_type (the predictions, for output_activation)")
        if cell not in CELLS:
            raise ValueError(f"cell must be one of {sorted(CELLS)}, got {cell!r}")
        if pool not in VELOCITY_POOLS:
            raise ValueError(f"pool must be one of {VELOCITY_POOLS}, got {pool!r}")
        if isinstance(decoder_layers, bool) or not isinstance(decoder_layers, int) or decoder_layers < 0:
            raise ValueError(f"decoder_layers must be a non-negative integer, got {decoder_layers!r}")
        self.encoder: FlowRNN = CELLS[cell](
            in_type,
            hidden_type,
            flows,
            kernel_size,
            num_layers=num_layers,
            mode=mode,
            checkpoint=checkpoint,
            padding_mode=padding_mode,
            bias=bias,
            **cell_kwargs,
        )
        dec_type = hidden_type if decoder_type is None else decoder_type
        if not isinstance(dec_type, enn.FieldType):
            raise TypeError(f"decoder_type must be an escnn FieldType, got {type(dec_type).__name__}")
        check_pointwise(dec_type, "decoder_type")
        self.in_type = in_type
        self.hidden_type = hidden_type
        self.flows = flows
        self.cell = cell
        self.pool = pool
        self.output_activation = output_activation
        self.decoder = build_decoder(
            hidden_type, in_type, decoder_layers, dec_type, decoder_kernel_size, bias, padding_mode
        )

    @property
    def static_equivariant(self) -> bool:
        """Whether :math:`V` is closed under the fiber group, so predictions commute with static :math:`G`."""
        return self.flows.is_closed_under()

    # -- pieces --------------------------------------------------------------------------------------
    def _decode(self, z: torch.Tensor, filters: List[Tuple[torch.Tensor, Optional[torch.Tensor]]]) -> torch.Tensor:
        """``Dec`` on ``[N, C, H, W]`` with already expanded filters."""
        return run_decoder(z, self.decoder, filters, self.output_activation)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Decode a pooled field ``[..., C, H, W]`` to frames ``[..., C_in, H, W]``."""
        lead = z.shape[:-3]
        out = self._decode(z.reshape(-1, *z.shape[-3:]), [conv.expand() for conv in self.decoder])
        return out.reshape(*lead, *out.shape[-3:])

    def _check_input(self, x: Any, num_predictions: Any) -> None:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"expected a torch.Tensor [B, T_in, C, H, W], got {type(x).__name__}")
        if x.dim() != 5 or x.shape[2] != self.in_type.size:
            raise ValueError(
                f"expected input frames [B, T_in, C={self.in_type.size}, H, W], got shape {tuple(x.shape)}"
                + (" (a single frame? add the time axis)" if x.dim() == 4 else "")
            )
        if x.shape[1] < 1:
            raise ValueError("the input sequence has T_in=0 frames; give at least one frame")
        if isinstance(num_predictions, bool) or not isinstance(num_predictions, int) or num_predictions < 1:
            raise ValueError(f"num_predictions must be a positive integer, got {num_predictions!r}")

    # -- forward -------------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, num_predictions: int = 1, include_one_step: bool = False) -> torch.Tensor:
        """Predict frames :math:`T_{in}, \\dots, T_{in} + P - 1` autoregressively.

        Args:
            x: input frames ``[B, T_in, C, H, W]``.
            num_predictions: :math:`P \\ge 1`.
            include_one_step: also return the one-step-ahead predictions of frames
                :math:`1..T_{in}-1` (from the encoder's own states, for training), first.

        Returns:
            ``[B, P, C, H, W]`` (output :math:`j` is frame :math:`T_{in} + j` and transforms by
            :math:`\\psi_{T_{in}+j}(\\mu)`), or ``[B, T_in - 1 + P, C, H, W]`` with
            ``include_one_step`` (output :math:`j` is frame :math:`j + 1`).
        """
        self._check_input(x, num_predictions)
        grid = (x.shape[-2], x.shape[-1])
        cells = list(self.encoder.cells)
        plans = [c.step_plan(grid, x.device) for c in cells]
        dec_filters = [conv.expand() for conv in self.decoder]
        filters = self.encoder.expanded_filters()  # shared by the encoder pass and the continuation
        seq, finals = self.encoder.forward_with_state(x, return_sequence=include_one_step, filters=filters)
        outputs: List[torch.Tensor] = []
        if include_one_step and x.shape[1] > 1:
            hs = seq.tensor[:, :-1]  # h_0 .. h_{T_in - 2}
            pooled = reduce_velocities(plans[-1](hs), self.pool)  # frames 1 .. T_in - 1
            b, t = pooled.shape[:2]
            dec = self._decode(pooled.reshape(b * t, *pooled.shape[2:]), dec_filters)
            outputs.append(dec.reshape(b, t, *dec.shape[1:]))
        states = [_as_tuple(s) for s in finals]
        preds: List[torch.Tensor] = []
        for j in range(num_predictions):
            moved = [tuple(plan(s) for s in st) for st, plan in zip(states, plans)]  # h~_s
            pred = self._decode(reduce_velocities(cells[-1].output(moved[-1]), self.pool), dec_filters)
            preds.append(pred)
            if j == num_predictions - 1:
                break
            inp = pred
            new_states = []
            for cell_, st, ((ufilt, ubias), wfilt) in zip(cells, moved, filters):
                u = cell_.input_term(inp, ufilt, ubias)
                if u.dim() == 4:
                    u = u.unsqueeze(1)  # broadcast over V
                st = cell_.step(st, u, wfilt, _identity)  # already transported
                new_states.append(st)
                inp = cell_.output(st)
            states = new_states
        outputs.append(torch.stack(preds, dim=1))
        return torch.cat(outputs, dim=1) if len(outputs) > 1 else outputs[0]

    def one_step_predictions(self, x: torch.Tensor) -> torch.Tensor:
        """Teacher-forced one-step-ahead predictions of frames :math:`1..T_{in}-1`: ``[B, T_in-1, C, H, W]``.

        :math:`\\hat f_s = \\mathrm{Dec}(P_V\\, \\psi_1(\\nu) h_{s-1}(\\nu))` with :math:`h_{s-1}` from the
        true frames :math:`f_0..f_{s-1}` only (never :math:`f_s`). Output :math:`j` transforms by
        :math:`\\psi_{j+1}(\\mu)`.
        """
        self._check_input(x, 1)
        if x.shape[1] < 2:
            raise ValueError("one-step predictions need T_in >= 2 input frames")
        full = self.forward(x, 1, include_one_step=True)
        return full[:, : x.shape[1] - 1]

    # -- export --------------------------------------------------------------------------------------
    def export(
        self, grid_shape: Optional[Tuple[int, int]] = None, max_steps: Optional[int] = None
    ) -> "ExportedNextFramePredictor":
        """A plain-PyTorch twin (see :mod:`flow_escnn.nn.export`) for inputs on a ``grid_shape`` grid.

        Args:
            grid_shape: ``(H, W)``; required.
            max_steps: longest input sequence, required when the encoder runs in co-moving mode.
        """
        if grid_shape is None:
            raise ValueError("NextFramePredictor.export needs grid_shape=(H, W) (its transports are per-grid tables)")
        encoder = export_flow_rnn(self.encoder, grid_shape, max_steps)
        decoder = [export_conv(conv) for conv in self.decoder]
        twin = ExportedNextFramePredictor(encoder, decoder, self.pool, self.output_activation)
        twin.train(self.training)
        return twin


class ExportedNextFramePredictor(torch.nn.Module):
    """Plain-PyTorch twin of :class:`NextFramePredictor` (same ``forward``; TorchScript-able)."""

    def __init__(
        self, encoder: ExportedFlowRNN, decoder: List[torch.nn.Conv2d], pool: str, output_activation: str = "identity"
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.decoder = torch.nn.ModuleList(list(decoder))
        self.num_decoder = len(decoder)
        self.pool = pool
        self.output_activation = output_activation

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Decode ``[N, C, H, W]``."""
        i = 0
        for conv in self.decoder:
            z = conv(z)
            if i < self.num_decoder - 1:
                z = torch.relu(z)
            i += 1
        return output_activation(z, self.output_activation)

    def forward(self, x: torch.Tensor, num_predictions: int = 1, include_one_step: bool = False) -> torch.Tensor:
        if x.dim() != 5:
            raise ValueError("expected input frames [B, T_in, C, H, W], got shape {}".format(list(x.shape)))
        if num_predictions < 1:
            raise ValueError("num_predictions must be a positive integer, got {}".format(num_predictions))
        seq, finals = self.encoder.forward_with_state(x, None, include_one_step)
        outputs: List[torch.Tensor] = []
        if include_one_step and x.shape[1] > 1 and seq is not None:
            hs = seq[:, :-1]
            moved_seq = hs
            i = 0
            for cell in self.encoder.cells:  # psi_1(nu) of the last layer
                if i == self.encoder.num_layers - 1:
                    moved_seq = cell.step_transport(hs)
                i += 1
            pooled = reduce_velocities(moved_seq, self.pool)
            b, t = pooled.shape[0], pooled.shape[1]
            dec = self.decode(pooled.reshape(b * t, pooled.shape[2], pooled.shape[3], pooled.shape[4]))
            outputs.append(dec.reshape(b, t, dec.shape[1], dec.shape[2], dec.shape[3]))
        states = finals
        preds: List[torch.Tensor] = []
        for j in range(num_predictions):
            moved: List[List[torch.Tensor]] = []
            l = 0
            for cell in self.encoder.cells:
                moved.append(cell.transport(states[l]))
                l += 1
            pred = self.decode(reduce_velocities(moved[-1][0], self.pool))
            preds.append(pred)
            if j == num_predictions - 1:
                break
            inp = pred
            new_states: List[List[torch.Tensor]] = []
            l = 0
            for cell in self.encoder.cells:
                u = cell.input_term(inp)
                if u.dim() == 4:
                    u = u.unsqueeze(1)
                st = cell.update(moved[l], u)
                new_states.append(st)
                inp = st[0]
                l += 1
            states = new_states
        outputs.append(torch.stack(preds, dim=1))
        if len(outputs) > 1:
            return torch.cat(outputs, dim=1)
        return outputs[0]
