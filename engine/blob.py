"""Blob: Caffe's pair of same-shaped arrays, `data` and `diff`, in one array module."""

from __future__ import annotations

from collections.abc import Sequence
from types import ModuleType

import numpy as np


class Blob:
    """A named N-d array with its gradient, as Caffe's Blob (shape, count, data, diff)."""

    def __init__(
        self, shape: Sequence[int] = (), xp: ModuleType = np, dtype: np.dtype | type = np.float32
    ) -> None:
        self.xp = xp
        self.dtype = np.dtype(dtype)
        self._shape: tuple[int, ...] = ()
        self.data = xp.zeros((), self.dtype)
        self.diff = xp.zeros((), self.dtype)
        self.reshape(shape)

    @property
    def shape(self) -> tuple[int, ...]:
        return self._shape

    @property
    def count(self) -> int:
        return int(np.prod(self._shape, dtype=np.int64)) if self._shape else 1

    @property
    def num_axes(self) -> int:
        return len(self._shape)

    def count_range(self, start: int, end: int | None = None) -> int:
        """Product of dims from axis `start` to `end` (exclusive), as Caffe's count(a, b)."""
        dims = self._shape[start:end]
        return int(np.prod(dims, dtype=np.int64)) if dims else 1

    def canonical_axis(self, axis: int) -> int:
        """Resolve a possibly negative axis index, as Caffe's CanonicalAxisIndex."""
        n = len(self._shape)
        if not -n <= axis < n:
            raise IndexError(f"axis {axis} out of range for a {n}-axis blob of shape {self._shape}")
        return axis + n if axis < 0 else axis

    def reshape(self, shape: Sequence[int]) -> None:
        """Give the blob a new shape; arrays are reallocated (zeroed) only if the shape changes."""
        shape = tuple(int(d) for d in shape)
        if any(d < 0 for d in shape):
            raise ValueError(f"negative dimension in blob shape {shape}")
        if shape == self._shape and self.data.shape == shape:
            return
        self._shape = shape
        self.data = self.xp.zeros(shape, self.dtype)
        self.diff = self.xp.zeros(shape, self.dtype)

    def share(self, data: object, diff: object) -> None:
        """Point this blob at external arrays (views into the Net's flat parameter buffer)."""
        self.data = data
        self.diff = diff
        self._shape = tuple(data.shape)  # type: ignore[attr-defined]

    def __repr__(self) -> str:
        return f"Blob(shape={self._shape}, dtype={self.dtype})"
