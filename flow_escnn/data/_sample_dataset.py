"""The shape every sequence dataset of :mod:`flow_escnn.data` shares (kept in one place)."""
from __future__ import annotations

from typing import Any, Tuple

from torch.utils.data import Dataset

__all__ = ["SampleDataset"]


class SampleDataset(Dataset):
    """A dataset of equally long tensors, one sample per row.

    Subclasses set :attr:`sample_type` (a ``NamedTuple``) and :attr:`sample_fields` (the
    attribute names of its fields, in order; the first holds the sequences
    ``[N, T, C, H, W]``); item ``i`` is ``sample_type(*(getattr(self, f)[i] for f in sample_fields))``.
    """

    sample_type: Any = tuple
    sample_fields: Tuple[str, ...] = ()
    split: str = ""

    def __len__(self) -> int:
        return int(getattr(self, self.sample_fields[0]).shape[0])

    def __getitem__(self, index: int) -> Any:
        return self.sample_type(*(getattr(self, f)[index] for f in self.sample_fields))

    def describe(self) -> str:
        """What the ``repr`` says after the split and the shape."""
        return ""

    def __repr__(self) -> str:
        n, t, _, h, w = getattr(self, self.sample_fields[0]).shape
        return f"{type(self).__name__}(split={self.split!r}, N={n}, T={t}, grid={h}x{w}, {self.describe()})"
