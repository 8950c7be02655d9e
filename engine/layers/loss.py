"""Caffe's loss layers: SoftmaxWithLoss, EuclideanLoss, SigmoidCrossEntropyLoss, HingeLoss.

Each writes a scalar (shape ()) top; backward scales by the loss weight the Net writes into
tops[0].diff, as Caffe 1.0 does. Normalization follows Caffe 1.0's LossLayer::GetNormalizer.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from engine.blob import Blob
from engine.class_axis import class_axis_layout
from engine.layer import Layer, register_layer
from engine.layers.softmax import softmax_into

FLT_MIN = float(np.finfo(np.float32).tiny)  # Caffe clamps probabilities at FLT_MIN before log


class LossLayer(Layer):
    """Common part of Caffe's LossLayer: two bottoms, a scalar top, no gradient to the labels."""

    exact_num_bottoms = 2
    exact_num_tops = 1
    is_loss = True
    default_normalization = "VALID"

    def layer_setup(self, bottoms: Sequence[Blob], tops: Sequence[Blob]) -> None:
        lp = self.param.loss_param
        self.has_ignore = lp.HasField("ignore_label")
        self.ignore_label = int(lp.ignore_label)
        if lp.HasField("normalization"):
            self.normalization = lp.NormalizationMode.Name(lp.normalization)
        elif lp.HasField("normalize"):  # legacy flag: true -> VALID, false -> BATCH_SIZE
            self.normalization = "VALID" if lp.normalize else "BATCH_SIZE"
        else:
            self.normalization = self.default_normalization

    def allow_force_backward(self, bottom_index: int) -> bool:
        return bottom_index != 1

    def reshape(self, bottoms: Sequence[Blob], tops: Sequence[Blob]) -> None:
        s0, s1 = bottoms[0].shape, bottoms[1].shape
        if not s0 or not s1 or s0[0] != s1[0]:
            raise self.error(
                f"the data and label should have the same first dimension, got {s0} and {s1}"
            )
        tops[0].reshape(())

    def check_label_backward(self, propagate_down: Sequence[bool]) -> None:
        if len(propagate_down) > 1 and propagate_down[1] and not self.allow_force_backward(1):
            raise self.error("cannot backpropagate to label inputs")

    def normalizer(self, outer: int, inner: int, valid_count: Any) -> Any:
        """Caffe's GetNormalizer, floored at 1; `valid_count` None means no label was ignored."""
        mode = self.normalization
        if mode == "FULL" or (mode == "VALID" and valid_count is None):
            return float(max(outer * inner, 1))
        if mode == "VALID":
            return self.xp.maximum(valid_count, 1).astype(self.dtype)
        if mode == "BATCH_SIZE":
            return float(max(outer, 1))
        if mode == "NONE":
            return 1.0
        raise self.error(f"unknown loss_param.normalization {mode}")

    def loss_weight(self, tops: Sequence[Blob]) -> Any:
        """The weight of this loss (Caffe stores it in the top's diff); stays on the device."""
        return tops[0].diff.reshape(-1)[0]

    def labels(self, blob: Blob, shape: tuple[int, ...]) -> Any:
        """Labels stored as floats, truncated to integers as Caffe's static_cast<int> does."""
        return blob.data.reshape(shape).astype(np.int64)

    def check_labels(self, labels: Any, valid: Any, num_classes: int) -> None:
        """A clear error for a label outside [0, num_classes) that is not the ignore_label."""
        bad = (labels < 0) | (labels >= num_classes)
        if valid is not None:
            bad &= valid
        if bool(bad.any()):
            first = int(labels.reshape(-1)[int(self.xp.argmax(bad.reshape(-1)))])
            raise self.error(
                f"label value {first} out of range: labels must be integers in "
                f"[0, {num_classes - 1}]"
                + (f" or the ignore_label {self.ignore_label}" if self.has_ignore else "")
            )


def shape_softmax_buffers(layer: LossLayer, scores: Blob, tops: Sequence[Blob]) -> None:
    """A softmax loss's probabilities (top 1 when given, else its own) and reduction scratch."""
    layer.prob = tops[1] if len(tops) > 1 else layer._prob_own
    layer.prob.reshape(scores.shape)
    reduced = list(scores.shape)
    reduced[layer.axis] = 1
    layer._scratch.reshape(reduced)


def softmax_and_labels(layer: LossLayer, bottoms: Sequence[Blob]) -> tuple[Any, Any]:
    """The probabilities into layer.prob, and the labels as (outer, inner) ints checked against
    the classes, ignored ones replaced by 0; with the valid mask (None without ignore_label)."""
    xp = layer.xp
    softmax_into(xp, bottoms[0].data, layer.axis, layer.prob.data, layer._scratch.data)
    labels = layer.labels(bottoms[1], (layer.outer, layer.inner))
    valid = (labels != layer.ignore_label) if layer.has_ignore else None
    layer.check_labels(labels, valid, layer.channels)
    return (labels if valid is None else xp.where(valid, labels, 0)), valid


@register_layer("SoftmaxWithLoss", v1_name="SOFTMAX_LOSS")
class SoftmaxWithLossLayer(LossLayer):
    """Multinomial logistic loss of softmax(scores) along softmax_param.axis.

    loss = -sum over non-ignored positions of log(max(p[label], FLT_MIN)) / normalizer;
    d scores = (p - onehot(label)) * loss_weight / normalizer, zero where the label is ignored.
    An optional second top receives the probabilities.
    """

    exact_num_tops = None
    min_tops = 1
    max_tops = 2

    def layer_setup(self, bottoms: Sequence[Blob], tops: Sequence[Blob]) -> None:
        super().layer_setup(bottoms, tops)
        self.axis_param = int(self.param.softmax_param.axis)
        self._prob_own = Blob((), self.xp, self.dtype)
        self._scratch = Blob((), self.xp, self.dtype)
        self._rows: Any = None  # index grids for gathering p[label], rebuilt on shape change
        self._cols: Any = None

    def reshape(self, bottoms: Sequence[Blob], tops: Sequence[Blob]) -> None:
        super().reshape(bottoms, tops)
        scores = bottoms[0]
        self.axis, self.outer, self.inner, self.channels = class_axis_layout(
            self, scores, bottoms[1], self.axis_param, "softmax_param.axis"
        )
        shape_softmax_buffers(self, scores, tops)
        if self._rows is None or self._rows.size != self.outer:
            self._rows = self.xp.arange(self.outer).reshape(-1, 1)
        if self._cols is None or self._cols.size != self.inner:
            self._cols = self.xp.arange(self.inner).reshape(1, -1)

    def forward(self, bottoms: Sequence[Blob], tops: Sequence[Blob]) -> None:
        xp = self.xp
        self._labels, valid = softmax_and_labels(self, bottoms)
        self._valid = valid
        prob3 = self.prob.data.reshape(self.outer, self.channels, self.inner)
        logp = xp.log(xp.maximum(prob3[self._rows, self._labels, self._cols], FLT_MIN))
        if valid is not None:
            logp *= valid
        count = None if valid is None else xp.count_nonzero(valid)
        self._norm = self.normalizer(self.outer, self.inner, count)
        tops[0].data[...] = -xp.sum(logp) / self._norm

    def backward(
        self, tops: Sequence[Blob], propagate_down: Sequence[bool], bottoms: Sequence[Blob]
    ) -> None:
        self.check_label_backward(propagate_down)
        if not propagate_down[0]:
            return
        xp = self.xp
        dx = bottoms[0].diff
        xp.copyto(dx, self.prob.data)
        dx3 = dx.reshape(self.outer, self.channels, self.inner)
        if self._valid is None:
            dx3[self._rows, self._labels, self._cols] -= 1
        else:
            dx3[self._rows, self._labels, self._cols] -= self._valid.astype(self.dtype)
            dx3 *= self._valid[:, None, :]
        dx *= self.loss_weight(tops) / self._norm


@register_layer("EuclideanLoss", v1_name="EUCLIDEAN_LOSS")
class EuclideanLossLayer(LossLayer):
    """loss = sum((a - b)^2) / (2 N), N = a.shape[0]; gradients go to both bottoms
    (d a = w (a - b) / N, d b = -w (a - b) / N, w the loss weight)."""

    def layer_setup(self, bottoms: Sequence[Blob], tops: Sequence[Blob]) -> None:
        super().layer_setup(bottoms, tops)
        self._diff = Blob((), self.xp, self.dtype)

    def allow_force_backward(self, bottom_index: int) -> bool:
        return True

    def reshape(self, bottoms: Sequence[Blob], tops: Sequence[Blob]) -> None:
        super().reshape(bottoms, tops)
        if bottoms[0].count_range(1) != bottoms[1].count_range(1):
            raise self.error(
                f"inputs must have the same dimension, got {bottoms[0].shape} and "
                f"{bottoms[1].shape}"
            )
        self._diff.reshape(bottoms[0].shape)

    def forward(self, bottoms: Sequence[Blob], tops: Sequence[Blob]) -> None:
        xp, d = self.xp, self._diff.data
        xp.subtract(bottoms[0].data, bottoms[1].data.reshape(d.shape), out=d)
        flat = d.reshape(-1)
        tops[0].data[...] = xp.dot(flat, flat) / bottoms[0].shape[0] / 2

    def backward(
        self, tops: Sequence[Blob], propagate_down: Sequence[bool], bottoms: Sequence[Blob]
    ) -> None:
        weight = self.loss_weight(tops)
        for i, sign in ((0, 1.0), (1, -1.0)):
            if propagate_down[i]:
                dx = bottoms[i].diff
                self.xp.multiply(
                    self._diff.data.reshape(dx.shape), sign * weight / bottoms[i].shape[0], out=dx
                )


@register_layer("SigmoidCrossEntropyLoss", v1_name="SIGMOID_CROSS_ENTROPY_LOSS")
class SigmoidCrossEntropyLossLayer(LossLayer):
    """Cross-entropy of targets t against sigmoid(x), in the overflow-free form
    -sum(x (t - [x >= 0]) - log(1 + exp(-|x|))); Caffe 1.0 normalizes by BATCH_SIZE unless
    loss_param says otherwise and skips targets equal to ignore_label.
    d x = w (sigmoid(x) - t) / normalizer.
    """

    default_normalization = "BATCH_SIZE"

    def layer_setup(self, bottoms: Sequence[Blob], tops: Sequence[Blob]) -> None:
        super().layer_setup(bottoms, tops)
        self._sigmoid = Blob((), self.xp, self.dtype)
        self._terms = Blob((), self.xp, self.dtype)

    def reshape(self, bottoms: Sequence[Blob], tops: Sequence[Blob]) -> None:
        super().reshape(bottoms, tops)
        if bottoms[0].count != bottoms[1].count:
            raise self.error(
                f"inputs must have the same count, got {bottoms[0].shape} and {bottoms[1].shape}"
            )
        self.outer = bottoms[0].shape[0]
        self.inner = bottoms[0].count_range(1)
        self._sigmoid.reshape(bottoms[0].shape)
        self._terms.reshape(bottoms[0].shape)

    def forward(self, bottoms: Sequence[Blob], tops: Sequence[Blob]) -> None:
        xp = self.xp
        x, s, terms = bottoms[0].data, self._sigmoid.data, self._terms.data
        t = bottoms[1].data.reshape(x.shape)
        # sigmoid(x) = 0.5 tanh(x / 2) + 0.5, the form Caffe's Sigmoid layer uses
        xp.multiply(x, 0.5, out=s)
        xp.tanh(s, out=s)
        s *= 0.5
        s += 0.5
        # per-element loss: log(1 + exp(-|x|)) - x (t - [x >= 0])
        xp.abs(x, out=terms)
        xp.negative(terms, out=terms)
        xp.exp(terms, out=terms)
        xp.log1p(terms, out=terms)
        terms -= x * (t - (x >= 0))
        self._valid = None
        if self.has_ignore:
            self._valid = t.astype(np.int64) != self.ignore_label
            terms *= self._valid
        count = None if self._valid is None else xp.count_nonzero(self._valid)
        self._norm = self.normalizer(self.outer, self.inner, count)
        tops[0].data[...] = xp.sum(terms) / self._norm

    def backward(
        self, tops: Sequence[Blob], propagate_down: Sequence[bool], bottoms: Sequence[Blob]
    ) -> None:
        self.check_label_backward(propagate_down)
        if not propagate_down[0]:
            return
        dx = bottoms[0].diff
        self.xp.subtract(self._sigmoid.data, bottoms[1].data.reshape(dx.shape), out=dx)
        if self._valid is not None:
            dx *= self._valid
        dx *= self.loss_weight(tops) / self._norm


@register_layer("HingeLoss", v1_name="HINGE_LOSS")
class HingeLossLayer(LossLayer):
    """One-vs-all hinge loss: with m = max(0, 1 - y x), y = +1 for the true class and -1 otherwise,
    loss = sum(m) / N (L1, default) or sum(m^2) / N (L2), as Caffe's HingeLoss."""

    def layer_setup(self, bottoms: Sequence[Blob], tops: Sequence[Blob]) -> None:
        super().layer_setup(bottoms, tops)
        hp = self.param.hinge_loss_param
        self.l2 = hp.norm == hp.L2
        self._margin = Blob((), self.xp, self.dtype)
        self._rows: Any = None

    def reshape(self, bottoms: Sequence[Blob], tops: Sequence[Blob]) -> None:
        super().reshape(bottoms, tops)
        self.num = bottoms[0].shape[0]
        self.dim = bottoms[0].count // self.num if self.num else 0
        if bottoms[1].count != self.num:
            raise self.error(
                f"needs one label per sample: {self.num} samples but labels of shape "
                f"{bottoms[1].shape}"
            )
        self._margin.reshape((self.num, self.dim))
        if self._rows is None or self._rows.size != self.num:
            self._rows = self.xp.arange(self.num)

    def forward(self, bottoms: Sequence[Blob], tops: Sequence[Blob]) -> None:
        xp, m = self.xp, self._margin.data
        labels = self.labels(bottoms[1], (self.num,))
        self.check_labels(labels, None, self.dim)
        self._labels = labels
        xp.copyto(m, bottoms[0].data.reshape(m.shape))
        m[self._rows, labels] *= -1
        m += 1
        xp.maximum(m, 0, out=m)
        flat = m.reshape(-1)
        total = xp.dot(flat, flat) if self.l2 else xp.sum(flat)
        tops[0].data[...] = total / self.num

    def backward(
        self, tops: Sequence[Blob], propagate_down: Sequence[bool], bottoms: Sequence[Blob]
    ) -> None:
        self.check_label_backward(propagate_down)
        if not propagate_down[0]:
            return
        xp = self.xp
        dx = bottoms[0].diff.reshape(self.num, self.dim)
        if self.l2:
            xp.multiply(self._margin.data, 2.0, out=dx)
        else:
            xp.sign(self._margin.data, out=dx)
        dx[self._rows, self._labels] *= -1
        dx *= self.loss_weight(tops) / self.num


# Caffe's kLOG_THRESHOLD (loss_layer.hpp) is a float: double nets clamp at its float value too.
LOG_THRESHOLD = float(np.float32(1e-20))


@register_layer("MultinomialLogisticLoss", v1_name="MULTINOMIAL_LOGISTIC_LOSS")
class MultinomialLogisticLossLayer(LossLayer):
    """Caffe's MultinomialLogisticLoss: bottom 0 holds probabilities (N x dim), bottom 1 one label
    per sample (N x 1 x 1 x 1); loss = -sum_n log(max(p[n, label_n], 1e-20)) / N, and the
    gradient is -loss_weight / (N max(p[n, label_n], 1e-20)) at each label, 0 elsewhere.
    As in Caffe 1.0 loss_param (ignore_label, normalization) is not read: the divisor is N."""

    def layer_setup(self, bottoms: Sequence[Blob], tops: Sequence[Blob]) -> None:
        super().layer_setup(bottoms, tops)
        self.has_ignore = False  # Caffe's layer has no ignore_label: every label must be a class

    def reshape(self, bottoms: Sequence[Blob], tops: Sequence[Blob]) -> None:
        super().reshape(bottoms, tops)
        label_shape = bottoms[1].shape
        if any(d != 1 for d in label_shape[1:4]) or len(label_shape) > 4:
            raise self.error(
                f"the label must be N x 1 x 1 x 1 (one per sample), got shape {label_shape}"
            )
        self.num = bottoms[0].shape[0]
        self.dim = bottoms[0].count // self.num if self.num else 0
        self._rows = self.xp.arange(self.num)

    def _picked(self, bottoms: Sequence[Blob]) -> Any:
        """max(p[n, label_n], kLOG_THRESHOLD) for every sample, after checking the labels."""
        labels = self.labels(bottoms[1], (self.num,))
        self.check_labels(labels, None, self.dim)
        self._labels = labels
        probs = bottoms[0].data.reshape(self.num, self.dim)[self._rows, labels]
        return self.xp.maximum(probs, self.dtype.type(LOG_THRESHOLD))

    def forward(self, bottoms: Sequence[Blob], tops: Sequence[Blob]) -> None:
        self._at_label = self._picked(bottoms)  # backward divides by the same clamped values
        tops[0].data[...] = -self.xp.sum(self.xp.log(self._at_label)) / self.num

    def backward(
        self, tops: Sequence[Blob], propagate_down: Sequence[bool], bottoms: Sequence[Blob]
    ) -> None:
        self.check_label_backward(propagate_down)
        if not propagate_down[0]:
            return
        dx = bottoms[0].diff.reshape(self.num, self.dim)
        dx.fill(0)
        dx[self._rows, self._labels] = -self.loss_weight(tops) / self.num / self._at_label
