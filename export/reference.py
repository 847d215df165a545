"""The integer reference: a numpy executor of the plan, exactly as the hardware computes.

int64 accumulators, arithmetic shifts with round-half-to-even, saturation, ReLU. Each layer kind's
arithmetic lives in its unit (export/kinds/); this module holds the shared requantizer and runs the
plan. P-layers run from their stored sparse encoding, so the encoding is checked too.
"""

from __future__ import annotations

import numpy as np

from export.kinds.maxpool import maxpool  # noqa: F401  (re-exported: the hardware tests' model of the pool)
from export.plan import INPUT, IntType, Layer, Plan


def round_shift(acc: np.ndarray, shift: int | np.ndarray) -> np.ndarray:
    """acc * 2**-shift rounded half to even (ONNX QuantizeLinear); a negative shift is exact.

    A `shift` array applies along axis 0 (one shift per output channel)."""
    acc = np.asarray(acc, dtype=np.int64)
    s = np.asarray(shift, dtype=np.int64)
    s = s.reshape(s.shape + (1,) * (acc.ndim - s.ndim)) if s.ndim else s
    right, left = np.maximum(s, 0), np.maximum(-s, 0)
    half = np.where(right > 0, (np.int64(1) << np.maximum(right - 1, 0)) - 1, 0)
    odd = (acc >> right) & 1
    rounded = np.where(right > 0, (acc + half + odd) >> right, acc)
    return rounded << left


def requantize(acc: np.ndarray, shift: int | np.ndarray, relu: bool, out: IntType) -> np.ndarray:
    q = round_shift(acc, shift)
    if relu:
        q = np.maximum(q, 0)
    return np.clip(q, out.min, out.max)


def run_layer(layer: Layer, *xs: np.ndarray) -> np.ndarray:
    """One layer on one image: its integer input tensors in, an integer tensor out (int64)."""
    return layer.unit.run(layer, *xs)


def run(plan: Plan, image: np.ndarray) -> list[np.ndarray]:
    """Every layer's output for one integer input (the plan's input shape), in plan (topological) order;
    the last entry is the integer logits. A layer reads the outputs its `inputs` name (none: the previous one)."""
    x = np.asarray(image, dtype=np.int64)
    if x.shape != tuple(plan.input_shape):
        raise ValueError(f"input shape {x.shape} does not match the plan's input {tuple(plan.input_shape)}")
    values, outs = {INPUT: x}, []
    for layer in plan.layers:
        x = run_layer(layer, *(values[n] for n in layer.inputs)) if layer.inputs else run_layer(layer, x)
        values[layer.name] = x
        outs.append(x)
    return outs


def logits(plan: Plan, image: np.ndarray) -> np.ndarray:
    return run(plan, image)[-1]
