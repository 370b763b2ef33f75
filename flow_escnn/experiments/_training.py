"""Training of Flowing-MNIST next-frame predictors (the task of ``python -m flow_escnn.experiments train``).

Loss
----
MSE (per pixel) of the ``t_out`` frames predicted **autoregressively** from the first ``t_in``
true frames, exactly what ``test_mse`` measures (the paper's loss). Gradients flow through the
fed-back predictions. With ``one_step_weight = w > 0`` the teacher-forced one-step-ahead
predictions of input frames ``1 .. t_in-1`` (each from the true frames before it only, never
the frame itself) add ``w * MSE``; it is off by default, so training matches the paper.

Optimisation (Adam, gradient-norm clipping, seeded batches), checkpoints, exact resume, signals
and data parallelism are every task's: :func:`~flow_escnn.experiments._task.train_task`.
"""
from __future__ import annotations

from typing import Any, Dict, Optional

import torch
import torch.nn.functional as F

from flow_escnn.experiments._config import ExperimentConfig, build_model
from flow_escnn.experiments._datasets import ExperimentData
from flow_escnn.experiments._evaluation import evaluate_model, mse_per_step, run_metrics
from flow_escnn.experiments._loop import NonFiniteLossError, TrainingInterrupted
from flow_escnn.experiments._runtime import PathLike, load_checkpoint, load_run_model
from flow_escnn.experiments._task import (
    CHECKPOINT_NAME,
    ProgressFactory,
    Task,
    build_training,
    merge_resume_config,
    train_task,
)

__all__ = [
    "RESUMABLE",
    "CHECKPOINT_NAME",
    "FlowingTask",
    "prediction_loss",
    "batch_loss",
    "build_training",
    "merge_resume_config",
    "train_flowing",
    "load_checkpoint",
    "load_model",
    "ProgressFactory",
    "NonFiniteLossError",
    "TrainingInterrupted",
]

#: Config fields that may change when a run is resumed (the rest must match the checkpoint).
RESUMABLE = ExperimentConfig.RESUMABLE


def prediction_loss(model: torch.nn.Module, x: torch.Tensor, config: ExperimentConfig) -> torch.Tensor:
    """The training loss on a batch of sequences ``x [B, >= t_in + t_out, C, H, W]`` (module docstring)."""
    t_in, t_out = config.t_in, config.t_out
    target = x[:, t_in : t_in + t_out]
    if config.one_step_weight > 0:
        out = model(x[:, :t_in], t_out, include_one_step=True)
        one, pred = out[:, : t_in - 1], out[:, t_in - 1 :]
        return F.mse_loss(pred, target) + config.one_step_weight * F.mse_loss(one, x[:, 1:t_in])
    return F.mse_loss(model(x[:, :t_in], t_out), target)


def batch_loss(model: torch.nn.Module, x: torch.Tensor, c: ExperimentConfig, device: torch.device) -> torch.Tensor:
    """:func:`prediction_loss` of a batch under the config's autocast (``--amp``)."""
    with c.autocast(device):
        return prediction_loss(model, x, c)


class FlowingTask(Task):
    """Next-frame prediction on Flowing MNIST (:class:`~flow_escnn.experiments.ExperimentConfig`).

    Args:
        config: the experiment config (resolved here).
        data: optional pre-built :class:`~flow_escnn.experiments._datasets.ExperimentData` for this
            config (to share generated sets between runs).
    """

    command = "train"

    def __init__(self, config: ExperimentConfig, data: Optional[ExperimentData] = None) -> None:
        super().__init__(config)
        self.data = data if data is not None and data.matches(self.config) else ExperimentData(self.config)

    def build_model(self, checkpoint: bool = False) -> torch.nn.Module:
        return build_model(self.config, checkpoint=checkpoint)

    def train_data(self) -> torch.Tensor:
        return self.data.train()

    def val_data(self) -> torch.Tensor:
        return self.data.val()

    def loss(self, model: torch.nn.Module, batch: Any) -> torch.Tensor:
        return prediction_loss(model, batch, self.config)

    def validate(self, model: torch.nn.Module, val: Any, device: torch.device) -> float:
        c = self.config
        return float(mse_per_step(model, val, c.t_in, c.t_out, c.eval_batch_size, device).mean())

    def metrics(self, model: torch.nn.Module, payload: Dict[str, Any],
                progress: Optional[ProgressFactory] = None) -> Dict[str, Any]:
        return run_metrics(model, self.config, evaluate_model(model, self.config, self.data, progress), payload)

    def sized(self, num_train: int, num_val: int) -> "FlowingTask":
        config = self.config.replace(num_train=num_train, num_val=num_val).resolve()
        return FlowingTask(config, ExperimentData(config, source=self.data.source))

    def workload(self) -> Dict[str, float]:
        c = self.config
        frames_ratio = (c.t_in + c.extended_horizon) / (c.t_in + c.t_out)  # the test set's longer horizon
        final = c.num_test * frames_ratio + c.num_per_velocity * len(c.test_velocity_array())
        return {"final": final, "generated": c.num_train + c.num_val + final}


def train_flowing(
    config: ExperimentConfig,
    out_dir: PathLike,
    resume: bool = False,
    progress: Optional[ProgressFactory] = None,
    data: Optional[ExperimentData] = None,
    overwrite: bool = False,
) -> Dict[str, Any]:
    """Train a next-frame model on Flowing MNIST, evaluate it and write ``metrics.json``.

    Args:
        config: the experiment config (resolved here). When resuming, build it with
            :func:`merge_resume_config`; its non-resumable fields must match the checkpoint.
        out_dir: run folder (``checkpoint.pt``, ``config.json``, ``metrics.json``), owned by this
            call while it runs (:func:`~flow_escnn.experiments._run_folder.claim_run_folder`).
        resume: continue from ``out_dir/checkpoint.pt``.
        progress: optional progress-bar factory (see :data:`ProgressFactory`).
        data: optional pre-built :class:`~flow_escnn.experiments._datasets.ExperimentData`
            for this config (to share generated sets between runs).
        overwrite: start afresh in a folder that holds a run, moving its files to
            ``out_dir/replaced-<time>/`` first (without it such a folder is refused).

    Returns:
        The metrics dictionary (also in ``out_dir/metrics.json``); the trained model is in
        ``out_dir/checkpoint.pt``. Under ``torchrun`` (:mod:`~flow_escnn.experiments._distributed`)
        rank 0 returns them and the other ranks an empty dict.

    Raises:
        RunFolderError: ``out_dir`` is in use by another process, or holds a run and neither
            ``resume`` nor ``overwrite`` is given.
    """
    return train_task(FlowingTask(config, data), out_dir, resume, progress, overwrite)


def load_model(checkpoint: PathLike, device: Any = "cpu") -> Any:
    """``(model, config, payload)`` of a checkpoint, the model in eval mode on ``device``."""
    return load_run_model(checkpoint, ExperimentConfig, build_model, device)
