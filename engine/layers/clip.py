"""Caffe's Clip layer: y = min(max(x, min), max); gradient 1 where min <= x <= max, else 0."""

from __future__ import annotations

from collections.abc import Sequence

from engine.blob import Blob
from engine.layer import register_layer
from engine.layers.neuron import NeuronLayer


@register_layer("Clip")
class ClipLayer(NeuronLayer):
    """Clamp to [clip_param.min, clip_param.max]; in place it keeps a copy of x for backward."""

    backward_uses_bottom = True

    def layer_setup(self, bottoms: Sequence[Blob], tops: Sequence[Blob]) -> None:
        p = self.param.clip_param
        if not (p.HasField("min") and p.HasField("max")):
            raise self.error("clip_param.min and clip_param.max are required")
        self.lo, self.hi = float(p.min), float(p.max)
        if self.lo > self.hi:
            raise self.error(f"clip_param.min ({self.lo}) is greater than max ({self.hi})")

    def forward(self, bottoms: Sequence[Blob], tops: Sequence[Blob]) -> None:
        self.save_input(bottoms)
        self.xp.clip(bottoms[0].data, self.lo, self.hi, out=tops[0].data)

    def backward(
        self, tops: Sequence[Blob], propagate_down: Sequence[bool], bottoms: Sequence[Blob]
    ) -> None:
        if not propagate_down[0]:
            return
        x = self.input_data(bottoms)
        inside = (x >= self.lo) & (x <= self.hi)
        self.xp.multiply(tops[0].diff, inside, out=bottoms[0].diff)
