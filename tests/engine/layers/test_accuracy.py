"""Accuracy and ArgMax layers: Caffe 1.0's top-k counting (ties go to the higher class index),
ignore_label, per-class accuracy, axis handling, and no backward."""

from __future__ import annotations

import numpy as np
import pytest
from google.protobuf import text_format

from engine.errors import NetError
from engine.layers.accuracy import AccuracyLayer, ArgMaxLayer
from engine.proto import caffe_pb2
from tests.backends import Blob, assert_allclose, assert_array_equal, dev
from tests.backends import current as backend


def make_layer(cls, type_name: str, extra: str = ""):
    text = f'name: "acc" type: "{type_name}" {extra}'
    return cls(
        text_format.Parse(text, caffe_pb2.LayerParameter()), xp=backend(), dtype=np.float64, seed=0
    )


def blob(values) -> Blob:
    values = np.asarray(values, dtype=np.float64)
    b = Blob(values.shape, dtype=np.float64)
    b.data[...] = dev(values)
    return b


def accuracy(x, y, extra="", ntops=1):
    layer = make_layer(AccuracyLayer, "Accuracy", extra)
    bottoms = [blob(x), blob(y)]
    tops = [Blob(dtype=np.float64) for _ in range(ntops)]
    layer.setup(bottoms, tops)
    layer.forward(bottoms, tops)
    return layer, bottoms, tops


def reference_topk(x, y, k):
    """Loop over samples: Caffe 1.0 sorts (score, class) pairs descending, takes the first k."""
    hits = 0
    for scores, label in zip(x, y, strict=True):
        ranked = sorted(((s, c) for c, s in enumerate(scores)), reverse=True)
        hits += int(label) in [c for _, c in ranked[:k]]
    return hits / len(y)


def test_top1_by_hand():
    x = [[0.1, 0.7, 0.2], [0.5, 0.3, 0.2], [0.2, 0.2, 0.6], [0.9, 0.05, 0.05]]
    _, _, (top,) = accuracy(x, [1, 1, 2, 0])
    assert top.shape == ()
    assert float(top.data) == 0.75


@pytest.mark.parametrize("k", [1, 5])
def test_top_k_matches_loop_reference(k):
    rng = np.random.default_rng(3)
    x, y = rng.standard_normal((50, 10)), rng.integers(0, 10, 50)
    _, _, (top,) = accuracy(x, y, f"accuracy_param {{ top_k: {k} }}")
    want = reference_topk(x, y, k)
    assert 0 < want < 1
    assert float(top.data) == pytest.approx(want, abs=1e-15)


def test_ties_go_to_the_higher_class_index():
    """Caffe 1.0 partial_sorts (score, index) pairs with std::greater: higher index first."""
    x = [[0.5, 0.5, 0.0], [0.5, 0.5, 0.0], [0.3, 0.3, 0.3]]
    _, _, (top1,) = accuracy(x, [0, 1, 2])
    assert float(top1.data) == pytest.approx(2 / 3)  # class 0 loses its tie with class 1
    _, _, (top2,) = accuracy(x, [0, 1, 0], "accuracy_param { top_k: 2 }")
    assert float(top2.data) == pytest.approx(2 / 3)  # class 0 is third in the three-way tie


def test_ignore_label_skips_positions_and_divides_by_the_rest():
    x = [[0.9, 0.1], [0.2, 0.8], [0.7, 0.3], [0.6, 0.4]]
    _, _, (top,) = accuracy(x, [0, 0, -1, 1], "accuracy_param { ignore_label: -1 }")
    assert float(top.data) == pytest.approx(1 / 3)
    _, _, (none,) = accuracy(x, [5, 5, 5, 5], "accuracy_param { ignore_label: 5 }")
    assert float(none.data) == 0.0


def test_per_class_accuracy_second_top():
    x = [[0.9, 0.1, 0.0], [0.2, 0.8, 0.0], [0.7, 0.3, 0.0], [0.1, 0.6, 0.3], [0.9, 0.0, 0.1]]
    y = [0, 1, 1, 1, 0]
    _, _, (top, per_class) = accuracy(x, y, ntops=2)
    assert float(top.data) == pytest.approx(4 / 5)
    assert per_class.shape == (3,)
    assert_allclose(per_class.data, [1.0, 2 / 3, 0.0])  # class 2 absent -> 0


def test_per_class_accuracy_excludes_ignored_labels():
    x = [[0.9, 0.1], [0.2, 0.8], [0.7, 0.3]]
    _, _, (top, per_class) = accuracy(x, [0, 0, 1], "accuracy_param { ignore_label: 1 }", 2)
    assert float(top.data) == 0.5
    assert_allclose(per_class.data, [0.5, 0.0])


def test_axis_2_counts_every_spatial_position():
    rng = np.random.default_rng(4)
    x, y = rng.standard_normal((2, 3, 4)), rng.integers(0, 4, (2, 3))
    _, _, (top,) = accuracy(x, y, "accuracy_param { axis: 2 }")
    want = reference_topk(x.reshape(6, 4), y.reshape(6), 1)
    assert float(top.data) == pytest.approx(want)


def test_spatial_labels_on_axis_1():
    rng = np.random.default_rng(5)
    x, y = rng.standard_normal((2, 4, 3, 2)), rng.integers(0, 4, (2, 1, 3, 2))
    _, _, (top,) = accuracy(x, y)
    flat_x = x.transpose(0, 2, 3, 1).reshape(-1, 4)
    assert float(top.data) == pytest.approx(reference_topk(flat_x, y.reshape(-1), 1))


def test_bad_inputs_are_clear_errors():
    with pytest.raises(NetError, match="'acc'.*label value 3 out of range"):
        accuracy([[0.1, 0.9, 0.0]], [3])
    with pytest.raises(NetError, match="top_k"):
        accuracy([[0.1, 0.9, 0.0]], [1], "accuracy_param { top_k: 4 }")
    with pytest.raises(NetError, match="number of labels"):
        accuracy([[0.1, 0.9, 0.0]], [1, 2])


def test_no_backward():
    layer, bottoms, tops = accuracy([[0.1, 0.9]], [1])
    layer.backward(tops, [False, False], bottoms)
    with pytest.raises(NetError, match="cannot backpropagate"):
        layer.backward(tops, [True, False], bottoms)


# --- ArgMax -------------------------------------------------------------------------------------


def argmax(x, extra=""):
    layer = make_layer(ArgMaxLayer, "ArgMax", f"argmax_param {{ {extra} }}")
    bottom, top = blob(x), Blob(dtype=np.float64)
    layer.setup([bottom], [top])
    layer.forward([bottom], [top])
    return top


def test_argmax_flattens_each_sample_and_puts_higher_index_first_on_ties():
    x = np.array([[[1.0, 3.0], [3.0, 0.0]], [[0.5, 0.2], [0.1, 0.9]]])
    top = argmax(x, "top_k: 2 out_max_val: true")
    assert top.shape == (2, 2, 2)
    assert_array_equal(top.data[:, 0], [[2, 1], [3, 0]])
    assert_array_equal(top.data[:, 1], [[3, 3], [0.9, 0.5]])


def test_argmax_along_axis():
    rng = np.random.default_rng(6)
    x = rng.standard_normal((2, 5, 3))
    top = argmax(x, "axis: 1")
    assert top.shape == (2, 1, 3)
    assert_array_equal(top.data[:, 0], np.argmax(x, axis=1))
    vals = argmax(x, "axis: 1 top_k: 2 out_max_val: true")
    assert_allclose(vals.data, -np.sort(-x, axis=1)[:, :2])


def test_argmax_4d_bottom_gives_4d_top():
    assert argmax(np.zeros((2, 3, 2, 2)), "top_k: 3").shape == (2, 1, 3, 1)
