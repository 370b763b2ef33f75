"""Flow-equivariant world models (FloWM; Lillemark et al., arXiv 2601.01075) on escnn.

An agent sees a ``h x w`` view of a larger world and acts by a known action per step: a move
and, here, also a turn (:mod:`flow_escnn.flows._action`). Its memory is a map of the world in its
own frame, a ``H x W`` torus lifted over a flow set :math:`V` of object velocities, with the view
window at the map's centre. One step of the recurrence (the engine of every model,
:mod:`flow_escnn.nn._engine`, with its self-motion ``act`` and its ``view`` window) is

.. math::
    \\tilde h_t(\\nu) = \\psi_1(\\nu)\\,\\big[a_t^{-1}\\cdot h_{t-1}\\big](\\nu), \\qquad
    h_t(\\nu) = \\sigma\\big(W * \\tilde h_t(\\nu) + \\mathrm{write}(U * f_t)\\big),

where :math:`a_t^{-1}` carries the map (space, fibers and the velocity labels) into the new frame
of the agent, and ``write`` places the encoded view in the window, zeros elsewhere. The gated
cells replace :math:`\\sigma(\\cdot)` by their updates. Frame :math:`s` is predicted from the
transported state before its own view is written (as in
:class:`~flow_escnn.models.NextFramePredictor`):

.. math::
    \\hat f_s = \\mathrm{Dec}\\big(\\mathrm{read}(P_V\\, \\tilde h_s)\\big),

``read`` taking the window back out, :math:`P_V` the max (or mean) over :math:`V` and
:math:`\\mathrm{Dec}` steerable convolutions on the view's own grid (zero padding: the view is not
periodic). Past the given views (``imagine=``):

* ``"feedback"`` (FloWM): the prediction is fed back as the next view and the cell updates the map;
* ``"carry"``: nothing is written and no cell runs: the map is only carried by the self-motion
  and the flows, :math:`h_s(\\nu) = \\tilde h_s(\\nu)`, while it is read out. The model's own errors
  are then never written back into its memory (with feedback they compound over hundreds of
  steps), and the rollout is the map's transport, exactly. On the given views too, the cells
  update the window only and the rest of the map is carried: the map changes where the agent
  looks, and nowhere else.

Beside every view the model gets an *observation plane* (1 where a view is written), so the cells
can tell the window from the rest of the map. The FloWM reference code wrote the previous frame
again after the transport (one step late); this module does not, so no view is written twice and
the predictions are equivariant as stated.

Options of the models compared in the FloWM paper:

* ``self_motion=False``: the actions are ignored by the transport (the ablation "no self-motion
  equivariance");
* ``action_input=True``: the actions ``(ux, uy, k)`` are fed as three constant input planes
  beside every view (the "action concat" baseline, usually with ``V = {0}`` and no self-motion);
* ``FlowSet.identity`` as :math:`V`: no velocity channels (the G-RNN of the map).

Equivariance (checked by :func:`flow_escnn.checks.check_world_equivariance`): rotating every view
by a quarter turn :math:`g` about its centre and conjugating the actions, :math:`a_t \\mapsto g a_t
g^{-1}`, rotates every prediction by :math:`g` (the window is centred, the map transports commute
with :math:`g` up to the relabelling of :math:`V`). When the view is the whole world (``H x W =
h x w``), an episode of a moving agent is its static twin seen from the agent: views
:math:`P_t^{-1} f_t` with :math:`P_t = a_0 \\cdots a_t` give predictions :math:`P_s^{-1}\\hat f_s`
(self-motion equivariance); integer world shifts and object flows act as for the FERNN. All exact
for integer moves and quarter turns on a torus.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, Optional, Tuple

import torch

from flow_escnn._compat import enn
from flow_escnn._validate import grid_shape as validate_grid_shape
from flow_escnn._validate import non_negative_int, one_of, positive_int
from flow_escnn.flows._action import ActionTransport, Episode, QuarterTurns, SelfMotion, check_actions
from flow_escnn.flows._flowset import FlowSet
from flow_escnn.flows._planar import steps_per_turn
from flow_escnn.flows._tables import DEFAULT_INTERPOLATION
from flow_escnn.models._program import OUTPUT_ACTIVATIONS, ProgramCache, build_decoder, decoder_weights, run_decoder
from flow_escnn.nn.cell_kinds import sequence_layer
from flow_escnn.nn._engine import Recurrence, Weights
from flow_escnn.nn._fused import read_window
from flow_escnn.nn._frozen import Frozen
from flow_escnn.nn._nonlinearity import check_pointwise
from flow_escnn.nn._pooling import check_velocity_pool
from flow_escnn.nn._sequence import FlowRNN
from flow_escnn.nn._spec import records_init

__all__ = ["WorldModel", "ExportedWorldModel", "WorldProgram", "centred_window", "IMAGINE"]

#: Input planes of ``action_input=True``: the action's ``(ux, uy, k)`` as constant planes.
ACTION_PLANES = 3
#: The observation plane beside every view: 1 where a view is written (given, or a prediction fed back), so
#: the cells can tell the window from the rest of the map.
OBSERVED_PLANES = 1
#: ``imagine=``: what happens past the given views (module docstring).
IMAGINE = ("feedback", "carry")


def centred_window(world: Tuple[int, int], view: Tuple[int, int]) -> Tuple[int, int, int, int]:
    """``(top, left, h, w)`` of a ``view`` window at the centre of a ``world`` map.

    Raises:
        ValueError: when the view is larger than the map, or cannot sit exactly at its centre
            (``H - h`` and ``W - w`` must be even, so that turns about the view centre are turns about
            the map centre).
    """
    (gh, gw), (h, w) = world, view
    if h > gh or w > gw:
        raise ValueError(f"the view {h}x{w} is larger than the world map {gh}x{gw}")
    if (gh - h) % 2 or (gw - w) % 2:
        raise ValueError(f"a {h}x{w} view cannot sit at the centre of a {gh}x{gw} map (H - h and W - w must be even)")
    return (gh - h) // 2, (gw - w) // 2, h, w


def _check_episode(views: Any, actions: Any, channels: int, view: Tuple[int, int], num_predictions: int) -> torch.Tensor:
    if not isinstance(views, torch.Tensor) or views.dim() != 5 or views.shape[2] != channels:
        raise ValueError(f"expected views [B, T_in, C={channels}, h, w], got "
                         f"{list(views.shape) if isinstance(views, torch.Tensor) else type(views).__name__}")
    if tuple(views.shape[-2:]) != tuple(view):
        raise ValueError(f"expected views of {view[0]}x{view[1]} pixels (the model's view), got {list(views.shape[-2:])}")
    if views.shape[1] < 1:
        raise ValueError("the episode has T_in=0 views; give at least one")
    if not views.is_floating_point():
        raise TypeError(f"expected floating point views, got dtype {views.dtype}")
    positive_int(num_predictions, "num_predictions")
    return check_actions(actions, views.shape[0], views.shape[1] + num_predictions)


class _EpisodeMotion:
    """The engine's self-motion ``act(t, s)`` of an episode of exact actions: the
    :class:`~flow_escnn.flows._action.Episode` tables, built once per state shape, and
    ``permutation(t, shape, device)`` (the step as per-sample permutations, which the engine folds into its
    flow transport; see :meth:`flow_escnn.nn._engine.Recurrence.transport`)."""

    def __init__(self, exact: QuarterTurns, actions: torch.Tensor, quarters: torch.Tensor) -> None:
        self.exact, self.actions, self.quarters = exact, actions, quarters
        self.episodes: Dict[Tuple[Any, ...], Episode] = {}  # per state shape

    def episode(self, shape: Tuple[int, ...], device: torch.device) -> Episode:
        key = (tuple(shape), device)
        if key not in self.episodes:
            self.episodes[key] = self.exact.episode(self.actions, self.quarters, tuple(shape), device)
        return self.episodes[key]

    def permutation(self, t: int, shape: Tuple[int, ...], device: torch.device) -> Optional[SelfMotion]:
        return self.episode(shape, device).permutation(t)

    def __call__(self, t: int, s: torch.Tensor) -> torch.Tensor:
        return self.episode(s.shape, s.device)(t, s)


class WorldProgram(torch.nn.Module):
    """The world model as plain torch: the encoder's engine program (map grid, view window), the
    self-motion (:class:`~flow_escnn.flows._action.QuarterTurns` or
    :class:`~flow_escnn.flows._action.ActionTransport`), the readout and the decoder.

    ``forward(weights, views, actions, num_predictions)`` is what both :class:`WorldModel` and
    :class:`ExportedWorldModel` run.
    """

    def __init__(self, recurrence: Recurrence, window: Tuple[int, int, int, int], motion: Optional[torch.nn.Module],
                 decoder_layers: int, pool: str, activation: str, action_input: bool, steps_per_turn: int,
                 checkpoint: bool = False, imagine: str = "feedback") -> None:
        super().__init__()
        self.recurrence = recurrence
        self.window = tuple(window)
        #: the view is the whole world: it is periodic too, so its convolutions pad circularly
        self.fully_observed = (self.window[2], self.window[3]) == tuple(recurrence.grid_shape)
        self.motion = motion
        self.decoder_layers = int(decoder_layers)
        self.pool = pool
        self.activation = activation
        self.action_input = bool(action_input)
        self.steps_per_turn = int(steps_per_turn)
        self.checkpoint = bool(checkpoint)
        self.imagine = one_of(imagine, IMAGINE, "imagine")

    def read(self, z: torch.Tensor) -> torch.Tensor:
        """The view window of a (circularly padded) map ``[..., C, H(+2p), W(+2p)]`` (contiguous); a window as it is."""
        top, left, h, w = self.window
        p = (z.shape[-1] - self.recurrence.grid_shape[1]) // 2
        if (h, w) == tuple(z.shape[-2:]):
            return z
        return read_window(z, slice(top + p, top + p + h), slice(left + p, left + p + w))

    def decode(self, weights: Weights, z: torch.Tensor) -> torch.Tensor:
        """``Dec`` on pooled view windows ``[N, C, h, w]`` (zero padding; circular for a view that is the world)."""
        return run_decoder(z, weights, self.decoder_layers, "circular" if self.fully_observed else "zeros",
                           self.activation)

    def act(self, actions: torch.Tensor, steps: int) -> Optional[Callable[[int, torch.Tensor], torch.Tensor]]:
        """The engine's self-motion ``act(t, s)`` for the first ``steps`` actions of ``[B, T, 3]`` (None without
        self-motion). Exact moves (integer moves, quarter turns) are checked and their tables built once for
        all the steps (:meth:`~flow_escnn.flows._action.QuarterTurns.episode`); other turns go step by step."""
        if self.motion is None:
            return None
        motion = self.motion
        actions = actions[:, :steps]
        quarters = QuarterTurns.of_steps(actions[..., 2], self.steps_per_turn)
        if quarters is None:
            if isinstance(motion, QuarterTurns):
                raise ValueError("this model transports quarter turns only (an exported world model has no "
                                 "interpolation tables): turn by multiples of 90 degrees")
            return lambda t, s: motion(s, actions[:, t])
        exact = motion if isinstance(motion, QuarterTurns) else motion.quarters
        return _EpisodeMotion(exact, actions, quarters)

    def inputs(self, views: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """The engine's input frames ``[B, n, C + 1 (+ 3), h, w]`` for views ``[B, n, C, h, w]``: the views, the
        observation plane and, under ``action_input``, the actions of those steps as constant planes."""
        b, n, _, h, w = views.shape
        parts = [views, views.new_ones((b, n, OBSERVED_PLANES, h, w))]
        if self.action_input:
            parts.append(actions[:, :n, :, None, None].to(views.dtype).expand(b, n, ACTION_PLANES, h, w))
        return torch.cat(parts, dim=2)

    def forward(self, weights: Weights, views: torch.Tensor, actions: torch.Tensor, num_predictions: int) -> torch.Tensor:
        t_in = views.shape[1]
        x = self.inputs(views, actions)

        def predict(s: int, guess: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
            # the engine reads the view window (a map with a window reads it before the pool over V, at the
            # window's cost) and pools it over V; a whole-world view is cut out of the pooled, padded map here
            frame = self.decode(weights, self.read(guess))
            return frame, self.inputs(frame[:, None], actions[:, s : s + 1])[:, 0]  # fed back under "feedback"

        res = self.recurrence.run(
            x, weights, keep_outputs=False, predict=predict, predict_from=t_in, extra_steps=num_predictions - 1,
            checkpoint=self.checkpoint, act=self.act(actions, t_in + num_predictions),
            carry_past_inputs=self.imagine == "carry", readout_pool=self.pool,
        )
        return torch.stack(res.predictions, dim=1)


@records_init
class WorldModel(torch.nn.Module):
    """A flow-equivariant world model: views and actions in, predicted views out (module docstring).

    Args:
        in_type: escnn ``FieldType`` of the views (also the type of the predictions).
        hidden_type: escnn ``FieldType`` of each :math:`V` slice of the map.
        flows: the flow set :math:`V` of object velocities (``FlowSet.identity``: none).
        world_size: ``(H, W)`` of the map, a torus (an int for a square map).
        view_size: ``(h, w)`` of the views (an int for a square view); the window sits at the map's
            centre (``H - h``, ``W - w`` even).
        self_motion: transport the map by the inverse of each action (False: ignore the actions).
        action_input: also feed the actions as three constant input planes.
        imagine: past the given views, ``"feedback"`` (FloWM: each prediction is written as the next view) or
            ``"carry"`` (nothing is written, no cell runs: the map is carried by self-motion and flows; on
            the given views the cells update the window only).
        decoder_layers: hidden ``conv + ReLU`` layers of the decoder before its last conv.
        pool: ``"max"`` (FloWM) or ``"mean"`` over :math:`V`.
        cell: a cell kind of :data:`flow_escnn.nn.CELLS` (``"fernn"``, ``"gru"``, ``"lstm"``).
        num_layers: stacked recurrent layers (every layer holds a map).
        kernel_size: kernel of :math:`U` and :math:`W`.
        decoder_kernel_size: kernel of the decoder.
        bias: biases in :math:`U` and the decoder (FloWM has none).
        output_activation: ``"identity"``, ``"clamp"`` or ``"sigmoid"`` on each prediction.
        interpolation: resampling of turns that are not quarter turns.
        checkpoint: gradient checkpointing of the recurrence.
        **cell_kwargs: passed to the cells (e.g. ``nonlinearity``).

    Shapes:
        ``forward(views, actions, num_predictions)``: ``views [B, T_in, C, h, w]``, ``actions
        [B, >= T_in + P, 3]`` (row ``t`` is the action *into* frame ``t``: ``(ux, uy, k)`` pixels and
        rotation steps in the agent's previous frame) -> ``[B, P, C, h, w]`` (frames
        :math:`T_{in} .. T_{in}+P-1`).
    """

    def __init__(
        self,
        in_type: Any,
        hidden_type: Any,
        flows: FlowSet,
        world_size: Any,
        view_size: Any,
        self_motion: bool = True,
        action_input: bool = False,
        imagine: str = "feedback",
        decoder_layers: int = 1,
        pool: str = "max",
        cell: str = "fernn",
        num_layers: int = 1,
        kernel_size: int = 3,
        decoder_kernel_size: int = 3,
        bias: bool = False,
        output_activation: str = "identity",
        interpolation: str = DEFAULT_INTERPOLATION,
        checkpoint: bool = False,
        **cell_kwargs: Any,
    ) -> None:
        super().__init__()
        square = lambda v: (v, v) if isinstance(v, int) and not isinstance(v, bool) else v  # noqa: E731
        self.world_size = validate_grid_shape(square(world_size), "world_size")
        self.view_size = validate_grid_shape(square(view_size), "view_size")
        self.window = centred_window(self.world_size, self.view_size)
        one_of(output_activation, OUTPUT_ACTIVATIONS, "output_activation")
        if output_activation != "identity":
            check_pointwise(in_type, "in_type (the predictions, for output_activation)")
        check_velocity_pool(pool, hidden_type, "pool")
        non_negative_int(decoder_layers, "decoder_layers")
        gs = in_type.gspace
        planes = OBSERVED_PLANES + (ACTION_PLANES if action_input else 0)
        enc_type = in_type + enn.FieldType(gs, [gs.trivial_repr] * planes)
        self.encoder: FlowRNN = sequence_layer(
            cell, enc_type, hidden_type, flows, kernel_size, num_layers=num_layers, mode="hidden",
            checkpoint=checkpoint, padding_mode="circular", bias=bias, interpolation=interpolation, **cell_kwargs,
        )
        self.decoder = build_decoder(hidden_type, in_type, decoder_layers, hidden_type, decoder_kernel_size, bias, "zeros")
        self.motion = ActionTransport(hidden_type, flows, self.world_size, interpolation) if self_motion else None
        self.in_type = in_type
        self.hidden_type = hidden_type
        self.flows = flows
        self.cell = cell
        self.pool = pool
        self.self_motion = bool(self_motion)
        self.action_input = bool(action_input)
        self.imagine = one_of(imagine, IMAGINE, "imagine")
        self.output_activation = output_activation
        self._programs = ProgramCache()

    @property
    def _view(self) -> Optional[Tuple[int, int, int, int]]:
        """The engine's view window (None for a view that is the whole world: frames are the map's grid)."""
        return None if self.fully_observed else self.window

    @property
    def fully_observed(self) -> bool:
        """Whether the view is the whole world (then shifts, object flows and self-motion are exact
        symmetries of the predictions, not only of the map)."""
        return self.world_size == self.view_size

    def weights(self) -> Weights:
        """Encoder and decoder weights, expanded once (differentiable)."""
        out = self.encoder.weights()
        out.update(decoder_weights(self.decoder))
        return out

    def compile_engine(self, **options: Any) -> "WorldModel":
        """Run the plain-torch program through ``torch.compile`` (see
        :meth:`flow_escnn.models.NextFramePredictor.compile_engine`). Returns ``self``."""
        self._programs.use_torch_compile(**options)
        return self

    def _new_program(self, recurrence: Recurrence, motion: Optional[torch.nn.Module]) -> WorldProgram:
        return WorldProgram(recurrence, self.window, motion, len(self.decoder), self.pool, self.output_activation,
                            self.action_input, steps_per_turn(self.in_type.gspace),
                            self.encoder.checkpoint, self.imagine).to(recurrence.device)

    def program(self, recurrence: Recurrence) -> Callable[..., torch.Tensor]:
        return self._programs.get(recurrence, lambda: self._new_program(recurrence, self.motion))[1]

    def maps(self, views: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """The last layer's maps after every given view, ``[B, T_in, V, C, H, W]`` (for inspection and checks)."""
        a = _check_episode(views, actions, self.in_type.size, self.view_size, 1).to(views.device)
        recurrence = self.encoder.recurrence(self.world_size, views.device, views.shape[1], view=self._view)
        program = self._new_program(recurrence, self.motion)
        res = recurrence.run(program.inputs(views, a), self.weights(), act=program.act(a, views.shape[1]),
                             carry_past_inputs=self.imagine == "carry")
        return torch.stack(res.outputs, dim=1)

    def forward(self, views: torch.Tensor, actions: torch.Tensor, num_predictions: int = 1) -> torch.Tensor:
        """Predict views :math:`T_{in} .. T_{in}+P-1` autoregressively from the given views and all actions.

        Args:
            views: ``[B, T_in, C, h, w]``.
            actions: ``[B, >= T_in + P, 3]``: the action into each frame (row 0 acts on the empty map).
            num_predictions: :math:`P \\ge 1`.

        Returns:
            ``[B, P, C, h, w]``.
        """
        a = _check_episode(views, actions, self.in_type.size, self.view_size, num_predictions).to(views.device)
        recurrence = self.encoder.recurrence(self.world_size, views.device, views.shape[1] + num_predictions,
                                             view=self._view)
        return self.program(recurrence)(self.weights(), views, a, num_predictions)

    def export(self, max_steps: Optional[int] = None) -> "ExportedWorldModel":
        """A plain-PyTorch twin (the same program, frozen weights; quarter turns only)."""
        recurrence, _ = self.encoder.export_program(self.world_size, max_steps, view=self._view)
        motion = self.motion.quarters if self.motion is not None else None
        with torch.no_grad():
            weights = self.weights()
        program = self._new_program(recurrence, motion)
        twin = ExportedWorldModel(program, weights, self.in_type.size, self.view_size)
        return twin.train(self.training)


class ExportedWorldModel(Frozen):
    """Plain-PyTorch twin of :class:`WorldModel` (same ``forward``; quarter turns only)."""

    def __init__(self, program: WorldProgram, weights: Weights, in_channels: int, view_size: Tuple[int, int]) -> None:
        super().__init__(weights)
        self.program = program
        self.in_channels = int(in_channels)
        self.view_size = tuple(view_size)

    def forward(self, views: torch.Tensor, actions: torch.Tensor, num_predictions: int = 1) -> torch.Tensor:
        actions = _check_episode(views, actions, self.in_channels, self.view_size, num_predictions)
        return self.program(self.frozen_weights(), views, actions.to(views.device), num_predictions)
