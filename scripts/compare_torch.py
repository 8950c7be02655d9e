"""Side-by-side speed of this engine and PyTorch (CPU) on the benchmark nets, in one run.

Each net is built by this engine from its prototxt (data layers swapped for random inputs, as in
scripts/bench.py) and described layer by layer to a PyTorch worker process, which builds the same
net from torch.nn modules. Rounds are interleaved (ours, PyTorch, ours, ...) and medians reported.
Ours: forward + backward (no update, as `caffe time`); PyTorch: forward + backward + SGD step.

PyTorch is not a dependency of this project: point --torch-python at an interpreter that has it
(default: $ISGD_TORCH_PYTHON, else /work/torchenv/bin/python, else this one); without it the
script says so and exits 0.

    python scripts/compare_torch.py [--nets lenet64,cifar100] [--rounds 3] [--iterations 10]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

# Real Caffe 1.0 CPU, ms per forward + backward, measured on the project's 2-core reference
# machine (issue 16): a fixed anchor, since Caffe is not installed here.
CAFFE_MS = {"lenet64": 25.7, "lenet1000": 385.0, "cifar100": 235.0, "alexnet32": 1788.0}


def _threads() -> int:
    value = os.environ.get("OMP_NUM_THREADS", "").strip()
    return int(value) if value.isdigit() and int(value) > 0 else 2


# --- the PyTorch side (runs in the torch interpreter; imports neither engine nor protobuf) ------
def _torch_worker() -> int:
    """Read one JSON request per line ({"net": spec, "iterations": k}), answer per-iteration ms."""
    import torch  # noqa: PLC0415

    torch.set_num_threads(_threads())
    nets: dict[str, Any] = {}
    for line in sys.stdin:
        req = json.loads(line)
        name = req["name"]
        if name not in nets:
            nets[name] = _torch_build(torch, req["spec"])
        times = _torch_time(torch, nets[name], req["iterations"], req.get("warmup", 3))
        print(json.dumps({"name": name, "ms": times}), flush=True)
    return 0


def _torch_build(torch: Any, spec: dict[str, Any]) -> dict[str, Any]:
    """torch.nn modules for the layers of `spec`, inputs, and an SGD optimizer over them."""
    nn = torch.nn
    gen = torch.Generator().manual_seed(0)
    blobs: dict[str, Any] = {}
    for name, shape, classes in spec["inputs"]:
        if classes:
            blobs[name] = torch.randint(0, classes, tuple(shape), generator=gen)
        else:
            blobs[name] = torch.randn(tuple(shape), generator=gen)
    steps, params = [], []
    for ly in spec["layers"]:
        kind = ly["type"]
        if kind == "Convolution":
            mod = nn.Conv2d(
                ly["channels"],
                ly["num_output"],
                tuple(ly["kernel"]),
                tuple(ly["stride"]),
                tuple(ly["pad"]),
                tuple(ly["dilation"]),
                ly["group"],
                ly["bias"],
            )
        elif kind == "Pooling":
            k, s, p = tuple(ly["kernel"]), tuple(ly["stride"]), tuple(ly["pad"])
            if ly["method"] == "MAX":
                mod = nn.MaxPool2d(k, s, p, ceil_mode=True)
            else:
                mod = nn.AvgPool2d(k, s, p, ceil_mode=True)
        elif kind == "ReLU":
            mod = nn.ReLU()
        elif kind == "LRN":
            mod = nn.LocalResponseNorm(ly["size"], ly["alpha"], ly["beta"], ly["k"])
        elif kind == "Dropout":
            mod = nn.Dropout(ly["ratio"])
        elif kind == "InnerProduct":
            mod = nn.Sequential(nn.Flatten(), nn.Linear(ly["k"], ly["num_output"], ly["bias"]))
        elif kind == "SoftmaxWithLoss":
            mod = nn.CrossEntropyLoss()
        elif kind == "Split":
            mod = None
        else:
            raise ValueError(f"layer type {kind} has no PyTorch counterpart here")
        if mod is not None:
            params += list(mod.parameters())
        steps.append((mod, ly["bottoms"], ly["tops"], kind))
    opt = torch.optim.SGD(params, lr=0.001, momentum=0.9, weight_decay=0.004)
    return {"blobs": blobs, "steps": steps, "opt": opt}


def _torch_time(torch: Any, net: dict[str, Any], iterations: int, warmup: int) -> list[float]:
    """ms of forward + backward + SGD step, per iteration, after `warmup` untimed ones."""

    def step() -> None:
        blobs = dict(net["blobs"])
        loss = None
        for mod, bottoms, tops, kind in net["steps"]:
            args = [blobs[b] for b in bottoms]
            if kind == "Split":
                for t in tops:
                    blobs[t] = args[0]
                continue
            out = mod(*args)
            blobs[tops[0]] = out
            if kind == "SoftmaxWithLoss":
                loss = out if loss is None else loss + out
        net["opt"].zero_grad(set_to_none=False)
        loss.backward()
        net["opt"].step()

    for _ in range(warmup):
        step()
    times = []
    for _ in range(iterations):
        t = time.perf_counter()
        step()
        times.append(1e3 * (time.perf_counter() - t))
    return times


# --- our side -----------------------------------------------------------------------------------
def torch_spec(net: Any, inputs: list[tuple[str, tuple[int, ...]]]) -> dict[str, Any]:
    """A JSON description of an engine Net's layers, enough for _torch_build."""
    layers = []
    for i, layer in enumerate(net.layers):
        kind = layer.type_name
        if kind == "Input":
            continue
        ly: dict[str, Any] = {
            "type": kind,
            "bottoms": list(net.bottom_names[i]),
            "tops": list(net.top_names[i]),
        }
        if kind == "Convolution":
            ly |= {
                "channels": layer.channels,
                "num_output": layer.num_output,
                "kernel": [layer.kh, layer.kw],
                "stride": [layer.sh, layer.sw],
                "pad": [layer.ph, layer.pw],
                "dilation": [layer.dh, layer.dw],
                "group": layer.group,
                "bias": layer.bias is not None,
            }
        elif kind == "Pooling":
            ly |= {
                "method": "MAX" if layer.method == 0 else "AVE",
                "kernel": [layer.kh, layer.kw],
                "stride": [layer.sh, layer.sw],
                "pad": [layer.ph, layer.pw],
            }
        elif kind == "LRN":
            p = layer.param.lrn_param
            ly |= {"size": p.local_size, "alpha": p.alpha, "beta": p.beta, "k": p.k}
        elif kind == "Dropout":
            ly |= {"ratio": layer.param.dropout_param.dropout_ratio}
        elif kind == "InnerProduct":
            ly |= {"k": layer.k, "num_output": layer.num_output, "bias": layer.bias is not None}
        layers.append(ly)
    classes = {name: 0 for name, _ in inputs}
    if len(inputs) > 1:
        classes[inputs[1][0]] = int(net.blobs[inputs[1][0]].data.max()) + 1
    return {
        "inputs": [(name, list(shape), classes[name]) for name, shape in inputs],
        "layers": layers,
    }


def _ours_time(net: Any, iterations: int) -> list[float]:
    from engine.timing import time_passes  # noqa: PLC0415

    return time_passes(net, iterations, warmup=0).iteration_ms


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nets", default="lenet64,lenet1000,cifar100,alexnet32")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--iterations", type=int, default=10, help="timed iterations per round")
    ap.add_argument("--torch-python", help="an interpreter with torch (see the module doc)")
    ap.add_argument("--json", action="store_true", help="one JSON object per net")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        return _torch_worker()

    import numpy as np  # noqa: PLC0415

    sys.path.insert(0, str(ROOT))
    from scripts import bench  # noqa: PLC0415

    python = _find_torch_python(args.torch_python)
    if python is None:
        print(
            "compare_torch: skipped, no interpreter with torch found (give --torch-python, or "
            "set ISGD_TORCH_PYTHON; e.g. python3 -m venv /work/torchenv && "
            "/work/torchenv/bin/pip install torch==2.13.0 numpy)"
        )
        return 0
    names = [n for n in args.nets.split(",") if n]
    for name in names:
        if name not in bench.NETS:
            raise SystemExit(f"unknown net '{name}' (known: {', '.join(bench.NETS)})")
    worker = subprocess.Popen(
        [python, str(Path(__file__).resolve()), "--worker"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=os.environ | {"OMP_NUM_THREADS": str(_threads())},
    )
    nets, specs = {}, {}
    for name in names:
        spec = bench.NETS[name]
        param, inputs, classes = bench.prepare_param(
            spec.path(), spec.batch, spec.input_shape, keep_data=False
        )
        nets[name] = bench.build_net(param, inputs, classes, seed=0)
        specs[name] = torch_spec(nets[name], inputs)
        for _ in range(3):  # warm-up: buffers, thread pools
            nets[name].forward_backward()
    ours: dict[str, list[float]] = {n: [] for n in names}
    theirs: dict[str, list[float]] = {n: [] for n in names}
    try:
        for _ in range(args.rounds):
            for name in names:
                ours[name].append(float(np.median(_ours_time(nets[name], args.iterations))))
                req = {"name": name, "spec": specs[name], "iterations": args.iterations}
                worker.stdin.write(json.dumps(req) + "\n")
                worker.stdin.flush()
                reply = json.loads(worker.stdout.readline())
                theirs[name].append(float(np.median(reply["ms"])))
    finally:
        worker.stdin.close()
        worker.wait()
    print(
        f"# {args.rounds} interleaved rounds x {args.iterations} iterations, medians; "
        f"{_threads()} threads; load {os.getloadavg()[0]:.2f}"
    )
    print("| net, batch | real Caffe 1.0 | this project | PyTorch | vs Caffe | vs PyTorch |")
    print("|---|---|---|---|---|---|")
    for name in names:
        o, t = float(np.median(ours[name])), float(np.median(theirs[name]))
        caffe = CAFFE_MS.get(name)
        batch = bench.NETS[name].batch
        row = {"net": name, "batch": batch, "ours_ms": o, "torch_ms": t, "caffe_ms": caffe}
        if args.json:
            print(json.dumps(row | {"ours_rounds": ours[name], "torch_rounds": theirs[name]}))
            continue
        vs_caffe = f"{caffe / o:.2f}x" if caffe else "-"
        print(
            f"| {name}, {batch} | {caffe if caffe else '-'} | {o:.1f} | {t:.1f} | {vs_caffe} "
            f"| {t / o:.2f}x |"
        )
    return 0


def _find_torch_python(given: str | None) -> str | None:
    """The first of --torch-python, $ISGD_TORCH_PYTHON, /work/torchenv, this interpreter that
    imports torch."""
    candidates = [given, os.environ.get("ISGD_TORCH_PYTHON"), "/work/torchenv/bin/python"]
    candidates.append(sys.executable)
    for c in candidates:
        if not c or not Path(c).exists():
            continue
        ok = subprocess.run([c, "-c", "import torch"], capture_output=True).returncode == 0
        if ok:
            return c
        if c == given:
            raise SystemExit(f"--torch-python {given}: cannot import torch there")
    return None


if __name__ == "__main__":
    raise SystemExit(main())
