"""Layers that move data without arithmetic (or with a little): Split, Flatten, Reshape, Concat,
Slice, Eltwise, Silence."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from engine.blob import Blob
from engine.layer import Layer, register_layer


def _axis(layer: Layer, blob: Blob, axis: int, what: str = "axis") -> int:
    try:
        return blob.canonical_axis(axis)
    except IndexError:
        raise layer.error(f"{what} {axis} is out of range for bottom shape {blob.shape}") from None


def _legacy_axis(layer: Layer, param: Any, legacy: str, blob: Blob) -> int:
    """`axis`, or the legacy unsigned field (concat_dim / slice_dim) when that is given instead."""
    if param.HasField("axis") and param.HasField(legacy):
        raise layer.error(f"give either axis or {legacy}, not both")
    if param.HasField(legacy):
        dim = int(getattr(param, legacy))
        if dim >= blob.num_axes:
            raise layer.error(f"{legacy} {dim} is out of range for bottom shape {blob.shape}")
        return dim
    return _axis(layer, blob, int(param.axis))


class _ViewLayer(Layer):
    """One bottom, one top that is a reshaped view of the bottom's data and diff (no copies).

    The views are re-made if either blob's arrays were replaced since the last reshape.
    """

    exact_num_bottoms = 1
    exact_num_tops = 1

    def top_shape(self, bottom: Blob) -> tuple[int, ...]:
        raise NotImplementedError

    def reshape(self, bottoms: Sequence[Blob], tops: Sequence[Blob]) -> None:
        if bottoms[0] is tops[0]:
            raise self.error("cannot run in place (top and bottom must differ)")
        shape = self.top_shape(bottoms[0])
        if math.prod(shape) != bottoms[0].count:
            raise self.error(f"top shape {shape} does not match bottom shape {bottoms[0].shape}")
        self._share(bottoms[0], tops[0], shape)

    def _share(self, bottom: Blob, top: Blob, shape: tuple[int, ...]) -> None:
        top.share(bottom.data.reshape(shape), bottom.diff.reshape(shape))
        self._linked = (bottom.data, bottom.diff, top.data, top.diff)

    def _in_sync(self, bottom: Blob, top: Blob) -> bool:
        b_data, b_diff, t_data, t_diff = self._linked
        return (
            bottom.data is b_data
            and bottom.diff is b_diff
            and top.data is t_data
            and top.diff is t_diff
        )

    def forward(self, bottoms: Sequence[Blob], tops: Sequence[Blob]) -> None:
        if not self._in_sync(bottoms[0], tops[0]):
            self._share(bottoms[0], tops[0], tops[0].shape)

    def backward(
        self, tops: Sequence[Blob], propagate_down: Sequence[bool], bottoms: Sequence[Blob]
    ) -> None:
        if propagate_down[0] and not self._in_sync(bottoms[0], tops[0]):
            bottoms[0].diff[...] = tops[0].diff.reshape(bottoms[0].shape)


@register_layer("Flatten", v1_name="FLATTEN")
class FlattenLayer(_ViewLayer):
    """Collapse axes axis..end_axis (default 1..-1) into one: (N, C, H, W) -> (N, C*H*W)."""

    def top_shape(self, bottom: Blob) -> tuple[int, ...]:
        p = self.param.flatten_param
        start = _axis(self, bottom, int(p.axis))
        end = _axis(self, bottom, int(p.end_axis), "end_axis")
        if end < start:
            raise self.error(f"end_axis {p.end_axis} comes before axis {p.axis}")
        s = bottom.shape
        return s[:start] + (bottom.count_range(start, end + 1),) + s[end + 1 :]


@register_layer("Reshape")
class ReshapeLayer(_ViewLayer):
    """New shape for axes [axis, axis + num_axes): dim 0 copies the bottom's dim, -1 is inferred."""

    def layer_setup(self, bottoms: Sequence[Blob], tops: Sequence[Blob]) -> None:
        dims = [int(d) for d in self.param.reshape_param.shape.dim]
        if dims.count(-1) > 1:
            raise self.error(f"reshape_param.shape {dims} has more than one -1 (inferred) dim")
        if any(d < -1 for d in dims):
            raise self.error(f"reshape_param.shape {dims} has a dim below -1")
        self.dims = dims

    def top_shape(self, bottom: Blob) -> tuple[int, ...]:
        p = self.param.reshape_param
        n = bottom.num_axes
        axis = int(p.axis)
        start = axis if axis >= 0 else n + axis + 1
        if not 0 <= start <= n:
            raise self.error(f"axis {axis} is out of range for bottom shape {bottom.shape}")
        num_axes = int(p.num_axes)
        if num_axes < -1:
            raise self.error(f"num_axes must be >= -1, got {num_axes}")
        end = n if num_axes == -1 else start + num_axes
        if end > n:
            raise self.error(
                f"axis {axis} + num_axes {num_axes} exceed the {n} axes of bottom {bottom.shape}"
            )
        middle = []
        for i, d in enumerate(self.dims):
            if d == 0:
                if start + i >= n:
                    raise self.error(f"dim {i} is 0 (copy) but bottom has no axis {start + i}")
                d = bottom.shape[start + i]
            middle.append(d)
        if -1 in middle:
            known = math.prod(bottom.shape[:start]) * math.prod(bottom.shape[end:])
            known *= math.prod(d for d in middle if d != -1)
            if known == 0 or bottom.count % known:
                raise self.error(
                    f"cannot infer the -1 dim of {self.dims}: bottom count {bottom.count} "
                    f"is not a multiple of {known}"
                )
            middle[middle.index(-1)] = bottom.count // known
        shape = bottom.shape[:start] + tuple(middle) + bottom.shape[end:]
        if math.prod(shape) != bottom.count:
            raise self.error(
                f"reshape of {bottom.shape} to {shape} changes the count "
                f"({bottom.count} vs {math.prod(shape)})"
            )
        return shape


@register_layer("Split", v1_name="SPLIT")
class SplitLayer(Layer):
    """Fan one bottom out to N tops that share its data; backward sums the tops' diffs."""

    exact_num_bottoms = 1
    min_tops = 1

    def reshape(self, bottoms: Sequence[Blob], tops: Sequence[Blob]) -> None:
        for top in tops:
            if top is bottoms[0]:
                raise self.error("cannot run in place: each top needs its own diff")
            top.reshape(bottoms[0].shape)
            top.data = bottoms[0].data

    def forward(self, bottoms: Sequence[Blob], tops: Sequence[Blob]) -> None:
        for top in tops:
            top.data = bottoms[0].data  # re-link if the bottom's array was replaced

    def backward(
        self, tops: Sequence[Blob], propagate_down: Sequence[bool], bottoms: Sequence[Blob]
    ) -> None:
        if not propagate_down[0]:
            return
        dx = bottoms[0].diff
        if len(tops) == 1:
            dx[...] = tops[0].diff
            return
        self.xp.add(tops[0].diff, tops[1].diff, out=dx)
        for top in tops[2:]:
            dx += top.diff


@register_layer("Concat", v1_name="CONCAT")
class ConcatLayer(Layer):
    """Join bottoms along `axis` (default 1; legacy concat_dim); all other dims must agree."""

    min_bottoms = 1
    exact_num_tops = 1

    def reshape(self, bottoms: Sequence[Blob], tops: Sequence[Blob]) -> None:
        first = bottoms[0]
        self.axis = _legacy_axis(self, self.param.concat_param, "concat_dim", first)
        total = 0
        for i, b in enumerate(bottoms):
            if b.num_axes != first.num_axes:
                raise self.error(f"bottom {i} has {b.num_axes} axes, bottom 0 has {first.num_axes}")
            for k in range(first.num_axes):
                if k != self.axis and b.shape[k] != first.shape[k]:
                    raise self.error(
                        f"bottom {i} shape {b.shape} differs from bottom 0 shape {first.shape} "
                        f"outside the concat axis {self.axis} (axis {k})"
                    )
            total += b.shape[self.axis]
        if tops[0] is first:
            raise self.error("cannot run in place")
        shape = first.shape[: self.axis] + (total,) + first.shape[self.axis + 1 :]
        tops[0].reshape(shape)
        lead = (slice(None),) * self.axis
        self.slices, offset = [], 0
        for b in bottoms:
            self.slices.append(lead + (slice(offset, offset + b.shape[self.axis]),))
            offset += b.shape[self.axis]

    def forward(self, bottoms: Sequence[Blob], tops: Sequence[Blob]) -> None:
        y = tops[0].data
        for b, sl in zip(bottoms, self.slices, strict=True):
            y[sl] = b.data

    def backward(
        self, tops: Sequence[Blob], propagate_down: Sequence[bool], bottoms: Sequence[Blob]
    ) -> None:
        dy = tops[0].diff
        for b, sl, down in zip(bottoms, self.slices, propagate_down, strict=True):
            if down:
                b.diff[...] = dy[sl]


@register_layer("Slice", v1_name="SLICE")
class SliceLayer(Layer):
    """Cut the bottom along `axis` (default 1; legacy slice_dim) at slice_point, or evenly."""

    exact_num_bottoms = 1
    min_tops = 1

    def reshape(self, bottoms: Sequence[Blob], tops: Sequence[Blob]) -> None:
        b = bottoms[0]
        p = self.param.slice_param
        self.axis = _legacy_axis(self, p, "slice_dim", b)
        dim = b.shape[self.axis]
        points = [int(v) for v in p.slice_point]
        if points:
            if len(points) != len(tops) - 1:
                raise self.error(
                    f"{len(points)} slice_point(s) need {len(points) + 1} tops, got {len(tops)}"
                )
            bounds = [0, *points, dim]
            if any(lo >= hi for lo, hi in zip(bounds[:-1], bounds[1:], strict=True)):
                raise self.error(
                    f"slice_point {points} must be strictly increasing within (0, {dim}) "
                    f"on axis {self.axis}"
                )
        else:
            if dim % len(tops):
                raise self.error(
                    f"axis {self.axis} of size {dim} does not split evenly into {len(tops)} tops"
                )
            step = dim // len(tops)
            bounds = list(range(0, dim + 1, step))
        lead = (slice(None),) * self.axis
        self.slices = []
        for top, lo, hi in zip(tops, bounds[:-1], bounds[1:], strict=True):
            if top is b:
                raise self.error("cannot run in place")
            top.reshape(b.shape[: self.axis] + (hi - lo,) + b.shape[self.axis + 1 :])
            self.slices.append(lead + (slice(lo, hi),))

    def forward(self, bottoms: Sequence[Blob], tops: Sequence[Blob]) -> None:
        x = bottoms[0].data
        for top, sl in zip(tops, self.slices, strict=True):
            top.data[...] = x[sl]

    def backward(
        self, tops: Sequence[Blob], propagate_down: Sequence[bool], bottoms: Sequence[Blob]
    ) -> None:
        if not propagate_down[0]:
            return
        dx = bottoms[0].diff
        for top, sl in zip(tops, self.slices, strict=True):
            dx[sl] = top.diff


@register_layer("Eltwise", v1_name="ELTWISE")
class EltwiseLayer(Layer):
    """Element-wise PROD, SUM (with per-bottom coeff) or MAX (gradient routed to the argmax)."""

    min_bottoms = 2
    exact_num_tops = 1
    PROD, SUM, MAX = 0, 1, 2  # EltwiseParameter.EltwiseOp values in caffe.proto

    def layer_setup(self, bottoms: Sequence[Blob], tops: Sequence[Blob]) -> None:
        p = self.param.eltwise_param
        self.op = int(p.operation)
        if self.op not in (self.PROD, self.SUM, self.MAX):
            raise self.error(f"unknown eltwise operation {self.op}")
        coeffs = [float(c) for c in p.coeff]
        if coeffs and self.op == self.PROD:  # Caffe rejects PROD coeffs only; MAX ignores them
            raise self.error("coeff is not allowed with operation PROD")
        if coeffs and len(coeffs) != len(bottoms):
            raise self.error(f"needs one coeff per bottom ({len(bottoms)}), got {len(coeffs)}")
        self.coeffs = coeffs if coeffs and self.op == self.SUM else [1.0] * len(bottoms)
        self.stable_prod_grad = bool(p.stable_prod_grad)

    def reshape(self, bottoms: Sequence[Blob], tops: Sequence[Blob]) -> None:
        for i, b in enumerate(bottoms):
            if b.shape != bottoms[0].shape:
                raise self.error(
                    f"bottom {i} shape {b.shape} differs from bottom 0 shape {bottoms[0].shape}"
                )
            if b is tops[0]:
                raise self.error("cannot run in place (top and bottoms must differ)")
        tops[0].reshape(bottoms[0].shape)
        if self.op == self.MAX:
            mask = getattr(self, "argmax", None)
            if mask is None or mask.shape != bottoms[0].shape:
                self.argmax = self.xp.empty(bottoms[0].shape, self.xp.int32)

    def forward(self, bottoms: Sequence[Blob], tops: Sequence[Blob]) -> None:
        xp, y = self.xp, tops[0].data
        if self.op == self.PROD:
            xp.multiply(bottoms[0].data, bottoms[1].data, out=y)
            for b in bottoms[2:]:
                y *= b.data
        elif self.op == self.SUM:
            xp.multiply(bottoms[0].data, self.coeffs[0], out=y)
            for b, c in zip(bottoms[1:], self.coeffs[1:], strict=True):
                y += b.data * c if c != 1.0 else b.data
        else:
            # Caffe's tie rule: bottom 1 wins a tie with bottom 0; later bottoms need a strict win.
            a0, a1 = bottoms[0].data, bottoms[1].data
            xp.logical_not(a0 > a1, out=self.argmax)
            xp.maximum(a0, a1, out=y)
            for i, b in enumerate(bottoms[2:], start=2):
                better = b.data > y
                self.argmax[better] = i
                xp.maximum(y, b.data, out=y)

    def backward(
        self, tops: Sequence[Blob], propagate_down: Sequence[bool], bottoms: Sequence[Blob]
    ) -> None:
        xp, dy, y = self.xp, tops[0].diff, tops[0].data
        for i, (b, down) in enumerate(zip(bottoms, propagate_down, strict=True)):
            if not down:
                continue
            dx = b.diff
            if self.op == self.PROD:
                if self.stable_prod_grad:
                    others = None
                    for j, o in enumerate(bottoms):
                        if j != i:
                            others = o.data.copy() if others is None else others * o.data
                    xp.multiply(others, dy, out=dx)
                else:
                    xp.divide(y, b.data, out=dx)
                    dx *= dy
            elif self.op == self.SUM:
                if self.coeffs[i] == 1.0:
                    if dx is not dy:
                        dx[...] = dy
                else:
                    xp.multiply(dy, self.coeffs[i], out=dx)
            else:
                xp.multiply(dy, self.argmax == i, out=dx)


@register_layer("Silence", v1_name="SILENCE")
class SilenceLayer(Layer):
    """Swallow bottoms (so they are not reported as net outputs); their gradient is zero."""

    min_bottoms = 1
    exact_num_tops = 0

    def reshape(self, bottoms: Sequence[Blob], tops: Sequence[Blob]) -> None:
        """Nothing to shape."""

    def forward(self, bottoms: Sequence[Blob], tops: Sequence[Blob]) -> None:
        """Nothing to compute."""

    def backward(
        self, tops: Sequence[Blob], propagate_down: Sequence[bool], bottoms: Sequence[Blob]
    ) -> None:
        for b, down in zip(bottoms, propagate_down, strict=True):
            if down:
                b.diff[...] = 0
