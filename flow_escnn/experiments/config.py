"""Experiment configuration, the velocity-set syntax, and the next-frame model factory.

Velocity sets (``train_velocities`` / ``test_velocities``)
----------------------------------------------------------
A data velocity is ``(vx, vy, degrees_per_frame)``: integer pixels per frame with x along
the last array axis and **y up**, angles counter-clockwise about the grid centre (the
package convention). The string syntax, per ``flow``::

    flow          range form                           explicit list (needs a comma or a colon)
    translation   R: all of [-R, R]^2                  vx:vy,vx:vy,...  e.g. 1:0,0:1,-1:0
    rotation      M or M/S: -M..M degrees in steps S   a,b,... degrees, e.g. -30,0,30 (one angle: 30,)
                  (S defaults to 10)
    both          R@M or R@M/S: product of the two     vx:vy:deg,...

So ``--train-velocities 1 --test-velocities 2`` trains on the 9 velocities with
:math:`\\max(|v_x|,|v_y|)\\le 1` and tests on the 25 of :math:`[-2,2]^2` (16 of them unseen).

Model flow set :math:`V`
------------------------
``flow_radius`` R gives ``FlowSet.translations(gspace, R)``; ``flow_steps`` (``K`` for
``-K..K`` or a list ``k1,k2,...``) gives ``FlowSet.rotations(gspace, steps)`` in steps of
:math:`360/N` degrees per frame (``group`` = N); ``flow="both"`` takes their product. By
default V covers the *training* velocities: R is their largest :math:`\\max(|v_x|,|v_y|)`,
and the steps are the nearest multiples of :math:`360/N` of their angles. The G-RNN always
uses ``FlowSet.identity``.

Models
------
* ``fernn``: :class:`~flow_escnn.models.NextFramePredictor` over V (``cell`` fernn/gru/lstm);
* ``grnn``: the same predictor over ``FlowSet.identity`` (the G-RNN, same parameter count);
* ``grnn_plus``: the same predictor with ``cell="grnn_plus"`` (the G-RNN+ of
  :mod:`flow_escnn.nn.baselines`: learned per-velocity kernels in place of the transport,
  initialised to the shifts when V's translations fit the kernel).

Hidden width: ``hidden_fields`` F fields of the regular representation of :math:`C_N`
(``F * N`` channels; trivial fields when ``group == 1``), or ``hidden_channels`` C, which
must then be a multiple of N. The decoder uses the hidden field type in its hidden layers.
"""
from __future__ import annotations

import dataclasses
import logging
import math
from typing import Any, Dict, List, Optional, Tuple, Union

import numpy as np
import torch

from flow_escnn._compat import enn, gspaces
from flow_escnn._validate import non_negative_int, one_of, optional_positive_int, positive_int
from flow_escnn.data.velocities import velocity_array
from flow_escnn.flows.flowset import FlowSet
from flow_escnn.flows.kinds import FlowKind, flow_kind, parse_steps
from flow_escnn.models import NONLINEARITIES, OUTPUT_ACTIVATIONS, VELOCITY_POOLS, NextFramePredictor

__all__ = [
    "MODELS",
    "ExperimentConfig",
    "parse_velocities",
    "parse_flow_steps",
    "velocity_key",
    "make_gspace",
    "field_types",
    "model_flows",
    "build_model",
    "count_parameters",
]

logger = logging.getLogger(__name__)

MODELS = ("fernn", "grnn", "grnn_plus")
NONLINEARITY_NAMES = tuple(NONLINEARITIES)
#: Recurrent cells of the ``fernn`` / ``grnn`` models (``grnn_plus`` has its own).
CELLS = ("fernn", "gru", "lstm")

def parse_velocities(spec: str, flow: Union[str, FlowKind]) -> np.ndarray:
    """Read a velocity-set string (syntax in the module docstring and each kind's ``syntax``).

    Args:
        spec: e.g. ``"1"``, ``"1:0,0:1"``, ``"40/10"``, ``"-30,0,30"``, ``"1@20"``.
        flow: a flow kind or its name (``"translation"``, ``"rotation"``, ``"both"``).

    Returns:
        float64 ``[M, 3]`` rows ``(vx, vy, degrees_per_frame)`` in the order of the
        :mod:`flow_escnn.data.velocities` helpers (or the given order for a list).

    Raises:
        ValueError: with the expected syntax, on anything malformed.
    """
    kind = flow_kind(flow)
    rows = kind.parse(spec)
    try:
        return velocity_array(rows, kind)
    except ValueError as exc:
        raise kind.bad(spec, str(exc)) from None


def parse_flow_steps(spec: str) -> List[int]:
    """Rotation steps of the model's V: ``"K"`` -> ``[-K, ..., K]``; ``"k1,k2,..."`` -> that list.

    Raises:
        ValueError: on anything that is not integers.
    """
    return parse_steps(spec)


def velocity_key(row: Any, flow: Union[str, FlowKind]) -> str:
    """A readable key of one data velocity ``(vx, vy, deg)``: ``"(1,-1)"``, ``"30deg"``, ``"(1,0)@30deg"``."""
    return flow_kind(flow).key(row)


def velocity_speed(row: Any, flow: Union[str, FlowKind]) -> float:
    """A scalar speed for plots: :math:`\\max(|v_x|,|v_y|)` (translating kinds) or :math:`|\\omega|` in degrees."""
    return flow_kind(flow).speed(row)


def _or_default(value: Optional[str], default: str) -> str:
    """``value`` unless it is None (an empty string is not "no value": it fails to parse, loudly)."""
    return default if value is None else value


# -- the config ------------------------------------------------------------------------------------------
@dataclasses.dataclass
class ExperimentConfig:
    """Everything that defines a Flowing-MNIST next-frame experiment (saved in checkpoints).

    ``None`` fields get their defaults in :meth:`resolve` (which every entry point calls), so
    a saved config is fully explicit. See the module docstring for the velocity syntax and V.
    """

    # model
    model: str = "fernn"
    cell: str = "fernn"
    group: int = 1
    hidden_channels: Optional[int] = None
    hidden_fields: Optional[int] = None
    num_layers: int = 1
    decoder_layers: int = 2
    output_activation: str = "sigmoid"  # frames are in [0, 1]; bounds what is fed back
    nonlinearity: str = "relu"  # of the plain (fernn) cell; tanh keeps long rollouts bounded
    kernel_size: int = 3
    pool: str = "max"
    flow_radius: Optional[int] = None
    flow_steps: Optional[str] = None
    velocity_kernel_size: int = 5
    # data
    flow: str = "translation"
    train_velocities: Optional[str] = None
    test_velocities: Optional[str] = None
    digits: str = "mnist"
    grid_size: int = 28
    digit_size: Optional[int] = None
    num_digits: int = 2
    num_train: int = 10000
    num_val: int = 500
    num_test: int = 1000
    num_per_velocity: int = 100
    t_in: int = 10
    t_out: int = 10
    horizon_factor: int = 3
    # optimisation
    steps: Optional[int] = None
    epochs: Optional[int] = None
    batch_size: int = 32
    lr: float = 1e-3
    grad_clip: float = 1.0
    one_step_weight: float = 0.0
    seed: int = 0
    device: str = "cpu"
    eval_every: int = 100
    checkpoint_every: int = 500
    eval_batch_size: Optional[int] = None

    # -- (de)serialisation ------------------------------------------------------------------------------
    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> "ExperimentConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown experiment config keys {unknown}")
        return cls(**data)

    def replace(self, **changes: Any) -> "ExperimentConfig":
        return dataclasses.replace(self, **changes)

    # -- derived quantities ------------------------------------------------------------------------------
    @property
    def steps_per_epoch(self) -> int:
        return max(1, math.ceil(self.num_train / self.batch_size))

    @property
    def extended_horizon(self) -> int:
        return self.horizon_factor * self.t_out

    @property
    def kind(self) -> FlowKind:
        """The :class:`~flow_escnn.flows.kinds.FlowKind` of ``flow``."""
        return flow_kind(self.flow)

    def train_velocity_array(self) -> np.ndarray:
        return parse_velocities(_or_default(self.train_velocities, self.kind.default_specs[0]), self.kind)

    def test_velocity_array(self) -> np.ndarray:
        return parse_velocities(_or_default(self.test_velocities, self.kind.default_specs[1]), self.kind)

    def hidden_field_count(self) -> int:
        if self.hidden_fields is not None:
            return self.hidden_fields
        channels = 16 if self.hidden_channels is None else self.hidden_channels
        return max(1, channels // self.group)

    # -- validation and defaults ---------------------------------------------------------------------------
    def validate(self) -> None:
        """Raise ``ValueError`` naming the option when anything is inconsistent."""
        one_of(self.model, MODELS, "model")
        one_of(self.cell, CELLS, "cell")
        if self.model == "grnn_plus" and self.cell != "fernn":
            raise ValueError("model 'grnn_plus' has only the plain (non-gated) cell; drop --cell or use --cell fernn")
        if self.model == "grnn_plus" and self.num_layers != 1:
            raise ValueError("model 'grnn_plus' supports num_layers=1 only")
        flow_kind(self.flow)
        one_of(self.pool, VELOCITY_POOLS, "pool")
        positive = (
            "group", "num_layers", "kernel_size", "velocity_kernel_size", "grid_size", "num_digits", "num_train",
            "num_val", "num_test", "num_per_velocity", "t_in", "t_out", "horizon_factor", "batch_size",
            "eval_every", "checkpoint_every",
        )
        for name in positive:
            positive_int(getattr(self, name), name)
        for name in ("hidden_channels", "hidden_fields", "steps", "epochs", "digit_size", "eval_batch_size"):
            optional_positive_int(getattr(self, name), name)
        non_negative_int(self.decoder_layers, "decoder_layers")
        one_of(self.nonlinearity, NONLINEARITY_NAMES, "nonlinearity")
        if self.nonlinearity != "relu" and self.cell != "fernn":
            raise ValueError("--nonlinearity applies to the plain cell (--cell fernn); gru and lstm use sigmoid/tanh gates")
        one_of(self.output_activation, OUTPUT_ACTIVATIONS, "output_activation")
        if self.kernel_size % 2 == 0 or self.velocity_kernel_size % 2 == 0:
            raise ValueError("kernel_size and velocity_kernel_size must be odd")
        if self.hidden_channels is not None and self.hidden_fields is not None:
            raise ValueError("give either hidden_channels or hidden_fields, not both")
        if self.hidden_channels is not None and self.hidden_channels % self.group:
            raise ValueError(
                f"hidden_channels={self.hidden_channels} is not a multiple of the group order N={self.group} "
                f"(regular fields of C_{self.group} have {self.group} channels each); use hidden_fields instead"
            )
        if self.steps is not None and self.epochs is not None and self.steps != self.epochs * self.steps_per_epoch:
            raise ValueError("give either steps or epochs, not both")
        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr must be a positive number, got {self.lr!r}")
        if not (isinstance(self.grad_clip, (int, float)) and self.grad_clip >= 0):
            raise ValueError(f"grad_clip must be >= 0 (0 disables clipping), got {self.grad_clip!r}")
        if not (isinstance(self.one_step_weight, (int, float)) and self.one_step_weight >= 0):
            raise ValueError(f"one_step_weight must be >= 0, got {self.one_step_weight!r}")
        if self.one_step_weight > 0 and self.model == "grnn_plus":
            raise ValueError("one_step_weight > 0 is not implemented for model 'grnn_plus'")
        if self.one_step_weight > 0 and self.t_in < 2:
            raise ValueError("one_step_weight > 0 needs t_in >= 2")
        non_negative_int(self.seed, "seed")
        if not (self.device == "cpu" or self.device.startswith("cuda")):
            raise ValueError(f"device must be 'cpu' or 'cuda' (or 'cuda:K'), got {self.device!r}")
        if not isinstance(self.digits, str) or not self.digits:
            raise ValueError("digits must be 'mnist', 'synthetic' or a folder path")
        if self.digit_size is not None and self.digit_size > self.grid_size:
            raise ValueError(f"digit_size={self.digit_size} does not fit on a {self.grid_size}x{self.grid_size} grid")
        self.train_velocity_array()
        self.test_velocity_array()
        if self.flow_radius is not None:
            non_negative_int(self.flow_radius, "flow_radius")
        if self.flow_steps is not None:
            parse_flow_steps(self.flow_steps)
        if self.model == "grnn" and (self.flow_radius is not None or self.flow_steps is not None):
            raise ValueError("the G-RNN has no flow set (V = {0}); flow_radius / flow_steps apply to fernn and grnn_plus")
        if self.model != "grnn" and self.kind.rotates and self.group < 2:
            raise ValueError(
                f"a {self.model} over rotation flows needs a rotation group: pass group N >= 2 (rot2dOnR2(N)); "
                "its V then holds rotations by multiples of 360/N degrees per frame"
            )
        if self.model == "grnn_plus" and self.kind.rotates:
            raise ValueError("model 'grnn_plus' (learned per-velocity kernels) is implemented for translation flows only")

    def resolve(self) -> "ExperimentConfig":
        """Validate and return a copy with every ``None`` default filled in."""
        self.validate()
        c = dataclasses.replace(self)
        c.train_velocities = _or_default(c.train_velocities, c.kind.default_specs[0])
        c.test_velocities = _or_default(c.test_velocities, c.kind.default_specs[1])
        c.hidden_fields = c.hidden_field_count()
        c.hidden_channels = None
        if c.digit_size is None and c.grid_size < 28:
            c.digit_size = c.grid_size  # keep MNIST's digit-to-grid ratio on smaller grids
        if c.eval_batch_size is None:
            c.eval_batch_size = max(c.batch_size, 64)
        if c.steps is None:
            c.steps = 2000 if c.epochs is None else c.epochs * c.steps_per_epoch
        if c.model != "grnn":
            train = c.train_velocity_array()
            if c.flow_radius is None:
                c.flow_radius = c.kind.default_radius(train)
            if c.flow_steps is None and c.kind.rotates:
                ks, exact = c.kind.default_steps(train, c.group)
                if not exact:
                    logger.warning(
                        "training angles %s are not all multiples of 360/%d = %g degrees: V uses the nearest steps %s",
                        sorted(set(train[:, 2].tolist())), c.group, 360.0 / c.group, ks,
                    )
                c.flow_steps = ",".join(str(k) for k in ks) + ("," if len(ks) == 1 else "")
        c.validate()
        if c.model != "grnn":  # an aliased V would train duplicate slices without a word
            try:
                model_flows(c, make_gspace(c.group)).check_distinct_on((c.grid_size, c.grid_size))
            except ValueError as exc:
                raise ValueError(f"{exc} (the model's V comes from --flow-radius / --flow-steps, by default "
                                 "from the training velocities)") from None
        return c


# -- model factory ------------------------------------------------------------------------------------------
def make_gspace(group: int) -> Any:
    """``trivialOnR2()`` for ``group == 1``, else ``rot2dOnR2(group)``."""
    positive_int(group, "group")
    return gspaces.trivialOnR2() if group == 1 else gspaces.rot2dOnR2(group)


def field_types(config: ExperimentConfig) -> Tuple[Any, Any]:
    """``(in_type, hidden_type)``: one trivial (grayscale) field in; F regular (or trivial) fields hidden."""
    gs = make_gspace(config.group)
    in_type = enn.FieldType(gs, [gs.trivial_repr])
    hidden_type = enn.FieldType(gs, [gs.regular_repr] * config.hidden_field_count())
    return in_type, hidden_type


def model_flows(config: ExperimentConfig, gspace: Any) -> FlowSet:
    """The model's V for a *resolved* config (identity for the G-RNN)."""
    if config.model == "grnn":
        return FlowSet.identity(gspace)
    steps = None if config.flow_steps is None else parse_steps(config.flow_steps)
    return config.kind.model_flows(gspace, config.flow_radius, steps)


def build_model(config: ExperimentConfig) -> torch.nn.Module:
    """The next-frame model of a config: ``forward(x [B, T_in, C, H, W], P) -> [B, P, C, H, W]``.

    Every model also has ``encoder`` (returning the lifted hidden sequence
    ``[B, T, |V|, C, H, W]``) and ``flows`` (its V), which the plots use.
    """
    c = config.resolve()
    in_type, hidden_type = field_types(c)
    flows = model_flows(c, in_type.gspace)
    if c.model == "grnn_plus":
        return NextFramePredictor(
            in_type, hidden_type, flows, decoder_layers=c.decoder_layers, pool=c.pool, cell="grnn_plus",
            kernel_size=c.kernel_size, output_activation=c.output_activation, nonlinearity=c.nonlinearity,
            velocity_kernel_size=c.velocity_kernel_size, init="auto",
        )
    return NextFramePredictor(
        in_type, hidden_type, flows, decoder_layers=c.decoder_layers, pool=c.pool, cell=c.cell,
        num_layers=c.num_layers, kernel_size=c.kernel_size, output_activation=c.output_activation,
        **({"nonlinearity": c.nonlinearity} if c.cell == "fernn" else {}),
    )


def count_parameters(model: torch.nn.Module) -> int:
    return int(sum(p.numel() for p in model.parameters() if p.requires_grad))
