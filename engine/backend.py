"""The array module of a Net (NumPy, or CuPy on a GPU) and every place where the two differ.

One `xp` is chosen per Net. Layers, the Net and the solvers call `xp` functions that NumPy and
CuPy share, and the helpers below for what they do not share:

- host copies (`to_numpy`) and one-copy uploads into an existing array (`copy_to_device`);
- strided read-only views (`as_strided`: CuPy's takes no `writeable`);
- scatter-add (`scatter_add`: `numpy.add.at` / `cupyx.scatter_add`);
- random generators whose state can be saved as JSON and restored exactly (`make_rng`,
  `rng_state`, `set_rng_state`: CuPy's generators expose no portable state);
- devices, streams and pinned host memory (`use_device`, `synchronize`, `pinned_empty`,
  `host_threads_allowed`).

Nothing outside this module branches on the backend.
"""

from __future__ import annotations

import sys
from types import ModuleType
from typing import Any

import numpy as np

from engine.errors import EngineError

CUPY_MISSING = (
    "the GPU (CuPy) backend was requested but CuPy is not installed: install the build for your "
    "CUDA version (pip install cupy-cuda12x, or pip install -e '.[gpu]'), or run without -gpu"
)


class BackendError(EngineError):
    """The requested array module cannot be used here (CuPy missing, no such device)."""


def get_array_module(name: str | ModuleType | None = None) -> ModuleType:
    """The array module for `name`: "numpy" (default), "cupy", or a module object itself."""
    if name is None:
        return np
    if isinstance(name, ModuleType):
        return name
    if name in ("numpy", "np", "cpu"):
        return np
    if name in ("cupy", "cp", "gpu"):
        try:
            import cupy
        except ImportError as exc:
            raise BackendError(CUPY_MISSING) from exc
        return cupy
    raise ValueError(f"unknown array module {name!r}: use 'numpy' or 'cupy'")


def is_numpy(xp: ModuleType) -> bool:
    """True for NumPy (host arrays, host threads allowed), False for a device module."""
    return xp is np


def module_of(array: Any) -> ModuleType:
    """The array module an array belongs to (NumPy for host arrays and scalars)."""
    if isinstance(array, (np.ndarray, np.generic)):
        return np
    name = type(array).__module__  # "cupy" for cupy.ndarray; the package, not a submodule
    module = sys.modules.get(name.split(".")[0]) or sys.modules.get(name)
    if module is None or not hasattr(module, "ndarray"):
        raise TypeError(f"cannot tell the array module of a {type(array).__name__}")
    return module


# ------------------------------------------------------------------------------ host <-> device
def to_numpy(array: Any) -> np.ndarray:
    """A host NumPy array with `array`'s values (no copy for NumPy input). The one way to the
    host: CuPy refuses implicit conversion (np.asarray raises), `.get()` is explicit."""
    if isinstance(array, np.ndarray):
        return array
    get = getattr(array, "get", None)
    if get is not None and not isinstance(array, dict):  # a dict's get is no device copy
        return get()
    return np.asarray(array)


def copy_to_device(dst: Any, host: np.ndarray) -> None:
    """Copy the host array `host` into the existing array `dst` (same size): one host-to-device
    transfer on CuPy (`dst.set` when `dst` is contiguous), a plain copy on NumPy."""
    if isinstance(dst, np.ndarray):
        dst[...] = host
        return
    host = np.ascontiguousarray(host, dtype=dst.dtype)
    if tuple(host.shape) != tuple(dst.shape):
        host = host.reshape(dst.shape)
    if dst.flags.c_contiguous:
        dst.set(host)
    else:  # a strided view: upload, then one device-side copy into place
        dst[...] = module_of(dst).asarray(host)


def pinned_empty(xp: ModuleType, shape: tuple[int, ...] | int, dtype: Any) -> np.ndarray:
    """A host NumPy array for staging device data; page-locked (pinned) when `xp` is CuPy, so
    transfers run at full bus speed and can be asynchronous."""
    dtype = np.dtype(dtype)
    shape = (shape,) if isinstance(shape, int) else tuple(shape)
    if is_numpy(xp):
        return np.empty(shape, dtype)
    count = int(np.prod(shape, dtype=np.int64))
    memory = xp.cuda.alloc_pinned_memory(max(count, 1) * dtype.itemsize)
    return np.frombuffer(memory, dtype, count).reshape(shape)


# ------------------------------------------------------------------------------ devices
def use_device(xp: ModuleType, device: int) -> None:
    """Make `device` current for this thread (CUDA's current device is per host thread)."""
    if is_numpy(xp):
        return
    count = device_count(xp)
    if not 0 <= device < count:
        raise BackendError(f"GPU {device} does not exist ({count} visible)")
    xp.cuda.Device(device).use()


def device_count(xp: ModuleType) -> int:
    """Number of devices `xp` sees (0 on NumPy)."""
    if is_numpy(xp):
        return 0
    try:
        return int(xp.cuda.runtime.getDeviceCount())
    except Exception:  # no driver, no device: none usable
        return 0


def current_device(xp: ModuleType) -> int | None:
    """This thread's current device id (None on NumPy)."""
    if is_numpy(xp):
        return None
    return int(xp.cuda.Device().id)


def synchronize(xp: ModuleType) -> None:
    """Wait for this thread's device work to finish (timing, before host reads). No-op on NumPy."""
    if not is_numpy(xp):
        xp.cuda.get_current_stream().synchronize()


def synchronize_array(array: Any) -> None:
    """Wait until the device has finished writing `array` (no-op for host arrays)."""
    if not isinstance(array, np.ndarray):
        synchronize(module_of(array))


def host_threads_allowed(xp: ModuleType) -> bool:
    """Layers may split work over host threads only on NumPy: on a GPU the device runs in
    parallel already, and a worker thread would have its own current device (device 0)."""
    return is_numpy(xp)


# ------------------------------------------------------------------------------ array helpers
def as_strided(xp: ModuleType, array: Any, shape: tuple[int, ...], strides: tuple[int, ...]) -> Any:
    """A strided view of `array` (read it, never write through it): NumPy's and CuPy's
    as_strided differ in keywords (CuPy has no `writeable`), so layers call this one."""
    if is_numpy(xp):
        return np.lib.stride_tricks.as_strided(array, shape, strides, writeable=False)
    return xp.lib.stride_tricks.as_strided(array, shape=shape, strides=strides)


def _cupyx(xp: ModuleType) -> ModuleType:
    """CuPy's companion module `cupyx` (a stand-in module carries its own as `xp.cupyx`)."""
    own = getattr(xp, "cupyx", None)
    if own is not None:
        return own
    import cupyx

    return cupyx


def scatter_add(xp: ModuleType, array: Any, indices: Any, values: Any) -> None:
    """array[indices] += values with repeated indices all counted (numpy.add.at semantics)."""
    if is_numpy(xp):
        np.add.at(array, indices, values)
    else:
        _cupyx(xp).scatter_add(array, indices, values)


# ------------------------------------------------------------------------------ random streams
_PHILOX = "CURAND_RNG_PSEUDO_PHILOX4_32_10"


class DeviceRNG:
    """A random stream on the device whose whole state is (seed, draws), so it is saved as JSON
    and restored exactly, which CuPy's generators do not allow (their state lives on the device).

    Draw k comes from a counter-based cuRAND Philox generator reseeded with
    SeedSequence([seed, k]): reseeding Philox costs no state set-up, the k-th draw depends only on
    (seed, k), and a resumed run continues the same stream. Only the methods layers use are here.
    """

    def __init__(self, xp: ModuleType, seed: int | None) -> None:
        self.xp = xp
        self.seed = int(np.random.SeedSequence(seed).entropy) if seed is None else int(seed)
        self.draws = 0
        self._generator: Any = None  # created on first use, on the then-current device

    def _next(self) -> Any:
        words = np.random.SeedSequence([self.seed, self.draws]).generate_state(2, np.uint32)
        sub_seed = np.uint64((int(words[0]) << 32) | int(words[1]))  # CuPy casts "safe" to uint64
        if self._generator is None:
            method = getattr(self.xp.cuda.curand, _PHILOX)
            self._generator = self.xp.random.RandomState(sub_seed, method=method)
        else:
            self._generator.seed(sub_seed)
        self.draws += 1
        return self._generator

    def random(self, size: Any = None, dtype: Any = np.float64) -> Any:
        """Uniform [0, 1) samples of `dtype` (float32 or float64), as Generator.random."""
        return self._next().random_sample(size=size, dtype=dtype)

    def standard_normal(self, size: Any = None, dtype: Any = np.float64) -> Any:
        """N(0, 1) samples of `dtype`, as Generator.standard_normal."""
        return self._next().standard_normal(size=size, dtype=dtype)

    def get_state(self) -> dict[str, Any]:
        return {"kind": "DeviceRNG", "seed": self.seed, "draws": self.draws}

    def set_state(self, state: dict[str, Any]) -> None:
        if state.get("kind") != "DeviceRNG":
            raise ValueError(
                f"cannot restore a device random stream from a {state.get('kind') or 'host'} "
                "generator state (snapshot taken with the other backend?)"
            )
        self.seed, self.draws = int(state["seed"]), int(state["draws"])


def make_rng(xp: ModuleType, seed: int | None) -> Any:
    """A seeded generator making `xp` arrays: NumPy's Generator, or a DeviceRNG on CuPy."""
    if is_numpy(xp):
        return np.random.default_rng(seed)
    return DeviceRNG(xp, seed)


def rng_state(rng: Any) -> dict[str, Any]:
    """A JSON-serializable state of a generator made by `make_rng` (restored by set_rng_state)."""
    if isinstance(rng, DeviceRNG):
        return rng.get_state()
    return rng.bit_generator.state


def set_rng_state(rng: Any, state: dict[str, Any]) -> None:
    """Put a generator made by `make_rng` back into a state taken by `rng_state`."""
    if isinstance(rng, DeviceRNG):
        rng.set_state(state)
        return
    if state.get("kind") == "DeviceRNG":
        raise ValueError(
            "cannot restore a host random generator from a device (CuPy) stream state "
            "(snapshot taken on the GPU?)"
        )
    rng.bit_generator.state = state
