# amaranth: UnusedElaboratable=no
"""Residual adds: the add-on-store block under amaranth.sim against export.reference's requantizer
(random and edge cases: saturation, ties at .5, negative sums, operands at two scales, a requant
on the skip read, a pass that adds nothing); the graph's steps and buffers; whole residual plans
on the accelerator, bit-exact and cycle-exact."""

import numpy as np
import pytest
from amaranth.sim import Simulator

from export import reference
from export.plan import INPUT, IntType, Layer, Plan, replace
from hw.config import ArrayConfig
from hw.cycles import predict
from hw.engines import UnsupportedPlan
from hw.graph import INPUT_TENSOR, steps
from hw.residual import LATENCY, SKIP_LATENCY, AddOnStore, add_config, identity_config
from hw.schedule import schedule
from hw.top import Accelerator
from tests.hw_helpers import first_mismatch, random_image, run_accelerator
from tests.residual_plans import residual_plan

ACT, ACC, COLS = 8, 20, 3


def run_block(cfg: dict, q: np.ndarray, skip: np.ndarray) -> np.ndarray:
    """Vectors q[t] (raw bits) and skip[t] (values), skip SKIP_LATENCY cycles ahead; the outputs' raw bits."""
    dut = AddOnStore(COLS, ACT, ACC)
    n, out = len(q), []

    async def bench(ctx):
        ctx.set(dut.cfg, dut.cfg.shape().const(cfg))
        for t in range(n + SKIP_LATENCY + LATENCY):
            if t < n:
                for c in range(COLS):
                    ctx.set(dut.skip[c], int(skip[t, c]))
            if 0 <= t - SKIP_LATENCY < n:
                for c in range(COLS):
                    ctx.set(dut.q[c], int(q[t - SKIP_LATENCY, c]) & 0xFF)
            if t >= SKIP_LATENCY + LATENCY:
                out.append([ctx.get(dut.out[c]) for c in range(COLS)])
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return np.array(out, dtype=np.int64)


def as_type(raw: np.ndarray, t: IntType) -> np.ndarray:
    return np.where(t.signed & (raw >= 1 << (ACT - 1)), raw - (1 << ACT), raw)


def add_layer(a: IntType, b: IntType, out: IntType, shift: int, relu: bool) -> Layer:
    return Layer("add", "add", (1, 1, 1), (1, 1, 1), a, out, shift=shift, relu=relu, inputs=("x", "y"), inp2=b)


CASES = [  # operand types (a: the conv's output, b: the skip), the add's output, shift, ReLU, a requant on the skip
    (IntType(8, True, -7), IntType(8, True, -7), IntType(8, False, -7), 0, True, None),  # ResNet-8's: sums saturate at 255
    (IntType(8, True, -7), IntType(8, True, -7), IntType(8, True, -6), 1, False, None),  # ties at .5, negative saturation
    (IntType(8, True, -8), IntType(8, True, -6), IntType(8, True, -7), 1, False, None),  # the skip 2 bits coarser
    (IntType(8, True, -5), IntType(8, False, -7), IntType(8, False, -7), -1, True, None),  # the conv coarser, a left shift
    (IntType(8, True, -7), IntType(8, False, -7), IntType(8, False, -7), 0, True, (0, IntType(8, True, -7))),  # uint8 -> int8 skip
    (IntType(8, True, -7), IntType(8, False, -8), IntType(4, True, -6), 2, False, (1, IntType(8, True, -7))),  # skip rounded
]


@pytest.mark.parametrize("a, b, out, shift, relu, requant", CASES)
def test_add_on_store_matches_the_reference(a, b, out, shift, relu, requant):
    rng = np.random.default_rng(shift + 7 * out.bits)
    n = 40
    q = rng.integers(a.min, a.max + 1, size=(n, COLS))
    skip = rng.integers(b.min, b.max + 1, size=(n, COLS))
    q[:4], skip[:4] = a.max, b.max  # the largest sums, the smallest
    q[4:8], skip[4:8] = a.min, b.min
    q[8:12], skip[8:12] = 1, np.array([1, 3, 5])[None]  # odd sums: ties when shifted right
    rq = None if requant is None else Layer("rq", "requant", (1, 1, 1), (1, 1, 1), b, requant[1], shift=requant[0])
    add = add_layer(a, requant[1] if requant else b, out, shift, relu)
    cfg = add_config(add, 0, b, rq, ACT, ACC)
    want = reference.run_layer(add, q, skip if rq is None else reference.run_layer(rq, skip))
    assert out.min in want or out.max in want, "the case should saturate"
    np.testing.assert_array_equal(as_type(run_block(cfg, q, skip), out), want)


def test_a_pass_without_an_add_passes_its_outputs_on():
    rng = np.random.default_rng(1)
    for t in (IntType(8, True, -3), IntType(8, False, 0), IntType(3, True, 0)):
        q = rng.integers(t.min, t.max + 1, size=(20, COLS))
        skip = rng.integers(-128, 128, size=(20, COLS))
        np.testing.assert_array_equal(as_type(run_block(identity_config(t, ACT, ACC), q, skip), t), q)


def test_the_add_is_stored_by_the_later_conv_and_a_requant_only_the_add_reads_is_folded():
    plan = residual_plan(np.random.default_rng(0))
    names = [l.name for l in plan.layers]
    got = [(names[s.run], names[s.out], s.src, s.skip, s.requant) for s in steps(plan)]
    idx = names.index
    assert got == [("stem", "stem", INPUT_TENSOR, None, None), ("b1c1", "b1c1", idx("stem"), None, None),
                   ("b1c2", "b1add", idx("b1c1"), idx("stem"), idx("b1join")),  # the stem waits while two convs run
                   ("b2c1", "b2c1", idx("b1add"), None, None), ("b2c2", "b2c2", idx("b2c1"), None, None),
                   ("b2short", "b2add", idx("b1add"), idx("b2c2"), None),  # b1add read twice: alive until here
                   ("gap", "gap", idx("b2add"), None, None), ("fc", "fc", idx("gap"), None, None)]
    s = schedule(plan, ArrayConfig(2, 3))
    by_layer = {p.layer: p for p in s.passes}
    # a tensor's buffer is not reused while it lives: b1add (read by b2c1 and the shortcut)
    live = by_layer[idx("b1add")].dst
    assert by_layer[idx("b2c1")].dst != live and by_layer[idx("b2c2")].dst != live
    assert by_layer[idx("b2add")].src == live and by_layer[idx("b2add")].skip == by_layer[idx("b2c2")].dst
    assert len(s.buffer_depths) == 4  # the image and three: a residual block holds two tensors while it writes a third


def _two_layer_plan(second: Layer) -> Plan:
    """conv -> `second` (reading the conv and/or the input) -> gap -> flatten -> linear."""
    rng = np.random.default_rng(0)
    base = residual_plan(rng)
    conv = replace(base.layers[0], name="c", inputs=(INPUT,))
    t = second.out
    tail = [Layer("gap", "globalavgpool", (4, 8, 8), (4, 1, 1), t, t, kernel=8, shift=6, inputs=(second.name,)),
            Layer("flat", "flatten", (4, 1, 1), (4,), t, t, inputs=("gap",)),
            replace(base.layers[-1], in_shape=(4,), inp=t, inputs=("flat",))]
    return Plan(base.input_shape, base.input_type, [conv, second, *tail], base.class_names)


def test_an_add_no_conv_can_store_is_refused_by_name():
    u8 = IntType(8, False, 0)
    add = Layer("sum", "add", (4, 8, 8), (4, 8, 8), u8, u8, inputs=("c", "c"), inp2=u8)
    with pytest.raises(UnsupportedPlan, match=r"layer 1 'sum' \(add\): the add runs on the store of a conv"):
        schedule(_two_layer_plan(add), ArrayConfig())


@pytest.mark.parametrize("array", ["2x3", "3x8"])
@pytest.mark.parametrize("kw", [dict(skip_exp=1), dict(skip_exp=1, add_shifts=(0, 0)),
                                dict(signed_adds=True, join_shift=1, skip_exp=1, add_shifts=(0, 0))])
def test_residual_plans_match_the_reference_cycle_exact(array, kw):
    rng = np.random.default_rng(len(array) + len(kw))
    plan = residual_plan(rng, **kw)
    image = random_image(rng, plan)
    dut = Accelerator(plan, ArrayConfig.parse(array))
    passes: list = []
    logits, cycles, writes = run_accelerator(dut, image, passes=passes)
    outs = reference.run(plan, image)
    assert first_mismatch(plan, outs, writes, dut.sched.act_width, {p.layer for p in dut.sched.passes}) is None
    np.testing.assert_array_equal(logits, outs[-1])
    model = predict(dut.sched)
    assert cycles == model["total_cycles"]
    assert [c for _, c in passes] == [r["cycles"] for r in model["layers"]]


def test_a_requant_read_by_a_conv_runs_as_its_own_pass():
    rng = np.random.default_rng(5)
    plan = residual_plan(rng, join_shift=1)
    names = [l.name for l in plan.layers]
    join = plan.layers.pop(names.index("b1join"))
    i = names.index("b1c1")
    plan.layers[i] = replace(plan.layers[i], inputs=("b1join",), inp=join.out)  # b1c1 reads the requant too
    plan.layers.insert(i, join)
    dut = Accelerator(plan, ArrayConfig(2, 3))
    assert "b1join" in [p.name for p in dut.sched.passes]
    image = random_image(rng, plan)
    logits, _, writes = run_accelerator(dut, image)
    outs = reference.run(plan, image)
    assert first_mismatch(plan, outs, writes, dut.sched.act_width, {p.layer for p in dut.sched.passes}) is None
    np.testing.assert_array_equal(logits, outs[-1])
