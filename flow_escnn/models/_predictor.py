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
G-steerable convolutions with pointwise ReLU (the encoder's padding: circular, or zeros for a
:math:`V` of rotation flows, see ``padding_mode``) ending in ``in_type``.
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

The encoder and the continuation are one run of the recurrence engine
(:mod:`flow_escnn.nn._engine`): the guess :math:`\\tilde h_s` is the transported state the step
computes anyway, and past the input frames the decoded prediction is the step's input.
Interpolated (non-90-degree) rotation flows run in the co-moving frame throughout, the
continuation included (:math:`\\tilde h_s = \\psi_s(\\nu) k_{s-1}(\\nu)`), so resampling error
does not compound over the predicted frames either. Only the pooled guesses are kept, never
the lifted hidden sequence.
"""
from __future__ import annotations

from typing import Any, Callable, Optional, Tuple

import torch

from flow_escnn._compat import enn
from flow_escnn._validate import non_negative_int, one_of, positive_int
from flow_escnn.flows._flowset import FlowSet
from flow_escnn.models._program import (
    OUTPUT_ACTIVATIONS,
    PredictorProgram,
    ProgramCache,
    build_decoder,
    decoder_weights,
    run_decoder,
)
from flow_escnn.nn._conv import AUTO_PADDING, resolve_padding
from flow_escnn.nn._engine import Recurrence, Weights
from flow_escnn.nn._frozen import Frozen, check_exported_input, check_grid
from flow_escnn.nn.cell_kinds import sequence_layer
from flow_escnn.nn._nonlinearity import check_pointwise
from flow_escnn.nn._pooling import check_velocity_pool
from flow_escnn.nn._sequence import FlowRNN
from flow_escnn.nn._spec import records_init

# the decoder and the plain-torch program live in flow_escnn.models._program (imported above)
__all__ = ["NextFramePredictor", "ExportedNextFramePredictor"]


def _check_predictor_input(x: Any, channels: int, num_predictions: Any, dims: int = 2) -> None:
    axes = "D, H, W" if dims == 3 else "H, W"
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"expected a torch.Tensor [B, T_in, C, {axes}], got {type(x).__name__}")
    if x.dim() != 3 + dims or x.shape[2] != channels:
        raise ValueError(
            f"expected input frames [B, T_in, C={channels}, {axes}], got shape {tuple(x.shape)}"
            + (" (a single frame? add the time axis)" if x.dim() == 2 + dims else "")
        )
    if x.shape[1] < 1:
        raise ValueError("the input sequence has T_in=0 frames; give at least one frame")
    if not x.is_floating_point():
        raise TypeError(f"expected a floating point input, got dtype {x.dtype}")
    positive_int(num_predictions, "num_predictions")


@records_init
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
        cell: ``"fernn"``, ``"gru"``, ``"lstm"`` or ``"grnn_plus"`` (the G-RNN+ baseline: learned
            per-velocity kernels in place of the transport, see :class:`~flow_escnn.nn.GRNNPlus`).
        num_layers: stacked encoder layers.
        kernel_size: kernel size of the encoder's :math:`U, W`.
        decoder_kernel_size: kernel size of the decoder convs.
        decoder_type: field type of the decoder's hidden layers (default ``hidden_type``).
        mode: encoder execution mode (``"auto"``, ``"hidden"``, ``"comoving"``).
        checkpoint: gradient checkpointing (segments of the encoder and continuation steps).
        padding_mode: of the encoder and the decoder: ``"auto"`` (default: ``"zeros"`` for a :math:`V` of
            rotation flows, as the paper's rotation models, else ``"circular"``;
            :func:`~flow_escnn.nn._conv.resolve_padding`), ``"circular"`` (exact on the torus) or
            ``"zeros"``. The resolved mode is ``self.padding_mode``.
        bias: biases in :math:`U` and the decoder (escnn biases trivial fields only).
        output_activation: pointwise map on each prediction (:func:`output_activation`):
            ``"identity"`` (default), ``"clamp"`` to [0, 1] (bounds what is fed back; for frames in
            [0, 1]) or ``"sigmoid"``. Pointwise, so predictions stay equivariant.
        **cell_kwargs: passed to the cells (e.g. ``nonlinearity`` for FERNN, ``interpolation``,
            ``velocity_kernel_size`` for G-RNN+).

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
        padding_mode: str = AUTO_PADDING,
        bias: bool = True,
        output_activation: str = "identity",
        **cell_kwargs: Any,
    ) -> None:
        super().__init__()
        one_of(output_activation, OUTPUT_ACTIVATIONS, "output_activation")
        if output_activation != "identity":
            check_pointwise(in_type, "in_type (the predictions, for output_activation)")
        check_velocity_pool(pool, hidden_type, "pool")
        non_negative_int(decoder_layers, "decoder_layers")
        if isinstance(flows, FlowSet):  # (anything else is refused by the encoder)
            padding_mode = resolve_padding(padding_mode, flows)
        self.encoder: FlowRNN = sequence_layer(
            cell, in_type, hidden_type, flows, kernel_size, num_layers=num_layers, mode=mode, checkpoint=checkpoint,
            padding_mode=padding_mode, bias=bias, **cell_kwargs,
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
        self.padding_mode = padding_mode
        self.output_activation = output_activation
        self.decoder = build_decoder(
            hidden_type, in_type, decoder_layers, dec_type, decoder_kernel_size, bias, padding_mode
        )
        self._programs = ProgramCache()

    @property
    def static_equivariant(self) -> bool:
        """Whether :math:`V` is closed under the fiber group, so predictions commute with static :math:`G`."""
        return self.flows.is_closed_under()

    # -- the engine ----------------------------------------------------------------------------------
    def weights(self) -> Weights:
        """Encoder and decoder weights, expanded once (differentiable)."""
        out = self.encoder.weights()
        out.update(decoder_weights(self.decoder))
        return out

    def program(self, recurrence: Recurrence) -> Callable[..., torch.Tensor]:
        """The predictor's program around an encoder program (cached per encoder program), or its
        ``torch.compile`` form after :meth:`compile_engine`."""
        return self._programs.get(recurrence, lambda: self._new_program(recurrence))[1]

    def compile_engine(self, **options: Any) -> "NextFramePredictor":
        """Run the plain-torch program (recurrence, pooling, decoder) through ``torch.compile``.

        The filter expansion from escnn's bases stays eager (it runs once per call); the step loop,
        transports and decoder, forward and backward, are what the compiler sees. The first call per
        grid and length compiles (seconds to minutes); later calls reuse it.

        Args:
            **options: ``torch.compile`` keyword arguments (``mode="reduce-overhead"``, ``backend=...``);
                none: its defaults.

        Returns:
            ``self``.
        """
        self._programs.use_torch_compile(**options)
        return self

    def _new_program(self, recurrence: Recurrence) -> PredictorProgram:
        return PredictorProgram(
            recurrence, len(self.decoder), self.padding_mode, self.pool, self.output_activation,
            self.encoder.checkpoint, self.decoder[0].kernel_size,
        ).to(recurrence.device)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Decode a pooled field ``[..., C, H, W]`` (``[..., C, D, H, W]``) to frames ``[..., C_in, H, W]``."""
        k = self.encoder.cells[0].spatial_dims + 1
        lead = z.shape[:-k]
        flat = z.reshape(-1, *z.shape[-k:])
        out = run_decoder(flat, decoder_weights(self.decoder), len(self.decoder), self.padding_mode, self.output_activation)
        return out.reshape(*lead, *out.shape[-k:])

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
        nd = self.encoder.cells[0].spatial_dims
        _check_predictor_input(x, self.in_type.size, num_predictions, nd)
        recurrence = self.encoder.recurrence(tuple(x.shape[-nd:]), x.device, x.shape[1] + num_predictions)
        return self.program(recurrence)(self.weights(), x, num_predictions, include_one_step)

    def one_step_predictions(self, x: torch.Tensor) -> torch.Tensor:
        """Teacher-forced one-step-ahead predictions of frames :math:`1..T_{in}-1`: ``[B, T_in-1, C, H, W]``.

        :math:`\\hat f_s = \\mathrm{Dec}(P_V\\, \\psi_1(\\nu) h_{s-1}(\\nu))` with :math:`h_{s-1}` from the
        true frames :math:`f_0..f_{s-1}` only (never :math:`f_s`). Output :math:`j` transforms by
        :math:`\\psi_{j+1}(\\mu)`.
        """
        _check_predictor_input(x, self.in_type.size, 1, self.encoder.cells[0].spatial_dims)
        if x.shape[1] < 2:
            raise ValueError("one-step predictions need T_in >= 2 input frames")
        full = self.forward(x, 1, include_one_step=True)
        return full[:, : x.shape[1] - 1]

    # -- export --------------------------------------------------------------------------------------
    def export(
        self, grid_shape: Optional[Tuple[int, int]] = None, max_steps: Optional[int] = None
    ) -> "ExportedNextFramePredictor":
        """A plain-PyTorch twin (the same program with frozen weights) for inputs on a ``grid_shape`` grid.

        Args:
            grid_shape: ``(H, W)`` (``(D, H, W)`` on a 3D gspace); required.
            max_steps: longest ``T_in + num_predictions``, required when the encoder runs in
                co-moving mode and its flows have no period on the grid.
        """
        if grid_shape is None:
            raise ValueError("NextFramePredictor.export needs grid_shape=(H, W) (its transports are per-grid tables)")
        recurrence, limit = self.encoder.export_program(check_grid(grid_shape, self.encoder.cells[0].spatial_dims),
                                                        max_steps)
        with torch.no_grad():
            weights = self.weights()
        twin = ExportedNextFramePredictor(self._new_program(recurrence), weights, self.in_type.size, limit)
        return twin.train(self.training)


class ExportedNextFramePredictor(Frozen):
    """Plain-PyTorch twin of :class:`NextFramePredictor` (same ``forward``)."""

    def __init__(self, program: PredictorProgram, weights: Weights, in_channels: int, max_steps: Optional[int]) -> None:
        super().__init__(weights)
        self.program = program
        self.in_channels = int(in_channels)
        self.max_steps = max_steps

    def forward(self, x: torch.Tensor, num_predictions: int = 1, include_one_step: bool = False) -> torch.Tensor:
        _check_predictor_input(x, self.in_channels, num_predictions, len(self.program.recurrence.grid_shape))
        check_exported_input(x, self.program.recurrence, self.in_channels, self.max_steps, num_predictions)
        return self.program(self.frozen_weights(), x, num_predictions, include_one_step)
