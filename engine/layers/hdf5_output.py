"""HDF5Output layer: writes its two bottoms to datasets "data" and "label" of file_name.

As Caffe: the file is created (truncated) at setup and each blob is stored 4-D (num, channels,
height, width). Caffe fails on the second forward because the datasets already exist; here each
forward appends its rows instead (resizable datasets), so a whole test pass can be dumped.
"""

from __future__ import annotations

from collections.abc import Sequence

from engine.backend import to_numpy
from engine.blob import Blob
from engine.errors import EngineError
from engine.hdf5_io import open_h5
from engine.layer import Layer, register_layer

_DATASETS = ("data", "label")  # Caffe's HDF5_DATA_DATASET_NAME, HDF5_DATA_LABEL_NAME


@register_layer("HDF5Output", v1_name="HDF5_OUTPUT")
class HDF5OutputLayer(Layer):
    """Caffe's HDF5Output: no tops, no backward; saves (data, label) rows to an .h5 file."""

    exact_num_bottoms = 2
    exact_num_tops = 0

    def layer_setup(self, bottoms: Sequence[Blob], tops: Sequence[Blob]) -> None:
        self.file_name = self.param.hdf5_output_param.file_name
        if not self.file_name:
            raise self.error("hdf5_output_param.file_name is not set")
        try:
            with open_h5(self.file_name, "w"):
                pass
        except EngineError as exc:
            raise self.error(str(exc)) from None

    def reshape(self, bottoms: Sequence[Blob], tops: Sequence[Blob]) -> None:
        if bottoms[0].shape[:1] != bottoms[1].shape[:1]:
            raise self.error(
                f"data and label must have the same batch size, got {bottoms[0].shape} and "
                f"{bottoms[1].shape}"
            )
        for blob in bottoms:
            if len(blob.shape) > 4:
                raise self.error(f"bottom of shape {blob.shape} has more than 4 axes")

    def forward(self, bottoms: Sequence[Blob], tops: Sequence[Blob]) -> None:
        with open_h5(self.file_name, "a") as f:
            for key, blob in zip(_DATASETS, bottoms, strict=True):
                rows = to_numpy(blob.data)
                rows = rows.reshape(rows.shape + (1,) * (4 - rows.ndim))  # legacy 4-D, as Caffe
                if key not in f:
                    f.create_dataset(key, data=rows, maxshape=(None, *rows.shape[1:]))
                    continue
                dataset = f[key]
                if dataset.shape[1:] != rows.shape[1:]:
                    raise self.error(
                        f"{self.file_name}: '{key}' rows of shape {rows.shape[1:]} differ from "
                        f"the {dataset.shape[1:]} written before"
                    )
                start = dataset.shape[0]
                dataset.resize(start + rows.shape[0], axis=0)
                dataset[start:] = rows

    def backward(
        self, tops: Sequence[Blob], propagate_down: Sequence[bool], bottoms: Sequence[Blob]
    ) -> None:
        """Caffe's HDF5Output computes no gradient."""
