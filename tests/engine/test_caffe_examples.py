"""Every BVLC example prototxt parses; every net whose layers we implement builds and runs
forward + backward in both phases, with its data layers replaced by DummyData of the same shapes
(batches, Input layers' too, capped at MAX_BATCH)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from engine.layer import registered_types
from engine.net import Net
from engine.proto import caffe_pb2
from engine.proto_io import read_net_param, read_solver_param

EXAMPLES = Path(__file__).resolve().parents[3] / "shared" / "caffe-examples"
DATA_TYPES = {"Data", "ImageData", "HDF5Data", "WindowData", "MemoryData"}
MAX_BATCH = 4

pytestmark = pytest.mark.skipif(
    not EXAMPLES.is_dir(), reason=f"BVLC example files not found at {EXAMPLES}"
)


def _files(kind: str) -> list[Path]:
    if not EXAMPLES.is_dir():
        return []
    files = sorted(EXAMPLES.rglob("*.prototxt"))
    solvers = [f for f in files if "solver" in f.name]
    return solvers if kind == "solver" else [f for f in files if f not in solvers]


def _sample_shape(layer: caffe_pb2.LayerParameter) -> tuple[int, ...]:
    """C x H x W a data layer would read: its crop, else the dataset its source names."""
    crop = layer.transform_param.crop_size
    if crop:
        return (3, crop, crop)
    source = (layer.data_param.source or layer.hdf5_data_param.source).lower()
    if "mnist" in source:
        return (1, 28, 28)
    if layer.type == "HDF5Data":
        return (4,)
    return (3, 32, 32)


def _batch(layer: caffe_pb2.LayerParameter) -> int:
    for p in (
        layer.data_param,
        layer.hdf5_data_param,
        layer.image_data_param,
        layer.memory_data_param,
        layer.window_data_param,
    ):
        if p.batch_size:
            return min(p.batch_size, MAX_BATCH)
    return MAX_BATCH


def replace_data_layers(param: caffe_pb2.NetParameter) -> caffe_pb2.NetParameter:
    out = caffe_pb2.NetParameter()
    out.CopyFrom(param)
    for layer in out.layer:
        if layer.type == "Input":  # deploy nets: the same batch cap as the data layers
            for shape in layer.input_param.shape:
                if shape.dim and shape.dim[0] > MAX_BATCH:
                    shape.dim[0] = MAX_BATCH
            continue
        if layer.type not in DATA_TYPES:
            continue
        n, shape = _batch(layer), _sample_shape(layer)
        tops = list(layer.top)
        include = [r for r in layer.include]
        exclude = [r for r in layer.exclude]
        name = layer.name
        layer.Clear()
        layer.name, layer.type = name, "DummyData"
        layer.top.extend(tops)
        layer.include.extend(include)
        layer.exclude.extend(exclude)
        dummy = layer.dummy_data_param
        dummy.shape.add().dim.extend((n, *shape))
        dummy.data_filler.add().CopyFrom(caffe_pb2.FillerParameter(type="uniform", min=0, max=1))
        for _ in tops[1:]:
            dummy.shape.add().dim.extend((n,))
            dummy.data_filler.add().CopyFrom(caffe_pb2.FillerParameter(type="constant", value=0))
    return out


@pytest.mark.parametrize("path", _files("solver"), ids=lambda p: p.name)
def test_every_example_solver_parses(path: Path):
    param = read_solver_param(str(path))
    assert param.base_lr > 0 or param.HasField("base_lr")


@pytest.mark.parametrize("path", _files("net"), ids=lambda p: p.name)
def test_every_example_net_parses_and_supported_ones_run(path: Path):
    param = read_net_param(str(path))
    assert len(param.layer) > 0
    known = set(registered_types()) | DATA_TYPES
    missing = sorted({lp.type for lp in param.layer} - known)
    if missing:
        pytest.skip(f"layer types not implemented: {', '.join(missing)}")
    param = replace_data_layers(param)
    # Nets whose TEST data layers exist only under a stage are run as their solvers run them
    # (test_state { stage: ... }): with the first stage a data layer names.
    stages = [
        s for lp in param.layer if lp.type == "DummyData" for r in lp.include for s in r.stage
    ]
    for phase in ("TRAIN", "TEST"):
        net = Net(param, phase, seed=0, stages=stages[:1] if phase == "TEST" else ())
        loss = net.forward_loss()
        assert np.isfinite(loss)
        net.backward()
        assert all(np.all(np.isfinite(b.diff)) for b in net.learnable_params)
        if phase == "TRAIN" and net.loss_tops:
            assert any(np.any(b.diff) for b in net.learnable_params)
