"""Tiny generated nets, LMDBs and solver files for the solver tests (all under tmp_path)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import lmdb
import numpy as np
import pytest

from engine.proto import caffe_pb2

RECORDS = 24
FEATURES = 6
CLASSES = 3
BATCH = 4


def write_lmdb(path: Path, seed: int, records: int = RECORDS) -> tuple[np.ndarray, np.ndarray]:
    """An LMDB of 1 x 1 x FEATURES uint8 Datums with labels that a linear model can learn."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, CLASSES, records)
    centers = rng.integers(30, 220, (CLASSES, FEATURES))
    noise = rng.integers(-25, 26, (records, FEATURES))
    images = np.clip(centers[labels] + noise, 0, 255).astype(np.uint8)
    env = lmdb.open(str(path), map_size=1 << 24)
    with env.begin(write=True) as txn:
        for i in range(records):
            d = caffe_pb2.Datum(channels=1, height=1, width=FEATURES, label=int(labels[i]))
            d.data = images[i].tobytes()
            txn.put(f"{i:08d}".encode(), d.SerializeToString())
    env.close()
    return images, labels


NET = """
name: "tiny"
layer {{ name: "data" type: "Data" top: "data" top: "label" include {{ phase: TRAIN }}
  transform_param {{ scale: 0.00390625 }}
  data_param {{ source: "{train}" batch_size: {batch} backend: LMDB }} }}
layer {{ name: "data" type: "Data" top: "data" top: "label" include {{ phase: TEST }}
  transform_param {{ scale: 0.00390625 }}
  data_param {{ source: "{test}" batch_size: {batch} backend: LMDB }} }}
layer {{ name: "ip1" type: "InnerProduct" bottom: "data" top: "ip1"
  param {{ lr_mult: 1 decay_mult: 1 }} param {{ lr_mult: 2 decay_mult: 0 }}
  inner_product_param {{ num_output: 5 weight_filler {{ type: "gaussian" std: 0.3 }}
    bias_filler {{ type: "constant" value: 0.1 }} }} }}
layer {{ name: "relu1" type: "ReLU" bottom: "ip1" top: "ip1" }}
layer {{ name: "ip2" type: "InnerProduct" bottom: "ip1" top: "ip2"
  param {{ lr_mult: 1 decay_mult: 1 }} param {{ lr_mult: 2 decay_mult: 0 }}
  inner_product_param {{ num_output: {classes} weight_filler {{ type: "gaussian" std: 0.3 }}
    bias_filler {{ type: "constant" value: 0 }} }} }}
layer {{ name: "accuracy" type: "Accuracy" bottom: "ip2" bottom: "label" top: "accuracy"
  include {{ phase: TEST }} }}
layer {{ name: "loss" type: "SoftmaxWithLoss" bottom: "ip2" bottom: "label" top: "loss" }}
"""

SOLVER = """
net: "{net}"
test_iter: 2
test_interval: 5
base_lr: 0.1
momentum: 0.9
weight_decay: 0.01
lr_policy: "fixed"
display: 1
max_iter: 10
snapshot_prefix: "{prefix}"
random_seed: 7
"""


class Tiny:
    """Paths of one generated problem: write solver files with extra fields and build solvers."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.train_lmdb = root / "train_lmdb"
        self.test_lmdb = root / "test_lmdb"
        self.images, self.labels = write_lmdb(self.train_lmdb, 1)
        write_lmdb(self.test_lmdb, 2, records=8)
        self.net = root / "tiny_train_test.prototxt"
        self.net.write_text(
            NET.format(train=self.train_lmdb, test=self.test_lmdb, batch=BATCH, classes=CLASSES)
        )
        (root / "snap").mkdir()

    def solver(self, extra: str = "", name: str = "solver", **fields: object) -> Path:
        """A solver file: the defaults above, `fields` replacing lines, `extra` appended."""
        text = SOLVER.format(net=self.net, prefix=self.root / "snap" / name)
        lines = []
        for line in text.strip().splitlines():
            key = line.split(":")[0].strip()
            if key in fields:
                continue
            lines.append(line)
        for key, value in fields.items():
            if isinstance(value, bool):
                value = str(value).lower()
            elif isinstance(value, str):  # "=NAME" writes an enum value bare
                value = value[1:] if value.startswith("=") else f'"{value}"'
            lines.append(f"{key}: {value}")
        path = self.root / f"{name}.prototxt"
        path.write_text("\n".join(lines) + "\n" + extra + "\n")
        return path


@pytest.fixture
def tiny(tmp_path: Path) -> Tiny:
    return Tiny(tmp_path)


@pytest.fixture
def quiet_log(tmp_path: Path) -> Callable[..., object]:
    """A TrainLog writing text into a StringIO and JSON next to it; returns (log, text, json)."""
    import io

    from solvers.train_log import TrainLog

    def make(name: str = "run") -> tuple[TrainLog, io.StringIO, Path]:
        text = io.StringIO()
        json_path = tmp_path / f"{name}.jsonl"
        return TrainLog(stream=text, json_path=json_path, progress=False), text, json_path

    return make
