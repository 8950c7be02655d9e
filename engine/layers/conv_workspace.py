"""The buffers of one Convolution bottom's plan and the few operations every pass makes of them.

Caffe's BaseConvolutionLayer keeps col_buffer_ (and bias_multiplier_) between iterations; here a
plan may need more (a padded input, per-thread scratch, kept column chunks), so each bottom gets
a ConvWorkspace: the passes of engine.layers.convolution and engine.layers.conv_rows read their
plan, ask for buffers by name, cut their work into the plan's chunks and run it on the layer's
threads through this object alone.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from engine.layers.conv_plan import ConvPlan
from engine.threads import EngineThreads, chunks, split


class ConvWorkspace:
    """Buffers of one bottom's plan, reused across iterations (Caffe's col_buffer_ and kin).

    xpad: the padded input in the plan's layout (None: the passes read the bottom directly);
    kept: forward's column chunks, (count, chunk size), valid for backward when kept_ready;
    rows_geometry: conv_rows' sizes and row bands, made once per plan.
    """

    def __init__(self, plan: ConvPlan, xp: Any, dtype: Any, threads: EngineThreads) -> None:
        self.plan = plan
        self.xp = xp
        self.dtype = np.dtype(dtype)
        self.threads = threads
        self.xpad: Any = None
        self.kept: Any = None
        self.kept_ready = False
        self.rows_geometry: Any = None
        self._scratch: dict[str, list[Any]] = {}
        self._arrays: dict[str, Any] = {}

    def array(self, key: str, shape: tuple[int, ...]) -> Any:
        """A named zero-initialized buffer of `shape`, made on first use."""
        a = self._arrays.get(key)
        if a is None or a.shape != shape:
            a = self._arrays[key] = self.xp.zeros(shape, self.dtype)
        return a

    def scratch(self, key: str, size: int) -> list[Any]:
        """One flat scratch array of `size` elements per part, made on first use."""
        bufs = self._scratch.get(key)
        if bufs is None or bufs[0].size < size:
            bufs = [self.xp.empty((size,), self.dtype) for _ in range(self.plan.parts)]
            self._scratch[key] = bufs
        return bufs

    def kept_columns(self, count: int, size: int) -> Any:
        """The (count, size) buffer of forward's column chunks kept for backward."""
        if self.kept is None or self.kept.shape != (count, size):
            self.kept = self.xp.empty((count, size), self.dtype)
        return self.kept

    def part_sum(self, bufs: list[Any], size: int) -> Any:
        """The first `size` elements of the parts' flat buffers, summed into part 0's."""
        total = bufs[0][:size]
        for t in range(1, self.plan.parts):
            total += bufs[t][:size]
        return total

    def schedule(self, total: int, row_elems: int) -> list[list[tuple[int, int, int]]]:
        """Per part its chunks (index, lo, hi) of the outer axis; forward and backward agree."""
        plan = self.plan
        step = total
        if plan.chunk_bytes:
            step = max(1, min(total, plan.chunk_bytes // max(1, row_elems * self.dtype.itemsize)))
        out, idx = [], 0
        for lo_t, hi_t in split(0, total, plan.parts):
            mine = []
            for lo, hi in chunks(lo_t, hi_t, step):
                mine.append((idx, lo, hi))
                idx += 1
            out.append(mine)
        return out

    def interior(self, ph: int, pw: int, h: int, w: int) -> tuple[slice, ...]:
        """Index of the unpadded h x w region inside a padded image of the plan's layout."""
        inner: list[slice] = [slice(None)] * 4
        inner[self.plan.spatial[0]] = slice(ph, ph + h)
        inner[self.plan.spatial[1]] = slice(pw, pw + w)
        return tuple(inner)

    def copy_in(self, dst: Any, src: Any) -> None:
        """dst[...] = src, split by its first axis over the parts (large strided copies)."""
        parts = split(0, src.shape[0], self.plan.parts)
        self.run(lambda t: dst.__setitem__(slice(*parts[t]), src[slice(*parts[t])]))

    def run(self, work: Callable[[int], None], parts: int | None = None) -> None:
        """work(t) for t < parts (default: the plan's), on the layer's threads if the plan is
        threaded."""
        count = self.plan.parts if parts is None else parts
        self.threads.run(work, count, threaded=self.plan.threaded)
