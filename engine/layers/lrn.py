"""Local response normalization (Caffe "LRN", V1 LRN), across channels or within a channel.

ACROSS_CHANNELS: scale = k + alpha/n * (sum of x^2 over the n channels centred on c, zero padded).
WITHIN_CHANNEL: Caffe composes square -> AVE pooling (n x n, pad (n-1)/2, stride 1) -> power
(shift 1, scale alpha, power -beta) -> product. With that pad and stride every window's divisor is
n^2 under Caffe's AVE rule, so scale = 1 + alpha/n^2 * (sum of x^2 over the n x n window); k is
unused there. In both cases y = x * scale^-beta.

Window sums add n shifted slices of a zero-padded buffer (measured ~7x faster than a cumulative sum
along the channel axis for n = 5 in NumPy, and exact: no cancellation); past _SLICE_MAX_SIZE a
cumulative sum keeps the cost independent of n. On NumPy with Numba, ACROSS_CHANNELS windows up to
that size run as compiled loops (engine.layers.lrn_kernels, the same bits) and every pass is cut
by samples over the engine's threads: AlexNet's norm1 + norm2 at batch 32 took 237 ms of a
1442 ms iteration as NumPy passes on one thread.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import ModuleType
from typing import Any

import numpy as np

from engine.blob import Blob
from engine.layer import Layer, register_layer
from engine.layers import lrn_kernels
from engine.threads import EngineThreads, split

_SLICE_MAX_SIZE = 15


def _window_sum(xp: ModuleType, padded: Any, axis: int, size: int, out: Any, cum: Any) -> None:
    """out[..., i, ...] = sum of padded[..., i:i + size, ...] along `axis`.

    `cum` is scratch one longer than `padded` along `axis`, used only for large windows.
    """
    length = out.shape[axis]

    def along(start: int, stop: int) -> tuple[slice, ...]:
        return (slice(None),) * axis + (slice(start, stop),)

    if size <= _SLICE_MAX_SIZE:
        xp.copyto(out, padded[along(0, length)])
        for d in range(1, size):
            out += padded[along(d, d + length)]
        return
    cum[along(0, 1)] = 0
    xp.cumsum(padded, axis=axis, out=cum[along(1, None)])
    xp.subtract(cum[along(size, size + length)], cum[along(0, length)], out=out)


@register_layer("LRN", v1_name="LRN")
class LRNLayer(Layer):
    """Caffe's LRN; backward is dx = dy * scale^-beta - c * x * window_sum(dy * y / scale),
    with c = 2*alpha*beta/n across channels and 2*alpha*beta/n^2 within a channel."""

    exact_num_bottoms = 1
    exact_num_tops = 1

    def layer_setup(self, bottoms: Sequence[Blob], tops: Sequence[Blob]) -> None:
        p = self.param.lrn_param
        self.size = int(p.local_size)
        if self.size <= 0 or self.size % 2 != 1:
            raise self.error(f"lrn_param.local_size must be a positive odd number, got {self.size}")
        self.pre_pad = (self.size - 1) // 2
        self.alpha = float(p.alpha)
        self.beta = float(p.beta)
        self.k = float(p.k)
        self.within = p.norm_region == p.WITHIN_CHANNEL
        if self.within:
            self.sum_mult, self.shift = self.alpha / self.size**2, 1.0
        else:
            self.sum_mult, self.shift = self.alpha / self.size, self.k
        self.grad_mult = 2.0 * self.beta * self.sum_mult
        # Compiled loops (the NumPy passes' bits) where they apply; tests set it False.
        self.compiled = (
            self.xp is np
            and lrn_kernels.AVAILABLE
            and not self.within
            and self.size <= _SLICE_MAX_SIZE
        )
        self._threads = EngineThreads(self.xp, self.name)
        self._buffers: dict[str, Blob] = {}
        self._shape: tuple[int, ...] = ()

    def _buffer(self, name: str, shape: Sequence[int]) -> Any:
        blob = self._buffers.get(name)
        if blob is None:
            blob = self._buffers[name] = Blob((), self.xp, self.dtype)
        blob.reshape(shape)
        return blob.data

    def reshape(self, bottoms: Sequence[Blob], tops: Sequence[Blob]) -> None:
        if bottoms[0].num_axes != 4:
            raise self.error(
                f"input must have 4 axes (num, channels, height, width), got {bottoms[0].shape}"
            )
        if tops[0] is bottoms[0]:
            raise self.error("LRN cannot run in place (its backward needs the input)")
        n, c, h, w = self._shape = bottoms[0].shape
        tops[0].reshape(self._shape)
        self.scale = self._buffer("scale", self._shape)
        self.scale_pow = self._buffer("scale_pow", self._shape)
        self.window = self._buffer("window", self._shape)
        e = self.size - 1
        big = self.size > _SLICE_MAX_SIZE
        if self.within:
            self.padded = self._buffer("padded", (n, c, h + e, w + e))
            self.rows = self._buffer("rows", (n, c, h, w + e))
            self.cum_h = self._buffer("cum_h", (n, c, h + e + 1, w + e) if big else ())
            self.cum_w = self._buffer("cum_w", (n, c, h, w + e + 1) if big else ())
        else:
            self.padded = self._buffer("padded", (n, c + e, h, w))  # border never written: zero
            self.cum_c = self._buffer("cum_c", (n, c + e + 1, h, w) if big else ())

    def _center(self) -> Any:
        p, (_, c, h, w) = self.pre_pad, self._shape
        if self.within:
            return self.padded[:, :, p : p + h, p : p + w]
        return self.padded[:, p : p + c]

    def _window_sum_of_center(self) -> None:
        """self.window = sum over each position's window of the padded buffer's centre."""
        xp, size = self.xp, self.size
        if self.within:
            _window_sum(xp, self.padded, 2, size, self.rows, self.cum_h)
            _window_sum(xp, self.rows, 3, size, self.window, self.cum_w)
        else:
            _window_sum(xp, self.padded, 1, size, self.window, self.cum_c)

    def _in_slices(self, fn: Any) -> None:
        """fn(samples) over batch slices, one per engine thread (all at once off NumPy)."""
        n = self._shape[0]
        parts = min(self._threads.count, n)
        bounds = split(0, n, parts)
        self._threads.run(lambda k: fn(slice(*bounds[k])), parts, threaded=parts > 1)

    def forward(self, bottoms: Sequence[Blob], tops: Sequence[Blob]) -> None:
        xp, x, y = self.xp, bottoms[0].data, tops[0].data
        if self.compiled:
            kind = x.dtype.type
            sum_mult, shift, beta = kind(self.sum_mult), kind(self.shift), kind(-self.beta)

            def part(sl: slice) -> None:
                lrn_kernels.across_scale(x[sl], self.scale[sl], self.size, sum_mult, shift)
                xp.power(self.scale[sl], beta, out=self.scale_pow[sl])
                xp.multiply(x[sl], self.scale_pow[sl], out=y[sl])

            self._in_slices(part)
            return
        xp.square(x, out=self._center())
        self._window_sum_of_center()
        xp.multiply(self.window, self.sum_mult, out=self.scale)
        self.scale += self.shift
        xp.power(self.scale, -self.beta, out=self.scale_pow)
        xp.multiply(x, self.scale_pow, out=tops[0].data)

    def backward(
        self, tops: Sequence[Blob], propagate_down: Sequence[bool], bottoms: Sequence[Blob]
    ) -> None:
        if not propagate_down[0]:
            return
        xp = self.xp
        dy, y, x = tops[0].diff, tops[0].data, bottoms[0].data
        if self.compiled:
            dx, ratio, scale, scale_pow = bottoms[0].diff, self.window, self.scale, self.scale_pow
            grad_mult = x.dtype.type(self.grad_mult)

            def part(sl: slice) -> None:
                lrn_kernels.across_backward(
                    x[sl], y[sl], dy[sl], scale[sl], scale_pow[sl], ratio[sl], dx[sl],
                    self.size, grad_mult,
                )  # fmt: skip

            self._in_slices(part)
            return
        center = self._center()
        xp.multiply(dy, y, out=center)
        center /= self.scale
        self._window_sum_of_center()
        self.window *= x
        self.window *= self.grad_mult
        dx = bottoms[0].diff
        xp.multiply(dy, self.scale_pow, out=dx)
        dx -= self.window
