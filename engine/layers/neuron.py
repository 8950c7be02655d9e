"""Element-wise neuron layers: ReLU, Sigmoid, TanH, Dropout, Power, AbsVal, BNLL, ELU, Exp, Log,
PReLU.

All work in place (top blob == bottom blob). Layers whose gradient needs the input keep a copy of
it only when run in place; the others differentiate from the top data, as Caffe does.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, ClassVar

from engine.blob import Blob
from engine.boost_random import CaffeRNG
from engine.layer import TRAIN, Layer, register_layer


class NeuronLayer(Layer):
    """One bottom, one top of the same shape; optional saved input for in-place backward."""

    exact_num_bottoms = 1
    exact_num_tops = 1
    backward_uses_bottom: ClassVar[bool] = False  # the gradient is a function of the input x

    def reshape(self, bottoms: Sequence[Blob], tops: Sequence[Blob]) -> None:
        tops[0].reshape(bottoms[0].shape)
        self._save = self.backward_uses_bottom and bottoms[0] is tops[0]
        if self._save:
            saved = getattr(self, "_saved_input", None)
            if saved is None or saved.shape != bottoms[0].shape:
                self._saved_input = self.xp.empty(bottoms[0].shape, self.dtype)

    def save_input(self, bottoms: Sequence[Blob]) -> None:
        """Call at the start of forward: keep x if the top is about to overwrite it."""
        if self._save:
            self._saved_input[...] = bottoms[0].data

    def input_data(self, bottoms: Sequence[Blob]) -> Any:
        """The forward input x, for backward (the saved copy when run in place)."""
        return self._saved_input if self._save else bottoms[0].data


@register_layer("ReLU", v1_name="RELU")
class ReLULayer(NeuronLayer):
    """y = max(x, 0) + negative_slope * min(x, 0); Caffe's gradient is 1 for x > 0, slope else."""

    def layer_setup(self, bottoms: Sequence[Blob], tops: Sequence[Blob]) -> None:
        self.slope = float(self.param.relu_param.negative_slope)
        # In place with a non-negative slope, sign(y) == sign(x): no copy needed (Caffe's way).
        self.backward_uses_bottom = self.slope < 0

    def forward(self, bottoms: Sequence[Blob], tops: Sequence[Blob]) -> None:
        self.save_input(bottoms)
        x, y = bottoms[0].data, tops[0].data
        if self.slope == 0:
            self.xp.maximum(x, 0, out=y)
        else:
            neg = self.xp.minimum(x, 0)
            self.xp.maximum(x, 0, out=y)
            neg *= self.slope
            y += neg

    def backward(
        self, tops: Sequence[Blob], propagate_down: Sequence[bool], bottoms: Sequence[Blob]
    ) -> None:
        if not propagate_down[0]:
            return
        x, dy, dx = self.input_data(bottoms), tops[0].diff, bottoms[0].diff
        positive = x > 0
        if self.slope == 0:
            self.xp.multiply(dy, positive, out=dx)
        else:
            gain = self.xp.where(positive, self.dtype.type(1), self.dtype.type(self.slope))
            self.xp.multiply(dy, gain, out=dx)


@register_layer("Sigmoid", v1_name="SIGMOID")
class SigmoidLayer(NeuronLayer):
    """y = 1 / (1 + exp(-x)), computed as 0.5 tanh(x / 2) + 0.5; dx = dy y (1 - y)."""

    def forward(self, bottoms: Sequence[Blob], tops: Sequence[Blob]) -> None:
        y = tops[0].data
        self.xp.multiply(bottoms[0].data, 0.5, out=y)
        self.xp.tanh(y, out=y)
        y *= 0.5
        y += 0.5

    def backward(
        self, tops: Sequence[Blob], propagate_down: Sequence[bool], bottoms: Sequence[Blob]
    ) -> None:
        if propagate_down[0]:
            y = tops[0].data
            dx = bottoms[0].diff
            self.xp.multiply(tops[0].diff, y * (1 - y), out=dx)


@register_layer("TanH", v1_name="TANH")
class TanHLayer(NeuronLayer):
    """y = tanh(x); dx = dy (1 - y^2)."""

    def forward(self, bottoms: Sequence[Blob], tops: Sequence[Blob]) -> None:
        self.xp.tanh(bottoms[0].data, out=tops[0].data)

    def backward(
        self, tops: Sequence[Blob], propagate_down: Sequence[bool], bottoms: Sequence[Blob]
    ) -> None:
        if propagate_down[0]:
            y = tops[0].data
            self.xp.multiply(tops[0].diff, 1 - y * y, out=bottoms[0].diff)


@register_layer("Dropout", v1_name="DROPOUT")
class DropoutLayer(NeuronLayer):
    """TRAIN: y = x * mask / (1 - ratio), mask ~ Bernoulli(1 - ratio); TEST: y = x (Caffe's
    inverted dropout: the scale is applied in training)."""

    device_noise = True
    draws_in_forward = True

    def layer_setup(self, bottoms: Sequence[Blob], tops: Sequence[Blob]) -> None:
        p = self.param.dropout_param
        self.rank, self.world_size = 0, 1  # Net.set_rank: this rank's slice of the global batch
        self.ratio = float(p.dropout_ratio)
        if not 0.0 <= self.ratio < 1.0:
            raise self.error(f"dropout_ratio must be in [0, 1), got {self.ratio}")
        self.train_scale = 1.0 / (1.0 - self.ratio)
        self.mask: Any = None  # keep/drop mask times train_scale, for backward

    def forward(self, bottoms: Sequence[Blob], tops: Sequence[Blob]) -> None:
        x, y = bottoms[0].data, tops[0].data
        if self.phase == TRAIN:
            if self.mask is None or self.mask.shape != x.shape:
                self.mask = self.xp.empty(x.shape, self.dtype)
            if isinstance(self.xp_rng, CaffeRNG):
                # Caffe's CPU mask: Bernoulli(1 - ratio) per element of the global batch, row-major,
                # from Caffe's stream; this rank keeps its slice.
                n = x.size
                keep = self.xp_rng.bernoulli(n * self.world_size, 1.0 - self.ratio)
                keep = keep[self.rank * n : (self.rank + 1) * n].reshape(x.shape)
                self.xp.multiply(keep, self.train_scale, out=self.mask, dtype=self.dtype)
            else:  # a device stream (Caffe's GPU mode draws its masks with cuRAND too)
                u = self.xp_rng.random(x.shape, dtype=self.dtype)
                self.xp.less(u, 1.0 - self.ratio, out=u)  # u becomes the 0/1 keep mask
                self.xp.multiply(u, self.train_scale, out=self.mask)
            self.xp.multiply(x, self.mask, out=y)
        elif y is not x:
            y[...] = x

    def backward(
        self, tops: Sequence[Blob], propagate_down: Sequence[bool], bottoms: Sequence[Blob]
    ) -> None:
        if not propagate_down[0]:
            return
        dy, dx = tops[0].diff, bottoms[0].diff
        if self.phase == TRAIN:
            self.xp.multiply(dy, self.mask, out=dx)
        elif dx is not dy:
            dx[...] = dy


@register_layer("Power", v1_name="POWER")
class PowerLayer(NeuronLayer):
    """y = (shift + scale x) ^ power; dx = dy power scale (shift + scale x) ^ (power - 1)."""

    backward_uses_bottom = True

    def layer_setup(self, bottoms: Sequence[Blob], tops: Sequence[Blob]) -> None:
        p = self.param.power_param
        self.power, self.scale, self.shift = float(p.power), float(p.scale), float(p.shift)
        self.diff_scale = self.power * self.scale

    def forward(self, bottoms: Sequence[Blob], tops: Sequence[Blob]) -> None:
        self.save_input(bottoms)
        y = tops[0].data
        if self.diff_scale == 0:
            y.fill(1.0 if self.power == 0 else self.shift**self.power)
            return
        self.xp.multiply(bottoms[0].data, self.scale, out=y)
        y += self.shift
        if self.power != 1:
            self.xp.power(y, self.power, out=y)

    def backward(
        self, tops: Sequence[Blob], propagate_down: Sequence[bool], bottoms: Sequence[Blob]
    ) -> None:
        if not propagate_down[0]:
            return
        dy, dx = tops[0].diff, bottoms[0].diff
        if self.diff_scale == 0 or self.power == 1:
            self.xp.multiply(dy, self.diff_scale, out=dx)
            return
        base = self.input_data(bottoms) * self.scale + self.shift
        if self.power != 2:
            self.xp.power(base, self.power - 1, out=base)
        base *= self.diff_scale
        self.xp.multiply(dy, base, out=dx)


@register_layer("AbsVal", v1_name="ABSVAL")
class AbsValLayer(NeuronLayer):
    """y = |x|; dx = sign(x) dy."""

    backward_uses_bottom = True

    def forward(self, bottoms: Sequence[Blob], tops: Sequence[Blob]) -> None:
        self.save_input(bottoms)
        self.xp.abs(bottoms[0].data, out=tops[0].data)

    def backward(
        self, tops: Sequence[Blob], propagate_down: Sequence[bool], bottoms: Sequence[Blob]
    ) -> None:
        if propagate_down[0]:
            sign = self.xp.sign(self.input_data(bottoms))
            self.xp.multiply(tops[0].diff, sign, out=bottoms[0].diff)


@register_layer("BNLL", v1_name="BNLL")
class BNLLLayer(NeuronLayer):
    """y = log(1 + exp(x)) (binomial normal log likelihood); dx = dy sigmoid(x)."""

    backward_uses_bottom = True

    def forward(self, bottoms: Sequence[Blob], tops: Sequence[Blob]) -> None:
        self.save_input(bottoms)
        self.xp.logaddexp(0, bottoms[0].data, out=tops[0].data)

    def backward(
        self, tops: Sequence[Blob], propagate_down: Sequence[bool], bottoms: Sequence[Blob]
    ) -> None:
        if propagate_down[0]:
            s = self.xp.tanh(self.input_data(bottoms) * 0.5)
            s *= 0.5
            s += 0.5
            self.xp.multiply(tops[0].diff, s, out=bottoms[0].diff)


@register_layer("ELU")
class ELULayer(NeuronLayer):
    """y = x for x > 0, alpha (exp(x) - 1) else; dx = dy for x > 0, dy (y + alpha) else."""

    backward_uses_bottom = True

    def layer_setup(self, bottoms: Sequence[Blob], tops: Sequence[Blob]) -> None:
        self.alpha = float(self.param.elu_param.alpha)

    def forward(self, bottoms: Sequence[Blob], tops: Sequence[Blob]) -> None:
        self.save_input(bottoms)
        x = bottoms[0].data
        neg = self.xp.expm1(self.xp.minimum(x, 0))
        neg *= self.alpha
        self.xp.maximum(x, 0, out=tops[0].data)
        tops[0].data += neg

    def backward(
        self, tops: Sequence[Blob], propagate_down: Sequence[bool], bottoms: Sequence[Blob]
    ) -> None:
        if propagate_down[0]:
            x, y = self.input_data(bottoms), tops[0].data
            gain = self.xp.where(x > 0, self.dtype.type(1), y + self.alpha)
            self.xp.multiply(tops[0].diff, gain, out=bottoms[0].diff)


def _log_base(base: float, layer: Layer) -> float:
    """ln(base), with Caffe's base = -1 meaning e."""
    if base == -1:
        return 1.0
    if base <= 0:
        raise layer.error(f"base must be > 0 (or -1 for e), got {base}")
    return math.log(base)


@register_layer("Exp", v1_name="EXP")
class ExpLayer(NeuronLayer):
    """y = base ^ (shift + scale x) (base -1 = e); dx = dy y ln(base) scale."""

    def layer_setup(self, bottoms: Sequence[Blob], tops: Sequence[Blob]) -> None:
        p = self.param.exp_param
        ln_base = _log_base(float(p.base), self)
        self.inner_scale = ln_base * float(p.scale)
        self.inner_shift = ln_base * float(p.shift)

    def forward(self, bottoms: Sequence[Blob], tops: Sequence[Blob]) -> None:
        y = tops[0].data
        self.xp.multiply(bottoms[0].data, self.inner_scale, out=y)
        y += self.inner_shift
        self.xp.exp(y, out=y)

    def backward(
        self, tops: Sequence[Blob], propagate_down: Sequence[bool], bottoms: Sequence[Blob]
    ) -> None:
        if propagate_down[0]:
            dx = bottoms[0].diff
            self.xp.multiply(tops[0].diff, tops[0].data, out=dx)
            dx *= self.inner_scale


@register_layer("Log")
class LogLayer(NeuronLayer):
    """y = log_base(shift + scale x) (base -1 = e); dx = dy scale / ((shift + scale x) ln base)."""

    backward_uses_bottom = True

    def layer_setup(self, bottoms: Sequence[Blob], tops: Sequence[Blob]) -> None:
        p = self.param.log_param
        self.ln_base = _log_base(float(p.base), self)
        self.scale, self.shift = float(p.scale), float(p.shift)

    def forward(self, bottoms: Sequence[Blob], tops: Sequence[Blob]) -> None:
        self.save_input(bottoms)
        y = tops[0].data
        self.xp.multiply(bottoms[0].data, self.scale, out=y)
        y += self.shift
        self.xp.log(y, out=y)
        y /= self.ln_base

    def backward(
        self, tops: Sequence[Blob], propagate_down: Sequence[bool], bottoms: Sequence[Blob]
    ) -> None:
        if propagate_down[0]:
            denom = self.input_data(bottoms) * (self.scale * self.ln_base)
            denom += self.shift * self.ln_base
            dx = bottoms[0].diff
            self.xp.multiply(tops[0].diff, self.scale, out=dx)
            dx /= denom


@register_layer("PReLU")
class PReLULayer(NeuronLayer):
    """y = max(x, 0) + a_c min(x, 0) with a learned slope per channel (axis 1) or one shared."""

    backward_uses_bottom = True

    def layer_setup(self, bottoms: Sequence[Blob], tops: Sequence[Blob]) -> None:
        p = self.param.prelu_param
        if bottoms[0].num_axes < 2:
            raise self.error(f"needs a bottom with >= 2 axes, got shape {bottoms[0].shape}")
        self.channel_shared = bool(p.channel_shared)
        channels = bottoms[0].shape[1]
        filler = p.filler if p.HasField("filler") else None
        if filler is None:
            filler = type(p.filler)(type="constant", value=0.25)
        shape = () if self.channel_shared else (channels,)
        if self.blobs:
            return
        try:
            self.new_param_blob(shape, filler)
        except ValueError as exc:
            raise self.error(str(exc)) from None

    def _slope(self, x: Any) -> Any:
        a = self.blobs[0].data
        return a if self.channel_shared else a.reshape((-1,) + (1,) * (x.ndim - 2))

    def reshape(self, bottoms: Sequence[Blob], tops: Sequence[Blob]) -> None:
        super().reshape(bottoms, tops)
        if not self.channel_shared and bottoms[0].shape[1] != self.blobs[0].count:
            raise self.error(
                f"bottom has {bottoms[0].shape[1]} channels but the slope has {self.blobs[0].count}"
            )

    def forward(self, bottoms: Sequence[Blob], tops: Sequence[Blob]) -> None:
        self.save_input(bottoms)
        x = bottoms[0].data
        neg = self.xp.minimum(x, 0)
        neg *= self._slope(x)
        self.xp.maximum(x, 0, out=tops[0].data)
        tops[0].data += neg

    def backward(
        self, tops: Sequence[Blob], propagate_down: Sequence[bool], bottoms: Sequence[Blob]
    ) -> None:
        x, dy = self.input_data(bottoms), tops[0].diff
        nonpos = x <= 0
        contrib = dy * x  # slope gradient, accumulated as Caffe does
        contrib *= nonpos
        if self.channel_shared:
            self.blobs[0].diff += contrib.sum()
        else:
            self.blobs[0].diff += contrib.sum(axis=(0,) + tuple(range(2, x.ndim)))
        if propagate_down[0]:
            gain = self.xp.where(nonpos, self._slope(x), self.dtype.type(1))
            self.xp.multiply(dy, gain, out=bottoms[0].diff)
