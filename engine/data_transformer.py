"""Caffe's DataTransformer for whole batches: mean subtraction, scale, crop and mirror, vectorized.

Per element Caffe computes out = (x[c, h_off + h, w_off + w] - mean[same index]) * scale, writing
to column (crop_w - 1 - w) when mirrored; crops are random in TRAIN, centred in TEST; the mirror
coin (param.mirror and Rand(2)) is tossed in either phase, as Caffe does. Random draws are made
for a whole (global) batch up front, so a slice of the batch is transformed as in the full batch.
The draws come from the transformer's own mt19937 in Caffe's order, record by record: the mirror
coin, then the crop's row and column offsets, each Rand(n) = u mod n (data_transformer.cpp).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from engine.boost_random import CaffeRNG
from engine.errors import NetError
from engine.layer import TRAIN
from engine.proto import caffe_pb2


@dataclass(frozen=True)
class TransformDraw:
    """The random choices for n records: mirror flags and crop offsets."""

    mirror: np.ndarray  # bool (n,)
    h_off: np.ndarray  # int (n,)
    w_off: np.ndarray  # int (n,)

    def slice(self, start: int, stop: int) -> TransformDraw:
        return TransformDraw(
            self.mirror[start:stop], self.h_off[start:stop], self.w_off[start:stop]
        )


def load_mean_file(path: str | os.PathLike, where: str = "") -> np.ndarray:
    """A Caffe mean .binaryproto (BlobProto of 1 x C x H x W, or C x H x W) as a float32 array."""

    if not os.path.isfile(path):
        raise NetError(f"{where}mean file {path} does not exist")
    blob = caffe_pb2.BlobProto()
    try:
        with open(path, "rb") as f:
            blob.ParseFromString(f.read())
    except Exception as exc:  # protobuf's DecodeError
        raise NetError(f"{where}mean file {path} is not a BlobProto ({exc})") from exc
    if blob.HasField("shape"):
        shape = tuple(int(d) for d in blob.shape.dim)
    else:
        shape = (blob.num, blob.channels, blob.height, blob.width)
    values = np.asarray(blob.double_data if len(blob.double_data) else blob.data, np.float32)
    if len(shape) == 4 and shape[0] == 1:
        shape = shape[1:]
    if len(shape) != 3 or values.size != int(np.prod(shape)):
        raise NetError(
            f"{where}mean file {path}: expected a 1 x C x H x W blob, got shape {shape} with "
            f"{values.size} values"
        )
    return values.reshape(shape)


class DataTransformer:
    """Applies a TransformationParameter to uint8 (or float) batches of shape (n, C, H, W)."""

    def __init__(self, param: Any, phase: str, dtype: np.dtype | type, where: str = "") -> None:
        self.where = where
        self.phase = phase
        self.dtype = np.dtype(dtype)
        self.scale = self.dtype.type(param.scale)
        self.crop = int(param.crop_size)
        self.mirror = bool(param.mirror)
        self.force_color, self.force_gray = bool(param.force_color), bool(param.force_gray)
        if self.force_color and self.force_gray:
            raise NetError(f"{where}cannot set both force_color and force_gray")
        has_file = param.HasField("mean_file")
        if has_file and len(param.mean_value):
            raise NetError(f"{where}cannot specify mean_file and mean_value at the same time")
        self.mean: np.ndarray | None = None
        if has_file:
            self.mean = load_mean_file(param.mean_file, where).astype(self.dtype)
        self.mean_values = [float(v) for v in param.mean_value]
        self._mean_array: np.ndarray | None = None

    @property
    def color(self) -> bool | None:
        """How encoded images are decoded: forced colour, forced gray, or native (None)."""
        return True if self.force_color else False if self.force_gray else None

    def output_shape(self, channels: int, height: int, width: int) -> tuple[int, int, int]:
        """(C, H', W') of a transformed record of shape (C, H, W); checks mean and crop fit."""
        if channels <= 0:
            raise NetError(f"{self.where}records have {channels} channels")
        if self.crop > height or self.crop > width:
            raise NetError(
                f"{self.where}crop_size {self.crop} exceeds record size {height}x{width}"
            )
        if self.mean is not None and self.mean.shape != (channels, height, width):
            raise NetError(
                f"{self.where}mean file shape {self.mean.shape} differs from the records' shape "
                f"{(channels, height, width)}"
            )
        if self.mean_values:
            if len(self.mean_values) not in (1, channels):
                raise NetError(
                    f"{self.where}specify either 1 mean_value or as many as channels: {channels}"
                )
            vals = self.mean_values * (channels if len(self.mean_values) == 1 else 1)
            self._mean_array = np.asarray(vals, self.dtype).reshape(channels, 1, 1)
        elif self.mean is not None:
            self._mean_array = self.mean
        if self.crop:
            return channels, self.crop, self.crop
        return channels, height, width

    @property
    def needs_rand(self) -> bool:
        """Caffe gives the transformer a generator when it mirrors, or crops at random (TRAIN)."""
        return self.mirror or bool(self.crop and self.phase == TRAIN)

    def draw(self, n: int, height: int, width: int, rng: CaffeRNG | None) -> TransformDraw:
        """Mirror flags and crop offsets for n records: per record Rand(2) (when mirroring), then
        Rand(H - crop + 1) and Rand(W - crop + 1) (TRAIN crop), from the transformer's stream."""
        random_crop = bool(self.crop and self.phase == TRAIN)
        per_record = int(self.mirror) + 2 * int(random_crop)
        draws = np.zeros((n, 0), np.int64)
        if per_record:
            if rng is None:
                raise NetError(f"{self.where}the transform draws at random but has no generator")
            modulus = [2] * int(self.mirror)
            if random_crop:
                modulus += [height - self.crop + 1, width - self.crop + 1]
            draws = rng.rand_mod(n * per_record, np.tile(modulus, n)).reshape(n, per_record)
        mirror = draws[:, 0].astype(bool) if self.mirror else np.zeros(n, bool)
        if random_crop:
            h_off, w_off = draws[:, -2], draws[:, -1]
        else:
            h_off = np.full(n, (height - self.crop) // 2 if self.crop else 0)
            w_off = np.full(n, (width - self.crop) // 2 if self.crop else 0)
        return TransformDraw(mirror, h_off, w_off)

    def apply(self, images: np.ndarray, draw: TransformDraw, out: np.ndarray) -> np.ndarray:
        """Write the transform of images (n, C, H, W) into out (n, C, H', W') and return it."""
        n, c, h, w = images.shape
        oh, ow = out.shape[2:]
        mean = self._mean_array
        if not self.crop and not draw.mirror.any():
            if mean is not None:
                np.subtract(images, mean, out=out, dtype=self.dtype)
            elif self.scale != 1:  # one pass: out = float(x) * scale
                return np.multiply(images, self.scale, out=out, dtype=self.dtype)
            else:
                out[...] = images
        else:
            rows = draw.h_off[:, None] + np.arange(oh)  # (n, oh)
            cols = draw.w_off[:, None] + np.arange(ow)  # (n, ow)
            cols = np.where(draw.mirror[:, None], cols[:, ::-1], cols)
            ni = np.arange(n)[:, None, None, None]
            ci = np.arange(c)[None, :, None, None]
            ri, wi = rows[:, None, :, None], cols[:, None, None, :]
            out[...] = images[ni, ci, ri, wi]
            if mean is not None:
                if mean.shape[1:] == (1, 1):
                    out -= mean
                else:
                    out -= mean[ci, ri, wi]
        if self.scale != 1:
            out *= self.scale
        return out
