"""Data layer: reads an LMDB of Caffe Datum sequentially in a fixed cycle (FCPR), with prefetch.

Batch k of the cycle holds records (k * B + i) mod N, i < B (B = data_param.batch_size, the global
batch): reading wraps to the first record at the end, as Caffe's cursor does. With set_rank(r, n)
the layer serves rank r's contiguous slice of every global batch, and the random transform draws
are made for the whole global batch, so the slices of n ranks concatenate to the n = 1 batch.
The next batch is read and transformed in a background thread into the other of two host buffers
(pinned when the net runs on a GPU); forward copies it into the tops once per batch, in the
calling thread, so no device work ever runs in the prefetch thread. Without data_param.prefetch
set, the thread runs only where it has a core of its own (a GPU run, or more cores than the
engine's threads); otherwise forward reads the batch itself (prefetch: 0 does so always).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np

from engine.backend import copy_to_device, pinned_empty
from engine.blob import Blob
from engine.boost_random import CaffeRNG, is_caffe_rng_state
from engine.data_transformer import DataTransformer, TransformDraw
from engine.datum import decode_batch
from engine.errors import EngineError
from engine.layer import Layer, register_layer
from engine.lmdb_reader import LmdbReader
from engine.threads import loader_has_a_core

_LMDB = 1  # DataParameter.DB.LMDB
_DEPRECATED_TRANSFORM = ("scale", "mean_file", "crop_size", "mirror")


def check_rank(layer: Layer, rank: int, world_size: int) -> None:
    """A data layer can serve rank `rank` of `world_size`: a valid rank, and a global batch
    (the layer's batch_size) that splits evenly over the ranks."""
    if world_size < 1 or not 0 <= rank < world_size:
        raise layer.error(f"invalid rank {rank} of world size {world_size}")
    if layer.batch_size % world_size:
        raise layer.error(
            f"batch_size {layer.batch_size} (the global batch) is not divisible by the "
            f"{world_size} ranks"
        )


@register_layer("Data", v1_name="DATA")
class DataLayer(Layer):
    """Caffe's Data layer over an LMDB: tops data (N, C, H', W') and optionally label (N,)."""

    exact_num_bottoms = 0
    min_tops = 1
    max_tops = 2
    reads_dataset = True

    # --- setup ---------------------------------------------------------------------------
    def layer_setup(self, bottoms: Sequence[Blob], tops: Sequence[Blob]) -> None:

        dp = self.param.data_param
        if not dp.source:
            raise self.error("data_param.source is not set")
        if dp.batch_size <= 0:
            raise self.error("data_param.batch_size must be positive")
        if dp.HasField("backend") and dp.backend != _LMDB:
            raise self.error(f"source {dp.source}: only backend LMDB is supported")
        self.source = dp.source
        self.batch_size = int(dp.batch_size)
        if dp.HasField("prefetch"):
            self.prefetch = int(dp.prefetch) > 0
        else:  # Caffe always prefetches; here only where the loader thread has a core
            self.prefetch = loader_has_a_core(self.xp)
        where = f"layer '{self.name}' (type {self.type_name}): "
        self.transformer = DataTransformer(self._transform_param(), self.phase, self.dtype, where)
        try:
            peek = LmdbReader(self.source)
            self.num_records = len(peek)
            keys, values = peek.read(0, 1)
            peek.close()
            first, _ = decode_batch(values, self.source, keys, color=self.transformer.color)
        except EngineError as exc:
            raise self.error(str(exc)) from exc
        self.datum_shape: tuple[int, int, int] = tuple(first.shape[1:])  # type: ignore[assignment]
        self.out_shape = self.transformer.output_shape(*self.datum_shape)
        self.rank, self.world_size = 0, 1
        # Caffe's draws from its stream at setup: InitRand twice (BaseDataLayer's, then
        # BasePrefetchingDataLayer's, which replaces the first) when the transform is random,
        # then the prefetch thread's seed, which the Data layer never uses.
        self.transform_rng: CaffeRNG | None = None
        if self.transformer.needs_rand:
            self.stream.rand()
            self.transform_rng = CaffeRNG(self.stream.rand())
        self.stream.rand()
        # rand_skip: Caffe 1.0's Data layer ignores it; here it skips from the layer's own
        # generator, apart from Caffe's streams.
        self._pos = int(self.rng.integers(0, dp.rand_skip)) if dp.rand_skip else 0
        self._served_start: int | None = None
        self._next_draw: TransformDraw | None = None
        self._rng_before_next: dict | None = self._transform_state()
        self._pending: Future | tuple | None = None
        self._reader: Any = None
        self._executor: ThreadPoolExecutor | None = None
        self._pid = os.getpid()
        self._flip = 0
        self._alloc_buffers()

    def _transform_param(self) -> Any:
        """transform_param, with the deprecated data_param copies moved in (Caffe's upgrade)."""
        tp = type(self.param.transform_param)()
        tp.CopyFrom(self.param.transform_param)
        dp = self.param.data_param
        for name in _DEPRECATED_TRANSFORM:
            if dp.HasField(name) and not tp.HasField(name):
                setattr(tp, name, getattr(dp, name))
        return tp

    def _alloc_buffers(self) -> None:
        b = self.local_batch_size
        self._bufs = [pinned_empty(self.xp, (b, *self.out_shape), self.dtype) for _ in range(2)]
        self._label_bufs = [pinned_empty(self.xp, b, self.dtype) for _ in range(2)]

    # --- public cycle state ----------------------------------------------------------------
    @property
    def local_batch_size(self) -> int:
        return self.batch_size // self.world_size

    @property
    def cycle_length(self) -> int:
        """Number of distinct batches in the fixed cycle: N / gcd(N, B)."""
        return self.num_records // math.gcd(self.num_records, self.batch_size)

    @property
    def cursor(self) -> int:
        """Record index where the next global batch starts (save it in snapshots)."""
        return self._pos

    @cursor.setter
    def cursor(self, value: int) -> None:
        value = int(value)
        if not 0 <= value < self.num_records:
            raise self.error(f"cursor {value} out of range for {self.num_records} records")
        self._discard_pending()
        self._pos = value
        self._served_start = None

    def _transform_state(self) -> dict | None:
        return self.transform_rng.get_state() if self.transform_rng is not None else None

    @property
    def rng_state(self) -> dict | None:
        """The transform generator's state before the next batch's draws (save with the cursor);
        None when the transform draws nothing."""
        return self._rng_before_next if self._next_draw is not None else self._transform_state()

    def accepts_rng_state(self, state: Any) -> bool:
        """Only Caffe's mt19937 states (not the NumPy states of older versions)."""
        return is_caffe_rng_state(state)

    @rng_state.setter
    def rng_state(self, state: dict | None) -> None:
        self._discard_pending()
        self._next_draw = None
        if state is None or self.transform_rng is None:
            return
        try:
            self.transform_rng.set_state(state)
        except ValueError as exc:
            raise self.error(f"cannot restore the transform's random stream: {exc}") from None

    def _cycle_index(self, start: int | None) -> int:
        """k with k * B = start (mod N), the batch's place in the cycle; -1 if off the grid."""
        if start is None:
            return -1
        n, b = self.num_records, self.batch_size
        g = math.gcd(n, b)
        if start % g:
            return -1
        cycle = n // g
        return (start // g) * pow(b // g, -1, cycle) % cycle if cycle > 1 else 0

    @property
    def batch_index(self) -> int:
        """Cycle index of the batch the last forward produced (-1 before the first forward)."""
        return self._cycle_index(self._served_start)

    @property
    def next_batch_index(self) -> int:
        """Cycle index of the batch the next forward will produce."""
        return self._cycle_index(self._pos)

    def set_rank(self, rank: int, world_size: int) -> None:
        """Serve rank `rank`'s contiguous slice of each global batch of size batch_size."""
        check_rank(self, rank, world_size)
        self._discard_pending()
        self.rank, self.world_size = int(rank), int(world_size)
        self._alloc_buffers()

    # --- forward -------------------------------------------------------------------------
    def reshape(self, bottoms: Sequence[Blob], tops: Sequence[Blob]) -> None:
        tops[0].reshape((self.local_batch_size, *self.out_shape))
        if len(tops) > 1:
            tops[1].reshape((self.local_batch_size,))

    def forward(self, bottoms: Sequence[Blob], tops: Sequence[Blob]) -> None:
        images, labels = self._take()
        copy_to_device(tops[0].data, images)
        if len(tops) > 1:
            copy_to_device(tops[1].data, labels)

    def backward(
        self, tops: Sequence[Blob], propagate_down: Sequence[bool], bottoms: Sequence[Blob]
    ) -> None:
        """Data layers have no bottoms: nothing to do."""

    # --- prefetching -----------------------------------------------------------------------
    def _submit(self) -> None:
        """Start loading the batch at the cursor (with its random draws, made once)."""
        if self._next_draw is None:
            self._rng_before_next = self._transform_state()
            h, w = self.datum_shape[1:]
            self._next_draw = self.transformer.draw(self.batch_size, h, w, self.transform_rng)
        args = (self._pos, self._next_draw, self._flip)
        if self.prefetch:
            if self._executor is None or self._pid != os.getpid():
                self._executor = ThreadPoolExecutor(1, thread_name_prefix=f"data-{self.name}")
                self._pid = os.getpid()
            self._pending = self._executor.submit(self._load, *args)
        else:
            self._pending = args

    def _take(self) -> tuple[np.ndarray, np.ndarray]:
        if self._pending is None or (self.prefetch and self._pid != os.getpid()):
            self._submit()
        pending = self._pending
        try:
            if isinstance(pending, Future):
                images, labels = pending.result()
            else:
                images, labels = self._load(*pending)
        except EngineError as exc:
            self._pending = None
            raise self.error(str(exc)) from exc
        self._served_start = self._pos
        self._pos = (self._pos + self.batch_size) % self.num_records
        self._next_draw = None
        self._flip ^= 1
        self._pending = None
        if self.prefetch:
            self._submit()
        return images, labels

    def _discard_pending(self) -> None:
        """Drop a prefetched batch (its random draws are kept for the batch that replaces it)."""
        if isinstance(self._pending, Future):
            try:
                self._pending.result()
            except Exception:  # a discarded batch's error is irrelevant
                pass
        self._pending = None

    def _load(self, start: int, draw: TransformDraw, flip: int) -> tuple[np.ndarray, np.ndarray]:
        """Read, decode and transform this rank's slice of the global batch at `start`."""

        if self._reader is None:
            self._reader = LmdbReader(self.source)
        b = self.local_batch_size
        lo = self.rank * b
        keys, values = self._reader.read(start + lo, b)
        images, labels = decode_batch(
            values, self.source, keys, self.datum_shape, self.transformer.color
        )
        out = self.transformer.apply(images, draw.slice(lo, lo + b), self._bufs[flip])
        lab = self._label_bufs[flip]
        lab[...] = labels
        return out, lab

    def close(self) -> None:
        """Stop the prefetch thread and close the database."""
        self._discard_pending()
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None
        if self._reader is not None:
            self._reader.close()
            self._reader = None
