"""Layer base class and the registry that maps Caffe type strings to Layer classes."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any, ClassVar, TypeVar

import numpy as np

from engine.backend import is_numpy, make_rng
from engine.blob import Blob
from engine.boost_random import CaffeRNG
from engine.errors import NetError, UnknownLayerTypeError
from engine.fillers import fill

TRAIN = "TRAIN"
TEST = "TEST"

_LAYER_TYPES: dict[str, type[Layer]] = {}
_V1_NAMES: dict[str, str] = {}

L = TypeVar("L", bound="type[Layer]")


def register_layer(type_name: str, v1_name: str | None = None) -> Callable[[L], L]:
    """Class decorator registering a Layer under Caffe's type string (and its V1 enum name)."""

    def wrap(cls: L) -> L:
        if type_name in _LAYER_TYPES:
            raise RuntimeError(f"layer type {type_name!r} registered twice")
        cls.type_name = type_name
        _LAYER_TYPES[type_name] = cls
        if v1_name:
            _V1_NAMES[v1_name] = type_name
        return cls

    return wrap


def layer_class(type_name: str, layer_name: str = "?") -> type[Layer]:
    """The Layer class for a Caffe type string; a clear error naming the layer if unknown."""
    import engine.layers  # noqa: F401 - registers every built-in layer

    if type_name not in _LAYER_TYPES and type_name in _V1_NAMES:
        type_name = _V1_NAMES[type_name]
    try:
        return _LAYER_TYPES[type_name]
    except KeyError:
        known = ", ".join(sorted(_LAYER_TYPES))
        raise UnknownLayerTypeError(
            f"layer '{layer_name}': unknown layer type '{type_name}' (known types: {known})"
        ) from None


def registered_types() -> list[str]:
    import engine.layers  # noqa: F401

    return sorted(_LAYER_TYPES)


class Layer:
    """One Caffe layer: `setup` shapes tops and creates params, then `forward` and `backward`.

    `backward` overwrites (never accumulates into) bottom diffs; param diffs are accumulated,
    as Caffe does, so that iter_size and shared params work.
    """

    type_name: ClassVar[str] = ""
    exact_num_bottoms: ClassVar[int | None] = None
    min_bottoms: ClassVar[int | None] = None
    max_bottoms: ClassVar[int | None] = None
    exact_num_tops: ClassVar[int | None] = None
    min_tops: ClassVar[int | None] = None
    max_tops: ClassVar[int | None] = None
    is_loss: ClassVar[bool] = False  # loss layers weight top 0 by 1 unless loss_weight says else
    # Layers reading a dataset (Data, HDF5Data) have `cursor`, `rng_state` and `set_rank`; the Net
    # saves and rewinds them apart from the other layers' random streams.
    reads_dataset: ClassVar[bool] = False
    # Layers drawing per-sample noise in forward (Dropout): on the host from Caffe's stream for
    # the whole global batch (Net.set_rank gives the rank its slice), on a device from a device
    # stream of their own per rank; a resumed run is exact only if the stream is restored.
    device_noise: ClassVar[bool] = False
    # Layers that draw random numbers in forward (Dropout masks, DummyData refills): the solver
    # saves their streams at every iteration's start (Net.forward_rng_state) to undo a pass.
    draws_in_forward: ClassVar[bool] = False
    # Set by the Net for one backward when this layer's param diffs are known to hold zeros (the
    # solver has just cleared them) and no other layer shares them: the layer may then write its
    # param gradients instead of adding them, sparing a pass over memory. Ignoring it is correct.
    param_diffs_zero: bool = False

    def __init__(
        self,
        param: Any,
        phase: str = TRAIN,
        xp: ModuleType = np,
        dtype: np.dtype | type = np.float32,
        seed: int | None = None,
        stream: CaffeRNG | None = None,
    ) -> None:
        self.param = param
        self.name: str = param.name
        self.phase = phase
        self.xp = xp
        self.dtype = np.dtype(dtype)
        # Caffe's CPU stream (boost mt19937), shared by every layer of a net and by the solver's
        # nets: fillers, Data-layer transformer seeds, Dropout masks. A layer built alone gets
        # one of its own from `seed`.
        if stream is None:
            stream = CaffeRNG(np.random.SeedSequence(seed).generate_state(1)[0])
        self.stream = stream
        # Host draws that Caffe does not take from its stream (HDF5Data's shuffle, rand_skip).
        self.rng: np.random.Generator = np.random.default_rng(seed)
        # Per-sample noise in forward (Dropout masks): Caffe's stream on the host, a device
        # stream on CuPy (Caffe's GPU mode draws these with cuRAND, not boost).
        self.xp_rng: Any = self.stream if is_numpy(xp) else make_rng(xp, seed)
        self.blobs: list[Blob] = []

    # --- lifecycle -------------------------------------------------------------------------
    def setup(self, bottoms: Sequence[Blob], tops: Sequence[Blob]) -> None:
        self.check_blob_counts(bottoms, tops)
        self.layer_setup(bottoms, tops)
        self.reshape(bottoms, tops)

    def layer_setup(self, bottoms: Sequence[Blob], tops: Sequence[Blob]) -> None:
        """One-time setup: read the layer's parameters, create and fill param blobs."""

    def reshape(self, bottoms: Sequence[Blob], tops: Sequence[Blob]) -> None:
        """Shape the tops (and any buffers) from the bottoms' shapes; called before each forward."""
        raise NotImplementedError

    def forward(self, bottoms: Sequence[Blob], tops: Sequence[Blob]) -> None:
        raise NotImplementedError

    def backward(
        self, tops: Sequence[Blob], propagate_down: Sequence[bool], bottoms: Sequence[Blob]
    ) -> None:
        """Write bottom diffs where propagate_down[i]; accumulate param diffs."""
        if any(propagate_down):
            raise self.error("this layer cannot backpropagate to its bottoms")

    def allow_force_backward(self, bottom_index: int) -> bool:
        """False for inputs that have no gradient (labels of loss layers)."""
        return True

    def accepts_rng_state(self, state: Any) -> bool:
        """Whether a saved generator state (a data layer's `rng_state`) is of this layer's kind."""
        return True

    # --- helpers ---------------------------------------------------------------------------
    def error(self, message: str) -> NetError:
        return NetError(f"layer '{self.name}' (type {self.type_name}): {message}")

    def check_blob_counts(self, bottoms: Sequence[Blob], tops: Sequence[Blob]) -> None:
        nb, nt = len(bottoms), len(tops)
        checks = [
            (self.exact_num_bottoms, nb, "exactly", "bottom", lambda a, b: a == b),
            (self.min_bottoms, nb, "at least", "bottom", lambda a, b: a >= b),
            (self.max_bottoms, nb, "at most", "bottom", lambda a, b: a <= b),
            (self.exact_num_tops, nt, "exactly", "top", lambda a, b: a == b),
            (self.min_tops, nt, "at least", "top", lambda a, b: a >= b),
            (self.max_tops, nt, "at most", "top", lambda a, b: a <= b),
        ]
        for want, have, how, what, ok in checks:
            if want is not None and not ok(have, want):
                raise self.error(f"takes {how} {want} {what} blob(s), got {have}")

    def new_param_blob(self, shape: Sequence[int], filler: Any | None = None) -> Blob:
        """Create a learnable param blob, filled on the host by `filler` (a FillerParameter) from
        Caffe's stream, so the draws follow Caffe's order: layer by layer, weights then bias."""

        blob = Blob(shape, self.xp, self.dtype)
        if filler is not None:
            blob.data[...] = self.xp.asarray(fill(filler, tuple(shape), self.stream, self.dtype))
        self.blobs.append(blob)
        return blob
