"""Moving-KTH action classification: FERNN, G-RNN, G-RNN+ and a 3D-CNN on a local KTH folder.

Data: :class:`~flow_escnn.data.MovingKTH` (grayscale clips of ``num_frames`` frames at
``stride``, resized to ``size x size``, one imposed integer velocity per clip with
wrap-around), split **by person** (1-16 train, 17-20 validation, 21-25 test). Nothing is
downloaded: ``root`` must hold pre-extracted clips (layout in :mod:`flow_escnn.data.kth`).

Models (all circular padding, since the moved clips wrap around the torus):

* ``fernn``: :class:`~flow_escnn.models.SequenceClassifier` over
  ``FlowSet.translations(gspace, flow_radius)`` (max over V, max over each field's fiber,
  mean over pixels of the last state, linear head);
* ``grnn``: the same over ``FlowSet.identity`` (same parameter count);
* ``grnn_plus``: the same classifier with ``cell="grnn_plus"``
  (:class:`~flow_escnn.nn.baselines.GRNNPlus`: learned per-velocity kernels; not invariant);
* ``conv3d``: :class:`~flow_escnn.nn.baselines.Conv3DClassifier` (``conv3d_channels``).

Training: cross-entropy, Adam, gradient clipping, seeded batch order, deterministic mode;
validation accuracy every ``eval_every`` steps, test accuracy of the final model.
``metrics.json`` holds ``test_accuracy``, ``val_accuracy``, the validation curve, the clip
counts per split, the training time, the config and versions; ``checkpoint.pt`` the model.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import time
from pathlib import Path
from typing import Any, Dict, Optional

import numpy as np
import torch
import torch.nn.functional as F

from flow_escnn._compat import enn
from flow_escnn.data.kth import KTH_ACTIONS, MovingKTH
from flow_escnn.experiments.config import CELLS, count_parameters, make_gspace, parse_velocities
from flow_escnn.experiments.runtime import (
    PathLike,
    batch_indices,
    deterministic_mode,
    resolve_device,
    save_checkpoint,
    seed_everything,
    versions,
    write_json,
)
from flow_escnn.flows.flowset import FlowSet
from flow_escnn.flows.kinds import TRANSLATION
from flow_escnn.models import Conv3DClassifier, SequenceClassifier

__all__ = ["KTH_MODELS", "KTHConfig", "build_kth_model", "train_kth"]

logger = logging.getLogger(__name__)

KTH_MODELS = ("fernn", "grnn", "grnn_plus", "conv3d")


@dataclasses.dataclass
class KTHConfig:
    """A moving-KTH classification run (see the module docstring)."""

    root: str = ""
    model: str = "fernn"
    cell: str = "fernn"
    group: int = 1
    hidden_channels: Optional[int] = None
    hidden_fields: Optional[int] = None
    num_layers: int = 1
    kernel_size: int = 3
    flow_radius: int = 2
    velocity_kernel_size: int = 5
    conv3d_channels: str = "16,32"
    train_velocities: str = "2"
    test_velocities: Optional[str] = None
    num_frames: int = 16
    stride: int = 2
    size: int = 32
    hop: Optional[int] = None
    steps: Optional[int] = None
    epochs: Optional[int] = None
    batch_size: int = 16
    lr: float = 1e-3
    grad_clip: float = 1.0
    seed: int = 0
    device: str = "cpu"
    eval_every: int = 100
    eval_batch_size: int = 64

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> "KTHConfig":
        return dataclasses.replace(self, **changes)

    def hidden_field_count(self) -> int:
        if self.hidden_fields is not None:
            return self.hidden_fields
        return max(1, (16 if self.hidden_channels is None else self.hidden_channels) // self.group)

    def conv3d_channel_list(self) -> list:
        try:
            chans = [int(c) for c in self.conv3d_channels.split(",") if c.strip()]
        except ValueError:
            chans = []
        if not chans or any(c < 1 for c in chans):
            raise ValueError(
                f"conv3d_channels must be a list of positive integers like '16,32', got {self.conv3d_channels!r}"
            )
        return chans

    def validate(self) -> None:
        """Raise ``ValueError`` naming the option when anything is inconsistent."""
        if not self.root:
            raise ValueError("give the local KTH folder (root); nothing is downloaded")
        if self.model not in KTH_MODELS:
            raise ValueError(f"model must be one of {KTH_MODELS}, got {self.model!r}")
        if self.cell not in CELLS:
            raise ValueError(f"cell must be one of {CELLS}, got {self.cell!r}")
        if self.model in ("grnn_plus", "conv3d") and self.cell != "fernn":
            raise ValueError(f"model {self.model!r} has no gated cells; drop --cell")
        for name in ("group", "num_layers", "kernel_size", "velocity_kernel_size", "num_frames", "stride", "size",
                     "batch_size", "eval_every", "eval_batch_size"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        for name in ("hidden_channels", "hidden_fields", "steps", "epochs", "hop"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        if self.steps is not None and self.epochs is not None:
            raise ValueError("give either steps or epochs, not both")
        if self.hidden_channels is not None and self.hidden_fields is not None:
            raise ValueError("give either hidden_channels or hidden_fields, not both")
        if self.hidden_channels is not None and self.hidden_channels % self.group:
            raise ValueError(f"hidden_channels={self.hidden_channels} is not a multiple of the group order {self.group}")
        if not isinstance(self.flow_radius, int) or self.flow_radius < 0:
            raise ValueError(f"flow_radius must be a non-negative integer, got {self.flow_radius!r}")
        if not (self.lr > 0 and math.isfinite(self.lr)) or self.grad_clip < 0:
            raise ValueError("lr must be positive and grad_clip >= 0")
        parse_velocities(self.train_velocities, TRANSLATION)
        if self.test_velocities is not None:
            parse_velocities(self.test_velocities, TRANSLATION)
        self.conv3d_channel_list()
        if not (self.device == "cpu" or self.device.startswith("cuda")):
            raise ValueError(f"device must be 'cpu' or 'cuda', got {self.device!r}")


def build_kth_model(config: KTHConfig) -> torch.nn.Module:
    """The classifier of a KTH config (six classes, one grayscale input channel)."""
    config.validate()
    n = len(KTH_ACTIONS)
    if config.model == "conv3d":
        return Conv3DClassifier(1, n, channels=config.conv3d_channel_list(), kernel_size=config.kernel_size,
                                padding_mode="circular")
    gs = make_gspace(config.group)
    in_type = enn.FieldType(gs, [gs.trivial_repr])
    hidden_type = enn.FieldType(gs, [gs.regular_repr] * config.hidden_field_count())
    if config.model == "grnn_plus":
        return SequenceClassifier(in_type, hidden_type, FlowSet.translations(gs, config.flow_radius), n,
                                  cell="grnn_plus", kernel_size=config.kernel_size,
                                  velocity_kernel_size=config.velocity_kernel_size, init="auto")
    flows = FlowSet.identity(gs) if config.model == "grnn" else FlowSet.translations(gs, config.flow_radius)
    return SequenceClassifier(in_type, hidden_type, flows, n, cell=config.cell, num_layers=config.num_layers,
                              kernel_size=config.kernel_size)


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


def train_kth(config: KTHConfig, out_dir: PathLike, progress: Optional[Any] = None) -> Dict[str, Any]:
    """Train and evaluate one KTH classifier; writes ``metrics.json`` and ``checkpoint.pt`` to ``out_dir``."""
    config.validate()
    c = config
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    device = resolve_device(c.device)
    train_v = [tuple(int(v) for v in r[:2]) for r in parse_velocities(c.train_velocities, TRANSLATION)]
    test_v = None if c.test_velocities is None else [
        tuple(int(v) for v in r[:2]) for r in parse_velocities(c.test_velocities, TRANSLATION)
    ]
    kw = dict(num_frames=c.num_frames, stride=c.stride, size=c.size, velocities=train_v, test_velocities=test_v,
              hop=c.hop, seed=c.seed)
    splits = {s: MovingKTH(c.root, s, **kw) for s in ("train", "val", "test")}
    for ds in splits.values():
        logger.info("loaded %r", ds)
    train = splits["train"]
    steps = c.steps if c.steps is not None else (c.epochs or 10) * max(1, math.ceil(len(train) / c.batch_size))
    write_json(out / "config.json", c.to_dict())
    with deterministic_mode():
        seed_everything(c.seed)
        model = build_kth_model(c).to(device)
        opt = torch.optim.Adam(model.parameters(), lr=c.lr)
        curve = []
        train_time = 0.0
        bar = progress(total=steps, initial=0, desc=f"kth {c.model}") if progress else None
        model.train()
        loss_value = float("nan")
        for step in range(1, steps + 1):
            t0 = time.perf_counter()
            idx = batch_indices(len(train), c.batch_size, c.seed, step - 1)
            logits = model(train.clips[idx].to(device))
            loss = F.cross_entropy(logits, train.labels[idx].to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if c.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), c.grad_clip)
            opt.step()
            train_time += time.perf_counter() - t0
            loss_value = float(loss.detach())
            if bar is not None:
                bar.update(1)
            if step % c.eval_every == 0 or step == steps:
                val_acc = accuracy(model, splits["val"].clips, splits["val"].labels, c.eval_batch_size, device)
                curve.append({"step": step, "val_accuracy": val_acc, "train_loss": loss_value, "train_time_s": train_time})
                if bar is not None:
                    bar.set_postfix(loss=f"{loss_value:.3g}", val_acc=f"{val_acc:.3f}")
        if bar is not None:
            bar.close()
        test_acc = accuracy(model, splits["test"].clips, splits["test"].labels, c.eval_batch_size, device)
        save_checkpoint(out / "checkpoint.pt", {"model": model.state_dict(), "step": steps, "config": c.to_dict()})
    metrics = {
        "model": c.model,
        "test_accuracy": test_acc,
        "val_accuracy": curve[-1]["val_accuracy"] if curve else None,
        "chance_accuracy": 1.0 / len(KTH_ACTIONS),
        "val_curve": curve,
        "final_train_loss": loss_value,
        "steps": steps,
        "train_time_s": train_time,
        "num_parameters": count_parameters(model),
        "num_clips": {s: len(ds) for s, ds in splits.items()},
        "class_counts": {
            s: np.bincount(ds.labels.numpy(), minlength=len(KTH_ACTIONS)).tolist() for s, ds in splits.items()
        },
        "config": c.to_dict(),
        "versions": versions(),
    }
    write_json(out / "metrics.json", metrics)
    logger.info("kth %s: test accuracy %.3f", c.model, test_acc)
    return metrics
