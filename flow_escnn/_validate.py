"""Argument checks shared by every public constructor (one wording for one kind of mistake).

Each helper returns the checked value (normalised) or raises ``ValueError`` naming the
argument, what it must be and what was given.
"""
from __future__ import annotations

import math
from typing import Any, Iterable, Optional, Tuple

import numpy as np

__all__ = ["positive_int", "non_negative_int", "odd_positive_int", "one_of", "optional_positive_int", "grid_shape",
           "bounded_float", "MAX_HYPERPARAMETER"]

#: The largest magnitude a float hyper-parameter may have: beyond it float32 training arithmetic
#: overflows (Adam's step ``lr / (1 - beta1)`` at ``lr = 1e38``) or means nothing.
MAX_HYPERPARAMETER = 1e6


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def positive_int(value: Any, what: str) -> int:
    """``value`` as an ``int`` if it is an integer >= 1 (bools rejected)."""
    if not _is_int(value) or value < 1:
        raise ValueError(f"{what} must be a positive integer, got {value!r}")
    return int(value)


def grid_shape(value: Any, what: str = "grid_shape") -> Tuple[int, int]:
    """``value`` as ``(H, W)`` ints if it is a pair of positive integers (:func:`positive_int` each)."""
    try:
        h, w = value
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be a pair (H, W) of positive integers, got {value!r}") from None
    return positive_int(h, f"{what} H"), positive_int(w, f"{what} W")


def optional_positive_int(value: Any, what: str) -> Optional[int]:
    """``None``, or :func:`positive_int`."""
    return None if value is None else positive_int(value, what)


def non_negative_int(value: Any, what: str) -> int:
    """``value`` as an ``int`` if it is an integer >= 0 (bools rejected)."""
    if not _is_int(value) or value < 0:
        raise ValueError(f"{what} must be a non-negative integer, got {value!r}")
    return int(value)


def odd_positive_int(value: Any, what: str) -> int:
    """``value`` as an ``int`` if it is an odd integer >= 1 (kernel sizes)."""
    if not _is_int(value) or value < 1 or value % 2 == 0:
        raise ValueError(f"{what} must be a positive odd integer, got {value!r}")
    return int(value)


def one_of(value: Any, allowed: Iterable[Any], what: str) -> Any:
    """``value`` if it is one of ``allowed``."""
    options = tuple(allowed)
    try:
        ok = value in options
    except TypeError:  # unhashable / incomparable
        ok = False
    if not ok:
        raise ValueError(f"{what} must be one of {options}, got {value!r}")
    return value


def bounded_float(value: Any, what: str, low: float = 0.0, high: float = MAX_HYPERPARAMETER,
                  low_open: bool = False) -> float:
    """``value`` as a ``float`` if it is a finite real number in ``[low, high]`` (``(low, high]``
    with ``low_open``); bools and NaN/inf rejected."""
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
    number = float(value) if ok else math.nan
    if not (math.isfinite(number) and (number > low if low_open else number >= low) and number <= high):
        bound = f"{'>' if low_open else '>='} {low:g} and <= {high:g}"
        raise ValueError(f"{what} must be a finite number {bound}, got {value!r}")
    return number
