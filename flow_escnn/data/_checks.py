"""Argument checks shared by the data modules."""
from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["positive_int", "non_negative_int"]


def positive_int(value: Any, what: str) -> int:
    """``value`` as an ``int`` if it is an integer >= 1 (bools rejected), else ``ValueError``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{what} must be a positive integer, got {value!r}")
    return int(value)


def non_negative_int(value: Any, what: str) -> int:
    """``value`` as an ``int`` if it is an integer >= 0 (bools rejected), else ``ValueError``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ValueError(f"{what} must be a non-negative integer, got {value!r}")
    return int(value)
