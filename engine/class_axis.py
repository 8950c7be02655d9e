"""The class-axis layout shared by softmax losses and Accuracy: scores (outer, C, inner) against
one integer label per outer x inner position, as Caffe's SoftmaxWithLoss/Accuracy lay them out."""

from __future__ import annotations

from typing import Any

from engine.blob import Blob


def class_axis_layout(
    layer: Any, scores: Blob, labels: Blob, axis: int, field: str
) -> tuple[int, int, int, int]:
    """(axis, outer, inner, classes) for `scores` split at `axis`; a clear error naming the layer
    if the axis is out of range or the label count is not outer x inner."""
    try:
        axis = scores.canonical_axis(axis)
    except IndexError as exc:
        raise layer.error(f"{field}: {exc}") from None
    outer = scores.count_range(0, axis)
    inner = scores.count_range(axis + 1)
    classes = scores.shape[axis]
    if outer * inner != labels.count:
        raise layer.error(
            f"number of labels ({labels.count}, shape {labels.shape}) must match the number of "
            f"predictions ({outer * inner}): with scores {scores.shape} and axis {axis} the "
            f"labels are integers in [0, {classes - 1}]"
        )
    return axis, outer, inner, classes
