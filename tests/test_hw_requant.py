# amaranth: UnusedElaboratable=no
"""Requantizer under amaranth.sim against export.arith.requantize: random, ties, saturation,
negative accumulators, left shifts, shifts beyond the accumulator; per channel, a different
shift with every value; an average's multiplier (contract rule 14)."""

import numpy as np
import pytest
from amaranth.sim import Simulator

from export.arith import IntType, requantize
from hw.requant import LATENCY, Requantizer, mult_bits, mult_config, requant_config, shift_config

ACC = 20


def _cases(rng, shift):
    lo, hi = -(1 << (ACC - 1)), (1 << (ACC - 1)) - 1
    accs = list(rng.integers(lo, hi + 1, size=40)) + [lo, hi, 0, -1, 1]
    if shift > 0:  # exact ties, both parities, both signs
        half = 1 << (shift - 1)
        accs += [m * (1 << shift) + half for m in (-3, -2, -1, 0, 1, 2, 3)]
        accs += [m * (1 << shift) + half + d for m in (-2, 1) for d in (-1, 1)]
    return [int(a) for a in accs if lo <= a <= hi]


@pytest.mark.parametrize("out", [IntType(8, False, 0), IntType(8, True, 0), IntType(4, True, 0), IntType(3, False, 0)])
def test_requantizer_matches_reference(out):
    rng = np.random.default_rng(out.bits * 2 + out.signed)
    dut = Requantizer(ACC, 8)
    shifts = [0, 1, 2, 5, 9, ACC + 5, -1, -4]

    async def bench(ctx):
        for shift in shifts:
            for relu in (False, True):
                cfg = requant_config(shift, relu, out, ACC)
                ctx.set(dut.cfg, dut.cfg.shape().const(cfg))
                accs = _cases(rng, shift)
                want = requantize(np.array(accs), shift, relu, out)
                for i, a in enumerate(accs + [0] * (LATENCY - 1)):  # one value per cycle, pipelined
                    ctx.set(dut.acc, a)
                    await ctx.tick()
                    j = i - (LATENCY - 1)
                    if j >= 0:
                        q = ctx.get(dut.q)
                        got = q - 256 if out.signed and q >= 128 else q
                        assert got == want[j], f"shift {shift} relu {relu} {out}: acc {accs[j]} want {want[j]} got {got}"
                        assert ctx.get(dut.raw) == accs[j]

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()


@pytest.mark.parametrize("out,relu", [(IntType(8, False, 0), True), (IntType(5, True, 0), False)])
def test_per_channel_requantizer_takes_a_shift_per_value(out, relu):
    rng = np.random.default_rng(out.bits)
    dut = Requantizer(ACC, 8, per_channel=True)
    shifts = [0, 1, 3, 7, ACC + 3, -2, -15]
    accs, per = [], []
    for shift in shifts:
        cases = _cases(rng, shift)
        accs += cases
        per += [shift] * len(cases)
    order = rng.permutation(len(accs))  # the shift changes from one value to the next
    accs, per = [accs[i] for i in order], [per[i] for i in order]
    want = requantize(np.array(accs), np.array(per), relu, out)

    async def bench(ctx):
        ctx.set(dut.cfg, dut.cfg.shape().const(requant_config(None, relu, out, ACC)))
        for i in range(len(accs) + LATENCY - 1):
            if i < len(accs):
                ctx.set(dut.acc, accs[i])
                ctx.set(dut.shift, dut.shift.shape().const(shift_config(per[i], ACC)))
            await ctx.tick()
            j = i - (LATENCY - 1)
            if j >= 0:
                q = ctx.get(dut.q)
                got = q - 256 if out.signed and q >= 128 else q
                assert got == want[j], f"shift {per[j]}: acc {accs[j]} want {want[j]} got {got}"

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()


@pytest.mark.parametrize("mult, shift", [(3641, 15), (16777, 21), (21845, 18), (1, 3)])
def test_requantizer_multiplies_by_an_averages_multiplier(mult, shift):
    """round_half_even(S * m * 2**-k) for sums S of up to 125 uint8 values, ties included; m = 1
    (a layer without one in a plan with one) leaves S alone."""
    wide = 32
    rng = np.random.default_rng(mult)
    sums = [int(v) for v in rng.integers(0, 125 * 255 + 1, size=40)] + [0, 1, 125 * 255]
    sums += [s for s in range(1, 1 << 16) if s * mult % (1 << shift) == 1 << (shift - 1)][:6]  # exact ties
    out = IntType(8, False, 0)
    want = requantize(np.array(sums, dtype=np.int64) * mult, shift, False, out)
    dut = Requantizer(wide, 8, mult_bits=mult_bits([21845]))

    async def bench(ctx):
        ctx.set(dut.cfg, dut.cfg.shape().const({**requant_config(shift, False, out, wide), **mult_config(mult)}))
        for i, a in enumerate(sums + [0] * (LATENCY - 1)):
            ctx.set(dut.acc, a)
            await ctx.tick()
            j = i - (LATENCY - 1)
            if j >= 0:
                assert ctx.get(dut.q) == want[j], f"m {mult} k {shift}: sum {sums[j]} want {want[j]} got {ctx.get(dut.q)}"

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()


def test_requant_config_refuses_large_left_shift():
    with pytest.raises(ValueError, match="left shift"):
        requant_config(-20, False, IntType(8, False, 0), ACC)


def test_requantizer_validates_widths():
    with pytest.raises(ValueError, match="acc_width must be"):
        Requantizer(60, 8)
