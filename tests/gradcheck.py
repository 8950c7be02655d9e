"""Finite-difference gradient checking of a Layer in float64, as Caffe's GradientChecker does.

The objective is sum_t <top_t.data, R_t> for fixed random R_t; its analytic gradient comes from
setting top diffs to R_t and calling backward. Every bottom element and param element is perturbed.
Works for a layer of any array module (NumPy or the CuPy stand-in): values cross to the host only
through engine.backend.to_numpy, and elements are read with float() (a CuPy element is a view).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from engine.backend import to_numpy
from engine.blob import Blob
from engine.layer import Layer


def _objective(layer: Layer, bottoms, tops, weights, prepare) -> float:
    if prepare is not None:
        prepare()
    layer.reshape(bottoms, tops)
    layer.forward(bottoms, tops)
    return sum(float(layer.xp.sum(t.data * w)) for t, w in zip(tops, weights, strict=True))


def check_layer_gradient(
    layer: Layer,
    bottoms: Sequence[Blob],
    tops: Sequence[Blob],
    check_bottoms: Sequence[int] | None = None,
    check_params: bool = True,
    step: float = 1e-6,
    rtol: float = 1e-5,
    atol: float = 1e-7,
    prepare: Callable[[], None] | None = None,
    seed: int = 0,
    kink: Callable[[np.ndarray], np.ndarray] | None = None,
) -> None:
    """Assert that layer.backward matches central differences on bottoms (and params).

    `prepare` runs before each forward (e.g. reseed a Dropout mask); `kink(x)` may return a boolean
    mask of bottom elements to skip because they sit at a non-differentiable point (ReLU at 0).
    """
    rng = np.random.default_rng(seed)
    xp = layer.xp
    layer.setup(bottoms, tops)
    if prepare is not None:
        prepare()
    layer.forward(bottoms, tops)
    weights = [xp.asarray(rng.standard_normal(t.shape)) for t in tops]
    check_bottoms = list(range(len(bottoms))) if check_bottoms is None else list(check_bottoms)

    for p in layer.blobs:
        p.diff[...] = 0
    for t, w in zip(tops, weights, strict=True):
        t.diff[...] = w
    propagate = [i in check_bottoms for i in range(len(bottoms))]
    layer.backward(tops, propagate, bottoms)
    analytic_bottom = {i: bottoms[i].diff.copy() for i in check_bottoms}
    analytic_param = [p.diff.copy() for p in layer.blobs] if check_params else []

    targets: list[tuple[str, np.ndarray, np.ndarray, np.ndarray | None]] = []
    for i in check_bottoms:
        skip = kink(to_numpy(bottoms[i].data)) if kink is not None else None
        targets.append((f"bottom {i}", bottoms[i].data, analytic_bottom[i], skip))
    for j, p in enumerate(layer.blobs if check_params else []):
        targets.append((f"param {j}", p.data, analytic_param[j], None))

    for label, array, analytic, skip in targets:
        flat = array.reshape(-1)
        numeric = np.zeros(flat.size)
        for k in range(flat.size):
            orig = float(flat[k])
            flat[k] = orig + step
            plus = _objective(layer, bottoms, tops, weights, prepare)
            flat[k] = orig - step
            minus = _objective(layer, bottoms, tops, weights, prepare)
            flat[k] = orig
            numeric[k] = (plus - minus) / (2 * step)
        got = to_numpy(analytic).reshape(-1)
        if skip is not None:
            keep = ~skip.reshape(-1)
            got, numeric = got[keep], numeric[keep]
        scale = np.maximum(np.abs(numeric), np.abs(got))
        bad = np.abs(got - numeric) > atol + rtol * np.maximum(scale, 1.0)
        if bad.any():
            k = int(np.argmax(bad))
            raise AssertionError(
                f"{layer.type_name} '{layer.name}': {label} gradient mismatch at {bad.sum()} of "
                f"{bad.size} elements; first at flat index {k}: analytic {got[k]!r}, "
                f"numeric {numeric[k]!r}"
            )
