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
        acc = shadow = 0
        for _ in range(steps):
            a, w = int(rng.integers(-256, 256)), int(rng.integers(-8, 8))
            b, sin = int(rng.integers(-5000, 5000)), int(rng.integers(-5000, 5000))
            en, first, last, shift = (int(v) for v in rng.random(4) < (0.8, 0.2, 0.2, 0.3))
            for sig, v in ((dut.a, a), (dut.w, w), (dut.bias, b), (dut.shadow_in, sin), (dut.en, en),
                           (dut.first, first), (dut.last, last), (dut.shift, shift)):
                ctx.set(sig, v)
            await ctx.tick()
            total = (b if first else acc) + a * w
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
    """Two back-to-back tiles of K=k steps; the first drains (one row per cycle) while the second
    accumulates, then the second drains. K < rows is the caller's stall case, so k >= rows here
    except where rows == 4 and k == 2, which drains the second tile only after both."""
    rng = np.random.default_rng(rows * 100 + cols * 10 + k)
    dut = SystolicArray(ArrayConfig(rows, cols), 9, 8, 28)
    a = rng.integers(-256, 256, size=(2, k, cols))
    w = rng.integers(-128, 128, size=(2, k, rows))
    b = rng.integers(-10**6, 10**6, size=(2, rows))
    want = [b[t][:, None] + w[t].T @ a[t] for t in range(2)]  # (rows, cols)

    async def bench(ctx):
        drained = []
        for t in range(2):
            for s in range(k):
                for c in range(cols):
                    ctx.set(dut.a[c], int(a[t, s, c]))
                for r in range(rows):
                    ctx.set(dut.w[r], int(w[t, s, r]))
                    ctx.set(dut.bias[r], int(b[t, r]))
                ctx.set(dut.en, 1)
                ctx.set(dut.first, s == 0)
                ctx.set(dut.last, s == k - 1)
                shifting = t == 1 and s < rows and k >= rows
                ctx.set(dut.shift, shifting)
                if shifting:
                    drained.append([ctx.get(dut.out[c]) for c in range(cols)])
                await ctx.tick()
            if t == 0 and k < rows:  # drain tile 0 fully before tile 1
                ctx.set(dut.en, 0)
                for _ in range(rows):
                    drained.append([ctx.get(dut.out[c]) for c in range(cols)])
                    ctx.set(dut.shift, 1)
                    await ctx.tick()
        ctx.set(dut.en, 0)
        for _ in range(rows):
            drained.append([ctx.get(dut.out[c]) for c in range(cols)])
            ctx.set(dut.shift, 1)
            await ctx.tick()
        got = np.array(drained).reshape(2, rows, cols)
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(got[1], want[1])

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
