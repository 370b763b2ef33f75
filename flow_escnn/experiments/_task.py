"""One training run, whatever the task: seeding, data, the optimisation loop, validation, checkpoints,
resume, signals, data parallelism and the final metrics.

A task (:class:`Task`) says what is particular to an experiment: its resolved config, its model, its
training and validation data, its loss on a batch and its metrics. :func:`train_task` does the rest,
identically for every task (Flowing MNIST: :mod:`~flow_escnn.experiments._training`; world models:
:mod:`~flow_escnn.experiments._world`).

Reproducibility
---------------
Everything runs under :func:`~flow_escnn.experiments._runtime.deterministic_mode` after seeding every
RNG with ``seed``; the data are seeded too. A checkpoint (``checkpoint.pt``: model, optimizer, step,
resolved config, RNG states, validation curve, training time) is written every
``checkpoint_every`` steps and at the end. Resuming restores all of it and the batch order is a
pure function of ``(seed, step)``, so training 2 steps, resuming and training 2 more gives
bit-identical weights to training 4 steps at once.

Live metrics
------------
Every evaluation appends a row to ``metrics.csv`` in the run folder at once (step, wall time,
training time, train loss, validation metric, learning rate, evaluation time;
:class:`~flow_escnn.experiments._progress.MetricsLog`), and with ``tensorboard`` in the config
(``--tensorboard``) writes the same scalars to ``<run>/tensorboard``. A resumed run continues the
file, dropping rows past the checkpoint's step. Under ``torchrun`` rank 0 writes them.
"""
from __future__ import annotations

import contextlib
import logging
import signal
import time
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Tuple, Union

import torch

from flow_escnn.experiments._distributed import World, distributed_world
from flow_escnn.experiments._loop import (
    SWITCH_FIELDS,
    LoopState,
    TrainingInterrupted,
    no_progress,
    optimise,
    stop_on_signals,
)
from flow_escnn.experiments._progress import MetricsLog, check_tensorboard
from flow_escnn.experiments._run_folder import claim_run_folder
from flow_escnn.experiments._runtime import (
    PathLike,
    batch_indices,
    deterministic_mode,
    load_checkpoint,
    resolve_device,
    rng_state,
    save_checkpoint,
    seed_everything,
    set_rng_state,
    versions,
    write_json,
)
from flow_escnn.models import model_record

__all__ = ["Task", "Batch", "CHECKPOINT_NAME", "ProgressFactory", "train_task", "build_training",
           "merge_resume_config", "training_fields"]

logger = logging.getLogger(__name__)

CHECKPOINT_NAME = "checkpoint.pt"

#: ``factory(total=..., initial=..., desc=...)`` -> an object with ``update(n)``, ``set_postfix(**kw)``, ``close()``;
#: evaluations also pass ``unit="sequence"`` (what they count).
ProgressFactory = Callable[..., Any]

#: A task's data: one tensor, or a tuple of tensors with the same first (sample) axis.
Batch = Union[torch.Tensor, Tuple[torch.Tensor, ...]]


def _take(data: Batch, index: torch.Tensor, device: torch.device) -> Batch:
    if isinstance(data, torch.Tensor):
        return data[index.to(data.device)].to(device)
    return tuple(d[index.to(d.device)].to(device) for d in data)


def _num(data: Batch) -> int:
    return (data if isinstance(data, torch.Tensor) else data[0]).shape[0]


class Task:
    """What :func:`train_task` needs from an experiment (subclasses fill it in).

    Attributes:
        command: the CLI command that runs it (``"train"``, ``"world"``): the run folder's owner and
            the progress label.
        config: the resolved config: a model section, the speed switches, and the optimisation
            fields ``seed``, ``device``, ``steps``, ``batch_size``, ``lr``, ``grad_clip``,
            ``eval_every``, ``checkpoint_every``, ``eval_batch_size``; its class lists the fields
            that may change on resume in ``RESUMABLE`` (the speed switches may always change).
        val_metric: the name of :meth:`validate`'s figure (a column of ``metrics.csv``).

    Raises:
        TensorBoardMissingError: the config asks for ``tensorboard`` and it is not installed
            (a ``ValueError``: the CLI's one-line error).
    """

    command: str = ""
    val_metric: str = "val_mse"

    def __init__(self, config: Any) -> None:
        self.config = config.resolve()
        if getattr(self.config, "tensorboard", False):
            check_tensorboard()  # before any work

    def build_model(self, checkpoint: bool = False) -> torch.nn.Module:
        """A fresh model of the config (``checkpoint``: gradient checkpointing)."""
        raise NotImplementedError

    def train_data(self) -> Batch:
        """The training samples (indexed by :func:`~flow_escnn.experiments._runtime.batch_indices`)."""
        raise NotImplementedError

    def val_data(self) -> Batch:
        """The validation samples."""
        raise NotImplementedError

    def loss(self, model: torch.nn.Module, batch: Batch) -> torch.Tensor:
        """The training loss of a batch (on the model's device)."""
        raise NotImplementedError

    def validate(self, model: torch.nn.Module, val: Batch, device: torch.device) -> float:
        """The validation MSE (no autograd)."""
        raise NotImplementedError

    def metrics(self, model: torch.nn.Module, payload: Dict[str, Any],
                progress: Optional["ProgressFactory"] = None) -> Dict[str, Any]:
        """``metrics.json`` of the trained model and its final checkpoint ``payload`` (``progress``: a
        progress-bar factory for the final evaluation, or None)."""
        raise NotImplementedError

    def checkpoint_record(self, model: torch.nn.Module) -> Optional[Dict[str, Any]]:
        """What ``checkpoint.pt`` stores for :func:`flow_escnn.models.load_model` to rebuild ``model`` (None: only
        the task's own loader rebuilds it, from the config)."""
        return model_record(model, weights=False)

    # -- what ``--estimate`` needs ----------------------------------------------------------------------------
    def sized(self, num_train: int, num_val: int) -> "Task":
        """The same task with ``num_train`` training and ``num_val`` validation samples, sharing this task's
        digit source (its data not generated yet)."""
        raise NotImplementedError

    def workload(self) -> Dict[str, float]:
        """The run's evaluation and data-generation work in validation samples: ``{"final": samples of the
        final evaluation, "generated": all samples the run generates}``."""
        raise NotImplementedError


def _resumable(config: Any) -> tuple:
    """The fields of ``config`` that a resumed run may change: its class's ``RESUMABLE`` and the switches."""
    return tuple(dict.fromkeys((*type(config).RESUMABLE, *SWITCH_FIELDS)))


def training_fields(config: Any) -> Dict[str, Any]:
    """The config's fields that a resumed run must keep (all but its class's ``RESUMABLE`` and the
    :data:`~flow_escnn.experiments._loop.SWITCH_FIELDS`)."""
    d = config.to_dict()
    for k in _resumable(config):
        d.pop(k, None)
    return d


def merge_resume_config(saved: Any, overrides: Dict[str, Any]) -> Any:
    """The config of a resumed run: the checkpoint's, with the ``RESUMABLE`` fields of ``overrides``.

    ``steps`` / ``epochs`` give the new *total* length of the run. Any other field in
    ``overrides`` must resolve to the checkpoint's value (so repeating the original command
    with ``--resume`` works, e.g. ``--hidden-channels`` against the saved ``hidden_fields``).

    Raises:
        ValueError: naming the fields that differ from the checkpoint and cannot change.
    """
    resumable = _resumable(saved)
    base = saved.resolve()
    fixed = {k: v for k, v in overrides.items() if k not in resumable}
    if fixed.get("hidden_channels") is not None:  # resolved configs hold hidden_fields; compare what they resolve to
        fixed.setdefault("hidden_fields", None)
    try:
        given = base.replace(**fixed).resolve()
    except ValueError as exc:
        raise ValueError(f"cannot resume with these options: {exc}") from None
    before, after = training_fields(base), training_fields(given)
    differ = sorted(k for k in after if after[k] != before[k])
    if differ:
        detail = ", ".join(f"{k}: checkpoint {before[k]!r}, given {after[k]!r}" for k in differ)
        raise ValueError(f"cannot change {differ} when resuming ({detail}); only {list(resumable)} may change")
    changes = {k: v for k, v in overrides.items() if k in resumable}
    if "epochs" in changes and "steps" not in changes:
        changes["steps"] = None
    elif "steps" in changes:
        changes.setdefault("epochs", None)
    return base.replace(**changes).resolve()


def build_training(
    task: Task, device: torch.device, world: World, payload: Optional[Dict[str, Any]] = None,
    compile: Optional[str] = None,
) -> Tuple[torch.nn.Module, torch.nn.Module, torch.optim.Optimizer, Optional[Any]]:
    """``(net, model, optimizer, scaler)`` of a run: the task's model (``--grad-checkpoint``, ``--compile``) on
    ``device`` with the checkpoint ``payload``'s weights and optimizer state if given, ``model`` =
    ``net`` or its ``DistributedDataParallel`` wrapper, and the fp16 gradient scaler (or None).
    ``compile``: a compile mode in place of the config's (``"off"``: eager; ``--estimate`` times both)."""
    c = task.config
    mode = c.compile if compile is None else compile
    net = task.build_model(checkpoint=c.gradient_checkpointing).to(device)
    if mode != "off":
        net.compile_engine(mode=mode)
    optimizer = torch.optim.Adam(net.parameters(), lr=c.lr)
    if payload is not None:
        net.load_state_dict(payload["model"])
        optimizer.load_state_dict(payload["optimizer"])
    scaler = c.grad_scaler(device)
    model = net if not world.distributed else torch.nn.parallel.DistributedDataParallel(
        net, device_ids=[device.index] if device.type == "cuda" else None, broadcast_buffers=False
    )
    return net, model, optimizer, scaler


def train_task(
    task: Task,
    out_dir: PathLike,
    resume: bool = False,
    progress: Optional[ProgressFactory] = None,
    overwrite: bool = False,
) -> Dict[str, Any]:
    """Train a task's model, evaluate it and write ``metrics.json`` (and ``config.json``, ``checkpoint.pt``).

    Args:
        task: the experiment (:class:`Task`).
        out_dir: run folder, owned by this call while it runs
            (:func:`~flow_escnn.experiments._run_folder.claim_run_folder`).
        resume: continue from ``out_dir/checkpoint.pt``; the task's config must match the
            checkpoint's except for its ``RESUMABLE`` fields (build it with :func:`merge_resume_config`).
        progress: optional progress-bar factory (see :data:`ProgressFactory`).
        overwrite: start afresh in a folder that holds a run, moving its files to
            ``out_dir/replaced-<time>/`` first (without it such a folder is refused).

    Returns:
        The metrics dictionary (also in ``out_dir/metrics.json``). Under ``torchrun``
        (:mod:`~flow_escnn.experiments._distributed`) rank 0 returns them and the other ranks an
        empty dict.

    Raises:
        RunFolderError: ``out_dir`` is in use by another process, or holds a run and neither
            ``resume`` nor ``overwrite`` is given.
    """
    with distributed_world(resolve_device(task.config.device).type) as world:
        owner = (claim_run_folder(out_dir, task.command, fresh=not resume, replace=overwrite) if world.is_main
                 else contextlib.nullcontext())
        with owner:
            return _train(task, Path(out_dir), resume, progress, world)


def _saved_step(path: Path) -> Any:
    try:
        return int(load_checkpoint(path)["step"])
    except Exception:  # noqa: BLE001 - only for the message
        return "?"


def _train(task: Task, out: Path, resume: bool, progress: Optional[ProgressFactory], world: World) -> Dict[str, Any]:
    c = task.config
    out.mkdir(parents=True, exist_ok=True)
    ckpt_path = out / CHECKPOINT_NAME
    device = world.device(resolve_device(c.device))
    world.check_batch(c.batch_size)
    payload: Dict[str, Any] = {}
    if resume:
        payload = load_checkpoint(ckpt_path)
        saved = type(c).from_dict(payload["config"])
        if training_fields(saved) != training_fields(c):
            diff = sorted(k for k, v in training_fields(c).items() if training_fields(saved).get(k) != v)
            raise ValueError(f"the config differs from the checkpoint's in {diff}; use merge_resume_config")
    if world.is_main:
        write_json(out / "config.json", c.to_dict())

    with stop_on_signals() as stop, deterministic_mode(c.deterministic):
        seed_everything(c.seed)
        net, model, optimizer, scaler = build_training(task, device, world, payload if resume else None)
        state = LoopState()
        val_curve = []
        if resume:
            state = LoopState(int(payload["step"]), float(payload["train_time_s"]), payload.get("last_loss"))
            val_curve = list(payload["val_curve"])
            set_rng_state(payload["rng"])
            if scaler is not None and payload.get("scaler"):
                scaler.load_state_dict(payload["scaler"])
            logger.info("resumed %s at step %d of %d", ckpt_path, state.step, c.steps)
            if state.step > c.steps:
                logger.warning("the checkpoint is at step %d, past the requested %d steps: no training",
                               state.step, c.steps)
        train = task.train_data()
        if device.type == "cuda":  # on a GPU the training set moves there once, so no step waits for a host copy
            train = _take(train, torch.arange(_num(train)), device)
        val = task.val_data()

        def snapshot() -> Dict[str, Any]:
            return {
                "model": net.state_dict(),
                "model_record": task.checkpoint_record(net),  # what flow_escnn.models.load_model rebuilds
                "optimizer": optimizer.state_dict(),
                "step": state.step,
                "config": c.to_dict(),
                "rng": rng_state(),
                "val_curve": val_curve,
                "train_time_s": state.train_time,
                "last_loss": state.last_loss,
                "scaler": None if scaler is None else scaler.state_dict(),
                "versions": versions(),
            }

        def loss_at(step: int) -> torch.Tensor:
            index = world.shard(batch_indices(_num(train), c.batch_size, c.seed, step))
            with c.autocast(device):
                return task.loss(model, _take(train, index, device))

        def after_step(s: LoopState) -> None:
            if world.is_main and (s.step % c.eval_every == 0 or s.step == c.steps):
                start = time.perf_counter()
                val_mse = float(task.validate(net, val, device))
                val_curve.append({"step": s.step, "val_mse": val_mse, "train_loss": s.last_loss,
                                  "train_time_s": s.train_time})
                if live is not None:
                    live.write(s.step, s.last_loss, val_mse, optimizer.param_groups[0]["lr"], s.train_time,
                               time.perf_counter() - start)
                bar.set_postfix(loss=f"{s.last_loss:.4g}", val=f"{val_mse:.4g}")
                logger.info("step %d: train loss %.5g, val MSE %.5g", s.step, s.last_loss, val_mse)
            stopping = world.any(stop.signum is not None, device)
            if world.is_main and (s.step % c.checkpoint_every == 0 or s.step == c.steps or stopping):
                save_checkpoint(ckpt_path, snapshot())
            if stopping and s.step < c.steps:
                world.barrier()  # the checkpoint is on disk before anyone reports it
                raise TrainingInterrupted(stop.signum or signal.SIGTERM, s.step, c.steps, ckpt_path)

        def stop_note() -> str:
            if ckpt_path.exists():
                return f"The last good checkpoint (step {_saved_step(ckpt_path)}) is kept at {ckpt_path}. "
            return "No checkpoint was written yet. "

        live: Optional[MetricsLog] = None
        if world.is_main:  # metrics.csv (and TensorBoard): continued on resume, rows past the checkpoint dropped
            live = MetricsLog(out, task.val_metric, resume_step=state.step if resume else None, history=val_curve,
                              tensorboard=bool(getattr(c, "tensorboard", False)))
        factory = (progress or no_progress) if world.is_main else no_progress
        bar = factory(total=c.steps, initial=min(state.step, c.steps), desc=f"{task.command} {c.model}")
        model.train()
        try:
            optimise(model, optimizer, state, c.steps, loss_at, c.grad_clip, after_step, bar, stop_note, scaler,
                     sync=world.mean)
        finally:
            bar.close()
            if live is not None:
                live.close()
        if not world.is_main:
            world.barrier()
            return {}
        metrics = task.metrics(net, snapshot(), progress=progress)
    write_json(out / "metrics.json", metrics)
    logger.info("%s: test MSE %.5g", c.model, metrics.get("test_mse", float("nan")))
    world.barrier()
    return metrics

