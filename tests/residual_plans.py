"""Tiny residual plans for the hw/ tests: ResNet-8's graph, small and with random integers."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from export.plan import INPUT, IntType, Layer, Plan
from tests.hw_helpers import _layer


def residual_plan(rng: np.random.Generator, shape=(3, 8, 8), c1=4, c2=6, classes=3, *, join_shift=0, add_shifts=(0, 1),
                  skip_exp=0, signed_adds=False) -> Plan:
    """stem 3x3 (ReLU, uint8) -> block 1: c1 3x3 (ReLU) -> c2 3x3 (int8), plus the stem through a
    requant to int8 (shift `join_shift`: 0 saturates 128..255) -> add (ReLU); block 2: c3 3x3 stride 2
    (ReLU) -> c4 3x3 (int8), plus a 1x1 stride-2 shortcut (int8 at 2^skip_exp, c4 at 2^0: the
    add shifts the coarser one left) -> add (ReLU) -> global average -> flatten -> linear.
    `add_shifts`: the adds' requantizer shifts (0: sums of two int8 may saturate; 1: ties at .5);
    `signed_adds`: the adds have no ReLU and write int8 (negative sums saturate at -128)."""
    C, H, W = shape
    u8, i8 = IntType(8, False, 0), IntType(8, True, 0)
    a8 = i8 if signed_adds else u8  # the adds' outputs
    same = (1, 1, 1, 1)

    def conv(name, inputs, cin_shape, cout, k, out_signed, relu, stride=1, pad=(0, 0, 0, 0), inp=u8):
        oh = (cin_shape[1] + pad[0] + pad[2] - k) // stride + 1
        ow = (cin_shape[2] + pad[1] + pad[3] - k) // stride + 1
        l = _layer(rng, name, "conv2d", cin_shape, (cout, oh, ow), inp, 8, 8, k, relu=relu, signed_out=out_signed)
        return replace(l, stride=stride, pad=pad, inputs=inputs)

    stem = conv("stem", (INPUT,), shape, c1, 3, False, True, pad=same, inp=IntType(8, False, -8))
    a1 = conv("b1c1", ("stem",), stem.out_shape, c1, 3, False, True, pad=same)
    a2 = conv("b1c2", ("b1c1",), a1.out_shape, c1, 3, True, False, pad=same)
    m1 = stem.out_shape
    join = Layer("b1join", "requant", m1, m1, u8, i8, shift=join_shift, inputs=("stem",))
    add1 = Layer("b1add", "add", m1, m1, a2.out, a8, shift=add_shifts[0], relu=not signed_adds,
                 inputs=("b1c2", "b1join"), inp2=join.out)
    b1 = conv("b2c1", ("b1add",), m1, c2, 3, False, True, stride=2, pad=same, inp=a8)
    b2 = conv("b2c2", ("b2c1",), b1.out_shape, c2, 3, True, False, pad=same)
    short = conv("b2short", ("b1add",), m1, c2, 1, True, False, stride=2, inp=a8)
    short = replace(short, out=IntType(8, True, skip_exp))
    m2 = b2.out_shape
    add2 = Layer("b2add", "add", m2, m2, b2.out, a8, shift=add_shifts[1], relu=not signed_adds,
                 inputs=("b2c2", "b2short"), inp2=short.out)
    n = m2[1] * m2[2]
    gap = Layer("gap", "globalavgpool", m2, (c2, 1, 1), a8, a8, kernel=m2[1], shift=n.bit_length() - 1,
                inputs=("b2add",))
    flat = Layer("flatten", "flatten", (c2, 1, 1), (c2,), a8, a8, inputs=("gap",))
    fc = replace(_layer(rng, "fc", "linear", (c2,), (classes,), a8, 8, 8, last=True), inputs=("flatten",))
    layers = [stem, a1, a2, join, add1, b1, b2, short, add2, gap, flat, fc]
    return Plan(tuple(shape), IntType(8, False, -8), layers, [f"c{i}" for i in range(classes)])
