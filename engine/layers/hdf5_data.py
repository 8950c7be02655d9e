"""HDF5Data layer: rows of the datasets named after its tops, from the .h5 files a list names.

As Caffe: `source` is a text file of whitespace-separated .h5 paths (relative to the working
directory); one file is held in memory at a time; rows are served batch_size at a time in file
order, continuing into the next file and wrapping to the first, with no transformation. With
`shuffle` the file order is redrawn at every pass and each file's rows are permuted when it is
loaded (Caffe's policy; the draws come from the layer's seeded rng, not std::random_shuffle).
Like the Data layer, set_rank(r, n) serves rank r's contiguous slice of every global batch, and
`cursor` / `rng_state` let the solver save and restore the position.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from engine.backend import copy_to_device, pinned_empty
from engine.blob import Blob
from engine.errors import EngineError
from engine.hdf5_io import open_h5, read_array
from engine.layer import Layer, register_layer
from engine.layers.data import check_rank


@register_layer("HDF5Data", v1_name="HDF5_DATA")
class HDF5DataLayer(Layer):
    """Caffe's HDF5Data: top i is batch_size rows of dataset top[i], as float."""

    exact_num_bottoms = 0
    min_tops = 1
    reads_dataset = True

    # --- setup ---------------------------------------------------------------------------
    def layer_setup(self, bottoms: Sequence[Blob], tops: Sequence[Blob]) -> None:
        hp = self.param.hdf5_data_param
        if self.param.HasField("transform_param"):
            raise self.error("HDF5Data does not transform data: remove transform_param")
        if not hp.source:
            raise self.error("hdf5_data_param.source is not set")
        if hp.batch_size <= 0:
            raise self.error("hdf5_data_param.batch_size must be positive")
        self.source = hp.source
        self.batch_size = int(hp.batch_size)
        self.shuffle = bool(hp.shuffle)
        self.keys = list(self.param.top)
        try:
            text = Path(self.source).read_text(encoding="utf-8")
        except OSError as exc:
            raise self.error(f"failed to open source file {self.source}: {exc.strerror}") from None
        self.files = text.split()
        if not self.files:
            raise self.error(f"source {self.source} must list at least one HDF5 file")
        self.file_rows, self.row_shapes = self._scan()
        self.num_records = int(sum(self.file_rows))
        self.rank, self.world_size = 0, 1
        self._loaded: str | None = None
        self._arrays: list[np.ndarray] = []
        self._alloc_buffers()
        self._start_epoch()
        self._load(0)

    def _scan(self) -> tuple[list[int], list[tuple[int, ...]]]:
        """Rows per file and each top's per-row shape, checked alike across files up front."""
        rows: list[int] = []
        shapes: list[tuple[int, ...]] | None = None
        for name in self.files:
            with self._open(name) as f:
                dims = []
                for key in self.keys:
                    item = f.get(key)
                    if item is None or not hasattr(item, "shape") or item.dtype.kind not in "fiu":
                        raise self.error(f"{name}: no float or integer dataset '{key}'")
                    if item.ndim < 1:
                        raise self.error(f"{name}: dataset '{key}' must have at least 1 axis")
                    dims.append(tuple(int(d) for d in item.shape))
            n = dims[0][0]
            for key, d in zip(self.keys, dims, strict=True):
                if d[0] != n:
                    raise self.error(
                        f"{name}: dataset '{key}' has {d[0]} rows but '{self.keys[0]}' has {n}"
                    )
            if n == 0:
                raise self.error(f"{name}: the datasets have no rows")
            row_shapes = [d[1:] for d in dims]
            if shapes is not None and row_shapes != shapes:
                raise self.error(
                    f"{name}: row shapes {row_shapes} differ from {shapes} in {self.files[0]}"
                )
            shapes = row_shapes
            rows.append(n)
        assert shapes is not None
        return rows, shapes

    def _open(self, name: str) -> Any:
        try:
            return open_h5(name, "r", what="HDF5 data")
        except EngineError as exc:
            raise self.error(f"source {self.source}: {exc}") from None

    def _alloc_buffers(self) -> None:
        b = self.local_batch_size
        self._bufs = [pinned_empty(self.xp, (b, *s), self.dtype) for s in self.row_shapes]

    # --- the cycle -------------------------------------------------------------------------
    def _start_epoch(self) -> None:
        """A pass over all files begins: remember the rng (for restore), draw the file order."""
        self._epoch_state: dict = self.rng.bit_generator.state
        n = len(self.files)
        self._order = self.rng.permutation(n) if self.shuffle else np.arange(n)
        self._offsets = np.concatenate(([0], np.cumsum(np.asarray(self.file_rows)[self._order])))

    def _load(self, k: int, read: bool = True) -> None:
        """Make the k-th file of this pass current (reading it unless already in memory)."""
        self._k = k
        self._row = 0
        index = int(self._order[k])
        name = self.files[index]
        n = self.file_rows[index]
        self._perm = self.rng.permutation(n) if self.shuffle else None
        if not read or self._loaded == name:
            return
        with self._open(name) as f:
            where = f"layer '{self.name}' (type {self.type_name}): {name}"
            self._arrays = [
                np.ascontiguousarray(read_array(f, key, where), dtype=self.dtype)
                for key in self.keys
            ]
        self._loaded = name

    def _advance_file(self) -> None:
        k = self._k + 1
        if k == len(self.files):
            self._start_epoch()
            k = 0
        self._load(k)

    def _copy_rows(self, start: int, stop: int, out_start: int) -> None:
        """Copy rows start..stop of the current file (permuted if shuffling) into the buffers."""
        index = self._perm[start:stop] if self._perm is not None else slice(start, stop)
        end = out_start + stop - start
        for array, buf in zip(self._arrays, self._bufs, strict=True):
            if isinstance(index, slice):
                buf[out_start:end] = array[index]
            else:
                np.take(array, index, axis=0, out=buf[out_start:end])

    # --- public cycle state ----------------------------------------------------------------
    @property
    def local_batch_size(self) -> int:
        return self.batch_size // self.world_size

    @property
    def cursor(self) -> int:
        """Row of the current pass (files in this pass's order) where the next batch starts."""
        return int(self._offsets[self._k]) + self._row

    @cursor.setter
    def cursor(self, value: int) -> None:
        self._seek(int(value), None)

    @property
    def rng_state(self) -> dict | None:
        """With shuffle: the rng state at the start of the current pass (None without)."""
        return self._epoch_state if self.shuffle else None

    @rng_state.setter
    def rng_state(self, state: dict) -> None:
        if self.shuffle:
            self._seek(self.cursor, state)

    def _seek(self, position: int, epoch_state: dict | None) -> None:
        """Go to `position` of a pass: the current one, or the pass that began at epoch_state."""
        if not 0 <= position < self.num_records:
            raise self.error(f"cursor {position} out of range for {self.num_records} rows")
        if self.shuffle:
            if epoch_state is not None:
                try:
                    self.rng.bit_generator.state = epoch_state
                except (TypeError, ValueError, KeyError) as exc:
                    raise self.error(f"invalid rng_state: {exc}") from None
            else:
                self.rng.bit_generator.state = self._epoch_state
            self._start_epoch()
        k = int(np.searchsorted(self._offsets, position, side="right")) - 1
        for j in range(k):  # replay the row permutations of the files before (no reading)
            self._load(j, read=False)
        self._load(k)
        self._row = position - int(self._offsets[k])

    def set_rank(self, rank: int, world_size: int) -> None:
        """Serve rank `rank`'s contiguous slice of each global batch of size batch_size."""
        check_rank(self, rank, world_size)
        self.rank, self.world_size = int(rank), int(world_size)
        self._alloc_buffers()

    # --- forward -------------------------------------------------------------------------
    def reshape(self, bottoms: Sequence[Blob], tops: Sequence[Blob]) -> None:
        for top, shape in zip(tops, self.row_shapes, strict=True):
            top.reshape((self.local_batch_size, *shape))

    def forward(self, bottoms: Sequence[Blob], tops: Sequence[Blob]) -> None:
        b = self.local_batch_size
        lo, hi = self.rank * b, self.rank * b + b
        filled = 0  # position in the global batch
        while filled < self.batch_size:
            n = min(self.batch_size - filled, len(self._arrays[0]) - self._row)
            a, z = max(filled, lo), min(filled + n, hi)  # the part of this run that is ours
            if a < z:
                self._copy_rows(self._row + a - filled, self._row + z - filled, a - lo)
            filled += n
            self._row += n
            if self._row == len(self._arrays[0]):  # Caffe moves to the next file at once
                self._advance_file()
        for top, buf in zip(tops, self._bufs, strict=True):
            copy_to_device(top.data, buf)  # one host-to-device copy per top and batch

    def backward(
        self, tops: Sequence[Blob], propagate_down: Sequence[bool], bottoms: Sequence[Blob]
    ) -> None:
        """Data layers have no bottoms: nothing to do."""
