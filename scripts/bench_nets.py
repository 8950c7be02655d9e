"""The benchmark nets and their preparation, shared by scripts/bench.py (CPU) and
scripts/gpu_bench.py (CuPy): the cases, Data layers swapped for Input layers holding random
inputs, useful FLOPs, and the Caffe-time-like text of a result. A library: it runs nothing."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from engine.net import Net
from engine.proto import caffe_pb2
from engine.proto_io import read_net_param

ROOT = Path(__file__).resolve().parent.parent
# Caffe's own example prototxts, where a checkout of the shared folder sits beside the repo.
EXAMPLES = ROOT.parent / "shared" / "caffe-examples"
DATA_TYPES = {
    "Data",
    "ImageData",
    "HDF5Data",
    "MemoryData",
    "WindowData",
    "DummyData",
    "Input",
    "DATA",
    "IMAGE_DATA",
    "HDF5_DATA",
    "MEMORY_DATA",
    "WINDOW_DATA",
    "DUMMY_DATA",
}


@dataclass
class NetSpec:
    """A benchmark case: prototxt candidates, batch size, per-image input shape."""

    name: str
    files: list[Path]
    batch: int | None
    input_shape: tuple[int, ...] | None = None
    solver: str | None = None  # solver file under prototxt/ for --train-step
    extra: dict[str, Any] = field(default_factory=dict)

    def path(self) -> Path:
        for f in self.files:
            if f.exists():
                return f
        raise FileNotFoundError(f"net '{self.name}': none of {[str(f) for f in self.files]}")


def _spec(
    name: str,
    local: str,
    example: str,
    batch: int,
    shape: tuple[int, ...],
    solver: str | None = None,
) -> NetSpec:
    return NetSpec(name, [ROOT / "prototxt" / local, EXAMPLES / example], batch, shape, solver)


NETS = {
    "lenet64": _spec(
        "lenet64",
        "lenet_train_test.prototxt",
        "examples/mnist/lenet_train_test.prototxt",
        64,
        (1, 28, 28),
        "lenet_isgd_solver.prototxt",
    ),
    "lenet1000": _spec(
        "lenet1000",
        "lenet_train_test.prototxt",
        "examples/mnist/lenet_train_test.prototxt",
        1000,
        (1, 28, 28),
        "lenet_isgd_solver.prototxt",
    ),
    "cifar100": _spec(
        "cifar100",
        "cifar10_quick_train_test.prototxt",
        "examples/cifar10/cifar10_quick_train_test.prototxt",
        100,
        (3, 32, 32),
        "cifar10_quick_isgd_solver.prototxt",
    ),
    "alexnet32": _spec(
        "alexnet32",
        "alexnet_train_val.prototxt",
        "models/bvlc_alexnet/train_val.prototxt",
        32,
        (3, 227, 227),
        "alexnet_isgd_solver.prototxt",
    ),
}


# --- net preparation -------------------------------------------------------------------------
def _num_classes(param: Any) -> int:
    """Labels are drawn below the num_output of the last InnerProduct (the classifier)."""
    last = [
        ly.inner_product_param.num_output
        for ly in param.layer
        if ly.type in ("InnerProduct", "INNER_PRODUCT") and ly.inner_product_param.num_output
    ]
    return int(last[-1]) if last else 1


def _declared_shape(layer: Any) -> tuple[int, ...] | None:
    """The first top's full shape declared by an Input or DummyData layer, if any."""
    for shapes in (layer.input_param.shape, layer.dummy_data_param.shape):
        if len(shapes):
            return tuple(int(d) for d in shapes[0].dim)
    return None


def _image_shape(layer: Any) -> tuple[int, ...] | None:
    """Per-image shape implied by a data layer: input/dummy shapes or the crop size (RGB)."""
    declared = _declared_shape(layer)
    if declared:
        return declared[1:]
    crop = layer.transform_param.crop_size if layer.HasField("transform_param") else 0
    return (3, crop, crop) if crop else None


def _absolute_sources(param: Any) -> None:
    """Data sources and mean files given relative to the repository (as in prototxt/) made
    absolute, so that the bench runs from any directory."""
    for layer in param.layer:
        if layer.HasField("data_param") and layer.data_param.source:
            src = Path(layer.data_param.source)
            if not src.is_absolute() and (ROOT / src).exists():
                layer.data_param.source = str(ROOT / src)
        if layer.HasField("transform_param") and layer.transform_param.mean_file:
            mean = Path(layer.transform_param.mean_file)
            if not mean.is_absolute() and (ROOT / mean).exists():
                layer.transform_param.mean_file = str(ROOT / mean)


def other_phase_only(layer: Any, phase: str) -> bool:
    """True for a layer that Caffe's include rules keep in the other phase only."""
    other = caffe_pb2.TEST if phase == "TRAIN" else caffe_pb2.TRAIN
    return any(rule.HasField("phase") and rule.phase == other for rule in layer.include)


def prepare_param(
    path: Path,
    batch: int | None,
    shape: tuple[int, ...] | None,
    keep_data: bool,
    phase: str = "TRAIN",
) -> tuple[Any, list[tuple[str, tuple[int, ...]]], int]:
    """The NetParameter with the phase's data layers replaced by Input layers of the right
    shapes (or kept, with repository-relative sources made absolute)."""
    param = read_net_param(str(path))
    inputs: list[tuple[str, tuple[int, ...]]] = []
    classes = _num_classes(param)
    if keep_data:
        _absolute_sources(param)
        return param, inputs, classes
    for layer in param.layer:
        if layer.type not in DATA_TYPES or other_phase_only(layer, phase):
            continue
        declared = _declared_shape(layer)
        n = batch or layer.data_param.batch_size or (declared[0] if declared else 1)
        image = shape or _image_shape(layer)
        if image is None:
            raise ValueError(f"{path}: layer '{layer.name}': give --input-shape C,H,W")
        tops = list(layer.top)
        include = list(layer.include)
        layer.Clear()
        layer.name = f"{tops[0]}_input"
        layer.type = "Input"
        layer.top.extend(tops)
        layer.include.extend(include)
        shapes = [(n, *image)] + [(n,)] * (len(tops) - 1)
        for s in shapes:
            layer.input_param.shape.add().dim.extend(s)
        inputs += list(zip(tops, shapes, strict=True))
    return param, inputs, classes


def build_net(
    param: Any,
    inputs: list[tuple[str, tuple[int, ...]]],
    classes: int,
    seed: int,
    phase: str = "TRAIN",
) -> Net:
    """Build the net and fill its inputs: images ~ N(0, 1), labels uniform in range."""
    net = Net(param, phase=phase, seed=seed)
    rng = np.random.default_rng(seed)
    for i, (name, _) in enumerate(inputs):
        blob = net.blobs[name]
        if i == 0:
            blob.data[...] = rng.standard_normal(blob.shape, dtype=np.float32)
        else:
            blob.data[...] = rng.integers(0, classes, blob.shape)
    return net


# --- FLOP counting -----------------------------------------------------------------------------
def useful_flops(net: Net) -> tuple[float, float]:
    """Forward and backward FLOPs of Convolution and InnerProduct layers (2 per MAC).

    Backward counts the weight gradient always and the data gradient only where it is needed.
    """
    fwd = bwd = 0.0
    for i, layer in enumerate(net.layers):
        macs = 0.0
        if layer.type_name == "Convolution":
            for top in net.top_vecs[i]:
                n, o, oh, ow = top.shape
                macs += n * o * oh * ow * layer.blobs[0].count / o
        elif layer.type_name == "InnerProduct":
            macs = net.top_vecs[i][0].count * layer.blobs[0].count / layer.num_output
        if not macs:
            continue
        fwd += 2 * macs
        if net.layer_need_backward[i]:
            bwd += 2 * macs
            if net.bottom_need_backward[i] and net.bottom_need_backward[i][0]:
                bwd += 2 * macs
    return fwd, bwd


def format_table(result: dict[str, Any]) -> str:
    """Caffe-time-like text: per-layer rows, then the totals."""
    if "train_step_ms" in result:
        return (
            f"== {result['net']} (batch {result['batch']}) train step from {result['source']}\n"
            f"isgd train iteration {result['train_step_ms']:.2f} ms, forward + backward "
            f"{result['forward_backward_ms']:.2f} ms: {100 * result['overhead']:+.1f} %"
        )
    lines = [
        f"== {result['net']} (batch {result['batch']}, {result['phase']}) from {result['source']}",
        f"{'layer':<20} {'type':<16} {'forward ms':>11} {'backward ms':>12}",
    ]
    for ly in result["layers"]:
        lines.append(
            f"{ly['name']:<20} {ly['type']:<16} {ly['forward_ms']:>11.3f} "
            f"{ly['backward_ms']:>12.3f}" + (f"  {ly['plan']}" if "plan" in ly else "")
        )
    lines.append(
        f"forward {result['forward_ms']:.2f} ms, backward {result['backward_ms']:.2f} ms, "
        f"iteration {result['ms_per_iter']:.2f} ms (median {result['ms_per_iter_median']:.2f}, "
        f"best {result['ms_per_iter_best']:.2f}), "
        f"{result['images_per_s']:.0f} images/s, {result['gflop_per_iter']:.3f} GFLOP/iter, "
        f"{result['gemm_gflops']:.1f} GFLOP/s = {100 * result['peak_fraction']:.1f}% of "
        f"the {result['peak_gflops']:.0f} GFLOP/s GEMM peak"
    )
    return "\n".join(lines)
