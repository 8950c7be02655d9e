"""`fakecupy`: a strict CuPy stand-in for the default test suite, NumPy underneath.

Passing `fakecupy` as `xp` to a Net or a layer runs the engine's CuPy path on a machine without a
GPU, and fails wherever the real CuPy would (or might) fail:

- Arrays are `fakecupy.ndarray`, a wrapper (not a NumPy subclass). Implicit host conversion raises
  as CuPy's does (`np.asarray(a)`, `np.float32(a)`, NumPy functions and ufuncs on it); `.get()`,
  `fakecupy.asnumpy` and `float()`/`int()`/`bool()` of one element are the ways to the host.
  Mixing in NumPy arrays raises ("Unsupported type"), and so does `a[...] = numpy_array`
  (CuPy's "non-scalar numpy.ndarray cannot be used for fill"); NumPy index arrays are accepted as
  CuPy converts them. Indexing one element gives a 0-d *view* (CuPy), not a NumPy scalar copy,
  and full reductions give 0-d arrays.
- Only the functions the engine needs are wrapped, each with CuPy's own signature (keyword
  arguments CuPy does not take raise TypeError); any other name raises AttributeError. Ufuncs
  take only `out`, `dtype` and `casting`, as CuPy's; `ufunc.at` is left out on purpose (CuPy
  before 13 lacks it; `cupyx.scatter_add` is the portable spelling).
- Devices are per host thread as in CUDA: `cuda.Device(n).use()` sets this thread's current
  device, arrays remember the device they were made on, and an operation on an array of another
  device raises CuPy's "Array device must be same as the current device" error. A layer that
  hands device work to a worker thread (whose current device is 0) is caught this way when the
  test runs on device 1.
- `random`: `default_rng(seed)` returns a Generator whose bit generator has no NumPy-style
  `state` property (CuPy's `state` is a method returning a device pointer), and the legacy
  `RandomState(seed, method)` whose `seed()` casts "safe" to uint64 (a Python int is refused on
  NumPy 2, as CuPy's code does). The numbers are NumPy's, not cuRAND's.
- `cuda`: `Device`, `runtime.getDeviceCount` (DEVICE_COUNT devices), streams whose
  `synchronize` calls are counted, `alloc_pinned_memory` (a bytearray-backed buffer that
  `np.frombuffer` accepts, counted), `curand` method constants; `lib.stride_tricks.as_strided(x,
  shape=None, strides=None)` (no `writeable`); `cupyx.scatter_add(a, slices, value)`;
  `asnumpy(a, stream=None, order='C', out=None, *, blocking=True)`.

Counters for tests live in `fakecupy._standin` (host-to-device and device-to-host copies,
synchronizations, pinned allocations) together with `is_pinned(array)` and `reset()`.

Assumptions (CuPy 13 API, from its documentation and source): signatures as written below;
`ndarray.get(stream=None, order='C', out=None, blocking=True)` and `ndarray.set(arr,
stream=None)` require matching shape and dtype; `cupyx.scatter_add` behaves as `numpy.add.at`.
"""

from __future__ import annotations

import builtins
import operator
import sys
import threading
import types
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

DEVICE_COUNT = 2
_SCALARS = (bool, int, float, complex, np.generic)
_tls = threading.local()


class _Counters:
    """What the engine asked of the stand-in device, for tests to assert on."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.h2d = 0  # host-to-device copies (asarray/array of host data, ndarray.set)
        self.d2h = 0  # device-to-host copies (get, asnumpy)
        self.syncs = 0  # stream / device synchronizations
        self.pinned = 0  # alloc_pinned_memory calls
        self.pinned_bytes = 0


COUNTERS = _Counters()


def _current() -> int:
    return getattr(_tls, "device", 0)


class CUDARuntimeError(RuntimeError):
    """cupy.cuda.runtime.CUDARuntimeError."""


# ------------------------------------------------------------------------------ ndarray
def _wrap(array: Any, device: int | None = None) -> ndarray:
    """A stand-in array around a NumPy array (NumPy scalars become 0-d arrays, as in CuPy)."""
    if not isinstance(array, np.ndarray):
        array = np.asarray(array)
    obj = ndarray.__new__(ndarray)
    obj._a = array
    obj._dev = _current() if device is None else device
    return obj


def _result(value: Any) -> Any:
    if isinstance(value, tuple):
        return tuple(_result(v) for v in value)
    if isinstance(value, (np.ndarray, np.generic)):
        return _wrap(value)
    return value


def _operand(x: Any) -> Any:
    """An argument of an elementwise operation: a device array or a scalar, nothing else."""
    if isinstance(x, ndarray):
        return x._checked()
    if isinstance(x, _SCALARS):
        return x
    raise TypeError(f"Unsupported type {type(x)}")


def _array(x: Any, what: str = "a") -> np.ndarray:
    """An argument that must be a device array (CuPy refuses host arrays there)."""
    if isinstance(x, ndarray):
        return x._checked()
    raise TypeError(f"Unsupported type {type(x)} for argument {what} (expected cupy.ndarray)")


def _array_or_scalar(x: Any) -> Any:
    if isinstance(x, ndarray):
        return x._checked()
    if isinstance(x, _SCALARS):
        return np.asarray(x)
    raise TypeError(f"Unsupported type {type(x)}")


def _out_array(out: Any) -> np.ndarray | None:
    if out is None:
        return None
    if not isinstance(out, ndarray):
        raise TypeError("Output argument must be cupy.ndarray, got " + type(out).__name__)
    return out._checked()


def _index(key: Any) -> Any:
    """An index as CuPy takes it: ints, slices, None, Ellipsis, device arrays, and host index
    arrays/lists (which CuPy copies to the device)."""
    if isinstance(key, tuple):
        return tuple(_index(k) for k in key)
    if isinstance(key, ndarray):
        a = key._checked()
        if a.dtype.kind not in "biu":
            raise IndexError("arrays used as indices must be of integer or boolean type")
        return a
    if isinstance(key, (np.ndarray, list)):
        a = np.asarray(key)
        if a.size and a.dtype.kind not in "biu":
            raise IndexError("arrays used as indices must be of integer or boolean type")
        COUNTERS.h2d += 1
        return a
    if key is None or key is Ellipsis or isinstance(key, (slice, int, np.integer)):
        return key
    raise IndexError(
        f"only integers, slices, ellipsis, None and integer or boolean arrays are "
        f"valid indices (got {type(key).__name__})"
    )


class _Flags:
    def __init__(self, a: np.ndarray) -> None:
        self.c_contiguous = bool(a.flags.c_contiguous)
        self.f_contiguous = bool(a.flags.f_contiguous)
        self.owndata = bool(a.flags.owndata)

    def __getitem__(self, name: str) -> bool:
        return {
            "C_CONTIGUOUS": self.c_contiguous,
            "F_CONTIGUOUS": self.f_contiguous,
            "OWNDATA": self.owndata,
        }[name]


def _binary(op: Callable[[Any, Any], Any], reflected: bool = False) -> Callable:
    def method(self: ndarray, other: Any) -> Any:
        a, b = self._checked(), _operand(other)
        return _result(op(b, a) if reflected else op(a, b))

    return method


def _inplace(op: Callable[[Any, Any], Any]) -> Callable:
    def method(self: ndarray, other: Any) -> ndarray:
        op(self._checked(), _operand(other))
        return self

    return method


def _unary(op: Callable[[Any], Any]) -> Callable:
    def method(self: ndarray) -> Any:
        return _result(op(self._checked()))

    return method


class ndarray:  # CuPy's name
    """cupy.ndarray(shape, dtype=float, memptr=None, strides=None, order='C')."""

    __slots__ = ("_a", "_dev")
    __array_ufunc__ = None  # NumPy ufuncs and operators refuse it instead of converting
    __hash__ = None  # type: ignore[assignment]

    def __init__(
        self,
        shape: Any,
        dtype: Any = float,
        memptr: Any = None,
        strides: Any = None,
        order: str = "C",
    ) -> None:
        if memptr is not None or strides is not None:
            raise NotImplementedError("fakecupy.ndarray: memptr/strides are not emulated")
        self._a = np.empty(shape, dtype, order=order)
        self._dev = _current()

    # --- strictness ------------------------------------------------------------------------
    def _checked(self) -> np.ndarray:
        current = _current()
        if self._dev != current:
            raise ValueError(
                "Array device must be same as the current device: array device = "
                f"{self._dev} while current = {current}"
            )
        return self._a

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        raise TypeError(
            "Implicit conversion to a NumPy array is not allowed. Please use `.get()` to "
            "construct a NumPy array explicitly."
        )

    def __array_function__(self, func: Any, types_: Any, args: Any, kwargs: Any) -> Any:
        raise TypeError(
            f"fakecupy: numpy.{func.__name__} was called on a device array; use the array "
            "module (xp) or engine.backend instead"
        )

    # --- attributes ------------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, ...]:
        return self._a.shape

    @shape.setter
    def shape(self, value: Any) -> None:
        self._a.shape = value

    @property
    def dtype(self) -> np.dtype:
        return self._a.dtype

    @property
    def ndim(self) -> int:
        return self._a.ndim

    @property
    def size(self) -> int:
        return self._a.size

    @property
    def strides(self) -> tuple[int, ...]:
        return self._a.strides

    @property
    def itemsize(self) -> int:
        return self._a.itemsize

    @property
    def nbytes(self) -> int:
        return self._a.nbytes

    @property
    def flags(self) -> _Flags:
        return _Flags(self._a)

    @property
    def T(self) -> ndarray:
        return _wrap(self._checked().T, self._dev)

    @property
    def device(self) -> Device:
        return Device(self._dev)

    # --- host transfers --------------------------------------------------------------------
    def get(
        self,
        stream: Any = None,
        order: str = "C",
        out: np.ndarray | None = None,
        blocking: bool = True,
    ) -> np.ndarray:
        a = self._checked()
        COUNTERS.d2h += 1
        if out is None:
            return np.array(a, order=order, copy=True)
        if not isinstance(out, np.ndarray):
            raise TypeError("Only numpy.ndarray can be obtained from cupy.ndarray")
        if out.dtype != a.dtype:
            raise TypeError(f"{out.dtype} array cannot be obtained from {a.dtype} array")
        if out.shape != a.shape:
            raise ValueError(f"Shape mismatch. Old shape: {out.shape}, new shape: {a.shape}")
        np.copyto(out, a)
        return out

    def set(self, arr: np.ndarray, stream: Any = None) -> None:
        a = self._checked()
        if not isinstance(arr, np.ndarray):
            raise TypeError("Only numpy.ndarray can be set to cupy.ndarray")
        if a.dtype != arr.dtype:
            raise TypeError(f"{arr.dtype} array cannot be set to {a.dtype} array")
        if a.shape != arr.shape:
            raise ValueError(f"Shape mismatch. Old shape: {a.shape}, new shape: {arr.shape}")
        if not a.flags.c_contiguous:
            raise RuntimeError("Cannot set to non-contiguous array")
        COUNTERS.h2d += 1
        np.copyto(a, arr)

    # --- indexing --------------------------------------------------------------------------
    def __getitem__(self, key: Any) -> ndarray:
        a = self._checked()
        k = _index(key)
        r = a[k]
        if not isinstance(r, np.ndarray):  # one element: CuPy returns a 0-d view, not a copy
            r = a[(*(k if isinstance(k, tuple) else (k,)), Ellipsis)]
        return _wrap(r, self._dev)

    def __setitem__(self, key: Any, value: Any) -> None:
        a = self._checked()
        if isinstance(value, ndarray):
            v = value._checked()
        elif isinstance(value, np.ndarray):
            if value.shape != ():
                raise ValueError("non-scalar numpy.ndarray cannot be used for fill")
            v = value
        elif isinstance(value, _SCALARS):
            v = value
        else:
            raise TypeError(f"Unsupported type {type(value)}")
        a[_index(key)] = v

    def __len__(self) -> int:
        return len(self._checked())

    def __iter__(self) -> Iterator[ndarray]:
        if self.ndim == 0:
            raise TypeError("iteration over a 0-d array")
        return (self[i] for i in range(len(self)))

    # --- scalars (explicit, synchronizing, as CuPy's) --------------------------------------
    def __float__(self) -> float:
        return float(self._checked())

    def __int__(self) -> int:
        return int(self._checked())

    def __complex__(self) -> complex:
        return complex(self._checked())

    def __bool__(self) -> bool:
        return bool(self._checked())

    def item(self) -> Any:
        COUNTERS.d2h += 1
        return self._checked().item()

    def tolist(self) -> Any:
        COUNTERS.d2h += 1
        return self._checked().tolist()

    def __repr__(self) -> str:
        return repr(self._a).replace("array(", "fakecupy.array(", 1)

    def __str__(self) -> str:
        return str(self._a)

    def __format__(self, spec: str) -> str:
        return format(self._checked(), spec)

    def __copy__(self) -> ndarray:
        return self.copy()

    def __deepcopy__(self, memo: Any) -> ndarray:
        return self.copy()

    def __reduce__(self) -> tuple:
        return (_from_pickle, (np.array(self._a), self._dev))

    # --- operators -------------------------------------------------------------------------
    __add__ = _binary(operator.add)
    __radd__ = _binary(operator.add, True)
    __sub__ = _binary(operator.sub)
    __rsub__ = _binary(operator.sub, True)
    __mul__ = _binary(operator.mul)
    __rmul__ = _binary(operator.mul, True)
    __truediv__ = _binary(operator.truediv)
    __rtruediv__ = _binary(operator.truediv, True)
    __floordiv__ = _binary(operator.floordiv)
    __rfloordiv__ = _binary(operator.floordiv, True)
    __mod__ = _binary(operator.mod)
    __rmod__ = _binary(operator.mod, True)
    __pow__ = _binary(operator.pow)
    __rpow__ = _binary(operator.pow, True)
    __and__ = _binary(operator.and_)
    __rand__ = _binary(operator.and_, True)
    __or__ = _binary(operator.or_)
    __ror__ = _binary(operator.or_, True)
    __xor__ = _binary(operator.xor)
    __rxor__ = _binary(operator.xor, True)
    __lt__ = _binary(operator.lt)
    __le__ = _binary(operator.le)
    __gt__ = _binary(operator.gt)
    __ge__ = _binary(operator.ge)
    __eq__ = _binary(operator.eq)  # type: ignore[assignment]
    __ne__ = _binary(operator.ne)  # type: ignore[assignment]
    __iadd__ = _inplace(operator.iadd)
    __isub__ = _inplace(operator.isub)
    __imul__ = _inplace(operator.imul)
    __itruediv__ = _inplace(operator.itruediv)
    __ifloordiv__ = _inplace(operator.ifloordiv)
    __ipow__ = _inplace(operator.ipow)
    __iand__ = _inplace(operator.iand)
    __ior__ = _inplace(operator.ior)
    __neg__ = _unary(operator.neg)
    __pos__ = _unary(operator.pos)
    __abs__ = _unary(operator.abs)
    __invert__ = _unary(operator.invert)

    def __matmul__(self, other: Any) -> ndarray:
        return _wrap(self._checked() @ _array(other, "b"))

    def __rmatmul__(self, other: Any) -> ndarray:
        return _wrap(_array(other, "a") @ self._checked())

    # --- methods (CuPy's signatures) -------------------------------------------------------
    def reshape(self, *shape: Any, order: str = "C") -> ndarray:
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        return _wrap(self._checked().reshape(shape, order=order), self._dev)

    def astype(
        self,
        dtype: Any,
        order: str = "K",
        casting: Any = None,
        subok: Any = None,
        copy: bool = True,
    ) -> ndarray:
        kw = {} if casting is None else {"casting": casting}
        return _wrap(self._checked().astype(dtype, order=order, copy=copy, **kw), self._dev)

    def copy(self, order: str = "C") -> ndarray:
        return _wrap(self._checked().copy(order=order), self._dev)

    def view(self, dtype: Any = None, array_class: Any = None) -> ndarray:
        a = self._checked()
        return _wrap(a.view() if dtype is None else a.view(dtype), self._dev)

    def ravel(self, order: str = "C") -> ndarray:
        return _wrap(self._checked().ravel(order), self._dev)

    def flatten(self, order: str = "C") -> ndarray:
        return _wrap(self._checked().flatten(order), self._dev)

    def transpose(self, *axes: Any) -> ndarray:
        return _wrap(self._checked().transpose(*axes), self._dev)

    def swapaxes(self, axis1: int, axis2: int) -> ndarray:
        return _wrap(self._checked().swapaxes(axis1, axis2), self._dev)

    def squeeze(self, axis: Any = None) -> ndarray:
        return _wrap(self._checked().squeeze(axis), self._dev)

    def fill(self, value: Any) -> None:
        self[...] = value

    def sum(self, axis: Any = None, dtype: Any = None, out: Any = None, keepdims: bool = False):
        return sum(self, axis, dtype, out, keepdims)

    def mean(self, axis: Any = None, dtype: Any = None, out: Any = None, keepdims: bool = False):
        return mean(self, axis, dtype, out, keepdims)

    def var(
        self,
        axis: Any = None,
        dtype: Any = None,
        out: Any = None,
        ddof: int = 0,
        keepdims: bool = False,
    ) -> Any:
        return var(self, axis, dtype, out, ddof, keepdims)

    def std(
        self,
        axis: Any = None,
        dtype: Any = None,
        out: Any = None,
        ddof: int = 0,
        keepdims: bool = False,
    ) -> Any:
        return std(self, axis, dtype, out, ddof, keepdims)

    def max(self, axis: Any = None, out: Any = None, keepdims: bool = False) -> Any:
        return amax(self, axis, out, keepdims)

    def min(self, axis: Any = None, out: Any = None, keepdims: bool = False) -> Any:
        return amin(self, axis, out, keepdims)

    def argmax(self, axis: Any = None, out: Any = None, dtype: Any = None, keepdims=False):
        return argmax(self, axis, dtype, out, keepdims)

    def argmin(self, axis: Any = None, out: Any = None, dtype: Any = None, keepdims=False):
        return argmin(self, axis, dtype, out, keepdims)

    def prod(self, axis: Any = None, dtype: Any = None, out: Any = None, keepdims=False):
        return prod(self, axis, dtype, out, keepdims)

    def cumsum(self, axis: Any = None, dtype: Any = None, out: Any = None) -> ndarray:
        return cumsum(self, axis, dtype, out)

    def any(self, axis: Any = None, out: Any = None, keepdims: bool = False) -> Any:
        return any(self, axis, out, keepdims)

    def all(self, axis: Any = None, out: Any = None, keepdims: bool = False) -> Any:
        return all(self, axis, out, keepdims)

    def dot(self, b: Any, out: Any = None) -> ndarray:
        return dot(self, b, out)

    def clip(self, min: Any = None, max: Any = None, out: Any = None) -> ndarray:
        return clip(self, min, max, out)

    def take(self, indices: Any, axis: Any = None, out: Any = None) -> ndarray:
        return take(self, indices, axis, out)

    def repeat(self, repeats: Any, axis: Any = None) -> ndarray:
        return repeat(self, repeats, axis)

    def nonzero(self) -> tuple[ndarray, ...]:
        return nonzero(self)


def _from_pickle(values: np.ndarray, device: int) -> ndarray:
    return _wrap(values, device)


# ------------------------------------------------------------------------------ ufuncs
class ufunc:  # CuPy's name
    """cupy.ufunc: `__call__(*args, out=None, dtype=None, casting=...)`, reduce, accumulate."""

    def __init__(self, name: str, nin: int, nout: int = 1) -> None:
        self.__name__ = self.name = name
        self.nin, self.nout = nin, nout
        self.nargs = nin + nout
        self._np = getattr(np, name)

    def __repr__(self) -> str:
        return f"<ufunc '{self.name}'>"

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        out = kwargs.pop("out", None)
        dtype = kwargs.pop("dtype", None)
        casting = kwargs.pop("casting", "same_kind")
        if kwargs:
            raise TypeError(f"Wrong arguments {kwargs}")
        if len(args) not in (self.nin, self.nargs):
            raise TypeError(
                f"Wrong number of arguments for {self.name!r}. It must be either {self.nin} or "
                f"{self.nargs} (with outputs), but given {len(args)}."
            )
        if out is not None:
            if len(args) != self.nin:
                raise ValueError("Cannot specify 'out' as both a positional and keyword argument")
            args = (*args, *(out if isinstance(out, tuple) else (out,)))
        ins = [_operand(a) for a in args[: self.nin]]
        outs = [_out_array(o) for o in args[self.nin :]]
        kw: dict[str, Any] = {"casting": casting}
        if dtype is not None:
            kw["dtype"] = dtype
        if outs:
            self._np(*ins, out=tuple(outs), **kw)
            given = args[self.nin :]
            return given[0] if self.nout == 1 else tuple(given)
        return _result(self._np(*ins, **kw))

    def reduce(
        self,
        array: Any,
        axis: Any = 0,
        dtype: Any = None,
        out: Any = None,
        keepdims: bool = False,
    ) -> Any:
        o = _out_array(out)
        r = self._np.reduce(_array(array), axis=axis, dtype=dtype, out=o, keepdims=keepdims)
        return out if out is not None else _result(r)

    def accumulate(self, array: Any, axis: int = 0, dtype: Any = None, out: Any = None) -> Any:
        o = _out_array(out)
        r = self._np.accumulate(_array(array), axis=axis, dtype=dtype, out=o)
        return out if out is not None else _result(r)


_UFUNCS_1 = (
    "negative abs absolute sign exp expm1 log log1p log2 log10 sqrt square reciprocal tanh sinh "
    "cosh sin cos floor ceil trunc rint isfinite isnan isinf logical_not invert"
).split()
_UFUNCS_2 = (
    "add subtract multiply divide true_divide floor_divide power remainder mod fmod maximum "
    "minimum fmax fmin logaddexp greater greater_equal less less_equal equal not_equal "
    "logical_and logical_or logical_xor bitwise_and bitwise_or hypot arctan2 copysign"
).split()


# ------------------------------------------------------------------------------ functions
def _reduction(np_func: Callable, a: Any, out: Any, **kw: Any) -> Any:
    o = _out_array(out)
    r = np_func(_array(a), out=o, **kw)
    return out if out is not None else _result(r)


def sum(a: Any, axis: Any = None, dtype: Any = None, out: Any = None, keepdims=False):
    return _reduction(np.sum, a, out, axis=axis, dtype=dtype, keepdims=keepdims)


def mean(a: Any, axis: Any = None, dtype: Any = None, out: Any = None, keepdims=False):
    return _reduction(np.mean, a, out, axis=axis, dtype=dtype, keepdims=keepdims)


def var(
    a: Any, axis: Any = None, dtype: Any = None, out: Any = None, ddof: int = 0, keepdims=False
) -> Any:
    return _reduction(np.var, a, out, axis=axis, dtype=dtype, ddof=ddof, keepdims=keepdims)


def std(
    a: Any, axis: Any = None, dtype: Any = None, out: Any = None, ddof: int = 0, keepdims=False
) -> Any:
    return _reduction(np.std, a, out, axis=axis, dtype=dtype, ddof=ddof, keepdims=keepdims)


def prod(a: Any, axis: Any = None, dtype: Any = None, out: Any = None, keepdims=False):
    return _reduction(np.prod, a, out, axis=axis, dtype=dtype, keepdims=keepdims)


def amax(a: Any, axis: Any = None, out: Any = None, keepdims: bool = False) -> Any:
    return _reduction(np.max, a, out, axis=axis, keepdims=keepdims)


def amin(a: Any, axis: Any = None, out: Any = None, keepdims: bool = False) -> Any:
    return _reduction(np.min, a, out, axis=axis, keepdims=keepdims)


def any(a: Any, axis: Any = None, out: Any = None, keepdims: bool = False) -> Any:
    return _reduction(np.any, a, out, axis=axis, keepdims=keepdims)


def all(a: Any, axis: Any = None, out: Any = None, keepdims: bool = False) -> Any:
    return _reduction(np.all, a, out, axis=axis, keepdims=keepdims)


def argmax(a: Any, axis: Any = None, dtype: Any = None, out: Any = None, keepdims=False):
    r = _reduction(np.argmax, a, out, axis=axis, keepdims=keepdims)
    return r.astype(dtype) if dtype is not None and out is None else r


def argmin(a: Any, axis: Any = None, dtype: Any = None, out: Any = None, keepdims=False):
    r = _reduction(np.argmin, a, out, axis=axis, keepdims=keepdims)
    return r.astype(dtype) if dtype is not None and out is None else r


def cumsum(a: Any, axis: Any = None, dtype: Any = None, out: Any = None) -> Any:
    return _reduction(np.cumsum, a, out, axis=axis, dtype=dtype)


def count_nonzero(a: Any, axis: Any = None) -> Any:
    return _result(np.asarray(np.count_nonzero(_array(a), axis=axis)))


def _new(np_func: Callable, *args: Any, **kwargs: Any) -> ndarray:
    return _wrap(np_func(*args, **kwargs))


def empty(shape: Any, dtype: Any = float, order: str = "C") -> ndarray:
    return _new(np.empty, shape, dtype, order=order)


def zeros(shape: Any, dtype: Any = float, order: str = "C") -> ndarray:
    return _new(np.zeros, shape, dtype, order=order)


def ones(shape: Any, dtype: Any = float, order: str = "C") -> ndarray:
    return _new(np.ones, shape, dtype, order=order)


def full(shape: Any, fill_value: Any, dtype: Any = None, order: str = "C") -> ndarray:
    return _new(np.full, shape, _operand(fill_value), dtype, order=order)


def _like(np_func: Callable, a: Any, dtype: Any, order: str, shape: Any, *extra: Any) -> ndarray:
    return _wrap(np_func(_array(a), *extra, dtype=dtype, order=order, shape=shape))


def empty_like(a: Any, dtype: Any = None, order: str = "K", subok: Any = None, shape=None):
    return _like(np.empty_like, a, dtype, order, shape)


def zeros_like(a: Any, dtype: Any = None, order: str = "K", subok: Any = None, shape=None):
    return _like(np.zeros_like, a, dtype, order, shape)


def ones_like(a: Any, dtype: Any = None, order: str = "K", subok: Any = None, shape=None):
    return _like(np.ones_like, a, dtype, order, shape)


def full_like(
    a: Any, fill_value: Any, dtype: Any = None, order: str = "K", subok: Any = None, shape=None
) -> ndarray:
    return _like(np.full_like, a, dtype, order, shape, _operand(fill_value))


def arange(start: Any, stop: Any = None, step: Any = 1, dtype: Any = None) -> ndarray:
    if stop is None:
        return _new(np.arange, start, dtype=dtype)
    return _new(np.arange, start, stop, step, dtype=dtype)


def linspace(
    start: Any,
    stop: Any,
    num: int = 50,
    endpoint: bool = True,
    retstep=False,
    dtype: Any = None,
    axis: int = 0,
) -> Any:
    return _result(np.linspace(start, stop, num, endpoint, retstep, dtype, axis))


def _from_host(a: Any, dtype: Any, copy: bool, order: Any) -> ndarray:
    if isinstance(a, ndarray):
        src = a._checked()
        if dtype is None or np.dtype(dtype) == src.dtype:
            return a.copy() if copy else a
        return _wrap(src.astype(dtype, order=order or "K"), a._dev)
    if isinstance(a, (list, tuple)) and builtins.any(isinstance(x, ndarray) for x in a):
        return stack(a).astype(dtype) if dtype is not None else stack(a)
    COUNTERS.h2d += 1
    return _wrap(np.array(a, dtype=dtype, copy=True, order=order or "K"))


def array(
    obj: Any,
    dtype: Any = None,
    copy: bool = True,
    order: str = "K",
    subok: bool = False,
    ndmin: int = 0,
    *,
    blocking: bool = False,
) -> ndarray:
    r = _from_host(obj, dtype, copy, order)
    return _wrap(np.array(r._a, ndmin=ndmin, copy=False), r._dev) if ndmin else r


def asarray(a: Any, dtype: Any = None, order: Any = None, *, blocking: bool = False) -> ndarray:
    return _from_host(a, dtype, False, order)


def ascontiguousarray(a: Any, dtype: Any = None) -> ndarray:
    src = _array(a)
    r = np.ascontiguousarray(src, dtype=dtype)
    return a if r is src else _wrap(r, a._dev)


def asnumpy(a: Any, stream: Any = None, order: str = "C", out: Any = None, *, blocking=True):
    if isinstance(a, ndarray):
        return a.get(stream=stream, order=order, out=out)
    if out is not None:
        out[...] = a
        return out
    return np.asarray(a, order=order)


def get_array_module(*args: Any) -> types.ModuleType:
    return fakecupy if builtins.any(isinstance(a, ndarray) for a in args) else np


def where(condition: Any, x: Any = None, y: Any = None) -> Any:
    if x is None and y is None:
        return nonzero(condition)
    return _wrap(np.where(_array(condition), _operand(x), _operand(y)))


def nonzero(a: Any) -> tuple[ndarray, ...]:
    return tuple(_wrap(i) for i in np.nonzero(_array(a)))


def clip(a: Any, a_min: Any, a_max: Any, out: Any = None) -> ndarray:
    o = _out_array(out)
    r = np.clip(
        _array(a),
        _operand(a_min) if a_min is not None else None,
        _operand(a_max) if a_max is not None else None,
        out=o,
    )
    return out if out is not None else _wrap(r)


def take(a: Any, indices: Any, axis: Any = None, out: Any = None) -> ndarray:
    o = _out_array(out)
    r = np.take(_array(a), _index(indices), axis=axis, out=o)
    return out if out is not None else _wrap(r)


def take_along_axis(a: Any, indices: Any, axis: Any) -> ndarray:
    return _wrap(np.take_along_axis(_array(a), _array(indices, "indices"), axis))


def bincount(x: Any, weights: Any = None, minlength: Any = None) -> ndarray:
    w = None if weights is None else _array(weights, "weights")
    return _wrap(np.bincount(_array(x), w, 0 if minlength is None else minlength))


def argsort(a: Any, axis: int = -1, kind: Any = None) -> ndarray:
    return _wrap(np.argsort(_array(a), axis=axis, kind=kind))


def sort(a: Any, axis: int = -1, kind: Any = None) -> ndarray:
    return _wrap(np.sort(_array(a), axis=axis, kind=kind))


def dot(a: Any, b: Any, out: Any = None) -> ndarray:
    o = _out_array(out)
    r = np.dot(_array(a), _array(b, "b"), out=o)
    return out if out is not None else _result(r)


def matmul(a: Any, b: Any, /, out: Any = None, **kwargs: Any) -> ndarray:
    dtype = kwargs.pop("dtype", None)
    casting = kwargs.pop("casting", "same_kind")
    if kwargs:
        raise RuntimeError("Unknown kwargs {}".format(" ".join(kwargs)))
    o = _out_array(out)
    # NumPy's matmul of non-contiguous operands skips BLAS (slow loops); cuBLAS has no such cliff
    x, y = (_contiguous(v) for v in (_array(a), _array(b, "b")))
    r = np.matmul(x, y, out=o, dtype=dtype, casting=casting)
    return out if out is not None else _result(r)


def _contiguous(v: np.ndarray) -> np.ndarray:
    """`v`, copied if it is a strided view whose last two axes BLAS cannot take as they are."""
    if v.ndim < 2 or v.flags.c_contiguous or v.flags.f_contiguous:
        return v
    inner = v.strides[-1] == v.itemsize or v.strides[-2] == v.itemsize
    return v if inner else np.ascontiguousarray(v)


def tensordot(a: Any, b: Any, axes: Any = 2) -> ndarray:
    return _result(np.tensordot(_array(a), _array(b, "b"), axes))


def einsum(*operands: Any, **kwargs: Any) -> ndarray:
    dtype = kwargs.pop("dtype", None)
    optimize = kwargs.pop("optimize", False)
    if kwargs:
        raise TypeError(f"Did not understand the following kwargs: {list(kwargs)}")
    args = [op if isinstance(op, str) else _array(op) for op in operands]
    return _result(np.einsum(*args, dtype=dtype, optimize=optimize))


def outer(a: Any, b: Any, out: Any = None) -> ndarray:
    o = _out_array(out)
    r = np.outer(_array(a), _array(b, "b"), out=o)
    return out if out is not None else _wrap(r)


def copyto(dst: Any, src: Any, casting: str = "same_kind", where: Any = None) -> None:
    w = True if where is None else _array(where, "where")
    np.copyto(_array(dst, "dst"), _operand(src), casting=casting, where=w)


def concatenate(
    tup: Any, axis: Any = 0, out: Any = None, *, dtype: Any = None, casting: str = "same_kind"
) -> ndarray:
    o = _out_array(out)
    r = np.concatenate([_array(t) for t in tup], axis=axis, out=o, dtype=dtype, casting=casting)
    return out if out is not None else _wrap(r)


def stack(
    tup: Any, axis: int = 0, out: Any = None, *, dtype: Any = None, casting: str = "same_kind"
) -> ndarray:
    o = _out_array(out)
    r = np.stack([_array(t) for t in tup], axis=axis, out=o, dtype=dtype, casting=casting)
    return out if out is not None else _wrap(r)


def transpose(a: Any, axes: Any = None) -> ndarray:
    return _wrap(np.transpose(_array(a), axes), a._dev)


def reshape(a: Any, newshape: Any, order: str = "C") -> ndarray:
    return _wrap(np.reshape(_array(a), newshape, order=order), a._dev)


def broadcast_to(array: Any, shape: Any) -> ndarray:
    return _wrap(np.broadcast_to(_array(array), shape), array._dev)


def moveaxis(a: Any, source: Any, destination: Any) -> ndarray:
    return _wrap(np.moveaxis(_array(a), source, destination), a._dev)


def swapaxes(a: Any, axis1: int, axis2: int) -> ndarray:
    return _wrap(np.swapaxes(_array(a), axis1, axis2), a._dev)


def expand_dims(a: Any, axis: Any) -> ndarray:
    return _wrap(np.expand_dims(_array(a), axis), a._dev)


def squeeze(a: Any, axis: Any = None) -> ndarray:
    return _wrap(np.squeeze(_array(a), axis), a._dev)


def tile(A: Any, reps: Any) -> ndarray:
    return _wrap(np.tile(_array(A, "A"), reps))


def repeat(a: Any, repeats: Any, axis: Any = None) -> ndarray:
    return _wrap(np.repeat(_array(a), repeats, axis))


def flip(a: Any, axis: Any = None) -> ndarray:
    return _wrap(np.flip(_array(a), axis), a._dev)


def pad(array: Any, pad_width: Any, mode: str = "constant", **kwargs: Any) -> ndarray:
    unknown = set(kwargs) - {"constant_values"}
    if unknown:
        raise TypeError(f"pad: unsupported keyword arguments {sorted(unknown)}")
    return _wrap(np.pad(_array(array), pad_width, mode=mode, **kwargs))


def allclose(a: Any, b: Any, rtol: float = 1e-05, atol: float = 1e-08, equal_nan=False) -> bool:
    return _wrap(np.asarray(np.allclose(_array(a), _array_or_scalar(b), rtol, atol, equal_nan)))


def array_equal(a1: Any, a2: Any, equal_nan: bool = False) -> ndarray:
    return _wrap(np.asarray(np.array_equal(_array(a1), _array(a2, "a2"), equal_nan=equal_nan)))


def shares_memory(a: Any, b: Any, max_work: Any = None) -> bool:
    return bool(np.shares_memory(_array(a), _array(b, "b"), max_work=max_work))


def isscalar(element: Any) -> bool:
    return bool(np.isscalar(element))


def result_type(*arrays_and_dtypes: Any) -> np.dtype:
    return np.result_type(*[a.dtype if isinstance(a, ndarray) else a for a in arrays_and_dtypes])


def can_cast(from_: Any, to: Any, casting: str = "safe") -> bool:
    return bool(np.can_cast(from_.dtype if isinstance(from_, ndarray) else from_, to, casting))


# ------------------------------------------------------------------------------ lib, cupyx
def as_strided(x: Any, shape: Any = None, strides: Any = None) -> ndarray:
    """cupy.lib.stride_tricks.as_strided(x, shape=None, strides=None): no `writeable`."""
    return _wrap(np.lib.stride_tricks.as_strided(_array(x, "x"), shape, strides), x._dev)


def scatter_add(a: Any, slices: Any, value: Any) -> None:
    """cupyx.scatter_add(a, slices, value): numpy.add.at on the device."""
    np.add.at(_array(a), _index(slices), _operand(value))


# ------------------------------------------------------------------------------ random
class XORWOW:
    """cupy.random.XORWOW(seed=None, *, size=-1): `state()` is a method (a device pointer)."""

    def __init__(self, seed: Any = None, *, size: int = -1) -> None:
        self._seed_seq = np.random.SeedSequence(seed)
        self._np = np.random.Generator(np.random.PCG64(self._seed_seq))

    def state(self) -> int:
        return id(self._np)  # a pointer to device memory in CuPy: nothing to serialize

    def random_raw(self, size: Any = None, output: bool = True) -> Any:
        return _wrap(self._np.integers(0, 2**32, size=size, dtype=np.uint64))


class Generator:
    """cupy.random.Generator(bit_generator): the distributions the engine may use."""

    def __init__(self, bit_generator: XORWOW) -> None:
        self.bit_generator = bit_generator

    def _rng(self) -> np.random.Generator:
        return self.bit_generator._np

    def random(self, size: Any = None, dtype: Any = np.float64, out: Any = None) -> ndarray:
        return _fill_out(self._rng().random(size, dtype=_float_dtype(dtype)), out)

    def standard_normal(self, size: Any = None, dtype: Any = np.float64, out=None) -> ndarray:
        return _fill_out(self._rng().standard_normal(size, dtype=_float_dtype(dtype)), out)

    def uniform(
        self, low: Any = 0.0, high: Any = 1.0, size: Any = None, dtype: Any = np.float64
    ) -> ndarray:
        return _wrap(self._rng().uniform(low, high, size).astype(_float_dtype(dtype)))

    def integers(
        self,
        low: Any,
        high: Any = None,
        size: Any = None,
        dtype: Any = np.int64,
        endpoint: bool = False,
    ) -> ndarray:
        return _wrap(self._rng().integers(low, high, size, dtype=dtype, endpoint=endpoint))


def _float_dtype(dtype: Any) -> np.dtype:
    dt = np.dtype(dtype)
    if dt.char not in "fd":
        raise TypeError("cupy.random only supports float32 and float64")
    return dt


def _fill_out(values: np.ndarray, out: Any) -> ndarray:
    if out is None:
        return _wrap(np.asarray(values))
    _out_array(out)[...] = values
    return out


def default_rng(seed: Any = None) -> Generator:
    if isinstance(seed, Generator):
        return seed
    if isinstance(seed, XORWOW):
        return Generator(seed)
    return Generator(XORWOW(seed))


class RandomState:
    """cupy.random.RandomState(seed=None, method=CURAND_RNG_PSEUDO_DEFAULT) (legacy API)."""

    def __init__(self, seed: Any = None, method: int = 100) -> None:
        if method not in _CURAND.__dict__.values():
            raise ValueError(f"unknown cuRAND method {method}")
        self.method = method
        self.seed(seed)

    def seed(self, seed: Any = None) -> None:
        if seed is None:
            value = int(np.random.SeedSequence().entropy % (2**64))
        elif isinstance(seed, np.ndarray):
            value = int(np.random.SeedSequence(seed.ravel().tolist()).generate_state(1)[0])
        else:  # as CuPy: a Python int >= 0 becomes int64 and is refused by the "safe" cast
            value = int(np.asarray(seed).astype(np.uint64, casting="safe"))
        self._np = np.random.Generator(np.random.Philox(key=value))

    def random_sample(self, size: Any = None, dtype: Any = float) -> ndarray:
        return _wrap(np.asarray(self._np.random(size, dtype=_float_dtype(dtype))))

    def rand(self, *size: int, dtype: Any = float) -> ndarray:
        return self.random_sample(size=size, dtype=dtype)

    def standard_normal(self, size: Any = None, dtype: Any = float) -> ndarray:
        return _wrap(np.asarray(self._np.standard_normal(size, dtype=_float_dtype(dtype))))

    def randn(self, *size: int, dtype: Any = float) -> ndarray:
        return self.standard_normal(size=size, dtype=dtype)

    def normal(self, loc: Any = 0.0, scale: Any = 1.0, size: Any = None, dtype=float):
        x = self._np.normal(loc, scale, size)
        return _wrap(np.asarray(x, dtype=_float_dtype(dtype)))

    def uniform(self, low: Any = 0.0, high: Any = 1.0, size: Any = None, dtype=float):
        x = self._np.uniform(low, high, size)
        return _wrap(np.asarray(x, dtype=_float_dtype(dtype)))


# ------------------------------------------------------------------------------ cuda
class Device:
    """cupy.cuda.Device(device=None): `use()` sets this host thread's current device."""

    def __init__(self, device: Any = None) -> None:
        self.id = _current() if device is None else int(device)

    def use(self) -> None:
        if not 0 <= self.id < DEVICE_COUNT:
            raise CUDARuntimeError("cudaErrorInvalidDevice: invalid device ordinal")
        _tls.device = self.id

    def synchronize(self) -> None:
        COUNTERS.syncs += 1

    def __enter__(self) -> Device:
        stack = getattr(_tls, "device_stack", [])
        stack.append(_current())
        _tls.device_stack = stack
        self.use()
        return self

    def __exit__(self, *exc: Any) -> None:
        _tls.device = _tls.device_stack.pop()

    @property
    def compute_capability(self) -> str:
        return "90"

    def __repr__(self) -> str:
        return f"<CUDA Device {self.id}>"


class Stream:
    """cupy.cuda.Stream(null=False, non_blocking=False, ptr=0)."""

    def __init__(self, null: bool = False, non_blocking: bool = False, ptr: int = 0) -> None:
        self.ptr = 0 if null else id(self)

    def synchronize(self) -> None:
        COUNTERS.syncs += 1

    def use(self) -> Stream:
        _tls.stream = self
        return self

    def __enter__(self) -> Stream:
        self._previous = getattr(_tls, "stream", None)
        _tls.stream = self
        return self

    def __exit__(self, *exc: Any) -> None:
        _tls.stream = self._previous


_NULL_STREAM = Stream(null=True)


def get_current_stream() -> Stream:
    return getattr(_tls, "stream", None) or _NULL_STREAM


def get_device_id() -> int:
    return _current()


class PinnedMemoryPointer(bytearray):
    """Page-locked host memory (bytearray underneath, so np.frombuffer takes it)."""


def alloc_pinned_memory(size: int) -> PinnedMemoryPointer:
    COUNTERS.pinned += 1
    COUNTERS.pinned_bytes += int(size)
    return PinnedMemoryPointer(int(size))


def is_pinned(array: np.ndarray) -> bool:
    """Whether a host array lives in memory from alloc_pinned_memory."""
    base: Any = array
    while base is not None:
        if isinstance(base, PinnedMemoryPointer):
            return True
        base = base.obj if isinstance(base, memoryview) else getattr(base, "base", None)
    return False


def _get_device_count() -> int:
    return DEVICE_COUNT


def _get_device_properties(device: int) -> dict[str, Any]:
    return {"name": b"fakecupy device", "totalGlobalMem": 16 * 2**30}


_CURAND = types.SimpleNamespace(
    CURAND_RNG_PSEUDO_DEFAULT=100,
    CURAND_RNG_PSEUDO_XORWOW=101,
    CURAND_RNG_PSEUDO_MRG32K3A=121,
    CURAND_RNG_PSEUDO_MTGP32=141,
    CURAND_RNG_PSEUDO_MT19937=142,
    CURAND_RNG_PSEUDO_PHILOX4_32_10=161,
)


# ------------------------------------------------------------------------------ the module
_FUNCTIONS = (
    "sum mean var std prod amax amin any all argmax argmin cumsum count_nonzero empty zeros ones full "
    "empty_like zeros_like ones_like full_like arange linspace array asarray ascontiguousarray "
    "asnumpy get_array_module where nonzero clip take take_along_axis bincount argsort sort dot "
    "matmul tensordot einsum outer copyto concatenate stack transpose reshape broadcast_to "
    "moveaxis swapaxes expand_dims squeeze tile repeat flip pad allclose array_equal isscalar "
    "shares_memory "
    "result_type can_cast"
).split()


def _namespace(name: str, **attrs: Any) -> types.ModuleType:
    """A sub-module holding exactly `attrs`; any other name raises AttributeError."""
    module = types.ModuleType(name)
    module.__dict__.update(attrs)

    def missing(attr: str) -> Any:
        raise AttributeError(
            f"{name} has no attribute {attr!r} (not wrapped by the stand-in: the engine should "
            "not need it; if it must, add it with CuPy's exact signature)"
        )

    module.__dict__["__getattr__"] = missing
    return module


def _build() -> types.ModuleType:
    funcs: dict[str, Any] = {name: ufunc(name, 1) for name in _UFUNCS_1}
    funcs.update({name: ufunc(name, 2) for name in _UFUNCS_2})
    funcs["modf"] = ufunc("modf", 1, 2)
    funcs.update({name: globals()[name] for name in _FUNCTIONS})
    funcs["max"], funcs["min"] = amax, amin
    dtypes = {
        name: getattr(np, name)
        for name in (
            "bool_ int8 int16 int32 int64 uint8 uint16 uint32 uint64 float16 float32 float64 "
            "complex64 complex128 intp uintp dtype finfo iinfo generic number integer floating "
            "signedinteger unsignedinteger"
        ).split()
    }
    runtime = _namespace(
        "fakecupy.cuda.runtime",
        getDeviceCount=_get_device_count,
        getDeviceProperties=_get_device_properties,
        CUDARuntimeError=CUDARuntimeError,
    )
    cuda = _namespace(
        "fakecupy.cuda",
        Device=Device,
        Stream=Stream,
        get_current_stream=get_current_stream,
        get_device_id=get_device_id,
        alloc_pinned_memory=alloc_pinned_memory,
        PinnedMemoryPointer=PinnedMemoryPointer,
        runtime=runtime,
        curand=_namespace("fakecupy.cuda.curand", **vars(_CURAND)),
    )
    random = _namespace(
        "fakecupy.random",
        default_rng=default_rng,
        Generator=Generator,
        XORWOW=XORWOW,
        BitGenerator=XORWOW,
        RandomState=RandomState,
    )
    lib = _namespace(
        "fakecupy.lib",
        stride_tricks=_namespace("fakecupy.lib.stride_tricks", as_strided=as_strided),
    )
    cupyx = _namespace("fakecupy.cupyx", scatter_add=scatter_add)
    standin = types.SimpleNamespace(
        counters=COUNTERS,
        is_pinned=is_pinned,
        reset=COUNTERS.reset,
        DEVICE_COUNT=DEVICE_COUNT,
        wrap=_wrap,
    )
    module = _namespace(
        "fakecupy",
        ndarray=ndarray,
        ufunc=ufunc,
        cuda=cuda,
        random=random,
        lib=lib,
        cupyx=cupyx,
        newaxis=None,
        inf=np.inf,
        nan=np.nan,
        pi=np.pi,
        e=np.e,
        _standin=standin,
        **dtypes,
        **funcs,
    )
    module.__doc__ = __doc__
    return module


fakecupy = _build()
for _cls in (ndarray, ufunc):
    _cls.__module__ = "fakecupy"
sys.modules.setdefault("fakecupy", fakecupy)
