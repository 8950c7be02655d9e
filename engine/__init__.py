"""A NumPy/CuPy reimplementation of Caffe's layer graph, driven by Caffe's own files."""

from engine.blob import Blob
from engine.layer import TEST, TRAIN, Layer, register_layer

__all__ = ["Blob", "Layer", "TEST", "TRAIN", "register_layer", "Net"]


def __getattr__(name: str):
    if name == "Net":
        from engine.net import Net

        return Net
    raise AttributeError(name)
