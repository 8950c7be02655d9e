"""`caffe time` for this engine: per-layer and per-iteration forward/backward times of TRAIN nets.

Data layers are swapped for Input layers holding random images and in-range labels (unless
--data lmdb), and the float32 GEMM peak is measured in the same run so that the achieved
GFLOP/s of the useful convolution/inner-product work can be reported as a fraction of it.

    python scripts/bench.py [--nets lenet64,lenet1000,cifar100,alexnet32] [--iterations K] [--json]
    python scripts/bench.py --model path/to/train.prototxt --batch 32 --input-shape 3,32,32
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # allow `python scripts/bench.py` from a checkout
    sys.path.insert(0, str(ROOT))

from engine.net import Net  # noqa: E402
from engine.proto import caffe_pb2  # noqa: E402
from engine.proto_io import read_net_param  # noqa: E402

EXAMPLES = Path("/work/shared/caffe-examples")
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
    extra: dict[str, Any] = field(default_factory=dict)

    def path(self) -> Path:
        for f in self.files:
            if f.exists():
                return f
        raise FileNotFoundError(f"net '{self.name}': none of {[str(f) for f in self.files]}")


def _spec(name: str, local: str, example: str, batch: int, shape: tuple[int, ...]) -> NetSpec:
    return NetSpec(name, [ROOT / "prototxt" / local, EXAMPLES / example], batch, shape)


NETS = {
    "lenet64": _spec(
        "lenet64",
        "lenet_train_test.prototxt",
        "examples/mnist/lenet_train_test.prototxt",
        64,
        (1, 28, 28),
    ),
    "lenet1000": _spec(
        "lenet1000",
        "lenet_train_test.prototxt",
        "examples/mnist/lenet_train_test.prototxt",
        1000,
        (1, 28, 28),
    ),
    "cifar100": _spec(
        "cifar100",
        "cifar10_quick_train_test.prototxt",
        "examples/cifar10/cifar10_quick_train_test.prototxt",
        100,
        (3, 32, 32),
    ),
    "alexnet32": _spec(
        "alexnet32",
        "alexnet_train_val.prototxt",
        "models/bvlc_alexnet/train_val.prototxt",
        32,
        (3, 227, 227),
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


def prepare_param(
    path: Path, batch: int | None, shape: tuple[int, ...] | None, keep_data: bool
) -> tuple[Any, list[tuple[str, tuple[int, ...]]], int]:
    """The TRAIN NetParameter with data layers replaced by Input layers of the right shapes."""
    param = read_net_param(str(path))
    inputs: list[tuple[str, tuple[int, ...]]] = []
    classes = _num_classes(param)
    if keep_data:
        return param, inputs, classes
    for layer in param.layer:
        if layer.type not in DATA_TYPES:
            continue
        if any(rule.HasField("phase") and rule.phase == caffe_pb2.TEST for rule in layer.include):
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
    param: Any, inputs: list[tuple[str, tuple[int, ...]]], classes: int, seed: int
) -> Net:
    """Build the TRAIN net and fill its inputs: images ~ N(0, 1), labels uniform in range."""
    net = Net(param, phase="TRAIN", seed=seed)
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


def gemm_peak_gflops(size: int = 2048, repeats: int = 5) -> float:
    """Best-of GFLOP/s of a square float32 matmul: this machine's BLAS peak, right now."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((size, size), dtype=np.float32)
    b = rng.standard_normal((size, size), dtype=np.float32)
    c = np.empty_like(a)
    np.matmul(a, b, out=c)
    best = min(_timed(lambda: np.matmul(a, b, out=c)) for _ in range(repeats))
    return 2.0 * size**3 / best / 1e9


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


# --- timing ------------------------------------------------------------------------------------
def time_net(net: Net, iterations: int, warmup: int = 5) -> dict[str, Any]:
    """Steady-state whole-iteration times (forward, backward) and per-layer times, in ms.

    `warmup` untimed iterations first: buffers allocated, thread pools started, pages touched.
    """
    n_layers = len(net.layers)
    for _ in range(max(warmup, 1)):
        net.forward_backward()
    fwd, bwd = [], []
    for _ in range(iterations):
        fwd.append(_timed(net.forward_loss))
        bwd.append(_timed(net.backward))
    layer_f = np.zeros(n_layers)
    layer_b = np.zeros(n_layers)
    for _ in range(iterations):
        for i in range(n_layers):
            layer_f[i] += _timed(lambda i=i: net.forward_from_to(i, i))
        for i in reversed(range(n_layers)):
            layer_b[i] += _timed(lambda i=i: net.backward_from_to(i, i))
    total = np.add(fwd, bwd)
    return {
        "forward_ms": 1e3 * float(np.mean(fwd)),
        "backward_ms": 1e3 * float(np.mean(bwd)),
        "ms_per_iter": 1e3 * float(np.mean(total)),
        "ms_per_iter_best": 1e3 * float(np.min(total)),
        "ms_per_iter_median": 1e3 * float(np.median(total)),
        "layers": [
            {
                "name": net.layer_names[i],
                "type": net.layers[i].type_name,
                "forward_ms": 1e3 * layer_f[i] / iterations,
                "backward_ms": 1e3 * layer_b[i] / iterations,
            }
            for i in range(n_layers)
        ],
    }


def bench_one(
    name: str,
    path: Path,
    batch: int | None,
    shape: tuple[int, ...] | None,
    iterations: int,
    keep_data: bool,
    peak: float,
    seed: int,
    warmup: int = 5,
) -> dict[str, Any]:
    param, inputs, classes = prepare_param(path, batch, shape, keep_data)
    net = build_net(param, inputs, classes, seed)
    first = (
        net.blobs[inputs[0][0]]
        if inputs
        else net.blobs[net.top_vecs and net.layers[0].param.top[0]]
    )
    n = first.shape[0]
    times = time_net(net, iterations, warmup)
    f_flops, b_flops = useful_flops(net)
    gflops = (f_flops + b_flops) / (times["ms_per_iter"] * 1e-3) / 1e9
    return {
        "net": name,
        "batch": int(n),
        "ms_per_iter": times["ms_per_iter"],
        "forward_ms": times["forward_ms"],
        "backward_ms": times["backward_ms"],
        "images_per_s": n / (times["ms_per_iter"] * 1e-3),
        "gemm_gflops": gflops,
        "peak_fraction": gflops / peak,
        "peak_gflops": peak,
        "gflop_per_iter": (f_flops + b_flops) / 1e9,
        "ms_per_iter_best": times["ms_per_iter_best"],
        "ms_per_iter_median": times["ms_per_iter_median"],
        "source": str(path),
        "layers": times["layers"],
    }


def format_table(result: dict[str, Any]) -> str:
    """Caffe-time-like text: per-layer rows, then the totals."""
    lines = [
        f"== {result['net']} (batch {result['batch']}) from {result['source']}",
        f"{'layer':<20} {'type':<16} {'forward ms':>11} {'backward ms':>12}",
    ]
    for ly in result["layers"]:
        lines.append(
            f"{ly['name']:<20} {ly['type']:<16} {ly['forward_ms']:>11.3f} "
            f"{ly['backward_ms']:>12.3f}"
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


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--nets",
        default="lenet64,lenet1000,cifar100,alexnet32",
        help=f"comma-separated, from {', '.join(NETS)}",
    )
    ap.add_argument("--model", help="time this prototxt instead of the built-in nets")
    ap.add_argument("--batch", type=int, help="batch size (default: the net's own)")
    ap.add_argument("--input-shape", help="per-image shape C,H,W for --model")
    ap.add_argument("--iterations", type=int, default=10)
    ap.add_argument(
        "--warmup", type=int, default=5, help="untimed iterations before timing (default 5)"
    )
    ap.add_argument(
        "--data",
        choices=["dummy", "lmdb"],
        default="dummy",
        help="lmdb keeps the prototxt's real Data layers",
    )
    ap.add_argument("--json", action="store_true", help="one JSON object per line per net")
    ap.add_argument("--seed", type=int, default=0)
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.iterations < 1:
        raise SystemExit("--iterations must be at least 1")
    shape = tuple(int(v) for v in args.input_shape.split(",")) if args.input_shape else None
    if args.model:
        jobs = [(Path(args.model).stem, Path(args.model), args.batch, shape)]
    else:
        jobs = []
        for name in filter(None, args.nets.split(",")):
            if name not in NETS:
                raise SystemExit(f"unknown net '{name}' (known: {', '.join(NETS)})")
            spec = NETS[name]
            jobs.append((name, spec.path(), args.batch or spec.batch, shape or spec.input_shape))
    peak = gemm_peak_gflops()
    for name, path, batch, image in jobs:
        result = bench_one(
            name,
            path,
            batch,
            image,
            args.iterations,
            args.data == "lmdb",
            peak,
            args.seed,
            args.warmup,
        )
        if args.json:
            print(
                json.dumps(
                    {k: v for k, v in result.items() if k != "layers"}
                    | {"layers": result["layers"]}
                ),
                flush=True,
            )
        else:
            print(format_table(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
