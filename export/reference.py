"""The integer reference: a numpy executor of the plan, exactly as the hardware computes.

int64 accumulators, arithmetic shifts with round-half-to-even, saturation, ReLU. Each layer kind's
arithmetic lives in its unit (export/kinds/), the shared requantizer in export/arith.py; this module
runs the plan. P-layers run from their stored sparse encoding, so the encoding is checked too.
"""

from __future__ import annotations

import numpy as np

from export.plan import INPUT, Layer, Plan


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
