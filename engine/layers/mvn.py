"""Caffe's MVN layer: subtract the mean (and divide by std + eps) per sample and channel, or per
sample across channels. As in Caffe, std = sqrt(E[(x - mean)^2]) and eps is added after the root.
"""

from __future__ import annotations

from collections.abc import Sequence

from engine.blob import Blob
from engine.layer import Layer, register_layer


@register_layer("MVN", v1_name="MVN")
class MVNLayer(Layer):
    """y = (x - mean) / (std + eps) over rows of (N*C, H*W), or (N, C*H*W) across_channels.

    Backward, with normalize_variance: dx = (dy - mean(dy) - y * mean(y * dy)) / (std + eps);
    without: dx = dy - mean(dy). Only top data and saved std are used, so it works in place.
    """

    exact_num_bottoms = 1
    exact_num_tops = 1

    def layer_setup(self, bottoms: Sequence[Blob], tops: Sequence[Blob]) -> None:
        p = self.param.mvn_param
        self.normalize_variance = bool(p.normalize_variance)
        self.across_channels = bool(p.across_channels)
        self.eps = float(p.eps)
        self._std = None

    def reshape(self, bottoms: Sequence[Blob], tops: Sequence[Blob]) -> None:
        shape = bottoms[0].shape
        if len(shape) < 2 and not self.across_channels:
            raise self.error(f"bottom shape {shape} needs at least (N, C) axes")
        tops[0].reshape(shape)
        self.num = shape[0] if self.across_channels else bottoms[0].count_range(0, 2)
        self.dim = bottoms[0].count // max(self.num, 1)
        if self._std is None or self._std.shape != (self.num, 1):
            self._std = self.xp.empty((self.num, 1), self.dtype)

    def forward(self, bottoms: Sequence[Blob], tops: Sequence[Blob]) -> None:
        xp = self.xp
        x = bottoms[0].data.reshape(self.num, self.dim)
        y = tops[0].data.reshape(self.num, self.dim)
        mean = x.mean(axis=1, keepdims=True)
        xp.subtract(x, mean, out=y)
        if self.normalize_variance:
            std = self._std
            xp.mean(y * y, axis=1, keepdims=True, out=std)
            xp.sqrt(std, out=std)
            std += self.eps
            y /= std

    def backward(
        self, tops: Sequence[Blob], propagate_down: Sequence[bool], bottoms: Sequence[Blob]
    ) -> None:
        if not propagate_down[0]:
            return
        y = tops[0].data.reshape(self.num, self.dim)
        dy = tops[0].diff.reshape(self.num, self.dim)
        dx = bottoms[0].diff.reshape(self.num, self.dim)
        mean_dy = dy.mean(axis=1, keepdims=True)
        if self.normalize_variance:
            mean_ydy = (y * dy).mean(axis=1, keepdims=True)
            grad = dy - mean_dy - y * mean_ydy  # computed before dx (may alias dy) is written
            self.xp.divide(grad, self._std, out=dx)
        else:
            self.xp.subtract(dy, mean_dy, out=dx)
