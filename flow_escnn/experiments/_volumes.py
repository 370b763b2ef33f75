"""3D next-frame prediction on flowing volumes (the task of ``python -m flow_escnn.experiments volumes``).

Sequences of objects moving through a voxel torus (:func:`~flow_escnn.data.generate_volume_sequences`:
``[N, T, 1, D, H, W]``, every object with its own velocity of the set) feed a
:class:`~flow_escnn.models.NextFramePredictor` on an escnn 3D gspace. Training matches the
Flowing-MNIST task's: the MSE of the ``t_out`` frames predicted autoregressively after ``t_in``
given frames, gradients through the fed-back predictions.

Velocity split
--------------
``velocities`` are the training (and validation) velocities, ``test_velocities`` the set of the
*unseen-velocity* test, in the syntax of the flow kind ``translation3d`` (``"R"`` for all of
:math:`[-R, R]^3`, or ``"vx:vy:vz,..."``). Defaults (:data:`DEFAULT_SPLIT`): training on the 9
velocities of :math:`[-1, 1]^3` with :math:`v_z = 0` (motion in the x-y plane only), testing on
the other 18 (every velocity with :math:`v_z = \\pm 1`). A test velocity that is also a training
velocity is left out of the unseen test (the metrics list the velocities it used); by default the
unseen test holds the velocities of :math:`[-R, R]^3` (R the largest training speed) that are not
training velocities, none when the training set covers that cube (``test_mse_unseen`` is then
``null``).

Models (``--model``, :attr:`VolumeExperimentConfig.MODELS`): ``fernn`` is the predictor over the
flow kind's :math:`V` (``--flow-radius`` R: the :math:`(2R+1)^3` translations of
:math:`[-R, R]^3`; by default R covers the training *and* the test velocities, so with the default
split :math:`V` holds all 27 velocities of :math:`[-1, 1]^3`, the unseen ones included); ``grnn`` is
the same predictor with :math:`V = \\{0\\}` (same parameter count). The hidden fields are regular
fields of the group of ``symmetry`` (:data:`VOLUME_SYMMETRIES`: ``trivial`` = ``trivialOnR3``,
``c4z`` = ``rot2dOnR3(4)``, quarter turns about z, ``octa`` = ``octaOnR3``, the 24 rotations of the
cube); the planar ``--group`` does not apply.

Metrics (``metrics.json``)
--------------------------
* ``test_mse``: test sequences with the training velocities, the first ``t_out`` predictions;
* ``test_mse_unseen``: the same for test sequences whose objects move with the unseen velocities;
* ``rollout_mse_per_step`` / ``rollout_mse_per_step_unseen``: per predicted frame, over ``rollout``
  predicted frames (``>= t_out``; the first ``t_out`` average to the two test MSEs);

plus the validation curve and the training record of every task. Seeding, run folders, resume,
signals, checkpoints, ``metrics.csv`` and ``--estimate`` are every task's
(:mod:`flow_escnn.experiments._task`); a checkpoint holds no model record (records cannot hold a 3D
gspace yet): :func:`load_volume_model` rebuilds the model from its config.

The default sizes (one regular ``c4z`` field, its recurrent ``W`` started near the identity
(``identity_init`` 0.8), 400 steps of batch 4 on a :math:`16^3` torus) train a FERNN in about 5.5
minutes on one CPU core; docs/volumes.rst has the commands and what they measured (on the unseen
velocities the FERNN's test MSE is 2.4x lower than the G-RNN's; from escnn's random initialisation
only 1.3x).
"""
from __future__ import annotations

import dataclasses
import functools
import math
import time
from pathlib import Path
from typing import Any, Callable, ClassVar, Dict, List, NamedTuple, Optional, Tuple

import torch
import torch.nn.functional as F

from flow_escnn._compat import gspaces
from flow_escnn._validate import one_of, positive_int
from flow_escnn.data._flowing_volumes import SHAPES, generate_volume_sequences, volume_velocities
from flow_escnn.experiments._datasets import digit_source
from flow_escnn.experiments._evaluation import mse_per_step, training_record
from flow_escnn.experiments._loop import Optimisation, SpeedSwitches, check_training, no_progress
from flow_escnn.experiments._runtime import PathLike, load_run_model, versions
from flow_escnn.experiments._task import ProgressFactory, Task, train_task
from flow_escnn.flows.kinds import VOLUME_FLOW_KINDS, FlowKind, flow_kind
from flow_escnn.models._config import PredictorConfig
from flow_escnn.models._factory import build_predictor

__all__ = [
    "VolumeSymmetry",
    "VOLUME_SYMMETRIES",
    "DEFAULT_SPLIT",
    "DEFAULT_STEPS",
    "VolumeExperimentConfig",
    "VolumeData",
    "VolumeTask",
    "train_volumes",
    "load_volume_model",
    "write_volume_plots",
]

Row3 = Tuple[int, int, int]


class VolumeSymmetry(NamedTuple):
    """A 3D gspace the volume models can be built on: its escnn constructor and one line about it."""

    build: Callable[[], Any]
    summary: str


#: The gspaces of ``--symmetry`` (the registry the parser's choices come from); hidden fields are their regular
#: representation (1, 4 and 24 channels).
VOLUME_SYMMETRIES: Dict[str, VolumeSymmetry] = {
    "trivial": VolumeSymmetry(gspaces.trivialOnR3, "trivialOnR3: no rotations, 1 channel per field"),
    "c4z": VolumeSymmetry(lambda: gspaces.rot2dOnR3(4), "rot2dOnR3(4): quarter turns about z, 4 channels per field"),
    "octa": VolumeSymmetry(gspaces.octaOnR3, "octaOnR3: the 24 rotations of the cube, 24 channels per field (its "
                                             "first build takes seconds)"),
}


@functools.lru_cache(maxsize=None)
def volume_gspace(symmetry: str) -> Any:
    """The gspace of a :data:`VOLUME_SYMMETRIES` name (one per name, shared: gspaces are immutable)."""
    return VOLUME_SYMMETRIES[one_of(symmetry, tuple(VOLUME_SYMMETRIES), "symmetry")].build()


def _cube(radius: int) -> List[Row3]:
    span = range(-radius, radius + 1)
    return [(vx, vy, vz) for vx in span for vy in span for vz in span]


def _spec(rows: List[Row3]) -> str:
    """Rows as a ``vx:vy:vz,...`` list string (the explicit form a resolved config saves)."""
    return ",".join(":".join(str(int(v)) for v in r) for r in rows)


#: Optimisation steps when neither ``steps`` nor ``epochs`` is given (the sizes of docs/volumes.rst).
DEFAULT_STEPS = 400
#: The default split: train on the velocities of [-1, 1]^3 with vz = 0, test on the others (module docstring).
DEFAULT_SPLIT = "train on [-1, 1]^3 with vz = 0 (9 velocities), test on the rest of [-1, 1]^3 (18)"
_DEFAULT_TRAIN = _spec([r for r in _cube(1) if r[2] == 0])

@dataclasses.dataclass
class VolumeExperimentConfig(PredictorConfig, Optimisation, SpeedSwitches):
    """A next-frame run on flowing volumes: the model section of
    :class:`~flow_escnn.models._config.PredictorConfig` on a 3D gspace (``symmetry``) plus the data,
    the velocity split (module docstring) and the optimisation."""

    MODELS: ClassVar[Tuple[str, ...]] = ("fernn", "grnn")
    #: the recurrent W starts near the identity (``identity_init``, plain cells): in a few hundred steps the FERNN
    #: learns to predict through its flows only from there (docs/volumes.rst, "Measured")
    DEFAULT_IDENTITY_INIT: ClassVar[float] = 0.8
    #: Fields that may change when a run is resumed (the rest must match the checkpoint).
    RESUMABLE: ClassVar[Tuple[str, ...]] = (
        "steps", "epochs", "device", "eval_every", "checkpoint_every", "eval_batch_size", "num_test", "rollout",
        "test_velocities", "amp", "gradient_checkpointing", "deterministic", "compile",
    )

    # the model on volumes: a 3D gspace, a volume flow kind, one regular hidden field (hidden_field_count), a light
    # decoder and unbounded outputs (a sigmoid starts every voxel of the mostly empty volumes at 0.5, and in a
    # few hundred steps Adam does not bring it down: val MSE 0.12 after 120 steps against 0.009 without it)
    flow: str = "translation3d"
    symmetry: str = "c4z"
    decoder_layers: int = 1
    output_activation: str = "identity"
    # data
    velocities: Optional[str] = None
    test_velocities: Optional[str] = None
    grid_size: int = 16
    num_objects: int = 2
    shapes: str = "blobs"
    digits: str = "synthetic"
    num_train: int = 512
    num_val: int = 16
    num_test: int = 32
    t_in: int = 5
    t_out: int = 5
    rollout: int = 10
    # optimisation (steps, epochs, grad_clip, seed, device come from Optimisation): the sizes of docs/volumes.rst,
    # a few minutes per model on a CPU core
    lr: float = 5e-3
    eval_every: int = 50
    batch_size: int = 4
    checkpoint_every: int = 100
    eval_batch_size: Optional[int] = None

    # -- on volumes ----------------------------------------------------------------------------------------
    @property
    def kind(self) -> FlowKind:
        """The volume flow kind of ``flow`` (:data:`~flow_escnn.flows.kinds.VOLUME_FLOW_KINDS`)."""
        return flow_kind(self.flow, dimension=3)

    @property
    def gspace(self) -> Any:
        """The 3D gspace of ``symmetry``."""
        return volume_gspace(self.symmetry)

    @property
    def channels_per_field(self) -> int:
        """Channels of one hidden (regular) field: the order of the group of ``symmetry``."""
        return self._memo("channels_per_field", lambda: int(self.gspace.regular_repr.size))

    def hidden_field_count(self) -> int:
        """F: ``hidden_fields``, or ``hidden_channels // channels_per_field``; one regular field when neither is
        given (4 channels on ``c4z``)."""
        if self.hidden_fields is None and self.hidden_channels is None:
            return 1
        return super().hidden_field_count()

    @property
    def steps_per_epoch(self) -> int:
        return max(1, math.ceil(self.num_train / self.batch_size))

    def train_rows(self) -> List[Row3]:
        """The training velocities ``(vx, vy, vz)`` (parsed once per resolved config)."""
        return self._memo("train_rows", lambda: self._rows(self.velocities or _DEFAULT_TRAIN, "velocities"))

    def unseen_rows(self) -> List[Row3]:
        """The velocities of the unseen-velocity test: ``test_velocities`` less the training ones (by default the
        rest of :math:`[-R, R]^3`); empty when there are none."""

        def build() -> List[Row3]:
            seen = set(self.train_rows())
            if self.test_velocities is None:
                radius = max(1, max(max(abs(v) for v in r) for r in seen))
                return [r for r in _cube(radius) if r not in seen]
            rows = [r for r in self._rows(self.test_velocities, "test_velocities") if r not in seen]
            if not rows:
                raise ValueError(f"--test-velocities {self.test_velocities!r} holds training velocities only: the unseen "
                                 "test takes the velocities that are not in --velocities")
            return rows

        return self._memo("unseen_rows", build)

    def _rows(self, spec: str, name: str) -> List[Row3]:
        try:
            rows = self.kind.parse(spec)
            volume_velocities(rows)  # duplicates, non-integers
        except ValueError as exc:
            raise ValueError(f"--{name.replace('_', '-')}: {exc}") from None
        return [tuple(int(v) for v in r[:3]) for r in rows]  # type: ignore[misc]

    def flow_rows(self) -> List[Tuple[int, int, int]]:
        """What a default V covers: the training and the unseen test velocities."""
        return [*self.train_rows(), *self.unseen_rows()]

    def grid_shape(self) -> Tuple[int, int, int]:
        return (self.grid_size,) * 3

    # -- validation and defaults ---------------------------------------------------------------------------
    def option_uses(self) -> Dict[str, Tuple[bool, str]]:
        return {**super().option_uses(),
                "group": (False, "the planar commands (train, world, kth); on volumes --symmetry picks the group"),
                "digits": (self.shapes == "digits", "--shapes digits")}

    def validate(self) -> None:
        """Raise ``ValueError`` naming the option when anything is inconsistent."""
        one_of(self.symmetry, tuple(VOLUME_SYMMETRIES), "symmetry")
        one_of(self.flow, tuple(VOLUME_FLOW_KINDS), "flow")
        if self.group != 1:
            raise ValueError(f"group={self.group!r}: the volume models take their group from --symmetry "
                             f"({', '.join(VOLUME_SYMMETRIES)}), not --group")
        super().validate()
        check_training(self)
        self.check_switches()
        for name in ("grid_size", "num_objects", "num_train", "num_val", "num_test", "t_in", "t_out", "rollout",
                     "checkpoint_every"):
            positive_int(getattr(self, name), name)
        one_of(self.shapes, SHAPES, "shapes")
        if not isinstance(self.digits, str) or not self.digits:
            raise ValueError("digits must be 'synthetic', 'mnist' or a folder path")
        if self.rollout < self.t_out:
            raise ValueError(f"rollout={self.rollout} must be at least t_out={self.t_out} (test_mse averages its first "
                             "t_out predicted frames)")
        if self.steps is not None and self.epochs is not None and self.steps != self.epochs * self.steps_per_epoch:
            raise ValueError("give either steps or epochs, not both")
        self.train_rows()
        self.unseen_rows()

    def fill_defaults(self) -> None:
        if self.velocities is None:
            self.velocities = _DEFAULT_TRAIN
        if self.test_velocities is None:
            unseen = self.unseen_rows()
            self.test_velocities = _spec(unseen) if unseen else None
        if self.eval_batch_size is None:
            self.eval_batch_size = max(self.batch_size, 8)
        if self.steps is None:
            self.steps = DEFAULT_STEPS if self.epochs is None else self.epochs * self.steps_per_epoch
        self.fill_switch_defaults()
        super().fill_defaults()


class VolumeData:
    """The seeded flowing-volume sets of a resolved config (frames ``[N, T, 1, D, H, W]``), generated once each:
    training and validation with the training velocities, the test with the training velocities (``seen``) and
    with the unseen ones (``unseen``). The two test sets share their random draws (split ``"test"``, the same
    seed): the same objects at the same places, only the velocity set they are drawn from differs."""

    def __init__(self, config: VolumeExperimentConfig, source: Optional[Any] = None) -> None:
        self.config = config
        self.source = source if source is not None or config.shapes != "digits" else digit_source(config.digits)
        self._cache: Dict[Tuple[str, int, int], torch.Tensor] = {}

    def _set(self, which: str, num: int, frames: int) -> torch.Tensor:
        key = (which, num, frames)
        if key not in self._cache:
            c = self.config
            rows = c.unseen_rows() if which == "unseen" else c.train_rows()
            split = "test" if which in ("seen", "unseen") else which
            self._cache[key] = generate_volume_sequences(
                num, num_frames=frames, grid_size=c.grid_size, velocities=rows, num_objects=c.num_objects,
                shapes=c.shapes, digits=self.source, split=split, seed=c.seed,
            ).frames
        return self._cache[key]

    def train(self) -> torch.Tensor:
        c = self.config
        return self._set("train", c.num_train, c.t_in + c.t_out)

    def val(self) -> torch.Tensor:
        c = self.config
        return self._set("val", c.num_val, c.t_in + c.t_out)

    def test(self) -> Dict[str, torch.Tensor]:
        """``{"seen": ..., "unseen": ...}`` test sets of ``t_in + rollout`` frames (no ``unseen`` without unseen
        velocities)."""
        c = self.config
        sets = {"seen": self._set("seen", c.num_test, c.t_in + c.rollout)}
        if c.unseen_rows():
            sets["unseen"] = self._set("unseen", c.num_test, c.t_in + c.rollout)
        return sets


class VolumeTask(Task):
    """Next-frame prediction on flowing volumes (:class:`VolumeExperimentConfig`)."""

    command = "volumes"

    def __init__(self, config: VolumeExperimentConfig, data: Optional[VolumeData] = None) -> None:
        super().__init__(config)
        self.data = data if data is not None and data.config == self.config else VolumeData(self.config)

    def build_model(self, checkpoint: bool = False) -> torch.nn.Module:
        return build_predictor(self.config, checkpoint=checkpoint)

    def checkpoint_record(self, model: torch.nn.Module) -> None:
        """None: model records cannot hold a 3D gspace yet, so a volume checkpoint is rebuilt from its config
        (:func:`load_volume_model`), not by :func:`flow_escnn.models.load_model`."""
        return None

    def train_data(self) -> torch.Tensor:
        return self.data.train()

    def val_data(self) -> torch.Tensor:
        return self.data.val()

    def loss(self, model: torch.nn.Module, batch: Any) -> torch.Tensor:
        c = self.config
        return F.mse_loss(model(batch[:, : c.t_in], c.t_out), batch[:, c.t_in : c.t_in + c.t_out])

    def validate(self, model: torch.nn.Module, val: Any, device: torch.device) -> float:
        c = self.config
        return float(mse_per_step(model, val, c.t_in, c.t_out, c.eval_batch_size, device).mean())

    def metrics(self, model: torch.nn.Module, payload: Dict[str, Any],
                progress: Optional[ProgressFactory] = None) -> Dict[str, Any]:
        c = self.config
        device = next(model.parameters()).device
        start = time.perf_counter()
        sets = self.data.test()
        bar = (progress or no_progress)(total=sum(int(s.shape[0]) for s in sets.values()), initial=0,
                                        desc=f"evaluate {c.model}", unit="sequence")
        try:
            curves = {k: mse_per_step(model, s, c.t_in, c.rollout, c.eval_batch_size, device, bar)
                      for k, s in sets.items()}
        finally:
            bar.close()
        unseen = curves.get("unseen")
        key = self.config.kind.key
        return {
            "model": c.model,
            "test_mse": float(curves["seen"][: c.t_out].mean()),
            "test_mse_unseen": None if unseen is None else float(unseen[: c.t_out].mean()),
            "rollout_mse_per_step": [float(v) for v in curves["seen"]],
            "rollout_mse_per_step_unseen": None if unseen is None else [float(v) for v in unseen],
            "velocities_seen": [key(r) for r in c.train_rows()],
            "velocities_unseen": [key(r) for r in c.unseen_rows()],
            "eval_time_s": time.perf_counter() - start,
            **training_record(model, payload),
            "horizon": {"t_in": c.t_in, "t_out": c.t_out, "rollout": c.rollout},
            "config": c.to_dict(),
            "versions": versions(),
        }

    def sized(self, num_train: int, num_val: int) -> "VolumeTask":
        config = self.config.replace(num_train=num_train, num_val=num_val).resolve()
        return VolumeTask(config, VolumeData(config, source=self.data.source))

    def workload(self) -> Dict[str, float]:
        c = self.config
        sets = 2 if c.unseen_rows() else 1
        final = sets * c.num_test * (c.t_in + c.rollout) / (c.t_in + c.t_out)
        return {"final": final, "generated": c.num_train + c.num_val + final}


def train_volumes(config: VolumeExperimentConfig, out_dir: PathLike, resume: bool = False,
                  progress: Optional[ProgressFactory] = None, data: Optional[VolumeData] = None,
                  overwrite: bool = False) -> Dict[str, Any]:
    """Train and evaluate a next-frame model on flowing volumes (:func:`~flow_escnn.experiments._task.train_task`).

    Returns:
        The metrics (also in ``out_dir/metrics.json``): ``test_mse``, ``test_mse_unseen``,
        ``rollout_mse_per_step`` (and its unseen twin), the validation curve and the training record.
    """
    return train_task(VolumeTask(config, data), out_dir, resume, progress, overwrite)


def load_volume_model(checkpoint: PathLike, device: Any = "cpu") -> Any:
    """``(model, config, payload)`` of a ``volumes`` checkpoint, the model in eval mode on ``device``."""
    return load_run_model(checkpoint, VolumeExperimentConfig, build_predictor, device)


def write_volume_plots(out: PathLike, metrics: Dict[str, Any], checkpoint: Optional[PathLike] = None) -> List[Path]:
    """``mse_per_step.png`` (rollout MSE per predicted frame, seen and unseen velocities) and ``val_curve.png``
    of one run's metrics (``checkpoint`` is not read: the metrics hold both curves)."""
    from flow_escnn.experiments._plots import plot_mse_per_step, plot_val_curves

    out = Path(out)
    model = metrics["model"]
    curves = {f"{model}, seen velocities": metrics["rollout_mse_per_step"]}
    if metrics.get("rollout_mse_per_step_unseen") is not None:
        curves[f"{model}, unseen velocities"] = metrics["rollout_mse_per_step_unseen"]
    return [
        plot_mse_per_step(curves, metrics["horizon"]["t_out"], out / "mse_per_step.png",
                          title="Flowing volumes: rollout MSE per predicted frame"),
        plot_val_curves({model: metrics["val_curve"]}, out / "val_curve.png"),
    ]
