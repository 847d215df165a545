"""sim.golden without a simulator: decoding the harness's trace lines, naming the first difference."""

from __future__ import annotations

import numpy as np
import pytest

from export import reference
from export.plan import IntType, Layer, Plan
from sim.golden import first_difference, read_trace


@pytest.fixture
def plan():
    rng = np.random.default_rng(0)
    conv = Layer("conv", "conv2d", (1, 4, 4), (2, 3, 3), IntType(8, False, -8), IntType(6, True, -4), kernel=2,
                 weight=rng.integers(-100, 100, (2, 1, 2, 2)).astype(np.int8), bias=np.array([-900, 300]),
                 w_type=IntType(8, True, -6), shift=10)
    flat = Layer("flat", "flatten", (2, 3, 3), (18,), conv.out, conv.out)
    fc = Layer("fc", "linear", (18,), (3,), conv.out, None, weight=rng.integers(-7, 8, (3, 18)).astype(np.int8),
               bias=np.array([1, 2, 3]), w_type=IntType(4, True, -3))
    return Plan((1, 4, 4), IntType(8, False, -8), [conv, flat, fc], ["a", "b", "c"])


def trace_text(values: np.ndarray, layer: int, lanes: int, bits: int) -> str:
    """Writes of `lanes` elements at a time, packed as the accelerator's trace port packs them."""
    lines = []
    for addr in range(0, values.size, lanes):
        chunk = values[addr:addr + lanes]
        word = sum((int(v) & ((1 << bits) - 1)) << (i * bits) for i, v in enumerate(chunk))
        lines.append(f"{layer} {addr} {len(chunk)} {word:x}\n")
    return "".join(lines)


def test_matching_trace_and_a_corrupted_element(plan, tmp_path):
    image = np.random.default_rng(1).integers(0, 256, (1, 4, 4), dtype=np.uint8)
    outs = reference.run(plan, image)
    conv = outs[0].reshape(-1)
    assert conv.min() < 0  # the signed case: lanes must be sign-extended from the layer's 6 bits
    path = tmp_path / "trace.txt"
    path.write_text(trace_text(conv, 0, 4, 8))
    writes = read_trace(path, 8)
    assert [w.addr for w in writes] == list(range(18))
    logits = outs[-1].tolist()
    assert "the RTL equals export.reference" in first_difference(plan, image, writes, logits)

    bad = conv.copy()
    bad[13] = conv[13] - 5 if conv[13] > -27 else conv[13] + 5  # channel 1, y=1, x=1
    path.write_text(trace_text(bad, 0, 4, 8))
    msg = first_difference(plan, image, read_trace(path, 8), logits)
    assert msg == f"first difference: layer 0 'conv' (conv2d), channel 1, pixel (y=1, x=1): expected {conv[13]}, got {bad[13]}"


def test_missing_writes_and_logits(plan, tmp_path):
    image = np.zeros((1, 4, 4), dtype=np.uint8)
    outs = reference.run(plan, image)
    path = tmp_path / "trace.txt"
    path.write_text(trace_text(outs[0].reshape(-1)[:10], 0, 2, 8))
    msg = first_difference(plan, image, read_trace(path, 8), outs[-1].tolist())
    assert msg == "layer 0 'conv' (conv2d), channel 1, pixel (y=0, x=1) was never written (10 of 18 outputs written)"
    path.write_text(trace_text(outs[0].reshape(-1), 0, 2, 8))
    logits = outs[-1].tolist()
    logits[2] += 1
    msg = first_difference(plan, image, read_trace(path, 8), logits)
    assert msg.endswith(f"first difference: layer 2 'fc' (linear), output 2 (logit 2): expected {logits[2] - 1}, got {logits[2]}")
