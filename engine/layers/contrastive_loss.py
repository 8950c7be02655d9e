"""Caffe's ContrastiveLoss: for pairs (a_n, b_n) with similarity y_n,
loss = 1/(2N) sum_n [y_n d_n^2 + (1 - y_n) max(margin - d_n, 0)^2], d_n = ||a_n - b_n||;
legacy_version uses max(margin - d_n^2, 0) for dissimilar pairs. As Caffe, the dissimilar
gradient divides by d_n + 1e-4, and y is read as an integer (nonzero = similar).
"""

from __future__ import annotations

from collections.abc import Sequence

from engine.blob import Blob
from engine.layer import register_layer
from engine.layers.loss import LossLayer


@register_layer("ContrastiveLoss", v1_name="CONTRASTIVE_LOSS")
class ContrastiveLossLayer(LossLayer):
    """Bottoms: a (N, C, 1, 1), b (N, C, 1, 1), y (N, 1, 1, 1); gradients to a and b only."""

    exact_num_bottoms = 3

    def layer_setup(self, bottoms: Sequence[Blob], tops: Sequence[Blob]) -> None:
        super().layer_setup(bottoms, tops)
        p = self.param.contrastive_loss_param
        self.margin = float(p.margin)
        self.legacy = bool(p.legacy_version)

    def allow_force_backward(self, bottom_index: int) -> bool:
        return bottom_index != 2

    def reshape(self, bottoms: Sequence[Blob], tops: Sequence[Blob]) -> None:
        a, b, y = (bl.shape for bl in bottoms)
        n = a[0] if a else 0
        ok = (
            len(a) >= 2
            and a == b
            and bottoms[0].count_range(2) == 1
            and y
            and y[0] == n
            and bottoms[2].count == n
        )
        if not ok:
            raise self.error(
                f"needs a and b of shape (N, C, 1, 1) and similarity (N, 1, 1, 1); "
                f"got {a}, {b} and {y}"
            )
        self.num, self.channels = n, a[1]
        tops[0].reshape(())

    def forward(self, bottoms: Sequence[Blob], tops: Sequence[Blob]) -> None:
        xp = self.xp
        shape = (self.num, self.channels)
        self._diff = bottoms[0].data.reshape(shape) - bottoms[1].data.reshape(shape)
        self._dist_sq = xp.sum(self._diff * self._diff, axis=1)
        self._similar = bottoms[2].data.reshape(-1).astype(xp.int64) != 0
        if self.legacy:
            dissimilar = xp.maximum(self.margin - self._dist_sq, 0)
        else:
            dissimilar = xp.maximum(self.margin - xp.sqrt(self._dist_sq), 0) ** 2
        per_pair = xp.where(self._similar, self._dist_sq, dissimilar)
        tops[0].data[...] = xp.sum(per_pair) / self.num / 2

    def backward(
        self, tops: Sequence[Blob], propagate_down: Sequence[bool], bottoms: Sequence[Blob]
    ) -> None:
        if propagate_down[2]:
            raise self.error("cannot backpropagate to the similarity labels (bottom 2)")
        if not (propagate_down[0] or propagate_down[1]):
            return
        xp = self.xp
        alpha = self.loss_weight(tops) / self.num
        if self.legacy:
            mdist = self.margin - self._dist_sq
            beta = -xp.ones_like(mdist)
        else:
            dist = xp.sqrt(self._dist_sq)
            mdist = self.margin - dist
            beta = -mdist / (dist + 1e-4)
        coef = xp.where(self._similar, 1.0, xp.where(mdist > 0, beta, 0.0)).astype(self.dtype)
        grad = self._diff * (coef * alpha)[:, None]
        for i, sign in ((0, 1), (1, -1)):
            if propagate_down[i]:
                xp.multiply(grad, sign, out=bottoms[i].diff.reshape(self.num, self.channels))
