"""Caffe's Threshold layer: y = 1 if x > threshold else 0; it has no gradient (as in Caffe)."""

from __future__ import annotations

from collections.abc import Sequence

from engine.blob import Blob
from engine.layer import register_layer
from engine.layers.neuron import NeuronLayer


@register_layer("Threshold", v1_name="THRESHOLD")
class ThresholdLayer(NeuronLayer):
    """Binary step at threshold_param.threshold (strictly greater gives 1)."""

    def layer_setup(self, bottoms: Sequence[Blob], tops: Sequence[Blob]) -> None:
        self.threshold = float(self.param.threshold_param.threshold)

    def forward(self, bottoms: Sequence[Blob], tops: Sequence[Blob]) -> None:
        self.xp.greater(bottoms[0].data, self.threshold, out=tops[0].data, casting="unsafe")
