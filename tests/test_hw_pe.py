# amaranth: UnusedElaboratable=no
"""PE and SystolicArray under amaranth.sim against numpy: bias load on `first`, accumulate,
capture on `last`, drain through the shadow chain while the next tile accumulates."""

import numpy as np
import pytest
from amaranth.sim import Simulator

from hw.array import ArrayConfig, SystolicArray
from hw.pe import PE


def test_pe_accumulates_and_captures():
    rng = np.random.default_rng(0)
    dut = PE(9, 4, 24)
    steps = 300

    async def bench(ctx):
        acc = shadow = prod = 0
        for _ in range(steps):
            a, w = int(rng.integers(-256, 256)), int(rng.integers(-8, 8))
            b, sin = int(rng.integers(-5000, 5000)), int(rng.integers(-5000, 5000))
            en, first, last, shift = (int(v) for v in rng.random(4) < (0.8, 0.2, 0.2, 0.3))
            for sig, v in ((dut.a, a), (dut.w, w), (dut.bias, b), (dut.shadow_in, sin), (dut.en, en),
                           (dut.first, first), (dut.last, last), (dut.shift, shift)):
                ctx.set(sig, v)
            await ctx.tick()
            total = (b if first else acc) + prod  # the product of the previous cycle's operands
            prod = a * w
            if shift:
                shadow = sin
            if en:
                acc = total
                if last:
                    shadow = total
            assert ctx.get(dut.acc) == acc and ctx.get(dut.shadow) == shadow

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()


def test_pe_validates_widths():
    with pytest.raises(ValueError, match="a_width must be 2..17"):
        PE(1, 4, 20)


@pytest.mark.parametrize("rows,cols,k", [(1, 1, 3), (3, 4, 5), (4, 2, 2)])
def test_array_tiles_and_drain(rows, cols, k):
    """Two tiles of K=k steps, the second starting max(k, rows) cycles after the first (as the
    window generator paces them); each tile's sums are captured k cycles after its first step and
    drained one row per cycle, the first tile's while the second accumulates."""
    rng = np.random.default_rng(rows * 100 + cols * 10 + k)
    dut = SystolicArray(ArrayConfig(rows, cols), 9, 8, 28)
    a = rng.integers(-256, 256, size=(2, k, cols))
    w = rng.integers(-128, 128, size=(2, k, rows))
    b = rng.integers(-10**6, 10**6, size=(2, rows))
    want = [b[t][:, None] + w[t].T @ a[t] for t in range(2)]  # (rows, cols)
    starts = [0, max(k, rows)]

    async def bench(ctx):
        drained = [[], []]
        for cycle in range(starts[1] + k + rows + 2):
            step = [(t, cycle - s0) for t, s0 in enumerate(starts) if 0 <= cycle - s0 < k]
            ctx.set(dut.en, bool(step))
            for t, s in step:
                for c in range(cols):
                    ctx.set(dut.a[c], int(a[t, s, c]))
                for r in range(rows):
                    ctx.set(dut.w[r], int(w[t, s, r]))
                    ctx.set(dut.bias[r], int(b[t, r]))
                ctx.set(dut.first, s == 0)
                ctx.set(dut.last, s == k - 1)
            draining = [t for t, s0 in enumerate(starts) if s0 + k < cycle <= s0 + k + rows]
            ctx.set(dut.shift, bool(draining))
            for t in draining:
                drained[t].append([ctx.get(dut.out[c]) for c in range(cols)])
            await ctx.tick()
        for t in range(2):
            np.testing.assert_array_equal(np.array(drained[t]), want[t])

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
