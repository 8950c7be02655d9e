"""Softmax layer (Caffe "Softmax", V1 SOFTMAX): a numerically stable softmax along one axis."""

from __future__ import annotations

from collections.abc import Sequence
from types import ModuleType
from typing import Any

from engine.blob import Blob
from engine.layer import Layer, register_layer


def softmax_into(xp: ModuleType, x: Any, axis: int, out: Any, scratch: Any) -> None:
    """Write softmax(x) along `axis` into `out` (may be `x`); `scratch` has `axis` reduced to 1.

    The per-position maximum is subtracted before exponentiating, as Caffe does, so large
    scores do not overflow.
    """
    xp.max(x, axis=axis, keepdims=True, out=scratch)
    xp.subtract(x, scratch, out=out)
    xp.exp(out, out=out)
    xp.sum(out, axis=axis, keepdims=True, out=scratch)
    out /= scratch


@register_layer("Softmax", v1_name="SOFTMAX")
class SoftmaxLayer(Layer):
    """y = exp(x - max) / sum(exp(x - max)) along softmax_param.axis (default 1).

    Backward uses only the top (y and dy), so the layer also works in place:
    dx = (dy - sum(dy * y, axis)) * y.
    """

    exact_num_bottoms = 1
    exact_num_tops = 1

    def layer_setup(self, bottoms: Sequence[Blob], tops: Sequence[Blob]) -> None:
        self.axis_param = int(self.param.softmax_param.axis)
        self._scratch = Blob((), self.xp, self.dtype)
        self._prod = Blob((), self.xp, self.dtype)

    def reshape(self, bottoms: Sequence[Blob], tops: Sequence[Blob]) -> None:
        try:
            self.axis = bottoms[0].canonical_axis(self.axis_param)
        except IndexError as exc:
            raise self.error(f"softmax_param.axis: {exc}") from None
        tops[0].reshape(bottoms[0].shape)
        reduced = list(bottoms[0].shape)
        reduced[self.axis] = 1
        self._scratch.reshape(reduced)

    def forward(self, bottoms: Sequence[Blob], tops: Sequence[Blob]) -> None:
        softmax_into(self.xp, bottoms[0].data, self.axis, tops[0].data, self._scratch.data)

    def backward(
        self, tops: Sequence[Blob], propagate_down: Sequence[bool], bottoms: Sequence[Blob]
    ) -> None:
        if not propagate_down[0]:
            return
        xp = self.xp
        y, dy = tops[0].data, tops[0].diff
        self._prod.reshape(y.shape)
        xp.multiply(dy, y, out=self._prod.data)
        xp.sum(self._prod.data, axis=self.axis, keepdims=True, out=self._scratch.data)
        dx = bottoms[0].diff
        xp.subtract(dy, self._scratch.data, out=dx)
        dx *= y
