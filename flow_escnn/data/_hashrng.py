"""Counter-based random numbers: a pure function of ``(seed, stream, index, slot)``.

Each value is the SplitMix64 finaliser applied to the key, so draw ``slot`` of item
``index`` does not depend on how many items are drawn, on their order, or on the
numpy version (unlike ``Generator`` streams). Private to :mod:`flow_escnn.data`.
"""
from __future__ import annotations

import numpy as np

__all__ = ["hashed_uniform", "hashed_integers"]

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


def _mix(z: np.ndarray) -> np.ndarray:
    z = z + _GOLDEN
    z = (z ^ (z >> np.uint64(30))) * _M1
    z = (z ^ (z >> np.uint64(27))) * _M2
    return z ^ (z >> np.uint64(31))


def hashed_uniform(seed: int, stream: int, index: np.ndarray, num_slots: int) -> np.ndarray:
    """Uniform floats in ``[0, 1)``, shape ``[len(index), num_slots]``, from a hash of the keys.

    Args:
        seed: non-negative integer (< 2**64).
        stream: non-negative integer separating independent uses (e.g. the split).
        index: integer array ``[N]`` of item indices (or any non-negative keys).
        num_slots: draws per item.
    """
    with np.errstate(over="ignore"):
        key = _mix(_mix(np.full(1, seed, dtype=np.uint64)) ^ np.uint64(stream))
        z = _mix(key ^ np.asarray(index, dtype=np.uint64).reshape(-1, 1))
        z = _mix(z ^ np.arange(num_slots, dtype=np.uint64).reshape(1, -1))
    return (z >> np.uint64(11)).astype(np.float64) * (1.0 / 9007199254740992.0)  # 53 random bits


def hashed_integers(high: np.ndarray, seed: int, stream: int, index: np.ndarray, num_slots: int) -> np.ndarray:
    """Integers uniform in ``[0, high)`` (``high`` broadcast against ``[N, num_slots]``)."""
    u = hashed_uniform(seed, stream, index, num_slots)
    return np.minimum(np.floor(u * high).astype(np.int64), np.asarray(high, dtype=np.int64) - 1)
