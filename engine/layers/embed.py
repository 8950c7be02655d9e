"""Caffe's Embed layer: a lookup table; integer indices in bottom 0 select rows of the weight
(input_dim, num_output), plus an optional bias. The indices get no gradient."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from engine.backend import scatter_add
from engine.blob import Blob
from engine.layer import Layer, register_layer


@register_layer("Embed")
class EmbedLayer(Layer):
    """top shape = bottom shape + (num_output,); top[..., :] = W[index] (+ b)."""

    exact_num_bottoms = 1
    exact_num_tops = 1

    def layer_setup(self, bottoms: Sequence[Blob], tops: Sequence[Blob]) -> None:
        p = self.param.embed_param
        self.num_output = int(p.num_output)
        self.input_dim = int(p.input_dim)
        if self.num_output <= 0:
            raise self.error("embed_param.num_output must be given and positive")
        if self.input_dim <= 0:
            raise self.error("embed_param.input_dim must be given and positive")
        self.weight = self.new_param_blob((self.input_dim, self.num_output), p.weight_filler)
        self.bias = self.new_param_blob((self.num_output,), p.bias_filler) if p.bias_term else None

    def allow_force_backward(self, bottom_index: int) -> bool:
        return False

    def reshape(self, bottoms: Sequence[Blob], tops: Sequence[Blob]) -> None:
        tops[0].reshape((*bottoms[0].shape, self.num_output))

    def forward(self, bottoms: Sequence[Blob], tops: Sequence[Blob]) -> None:
        xp = self.xp
        raw = bottoms[0].data.reshape(-1)
        index = raw.astype(np.int64)
        bad = (index < 0) | (index >= self.input_dim) | (index != raw)
        if bool(bad.any()):
            first = float(raw[int(xp.argmax(bad))])
            raise self.error(
                f"index {first} is not an integer in [0, {self.input_dim - 1}] (input_dim)"
            )
        self._index = index
        out = tops[0].data.reshape(-1, self.num_output)
        xp.take(self.weight.data, index, axis=0, out=out)
        if self.bias is not None:
            out += self.bias.data

    def backward(
        self, tops: Sequence[Blob], propagate_down: Sequence[bool], bottoms: Sequence[Blob]
    ) -> None:
        if propagate_down[0]:
            raise self.error("cannot backpropagate to the indices (bottom 0)")
        dy = tops[0].diff.reshape(-1, self.num_output)
        scatter_add(self.xp, self.weight.diff, self._index, dy)
        if self.bias is not None:
            self.bias.diff += dy.sum(axis=0)
