"""Caffe's Reduction layer: SUM, ASUM, SUMSQ or MEAN over all axes from `axis` on, times coeff.

The top keeps the leading axes (shape () for axis 0). ASUM's gradient uses sign(x), 0 at 0.
"""

from __future__ import annotations

from collections.abc import Sequence

from engine.blob import Blob
from engine.layer import Layer, register_layer

_OPS = ("SUM", "ASUM", "SUMSQ", "MEAN")


@register_layer("Reduction")
class ReductionLayer(Layer):
    """top[i] = coeff * op(bottom[i, :]) with the bottom viewed as (count(0, axis), rest)."""

    exact_num_bottoms = 1
    exact_num_tops = 1

    def layer_setup(self, bottoms: Sequence[Blob], tops: Sequence[Blob]) -> None:
        p = self.param.reduction_param
        self.op = p.ReductionOp.Name(p.operation)
        if self.op not in _OPS:
            raise self.error(f"unknown reduction_param.operation {self.op}")
        self.coeff = float(p.coeff)

    def reshape(self, bottoms: Sequence[Blob], tops: Sequence[Blob]) -> None:
        try:
            self.axis = bottoms[0].canonical_axis(int(self.param.reduction_param.axis))
        except IndexError as exc:
            raise self.error(f"reduction_param.axis: {exc}") from None
        self.num = bottoms[0].count_range(0, self.axis)
        self.dim = bottoms[0].count_range(self.axis)
        tops[0].reshape(bottoms[0].shape[: self.axis])

    def forward(self, bottoms: Sequence[Blob], tops: Sequence[Blob]) -> None:
        xp = self.xp
        x = bottoms[0].data.reshape(self.num, self.dim)
        if self.op == "ASUM":
            x = xp.abs(x)
        elif self.op == "SUMSQ":
            x = x * x
        out = tops[0].data.reshape(self.num)
        xp.sum(x, axis=1, out=out)
        scale = self.coeff / self.dim if self.op == "MEAN" else self.coeff
        out *= scale

    def backward(
        self, tops: Sequence[Blob], propagate_down: Sequence[bool], bottoms: Sequence[Blob]
    ) -> None:
        if not propagate_down[0]:
            return
        xp = self.xp
        dy = tops[0].diff.reshape(self.num, 1)
        dx = bottoms[0].diff.reshape(self.num, self.dim)
        x = bottoms[0].data.reshape(self.num, self.dim)
        if self.op == "SUM":
            dx[...] = dy * self.coeff
        elif self.op == "MEAN":
            dx[...] = dy * (self.coeff / self.dim)
        elif self.op == "ASUM":
            xp.sign(x, out=dx)
            dx *= dy * self.coeff
        else:  # SUMSQ
            xp.multiply(x, dy * (2.0 * self.coeff), out=dx)
