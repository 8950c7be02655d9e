"""Net: Caffe's DAG of layers over named blobs, built from a NetParameter or a .prototxt file."""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from types import ModuleType
from typing import Any

import numpy as np

from engine import wire
from engine.backend import get_array_module, make_rng, rng_state, set_rng_state, to_numpy
from engine.blob import Blob
from engine.boost_random import CaffeRNG
from engine.errors import EngineError, NetError
from engine.hdf5_io import is_hdf5_path, load_net_weights, save_net_weights
from engine.layer import TEST, TRAIN, Layer, layer_class
from engine.net_graph import filter_net, insert_splits
from engine.proto import caffe_pb2
from engine.proto_io import (
    array_to_blob_proto,
    blob_proto_chunks,
    read_net_param,
    write_binary_bytes,
)

_PHASES = {TRAIN: 0, TEST: 1}
STREAM_STATE_KEY = "caffe_stream"  # Caffe's stream in Net.rng_state()


def _phase_name(phase: str | int) -> str:
    if isinstance(phase, str):
        name = phase.upper()
        if name not in _PHASES:
            raise ValueError(f"phase must be 'TRAIN' or 'TEST', got {phase!r}")
        return name
    return TRAIN if int(phase) == 0 else TEST


def _layer_seed(seed: int, index: int) -> int:
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])


class Net:
    """A Caffe network: `forward`, `backward`, learnable params in one flat buffer, weight I/O.

    Mirrors pycaffe's surface: `Net(path, "TEST")`, `net.blobs[name].data`, `net.params[layer][i]`,
    `net.inputs`, `net.outputs`, `net.forward(**inputs)` returning the output blobs by name.
    """

    def __init__(
        self,
        path_or_param: Any,
        phase: str | int = TRAIN,
        xp: ModuleType | str | None = None,
        dtype: np.dtype | type = np.float32,
        seed: int | None = None,
        stages: Iterable[str] = (),
        level: int = 0,
        weights: str | None = None,
        stream: CaffeRNG | None = None,
    ) -> None:

        self.xp = get_array_module(xp)
        self.dtype = np.dtype(dtype)
        self.phase = _phase_name(phase)
        self.source = path_or_param if isinstance(path_or_param, (str, os.PathLike)) else "<net>"
        self.source = str(self.source)
        param = read_net_param(path_or_param)
        self.seed = int(np.random.SeedSequence().entropy % (2**31)) if seed is None else int(seed)
        # Caffe's CPU stream: boost mt19937 seeded with the seed, drawn in Caffe's order by the
        # fillers (layer by layer), the Data layers' transformer seeds and Dropout. The solver
        # passes one stream to its train and test nets, as Caffe's nets share the thread's.
        self.stream = stream if stream is not None else CaffeRNG(self.seed)

        state = caffe_pb2.NetState()
        state.CopyFrom(param.state)
        state.phase = caffe_pb2.TRAIN if self.phase == TRAIN else caffe_pb2.TEST
        if level:
            state.level = level
        state.stage.extend(s for s in stages if s not in state.stage)
        filtered = filter_net(param, state, self.source)
        self.param = insert_splits(filtered)
        self.name = self.param.name
        self._build()
        if weights:
            for path in str(weights).split(","):
                self.copy_from(path)

    # ------------------------------------------------------------------ construction
    def _where(self) -> str:
        return f"{self.source}: " if self.source != "<net>" else ""

    def _build(self) -> None:
        self.layers: list[Layer] = []
        self.layer_names: list[str] = []
        self.blobs: OrderedDict[str, Blob] = OrderedDict()
        self.bottom_vecs: list[list[Blob]] = []
        self.top_vecs: list[list[Blob]] = []
        self.bottom_names: list[list[str]] = []
        self.top_names: list[list[str]] = []
        self.bottom_need_backward: list[list[bool]] = []
        self.layer_need_backward: list[bool] = []
        self.loss_tops: list[tuple[Blob, float]] = []
        self.layer_loss_tops: list[list[tuple[Blob, float]]] = []  # per layer, for forward
        self.input_blob_names: list[str] = []
        available: dict[str, Blob] = {}
        blob_need_backward: dict[str, bool] = {}
        self._param_specs: list[tuple[int, int, Any]] = []

        for index, lp in enumerate(self.param.layer):
            name = lp.name  # Caffe allows repeated names; name lookups find the last one
            cls = layer_class(lp.type, name)
            # Caffe gives each layer the net's phase unless the layer sets its own.
            phase = (TRAIN if lp.phase == 0 else TEST) if lp.HasField("phase") else self.phase
            try:
                layer = cls(
                    lp, phase, self.xp, self.dtype, _layer_seed(self.seed, index), self.stream
                )
            except EngineError:
                raise
            except Exception as exc:
                raise NetError(f"{self._where()}layer '{name}' (type {lp.type}): {exc}") from exc

            bottoms, bottom_need = [], []
            for j, bname in enumerate(lp.bottom):
                if bname not in available:
                    raise NetError(
                        f"{self._where()}layer '{name}' (type {lp.type}): unknown bottom blob "
                        f"'{bname}' (no earlier layer produces it as a top)"
                    )
                need = blob_need_backward.get(bname, False)
                if len(lp.propagate_down):
                    if len(lp.propagate_down) != len(lp.bottom):
                        raise NetError(
                            f"{self._where()}layer '{name}': propagate_down has "
                            f"{len(lp.propagate_down)} entries for {len(lp.bottom)} bottoms"
                        )
                    need = bool(lp.propagate_down[j])
                bottoms.append(available[bname])
                bottom_need.append(need)
            layer_needs = any(blob_need_backward.get(b, False) for b in lp.bottom)
            for b in lp.bottom:
                available.pop(b, None)

            tops = []
            for j, tname in enumerate(lp.top):
                in_place = j < len(lp.bottom) and lp.bottom[j] == tname
                if in_place:
                    blob = bottoms[j]
                else:
                    if tname in self.blobs:
                        raise NetError(
                            f"{self._where()}layer '{name}': top blob '{tname}' is produced by "
                            "multiple sources"
                        )
                    blob = Blob((), self.xp, self.dtype)
                    self.blobs[tname] = blob
                available[tname] = blob
                tops.append(blob)
                if lp.type == "Input":
                    self.input_blob_names.append(tname)

            try:
                layer.setup(bottoms, tops)
            except EngineError as exc:
                msg = str(exc)
                raise type(exc)(
                    msg if msg.startswith(self._where()) else self._where() + msg
                ) from exc
            except Exception as exc:
                raise NetError(
                    f"{self._where()}layer '{name}' (type {lp.type}) setup failed: {exc}"
                ) from exc

            # Loss weights: explicit list (one per top) or 1 on top 0 of a loss layer.
            weights = list(lp.loss_weight)
            if weights and len(weights) != len(tops):
                raise NetError(
                    f"{self._where()}layer '{name}': loss_weight has {len(weights)} entries "
                    f"but the layer has {len(tops)} tops"
                )
            if not weights and layer.is_loss:
                weights = [1.0] + [0.0] * (len(tops) - 1)
            weighted = [(blob, float(w)) for blob, w in zip(tops, weights, strict=False) if w]
            self.loss_tops.extend(weighted)
            self.layer_loss_tops.append(weighted)

            # Params: lr_mult != 0 means the layer must run backward for its weights.
            if len(lp.param) > len(layer.blobs):
                raise NetError(
                    f"{self._where()}layer '{name}' (type {lp.type}): {len(lp.param)} param specs "
                    f"given but the layer has only {len(layer.blobs)} learnable blobs"
                )
            for p_index in range(len(layer.blobs)):
                spec = layer.param.param[p_index] if p_index < len(layer.param.param) else None
                lr = spec.lr_mult if spec is not None else 1.0
                if lr != 0:
                    layer_needs = True
                self._param_specs.append((len(self.layers), p_index, spec))

            self.layers.append(layer)
            self.layer_names.append(name)
            self.bottom_vecs.append(bottoms)
            self.top_vecs.append(tops)
            self.bottom_names.append(list(lp.bottom))
            self.top_names.append(list(lp.top))
            self.bottom_need_backward.append(bottom_need)
            self.layer_need_backward.append(layer_needs)
            if layer_needs:
                for tname in lp.top:
                    blob_need_backward[tname] = True

        # Caffe keeps the not-consumed blobs in a std::set: outputs come in sorted name order.
        self.output_blob_names = sorted(n for n in available if n in self.blobs)
        self._prune_backward(blob_need_backward)
        self._setup_params()

    def _prune_backward(self, blob_need_backward: dict[str, bool]) -> None:
        """Caffe's pass that skips backward for layers not contributing to any loss."""
        loss_blob_ids = {id(b) for b, _ in self.loss_tops}
        under_loss: set[str] = set()
        skip_backprop: set[str] = set()
        for i in range(len(self.layers) - 1, -1, -1):
            contributes = False
            skip = True
            for tname, blob in zip(self.top_names[i], self.top_vecs[i], strict=True):
                if id(blob) in loss_blob_ids or tname in under_loss:
                    contributes = True
                if tname not in skip_backprop:
                    skip = False
                if contributes and not skip:
                    break
            if self.layer_need_backward[i] and skip:
                self.layer_need_backward[i] = False
                self.bottom_need_backward[i] = [False] * len(self.bottom_need_backward[i])
            if not contributes:
                self.layer_need_backward[i] = False
            for j, bname in enumerate(self.bottom_names[i]):
                if contributes:
                    under_loss.add(bname)
                else:
                    self.bottom_need_backward[i][j] = False
                if not self.bottom_need_backward[i][j]:
                    skip_backprop.add(bname)
        if self.param.force_backward:
            for i, layer in enumerate(self.layers):
                self.layer_need_backward[i] = True
                self.bottom_need_backward[i] = [
                    need or layer.allow_force_backward(j)
                    for j, need in enumerate(self.bottom_need_backward[i])
                ]

    def _setup_params(self) -> None:
        """Collect learnable params (shared ones once) and move them into one flat buffer each
        for data and diff, as Caffe's multi-GPU code does, so a collective is one call."""
        self.params: OrderedDict[str, list[Blob]] = OrderedDict()
        self.learnable_params: list[Blob] = []
        self.params_lr: list[float] = []
        self.params_weight_decay: list[float] = []
        self.learnable_param_names: list[str] = []
        self._lr_set: list[bool] = []
        self._decay_set: list[bool] = []
        owners: dict[str, int] = {}
        self._sharers: list[tuple[Blob, int]] = []
        for layer_index, p_index, spec in self._param_specs:
            layer = self.layers[layer_index]
            blob = layer.blobs[p_index]
            pname = spec.name if spec is not None and spec.name else ""
            if pname and pname in owners:
                owner_id = owners[pname]
                owner = self.learnable_params[owner_id]
                mode = spec.share_mode if spec is not None else 0
                if (mode == 0 and owner.shape != blob.shape) or owner.count != blob.count:
                    raise NetError(
                        f"{self._where()}layer '{layer.name}': shared param '{pname}' has shape "
                        f"{blob.shape} but its owner has {owner.shape}"
                    )
                self._merge_mult(owner_id, spec, pname, layer.name)
                self._sharers.append((blob, owner_id))
                continue
            if pname:
                owners[pname] = len(self.learnable_params)
            self.learnable_params.append(blob)
            self.learnable_param_names.append(pname or f"{layer.name}[{p_index}]")
            self.params_lr.append(spec.lr_mult if spec is not None else 1.0)
            self.params_weight_decay.append(spec.decay_mult if spec is not None else 1.0)
            self._lr_set.append(spec is not None and spec.HasField("lr_mult"))
            self._decay_set.append(spec is not None and spec.HasField("decay_mult"))
        for layer, name in zip(self.layers, self.layer_names, strict=True):
            if layer.blobs:
                self.params[name] = layer.blobs

        total = sum(b.count for b in self.learnable_params)
        self.flat_data = self.xp.zeros(total, self.dtype)
        self.flat_diff = self.xp.zeros(total, self.dtype)
        self.param_offsets: list[int] = []
        offset = 0
        for blob in self.learnable_params:
            n = blob.count
            data = self.flat_data[offset : offset + n].reshape(blob.shape)
            diff = self.flat_diff[offset : offset + n].reshape(blob.shape)
            data[...] = blob.data
            blob.share(data, diff)
            self.param_offsets.append(offset)
            offset += n
        for blob, owner_id in self._sharers:
            owner = self.learnable_params[owner_id]
            blob.share(owner.data.reshape(blob.shape), owner.diff.reshape(blob.shape))
        self._frozen = [i for i, lr in enumerate(self.params_lr) if lr == 0]
        shared = {id(blob) for blob, _ in self._sharers}
        shared |= {id(self.learnable_params[owner_id]) for _, owner_id in self._sharers}
        self._unshared_param_layers = {
            i
            for i, layer in enumerate(self.layers)
            if layer.blobs and not any(id(b) in shared for b in layer.blobs)
        }

    def _merge_mult(self, owner_id: int, spec: Any, pname: str, layer: str) -> None:
        if spec is None:
            return
        for attr, values, flags in (
            ("lr_mult", self.params_lr, self._lr_set),
            ("decay_mult", self.params_weight_decay, self._decay_set),
        ):
            if not spec.HasField(attr):
                continue
            value = getattr(spec, attr)
            if flags[owner_id] and values[owner_id] != value:
                raise NetError(
                    f"{self._where()}layer '{layer}': shared param '{pname}' has mismatched {attr}"
                )
            values[owner_id] = value
            flags[owner_id] = True

    # ------------------------------------------------------------------ running
    def forward_from_to(self, start: int = 0, end: int | None = None) -> float:
        """Run layers start..end inclusive (Caffe's ForwardFromTo); return their weighted loss."""
        end = len(self.layers) - 1 if end is None else end
        loss = 0.0
        for i in range(start, end + 1):
            layer, bottoms, tops = self.layers[i], self.bottom_vecs[i], self.top_vecs[i]
            try:
                layer.reshape(bottoms, tops)
                layer.forward(bottoms, tops)
            except EngineError:
                raise
            except Exception as exc:
                raise NetError(
                    f"{self._where()}layer '{layer.name}' (type {layer.type_name}) forward "
                    f"failed: {exc}"
                ) from exc
            for top, w in self.layer_loss_tops[i]:
                loss += w * float(top.data.sum())
        return loss

    def backward_from_to(
        self, start: int | None = None, end: int = 0, diffs_zero: bool = False
    ) -> None:
        """Run backward from layer `start` down to `end` inclusive (Caffe's BackwardFromTo).

        `diffs_zero` is the caller's promise that every param diff holds zero (it has just run
        Caffe's ClearParamDiffs, or zeroed them some other way): layers whose params nobody
        else shares may then write their gradients instead of adding them to the zeros (the
        same numbers, one pass over memory fewer; Layer.param_diffs_zero, for this pass only).
        Without it the diffs accumulate, as in Caffe."""
        start = len(self.layers) - 1 if start is None else start
        for blob, w in self.loss_tops:
            blob.diff[...] = w
        for i in range(start, end - 1, -1):
            if not self.layer_need_backward[i]:
                continue
            layer = self.layers[i]
            layer.param_diffs_zero = diffs_zero and i in self._unshared_param_layers
            try:
                layer.backward(self.top_vecs[i], self.bottom_need_backward[i], self.bottom_vecs[i])
            except EngineError:
                raise
            except Exception as exc:
                raise NetError(
                    f"{self._where()}layer '{layer.name}' (type {layer.type_name}) backward "
                    f"failed: {exc}"
                ) from exc
            finally:
                layer.param_diffs_zero = False
        for i in self._frozen:  # Caffe computes no gradient for params with lr_mult 0
            self.learnable_params[i].diff[...] = 0

    def forward(
        self,
        blobs: Sequence[str] | None = None,
        start: str | None = None,
        end: str | None = None,
        **inputs: Any,
    ) -> dict[str, Any]:
        """pycaffe's forward: set inputs from keyword arrays, run, return the outputs' data."""
        for name, value in inputs.items():
            if name not in self.blobs:
                raise KeyError(f"forward(): '{name}' is not a blob of net '{self.name}'")
            blob = self.blobs[name]
            array = self.xp.asarray(value, dtype=self.dtype)
            if tuple(array.shape) != blob.shape:
                blob.reshape(array.shape)
            blob.data[...] = array
        start_i = self.layer_names.index(start) if start else 0
        end_i = self.layer_names.index(end) if end else len(self.layers) - 1
        self.loss = self.forward_from_to(start_i, end_i)
        names = list(self.output_blob_names if end is None else self.top_names[end_i])
        names += [b for b in (blobs or []) if b not in names]
        return {n: self.blobs[n].data for n in names}

    def forward_loss(self) -> float:
        """Run the whole net forward and return the weighted sum of its losses."""
        self.loss = self.forward_from_to(0, len(self.layers) - 1)
        return self.loss

    def backward(self, diffs_zero: bool = False) -> None:
        """Backpropagate from the losses through every layer that needs it (`diffs_zero`: as
        in backward_from_to)."""
        self.backward_from_to(len(self.layers) - 1, 0, diffs_zero)

    def forward_backward(self, diffs_zero: bool = False) -> float:
        """Caffe's ForwardBackward: forward, then backward; param diffs accumulate unless the
        caller promises they hold zero (`diffs_zero`, see backward_from_to)."""
        loss = self.forward_loss()
        self.backward(diffs_zero)
        return loss

    def clear_param_diffs(self) -> None:
        self.flat_diff[...] = 0

    def reshape(self) -> None:
        for layer, bottoms, tops in zip(self.layers, self.bottom_vecs, self.top_vecs, strict=True):
            layer.reshape(bottoms, tops)

    # ------------------------------------------------------------------ pycaffe surface
    @property
    def inputs(self) -> list[str]:
        return list(self.input_blob_names)

    @property
    def outputs(self) -> list[str]:
        return list(self.output_blob_names)

    @property
    def layer_dict(self) -> OrderedDict[str, Layer]:
        return OrderedDict(zip(self.layer_names, self.layers, strict=True))

    # ------------------------------------------------------------------ what the solver keeps
    def data_layers(self) -> list[Layer]:
        """Layers reading a dataset (Data, HDF5Data): record cursor, transform RNG, rank slice."""
        return [layer for layer in self.layers if layer.reads_dataset]

    def data_cursors(self) -> list[dict[str, Any]]:
        """Where each data layer's next batch starts, with the state of its transform RNG, in net
        order and JSON-ready: [{"layer": name, "cursor": int, "rng_state": dict or None}]."""
        return [
            {"layer": layer.name, "cursor": int(layer.cursor), "rng_state": layer.rng_state}
            for layer in self.data_layers()
        ]

    def set_data_cursors(self, cursors: Sequence[dict[str, Any]]) -> list[str]:
        """Put every data layer back where data_cursors() found it (each its own entry; an entry
        without "layer" fits any layer, as a Caffe snapshot's single cursor does). Returns the
        layers whose saved generator state is of another kind (an older version's): their
        generators stay where they are."""
        layers = self.data_layers()
        if len(cursors) != len(layers):
            raise NetError(
                f"{self._where()}{len(cursors)} saved data cursors for {len(layers)} data layers"
            )
        skipped: list[str] = []
        for layer, saved in zip(layers, cursors, strict=True):
            name = saved.get("layer")
            if name is not None and name != layer.name:
                raise NetError(
                    f"{self._where()}saved data cursor of layer '{name}' does not fit data layer "
                    f"'{layer.name}' (a different net?)"
                )
            if int(layer.cursor) != int(saved["cursor"]):
                layer.cursor = int(saved["cursor"])
            state = saved.get("rng_state")
            if state is not None and not layer.accepts_rng_state(state):
                skipped.append(layer.name)
            elif state is not None:
                layer.rng_state = state
        return skipped

    def rng_state(self) -> dict[str, Any]:
        """The random streams the net draws from, JSON-ready: {"caffe_stream": Caffe's stream
        (fillers, Data-layer transformer seeds, Dropout masks on the host, DummyData refills),
        "<index>:<name>": the device stream of each noise layer (Dropout) on a GPU}."""
        states: dict[str, Any] = {STREAM_STATE_KEY: self.stream.get_state()}
        for index, layer in enumerate(self.layers):
            if layer.device_noise and layer.xp_rng is not self.stream:
                states[f"{index}:{layer.name}"] = rng_state(layer.xp_rng)
        return states

    def forward_rng_state(self) -> dict[str, Any]:
        """rng_state() when some layer draws in forward (Dropout, DummyData refills), else {}:
        what the solver takes at every iteration's start to undo a pass."""
        if not any(layer.draws_in_forward for layer in self.layers):
            return {}
        return self.rng_state()

    def set_rng_state(self, states: dict[str, Any]) -> list[str]:
        """Restore the streams of rng_state(). Returns the noise layers (Dropout) whose device
        stream could not be restored because the other backend (NumPy vs CuPy) saved it: those
        continue from their seed (on the host: from Caffe's stream), so such a resumed run is
        not bit-exact."""
        if STREAM_STATE_KEY in states:
            try:
                self.stream.set_state(states[STREAM_STATE_KEY])
            except ValueError as exc:
                raise NetError(f"{self._where()}{exc}") from None
        skipped: list[str] = []
        for index, layer in enumerate(self.layers):
            if not layer.device_noise:
                continue
            saved = states.get(f"{index}:{layer.name}")
            device_state = isinstance(saved, dict) and saved.get("kind") == "DeviceRNG"
            if layer.xp_rng is not self.stream:  # a device stream apart (CuPy)
                if device_state:
                    set_rng_state(layer.xp_rng, saved)
                elif states:  # saved by a NumPy run
                    skipped.append(layer.name)
            elif device_state:  # saved by a CuPy run
                skipped.append(layer.name)
        return skipped

    def set_rank(self, rank: int, size: int) -> None:
        """Make this net rank `rank` of `size` data-parallel ranks: every data layer serves the
        rank's slice of each global batch. Noise layers (Dropout) on the host draw the global
        batch's masks from Caffe's stream and use the rank's slice, so every n sees the
        one-process stream; on a device each rank gets a device stream of its own."""
        for layer in self.data_layers():
            layer.set_rank(rank, size)
        for index, layer in enumerate(self.layers):
            if not layer.device_noise:
                continue
            layer.rank, layer.world_size = int(rank), int(size)
            if size > 1 and layer.xp_rng is not self.stream:
                stream = np.random.SeedSequence([self.seed, index, rank])
                layer.xp_rng = make_rng(self.xp, int(stream.generate_state(1)[0]))

    # ------------------------------------------------------------------ weights
    def copy_from(self, path_or_param: Any) -> list[str]:
        """Copy weights from a .caffemodel (binary NetParameter) by layer name, as Caffe does;
        a file name ending in ".h5" is read as Caffe's HDF5 weights (.caffemodel.h5).

        Returns the names of the layers with params that the file gave no weights (they keep
        their fillers' values: a truncated file, or weights of another net)."""

        if is_hdf5_path(path_or_param):
            return self._left_at_fillers(load_net_weights(self, path_or_param))
        from engine.proto_io import (
            blob_proto_matches_shape,
            blob_proto_shape,
            blob_proto_to_array,
            read_net_weights,
        )

        source = (
            str(path_or_param) if isinstance(path_or_param, (str, os.PathLike)) else "<weights>"
        )
        param = read_net_weights(path_or_param) if source != "<weights>" else path_or_param
        layers = list(param.layer) or list(param.layers)  # V1 caffemodels use `layers`
        by_name = self.layer_dict
        written: set[int] = set()
        for src in layers:
            target = by_name.get(src.name)
            if target is None or not len(src.blobs):
                continue
            if len(src.blobs) != len(target.blobs):
                raise NetError(
                    f"{source}: layer '{src.name}' has {len(src.blobs)} blobs in the weights "
                    f"file but {len(target.blobs)} in the net"
                )
            for j, bp in enumerate(src.blobs):
                dst = target.blobs[j]
                if not blob_proto_matches_shape(bp, dst.shape):
                    raise NetError(
                        f"{source}: cannot copy param {j} of layer '{src.name}': shape "
                        f"mismatch, weights file has {blob_proto_shape(bp)}, net expects "
                        f"{dst.shape} (rename the layer to learn it from scratch)"
                    )
                try:
                    array = blob_proto_to_array(bp, shape=dst.shape, name=f"{src.name} blob {j}")
                except ValueError as exc:
                    raise NetError(f"{source}: {exc}") from exc
                dst.data[...] = self.xp.asarray(array, dtype=self.dtype)
                written.add(id(dst))
        return self._left_at_fillers(written)

    def _left_at_fillers(self, written: set[int]) -> list[str]:
        """Layers owning a param blob that no weights file wrote (shared copies not counted)."""
        owned = {id(b) for b in self.learnable_params}
        return [
            layer.name
            for layer in self.layers
            if any(id(b) in owned and id(b) not in written for b in layer.blobs)
        ]

    def share_weights_with(self, other: Net) -> None:
        """Same-named layers' param data become views of `other`'s (ShareTrainedLayersWith)."""
        theirs = other.layer_dict
        for layer in self.layers:
            src = theirs.get(layer.name)
            if src is None or not layer.blobs:
                continue
            if len(src.blobs) != len(layer.blobs):
                raise NetError(
                    f"layer '{layer.name}': {len(src.blobs)} param blobs in the source net, "
                    f"{len(layer.blobs)} here"
                )
            for mine, source_blob in zip(layer.blobs, src.blobs, strict=True):
                if mine.shape != source_blob.shape:
                    raise NetError(
                        f"layer '{layer.name}': cannot share a param of shape "
                        f"{source_blob.shape} with one of shape {mine.shape}"
                    )
                mine.share(source_blob.data, mine.diff)

    def _definition(self) -> Any:
        """The net as a .caffemodel defines it: each layer's param in this phase, no blobs."""
        out = type(self.param)()
        out.name = self.param.name
        for layer in self.layers:
            lp = out.layer.add()
            lp.CopyFrom(layer.param)
            del lp.blobs[:]
            lp.phase = 0 if self.phase == TRAIN else 1
        return out

    def _blob_arrays(self, layer: Any, write_diff: bool) -> Any:
        for blob in layer.blobs:
            yield to_numpy(blob.data), to_numpy(blob.diff) if write_diff else None

    def to_proto(self, write_diff: bool = False, legacy_shapes: bool = False) -> Any:
        """The net definition with every layer's blobs, as Caffe's Net::ToProto (.caffemodel)."""
        out = self._definition()
        for layer, lp in zip(self.layers, out.layer, strict=True):
            for data, diff in self._blob_arrays(layer, write_diff):
                array_to_blob_proto(data, diff, legacy=legacy_shapes, out=lp.blobs.add())
        return out

    def save(self, path: str, legacy_shapes: bool = False, write_diff: bool = False) -> None:
        """Write the weights (and diffs if asked, as snapshot_diff) as a binary .caffemodel,
        or in Caffe's HDF5 layout if the name ends with .h5. The binary file is to_proto's
        serialization, written from the arrays in place (engine/wire.py)."""

        if is_hdf5_path(path):
            save_net_weights(self, path, write_diff=write_diff)
            return
        blobs = [
            [blob_proto_chunks(data, diff, legacy_shapes) for data, diff in arrays]
            for arrays in (self._blob_arrays(layer, write_diff) for layer in self.layers)
        ]
        write_binary_bytes(path, wire.net_chunks(self._definition(), blobs))

    def __repr__(self) -> str:
        return f"Net('{self.name}', phase={self.phase}, layers={len(self.layers)})"
