"""Caffe's Convolution layer (2-D, groups, dilation): BaseConvolutionLayer's setup and three
passes, run the way a per-shape ConvPlan (engine.layers.conv_plan) says.

As conv_layer.cpp: Reshape plans each bottom shape once (plan_convolution), Forward runs
forward_cpu_gemm (+ bias) over the batch, Backward the weight and bias gradients (accumulated)
then the data gradient (overwritten), each pass as the plan says (engine.layers.conv_passes, or
engine.layers.conv_rows for all three). Blobs are NCHW at the interface; each bottom's buffers
live in a ConvWorkspace (engine.layers.conv_workspace).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from engine.blob import Blob
from engine.im2col import conv_out_size
from engine.jit import AVAILABLE as JIT_AVAILABLE
from engine.layer import Layer, register_layer
from engine.layers import conv_passes as passes
from engine.layers.conv_plan import ConvPlan, Force, plan_convolution
from engine.layers.conv_rows import rows_backward, rows_buffer_shape, rows_forward, rows_warm_up
from engine.layers.conv_workspace import ConvWorkspace
from engine.threads import EngineThreads


# --- geometry (shared with Deconvolution) -------------------------------------------------------
def _pair(
    values: Sequence[int],
    h: int | None,
    w: int | None,
    default: int,
    what: str,
    err: Any,
    missing: int | None = None,
) -> tuple[int, int]:
    """Caffe's rule for 2-D geometry: x_h/x_w, else one repeated value for both, else two.

    With x_h/x_w, an absent one takes `missing` (pad: 0); if None both are required, since
    Caffe would read 0 and reject it.
    """
    if h is not None or w is not None:
        if len(values):
            raise err(f"{what}: give either {what}_size/{what} or {what}_h and {what}_w, not both")
        if (h is None or w is None) and missing is None:
            raise err(f"{what}_h and {what}_w must both be given")
        return int(missing if h is None else h), int(missing if w is None else w)
    if len(values) == 0:
        return default, default
    if len(values) == 1:
        return int(values[0]), int(values[0])
    if len(values) == 2:
        return int(values[0]), int(values[1])
    raise err(f"{what} has {len(values)} values; only 2-D convolution is supported")


def _opt(p: Any, field_name: str) -> int | None:
    return int(getattr(p, field_name)) if p.HasField(field_name) else None


def read_geometry(layer: Layer, p: Any, bottom: Blob, kind: str) -> None:
    """Caffe's BaseConvolutionLayer setup, shared by Convolution and Deconvolution: sets kh, kw,
    ph, pw, sh, sw, dh, dw, num_output, group and channels on `layer`, checking each."""
    err = layer.error
    if p.axis not in (1, -3):
        raise err(f"axis {p.axis} is not supported (only the channel axis 1)")
    if len(bottom.shape) != 4:
        raise err(f"bottom shape {bottom.shape}: only 2-D (N, C, H, W) {kind} is supported")
    kh, kw = _opt(p, "kernel_h"), _opt(p, "kernel_w")
    layer.kh, layer.kw = _pair(p.kernel_size, kh, kw, 0, "kernel", err)
    if layer.kh <= 0 or layer.kw <= 0:
        raise err("kernel_size (or kernel_h and kernel_w) must be given and positive")
    layer.ph, layer.pw = _pair(p.pad, _opt(p, "pad_h"), _opt(p, "pad_w"), 0, "pad", err, missing=0)
    layer.sh, layer.sw = _pair(p.stride, _opt(p, "stride_h"), _opt(p, "stride_w"), 1, "stride", err)
    if layer.sh <= 0 or layer.sw <= 0:
        raise err("stride must be positive")
    layer.dh, layer.dw = _pair(p.dilation, None, None, 1, "dilation", err)
    if layer.dh <= 0 or layer.dw <= 0:
        raise err("dilation must be positive")
    layer.num_output = int(p.num_output)
    if layer.num_output <= 0:
        raise err("num_output must be given and positive")
    layer.group = int(p.group)
    layer.channels = bottom.shape[1]
    if layer.group <= 0 or layer.channels % layer.group:
        raise err(f"channels ({layer.channels}) must be divisible by group ({layer.group})")
    if layer.num_output % layer.group:
        raise err(f"num_output ({layer.num_output}) must be divisible by group ({layer.group})")


def image_extents(
    layer: Layer, k: int, shape: tuple[int, ...], out_size: Callable[..., int]
) -> tuple[int, int, int, int, int]:
    """(n, h, w, oh, ow) of bottom k for Convolution or Deconvolution (`out_size` is the
    layer's extent rule); refuses a bottom that is not (N, channels, H, W)."""
    if len(shape) != 4 or shape[1] != layer.channels:
        raise layer.error(
            f"bottom {k} shape {shape} does not match the layer's input (N, {layer.channels}, H, W)"
        )
    n, _, h, w = shape
    oh = out_size(h, layer.kh, layer.ph, layer.sh, layer.dh)
    ow = out_size(w, layer.kw, layer.pw, layer.sw, layer.dw)
    return n, h, w, oh, ow


@register_layer("Convolution", v1_name="CONVOLUTION")
class ConvolutionLayer(Layer):
    """y = W * x + b over 2-D images, weights (num_output, channels/group, kh, kw)."""

    min_bottoms = 1
    min_tops = 1
    _force: Force | None = None  # see force_plans

    def layer_setup(self, bottoms: Sequence[Blob], tops: Sequence[Blob]) -> None:
        p = self.param.convolution_param
        if len(bottoms) != len(tops):
            raise self.error(f"needs as many tops as bottoms, got {len(bottoms)} and {len(tops)}")
        read_geometry(self, p, bottoms[0], "convolution")
        if p.force_nd_im2col:
            raise self.error("force_nd_im2col: N-d convolution is not supported")
        self.bias_term = bool(p.bias_term)
        wshape = (self.num_output, self.channels // self.group, self.kh, self.kw)
        self.weight = self.new_param_blob(wshape, p.weight_filler)
        self.bias = None
        if self.bias_term:
            self.bias = self.new_param_blob((self.num_output,), p.bias_filler)
        self._threads = EngineThreads(self.xp, self.name)
        self._ws: list[ConvWorkspace | None] = [None for _ in bottoms]

    # --- shapes, plans, buffers --------------------------------------------------------------
    def reshape(self, bottoms: Sequence[Blob], tops: Sequence[Blob]) -> None:
        for k, (bottom, top) in enumerate(zip(bottoms, tops, strict=True)):
            n, h, w, oh, ow = image_extents(self, k, bottom.shape, conv_out_size)
            if oh <= 0 or ow <= 0:
                raise self.error(f"kernel larger than the padded input {h}x{w}")
            top.reshape((n, self.num_output, oh, ow))
            ws = self._ws[k]
            if ws is None or (ws.plan.n, ws.plan.h, ws.plan.w) != (n, h, w):
                self.use_plan(k, plan_convolution(self, n, h, w, oh, ow, self._force))

    def force_plans(self, force: Force | None) -> None:
        """Plan every shape from now on as `force` says (tests, benchmarks; None: the cost
        model again); takes effect at the next setup or reshape."""
        self._force = force
        if hasattr(self, "_ws"):
            self._ws = [None for _ in self._ws]

    def plan(self, k: int = 0) -> ConvPlan:
        """The plan in use for bottom k (after setup/reshape)."""
        ws = self._ws[k]
        if ws is None:
            raise self.error("no plan before reshape")
        return ws.plan

    def use_plan(self, k: int, plan: ConvPlan) -> None:
        """Run bottom k with `plan` (checked), dropping the buffers of the previous one."""
        if plan.oh % plan.tile[0] or plan.ow % plan.tile[1]:
            raise self.error(f"tile {plan.tile} does not divide the output {plan.oh}x{plan.ow}")
        if plan.dgrad == "full":
            if plan.h % plan.dgrad_tile[0] or plan.w % plan.dgrad_tile[1]:
                raise self.error(f"data-gradient tile {plan.dgrad_tile} does not divide the input")
            if self.sh != 1 or self.sw != 1 or min(passes.full_pad(self)) < 0:
                raise self.error("the full data gradient needs stride 1 and pad <= d(k-1)")
        elif plan.dgrad != "col2im":
            raise self.error(f"unknown data-gradient algorithm {plan.dgrad!r}")
        if plan.layout not in ("CNHW", "CHWN", "NHWC"):
            raise self.error(f"unknown layout {plan.layout!r}")
        if (
            plan.channels_last
            and not plan.fold_rows
            and (plan.tile, plan.dgrad) != ((1, 1), "full")
        ):
            raise self.error("the channels-last layout runs untiled, with the full data gradient")
        if plan.wgrad == "per_sample" and (plan.layout, plan.tile, self.group) != (
            "CNHW",
            (1, 1),
            1,
        ):
            raise self.error("the per-sample weight gradient needs layout CNHW, no tile, group 1")
        if plan.fold_rows and (plan.layout, plan.tile) != ("NHWC", (1, 1)):
            raise self.error("the row-folded passes run channels last, untiled")
        if plan.jit and not (plan.fold_rows and self.xp is np and JIT_AVAILABLE):
            raise self.error("compiled data movement needs the row-folded passes, NumPy and Numba")
        ws = ConvWorkspace(plan, self.xp, self.dtype, self._threads)
        hp, wp = plan.h + 2 * self.ph, plan.w + 2 * self.pw
        if plan.fold_rows:
            ws.xpad = self.xp.zeros(rows_buffer_shape(self, plan), self.dtype)
            rows_warm_up(plan, self.dtype)
        elif self.ph or self.pw or plan.layout != "CNHW":  # copy: gather the batch / channels
            ws.xpad = self.xp.zeros(plan.internal_shape(self.channels, hp, wp), self.dtype)
        self._ws[k] = ws

    def forward(self, bottoms: Sequence[Blob], tops: Sequence[Blob]) -> None:
        """Caffe's forward_cpu_gemm (+ bias) over the whole batch."""
        g, o = self.group, self.num_output
        w5 = self.weight.data.reshape(g, o // g, self.channels // g, self.kh, self.kw)
        bias = None if self.bias is None else self.bias.data
        for k, (bottom, top) in enumerate(zip(bottoms, tops, strict=True)):
            ws = self._ws[k]
            plan = ws.plan
            if plan.fold_rows:
                rows_forward(self, ws, bottom, top)
                continue
            src = passes.layer_input(self, ws, bottom.data)
            geom = (self.kh, self.kw, self.sh, self.sw, self.dh, self.dw)
            ws.kept_ready = False
            if plan.channels_last:
                wt = ws.array("wt", (g, self.kh, self.kw, self.channels // g, o // g))
                wt[...] = w5.transpose(0, 3, 4, 2, 1)
                wt3 = wt.reshape(g, -1, o // g)
                passes.patch_pass(self, ws, "f", src, wt3, geom, top.data, bias, plan.keep_columns)
            else:
                passes.conv_pass(
                    self, ws, "f", src, w5, geom, plan.tile, top.data, bias, plan.keep_columns
                )

    def backward(
        self, tops: Sequence[Blob], propagate_down: Sequence[bool], bottoms: Sequence[Blob]
    ) -> None:
        """Weight and bias gradients (accumulated), then the data gradient (overwritten)."""
        for k, (bottom, top) in enumerate(zip(bottoms, tops, strict=True)):
            ws = self._ws[k]
            if ws.plan.fold_rows:
                rows_backward(self, ws, top, bottom, bool(propagate_down[k]))
                continue
            if ws.plan.channels_last:
                # With a data gradient the top diff is gathered once, into the padded
                # channels-last buffer, and the weight gradient copies its chunks from there
                # (the NCHW -> NHWC gather is the slow copy: 9 ms for AlexNet's conv2 top).
                dypad = passes.padded_top_diff(self, ws, top) if propagate_down[k] else None
                passes.patch_weight_gradient(self, ws, top, dypad)
                if dypad is not None:
                    passes.patch_data_gradient(self, ws, dypad, bottom)
                continue
            if ws.plan.wgrad == "per_sample" and not propagate_down[k]:
                passes.weight_gradient_per_sample(self, ws, top, bottom)
                continue
            # col2im reads the top diff in internal layout: an untiled weight gradient leaves
            # its chunks there instead of in scratch (one gather of the top diff, not two).
            share = bool(propagate_down[k]) and ws.plan.dgrad == "col2im" and ws.plan.tile == (1, 1)
            passes.weight_gradient(self, ws, top, bottom, share)
            if not propagate_down[k]:
                continue
            if ws.plan.dgrad == "full":
                passes.data_gradient_full(self, ws, top, bottom)
            else:
                passes.data_gradient_col2im(self, ws, top, bottom, gathered=share)
