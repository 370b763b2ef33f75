"""Argument checks shared by every public constructor (one wording for one kind of mistake).

Each helper returns the checked value (normalised) or raises ``ValueError`` naming the
argument, what it must be and what was given.
"""
from __future__ import annotations

from typing import Any, Iterable, Optional

import numpy as np

__all__ = ["positive_int", "non_negative_int", "odd_positive_int", "one_of", "optional_positive_int"]


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def positive_int(value: Any, what: str) -> int:
    """``value`` as an ``int`` if it is an integer >= 1 (bools rejected)."""
    if not _is_int(value) or value < 1:
        raise ValueError(f"{what} must be a positive integer, got {value!r}")
    return int(value)


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
