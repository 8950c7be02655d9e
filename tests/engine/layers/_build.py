"""Helpers shared by the tests of the added layers: build a float64 layer from text, random blobs."""

from __future__ import annotations

import numpy as np
from google.protobuf import text_format

from engine.layer import Layer, layer_class
from engine.proto import caffe_pb2
from tests.backends import Blob, dev
from tests.backends import current as backend


def make_layer(kind: str, body: str = "", name: str = "l", seed: int = 0) -> Layer:
    param = text_format.Parse(f'name: "{name}" type: "{kind}" {body}', caffe_pb2.LayerParameter())
    return layer_class(kind)(param, xp=backend(), dtype=np.float64, seed=seed)


def random_blob(shape: tuple[int, ...], seed: int = 0, scale: float = 1.0) -> Blob:
    blob = Blob(shape, dtype=np.float64)
    blob.data[...] = dev(scale * np.random.default_rng(seed).standard_normal(shape))
    return blob
