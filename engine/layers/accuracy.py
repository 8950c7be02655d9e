"""Accuracy (Caffe "Accuracy", V1 ACCURACY) and ArgMax (V1 ARGMAX): evaluation-only layers."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from engine.blob import Blob
from engine.class_axis import class_axis_layout
from engine.layer import Layer, register_layer


@register_layer("Accuracy", v1_name="ACCURACY")
class AccuracyLayer(Layer):
    """Top-k accuracy over the labelled positions, as Caffe 1.0 counts it.

    Caffe 1.0 partially sorts (score, class) pairs in descending order, so a tie with the true
    class goes to the higher class index: a position is correct when fewer than top_k classes
    score more than the true class or score the same with a higher index. Labels equal to
    ignore_label are skipped; the accuracy of no position is 0 (Caffe 1.0 divides 0 by 0).
    An optional second top holds per-class accuracy.
    """

    exact_num_bottoms = 2
    min_tops = 1
    max_tops = 2

    def layer_setup(self, bottoms: Sequence[Blob], tops: Sequence[Blob]) -> None:
        p = self.param.accuracy_param
        self.top_k = int(p.top_k)
        self.axis_param = int(p.axis)
        self.has_ignore = p.HasField("ignore_label")
        self.ignore_label = int(p.ignore_label)
        self._rows: Any = None  # index grids for gathering the true class score
        self._cols: Any = None
        self._classes: Any = None  # class indices (1, C, 1), for Caffe's tie rule

    def reshape(self, bottoms: Sequence[Blob], tops: Sequence[Blob]) -> None:
        scores, labels = bottoms
        self.axis, self.outer, self.inner, self.classes = class_axis_layout(
            self, scores, labels, self.axis_param, "accuracy_param.axis"
        )
        if not 1 <= self.top_k <= self.classes:
            raise self.error(
                f"accuracy_param.top_k ({self.top_k}) must be between 1 and the number of "
                f"classes ({self.classes})"
            )
        tops[0].reshape(())
        if len(tops) > 1:
            tops[1].reshape((self.classes,))
        if self._rows is None or self._rows.size != self.outer:
            self._rows = self.xp.arange(self.outer).reshape(-1, 1)
        if self._cols is None or self._cols.size != self.inner:
            self._cols = self.xp.arange(self.inner).reshape(1, -1)
        if self._classes is None or self._classes.size != self.classes:
            self._classes = self.xp.arange(self.classes).reshape(1, -1, 1)

    def forward(self, bottoms: Sequence[Blob], tops: Sequence[Blob]) -> None:
        xp = self.xp
        scores = bottoms[0].data.reshape(self.outer, self.classes, self.inner)
        labels = bottoms[1].data.reshape(self.outer, self.inner).astype(np.int64)
        valid = labels != self.ignore_label if self.has_ignore else xp.ones(labels.shape, bool)
        bad = valid & ((labels < 0) | (labels >= self.classes))
        if bool(bad.any()):
            first = int(labels.reshape(-1)[int(xp.argmax(bad.reshape(-1)))])
            raise self.error(
                f"label value {first} out of range: labels must be integers in "
                f"[0, {self.classes - 1}]"
            )
        safe = xp.where(valid, labels, 0)
        true_score = scores[self._rows, safe, self._cols]
        true3 = true_score[:, None, :]
        ahead = scores > true3
        ahead |= (scores == true3) & (self._classes > safe[:, None, :])
        correct = valid & (xp.count_nonzero(ahead, axis=1) < self.top_k)
        count = int(xp.count_nonzero(valid))
        hits = xp.count_nonzero(correct)
        tops[0].data[...] = hits / count if count else 0
        if len(tops) > 1:
            flat = safe.reshape(-1)
            weights = valid.reshape(-1).astype(self.dtype)
            nums = xp.bincount(flat, weights=weights, minlength=self.classes)
            weights = correct.reshape(-1).astype(self.dtype)
            per = xp.bincount(flat, weights=weights, minlength=self.classes)
            tops[1].data[...] = xp.where(nums > 0, per / xp.maximum(nums, 1), 0)


@register_layer("ArgMax", v1_name="ARGMAX")
class ArgMaxLayer(Layer):
    """Indices (and with out_max_val the values) of the top_k largest entries, as Caffe's ArgMax.

    Without `axis` each sample (num) is flattened and the top is (N, 1 or 2, top_k, 1...) with
    max(3, bottom axes) axes. With `axis` the top keeps the bottom's shape with that axis resized
    to top_k (values replace the indices when out_max_val is set). Caffe sorts (value, index)
    pairs in descending order, so among equal values the higher index comes first.
    """

    exact_num_bottoms = 1
    exact_num_tops = 1

    def layer_setup(self, bottoms: Sequence[Blob], tops: Sequence[Blob]) -> None:
        p = self.param.argmax_param
        self.top_k = int(p.top_k)
        self.out_max_val = bool(p.out_max_val)
        self.has_axis = p.HasField("axis")
        self.axis_param = int(p.axis)
        if self.top_k < 1:
            raise self.error(f"argmax_param.top_k must be at least 1, got {self.top_k}")

    def reshape(self, bottoms: Sequence[Blob], tops: Sequence[Blob]) -> None:
        shape = bottoms[0].shape
        if self.has_axis:
            try:
                self.axis = bottoms[0].canonical_axis(self.axis_param)
            except IndexError as exc:
                raise self.error(f"argmax_param.axis: {exc}") from None
            extent = shape[self.axis]
            top_shape = list(shape)
            top_shape[self.axis] = self.top_k
        else:
            self.axis = None
            extent = bottoms[0].count_range(1)
            top_shape = [1] * max(3, len(shape))
            top_shape[0], top_shape[1], top_shape[2] = shape[0], 1 + self.out_max_val, self.top_k
        if self.top_k > extent:
            raise self.error(
                f"argmax_param.top_k ({self.top_k}) must not exceed the number of entries "
                f"compared ({extent})"
            )
        tops[0].reshape(top_shape)

    def forward(self, bottoms: Sequence[Blob], tops: Sequence[Blob]) -> None:
        xp = self.xp
        x = bottoms[0].data
        axis = 1 if self.axis is None else self.axis
        if self.axis is None:
            x = x.reshape(x.shape[0], -1)
        extent = x.shape[axis]
        # a stable descending sort of the reversed entries puts the higher index first on ties
        reverse = (slice(None),) * axis + (slice(None, None, -1),)
        order = xp.argsort(-x[reverse], axis=axis, kind="stable")
        idx = (extent - 1) - xp.take(order, xp.arange(self.top_k), axis=axis)
        if self.axis is not None:
            top = tops[0].data
            top[...] = xp.take_along_axis(x, idx, axis=axis) if self.out_max_val else idx
            return
        top = tops[0].data.reshape(x.shape[0], 1 + self.out_max_val, self.top_k)
        top[:, 0, :] = idx
        if self.out_max_val:
            top[:, 1, :] = xp.take_along_axis(x, idx, axis=1)
