"""Synthetic "digits": seeded stroke drawings, for tests and smoke runs (no data needed).

Each of ten classes has a template of two to four straight strokes inside the central
``0.7 * size`` box. A sample of class ``c`` jitters the template's endpoints (Gaussian,
``jitter`` pixels) and draws every stroke with a Gaussian profile of random width:

.. math::
    I(x) = \\max_s \\exp\\!\\big(-d(x, s)^2 / (2\\sigma^2)\\big), \\qquad \\sigma \\sim U(0.7, 1.2),

where :math:`d(x, s)` is the distance from pixel :math:`x` to stroke :math:`s`. Classes
are therefore learnable, and everything is a deterministic function of ``seed``.
"""
from __future__ import annotations

from typing import Dict

import numpy as np

from flow_escnn._validate import positive_int
from flow_escnn.data._digits import SPLITS, DigitSet, DigitSource, validate_digit_set

__all__ = ["SyntheticDigits"]

_NUM_CLASSES = 10
_MAX_STROKES = 4


class SyntheticDigits(DigitSource):
    """Seeded synthetic digit-like images with ten learnable classes.

    Args:
        num_train: images in the ``"train"`` split.
        num_val: images in the ``"val"`` split.
        num_test: images in the ``"test"`` split.
        size: image side (default 28, like MNIST).
        jitter: standard deviation of the endpoint jitter, in pixels.
        seed: seed of the templates and of every split.
    """

    def __init__(
        self,
        num_train: int = 1000,
        num_val: int = 200,
        num_test: int = 200,
        size: int = 28,
        jitter: float = 1.0,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self._sizes = {
            "train": positive_int(num_train, "num_train"),
            "val": positive_int(num_val, "num_val"),
            "test": positive_int(num_test, "num_test"),
        }
        self._size = positive_int(size, "size")
        if self._size < 8:
            raise ValueError(f"size must be at least 8 pixels, got {size}")
        if not (jitter >= 0.0 and np.isfinite(jitter)):
            raise ValueError(f"jitter must be a finite non-negative number, got {jitter!r}")
        self._jitter = float(jitter)
        self._seed = int(seed)

    @property
    def name(self) -> str:
        n = self._sizes
        return f"synthetic {self._size}x{self._size}, {n['train']}/{n['val']}/{n['test']}, seed={self._seed}"

    def _templates(self) -> tuple:
        rng = np.random.default_rng([self._seed, 7919])
        half = 0.35 * self._size
        ends = rng.uniform(-half, half, size=(_NUM_CLASSES, _MAX_STROKES, 2, 2))
        counts = rng.integers(2, _MAX_STROKES + 1, size=_NUM_CLASSES)
        return ends, counts

    def _render(self, split: str, ends: np.ndarray, counts: np.ndarray) -> DigitSet:
        n, s = self._sizes[split], self._size
        rng = np.random.default_rng([self._seed, SPLITS.index(split)])
        labels = rng.integers(0, _NUM_CLASSES, size=n)
        seg = ends[labels] + rng.normal(0.0, self._jitter, size=(n, _MAX_STROKES, 2, 2))
        sigma = rng.uniform(0.7, 1.2, size=(n, 1, 1))
        active = np.arange(_MAX_STROKES)[None, :] < counts[labels][:, None]  # [n, S]
        i, j = np.meshgrid(np.arange(s), np.arange(s), indexing="ij")
        pts = np.stack([j - (s - 1) / 2.0, (s - 1) / 2.0 - i], -1).reshape(1, 1, -1, 2)  # [1, 1, P, 2]
        a, b = seg[:, :, None, 0, :], seg[:, :, None, 1, :]  # [n, S, 1, 2]
        ab = b - a
        lam = np.clip(((pts - a) * ab).sum(-1) / np.maximum((ab * ab).sum(-1), 1e-9), 0.0, 1.0)
        d2 = ((pts - a - lam[..., None] * ab) ** 2).sum(-1)  # [n, S, P]
        ink = np.exp(-d2 / (2.0 * sigma**2)) * active[..., None]
        images = ink.max(axis=1).reshape(n, s, s).astype(np.float32)
        return validate_digit_set(np.clip(images, 0.0, 1.0), labels, f"synthetic {split}")

    def _load_all(self) -> Dict[str, DigitSet]:
        ends, counts = self._templates()
        return {split: self._render(split, ends, counts) for split in SPLITS}
