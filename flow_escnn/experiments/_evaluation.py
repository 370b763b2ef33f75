"""Evaluation of next-frame models: test MSE, per-step (length) and per-velocity MSE.

Every MSE is the mean squared error per pixel (over sequences, predicted frames, channels and
pixels) of autoregressive predictions from the first ``t_in`` true frames (no true frame is fed
after them).

* ``test_mse``: test set with the *training* velocities, the first ``t_out`` predictions;
* ``mse_per_step``: the same test sequences predicted ``horizon_factor * t_out`` frames ahead,
  one value per predicted frame (length generalisation; the first ``t_out`` average to
  ``test_mse``, since the predictions are autoregressive);
* ``mse_per_velocity``: one set per velocity of the test velocity set, every digit moving with
  that velocity, ``t_out`` predictions (velocity generalisation); ``test_mse_seen`` /
  ``test_mse_unseen`` average it over the velocities in / not in the training set
  (``test_mse_unseen`` is ``null`` when there are none).

Speed: every set is generated once (:class:`~flow_escnn.experiments._datasets.ExperimentData`
caches it) and predicted under ``torch.no_grad`` in batches of ``eval_batch_size`` sequences
(by default the training batch size or 64, whichever is larger); the per-velocity sets are
evaluated as one stream of sequences, so every batch but the last is full. With a progress
factory the evaluation reports lines as training does (``evaluate fernn: sequence 1280/3500 ...``);
:func:`evaluate_checkpoint` without one logs them (shown with ``-v``).
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch

from flow_escnn.experiments._config import ExperimentConfig, build_model, count_parameters
from flow_escnn.experiments._datasets import ExperimentData
from flow_escnn.experiments._loop import no_progress
from flow_escnn.experiments._progress import logged_progress
from flow_escnn.experiments._run_folder import RunFolderError, claim_run_folder
from flow_escnn.experiments._runtime import PathLike, load_checkpoint, resolve_device, versions, write_json
from flow_escnn.models._reference import ReferencePredictor

__all__ = [
    "predict",
    "mse_per_step",
    "mse_per_set",
    "ReferencePredictor",
    "evaluate_model",
    "run_metrics",
    "evaluate_checkpoint",
    "evaluation_folder",
    "EVAL_OVERRIDES",
]

logger = logging.getLogger(__name__)

#: Config fields that only change the evaluation (may differ from the trained config).
EVAL_OVERRIDES = (
    "test_velocities", "num_test", "num_per_velocity", "horizon_factor", "eval_batch_size", "device", "digits",
)


@torch.no_grad()
def predict(model: torch.nn.Module, frames: torch.Tensor, t_in: int, num_predictions: int, batch_size: int,
            device: Any = "cpu") -> torch.Tensor:
    """Autoregressive predictions ``[N, P, C, H, W]`` (on the CPU) from ``frames[:, :t_in]``."""
    was_training = model.training
    model.eval()
    out = []
    try:
        for a in range(0, frames.shape[0], batch_size):
            x = frames[a : a + batch_size, :t_in].to(device)
            out.append(model(x, num_predictions).cpu())
    finally:
        model.train(was_training)
    return torch.cat(out)


@torch.no_grad()
def mse_per_set(model: torch.nn.Module, sets: Sequence[torch.Tensor], t_in: int, horizon: int, batch_size: int,
                device: Any = "cpu", bar: Any = None) -> List[np.ndarray]:
    """Per-predicted-frame MSE ``[horizon]`` (float64) of each set of sequences ``[N_i, T_i, C, H, W]`` (or
    volumes ``[N_i, T_i, C, D, H, W]``) against
    its ``frames[:, t_in : t_in + horizon]``, the sets predicted as one stream in batches of ``batch_size``
    (a batch may span sets: every batch but the last is full). ``bar``: a progress bar, updated by the
    sequences of each batch."""
    for frames in sets:
        if frames.shape[1] < t_in + horizon:
            raise ValueError(f"sequences have {frames.shape[1]} frames, need t_in + horizon = {t_in + horizon}")
    sizes = [int(f.shape[0]) for f in sets]
    bounds = [0, *np.cumsum(sizes).tolist()]  # set i holds stream positions bounds[i] .. bounds[i + 1] - 1
    totals = [torch.zeros(horizon, dtype=torch.float64) for _ in sets]
    was_training = model.training
    model.eval()
    try:
        for a in range(0, bounds[-1], batch_size):
            b = min(a + batch_size, bounds[-1])
            pieces, owners = [], []
            for i, frames in enumerate(sets):
                lo, hi = max(a, bounds[i]), min(b, bounds[i + 1])
                if lo < hi:
                    pieces.append(frames[lo - bounds[i] : hi - bounds[i], : t_in + horizon])
                    owners.append((i, hi - lo))
            x = (pieces[0] if len(pieces) == 1 else torch.cat(pieces)).to(device)
            pred = model(x[:, :t_in], horizon)
            err = (pred - x[:, t_in : t_in + horizon]).double().pow(2).flatten(2).sum(2)  # [B, horizon]
            for (i, _), part in zip(owners, err.split([n for _, n in owners])):
                totals[i] += part.sum(0).cpu()
            if bar is not None:
                bar.update(b - a)
    finally:
        model.train(was_training)
    return [(t / (n * int(np.prod(f.shape[2:])))).numpy() for t, n, f in zip(totals, sizes, sets)]


def mse_per_step(model: torch.nn.Module, frames: torch.Tensor, t_in: int, horizon: int, batch_size: int,
                 device: Any = "cpu", bar: Any = None) -> np.ndarray:
    """Per-predicted-frame MSE ``[horizon]`` against ``frames[:, t_in : t_in + horizon]`` (float64; no autograd)."""
    return mse_per_set(model, [frames], t_in, horizon, batch_size, device, bar)[0]


def evaluate_model(model: torch.nn.Module, config: ExperimentConfig, data: ExperimentData,
                   progress: Optional[Any] = None) -> Dict[str, Any]:
    """Test, per-step and per-velocity MSE of a trained model (see the module docstring).

    ``progress``: a progress-bar factory (:data:`~flow_escnn.experiments._task.ProgressFactory`) that
    counts the evaluated sequences, or None."""
    c = config
    device = next(model.parameters(), torch.empty(0)).device
    start = time.perf_counter()
    test, velocity_sets = data.test(), data.per_velocity()  # generated once (cached in data)
    num = test.shape[0] + sum(int(f.shape[0]) for f in velocity_sets.values())
    logger.info("evaluating %s: %d test sequences (%d predicted frames) and %d velocities x %d sequences (%d frames), "
                "batches of %d", c.model, test.shape[0], c.extended_horizon, len(velocity_sets), c.num_per_velocity,
                c.t_out, c.eval_batch_size)
    bar = (progress or no_progress)(total=num, initial=0, desc=f"evaluate {c.model}", unit="sequence")
    try:
        steps = mse_per_step(model, test, c.t_in, c.extended_horizon, c.eval_batch_size, device, bar)
        curves = mse_per_set(model, list(velocity_sets.values()), c.t_in, c.t_out, c.eval_batch_size, device, bar)
    finally:
        bar.close()
    per_velocity = {key: float(curve.mean()) for key, curve in zip(velocity_sets, curves)}
    seen_keys = data.seen_keys()
    seen = [k for k in per_velocity if k in seen_keys]
    unseen = [k for k in per_velocity if k not in seen_keys]
    return {
        "test_mse": float(steps[: c.t_out].mean()),
        "mse_per_step": [float(v) for v in steps],
        "mse_per_velocity": per_velocity,
        "test_mse_seen": float(np.mean([per_velocity[k] for k in seen])) if seen else None,
        "test_mse_unseen": float(np.mean([per_velocity[k] for k in unseen])) if unseen else None,
        "velocities_seen": seen,
        "velocities_unseen": unseen,
        "eval_time_s": time.perf_counter() - start,
    }


def run_metrics(model: torch.nn.Module, config: ExperimentConfig, evaluation: Dict[str, Any],
                payload: Dict[str, Any]) -> Dict[str, Any]:
    """The content of ``metrics.json``: evaluation + training record (from a checkpoint payload)."""
    return {
        "model": config.model,
        **evaluation,
        **training_record(model, payload),
        "horizon": {"t_in": config.t_in, "t_out": config.t_out, "extended": config.extended_horizon},
        "config": config.to_dict(),
        "versions": versions(),
    }


def training_record(model: torch.nn.Module, payload: Dict[str, Any]) -> Dict[str, Any]:
    """The training half of a ``metrics.json`` (every task's): the validation curve, the final
    validation MSE and training loss, steps, training seconds, parameters and flows of ``model``."""
    curve = list(payload.get("val_curve", []))
    return {
        "val_curve": curve,
        "final_val_mse": curve[-1]["val_mse"] if curve else None,
        "final_train_loss": payload.get("last_loss"),
        "steps": int(payload.get("step", 0)),
        "train_time_s": float(payload.get("train_time_s", 0.0)),
        "num_parameters": count_parameters(model),
        "num_flows": len(model.flows),
    }


def evaluation_folder(checkpoint: PathLike, out: Optional[PathLike] = None) -> Path:
    """Where the evaluation of ``checkpoint`` writes: ``out``, by default ``<checkpoint folder>/evaluation``.

    Raises:
        RunFolderError: when ``out`` is the checkpoint's own folder (its training files, the
            metrics.json with the validation curve, would be replaced).
    """
    if out is not None and not str(out).strip():
        raise RunFolderError("--out is empty; leave it out (the evaluation goes to <checkpoint folder>/evaluation) "
                             "or name a folder")
    folder = Path(checkpoint).parent / "evaluation" if out is None else Path(out)
    if folder.resolve() == Path(checkpoint).parent.resolve():
        raise RunFolderError(
            f"--out {folder} is the folder of {checkpoint}: an evaluation there would replace the training run's "
            f"metrics.json; leave --out out (it writes to {Path(checkpoint).parent / 'evaluation'}) or choose another"
        )
    return folder


def evaluate_checkpoint(checkpoint: PathLike, out: Optional[PathLike] = None,
                        overrides: Optional[Dict[str, Any]] = None, overwrite: bool = False,
                        progress: Optional[Any] = None, data: Optional[ExperimentData] = None) -> Dict[str, Any]:
    """Rebuild the model of a checkpoint, evaluate it and write ``metrics.json``.

    Args:
        checkpoint: a ``checkpoint.pt`` written by :func:`~flow_escnn.experiments._training.train_flowing`.
        out: folder of ``metrics.json`` (default: ``<checkpoint folder>/evaluation``; never the
            checkpoint's own folder), owned by this call while it runs
            (:func:`~flow_escnn.experiments._run_folder.claim_run_folder`).
        overrides: evaluation-only config changes (keys in :data:`EVAL_OVERRIDES`).
        overwrite: move an earlier evaluation in ``out`` to ``out/replaced-<time>/`` (without it,
            a folder holding one is refused).
        progress: a progress-bar factory for the evaluation (default: lines every 30 s to this
            module's logger, shown by the CLI's ``-v``).
        data: the :class:`~flow_escnn.experiments._datasets.ExperimentData` to use when it matches the
            evaluated config (so the caller's plots reuse the generated sets); default: generated here.

    Returns:
        The metrics dictionary.

    Raises:
        RunFolderError: ``out`` is the checkpoint's folder, is in use, or holds an earlier run.
    """
    overrides = dict(overrides or {})
    bad = sorted(set(overrides) - set(EVAL_OVERRIDES))
    if bad:
        raise ValueError(f"cannot change {bad} when evaluating a checkpoint; only {list(EVAL_OVERRIDES)}")
    folder = evaluation_folder(checkpoint, out)
    with claim_run_folder(folder, "evaluate", replace=overwrite):
        return _evaluate_into(checkpoint, folder, overrides, progress or logged_progress(logger), data)


def _evaluate_into(checkpoint: PathLike, folder: Path, overrides: Dict[str, Any], progress: Any,
                   data: Optional[ExperimentData]) -> Dict[str, Any]:
    payload = load_checkpoint(checkpoint)
    config = ExperimentConfig.from_dict(payload["config"]).replace(**overrides).resolve()
    device = resolve_device(config.device)
    model = build_model(config)
    model.load_state_dict(payload["model"])
    model.to(device)
    if data is None or not data.matches(config):
        data = ExperimentData(config)
    metrics = run_metrics(model, config, evaluate_model(model, config, data, progress), payload)
    write_json(folder / "metrics.json", metrics)
    logger.info("metrics written to %s", folder / "metrics.json")
    return metrics
