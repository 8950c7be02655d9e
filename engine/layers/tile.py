"""Caffe's Tile layer: repeat the blob `tiles` times along `axis` (each block whole, in order)."""

from __future__ import annotations

from collections.abc import Sequence

from engine.blob import Blob
from engine.layer import Layer, register_layer


@register_layer("Tile")
class TileLayer(Layer):
    """top shape = bottom shape with shape[axis] * tiles; backward sums the copies."""

    exact_num_bottoms = 1
    exact_num_tops = 1

    def reshape(self, bottoms: Sequence[Blob], tops: Sequence[Blob]) -> None:
        p = self.param.tile_param
        try:
            self.axis = bottoms[0].canonical_axis(int(p.axis))
        except IndexError as exc:
            raise self.error(f"tile_param.axis: {exc}") from None
        self.tiles = int(p.tiles)
        if not p.HasField("tiles") or self.tiles <= 0:
            raise self.error("tile_param.tiles must be given and positive")
        shape = list(bottoms[0].shape)
        self.outer = bottoms[0].count_range(0, self.axis)
        self.inner = bottoms[0].count_range(self.axis)
        shape[self.axis] *= self.tiles
        tops[0].reshape(shape)

    def forward(self, bottoms: Sequence[Blob], tops: Sequence[Blob]) -> None:
        top3 = tops[0].data.reshape(self.outer, self.tiles, self.inner)
        top3[...] = bottoms[0].data.reshape(self.outer, 1, self.inner)

    def backward(
        self, tops: Sequence[Blob], propagate_down: Sequence[bool], bottoms: Sequence[Blob]
    ) -> None:
        if not propagate_down[0]:
            return
        dy3 = tops[0].diff.reshape(self.outer, self.tiles, self.inner)
        self.xp.sum(dy3, axis=1, out=bottoms[0].diff.reshape(self.outer, self.inner))
