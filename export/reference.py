"""The integer reference: a numpy executor of the plan, exactly as the hardware computes.

int64 accumulators, arithmetic shifts with round-half-to-even, saturation, ReLU, max-pool on
integers. P-layers run from their stored sparse encoding, so the encoding is checked too.
"""

from __future__ import annotations

import numpy as np

from export.plan import IntType, Layer, Plan


def round_shift(acc: np.ndarray, shift: int) -> np.ndarray:
    """acc * 2**-shift rounded half to even (ONNX QuantizeLinear); a negative shift is exact."""
    acc = np.asarray(acc, dtype=np.int64)
    if shift <= 0:
        return acc << -shift
    odd = (acc >> shift) & 1
    return (acc + (1 << (shift - 1)) - 1 + odd) >> shift


def requantize(acc: np.ndarray, shift: int, relu: bool, out: IntType) -> np.ndarray:
    q = round_shift(acc, shift)
    if relu:
        q = np.maximum(q, 0)
    return np.clip(q, out.min, out.max)


def conv_acc(x: np.ndarray, w: np.ndarray, b: np.ndarray, stride: int) -> np.ndarray:
    """Valid 2-D convolution of a (C, H, W) integer tensor, int64 accumulators."""
    cout, cin, k, _ = w.shape
    _, h, wd = x.shape
    oh, ow = (h - k) // stride + 1, (wd - k) // stride + 1
    x = x.astype(np.int64)
    # patches (Cin, k, k, oh, ow) as a strided view: no im2col copy until the contraction
    s = x.strides
    patches = np.lib.stride_tricks.as_strided(
        x, (cin, k, k, oh, ow), (s[0], s[1], s[2], s[1] * stride, s[2] * stride), writeable=False)
    acc = np.tensordot(w.astype(np.int64), patches, axes=([1, 2, 3], [0, 1, 2]))
    return acc + b.astype(np.int64)[:, None, None]


def maxpool(x: np.ndarray, k: int, stride: int) -> np.ndarray:
    c, h, w = x.shape
    oh, ow = (h - k) // stride + 1, (w - k) // stride + 1
    out = np.full((c, oh, ow), np.iinfo(np.int64).min, dtype=np.int64)
    for dy in range(k):
        for dx in range(k):
            out = np.maximum(out, x[:, dy:dy + stride * oh:stride, dx:dx + stride * ow:stride])
    return out


def linear_acc(layer: Layer, x: np.ndarray) -> np.ndarray:
    w = layer.sparse.to_dense(layer.in_shape[0]) if layer.sparse is not None else layer.weight
    return w.astype(np.int64) @ x.astype(np.int64) + layer.bias.astype(np.int64)


def run_layer(layer: Layer, x: np.ndarray) -> np.ndarray:
    """One layer on one image: integer tensor in, integer tensor out (int64)."""
    if layer.kind == "maxpool":
        return maxpool(x, layer.kernel, layer.stride)
    if layer.kind == "flatten":
        return x.reshape(-1)
    acc = conv_acc(x, layer.weight, layer.bias, layer.stride) if layer.kind == "conv2d" else linear_acc(layer, x)
    return acc if layer.out is None else requantize(acc, layer.shift, layer.relu, layer.out)


def run(plan: Plan, image: np.ndarray) -> list[np.ndarray]:
    """Every layer's output for one uint8 (C, H, W) image; the last entry is the integer logits."""
    x = np.asarray(image, dtype=np.int64)
    if x.shape != tuple(plan.input_shape):
        raise ValueError(f"image shape {x.shape} does not match the plan's input {tuple(plan.input_shape)}")
    outs = []
    for layer in plan.layers:
        x = run_layer(layer, x)
        outs.append(x)
    return outs


def logits(plan: Plan, image: np.ndarray) -> np.ndarray:
    return run(plan, image)[-1]
