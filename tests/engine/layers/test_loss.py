"""Loss layers vs hand computations of Caffe 1.0's formulas, normalization modes, gradients."""

from __future__ import annotations

import numpy as np
import pytest
from google.protobuf import text_format

from engine.errors import NetError
from engine.layer import layer_class
from engine.proto import caffe_pb2
from tests.backends import Blob, assert_allclose, assert_array_equal, dev, host
from tests.backends import current as backend
from tests.gradcheck import check_layer_gradient

FLT_MIN = float(np.finfo(np.float32).tiny)


def make_layer(type_name: str, extra: str = "", dtype=np.float64):
    text = f'name: "loss" type: "{type_name}" {extra}'
    param = text_format.Parse(text, caffe_pb2.LayerParameter())
    return layer_class(type_name)(param, xp=backend(), dtype=dtype, seed=0)


def blob(values, dtype=np.float64) -> Blob:
    values = np.asarray(values, dtype=dtype)
    b = Blob(values.shape, dtype=dtype)
    b.data[...] = dev(values)
    return b


def scores(shape, seed=1) -> Blob:
    return blob(np.random.default_rng(seed).standard_normal(shape))


def labels(shape, classes, seed=2) -> Blob:
    return blob(np.random.default_rng(seed).integers(0, classes, shape))


def forward(layer, bottoms, ntops=1):
    tops = [Blob(dtype=np.float64) for _ in range(ntops)]
    layer.setup(bottoms, tops)
    layer.forward(bottoms, tops)
    return tops


def backward(layer, bottoms, tops, loss_weight, propagate=None):
    tops[0].diff[...] = dev(loss_weight)
    layer.backward(tops, propagate or [True] + [False] * (len(bottoms) - 1), bottoms)
    return host(bottoms[0].diff)


def log_softmax(x, axis=1):
    x = x - x.max(axis=axis, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=axis, keepdims=True))


# --- SoftmaxWithLoss ----------------------------------------------------------------------------


def test_softmax_loss_forward_is_mean_negative_log_probability():
    x, y = scores((5, 4)), blob([0, 3, 1, 1, 2])
    (top,) = forward(make_layer("SoftmaxWithLoss"), [x, y])
    assert top.shape == ()
    want = -np.mean(log_softmax(host(x.data))[np.arange(5), [0, 3, 1, 1, 2]])
    assert float(top.data) == pytest.approx(want, rel=1e-13)


def test_softmax_loss_spatial_labels_on_axis_1_average_over_all_positions():
    x, y = scores((2, 3, 2, 2)), labels((2, 1, 2, 2), 3)
    (top,) = forward(make_layer("SoftmaxWithLoss"), [x, y])
    lp = log_softmax(host(x.data))
    lab = host(y.data).astype(int)[:, 0]
    n, h, w = np.meshgrid(range(2), range(2), range(2), indexing="ij")
    want = -lp[n, lab, h, w].sum() / 8  # VALID without ignore_label = N*H*W
    assert float(top.data) == pytest.approx(want, rel=1e-13)


def test_softmax_loss_label_floats_are_truncated_like_static_cast():
    x = scores((3, 4))
    (a,) = forward(make_layer("SoftmaxWithLoss"), [x, blob([1.7, 0.2, 3.9])])
    (b,) = forward(make_layer("SoftmaxWithLoss"), [x, blob([1, 0, 3])])
    assert float(a.data) == float(b.data)


@pytest.mark.parametrize(
    "loss_param, divisor",
    [
        ("", "valid"),
        ("loss_param { normalization: VALID }", "valid"),
        ("loss_param { normalization: FULL }", "full"),
        ("loss_param { normalization: BATCH_SIZE }", "batch"),
        ("loss_param { normalization: NONE }", "none"),
        ("loss_param { normalize: false }", "batch"),
        ("loss_param { normalize: true }", "valid"),
        ("loss_param { normalize: false normalization: FULL }", "full"),
    ],
)
def test_softmax_loss_normalization_modes_with_ignore_label(loss_param, divisor):
    x = scores((3, 4, 2))
    lab = np.array([[0, 3], [-1, 2], [1, -1]])  # 4 valid of 6 positions in a batch of 3
    extra = loss_param.replace("loss_param {", "loss_param { ignore_label: -1") or (
        "loss_param { ignore_label: -1 }"
    )
    layer = make_layer("SoftmaxWithLoss", extra)
    (top,) = forward(layer, [x, blob(lab)])
    lp = log_softmax(host(x.data))
    total = -sum(lp[i, lab[i, j], j] for i in range(3) for j in range(2) if lab[i, j] >= 0)
    norm = {"valid": 4, "full": 6, "batch": 3, "none": 1}
    assert float(top.data) == pytest.approx(total / norm[divisor], rel=1e-13)

    # backward: (p - onehot) * w / normalizer, zero at ignored positions
    dx = backward(layer, [x, blob(lab)], [top], 2.5)
    p = np.exp(lp)
    want = p.copy()
    for i in range(3):
        for j in range(2):
            if lab[i, j] < 0:
                want[i, :, j] = 0
            else:
                want[i, lab[i, j], j] -= 1
    assert_allclose(dx, want * 2.5 / norm[divisor], rtol=1e-13, atol=1e-15)


def test_softmax_loss_normalizer_is_at_least_one_when_all_labels_ignored():
    x = scores((2, 3))
    layer = make_layer("SoftmaxWithLoss", "loss_param { ignore_label: 7 }")
    (top,) = forward(layer, [x, blob([7, 7])])
    assert float(top.data) == 0.0
    assert_array_equal(backward(layer, [x, blob([7, 7])], [top], 1.0), 0.0)


def test_softmax_loss_clamps_probability_at_flt_min():
    x = blob([[0.0, -2000.0]])
    (top,) = forward(make_layer("SoftmaxWithLoss"), [x, blob([1])])
    assert float(top.data) == pytest.approx(-np.log(FLT_MIN), rel=1e-12)


def test_softmax_loss_second_top_holds_probabilities():
    x, y = scores((2, 5, 3)), labels((2, 3), 5)
    tops = forward(make_layer("SoftmaxWithLoss"), [x, y], ntops=2)
    assert_allclose(tops[1].data, np.exp(log_softmax(host(x.data))), rtol=1e-13)


@pytest.mark.parametrize(
    "extra, shape, label_shape",
    [
        ("", (3, 4), (3,)),
        ("loss_param { ignore_label: 1 }", (4, 3, 2), (4, 2)),
        ("loss_param { ignore_label: 0 normalization: FULL }", (3, 3, 2), (3, 2)),
        ("loss_param { normalization: BATCH_SIZE }", (3, 3, 2), (3, 1, 2)),
        ("loss_param { normalization: NONE }", (2, 3), (2,)),
        ("softmax_param { axis: 2 }", (2, 2, 4), (2, 2)),
    ],
)
def test_softmax_loss_gradient_with_random_loss_weight(extra, shape, label_shape):
    classes = shape[2] if "axis: 2" in extra else shape[1]
    x, y = scores(shape), labels(label_shape, classes)
    check_layer_gradient(
        make_layer("SoftmaxWithLoss", extra), [x, y], [Blob(dtype=np.float64)], check_bottoms=[0]
    )


def test_softmax_loss_rejects_out_of_range_label():
    layer = make_layer("SoftmaxWithLoss")
    with pytest.raises(NetError, match="'loss'.*label value 4 out of range"):
        forward(layer, [scores((2, 4)), blob([0, 4])])


def test_softmax_loss_ignored_label_may_be_out_of_range():
    layer = make_layer("SoftmaxWithLoss", "loss_param { ignore_label: 255 }")
    (top,) = forward(layer, [scores((2, 4)), blob([0, 255])])
    assert np.isfinite(float(top.data))


def test_softmax_loss_rejects_label_count_mismatch():
    with pytest.raises(NetError, match="number of labels"):
        forward(make_layer("SoftmaxWithLoss"), [scores((2, 4, 3)), blob([0, 1])])


def test_softmax_loss_cannot_backpropagate_to_labels():
    layer = make_layer("SoftmaxWithLoss")
    x, y = scores((2, 3)), blob([0, 1])
    (top,) = forward(layer, [x, y])
    assert layer.is_loss and not layer.allow_force_backward(1) and layer.allow_force_backward(0)
    with pytest.raises(NetError, match="label inputs"):
        backward(layer, [x, y], [top], 1.0, propagate=[True, True])


def test_softmax_loss_float32_matches_float64():
    x64, y = scores((4, 6)), labels((4,), 6)
    x32 = blob(host(x64.data), dtype=np.float32)
    (want,) = forward(make_layer("SoftmaxWithLoss"), [x64, y])
    layer = make_layer("SoftmaxWithLoss", dtype=np.float32)
    top = Blob(dtype=np.float32)
    layer.setup([x32, blob(host(y.data), np.float32)], [top])
    layer.forward([x32, blob(host(y.data), np.float32)], [top])
    assert top.data.dtype == np.float32
    assert float(top.data) == pytest.approx(float(want.data), rel=1e-6)


# --- EuclideanLoss ------------------------------------------------------------------------------


def test_euclidean_loss_is_half_sum_of_squares_over_num():
    a, b = scores((3, 2, 2)), scores((3, 4), seed=9)  # same count(1), different shapes
    (top,) = forward(make_layer("EuclideanLoss"), [a, b])
    want = np.sum((host(a.data).reshape(3, 4) - host(b.data)) ** 2) / 3 / 2
    assert float(top.data) == pytest.approx(want, rel=1e-13)


def test_euclidean_loss_gradients_both_bottoms_scaled_by_loss_weight():
    a, b = scores((3, 4)), scores((3, 4), seed=9)
    layer = make_layer("EuclideanLoss")
    (top,) = forward(layer, [a, b])
    assert layer.allow_force_backward(1)
    backward(layer, [a, b], [top], 0.5, propagate=[True, True])
    assert_allclose(a.diff, 0.5 * (a.data - b.data) / 3, rtol=1e-13)
    assert_allclose(b.diff, -0.5 * (a.data - b.data) / 3, rtol=1e-13)


def test_euclidean_loss_gradient_check():
    a, b = scores((3, 2, 2)), scores((3, 4), seed=9)
    check_layer_gradient(make_layer("EuclideanLoss"), [a, b], [Blob(dtype=np.float64)])


def test_euclidean_loss_rejects_mismatched_dimensions():
    with pytest.raises(NetError, match="same dimension"):
        forward(make_layer("EuclideanLoss"), [scores((3, 4)), scores((3, 5))])
    with pytest.raises(NetError, match="same first dimension"):
        forward(make_layer("EuclideanLoss"), [scores((3, 4)), scores((2, 6))])


# --- SigmoidCrossEntropyLoss --------------------------------------------------------------------


def naive_sigmoid_ce(x, t):
    s = 1 / (1 + np.exp(-x))
    return -(t * np.log(s) + (1 - t) * np.log(1 - s))


def test_sigmoid_ce_default_normalization_is_batch_size_in_caffe_1():
    x = scores((4, 3))
    t = blob(np.random.default_rng(3).random((4, 3)))
    (top,) = forward(make_layer("SigmoidCrossEntropyLoss"), [x, t])
    assert float(top.data) == pytest.approx(
        naive_sigmoid_ce(host(x.data), host(t.data)).sum() / 4, rel=1e-12
    )


def test_sigmoid_ce_is_stable_for_large_inputs():
    x, t = blob([[100.0, -100.0, 800.0, -800.0]]), blob([[0.0, 1.0, 1.0, 0.0]])
    (top,) = forward(make_layer("SigmoidCrossEntropyLoss"), [x, t])
    assert float(top.data) == pytest.approx(200.0, rel=1e-12)  # 100 + 100 + ~0 + ~0


@pytest.mark.parametrize(
    "loss_param, norm",
    [
        ("ignore_label: -1", 2),  # default BATCH_SIZE
        ("ignore_label: -1 normalization: VALID", 4),
        ("ignore_label: -1 normalization: FULL", 6),
        ("ignore_label: -1 normalization: NONE", 1),
        ("ignore_label: -1 normalize: true", 4),
    ],
)
def test_sigmoid_ce_ignore_label_and_normalization(loss_param, norm):
    x = scores((2, 3))
    t = np.array([[1.0, 0.0, -1.0], [0.0, -1.0, 1.0]])
    layer = make_layer("SigmoidCrossEntropyLoss", f"loss_param {{ {loss_param} }}")
    (top,) = forward(layer, [x, blob(t)])
    keep = t != -1
    want = naive_sigmoid_ce(host(x.data), t)[keep].sum() / norm
    assert float(top.data) == pytest.approx(want, rel=1e-12)
    dx = backward(layer, [x, blob(t)], [top], 3.0)
    s = 1 / (1 + np.exp(-host(x.data)))
    assert_allclose(dx, np.where(keep, s - t, 0) * 3.0 / norm, rtol=1e-12)


@pytest.mark.parametrize(
    "extra",
    [
        "",
        "loss_param { ignore_label: 1 normalization: VALID }",
        "loss_param { normalization: FULL }",
    ],
)
def test_sigmoid_ce_gradient(extra):
    x = scores((3, 2, 2))
    t = labels((3, 4), 2, seed=5)
    check_layer_gradient(
        make_layer("SigmoidCrossEntropyLoss", extra), [x, t], [Blob(dtype=np.float64)], [0]
    )


def test_sigmoid_ce_rejects_count_mismatch_and_label_backward():
    with pytest.raises(NetError, match="same count"):
        forward(make_layer("SigmoidCrossEntropyLoss"), [scores((2, 3)), scores((2, 4))])
    layer = make_layer("SigmoidCrossEntropyLoss")
    x, t = scores((2, 3)), labels((2, 3), 2)
    (top,) = forward(layer, [x, t])
    with pytest.raises(NetError, match="label inputs"):
        backward(layer, [x, t], [top], 1.0, propagate=[True, True])


# --- HingeLoss ----------------------------------------------------------------------------------


def hinge_margins(x, lab):
    sign = -np.ones_like(x)
    sign[np.arange(len(lab)), lab] = 1
    return np.maximum(0, 1 - sign * x)


@pytest.mark.parametrize("norm, power", [("", 1), ("hinge_loss_param { norm: L2 }", 2)])
def test_hinge_loss_forward(norm, power):
    x, lab = scores((5, 3)), np.array([0, 2, 1, 1, 0])
    (top,) = forward(make_layer("HingeLoss", norm), [x, blob(lab)])
    want = np.sum(hinge_margins(host(x.data), lab) ** power) / 5
    assert float(top.data) == pytest.approx(want, rel=1e-13)


@pytest.mark.parametrize("norm", ["", "hinge_loss_param { norm: L2 }"])
def test_hinge_loss_gradient(norm):
    x, y = scores((4, 3, 1, 1)), labels((4,), 3)
    check_layer_gradient(
        make_layer("HingeLoss", norm), [x, y], [Blob(dtype=np.float64)], check_bottoms=[0]
    )


def test_hinge_loss_rejects_out_of_range_label():
    with pytest.raises(NetError, match="label value 3"):
        forward(make_layer("HingeLoss"), [scores((2, 3)), blob([0, 3])])


# --- MultinomialLogisticLoss ----------------------------------------------------------------------


def probabilities(shape, seed=3) -> np.ndarray:
    e = np.exp(np.random.default_rng(seed).standard_normal(shape))
    return e / e.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("label_shape", [(4,), (4, 1), (4, 1, 1, 1)])
def test_multinomial_logistic_loss_is_mean_negative_log_of_the_labels_probability(label_shape):
    """Caffe's Forward_cpu: -sum_n log(max(p[n, label_n], kLOG_THRESHOLD)) / num, the probability
    taken at offset n * dim + label of the flattened sample (here C x 2 x 1)."""
    p = probabilities((4, 6)).reshape(4, 3, 2, 1)
    lab = np.array([0, 5, 2, 3])
    (top,) = forward(
        make_layer("MultinomialLogisticLoss"), [blob(p), blob(lab.reshape(label_shape))]
    )
    picked = p.reshape(4, 6)[np.arange(4), lab]
    assert_allclose(host(top.data), -np.log(picked).sum() / 4, rtol=1e-12)


def test_multinomial_logistic_loss_clamps_at_caffes_float_log_threshold():
    """kLOG_THRESHOLD is the float 1e-20f, so a zero probability costs -log(float(1e-20))."""
    p = np.array([[0.0, 1.0], [0.25, 0.75]])
    (top,) = forward(make_layer("MultinomialLogisticLoss"), [blob(p), blob([0, 1])])
    threshold = float(np.float32(1e-20))
    assert threshold != 1e-20
    assert_allclose(host(top.data), -(np.log(threshold) + np.log(0.75)) / 2, rtol=1e-12)
    layer = make_layer("MultinomialLogisticLoss")
    bottoms = [blob(p), blob([0, 1])]
    tops = forward(layer, bottoms)
    dx = backward(layer, bottoms, tops, 1.0)
    assert_allclose(dx[0], [-1.0 / 2 / threshold, 0.0], rtol=1e-12)


def test_multinomial_logistic_loss_gradient_is_scale_over_probability_at_the_label():
    """Backward_cpu: diff zero except -top_diff / num / max(p, threshold) at each label."""
    p = probabilities((3, 4))
    lab = np.array([1, 0, 3])
    layer = make_layer("MultinomialLogisticLoss")
    bottoms = [blob(p), blob(lab)]
    tops = forward(layer, bottoms)
    dx = backward(layer, bottoms, tops, 2.5)
    want = np.zeros_like(p)
    want[np.arange(3), lab] = -2.5 / 3 / p[np.arange(3), lab]
    assert_allclose(dx, want, rtol=1e-12)


def test_multinomial_logistic_loss_gradient_check():
    p = probabilities((3, 5)) + 0.05  # away from the clamp, which has no derivative
    layer = make_layer("MultinomialLogisticLoss")
    check_layer_gradient(
        layer, [blob(p), blob([4, 0, 2])], [Blob(dtype=np.float64)], check_bottoms=[0]
    )


def test_multinomial_logistic_loss_refuses_bad_labels_and_label_backward():
    with pytest.raises(NetError, match=r"label must be N x 1 x 1 x 1.*\(2, 2\)"):
        forward(
            make_layer("MultinomialLogisticLoss"),
            [blob(probabilities((2, 3))), blob([[0, 1], [1, 0]])],
        )
    with pytest.raises(NetError, match=r"label value 3 out of range: .*\[0, 2\]$"):
        forward(
            make_layer("MultinomialLogisticLoss", "loss_param { ignore_label: 3 }"),
            [blob(probabilities((2, 3))), blob([0, 3])],
        )
    layer = make_layer("MultinomialLogisticLoss")
    bottoms = [blob(probabilities((2, 3))), blob([0, 1])]
    tops = forward(layer, bottoms)
    with pytest.raises(NetError, match="cannot backpropagate to label inputs"):
        backward(layer, bottoms, tops, 1.0, propagate=[True, True])


def test_multinomial_logistic_loss_v1_name_upgrades():
    from engine.upgrade import V1_LAYER_TYPES

    v1 = caffe_pb2.V1LayerParameter.LayerType.Value("MULTINOMIAL_LOGISTIC_LOSS")
    assert V1_LAYER_TYPES[v1] == "MultinomialLogisticLoss"


def test_softmax_then_multinomial_logistic_loss_equals_softmax_with_loss():
    """Caffe's documented equivalence: Softmax + MultinomialLogisticLoss gives SoftmaxWithLoss's
    loss and gradient on the scores (one label per sample)."""
    from engine.net import Net

    def net(loss: str) -> Net:
        text = f"""
        layer {{ name: "in" type: "Input" top: "x" top: "y"
                 input_param {{ shape {{ dim: 5 dim: 4 }} shape {{ dim: 5 }} }} }}
        {loss}"""
        param = text_format.Parse(text, caffe_pb2.NetParameter())
        return Net(param, "TRAIN", xp=backend(), dtype=np.float64)

    pair = net(
        'layer { name: "p" type: "Softmax" bottom: "x" top: "p" }'
        'layer { name: "l" type: "MultinomialLogisticLoss" bottom: "p" bottom: "y" top: "l" }'
    )
    fused = net('layer { name: "l" type: "SoftmaxWithLoss" bottom: "x" bottom: "y" top: "l" }')
    x = np.random.default_rng(4).standard_normal((5, 4))
    y = np.array([3, 0, 1, 1, 2], dtype=np.float64)
    losses, grads = [], []
    for n in (pair, fused):
        n.blobs["x"].data[...] = dev(x)
        n.blobs["y"].data[...] = dev(y)
        losses.append(n.forward_loss())
        n.backward()
        grads.append(host(n.blobs["x"].diff).copy())
    assert_allclose(losses[0], losses[1], rtol=1e-12)
    assert_allclose(grads[0], grads[1], rtol=1e-10, atol=1e-15)
