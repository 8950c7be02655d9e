"""Caffe's InnerProduct layer: y = x W^T + b over the dims from `axis` on (one GEMM each way).

Each GEMM is split over the engine's threads by hand with OpenBLAS at one thread (engine.threads),
so OpenBLAS's spinning workers never compete with the threaded copies of other layers; on a device
(CuPy) each is one matmul.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from engine.blob import Blob
from engine.layer import Layer, register_layer
from engine.threads import EngineThreads, parallel_matmul


@register_layer("InnerProduct", v1_name="INNER_PRODUCT")
class InnerProductLayer(Layer):
    """Fully connected: weights (num_output, K), or (K, num_output) with transpose: true."""

    exact_num_bottoms = 1
    exact_num_tops = 1

    def layer_setup(self, bottoms: Sequence[Blob], tops: Sequence[Blob]) -> None:
        p = self.param.inner_product_param
        self.num_output = int(p.num_output)
        if self.num_output <= 0:
            raise self.error("num_output must be given and positive")
        try:
            self.axis = bottoms[0].canonical_axis(p.axis)
        except IndexError as exc:
            raise self.error(f"axis {p.axis}: {exc}") from None
        self.k = bottoms[0].count_range(self.axis)
        self.transpose = bool(p.transpose)
        shape = (self.k, self.num_output) if self.transpose else (self.num_output, self.k)
        self.weight = self.new_param_blob(shape, p.weight_filler)
        self.bias = None
        if p.bias_term:
            self.bias = self.new_param_blob((self.num_output,), p.bias_filler)
        self._dw: Any = None  # product buffer for the accumulating GEMM, made on first need
        self._cores = EngineThreads(self.xp, self.name)

    def reshape(self, bottoms: Sequence[Blob], tops: Sequence[Blob]) -> None:
        bottom = bottoms[0]
        if bottom.num_axes <= self.axis or bottom.count_range(self.axis) != self.k:
            raise self.error(
                f"bottom shape {bottom.shape} gives {bottom.count_range(self.axis)} inputs from "
                f"axis {self.axis}; the weights expect {self.k}"
            )
        tops[0].reshape((*bottom.shape[: self.axis], self.num_output))

    def _weight_nk(self, w: Any) -> Any:
        """The weights (or their diff) as an (N, K) matrix view."""
        return w.T if self.transpose else w

    def forward(self, bottoms: Sequence[Blob], tops: Sequence[Blob]) -> None:
        x = bottoms[0].data.reshape(-1, self.k)
        y = tops[0].data.reshape(-1, self.num_output)
        parallel_matmul(self._cores, x, self._weight_nk(self.weight.data).T, y)
        if self.bias is not None:
            y += self.bias.data

    def backward(
        self, tops: Sequence[Blob], propagate_down: Sequence[bool], bottoms: Sequence[Blob]
    ) -> None:
        x = bottoms[0].data.reshape(-1, self.k)
        dy = tops[0].diff.reshape(-1, self.num_output)
        write = self.param_diffs_zero  # the diffs hold zeros: 0 + product is the product
        if write:
            dw = self.weight.diff
        else:
            if self._dw is None:
                self._dw = self.xp.empty(self.weight.shape, self.dtype)
            dw = self._dw
        if self.transpose:  # (K, N) += x^T dy
            parallel_matmul(self._cores, x.T, dy, dw)
        else:  # (N, K) += dy^T x
            parallel_matmul(self._cores, dy.T, x, dw)
        if not write:
            self.weight.diff += dw
        if self.bias is not None:
            if write:
                self.xp.sum(dy, axis=0, out=self.bias.diff)
            else:
                self.bias.diff += self.xp.sum(dy, axis=0)
        if propagate_down[0]:
            dx = bottoms[0].diff.reshape(-1, self.k)
            parallel_matmul(self._cores, dy, self._weight_nk(self.weight.data), dx)
