"""World models on MNIST World (the task of ``python -m flow_escnn.experiments world``).

An agent sees a ``view_size`` window of a ``world_size`` torus of moving digits and acts by known
actions (:mod:`flow_escnn.data._mnist_world`); the model (:class:`~flow_escnn.models.WorldModel`)
predicts the views that follow from the views it was shown and all actions. Training matches the
FloWM paper's: the MSE of ``t_out`` views predicted autoregressively after ``t_in`` given views,
gradients through the fed-back predictions. The evaluation rolls the model out for ``rollout``
views (hundreds, far past the training horizon) and reports the MSE per rollout step
(``rollout_mse_per_step``), ``test_mse`` (its first ``t_out`` steps) and the mean over steps
20-100 (``rollout_mse_20_100``, the stability measure of the demo).

Models (``--model``, ``--no-self-motion``, ``--action-concat``, ``--flow-radius``): ``fernn`` is FloWM
over the velocities :math:`[-R, R]^2`; ``grnn`` has :math:`V = \\{0\\}`; without self-motion the
actions are ignored by the transport; with action-concat they are input planes. Everything else
(seeding, checkpoints, resume, signals, DDP, run folders, ``--estimate``) is every task's
(:mod:`flow_escnn.experiments._task`).
"""
from __future__ import annotations

import dataclasses
import math
import time
from typing import Any, ClassVar, Dict, List, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from flow_escnn._validate import bounded_float, non_negative_int, one_of, optional_positive_int, positive_int
from flow_escnn.data._mnist_world import ACTION_MODES, WORLD_SPLITS, actions_to_steps, generate_world_episodes
from flow_escnn.experiments._config import parse_velocities
from flow_escnn.experiments._datasets import digit_source
from flow_escnn.experiments._evaluation import training_record
from flow_escnn.experiments._loop import Optimisation, SpeedSwitches, check_training, no_progress
from flow_escnn.experiments._runtime import PathLike, load_run_model, versions
from flow_escnn.experiments._task import ProgressFactory, Task, train_task
from flow_escnn.flows.kinds import TRANSLATION
from flow_escnn.models._config import WorldModelConfig
from flow_escnn.models._factory import build_world_model

__all__ = ["WorldExperimentConfig", "WorldData", "WorldTask", "train_world", "load_world_model", "rollout_mse",
           "ACTION_MODES"]

#: Random streams of the splits.
_STREAMS = {"train": 0, "val": 1, "test": 2}


@dataclasses.dataclass
class WorldExperimentConfig(WorldModelConfig, Optimisation, SpeedSwitches):
    """A world-model run on MNIST World: the model section of
    :class:`~flow_escnn.models._config.WorldModelConfig` plus the world, the agent and the optimisation."""

    #: Fields that may change when a run is resumed (the rest must match the checkpoint).
    RESUMABLE: ClassVar[Tuple[str, ...]] = (
        "steps", "epochs", "device", "eval_every", "checkpoint_every", "eval_batch_size", "num_test", "rollout",
        "amp", "gradient_checkpointing", "deterministic", "compile",
    )

    # the map and past the given views: the sizes the world demo measured (docs/world.rst); on a
    # 32x32 world with moves of up to 2 px the 10 given views cover ~40% of it and FloWM plateaued,
    # and "feedback" (FloWM's choice) drifted within 100 views where "carry" stays flat
    world_size: int = 24
    imagine: str = "carry"
    # the world and the agent
    split: str = "dynamic"
    digits: str = "mnist"
    num_digits: int = 3
    digit_size: Optional[int] = 10
    velocities: str = "1"
    actions: str = "random_walk"
    max_step: int = 4
    turn_probability: float = 0.25
    num_train: int = 2000
    num_val: int = 64
    num_test: int = 64
    t_in: int = 10
    t_out: int = 10
    rollout: int = 100
    # optimisation (steps, epochs, lr, grad_clip, seed, device, eval_every come from Optimisation)
    batch_size: int = 16
    checkpoint_every: int = 500
    eval_batch_size: Optional[int] = None

    @property
    def split_options(self) -> Dict[str, Any]:
        """The data options of ``split`` (:data:`flow_escnn.data._mnist_world.WORLD_SPLITS`)."""
        return dict(WORLD_SPLITS[self.split])

    @property
    def steps_per_epoch(self) -> int:
        return max(1, math.ceil(self.num_train / self.batch_size))

    def velocity_rows(self) -> np.ndarray:
        """The digits' velocities as ``(vx, vy, 0)`` rows (parsed once per resolved config)."""
        return self._memo("velocity_rows", lambda: parse_velocities(self.velocities, TRANSLATION))

    def flow_rows(self) -> List[Tuple[int, int, float]]:
        if self.split_options.get("static"):
            return [(0, 0, 0.0)]
        return [(int(r[0]), int(r[1]), 0.0) for r in self.velocity_rows()]

    def grid_shape(self) -> Tuple[int, int]:
        return (self.world_size, self.world_size)

    def validate(self) -> None:
        """Raise ``ValueError`` naming the option when anything is inconsistent."""
        one_of(self.split, tuple(WORLD_SPLITS), "split")
        if "view_size" in self.split_options and self.view_size != self.world_size:
            raise ValueError(f"split {self.split!r} shows the whole world: pass --window-size {self.world_size} "
                             f"(= --world-size), got {self.view_size}")
        super().validate()
        check_training(self)
        self.check_switches()
        for name in ("num_digits", "num_train", "num_val", "num_test", "t_in", "t_out", "rollout", "checkpoint_every"):
            positive_int(getattr(self, name), name)
        optional_positive_int(self.digit_size, "digit_size")
        if self.digit_size is not None and self.digit_size > self.world_size:
            raise ValueError(f"digit_size={self.digit_size} does not fit in a {self.world_size}x{self.world_size} world")
        non_negative_int(self.max_step, "max_step")
        one_of(self.actions, ACTION_MODES, "actions")
        bounded_float(self.turn_probability, "turn_probability", high=1.0)
        if self.steps is not None and self.epochs is not None and self.steps != self.epochs * self.steps_per_epoch:
            raise ValueError("give either steps or epochs, not both")
        if not isinstance(self.digits, str) or not self.digits:
            raise ValueError("digits must be 'mnist', 'synthetic' or a folder path")
        self.velocity_rows()

    def option_uses(self) -> Dict[str, Tuple[bool, str]]:
        return {**super().option_uses(),
                "turn_probability": (self.turns != "none", "runs with turns (--turns 90 or 45)")}

    def fill_defaults(self) -> None:
        if self.eval_batch_size is None:
            self.eval_batch_size = max(self.batch_size, 32)
        if self.steps is None:
            self.steps = 1000 if self.epochs is None else self.epochs * self.steps_per_epoch
        self.fill_switch_defaults()
        super().fill_defaults()


class WorldData:
    """The seeded MNIST-World episodes of a resolved config: views ``[N, T, 1, v, v]`` and actions in the
    model's units ``[N, T, 3]`` (rotation steps of the group), generated once per split."""

    def __init__(self, config: WorldExperimentConfig, source: Optional[Any] = None) -> None:
        self.config = config
        self.source = source if source is not None else digit_source(config.digits)
        self._cache: Dict[Tuple[str, int, int], Tuple[torch.Tensor, torch.Tensor]] = {}

    def episodes(self, split: str, num: int, frames: int, keep_worlds: bool = False) -> Any:
        """:func:`~flow_escnn.data._mnist_world.generate_world_episodes` of a split (the data's own units)."""
        c = self.config
        opts = c.split_options
        return generate_world_episodes(
            self.source.load(split), num, frames, world_size=c.world_size, view_size=c.view_size,
            num_digits=c.num_digits, velocities=[tuple(int(v) for v in r[:2]) for r in c.velocity_rows()],
            static=bool(opts.get("static", False)), ego_motion=bool(opts.get("ego_motion", True)),
            actions=c.actions, max_step=c.max_step, turns=None if c.turns == "none" else int(c.turns),
            turn_probability=c.turn_probability, digit_size=c.digit_size, seed=c.seed, stream=_STREAMS[split],
            keep_worlds=keep_worlds,
        )

    def _split(self, split: str, num: int, frames: int) -> Tuple[torch.Tensor, torch.Tensor]:
        key = (split, num, frames)
        if key not in self._cache:
            batch = self.episodes(split, num, frames)
            self._cache[key] = (batch.views, actions_to_steps(batch.actions, self.config.steps_per_turn))
        return self._cache[key]

    def train(self) -> Tuple[torch.Tensor, torch.Tensor]:
        c = self.config
        return self._split("train", c.num_train, c.t_in + c.t_out)

    def val(self) -> Tuple[torch.Tensor, torch.Tensor]:
        c = self.config
        return self._split("val", c.num_val, c.t_in + c.t_out)

    def test(self) -> Tuple[torch.Tensor, torch.Tensor]:
        c = self.config
        return self._split("test", c.num_test, c.t_in + c.rollout)


@torch.no_grad()
def rollout_mse(model: torch.nn.Module, views: torch.Tensor, actions: torch.Tensor, t_in: int, horizon: int,
                batch_size: int, device: Any = "cpu", bar: Any = None) -> np.ndarray:
    """Per-step MSE ``[horizon]`` of the model's rollout from ``views[:, :t_in]`` and all actions (float64;
    ``bar``: a progress bar, updated by the episodes of each batch)."""
    was = model.training
    model.eval()
    total = torch.zeros(horizon, dtype=torch.float64)
    try:
        for a in range(0, views.shape[0], batch_size):
            v = views[a : a + batch_size].to(device)
            act = actions[a : a + batch_size, : t_in + horizon].to(device)
            pred = model(v[:, :t_in], act, horizon)
            total += (pred - v[:, t_in : t_in + horizon]).double().pow(2).sum(dim=(0, 2, 3, 4)).cpu()
            if bar is not None:
                bar.update(v.shape[0])
    finally:
        model.train(was)
    return (total / (views.shape[0] * int(np.prod(views.shape[2:])))).numpy()


class WorldTask(Task):
    """World-model training on MNIST World (:class:`WorldExperimentConfig`)."""

    command = "world"

    def __init__(self, config: WorldExperimentConfig, data: Optional[WorldData] = None) -> None:
        super().__init__(config)
        self.data = data if data is not None and data.config == self.config else WorldData(self.config)

    def build_model(self, checkpoint: bool = False) -> torch.nn.Module:
        return build_world_model(self.config, checkpoint=checkpoint)

    def train_data(self) -> Tuple[torch.Tensor, torch.Tensor]:
        return self.data.train()

    def val_data(self) -> Tuple[torch.Tensor, torch.Tensor]:
        return self.data.val()

    def loss(self, model: torch.nn.Module, batch: Any) -> torch.Tensor:
        views, actions = batch
        c = self.config
        pred = model(views[:, : c.t_in], actions, c.t_out)
        return F.mse_loss(pred, views[:, c.t_in : c.t_in + c.t_out])

    def validate(self, model: torch.nn.Module, val: Any, device: torch.device) -> float:
        c = self.config
        return float(rollout_mse(model, val[0], val[1], c.t_in, c.t_out, c.eval_batch_size, device).mean())

    def metrics(self, model: torch.nn.Module, payload: Dict[str, Any],
                progress: Optional[ProgressFactory] = None) -> Dict[str, Any]:
        c = self.config
        device = next(model.parameters()).device
        start = time.perf_counter()
        views, actions = self.data.test()
        bar = (progress or no_progress)(total=views.shape[0], initial=0, desc=f"evaluate {c.model}", unit="episode")
        try:
            steps = rollout_mse(model, views, actions, c.t_in, c.rollout, c.eval_batch_size, device, bar)
        finally:
            bar.close()
        late = steps[19:100] if c.rollout >= 20 else steps
        return {
            "model": c.model,
            "self_motion": c.self_motion,
            "action_input": c.action_input,
            "test_mse": float(steps[: c.t_out].mean()),
            "rollout_mse_per_step": [float(v) for v in steps],
            "rollout_mse_20_100": float(late.mean()),
            "rollout_mse_last": float(steps[-1]),
            "eval_time_s": time.perf_counter() - start,
            **training_record(model, payload),
            "horizon": {"t_in": c.t_in, "t_out": c.t_out, "rollout": c.rollout},
            "config": c.to_dict(),
            "versions": versions(),
        }


    def sized(self, num_train: int, num_val: int) -> "WorldTask":
        config = self.config.replace(num_train=num_train, num_val=num_val).resolve()
        return WorldTask(config, WorldData(config, source=self.data.source))

    def workload(self) -> Dict[str, float]:
        c = self.config
        final = c.num_test * (c.t_in + c.rollout) / (c.t_in + c.t_out)
        return {"final": final, "generated": c.num_train + c.num_val + final}


def train_world(config: WorldExperimentConfig, out_dir: PathLike, resume: bool = False,
                progress: Optional[ProgressFactory] = None, data: Optional[WorldData] = None,
                overwrite: bool = False) -> Dict[str, Any]:
    """Train and evaluate a world model on MNIST World (:func:`~flow_escnn.experiments._task.train_task`).

    Returns:
        The metrics (also in ``out_dir/metrics.json``): ``rollout_mse_per_step``, ``test_mse``,
        ``rollout_mse_20_100``, the validation curve and the training record.
    """
    return train_task(WorldTask(config, data), out_dir, resume, progress, overwrite)


def load_world_model(checkpoint: PathLike, device: Any = "cpu") -> Any:
    """``(model, config, payload)`` of a ``world`` checkpoint, the model in eval mode on ``device``."""
    return load_run_model(checkpoint, WorldExperimentConfig, build_world_model, device)
