"""Input and DummyData: source layers whose tops are set by the user or by fillers."""

from __future__ import annotations

from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any

from engine.blob import Blob
from engine.fillers import fill
from engine.layer import Layer, register_layer


def _dims(blob_shape: Any) -> tuple[int, ...]:
    return tuple(int(d) for d in blob_shape.dim)


@register_layer("Input")
class InputLayer(Layer):
    """Tops shaped by input_param.shape (one per top, or one shared); the user writes the data."""

    exact_num_bottoms = 0
    min_tops = 1

    def layer_setup(self, bottoms: Sequence[Blob], tops: Sequence[Blob]) -> None:
        shapes = list(self.param.input_param.shape)
        if len(shapes) not in (0, 1, len(tops)):
            raise self.error(
                f"input_param must give 0, 1 or {len(tops)} (one per top) shapes, got {len(shapes)}"
            )
        for i, top in enumerate(tops):
            if shapes:
                top.reshape(_dims(shapes[0 if len(shapes) == 1 else i]))

    def reshape(self, bottoms: Sequence[Blob], tops: Sequence[Blob]) -> None:
        """Tops keep whatever shape the user gave them (Caffe's Input reshapes only at setup)."""

    def forward(self, bottoms: Sequence[Blob], tops: Sequence[Blob]) -> None:
        """Nothing to compute: the user writes the tops' data."""


@register_layer("DummyData", v1_name="DUMMY_DATA")
class DummyDataLayer(Layer):
    """Tops filled by data_filler (constant 0 by default); random fillers refill every forward."""

    draws_in_forward = True  # refills its tops from the fillers each forward

    exact_num_bottoms = 0
    min_tops = 1

    def layer_setup(self, bottoms: Sequence[Blob], tops: Sequence[Blob]) -> None:
        p = self.param.dummy_data_param
        n_top = len(tops)
        fillers = list(p.data_filler)
        if len(fillers) not in (0, 1, n_top):
            raise self.error(
                f"dummy_data_param needs 0, 1 or {n_top} data_filler entries, got {len(fillers)}"
            )
        if not fillers:
            fillers = [SimpleNamespace(type="constant", value=0.0, sparse=-1)]
        self._fillers = [fillers[0 if len(fillers) == 1 else i] for i in range(n_top)]
        self._refill = [f.type != "constant" for f in self._fillers]
        self.draws_in_forward = any(self._refill)

        legacy = [list(p.num), list(p.channels), list(p.height), list(p.width)]
        if any(legacy):
            if len(p.shape):
                raise self.error("give either shape or num/channels/height/width, not both")
            for field, vals in zip(("num", "channels", "height", "width"), legacy, strict=True):
                if len(vals) not in (1, n_top):
                    raise self.error(f"dummy_data_param.{field} needs 1 or {n_top} values")
            shapes = [tuple(int(v[0 if len(v) == 1 else i]) for v in legacy) for i in range(n_top)]
        else:
            if len(p.shape) not in (1, n_top):
                raise self.error(
                    f"dummy_data_param needs 1 or {n_top} shape entries, got {len(p.shape)}"
                )
            shapes = [_dims(p.shape[0 if len(p.shape) == 1 else i]) for i in range(n_top)]

        for i, top in enumerate(tops):
            top.reshape(shapes[i])
            if not self._refill[i]:  # Caffe fills constant tops once here; the others in forward
                self._fill_top(i, top)

    def _fill_top(self, i: int, top: Blob) -> None:
        if top.count == 0:
            return
        try:
            values = fill(self._fillers[i], top.shape, self.stream, self.dtype)
        except ValueError as exc:
            raise self.error(f"top {i}: {exc}") from None
        top.data[...] = self.xp.asarray(values)

    def reshape(self, bottoms: Sequence[Blob], tops: Sequence[Blob]) -> None:
        """Shapes are fixed at setup."""

    def forward(self, bottoms: Sequence[Blob], tops: Sequence[Blob]) -> None:
        for i, top in enumerate(tops):
            if self._refill[i]:
                self._fill_top(i, top)
