"""Depthwise convs on the PE array: the array's rows work on consecutive output rows of one channel.

A depthwise layer (groups == Cin == Cout) shares no input between channels, and the array reads
one activation vector per cycle that every row sees, so rows on different channels could use at
most one row a cycle (1 / rows of the PEs). Instead, one channel at a time, row r of a tile owns
output row y0 + r (r < n = min(rows, OH)): the tile reads the (n - 1) * sy + kh input rows those
outputs span, each row's vector once per kx, and row r weighs input row iy with
w[iy - y0 - r * sy, kx] (0 outside its kernel). That is a (1, H, W) conv with a
((n - 1) * sy + kh) x kw kernel and row stride rows * sy into `rows` virtual channels
(`as_row_conv`), one output-channel group per channel;
the window generator's depthwise mode (hw.window) moves each group to its own input channel and
writes virtual channel r to output row y0 + r.

Utilisation: kh / ((rows - 1) * sy + kh) of the PEs on full tiles at column stride 1 (3x3, 10 rows:
25% at stride 1, 14% at row stride 2; a column stride sx keeps the columns a strided read
reaches, hw.window.strided_cols; a map of OH < rows rows reaches OH * kh / (rows * ((OH - 1) * sy
+ kh))), against 1 / Cin for a dense conv with a diagonal weight.

A grouped conv with 1 < groups < Cin runs as the dense conv with the block-diagonal weight
(`as_dense_groups`): exact, at groups times the multiplies it needs.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from export.plan import Layer


def is_depthwise(l: Layer) -> bool:
    """Whether `l` is a depthwise conv: one input and one output channel per group."""
    return l.kind == "conv2d" and l.groups > 1 and l.groups == l.in_shape[0] == l.out_shape[0]


def as_dense_groups(l: Layer) -> Layer:
    """Grouped conv `l` as the ungrouped conv with the same outputs: group g's Cout / groups
    output channels weigh its Cin / groups input channels with their own weights, every other
    input channel with 0."""
    g, cin, cout = l.groups, l.in_shape[0], l.out_shape[0]
    ci, co = cin // g, cout // g
    weight = np.zeros((cout, cin, *l.weight.shape[2:]), dtype=l.weight.dtype)
    for k in range(g):
        weight[k * co:(k + 1) * co, k * ci:(k + 1) * ci] = l.weight[k * co:(k + 1) * co]
    return replace(l, groups=1, weight=weight)


def as_row_conv(l: Layer, rows: int) -> Layer:
    """Depthwise `l` as the ungrouped conv the array runs (module docstring): input (1, H, W),
    output (C * rows, ceil(OH / rows), OW), biases and shifts repeated over each channel's rows."""
    c, h, w = l.in_shape
    _, oh, ow = l.out_shape
    (kh, kw), (sy, sx) = l.kernel_hw, l.stride_hw
    tall = (min(rows, oh) - 1) * sy + kh
    weight = np.zeros((c, rows, 1, tall, kw), dtype=l.weight.dtype)
    for r in range(min(rows, oh)):
        weight[:, r, 0, r * sy:r * sy + kh] = l.weight[:, 0]
    per_row = lambda v: np.repeat(v, rows) if np.ndim(v) else v  # noqa: E731
    return replace(l, groups=1, in_shape=(1, h, w), out_shape=(c * rows, -(-oh // rows), ow), kernel=(tall, kw),
                   stride=(rows * sy, sx), weight=weight.reshape(c * rows, 1, tall, kw), bias=per_row(l.bias),
                   shift=per_row(l.shift))


def depthwise_window(win: dict, l: Layer, rows: int) -> tuple[dict, int]:
    """The window constants of `as_row_conv(l, rows)` set for depthwise `l`: each group reads its
    own channel, virtual channel r writes output row r of the row tile, the last row tile holds
    what is left of OH. Also the extra reach of its reads beyond channel 0's."""
    c, h, w = l.in_shape
    _, oh, ow = l.out_shape
    n_y = -(-oh // rows)
    return ({**win, "dw": 1, "in_og_step": h * w, "out_ow": rows * ow, "out_ohow": ow, "out_og_step": oh * ow,
             "last_rows": oh - (n_y - 1) * rows}, (c - 1) * h * w)
