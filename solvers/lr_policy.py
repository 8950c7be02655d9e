"""Caffe's learning-rate policies (SGDSolver::GetLearningRate) plus our loss-driven "loss_bands"."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

f32 = np.float32

POLICIES = ("fixed", "step", "exp", "inv", "multistep", "poly", "sigmoid", "loss_bands")


@dataclass
class LrResult:
    """The rate for one iteration, the (possibly advanced) step counter and an optional log line."""

    rate: np.float32
    current_step: int
    message: str | None = None


def _check(cond: bool, policy: str, what: str) -> None:
    if not cond:
        raise ValueError(f"lr_policy '{policy}': {what}")


def loss_band_rate(thresholds: list[float], rates: list[float], average_loss: float) -> np.float32:
    """The lr of the first band whose threshold the average loss reaches (thresholds descending).

    With thresholds [2.0, 1.2] and rates [a, b, c]: loss >= 2.0 -> a, 1.2 <= loss < 2.0 -> b, else c
    (the AlexNet schedule of the paper's section 5.2).
    """
    loss = f32(average_loss)  # thresholds are proto floats: compare at that precision
    # a scan, not bisect: the bands are a handful, and the order is checked in validate()
    for threshold, rate in zip(thresholds, rates, strict=False):
        if loss >= f32(threshold):
            return f32(rate)
    return f32(rates[-1])


def validate(param: Any) -> None:
    """Reject an unknown policy or missing policy parameters with a message naming the field."""
    policy = param.lr_policy
    if policy not in POLICIES:
        raise ValueError(f"unknown lr_policy '{policy}' (known: {', '.join(POLICIES)})")
    if policy in ("step", "sigmoid"):
        _check(param.stepsize > 0, policy, "stepsize must be > 0")
    if policy in ("step", "exp", "inv", "multistep", "sigmoid"):
        _check(param.gamma >= 0, policy, "gamma must be >= 0")
    if policy == "poly":
        _check(param.max_iter > 0, policy, "max_iter must be > 0")
    if policy == "loss_bands":
        bands = param.loss_bands
        _check(len(bands.lr) >= 1, policy, "loss_bands.lr is empty")
        _check(
            len(bands.lr) == len(bands.threshold) + 1,
            policy,
            f"loss_bands needs one more lr than thresholds (got {len(bands.lr)} lr, "
            f"{len(bands.threshold)} threshold)",
        )
        th = list(bands.threshold)
        _check(
            all(a > b for a, b in zip(th, th[1:], strict=False)),
            policy,
            "loss_bands.threshold must be strictly descending",
        )


def learning_rate(
    param: Any, it: int, current_step: int, average_loss: float | None = None
) -> LrResult:
    """The rate Caffe's GetLearningRate returns at iteration `it` (float32, as Caffe's Dtype).

    `current_step` is the solver's step counter (saved in the .solverstate); "multistep" advances it
    by at most one per call, exactly as Caffe does. "loss_bands" needs the running average loss.
    """
    policy = param.lr_policy
    base_lr = f32(param.base_lr)
    gamma = f32(param.gamma)
    power = f32(param.power)
    message = None
    if policy == "fixed":
        rate = base_lr
    elif policy == "step":
        current_step = it // param.stepsize
        # Caffe: base_lr * pow(gamma, int) evaluated in double, then stored as Dtype.
        rate = f32(float(base_lr) * math.pow(float(gamma), current_step))
    elif policy == "exp":
        rate = f32(float(base_lr) * math.pow(float(gamma), it))
    elif policy == "inv":
        # (Dtype(1) + gamma * iter) is float arithmetic; pow(float, float) stays float.
        inner = f32(f32(1.0) + f32(gamma * f32(it)))
        rate = f32(base_lr * f32(np.power(inner, f32(-power))))
    elif policy == "multistep":
        steps = param.stepvalue
        if current_step < len(steps) and it >= steps[current_step]:
            current_step += 1
            message = f"MultiStep Status: Iteration {it}, step = {current_step}"
        rate = f32(float(base_lr) * math.pow(float(gamma), current_step))
    elif policy == "poly":
        frac = f32(f32(1.0) - f32(f32(it) / f32(param.max_iter)))
        # pow(float, float) is float arithmetic in Caffe.
        rate = f32(base_lr * f32(np.power(frac, power)))
    elif policy == "sigmoid":
        z = f32(-gamma * f32(f32(it) - f32(param.stepsize)))
        rate = f32(base_lr * f32(f32(1.0) / f32(f32(1.0) + f32(np.exp(z)))))
    elif policy == "loss_bands":
        if average_loss is None:
            raise ValueError("lr_policy 'loss_bands' needs the running average loss")
        bands = param.loss_bands
        rate = loss_band_rate(list(bands.threshold), list(bands.lr), average_loss)
    else:
        raise ValueError(f"unknown lr_policy '{policy}' (known: {', '.join(POLICIES)})")
    return LrResult(f32(rate), int(current_step), message)
