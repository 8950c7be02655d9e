"""Caffe's InfogainLoss (1.0): softmax of the scores along `axis`, then the infogain-weighted
log loss. H comes from bottom 2 or from infogain_loss_param.source (a .binaryproto); with H = I
it equals SoftmaxWithLoss. ignore_label and normalization follow loss_param.
"""

from __future__ import annotations

from collections.abc import Sequence

from engine.blob import Blob
from engine.class_axis import class_axis_layout
from engine.errors import PrototxtError
from engine.layer import register_layer
from engine.layers.loss import FLT_MIN, LossLayer, shape_softmax_buffers, softmax_and_labels
from engine.proto_io import read_blob_array


@register_layer("InfogainLoss", v1_name="INFOGAIN_LOSS")
class InfogainLossLayer(LossLayer):
    """loss = -sum_n sum_k H[label_n, k] log(max(p_nk, FLT_MIN)) / normalizer;
    d scores_nk = (p_nk * sum_j H[label_n, j] - H[label_n, k]) * loss_weight / normalizer."""

    exact_num_bottoms = None
    min_bottoms = 2
    max_bottoms = 3
    exact_num_tops = None
    min_tops = 1
    max_tops = 2

    def layer_setup(self, bottoms: Sequence[Blob], tops: Sequence[Blob]) -> None:
        super().layer_setup(bottoms, tops)
        p = self.param.infogain_loss_param
        self._h_own = None
        if len(bottoms) < 3:
            if not p.source:
                raise self.error("infogain matrix: give infogain_loss_param.source or bottom 2")
            try:
                host = read_blob_array(p.source)
            except (PrototxtError, OSError) as exc:
                raise self.error(f"infogain_loss_param.source '{p.source}': {exc}") from None
            self._h_own = self.xp.asarray(host, dtype=self.dtype)
        self._prob_own = Blob((), self.xp, self.dtype)
        self._scratch = Blob((), self.xp, self.dtype)

    def allow_force_backward(self, bottom_index: int) -> bool:
        return bottom_index == 0

    def _infogain(self, bottoms: Sequence[Blob]):  # an xp array
        return bottoms[2].data if len(bottoms) > 2 else self._h_own

    def reshape(self, bottoms: Sequence[Blob], tops: Sequence[Blob]) -> None:
        super().reshape(bottoms, tops)
        scores = bottoms[0]
        self.axis, self.outer, self.inner, self.channels = class_axis_layout(
            self,
            scores,
            bottoms[1],
            int(self.param.infogain_loss_param.axis),
            "infogain_loss_param.axis",
        )
        h = self._infogain(bottoms)
        if h.size != self.channels * self.channels:
            raise self.error(
                f"infogain matrix has {h.size} values; needs {self.channels}x{self.channels} "
                f"(the number of labels along axis {self.axis})"
            )
        shape_softmax_buffers(self, scores, tops)

    def forward(self, bottoms: Sequence[Blob], tops: Sequence[Blob]) -> None:
        xp = self.xp
        labels, valid = softmax_and_labels(self, bottoms)
        h = self._infogain(bottoms).reshape(self.channels, self.channels)
        rows = h[labels].transpose(0, 2, 1)  # (outer, channels, inner): H[label, k]
        if valid is not None:
            rows = rows * valid[:, None, :]
        self._rows = rows
        prob3 = self.prob.data.reshape(self.outer, self.channels, self.inner)
        loss = -xp.sum(rows * xp.log(xp.maximum(prob3, FLT_MIN)))
        count = None if valid is None else xp.count_nonzero(valid)
        self._norm = self.normalizer(self.outer, self.inner, count)
        tops[0].data[...] = loss / self._norm

    def backward(
        self, tops: Sequence[Blob], propagate_down: Sequence[bool], bottoms: Sequence[Blob]
    ) -> None:
        self.check_label_backward(propagate_down)
        if len(propagate_down) > 2 and propagate_down[2]:
            raise self.error("cannot backpropagate to the infogain matrix input")
        if not propagate_down[0]:
            return
        prob3 = self.prob.data.reshape(self.outer, self.channels, self.inner)
        dx3 = bottoms[0].diff.reshape(self.outer, self.channels, self.inner)
        row_sum = self._rows.sum(axis=1, keepdims=True)
        self.xp.multiply(prob3, row_sum, out=dx3)
        dx3 -= self._rows
        dx3 *= self.loss_weight(tops) / self._norm
