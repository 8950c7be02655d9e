"""Caffe's Swish layer: y = x * sigmoid(beta * x); works in place (backward uses y and the
saved sigmoid, as Caffe does)."""

from __future__ import annotations

from collections.abc import Sequence

from engine.blob import Blob
from engine.layer import register_layer
from engine.layers.neuron import NeuronLayer


@register_layer("Swish")
class SwishLayer(NeuronLayer):
    """dy/dx = beta * y + s * (1 - beta * y) with s = sigmoid(beta * x)."""

    def layer_setup(self, bottoms: Sequence[Blob], tops: Sequence[Blob]) -> None:
        self.beta = float(self.param.swish_param.beta)
        self._sig = None

    def reshape(self, bottoms: Sequence[Blob], tops: Sequence[Blob]) -> None:
        super().reshape(bottoms, tops)
        if self._sig is None or self._sig.shape != bottoms[0].shape:
            self._sig = self.xp.empty(bottoms[0].shape, self.dtype)

    def forward(self, bottoms: Sequence[Blob], tops: Sequence[Blob]) -> None:
        xp, s = self.xp, self._sig
        # sigmoid(z) = (1 + tanh(z / 2)) / 2: no overflow for large |z|
        xp.multiply(bottoms[0].data, 0.5 * self.beta, out=s)
        xp.tanh(s, out=s)
        s += 1
        s *= 0.5
        xp.multiply(bottoms[0].data, s, out=tops[0].data)

    def backward(
        self, tops: Sequence[Blob], propagate_down: Sequence[bool], bottoms: Sequence[Blob]
    ) -> None:
        if not propagate_down[0]:
            return
        y, s = tops[0].data, self._sig
        grad = self.beta * y + s * (1 - self.beta * y)
        self.xp.multiply(tops[0].diff, grad, out=bottoms[0].diff)
