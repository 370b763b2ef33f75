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

Models and their :math:`V`
--------------------------
:class:`ExperimentConfig` is a :class:`~flow_escnn.models._config.PredictorConfig` (the model
section: names, widths, the model's V) plus the data and optimisation fields below; the model
is built by :func:`~flow_escnn.models._factory.build_predictor`. By default V covers the
*training* velocities: R is their largest :math:`\\max(|v_x|,|v_y|)`, and the steps are the
nearest multiples of :math:`360/N` of their angles. The G-RNN always uses ``FlowSet.identity``.

Models
------
* ``fernn``: :class:`~flow_escnn.models.NextFramePredictor` over V (``cell`` fernn/gru/lstm);
* ``grnn``: the same predictor over ``FlowSet.identity`` (the G-RNN, same parameter count);
* ``grnn_plus``: the same predictor with ``cell="grnn_plus"`` (the G-RNN+ of
  :mod:`flow_escnn.nn._baselines`: learned per-velocity kernels in place of the transport,
  initialised to the shifts when V's translations fit the kernel).

Hidden width: ``hidden_fields`` F fields of the regular representation of :math:`C_N`
(``F * N`` channels; trivial fields when ``group == 1``), or ``hidden_channels`` C, which
must then be a multiple of N. The decoder uses the hidden field type in its hidden layers.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, ClassVar, List, Optional, Tuple, Union

import numpy as np

from flow_escnn._validate import bounded_float, optional_positive_int, positive_int
from flow_escnn.data._velocities import velocity_array
from flow_escnn.flows.kinds import FlowKind, flow_kind, parse_steps
from flow_escnn.experiments._loop import Optimisation, SpeedSwitches, check_training
from flow_escnn.models._config import PredictorConfig
from flow_escnn.models._factory import build_predictor, count_parameters
from flow_escnn.models import CELL_NONLINEARITIES, CELLS

__all__ = [
    "MODELS",
    "CELLS",
    "ExperimentConfig",
    "parse_velocities",
    "parse_flow_steps",
    "velocity_key",
    "velocity_speed",
    "build_model",
    "count_parameters",
]

MODELS = PredictorConfig.MODELS
NONLINEARITY_NAMES = CELL_NONLINEARITIES
#: The next-frame model of a config (:func:`flow_escnn.models._factory.build_predictor`).
build_model = build_predictor


def parse_velocities(spec: str, flow: Union[str, FlowKind]) -> np.ndarray:
    """Read a velocity-set string (syntax in the module docstring and each kind's ``syntax``).

    Args:
        spec: e.g. ``"1"``, ``"1:0,0:1"``, ``"40/10"``, ``"-30,0,30"``, ``"1@20"``.
        flow: a flow kind or its name (``"translation"``, ``"rotation"``, ``"both"``).

    Returns:
        float64 ``[M, 3]`` rows ``(vx, vy, degrees_per_frame)`` in the order of the
        :mod:`flow_escnn.data._velocities` helpers (or the given order for a list).

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


def _frozen(a: np.ndarray) -> np.ndarray:
    a.setflags(write=False)
    return a


# -- the config ------------------------------------------------------------------------------------------
@dataclasses.dataclass
class ExperimentConfig(PredictorConfig, Optimisation, SpeedSwitches):
    """Everything that defines a Flowing-MNIST next-frame experiment (saved in checkpoints).

    The model section is :class:`~flow_escnn.models._config.PredictorConfig`'s. ``None`` fields
    get their defaults in :meth:`resolve` (which every entry point calls), so a saved config is
    fully explicit. See the module docstring for the velocity syntax and V.
    """

    #: Fields that may change when a run is resumed (the rest must match the checkpoint).
    RESUMABLE: ClassVar[Tuple[str, ...]] = (
        "steps", "epochs", "device", "eval_every", "checkpoint_every", "eval_batch_size", "num_test",
        "num_per_velocity", "test_velocities", "horizon_factor", "amp", "gradient_checkpointing", "deterministic",
        "compile",
    )

    # data
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
    # optimisation (steps, epochs, lr, grad_clip, seed, device, eval_every come from Optimisation)
    batch_size: int = 32
    one_step_weight: float = 0.0
    checkpoint_every: int = 500
    eval_batch_size: Optional[int] = None
    # the speed switches (amp, gradient_checkpointing, deterministic, compile) come from SpeedSwitches

    # -- derived quantities ------------------------------------------------------------------------------
    @property
    def steps_per_epoch(self) -> int:
        return max(1, math.ceil(self.num_train / self.batch_size))

    @property
    def extended_horizon(self) -> int:
        return self.horizon_factor * self.t_out

    def train_velocity_array(self) -> np.ndarray:
        """The training velocities as rows (parsed once per resolved config; read-only)."""
        return self._memo("train_rows", lambda: _frozen(
            parse_velocities(_or_default(self.train_velocities, self.kind.default_sets[0]), self.kind)))

    def test_velocity_array(self) -> np.ndarray:
        """The test velocities as rows (parsed once per resolved config; read-only)."""
        return self._memo("test_rows", lambda: _frozen(
            parse_velocities(_or_default(self.test_velocities, self.kind.default_sets[1]), self.kind)))

    def flow_rows(self) -> List[Tuple[int, int, float]]:
        return [(int(r[0]), int(r[1]), float(r[2])) for r in self.train_velocity_array()]

    def grid_shape(self) -> Tuple[int, int]:
        return (self.grid_size, self.grid_size)

    # -- validation and defaults ---------------------------------------------------------------------------
    def validate(self) -> None:
        """Raise ``ValueError`` naming the option when anything is inconsistent."""
        super().validate()
        check_training(self)
        for name in ("grid_size", "num_digits", "num_train", "num_val", "num_test", "num_per_velocity", "t_in",
                     "t_out", "horizon_factor", "checkpoint_every"):
            positive_int(getattr(self, name), name)
        optional_positive_int(self.digit_size, "digit_size")
        if self.steps is not None and self.epochs is not None and self.steps != self.epochs * self.steps_per_epoch:
            raise ValueError("give either steps or epochs, not both")
        bounded_float(self.one_step_weight, "one_step_weight")
        if self.one_step_weight > 0 and self.model == "grnn_plus":
            raise ValueError("one_step_weight > 0 is not implemented for model 'grnn_plus'")
        if self.one_step_weight > 0 and self.t_in < 2:
            raise ValueError("one_step_weight > 0 needs t_in >= 2")
        self.check_switches()
        if not isinstance(self.digits, str) or not self.digits:
            raise ValueError("digits must be 'mnist', 'synthetic' or a folder path")
        if self.digit_size is not None and self.digit_size > self.grid_size:
            raise ValueError(f"digit_size={self.digit_size} does not fit on a {self.grid_size}x{self.grid_size} grid")
        self.train_velocity_array()
        self.test_velocity_array()

    def fill_defaults(self) -> None:
        self.train_velocities = _or_default(self.train_velocities, self.kind.default_sets[0])
        self.test_velocities = _or_default(self.test_velocities, self.kind.default_sets[1])
        if self.digit_size is None and self.grid_size < 28:
            self.digit_size = self.grid_size  # keep MNIST's digit-to-grid ratio on smaller grids
        if self.eval_batch_size is None:
            self.eval_batch_size = max(self.batch_size, 64)
        if self.steps is None:
            self.steps = 2000 if self.epochs is None else self.epochs * self.steps_per_epoch
        self.fill_switch_defaults()
        super().fill_defaults()
