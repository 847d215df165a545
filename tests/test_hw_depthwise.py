# amaranth: UnusedElaboratable=no
"""Depthwise convs (hw.depthwise) and averages over non-power-of-two counts (contract rule 14) in
the whole Accelerator under amaranth.sim == export.reference, cycle-exact; a plan without them
builds none of their hardware."""

from dataclasses import replace

import numpy as np
import pytest

from export import reference
from export.plan import IntType, Layer, Plan
from hw.config import ArrayConfig
from hw.cycles import predict
from hw.depthwise import as_row_conv
from hw.schedule import schedule
from hw.top import Accelerator, resources
from tests.hw_helpers import _layer, first_mismatch, random_image, random_plan, run_accelerator


def _depthwise(rng, name, in_shape, inp, k, stride, pad, out_bits=8):
    """A depthwise conv with per-channel shifts: (C, 1, k, k) weights, groups C."""
    c, h, w = in_shape
    oh, ow = (h + pad[0] + pad[2] - k) // stride + 1, (w + pad[1] + pad[3] - k) // stride + 1
    l = _layer(rng, name, "conv2d", (1, h, w), (c, oh, ow), inp, out_bits, 8, k)
    l.in_shape, l.groups, l.stride, l.pad = tuple(in_shape), c, stride, tuple(pad)
    l.shift = (l.shift + rng.integers(-1, 2, size=c)).clip(0).astype(np.int64)
    l.w_exps = np.zeros(c, dtype=np.int64)
    return l


def dw_plan(rng, shape=(2, 11, 9), c1=3, stride2=1, c3=4, mult=3641, shift=15, classes=3) -> Plan:
    """conv 3x3 -> depthwise 3x3 padded (stride2) -> conv 1x1 -> average over the whole
    non-square map (multiplier `mult`, rule 14) -> flatten -> linear."""
    img = IntType(8, False, -8)
    l1 = _layer(rng, "conv1", "conv2d", shape, (c1, shape[1] - 2, shape[2] - 2), img, 8, 8, 3)
    l2 = _depthwise(rng, "dw2", l1.out_shape, l1.out, 3, stride2, (1, 1, 1, 1))
    l3 = _layer(rng, "pw3", "conv2d", l2.out_shape, (c3, *l2.out_shape[1:]), l2.out, 8, 8, 1)
    _, h, w = l3.out_shape
    pool = Layer("pool", "avgpool", l3.out_shape, (c3, 1, 1), l3.out, l3.out, kernel=(h, w), stride=(h, w),
                 shift=shift, mult=mult)
    flat = Layer("flatten", "flatten", pool.out_shape, (c3,), l3.out, l3.out)
    fc = _layer(rng, "fc", "linear", (c3,), (classes,), l3.out, 8, 8, last=True)
    return Plan(tuple(shape), img, [l1, l2, l3, pool, flat, fc], [f"c{i}" for i in range(classes)])


@pytest.mark.parametrize("array, stride2", [("4x3", 1), ("3x4", 2), ("8x3", 2)])  # 8x3: a map shorter than the rows
def test_depthwise_and_rule14_average_match_reference_cycle_exact(array, stride2):
    rng = np.random.default_rng(7 + stride2)
    plan = dw_plan(rng, stride2=stride2)
    image = random_image(rng, plan)
    dut = Accelerator(plan, ArrayConfig.parse(array))
    assert dut.sched.window.depthwise
    passes = []
    logits, cycles, writes = run_accelerator(dut, image, passes=passes)
    outs = reference.run(plan, image)
    assert first_mismatch(plan, outs, writes, dut.sched.act_width) is None
    np.testing.assert_array_equal(logits, outs[-1])
    model = predict(dut.sched)
    assert cycles == model["total_cycles"]
    assert [c for _, c in passes] == [r["cycles"] for r in model["layers"]]


def test_depthwise_runs_one_channel_per_group_at_rows_times_the_diagonal_utilisation():
    """One output-channel group per channel, reading only its own channel: ((rows - 1) * sy + kh)
    * kw steps per tile of `rows` output rows, not Cin * kh * kw per output row; a map of OH < rows
    rows spans only its own."""
    rng = np.random.default_rng(1)
    plan = dw_plan(rng, shape=(2, 22, 9), c1=8)
    s = schedule(plan, ArrayConfig(4, 3))
    dw = next(p for p in s.passes if p.name == "dw2")
    win = dw.cfg["win"]
    assert win["n_og_m1"] + 1 == 8 and win["k_steps"] == ((4 - 1) + 3) * 3 and win["oh_m1"] + 1 == -(-20 // 4)
    virtual = as_row_conv(plan.layers[1], 4)
    assert virtual.weight.shape == (8 * 4, 1, 6, 3) and virtual.groups == 1
    assert as_row_conv(plan.layers[1], 16).kernel == ((16 - 1) + 3, 3)
    assert as_row_conv(replace(plan.layers[1], out_shape=(8, 5, 7)), 16).kernel == ((5 - 1) + 3, 3)


def test_the_averages_multipliers_count_for_the_fit_check():
    plan = dw_plan(np.random.default_rng(2))
    assert resources(plan, ArrayConfig(4, 3))["multipliers"] == 4 * 3 + 3


def test_a_plan_without_depthwise_or_multipliers_builds_neither():
    dut = Accelerator(random_plan(np.random.default_rng(4)), ArrayConfig(2, 2))
    assert not dut.sched.window.depthwise
    assert "mult_m1" not in dut.layouts["array"].members["rq"].members
