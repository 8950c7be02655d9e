"""Caffe's Deconvolution layer: the transpose of Convolution, by GEMM + col2im / im2col + GEMM.

Weights are (C_in, C_out/group, kh, kw); top extent is s*(H-1) + d*(k-1) + 1 - 2p. Forward is
a convolution's data gradient (columns W^T x summed into a padded image), backward is a
convolution's forward (bottom diff) and its weight gradient with bottom and top swapped.
Internally images are channel-major, batch second (C, N, H, W), so a GEMM covers the batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from engine.blob import Blob
from engine.im2col import CNHW_TO_NCHW, NCHW_TO_CNHW, col2im, im2col
from engine.layer import Layer, register_layer
from engine.layers.convolution import image_extents, read_geometry

_SPATIAL = (2, 3)


def deconv_out_size(size: int, kernel: int, pad: int, stride: int, dilation: int) -> int:
    """Caffe's deconvolution output extent: s*(size-1) + d*(k-1) + 1 - 2p."""
    return stride * (size - 1) + dilation * (kernel - 1) + 1 - 2 * pad


@register_layer("Deconvolution", v1_name="DECONVOLUTION")
class DeconvolutionLayer(Layer):
    """y = W^T * x + b (transposed 2-D convolution); reads convolution_param."""

    min_bottoms = 1
    min_tops = 1

    def layer_setup(self, bottoms: Sequence[Blob], tops: Sequence[Blob]) -> None:
        p = self.param.convolution_param
        if len(bottoms) != len(tops):
            raise self.error(f"needs as many tops as bottoms, got {len(bottoms)} and {len(tops)}")
        read_geometry(self, p, bottoms[0], "deconvolution")
        wshape = (self.channels, self.num_output // self.group, self.kh, self.kw)
        self.weight = self.new_param_blob(wshape, p.weight_filler)
        self.bias = self.new_param_blob((self.num_output,), p.bias_filler) if p.bias_term else None
        self._key: list[tuple[int, ...] | None] = [None] * len(bottoms)
        self._buf: list[dict[str, Any]] = [{} for _ in bottoms]

    def _geom(self) -> tuple[int, ...]:
        return (self.kh, self.kw, self.sh, self.sw, self.dh, self.dw)

    def reshape(self, bottoms: Sequence[Blob], tops: Sequence[Blob]) -> None:
        xp, dt = self.xp, self.dtype
        for k, (bottom, top) in enumerate(zip(bottoms, tops, strict=True)):
            n, h, w, oh, ow = image_extents(self, k, bottom.shape, deconv_out_size)
            if oh <= 0 or ow <= 0:
                raise self.error(f"pad too large: output would be {oh}x{ow} from {h}x{w}")
            top.reshape((n, self.num_output, oh, ow))
            if self._key[k] != (n, h, w):
                self._key[k] = (n, h, w)
                o = self.num_output
                self._buf[k] = {
                    "dims": (n, h, w, oh, ow),
                    "col": xp.empty((o, self.kh, self.kw, n, h, w), dt),
                    "img": xp.zeros((o, n, oh + 2 * self.ph, ow + 2 * self.pw), dt),
                    "x": xp.empty((self.channels, n, h, w), dt),
                }

    def forward(self, bottoms: Sequence[Blob], tops: Sequence[Blob]) -> None:
        xp, g = self.xp, self.group
        cg, og = self.channels // g, self.num_output // g
        w3 = self.weight.data.reshape(g, cg, og * self.kh * self.kw)
        for k, (bottom, top) in enumerate(zip(bottoms, tops, strict=True)):
            buf = self._buf[k]
            n, h, w, oh, ow = buf["dims"]
            x = buf["x"]
            x[...] = bottom.data.transpose(NCHW_TO_CNHW)
            xg = x.reshape(g, cg, n * h * w)
            colg = buf["col"].reshape(g, og * self.kh * self.kw, n * h * w)
            for gi in range(g):
                xp.matmul(w3[gi].T, xg[gi], out=colg[gi])
            img = buf["img"]
            col2im(buf["col"], img, self._geom(), (h, w), _SPATIAL)
            inner = img[:, :, self.ph : self.ph + oh, self.pw : self.pw + ow]
            top.data[...] = inner.transpose(CNHW_TO_NCHW)
            if self.bias is not None:
                top.data += self.bias.data.reshape(1, -1, 1, 1)

    def backward(
        self, tops: Sequence[Blob], propagate_down: Sequence[bool], bottoms: Sequence[Blob]
    ) -> None:
        xp, g = self.xp, self.group
        cg, og = self.channels // g, self.num_output // g
        okk = og * self.kh * self.kw
        w3 = self.weight.data.reshape(g, cg, okk)
        wd3 = self.weight.diff.reshape(g, cg, okk)
        for k, (bottom, top) in enumerate(zip(bottoms, tops, strict=True)):
            buf = self._buf[k]
            n, h, w, oh, ow = buf["dims"]
            dy = top.diff
            if self.bias is not None:
                self.bias.diff += dy.sum(axis=(0, 2, 3))
            img = buf["img"]  # forward's borders are overwritten here; zero them first
            img.fill(0)
            img[:, :, self.ph : self.ph + oh, self.pw : self.pw + ow] = dy.transpose(NCHW_TO_CNHW)
            im2col(img, buf["col"], self._geom(), (h, w), _SPATIAL)
            colg = buf["col"].reshape(g, okk, n * h * w)
            x = buf["x"]  # bottom data, channel-major; then reused for the data gradient
            x[...] = bottom.data.transpose(NCHW_TO_CNHW)
            xg = x.reshape(g, cg, n * h * w)
            for gi in range(g):
                wd3[gi] += xg[gi] @ colg[gi].T
            if propagate_down[k]:
                for gi in range(g):
                    xp.matmul(w3[gi], colg[gi], out=xg[gi])
                bottom.diff[...] = x.transpose(CNHW_TO_NCHW)
