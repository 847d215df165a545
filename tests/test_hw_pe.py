# amaranth: UnusedElaboratable=no
"""PE and SystolicArray under amaranth.sim against numpy: operand hand-off, accumulate (wrapping
at acc_width), capture on `last` and restart from 0, drain through the shadow chain while the next tile
accumulates, with the array's skew hidden behind aligned inputs and outputs."""

import numpy as np
import pytest
from amaranth.sim import Simulator

from hw.array import SystolicArray
from hw.config import ArrayConfig
from hw.pe import PE


def test_pe_accumulates_and_captures():
    rng = np.random.default_rng(0)
    dut = PE(9, 4, 14)  # narrow enough that long runs wrap
    steps = 300
    wrap = lambda v: (v + (1 << 13)) % (1 << 14) - (1 << 13)

    async def bench(ctx):
        acc = shadow = prod = prod_q = 0
        ops = (0, 0)  # the operand registers (a_out, w_out)
        ctl = (0, 0)  # en, last registers
        for _ in range(steps):
            a, w = int(rng.integers(-256, 256)), int(rng.integers(-8, 8))
            sin = int(rng.integers(-5000, 5000))
            en, last, shift = (int(v) for v in rng.random(3) < (0.8, 0.2, 0.3))
            for sig, v in ((dut.a, a), (dut.w, w), (dut.shadow_in, sin), (dut.en, en),
                           (dut.last, last), (dut.shift, shift)):
                ctx.set(sig, v)
            await ctx.tick()
            r_en, r_last = ctl
            total = wrap(acc + prod_q)  # the product of the operands three cycles back
            prod, prod_q = ops[0] * ops[1], prod
            if shift:
                shadow = sin
            if r_en:
                acc = total
                if r_last:
                    shadow, acc = total, 0
            ops, ctl = (a, w), (en, last)
            assert ctx.get(dut.acc) == acc and ctx.get(dut.shadow) == shadow
            assert (ctx.get(dut.a_out), ctx.get(dut.w_out)) == ops
            assert (ctx.get(dut.en_out), ctx.get(dut.last_out)) == ctl

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()


def test_pe_validates_widths():
    with pytest.raises(ValueError, match="a_width must be 2..17"):
        PE(1, 4, 20)


@pytest.mark.parametrize("rows,cols,k", [(1, 1, 3), (3, 4, 5), (4, 2, 2), (2, 5, 1), (5, 3, 9)])
def test_array_tiles_and_drain(rows, cols, k):
    """Two tiles of K=k steps, the second's last step tile_period (2*rows - 1) or k cycles after
    the first's (as the window generator paces them); each tile's sums are taken ACC_DELAY cycles
    after its last step and drained one row per cycle from drain_wait cycles later, the first
    tile's while the second accumulates; out[c] shows row j out_delay cycles after shift j."""
    rng = np.random.default_rng(rows * 100 + cols * 10 + k)
    dut = SystolicArray(ArrayConfig(rows, cols), 9, 8, 28)
    a = rng.integers(-256, 256, size=(2, k, cols))
    w = rng.integers(-128, 128, size=(2, k, rows))
    want = [w[t].T @ a[t] for t in range(2)]  # (rows, cols)
    period, drain_wait = SystolicArray.tile_period(rows), SystolicArray.drain_wait(rows)
    assert (period, drain_wait, SystolicArray.out_delay(cols)) == (2 * rows - 1, rows, cols - 1)
    starts = [0, max(k, period)]
    # the first shift of tile t: its last step + ACC_DELAY + drain_wait
    drain0 = [s0 + k - 1 + dut.ACC_DELAY + drain_wait for s0 in starts]

    async def bench(ctx):
        drained = [[], []]
        for cycle in range(drain0[1] + rows + cols + 1):
            step = [(t, cycle - s0) for t, s0 in enumerate(starts) if 0 <= cycle - s0 < k]
            ctx.set(dut.en, bool(step))
            ctx.set(dut.nrows, rows)
            ctx.set(dut.drain_rows, rows)
            for t, s in step:
                for c in range(cols):
                    ctx.set(dut.a[c], int(a[t, s, c]))
                for r in range(rows):
                    ctx.set(dut.w[r], int(w[t, s, r]))
                ctx.set(dut.last, s == k - 1)
            ctx.set(dut.shift, any(d <= cycle < d + rows for d in drain0))
            for t, d in enumerate(drain0):
                if d <= cycle - SystolicArray.out_delay(cols) < d + rows:
                    drained[t].append([ctx.get(dut.out[c]) for c in range(cols)])
            await ctx.tick()
        for t in range(2):
            np.testing.assert_array_equal(np.array(drained[t]), want[t])

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()


def test_on_an_ecp5_the_product_registers_are_the_mult18x18d_registers():
    """For an ECP5 platform the PE's multiply is one MULT18X18D with its input and output registers
    on (the two-cycle latency of the behavioural prod/prod_q pair, which it replaces), operands
    sign-extended to 18 bits from the PE's operand registers, the low a+w product bits used; off
    an ECP5 the netlist keeps the behavioural multiply and no primitive."""
    from amaranth.hdl import Fragment, Instance

    from hw.pe import ecp5_dsp

    class Ecp5:
        family = "ecp5"

    def instances(dut, platform):
        return [s for s, *_ in Fragment.get(dut, platform).subfragments if isinstance(s, Instance)]

    dut = PE(9, 5, 20)
    (mult,) = instances(dut, Ecp5())
    assert mult.type == "MULT18X18D"
    assert {k: mult.parameters[k] for k in ("REG_INPUTA_CLK", "REG_INPUTB_CLK", "REG_OUTPUT_CLK", "REG_PIPELINE_CLK")} == \
        {"REG_INPUTA_CLK": "CLK0", "REG_INPUTB_CLK": "CLK0", "REG_OUTPUT_CLK": "CLK0", "REG_PIPELINE_CLK": "NONE"}
    ports = {k: v for k, (v, _d) in mult.ports.items()}
    a_bits = [ports[f"A{i}"] for i in range(18)]
    w_bits = [ports[f"B{i}"] for i in range(18)]
    # bit i of the operand register, then its sign bit repeated (the PE's a_out/w_out are those registers)
    a_reg, w_reg = a_bits[0].value, w_bits[0].value
    assert [(b.value.name, b.start) for b in a_bits] == [(a_reg.name, min(i, 8)) for i in range(18)]
    assert [(b.value.name, b.start) for b in w_bits] == [(w_reg.name, min(i, 4)) for i in range(18)]
    assert a_reg is not w_reg and len(a_reg) == 9 and len(w_reg) == 5
    assert all(ports[n].value in (1,) for n in ("SIGNEDA", "SIGNEDB", "CE0")) and ports["RST0"].value == 0
    assert ecp5_dsp(Ecp5()) and not ecp5_dsp(None)
    assert instances(PE(9, 5, 20), None) == []


def test_a_reset_clears_a_partial_sum():
    """A tile cut short by `rst` (no `last`) leaves no partial sum in the accumulator: acc has no
    reset of its own, so the PE clears it on `rst` (the next tile would otherwise add to it)."""
    from amaranth import ClockDomain, Module

    m = Module()
    m.domains.sync = cd = ClockDomain("sync")
    dut = m.submodules.pe = PE(9, 5, 20)

    async def bench(ctx):
        ctx.set(dut.a, 7)
        ctx.set(dut.w, 3)
        ctx.set(dut.en, 1)
        await ctx.tick().repeat(6)
        assert ctx.get(dut.acc) != 0
        ctx.set(dut.en, 0)
        await ctx.tick().repeat(3)  # the pipeline's en has drained
        held = ctx.get(dut.acc)
        assert held != 0
        ctx.set(cd.rst, 1)
        await ctx.tick()
        ctx.set(cd.rst, 0)
        assert ctx.get(dut.acc) == 0

    sim = Simulator(m)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
