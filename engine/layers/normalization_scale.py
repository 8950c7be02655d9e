"""BatchNorm (Caffe's: normalisation only, running sums in three blobs), Scale and Bias."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from engine.blob import Blob
from engine.layer import TEST, Layer, register_layer


@register_layer("BatchNorm")
class BatchNormLayer(Layer):
    """Normalise each channel (axis 1) over N and spatial axes; no learned scale/shift.

    blobs: [running mean sum, running variance sum, scale factor]. TRAIN (use_global_stats
    false) normalises by batch statistics and updates the sums as s <- maf * s + batch value,
    factor <- maf * factor + 1, storing the unbiased variance m/(m-1) * var; global-stats mode
    normalises by sums / factor. The blobs are statistics, never learned: lr_mult is forced to 0.
    """

    exact_num_bottoms = 1
    exact_num_tops = 1

    def layer_setup(self, bottoms: Sequence[Blob], tops: Sequence[Blob]) -> None:
        p = self.param.batch_norm_param
        self.maf = float(p.moving_average_fraction)
        self.use_global_stats = (
            bool(p.use_global_stats) if p.HasField("use_global_stats") else self.phase == TEST
        )
        self.eps = float(p.eps)
        b = bottoms[0]
        self.channels = 1 if b.num_axes == 1 else b.shape[1]
        if not self.blobs:
            for shape in ((self.channels,), (self.channels,), (1,)):
                self.new_param_blob(shape)  # zero-filled
        # Caffe masks the statistics from the solver: lr_mult 0 on every blob.
        specs = self.param.param
        for i in range(len(self.blobs)):
            if i == len(specs):
                specs.add().lr_mult = 0.0
            elif specs[i].lr_mult != 0.0:
                raise self.error(
                    f"param {i} has lr_mult {specs[i].lr_mult}: batch normalization statistics "
                    "cannot be learned (lr_mult must be 0)"
                )

    def reshape(self, bottoms: Sequence[Blob], tops: Sequence[Blob]) -> None:
        b = bottoms[0]
        if b.num_axes < 1:
            raise self.error("bottom must have at least one axis")
        channels = 1 if b.num_axes == 1 else b.shape[1]
        if channels != self.channels:
            raise self.error(
                f"bottom has {channels} channels, the layer was set up for {self.channels}"
            )
        tops[0].reshape(b.shape)
        self.view = (b.shape[0], channels, b.count // (b.shape[0] * channels) if b.count else 0)
        norm = getattr(self, "x_norm", None)
        if norm is None or norm.shape != self.view:
            self.x_norm = self.xp.empty(self.view, self.dtype)
            self.inv_std = self.xp.empty((1, channels, 1), self.dtype)

    def forward(self, bottoms: Sequence[Blob], tops: Sequence[Blob]) -> None:
        xp = self.xp
        x = bottoms[0].data.reshape(self.view)
        y = tops[0].data.reshape(self.view)
        if self.use_global_stats:
            factor = self.blobs[2].data.reshape(-1)[0]
            scale = xp.where(factor == 0, 0, 1 / xp.where(factor == 0, 1, factor))
            mean = (self.blobs[0].data * scale).reshape(1, -1, 1)
            var = (self.blobs[1].data * scale).reshape(1, -1, 1)
            xp.subtract(x, mean, out=y)
        else:
            mean = x.mean(axis=(0, 2), keepdims=True)
            xp.subtract(x, mean, out=y)
            var = xp.mean(y * y, axis=(0, 2), keepdims=True)
            m = x.size // self.channels
            correction = m / (m - 1) if m > 1 else 1.0
            s0, s1, s2 = self.blobs[0].data, self.blobs[1].data, self.blobs[2].data
            s2 *= self.maf
            s2 += 1
            s0 *= self.maf
            s0 += mean.reshape(-1)
            s1 *= self.maf
            s1 += correction * var.reshape(-1)
        xp.add(var, self.eps, out=self.inv_std)
        xp.sqrt(self.inv_std, out=self.inv_std)
        xp.divide(1, self.inv_std, out=self.inv_std)
        y *= self.inv_std
        self.x_norm[...] = y  # kept: an in-place Scale after us overwrites the top

    def backward(
        self, tops: Sequence[Blob], propagate_down: Sequence[bool], bottoms: Sequence[Blob]
    ) -> None:
        if not propagate_down[0]:
            return
        xp = self.xp
        dy = tops[0].diff.reshape(self.view)
        dx = bottoms[0].diff.reshape(self.view)
        if self.use_global_stats:
            xp.multiply(dy, self.inv_std, out=dx)
            return
        # dx = (dy - mean(dy) - mean(dy * y) * y) / std, means over N and spatial per channel.
        ynorm = self.x_norm
        mean_dy = dy.mean(axis=(0, 2), keepdims=True)
        mean_dy_y = xp.mean(dy * ynorm, axis=(0, 2), keepdims=True)
        tmp = ynorm * mean_dy_y
        tmp += mean_dy
        xp.subtract(dy, tmp, out=dx)
        dx *= self.inv_std


def _operand_axes(layer: Layer, bottom: Blob, axis: int, num_axes: int) -> tuple[int, int]:
    """(first axis, number of axes) of `bottom` that a learned Scale/Bias operand spans."""
    try:
        start = bottom.canonical_axis(axis) if bottom.num_axes else 0
    except IndexError:
        raise layer.error(f"axis {axis} is out of range for bottom shape {bottom.shape}") from None
    if num_axes < -1:
        raise layer.error(f"num_axes must be >= -1, got {num_axes}")
    if num_axes == -1:
        num_axes = bottom.num_axes - start
    if start + num_axes > bottom.num_axes:
        raise layer.error(
            f"axis {axis} + num_axes {num_axes} exceed the axes of bottom shape {bottom.shape}"
        )
    return start, num_axes


class _BroadcastOperand:
    """Shapes for applying an operand of shape bottom[axis:axis+k] along (outer, dim, inner)."""

    def __init__(self, layer: Layer, bottom: Blob, operand: Blob, axis: int) -> None:
        start = 0 if operand.num_axes == 0 else axis
        k = operand.num_axes
        if bottom.shape[start : start + k] != operand.shape:
            raise layer.error(
                f"operand shape {operand.shape} does not match bottom shape {bottom.shape} "
                f"at axis {start}"
            )
        self.view = (
            bottom.count_range(0, start),
            operand.count,
            bottom.count_range(start + k),
        )

    def column(self, array: Any) -> Any:
        return array.reshape(1, -1, 1)


def _resolve_axis(layer: Layer, bottoms: Sequence[Blob], axis: int, operand: Blob) -> int:
    if operand.num_axes == 0:
        return 0
    try:
        return bottoms[0].canonical_axis(axis)
    except IndexError:
        raise layer.error(f"axis {axis} out of range for bottom shape {bottoms[0].shape}") from None


def _reduce_to(values: Any, out: Any, accumulate: bool) -> None:
    """Sum (outer, dim, inner) values over outer and inner into `out` (+= if accumulate)."""
    total = values.sum(axis=(0, 2))
    flat = out.reshape(-1)
    if accumulate:
        flat += total
    else:
        flat[...] = total


@register_layer("Bias")
class BiasLayer(Layer):
    """y = x + b, b broadcast along axes [axis, axis + num_axes): learned, or bottom 1."""

    min_bottoms = 1
    max_bottoms = 2
    exact_num_tops = 1

    def layer_setup(self, bottoms: Sequence[Blob], tops: Sequence[Blob]) -> None:
        p = self.param.bias_param
        if len(bottoms) == 1 and not self.blobs:
            start, k = _operand_axes(self, bottoms[0], int(p.axis), int(p.num_axes))
            filler = p.filler if p.HasField("filler") else type(p.filler)(type="constant")
            try:
                self.new_param_blob(bottoms[0].shape[start : start + k], filler)
            except ValueError as exc:
                raise self.error(str(exc)) from None

    def _operand(self, bottoms: Sequence[Blob]) -> Blob:
        return bottoms[1] if len(bottoms) > 1 else self.blobs[0]

    def reshape(self, bottoms: Sequence[Blob], tops: Sequence[Blob]) -> None:
        operand = self._operand(bottoms)
        axis = _resolve_axis(self, bottoms, int(self.param.bias_param.axis), operand)
        self.bcast = _BroadcastOperand(self, bottoms[0], operand, axis)
        tops[0].reshape(bottoms[0].shape)

    def forward(self, bottoms: Sequence[Blob], tops: Sequence[Blob]) -> None:
        b = self.bcast.column(self._operand(bottoms).data)
        x = bottoms[0].data.reshape(self.bcast.view)
        self.xp.add(x, b, out=tops[0].data.reshape(self.bcast.view))

    def backward(
        self, tops: Sequence[Blob], propagate_down: Sequence[bool], bottoms: Sequence[Blob]
    ) -> None:
        dy = tops[0].diff
        if len(bottoms) == 1 or propagate_down[1]:
            operand = self._operand(bottoms)
            _reduce_to(dy.reshape(self.bcast.view), operand.diff, len(bottoms) == 1)
        if propagate_down[0] and bottoms[0].diff is not dy:
            bottoms[0].diff[...] = dy


@register_layer("Scale")
class ScaleLayer(Layer):
    """y = x * s (+ b if bias_term), s broadcast along [axis, axis + num_axes): learned or bottom 1.

    blobs: [scale] with one bottom (filler default constant 1), then [bias] if bias_term.
    """

    min_bottoms = 1
    max_bottoms = 2
    exact_num_tops = 1

    def layer_setup(self, bottoms: Sequence[Blob], tops: Sequence[Blob]) -> None:
        p = self.param.scale_param
        self.saved_input: Any = None
        if self.blobs:
            return
        if len(bottoms) > 1:
            operand_shape = bottoms[1].shape
        else:
            start, k = _operand_axes(self, bottoms[0], int(p.axis), int(p.num_axes))
            operand_shape = bottoms[0].shape[start : start + k]
        try:
            if len(bottoms) == 1:
                filler = (
                    p.filler if p.HasField("filler") else type(p.filler)(type="constant", value=1.0)
                )
                self.new_param_blob(operand_shape, filler)
            if p.bias_term:
                bias_filler = (
                    p.bias_filler if p.HasField("bias_filler") else type(p.filler)(type="constant")
                )
                self.new_param_blob(operand_shape, bias_filler)
        except ValueError as exc:
            raise self.error(str(exc)) from None

    def _scale(self, bottoms: Sequence[Blob]) -> Blob:
        return bottoms[1] if len(bottoms) > 1 else self.blobs[0]

    def _bias(self) -> Blob | None:
        return self.blobs[-1] if self.param.scale_param.bias_term else None

    def reshape(self, bottoms: Sequence[Blob], tops: Sequence[Blob]) -> None:
        scale = self._scale(bottoms)
        axis = _resolve_axis(self, bottoms, int(self.param.scale_param.axis), scale)
        self.bcast = _BroadcastOperand(self, bottoms[0], scale, axis)
        if bottoms[1:] and bottoms[1] is tops[0]:
            raise self.error("the scale bottom cannot be the top")
        tops[0].reshape(bottoms[0].shape)
        self.in_place = bottoms[0] is tops[0]
        if self.in_place and (
            self.saved_input is None or self.saved_input.shape != self.bcast.view
        ):
            self.saved_input = self.xp.empty(self.bcast.view, self.dtype)

    def forward(self, bottoms: Sequence[Blob], tops: Sequence[Blob]) -> None:
        view = self.bcast.view
        x = bottoms[0].data.reshape(view)
        if self.in_place:
            self.saved_input[...] = x  # the scale's gradient needs x after y overwrote it
        y = tops[0].data.reshape(view)
        self.xp.multiply(x, self.bcast.column(self._scale(bottoms).data), out=y)
        bias = self._bias()
        if bias is not None:
            y += self.bcast.column(bias.data)

    def backward(
        self, tops: Sequence[Blob], propagate_down: Sequence[bool], bottoms: Sequence[Blob]
    ) -> None:
        view = self.bcast.view
        dy = tops[0].diff.reshape(view)
        bias = self._bias()
        if bias is not None:
            _reduce_to(dy, bias.diff, True)
        learned = len(bottoms) == 1
        scale = self._scale(bottoms)
        if learned or propagate_down[1]:
            x = self.saved_input if self.in_place else bottoms[0].data.reshape(view)
            _reduce_to(dy * x, scale.diff, learned)
        if propagate_down[0]:
            dx = bottoms[0].diff.reshape(view)
            self.xp.multiply(dy, self.bcast.column(scale.data), out=dx)
