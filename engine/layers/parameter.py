"""Caffe's Parameter layer: exposes one learnable blob (parameter_param.shape) as its top.

Caffe shares the top with the param; here forward copies the param into the top and backward
adds the top diff into the param diff, which keeps the Net's flat parameter views and
accumulation (iter_size) intact.
"""

from __future__ import annotations

from collections.abc import Sequence

from engine.blob import Blob
from engine.layer import Layer, register_layer


@register_layer("Parameter")
class ParameterLayer(Layer):
    """No bottoms; top = the layer's single param blob (filled with zeros, as Caffe does)."""

    exact_num_bottoms = 0
    exact_num_tops = 1

    def layer_setup(self, bottoms: Sequence[Blob], tops: Sequence[Blob]) -> None:
        p = self.param.parameter_param
        shape = tuple(int(d) for d in p.shape.dim)
        if not p.HasField("shape") or not shape or any(d <= 0 for d in shape):
            raise self.error(f"parameter_param.shape must list positive dims, got {shape}")
        self.shape = shape
        self.new_param_blob(shape)

    def reshape(self, bottoms: Sequence[Blob], tops: Sequence[Blob]) -> None:
        tops[0].reshape(self.shape)

    def forward(self, bottoms: Sequence[Blob], tops: Sequence[Blob]) -> None:
        tops[0].data[...] = self.blobs[0].data

    def backward(
        self, tops: Sequence[Blob], propagate_down: Sequence[bool], bottoms: Sequence[Blob]
    ) -> None:
        self.blobs[0].diff += tops[0].diff
