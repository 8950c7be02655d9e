"""Caffe 1.0's Crop layer: crop bottom 0 to bottom 1's shape on every axis from `axis` on.

offset: none (all 0), one value for every cropped axis, or one per cropped axis. Bottom 1 only
gives the shape; its gradient is zero.
"""

from __future__ import annotations

from collections.abc import Sequence

from engine.blob import Blob
from engine.layer import Layer, register_layer


@register_layer("Crop")
class CropLayer(Layer):
    """top = bottom0[..., o_a : o_a + s1_a, ...] for axes a >= axis, s1 = bottom 1's shape."""

    exact_num_bottoms = 2
    exact_num_tops = 1

    def reshape(self, bottoms: Sequence[Blob], tops: Sequence[Blob]) -> None:
        p = self.param.crop_param
        s0, s1 = bottoms[0].shape, bottoms[1].shape
        if len(s0) != len(s1):
            raise self.error(f"bottoms must have the same number of axes, got {s0} and {s1}")
        try:
            axis = bottoms[0].canonical_axis(int(p.axis))
        except IndexError as exc:
            raise self.error(f"crop_param.axis: {exc}") from None
        offsets = [int(o) for o in p.offset]
        n_crop = len(s0) - axis
        if len(offsets) not in (0, 1, n_crop):
            raise self.error(
                f"crop_param.offset has {len(offsets)} values; give 0, 1 or {n_crop} "
                f"(one per axis from axis {axis} of {s0})"
            )
        index: list[slice] = []
        shape: list[int] = []
        for i, size in enumerate(s0):
            if i < axis:
                index.append(slice(None))
                shape.append(size)
                continue
            off = offsets[0] if len(offsets) == 1 else (offsets[i - axis] if offsets else 0)
            if size - off < s1[i]:
                raise self.error(
                    f"invalid crop on axis {i}: bottom 0 size {size} - offset {off} is smaller "
                    f"than bottom 1 size {s1[i]}"
                )
            index.append(slice(off, off + s1[i]))
            shape.append(s1[i])
        self._index = tuple(index)
        tops[0].reshape(shape)

    def forward(self, bottoms: Sequence[Blob], tops: Sequence[Blob]) -> None:
        tops[0].data[...] = bottoms[0].data[self._index]

    def backward(
        self, tops: Sequence[Blob], propagate_down: Sequence[bool], bottoms: Sequence[Blob]
    ) -> None:
        if propagate_down[0]:
            bottoms[0].diff.fill(0)
            bottoms[0].diff[self._index] = tops[0].diff
        if len(propagate_down) > 1 and propagate_down[1]:
            bottoms[1].diff.fill(0)  # the output does not depend on bottom 1's values
