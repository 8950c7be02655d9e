"""Upgrades of deprecated Caffe net and solver definitions, as Caffe's upgrade_proto does.

Net: V1 `layers` -> `layer` (with V1 data-layer transformation fields moved first), legacy
net `input`s -> an "Input" layer, old 3-param BatchNorm -> frozen statistics. Solver: the
`solver_type` enum -> the `type` string. V0 nets (`layers { layer { ... } }`) are rejected.
"""

from __future__ import annotations

from engine.errors import PrototxtError
from engine.proto import caffe_pb2

_V1 = caffe_pb2.V1LayerParameter

# Caffe's UpgradeV1LayerType table: V1 LayerType enum -> current type string.
V1_LAYER_TYPES: dict[int, str] = {
    _V1.NONE: "",
    _V1.ABSVAL: "AbsVal",
    _V1.ACCURACY: "Accuracy",
    _V1.ARGMAX: "ArgMax",
    _V1.BNLL: "BNLL",
    _V1.CONCAT: "Concat",
    _V1.CONTRASTIVE_LOSS: "ContrastiveLoss",
    _V1.CONVOLUTION: "Convolution",
    _V1.DECONVOLUTION: "Deconvolution",
    _V1.DATA: "Data",
    _V1.DROPOUT: "Dropout",
    _V1.DUMMY_DATA: "DummyData",
    _V1.EUCLIDEAN_LOSS: "EuclideanLoss",
    _V1.ELTWISE: "Eltwise",
    _V1.EXP: "Exp",
    _V1.FLATTEN: "Flatten",
    _V1.HDF5_DATA: "HDF5Data",
    _V1.HDF5_OUTPUT: "HDF5Output",
    _V1.HINGE_LOSS: "HingeLoss",
    _V1.IM2COL: "Im2col",
    _V1.IMAGE_DATA: "ImageData",
    _V1.INFOGAIN_LOSS: "InfogainLoss",
    _V1.INNER_PRODUCT: "InnerProduct",
    _V1.LRN: "LRN",
    _V1.MEMORY_DATA: "MemoryData",
    _V1.MULTINOMIAL_LOGISTIC_LOSS: "MultinomialLogisticLoss",
    _V1.MVN: "MVN",
    _V1.POOLING: "Pooling",
    _V1.POWER: "Power",
    _V1.RELU: "ReLU",
    _V1.SIGMOID: "Sigmoid",
    _V1.SIGMOID_CROSS_ENTROPY_LOSS: "SigmoidCrossEntropyLoss",
    _V1.SILENCE: "Silence",
    _V1.SOFTMAX: "Softmax",
    _V1.SOFTMAX_LOSS: "SoftmaxWithLoss",
    _V1.SPLIT: "Split",
    _V1.SLICE: "Slice",
    _V1.TANH: "TanH",
    _V1.WINDOW_DATA: "WindowData",
    _V1.THRESHOLD: "Threshold",
}

# Per-layer parameter messages that V1 and current layers share by field name.
_V1_SHARED_PARAMS = (
    "accuracy_param",
    "argmax_param",
    "concat_param",
    "contrastive_loss_param",
    "convolution_param",
    "data_param",
    "dropout_param",
    "dummy_data_param",
    "eltwise_param",
    "exp_param",
    "hdf5_data_param",
    "hdf5_output_param",
    "hinge_loss_param",
    "image_data_param",
    "infogain_loss_param",
    "inner_product_param",
    "lrn_param",
    "memory_data_param",
    "mvn_param",
    "pooling_param",
    "power_param",
    "relu_param",
    "sigmoid_param",
    "softmax_param",
    "slice_param",
    "tanh_param",
    "threshold_param",
    "window_data_param",
    "transform_param",
    "loss_param",
)

# V1 data layers whose own scale/mean_file/crop_size/mirror move into transform_param.
_V1_DATA_PARAMS = {
    _V1.DATA: "data_param",
    _V1.IMAGE_DATA: "image_data_param",
    _V1.WINDOW_DATA: "window_data_param",
}
_TRANSFORM_FIELDS = ("scale", "mean_file", "crop_size", "mirror")

_SOLVER_TYPES = {
    caffe_pb2.SolverParameter.SGD: "SGD",
    caffe_pb2.SolverParameter.NESTEROV: "Nesterov",
    caffe_pb2.SolverParameter.ADAGRAD: "AdaGrad",
    caffe_pb2.SolverParameter.RMSPROP: "RMSProp",
    caffe_pb2.SolverParameter.ADADELTA: "AdaDelta",
    caffe_pb2.SolverParameter.ADAM: "Adam",
}


# ---------------------------------------------------------------- nets


def net_needs_upgrade(param: caffe_pb2.NetParameter) -> bool:
    """True if `param` uses any deprecated form that upgrade_net_param rewrites."""
    return bool(param.layers) or bool(param.input) or _needs_batch_norm_upgrade(param)


def upgrade_net_param(
    param: caffe_pb2.NetParameter, source: str = "<NetParameter>"
) -> caffe_pb2.NetParameter:
    """Upgrade `param` in place to the current format and return it; errors name `source`."""
    if param.layers:
        _upgrade_v1_net(param, source)
    if param.input or param.input_shape or param.input_dim:
        _upgrade_net_input(param, source)
    if _needs_batch_norm_upgrade(param):
        _upgrade_batch_norm(param)
    return param


def upgrade_v1_layer(
    v1: caffe_pb2.V1LayerParameter, source: str = "<NetParameter>"
) -> caffe_pb2.LayerParameter:
    """One V1LayerParameter as a LayerParameter (Caffe's UpgradeV1LayerParameter)."""
    label = f"{source}: V1 layer '{v1.name}'"
    if v1.HasField("layer"):
        raise PrototxtError(
            f"{label} uses the V0 format (a nested `layer {{...}}`), which is not supported; "
            "upgrade it with Caffe's upgrade_net_proto_text first"
        )
    out = caffe_pb2.LayerParameter()
    out.bottom.extend(v1.bottom)
    out.top.extend(v1.top)
    if v1.HasField("name"):
        out.name = v1.name
    for rule in v1.include:
        out.include.add().CopyFrom(rule)
    for rule in v1.exclude:
        out.exclude.add().CopyFrom(rule)
    if v1.HasField("type"):
        try:
            out.type = V1_LAYER_TYPES[v1.type]
        except KeyError:
            raise PrototxtError(f"{label}: unknown V1 layer type {v1.type}") from None
    for blob in v1.blobs:
        out.blobs.add().CopyFrom(blob)

    def spec(i: int) -> caffe_pb2.ParamSpec:
        while len(out.param) <= i:
            out.param.add()
        return out.param[i]

    for i, name in enumerate(v1.param):
        spec(i).name = name
    for i, mode in enumerate(v1.blob_share_mode):
        # V1 and ParamSpec DimCheckMode enums share values (STRICT 0, PERMISSIVE 1).
        spec(i).share_mode = mode
    for i, lr in enumerate(v1.blobs_lr):
        spec(i).lr_mult = lr
    for i, decay in enumerate(v1.weight_decay):
        spec(i).decay_mult = decay
    out.loss_weight.extend(v1.loss_weight)
    for field in _V1_SHARED_PARAMS:
        if v1.HasField(field):
            getattr(out, field).CopyFrom(getattr(v1, field))
    return out


def _upgrade_v1_net(param: caffe_pb2.NetParameter, source: str) -> None:
    if param.layer:
        raise PrototxtError(
            f"{source}: net mixes V1 `layers` and current `layer` entries; use one format only"
        )
    for v1 in param.layers:
        _move_v1_transform_fields(v1)
    upgraded = [upgrade_v1_layer(v1, source) for v1 in param.layers]
    param.ClearField("layers")
    param.layer.extend(upgraded)


def _move_v1_transform_fields(v1: caffe_pb2.V1LayerParameter) -> None:
    """Caffe's UpgradeNetDataTransformation: V1 data-layer transform fields -> transform_param."""
    field = _V1_DATA_PARAMS.get(v1.type)
    if field is None or not v1.HasField(field):
        return
    data_param = getattr(v1, field)
    for name in _TRANSFORM_FIELDS:
        if data_param.HasField(name):
            setattr(v1.transform_param, name, getattr(data_param, name))
            data_param.ClearField(name)


def _upgrade_net_input(param: caffe_pb2.NetParameter, source: str) -> None:
    """Caffe's UpgradeNetInput: net-level inputs become a first layer "input" of type "Input"."""
    names = list(param.input)
    n_shape, n_dim = len(param.input_shape), len(param.input_dim)
    if not names:
        raise PrototxtError(f"{source}: input_shape/input_dim given without any `input` name")
    if n_shape and n_dim:
        raise PrototxtError(f"{source}: give net inputs either input_shape or input_dim, not both")
    if n_shape and n_shape != len(names):
        raise PrototxtError(
            f"{source}: {len(names)} net input(s) {names} but {n_shape} input_shape entries"
        )
    if n_dim and n_dim != 4 * len(names):
        raise PrototxtError(
            f"{source}: {len(names)} net input(s) {names} need {4 * len(names)} input_dim "
            f"values (N, C, H, W each), got {n_dim}"
        )
    if not n_shape and not n_dim:
        raise PrototxtError(f"{source}: net input(s) {names} have no input_shape or input_dim")
    layer = caffe_pb2.LayerParameter(name="input", type="Input")
    layer.top.extend(names)
    for i in range(len(names)):
        shape = layer.input_param.shape.add()
        if n_shape:
            shape.CopyFrom(param.input_shape[i])
        else:
            shape.dim.extend(param.input_dim[4 * i : 4 * i + 4])
    rest = list(param.layer)
    param.ClearField("layer")
    param.layer.append(layer)
    param.layer.extend(rest)
    for field in ("input", "input_shape", "input_dim"):
        param.ClearField(field)


def _needs_batch_norm_upgrade(param: caffe_pb2.NetParameter) -> bool:
    return any(lp.type == "BatchNorm" and len(lp.param) == 3 for lp in param.layer)


def _upgrade_batch_norm(param: caffe_pb2.NetParameter) -> None:
    """Caffe's UpgradeNetBatchNorm: BatchNorm's 3 statistics blobs are never learned."""
    for lp in param.layer:
        if lp.type == "BatchNorm" and len(lp.param) == 3:
            for spec in lp.param:
                spec.lr_mult = 0.0
                spec.decay_mult = 0.0


# ---------------------------------------------------------------- solvers


def upgrade_solver_param(
    param: caffe_pb2.SolverParameter, source: str = "<SolverParameter>"
) -> caffe_pb2.SolverParameter:
    """Upgrade `param` in place (deprecated solver_type enum -> type string) and return it."""
    if param.HasField("solver_type"):
        if param.HasField("type"):
            raise PrototxtError(
                f"{source}: both the deprecated solver_type enum and the type string are set; "
                "keep only `type`"
            )
        param.type = _SOLVER_TYPES[param.solver_type]
        param.ClearField("solver_type")
    return param
