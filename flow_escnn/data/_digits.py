"""Digit images and the interface every digit source implements.

A *digit source* hands out three fixed splits, ``"train"``, ``"val"`` and ``"test"``,
each a :class:`DigitSet`: float32 images in :math:`[0, 1]` of shape ``[N, H, W]``
(``28 x 28`` for MNIST) and int64 labels ``[N]``. Sources load lazily and keep what
they loaded on the instance (never in a module-level cache).
"""
from __future__ import annotations

import abc
from typing import Dict, NamedTuple, Tuple

import numpy as np

from flow_escnn._validate import one_of

__all__ = ["SPLITS", "DigitSet", "DigitSource", "MnistNotFoundError", "DataFileError", "check_split",
           "validate_digit_set"]

#: The split names every source provides.
SPLITS: Tuple[str, str, str] = ("train", "val", "test")


class MnistNotFoundError(FileNotFoundError):
    """No MNIST data is available locally (nothing is ever downloaded)."""


class DataFileError(ValueError):
    """A data file exists but cannot be used (not an idx / npy file, truncated, wrong shape or values);
    the message names the file."""


class DigitSet(NamedTuple):
    """One split of a digit source.

    Attributes:
        images: float32 ``[N, H, W]`` with values in :math:`[0, 1]` (ink is high).
        labels: int64 ``[N]``.
    """

    images: np.ndarray
    labels: np.ndarray


def check_split(split: str) -> str:
    """Return ``split`` if it is one of :data:`SPLITS`, else raise ``ValueError``."""
    return one_of(split, SPLITS, "split")


def validate_digit_set(images: np.ndarray, labels: np.ndarray, where: str) -> DigitSet:
    """Check shapes, dtypes and range; return a :class:`DigitSet` of float32 / int64 arrays.

    Raises:
        ValueError: naming ``where`` when the arrays are malformed.
    """
    images = np.asarray(images)
    labels = np.asarray(labels)
    if images.ndim != 3 or images.shape[0] == 0 or min(images.shape[1:]) < 1:
        raise DataFileError(f"{where}: expected images [N, H, W] with N >= 1, got shape {images.shape}")
    if labels.shape != (images.shape[0],):
        raise DataFileError(f"{where}: expected labels [N={images.shape[0]}], got shape {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise DataFileError(f"{where}: labels must be integers, got dtype {labels.dtype}")
    if images.dtype == np.uint8:
        images = images.astype(np.float32) / np.float32(255.0)
    elif np.issubdtype(images.dtype, np.floating):
        images = images.astype(np.float32, copy=False)
        lo, hi = float(images.min()), float(images.max())
        if not (np.isfinite(lo) and np.isfinite(hi)) or lo < 0.0 or hi > 1.0:
            raise DataFileError(f"{where}: float images must lie in [0, 1], found range [{lo}, {hi}]")
    else:
        raise DataFileError(f"{where}: images must be uint8 or float, got dtype {images.dtype}")
    return DigitSet(np.ascontiguousarray(images), labels.astype(np.int64, copy=False))


class DigitSource(abc.ABC):
    """A provider of the ``"train"``, ``"val"`` and ``"test"`` digit splits.

    Subclasses implement :meth:`_load_all`; :meth:`load` validates the split name and
    caches the result on the instance.
    """

    def __init__(self) -> None:
        self._cache: Dict[str, DigitSet] = {}

    @property
    @abc.abstractmethod
    def name(self) -> str:
        """A short description used in messages and reprs."""

    @abc.abstractmethod
    def _load_all(self) -> Dict[str, DigitSet]:
        """Load and validate all three splits."""

    def load(self, split: str) -> DigitSet:
        """The digits of one split.

        Args:
            split: ``"train"``, ``"val"`` or ``"test"``.

        Returns:
            A :class:`DigitSet` (float32 images in [0, 1], int64 labels).
        """
        check_split(split)
        if not self._cache:
            self._cache = dict(self._load_all())
        return self._cache[split]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name})"
