"""Caffe's Pooling layer (MAX with optional argmax top, AVE), vectorized over the batch.

On NumPy the work runs in Caffe's loops compiled by Numba (engine.layers.pool_kernels), on
batch slices over the engine's threads. Elsewhere (CuPy), or without Numba, each output is
reduced over strided views of a padded copy of the input, one pass per kernel offset (kh*kw
passes), never a loop over samples or pixels; the tests hold both paths against Caffe's loops.
Output sizes, the dropped last window, the AVE divisor and MAX tie-breaking follow Caffe's
pooling_layer.cpp.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from engine.blob import Blob
from engine.layer import TEST, Layer, register_layer
from engine.layers import pool_kernels
from engine.threads import EngineThreads, split

# Work (output elements x kernel area) below which threading costs more than it saves:
# measured, CIFAR-10 quick's 3x3 AVE pools (0.9M, 1.8M) gain, LeNet's 2x2 MAX pools (0.2M,
# 0.7M) do not.
_MIN_PARALLEL = 800_000
# The same for the compiled loops, whose hand-off costs the same but whose work is cheaper:
# LeNet's pool1 (0.7M) measured ~2x faster on two threads.
_MIN_PARALLEL_COMPILED = 100_000
_SCATTER_BACKWARD = True  # MAX backward by np.add.at on NumPy (tests switch it off)
_COMPILED = pool_kernels.AVAILABLE  # Caffe's loops compiled by Numba on NumPy (tests switch it)

MAX, AVE, STOCHASTIC = 0, 1, 2  # PoolingParameter.PoolMethod
CEIL, FLOOR = 0, 1  # PoolingParameter.RoundMode


def pooled_size(
    size: int,
    kernel: int,
    pad: int,
    stride: int,
    round_mode: int = CEIL,
    any_pad: bool | None = None,
) -> int:
    """Caffe: ceil((H + 2p - k) / s) + 1, minus a last window that starts at or past H + p.

    Caffe applies the drop on every axis as soon as either pad_h or pad_w is non-zero
    (`any_pad`; by default this axis's own pad)."""
    span = (size + 2 * pad - kernel) / stride
    out = (math.ceil(span) if round_mode == CEIL else math.floor(span)) + 1
    if (bool(pad) if any_pad is None else any_pad) and (out - 1) * stride >= size + pad:
        out -= 1
    return out


@register_layer("Pooling", v1_name="POOLING")
class PoolingLayer(Layer):
    """MAX or AVE pooling over 2-D windows; MAX may output its argmax mask as a second top."""

    exact_num_bottoms = 1
    min_tops = 1
    max_tops = 2

    def layer_setup(self, bottoms: Sequence[Blob], tops: Sequence[Blob]) -> None:
        p = self.param.pooling_param
        self.method = int(p.pool)
        if self.method == STOCHASTIC:
            raise NotImplementedError(f"layer '{self.name}': STOCHASTIC pooling is not supported")
        if self.method not in (MAX, AVE):
            raise self.error(f"unknown pooling method {self.method}")
        if len(tops) == 2 and self.method != MAX:
            raise self.error("only MAX pooling can produce a second (mask) top")
        if len(bottoms[0].shape) != 4:
            raise self.error(f"bottom shape {bottoms[0].shape}: Pooling needs (N, C, H, W)")
        self.global_pooling = bool(p.global_pooling)
        has_hw = p.HasField("kernel_h") or p.HasField("kernel_w")
        if self.global_pooling:
            if p.HasField("kernel_size") or has_hw:
                raise self.error("with global_pooling the kernel size may not be given")
        elif p.HasField("kernel_size") == has_hw:
            raise self.error("give either kernel_size or kernel_h and kernel_w (exactly one)")
        elif has_hw and not (p.HasField("kernel_h") and p.HasField("kernel_w")):
            raise self.error("kernel_h and kernel_w must both be given")
        self.kh = p.kernel_h if has_hw else p.kernel_size
        self.kw = p.kernel_w if has_hw else p.kernel_size
        if not self.global_pooling and (self.kh <= 0 or self.kw <= 0):
            raise self.error("kernel size must be positive")
        if p.HasField("pad_h") or p.HasField("pad_w"):
            if p.HasField("pad"):
                raise self.error("give either pad or pad_h and pad_w, not both")
            self.ph, self.pw = int(p.pad_h), int(p.pad_w)
        else:
            self.ph = self.pw = int(p.pad)
        if p.HasField("stride_h") or p.HasField("stride_w"):
            if p.HasField("stride"):
                raise self.error("give either stride or stride_h and stride_w, not both")
            if not (p.HasField("stride_h") and p.HasField("stride_w")):
                raise self.error("stride_h and stride_w must both be given")
            self.sh, self.sw = int(p.stride_h), int(p.stride_w)
        else:
            self.sh = self.sw = int(p.stride)
        if self.sh <= 0 or self.sw <= 0:
            raise self.error("stride must be positive")
        if self.global_pooling and (self.ph or self.pw or self.sh != 1 or self.sw != 1):
            raise self.error("with global_pooling, pad must be 0 and stride 1")
        self.round_mode = int(p.round_mode)
        self._key: tuple[int, ...] | None = None
        self._threads = EngineThreads(self.xp, self.name)
        self._buf: dict[str, Any] = {}

    # --- shapes and buffers ----------------------------------------------------------------
    def reshape(self, bottoms: Sequence[Blob], tops: Sequence[Blob]) -> None:
        shape = bottoms[0].shape
        if len(shape) != 4:
            raise self.error(f"bottom shape {shape}: Pooling needs (N, C, H, W)")
        n, c, h, w = shape
        if self.global_pooling:
            self.kh, self.kw = h, w
        if self.ph >= self.kh or self.pw >= self.kw:
            raise self.error(
                f"pad ({self.ph}, {self.pw}) must be smaller than the kernel ({self.kh}, {self.kw})"
            )
        any_pad = bool(self.ph or self.pw)
        oh = pooled_size(h, self.kh, self.ph, self.sh, self.round_mode, any_pad)
        ow = pooled_size(w, self.kw, self.pw, self.sw, self.round_mode, any_pad)
        if oh <= 0 or ow <= 0:
            raise self.error(f"kernel ({self.kh}, {self.kw}) larger than the padded input {h}x{w}")
        for top in tops:
            top.reshape((n, c, oh, ow))
        if self._key != (n, c, h, w):
            self._key = (n, c, h, w)
            self._buf = self._make_buffers(n, c, h, w, oh, ow)

    def _make_buffers(self, n: int, c: int, h: int, w: int, oh: int, ow: int) -> dict[str, Any]:
        xp, dt = self.xp, self.dtype
        # Padded extent: every window [o*s, o*s + k) in padded coordinates must fit.
        hb = max((oh - 1) * self.sh + self.kh, h + self.ph)
        wb = max((ow - 1) * self.sw + self.kw, w + self.pw)
        # Argmax codes are offsets i * cw + j; without padding cw is the image width, so that
        # the codes index the bottom itself (the overhang, -inf, is never a maximum).
        unpadded = not (self.ph or self.pw)
        cw = w if unpadded else wb
        buf: dict[str, Any] = {"dims": (n, c, h, w, oh, ow), "wb": cw}
        # Batch slices on the engine's threads when there is enough work to pay for the hand-off.
        work = n * c * oh * ow * self.kh * self.kw
        compiled = xp is np and _COMPILED
        least = _MIN_PARALLEL_COMPILED if compiled else _MIN_PARALLEL
        buf["parts"] = min(self._threads.count, n) if work >= least else 1
        if compiled:
            buf["compiled"] = True
            mask_type = np.int32 if h * w < 2**31 else np.int64
            if self.method == MAX:  # Caffe's mask: h * W + w of the window's first maximum
                buf["mask"] = np.empty((n, c, oh, ow), mask_type)
            pool_kernels.warm_up(self.kh, self.kw, dt, self.method == MAX, mask_type)
            return buf
        buf["direct"] = hb == h and wb == w  # no padding, no overhang: read the bottom directly
        fill = -np.inf if self.method == MAX else 0.0
        buf["pad"] = None if buf["direct"] else xp.full((n, c, hb, wb), fill, dt)
        buf["dpad"] = None if buf["direct"] else xp.zeros((n, c, hb, wb), dt)
        if self.method == MAX:
            # The argmax is kept as its offset i * cw + j from the window origin (codes grow along
            # Caffe's scan order, which the running maximum below relies on).
            top_code = (self.kh - 1) * cw + self.kw
            idt = np.uint8 if top_code < 256 else np.uint16 if top_code < 65536 else np.uint32
            buf["arg"] = xp.empty((n, c, oh, ow), idt)
            buf["hit"] = xp.empty((n, c, oh, ow), bool)
            buf["step"] = xp.empty((n, c, oh, ow), idt)
            # Separable max: row maxima (and their first column) over the rows windows read.
            hr = (oh - 1) * self.sh + self.kh
            buf["rowmax"] = xp.empty((n, c, hr, ow), dt)
            buf["argj"] = xp.empty((n, c, hr, ow), idt)
            buf["hitj"] = xp.empty((n, c, hr, ow), bool)
            buf["stepj"] = xp.empty((n, c, hr, ow), idt)
            # Offsets (i < sh, j < sw) read disjoint positions: backward assigns those, adds the
            # rest. Then only a strip past the last window's stride needs zeroing, not all.
            buf["covers"] = self.kh >= self.sh and self.kw >= self.sw
            # On NumPy, backward scatters dy in one np.add.at over flat padded-plane indices
            # (window origin + argmax offset): in output scan order with float32 sums, as Caffe's
            # loop, and measured ~4x faster than routing one kernel offset at a time.
            buf["scatter"] = xp is np and _SCATTER_BACKWARD
            # Unpadded: scatter straight into the bottom diff (no padded buffer, no crop copy).
            buf["scatter_bottom"] = buf["scatter"] and unpadded
            if buf["scatter_bottom"]:
                hb, wb = h, w
            if buf["scatter"]:
                # int32 where it fits: AlexNet's batch 256 would hold ~0.5 GB of int64 indices.
                ity = np.int32 if n * c * hb * wb < 2**31 else np.int64
                # Planes counted from the first sample of each thread's batch slice.
                local = np.arange(n)
                for lo, hi in split(0, n, buf["parts"]):
                    local[lo:hi] -= lo
                planes = (local[:, None] * c + np.arange(c)).astype(ity).reshape(n, c, 1, 1)
                planes *= ity(hb * wb)
                origin = (np.arange(oh) * self.sh)[:, None] * wb + np.arange(ow) * self.sw
                buf["base"] = planes + origin.astype(ity)
                buf["index"] = np.empty((n, c, oh, ow), ity)
        else:
            # Caffe's AVE divisor: window clipped to the padded extent [-p, H + p), not the image.
            hs = np.arange(oh) * self.sh - self.ph
            ws = np.arange(ow) * self.sw - self.pw
            hsz = np.minimum(hs + self.kh, h + self.ph) - hs
            wsz = np.minimum(ws + self.kw, w + self.pw) - ws
            buf["size"] = xp.asarray(np.outer(hsz, wsz).astype(dt))  # divided by, as Caffe
        buf["scaled"] = xp.empty((n, c, oh, ow), dt)
        return buf

    def _view(self, img: Any, i: int, j: int) -> Any:
        """Strided view of the padded image read by kernel offset (i, j) across all windows."""
        n, c, h, w, oh, ow = self._buf["dims"]
        return img[
            :, :, i : i + self.sh * (oh - 1) + 1 : self.sh, j : j + self.sw * (ow - 1) + 1 : self.sw
        ]

    def _in_chunks(self, fn: Callable[[slice], None]) -> None:
        """Run fn over batch slices: the passes release the GIL, so the threads use the cores."""
        n = self._buf["dims"][0]
        parts = self._buf["parts"]
        bounds = split(0, n, parts)
        self._threads.run(lambda k: fn(slice(*bounds[k])), parts, threaded=parts > 1)

    # --- forward ---------------------------------------------------------------------------
    def forward(self, bottoms: Sequence[Blob], tops: Sequence[Blob]) -> None:
        x, out = bottoms[0].data, tops[0].data
        if self._buf.get("compiled"):
            # A test pass reads only the values: the argmax is made if a backward asks for it.
            values_only = self.method == MAX and self.phase == TEST and len(tops) == 1
            self._buf["arg_ready"] = not values_only
            self._in_chunks(lambda sl: self._forward_compiled(x[sl], out[sl], sl, values_only))
            if len(tops) == 2:
                tops[1].data[...] = self._buf["mask"]
            return
        if self.method == AVE:
            fn = self._forward_ave
        elif self.phase == TEST and len(tops) == 1:
            # A test pass reads only the values: the argmax (half of MAX's work) is made from
            # the bottom if a backward ever asks for it (pycaffe can run one in TEST).
            fn = self._forward_max_values
            self._buf["arg_ready"] = False
        else:
            fn = self._forward_max
            self._buf["arg_ready"] = True
        self._in_chunks(lambda sl: fn(x[sl], out[sl], sl))
        if len(tops) == 2:
            self._write_mask(tops[1].data)

    def _geometry(self) -> tuple[int, ...]:
        return (self.sh, self.sw, self.ph, self.pw)

    def _forward_compiled(self, x: Any, out: Any, sl: slice, values_only: bool = False) -> None:
        kernels = pool_kernels.window_kernels(self.kh, self.kw)
        if self.method == MAX and values_only:
            kernels.max_values(x, out, *self._geometry())
        elif self.method == MAX:
            kernels.max_forward(x, out, self._buf["mask"][sl], *self._geometry())
        else:
            kernels.ave_forward(x, out, *self._geometry())

    def _backward_compiled(self, dy: Any, dx: Any, sl: slice) -> None:
        if self.method == MAX:
            pool_kernels.max_backward(dy, self._buf["mask"][sl], dx)
        else:
            pool_kernels.window_kernels(self.kh, self.kw).ave_backward(dy, dx, *self._geometry())

    def _forward_max_values(self, x: Any, out: Any, sl: slice) -> None:
        """Separable max without the argmax: along w within each row, then along h."""
        xp, buf = self.xp, self._buf
        src = self._source(x, sl)
        oh, ow = buf["dims"][4:6]
        rm = buf["rowmax"][sl]
        hr, last_w, last_h = rm.shape[2], self.sw * (ow - 1) + 1, self.sh * (oh - 1) + 1
        rm[...] = src[:, :, :hr, 0 : last_w : self.sw]
        for j in range(1, self.kw):
            xp.maximum(rm, src[:, :, :hr, j : j + last_w : self.sw], out=rm)
        out[...] = rm[:, :, 0 : last_h : self.sh]
        for i in range(1, self.kh):
            xp.maximum(out, rm[:, :, i : i + last_h : self.sh], out=out)

    def _source(self, x: Any, sl: slice) -> Any:
        """The (padded) input of one batch slice."""
        buf = self._buf
        if buf["direct"]:
            return x
        h, w = buf["dims"][2:4]
        src = buf["pad"][sl]
        src[:, :, self.ph : self.ph + h, self.pw : self.pw + w] = x
        return src

    def _offsets(self) -> list[tuple[int, int]]:
        return [(i, j) for i in range(self.kh) for j in range(self.kw)]  # Caffe's scan order

    def _forward_ave(self, x: Any, out: Any, sl: slice) -> None:
        src = self._source(x, sl)
        offsets = self._offsets()
        out[...] = self._view(src, 0, 0)
        for i, j in offsets[1:]:
            out += self._view(src, i, j)
        out /= self._buf["size"]

    def _forward_max(self, x: Any, out: Any, sl: slice) -> None:
        """Separable max: along w within each row, then along h over the row maxima.

        Strict > keeps the first max of each row, then the first row holding the window's max:
        together Caffe's first maximum in (h, w) scan order. The code i * wb + j (wb the padded
        width) is tracked by a running maximum of hit * code, valid because codes grow along
        the scan.
        """
        xp, buf = self.xp, self._buf
        src = self._source(x, sl)
        oh, ow = buf["dims"][4:6]
        wb = buf["wb"]
        rm, aj, hj, sj = (buf[k][sl] for k in ("rowmax", "argj", "hitj", "stepj"))
        hr, last_w = rm.shape[2], self.sw * (ow - 1) + 1
        first = src[:, :, :hr, 0 : last_w : self.sw]
        if self.kw == 1:
            rm[...] = first
            aj.fill(0)
        for j in range(1, self.kw):
            v = src[:, :, :hr, j : j + last_w : self.sw]
            prev = first if j == 1 else rm  # j == 1 reads the first column in place, no copy
            xp.greater(v, prev, out=hj)
            xp.maximum(prev, v, out=rm)
            if j == 1:
                aj[...] = hj
            else:
                xp.multiply(hj, sj.dtype.type(j), out=sj)
                xp.maximum(aj, sj, out=aj)
        arg, hit, step = buf["arg"][sl], buf["hit"][sl], buf["step"][sl]
        last_h = self.sh * (oh - 1) + 1
        arg[...] = aj[:, :, 0 : last_h : self.sh]
        if self.kh == 1:
            out[...] = rm[:, :, 0 : last_h : self.sh]
        for i in range(1, self.kh):
            v = rm[:, :, i : i + last_h : self.sh]
            prev = rm[:, :, 0 : last_h : self.sh] if i == 1 else out
            xp.greater(v, prev, out=hit)
            xp.maximum(prev, v, out=out)
            xp.add(aj[:, :, i : i + last_h : self.sh], step.dtype.type(i * wb), out=step)
            xp.multiply(step, hit, out=step)
            xp.maximum(arg, step, out=arg)

    def _write_mask(self, mask: Any) -> None:
        """Caffe's mask top: the argmax as a flat index h * W + w into the input plane."""
        xp = self.xp
        n, c, h, w, oh, ow = self._buf["dims"]
        wb = self._buf["wb"]
        arg = self._buf["arg"].astype(np.int64)
        hh = (xp.arange(oh) * self.sh - self.ph)[:, None] + arg // wb
        ww = (xp.arange(ow) * self.sw - self.pw)[None, :] + arg % wb
        mask[...] = hh * w + ww

    # --- backward --------------------------------------------------------------------------
    def backward(
        self, tops: Sequence[Blob], propagate_down: Sequence[bool], bottoms: Sequence[Blob]
    ) -> None:
        if not propagate_down[0]:
            return
        compiled = self._buf.get("compiled", False)
        if self.method == MAX and not self._buf.get("arg_ready", True):
            x, out = bottoms[0].data, tops[0].data  # the argmax a test pass skipped
            argmax = self._forward_compiled if compiled else self._forward_max
            self._in_chunks(lambda sl: argmax(x[sl], out[sl], sl))
            self._buf["arg_ready"] = True
        dy, dx = tops[0].diff, bottoms[0].diff
        route = self._backward_compiled if compiled else self._backward_chunk
        self._in_chunks(lambda sl: route(dy[sl], dx[sl], sl))

    def _backward_chunk(self, dy: Any, dx: Any, sl: slice) -> None:
        xp, buf = self.xp, self._buf
        h, w = buf["dims"][2:4]
        if self.method == MAX and buf["scatter_bottom"]:
            self._scatter(dy, dx, sl)
            return
        dpad = dx if buf["direct"] else buf["dpad"][sl]
        scaled = buf["scaled"][sl]
        if self.method == AVE:
            dpad.fill(0)
            xp.divide(dy, buf["size"], out=scaled)
            for i, j in self._offsets():
                view = self._view(dpad, i, j)
                view += scaled
        else:
            self._backward_max(dy, dpad, sl)
        if not buf["direct"]:
            dx[...] = dpad[:, :, self.ph : self.ph + h, self.pw : self.pw + w]

    def _scatter(self, dy: Any, plane: Any, sl: slice) -> None:
        """plane = 0, then plane[window origin + argmax offset] += dy, in output order."""
        buf = self._buf
        index = buf["index"][sl]
        np.add(buf["base"][sl], buf["arg"][sl], out=index)
        plane.fill(0)
        np.add.at(plane.reshape(-1), index.reshape(-1), dy.reshape(-1))

    def _backward_max(self, dy: Any, dpad: Any, sl: slice) -> None:
        """Route dy to each window's argmax: on NumPy one scatter-add over flat indices; else
        one pass per kernel offset (disjoint offsets assign, overlapping ones add)."""
        xp, buf = self.xp, self._buf
        oh, ow = buf["dims"][4:6]
        arg, hit, scaled = buf["arg"][sl], buf["hit"][sl], buf["scaled"][sl]
        if buf["scatter"]:
            self._scatter(dy, dpad, sl)
            return
        if buf["covers"]:
            dpad[:, :, self.sh * oh :] = 0
            dpad[:, :, :, self.sw * ow :] = 0
        else:
            dpad.fill(0)
        for i, j in self._offsets():
            xp.equal(arg, i * buf["wb"] + j, out=hit)
            view = self._view(dpad, i, j)
            if buf["covers"] and i < self.sh and j < self.sw:
                xp.multiply(dy, hit, out=view)
            else:
                xp.multiply(dy, hit, out=scaled)
                view += scaled
