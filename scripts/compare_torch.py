"""Side-by-side speed of this engine and PyTorch (CPU) on the benchmark nets, in one run.

Each net is built by this engine from its prototxt (data layers swapped for random inputs, as in
scripts/bench.py) and described layer by layer to a PyTorch worker process, which builds the same
net from torch.nn modules. Rounds are interleaved (ours, PyTorch, ours, ...) and medians reported.
Ours: forward + backward (no update, as `caffe time`); PyTorch: forward + backward + SGD step.

PyTorch is not a dependency of this project: point --torch-python at an interpreter that has it
(default: $ISGD_TORCH_PYTHON, else ../torchenv/bin/python beside the repository, else this one);
without it the script says so and exits 0.

    python scripts/compare_torch.py [--nets lenet64,cifar100] [--rounds 3] [--iterations 10]
    python scripts/compare_torch.py --baseline ../old-checkout    # a "before" column too

Each engine (this checkout, and --baseline) and PyTorch run in their own worker process; every
round times each net in each of them in turn, so load from elsewhere hits all columns alike.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
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
    import torch  # only in the PyTorch interpreter

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


def _engine_worker(root: str) -> int:
    """Serve timing requests for the engine checked out at `root` (this one, or a baseline):
    per line {"name", "iterations"}, answer per-iteration forward + backward ms."""
    sys.path.insert(0, root)
    from scripts import bench  # that checkout's bench, found through sys.path

    nets: dict[str, Any] = {}
    for line in sys.stdin:
        req = json.loads(line)
        name = req["name"]
        if name not in nets:
            spec = bench.NETS[name]
            local = Path(root) / "prototxt" / spec.files[0].name
            path = local if local.exists() else spec.path()
            param, inputs, classes = bench.prepare_param(
                path, spec.batch, spec.input_shape, keep_data=False
            )
            nets[name] = bench.build_net(param, inputs, classes, seed=0)
            for _ in range(3):  # warm-up: buffers, thread pools
                nets[name].forward_backward()
        times = []
        for _ in range(req["iterations"]):
            t = time.perf_counter()
            nets[name].forward_loss()
            nets[name].backward()
            times.append(1e3 * (time.perf_counter() - t))
        print(json.dumps({"name": name, "ms": times, "load": os.getloadavg()[0]}), flush=True)
    return 0


class _Worker:
    """A timing subprocess spoken to in JSON lines."""

    def __init__(self, argv: list[str]) -> None:
        env = os.environ | {"OMP_NUM_THREADS": str(_threads())}
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env
        )

    def ask(self, request: dict[str, Any]) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"timing worker {self.proc.args} ended early")
        return json.loads(line)

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self.proc.wait()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nets", default="lenet64,lenet1000,cifar100,alexnet32")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--iterations", type=int, default=10, help="timed iterations per round")
    ap.add_argument("--torch-python", help="an interpreter with torch (see the module doc)")
    ap.add_argument(
        "--baseline",
        metavar="DIR",
        help="another checkout of this project (e.g. a git worktree of an older commit), timed "
        "in the same interleaved rounds as a 'before' column",
    )
    ap.add_argument("--json", action="store_true", help="one JSON object per net")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--engine-worker", metavar="DIR", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        return _torch_worker()
    if args.engine_worker:
        return _engine_worker(args.engine_worker)

    sys.path.insert(0, str(ROOT))
    from scripts import bench  # this checkout's, after the workers are dispatched

    python = _find_torch_python(args.torch_python)
    if python is None:
        print(
            "compare_torch: skipped, no interpreter with torch found (give --torch-python, or "
            "set ISGD_TORCH_PYTHON; e.g. python3 -m venv ../torchenv && "
            "../torchenv/bin/pip install torch==2.13.0 numpy)"
        )
        return 0
    names = [n for n in args.nets.split(",") if n]
    for name in names:
        if name not in bench.NETS:
            raise SystemExit(f"unknown net '{name}' (known: {', '.join(bench.NETS)})")
    specs = {}
    for name in names:  # the PyTorch side's description, from this engine's build of the net
        spec = bench.NETS[name]
        param, inputs, classes = bench.prepare_param(
            spec.path(), spec.batch, spec.input_shape, keep_data=False
        )
        specs[name] = torch_spec(bench.build_net(param, inputs, classes, seed=0), inputs)
    me = str(Path(__file__).resolve())
    engines = {"this": _Worker([sys.executable, me, "--engine-worker", str(ROOT)])}
    if args.baseline:
        base = str(Path(args.baseline).resolve())
        engines = {"baseline": _Worker([sys.executable, me, "--engine-worker", base])} | engines
    workers = engines | {"torch": _Worker([python, me, "--worker"])}
    times: dict[str, dict[str, list[float]]] = {w: {n: [] for n in names} for w in workers}
    loads = []
    try:
        for _ in range(args.rounds):
            for name in names:
                for key, worker in workers.items():
                    req: dict[str, Any] = {"name": name, "iterations": args.iterations}
                    if key == "torch":
                        req["spec"] = specs[name]
                    reply = worker.ask(req)
                    times[key][name].append(float(statistics.median(reply["ms"])))
                loads.append(os.getloadavg()[0])
    finally:
        for worker in workers.values():
            worker.close()
    print(
        f"# {args.rounds} interleaved rounds x {args.iterations} iterations, medians; "
        f"{_threads()} threads; load {min(loads):.2f}-{max(loads):.2f}"
    )
    before = "baseline" in times
    head = "| net, batch | real Caffe 1.0 | " + ("before | " if before else "")
    head += "this project | PyTorch | vs Caffe | " + ("before vs PyTorch | " if before else "")
    print(head + "vs PyTorch |")
    print("|---" * head.count("|") + "|")
    for name in names:
        o = float(statistics.median(times["this"][name]))
        t = float(statistics.median(times["torch"][name]))
        b = float(statistics.median(times["baseline"][name])) if before else None
        caffe = CAFFE_MS.get(name)
        batch = bench.NETS[name].batch
        row = {"net": name, "batch": batch, "ours_ms": o, "torch_ms": t, "caffe_ms": caffe}
        if before:
            row["baseline_ms"] = b
        if args.json:
            print(json.dumps(row | {f"{k}_rounds": times[k][name] for k in times}))
            continue
        vs_caffe = f"{caffe / o:.2f}x" if caffe else "-"
        cells = [f"{name}, {batch}", str(caffe if caffe else "-")]
        cells += [f"{b:.1f}"] if before else []
        cells += [f"{o:.1f}", f"{t:.1f}", vs_caffe]
        cells += [f"{t / b:.2f}x"] if before else []
        cells += [f"{t / o:.2f}x"]
        print("| " + " | ".join(cells) + " |")
    return 0


def _find_torch_python(given: str | None) -> str | None:
    """The first of --torch-python, $ISGD_TORCH_PYTHON, ../torchenv beside the repository, this
    interpreter that imports torch."""
    beside = ROOT.parent / "torchenv" / "bin" / "python"
    candidates = [given, os.environ.get("ISGD_TORCH_PYTHON"), str(beside)]
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
