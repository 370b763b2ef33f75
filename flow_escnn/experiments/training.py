"""Training of Flowing-MNIST next-frame predictors, with exact resume and determinism.

Loss
----
MSE (per pixel) of the ``t_out`` frames predicted **autoregressively** from the first ``t_in``
true frames, exactly what ``test_mse`` measures (the paper's loss). Gradients flow through the
fed-back predictions. With ``one_step_weight = w > 0`` the teacher-forced one-step-ahead
predictions of input frames ``1 .. t_in-1`` (each from the true frames before it only, never
the frame itself) add ``w * MSE``; it is off by default, so training matches the paper.

Optimisation: Adam (``lr``), gradient-norm clipping at ``grad_clip`` (0: off), mini-batches
from :func:`~flow_escnn.experiments.runtime.batch_indices` (a seeded permutation per epoch).

Reproducibility
---------------
Everything runs under :func:`~flow_escnn.experiments.runtime.deterministic_mode` after
seeding every RNG with ``seed``; the data are seeded too. A checkpoint (``checkpoint.pt``:
model, optimizer, step, resolved config, RNG states, validation curve, training time) is
written every ``checkpoint_every`` steps and at the end. Resuming restores all of it and
the batch order is a pure function of ``(seed, step)``, so training 2 steps, resuming and
training 2 more gives bit-identical weights to training 4 steps at once.
"""
from __future__ import annotations

import contextlib
import logging
import signal
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Tuple

import torch
import torch.nn.functional as F

from flow_escnn.experiments.config import ExperimentConfig, build_model
from flow_escnn.experiments.datasets import ExperimentData
from flow_escnn.experiments.distributed import World, distributed_world
from flow_escnn.experiments.evaluation import evaluate_model, mse_per_step, run_metrics
from flow_escnn.experiments.loop import (
    LoopState,
    NonFiniteLossError,
    TrainingInterrupted,
    no_progress,
    optimise,
    stop_on_signals,
)
from flow_escnn.experiments.run_folder import claim_run_folder
from flow_escnn.experiments.runtime import (
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

__all__ = [
    "RESUMABLE",
    "CHECKPOINT_NAME",
    "prediction_loss",
    "batch_loss",
    "build_training",
    "merge_resume_config",
    "train_flowing",
    "load_checkpoint",
    "ProgressFactory",
    "NonFiniteLossError",
    "TrainingInterrupted",
]

logger = logging.getLogger(__name__)

CHECKPOINT_NAME = "checkpoint.pt"

#: Config fields that may change when a run is resumed (the rest must match the checkpoint).
RESUMABLE = (
    "steps", "epochs", "device", "eval_every", "checkpoint_every", "eval_batch_size", "num_test",
    "num_per_velocity", "test_velocities", "horizon_factor", "amp", "gradient_checkpointing", "deterministic",
    "compile",
)

#: ``factory(total=..., initial=..., desc=...)`` -> an object with ``update(n)``, ``set_postfix(**kw)``, ``close()``.
ProgressFactory = Callable[..., Any]


def _saved_step(path: Path) -> Any:
    try:
        return int(load_checkpoint(path)["step"])
    except Exception:  # noqa: BLE001 - only for the message
        return "?"


def prediction_loss(model: torch.nn.Module, x: torch.Tensor, config: ExperimentConfig) -> torch.Tensor:
    """The training loss on a batch of sequences ``x [B, >= t_in + t_out, C, H, W]`` (module docstring)."""
    t_in, t_out = config.t_in, config.t_out
    target = x[:, t_in : t_in + t_out]
    if config.one_step_weight > 0:
        out = model(x[:, :t_in], t_out, include_one_step=True)
        one, pred = out[:, : t_in - 1], out[:, t_in - 1 :]
        return F.mse_loss(pred, target) + config.one_step_weight * F.mse_loss(one, x[:, 1:t_in])
    return F.mse_loss(model(x[:, :t_in], t_out), target)


def build_training(
    c: ExperimentConfig, device: torch.device, world: World, payload: Optional[Dict[str, Any]] = None,
) -> Tuple[torch.nn.Module, torch.nn.Module, torch.optim.Optimizer, Optional[Any]]:
    """``(net, model, optimizer, scaler)`` of a run: the model (``--checkpoint``, ``--compile``) on
    ``device`` with the checkpoint ``payload``'s weights and optimizer state if given, ``model`` =
    ``net`` or its ``DistributedDataParallel`` wrapper, and the fp16 gradient scaler (or None)."""
    net = build_model(c, checkpoint=c.gradient_checkpointing).to(device)
    if c.compile != "off":
        net.compile_engine(mode=c.compile)
    optimizer = torch.optim.Adam(net.parameters(), lr=c.lr)
    if payload is not None:
        net.load_state_dict(payload["model"])
        optimizer.load_state_dict(payload["optimizer"])
    scaler = c.grad_scaler(device)
    model = net if not world.distributed else torch.nn.parallel.DistributedDataParallel(
        net, device_ids=[device.index] if device.type == "cuda" else None, broadcast_buffers=False
    )
    return net, model, optimizer, scaler


def batch_loss(model: torch.nn.Module, x: torch.Tensor, c: ExperimentConfig, device: torch.device) -> torch.Tensor:
    """:func:`prediction_loss` of a batch under the config's autocast (``--amp``)."""
    with c.autocast(device):
        return prediction_loss(model, x, c)


def merge_resume_config(saved: ExperimentConfig, overrides: Dict[str, Any]) -> ExperimentConfig:
    """The config of a resumed run: the checkpoint's, with the :data:`RESUMABLE` fields of ``overrides``.

    ``steps`` / ``epochs`` give the new *total* length of the run. Any other field in
    ``overrides`` must resolve to the checkpoint's value (so repeating the original command
    with ``--resume`` works, e.g. ``--hidden-channels`` against the saved ``hidden_fields``).

    Raises:
        ValueError: naming the fields that differ from the checkpoint and cannot change.
    """
    base = saved.resolve()
    fixed = {k: v for k, v in overrides.items() if k not in RESUMABLE}
    if fixed.get("hidden_channels") is not None:  # resolved configs hold hidden_fields; compare what they resolve to
        fixed.setdefault("hidden_fields", None)
    try:
        given = base.replace(**fixed).resolve()
    except ValueError as exc:
        raise ValueError(f"cannot resume with these options: {exc}") from None
    before, after = _training_fields(base), _training_fields(given)
    differ = sorted(k for k in after if after[k] != before[k])
    if differ:
        detail = ", ".join(f"{k}: checkpoint {before[k]!r}, given {after[k]!r}" for k in differ)
        raise ValueError(f"cannot change {differ} when resuming ({detail}); only {list(RESUMABLE)} may change")
    changes = {k: v for k, v in overrides.items() if k in RESUMABLE}
    if "epochs" in changes and "steps" not in changes:
        changes["steps"] = None
    elif "steps" in changes:
        changes.setdefault("epochs", None)
    return base.replace(**changes).resolve()


def _training_fields(c: ExperimentConfig) -> Dict[str, Any]:
    d = c.to_dict()
    for k in RESUMABLE:
        d.pop(k)
    return d


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
            call while it runs (:func:`~flow_escnn.experiments.run_folder.claim_run_folder`).
        resume: continue from ``out_dir/checkpoint.pt``.
        progress: optional progress-bar factory (see :data:`ProgressFactory`).
        data: optional pre-built :class:`~flow_escnn.experiments.datasets.ExperimentData`
            for this config (to share generated sets between runs).
        overwrite: start afresh in a folder that holds a run, moving its files to
            ``out_dir/replaced-<time>/`` first (without it such a folder is refused).

    Returns:
        The metrics dictionary (also in ``out_dir/metrics.json``); the trained model is in
        ``out_dir/checkpoint.pt``. Under ``torchrun`` (:mod:`~flow_escnn.experiments.distributed`)
        rank 0 returns them and the other ranks an empty dict.

    Raises:
        RunFolderError: ``out_dir`` is in use by another process, or holds a run and neither
            ``resume`` nor ``overwrite`` is given.
    """
    c = config.resolve()
    with distributed_world(resolve_device(c.device).type) as world:
        owner = (claim_run_folder(out_dir, "train", fresh=not resume, replace=overwrite) if world.is_main
                 else contextlib.nullcontext())
        with owner:
            return _train(c, Path(out_dir), resume, progress, data, world)


def _train(
    c: ExperimentConfig, out: Path, resume: bool, progress: Optional[ProgressFactory], data: Optional[ExperimentData],
    world: World,
) -> Dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    ckpt_path = out / CHECKPOINT_NAME
    device = world.device(resolve_device(c.device))
    world.check_batch(c.batch_size)
    payload: Dict[str, Any] = {}
    if resume:
        payload = load_checkpoint(ckpt_path)
        saved = ExperimentConfig.from_dict(payload["config"])
        if _training_fields(saved) != _training_fields(c):
            diff = sorted(k for k, v in _training_fields(c).items() if _training_fields(saved)[k] != v)
            raise ValueError(f"the config differs from the checkpoint's in {diff}; use merge_resume_config")
    if world.is_main:
        write_json(out / "config.json", c.to_dict())

    with stop_on_signals() as stop, deterministic_mode(c.deterministic):
        seed_everything(c.seed)
        net, model, optimizer, scaler = build_training(c, device, world, payload if resume else None)
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
        if data is None or not data.matches(c):
            data = ExperimentData(c)
        # on a GPU the training set moves there once, so no step waits for a host copy
        train = data.train().to(device) if device.type == "cuda" else data.train()
        val = data.val()

        def snapshot() -> Dict[str, Any]:
            return {
                "model": net.state_dict(),
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
            index = world.shard(batch_indices(train.shape[0], c.batch_size, c.seed, step))
            return batch_loss(model, train[index.to(train.device)].to(device), c, device)

        def after_step(s: LoopState) -> None:
            if world.is_main and (s.step % c.eval_every == 0 or s.step == c.steps):
                val_mse = float(mse_per_step(net, val, c.t_in, c.t_out, c.eval_batch_size, device).mean())
                val_curve.append({"step": s.step, "val_mse": val_mse, "train_loss": s.last_loss,
                                  "train_time_s": s.train_time})
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

        factory = (progress or no_progress) if world.is_main else no_progress
        bar = factory(total=c.steps, initial=min(state.step, c.steps), desc=f"train {c.model}")
        model.train()
        try:
            optimise(model, optimizer, state, c.steps, loss_at, c.grad_clip, after_step, bar, stop_note, scaler,
                     sync=world.mean)
        finally:
            bar.close()
        if not world.is_main:
            world.barrier()
            return {}
        final = snapshot()
        metrics = run_metrics(net, c, evaluate_model(net, c, data), final)
    write_json(out / "metrics.json", metrics)
    logger.info("%s: test MSE %.5g (unseen velocities %s)", c.model, metrics["test_mse"], metrics["test_mse_unseen"])
    world.barrier()
    return metrics


def load_model(checkpoint: PathLike, device: Any = "cpu") -> Any:
    """``(model, config, payload)`` of a checkpoint, the model in eval mode on ``device``."""
    payload = load_checkpoint(checkpoint)
    config = ExperimentConfig.from_dict(payload["config"]).resolve()
    model = build_model(config)
    model.load_state_dict(payload["model"])
    return model.to(device).eval(), config, payload
