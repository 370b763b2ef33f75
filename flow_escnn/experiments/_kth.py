"""Moving-KTH action classification: FERNN, G-RNN, G-RNN+ and a 3D-CNN on a local KTH folder.

Data: :class:`~flow_escnn.data.MovingKTH` (grayscale clips of ``num_frames`` frames at
``stride``, resized to ``size x size``, one imposed integer velocity per clip with
wrap-around), split **by person** (1-16 train, 17-20 validation, 21-25 test). Nothing is
downloaded: ``root`` holds the KTH ``.avi`` videos as distributed (decoded once with
imageio-ffmpeg, the extra ``kth``, into the frame cache ``cache_dir``, by default
``root/.flow_escnn_cache``) or pre-extracted clips (layout in :mod:`flow_escnn.data._kth`).

Models (all circular padding, since the moved clips wrap around the torus):

* ``fernn``: :class:`~flow_escnn.models.SequenceClassifier` over
  ``FlowSet.translations(gspace, flow_radius)`` (max over V, max over each field's fiber,
  mean over pixels of the last state, linear head);
* ``grnn``: the same over ``FlowSet.identity`` (same parameter count);
* ``grnn_plus``: the same classifier with ``cell="grnn_plus"``
  (:class:`~flow_escnn.nn._baselines.GRNNPlus`: learned per-velocity kernels; not invariant);
* ``conv3d``: :class:`~flow_escnn.nn._baselines.Conv3DClassifier` (``conv3d_channels``).

Training: cross-entropy, Adam, gradient clipping, seeded batch order; the speed switches of
:class:`~flow_escnn.experiments._loop.SpeedSwitches` (``amp``, ``gradient_checkpointing``,
``deterministic``: on for the CPU by default, ``compile``) as in ``train``. As in the paper,
each training clip is flipped horizontally with probability 1/2 (``flip``; seeded, so a run
repeats exactly; validation and test clips are never flipped), and the model evaluated on the
test split is the one of the best validation accuracy (``select="best_val"``; the earliest
evaluation on ties; ``select="last"``: the final model): validation accuracy every ``eval_every``
steps and after the last step. ``metrics.json`` holds ``test_accuracy`` and ``val_accuracy`` of
the selected model, ``selected_step``, the last model's ``last_val_accuracy`` and
``last_test_accuracy``, the validation curve, the clip counts per split, the training time, the
config and versions; ``checkpoint.pt`` the selected model (its ``step`` is ``selected_step``).
"""
from __future__ import annotations

import copy
import dataclasses
import logging
import math
import time
import zlib
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from flow_escnn._validate import optional_positive_int, positive_int
from flow_escnn.data._kth import KTH_ACTIONS, MovingKTH, check_kth_decoder
from flow_escnn.experiments._config import parse_velocities
from flow_escnn.experiments._loop import LoopState, Optimisation, SpeedSwitches, check_training, no_progress, optimise
from flow_escnn.experiments._progress import MetricsLog, check_tensorboard
from flow_escnn.experiments._run_folder import claim_run_folder
from flow_escnn.experiments._runtime import (
    PathLike,
    batch_indices,
    deterministic_mode,
    resolve_device,
    save_checkpoint,
    seed_everything,
    versions,
    write_json,
)
from flow_escnn.flows.kinds import TRANSLATION
from flow_escnn.models._config import ClassifierConfig
from flow_escnn.models._factory import build_classifier, count_parameters
from flow_escnn.models._saving import model_record

__all__ = ["KTH_MODELS", "KTH_SELECTIONS", "KTHConfig", "build_kth_model", "flip_batch", "train_kth"]

logger = logging.getLogger(__name__)

KTH_MODELS = ClassifierConfig.MODELS
#: Which model the test split evaluates: the best on validation (the paper) or the last.
KTH_SELECTIONS = ("best_val", "last")


@dataclasses.dataclass
class KTHConfig(ClassifierConfig, Optimisation, SpeedSwitches):
    """A moving-KTH classification run (see the module docstring): the model section of
    :class:`~flow_escnn.models._config.ClassifierConfig` (translation flows only) plus data and
    optimisation fields. V covers the training velocities unless ``flow_radius`` is given.
    ``cache_dir``: the decoded-frame cache of ``.avi`` videos (None: ``root/.flow_escnn_cache``);
    ``flip``: random horizontal flips of training clips; ``select``: one of :data:`KTH_SELECTIONS`."""

    root: str = ""
    cache_dir: Optional[str] = None
    flip: bool = True
    select: str = "best_val"
    train_velocities: str = "2"
    test_velocities: Optional[str] = None
    num_frames: int = 16
    stride: int = 2
    size: int = 32
    hop: Optional[int] = None
    batch_size: int = 16
    eval_batch_size: int = 64

    def flow_rows(self) -> List[Tuple[int, int, float]]:
        return TRANSLATION.parse(self.train_velocities)

    def grid_shape(self) -> Tuple[int, int]:
        return (self.size, self.size)

    def validate(self) -> None:
        """Raise ``ValueError`` naming the option when anything is inconsistent."""
        if not self.root:
            raise ValueError("give the local KTH folder (root); nothing is downloaded")
        super().validate()
        if self.kind is not TRANSLATION:
            raise ValueError(f"moving KTH moves clips by whole-pixel translations: flow must be 'translation', "
                             f"got {self.flow!r}")
        check_training(self)
        self.check_switches()
        if self.model == "conv3d" and self.gradient_checkpointing:
            raise ValueError("--grad-checkpoint recomputes a recurrence in the backward pass; model 'conv3d' has none")
        for name in ("num_frames", "stride", "size"):
            positive_int(getattr(self, name), name)
        if not isinstance(self.flip, bool):
            raise ValueError(f"flip must be True or False, got {self.flip!r}")
        if self.select not in KTH_SELECTIONS:
            raise ValueError(f"select must be one of {KTH_SELECTIONS}, got {self.select!r}")
        optional_positive_int(self.hop, "hop")
        if self.steps is not None and self.epochs is not None:
            raise ValueError("give either steps or epochs, not both")
        parse_velocities(self.train_velocities, TRANSLATION)
        if self.test_velocities is not None:
            parse_velocities(self.test_velocities, TRANSLATION)

    def fill_defaults(self) -> None:
        super().fill_defaults()
        self.fill_switch_defaults()


def build_kth_model(config: KTHConfig) -> torch.nn.Module:
    """The classifier of a KTH config (six classes, one grayscale input channel), with its
    gradient checkpointing and ``compile`` switches applied."""
    model = build_classifier(config, len(KTH_ACTIONS), checkpoint=config.gradient_checkpointing)
    if config.compile != "off" and hasattr(model, "compile_engine"):
        model.compile_engine(mode=config.compile)
    return model


def flip_batch(clips: torch.Tensor, seed: int, step: int) -> torch.Tensor:
    """The paper's augmentation: each clip ``[B, T, C, H, W]`` of the batch of (0-based) step ``step``
    mirrored left-right with probability 1/2. A pure function of ``(seed, step)`` and the batch
    size, so a run repeats exactly. A flipped clip that moved with ``(vx, vy)`` moves with
    ``(-vx, vy)``."""
    gen = torch.Generator().manual_seed(zlib.crc32(f"kth-flip/{int(seed)}/{int(step)}".encode()))
    flip = torch.rand(clips.shape[0], generator=gen) < 0.5
    return torch.where(flip.view(-1, *([1] * (clips.dim() - 1))).to(clips.device), clips.flip(-1), clips)


@torch.no_grad()
def accuracy(model: torch.nn.Module, clips: torch.Tensor, labels: torch.Tensor, batch_size: int, device: Any) -> float:
    """Fraction of correctly classified clips."""
    was = model.training
    model.eval()
    correct = 0
    try:
        for a in range(0, clips.shape[0], batch_size):
            logits = model(clips[a : a + batch_size].to(device))
            correct += int((logits.argmax(-1).cpu() == labels[a : a + batch_size]).sum())
    finally:
        model.train(was)
    return correct / max(1, clips.shape[0])


def train_kth(config: KTHConfig, out_dir: PathLike, progress: Optional[Any] = None,
              overwrite: bool = False) -> Dict[str, Any]:
    """Train and evaluate one KTH classifier; writes ``metrics.json`` and ``checkpoint.pt`` to ``out_dir``.

    ``out_dir`` is owned by this call while it runs; one that holds a run is refused unless
    ``overwrite`` moves its files to ``out_dir/replaced-<time>/``
    (:func:`~flow_escnn.experiments._run_folder.claim_run_folder`).
    """
    c = config.resolve()
    check_kth_decoder(c.root, c.cache_dir)  # before any work: .avi videos to decode need imageio-ffmpeg
    if c.tensorboard:
        check_tensorboard()  # before any work too
    with claim_run_folder(out_dir, "kth", replace=overwrite) as out:
        return _train_kth(c, out, progress)


def _train_kth(c: KTHConfig, out: Path, progress: Optional[Any]) -> Dict[str, Any]:
    device = resolve_device(c.device)
    train_v = [r[:2] for r in TRANSLATION.parse(c.train_velocities)]
    test_v = None if c.test_velocities is None else [r[:2] for r in TRANSLATION.parse(c.test_velocities)]
    kw = dict(num_frames=c.num_frames, stride=c.stride, size=c.size, velocities=train_v, test_velocities=test_v,
              hop=c.hop, seed=c.seed, cache_dir=c.cache_dir)
    if c.flip and {(vx, vy) for vx, vy in train_v} != {(-vx, vy) for vx, vy in train_v}:
        logger.warning("--flip mirrors training clips, which turns a velocity (vx, vy) into (-vx, vy): the training "
                       "velocities %s are not closed under that; pass --no-flip to train on them only", train_v)
    splits = {s: MovingKTH(c.root, s, **kw) for s in ("train", "val", "test")}
    for ds in splits.values():
        logger.info("loaded %r", ds)
    train = splits["train"]
    steps = c.steps if c.steps is not None else (c.epochs or 10) * max(1, math.ceil(len(train) / c.batch_size))
    write_json(out / "config.json", c.to_dict())
    with deterministic_mode(c.deterministic):
        seed_everything(c.seed)
        model = build_kth_model(c).to(device)
        # conv3d is plain torch: compiled whole (the classifiers compile their engine program themselves)
        forward = torch.compile(model, mode=c.compile) if c.compile != "off" and c.model == "conv3d" else model
        opt = torch.optim.Adam(model.parameters(), lr=c.lr)
        scaler = c.grad_scaler(device)
        curve = []
        best: Dict[str, Any] = {"step": None, "val_accuracy": -1.0, "state": None}
        state = LoopState()
        live = MetricsLog(out, "val_accuracy", tensorboard=c.tensorboard)  # metrics.csv: a row per evaluation
        bar = (progress or no_progress)(total=steps, initial=0, desc=f"kth {c.model}")

        def loss_at(step: int) -> torch.Tensor:
            idx = batch_indices(len(train), c.batch_size, c.seed, step)
            clips = train.clips[idx]
            if c.flip:
                clips = flip_batch(clips, c.seed, step)
            with c.autocast(device):
                logits = forward(clips.to(device))
            return F.cross_entropy(logits.float(), train.labels[idx].to(device))

        def after_step(s: LoopState) -> None:
            if s.step % c.eval_every == 0 or s.step == steps:
                start = time.perf_counter()
                val_acc = accuracy(model, splits["val"].clips, splits["val"].labels, c.eval_batch_size, device)
                curve.append({"step": s.step, "val_accuracy": val_acc, "train_loss": s.last_loss,
                              "train_time_s": s.train_time})
                live.write(s.step, s.last_loss, val_acc, opt.param_groups[0]["lr"], s.train_time,
                           time.perf_counter() - start)
                if c.select == "best_val" and val_acc > best["val_accuracy"]:  # the earliest of equal ones
                    best.update(step=s.step, val_accuracy=val_acc,
                                state=copy.deepcopy(model.state_dict()))
                bar.set_postfix(loss=f"{s.last_loss:.3g}", val_acc=f"{val_acc:.3f}")

        model.train()
        try:
            optimise(model, opt, state, steps, loss_at, c.grad_clip, after_step, bar,
                     lambda: "Nothing was saved (KTH runs save at the end). ", scaler)
        finally:
            bar.close()
            live.close()
        last_test_acc = accuracy(model, splits["test"].clips, splits["test"].labels, c.eval_batch_size, device)
        selected_step, test_acc = steps, last_test_acc
        if best["state"] is not None and best["step"] != steps:
            model.load_state_dict(best["state"])
            selected_step = best["step"]
            test_acc = accuracy(model, splits["test"].clips, splits["test"].labels, c.eval_batch_size, device)
        selected_val = next(p["val_accuracy"] for p in curve if p["step"] == selected_step)
        save_checkpoint(out / "checkpoint.pt", {"model": model.state_dict(), "step": selected_step,
                                                 "trained_steps": steps, "selection": c.select, "config": c.to_dict(),
                                                 "model_record": model_record(model, weights=False)})
    metrics = {
        "model": c.model,
        "test_accuracy": test_acc,
        "val_accuracy": selected_val,
        "selection": c.select,
        "selected_step": selected_step,
        "last_val_accuracy": curve[-1]["val_accuracy"],
        "last_test_accuracy": last_test_acc,
        "chance_accuracy": 1.0 / len(KTH_ACTIONS),
        "val_curve": curve,
        "final_train_loss": state.last_loss,
        "steps": steps,
        "train_time_s": state.train_time,
        "num_parameters": count_parameters(model),
        "num_clips": {s: len(ds) for s, ds in splits.items()},
        "class_counts": {
            s: np.bincount(ds.labels.numpy(), minlength=len(KTH_ACTIONS)).tolist() for s, ds in splits.items()
        },
        "config": c.to_dict(),
        "versions": versions(),
    }
    write_json(out / "metrics.json", metrics)
    logger.info("kth %s: test accuracy %.3f (model of step %d, %s)", c.model, test_acc, selected_step, c.select)
    return metrics
