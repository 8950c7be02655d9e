"""im2col / col2im over channel-major images, one strided copy per kernel offset, and the
patch-major (channels-last) column view.

An image buffer is channel-first with the batch axis either second, (C, N, H, W), or last,
(C, H, W, N); `spatial` names the two spatial axes (2, 3) or (1, 2). The column buffer is
(C, kh, kw, *rest), rest being the image's non-channel axes at output size, so it is a
(C*kh*kw, N*OH*OW) matrix: the whole batch is one wide GEMM. Batch-last gives long contiguous
runs (N floats) for small feature maps, where it copied 2-4x faster in measurements.
Loops run over the kh*kw kernel offsets only, never over samples or pixels.
"""

from __future__ import annotations

from typing import Any

from engine.backend import as_strided

NCHW_TO_CNHW, CNHW_TO_NCHW = (1, 0, 2, 3), (1, 0, 2, 3)
NCHW_TO_CHWN, CHWN_TO_NCHW = (1, 2, 3, 0), (3, 0, 1, 2)
NCHW_TO_NHWC = (0, 2, 3, 1)


def conv_out_size(size: int, kernel: int, pad: int, stride: int, dilation: int) -> int:
    """Caffe's convolution output extent: floor((size + 2p - (d(k-1)+1)) / s) + 1."""
    return (size + 2 * pad - (dilation * (kernel - 1) + 1)) // stride + 1


def window(
    img: Any,
    i: int,
    j: int,
    geom: tuple[int, ...],
    out_hw: tuple[int, int],
    spatial: tuple[int, int],
) -> Any:
    """The strided view of `img` read by kernel offset (i, j) for every output position.

    geom is (kh, kw, stride_h, stride_w, dilation_h, dilation_w).
    """
    _, _, sh, sw, dh, dw = geom
    oh, ow = out_hw
    index: list[slice] = [slice(None)] * img.ndim
    index[spatial[0]] = slice(i * dh, i * dh + sh * (oh - 1) + 1, sh)
    index[spatial[1]] = slice(j * dw, j * dw + sw * (ow - 1) + 1, sw)
    return img[tuple(index)]


def columns_view(
    xp: Any, img: Any, geom: tuple[int, ...], out_hw: tuple[int, int], spatial: tuple[int, int]
) -> Any:
    """The whole column matrix as one read-only strided view of `img`, (C, kh, kw, *rest).

    Copying a slice of it fills a column chunk in one call instead of one per kernel offset.
    """
    _, _, sh, sw, dh, dw = geom
    shape = list(img.shape)
    strides = list(img.strides)
    a, b = spatial
    shape[a], shape[b] = out_hw
    strides[a], strides[b] = img.strides[a] * sh, img.strides[b] * sw
    kshape = (geom[0], geom[1])
    kstrides = (img.strides[a] * dh, img.strides[b] * dw)
    return as_strided(
        xp, img, (shape[0], *kshape, *shape[1:]), (strides[0], *kstrides, *strides[1:])
    )


def im2col(
    img: Any, col: Any, geom: tuple[int, ...], out_hw: tuple[int, int], spatial: tuple[int, int]
) -> None:
    """Copy the padded image into col (C, kh, kw, *rest)."""
    for i in range(geom[0]):
        for j in range(geom[1]):
            col[:, i, j] = window(img, i, j, geom, out_hw, spatial)


def col2im(
    col: Any, img: Any, geom: tuple[int, ...], out_hw: tuple[int, int], spatial: tuple[int, int]
) -> None:
    """Sum col (C, kh, kw, *rest) back into the padded image, overwriting it."""
    img.fill(0)
    for i in range(geom[0]):
        for j in range(geom[1]):
            view = window(img, i, j, geom, out_hw, spatial)
            view += col[:, i, j]


def patches_view(
    xp: Any, img: Any, geom: tuple[int, ...], out_hw: tuple[int, int], group: int = 1
) -> Any:
    """All patches of a channels-last image (N, H, W, C) as one read-only strided view
    (N, OH, OW, group, kh, kw, C/group): row (n, y, x) of the patch-major column matrix.

    Each (kh, kw) row of a patch reads kw*C/group neighbouring floats, so copying a slice
    of it runs long contiguous stretches when C is not tiny.
    """
    kh, kw, sh, sw, dh, dw = geom
    oh, ow = out_hw
    n, _, _, c = img.shape
    s_n, s_h, s_w, s_c = img.strides
    shape = (n, oh, ow, group, kh, kw, c // group)
    strides = (s_n, s_h * sh, s_w * sw, s_c * (c // group), s_h * dh, s_w * dw, s_c)
    return as_strided(xp, img, shape, strides)
