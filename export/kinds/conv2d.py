"""conv2d: a kh x kw convolution, grouped or depthwise, with zero padding (rule 9), per-axis strides,
per-tensor or per-channel weights (rule 10)."""

from __future__ import annotations

import numpy as np

from export.arith import pair
from export.kinds.weighted import Weighted


def conv_acc(x: np.ndarray, w: np.ndarray, b: np.ndarray, stride: int | tuple[int, int] = 1,
             pad: tuple[int, int, int, int] = (0, 0, 0, 0), groups: int = 1) -> np.ndarray:
    """2-D convolution of a (C, H, W) integer tensor, zero-padded by (top, left, bottom, right), int64 accumulators.

    `w` is (Cout, Cin / groups, kh, kw); output channel group g reads input channels of group g."""
    cout, cin_g, kh, kw = w.shape
    sh, sw = pair(stride)
    x = np.pad(x.astype(np.int64), ((0, 0), (pad[0], pad[2]), (pad[1], pad[3])))
    c, h, wd = x.shape
    oh, ow = (h - kh) // sh + 1, (wd - kw) // sw + 1
    # patches (C, kh, kw, oh, ow) as a strided view: no im2col copy until the contraction
    s = x.strides
    patches = np.lib.stride_tricks.as_strided(
        x, (c, kh, kw, oh, ow), (s[0], s[1], s[2], s[1] * sh, s[2] * sw), writeable=False)
    wg = w.astype(np.int64).reshape(groups, cout // groups, cin_g, kh, kw)
    pg = patches.reshape(groups, cin_g, kh, kw, oh, ow)
    acc = np.einsum("gocij,gcijyx->goyx", wg, pg).reshape(cout, oh, ow)
    return acc + b.astype(np.int64)[:, None, None]


class Conv2d(Weighted):
    kind = "conv2d"

    def out_pixels(self, layer):
        return int(np.prod(layer.out_shape[1:]))

    def acc(self, layer, x):
        return conv_acc(x, layer.weight, layer.bias, layer.stride, layer.pad, layer.groups)
